/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Routing in XDP: the kernel's FIB and neighbour tables decide the egress
 * NIC and next-hop MAC, natwall rewrites the frame and transmits it. */
#pragma once

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "types.h"
#include "maps.h"
#include "parse.h"

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

/* Offsets past this are not a header natwall parsed (parse_eth stops at two
 * tags); the bound also lets the verifier accept variable offsets. */
#define NW_MAX_L3_OFF 64

static __always_inline int fib_result_reason(int rc)
{
	switch (rc) {
	case BPF_FIB_LKUP_RET_SUCCESS:
		return 0;
	case BPF_FIB_LKUP_RET_NOT_FWDED:
		return NW_PASS_LOCAL;
	case BPF_FIB_LKUP_RET_NO_NEIGH:
		return NW_PASS_NO_NEIGH;
	case BPF_FIB_LKUP_RET_FRAG_NEEDED:
		return NW_PASS_FRAG_NEEDED;
	case BPF_FIB_LKUP_RET_BLACKHOLE:
	case BPF_FIB_LKUP_RET_UNREACHABLE:
	case BPF_FIB_LKUP_RET_PROHIBIT:
		return NW_PASS_NO_ROUTE;
	case BPF_FIB_LKUP_RET_FWD_DISABLED:
		return NW_PASS_FWD_DISABLED;
	default:
		/* UNSUPP_LWT, NO_SRC_ADDR, and lookup errors (< 0). */
		return NW_PASS_ROUTE_UNSUPPORTED;
	}
}

/* Decrements the TTL with an incremental checksum update (RFC 1624): the
 * TTL is the high byte of a 16-bit word, so the sum changes by 0x0100. */
static __always_inline void ipv4_decrement_ttl(struct iphdr *ip)
{
	__u32 check = (__u32)ip->check;

	check += (__u32)bpf_htons(0x0100);
	ip->check = (__sum16)(check + (check >= 0xFFFF));
	ip->ttl--;
}

static __always_inline int fib_transmit(struct xdp_md *ctx, struct nw_pkt *pkt,
					struct bpf_fib_lookup *fib)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 egress = fib->ifindex;

	if ((void *)(eth + 1) > data_end)
		return NW_MALFORMED_ETH;
	__builtin_memcpy(eth->h_dest, fib->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib->smac, ETH_ALEN);

	if (egress == ctx->ingress_ifindex)
		return NW_FWD_TX;
	if (!bpf_map_lookup_elem(&nw_tx_ports, &egress))
		return NW_PASS_EGRESS_UNMANAGED;
	pkt->egress_ifindex = egress;
	return NW_FWD_REDIRECT;
}

/* Looks up the route for an IPv4 packet as it will leave: t holds the
 * addresses and ports after any translation. Returns 0 when the packet can
 * be forwarded in XDP, else the reason it cannot. */
static __always_inline int fib_lookup_ipv4(struct xdp_md *ctx, struct nw_pkt *pkt,
					   const struct nw_tuple4 *t, __u8 tos,
					   struct bpf_fib_lookup *fib)
{
	/* Multicast (224/4) and the limited broadcast are never routed: the
	 * kernel keeps them for its own stack (no multicast routing here),
	 * but bpf_fib_lookup answers them from the unicast table, default
	 * route included, and would have them forwarded. */
	if ((bpf_ntohl(t->daddr) & 0xf0000000) == 0xe0000000 || t->daddr == 0xffffffff)
		return NW_PASS_LOCAL;
	fib->family = AF_INET;
	fib->tos = tos;
	fib->l4_protocol = t->proto;
	fib->sport = t->sport;
	fib->dport = t->dport;
	fib->tot_len = pkt->l3_len;
	fib->ipv4_src = t->saddr;
	fib->ipv4_dst = t->daddr;
	fib->ifindex = ctx->ingress_ifindex;
	return fib_result_reason(bpf_fib_lookup(ctx, fib, sizeof(*fib), 0));
}

