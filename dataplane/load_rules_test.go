package dataplane

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/natwall/natwall/rules"
	"github.com/natwall/natwall/rules/rulestest"
)

// A reload writes the idle generation over whatever it held: after rule
// sets that grow, shrink and vanish, each generation's stage holds exactly
// the bit vectors, prefixes and port entries of the set last written to
// it, no fewer and none left from an earlier set (a left prefix would
// classify packets by a vector the new set numbers differently). The
// daemon's writer remembers what it wrote and deletes by that record; a
// writer that remembers nothing, as after a restart, walks the tries.
func TestReloadLeavesOnlyTheLiveTables(t *testing.T) {
	for _, remember := range []bool{true, false} {
		t.Run(fmt.Sprint("remember=", remember), func(t *testing.T) {
			fx := newFibFixture(t)
			r := rand.New(rand.NewPCG(15, 9))
			// -1: no rule set; sameAgain: the set two steps back, into
			// the generation that holds it; oneLess: that set without its
			// last stateless rule.
			const sameAgain, oneLess = -2, -3
			sizes := []int{2000, 40, 0, 700, -1, 1300, 1300, 5, 5, 2000, sameAgain, 600, oneLess, 800, sameAgain}
			var held [2][2]*rules.StageTables // by generation, stage
			var sets []*rules.RuleSet
			w := &aclWriter{objs: &fx.objs}
			for step, n := range sizes {
				var tbl rules.Tables
				var rs *rules.RuleSet
				switch {
				case n >= 0:
					rs = &rules.RuleSet{
						Stateless:       rulestest.RandomRules(r, n, []rules.Action{rules.Drop, rules.Pass}),
						Stateful:        rulestest.RandomRules(r, n/2, []rules.Action{rules.Allow, rules.Deny}),
						StatefulDefault: rules.Deny,
					}
				case n == sameAgain:
					rs = sets[step-2]
				case n == oneLess:
					again := *sets[step-2]
					again.Stateless = again.Stateless[:len(again.Stateless)-1]
					rs = &again
				}
				sets = append(sets, rs)
				if rs != nil {
					next := uint32(rules.StatefulDefaultID)
					compiled, err := rules.Compile(rs, func(string) uint32 { next++; return next })
					if err != nil {
						t.Fatal(err)
					}
					tbl = *compiled
				} // n < 0: no rule set, the built-in policy
				if !remember {
					w = &aclWriter{objs: &fx.objs}
				}
				if err := w.load(tbl.Stateless, tbl.Stateful); err != nil {
					t.Fatalf("step %d: %v", step, err)
				}
				var active uint32
				if err := fx.objs.NwAclGen.Lookup(uint32(0), &active); err != nil {
					t.Fatal(err)
				}
				held[active&1] = [2]*rules.StageTables{tbl.Stateless, tbl.Stateful}
				checkHeldTables(t, step, &fx.objs, held)
				checkHeldPorts(t, step, &fx.objs, held)
			}
		})
	}
}

// checkHeldPorts checks the port and ICMP tables of every stage that
// holds a set: the writer that remembers rewrites only the entries that
// change, so an entry it wrongly skips keeps an old set's vector id.
func checkHeldPorts(t *testing.T, step int, objs *natwallObjects, held [2][2]*rules.StageTables) {
	t.Helper()
	got := make([]uint32, objs.NwAclPorts.MaxEntries())
	keys := make([]uint32, 8192)
	vals := make([]uint32, 8192)
	if err := batchWalk(objs.NwAclPorts, keys, vals, func(k, v *uint32) { got[*k] = *v }); err != nil {
		t.Fatal(err)
	}
	for gen := range held {
		for stage, st := range held[gen] {
			if st == nil {
				continue
			}
			base := uint32(gen)*uint32(natwallNwAclStageNW_ACL_STAGES) + uint32(stage)
			for field, tbl := range []*[65536]uint32{&st.SrcPort, &st.DstPort, &st.ICMP} {
				start := (base*3 + uint32(field)) * 65536
				for i, want := range tbl {
					if got[start+uint32(i)] != want {
						t.Fatalf("step %d gen %d stage %d field %d: entry %d is %d, want %d", step, gen, stage, field, i, got[start+uint32(i)], want)
					}
				}
			}
		}
	}
}

