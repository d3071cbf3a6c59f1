/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Packet parsing: Ethernet (up to two VLAN tags), IPv4 with options, IPv6
 * with a bounded extension-header walk, and the TCP/UDP/ICMP/ICMPv6 headers.
 *
 * A parser returns 0 or a negative enum nw_reason. It never lets a caller
 * act on a header it has not bounds-checked: every length a header claims is
 * checked against both the frame and the enclosing header's length. */
#pragma once

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include "types.h"

#define NW_VLAN_MAX_DEPTH 2
/* RFC 8200 sets no limit; real traffic carries at most a few. Beyond this
 * the packet is malformed for us rather than walked without bound. */
#define NW_IPV6_MAX_EXTHDRS 8

#define NW_IP_MF 0x2000
#define NW_IP_OFFSET 0x1fff

#define NW_IPV6_FRAG_OFFSET 0xfff8
#define NW_IPV6_FRAG_MF 0x0001

enum nw_pkt_flags {
	NW_PKT_FRAGMENT = 1 << 0,       /* part of a fragmented datagram */
	NW_PKT_LATER_FRAGMENT = 1 << 1, /* not the first fragment: no L4 header */
	NW_PKT_L4 = 1 << 2,             /* l4 fields below are valid */
	NW_PKT_VLAN_ID = 1 << 3,        /* a tag names a VLAN (ID not 0): not a priority tag */
};

struct vlan_tag {
	__be16 tci;
	__be16 encapsulated_proto;
};

/* ICMP and ICMPv6 share this 8-byte layout; for echo messages the last four
 * bytes are the identifier and sequence. (linux/icmp.h would drag in libc.) */
struct nw_icmphdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be16 echo_id;
	__be16 echo_seq;
};

/* What later stages need to know about a packet. Offsets are from ctx->data. */
struct nw_pkt {
	__u16 l3_proto; /* ETH_P_IP or ETH_P_IPV6, host order */
	__u16 l3_off;
	__u16 l4_off;
	__u16 l3_len;   /* the L3 datagram's length as its header states it */
	__u8 l4_proto;
	__u8 vlan_depth;
	__u8 flags;     /* enum nw_pkt_flags */
	__u8 ttl;       /* TTL or hop limit */
	__be16 sport;   /* TCP/UDP ports; ICMP echo identifier in sport */
	__be16 dport;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 tcp_flags;
	__u8 pad;
	__u32 egress_ifindex; /* set by the forwarding stage */
	__u32 frag_id;        /* IPv4 identification or IPv6 fragment id */
	__u16 frag_off;       /* fragment offset in bytes */
	__u8 frag_more;       /* more fragments follow */
	__u8 pad2;
	__u32 frame_len;      /* bytes as received, before any rewrite */
	/* Where the fragmentable part starts, which fragment offsets count
	 * from: the L4 header in IPv4, the end of the Fragment header in
	 * IPv6, whatever extension headers follow it in a first fragment. */
	__u16 frag_data_off;
	__u16 pad3;
};

static __always_inline int parse_eth(void *data, void *data_end, struct nw_pkt *pkt)
{
	struct ethhdr *eth = data;
	__u16 off = sizeof(*eth);
	__be16 proto;

	if ((void *)(eth + 1) > data_end)
		return -NW_MALFORMED_ETH;
	proto = eth->h_proto;

#pragma unroll
	for (int i = 0; i < NW_VLAN_MAX_DEPTH; i++) {
		struct vlan_tag *tag = data + off;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(tag + 1) > data_end)
			return -NW_MALFORMED_VLAN;
		proto = tag->encapsulated_proto;
		/* VLAN ID 0 only carries a priority (802.1Q 9.6). */
		if (tag->tci & bpf_htons(0x0fff))
			pkt->flags |= NW_PKT_VLAN_ID;
		off += sizeof(*tag);
		pkt->vlan_depth++;
	}
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD))
		return -NW_MALFORMED_VLAN;

	pkt->l3_proto = bpf_ntohs(proto);
	pkt->l3_off = off;
	return 0;
}

/* Furthest offset from ctx->data at which natwall reads a header. Bounding
 * offsets gives the verifier ranges it can prune on instead of exploring
 * every path through the extension-header walk separately. */
#define NW_MAX_HDR_OFF 1024

/* Parses the L4 header at offset off. end is the offset where the L3
 * datagram ends by its length field (already checked against the frame), so
 * trailing Ethernet padding is never mistaken for L4 bytes. */
static __always_inline int parse_l4(void *data, void *data_end, __u32 off, __u32 end,
				    struct nw_pkt *pkt)
{
	void *l4;

	if (pkt->flags & NW_PKT_LATER_FRAGMENT)
		return 0;
	if (off > NW_MAX_HDR_OFF)
		return -NW_MALFORMED_L4;
	l4 = data + off;

