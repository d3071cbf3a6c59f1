package rules

import (
	"fmt"
	"net/netip"
	"slices"
	"unsafe"
)

// MaxRulesPerStage is the classifier's capacity per stage.
const MaxRulesPerStage = 32768

// Reserved stable ids for the two stages' default actions.
const (
	StatelessDefaultID = 1
	StatefulDefaultID  = 2
)

// Zones, as the dataplane numbers them (enum nw_zone).
var zoneOf = map[Direction]int{Outbound: 0, Inbound: 1, EastWest: 2, Transit: 3, Local: 4}

// PrefixBV maps the addresses whose longest stored prefix is Prefix to bit
// vector BV.
type PrefixBV struct {
	Prefix netip.Prefix
	BV     uint32
}

// StageTables is one stage compiled for the dataplane's linear bit vector
// search: every field lookup yields the id of a bit vector whose bit i is
// set when rule i (in priority order) matches the packet on that field.
// The packet's matching rules are the AND of its field vectors, and the
// lowest set bit is the first match. The layout is bpf/lib/acl.h's.
type StageTables struct {
	RuleIDs []uint32 // stable id of rule i
	Actions []Action // action of rule i
	// L7 marks the rules with an L7 condition: a flow whose first packet
	// reaches one (before any rule without one decides it) is PENDING,
	// and the inspector resumes evaluation there (StageTables.Resume).
	L7 []bool
	// Flags of rule i: how its decision is reported. An audit rule's
	// action is Alert, its flags FlagAudit.
	Flags []RuleFlags
	// DefaultFlags are the default's; an audit default's action is Allow.
	DefaultFlags RuleFlags
	Default      Action
	DefaultID    uint32
	Bitvectors   [][]uint64 // deduplicated, ceil(rules/64) words each
	Src, Dst     []PrefixBV // includes 0.0.0.0/0 and ::/0
	Proto        [256]uint32
	SrcPort      [65536]uint32 // TCP and UDP
	DstPort      [65536]uint32
	NoPort       uint32        // packets without ports
	ICMP         [65536]uint32 // type<<8 | code
	NoICMP       uint32        // packets that are not ICMP
	Zone         [8]uint32
}

// RuleFlags say how a stateful rule's decision is reported, as bpf/lib/types.h's
// enum nw_acl_rule_flags.
type RuleFlags uint8

const (
	// FlagLog: a deny or reject decision emits an alert event.
	FlagLog RuleFlags = 1 << 0
	// FlagAudit: what the rule (or default) would deny is reported, and
	// evaluation goes on (a rule) or the flow is allowed (the default).
	FlagAudit RuleFlags = 1 << 1
)

// Tables is a whole rule set compiled.
type Tables struct {
	Stateless, Stateful *StageTables
}

// IDFunc gives a rule's stable numeric id from its string id. The daemon
// keeps the mapping across reloads, so counters follow rules.
type IDFunc func(id string) uint32

// Compile builds the classifier tables of rs.
func Compile(rs *RuleSet, ids IDFunc) (*Tables, error) {
	t := &Tables{}
	var err error
	if t.Stateless, err = compileStage(rs.Stateless, Pass, StatelessDefaultID, ids); err != nil {
		return nil, fmt.Errorf("stateless: %w", err)
	}
	if t.Stateful, err = compileStage(rs.Stateful, rs.StatefulDefault, StatefulDefaultID, ids); err != nil {
		return nil, fmt.Errorf("stateful: %w", err)
	}
	switch {
	case rs.DefaultAudit():
		t.Stateful.Default, t.Stateful.DefaultFlags = Allow, FlagAudit
	case rs.DefaultLog && rs.StatefulDefault != Allow:
		t.Stateful.DefaultFlags = FlagLog
	}
	return t, nil
}

// bvBuilder interns the stage's vectors: equal vectors share one id. The
// callers build each vector in a scratch buffer they reuse; intern copies
// it only when it is new, into slabs, so a stage's thousands of vectors
// cost a few allocations.
type bvBuilder struct {
	words int
	ids   map[string]uint32
	st    *StageTables
	slab  []uint64
}

// vectorsPerSlab bounds the memory a slab holds beyond the stage's need.
const vectorsPerSlab = 256

func vectorKey(bv []uint64) string {
	if len(bv) == 0 {
		return ""
	}
	return unsafe.String((*byte)(unsafe.Pointer(&bv[0])), len(bv)*8)
}

