// Package api is natwall's local API: the daemon serves it over HTTP/JSON
// on a unix socket only root can open, and the CLI is its client. Paths
// are versioned (/v1/...). The server reads the daemon through the small
// provider interfaces below, so that it is tested against the real
// dataplane without the daemon around it.
//
// The wire types here carry no dataplane types: the CLI imports this
// package and never the dataplane.
package api

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/natwall/natwall/rules"
	"github.com/natwall/natwall/rules/l7"
)

// DefaultSocket is where the daemon listens unless api.socket says otherwise.
const DefaultSocket = "/run/natwall/natwall.sock"

// API paths.
const (
	StatusPath    = "/v1/status"
	RulesPath     = "/v1/rules"
	ExplainPath   = "/v1/explain"
	ConntrackPath = "/v1/conntrack"
	FlushPath     = "/v1/conntrack/flush"
	NATPath       = "/v1/nat"
	FlowsPath     = "/v1/flows"
	ReloadPath    = "/v1/reload"
)

// StatusProvider reports the daemon's state.
type StatusProvider interface {
	Status(ctx context.Context) (Status, error)
}

// RulesProvider reads the live rule set.
type RulesProvider interface {
	// Rules is every live rule with its hits, most hit first.
	Rules(ctx context.Context) ([]Rule, error)
	// Explain says how the live rule set decides p.
	Explain(ctx context.Context, p rules.Packet, l7 *rules.L7Info) (rules.Explanation, error)
}

// ConntrackProvider reads and edits the tracked flows.
type ConntrackProvider interface {
	Flows(ctx context.Context, f FlowFilter) ([]Flow, error)
	// Flush deletes the flows f matches and returns how many.
	Flush(ctx context.Context, f FlowFilter) (int, error)
	NAT(ctx context.Context) ([]NATUsage, error)
}

// FlowSource is the live flow event stream. Subscribe's channel is closed
// when ctx is done or the source stops; a subscriber that does not keep up
// loses events (counted in FlowEvent.Lost of the next one it gets), and
// never slows the others or the dataplane.
type FlowSource interface {
	Subscribe(ctx context.Context, f FlowFilter) (<-chan FlowEvent, error)
}

// Reloader applies the rule files again.
type Reloader interface {
	// Reload returns the result, and an error when the set was not
	// applied; the last good set then stays live.
	Reload(ctx context.Context) (ReloadResult, error)
	// LastResult is the last load's result (at start, SIGHUP or the API);
	// its zero value when rules are not configured.
	LastResult() ReloadResult
}

// Status is `natwall status`.
type Status struct {
	Version    string      `json:"version"`
	Interfaces []Interface `json:"interfaces"`
	// RuleGeneration counts the rule sets the dataplane has flipped to.
	RuleGeneration uint32 `json:"rule_generation"`
	// RulePaths are the configured rule files; none for the built-in policy.
	RulePaths []string `json:"rule_paths"`
	// LastReload is nil until the first load of rule files.
	LastReload *ReloadResult `json:"last_reload"`
	FlowTable  TableFill     `json:"flow_table"`
	NAT        []NATUsage    `json:"nat"`
}

// Interface is one NIC natwall is configured for.
type Interface struct {
	Name string `json:"name"`
	// Mode is native or generic.
	Mode string `json:"mode"`
	// FellBack is set when the driver refused native mode.
	FellBack bool `json:"fell_back"`
	Attached bool `json:"attached"`
}

// TableFill is how full the flow tables are.
type TableFill struct {
	FlowsV4  int `json:"flows_v4"`
	FlowsV6  int `json:"flows_v6"`
	Capacity int `json:"capacity"`
}

// NATUsage is the SNAT ports one external address has mapped for one protocol.
type NATUsage struct {
	Address  string `json:"address"`
	Protocol string `json:"protocol"`
	InUse    int    `json:"in_use"`
	Capacity int    `json:"capacity"`
}