	switch (pkt->l4_proto) {
	case IPPROTO_TCP: {
		struct tcphdr *tcp = l4;

		if (off + sizeof(*tcp) > end || (void *)(tcp + 1) > data_end)
			return -NW_MALFORMED_L4;
		if (tcp->doff < 5 || off + tcp->doff * 4 > end)
			return -NW_MALFORMED_L4;
		pkt->sport = tcp->source;
		pkt->dport = tcp->dest;
		pkt->tcp_flags = ((__u8 *)tcp)[13];
		break;
	}
	case IPPROTO_UDP: {
		struct udphdr *udp = l4;

		if (off + sizeof(*udp) > end || (void *)(udp + 1) > data_end)
			return -NW_MALFORMED_L4;
		/* A first fragment's UDP length covers the whole datagram. */
		if (!(pkt->flags & NW_PKT_FRAGMENT) &&
		    (bpf_ntohs(udp->len) < sizeof(*udp) || off + bpf_ntohs(udp->len) > end))
			return -NW_MALFORMED_L4;
		pkt->sport = udp->source;
		pkt->dport = udp->dest;
		break;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		struct nw_icmphdr *icmp = l4;

		if (off + sizeof(*icmp) > end || (void *)(icmp + 1) > data_end)
			return -NW_MALFORMED_L4;
		pkt->icmp_type = icmp->type;
		pkt->icmp_code = icmp->code;
		pkt->sport = icmp->echo_id;
		break;
	}
	default:
		return 0;
	}
	pkt->flags |= NW_PKT_L4;
	return 0;
}

/* IPv4 options (RFC 791 3.1) between offsets off and end, which the caller
 * has checked lie in the frame. An option whose length runs past the header
 * or is below 2 makes the packet malformed, as Linux's ip_options_compile
 * has it. Loose and strict source routes are dropped, as Linux does with
 * accept_source_route=0: they let a sender steer a packet past the route
 * natwall's policy assumes. At most 40 bytes of options, so 40 steps. */
#define NW_IPOPT_EOL 0
#define NW_IPOPT_NOP 1
#define NW_IPOPT_LSRR 0x83
#define NW_IPOPT_SSRR 0x89

static __noinline int parse_ipv4_options(struct xdp_md *ctx, __u32 base, __u32 optlen)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 pos = 0;

	if (base > 64 || optlen > 40)
		return -NW_MALFORMED_IPV4;
	for (int i = 0; i < 40; i++) {
		__u8 *opt;
		__u32 len = 1;

		if (pos >= optlen)
			break;
		opt = data + base + pos;
		if ((void *)(opt + 1) > data_end)
			return -NW_MALFORMED_IPV4;
		if (opt[0] == NW_IPOPT_EOL)
			break;
		if (opt[0] != NW_IPOPT_NOP) {
			if (pos + 2 > optlen || (void *)(opt + 2) > data_end)
				return -NW_MALFORMED_IPV4;
			len = opt[1];
			if (len < 2 || pos + len > optlen)
				return -NW_MALFORMED_IPV4;
			if (opt[0] == NW_IPOPT_LSRR || opt[0] == NW_IPOPT_SSRR)
				return -NW_DROP_IPV4_SRC_ROUTE;
		}
		/* pos + len <= optlen <= 40: the mask changes nothing but
		 * lets the verifier see one state per step, not one per
		 * path through the options. */
		pos = (pos + len) & 63;
	}
	return 0;
}

static __always_inline int parse_ipv4(struct xdp_md *ctx, void *data, void *data_end, struct nw_pkt *pkt)
{
	struct iphdr *ip = data + pkt->l3_off;
	__u16 hdr_len, tot_len, frag;
	int ret;

	if ((void *)(ip + 1) > data_end)
		return -NW_MALFORMED_IPV4;
	if (ip->version != 4 || ip->ihl < 5)
		return -NW_MALFORMED_IPV4;
	hdr_len = ip->ihl * 4;
	tot_len = bpf_ntohs(ip->tot_len);
	if (tot_len < hdr_len || (void *)ip + tot_len > data_end)
		return -NW_MALFORMED_IPV4;
	if (hdr_len > sizeof(*ip)) {
		ret = parse_ipv4_options(ctx, pkt->l3_off + sizeof(*ip), hdr_len - sizeof(*ip));
		if (ret < 0)
			return ret;
	}

	frag = bpf_ntohs(ip->frag_off);
	if (frag & (NW_IP_MF | NW_IP_OFFSET)) {
		pkt->flags |= NW_PKT_FRAGMENT;
		pkt->frag_id = bpf_ntohs(ip->id);
		pkt->frag_off = (frag & NW_IP_OFFSET) * 8;
		pkt->frag_more = !!(frag & NW_IP_MF);
	}
	if (frag & NW_IP_OFFSET)
		pkt->flags |= NW_PKT_LATER_FRAGMENT;
	pkt->frag_data_off = pkt->l3_off + hdr_len;

	pkt->l3_len = tot_len;
	pkt->l4_proto = ip->protocol;
	pkt->ttl = ip->ttl;

	pkt->l4_off = pkt->l3_off + hdr_len;
	ret = parse_l4(data, data_end, pkt->l4_off, pkt->l3_off + tot_len, pkt);
	if (ret < 0)
		return ret;
	return 0;
}

