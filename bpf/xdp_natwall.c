/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* natwall's XDP entry point: every packet that reaches a natwall NIC.
 *
 *   parse -> conntrack lookup -- hit --> NAT rewrite -> route -> exit
 *                              \- miss -> local? hairpin? policy -> new flow (+SNAT)
 *
 * Each stage returns an enum nw_reason; nw_exit counts it and turns it into
 * the XDP action, so every packet is explained by exactly one counter.
 * Until the rules engine lands the policy is fixed: inside hosts may open
 * flows to anywhere, and from outside only their replies are admitted. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "lib/types.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/fib.h"
#include "lib/counters.h"
#include "lib/nat.h"
#include "lib/reply.h"
#include "lib/ct.h"
#include "lib/tcp_window.h"
#include "lib/zone.h"
#include "lib/audit.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const struct nw_btf_anchor *nw_btf_anchor __attribute__((unused));

#define NW_IP_DF 0x4000

static __always_inline int icmp4_is_error(__u8 type)
{
	/* unreachable, source quench, redirect, time exceeded, parameter
	 * problem: about another packet, never a flow of their own (as
	 * Linux's icmp_is_err has it). */
	return type == 3 || type == 4 || type == 5 || type == 11 || type == 12;
}

static __always_inline int icmp6_is_error(__u8 type)
{
	return type >= 1 && type <= 4; /* unreachable, too big, time exceeded, parameter problem */
}

static __always_inline int tuple4_equal(const struct nw_tuple4 *a, const struct nw_tuple4 *b)
{
	return a->saddr == b->saddr && a->daddr == b->daddr && a->sport == b->sport &&
	       a->dport == b->dport;
}

/* An ICMP message's place in its tuple: a query (or reply) puts its
 * identifier in both ports. The type rides in dport until
 * icmp_tuple_finish moves it, so that a later fragment gets its first
 * fragment's type along with the identifier. */
static __always_inline void icmp_tuple_start(__u8 proto, struct nw_pkt *pkt, __be16 *sport,
					     __be16 *dport)
{
	if (icmp_is_query(proto, pkt->icmp_type))
		*sport = pkt->sport;
	*dport = pkt->icmp_type;
}

static __always_inline void icmp_tuple_finish(__u8 proto, __be16 sport, __be16 *dport, __u8 *icmp_type)
{
	if (proto != IPPROTO_ICMP && proto != IPPROTO_ICMPV6)
		return;
	*icmp_type = (__u8)*dport;
	*dport = sport;
}

static __always_inline void acl_pkt_ports(struct nw_acl_pkt *ap, struct nw_pkt *pkt, __u8 proto,
					  __be16 sport, __be16 dport, __u8 zone)
{
	ap->proto = proto;
	ap->zone = zone;
	if ((proto == IPPROTO_TCP || proto == IPPROTO_UDP) &&
	    ((pkt->flags & NW_PKT_L4) || (pkt->flags & NW_PKT_LATER_FRAGMENT))) {
		ap->has_ports = 1;
		ap->sport = bpf_ntohs(sport);
		ap->dport = bpf_ntohs(dport);
	}
	if ((proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6) && (pkt->flags & NW_PKT_L4)) {
		ap->is_icmp = 1;
		ap->icmp = (__u16)pkt->icmp_type << 8 | pkt->icmp_code;
	}
}

static __always_inline void acl_pkt4(struct nw_acl_pkt *ap, struct nw_pkt *pkt,
				     const struct nw_tuple4 *t, __u8 zone)
{
	__builtin_memset(ap, 0, sizeof(*ap));
	ap->family = 4;
	__builtin_memcpy(ap->saddr, &t->saddr, 4);
	__builtin_memcpy(ap->daddr, &t->daddr, 4);
	acl_pkt_ports(ap, pkt, t->proto, t->sport, t->dport, zone);
}

static __always_inline void acl_pkt6(struct nw_acl_pkt *ap, struct nw_pkt *pkt,
				     const struct nw_tuple6 *t, __u8 zone)
{
	__builtin_memset(ap, 0, sizeof(*ap));
	ap->family = 6;
	__builtin_memcpy(ap->saddr, t->saddr, 16);
	__builtin_memcpy(ap->daddr, t->daddr, 16);
	acl_pkt_ports(ap, pkt, t->proto, t->sport, t->dport, zone);
}

/* What the stateful stage decided for a flow's first packet, as a reason:
 * 0 admits the flow. With no rule set loaded, the built-in policy applies:
 * flows may start from inside only. */