// ReloadResult is the outcome of one load of the rule files.
type ReloadResult struct {
	Time time.Time `json:"time"`
	OK   bool      `json:"ok"`
	// Error is why the set was not applied; Errors lists each problem
	// found in the files as file:line:col: reason.
	Error      string   `json:"error,omitempty"`
	Errors     []string `json:"errors,omitempty"`
	Stateless  int      `json:"stateless"`
	Stateful   int      `json:"stateful"`
	Generation uint32   `json:"generation"`
	// Trigger is what asked for the load: start, signal (SIGHUP), files
	// (the config or a rule file changed) or api.
	Trigger string `json:"trigger,omitempty"`
	// Changed names what took effect: rules, settings, log.level.
	Changed []string `json:"changed,omitempty"`
	// NeedsRestart lists the config keys whose new values take effect
	// only at the next start; their old values stay in force.
	NeedsRestart []string `json:"needs_restart,omitempty"`
}

// Rule is one live rule with its hit counters.
type Rule struct {
	ID       string `json:"id"`
	Number   uint32 `json:"number"`
	Stage    string `json:"stage"`
	Priority int    `json:"priority"`
	Action   string `json:"action"`
	At       string `json:"at"`
	// Report is "audit" for a rule in audit mode, "log" for one whose
	// decisions are logged, else empty.
	Report string `json:"report,omitempty"`
	// Hits counts packets for stateless rules, flows for stateful ones.
	Hits  uint64 `json:"hits"`
	Bytes uint64 `json:"bytes,omitempty"`
}

// Flow is one tracked flow. Src and Dst are the initiator's view; ReplySrc
// and ReplyDst are what the responder's packets carry (ReplyDst is the
// SNAT endpoint of a translated flow).
type Flow struct {
	Proto        string    `json:"proto"`
	Src          string    `json:"src"`
	Dst          string    `json:"dst"`
	ReplySrc     string    `json:"reply_src"`
	ReplyDst     string    `json:"reply_dst"`
	TCPState     string    `json:"tcp_state,omitempty"`
	Zone         string    `json:"zone"`
	SNAT         bool      `json:"snat"`
	DNAT         bool      `json:"dnat"`
	RuleID       uint32    `json:"rule_id"`
	Created      time.Time `json:"created"`
	LastSeen     time.Time `json:"last_seen"`
	PacketsOrig  uint64    `json:"packets_orig"`
	BytesOrig    uint64    `json:"bytes_orig"`
	PacketsReply uint64    `json:"packets_reply"`
	BytesReply   uint64    `json:"bytes_reply"`
}

// FlowEvent is a flow's start or end, or an alert, as `natwall flows` tails it.
type FlowEvent struct {
	// Type is flow_start, flow_end or alert.
	Type   string    `json:"type"`
	Time   time.Time `json:"time"`
	Reason string    `json:"reason,omitempty"`
	// ByGC marks flow ends the control plane's collector produced.
	ByGC bool `json:"by_gc,omitempty"`
	// Lost is how many events this subscriber missed before this one.
	Lost uint64 `json:"lost,omitempty"`
	Flow Flow   `json:"flow"`
}

// FlushResult is the answer to a flush.
type FlushResult struct {
	Flushed int `json:"flushed"`
}

// ExplainRequest is the packet `explain --live` asks about.
type ExplainRequest struct {
	Src      netip.Addr `json:"src"`
	Dst      netip.Addr `json:"dst"`
	Protocol uint8      `json:"protocol"`
	SrcPort  uint16     `json:"src_port,omitempty"`
	DstPort  uint16     `json:"dst_port,omitempty"`
	ICMPType uint8      `json:"icmp_type,omitempty"`
	ICMPCode uint8      `json:"icmp_code,omitempty"`
	// Direction is the zone the rules match: "derive" (or empty) for
	// the one the dataplane derives from the endpoints, or a zone's name
	// to ask how the rules would decide the packet in that one.
	Direction string `json:"direction,omitempty"`
	// SNI or Host, when set, is the name a pending flow's first data
	// carries (empty: none); evaluation resumes at the pending rule.
	SNI  *string `json:"sni,omitempty"`
	Host *string `json:"host,omitempty"`
}

