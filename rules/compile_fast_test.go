package rules_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"testing"

	"github.com/natwall/natwall/rules"
	"github.com/natwall/natwall/rules/rulestest"
)

// canonical renumbers st's vectors in the order the fields first use them,
// so two compilers that intern in different orders compare equal exactly
// when every field entry resolves to the same vector. It fails when st
// holds a vector twice or one no field uses: the dataplane's table is
// sized by len(Bitvectors), and interning must deduplicate.
func canonical(t *testing.T, st *rules.StageTables) *rules.StageTables {
	t.Helper()
	seen := map[string]bool{}
	for i, bv := range st.Bitvectors {
		k := fmt.Sprint(bv)
		if seen[k] {
			t.Fatalf("vector %d is stored twice", i)
		}
		seen[k] = true
	}
	c := *st
	c.Bitvectors = nil
	c.Src = append([]rules.PrefixBV(nil), st.Src...)
	c.Dst = append([]rules.PrefixBV(nil), st.Dst...)
	renumber := map[uint32]uint32{}
	use := func(id *uint32) {
		n, ok := renumber[*id]
		if !ok {
			n = uint32(len(c.Bitvectors))
			renumber[*id] = n
			c.Bitvectors = append(c.Bitvectors, st.Bitvectors[*id])
		}
		*id = n
	}
	for i := range c.Src {
		use(&c.Src[i].BV)
	}
	for i := range c.Dst {
		use(&c.Dst[i].BV)
	}
	for i := range c.Proto {
		use(&c.Proto[i])
	}
	use(&c.NoPort)
	for i := range c.SrcPort {
		use(&c.SrcPort[i])
	}
	for i := range c.DstPort {
		use(&c.DstPort[i])
	}
	use(&c.NoICMP)
	for i := range c.ICMP {
		use(&c.ICMP[i])
	}
	for i := range c.Zone {
		use(&c.Zone[i])
	}
	if len(c.Bitvectors) != len(st.Bitvectors) {
		t.Fatalf("%d vectors stored, %d used", len(st.Bitvectors), len(c.Bitvectors))
	}
	return &c
}

// awkwardRules adds to random rules what the generator does not make:
// explicit any-address prefixes, prefixes with host bits set, a prefix
// listed twice in one rule, the same prefix in many rules, ICMP types
// with any code, audit and log flags, and L7 conditions.
func awkwardRules(r *rand.Rand, n int, actions []rules.Action) []rules.Rule {
	list := rulestest.RandomRules(r, n, actions)
	shared := netip.MustParsePrefix("198.18.1.0/24")
	for i := range list {
		ru := &list[i]
		switch r.IntN(8) {
		case 0:
			ru.Src = append(ru.Src, netip.MustParsePrefix("0.0.0.0/0"))
		case 1:
			ru.Dst = append(ru.Dst, netip.MustParsePrefix("::/0"), netip.MustParsePrefix("198.18.0.0/15"))
		case 2:
			ru.Src = append(ru.Src, netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte(r.IntN(4)), byte(r.IntN(256))}), 16+r.IntN(17)))
		case 3:
			if len(ru.Dst) > 0 {
				ru.Dst = append(ru.Dst, ru.Dst[0])
			}
		case 4:
			ru.Src = append(ru.Src, shared)
		case 5:
			ru.Protocol, ru.ICMPType, ru.ICMPCode = 58, 128+r.IntN(2), -1
		case 6:
			ru.L7 = []rules.L7Cond{{DotPrefix: true}}
		}
		ru.Audit = r.IntN(10) == 0
		ru.Log = r.IntN(10) == 0
	}
	return list
}

// The compiler gives the same tables as the reference compiler (the one it
// replaced), up to the numbering of vectors, on random rule sets of many
// sizes, including the word boundaries of the vectors.
func TestCompileMatchesReferenceCompiler(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 7))
	sizes := []int{0, 1, 2, 63, 64, 65, 127, 128, 129, 300, 1000, 2500}
	for set, n := range sizes {
		for variant := 0; variant < 3; variant++ {
			gen := rulestest.RandomRules
			if variant > 0 {
				gen = awkwardRules
			}
			rs := &rules.RuleSet{
				Stateless:       gen(r, n, []rules.Action{rules.Drop, rules.Pass}),
				Stateful:        gen(r, n/2+variant, []rules.Action{rules.Allow, rules.Deny, rules.Reject, rules.Alert}),
				StatefulDefault: []rules.Action{rules.Deny, rules.Reject, rules.Allow}[variant],
				Audit:           variant == 2,
				DefaultLog:      variant == 1,
			}
			ids := func(id string) uint32 { return uint32(len(id)) * 7 }
			got, err := rules.Compile(rs, ids)
			if err != nil {
				t.Fatal(err)
			}
			want, err := referenceCompile(rs, ids)
			if err != nil {
				t.Fatal(err)
			}
			for _, stage := range []struct {
				name      string
				got, want *rules.StageTables
			}{{"stateless", got.Stateless, want.Stateless}, {"stateful", got.Stateful, want.Stateful}} {
				g, w := canonical(t, stage.got), canonical(t, stage.want)
				if !reflect.DeepEqual(g, w) {
					t.Fatalf("set %d (%d rules) variant %d %s: tables differ from the reference compiler's\n%s", set, n, variant, stage.name, firstDifference(g, w))
				}
			}
		}
	}
}

// The compiler's output does not depend on map order: the same rules give
// the same vector numbering every time, so a reload of unchanged rules
// writes the same tables.
func TestCompileIsDeterministic(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 8))
	rs := &rules.RuleSet{
		Stateful:        awkwardRules(r, 700, []rules.Action{rules.Allow, rules.Deny, rules.Alert}),
		StatefulDefault: rules.Deny,
	}
	ids := func(id string) uint32 { return uint32(len(id)) }
	first, err := rules.Compile(rs, ids)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		again, err := rules.Compile(rs, ids)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(first, again) {
			t.Fatalf("compile %d: tables differ from the first compile's\n%s", i, firstDifference(again.Stateful, first.Stateful))
		}
	}
}

func firstDifference(g, w *rules.StageTables) string {
	gv, wv := reflect.ValueOf(g).Elem(), reflect.ValueOf(w).Elem()
	for i := 0; i < gv.NumField(); i++ {
		a, b := gv.Field(i), wv.Field(i)
		if reflect.DeepEqual(a.Interface(), b.Interface()) {
			continue
		}
		if a.Kind() == reflect.Slice || a.Kind() == reflect.Array {
			if a.Len() != b.Len() {
				return fmt.Sprintf("%s: %d entries, want %d", gv.Type().Field(i).Name, a.Len(), b.Len())
			}
			for j := 0; j < a.Len(); j++ {
				if !reflect.DeepEqual(a.Index(j).Interface(), b.Index(j).Interface()) {
					return fmt.Sprintf("%s[%d]: %v, want %v", gv.Type().Field(i).Name, j, a.Index(j).Interface(), b.Index(j).Interface())
				}
			}
		}
		return fmt.Sprintf("%s: %v, want %v", gv.Type().Field(i).Name, a.Interface(), b.Interface())
	}
	return "no field differs"
}
