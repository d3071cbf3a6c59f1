/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* natwall's XDP entry point: every packet that reaches a natwall NIC.
 *
 * parse -> (firewall, conntrack and NAT stages attach here) -> route -> exit
 *
 * Each stage returns an enum nw_reason; nw_exit counts it and turns it into
 * the XDP action, so every packet is explained by exactly one counter. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "lib/types.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/fib.h"
#include "lib/counters.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("xdp")
int xdp_natwall(struct xdp_md *ctx)
{
	struct nw_pkt pkt = {};
	int ret;

	ret = parse_packet(ctx, &pkt);
	if (ret < 0)
		return nw_exit(ctx, &pkt, -ret);

	/* The kernel's VLAN device owns tagged traffic's routing. */
	if (pkt.vlan_depth)
		return nw_exit(ctx, &pkt, NW_PASS_VLAN);

	return nw_exit(ctx, &pkt, fib_forward(ctx, &pkt));
}
