package rules

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
)

// Warning is a lint finding: legal, but probably not what was meant.
type Warning struct {
	Pos  Pos    `json:"-"`
	At   string `json:"at"`
	Rule string `json:"rule"`
	Msg  string `json:"message"`
}

func (w Warning) String() string { return fmt.Sprintf("%s: warning: %s", w.Pos, w.Msg) }

// Lint finds rules that can never match because one earlier rule of their
// stage covers all their traffic, rules identical in their matches to an
// earlier one, and allow rules as broad as any to any. Shadowing by the
// union of several earlier rules is not detected.
func Lint(rs *RuleSet) []Warning {
	var out []Warning
	warn := func(r *Rule, format string, args ...any) {
		out = append(out, Warning{Pos: r.Pos, At: r.Pos.String(), Rule: r.ID, Msg: fmt.Sprintf(format, args...)})
	}
	for _, stage := range []Stage{Stateless, Stateful} {
		rules := rs.Rules(stage)
		for i := range rules {
			r := &rules[i]
			for j := 0; j < i; j++ {
				e := &rules[j]
				if e.Action == Alert || e.Audit {
					continue // an alert or audit rule does not decide, so it shadows nothing
				}
				if sameMatch(e, r) {
					warn(r, "rule %q matches exactly what rule %q (%s) matches, which comes first", r.ID, e.ID, e.Pos)
					break
				}
				if covers(e, r) {
					warn(r, "rule %q can never match: rule %q (%s) comes first and matches all its traffic", r.ID, e.ID, e.Pos)
					break
				}
			}
			if r.Action == Allow && anyAddress(r.Src) && anyAddress(r.Dst) && r.Protocol < 0 && r.Direction == AnyDirection && r.L7 == nil {
				warn(r, "rule %q allows everything from anywhere to anywhere", r.ID)
			}
		}
	}
	return out
}

// anyAddress reports whether ps matches every address of a family: left
// out, or written as any, 0.0.0.0/0 or ::/0.
func anyAddress(ps []netip.Prefix) bool {
	return len(ps) == 0 || slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Bits() == 0 })
}

func sameMatch(a, b *Rule) bool {
	return covers(a, b) && covers(b, a)
}

// covers reports whether every packet b matches, a matches too. A rule
// with an L7 condition covers only rules whose every condition it has, or
// covers by matching the whole protocol.
func covers(a, b *Rule) bool {
	return l7Covers(a.L7, b.L7) && prefixesCover(a.Src, b.Src) && prefixesCover(a.Dst, b.Dst) &&
		(a.Protocol < 0 || a.Protocol == b.Protocol) &&
		portsCover(a.SrcPorts, b.SrcPorts, a.DstPorts != nil || b.DstPorts != nil) &&
		portsCover(a.DstPorts, b.DstPorts, a.SrcPorts != nil || b.SrcPorts != nil) &&
		(a.SrcPorts == nil && a.DstPorts == nil || b.SrcPorts != nil || b.DstPorts != nil) &&
		(a.ICMPType < 0 || a.ICMPType == b.ICMPType) && (a.ICMPCode < 0 || a.ICMPCode == b.ICMPCode) &&
		(a.Direction == AnyDirection || a.Direction == b.Direction)
}

func l7Covers(a, b []L7Cond) bool {
	if a == nil {
		return true
	}
	if b == nil {
		return false
	}
	for i := range b {
		if !slices.ContainsFunc(a, func(c L7Cond) bool {
			whole := len(c.Contents) == 0 && c.BSize < 0
			return (whole && c.Proto == b[i].Proto) || reflect.DeepEqual(c, b[i])
		}) {
			return false
		}
	}
	return true
}

func prefixesCover(a, b []netip.Prefix) bool {
	if len(a) == 0 {
		return true
	}
	if len(b) == 0 {
		return false
	}
	for _, q := range b {
		if !slices.ContainsFunc(a, func(p netip.Prefix) bool { return p.Bits() <= q.Bits() && p.Contains(q.Addr()) }) {
			return false
		}
	}
	return true
}

func portsCover(a, b []PortRange, _ bool) bool {
	if a == nil {
		return true
	}
	if b == nil {
		return false
	}
	for _, q := range b {
		if !slices.ContainsFunc(a, func(p PortRange) bool { return p.Lo <= q.Lo && q.Hi <= p.Hi }) {
			return false
		}
	}
	return true
}
