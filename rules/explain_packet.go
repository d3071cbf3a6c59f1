package rules

import "fmt"

// The dataplane's own decisions, named by the reason counters it counts
// them under (dataplane/reasons.go). The differential test
// (dataplane/explain_diff_test.go) checks each against the kernel's count.
const (
	reasonPassLinkLocal     = "pass_link_local"
	reasonPassLocal         = "pass_local"
	reasonDropLinkScopedSrc = "drop_link_scoped_src"
	reasonDropICMPError     = "drop_icmp_error_no_flow"
	reasonDropCTInvalid     = "drop_ct_invalid"
	reasonDropSpoofedInside = "drop_spoofed_inside"
)

// ExplainPacket explains a flow's first packet as the dataplane decides
// it, arriving on an outside NIC (one in outside_interfaces) when
// ep.ArrivedOutside, else on another, with a source whose route leads back
// that way (the reverse-path check, which needs the routes, passes). A TCP
// packet is taken to be the flow's SYN.
//
// The zones come from the endpoints (DirectionOf, AddressDirection) unless
// p.Direction is set: then it is the zone both stages match, and the
// explanation says when the endpoints disagree. Before and instead of the
// rules come the dataplane's own decisions, each an explanation's
// "dataplane" decision with its reason: IPv6 neighbour discovery and MLD
// on link-scoped addresses go to the kernel before any rule; an ICMP error
// is admitted only with the flow it quotes; a link-scoped IPv6 source is
// never forwarded; a message that opens no flow (an echo reply) is
// dropped; to the appliance, only a connection's opening (a TCP SYN, an
// echo request) meets the stateful rules, in the local zone, and the
// kernel's sockets take the rest.
func ExplainPacket(rs *RuleSet, t *Tables, p Packet, info *L7Info, ep Endpoints) Explanation {
	if _, _, ok := rs.Forward(p, ep.SNAT); ok {
		return ExplainForwarded(rs, t, p, ep.SNAT, info)
	}
	stateful := DirectionOf(p.Src, p.Dst, ep.Inside, ep.Local)
	stateless := AddressDirection(p.Src, p.Dst, ep.Inside)
	why := directionWhy(p, ep, stateless, stateful)
	if p.Direction != AnyDirection {
		if p.Direction != stateful {
			why = fmt.Sprintf("%s given; the endpoints say %s, which the dataplane matches: %s", p.Direction, stateful, why)
		} else {
			why = fmt.Sprintf("%s given, as the endpoints say: %s", p.Direction, why)
		}
		stateless, stateful = p.Direction, p.Direction
	}
	p.Direction = stateful
	ex := Explanation{Packet: describe(p), DirectionWhy: why}
	if info != nil {
		ex.Packet += ", " + info.String()
	}
	dataplane := func(action, reason, why, verdict string) Explanation {
		ex.Decisions = append(ex.Decisions, Decision{Stage: "dataplane", Action: action, Reason: reason, Why: why})
		ex.Verdict = verdict
		return ex
	}
	linkScoped := LinkScoped(p.Src) || LinkScoped(p.Dst)
	if linkScoped && linkControl(p) {
		return dataplane("pass", reasonPassLinkLocal,
			fmt.Sprintf("ICMPv6 type %d on a link-scoped address is neighbour discovery or MLD, which the kernel must see: no rule applies", p.ICMPType),
			"passed to the kernel unfiltered")
	}
	sp := p
	sp.Direction = stateless
	if explainStateless(rs, t, sp, &ex) {
		return ex
	}
	forAppliance := ep.forAppliance(p.Dst)
	if icmpError(p) {
		// The route lookup, of both addresses, does not forward an IPv6
		// link-scoped one.
		if forAppliance || linkScoped {
			return dataplane("pass", reasonPassLocal, "an ICMP error of no tracked flow, for the appliance: its kernel's sockets judge it",
				"passed to the appliance's kernel")
		}
		return dataplane("drop", reasonDropICMPError,
			"an ICMP error is admitted only with the tracked flow it quotes, never by a rule; a new packet has none",
			"dropped: an ICMP error of no flow")
	}
	local, localReason := forAppliance, reasonPassLocal
	if linkScoped {
		switch {
		case LinkScoped(p.Dst):
			local, localReason = true, reasonPassLinkLocal
		case !forAppliance:
			return dataplane("drop", reasonDropLinkScopedSrc,
				fmt.Sprintf("a link-scoped source (%s) is never forwarded beyond its link (RFC 4291 2.5.6)", p.Src),
				"dropped: a link-scoped source to a routed address")
		}
	}
	if ep.ArrivedOutside && ep.inside(p.Src) {
		return dataplane("drop", reasonDropSpoofedInside,
			fmt.Sprintf("an inside source (%s) on an outside interface is spoofed", p.Src),
			"dropped: a spoofed inside source")
	}
	if local {
		if !opensLocal(p) {
			return dataplane("pass", localReason,
				"for the appliance, and not a connection's opening (a TCP SYN, an echo request): the stateful rules see only those; the kernel's sockets take the rest, untracked",
				"passed to the appliance's kernel")
		}
		explainStateful(rs, t, p, info, &ex)
		if last := ex.Decisions[len(ex.Decisions)-1]; last.Action == Allow.String() {
			ex.Verdict = "allowed: to the appliance's kernel, untracked"
		}
		return ex
	}
	if !canStart(p) {
		return dataplane("drop", reasonDropCTInvalid,
			fmt.Sprintf("an ICMP type %d message opens no flow, and belongs to none known", p.ICMPType),
			"dropped: not a flow's first packet")
	}
	explainStateful(rs, t, p, info, &ex)
	return ex
}

