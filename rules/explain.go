package rules

import "fmt"

// Decision is what one stage decided for a packet.
type Decision struct {
	Stage  string   `json:"stage"`
	Rule   string   `json:"rule"` // empty for the stage's default
	At     string   `json:"at,omitempty"`
	Action string   `json:"action"`
	Alerts []string `json:"alerts,omitempty"`
	// Audit are the audit rules that matched on the way, each with what it
	// would have done ("web-deny: audit: would deny"); evaluation went on.
	Audit []string `json:"audit,omitempty"`
	Why   string   `json:"why"`
	// L7 is the deciding rule's L7 condition, if it has one.
	L7 string `json:"l7,omitempty"`
	// Meta is the deciding rule's Suricata msg, sid and references.
	Meta *RuleMeta `json:"suricata,omitempty"`
	// Reason is, for a decision the dataplane takes itself (stage
	// "dataplane"), the reason counter it counts the packet under.
	Reason string `json:"reason,omitempty"`
}

// Explanation is how a rule set decides a packet or flow: the stateless
// stage, then, unless it dropped the packet, the stateful stage.
type Explanation struct {
	Packet    string     `json:"packet"`
	Decisions []Decision `json:"decisions"`
	Verdict   string     `json:"verdict"`
	// DirectionWhy says where the packet's direction (zone) came from:
	// derived from its endpoints, or given, and then whether the
	// endpoints agree. Empty for ExplainFlow, whose caller names it.
	DirectionWhy string `json:"direction_why,omitempty"`
}

// Explain says which stage and rule decide p, and why, using the compiled
// tables the dataplane uses, with both stages matching p.Direction as
// given. A flow whose first packet reaches a rule with an L7 condition is
// pending. ExplainPacket is what the dataplane does with a packet: zones
// derived from its endpoints, and the decisions taken before the rules.
func Explain(rs *RuleSet, t *Tables, p Packet) Explanation {
	return ExplainFlow(rs, t, p, nil)
}

// ExplainFlow is Explain, and for a flow that is pending, evaluation
// resumed at its rule with what the flow's first data says (info), as the
// inspector does; with a nil info it stops at pending.
func ExplainFlow(rs *RuleSet, t *Tables, p Packet, info *L7Info) Explanation {
	ex := Explanation{Packet: describe(p)}
	if info != nil {
		ex.Packet += ", " + info.String()
	}
	if explainStateless(rs, t, p, &ex) {
		return ex
	}
	explainStateful(rs, t, p, info, &ex)
	return ex
}

func explainDecision(rs *RuleSet, stage Stage, st *StageTables, i int, alerts []int, why string) Decision {
	rules := rs.Rules(stage)
	d := Decision{Stage: stage.String()}
	for _, a := range alerts {
		if r := &rules[a]; r.Audit {
			d.Audit = append(d.Audit, fmt.Sprintf("%s: audit: would %s", r.ID, r.Action))
		} else {
			d.Alerts = append(d.Alerts, r.ID)
		}
	}
	if i < 0 {
		d.Action = st.Default.String()
		d.Why = fmt.Sprintf("no %s rule matches; the stage's default applies", stage)
		if len(rules) == 0 {
			d.Why = fmt.Sprintf("no %s rules are loaded", stage)
		}
		if stage == Stateful && rs.DefaultAudit() && len(d.Audit) == 0 {
			d.Why += fmt.Sprintf("; audit: would %s, so it is reported and the flow is allowed", rs.StatefulDefault)
		}
		return d
	}
	r := &rules[i]
	d.Action, d.Rule, d.At, d.Meta = r.Action.String(), r.ID, r.Pos.String(), r.Meta
	if r.L7 != nil {
		d.L7 = describeL7(r.L7)
	}
	d.Why = fmt.Sprintf(why, stage, r.Priority, matchedFields(r))
	return d
}

const firstMatch = "first %s rule in priority order (priority %d) matching %s"

// explainStateless adds the stateless stage's decision on p, and reports
// whether it dropped p.
func explainStateless(rs *RuleSet, t *Tables, p Packet, ex *Explanation) bool {
	i, alerts := t.Stateless.Lookup(p)
	d := explainDecision(rs, Stateless, t.Stateless, i, alerts, firstMatch)
	ex.Decisions = append(ex.Decisions, d)
	if d.Action == Drop.String() {
		ex.Verdict = "dropped by the stateless stage"
		return true
	}
	return false
}

// explainStateful adds the stateful stage's decisions on p, a flow's
// first packet, and the verdict.
func explainStateful(rs *RuleSet, t *Tables, p Packet, info *L7Info, ex *Explanation) {
	st := t.Stateful
	i, alerts := st.Lookup(p)
	if i < 0 || st.L7 == nil || !st.L7[i] {
		ex.Decisions = append(ex.Decisions, explainDecision(rs, Stateful, st, i, alerts, firstMatch))
		ex.Verdict = verdict(ex.Decisions[len(ex.Decisions)-1].Action)
		return
	}
	d := explainDecision(rs, Stateful, st, i, alerts, firstMatch+"; its L7 condition needs the flow's first data")
	d.Action = "pending"
	ex.Decisions = append(ex.Decisions, d)
	if info == nil {
		ex.Verdict = "pending: the handshake passes and the flow's first data is held until its name decides (see how with --sni or --host)"
		return
	}
	j, more := st.Resume(rs.Stateful, p, i, *info)
	ex.Decisions = append(ex.Decisions, explainDecision(rs, Stateful, st, j, more,
		"evaluation resumed at the pending rule with "+info.String()+": first %s rule from there (priority %d) matching %s and its L7 condition if any"))
	ex.Verdict = verdict(ex.Decisions[len(ex.Decisions)-1].Action)
}

func verdict(action string) string {
	switch action {
	case Allow.String():
		return "the flow is allowed; its replies need no rule"
	case Reject.String():
		return "rejected: a TCP RST or ICMP unreachable goes back to the sender"
	}
	return "denied: dropped"
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