static __always_inline int stateful_verdict(struct xdp_md *ctx, struct nw_pkt *pkt,
					    struct nw_acl_pkt *ap, int src_inside, __u64 now,
					    __u32 *rule_id)
{
	struct nw_scratch *sc = scratch();
	struct nw_acl_result *res;

	if (!sc)
		return NW_DROP_INTERNAL;
	res = &sc->acl_res;
	acl_classify(ap, NW_ACL_STATEFUL, pkt->frame_len, res);
	if (res->alerts || res->flags)
		acl_report(ap, res, now);
	*rule_id = res->rule_id;
	switch (res->action) {
	case NW_ACL_NONE:
		if (ap->zone == NW_ZONE_OUTBOUND || ap->zone == NW_ZONE_EAST_WEST)
			return 0;
		return NW_DROP_POLICY;
	case NW_ACL_ALLOW:
		return 0;
	case NW_ACL_REJECT:
		/* The client learns at once, instead of timing out. */
		if (pkt->l4_proto == IPPROTO_TCP && (pkt->flags & NW_PKT_L4)) {
			int r = pkt->l3_proto == ETH_P_IP ? reply_tcp_rst4(ctx, pkt) : reply_tcp_rst6(ctx, pkt);

			return r == NW_REPLY_TCP_RST ? r : NW_DROP_ACL_REJECT;
		}
		return pkt->l3_proto == ETH_P_IP ? reply_icmp_unreach4(ctx, pkt) : reply_icmp_unreach6(ctx, pkt);
	default:
		return NW_DROP_ACL_DENY;
	}
}

/* Stateless rules: every packet, both directions. 0 lets it go on. */
static __always_inline int stateless_verdict(struct nw_pkt *pkt, struct nw_acl_pkt *ap)
{
	struct nw_scratch *sc = scratch();

	if (!sc)
		return NW_DROP_INTERNAL;
	acl_classify(ap, NW_ACL_STATELESS, pkt->frame_len, &sc->acl_res);
	acl_test_flip_gen(&sc->acl_res);
	return sc->acl_res.action == NW_ACL_DROP ? NW_DROP_ACL_STATELESS : 0;
}

/* Whether a packet of flow st in direction dir may skip the stateless
 * classifier: its direction passed under the rules and inside networks in
 * force. The rule that passed it is counted as if it had classified. */
static __always_inline int stateless_known(struct nw_ct_state *st, int dir, struct nw_pkt *pkt)
{
	__u32 d = dir & 1;

	/* ICMP packets of one flow differ in type and code, which the
	 * stateless rules look at: each is classified. */
	if (pkt->l4_proto == IPPROTO_ICMP || pkt->l4_proto == IPPROTO_ICMPV6)
		return 0;
	if (!st || st->stateless_tag[d] != acl_tag())
		return 0;
	acl_count(st->stateless_rule[d], pkt->frame_len);
	return 1;
}

/* Records the pass stateless_verdict just gave a packet of flow st, under
 * the generation that gave it: a reload since then makes the next packet
 * classify again. */
static __always_inline void stateless_remember(struct nw_ct_state *st, int dir, struct nw_pkt *pkt)
{
	struct nw_scratch *sc = scratch();
	__u32 d = dir & 1;

	if (!st || !sc || pkt->l4_proto == IPPROTO_ICMP || pkt->l4_proto == IPPROTO_ICMPV6)
		return;
	st->stateless_rule[d] = sc->acl_res.rule_id;
	st->stateless_tag[d] = sc->acl_res.tag;
}

/* Routes a packet of a tracked IPv4 flow, rewriting it from tuple from to
 * tuple to when the flow is translated. What the kernel must answer (TTL
 * expiry, fragmentation needed with DF) goes up untranslated, so the
 * kernel's ICMP reaches the inside host; what the kernel must forward goes
 * up translated, so nothing untranslated ever leaves. A translated reply
 * that only the kernel could handle is dropped: its ICMP error would carry
 * the inside address outside. */
static __noinline int forward4(struct xdp_md *ctx, struct nw_pkt *pkt, int dir,
				    const struct nw_tuple4 *from, const struct nw_tuple4 *to)
{
	struct bpf_fib_lookup *fib = scratch_fib();
	struct iphdr *ip = ipv4_header(ctx, pkt);
	int translated = !tuple4_equal(from, to);
	int reason, ret;
	__u8 ttl;
	__u16 df;

	if (!fib)
		return NW_DROP_INTERNAL;

	if (!ip)
		return NW_MALFORMED_IPV4;
	ttl = ip->ttl;
	df = bpf_ntohs(ip->frag_off) & NW_IP_DF;
	reason = fib_lookup_ipv4(ctx, pkt, to, ip->tos, fib);

	if (translated) {
		switch (reason) {
		case 0:
			if (ttl > 1)
				break;
			return dir == NW_CT_DIR_ORIGINAL ? NW_PASS_TTL_EXPIRED : NW_DROP_NAT_SLOW_PATH;
		case NW_PASS_FRAG_NEEDED:
			if (df)
				return dir == NW_CT_DIR_ORIGINAL ? reason : NW_DROP_NAT_SLOW_PATH;
			break; /* the kernel fragments it, translated */
		case NW_PASS_NO_NEIGH:
			break; /* the kernel resolves and forwards it, translated */
		default:
			return dir == NW_CT_DIR_ORIGINAL ? reason : NW_DROP_NAT_SLOW_PATH;
		}
		ret = nat_rewrite4(ctx, pkt, from, to);
		if (ret < 0)
			return -ret;
	} else if (!reason && ttl <= 1) {
		return NW_PASS_TTL_EXPIRED;
	}
	if (reason)
		return reason;
	return fib_finish_ipv4(ctx, pkt, fib);
}

