/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Domain filtering (issue 17, L7DESIGN.md "Dataplane"): flows whose first
 * packet meets a stateful rule with an L7 condition.
 *
 * The classifier (acl.h) stops at the first matching rule flagged
 * NW_ACL_RULE_L7, alert or not, exactly as rules.StageTables.Lookup does,
 * and reports its index in the stage (nw_acl_result.rule_index). The
 * design makes such a flow PENDING; this build does not yet hold PENDING
 * flows, so it fails closed: the first packet is dropped with its own
 * reason rather than decided by the L7 rule's action, which would allow or
 * deny every name alike. Kept out of the established path: only a flow's
 * first packet reaches it. */
#pragma once

#include "types.h"
#include "audit.h"

/* The alert rules before the pending rule are reported as for any first
 * packet; the pending rule's own action is no decision yet, so a logged
 * deny among L7 rules is not logged here (the inspector decides it). */
static __always_inline int l7_pending_verdict(const struct nw_acl_pkt *ap, const struct nw_acl_result *res,
					      __u64 now)
{
	if (res->alerts)
		acl_alert_events(res, ap->family, ap->saddr, ap->daddr, ap->proto, bpf_htons(ap->sport),
				 bpf_htons(ap->dport), ap->zone, now);
	return NW_DROP_L7_PENDING;
}