func (b *bvBuilder) intern(bv []uint64) uint32 {
	if id, ok := b.ids[vectorKey(bv)]; ok {
		return id
	}
	if len(b.slab) < len(bv) {
		b.slab = make([]uint64, len(bv)*vectorsPerSlab)
	}
	owned := b.slab[:len(bv):len(bv)]
	b.slab = b.slab[len(bv):]
	copy(owned, bv)
	id := uint32(len(b.st.Bitvectors))
	b.st.Bitvectors = append(b.st.Bitvectors, owned)
	b.ids[vectorKey(owned)] = id
	return id
}

func set(bv []uint64, i int)   { bv[i/64] |= 1 << (i % 64) }
func unset(bv []uint64, i int) { bv[i/64] &^= 1 << (i % 64) }

func compileStage(rules []Rule, def Action, defID uint32, ids IDFunc) (*StageTables, error) {
	if len(rules) > MaxRulesPerStage {
		return nil, fmt.Errorf("%d rules, at most %d", len(rules), MaxRulesPerStage)
	}
	words := (len(rules) + 63) / 64
	st := &StageTables{Default: def, DefaultID: defID}
	b := &bvBuilder{words: words, ids: map[string]uint32{}, st: st}
	for _, r := range rules {
		st.RuleIDs = append(st.RuleIDs, ids(r.ID))
		action, flags := r.Action, RuleFlags(0)
		switch {
		case r.Audit && r.L7 == nil:
			action, flags = Alert, FlagAudit
		case r.Log:
			flags = FlagLog
		}
		st.Actions = append(st.Actions, action)
		st.Flags = append(st.Flags, flags)
		st.L7 = append(st.L7, r.L7 != nil)
	}
	st.Src = compileAddrs(b, rules, func(r *Rule) []netip.Prefix { return r.Src })
	st.Dst = compileAddrs(b, rules, func(r *Rule) []netip.Prefix { return r.Dst })

	// Protocol: the rules of any protocol, plus those of this one.
	anyProto := make([]uint64, words)
	var byProto [256][]int
	for i, r := range rules {
		switch {
		case r.Protocol < 0:
			set(anyProto, i)
		case r.Protocol < 256:
			byProto[r.Protocol] = append(byProto[r.Protocol], i)
		}
	}
	scratch := make([]uint64, words)
	withRules := func(base []uint64, idx []int) uint32 {
		copy(scratch, base)
		for _, i := range idx {
			set(scratch, i)
		}
		return b.intern(scratch)
	}
	for v := range st.Proto {
		st.Proto[v] = withRules(anyProto, byProto[v])
	}

	// Ports: a rule without ports matches every port and packets without
	// ports; a rule with ports matches only the ports it lists.
	noPort := make([]uint64, words)
	for i, r := range rules {
		if r.SrcPorts == nil && r.DstPorts == nil {
			set(noPort, i)
		}
	}
	st.NoPort = b.intern(noPort)
	compilePorts(b, rules, func(r *Rule) []PortRange { return r.SrcPorts }, &st.SrcPort)
	compilePorts(b, rules, func(r *Rule) []PortRange { return r.DstPorts }, &st.DstPort)

	// ICMP type and code.
	noICMP := make([]uint64, words)
	for i, r := range rules {
		if r.ICMPType < 0 {
			set(noICMP, i)
		}
	}
	st.NoICMP = b.intern(noICMP)
	// A constrained key's vector: the rules without ICMP match, those of
	// its type with any code, and those of its type and code. Keys in
	// order, so the numbering is the same every time.
	type icmpRules struct {
		anyCode []int
		byCode  [256][]int
	}
	var byType [256]*icmpRules
	for i, r := range rules {
		if r.ICMPType < 0 {
			continue
		}
		t := byType[r.ICMPType]
		if t == nil {
			t = &icmpRules{}
			byType[r.ICMPType] = t
		}
		switch {
		case r.ICMPCode < 0:
			t.anyCode = append(t.anyCode, i)
		case r.ICMPCode < 256:
			t.byCode[r.ICMPCode] = append(t.byCode[r.ICMPCode], i)
		}
	}
	for k := range st.ICMP {
		st.ICMP[k] = st.NoICMP
	}
	for typ, t := range byType {
		if t == nil {
			continue
		}
		for code, exact := range t.byCode {
			if len(t.anyCode) == 0 && len(exact) == 0 {
				continue
			}
			copy(scratch, noICMP)
			for _, i := range t.anyCode {
				set(scratch, i)
			}
			for _, i := range exact {
				set(scratch, i)
			}
			st.ICMP[typ<<8|code] = b.intern(scratch)
		}
	}

	// Zone.
	anyZone := make([]uint64, words)
	var byZone [len(st.Zone)][]int
	for i, r := range rules {
		if r.Direction == AnyDirection {
			set(anyZone, i)
		} else {
			z := zoneOf[r.Direction]
			byZone[z] = append(byZone[z], i)
		}
	}
	for z := range st.Zone {
		st.Zone[z] = withRules(anyZone, byZone[z])
	}
	return st, nil
}