/* Finds the flow an IPv4 tuple belongs to, in either direction. */
static __always_inline struct nw_ct4_entry *ct_lookup4(const struct nw_tuple4 *t,
						       struct nw_tuple4 *orig, int *dir)
{
	struct nw_ct4_entry *e = bpf_map_lookup_elem(&nw_ct4, t);
	struct nw_tuple4 *o;

	if (e) {
		*orig = *t;
		*dir = NW_CT_DIR_ORIGINAL;
		return e;
	}
	o = bpf_map_lookup_elem(&nw_ct4_rev, t);
	if (!o)
		return NULL;
	*orig = *o;
	*dir = NW_CT_DIR_REPLY;
	return bpf_map_lookup_elem(&nw_ct4, orig);
}

/* An ICMP error is admitted only as part of the flow it reports on, found
 * through the header it embeds, and translated with it (RFC 5508). */
static __noinline int process_icmp_error4(struct xdp_md *ctx, struct nw_pkt *pkt,
					       struct nw_runtime_config *cfg, __u64 now)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 inner_off = pkt->l4_off + 8;
	struct nw_scratch *scr = scratch();
	struct nw_tuple4 *k, *orig, *from, *to;
	struct bpf_fib_lookup *fib = scratch_fib();
	struct nw_ct4_entry *e;
	struct iphdr *inner, *ip;
	__be16 *ports;
	__u32 l4;
	int dir, ret, reason;

	if (!scr)
		return NW_DROP_INTERNAL;
	k = &scr->k4;
	orig = &scr->eorig4;
	from = &scr->from4;
	to = &scr->eto4;
	__builtin_memset(k, 0, sizeof(*k));

	if (!fib)
		return NW_DROP_INTERNAL;

	if (inner_off > NW_MAX_HDR_OFF)
		return NW_MALFORMED_L4;
	inner = data + inner_off;
	if ((void *)(inner + 1) > data_end || inner->ihl < 5)
		return NW_MALFORMED_L4;
	l4 = inner_off + inner->ihl * 4;
	if (l4 > NW_MAX_HDR_OFF)
		return NW_MALFORMED_L4;
	ports = data + l4;
	if ((void *)(ports + 4) > data_end)
		return NW_MALFORMED_L4;

	/* The embedded packet went the other way: reverse it. */
	k->saddr = inner->daddr;
	k->daddr = inner->saddr;
	k->proto = inner->protocol;
	if (k->proto == IPPROTO_TCP || k->proto == IPPROTO_UDP) {
		k->sport = ports[1];
		k->dport = ports[0];
	} else if (k->proto == IPPROTO_ICMP) {
		/* The quoted message's type is its first byte. */
		k->icmp_type = icmp_reverse_type(IPPROTO_ICMP, *(__u8 *)ports);
		if (icmp_is_query(IPPROTO_ICMP, k->icmp_type))
			k->sport = k->dport = ports[2];
	}

	e = ct_lookup4(k, orig, &dir);
	if (!e) {
		ip = ipv4_header(ctx, pkt);
		if (!ip)
			return NW_MALFORMED_IPV4;
		from->saddr = ip->saddr;
		from->daddr = ip->daddr;
		from->sport = from->dport = 0;
		from->proto = IPPROTO_ICMP;
		reason = fib_lookup_ipv4(ctx, pkt, from, ip->tos, fib);
		return reason == NW_PASS_LOCAL ? NW_PASS_LOCAL : NW_DROP_ICMP_ERROR_NO_FLOW;
	}
	/* A redirect names a better first hop on its sender's link: a host
	 * discards one from beyond it (RFC 1122 3.2.2.2), and its gateway
	 * field, which no translation covers, may name an inside host. */
	if (pkt->icmp_type == 5)
		return NW_DROP_ICMP_REDIRECT;
	/* An error goes to the source of the packet it quotes (as Linux's
	 * nf_conntrack_inet_error checks): else anyone could aim an error at
	 * any inside host by quoting another host's flow. */
	ip = ipv4_header(ctx, pkt);
	if (!ip)
		return NW_MALFORMED_IPV4;
	if (ip->daddr != k->daddr)
		return NW_DROP_ICMP_ERROR_MISMATCH;
	src_first_reply4(&e->st, dir, orig, now);
	ct_account(ctx, &e->st, dir, pkt, now);

	*from = *k;
	if (dir == NW_CT_DIR_ORIGINAL)
		tuple4_reverse(to, &e->reply);
	else
		tuple4_reverse(to, orig);
	if (!tuple4_equal(from, to)) {
		ret = nat_rewrite_icmp_error4(ctx, pkt, inner_off, from, to);
		if (ret < 0)
			return -ret;
	}

	ip = ipv4_header(ctx, pkt);
	if (!ip)
		return NW_MALFORMED_IPV4;
	from->saddr = ip->saddr;
	from->daddr = ip->daddr;
	from->sport = from->dport = 0;
	from->proto = IPPROTO_ICMP;
	reason = fib_lookup_ipv4(ctx, pkt, from, ip->tos, fib);
	if (reason)
		return reason;
	if (ip->ttl <= 1)
		return NW_DROP_NAT_SLOW_PATH;
	return fib_finish_ipv4(ctx, pkt, fib);
}

