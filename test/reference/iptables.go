// Package reference compiles natwall's rule model to iptables and
// ip6tables, an independent implementation of the same semantics that the
// differential tests hold natwall against.
package reference

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/coreos/go-iptables/iptables"

	"github.com/natwall/natwall/rules"
)

// Chain is the chain the stateless rules are compiled into, jumped to
// from FORWARD.
const Chain = "NATWALL_STATELESS"

// Stateless installs rs's stateless stage in the current network
// namespace's FORWARD chain: every packet, first match wins, drop or
// accept (pass), default accept. Rules with a direction are refused: a
// direction needs the inside networks, which this backend does not model.
func Stateless(rs []rules.Rule) error {
	for _, proto := range []iptables.Protocol{iptables.ProtocolIPv4, iptables.ProtocolIPv6} {
		ipt, err := iptables.NewWithProtocol(proto)
		if err != nil {
			return err
		}
		if err := ipt.ClearChain("filter", Chain); err != nil {
			return err
		}
		for _, r := range rs {
			if r.Direction != rules.AnyDirection {
				return fmt.Errorf("rule %s: directions are not compiled to iptables", r.ID)
			}
			for _, spec := range ruleSpecs(r, proto == iptables.ProtocolIPv6) {
				if err := ipt.Append("filter", Chain, spec...); err != nil {
					return fmt.Errorf("rule %s: %w", r.ID, err)
				}
			}
		}
		if err := ipt.Append("filter", Chain, "-j", "ACCEPT"); err != nil {
			return err
		}
		if err := ipt.InsertUnique("filter", "FORWARD", 1, "-j", Chain); err != nil {
			return err
		}
	}
	return nil
}

// ruleSpecs is one iptables rule per source and destination prefix pair of
// r's family; none if r cannot match that family at all.
func ruleSpecs(r rules.Rule, v6 bool) [][]string {
	family := func(ps []netip.Prefix) []string {
		if len(ps) == 0 {
			return []string{""}
		}
		var out []string
		for _, p := range ps {
			if p.Addr().Is6() == v6 {
				out = append(out, p.String())
			}
		}
		return out
	}
	var match []string
	switch {
	case r.Protocol < 0:
	case r.Protocol == 1 && r.ICMPType >= 0:
		if v6 {
			return nil // an IPv6 packet never carries protocol 1
		}
		icmp := fmt.Sprint(r.ICMPType)
		if r.ICMPCode >= 0 {
			icmp += fmt.Sprint("/", r.ICMPCode)
		}
		match = append(match, "-p", "icmp", "--icmp-type", icmp)
	default:
		match = append(match, "-p", fmt.Sprint(r.Protocol))
	}
	if r.SrcPorts != nil || r.DstPorts != nil {
		name := map[int]string{6: "tcp", 17: "udp"}[r.Protocol]
		// One multiport match takes source or destination ports, not both.
		match = append(match[:0:0], "-p", name)
		if r.SrcPorts != nil {
			match = append(match, "-m", "multiport", "--sports", portList(r.SrcPorts))
		}
		if r.DstPorts != nil {
			match = append(match, "-m", "multiport", "--dports", portList(r.DstPorts))
		}
	}
	target := "ACCEPT"
	if r.Action == rules.Drop {
		target = "DROP"
	}
	var specs [][]string
	for _, s := range family(r.Src) {
		for _, d := range family(r.Dst) {
			spec := append([]string(nil), match...)
			if s != "" {
				spec = append(spec, "-s", s)
			}
			if d != "" {
				spec = append(spec, "-d", d)
			}
			specs = append(specs, append(spec, "-j", target))
		}
	}
	return specs
}

func portList(prs []rules.PortRange) string {
	parts := make([]string, len(prs))
	for i, p := range prs {
		// iptables refuses a range whose ends are equal.
		if p.Lo == p.Hi {
			parts[i] = fmt.Sprint(p.Lo)
		} else {
			parts[i] = fmt.Sprintf("%d:%d", p.Lo, p.Hi)
		}
	}
	return strings.Join(parts, ",")
}
