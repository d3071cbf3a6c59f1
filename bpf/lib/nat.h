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
#include "dnat.h"

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

/* What snat_map4 asks of the allocator (nw_snat_alloc4), in the per-CPU
 * nw_snat_req map: a global function's arguments must fit in registers or
 * memory it can be handed a pointer to. */
struct nw_snat_req {
	struct nw_snat4_key rev;          /* external side; addr, proto, remote (APDM) set */
	struct nw_snat4_endpoint inside;  /* the inside endpoint, created_ns set */
	__be32 daddr;                     /* the destination, for overloading */
	__be16 dport;
	__be16 sport;
	__u32 flags;                      /* enum nw_config_flags */
	__u32 quota;
	__u16 min, max;
	/* Out: the external port, and whether it is shared per destination. */
	__be16 port;
	__u8 overloaded;
	__u8 reply_icmp_type;             /* ICMP: the reply's type, for the reply tuple */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nw_snat_req);
} nw_snat_req SEC(".maps");

/* How a port claim ended, from bpf_map_update_elem's errno. Only EEXIST
 * means the port is taken. E2BIG is a full table. Anything else (a bucket
 * lock that timed out or found a deadlock, an allocation failure) says
 * nothing about the port: it is retried, once per packet, and never taken
 * for exhaustion. */
enum snat_claim {
	SNAT_CLAIMED = 0,
	SNAT_TAKEN,
	SNAT_TABLE_FULL,
	SNAT_TRANSIENT,
};

static __always_inline int snat_claim_result(long err)
{
	switch (err) {
	case 0:
		return SNAT_CLAIMED;
	case -17: /* EEXIST */
		return SNAT_TAKEN;
	case -7: /* E2BIG */
		return SNAT_TABLE_FULL;
	default:
		return SNAT_TRANSIENT;
	}
}

struct snat_probe {
	struct nw_snat4_key rev;        /* external side, port filled per probe */
	struct nw_snat4_endpoint inside;
	struct nw_tuple4 reply;         /* overloading: the reply tuple a port would give */
	__u32 start;                    /* a small range's walk starts here */
	__u32 range;
	__u16 min;
	__u8 found;
	__u8 overload;
	__u8 failed;                    /* enum snat_claim that stopped the search */
	__u8 retried;
	__u16 pad;
	__u32 probes;
};

/* Claims p->rev at its current port, retrying once (per packet) a failure
 * that is not about the port. Overloading also needs the flow's reply
 * tuple free: an endpoint-independent flow on that port to the same
 * destination endpoint already owns it. */
static __always_inline int snat_try_port(struct snat_probe *p)
{
	long err;
	int r;

	if (dnat_forwarded4(p->rev.addr, p->rev.port, p->rev.proto))
		return SNAT_TAKEN;
	if (p->overload) {
		p->reply.dport = p->rev.port;
		/* An echo's reply carries the identifier as both "ports". */
		if (p->reply.proto == IPPROTO_ICMP)
			p->reply.sport = p->rev.port;
		if (bpf_map_lookup_elem(&nw_ct4_rev, &p->reply))
			return SNAT_TAKEN;
	}
	err = bpf_map_update_elem(&nw_snat4_rev, &p->rev, &p->inside, BPF_NOEXIST);
	r = snat_claim_result(err);
	if (r != SNAT_TAKEN && r != SNAT_CLAIMED && !p->retried) {
		p->retried = 1;
		stat_inc(NW_STAT_SNAT_RETRIED);
		err = bpf_map_update_elem(&nw_snat4_rev, &p->rev, &p->inside, BPF_NOEXIST);
		r = snat_claim_result(err);
	}
	return r;
}

static long snat_probe_port(__u32 i, void *data)
{
	struct snat_probe *p = data;
	__u32 port;
	int r;

	if (p->range == 0)
		return 1;
	/* Each probe is a port of its own, drawn at random. Probing on from
	 * one random start would walk through any run of taken ports, and
	 * preserved source ports make long runs: two hosts using the same
	 * 1,280 consecutive source ports left a random start inside that run
	 * with 128 taken ports ahead of it, and the flow was dropped as if
	 * the address were full. A range no larger than the bound is walked
	 * whole instead, from a random start, so no free port is missed. */
	if (p->range <= NW_SNAT_MAX_PROBES)
		port = p->min + (p->start + i) % p->range;
	else
		port = p->min + bpf_get_prandom_u32() % p->range;
	p->rev.port = bpf_htons(port);
	p->probes++;
	r = snat_try_port(p);
	if (r == SNAT_CLAIMED) {
		p->found = 1;
		return 1;
	}
	if (r != SNAT_TAKEN) {
		p->failed = r;
		return 1;
	}
	return 0;
}

