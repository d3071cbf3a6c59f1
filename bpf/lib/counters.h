/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The program's single exit: every packet is counted under one reason, and
 * the reason alone decides the XDP action. */
#pragma once

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "types.h"
#include "maps.h"
#include "parse.h"

static __always_inline void count_reason(struct nw_pkt *pkt, enum nw_reason reason)
{
	struct nw_counter *c = bpf_map_lookup_elem(&nw_counters, &reason);

	if (c) {
		c->packets++;
		c->bytes += pkt->frame_len;
	}
}

static __always_inline int malformed_verdict(void)
{
	__u32 zero = 0;
	struct nw_runtime_config *cfg = bpf_map_lookup_elem(&nw_config, &zero);

	/* Fail closed: without a config, malformed packets are dropped. */
	if (cfg && cfg->malformed_action == NW_MALFORMED_ACTION_PASS)
		return XDP_PASS;
	return XDP_DROP;
}

static __always_inline int nw_exit(struct xdp_md *ctx, struct nw_pkt *pkt, enum nw_reason reason)
{
	int action;

	switch (reason) {
	case NW_FWD_TX:
	case NW_REPLY_TCP_RST:
	case NW_REPLY_ICMP_UNREACH:
		action = XDP_TX;
		break;
	case NW_FWD_REDIRECT:
		action = bpf_redirect_map(&nw_tx_ports, pkt->egress_ifindex, 0);
		if (action != XDP_REDIRECT) {
			reason = NW_DROP_REDIRECT_FAILED;
			action = XDP_DROP;
		}
		break;
	case NW_MALFORMED_ETH:
	case NW_MALFORMED_VLAN:
	case NW_MALFORMED_IPV4:
	case NW_MALFORMED_IPV6:
	case NW_MALFORMED_IPV6_EXTHDR:
	case NW_MALFORMED_L4:
		action = malformed_verdict();
		break;
	case NW_PASS_NOT_IP:
	case NW_PASS_VLAN:
	case NW_PASS_LOCAL:
	case NW_PASS_LINK_LOCAL:
	case NW_PASS_NO_NEIGH:
	case NW_PASS_TTL_EXPIRED:
	case NW_PASS_FRAG_NEEDED:
	case NW_PASS_NO_ROUTE:
	case NW_PASS_FWD_DISABLED:
	case NW_PASS_ROUTE_UNSUPPORTED:
	case NW_PASS_EGRESS_UNMANAGED:
		action = XDP_PASS;
		break;
	default:
		/* Every NW_DROP_*, and fail closed on anything unforeseen. */
		action = XDP_DROP;
		break;
	}
	count_reason(pkt, reason);
	return action;
}