// compileAddrs gives every stored prefix the vector of the rules that
// contain it. The stored prefixes containing an address form a chain, so
// the longest one's vector holds every rule matching the address.
//
// In the order by address then length, a prefix's stored ancestors precede
// it and every prefix between an ancestor and it lies inside that
// ancestor. One walk with a stack of the current chain therefore finds
// each prefix's parent, and its vector is the parent's plus the rules that
// list exactly this prefix: time and memory linear in the prefixes (times
// the vector length), not in prefixes times rules.
func compileAddrs(b *bvBuilder, rules []Rule, field func(*Rule) []netip.Prefix) []PrefixBV {
	type listing struct {
		prefix netip.Prefix
		rule   int
	}
	listings := make([]listing, 0, 2*len(rules)+2)
	for i := range rules {
		for _, p := range field(&rules[i]) {
			listings = append(listings, listing{p.Masked(), i})
		}
	}
	for _, root := range []netip.Prefix{anyV4, anyV6} {
		listings = append(listings, listing{root, -1})
	}
	// By address then length: a prefix's descendants follow it directly.
	slices.SortFunc(listings, func(x, y listing) int {
		if c := x.prefix.Addr().Compare(y.prefix.Addr()); c != 0 {
			return c
		}
		return x.prefix.Bits() - y.prefix.Bits()
	})

	base := make([]uint64, b.words) // rules that match any address
	for i := range rules {
		if len(field(&rules[i])) == 0 {
			set(base, i)
		}
	}
	// chain[d] is the d-th stored prefix of the current chain and vecs[d]
	// its vector; the buffers are reused as the walk moves on.
	var chain []netip.Prefix
	var vecs [][]uint64
	out := make([]PrefixBV, 0, len(listings))
	for at := 0; at < len(listings); {
		p := listings[at].prefix
		for len(chain) > 0 && !containsPrefix(chain[len(chain)-1], p) {
			chain = chain[:len(chain)-1]
		}
		d := len(chain)
		if d == len(vecs) {
			vecs = append(vecs, make([]uint64, b.words))
		}
		vec := vecs[d]
		if d == 0 {
			copy(vec, base)
		} else {
			copy(vec, vecs[d-1])
		}
		for ; at < len(listings) && listings[at].prefix == p; at++ {
			if r := listings[at].rule; r >= 0 {
				set(vec, r)
			}
		}
		chain = append(chain, p)
		out = append(out, PrefixBV{Prefix: p, BV: b.intern(vec)})
	}
	return out
}

// containsPrefix reports whether outer contains inner (of the same family).
func containsPrefix(outer, inner netip.Prefix) bool {
	return outer.Addr().Is4() == inner.Addr().Is4() && outer.Bits() <= inner.Bits() && outer.Contains(inner.Addr())
}

// compilePorts sweeps the port space once, adding and removing rules at
// range boundaries, so ranges cost nothing per packet.
func compilePorts(b *bvBuilder, rules []Rule, field func(*Rule) []PortRange, out *[65536]uint32) {
	type edge struct {
		at   int
		rule int
		add  bool
	}
	var edges []edge
	cur := make([]uint64, b.words)
	count := make([]int, len(rules)) // overlapping ranges of one rule
	for i := range rules {
		r := &rules[i]
		if r.SrcPorts == nil && r.DstPorts == nil {
			set(cur, i) // no port constraint at all
			continue
		}
		ranges := field(r)
		if ranges == nil {
			set(cur, i) // constrained on the other port field only
			continue
		}
		for _, pr := range ranges {
			edges = append(edges, edge{int(pr.Lo), i, true}, edge{int(pr.Hi) + 1, i, false})
		}
	}
	slices.SortFunc(edges, func(x, y edge) int { return x.at - y.at })
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
				set(cur, ed.rule)
			} else {
				unset(cur, ed.rule)
			}
			changed = true
		}
		if changed {
			id = b.intern(cur)
		}
		out[port] = id
	}
}