/* Probes up to NW_SNAT_MAX_PROBES random ports, the bound Linux's nf_nat
 * has too: a packet never costs more than that many claims. */
static __always_inline void snat_probe(struct snat_probe *p)
{
	if (p->found || p->failed)
		return;
	p->start = bpf_get_prandom_u32() % p->range;
	bpf_loop(p->range < NW_SNAT_MAX_PROBES ? p->range : NW_SNAT_MAX_PROBES,
		 snat_probe_port, p, 0);
	stat_add(NW_STAT_SNAT_PROBES, p->probes);
}

/* The in-use count at key, created at zero if missing. NULL when the count
 * table is full: the port is then allocated uncounted, by probing. */
static __always_inline __s64 *snat_count(struct nw_snat_count_key *key)
{
	__s64 zero = 0, *v = bpf_map_lookup_elem(&nw_snat_count, key);

	if (v)
		return v;
	bpf_map_update_elem(&nw_snat_count, key, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&nw_snat_count, key);
}

static __always_inline int snat_claim_reason(int failed)
{
	if (failed == SNAT_TABLE_FULL)
		return -NW_DROP_CT_FULL;
	if (failed == SNAT_TRANSIENT)
		return -NW_DROP_SNAT_TRANSIENT;
	return -NW_DROP_SNAT_EXHAUSTED;
}

/* Claims an external port for req's inside endpoint: 0 with req->port set,
 * or a negative reason. Endpoint-independent ports are counted per address
 * and per inside host, so a full address, or a host at its quota, is known
 * from the counts alone, without probing. When the address is full and
 * NW_CFG_SNAT_OVERLOAD is set, a port is shared across destinations: the
 * claim is then keyed by the destination endpoint, which keeps every
 * 5-tuple unique.
 *
 * A global function: the verifier checks it once, on its own. */
__noinline int nw_snat_alloc4(struct nw_snat_req *req)
{
	struct nw_snat_count_key ek = {}, hk = {};
	struct snat_probe p = {};
	__s64 *ext_used = NULL, *host_used = NULL;
	int counted, full = 0;
	__u16 sport;

	if (!req)
		return -NW_DROP_INTERNAL;
	sport = bpf_ntohs(req->sport);
	if (req->max < req->min)
		return -NW_DROP_SNAT_EXHAUSTED;
	p.rev = req->rev;
	p.inside = req->inside;
	p.min = req->min;
	p.range = (__u32)req->max - req->min + 1;

	/* Protocols without ports share the address alone. */
	if (p.rev.proto != IPPROTO_TCP && p.rev.proto != IPPROTO_UDP && p.rev.proto != IPPROTO_ICMP) {
		p.rev.port = req->sport;
		p.failed = snat_try_port(&p);
		if (p.failed != SNAT_CLAIMED)
			return snat_claim_reason(p.failed);
		req->port = p.rev.port;
		return 0;
	}

	/* Address-and-port-dependent mappings are per destination: they hold
	 * no port exclusively, and are not counted. */
	counted = !(req->flags & NW_CFG_SNAT_APDM);
	if (counted) {
		ek.addr = p.rev.addr;
		ek.proto = p.rev.proto;
		ek.owner = NW_SNAT_COUNT_EXTERNAL;
		hk.addr = p.inside.addr;
		hk.proto = p.rev.proto;
		hk.owner = NW_SNAT_COUNT_HOST;
		ext_used = snat_count(&ek);
		host_used = snat_count(&hk);
		if (host_used && req->quota && *host_used >= req->quota)
			return -NW_DROP_SNAT_HOST_QUOTA;
		full = ext_used && *ext_used >= p.range;
	}

	if (!full) {
		/* Port preservation (RFC 4787 REQ-3 recommends it). */
		if (sport >= p.min && sport <= req->max) {
			p.rev.port = req->sport;
			p.failed = snat_try_port(&p);
			if (p.failed == SNAT_CLAIMED) {
				p.found = 1;
				stat_inc(NW_STAT_SNAT_PORT_PRESERVED);
			} else if (p.failed == SNAT_TAKEN) {
				p.failed = 0;
			}
		}
		snat_probe(&p);
		if (p.found) {
			if (ext_used)
				__sync_fetch_and_add(ext_used, 1);
			if (host_used)
				__sync_fetch_and_add(host_used, 1);
			req->port = p.rev.port;
			return 0;
		}
		if (p.failed)
			return snat_claim_reason(p.failed);
	}
	if (!counted || !(req->flags & NW_CFG_SNAT_OVERLOAD))
		return -NW_DROP_SNAT_EXHAUSTED;

	/* Overloading: the address has no port left for a new endpoint, so
	 * a port is shared by destination endpoint (RFC 7857 §3), as Linux
	 * does whenever the 5-tuple stays unique. */
	p.rev.remote_addr = req->daddr;
	p.rev.remote_port = req->dport;
	p.overload = 1;
	p.found = 0;
	p.failed = 0;
	p.probes = 0;
	p.reply.saddr = req->daddr;
	p.reply.daddr = p.rev.addr;
	p.reply.sport = req->dport;
	p.reply.proto = p.rev.proto;
	p.reply.icmp_type = req->reply_icmp_type;
	snat_probe(&p);
	if (!p.found)
		return snat_claim_reason(p.failed);
	stat_inc(NW_STAT_SNAT_OVERLOADED);
	req->port = p.rev.port;
	req->overloaded = 1;
	return 0;
}