static __always_inline struct iphdr *ipv4_header(struct xdp_md *ctx, struct nw_pkt *pkt)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u16 l3_off = pkt->l3_off;
	struct iphdr *ip;

	if (l3_off > NW_MAX_L3_OFF)
		return NULL;
	ip = data + l3_off;
	if ((void *)(ip + 1) > data_end)
		return NULL;
	return ip;
}

/* Decrements the TTL and transmits along a successful lookup. */
static __always_inline int fib_finish_ipv4(struct xdp_md *ctx, struct nw_pkt *pkt,
					   struct bpf_fib_lookup *fib)
{
	struct iphdr *ip = ipv4_header(ctx, pkt);

	if (!ip)
		return NW_MALFORMED_IPV4;
	ipv4_decrement_ttl(ip);
	return fib_transmit(ctx, pkt, fib);
}

/* Routes an untranslated IPv4 packet. */
static __always_inline int fib_forward_ipv4(struct xdp_md *ctx, struct nw_pkt *pkt)
{
	struct bpf_fib_lookup fib = {};
	struct nw_tuple4 t = {};
	struct iphdr *ip = ipv4_header(ctx, pkt);
	int reason;

	if (!ip)
		return NW_MALFORMED_IPV4;
	t.saddr = ip->saddr;
	t.daddr = ip->daddr;
	t.sport = pkt->sport;
	t.dport = pkt->dport;
	t.proto = ip->protocol;
	reason = fib_lookup_ipv4(ctx, pkt, &t, ip->tos, &fib);
	if (reason)
		return reason;
	/* Checked after the lookup: a TTL-1 packet for this host is delivered. */
	if (ip->ttl <= 1)
		return NW_PASS_TTL_EXPIRED;
	return fib_finish_ipv4(ctx, pkt, &fib);
}

static __always_inline int ipv6_is_link_scoped(const struct in6_addr *a)
{
	__u8 b0 = a->in6_u.u6_addr8[0], b1 = a->in6_u.u6_addr8[1];

	/* ff00::/8 multicast, fe80::/10 link-local */
	return b0 == 0xff || (b0 == 0xfe && (b1 & 0xc0) == 0x80);
}

static __always_inline struct ipv6hdr *ipv6_header(struct xdp_md *ctx, struct nw_pkt *pkt)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u16 l3_off = pkt->l3_off;
	struct ipv6hdr *ip6;

	if (l3_off > NW_MAX_L3_OFF)
		return NULL;
	ip6 = data + l3_off;
	if ((void *)(ip6 + 1) > data_end)
		return NULL;
	return ip6;
}

static __always_inline int fib_lookup_ipv6(struct xdp_md *ctx, struct nw_pkt *pkt,
					   struct ipv6hdr *ip6, struct bpf_fib_lookup *fib)
{
	fib->family = AF_INET6;
	fib->flowinfo = *(__be32 *)ip6 & bpf_htonl(0x0FFFFFFF);
	fib->l4_protocol = pkt->l4_proto;
	fib->sport = pkt->sport;
	fib->dport = pkt->dport;
	fib->tot_len = pkt->l3_len;
	__builtin_memcpy(fib->ipv6_src, &ip6->saddr, sizeof(fib->ipv6_src));
	__builtin_memcpy(fib->ipv6_dst, &ip6->daddr, sizeof(fib->ipv6_dst));
	fib->ifindex = ctx->ingress_ifindex;
	return fib_result_reason(bpf_fib_lookup(ctx, fib, sizeof(*fib), 0));
}

static __always_inline int fib_finish_ipv6(struct xdp_md *ctx, struct nw_pkt *pkt,
					   struct bpf_fib_lookup *fib)
{
	struct ipv6hdr *ip6 = ipv6_header(ctx, pkt);

	if (!ip6)
		return NW_MALFORMED_IPV6;
	if (ip6->hop_limit <= 1)
		return NW_PASS_TTL_EXPIRED;
	ip6->hop_limit--;
	return fib_transmit(ctx, pkt, fib);
}

