package rules

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// DNAT is an inbound NAT rule (port forwarding), from a rule file's dnat
// section, as Azure Load Balancer inbound NAT rules and Azure Firewall DNAT
// rules have them:
//
//	dnat:
//	  - id: jump-box-ssh
//	    external: snat          # every SNAT address; or one address
//	    protocol: tcp
//	    port: 50022
//	    to: 198.18.1.4
//	    to_port: 22
//	  - id: game-servers
//	    external: 198.19.0.1
//	    protocol: udp
//	    ports: 60000-60009      # maps 1:1 onto 7000-7009
//	    to: 198.18.1.5
//	    to_port: 7000
//
// The stateful rules judge a forwarded flow on its translated destination:
// with a rule set, a forward needs a rule allowing its target.
type DNAT struct {
	ID  string
	Pos Pos
	// External is the appliance's address; invalid when ExternalSNAT.
	External netip.Addr
	// ExternalSNAT forwards on every SNAT address (external: snat).
	ExternalSNAT bool
	Protocol     uint8 // 6 or 17
	Ports        PortRange
	To           netip.Addr
	// ToPort is the target port of Ports.Lo; the range maps 1:1.
	ToPort uint16
}

// ToPorts is the target's port range.
func (d DNAT) ToPorts() PortRange {
	return PortRange{d.ToPort, d.ToPort + (d.Ports.Hi - d.Ports.Lo)}
}

// ExternalString is the external side as written: an address, or "snat".
func (d DNAT) ExternalString() string {
	if d.ExternalSNAT {
		return "snat"
	}
	return d.External.String()
}