/* A packet of no known flow: for this host, a hairpin, or a new flow if
 * the policy admits one. */
/* Traffic for the appliance itself is the kernel's, untracked. Stateful
 * rules for the local zone decide the packets that open a connection to it
 * (a TCP SYN, an echo request); everything else goes to the kernel, whose
 * own sockets know which packets belong to them. */
static __always_inline int local_opens(struct nw_pkt *pkt)
{
	if (!acl_loaded(NW_ACL_STATEFUL) || !(pkt->flags & NW_PKT_L4))
		return 0;
	return (pkt->l4_proto == IPPROTO_TCP &&
		(pkt->tcp_flags & (NW_TCP_SYN | NW_TCP_ACK)) == NW_TCP_SYN) ||
	       (pkt->l4_proto == IPPROTO_ICMP && pkt->icmp_type == 8) ||
	       (pkt->l4_proto == IPPROTO_ICMPV6 && pkt->icmp_type == 128);
}

/* The stateful verdict on a connection to this host: it is not tracked, so
 * an allow (or no rule set) hands it to the kernel. */
static __always_inline int local_reason(int verdict)
{
	return verdict == 0 || verdict == NW_DROP_POLICY ? NW_PASS_LOCAL : verdict;
}

/* A packet from inside that cannot start a flow. AWS NAT Gateway answers
 * such TCP with a RST so the client gives up at once instead of timing out;
 * NW_CFG_INVALID_TCP_RST does the same. */
static __always_inline int invalid_from_inside(struct xdp_md *ctx, struct nw_pkt *pkt,
					       struct nw_runtime_config *cfg, int src_inside)
{
	if (src_inside && (cfg->flags & NW_CFG_INVALID_TCP_RST) && pkt->l4_proto == IPPROTO_TCP &&
	    (pkt->flags & NW_PKT_L4)) {
		if (pkt->l3_proto == ETH_P_IP)
			return reply_tcp_rst4(ctx, pkt);
		return reply_tcp_rst6(ctx, pkt);
	}
	return NW_DROP_CT_INVALID;
}

/* What ct_admit4 asks of its caller, beside a final reason. */
#define NW_ADMIT_NEW_FLOW (-1)   /* classify, then create the flow */
#define NW_ADMIT_LOCAL (-2)      /* classify as a connection to this host */

/* A packet of no known flow: for this host, a hairpin, or a candidate for
 * a new flow. Returns a final reason, or NW_ADMIT_* with the facts the
 * stateful stage needs in the scratch map. The stateful stage itself runs
 * in the caller, which keeps the deepest call chain within the stack. */
static __noinline int ct_admit4(struct xdp_md *ctx, struct nw_pkt *pkt,
				struct nw_runtime_config *cfg, const struct nw_tuple4 *t)
{
	struct bpf_fib_lookup *fib = scratch_fib();
	struct nw_scratch *scr = scratch();
	struct iphdr *ip = ipv4_header(ctx, pkt);
	struct nw_snat4_endpoint *owner = NULL;
	int src_inside, reason;

	if (!fib || !scr)
		return NW_DROP_INTERNAL;
	if (!ip)
		return NW_MALFORMED_IPV4;
	src_inside = inside4(t->saddr);
	if (src_inside && arrived_outside(ctx))
		return NW_DROP_SPOOFED_INSIDE;
	scr->admit_src_inside = src_inside;
	scr->admit_hairpin = 0;
	reason = fib_lookup_ipv4(ctx, pkt, t, ip->tos, fib);
	scr->admit_forward = 0;
	if (reason == NW_PASS_LOCAL) {
		/* A forward (DNAT) is the operator's: it wins over any SNAT
		 * mapping, which the allocator never puts on its port anyway. */
		if (!(pkt->flags & NW_PKT_LATER_FRAGMENT) && dnat_admit4(t, scr))
			owner = &scr->dnat;
		else if (src_inside && (cfg->flags & NW_CFG_SNAT) && !(pkt->flags & NW_PKT_LATER_FRAGMENT))
			owner = snat_owner4(t);
		else if ((cfg->flags & NW_CFG_SNAT) && !(pkt->flags & NW_PKT_LATER_FRAGMENT))
			owner = snat_filter4(cfg, t);
		if (!owner) {
			scr->admit_zone = NW_ZONE_LOCAL;
			return local_opens(pkt) ? NW_ADMIT_LOCAL : NW_PASS_LOCAL;
		}
		/* A hairpin: an inside host reaching another's mapping; or, from
		 * outside, a packet the filtering mode admits to a mapping: a
		 * new inbound flow to the mapping's inside endpoint; or a
		 * forward (DNAT), already in scr->dnat, from either side. */
		if (owner != &scr->dnat)
			scr->dnat = *owner;
		scr->admit_hairpin = 1;
		scr->admit_zone = zone_of(src_inside, inside4(owner->addr));
	} else {
		scr->admit_zone = zone_of(src_inside, inside4(t->daddr));
	}
	if (!ct_can_start(pkt))
		return owner ? NW_DROP_CT_INVALID : invalid_from_inside(ctx, pkt, cfg, src_inside);
	/* A later fragment cannot open a flow: its first fragment did. */
	if (pkt->flags & NW_PKT_LATER_FRAGMENT)
		return NW_DROP_FRAG_NO_FIRST;
	return NW_ADMIT_NEW_FLOW;
}

