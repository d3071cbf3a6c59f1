package rules_test

// The compiler as it was before the incremental prefix walk (quadratic in
// prefixes × rules), kept as the reference that the fast compiler's output
// is compared with (compile_fast_test.go).

import (
	"fmt"
	"net/netip"
	"sort"
	"unsafe"

	"github.com/natwall/natwall/rules"
)

var (
	referenceAnyV4 = netip.MustParsePrefix("0.0.0.0/0")
	referenceAnyV6 = netip.MustParsePrefix("::/0")
	referenceZone  = map[rules.Direction]int{rules.Outbound: 0, rules.Inbound: 1, rules.EastWest: 2, rules.Transit: 3, rules.Local: 4}
)

// referenceCompile is rules.Compile with the reference stage compiler.
func referenceCompile(rs *rules.RuleSet, ids rules.IDFunc) (*rules.Tables, error) {
	t := &rules.Tables{}
	var err error
	if t.Stateless, err = referenceStage(rs.Stateless, rules.Pass, rules.StatelessDefaultID, ids); err != nil {
		return nil, fmt.Errorf("stateless: %w", err)
	}
	if t.Stateful, err = referenceStage(rs.Stateful, rs.StatefulDefault, rules.StatefulDefaultID, ids); err != nil {
		return nil, fmt.Errorf("stateful: %w", err)
	}
	switch {
	case rs.DefaultAudit():
		t.Stateful.Default, t.Stateful.DefaultFlags = rules.Allow, rules.FlagAudit
	case rs.DefaultLog && rs.StatefulDefault != rules.Allow:
		t.Stateful.DefaultFlags = rules.FlagLog
	}
	return t, nil
}

type referenceBuilder struct {
	words int
	ids   map[string]uint32
	st    *rules.StageTables
}

func (b *referenceBuilder) intern(bv []uint64) uint32 {
	var key string
	if len(bv) > 0 {
		key = unsafe.String((*byte)(unsafe.Pointer(&bv[0])), len(bv)*8)
	}
	if id, ok := b.ids[key]; ok {
		return id
	}
	id := uint32(len(b.st.Bitvectors))
	owned := append([]uint64(nil), bv...)
	b.st.Bitvectors = append(b.st.Bitvectors, owned)
	if len(owned) > 0 {
		key = unsafe.String((*byte)(unsafe.Pointer(&owned[0])), len(owned)*8)
	}
	b.ids[key] = id
	return id
}

func referenceSet(bv []uint64, i int) { bv[i/64] |= 1 << (i % 64) }

func referenceStage(list []rules.Rule, def rules.Action, defID uint32, ids rules.IDFunc) (*rules.StageTables, error) {
	if len(list) > rules.MaxRulesPerStage {
		return nil, fmt.Errorf("%d rules, at most %d", len(list), rules.MaxRulesPerStage)
	}
	words := (len(list) + 63) / 64
	st := &rules.StageTables{Default: def, DefaultID: defID}
	b := &referenceBuilder{words: words, ids: map[string]uint32{}, st: st}
	for _, r := range list {
		st.RuleIDs = append(st.RuleIDs, ids(r.ID))
		action, flags := r.Action, rules.RuleFlags(0)
		switch {
		case r.Audit && r.L7 == nil:
			action, flags = rules.Alert, rules.FlagAudit
		case r.Log:
			flags = rules.FlagLog
		}
		st.Actions = append(st.Actions, action)
		st.Flags = append(st.Flags, flags)
		st.L7 = append(st.L7, r.L7 != nil)
	}
	st.Src = referenceAddrs(b, list, func(r *rules.Rule) []netip.Prefix { return r.Src })
	st.Dst = referenceAddrs(b, list, func(r *rules.Rule) []netip.Prefix { return r.Dst })

	// Protocol.
	anyProto := make([]uint64, words)
	for i, r := range list {
		if r.Protocol < 0 {
			referenceSet(anyProto, i)
		}
	}
	for v := 0; v < 256; v++ {
		bv := append([]uint64(nil), anyProto...)
		for i, r := range list {
			if r.Protocol == v {
				referenceSet(bv, i)
			}
		}
		st.Proto[v] = b.intern(bv)
	}

	// Ports: a rule without ports matches every port and packets without
	// ports; a rule with ports matches only the ports it lists.
	noPort := make([]uint64, words)
	for i, r := range list {
		if r.SrcPorts == nil && r.DstPorts == nil {
			referenceSet(noPort, i)
		}
	}
	st.NoPort = b.intern(noPort)
	referencePorts(b, list, func(r *rules.Rule) []rules.PortRange { return r.SrcPorts }, &st.SrcPort)
	referencePorts(b, list, func(r *rules.Rule) []rules.PortRange { return r.DstPorts }, &st.DstPort)

	// ICMP type and code.
	noICMP := make([]uint64, words)
	for i, r := range list {
		if r.ICMPType < 0 {
			referenceSet(noICMP, i)
		}
	}
	st.NoICMP = b.intern(noICMP)
	constrained := map[int][]int{} // key -> rules
	for i, r := range list {
		if r.ICMPType < 0 {
			continue
		}
		for code := 0; code < 256; code++ {
			if r.ICMPCode < 0 || r.ICMPCode == code {
				k := r.ICMPType<<8 | code
				constrained[k] = append(constrained[k], i)
			}
		}
	}
	for k := range st.ICMP {
		st.ICMP[k] = st.NoICMP
	}
	for k, idx := range constrained {
		bv := append([]uint64(nil), noICMP...)
		for _, i := range idx {
			referenceSet(bv, i)
		}
		st.ICMP[k] = b.intern(bv)
	}

	// Zone.
	for z := range st.Zone {
		bv := make([]uint64, words)
		for i, r := range list {
			if r.Direction == rules.AnyDirection || referenceZone[r.Direction] == z {
				referenceSet(bv, i)
			}
		}
		st.Zone[z] = b.intern(bv)
	}
	return st, nil
}