func directionWhy(p Packet, ep Endpoints, stateless, stateful Direction) string {
	where := func(a fmt.Stringer, in bool) string {
		if in {
			return fmt.Sprintf("%s is inside", a)
		}
		return fmt.Sprintf("%s is outside", a)
	}
	addr := where(p.Src, ep.inside(p.Src)) + ", " + where(p.Dst, ep.inside(p.Dst))
	if len(ep.Inside) == 0 {
		addr = "no inside networks are configured, so every address is outside"
	}
	if stateful == Local {
		return fmt.Sprintf("derived: %s is the appliance's (an address of its own, a broadcast, multicast or link-scoped one), so local for the stateful stage; %s, so %s for the stateless stage", p.Dst, addr, stateless)
	}
	return fmt.Sprintf("derived: %s", addr)
}

// linkControl: IPv6 neighbour discovery and MLD (bpf/lib/zone.h,
// ipv6_link_control).
func linkControl(p Packet) bool {
	return p.Protocol == 58 && p.IsICMP && ((p.ICMPType >= 130 && p.ICMPType <= 137) || p.ICMPType == 143)
}

// icmpError: an ICMP message about another packet (bpf/xdp_natwall.c,
// icmp4_is_error, icmp6_is_error).
func icmpError(p Packet) bool {
	if !p.IsICMP {
		return false
	}
	if p.Protocol == 1 {
		switch p.ICMPType {
		case 3, 4, 5, 11, 12:
			return true
		}
		return false
	}
	return p.Protocol == 58 && p.ICMPType >= 1 && p.ICMPType <= 4
}

// canStart: a message that may open a flow (bpf/lib/ct.h, ct_can_start);
// TCP is taken to be a SYN.
func canStart(p Packet) bool {
	switch p.Protocol {
	case 1:
		return p.ICMPType == 8 || p.ICMPType == 13 || p.ICMPType == 15 || p.ICMPType == 17
	case 58:
		return p.ICMPType == 128 || p.ICMPType == 139
	}
	return true
}

// opensLocal: a connection's opening to the appliance, which the stateful
// rules decide (bpf/xdp_natwall.c, local_opens).
func opensLocal(p Packet) bool {
	switch p.Protocol {
	case 6:
		return true
	case 1:
		return p.IsICMP && p.ICMPType == 8
	case 58:
		return p.IsICMP && p.ICMPType == 128
	}
	return false
}