/* Without a rule set the built-in policy admits no inbound flow; there the
 * filtering mode the operator chose is the policy for mapped ports. A rule
 * set judges such a flow like any other inbound one. */
static __always_inline int filtered_verdict(int reason, struct nw_scratch *scr)
{
	if (reason == NW_DROP_POLICY && scr->admit_hairpin && scr->admit_zone == NW_ZONE_INBOUND)
		return 0;
	return reason;
}

/* Creates the flow the stateful stage admitted, and forwards its first packet. */
static __noinline int ct_new4(struct xdp_md *ctx, struct nw_pkt *pkt,
			      struct nw_runtime_config *cfg, const struct nw_tuple4 *t, __u64 now)
{
	struct nw_scratch *scr = scratch();
	struct nw_ct4_entry *e = NULL;
	int ret;

	if (!scr)
		return NW_DROP_INTERNAL;
	ret = ct_tcp_may_create(ctx, pkt);
	if (ret)
		return ret;
	ret = rp_check4(ctx, t, cfg->flags);
	if (ret)
		return ret;
	ret = ct_create4(cfg, t, scr->admit_zone, scr->admit_rule_id,
			 scr->admit_hairpin ? &scr->dnat : NULL, now, &e);
	if (ret < 0)
		return -ret;
	if (!e)
		return NW_DROP_CT_FULL;
	if (t->proto == IPPROTO_TCP) {
		ret = ct_tcp_start(ctx, pkt, &e->st);
		if (ret)
			return ret;
	}
	/* A forward's flows count under its number, as a stateful rule's do. */
	if (scr->admit_forward)
		acl_count(scr->admit_forward, pkt->frame_len);
	ct_account(ctx, &e->st, NW_CT_DIR_ORIGINAL, pkt, now);
	tuple4_reverse(&scr->to4, &e->reply);
	return forward4(ctx, pkt, NW_CT_DIR_ORIGINAL, t, &scr->to4);
}

static __noinline int process_ipv4(struct xdp_md *ctx, struct nw_pkt *pkt)
{
	struct nw_runtime_config *cfg = runtime_config();
	struct iphdr *ip = ipv4_header(ctx, pkt);
	struct nw_tuple4 *t, *orig, *to;
	struct nw_frag4_key *fk;
	struct nw_ct4_entry *e;
	struct nw_scratch *scr = scratch();
	struct nw_acl_pkt *ap;
	__u64 now = bpf_ktime_get_ns();
	int dir = NW_CT_DIR_ORIGINAL, ret, reason, is_error = 0;
	if (!scr)
		return NW_DROP_INTERNAL;
	ap = &scr->acl_pkt;
	t = &scr->t4;
	orig = &scr->orig4;
	to = &scr->to4;
	fk = &scr->frag4;
	__builtin_memset(t, 0, sizeof(*t));
	__builtin_memset(fk, 0, sizeof(*fk));

	if (!ip || !cfg)
		return NW_MALFORMED_IPV4;
	t->saddr = ip->saddr;
	t->daddr = ip->daddr;
	t->proto = ip->protocol;
	switch (t->proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
		t->sport = pkt->sport;
		t->dport = pkt->dport;
		break;
	case IPPROTO_ICMP:
		if ((pkt->flags & NW_PKT_L4) && !(pkt->flags & NW_PKT_LATER_FRAGMENT)) {
			is_error = icmp4_is_error(pkt->icmp_type);
			icmp_tuple_start(IPPROTO_ICMP, pkt, &t->sport, &t->dport);
		}
		break;
	}

	/* Later fragments are classified with their first fragment's ports. */
	fk->saddr = t->saddr;
	fk->daddr = t->daddr;
	fk->id = bpf_htons(pkt->frag_id);
	fk->proto = t->proto;
	ret = frag_track(&nw_frag4, fk, pkt, now, &t->sport, &t->dport, &t->proto);
	if (ret < 0)
		return -ret;
	icmp_tuple_finish(t->proto, t->sport, &t->dport, &t->icmp_type);

	e = is_error ? NULL : ct_lookup4(t, orig, &dir);
	if (e && ct_expired(cfg, &e->st, t->proto, now)) {
		stat_inc(NW_STAT_CT_EXPIRED_DP);
		ct_delete4(orig, e, NW_REASON_NONE, now);
		e = NULL;
	}
	if (e) {
		ret = ct_tcp_reopens(ctx, pkt, &e->st);
		if (ret < 0)
			return -ret;
		if (ret) {
			ct_delete4(orig, e, NW_REASON_NONE, now);
			e = NULL;
			dir = NW_CT_DIR_ORIGINAL;
		}
	}
	if (acl_loaded(NW_ACL_STATELESS) && !stateless_known(e ? &e->st : NULL, dir, pkt)) {
		acl_pkt4(ap, pkt, t, zone_of(inside4(t->saddr), inside4(t->daddr)));
		ret = stateless_verdict(pkt, ap);
		if (ret)
			return ret;
		stateless_remember(e ? &e->st : NULL, dir, pkt);
	}
	if (is_error)
		return process_icmp_error4(ctx, pkt, cfg, now);
	if (!e) {
		ret = ct_admit4(ctx, pkt, cfg, t);
		if (ret != NW_ADMIT_NEW_FLOW && ret != NW_ADMIT_LOCAL)
			return ret;
		acl_pkt4(ap, pkt, t, scr->admit_zone);
		if (scr->admit_hairpin)
			acl_pkt4_hairpin(ap, &scr->dnat);
		reason = stateful_verdict(ctx, pkt, ap, scr->admit_src_inside, now, &scr->admit_rule_id);
		if (ret == NW_ADMIT_LOCAL)
			return local_reason(reason);
		reason = filtered_verdict(reason, scr);
		if (reason)
			return reason;
		return ct_new4(ctx, pkt, cfg, t, now);
	}

	if (t->proto == IPPROTO_TCP) {
		ret = ct_tcp_check(ctx, pkt, &e->st, dir);
		if (ret)
			return ret;
	}
	src_first_reply4(&e->st, dir, orig, now);
	ct_account(ctx, &e->st, dir, pkt, now);
	if (dir == NW_CT_DIR_ORIGINAL)
		tuple4_reverse(to, &e->reply);
	else
		tuple4_reverse(to, orig);
	return forward4(ctx, pkt, dir, t, to);
}

