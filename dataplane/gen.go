package dataplane

// The generated bindings and objects are committed so that `go build` needs
// no clang. `make generate` runs this with BPF_CFLAGS pointing clang at the
// host's multiarch include directory (for asm/types.h).
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -cflags "-O2 -g -Wall -Werror $BPF_CFLAGS" -target amd64,arm64 -type nw_reason -type nw_counter -type nw_runtime_config -type nw_malformed_action -type nw_stat -type nw_zone -type nw_tcp_state -type nw_timeout -type nw_ct_flags -type nw_event_type -type nw_config_flags -type nw_flow_event -type nw_tuple4 -type nw_tuple6 -type nw_ct_state -type nw_ct4_entry -type nw_acl_meta -type nw_acl_rule -type nw_acl_bitvec -type nw_acl_bv_key -type nw_acl_lpm4_key -type nw_acl_lpm6_key -type nw_rule_counter -type nw_acl_action -type nw_acl_stage -type nw_acl_field -type nw_ct6_entry -type nw_snat4_key -type nw_snat4_endpoint -type nw_snat_count_owner -type nw_snat_release_arg -type nw_dnat4_key -type nw_dnat4_target -type nw_alert_flags -type nw_acl_rule_flags natwall ../bpf/xdp_natwall.c -- -I../bpf
