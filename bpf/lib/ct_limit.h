/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* What keeps one host, or a flood of spoofed ones, from filling the flow
 * table.
 *
 * Per source host, at most unanswered_per_source unanswered flows. A flow
 * counts against its source (the original direction's source address, IPv6
 * by /128) from its creation until its first reply or until the dataplane
 * removes it. The control plane's collector removes expired flows without
 * telling the count, so instead of being decremented there, a flow is
 * counted in the window of src_window seconds (the longest timeout of an
 * unanswered flow) it was opened in, and a window's count is forgotten once
 * two newer windows have begun. A flow that stays unanswered and busy for
 * two windows stops counting; a removed one counts for two windows at most.
 * Updates from several CPUs are atomic, window changes are not: a count can
 * be off by the few flows opened during a window change.
 *
 * Early drop: when the table is full, a new flow evicts the oldest flow
 * that never saw a reply, or TCP that never completed its handshake, as
 * Linux's early_drop evicts flows that are not assured. Creation order is
 * kept in a ring of the last NW_CT_ORDER_SIZE flows created; a scan cursor
 * walks it oldest first, only for new flows of a full table, and skips the
 * flows that were answered or established, which they stay: such flows are
 * never evicted, and each record is passed about once. */
#pragma once

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "types.h"
#include "maps.h"

/* Records a full table's new flow examines, at most, for one to evict. The
 * cursor never goes back, so each record is examined about once: this
 * bounds one packet's work, not the work per flow. */
#define NW_EARLY_DROP_SCAN 32

/* The key's 16 bytes as two scalars, so that global functions (verified
 * once, whatever calls them) can take a source address. */
struct nw_src_words {
	__u64 hi;
	__u64 lo;
};

static __always_inline struct nw_src_words src_words4(__be32 addr)
{
	struct nw_src_key k = {};
	struct nw_src_words w;

	k.addr[10] = 0xff;
	k.addr[11] = 0xff;
	__builtin_memcpy(&k.addr[12], &addr, 4);
	__builtin_memcpy(&w, &k, sizeof(w));
	return w;
}

static __always_inline struct nw_src_words src_words6(const __u8 *addr)
{
	struct nw_src_words w;

	__builtin_memcpy(&w, addr, sizeof(w));
	return w;
}

static __always_inline __u64 src_epoch(const struct nw_runtime_config *cfg, __u64 ns)
{
	return ns / ((__u64)cfg->src_window * 1000000000ULL);
}

/* Starts a new window in c. A clock read before c's epoch (another CPU
 * stamped it later) counts in the current window. */
static __always_inline void src_roll(struct nw_src_count *c, __u64 epoch)
{
	if (c->epoch >= epoch)
		return;
	c->prev = c->epoch + 1 == epoch ? c->cur : 0;
	c->cur = 0;
	c->epoch = epoch;
}

static __always_inline struct nw_src_count *src_count(__u64 hi, __u64 lo,
						      struct nw_runtime_config **cfg)
{
	struct nw_src_key k;
	__u32 zero = 0;

	*cfg = bpf_map_lookup_elem(&nw_config, &zero);
	if (!*cfg || !(*cfg)->unanswered_per_source || !(*cfg)->src_window)
		return NULL;
	__builtin_memcpy(&k.addr[0], &hi, 8);
	__builtin_memcpy(&k.addr[8], &lo, 8);
	return bpf_map_lookup_elem(&nw_src_flows, &k);
}

/* 0 if the source may open another flow, else NW_DROP_CT_SRC_LIMIT. */
__noinline int src_admit(__u64 hi, __u64 lo, __u64 now)
{
	struct nw_runtime_config *cfg;
	struct nw_src_count *c = src_count(hi, lo, &cfg);

	if (!c || !cfg)
		return 0;
	src_roll(c, src_epoch(cfg, now));
	return c->cur + c->prev >= cfg->unanswered_per_source ? NW_DROP_CT_SRC_LIMIT : 0;
}

/* Counts a flow the source just opened. */
__noinline int src_opened(__u64 hi, __u64 lo, __u64 now)
{
	struct nw_runtime_config *cfg;
	struct nw_src_count *c = src_count(hi, lo, &cfg);
	struct nw_src_key k;

	if (!cfg || !cfg->unanswered_per_source || !cfg->src_window)
		return 0;
	if (!c) {
		struct nw_src_count fresh = { .epoch = src_epoch(cfg, now), .cur = 1 };

		__builtin_memcpy(&k.addr[0], &hi, 8);
		__builtin_memcpy(&k.addr[8], &lo, 8);
		/* Another CPU may have just created it: count in that one. */
		if (!bpf_map_update_elem(&nw_src_flows, &k, &fresh, BPF_NOEXIST))
			return 0;
		c = bpf_map_lookup_elem(&nw_src_flows, &k);
		if (!c)
			return 0;
	}
	src_roll(c, src_epoch(cfg, now));
	__sync_fetch_and_add(&c->cur, 1);
	return 0;
}

