package dataplane

// The generated bindings and objects are committed so that `go build` needs
// no clang. `make generate` runs this with BPF_CFLAGS pointing clang at the
// host's multiarch include directory (for asm/types.h).
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -cflags "-O2 -g -Wall -Werror $BPF_CFLAGS" -target amd64,arm64 -type nw_reason -type nw_counter -type nw_runtime_config -type nw_malformed_action natwall ../bpf/xdp_natwall.c -- -I../bpf
