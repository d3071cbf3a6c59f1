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

// The chains the two stages are compiled into, jumped to from FORWARD in
// this order.
const (
	StatelessChain = "NATWALL_STATELESS"
	StatefulChain  = "NATWALL_STATEFUL"
)

// Install replaces the rule set in the current network namespace's FORWARD
// chain with rs. The stateless stage sees every packet, first match wins,
// drop or pass on (RETURN). The stateful stage lets conntrack's
// established and related packets through, as natwall lets a known flow's
// packets and replies through; it drops a TCP packet that is not a SYN, as
// only a SYN opens a flow in natwall; the rest is a new flow, decided by the
// first matching rule or the default: allow, deny, or reject (a TCP RST or
// ICMP administratively prohibited, what natwall answers). Rules with a
// direction or alert are refused: a direction needs the inside networks,
// which this backend does not model.
func Install(rs *rules.RuleSet) error {
	for _, proto := range []iptables.Protocol{iptables.ProtocolIPv4, iptables.ProtocolIPv6} {
		ipt, err := iptables.NewWithProtocol(proto)
		if err != nil {
			return err
		}
		chains, err := Chains(rs, proto == iptables.ProtocolIPv6)
		if err != nil {
			return err
		}
		for _, c := range chains {
			if err := ipt.ClearChain("filter", c.Name); err != nil {
				return err
			}
			for _, spec := range c.Specs {
				if err := ipt.Append("filter", c.Name, spec...); err != nil {
					return fmt.Errorf("%s %v: %w", c.Name, spec, err)
				}
			}
			if err := ipt.AppendUnique("filter", "FORWARD", "-j", c.Name); err != nil {
				return err
			}
		}
	}
	return nil
}

// Chain is one of the chains a stage compiles to: its rule specs in order,
// each the arguments iptables -A takes after the chain's name.
type Chain struct {
	Name  string
	Specs [][]string
}

// Chains compiles rs for one family into its two chains, stateless then
// stateful, as Install describes.
func Chains(rs *rules.RuleSet, v6 bool) ([]Chain, error) {
	stateful := [][]string{
		{"-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"},
		{"-p", "tcp", "!", "--syn", "-j", "DROP"},
	}
	var out []Chain
	for _, st := range []struct {
		chain string
		head  [][]string
		rules []rules.Rule
		def   rules.Action
	}{
		{StatelessChain, nil, rs.Stateless, rules.Pass},
		{StatefulChain, stateful, rs.Stateful, rs.StatefulDefault},
	} {
		specs := st.head
		for _, r := range st.rules {
			if r.Direction != rules.AnyDirection || r.Action == rules.Alert {
				return nil, fmt.Errorf("rule %s: directions and alerts are not compiled to iptables", r.ID)
			}
			for _, match := range matches(r, v6) {
				for _, target := range targets(r.Action, r.Protocol, v6) {
					specs = append(specs, append(append([]string(nil), match...), target...))
				}
			}
		}
		specs = append(specs, targets(st.def, -1, v6)...)
		out = append(out, Chain{Name: st.chain, Specs: specs})
	}
	return out, nil
}

// RestoreInput is rs for one family as iptables-restore (or
// ip6tables-restore) input: the filter table with the two chains flushed
// and filled, and FORWARD jumping to them, in one commit.
func RestoreInput(rs *rules.RuleSet, v6 bool) (string, error) {
	chains, err := Chains(rs, v6)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("*filter\n:FORWARD ACCEPT [0:0]\n")
	for _, c := range chains {
		fmt.Fprintf(&b, ":%s - [0:0]\n", c.Name)
	}
	for _, c := range chains {
		fmt.Fprintf(&b, "-A FORWARD -j %s\n", c.Name)
	}
	for _, c := range chains {
		for _, spec := range c.Specs {
			fmt.Fprintf(&b, "-A %s %s\n", c.Name, strings.Join(spec, " "))
		}
	}
	b.WriteString("COMMIT\n")
	return b.String(), nil
}

// targets are the iptables targets for an action on packets of protocol
// proto (-1 for any).
func targets(a rules.Action, proto int, v6 bool) [][]string {
	switch a {
	case rules.Pass:
		return [][]string{{"-j", "RETURN"}} // on to the stateful chain
	case rules.Allow:
		return [][]string{{"-j", "ACCEPT"}}
	case rules.Reject:
		rst := []string{"-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"}
		icmp := []string{"-j", "REJECT", "--reject-with", "icmp-admin-prohibited"}
		if v6 {
			icmp[3] = "icmp6-adm-prohibited"
		}
		switch proto {
		case 6:
			return [][]string{rst[2:]}
		case -1:
			return [][]string{rst, icmp} // the RST for TCP first, the rest fall through
		}
		return [][]string{icmp}
	}
	return [][]string{{"-j", "DROP"}} // drop and deny
}

// matches is one iptables match per source and destination prefix pair of
// r's family; none if r cannot match that family at all.
func matches(r rules.Rule, v6 bool) [][]string {
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
	case (r.Protocol == 1 || r.Protocol == 58) && r.ICMPType >= 0:
		if v6 != (r.Protocol == 58) {
			return nil // ICMP never travels in IPv6, nor ICMPv6 in IPv4
		}
		icmp := fmt.Sprint(r.ICMPType)
		if r.ICMPCode >= 0 {
			icmp += fmt.Sprint("/", r.ICMPCode)
		}
		if v6 {
			match = append(match, "-p", "icmpv6", "--icmpv6-type", icmp)
		} else {
			match = append(match, "-p", "icmp", "--icmp-type", icmp)
		}
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
			specs = append(specs, spec)
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
