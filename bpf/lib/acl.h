/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The rule classifier: a linear bit vector search whose per-packet cost
 * does not grow with the number of rules that cannot match.
 *
 * Every field lookup (LPM trie for addresses, direct arrays for the rest)
 * yields a bit vector of the rules that match on that field; the AND of the
 * field vectors is the set of rules that match the packet, and its lowest
 * set bit is the first match. Each vector carries a summary word per 64
 * words, so only words that can hold a match are ANDed, and the search
 * stops at the first match. */
#pragma once

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include "types.h"
#include "maps.h"

/* Whether a rule set is loaded for stage, so that packets pay for building
 * the classifier's view only when there is something to classify. */
static __always_inline int acl_loaded(__u32 stage)
{
	__u32 zero = 0, *genp = bpf_map_lookup_elem(&nw_acl_gen, &zero);
	__u32 base = (genp ? (*genp & 1) : 0) * NW_ACL_STAGES + (stage & 1);
	struct nw_acl_meta *meta = bpf_map_lookup_elem(&nw_acl_stages, &base);

	return meta && (meta->nrules || meta->default_action != NW_ACL_NONE);
}

/* A tag for what the stateless stage decides by: nw_acl_gen counts rule
 * set flips (its low bit picks the tables) and changes of the inside
 * networks, so a verdict recorded under one tag holds while it is current.
 * Never 0, which marks "not recorded". */
static __always_inline __u32 acl_tag(void)
{
	__u32 zero = 0, *genp = bpf_map_lookup_elem(&nw_acl_gen, &zero);

	return (genp ? *genp : 0) + 1;
}

/* Count of trailing zeros of a non-zero v, without branches (BPF has no
 * such instruction, and branches here multiply the verifier's work): the
 * population count of the bits below v's lowest set bit. */
static __always_inline __u32 ctz64(__u64 v)
{
	__u64 x = (v & -v) - 1;

	x = x - ((x >> 1) & 0x5555555555555555ULL);
	x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
	x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
	return (x * 0x0101010101010101ULL) >> 56;
}

static __always_inline int acl_addr_bv(struct nw_scratch *scr, const struct nw_acl_pkt *p, __u8 gen,
				       __u8 stage, __u8 field, const __u8 *addr, __u32 *id)
{
	__u32 *v;

	if (p->family == 4) {
		struct nw_acl_lpm4_key *k = &scr->acl_key4;

		k->prefixlen = 64;
		k->gen = gen;
		k->stage = stage;
		k->field = field;
		k->pad = 0;
		__builtin_memcpy(&k->addr, addr, 4);
		v = bpf_map_lookup_elem(&nw_acl_lpm4, k);
	} else {
		struct nw_acl_lpm6_key *k = &scr->acl_key6;

		k->prefixlen = 160;
		k->gen = gen;
		k->stage = stage;
		k->field = field;
		k->pad = 0;
		__builtin_memcpy(k->addr, addr, 16);
		v = bpf_map_lookup_elem(&nw_acl_lpm6, k);
	}
	if (!v)
		return -1;
	*id = *v;
	return 0;
}

static __always_inline int acl_port_bv(__u32 base, __u32 field, __u16 value, __u32 *id)
{
	__u32 key = (base * 3 + field) * 65536 + value;
	__u32 *v = bpf_map_lookup_elem(&nw_acl_ports, &key);

	if (!v)
		return -1;
	*id = *v;
	return 0;
}

static __always_inline struct nw_acl_bitvec *acl_bits(struct nw_scratch *scr, __u32 gen_stage, __u32 id)
{
	scr->acl_bv_key.gen_stage = gen_stage;
	scr->acl_bv_key.id = id;
	return bpf_map_lookup_elem(&nw_acl_bits, &scr->acl_bv_key);
}

