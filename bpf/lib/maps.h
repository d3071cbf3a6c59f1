/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#pragma once

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "types.h"

/* Per-CPU scratch space for temporaries too large for the 512-byte stack
 * once the pipeline's stages are nested. XDP runs to completion on a CPU,
 * so each field has one user at a time; which one is said where it is used. */
struct nw_scratch {
	struct bpf_fib_lookup fib;  /* the route lookup in progress */
	struct nw_ct4_entry ct4;    /* a flow being created */
	struct nw_ct6_entry ct6;
	struct nw_acl_pkt acl_pkt;  /* the packet being classified */
	struct nw_acl_result acl_res;
	__u32 acl_ids[NW_ACL_FIELDS];           /* acl_classify: each field's bit vector id */
	__u64 acl_summary[NW_ACL_SUMMARY];      /* acl_classify: the ANDed summaries */
	struct nw_acl_lpm6_key acl_key6;        /* acl_classify: address lookups */
	struct nw_acl_lpm4_key acl_key4;
	struct nw_acl_bv_key acl_bv_key;        /* acl_classify: bit vector lookups */
	struct nw_acl_result acl_scan_res;      /* acl_classify: what the scan found */
	/* The pipeline's tuples: process_* and ct_miss4 (t, orig, to), the
	 * ICMP error paths (k, eorig, from, eto). */
	struct nw_tuple4 t4, orig4, to4, k4, eorig4, from4, eto4;
	struct nw_tuple6 t6, orig6, k6, eorig6;
	struct nw_frag4_key frag4;
	struct nw_frag6_key frag6;
	struct nw_snat4_endpoint dnat;
	struct nw_snat4_endpoint ext;            /* ct_create4: the SNAT mapping */
	/* ct_admit4 -> process_ipv4 -> ct_new4: a new IPv4 flow's facts. */
	__u32 admit_zone;
	__u32 admit_src_inside;
	__u32 admit_hairpin;
	__u32 admit_rule_id;
	__u32 admit_forward;     /* the id (never 0) of the DNAT forward the flow opens through, its target in dnat; or 0 */
	/* frag_track -> frag_commit: a first fragment's record, written to
	 * the fragment table only once the packet is admitted. */
	struct nw_frag_state frag_pending;
	__u32 frag_pending_set;
};

/* Opaque to the control plane, which never reads it (and whose generated
 * Go types cannot express bpf_fib_lookup's anonymous unions). */
struct nw_scratch_space {
	__u8 bytes[sizeof(struct nw_scratch)];
} __attribute__((aligned(8)));

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nw_scratch_space);
} nw_scratch SEC(".maps");

static __always_inline struct nw_scratch *scratch(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&nw_scratch, &zero);
}

/* The scratch route lookup, zeroed. */
static __always_inline struct bpf_fib_lookup *scratch_fib(void)
{
	struct nw_scratch *sc = scratch();

	if (!sc)
		return NULL;
	__builtin_memset(&sc->fib, 0, sizeof(sc->fib));
	return &sc->fib;
}

/* Maps are pinned by name under the control plane's pin directory, so a
 * daemon restart re-attaches to the same state. Names stay within the
 * kernel's 15 characters. */

/* Packets and bytes per enum nw_reason, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NW_REASON_MAX);
	__type(key, enum nw_reason);
	__type(value, struct nw_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nw_counters SEC(".maps");

/* The single struct nw_runtime_config, at key 0. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nw_runtime_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nw_config SEC(".maps");

/* Egress NICs natwall may redirect to, keyed by ifindex. A NIC that is not
 * here is not natwall's to transmit on; its packets go to the kernel. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nw_tx_ports SEC(".maps");

/* Counters that are not per-packet verdicts, per CPU, by enum nw_stat. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NW_STAT_MAX);
	__type(key, enum nw_stat);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nw_stats SEC(".maps");

/* The inside networks ($HOME_NET). A flow's zone follows from whether its
 * endpoints are inside. */
struct nw_lpm4_key {
	__u32 prefixlen;
	__be32 addr;
};

