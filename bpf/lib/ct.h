/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Connection tracking: one entry per flow, found from either direction,
 * with a TCP state machine, idle timeouts, per-direction counters and flow
 * events for the control plane. */
#pragma once

#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "types.h"
#include "maps.h"
#include "parse.h"
#include "nat.h"
#include "acl.h"
#include "ct_limit.h"

#define NW_TCP_FIN 0x01
#define NW_TCP_SYN 0x02
#define NW_TCP_RST 0x04
#define NW_TCP_ACK 0x10

#define NW_NSEC_PER_SEC 1000000000ULL

enum nw_ct_dir {
	NW_CT_DIR_ORIGINAL = 0,
	NW_CT_DIR_REPLY = 1,
};

static __always_inline __u64 ct_timeout_ns(const struct nw_runtime_config *cfg, __u8 proto,
					   __u8 tcp_state)
{
	__u32 idx;

	switch (proto) {
	case IPPROTO_TCP:
		switch (tcp_state) {
		case NW_TCP_ESTABLISHED:
			idx = NW_TIMEOUT_TCP_ESTABLISHED;
			break;
		case NW_TCP_FIN_WAIT:
		case NW_TCP_TIME_WAIT:
			idx = NW_TIMEOUT_TCP_TRANSITORY;
			break;
		case NW_TCP_CLOSE:
			idx = NW_TIMEOUT_TCP_CLOSE;
			break;
		default:
			idx = NW_TIMEOUT_TCP_SYN;
			break;
		}
		break;
	case IPPROTO_UDP:
		idx = NW_TIMEOUT_UDP;
		break;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		idx = NW_TIMEOUT_ICMP;
		break;
	default:
		idx = NW_TIMEOUT_OTHER;
		break;
	}
	if (idx >= NW_TIMEOUT_MAX)
		return 0;
	return (__u64)cfg->timeouts[idx] * NW_NSEC_PER_SEC;
}

/* Whether the flow has been idle past its timeout. now was read when this
 * packet arrived; another CPU may since have stamped the flow with a later
 * time, so the idle time can be negative, and must not wrap around into a
 * huge one that deletes a busy flow. */
static __always_inline int ct_expired(const struct nw_runtime_config *cfg,
				      const struct nw_ct_state *st, __u8 proto, __u64 now)
{
	__s64 idle = (__s64)(now - st->last_seen_ns);

	return idle > (__s64)ct_timeout_ns(cfg, proto, st->tcp_state);
}

/* Advances the TCP state on a packet of the flow that ct_tcp_check
 * (tcp_window.h) found inside the window. A SYN on a closed or TIME_WAIT
 * flow never gets here: it starts a new flow (ct_tcp_reopens). */
static __always_inline void ct_tcp_advance(struct nw_ct_state *st, int dir, __u8 flags)
{
	if (flags & NW_TCP_RST) {
		st->tcp_state = NW_TCP_CLOSE;
		return;
	}
	switch (st->tcp_state) {
	case NW_TCP_SYN_SENT:
		if (dir == NW_CT_DIR_REPLY && (flags & NW_TCP_SYN) && (flags & NW_TCP_ACK))
			st->tcp_state = NW_TCP_SYN_RECV;
		break;
	case NW_TCP_SYN_RECV:
		if (dir == NW_CT_DIR_ORIGINAL && (flags & NW_TCP_ACK) && !(flags & NW_TCP_SYN)) {
			st->tcp_state = NW_TCP_ESTABLISHED;
			stat_inc(NW_STAT_CT_ESTABLISHED);
		}
		break;
	case NW_TCP_ESTABLISHED:
	case NW_TCP_FIN_WAIT:
		if (flags & NW_TCP_FIN) {
			st->flags |= dir == NW_CT_DIR_ORIGINAL ? NW_CT_FIN_ORIGINAL : NW_CT_FIN_REPLY;
			if ((st->flags & (NW_CT_FIN_ORIGINAL | NW_CT_FIN_REPLY)) ==
			    (NW_CT_FIN_ORIGINAL | NW_CT_FIN_REPLY))
				st->tcp_state = NW_TCP_TIME_WAIT;
			else
				st->tcp_state = NW_TCP_FIN_WAIT;
		}
		break;
	}
}