/* Gives back a port nw_snat_alloc4 claimed, and its count. */
static __always_inline void snat_unclaim4(const struct nw_snat_req *req, struct nw_snat4_key *rev)
{
	struct nw_snat_count_key k = { .proto = rev->proto };
	__s64 *v;

	bpf_map_delete_elem(&nw_snat4_rev, rev);
	if (req->overloaded || (req->flags & NW_CFG_SNAT_APDM) ||
	    (rev->proto != IPPROTO_TCP && rev->proto != IPPROTO_UDP && rev->proto != IPPROTO_ICMP))
		return;
	k.addr = rev->addr;
	k.owner = NW_SNAT_COUNT_EXTERNAL;
	v = bpf_map_lookup_elem(&nw_snat_count, &k);
	if (v)
		__sync_fetch_and_add(v, -1);
	k.addr = req->inside.addr;
	k.owner = NW_SNAT_COUNT_HOST;
	v = bpf_map_lookup_elem(&nw_snat_count, &k);
	if (v)
		__sync_fetch_and_add(v, -1);
}

/* Finds or creates the SNAT mapping for the inside endpoint of t and
 * returns the external endpoint in ext. Mapping is endpoint-independent
 * (RFC 4787 REQ-1) unless NW_CFG_SNAT_APDM, or unless the address is full
 * and the mapping overloads a port for this destination; the source port
 * is kept when it is free. Returns 0 or a negative reason. Inlined into
 * its one caller: a frame of its own took the chain from xdp_natwall down
 * to the allocator past the verifier's 512-byte combined stack. */