// Lookup classifies p in st exactly as the dataplane does: the field
// vectors' AND, first set bit, alert rules reported and skipped. It returns
// the deciding rule's index (-1 for the default) and the alert rules hit.
// It stops at a rule with an L7 condition (st.L7), alert or not: that
// rule makes the flow PENDING.
func (st *StageTables) Lookup(p Packet) (rule int, alerts []int) {
	return st.LookupFrom(p, 0)
}

// LookupFrom is Lookup over the rules from index from on.
func (st *StageTables) LookupFrom(p Packet, from int) (rule int, alerts []int) {
	if len(st.RuleIDs) == 0 || from >= len(st.RuleIDs) {
		return -1, nil
	}
	addr := func(list []PrefixBV, a netip.Addr) uint32 {
		best, bits := uint32(0), -1
		for _, e := range list {
			if e.Prefix.Addr().Is4() == a.Is4() && e.Prefix.Contains(a) && e.Prefix.Bits() > bits {
				best, bits = e.BV, e.Prefix.Bits()
			}
		}
		return best
	}
	ids := []uint32{addr(st.Src, p.Src), addr(st.Dst, p.Dst), st.Proto[p.Protocol], st.NoPort, st.NoPort, st.NoICMP, st.Zone[zoneOf[p.Direction]&7]}
	if p.HasPorts {
		ids[3], ids[4] = st.SrcPort[p.SrcPort], st.DstPort[p.DstPort]
	}
	if p.IsICMP {
		ids[5] = st.ICMP[int(p.ICMPType)<<8|int(p.ICMPCode)]
	}
	for w := from / 64; w < len(st.Bitvectors[0]); w++ {
		acc := ^uint64(0)
		if w == from/64 {
			acc <<= from % 64
		}
		for _, id := range ids {
			acc &= st.Bitvectors[id][w]
		}
		for ; acc != 0; acc &= acc - 1 {
			i := w*64 + trailingZeros(acc)
			if st.Actions[i] == Alert && (st.L7 == nil || !st.L7[i]) {
				alerts = append(alerts, i)
				continue
			}
			return i, alerts
		}
	}
	return -1, alerts
}

func trailingZeros(v uint64) int {
	n := 0
	for v&1 == 0 {
		v >>= 1
		n++
	}
	return n
}

// Matches reports whether rule r matches p: the plain statement of the
// semantics, against which the compiled tables are tested.
func (r *Rule) Matches(p Packet) bool {
	inAny := func(ps []netip.Prefix, a netip.Addr) bool {
		if len(ps) == 0 {
			return true
		}
		for _, q := range ps {
			if q.Contains(a) {
				return true
			}
		}
		return false
	}
	inPorts := func(rs []PortRange, v uint16) bool {
		if rs == nil {
			return true
		}
		for _, pr := range rs {
			if v >= pr.Lo && v <= pr.Hi {
				return true
			}
		}
		return false
	}
	switch {
	case !inAny(r.Src, p.Src), !inAny(r.Dst, p.Dst):
		return false
	case r.Protocol >= 0 && int(p.Protocol) != r.Protocol:
		return false
	case (r.SrcPorts != nil || r.DstPorts != nil) && !p.HasPorts:
		return false
	case p.HasPorts && (!inPorts(r.SrcPorts, p.SrcPort) || !inPorts(r.DstPorts, p.DstPort)):
		return false
	case r.ICMPType >= 0 && (!p.IsICMP || int(p.ICMPType) != r.ICMPType):
		return false
	case r.ICMPCode >= 0 && int(p.ICMPCode) != r.ICMPCode:
		return false
	case r.Direction != AnyDirection && r.Direction != p.Direction:
		return false
	}
	return true
}

// FirstMatch is the reference classifier: the rules in order, one by one.
// Like Lookup, it stops at the first rule with an L7 condition whose
// other fields match.
func FirstMatch(rules []Rule, p Packet) (rule int, alerts []int) {
	for i := range rules {
		if !rules[i].Matches(p) {
			continue
		}
		if rules[i].reports() {
			alerts = append(alerts, i)
			continue
		}
		return i, alerts
	}
	return -1, alerts
}

// ZoneNumber is the dataplane's number for direction d, as flow records
// carry it.
func (d Direction) ZoneNumber() uint8 { return uint8(zoneOf[d]) }