/* Accounts a packet to its flow. Counters are shared by every CPU that
 * sees the flow, hence the atomic adds. TCP state moves in ct_tcp_check,
 * which runs first. */
static __always_inline void ct_account(struct xdp_md *ctx, struct nw_ct_state *st, int dir,
				       struct nw_pkt *pkt, __u64 now)
{
	__u64 bytes = ctx->data_end - ctx->data;

	if (dir == NW_CT_DIR_ORIGINAL) {
		__sync_fetch_and_add(&st->packets_orig, 1);
		__sync_fetch_and_add(&st->bytes_orig, bytes);
	} else {
		__sync_fetch_and_add(&st->packets_reply, 1);
		__sync_fetch_and_add(&st->bytes_reply, bytes);
		st->flags |= NW_CT_SEEN_REPLY;
	}
	st->last_seen_ns = now;
}

/* Whether a first packet may start a flow at all: TCP only with a bare SYN,
 * ICMP only with an echo request or an informational message. */
static __always_inline int ct_can_start(struct nw_pkt *pkt)
{
	switch (pkt->l4_proto) {
	case IPPROTO_TCP:
		return (pkt->tcp_flags & (NW_TCP_SYN | NW_TCP_ACK | NW_TCP_RST | NW_TCP_FIN)) == NW_TCP_SYN;
	/* Only a query's request opens a flow, as in Linux conntrack: echo,
	 * timestamp, information, address mask; ICMPv6 echo and node
	 * information. Replies and other messages answer or open nothing. */
	case IPPROTO_ICMP:
		return pkt->icmp_type == 8 || pkt->icmp_type == 13 || pkt->icmp_type == 15 ||
		       pkt->icmp_type == 17;
	case IPPROTO_ICMPV6:
		return pkt->icmp_type == 128 || pkt->icmp_type == 139;
	default:
		return 1;
	}
}

static __always_inline __u8 zone_of(int src_inside, int dst_inside)
{
	if (src_inside)
		return dst_inside ? NW_ZONE_EAST_WEST : NW_ZONE_OUTBOUND;
	return dst_inside ? NW_ZONE_INBOUND : NW_ZONE_TRANSIT;
}

static __always_inline int inside4(__be32 addr)
{
	struct nw_lpm4_key k = { .prefixlen = 32, .addr = addr };

	return bpf_map_lookup_elem(&nw_inside4, &k) != NULL;
}

static __always_inline int inside6(const __u8 *addr)
{
	struct nw_lpm6_key k = { .prefixlen = 128 };

	__builtin_memcpy(k.addr, addr, 16);
	return bpf_map_lookup_elem(&nw_inside6, &k) != NULL;
}

/* Reserves a flow event and fills what every event carries. A full ring
 * buffer loses the event, never the packet, and the loss is counted. */