func checkHeldTables(t *testing.T, step int, objs *natwallObjects, held [2][2]*rules.StageTables) {
	t.Helper()
	vectors := map[natwallNwAclBvKey]natwallNwAclBitvec{}
	var k natwallNwAclBvKey
	var v natwallNwAclBitvec
	for it := objs.NwAclBits.Iterate(); it.Next(&k, &v); {
		vectors[k] = v
	}
	prefixes := map[[3]any]uint32{}
	var k4 natwallNwAclLpm4Key
	var k6 natwallNwAclLpm6Key
	var bv uint32
	for it := objs.NwAclLpm4.Iterate(); it.Next(&k4, &bv); {
		a := k4.Addr
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(a), byte(a >> 8), byte(a >> 16), byte(a >> 24)}), int(k4.Prefixlen)-32)
		prefixes[[3]any{k4.Gen, k4.Stage, [2]any{k4.Field, p}}] = bv
	}
	for it := objs.NwAclLpm6.Iterate(); it.Next(&k6, &bv); {
		p := netip.PrefixFrom(netip.AddrFrom16(k6.Addr), int(k6.Prefixlen)-32)
		prefixes[[3]any{k6.Gen, k6.Stage, [2]any{k6.Field, p}}] = bv
	}
	wantVectors, wantPrefixes := 0, 0
	for gen := range held {
		for stage, st := range held[gen] {
			if st == nil {
				continue
			}
			genStage := uint32(gen)<<8 | uint32(stage)
			for id, words := range st.Bitvectors {
				got, ok := vectors[natwallNwAclBvKey{GenStage: genStage, Id: uint32(id)}]
				if !ok {
					t.Fatalf("step %d gen %d stage %d: bit vector %d missing", step, gen, stage, id)
				}
				for w := range got.Words {
					want := uint64(0)
					if w < len(words) {
						want = words[w]
					}
					if got.Words[w] != want {
						t.Fatalf("step %d gen %d stage %d: bit vector %d word %d is %#x, want %#x", step, gen, stage, id, w, got.Words[w], want)
					}
				}
			}
			wantVectors += len(st.Bitvectors)
			for field, list := range [][]rules.PrefixBV{st.Src, st.Dst} {
				f := uint8(natwallNwAclFieldNW_ACL_F_SRC)
				if field == 1 {
					f = uint8(natwallNwAclFieldNW_ACL_F_DST)
				}
				for _, p := range list {
					got, ok := prefixes[[3]any{uint8(gen), uint8(stage), [2]any{f, p.Prefix}}]
					if !ok || got != p.BV {
						t.Fatalf("step %d gen %d stage %d field %d: prefix %s has vector %d (stored %v), want %d", step, gen, stage, f, p.Prefix, got, ok, p.BV)
					}
				}
				wantPrefixes += len(list)
			}
		}
	}
	if len(vectors) != wantVectors {
		t.Fatalf("step %d: %d bit vectors stored, the held sets have %d", step, len(vectors), wantVectors)
	}
	if len(prefixes) != wantPrefixes {
		t.Fatalf("step %d: %d prefixes stored, the held sets have %d", step, len(prefixes), wantPrefixes)
	}
}

// deleteVectorsFrom stops at the first missing id, and deletes every id
// above the kept ones in one or more batches.
func TestDeleteVectorsFrom(t *testing.T) {
	fx := newFibFixture(t)
	m := fx.objs.NwAclBits
	put := func(genStage uint32, ids ...int) {
		for _, id := range ids {
			if err := m.Put(natwallNwAclBvKey{GenStage: genStage, Id: uint32(id)}, natwallNwAclBitvec{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	var many []int
	for id := range 9000 { // more than one batch
		many = append(many, id)
	}
	put(1, many...)
	put(2, 0, 1, 2)
	if err := deleteVectorsFrom(m, 1, 10); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		genStage uint32
		id       int
		want     bool
	}{{1, 0, true}, {1, 9, true}, {1, 10, false}, {1, 4096 + 10, false}, {1, 8999, false}, {2, 0, true}, {2, 2, true}} {
		var v natwallNwAclBitvec
		err := m.Lookup(natwallNwAclBvKey{GenStage: c.genStage, Id: uint32(c.id)}, &v)
		if got := err == nil; got != c.want || (err != nil && !errors.Is(err, ebpf.ErrKeyNotExist)) {
			t.Errorf("stage %d id %d: present %v (%v), want %v", c.genStage, c.id, got, err, c.want)
		}
	}
	if err := deleteVectorsFrom(m, 2, 0); err != nil {
		t.Fatal(err)
	}
	var v natwallNwAclBitvec
	if err := m.Lookup(natwallNwAclBvKey{GenStage: 2, Id: 0}, &v); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Errorf("stage 2 id 0 after deleting from 0: %v", err)
	}
}
