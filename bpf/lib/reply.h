/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Answers the sender from XDP: the packet is turned, in place, into a TCP
 * RST back to where it came from, and transmitted out the ingress NIC. */
#pragma once

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "types.h"
#include "parse.h"
#include "csum.h"

#define NW_RST_TTL 64

struct nw_pseudo4 {
	__be32 saddr;
	__be32 daddr;
	__u8 zero;
	__u8 proto;
	__be16 len;
};

struct nw_pseudo6 {
	__u8 saddr[16];
	__u8 daddr[16];
	__be32 len;
	__u8 zero[3];
	__u8 proto;
};

static __always_inline void swap_macs(struct ethhdr *eth)
{
	__u8 tmp[ETH_ALEN];

	__builtin_memcpy(tmp, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, tmp, ETH_ALEN);
}

/* Fills in the RST's TCP header from the segment it answers (RFC 9293
 * 3.10.7.1): with an ACK, the RST takes its sequence number from it;
 * without one, the RST acknowledges everything the segment occupied. */
static __always_inline void tcp_make_rst(struct tcphdr *tcp, __u32 payload)
{
	__u32 seq = bpf_ntohl(tcp->seq);
	__be32 ack = tcp->ack_seq;
	/* Read before the flags word is cleared below: SYN and FIN each
	 * occupy a sequence number the RST must acknowledge. */
	int had_ack = tcp->ack;
	__u32 occupied = payload + tcp->syn + tcp->fin;
	__be16 port = tcp->source;

	tcp->source = tcp->dest;
	tcp->dest = port;
	/* Zero the flags/offset word, then set what the RST needs. */
	((__be16 *)tcp)[6] = 0;
	tcp->doff = 5;
	tcp->rst = 1;
	if (had_ack) {
		tcp->seq = ack;
		tcp->ack_seq = 0;
	} else {
		tcp->seq = 0;
		tcp->ack_seq = bpf_htonl(seq + occupied);
		tcp->ack = 1;
	}
	tcp->window = 0;
	tcp->urg_ptr = 0;
	tcp->check = 0;
}

/* Rewrites a TCP/IPv4 segment into the RST that answers it. The caller has
 * checked that pkt is TCP with an L4 header. Returns NW_REPLY_TCP_RST, or a
 * drop reason when the packet is not one a RST can be built from. */
static __always_inline int reply_tcp_rst4(struct xdp_md *ctx, struct nw_pkt *pkt)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct nw_pseudo4 ph = {};
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct tcphdr *tcp;
	__u32 payload, l3_off = pkt->l3_off;
	__be32 addr;
	__s64 sum;
	int shrink;

	if (l3_off > 64)
		return NW_DROP_CT_INVALID;
	ip = data + l3_off;
	tcp = (void *)(ip + 1);
	if ((void *)(tcp + 1) > data_end || (void *)(eth + 1) > data_end)
		return NW_DROP_CT_INVALID;
	/* Never answer a RST, and keep to the plain header layout. */
	if (tcp->rst || ip->ihl != 5 || (pkt->flags & NW_PKT_FRAGMENT))
		return NW_DROP_CT_INVALID;
	payload = bpf_ntohs(ip->tot_len) - 20 - tcp->doff * 4;
	if (payload > 0xffff)
		payload = 0;

	swap_macs(eth);
	addr = ip->saddr;
	ip->saddr = ip->daddr;
	ip->daddr = addr;
	ip->tot_len = bpf_htons(40);
	ip->ttl = NW_RST_TTL;
	ip->id = 0;
	ip->frag_off = bpf_htons(0x4000);
	ip->tos = 0;
	ip->check = 0;
	tcp_make_rst(tcp, payload);

	ph.saddr = ip->saddr;
	ph.daddr = ip->daddr;
	ph.proto = IPPROTO_TCP;
	ph.len = bpf_htons(20);
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&ph, sizeof(ph), 0);
	sum = bpf_csum_diff(NULL, 0, (__be32 *)tcp, sizeof(*tcp), sum);
	tcp->check = csum_fold(sum);
	sum = bpf_csum_diff(NULL, 0, (__be32 *)ip, sizeof(*ip), 0);
	ip->check = csum_fold(sum);

	shrink = (int)(data_end - data) - (int)(l3_off + 40);
	if (shrink > 0 && bpf_xdp_adjust_tail(ctx, -shrink))
		return NW_DROP_CT_INVALID;
	return NW_REPLY_TCP_RST;
}

