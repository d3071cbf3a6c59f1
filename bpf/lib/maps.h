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
