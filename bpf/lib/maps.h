/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#pragma once

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "types.h"

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