static __always_inline void tuple6_reverse(struct nw_tuple6 *out, const struct nw_tuple6 *t)
{
	__builtin_memcpy(out->saddr, t->daddr, 16);
	__builtin_memcpy(out->daddr, t->saddr, 16);
	out->sport = t->dport;
	out->dport = t->sport;
	out->proto = t->proto;
	out->icmp_type = icmp_reverse_type(t->proto, t->icmp_type);
	out->pad[0] = out->pad[1] = 0;
}

static __always_inline struct nw_ct6_entry *ct_lookup6(const struct nw_tuple6 *t,
						       struct nw_tuple6 *orig, int *dir)
{
	struct nw_ct6_entry *e = bpf_map_lookup_elem(&nw_ct6, t);

	if (e) {
		*orig = *t;
		*dir = NW_CT_DIR_ORIGINAL;
		return e;
	}
	tuple6_reverse(orig, t);
	*dir = NW_CT_DIR_REPLY;
	return bpf_map_lookup_elem(&nw_ct6, orig);
}

static __always_inline int finish6(struct xdp_md *ctx, struct nw_pkt *pkt, struct bpf_fib_lookup *fib,
				   int reason)
{
	if (reason)
		return reason;
	return fib_finish_ipv6(ctx, pkt, fib);
}

/* An ICMPv6 error is admitted only with the flow its embedded header names. */
static __noinline int process_icmp_error6(struct xdp_md *ctx, struct nw_pkt *pkt, __u64 now)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 inner_off = pkt->l4_off + 8;
	struct ipv6hdr *ip6 = ipv6_header(ctx, pkt);
	struct bpf_fib_lookup *fib = scratch_fib();
	struct nw_scratch *scr = scratch();
	struct nw_tuple6 *k, *orig;
	struct nw_ct6_entry *e;
	struct ipv6hdr *inner;
	__be16 *ports;
	int dir, reason;

	if (!scr)
		return NW_DROP_INTERNAL;
	k = &scr->k6;
	orig = &scr->eorig6;
	__builtin_memset(k, 0, sizeof(*k));

	if (!fib)
		return NW_DROP_INTERNAL;

	if (!ip6)
		return NW_MALFORMED_IPV6;
	if (inner_off > NW_MAX_HDR_OFF)
		return NW_MALFORMED_L4;
	inner = data + inner_off;
	if ((void *)(inner + 1) > data_end)
		return NW_MALFORMED_L4;
	ports = (void *)(inner + 1);
	if ((void *)(ports + 4) > data_end)
		return NW_MALFORMED_L4;
	__builtin_memcpy(k->saddr, &inner->daddr, 16);
	__builtin_memcpy(k->daddr, &inner->saddr, 16);
	k->proto = inner->nexthdr;
	if (k->proto == IPPROTO_TCP || k->proto == IPPROTO_UDP) {
		k->sport = ports[1];
		k->dport = ports[0];
	} else if (k->proto == IPPROTO_ICMPV6) {
		k->icmp_type = icmp_reverse_type(IPPROTO_ICMPV6, *(__u8 *)ports);
		if (icmp_is_query(IPPROTO_ICMPV6, k->icmp_type))
			k->sport = k->dport = ports[2];
	}
	reason = fib_lookup_ipv6(ctx, pkt, ip6, fib);
	e = ct_lookup6(k, orig, &dir);
	if (!e)
		return reason == NW_PASS_LOCAL ? NW_PASS_LOCAL : NW_DROP_ICMP_ERROR_NO_FLOW;
	/* As for IPv4: the error must go to the quoted packet's source. */
	ip6 = ipv6_header(ctx, pkt);
	if (!ip6)
		return NW_MALFORMED_IPV6;
	{
		const __u32 *a = (const __u32 *)&ip6->daddr, *b = (const __u32 *)k->daddr;

		if ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]))
			return NW_DROP_ICMP_ERROR_MISMATCH;
	}
	src_first_reply6(&e->st, dir, orig, now);
	ct_account(ctx, &e->st, dir, pkt, now);
	return finish6(ctx, pkt, fib, reason);
}