struct nw_lpm6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__type(key, struct nw_lpm4_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nw_inside4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__type(key, struct nw_lpm6_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nw_inside6 SEC(".maps");

/* Outbound IPv4 destinations that are never translated (SNAT exclusions). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__type(key, struct nw_lpm4_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nw_snat_excl4 SEC(".maps");

/* IPv4 flows by original tuple. A plain (not LRU) hash: when it is full, new
 * flows are refused and counted, and no established flow is ever evicted to
 * make room. The control plane sizes it before load and expires entries. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, struct nw_tuple4);
	__type(value, struct nw_ct4_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nw_ct4 SEC(".maps");

/* IPv4 reply tuple -> original tuple, so replies find their flow. Inserted
 * with BPF_NOEXIST: two flows can never own the same reply tuple. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, struct nw_tuple4);
	__type(value, struct nw_tuple4);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nw_ct4_rev SEC(".maps");

/* IPv6 flows by original tuple; replies look up the reversed tuple. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, struct nw_tuple6);
	__type(value, struct nw_ct6_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nw_ct6 SEC(".maps");

/* SNAT mappings, inside endpoint -> external endpoint. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, struct nw_snat4_key);
	__type(value, struct nw_snat4_endpoint);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nw_snat4_fwd SEC(".maps");

/* SNAT mappings, external endpoint -> inside endpoint. Claiming a port is
 * inserting here with BPF_NOEXIST, which is what makes two inside endpoints
 * sharing one external port impossible. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, struct nw_snat4_key);
	__type(value, struct nw_snat4_endpoint);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nw_snat4_rev SEC(".maps");

/* Datagrams in flight as fragments. LRU: a train whose fragments never
 * complete is evicted, bounding memory whatever the sender does. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct nw_frag4_key);
	__type(value, struct nw_frag_state);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nw_frag4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct nw_frag6_key);
	__type(value, struct nw_frag_state);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nw_frag6 SEC(".maps");

/* Flow events (struct nw_flow_event) for the control plane. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nw_events SEC(".maps");

/* The classifier's active generation, at key 0. A reload fills the idle
 * generation, then flips this one value: a packet reads it once, so it never
 * sees half a rule set. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nw_acl_gen SEC(".maps");

/* Per generation and stage (generation * NW_ACL_STAGES + stage). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * NW_ACL_STAGES);
	__type(key, __u32);
	__type(value, struct nw_acl_meta);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nw_acl_stages SEC(".maps");

/* Address fields: longest prefix -> bit vector id. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4 * NW_ACL_MAX_RULES);
	__type(key, struct nw_acl_lpm4_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nw_acl_lpm4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4 * NW_ACL_MAX_RULES);
	__type(key, struct nw_acl_lpm6_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nw_acl_lpm6 SEC(".maps");

/* Port-like fields: one bit vector id per value, so ranges cost nothing per
 * packet. Index: ((generation * NW_ACL_STAGES + stage) * 3 + field) * 65536
 * + value, field 0 source port, 1 destination port, 2 ICMP type << 8 | code. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * NW_ACL_STAGES * 3 * 65536);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nw_acl_ports SEC(".maps");

/* The bit vectors, allocated as a rule set needs them. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 17);
	__type(key, struct nw_acl_bv_key);
	__type(value, struct nw_acl_bitvec);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nw_acl_bits SEC(".maps");

/* Rules by bit index: (generation * NW_ACL_STAGES + stage) * NW_ACL_MAX_RULES + bit. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * NW_ACL_STAGES * NW_ACL_MAX_RULES);
	__type(key, __u32);
	__type(value, struct nw_acl_rule);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nw_acl_rules SEC(".maps");

/* Hits per stable rule id: packets and bytes for stateless rules, flows for
 * stateful ones. Ids survive reloads, so counters do too. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2 * NW_ACL_MAX_RULES + 2);
	__type(key, __u32);
	__type(value, struct nw_rule_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nw_rule_hits SEC(".maps");

/* The NICs that face the outside (outside_interfaces), by ifindex: an
 * inside source arriving on one of them is spoofed. Written whole by the
 * control plane with the other settings. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nw_outside_ifs SEC(".maps");

/* A source host's unanswered flows (struct nw_src_count). LRU: a flood of
 * spoofed sources evicts idle hosts' counts, never a flow. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct nw_src_key);
	__type(value, struct nw_src_count);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nw_src_flows SEC(".maps");

/* The last NW_CT_ORDER_SIZE flows created, by creation number modulo the
 * size: where early drop looks for unanswered flows to evict. */
#define NW_CT_ORDER_SIZE 65536

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NW_CT_ORDER_SIZE);
	__type(key, __u32);
	__type(value, struct nw_tuple4);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nw_ct4_order SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NW_CT_ORDER_SIZE);
	__type(key, __u32);
	__type(value, struct nw_tuple6);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nw_ct6_order SEC(".maps");

/* Positions in nw_ct4_order (key 0) and nw_ct6_order (key 1). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct nw_ct_order_pos);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nw_ct_order SEC(".maps");

/* SNAT in-use counts (struct nw_snat_count_key), so that a full address or
 * a host at its quota is known from one lookup instead of by probing.
 * Entries are never deleted: a counter another CPU holds a pointer to must
 * not be reused for another key. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 17);
	__type(key, struct nw_snat_count_key);
	__type(value, __s64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nw_snat_count SEC(".maps");

/* Address-dependent filtering permissions. LRU: an evicted permission makes
 * filtering stricter, never looser. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct nw_snat4_perm_key);
	__type(value, struct nw_snat4_perm);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nw_snat4_perm SEC(".maps");

/* Inbound NAT forwards (DNAT), external endpoint -> target. Written by the
 * control plane entry by entry when the rules load; read on first packets
 * only, and by the SNAT allocator, which never hands out a forwarded port. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 16);
	__type(key, struct nw_dnat4_key);
	__type(value, struct nw_dnat4_target);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nw_dnat4 SEC(".maps");