// referenceAddrs gives every stored prefix the vector of the rules that
// contain it. The stored prefixes containing an address form a chain, so
// the longest one's vector holds every rule matching the address.
func referenceAddrs(b *referenceBuilder, list []rules.Rule, field func(*rules.Rule) []netip.Prefix) []rules.PrefixBV {
	stored := map[netip.Prefix]bool{referenceAnyV4: true, referenceAnyV6: true}
	for i := range list {
		for _, p := range field(&list[i]) {
			stored[p.Masked()] = true
		}
	}
	prefixes := make([]netip.Prefix, 0, len(stored))
	for p := range stored {
		prefixes = append(prefixes, p)
	}
	// By address then length: a prefix's descendants follow it directly.
	sort.Slice(prefixes, func(i, j int) bool {
		if c := prefixes[i].Addr().Compare(prefixes[j].Addr()); c != 0 {
			return c < 0
		}
		return prefixes[i].Bits() < prefixes[j].Bits()
	})
	index := make(map[netip.Prefix]int, len(prefixes))
	for i, p := range prefixes {
		index[p] = i
	}
	base := make([]uint64, b.words) // rules that match any address
	vecs := make([][]uint64, len(prefixes))
	for i := range list {
		if len(field(&list[i])) == 0 {
			referenceSet(base, i)
		}
	}
	for i := range vecs {
		vecs[i] = append([]uint64(nil), base...)
	}
	for i := range list {
		for _, r := range field(&list[i]) {
			r = r.Masked()
			for j := index[r]; j < len(prefixes) && r.Contains(prefixes[j].Addr()) && prefixes[j].Addr().Is4() == r.Addr().Is4(); j++ {
				if prefixes[j].Bits() >= r.Bits() {
					referenceSet(vecs[j], i)
				}
			}
		}
	}
	out := make([]rules.PrefixBV, len(prefixes))
	for i, p := range prefixes {
		out[i] = rules.PrefixBV{Prefix: p, BV: b.intern(vecs[i])}
	}
	return out
}

// referencePorts sweeps the port space once, adding and removing rules at
// range boundaries, so ranges cost nothing per packet.
func referencePorts(b *referenceBuilder, list []rules.Rule, field func(*rules.Rule) []rules.PortRange, out *[65536]uint32) {
	type edge struct {
		at   int
		rule int
		add  bool
	}
	var edges []edge
	cur := make([]uint64, b.words)
	count := make([]int, len(list)) // overlapping ranges of one rule
	for i := range list {
		r := &list[i]
		if r.SrcPorts == nil && r.DstPorts == nil {
			referenceSet(cur, i) // no port constraint at all
			continue
		}
		ranges := field(r)
		if ranges == nil {
			referenceSet(cur, i) // constrained on the other port field only
			continue
		}
		for _, pr := range ranges {
			edges = append(edges, edge{int(pr.Lo), i, true}, edge{int(pr.Hi) + 1, i, false})
		}
	}
	sort.Slice(edges, func(i, j int) bool { return edges[i].at < edges[j].at })
	e := 0
	id := b.intern(cur)
	for port := 0; port < 65536; port++ {
		changed := false
		for ; e < len(edges) && edges[e].at == port; e++ {
			ed := edges[e]
			if ed.add {
				count[ed.rule]++
			} else {
				count[ed.rule]--
			}
			if count[ed.rule] > 0 {
				referenceSet(cur, ed.rule)
			} else {
				cur[ed.rule/64] &^= 1 << (ed.rule % 64)
			}
			changed = true
		}
		if changed {
			id = b.intern(cur)
		}
		out[port] = id
	}
}