static __always_inline int reply_tcp_rst6(struct xdp_md *ctx, struct nw_pkt *pkt)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct nw_pseudo6 ph = {};
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6;
	struct tcphdr *tcp;
	__u32 payload, l3_off = pkt->l3_off;
	__u8 addr[16];
	__s64 sum;
	int shrink;

	if (l3_off > 64 || pkt->l4_off != l3_off + sizeof(*ip6))
		return NW_DROP_CT_INVALID;
	ip6 = data + l3_off;
	tcp = (void *)(ip6 + 1);
	if ((void *)(tcp + 1) > data_end || (void *)(eth + 1) > data_end)
		return NW_DROP_CT_INVALID;
	if (tcp->rst)
		return NW_DROP_CT_INVALID;
	payload = bpf_ntohs(ip6->payload_len) - tcp->doff * 4;
	if (payload > 0xffff)
		payload = 0;

	swap_macs(eth);
	__builtin_memcpy(addr, &ip6->saddr, 16);
	__builtin_memcpy(&ip6->saddr, &ip6->daddr, 16);
	__builtin_memcpy(&ip6->daddr, addr, 16);
	ip6->payload_len = bpf_htons(20);
	ip6->hop_limit = NW_RST_TTL;
	tcp_make_rst(tcp, payload);

	__builtin_memcpy(ph.saddr, &ip6->saddr, 16);
	__builtin_memcpy(ph.daddr, &ip6->daddr, 16);
	ph.len = bpf_htonl(20);
	ph.proto = IPPROTO_TCP;
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&ph, sizeof(ph), 0);
	sum = bpf_csum_diff(NULL, 0, (__be32 *)tcp, sizeof(*tcp), sum);
	tcp->check = csum_fold(sum);

	shrink = (int)(data_end - data) - (int)(l3_off + 60);
	if (shrink > 0 && bpf_xdp_adjust_tail(ctx, -shrink))
		return NW_DROP_CT_INVALID;
	return NW_REPLY_TCP_RST;
}

/* Bytes of the rejected datagram an ICMP error quotes: its header and the
 * first 8 bytes of its payload (RFC 792), which hold the ports. */
#define NW_QUOTE4 (20 + 8)
#define NW_QUOTE6 (40 + 8)

/* Turns an IPv4 packet into the ICMP destination unreachable,
 * communication administratively prohibited (type 3 code 13, RFC 1812),
 * that answers it, sent back out the ingress NIC. It comes from the
 * rejected packet's destination, so the client's own path checks and
 * socket error reporting see it as the far end's answer. */
static __always_inline int reply_icmp_unreach4(struct xdp_md *ctx, struct nw_pkt *pkt)
{
	void *data, *data_end;
	struct ethhdr *eth, *old_eth;
	struct iphdr *ip, *quoted;
	struct nw_icmphdr *icmp;
	__u32 l3_off = pkt->l3_off, len;
	__s64 sum;

	/* Keep to the common layout: no VLAN tag, no IP options, a header
	 * and 8 bytes to quote, no fragment. */
	if (l3_off != sizeof(struct ethhdr) || (pkt->flags & NW_PKT_LATER_FRAGMENT))
		return NW_DROP_ACL_REJECT;
	len = ctx->data_end - ctx->data;
	if (len < sizeof(struct ethhdr) + NW_QUOTE4)
		return NW_DROP_ACL_REJECT;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	ip = data + sizeof(struct ethhdr);
	if ((void *)(ip + 1) > data_end || ip->ihl != 5)
		return NW_DROP_ACL_REJECT;
	/* Never answer an ICMP error with one (RFC 1122 3.2.2). */
	if (ip->protocol == IPPROTO_ICMP && pkt->icmp_type != 8 && pkt->icmp_type != 13 &&
	    pkt->icmp_type != 15 && pkt->icmp_type != 17)
		return NW_DROP_ACL_REJECT;

	/* Make room for the new IP and ICMP headers in front. */
	if (bpf_xdp_adjust_head(ctx, -(int)(sizeof(struct iphdr) + sizeof(struct nw_icmphdr))))
		return NW_DROP_ACL_REJECT;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	old_eth = data + sizeof(struct iphdr) + sizeof(struct nw_icmphdr);
	ip = (void *)(eth + 1);
	icmp = (void *)(ip + 1);
	quoted = (void *)(icmp + 1);
	if ((void *)quoted + NW_QUOTE4 > data_end || (void *)(old_eth + 1) > data_end)
		return NW_DROP_ACL_REJECT;

	__builtin_memcpy(eth->h_dest, old_eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, old_eth->h_dest, ETH_ALEN);
	eth->h_proto = bpf_htons(ETH_P_IP);

	ip->version = 4;
	ip->ihl = 5;
	ip->tos = 0xc0; /* internetwork control, as ICMP errors are sent */
	ip->tot_len = bpf_htons(sizeof(*ip) + sizeof(*icmp) + NW_QUOTE4);
	ip->id = 0;
	ip->frag_off = 0;
	ip->ttl = NW_RST_TTL;
	ip->protocol = IPPROTO_ICMP;
	ip->saddr = quoted->daddr;
	ip->daddr = quoted->saddr;
	ip->check = 0;
	sum = bpf_csum_diff(NULL, 0, (__be32 *)ip, sizeof(*ip), 0);
	ip->check = csum_fold(sum);

	icmp->type = 3;
	icmp->code = 13;
	icmp->checksum = 0;
	icmp->echo_id = 0;
	icmp->echo_seq = 0;
	sum = bpf_csum_diff(NULL, 0, (__be32 *)icmp, sizeof(*icmp) + NW_QUOTE4, 0);
	icmp->checksum = csum_fold(sum);

	len = sizeof(*eth) + sizeof(*ip) + sizeof(*icmp) + NW_QUOTE4;
	if ((__u32)(data_end - data) > len && bpf_xdp_adjust_tail(ctx, -(int)((data_end - data) - len)))
		return NW_DROP_ACL_REJECT;
	return NW_REPLY_ICMP_UNREACH;
}