static __always_inline struct nw_flow_event *ct_event_start(__u8 type, __u32 reason, __u8 family,
							    __u8 proto, const struct nw_ct_state *st,
							    __u64 now)
{
	struct nw_flow_event *ev = bpf_ringbuf_reserve(&nw_events, sizeof(*ev), 0);

	if (!ev) {
		stat_inc(NW_STAT_EVENTS_LOST);
		return NULL;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->timestamp_ns = now;
	ev->type = type;
	ev->family = family;
	ev->proto = proto;
	ev->reason = reason;
	ev->tcp_state = st->tcp_state;
	ev->rule_id = st->rule_id;
	ev->zone = st->zone;
	ev->flags = st->flags;
	ev->packets_orig = st->packets_orig;
	ev->bytes_orig = st->bytes_orig;
	ev->packets_reply = st->packets_reply;
	ev->bytes_reply = st->bytes_reply;
	ev->created_ns = st->created_ns;
	ev->last_seen_ns = st->last_seen_ns;
	return ev;
}

/* Reports an IPv4 flow's start or end, with its translation. */
static __always_inline void ct_event4(__u8 type, __u32 reason, const struct nw_tuple4 *orig,
				      const struct nw_ct4_entry *e, __u64 now)
{
	struct nw_flow_event *ev = ct_event_start(type, reason, 4, orig->proto, &e->st, now);

	if (!ev)
		return;
	__builtin_memcpy(ev->saddr, &orig->saddr, 4);
	__builtin_memcpy(ev->daddr, &orig->daddr, 4);
	ev->sport = orig->sport;
	ev->dport = orig->dport;
	__builtin_memcpy(ev->nat_saddr, &e->reply.daddr, 4);
	__builtin_memcpy(ev->nat_daddr, &e->reply.saddr, 4);
	ev->nat_sport = e->reply.dport;
	ev->nat_dport = e->reply.sport;
	bpf_ringbuf_submit(ev, 0);
}

/* Reports an IPv6 flow's start or end; IPv6 is never translated. */
static __always_inline void ct_event6(__u8 type, __u32 reason, const struct nw_tuple6 *orig,
				      const struct nw_ct6_entry *e, __u64 now)
{
	struct nw_flow_event *ev = ct_event_start(type, reason, 6, orig->proto, &e->st, now);

	if (!ev)
		return;
	__builtin_memcpy(ev->saddr, orig->saddr, 16);
	__builtin_memcpy(ev->daddr, orig->daddr, 16);
	__builtin_memcpy(ev->nat_saddr, orig->saddr, 16);
	__builtin_memcpy(ev->nat_daddr, orig->daddr, 16);
	ev->sport = ev->nat_sport = orig->sport;
	ev->dport = ev->nat_dport = orig->dport;
	bpf_ringbuf_submit(ev, 0);
}

/* Reports the alert rules a flow's first packet matched. */
static __always_inline void acl_alert_events(const struct nw_acl_result *res, __u8 family,
					     const __u8 *saddr, const __u8 *daddr, __u8 proto,
					     __be16 sport, __be16 dport, __u8 zone, __u64 now)
{
	struct nw_ct_state st = { .zone = zone };

	for (int i = 0; i < NW_ACL_MAX_ALERTS; i++) {
		struct nw_flow_event *ev;
		__u32 audit;

		if (i >= res->alerts)
			break;
		audit = res->alert_audit & (1U << (i & (NW_ACL_MAX_ALERTS - 1)));
		if (audit)
			stat_inc(NW_STAT_AUDIT_MATCHED);
		st.rule_id = res->alert_ids[i & (NW_ACL_MAX_ALERTS - 1)];
		ev = ct_event_start(NW_EVENT_ALERT, 0, family, proto, &st, now);
		if (!ev)
			return;
		if (audit)
			ev->alert_flags = NW_ALERT_AUDIT;
		__builtin_memcpy(ev->saddr, saddr, 16);
		__builtin_memcpy(ev->daddr, daddr, 16);
		ev->sport = sport;
		ev->dport = dport;
		bpf_ringbuf_submit(ev, 0);
	}
}

/* Removes an IPv4 flow. The SNAT mapping stays: other flows of the same
 * inside endpoint may use it, and the control plane expires it. */
static __always_inline void ct_delete4(const struct nw_tuple4 *orig, struct nw_ct4_entry *e,
				       __u32 reason, __u64 now)
{
	struct nw_tuple4 reply = e->reply;

	src_removed4(&e->st, orig, now);
	ct_event4(NW_EVENT_FLOW_END, reason, orig, e, now);
	bpf_map_delete_elem(&nw_ct4_rev, &reply);
	bpf_map_delete_elem(&nw_ct4, orig);
}

/* Creates an IPv4 flow from its first packet. dnat, when set, is the inside
 * endpoint of a hairpinned flow. Returns the entry or a negative reason. */
static __always_inline int ct_create4(struct nw_runtime_config *cfg, const struct nw_tuple4 *t,
				      __u8 zone, __u32 rule_id, const struct nw_snat4_endpoint *dnat,
				      __u64 now, struct nw_ct4_entry **out)
{
	struct nw_scratch *sc = scratch();
	struct nw_src_words src = src_words4(t->saddr);
	struct nw_snat4_endpoint *ext;
	struct nw_ct4_entry *e;
	long err;
	int ret;

	if (!sc)
		return -NW_DROP_INTERNAL;
	/* Before any SNAT port is taken for a flow that cannot exist. */
	if (src_admit(src.hi, src.lo, now))
		return -NW_DROP_CT_SRC_LIMIT;
	e = &sc->ct4;
	ext = &sc->ext;
	__builtin_memset(e, 0, sizeof(*e));

	e->st.created_ns = now;
	e->st.last_seen_ns = now;
	e->st.zone = zone;
	e->st.rule_id = rule_id;
	e->st.tcp_state = t->proto == IPPROTO_TCP ? NW_TCP_SYN_SENT : NW_TCP_NONE;
	tuple4_reverse(&e->reply, t);

	if (dnat) {
		e->reply.saddr = dnat->addr;
		e->reply.sport = dnat->port;
		if (t->proto == IPPROTO_ICMP)
			e->reply.dport = dnat->port;
		e->st.flags |= NW_CT_DNAT;
	}
	/* A hairpinned flow is east-west, yet translated like an outbound
	 * one, so that each host sees the other's external endpoint. An
	 * inbound flow the filtering mode admits to a mapping keeps its
	 * outside source. */
	if ((zone == NW_ZONE_OUTBOUND || (dnat && zone == NW_ZONE_EAST_WEST)) && (cfg->flags & NW_CFG_SNAT) &&
	    !snat_excluded4(t->daddr)) {
		ret = snat_map4(cfg, t, now, ext);
		if (ret < 0)
			return ret;
		e->reply.daddr = ext->addr;
		e->reply.dport = ext->port;
		/* ICMP echo: the identifier is both "ports". */
		if (t->proto == IPPROTO_ICMP && !dnat)
			e->reply.sport = ext->port;
		e->st.flags |= NW_CT_SNAT;
		snat_permit4(cfg, t, ext);
	}

	/* Claim the reply tuple first: if another flow owns it, this one
	 * cannot exist, whatever the mapping said. */
	err = bpf_map_update_elem(&nw_ct4_rev, &e->reply, t, BPF_NOEXIST);
	if (err == -7 /* E2BIG: full */ && ct_early_drop4(now))
		err = bpf_map_update_elem(&nw_ct4_rev, &e->reply, t, BPF_NOEXIST);
	if (err == -17 /* EEXIST */)
		return -NW_DROP_SNAT_COLLISION;
	if (err)
		return -NW_DROP_CT_FULL;
	err = bpf_map_update_elem(&nw_ct4, t, e, BPF_NOEXIST);
	if (err == -7 && ct_early_drop4(now))
		err = bpf_map_update_elem(&nw_ct4, t, e, BPF_NOEXIST);
	if (err) {
		bpf_map_delete_elem(&nw_ct4_rev, &e->reply);
		return err == -17 ? -NW_DROP_SNAT_COLLISION : -NW_DROP_CT_FULL;
	}
	*out = bpf_map_lookup_elem(&nw_ct4, t);
	if (!*out)
		return -NW_DROP_CT_FULL;
	stat_inc(NW_STAT_CT_NEW_V4);
	ct_order_push(0, t, &nw_ct4_order, sizeof(*t));
	src_opened(src.hi, src.lo, now);
	if (dnat && sc->admit_forward)
		stat_inc(NW_STAT_DNAT_FLOWS);
	else if (dnat)
		stat_inc(zone == NW_ZONE_INBOUND ? NW_STAT_SNAT_FILTER_ADMITTED : NW_STAT_HAIRPIN);
	ct_event4(NW_EVENT_FLOW_NEW, 0, t, *out, now);
	return 0;
}

static __always_inline int ct_create6(const struct nw_tuple6 *t, __u8 zone, __u32 rule_id,
				      __u64 now, struct nw_ct6_entry **out)
{
	struct nw_scratch *sc = scratch();
	struct nw_src_words src = src_words6(t->saddr);
	struct nw_ct6_entry *e;
	long err;

	if (!sc)
		return -NW_DROP_INTERNAL;
	if (src_admit(src.hi, src.lo, now))
		return -NW_DROP_CT_SRC_LIMIT;
	e = &sc->ct6;
	__builtin_memset(e, 0, sizeof(*e));

	e->st.created_ns = now;
	e->st.last_seen_ns = now;
	e->st.zone = zone;
	e->st.rule_id = rule_id;
	e->st.tcp_state = t->proto == IPPROTO_TCP ? NW_TCP_SYN_SENT : NW_TCP_NONE;
	err = bpf_map_update_elem(&nw_ct6, t, e, BPF_NOEXIST);
	if (err == -7 /* E2BIG: full */ && ct_early_drop6(now))
		err = bpf_map_update_elem(&nw_ct6, t, e, BPF_NOEXIST);
	if (err && err != -17)
		return -NW_DROP_CT_FULL;
	*out = bpf_map_lookup_elem(&nw_ct6, t);
	if (!*out)
		return -NW_DROP_CT_FULL;
	if (!err) {
		stat_inc(NW_STAT_CT_NEW_V6);
		ct_order_push(1, t, &nw_ct6_order, sizeof(*t));
		src_opened(src.hi, src.lo, now);
		ct_event6(NW_EVENT_FLOW_NEW, 0, t, *out, now);
	}
	return 0;
}

/* Fragments: the first one's ports are remembered for the later ones,
 * which carry none. Later fragments must arrive in order and without
 * overlap; anything else is dropped (RFC 5722 treats overlap as an attack;
 * reordering is the documented cost). A first fragment is only noted here:
 * frag_commit records it once its verdict admits it, so that first
 * fragments the policy drops never take the place of admitted datagrams in
 * the LRU table, and their later fragments find no record
 * (NW_DROP_FRAG_NO_FIRST). proto is the upper-layer protocol: an IPv6 later
 * fragment names only the first header after its Fragment header, which
 * may be another extension header; the first fragment's walk found the
 * real one. */
static __always_inline int frag_track(void *map, const void *key, struct nw_pkt *pkt, __u64 now,
				      __be16 *sport, __be16 *dport, __u8 *proto)
{
	__u16 len = pkt->l3_off + pkt->l3_len - pkt->frag_data_off;
	struct nw_frag_state *fs;

	if (!(pkt->flags & NW_PKT_FRAGMENT))
		return 0;
	if (!(pkt->flags & NW_PKT_LATER_FRAGMENT)) {
		struct nw_scratch *sc = scratch();

		if (!sc)
			return -NW_DROP_INTERNAL;
		__builtin_memset(&sc->frag_pending, 0, sizeof(sc->frag_pending));
		sc->frag_pending.sport = *sport;
		sc->frag_pending.dport = *dport;
		sc->frag_pending.next_off = len;
		sc->frag_pending.proto = *proto;
		sc->frag_pending.seen_ns = now;
		sc->frag_pending_set = 1;
		return 0;
	}
	fs = bpf_map_lookup_elem(map, key);
	if (!fs)
		return -NW_DROP_FRAG_NO_FIRST;
	if (pkt->frag_off != fs->next_off)
		return -NW_DROP_FRAG_OVERLAP;
	*sport = fs->sport;
	*dport = fs->dport;
	*proto = fs->proto;
	fs->next_off += len;
	fs->seen_ns = now;
	if (!pkt->frag_more)
		bpf_map_delete_elem(map, key);
	return 0;
}

/* Whether a first fragment's verdict lets it on: forwarded, or handed to
 * the kernel, whose later fragments must then follow it. */
static __always_inline int frag_admitted(int reason)
{
	switch (reason) {
	case NW_FWD_TX:
	case NW_FWD_REDIRECT:
	case NW_PASS_LOCAL:
	case NW_PASS_NO_NEIGH:
	case NW_PASS_TTL_EXPIRED:
	case NW_PASS_FRAG_NEEDED:
	case NW_PASS_NO_ROUTE:
	case NW_PASS_FWD_DISABLED:
	case NW_PASS_ROUTE_UNSUPPORTED:
	case NW_PASS_EGRESS_UNMANAGED:
		return 1;
	default:
		return 0;
	}
}

static __noinline int frag_record_first(__u32 v4, int reason)
{
	struct nw_scratch *sc = scratch();

	if (!sc || !sc->frag_pending_set)
		return reason;
	sc->frag_pending_set = 0;
	if (!frag_admitted(reason))
		return reason;
	if (v4)
		bpf_map_update_elem(&nw_frag4, &sc->frag4, &sc->frag_pending, BPF_ANY);
	else
		bpf_map_update_elem(&nw_frag6, &sc->frag6, &sc->frag_pending, BPF_ANY);
	return reason;
}

/* After a packet's verdict: records a first fragment that was admitted.
 * Returns the verdict. Packets that are not first fragments pass through
 * on one test. */
static __always_inline int frag_commit(struct nw_pkt *pkt, int reason)
{
	if ((pkt->flags & (NW_PKT_FRAGMENT | NW_PKT_LATER_FRAGMENT)) != NW_PKT_FRAGMENT)
		return reason;
	return frag_record_first(pkt->l3_proto == ETH_P_IP, reason);
}

/* Early drop (ct_limit.h): evicts the oldest flow in creation order that
 * never saw a reply, or a TCP flow whose handshake never completed (what
 * Linux calls not assured: a SYN flood at a server that answers leaves
 * those), from a full table. (bpf_loop would let the verifier check a
 * step once, but needs Linux 5.17; natwall runs on 5.15.) */
static __always_inline int ct_evictable(const struct nw_ct_state *st, __u8 proto)
{
	if (!(st->flags & NW_CT_SEEN_REPLY))
		return 1;
	return proto == IPPROTO_TCP &&
	       (st->tcp_state == NW_TCP_SYN_SENT || st->tcp_state == NW_TCP_SYN_RECV);
}

struct nw_early_drop {
	__u64 now;
	__u32 evicted;
};

/* Examines one creation record; returns 1 to end the scan. */
static __always_inline long ct_early_drop4_step(struct nw_early_drop *ed)
{
	__u32 key = 0;
	struct nw_ct_order_pos *pos = bpf_map_lookup_elem(&nw_ct_order, &key);
	struct nw_tuple4 orig, *rec;
	struct nw_ct4_entry *e;
	__s64 slot;
	__u32 idx;

	if (!pos)
		return 1;
	slot = ct_order_next(pos);
	if (slot < 0)
		return 1;
	idx = slot;
	rec = bpf_map_lookup_elem(&nw_ct4_order, &idx);
	if (!rec)
		return 1;
	orig = *rec;
	e = bpf_map_lookup_elem(&nw_ct4, &orig);
	if (!e || !ct_evictable(&e->st, orig.proto))
		return 0;
	ct_delete4(&orig, e, NW_DROP_CT_FULL, ed->now);
	stat_inc(NW_STAT_CT_EARLY_DROP);
	ed->evicted = 1;
	return 1;
}

static __always_inline long ct_early_drop6_step(struct nw_early_drop *ed)
{
	__u32 key = 1;
	struct nw_ct_order_pos *pos = bpf_map_lookup_elem(&nw_ct_order, &key);
	struct nw_tuple6 orig, *rec;
	struct nw_ct6_entry *e;
	__s64 slot;
	__u32 idx;

	if (!pos)
		return 1;
	slot = ct_order_next(pos);
	if (slot < 0)
		return 1;
	idx = slot;
	rec = bpf_map_lookup_elem(&nw_ct6_order, &idx);
	if (!rec)
		return 1;
	orig = *rec;
	e = bpf_map_lookup_elem(&nw_ct6, &orig);
	if (!e || !ct_evictable(&e->st, orig.proto))
		return 0;
	src_removed6(&e->st, &orig, ed->now);
	ct_event6(NW_EVENT_FLOW_END, NW_DROP_CT_FULL, &orig, e, ed->now);
	bpf_map_delete_elem(&nw_ct6, &orig);
	stat_inc(NW_STAT_CT_EARLY_DROP);
	ed->evicted = 1;
	return 1;
}

/* Returns 1 if it evicted a flow. */
__noinline int ct_early_drop4(__u64 now)
{
	struct nw_early_drop ed = { .now = now };

	for (int i = 0; i < NW_EARLY_DROP_SCAN; i++)
		if (ct_early_drop4_step(&ed))
			break;
	return ed.evicted;
}

__noinline int ct_early_drop6(__u64 now)
{
	struct nw_early_drop ed = { .now = now };

	for (int i = 0; i < NW_EARLY_DROP_SCAN; i++)
		if (ct_early_drop6_step(&ed))
			break;
	return ed.evicted;
}
