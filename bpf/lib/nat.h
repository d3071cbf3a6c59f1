/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* SNAT for IPv4: port allocation in the dataplane, and the packet rewrite
 * from one tuple to another, ICMP errors and their embedded headers
 * included (RFC 4787, 5382, 5508). */
#pragma once

#include <linux/bpf.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "types.h"
#include "maps.h"
#include "parse.h"
#include "csum.h"
#include "counters.h"

/* Linux's nf_nat tries at most 128 ports before giving up; so do we. A
 * nearly full range fails sooner than an exhaustive search would, but a
 * packet never costs more than 128 map updates. */
#define NW_SNAT_MAX_PROBES 128

static __always_inline void stat_inc(enum nw_stat stat)
{
	__u64 *v = bpf_map_lookup_elem(&nw_stats, &stat);

	if (v)
		*v += 1;
}

static __always_inline void stat_add(enum nw_stat stat, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&nw_stats, &stat);

	if (v)
		*v += n;
}

static __always_inline struct nw_runtime_config *runtime_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&nw_config, &zero);
}

/* The type of the message that answers an ICMP (proto) query of type, and
 * the query a reply answers, as Linux's invmap tables have it; other types
 * answer nothing and stay as they are, so they never match a query flow. */
static __always_inline __u8 icmp_reverse_type(__u8 proto, __u8 type)
{
	if (proto == IPPROTO_ICMP) {
		switch (type) {
		case 8: return 0;   /* echo */
		case 0: return 8;
		case 13: return 14; /* timestamp */
		case 14: return 13;
		case 15: return 16; /* information */
		case 16: return 15;
		case 17: return 18; /* address mask */
		case 18: return 17;
		}
	} else if (proto == IPPROTO_ICMPV6) {
		switch (type) {
		case 128: return 129; /* echo */
		case 129: return 128;
		case 139: return 140; /* node information */
		case 140: return 139;
		}
	}
	return type;
}

/* Whether an ICMP (proto) message of type is a query or its reply, which
 * carry an identifier at the echo's place. */
static __always_inline int icmp_is_query(__u8 proto, __u8 type)
{
	return icmp_reverse_type(proto, type) != type;
}

static __always_inline void tuple4_reverse(struct nw_tuple4 *out, const struct nw_tuple4 *t)
{
	out->saddr = t->daddr;
	out->daddr = t->saddr;
	out->sport = t->dport;
	out->dport = t->sport;
	out->proto = t->proto;
	out->icmp_type = icmp_reverse_type(t->proto, t->icmp_type);
	out->pad[0] = out->pad[1] = 0;
}

static __always_inline int snat_excluded4(__be32 daddr)
{
	struct nw_lpm4_key k = { .prefixlen = 32, .addr = daddr };

	return bpf_map_lookup_elem(&nw_snat_excl4, &k) != NULL;
}

struct snat_probe {
	struct nw_snat4_key rev;        /* external side, port filled per probe */
	struct nw_snat4_endpoint inside;
	__u32 start;
	__u32 range;
	__u16 min;
	__u16 found;
	__u32 probes;
};

static long snat_probe_port(__u32 i, void *data)
{
	struct snat_probe *p = data;
	__u32 port;

	if (p->range == 0)
		return 1;
	port = p->min + (p->start + i) % p->range;
	p->rev.port = bpf_htons(port);
	p->probes++;
	if (bpf_map_update_elem(&nw_snat4_rev, &p->rev, &p->inside, BPF_NOEXIST) == 0) {
		p->found = 1;
		return 1;
	}
	return 0;
}

/* Finds or creates the SNAT mapping for the inside endpoint of t and
 * returns the external endpoint in ext. Mapping is endpoint-independent
 * (RFC 4787 REQ-1) unless NW_CFG_SNAT_APDM, and the source port is kept
 * when it is free. Returns 0 or a negative reason. */
