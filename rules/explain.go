package rules

import "fmt"

// Decision is what one stage decided for a packet.
type Decision struct {
	Stage  string   `json:"stage"`
	Rule   string   `json:"rule"` // empty for the stage's default
	At     string   `json:"at,omitempty"`
	Action string   `json:"action"`
	Alerts []string `json:"alerts,omitempty"`
	Why    string   `json:"why"`
}

// Explanation is how a rule set decides a packet or flow: the stateless
// stage, then, unless it dropped the packet, the stateful stage.
type Explanation struct {
	Packet    string     `json:"packet"`
	Decisions []Decision `json:"decisions"`
	Verdict   string     `json:"verdict"`
}

// Explain says which stage and rule decide p, and why, using the compiled
// tables the dataplane uses (so it explains what the dataplane does).
func Explain(rs *RuleSet, t *Tables, p Packet) Explanation {
	ex := Explanation{Packet: describe(p)}
	decide := func(stage Stage, st *StageTables) Action {
		rules := rs.Rules(stage)
		i, alerts := st.Lookup(p)
		d := Decision{Stage: stage.String()}
		for _, a := range alerts {
			d.Alerts = append(d.Alerts, rules[a].ID)
		}
		var act Action
		if i < 0 {
			act = st.Default
			d.Why = fmt.Sprintf("no %s rule matches; the stage's default applies", stage)
			if len(rules) == 0 {
				d.Why = fmt.Sprintf("no %s rules are loaded", stage)
			}
		} else {
			r := &rules[i]
			act, d.Rule, d.At = r.Action, r.ID, r.Pos.String()
			d.Why = fmt.Sprintf("first %s rule in priority order (priority %d) matching %s", stage, r.Priority, matchedFields(r))
		}
		d.Action = act.String()
		ex.Decisions = append(ex.Decisions, d)
		return act
	}
	if decide(Stateless, t.Stateless) == Drop {
		ex.Verdict = "dropped by the stateless stage"
		return ex
	}
	switch decide(Stateful, t.Stateful) {
	case Allow:
		ex.Verdict = "the flow is allowed; its replies need no rule"
	case Reject:
		ex.Verdict = "rejected: a TCP RST or ICMP unreachable goes back to the sender"
	default:
		ex.Verdict = "denied: dropped"
	}
	return ex
}

func matchedFields(r *Rule) string {
	var parts []string
	if len(r.Src) > 0 {
		parts = append(parts, "source")
	}
	if len(r.Dst) > 0 {
		parts = append(parts, "destination")
	}
	if r.Protocol >= 0 {
		parts = append(parts, "protocol")
	}
	if r.SrcPorts != nil || r.DstPorts != nil {
		parts = append(parts, "ports")
	}
	if r.ICMPType >= 0 {
		parts = append(parts, "ICMP type")
	}
	if r.Direction != AnyDirection {
		parts = append(parts, "direction "+r.Direction.String())
	}
	if len(parts) == 0 {
		return "anything"
	}
	s := parts[0]
	for _, p := range parts[1:] {
		s += ", " + p
	}
	return s
}

func describe(p Packet) string {
	proto := map[uint8]string{6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6"}[p.Protocol]
	if proto == "" {
		proto = fmt.Sprint("protocol ", p.Protocol)
	}
	switch {
	case p.HasPorts:
		return fmt.Sprintf("%s %s:%d -> %s:%d (%s)", proto, p.Src, p.SrcPort, p.Dst, p.DstPort, p.Direction)
	case p.IsICMP:
		return fmt.Sprintf("%s %s -> %s type %d code %d (%s)", proto, p.Src, p.Dst, p.ICMPType, p.ICMPCode, p.Direction)
	}
	return fmt.Sprintf("%s %s -> %s (%s)", proto, p.Src, p.Dst, p.Direction)
}
