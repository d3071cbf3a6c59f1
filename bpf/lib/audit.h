/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Decision logging and audit mode (docs/rules.md, docs/flowlogs.md).
 *
 * A stateful deny or reject rule (or the default) with logging on reports
 * its decision as an alert event; an audit default that would have denied
 * reports it and lets the flow start. Audit *rules* are alert rules with
 * NW_ACL_RULE_AUDIT and are reported by acl_alert_events (ct.h).
 *
 * A denied flow is never tracked, so each of its packets is a first
 * packet: a flood against a logged deny rule would fill the ring buffer
 * that flow logs share. Reports are therefore bounded per CPU and second,
 * and what is over the budget is counted, not reported. */
#pragma once

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "types.h"
#include "maps.h"
#include "counters.h"
#include "ct.h"

/* Logged decisions reported per CPU and second. */
#define NW_LOG_EVENTS_PER_SEC 1024

struct nw_log_budget {
	__u64 window_ns;  /* start of the current second */
	__u64 used;       /* reports in it */
};

/* The per-CPU budget of logged-decision reports. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nw_log_budget);
} nw_log_budget SEC(".maps");

static __always_inline int log_budget_take(__u64 now)
{
	__u32 zero = 0;
	struct nw_log_budget *b = bpf_map_lookup_elem(&nw_log_budget, &zero);

	if (!b)
		return 0;
	if (now - b->window_ns >= 1000000000ULL) {
		b->window_ns = now;
		b->used = 0;
	}
	if (b->used >= NW_LOG_EVENTS_PER_SEC)
		return 0;
	b->used++;
	return 1;
}

/* Reports the stateful decision res made for first packet ap, when its
 * rule asks for it: a logged deny or reject as an alert event with the
 * drop reason, an audit default's "would deny" as an audit alert. */
static __always_inline int acl_log_decision(const struct nw_acl_pkt *ap, const struct nw_acl_result *res,
					    __u64 now)
{
	struct nw_flow_event *ev;
	__u32 reason = 0;
	__u8 alert;

	switch (res->action) {
	case NW_ACL_DENY:
	case NW_ACL_REJECT:
		if (!(res->flags & NW_ACL_RULE_LOG))
			return 0;
		reason = res->action == NW_ACL_DENY ? NW_DROP_ACL_DENY : NW_DROP_ACL_REJECT;
		alert = NW_ALERT_LOGGED;
		stat_inc(NW_STAT_DECISION_LOGGED);
		break;
	case NW_ACL_ALLOW:
		/* An audit rule that matched first is what would have decided:
		 * it has reported, the default would not have been reached. */
		if (!(res->flags & NW_ACL_RULE_AUDIT) || res->alert_audit)
			return 0;
		alert = NW_ALERT_AUDIT;
		stat_inc(NW_STAT_AUDIT_MATCHED);
		break;
	default:
		return 0;
	}
	if (!log_budget_take(now)) {
		stat_inc(NW_STAT_LOG_SUPPRESSED);
		return 0;
	}
	/* Filled here, not by ct_event_start: its flow state on this stack
	 * would break the 512-byte combined stack limit. */
	ev = bpf_ringbuf_reserve(&nw_events, sizeof(*ev), 0);
	if (!ev) {
		stat_inc(NW_STAT_EVENTS_LOST);
		return 0;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->timestamp_ns = now;
	ev->type = NW_EVENT_ALERT;
	ev->family = ap->family;
	ev->proto = ap->proto;
	ev->reason = reason;
	ev->rule_id = res->rule_id;
	ev->zone = ap->zone;
	ev->alert_flags = alert;
	__builtin_memcpy(ev->saddr, ap->saddr, 16);
	__builtin_memcpy(ev->daddr, ap->daddr, 16);
	ev->sport = bpf_htons(ap->sport);
	ev->dport = bpf_htons(ap->dport);
	bpf_ringbuf_submit(ev, 0);
	return 1;
}

/* Reports what the stateful stage found for first packet ap: its alert
 * and audit rule matches, and the deciding rule's logged or audit
 * decision. A global function: verified once, and its stack is not added
 * to the classifier's in the combined 512-byte limit. */
__noinline int acl_report(const struct nw_acl_pkt *ap, const struct nw_acl_result *res, __u64 now)
{
	if (!ap || !res)
		return 0;
	if (res->alerts)
		acl_alert_events(res, ap->family, ap->saddr, ap->daddr, ap->proto, bpf_htons(ap->sport),
				 bpf_htons(ap->dport), ap->zone, now);
	if (res->flags)
		acl_log_decision(ap, res, now);
	return 0;
}