static __noinline int snat_map4(struct nw_runtime_config *cfg, const struct nw_tuple4 *t,
				     __u64 now, struct nw_snat4_endpoint *ext)
{
	struct nw_snat4_key fwd = {
		.addr = t->saddr, .port = t->sport, .proto = t->proto,
	};
	struct nw_snat4_endpoint *cur;
	struct snat_probe p = {};
	__u32 count = cfg->snat_addr_count;
	__u16 sport = bpf_ntohs(t->sport);
	__u32 idx;

	if (cfg->flags & NW_CFG_SNAT_APDM) {
		fwd.remote_addr = t->daddr;
		fwd.remote_port = t->dport;
	}
	cur = bpf_map_lookup_elem(&nw_snat4_fwd, &fwd);
	if (cur) {
		*ext = *cur;
		return 0;
	}
	if (count == 0 || count > NW_SNAT_MAX_ADDRS)
		return -NW_DROP_SNAT_EXHAUSTED;

	/* Paired pooling (RFC 4787 REQ-2): the external address is a function
	 * of the inside address alone. */
	idx = (bpf_ntohl(t->saddr) * 2654435761u) % count;
	/* idx < count <= 16, but clang proves that and drops any check, so
	 * the verifier never sees one: hide idx from it, then mask. */
	asm volatile("" : "+r"(idx));
	idx &= NW_SNAT_MAX_ADDRS - 1;

	p.rev.addr = cfg->snat_addrs[idx];
	p.rev.proto = t->proto;
	p.rev.remote_addr = fwd.remote_addr;
	p.rev.remote_port = fwd.remote_port;
	p.inside.addr = t->saddr;
	p.inside.port = t->sport;
	p.inside.created_ns = now;
	p.min = cfg->snat_port_min;
	p.range = (__u32)cfg->snat_port_max - cfg->snat_port_min + 1;
	if (cfg->snat_port_max < cfg->snat_port_min)
		return -NW_DROP_SNAT_EXHAUSTED;

	/* Protocols without ports share the address alone. */
	if (t->proto != IPPROTO_TCP && t->proto != IPPROTO_UDP && t->proto != IPPROTO_ICMP) {
		p.rev.port = t->sport;
		if (bpf_map_update_elem(&nw_snat4_rev, &p.rev, &p.inside, BPF_NOEXIST))
			return -NW_DROP_SNAT_EXHAUSTED;
		p.found = 1;
	} else if (sport >= p.min && sport <= cfg->snat_port_max) {
		/* Port preservation (RFC 4787 REQ-3 recommends it). */
		p.rev.port = t->sport;
		if (bpf_map_update_elem(&nw_snat4_rev, &p.rev, &p.inside, BPF_NOEXIST) == 0) {
			p.found = 1;
			stat_inc(NW_STAT_SNAT_PORT_PRESERVED);
		}
	}
	if (!p.found) {
		p.start = bpf_get_prandom_u32() % p.range;
		bpf_loop(p.range < NW_SNAT_MAX_PROBES ? p.range : NW_SNAT_MAX_PROBES,
			 snat_probe_port, &p, 0);
		stat_add(NW_STAT_SNAT_PROBES, p.probes);
	}
	if (!p.found)
		return -NW_DROP_SNAT_EXHAUSTED;

	ext->addr = p.rev.addr;
	ext->port = p.rev.port;
	ext->created_ns = now;
	if (bpf_map_update_elem(&nw_snat4_fwd, &fwd, ext, BPF_NOEXIST)) {
		/* Another CPU mapped the same inside endpoint first: give our
		 * port back and share its mapping. */
		bpf_map_delete_elem(&nw_snat4_rev, &p.rev);
		cur = bpf_map_lookup_elem(&nw_snat4_fwd, &fwd);
		if (!cur)
			return -NW_DROP_CT_FULL;
		*ext = *cur;
		return 0;
	}
	stat_inc(NW_STAT_SNAT_NEW_MAPPING);
	return 0;
}

/* Finds the inside endpoint that owns an external endpoint, for hairpinning
 * (RFC 4787 REQ-9): an inside host reaching another through its mapping. */
static __always_inline struct nw_snat4_endpoint *snat_owner4(const struct nw_tuple4 *t)
{
	struct nw_snat4_key rev = {
		.addr = t->daddr, .port = t->dport, .proto = t->proto,
	};

	return bpf_map_lookup_elem(&nw_snat4_rev, &rev);
}

/* The L4 checksum field of the header at l4, or NULL when the protocol has
 * none we maintain or it lies outside the frame. */
static __always_inline __sum16 *l4_csum(void *l4, void *data_end, __u8 proto)
{
	__sum16 *sum;

	switch (proto) {
	case IPPROTO_TCP:
		sum = l4 + offsetof(struct tcphdr, check);
		break;
	case IPPROTO_UDP:
		sum = l4 + offsetof(struct udphdr, check);
		break;
	case IPPROTO_ICMP:
		sum = l4 + 2;
		break;
	default:
		return NULL;
	}
	if ((void *)(sum + 1) > data_end)
		return NULL;
	return sum;
}

/* Rewrites an IPv4 packet from tuple from to tuple to: addresses, ports (or
 * the ICMP echo identifier), and every checksum they are part of. */
