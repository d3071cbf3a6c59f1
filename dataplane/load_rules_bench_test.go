package dataplane

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/natwall/natwall/rules"
)

// reloadShapedRules are test/reload_bench_test.go's rule set, built
// directly: n stateless drops by source and n stateful allows by
// destination, each a /32 and one destination port.
func reloadShapedRules(n, port int) *rules.RuleSet {
	rs := &rules.RuleSet{StatefulDefault: rules.Deny}
	for i := range n {
		addr := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte(i / 250), byte(i%250 + 1)}), 32)
		ports := []rules.PortRange{{Lo: uint16(port), Hi: uint16(port)}}
		rs.Stateless = append(rs.Stateless, rules.Rule{ID: fmt.Sprint("sl", i), Priority: i + 1, Action: rules.Drop,
			Protocol: 6, ICMPType: -1, ICMPCode: -1, Src: []netip.Prefix{addr}, DstPorts: ports})
		rs.Stateful = append(rs.Stateful, rules.Rule{ID: fmt.Sprint("sf", i), Priority: i + 1, Action: rules.Allow,
			Protocol: 17, ICMPType: -1, ICMPCode: -1, Dst: []netip.Prefix{addr}, DstPorts: ports})
	}
	return rs
}

// BenchmarkLoadRules is the kernel's share of a reload of 15,000 + 15,000
// rules: the idle generation cleared and written, the generation flipped.
// Each iteration takes the next of three sets, so that a generation never
// gets the set it held before, as a reload changes rules.
// On demand (root): go test -run '^$' -bench LoadRules ./dataplane/
func BenchmarkLoadRules(b *testing.B) {
	requireRoot(b)
	spec, err := loadNatwall()
	if err != nil {
		b.Fatal(err)
	}
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinNone
	}
	var objs natwallObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		b.Fatalf("load: %+v", err)
	}
	b.Cleanup(func() { objs.Close() })
	var sets [3]*rules.Tables
	for i := range sets {
		next := uint32(rules.StatefulDefaultID)
		ids := func(string) uint32 { next++; return next }
		if sets[i], err = rules.Compile(reloadShapedRules(15000, 1000+i), ids); err != nil {
			b.Fatal(err)
		}
	}
	// Both generations hold a set, so every load replaces one. The writer
	// remembers what it wrote, as the daemon's does; the first load into
	// each generation walks.
	w := &aclWriter{objs: &objs}
	for _, t := range sets {
		if err := w.load(t.Stateless, t.Stateful); err != nil {
			b.Fatal(err)
		}
	}
	i := 0
	for b.Loop() {
		t := sets[i%len(sets)]
		i++
		if err := w.load(t.Stateless, t.Stateful); err != nil {
			b.Fatal(err)
		}
	}
}
