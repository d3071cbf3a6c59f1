/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Inbound NAT (DNAT, port forwarding) for IPv4: a first packet to an
 * external endpoint with a forward becomes a flow to the forward's target.
 * The flow is then an ordinary translated flow: conntrack's reply tuple
 * carries the target, so replies and ICMP errors are translated back by
 * the paths every translated flow takes. */
#pragma once

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include "types.h"
#include "maps.h"

/* Whether the external endpoint addr:port (proto) is forwarded: the SNAT
 * allocator must never claim it, or a forward's first packets would reach
 * whichever inside host the port was mapped for. */
static __always_inline int dnat_forwarded4(__be32 addr, __be16 port, __u8 proto)
{
	struct nw_dnat4_key k = { .addr = addr, .port = port, .proto = proto };

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 0;
	return bpf_map_lookup_elem(&nw_dnat4, &k) != NULL;
}

/* Looks up a forward for t's destination, a local address. When there is
 * one, its target goes into scr->dnat and 1 is returned: the caller opens
 * the flow as one to the target. */
static __noinline int dnat_admit4(const struct nw_tuple4 *t, struct nw_scratch *scr)
{
	struct nw_dnat4_key k = { .addr = t->daddr, .port = t->dport, .proto = t->proto };
	struct nw_dnat4_target *to;

	scr->admit_forward = 0;
	if (t->proto != IPPROTO_TCP && t->proto != IPPROTO_UDP)
		return 0;
	to = bpf_map_lookup_elem(&nw_dnat4, &k);
	if (!to || !to->forward_id)
		return 0;
	scr->dnat.addr = to->addr;
	scr->dnat.port = to->port;
	scr->dnat.pad = 0;
	scr->dnat.created_ns = 0;
	scr->admit_forward = to->forward_id;
	return 1;
}