static __always_inline int nat_rewrite4(struct xdp_md *ctx, struct nw_pkt *pkt,
					const struct nw_tuple4 *from, const struct nw_tuple4 *to)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 l4_off = pkt->l4_off;
	struct iphdr *ip = ipv4_header(ctx, pkt);
	__sum16 *sum = NULL;
	__be16 *ports;
	void *l4;

	if (!ip)
		return -NW_MALFORMED_IPV4;
	if (l4_off > NW_MAX_HDR_OFF)
		return -NW_MALFORMED_L4;
	l4 = data + l4_off;

	/* Later fragments carry no L4 header; the first fragment's checksum
	 * update covers the whole datagram. */
	if ((pkt->flags & (NW_PKT_L4 | NW_PKT_LATER_FRAGMENT)) == NW_PKT_L4) {
		sum = l4_csum(l4, data_end, from->proto);
		/* A zero UDP checksum means none was computed (RFC 768). */
		if (sum && from->proto == IPPROTO_UDP && *sum == 0)
			sum = NULL;
	}

	if (from->saddr != to->saddr) {
		csum_replace4(&ip->check, from->saddr, to->saddr);
		if (sum && from->proto != IPPROTO_ICMP)
			csum_replace4(sum, from->saddr, to->saddr);
		ip->saddr = to->saddr;
	}
	if (from->daddr != to->daddr) {
		csum_replace4(&ip->check, from->daddr, to->daddr);
		if (sum && from->proto != IPPROTO_ICMP)
			csum_replace4(sum, from->daddr, to->daddr);
		ip->daddr = to->daddr;
	}
	if (!(pkt->flags & NW_PKT_L4) || (pkt->flags & NW_PKT_LATER_FRAGMENT))
		return 0;

	if (from->proto == IPPROTO_ICMP) {
		struct nw_icmphdr *icmp = l4;

		if ((void *)(icmp + 1) > data_end)
			return -NW_MALFORMED_L4;
		if (icmp->echo_id != to->sport) {
			csum_replace2(&icmp->checksum, icmp->echo_id, to->sport);
			icmp->echo_id = to->sport;
		}
		return 0;
	}
	if (from->proto != IPPROTO_TCP && from->proto != IPPROTO_UDP)
		return 0;
	ports = l4;
	if ((void *)(ports + 2) > data_end)
		return -NW_MALFORMED_L4;
	if (from->sport != to->sport) {
		if (sum)
			csum_replace2(sum, from->sport, to->sport);
		ports[0] = to->sport;
	}
	if (from->dport != to->dport) {
		if (sum)
			csum_replace2(sum, from->dport, to->dport);
		ports[1] = to->dport;
	}
	/* A computed zero is sent as all ones: zero means "no checksum". */
	if (sum && from->proto == IPPROTO_UDP && *sum == 0)
		*sum = 0xffff;
	return 0;
}

/* Changes a 16-bit field inside an ICMP error's payload, keeping the outer
 * ICMP checksum (which covers the payload) right. */
static __always_inline void icmp_payload_set2(__sum16 *outer, __be16 *field, __be16 to)
{
	csum_replace2(outer, *field, to);
	*field = to;
}

static __always_inline void icmp_payload_set4(__sum16 *outer, __be32 *field, __be32 to)
{
	csum_replace4(outer, *field, to);
	*field = to;
}

/* Changes a checksum field inside an ICMP error's payload by the effect of
 * a 4-byte change elsewhere, and the outer checksum by the field's change. */
static __always_inline void icmp_payload_csum4(__sum16 *outer, __sum16 *inner, __be32 from, __be32 to)
{
	__sum16 old = *inner;

	csum_replace4(inner, from, to);
	csum_replace2(outer, old, *inner);
}

static __always_inline void icmp_payload_csum2(__sum16 *outer, __sum16 *inner, __be16 from, __be16 to)
{
	__sum16 old = *inner;

	csum_replace2(inner, from, to);
	csum_replace2(outer, old, *inner);
}

/* An ICMP error embeds the header of the packet it is about, which went the
 * other way. Translating the error means translating the outer destination
 * and the embedded source the way the flow's packets in the error's
 * direction are translated (RFC 5508 REQ-3): to is where the flow's packets
 * in this direction are rewritten to. inner_off is the embedded IP header. */