static __always_inline void acl_count(__u32 rule_id, __u64 bytes)
{
	struct nw_rule_counter *c = bpf_map_lookup_elem(&nw_rule_hits, &rule_id);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

/* The scan's state on the stack: the field vectors are map value
 * pointers, which only the stack can hold. The summaries and the result are
 * in the scratch map (acl_summary, acl_scan_res). */
struct acl_scan {
	struct nw_acl_bitvec *bv[NW_ACL_FIELDS];
	__u64 cur;        /* candidate words left in summary word j */
	__u64 acc;        /* matching rules of word w not examined yet */
	__u32 w;
	__u32 j;
	__u32 nsummary;
	__u32 base;
	__u32 decided;
	__u32 proto;      /* the packet's: L7 rules match TCP only */
};

/* Examines the next few matching rules, lowest first: those left in the
 * current word, else the next candidate word's (the AND of the fields'
 * words there). A bpf_loop callback, so the verifier checks it once,
 * whatever the number of words. Returns 1 to stop. */
static long acl_scan_word(__u32 i, void *data)
{
	struct acl_scan *sc = data;
	struct nw_acl_bitvec *b0 = sc->bv[0], *b1 = sc->bv[1], *b2 = sc->bv[2], *b3 = sc->bv[3],
			     *b4 = sc->bv[4], *b5 = sc->bv[5], *b6 = sc->bv[6];
	struct nw_scratch *scr = scratch();
	struct nw_acl_result *res;
	__u64 cur = sc->cur, acc;
	__u32 w, j;

	if (!scr || !b0 || !b1 || !b2 || !b3 || !b4 || !b5 || !b6)
		return 1;
	res = &scr->acl_scan_res;
	acc = sc->acc;
	w = sc->w & (NW_ACL_WORDS - 1);
	if (!acc) {
		/* Move on to the next summary word with candidates. */
		for (int k = 0; k < NW_ACL_SUMMARY && !cur; k++) {
			j = sc->j + 1;
			if (j >= sc->nsummary || j >= NW_ACL_SUMMARY)
				return 1;
			sc->j = j;
			/* j < NW_ACL_SUMMARY, but clang proves that and drops
			 * the mask the verifier needs: hide j from it. */
			asm volatile("" : "+r"(j));
			cur = scr->acl_summary[j & (NW_ACL_SUMMARY - 1)];
		}
		if (!cur)
			return 1;
		w = ((sc->j & (NW_ACL_SUMMARY - 1)) * 64 + ctz64(cur)) & (NW_ACL_WORDS - 1);
		sc->cur = cur & (cur - 1);
		acc = b0->words[w] & b1->words[w] & b2->words[w] & b3->words[w] &
		      b4->words[w] & b5->words[w] & b6->words[w];
	}

	/* Bounded for the verifier. Alert rules beyond this many stay in
	 * sc->acc for the next call: a run of alerts, however long, never
	 * hides the rule that decides after it. */
	for (int a = 0; a <= NW_ACL_MAX_ALERTS && acc; a++) {
		__u32 index = (w * 64 + ctz64(acc)) & (NW_ACL_MAX_RULES - 1);
		__u32 key = sc->base * NW_ACL_MAX_RULES + index;
		struct nw_acl_rule *r = bpf_map_lookup_elem(&nw_acl_rules, &key);

		acc &= acc - 1;
		if (!r)
			return 1;
		/* Names travel over TCP only: for anything else an L7 rule
		 * cannot match ("no name"), whatever its other fields say
		 * (rules requires tcp, this guards it). On TCP it stops the
		 * scan whatever its action, an alert's included: the flow's
		 * first data decides it. */
		if ((r->flags & NW_ACL_RULE_L7) && sc->proto != IPPROTO_TCP)
			continue;
		if (r->action == NW_ACL_ALERT && !(r->flags & NW_ACL_RULE_L7)) {
			/* Capped, not counted on: the verifier must see the
			 * callback's state converge. */
			__u32 n = res->alerts;

			if (n < NW_ACL_MAX_ALERTS) {
				res->alert_ids[n & (NW_ACL_MAX_ALERTS - 1)] = r->rule_id;
				if (r->flags & NW_ACL_RULE_AUDIT)
					res->alert_audit |= 1U << (n & (NW_ACL_MAX_ALERTS - 1));
				res->alerts = n + 1;
			}
			acl_count(r->rule_id, 0);
			continue;
		}
		sc->decided = 1;
		res->action = r->action;
		res->rule_id = r->rule_id;
		res->flags = r->flags;
		res->rule_index = index;
		return 1;
	}
	sc->acc = acc;
	sc->w = w;
	return 0;
}

/* Classifies p in stage and counts the deciding rule. With no rule set
 * loaded the action is NW_ACL_NONE and the caller applies its built-in
 * policy. A rule set whose tables are incomplete fails closed: the stage's
 * default action, which for a stateful stage is meant to be deny.
 *
 * A global function: the verifier checks it once, on its own, instead of
 * once for every call site as it would a static one. */
__noinline int acl_classify(const struct nw_acl_pkt *p, __u32 stage, __u64 bytes,
			    struct nw_acl_result *res)
{
	__u32 zero = 0, *genp = bpf_map_lookup_elem(&nw_acl_gen, &zero);
	/* Read once: the tables and the tag a flow records with the verdict
	 * must come from the same generation, whenever a reload flips it. */
	__u32 genv = genp ? *(volatile __u32 *)genp : 0;
	__u32 gen = genv & 1;
	__u32 base = gen * NW_ACL_STAGES + (stage & 1);
	__u32 gs = gen << 8 | (stage & 1);
	struct nw_acl_meta *meta = bpf_map_lookup_elem(&nw_acl_stages, &base);
	struct nw_scratch *scr = scratch();
	struct acl_scan sc = {};
	__u32 nsummary, *ids;

	if (!p || !res || !scr)
		return -1;
	ids = scr->acl_ids;
	res->tag = genv + 1;
	res->action = NW_ACL_NONE;
	res->rule_id = 0;
	res->alerts = 0;
	res->flags = 0;
	res->alert_audit = 0;
	res->rule_index = 0;
	if (!meta || meta->nrules == 0) {
		if (meta && meta->default_action != NW_ACL_NONE) {
			res->action = meta->default_action;
			res->rule_id = meta->default_rule_id;
			res->flags = meta->default_flags;
			acl_count(res->rule_id, bytes);
		}
		return 0;
	}
	res->action = meta->default_action;
	res->rule_id = meta->default_rule_id;
	res->flags = meta->default_flags;

	if (acl_addr_bv(scr, p, gen, stage, NW_ACL_F_SRC, p->saddr, &ids[NW_ACL_F_SRC]) ||
	    acl_addr_bv(scr, p, gen, stage, NW_ACL_F_DST, p->daddr, &ids[NW_ACL_F_DST]))
		goto out;
	if (p->has_ports) {
		if (acl_port_bv(base, 0, p->sport, &ids[NW_ACL_F_SPORT]) ||
		    acl_port_bv(base, 1, p->dport, &ids[NW_ACL_F_DPORT]))
			goto out;
	} else {
		ids[NW_ACL_F_SPORT] = ids[NW_ACL_F_DPORT] = meta->noport_bv;
	}
	if (p->is_icmp) {
		if (acl_port_bv(base, 2, p->icmp, &ids[NW_ACL_F_ICMP]))
			goto out;
	} else {
		ids[NW_ACL_F_ICMP] = meta->noicmp_bv;
	}
	ids[NW_ACL_F_PROTO] = meta->proto_bv[p->proto];
	ids[NW_ACL_F_ZONE] = meta->zone_bv[p->zone & 7];

	for (int f = 0; f < NW_ACL_FIELDS; f++) {
		sc.bv[f] = acl_bits(scr, gs, ids[f]);
		if (!sc.bv[f])
			goto out;
	}
	nsummary = meta->nsummary;
	if (nsummary > NW_ACL_SUMMARY)
		goto out;
	for (int j = 0; j < NW_ACL_SUMMARY; j++) {
		__u64 s = ~0ULL;

		for (int f = 0; f < NW_ACL_FIELDS; f++) {
			struct nw_acl_bitvec *bv = sc.bv[f];

			if (bv)
				s &= bv->summary[j];
		}
		scr->acl_summary[j] = s;
	}
	__builtin_memset(&scr->acl_scan_res, 0, sizeof(scr->acl_scan_res));
	sc.base = base;
	sc.nsummary = nsummary;
	sc.proto = p->proto;
	sc.j = 0;
	sc.cur = scr->acl_summary[0];
	/* One call per candidate word, plus one per NW_ACL_MAX_ALERTS + 1
	 * matching rules: every rule bit at most once. */
	bpf_loop(NW_ACL_WORDS + NW_ACL_MAX_RULES, acl_scan_word, &sc, 0);

	res->alerts = scr->acl_scan_res.alerts;
	res->alert_audit = scr->acl_scan_res.alert_audit;
	for (int i = 0; i < NW_ACL_MAX_ALERTS; i++)
		res->alert_ids[i] = scr->acl_scan_res.alert_ids[i];
	if (sc.decided) {
		res->action = scr->acl_scan_res.action;
		res->rule_id = scr->acl_scan_res.rule_id;
		res->flags = scr->acl_scan_res.flags;
		res->rule_index = scr->acl_scan_res.rule_index;
	}
out:
	acl_count(res->rule_id, bytes);
	return 0;
}

/* Test hook: when set before load to a generation g, a packet classified
 * under g - 1 flips the classifier to g right after, as a reload landing
 * between a packet's classification and the rest of its processing would.
 * Zero in production, where the verifier prunes the branch. */
volatile const __u32 nw_test_flip_gen_after_classify = 0;

static __always_inline void acl_test_flip_gen(const struct nw_acl_result *res)
{
	__u32 zero = 0, *genp;

	if (!nw_test_flip_gen_after_classify || res->tag != nw_test_flip_gen_after_classify)
		return;
	genp = bpf_map_lookup_elem(&nw_acl_gen, &zero);
	if (genp)
		*genp = nw_test_flip_gen_after_classify;
}