// L7 is what the request says a pending flow's first data carries; nil
// when it says nothing.
func (r ExplainRequest) L7() (*rules.L7Info, error) {
	if r.SNI != nil && r.Host != nil {
		return nil, fmt.Errorf("sni and host are exclusive: a flow's first data is TLS or HTTP")
	}
	for _, n := range []struct {
		field string
		value *string
		proto rules.AppProto
	}{{"sni", r.SNI, rules.AppTLS}, {"host", r.Host, rules.AppHTTP}} {
		if n.value == nil {
			continue
		}
		if *n.value == "" {
			return &rules.L7Info{Proto: n.proto}, nil
		}
		name, res := l7.NormalizeString(*n.value)
		switch res {
		case l7.NameIPLiteral:
			return nil, fmt.Errorf("%s %q is an IP address: the inspector denies such a flow before any rule", n.field, *n.value)
		case l7.NameBad:
			return nil, fmt.Errorf("%s %q is not a DNS name: the inspector denies such a flow before any rule", n.field, *n.value)
		}
		return &rules.L7Info{Proto: n.proto, Name: name}, nil
	}
	return nil, nil
}

// DeriveDirection asks explain to derive the direction from the packet's
// endpoints and the inside networks, as the dataplane does.
const DeriveDirection = "derive"

// directions are the directions a packet can be explained for.
var directions = []rules.Direction{rules.Outbound, rules.Inbound, rules.EastWest, rules.Transit, rules.Local}

// Packet is the request as the rule engine sees it; a direction to derive
// is rules.AnyDirection (rules.ExplainPacket derives it).
func (r ExplainRequest) Packet() (rules.Packet, error) {
	p := rules.Packet{Src: r.Src, Dst: r.Dst, Protocol: r.Protocol}
	if !p.Src.IsValid() || !p.Dst.IsValid() {
		return p, fmt.Errorf("src and dst are required")
	}
	if p.Src.Is4() != p.Dst.Is4() {
		// No packet has one: the dataplane parses an IPv4 or an IPv6 header.
		return p, fmt.Errorf("src %s and dst %s are of different address families", p.Src, p.Dst)
	}
	switch p.Protocol {
	case ProtoTCP, ProtoUDP:
		p.HasPorts, p.SrcPort, p.DstPort = true, r.SrcPort, r.DstPort
	case ProtoICMP, ProtoICMPv6:
		p.IsICMP, p.ICMPType, p.ICMPCode = true, r.ICMPType, r.ICMPCode
	}
	if r.Direction == "" || r.Direction == DeriveDirection {
		return p, nil // rules.AnyDirection: derived
	}
	for _, d := range directions {
		if d.String() == r.Direction {
			p.Direction = d
			return p, nil
		}
	}
	return p, fmt.Errorf("direction %q is not derive, outbound, inbound, east-west, transit or local", r.Direction)
}

// Protocol numbers natwall names.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// protocolNames is the one table of protocol names the CLI and API use.
var protocolNames = []struct {
	name string
	num  uint8
}{{"tcp", ProtoTCP}, {"udp", ProtoUDP}, {"icmp", ProtoICMP}, {"icmpv6", ProtoICMPv6}}

// ProtocolName is the protocol's name, or its number.
func ProtocolName(n uint8) string {
	for _, p := range protocolNames {
		if p.num == n {
			return p.name
		}
	}
	return strconv.Itoa(int(n))
}

// ParseProtocol reads a protocol name or number.
func ParseProtocol(s string) (uint8, error) {
	for _, p := range protocolNames {
		if p.name == s {
			return p.num, nil
		}
	}
	v, err := strconv.ParseUint(s, 10, 8)
	if err != nil {
		return 0, fmt.Errorf("%q is not tcp, udp, icmp, icmpv6 or a protocol number", s)
	}
	return uint8(v), nil
}
