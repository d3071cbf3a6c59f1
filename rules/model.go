// Package rules is natwall's rule model: the YAML files ops edit in git,
// their validation, and their compilation into the classifier tables the
// dataplane looks up. It is pure Go: no kernel, no network.
//
// A rule set has two stages, as in ../shared/ARCHITECTURE.md §5:
//
//   - stateless rules see every packet, in priority order, first match wins;
//     actions drop, or pass to the stateful stage; default pass.
//   - stateful rules see a flow's first packet, in priority order, first
//     match wins; actions allow, deny, reject (TCP RST, ICMP unreachable),
//     alert (report, then evaluate on); replies of an allowed flow need no
//     rule. The default action is configured; the shipped default is deny.
//
// Example file:
//
//	address_sets:
//	  web-tier: [198.18.10.0/24, 2001:db8:10::/64]
//	stateless:
//	  - id: block-bogon
//	    priority: 100
//	    action: drop
//	    src: [198.18.250.0/24]
//	stateful:
//	  default_action: deny
//	  rules:
//	    - id: web-https
//	      priority: 200
//	      action: allow
//	      direction: outbound
//	      src: [web-tier]
//	      dst: [internet]
//	      protocol: tcp
//	      dst_ports: [443, 8000-8080]
package rules

import (
	"fmt"
	"net/netip"
)

// Pos is where something was written: file, line and column (1-based).
type Pos struct {
	File      string
	Line, Col int
}

func (p Pos) String() string { return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col) }

// Stage is one of the two rule stages.
type Stage int

const (
	Stateless Stage = iota
	Stateful
)

func (s Stage) String() string {
	if s == Stateless {
		return "stateless"
	}
	return "stateful"
}

// Action is what a rule does to what it matches.
type Action int

const (
	Pass   Action = iota + 1 // stateless: on to the stateful stage
	Drop                     // stateless
	Allow                    // stateful
	Deny                     // stateful
	Reject                   // stateful: TCP RST or ICMP unreachable
	Alert                    // stateful: report and evaluate on
)

var actionNames = map[Action]string{Pass: "pass", Drop: "drop", Allow: "allow", Deny: "deny", Reject: "reject", Alert: "alert"}

func (a Action) String() string { return actionNames[a] }

// Direction is how a flow crosses the appliance, from the inside networks.
type Direction int

const (
	AnyDirection Direction = iota
	Outbound               // inside -> outside
	Inbound                // outside -> inside
	EastWest               // inside -> inside
	Transit                // outside -> outside
	Local                  // to the appliance itself
)

var directionNames = map[Direction]string{AnyDirection: "any", Outbound: "outbound", Inbound: "inbound", EastWest: "east-west", Transit: "transit", Local: "local"}

func (d Direction) String() string { return directionNames[d] }

// PortRange is an inclusive range of ports.
type PortRange struct{ Lo, Hi uint16 }

// Rule is one rule, its matches resolved to prefixes.
type Rule struct {
	ID       string
	Priority int
	Action   Action
	Pos      Pos
	// Src and Dst are the addresses matched; nil matches any.
	Src, Dst []netip.Prefix
	// Protocol is the IP protocol number; -1 matches any.
	Protocol int
	// SrcPorts and DstPorts match TCP and UDP ports; nil matches any,
	// including packets without ports. A rule with ports matches only TCP
	// or UDP packets.
	SrcPorts, DstPorts []PortRange
	// ICMPType and ICMPCode match ICMP and ICMPv6; -1 matches any.
	ICMPType, ICMPCode int
	Direction          Direction
	// L7 are a stateful rule's application-layer conditions, any one of
	// which must hold; nil for none. A flow whose first packet reaches
	// such a rule is PENDING: its first data decides.
	L7 []L7Cond
	// Meta is a Suricata rule's msg, sid and references; nil otherwise.
	Meta *RuleMeta
	// Log reports a stateful deny or reject rule's decisions as alert
	// events (log: true).
	Log bool
	// Audit is a deny or reject rule in audit mode (mode: audit, or the
	// policy's audit: true): a match is counted and reported as what it
	// would deny, and evaluation goes on to the next rule, as after an
	// alert rule.
	Audit bool
}

// reports reports whether r reports a match and lets evaluation go on:
// an alert or audit rule without an L7 condition.
func (r *Rule) reports() bool { return (r.Action == Alert || r.Audit) && r.L7 == nil }

// RuleSet is a validated, merged rule set.
type RuleSet struct {
	// Rules of each stage, in priority order (lowest number first).
	Stateless, Stateful []Rule
	// StatefulDefault applies to a first packet no stateful rule decides.
	StatefulDefault Action
	// DefaultPos is where the default was set; zero when not set.
	DefaultPos Pos
	// DNAT are the inbound NAT forwards, in file order.
	DNAT []DNAT
	// dnatInside are the inside networks the set was parsed with: a
	// forwarded flow is east-west from them, inbound from elsewhere.
	dnatInside []netip.Prefix
	// DefaultLog reports the default's deny or reject decisions as alert
	// events (default_log: true).
	DefaultLog bool
	// Audit is the stateful policy's audit mode (audit: true): every deny
	// and reject rule is an audit rule, and a deny or reject default
	// reports what it would deny and allows the flow.
	Audit bool
}

// DefaultAudit reports whether the stateful default is in audit mode: it
// would deny or reject, and allows instead.
func (rs *RuleSet) DefaultAudit() bool {
	return rs.Audit && (rs.StatefulDefault == Deny || rs.StatefulDefault == Reject)
}

// Rules returns a stage's rules.
func (rs *RuleSet) Rules(s Stage) []Rule {
	if s == Stateless {
		return rs.Stateless
	}
	return rs.Stateful
}

// Packet is what the classifier sees of a packet, or of a flow's first one.
type Packet struct {
	Src, Dst         netip.Addr
	Protocol         uint8
	SrcPort, DstPort uint16 // TCP and UDP
	HasPorts         bool
	ICMPType         uint8 // ICMP and ICMPv6
	ICMPCode         uint8
	IsICMP           bool
	Direction        Direction
}

// Built-in address tags.
var (
	azureLB  = netip.MustParsePrefix("168.63.129.16/32")
	metadata = netip.MustParsePrefix("169.254.169.254/32")
	anyV4    = netip.MustParsePrefix("0.0.0.0/0")
	anyV6    = netip.MustParsePrefix("::/0")
)