static __always_inline int parse_ipv6(void *data, void *data_end, struct nw_pkt *pkt)
{
	struct ipv6hdr *ip6 = data + pkt->l3_off;
	__u32 off, end;
	__u8 nexthdr;
	int ret;

	if ((void *)(ip6 + 1) > data_end)
		return -NW_MALFORMED_IPV6;
	if (ip6->version != 6)
		return -NW_MALFORMED_IPV6;
	/* A zero payload length announces a jumbogram, which no link natwall
	 * sits on can carry. */
	if (ip6->payload_len == 0 && ip6->nexthdr == IPPROTO_HOPOPTS)
		return -NW_MALFORMED_IPV6;
	off = pkt->l3_off + sizeof(*ip6);
	end = off + bpf_ntohs(ip6->payload_len);
	if (data + end > data_end)
		return -NW_MALFORMED_IPV6;

	pkt->l3_len = sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
	pkt->ttl = ip6->hop_limit;
	nexthdr = ip6->nexthdr;

	for (int i = 0; i < NW_IPV6_MAX_EXTHDRS; i++) {
		__u8 *hdr;
		__u32 len;

		switch (nexthdr) {
		case IPPROTO_HOPOPTS:
		case IPPROTO_DSTOPTS:
		case IPPROTO_ROUTING:
		case IPPROTO_AH:
		case IPPROTO_FRAGMENT:
			break;
		default:
			goto upper_layer;
		}
		/* Every extension header is at least 8 bytes. */
		if (off > NW_MAX_HDR_OFF || off + 8 > end)
			return -NW_MALFORMED_IPV6_EXTHDR;
		hdr = data + off;
		if ((void *)(hdr + 8) > data_end)
			return -NW_MALFORMED_IPV6_EXTHDR;

		switch (nexthdr) {
		case IPPROTO_HOPOPTS:
			/* RFC 8200 4.3: only directly after the IPv6 header. */
			if (i != 0)
				return -NW_MALFORMED_IPV6_EXTHDR;
			len = (hdr[1] + 1) * 8;
			break;
		case IPPROTO_ROUTING:
			/* RFC 5095 deprecates type 0 routing headers: an
			 * amplification and evasion vector. */
			if (hdr[2] == 0 && hdr[3] != 0)
				return -NW_MALFORMED_IPV6_EXTHDR;
			len = (hdr[1] + 1) * 8;
			break;
		case IPPROTO_AH:
			len = (hdr[1] + 2) * 4;
			break;
		case IPPROTO_FRAGMENT: {
			__u16 frag = ((__u16)hdr[2] << 8) | hdr[3];

			/* Two fragment headers are an evasion attempt (RFC 8200 4.1). */
			if (pkt->flags & NW_PKT_FRAGMENT)
				return -NW_MALFORMED_IPV6_EXTHDR;
			/* An atomic fragment (offset 0, no MF) is a whole datagram
			 * (RFC 6946). */
			if (frag & (NW_IPV6_FRAG_OFFSET | NW_IPV6_FRAG_MF)) {
				pkt->flags |= NW_PKT_FRAGMENT;
				pkt->frag_id = ((__u32)hdr[4] << 24) | ((__u32)hdr[5] << 16) |
					       ((__u32)hdr[6] << 8) | hdr[7];
				pkt->frag_off = frag & NW_IPV6_FRAG_OFFSET;
				pkt->frag_more = frag & NW_IPV6_FRAG_MF;
			}
			if (frag & NW_IPV6_FRAG_OFFSET)
				pkt->flags |= NW_PKT_LATER_FRAGMENT;
			pkt->frag_data_off = off + 8;
			len = 8;
			break;
		}
		default: /* IPPROTO_DSTOPTS */
			len = (hdr[1] + 1) * 8;
			break;
		}
		nexthdr = hdr[0];
		off += len;
		if (off > end)
			return -NW_MALFORMED_IPV6_EXTHDR;
		if (pkt->flags & NW_PKT_LATER_FRAGMENT)
			goto upper_layer;
	}
	/* Still an extension header after the limit. */
	switch (nexthdr) {
	case IPPROTO_HOPOPTS:
	case IPPROTO_DSTOPTS:
	case IPPROTO_ROUTING:
	case IPPROTO_AH:
	case IPPROTO_FRAGMENT:
		return -NW_MALFORMED_IPV6_EXTHDR;
	}

upper_layer:
	pkt->l4_proto = nexthdr;
	pkt->l4_off = off;
	ret = parse_l4(data, data_end, off, end, pkt);
	if (ret < 0)
		return ret;
	return 0;
}

/* Fills pkt from the frame. Returns 0, or a negative enum nw_reason for a
 * frame that takes a non-IP or malformed path. */
static __noinline int parse_packet(struct xdp_md *ctx, struct nw_pkt *pkt)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	int ret;

	pkt->frame_len = data_end - data;
	ret = parse_eth(data, data_end, pkt);
	if (ret < 0)
		return ret;

	switch (pkt->l3_proto) {
	case ETH_P_IP:
		return parse_ipv4(ctx, data, data_end, pkt);
	case ETH_P_IPV6:
		return parse_ipv6(data, data_end, pkt);
	default:
		return -NW_PASS_NOT_IP;
	}
}