/* A flow opened at created_ns was answered or removed: it leaves the
 * count of the window it was opened in, if that is still counted. */
__noinline int src_released(__u64 hi, __u64 lo, __u64 created_ns, __u64 now)
{
	struct nw_runtime_config *cfg;
	struct nw_src_count *c = src_count(hi, lo, &cfg);
	__u64 opened;

	if (!c || !cfg)
		return 0;
	src_roll(c, src_epoch(cfg, now));
	opened = src_epoch(cfg, created_ns);
	if (opened == c->epoch) {
		if (c->cur)
			__sync_fetch_and_add(&c->cur, -1);
	} else if (opened + 1 == c->epoch) {
		if (c->prev)
			__sync_fetch_and_add(&c->prev, -1);
	}
	return 0;
}

/* Before a flow's packet is accounted: its first reply releases its count. */
static __always_inline void src_first_reply4(const struct nw_ct_state *st, int dir,
					     const struct nw_tuple4 *orig, __u64 now)
{
	if (dir == 1 /* NW_CT_DIR_REPLY */ && !(st->flags & NW_CT_SEEN_REPLY)) {
		struct nw_src_words w = src_words4(orig->saddr);

		src_released(w.hi, w.lo, st->created_ns, now);
	}
}

static __always_inline void src_first_reply6(const struct nw_ct_state *st, int dir,
					     const struct nw_tuple6 *orig, __u64 now)
{
	if (dir == 1 /* NW_CT_DIR_REPLY */ && !(st->flags & NW_CT_SEEN_REPLY)) {
		struct nw_src_words w = src_words6(orig->saddr);

		src_released(w.hi, w.lo, st->created_ns, now);
	}
}

/* A flow the dataplane removes releases its count if it was never answered. */
static __always_inline void src_removed4(const struct nw_ct_state *st, const struct nw_tuple4 *orig,
					 __u64 now)
{
	if (!(st->flags & NW_CT_SEEN_REPLY)) {
		struct nw_src_words w = src_words4(orig->saddr);

		src_released(w.hi, w.lo, st->created_ns, now);
	}
}

static __always_inline void src_removed6(const struct nw_ct_state *st, const struct nw_tuple6 *orig,
					 __u64 now)
{
	if (!(st->flags & NW_CT_SEEN_REPLY)) {
		struct nw_src_words w = src_words6(orig->saddr);

		src_released(w.hi, w.lo, st->created_ns, now);
	}
}

/* Records a new flow in the creation order early drop walks. A record is
 * only a hint: the scan looks the flow up again before it evicts anything,
 * so a record overwritten or torn by another CPU costs nothing but a look. */
static __always_inline void ct_order_push(__u32 family_key, const void *t, void *ring, __u32 size)
{
	struct nw_ct_order_pos *pos = bpf_map_lookup_elem(&nw_ct_order, &family_key);
	__u32 slot;
	void *rec;

	if (!pos)
		return;
	slot = __sync_fetch_and_add(&pos->head, 1) & (NW_CT_ORDER_SIZE - 1);
	rec = bpf_map_lookup_elem(ring, &slot);
	if (rec)
		__builtin_memcpy(rec, t, size);
}

/* The next creation record early drop should examine, or -1 when every
 * record has been. Records more than a ring behind were overwritten: the
 * cursor skips to the oldest that is left. Two CPUs may examine the same
 * record; the second finds the flow gone or answered. */
static __always_inline __s64 ct_order_next(struct nw_ct_order_pos *pos)
{
	__u64 head = pos->head, scan = pos->scan;

	if (head - scan > NW_CT_ORDER_SIZE)
		scan = head - NW_CT_ORDER_SIZE;
	if (scan >= head)
		return -1;
	pos->scan = scan + 1;
	return scan & (NW_CT_ORDER_SIZE - 1);
}

/* Defined in ct.h, once flows can be deleted: evict one unanswered flow
 * from a full table, returning 1 if one was. */
__noinline int ct_early_drop4(__u64 now);
__noinline int ct_early_drop6(__u64 now);
