package rules_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/natwall/natwall/rules"
	"github.com/natwall/natwall/rules/rulestest"
)

// The compiled tables decide every packet exactly as the rules in order
// do: thousands of random rule sets and packets.
func TestCompiledTablesMatchReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	next := uint32(10)
	ids := func(string) uint32 { next++; return next }
	for set := 0; set < 60; set++ {
		rs := &rules.RuleSet{
			Stateful:        rulestest.RandomRules(r, 1+r.IntN(150), []rules.Action{rules.Allow, rules.Deny, rules.Reject, rules.Alert}),
			StatefulDefault: rules.Deny,
		}
		tbl, err := rules.Compile(rs, ids)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 200; i++ {
			p := rulestest.RandomPacket(r)
			got, gotAlerts := tbl.Stateful.Lookup(p)
			want, wantAlerts := rules.FirstMatch(rs.Stateful, p)
			if got != want || fmt.Sprint(gotAlerts) != fmt.Sprint(wantAlerts) {
				t.Fatalf("set %d packet %+v: tables chose %d alerts %v, reference %d alerts %v", set, p, got, gotAlerts, want, wantAlerts)
			}
		}
	}
}