/* The IPv6 counterpart: destination unreachable, administratively
 * prohibited (type 1 code 1, RFC 4443). */
static __always_inline int reply_icmp_unreach6(struct xdp_md *ctx, struct nw_pkt *pkt)
{
	void *data, *data_end;
	struct ethhdr *eth, *old_eth;
	struct ipv6hdr *ip6, *quoted;
	struct nw_icmphdr *icmp;
	struct nw_pseudo6 ph = {};
	__u32 len;
	__s64 sum;

	if (pkt->l3_off != sizeof(struct ethhdr) || (pkt->flags & NW_PKT_LATER_FRAGMENT))
		return NW_DROP_ACL_REJECT;
	if (pkt->l4_proto == IPPROTO_ICMPV6 && pkt->icmp_type < 128)
		return NW_DROP_ACL_REJECT;
	if (ctx->data_end - ctx->data < sizeof(struct ethhdr) + NW_QUOTE6)
		return NW_DROP_ACL_REJECT;

	if (bpf_xdp_adjust_head(ctx, -(int)(sizeof(struct ipv6hdr) + sizeof(struct nw_icmphdr))))
		return NW_DROP_ACL_REJECT;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	old_eth = data + sizeof(struct ipv6hdr) + sizeof(struct nw_icmphdr);
	ip6 = (void *)(eth + 1);
	icmp = (void *)(ip6 + 1);
	quoted = (void *)(icmp + 1);
	if ((void *)quoted + NW_QUOTE6 > data_end || (void *)(old_eth + 1) > data_end)
		return NW_DROP_ACL_REJECT;

	__builtin_memcpy(eth->h_dest, old_eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, old_eth->h_dest, ETH_ALEN);
	eth->h_proto = bpf_htons(ETH_P_IPV6);

	*(__be32 *)ip6 = bpf_htonl(0x60000000);
	ip6->payload_len = bpf_htons(sizeof(*icmp) + NW_QUOTE6);
	ip6->nexthdr = IPPROTO_ICMPV6;
	ip6->hop_limit = NW_RST_TTL;
	__builtin_memcpy(&ip6->saddr, &quoted->daddr, 16);
	__builtin_memcpy(&ip6->daddr, &quoted->saddr, 16);

	icmp->type = 1;
	icmp->code = 1;
	icmp->checksum = 0;
	icmp->echo_id = 0;
	icmp->echo_seq = 0;
	__builtin_memcpy(ph.saddr, &ip6->saddr, 16);
	__builtin_memcpy(ph.daddr, &ip6->daddr, 16);
	ph.len = bpf_htonl(sizeof(*icmp) + NW_QUOTE6);
	ph.proto = IPPROTO_ICMPV6;
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&ph, sizeof(ph), 0);
	sum = bpf_csum_diff(NULL, 0, (__be32 *)icmp, sizeof(*icmp) + NW_QUOTE6, sum);
	icmp->checksum = csum_fold(sum);

	len = sizeof(*eth) + sizeof(*ip6) + sizeof(*icmp) + NW_QUOTE6;
	if ((__u32)(data_end - data) > len && bpf_xdp_adjust_tail(ctx, -(int)((data_end - data) - len)))
		return NW_DROP_ACL_REJECT;
	return NW_REPLY_ICMP_UNREACH;
}
