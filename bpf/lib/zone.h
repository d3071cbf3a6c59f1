/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Where a packet may come from (issue 14, classes 2, 9 and 12). Addresses
 * alone do not say who sent a packet: an outsider can write an inside
 * source. These checks tie a new flow's source to the NIC, and the route,
 * it arrived by. They run when a flow is created, never on the packets of
 * an established flow. */
#pragma once

#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include "types.h"
#include "maps.h"
#include "fib.h"

/* Whether the packet arrived on a NIC the operator named as outside. */
static __always_inline int arrived_outside(struct xdp_md *ctx)
{
	__u32 ifindex = ctx->ingress_ifindex;

	return bpf_map_lookup_elem(&nw_outside_ifs, &ifindex) != NULL;
}

/* Whether the frame was sent by the neighbour whose MAC the route lookup
 * found. */
static __always_inline int frame_from(struct xdp_md *ctx, const __u8 *mac)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	const __u8 *src;

	if ((void *)(eth + 1) > data_end)
		return 0;
	src = eth->h_source;
	return src[0] == mac[0] && src[1] == mac[1] && src[2] == mac[2] && src[3] == mac[3] &&
	       src[4] == mac[4] && src[5] == mac[5];
}

/* The reverse-path verdict on a route lookup towards a packet's source,
 * done as if a packet for the source had arrived on the same NIC. Strict,
 * as the kernel's rp_filter=1: the route must leave by the arrival NIC.
 * Loose (rp_filter=2): some route must exist. Neighbour: strict, and where
 * the route's next hop is resolved, the frame must come from its MAC, which
 * tells hosts on one segment apart when the NIC cannot (one NIC). A source
 * that is one of this host's own addresses, or routes to a blackhole,
 * unreachable or prohibit route, fails every mode. Forwarding disabled on
 * the NIC says nothing about the source: the forward path hands such
 * packets to the kernel, which does not route them. */
static __always_inline int rp_result(struct xdp_md *ctx, int rc, const struct bpf_fib_lookup *fib,
				     __u32 flags)
{
	if (rc == BPF_FIB_LKUP_RET_FWD_DISABLED)
		return 0;
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH &&
	    rc != BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return NW_DROP_REVERSE_PATH;
	if (!(flags & NW_CFG_RP_LOOSE) && fib->ifindex != ctx->ingress_ifindex)
		return NW_DROP_REVERSE_PATH;
	if ((flags & NW_CFG_RP_NEIGH) && rc == BPF_FIB_LKUP_RET_SUCCESS && !frame_from(ctx, fib->dmac))
		return NW_DROP_REVERSE_PATH;
	return 0;
}

/* 0 when t's source passes the reverse-path check, else the drop reason.
 * Ports are swapped so that multipath hashing picks the path the replies
 * take. No BPF_FIB_LOOKUP_SKIP_NEIGH: kernels before 6.3 refuse the flag,
 * and an unresolved neighbour (NO_NEIGH) still names the egress NIC. */
static __noinline int rp_check4(struct xdp_md *ctx, const struct nw_tuple4 *t, __u32 flags)
{
	struct bpf_fib_lookup fib = {};
	int rc;

	if (flags & NW_CFG_RP_OFF)
		return 0;
	fib.family = AF_INET;
	fib.l4_protocol = t->proto;
	fib.sport = t->dport;
	fib.dport = t->sport;
	fib.ipv4_src = t->daddr;
	fib.ipv4_dst = t->saddr;
	fib.ifindex = ctx->ingress_ifindex;
	rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	return rp_result(ctx, rc, &fib, flags);
}

static __noinline int rp_check6(struct xdp_md *ctx, const struct nw_tuple6 *t, __u32 flags)
{
	struct bpf_fib_lookup fib = {};
	int rc;

	if (flags & NW_CFG_RP_OFF)
		return 0;
	fib.family = AF_INET6;
	fib.l4_protocol = t->proto;
	fib.sport = t->dport;
	fib.dport = t->sport;
	__builtin_memcpy(fib.ipv6_src, t->daddr, 16);
	__builtin_memcpy(fib.ipv6_dst, t->saddr, 16);
	fib.ifindex = ctx->ingress_ifindex;
	rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	return rp_result(ctx, rc, &fib, flags);
}

/* IPv6 control of the link itself, which the kernel must always see and no
 * rule may block: neighbour discovery (router solicitation and
 * advertisement, neighbour solicitation and advertisement, redirect) and
 * multicast listener discovery (MLDv1 query, report, done; MLDv2 report).
 * A neighbour probes a unicast global address from its link-local one, so
 * the source alone does not say it is link control. */
static __always_inline int ipv6_link_control(struct nw_pkt *pkt)
{
	__u8 type = pkt->icmp_type;

	if (pkt->l4_proto != IPPROTO_ICMPV6 || !(pkt->flags & NW_PKT_L4) ||
	    (pkt->flags & NW_PKT_LATER_FRAGMENT))
		return 0;
	return (type >= 130 && type <= 137) || type == 143;
}

/* Where a link-scoped IPv6 packet that is not link control goes. A
 * link-scoped destination is never routed: it is for this host
 * (NW_PASS_LINK_LOCAL). A link-local or multicast source may reach this
 * host's global address (NW_PASS_LOCAL, so the local rules see it) but
 * must not be forwarded, as a router never does. The FIB helper answers
 * "not forwarded" for any link-local source, so the destination is looked
 * up alone. */
static __always_inline int link_scoped_route6(struct xdp_md *ctx, struct nw_pkt *pkt,
					      struct ipv6hdr *ip6, struct bpf_fib_lookup *fib)
{
	int rc;

	if (ipv6_is_link_scoped(&ip6->daddr))
		return NW_PASS_LINK_LOCAL;
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->family = AF_INET6;
	fib->l4_protocol = pkt->l4_proto;
	__builtin_memcpy(fib->ipv6_dst, &ip6->daddr, sizeof(fib->ipv6_dst));
	fib->ifindex = ctx->ingress_ifindex;
	rc = bpf_fib_lookup(ctx, fib, sizeof(*fib), 0);
	return rc == BPF_FIB_LKUP_RET_NOT_FWDED ? NW_PASS_LOCAL : NW_DROP_LINK_SCOPED_SRC;
}

/* Hairpinned flows are classified as they leave: to the inside host that
 * owns the mapping, so east-west rules between the two hosts apply. */
static __always_inline void acl_pkt4_hairpin(struct nw_acl_pkt *ap,
					     const struct nw_snat4_endpoint *owner)
{
	__builtin_memcpy(ap->daddr, &owner->addr, 4);
	if (ap->has_ports)
		ap->dport = bpf_ntohs(owner->port);
}