// Translate is where the forward sends a packet to port, and whether
// port is one of its own.
func (d DNAT) Translate(port uint16) (netip.AddrPort, bool) {
	if port < d.Ports.Lo || port > d.Ports.Hi {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(d.To, d.ToPort+(port-d.Ports.Lo)), true
}

func (p *parser) dnatList(file string, n *yaml.Node) {
	if n.Kind != yaml.SequenceNode {
		p.add(posOf(file, n), "dnat is a list of forwards, each with id, external, protocol, port or ports, to and to_port")
		return
	}
	for _, el := range n.Content {
		p.dnatEntry(file, el)
	}
}

func (p *parser) dnatEntry(file string, n *yaml.Node) {
	d := DNAT{Pos: posOf(file, n)}
	var toPorts *PortRange
	var toPortPos, portPos Pos
	have := map[string]bool{}
	errs := len(p.errs)
	onePort := func(k, v *yaml.Node, what string) (PortRange, bool) {
		have[what] = true
		s, ok := p.scalar(file, v, what)
		if !ok {
			return PortRange{}, false
		}
		lo, hi, isRange := strings.Cut(s, "-")
		a, err1 := strconv.Atoi(strings.TrimSpace(lo))
		b, err2 := a, error(nil)
		if isRange {
			b, err2 = strconv.Atoi(strings.TrimSpace(hi))
		}
		if err1 != nil || err2 != nil || a < 1 || b > 65535 || a > b {
			p.add(posOf(file, v), "%s %q is not a port 1-65535 or a range lo-hi", what, s)
			return PortRange{}, false
		}
		return PortRange{uint16(a), uint16(b)}, true
	}
	p.mapping(file, n, map[string]func(k, v *yaml.Node){
		"id": func(k, v *yaml.Node) {
			have["id"] = true
			if s, ok := p.scalar(file, v, "id"); ok {
				if s == "" {
					p.add(posOf(file, v), "empty id")
				}
				d.ID = s
			}
		},
		"description": func(k, v *yaml.Node) { p.scalar(file, v, "description") },
		"external": func(k, v *yaml.Node) {
			have["external"] = true
			s, ok := p.scalar(file, v, "external")
			if !ok {
				return
			}
			if s == "snat" {
				d.ExternalSNAT = true
				return
			}
			a, err := netip.ParseAddr(s)
			if err != nil || !a.Is4() {
				p.add(posOf(file, v), "external %q is not an IPv4 address or snat (every SNAT address)", s)
				return
			}
			d.External = a
		},
		"protocol": func(k, v *yaml.Node) {
			have["protocol"] = true
			s, ok := p.scalar(file, v, "protocol")
			if !ok {
				return
			}
			switch strings.ToLower(s) {
			case "tcp":
				d.Protocol = 6
			case "udp":
				d.Protocol = 17
			default:
				p.add(posOf(file, v), "protocol %q: a forward is tcp or udp", s)
			}
		},
		"port": func(k, v *yaml.Node) {
			portPos = posOf(file, k)
			if r, ok := onePort(k, v, "port"); ok {
				if r.Lo != r.Hi {
					p.add(posOf(file, v), "port %q is a range: write ports", v.Value)
				}
				d.Ports = r
			}
		},
		"ports": func(k, v *yaml.Node) {
			portPos = posOf(file, k)
			if r, ok := onePort(k, v, "ports"); ok {
				d.Ports = r
			}
		},
		"to": func(k, v *yaml.Node) {
			have["to"] = true
			s, ok := p.scalar(file, v, "to")
			if !ok {
				return
			}
			a, err := netip.ParseAddr(s)
			if err != nil || !a.Is4() {
				p.add(posOf(file, v), "to %q is not an IPv4 address", s)
				return
			}
			d.To = a
		},
		"to_port": func(k, v *yaml.Node) {
			toPortPos = posOf(file, v)
			if r, ok := onePort(k, v, "to_port"); ok {
				toPorts = &r
			}
		},
	})
	if n.Kind != yaml.MappingNode {
		return
	}
	for _, key := range []string{"id", "external", "protocol", "to"} {
		if !have[key] {
			p.add(d.Pos, "forward %q: %s is required", d.ID, key)
		}
	}
	if have["port"] && have["ports"] {
		p.add(portPos, "forward %q: port and ports both set", d.ID)
	} else if !have["port"] && !have["ports"] {
		p.add(d.Pos, "forward %q: port (or ports, a range) is required", d.ID)
	}
	if len(p.errs) > errs {
		return
	}
	d.ToPort = d.Ports.Lo
	if toPorts != nil {
		// A range target names its length: it must be the range's.
		if toPorts.Hi != toPorts.Lo && toPorts.Hi-toPorts.Lo != d.Ports.Hi-d.Ports.Lo {
			p.add(toPortPos, "forward %q: to_port %d-%d has %d ports, the external range %d-%d has %d",
				d.ID, toPorts.Lo, toPorts.Hi, int(toPorts.Hi-toPorts.Lo)+1, d.Ports.Lo, d.Ports.Hi, int(d.Ports.Hi-d.Ports.Lo)+1)
			return
		}
		if int(toPorts.Lo)+int(d.Ports.Hi-d.Ports.Lo) > 65535 {
			p.add(toPortPos, "forward %q: to_port %d plus the range's %d ports runs past 65535", d.ID, toPorts.Lo, int(d.Ports.Hi-d.Ports.Lo)+1)
			return
		}
		d.ToPort = toPorts.Lo
	}
	p.dnat = append(p.dnat, d)
}

// resolveDNAT checks the forwards against each other and the inside
// networks, and puts them in rs in file order.
func (p *parser) resolveDNAT(rs *RuleSet, opts Options) {
	rs.dnatInside = opts.Inside
	ids := map[string]Pos{}
	for i, d := range p.dnat {
		if prev, dup := ids[d.ID]; dup {
			p.add(d.Pos, "forward id %q is already used at %s", d.ID, prev)
		} else {
			ids[d.ID] = d.Pos
		}
		if len(opts.Inside) == 0 {
			p.add(d.Pos, "forward %q: its target must be inside, and inside_networks is not configured", d.ID)
		} else if !containsAddr(opts.Inside, d.To) {
			p.add(d.Pos, "forward %q: target %s is not inside (inside_networks): a forward reaches an inside host", d.ID, d.To)
		}
		if !d.ExternalSNAT && containsAddr(opts.Inside, d.External) {
			p.add(d.Pos, "forward %q: external %s is inside: an external address is one outside hosts reach", d.ID, d.External)
		}
		for _, e := range p.dnat[:i] {
			if e.Protocol != d.Protocol || e.Ports.Hi < d.Ports.Lo || d.Ports.Hi < e.Ports.Lo {
				continue
			}
			if dnatSameExternal(e, d, opts.SNATAddresses) {
				p.add(d.Pos, "forward %q: %s %s ports %d-%d overlap forward %q at %s",
					d.ID, d.ExternalString(), protoName(d.Protocol), d.Ports.Lo, d.Ports.Hi, e.ID, e.Pos)
			}
		}
		rs.DNAT = append(rs.DNAT, d)
	}
}

// dnatSameExternal is whether two forwards may share an external address:
// snat stands for every SNAT address (all of them, when they are not known).
func dnatSameExternal(a, b DNAT, snat []netip.Addr) bool {
	switch {
	case a.ExternalSNAT && b.ExternalSNAT:
		return true
	case a.ExternalSNAT:
		return len(snat) == 0 || containsAddrList(snat, b.External)
	case b.ExternalSNAT:
		return len(snat) == 0 || containsAddrList(snat, a.External)
	}
	return a.External == b.External
}

func containsAddr(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func containsAddrList(as []netip.Addr, a netip.Addr) bool {
	for _, x := range as {
		if x == a {
			return true
		}
	}
	return false
}

func protoName(p uint8) string {
	if p == 6 {
		return "tcp"
	}
	return "udp"
}

// ExpandDNAT is ds for the dataplane: snat expanded to snatAddrs. It fails
// when a forward names snat and there are none.
func ExpandDNAT(ds []DNAT, snatAddrs []netip.Addr) ([]DNAT, error) {
	var out []DNAT
	for _, d := range ds {
		if !d.ExternalSNAT {
			out = append(out, d)
			continue
		}
		if len(snatAddrs) == 0 {
			return nil, fmt.Errorf("%s: forward %q: external snat, but snat is not enabled", d.Pos, d.ID)
		}
		for _, a := range snatAddrs {
			e := d
			e.ExternalSNAT, e.External = false, a
			out = append(out, e)
		}
	}
	return out, nil
}

// Forward is the forward that takes p, and where it sends p; snat is what
// external: snat stands for (nil: any address).
func (rs *RuleSet) Forward(p Packet, snat []netip.Addr) (DNAT, netip.AddrPort, bool) {
	if !p.HasPorts || !p.Dst.Is4() {
		return DNAT{}, netip.AddrPort{}, false
	}
	for _, d := range rs.DNAT {
		if d.Protocol != p.Protocol {
			continue
		}
		if d.ExternalSNAT && len(snat) > 0 && !containsAddrList(snat, p.Dst) || !d.ExternalSNAT && d.External != p.Dst {
			continue
		}
		if to, ok := d.Translate(p.DstPort); ok {
			return d, to, true
		}
	}
	return DNAT{}, netip.AddrPort{}, false
}

// ExplainForwarded is ExplainFlow through the forwards, as the dataplane
// decides: the stateless stage sees the packet as sent, the stateful stage
// the translated destination, inbound (east-west from an inside source,
// a hairpin, whatever direction p says). Without a forward for p it is ExplainFlow.
func ExplainForwarded(rs *RuleSet, t *Tables, p Packet, snat []netip.Addr, info *L7Info) Explanation {
	d, to, ok := rs.Forward(p, snat)
	if !ok {
		return ExplainFlow(rs, t, p, info)
	}
	fwd := Decision{Stage: "dnat", Rule: d.ID, At: d.Pos.String(), Action: "forward",
		Why: fmt.Sprintf("forward %s %s:%d-%d to %s:%d-%d; the stateful rules see the translated destination",
			protoName(d.Protocol), d.ExternalString(), d.Ports.Lo, d.Ports.Hi, d.To, d.ToPorts().Lo, d.ToPorts().Hi)}
	sent := ExplainFlow(rs, t, p, info)
	if len(sent.Decisions) == 0 || sent.Decisions[0].Action == Drop.String() {
		sent.Decisions = append(sent.Decisions[:min(1, len(sent.Decisions))], fwd)
		return sent
	}
	q := p
	q.Dst, q.DstPort = to.Addr(), to.Port()
	// The dataplane's zone, whatever direction the caller assumed: the
	// target is inside, so the source decides.
	q.Direction = Inbound
	if containsAddr(rs.dnatInside, p.Src) {
		q.Direction = EastWest
	}
	ex := ExplainFlow(rs, t, q, info)
	ex.Packet = sent.Packet + ", forwarded to " + to.String() + " (" + q.Direction.String() + ")"
	ex.Decisions = append([]Decision{sent.Decisions[0], fwd}, ex.Decisions[1:]...)
	return ex
}