static __always_inline int snat_map4(struct nw_runtime_config *cfg, const struct nw_tuple4 *t,
				     __u64 now, struct nw_snat4_endpoint *ext)
{
	struct nw_snat4_key fwd = {
		.addr = t->saddr, .port = t->sport, .proto = t->proto,
	};
	struct nw_snat4_endpoint *cur;
	struct nw_snat_req *req;
	struct nw_snat4_key rev;
	__u32 count = cfg->snat_addr_count, zero = 0;
	__u32 idx;
	int ret;

	if (cfg->flags & NW_CFG_SNAT_APDM) {
		fwd.remote_addr = t->daddr;
		fwd.remote_port = t->dport;
	}
	cur = bpf_map_lookup_elem(&nw_snat4_fwd, &fwd);
	if (cur) {
		*ext = *cur;
		return 0;
	}
	if (cfg->flags & NW_CFG_SNAT_OVERLOAD && !(cfg->flags & NW_CFG_SNAT_APDM)) {
		/* A port this endpoint overloaded for this destination. */
		fwd.remote_addr = t->daddr;
		fwd.remote_port = t->dport;
		cur = bpf_map_lookup_elem(&nw_snat4_fwd, &fwd);
		if (cur) {
			*ext = *cur;
			return 0;
		}
		fwd.remote_addr = 0;
		fwd.remote_port = 0;
	}
	if (count == 0 || count > NW_SNAT_MAX_ADDRS)
		return -NW_DROP_SNAT_EXHAUSTED;
	req = bpf_map_lookup_elem(&nw_snat_req, &zero);
	if (!req)
		return -NW_DROP_INTERNAL;

	/* Paired pooling (RFC 4787 REQ-2): the external address is a function
	 * of the inside address alone. */
	idx = (bpf_ntohl(t->saddr) * 2654435761u) % count;
	/* idx < count <= 16, but clang proves that and drops any check, so
	 * the verifier never sees one: hide idx from it, then mask. */
	asm volatile("" : "+r"(idx));
	idx &= NW_SNAT_MAX_ADDRS - 1;

	__builtin_memset(req, 0, sizeof(*req));
	req->rev.addr = cfg->snat_addrs[idx];
	req->rev.proto = t->proto;
	req->rev.remote_addr = fwd.remote_addr;
	req->rev.remote_port = fwd.remote_port;
	req->inside.addr = t->saddr;
	req->inside.port = t->sport;
	req->inside.created_ns = now;
	req->daddr = t->daddr;
	req->dport = t->dport;
	req->sport = t->sport;
	req->reply_icmp_type = icmp_reverse_type(t->proto, t->icmp_type);
	req->flags = cfg->flags;
	req->quota = cfg->snat_host_quota;
	req->min = cfg->snat_port_min;
	req->max = cfg->snat_port_max;
	ret = nw_snat_alloc4(req);
	if (ret < 0)
		return ret;

	rev = req->rev;
	rev.port = req->port;
	if (req->overloaded) {
		fwd.remote_addr = t->daddr;
		fwd.remote_port = t->dport;
		rev.remote_addr = t->daddr;
		rev.remote_port = t->dport;
	}
	ext->addr = rev.addr;
	ext->port = rev.port;
	ext->created_ns = now;
	if (bpf_map_update_elem(&nw_snat4_fwd, &fwd, ext, BPF_NOEXIST)) {
		/* Another CPU mapped the same inside endpoint first: give our
		 * port back and share its mapping. */
		snat_unclaim4(req, &rev);
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

/* Inbound filtering (RFC 4787 REQ-8, RFC 5382 REQ-3) of a TCP or UDP
 * packet from outside, to an external endpoint, that belongs to no flow.
 * Returns the inside endpoint of the endpoint-independent mapping it may
 * reach, or NULL. Address-and-port-dependent filtering admits nothing
 * here: only a flow's own reply tuple gets in, through conntrack. */
static __always_inline struct nw_snat4_endpoint *snat_filter4(struct nw_runtime_config *cfg,
							      const struct nw_tuple4 *t)
{
	struct nw_snat4_perm_key pk = {
		.ext_addr = t->daddr, .remote_addr = t->saddr, .ext_port = t->dport, .proto = t->proto,
	};
	struct nw_snat4_endpoint *owner;
	struct nw_snat4_perm *perm;

	if (!(cfg->flags & (NW_CFG_SNAT_FILTER_EIF | NW_CFG_SNAT_FILTER_ADF)) ||
	    (cfg->flags & NW_CFG_SNAT_APDM))
		return NULL;
	if (t->proto != IPPROTO_TCP && t->proto != IPPROTO_UDP)
		return NULL;
	owner = snat_owner4(t);
	if (!owner || (cfg->flags & NW_CFG_SNAT_FILTER_EIF))
		return owner;
	/* Address-dependent: only from an address this very mapping has
	 * sent to; a port reallocated since belongs to another mapping. */
	perm = bpf_map_lookup_elem(&nw_snat4_perm, &pk);
	if (!perm || perm->mapping_created_ns != owner->created_ns)
		return NULL;
	return owner;
}

/* Records, for address-dependent filtering, that the mapping ext has sent
 * to t's destination address. */
static __always_inline void snat_permit4(struct nw_runtime_config *cfg, const struct nw_tuple4 *t,
					 const struct nw_snat4_endpoint *ext)
{
	struct nw_snat4_perm_key pk = {
		.ext_addr = ext->addr, .remote_addr = t->daddr, .ext_port = ext->port, .proto = t->proto,
	};
	struct nw_snat4_perm perm = { .mapping_created_ns = ext->created_ns };

	if (!(cfg->flags & NW_CFG_SNAT_FILTER_ADF) || (t->proto != IPPROTO_TCP && t->proto != IPPROTO_UDP))
		return;
	bpf_map_update_elem(&nw_snat4_perm, &pk, &perm, BPF_ANY);
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