static __always_inline int nat_rewrite_icmp_error4(struct xdp_md *ctx, struct nw_pkt *pkt,
						   __u32 inner_off,
						   const struct nw_tuple4 *from,
						   const struct nw_tuple4 *to)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = ipv4_header(ctx, pkt);
	struct nw_icmphdr *icmp;
	struct iphdr *inner;
	__u32 inner_l4_off;
	__be16 *ports;
	__sum16 *isum;

	if (!ip)
		return -NW_MALFORMED_IPV4;
	if (pkt->l4_off > NW_MAX_HDR_OFF || inner_off > NW_MAX_HDR_OFF)
		return -NW_MALFORMED_L4;
	icmp = data + pkt->l4_off;
	inner = data + inner_off;
	if ((void *)(icmp + 1) > data_end || (void *)(inner + 1) > data_end)
		return -NW_MALFORMED_L4;
	inner_l4_off = inner_off + inner->ihl * 4;
	if (inner_l4_off > NW_MAX_HDR_OFF)
		return -NW_MALFORMED_L4;
	ports = data + inner_l4_off;
	/* RFC 5508 REQ-3: only the first 8 bytes of the embedded L4 header
	 * are guaranteed; that covers ports, the UDP checksum and the echo id. */
	if ((void *)(ports + 4) > data_end)
		return -NW_MALFORMED_L4;

	/* Outer header: the error is delivered where the flow's packets in
	 * this direction go. Where this direction's source is translated, the
	 * error leaves from the translated address too, whoever reported it:
	 * an inside router's address must not leak (RFC 5508 REQ-5). Routers
	 * on the untranslated side keep theirs, so traceroute still names them. */
	if (ip->daddr != to->daddr) {
		csum_replace4(&ip->check, ip->daddr, to->daddr);
		ip->daddr = to->daddr;
	}
	if (from->saddr != to->saddr && ip->saddr != to->saddr) {
		csum_replace4(&ip->check, ip->saddr, to->saddr);
		ip->saddr = to->saddr;
	}

	/* Embedded header: the reverse of this direction's tuple. */
	if (inner->saddr != to->daddr) {
		__be32 old = inner->saddr;

		icmp_payload_csum4(&icmp->checksum, &inner->check, old, to->daddr);
		icmp_payload_set4(&icmp->checksum, &inner->saddr, to->daddr);
		if (inner->protocol == IPPROTO_UDP && ports[3] != 0)
			icmp_payload_csum4(&icmp->checksum, (__sum16 *)&ports[3], old, to->daddr);
		if (inner->protocol == IPPROTO_TCP && (void *)(ports + 9) <= data_end)
			icmp_payload_csum4(&icmp->checksum, (__sum16 *)&ports[8], old, to->daddr);
	}
	if (inner->daddr != to->saddr) {
		__be32 old = inner->daddr;

		icmp_payload_csum4(&icmp->checksum, &inner->check, old, to->saddr);
		icmp_payload_set4(&icmp->checksum, &inner->daddr, to->saddr);
		if (inner->protocol == IPPROTO_UDP && ports[3] != 0)
			icmp_payload_csum4(&icmp->checksum, (__sum16 *)&ports[3], old, to->saddr);
		if (inner->protocol == IPPROTO_TCP && (void *)(ports + 9) <= data_end)
			icmp_payload_csum4(&icmp->checksum, (__sum16 *)&ports[8], old, to->saddr);
	}
	switch (inner->protocol) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
		isum = NULL;
		if (inner->protocol == IPPROTO_UDP && ports[3] != 0)
			isum = (__sum16 *)&ports[3];
		if (inner->protocol == IPPROTO_TCP && (void *)(ports + 9) <= data_end)
			isum = (__sum16 *)&ports[8];
		if (ports[0] != to->dport) {
			if (isum)
				icmp_payload_csum2(&icmp->checksum, isum, ports[0], to->dport);
			icmp_payload_set2(&icmp->checksum, &ports[0], to->dport);
		}
		if (ports[1] != to->sport) {
			if (isum)
				icmp_payload_csum2(&icmp->checksum, isum, ports[1], to->sport);
			icmp_payload_set2(&icmp->checksum, &ports[1], to->sport);
		}
		break;
	case IPPROTO_ICMP:
		/* An echo: ports[2] is the identifier, ports[1] its checksum. */
		if (ports[2] != to->sport) {
			icmp_payload_csum2(&icmp->checksum, (__sum16 *)&ports[1], ports[2], to->sport);
			icmp_payload_set2(&icmp->checksum, &ports[2], to->sport);
		}
		break;
	}
	stat_inc(NW_STAT_ICMP_ERROR_TRANSLATED);
	return 0;
}