/* IPv6 is tracked and filtered, never translated. */
static __noinline int process_ipv6(struct xdp_md *ctx, struct nw_pkt *pkt)
{
	struct nw_runtime_config *cfg = runtime_config();
	struct ipv6hdr *ip6 = ipv6_header(ctx, pkt);
	struct bpf_fib_lookup *fib = scratch_fib();
	struct nw_tuple6 *t, *orig;
	struct nw_frag6_key *fk;
	struct nw_ct6_entry *e;
	struct nw_scratch *scr = scratch();
	struct nw_acl_pkt *ap;
	__u64 now = bpf_ktime_get_ns();
	__u32 rule_id = 0;
	int dir = NW_CT_DIR_ORIGINAL, ret, reason, zone, src_inside, is_error = 0, link_scoped;
	if (!scr)
		return NW_DROP_INTERNAL;
	ap = &scr->acl_pkt;
	t = &scr->t6;
	orig = &scr->orig6;
	fk = &scr->frag6;
	__builtin_memset(t, 0, sizeof(*t));
	__builtin_memset(fk, 0, sizeof(*fk));

	if (!fib)
		return NW_DROP_INTERNAL;

	if (!ip6 || !cfg)
		return NW_MALFORMED_IPV6;
	/* Link-scoped traffic is never routed. Neighbour discovery and MLD
	 * go to the kernel unfiltered; the rest is this host's, and meets the
	 * rules for it (link_scoped_route6). */
	link_scoped = ipv6_is_link_scoped(&ip6->daddr) || ipv6_is_link_scoped(&ip6->saddr);
	if (link_scoped && ipv6_link_control(pkt))
		return NW_PASS_LINK_LOCAL;

	__builtin_memcpy(t->saddr, &ip6->saddr, 16);
	__builtin_memcpy(t->daddr, &ip6->daddr, 16);
	t->proto = pkt->l4_proto;
	switch (t->proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
		t->sport = pkt->sport;
		t->dport = pkt->dport;
		break;
	case IPPROTO_ICMPV6:
		if ((pkt->flags & NW_PKT_L4) && !(pkt->flags & NW_PKT_LATER_FRAGMENT)) {
			is_error = icmp6_is_error(pkt->icmp_type);
			icmp_tuple_start(IPPROTO_ICMPV6, pkt, &t->sport, &t->dport);
		}
		break;
	}

	__builtin_memcpy(fk->saddr, t->saddr, 16);
	__builtin_memcpy(fk->daddr, t->daddr, 16);
	/* IPv6 names a datagram by addresses and identification alone
	 * (RFC 8200 4.5): a later fragment may not name the upper layer. */
	fk->id = pkt->frag_id;
	ret = frag_track(&nw_frag6, fk, pkt, now, &t->sport, &t->dport, &t->proto);
	if (ret < 0)
		return -ret;
	icmp_tuple_finish(t->proto, t->sport, &t->dport, &t->icmp_type);

	e = is_error ? NULL : ct_lookup6(t, orig, &dir);
	if (e && ct_expired(cfg, &e->st, t->proto, now)) {
		stat_inc(NW_STAT_CT_EXPIRED_DP);
		src_removed6(&e->st, orig, now);
		ct_event6(NW_EVENT_FLOW_END, NW_REASON_NONE, orig, e, now);
		bpf_map_delete_elem(&nw_ct6, orig);
		e = NULL;
	}
	if (e) {
		ret = ct_tcp_reopens(ctx, pkt, &e->st);
		if (ret < 0)
			return -ret;
		if (ret) {
			ct_event6(NW_EVENT_FLOW_END, NW_REASON_NONE, orig, e, now);
			bpf_map_delete_elem(&nw_ct6, orig);
			e = NULL;
			dir = NW_CT_DIR_ORIGINAL;
		}
	}
	if (acl_loaded(NW_ACL_STATELESS) && !stateless_known(e ? &e->st : NULL, dir, pkt)) {
		acl_pkt6(ap, pkt, t, zone_of(inside6(t->saddr), inside6(t->daddr)));
		ret = stateless_verdict(pkt, ap);
		if (ret)
			return ret;
		stateless_remember(e ? &e->st : NULL, dir, pkt);
	}
	if (is_error)
		return process_icmp_error6(ctx, pkt, now);

	if (link_scoped) {
		ip6 = ipv6_header(ctx, pkt);
		if (!ip6)
			return NW_MALFORMED_IPV6;
		reason = link_scoped_route6(ctx, pkt, ip6, fib);
		if (reason == NW_DROP_LINK_SCOPED_SRC)
			return reason;
	} else {
		reason = fib_lookup_ipv6(ctx, pkt, ip6, fib);
	}
	if (!e) {
		src_inside = inside6(t->saddr);
		if (src_inside && arrived_outside(ctx))
			return NW_DROP_SPOOFED_INSIDE;
		if (reason == NW_PASS_LOCAL || reason == NW_PASS_LINK_LOCAL) {
			if (!local_opens(pkt))
				return reason;
			acl_pkt6(ap, pkt, t, NW_ZONE_LOCAL);
			return local_reason(stateful_verdict(ctx, pkt, ap, 0, now, &rule_id));
		}
		zone = zone_of(src_inside, inside6(t->daddr));
		if (!ct_can_start(pkt))
			return invalid_from_inside(ctx, pkt, cfg, src_inside);
		if (pkt->flags & NW_PKT_LATER_FRAGMENT)
			return NW_DROP_FRAG_NO_FIRST;
		acl_pkt6(ap, pkt, t, zone);
		ret = stateful_verdict(ctx, pkt, ap, src_inside, now, &rule_id);
		if (ret)
			return ret;
		ret = ct_tcp_may_create(ctx, pkt);
		if (ret)
			return ret;
		ret = rp_check6(ctx, t, cfg->flags);
		if (ret)
			return ret;
		ret = ct_create6(t, zone, rule_id, now, &e);
		if (ret < 0)
			return -ret;
		*orig = *t;
		dir = NW_CT_DIR_ORIGINAL;
		if (t->proto == IPPROTO_TCP) {
			ret = ct_tcp_start(ctx, pkt, &e->st);
			if (ret)
				return ret;
		}
	} else if (t->proto == IPPROTO_TCP) {
		ret = ct_tcp_check(ctx, pkt, &e->st, dir);
		if (ret)
			return ret;
	}
	src_first_reply6(&e->st, dir, orig, now);
	ct_account(ctx, &e->st, dir, pkt, now);
	return finish6(ctx, pkt, fib, reason);
}

