package rules_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/natwall/natwall/rules"
	"github.com/natwall/natwall/rules/rulestest"
)

// BenchmarkCompile is the control plane's share of a reload: random rule
// sets of N stateful and N stateless rules compiled to classifier tables.
// On demand: go test -run '^$' -bench Compile ./rules/
func BenchmarkCompile(b *testing.B) {
	for _, n := range []int{10, 100, 1000, 10000, 30000} {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			r := rand.New(rand.NewPCG(uint64(n), 8))
			rs := &rules.RuleSet{
				Stateless:       rulestest.RandomRules(r, n, []rules.Action{rules.Drop, rules.Pass}),
				Stateful:        rulestest.RandomRules(r, n, []rules.Action{rules.Allow, rules.Deny, rules.Reject}),
				StatefulDefault: rules.Deny,
			}
			seen := map[string]uint32{}
			ids := func(id string) uint32 {
				if _, ok := seen[id]; !ok {
					seen[id] = uint32(len(seen) + 1)
				}
				return seen[id]
			}
			for b.Loop() {
				if _, err := rules.Compile(rs, ids); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