static __always_inline int vlan_reason(void)
{
	struct nw_runtime_config *cfg = runtime_config();

	return cfg && (cfg->flags & NW_CFG_VLAN_PASS) ? NW_PASS_VLAN : NW_DROP_VLAN;
}

/* Removes depth (1 or 2) VLAN tags from the front of the frame: the MACs
 * move up over them. Returns 0 or a reason. */
static __noinline int strip_priority_tags(struct xdp_md *ctx, __u32 depth)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 macs[2 * ETH_ALEN];
	int shift = depth == 2 ? 8 : 4;

	if (data + 2 * ETH_ALEN + 8 > data_end)
		return NW_MALFORMED_VLAN;
	__builtin_memcpy(macs, data, sizeof(macs));
	if (shift == 8)
		__builtin_memcpy(data + 8, macs, sizeof(macs));
	else
		__builtin_memcpy(data + 4, macs, sizeof(macs));
	if (bpf_xdp_adjust_head(ctx, shift))
		return NW_DROP_INTERNAL;
	return 0;
}

SEC("xdp")
int xdp_natwall(struct xdp_md *ctx)
{
	struct nw_pkt pkt = {};
	int ret;

	ret = parse_packet(ctx, &pkt);
	if (ret < 0)
		return nw_exit(ctx, &pkt, -ret);

	if (pkt.vlan_depth) {
		__u32 frame_len = pkt.frame_len;

		/* A frame of a VLAN is not natwall's to route: dropped unless
		 * the operator hands such frames to the kernel's VLAN device,
		 * which forwards them with no policy. */
		if (pkt.flags & NW_PKT_VLAN_ID)
			return nw_exit(ctx, &pkt, vlan_reason());
		/* Priority tags only: the frame is untagged traffic, and the
		 * kernel would strip the tags and forward it. Strip them here
		 * and enforce the policy on what remains. */
		ret = strip_priority_tags(ctx, pkt.vlan_depth);
		if (ret)
			return nw_exit(ctx, &pkt, ret);
		__builtin_memset(&pkt, 0, sizeof(pkt));
		ret = parse_packet(ctx, &pkt);
		pkt.frame_len = frame_len; /* counted as received */
		if (ret < 0)
			return nw_exit(ctx, &pkt, -ret);
	}

	if (pkt.l3_proto == ETH_P_IP)
		return nw_exit(ctx, &pkt, frag_commit(&pkt, process_ipv4(ctx, &pkt)));
	return nw_exit(ctx, &pkt, frag_commit(&pkt, process_ipv6(ctx, &pkt)));
}

/* Takes freed mappings off the SNAT in-use counts (nw_snat_count),
 * atomically with the dataplane's increments, which a map update from user
 * space could not be. The control plane's collector runs it with
 * BPF_PROG_RUN; it is never attached. */
SEC("syscall")
int nw_snat_release(struct nw_snat_release_arg *r)
{
	struct nw_snat_count_key k = r->key;
	__s64 n = r->n, *v = bpf_map_lookup_elem(&nw_snat_count, &k);

	if (v)
		__sync_fetch_and_add(v, -n);
	return 0;
}
