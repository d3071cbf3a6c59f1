package test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/natwall/natwall/rules"
	"github.com/natwall/natwall/test/lab"
	"github.com/natwall/natwall/test/reference"
)

// ruleLoadSet is a rule file of n stateless and n stateful rules, each a
// /32 and one destination port; port varies it so that every load changes
// every rule.
func ruleLoadSet(n, port int) string {
	var s strings.Builder
	s.WriteString("stateless:\n")
	for i := range n {
		fmt.Fprintf(&s, "  - {id: sl%d, priority: %d, action: drop, protocol: tcp, src: [198.19.%d.%d/32], dst_ports: [%d]}\n",
			i, i+1, i/250, i%250+1, port)
	}
	s.WriteString("stateful:\n  default_action: deny\n  rules:\n")
	for i := range n {
		fmt.Fprintf(&s, "    - {id: sf%d, priority: %d, action: allow, protocol: udp, dst: [198.19.%d.%d/32], dst_ports: [%d]}\n",
			i, i+1, i/250, i%250+1, port)
	}
	return s.String()
}

// BenchmarkRuleLoad loads the same rule sets, 10,000 and 30,000 rules
// (half stateless, half stateful), into natwall with `natwall reload`
// against a live daemon and into the kernel with iptables-restore, the way
// an operator applies each: a fresh process reads the file, and the call
// returns once the rules are in force. Every iteration changes every rule.
// On demand, side by side (issue 15 item 7):
//
//	go test -run '^$' -bench RuleLoad -benchtime 5x ./test/
func BenchmarkRuleLoad(b *testing.B) {
	for _, total := range []int{10000, 30000} {
		n := total / 2
		b.Run(fmt.Sprintf("natwall-reload/rules=%d", total), func(b *testing.B) {
			l := lab.NewT(b, lab.Options{Shape: lab.TwoNIC})
			dir := b.TempDir()
			ruleFile := filepath.Join(dir, "rules.yaml")
			if err := os.WriteFile(ruleFile, []byte(ruleLoadSet(n, 1000)), 0o600); err != nil {
				b.Fatal(err)
			}
			a := startNatwall(b, l, fmt.Sprintf("state_dir: %s\nreload:\n  watch: false\nrules:\n  paths: [%s]\n", filepath.Join(dir, "state"), ruleFile))
			i := 0
			for b.Loop() {
				b.StopTimer()
				if err := os.WriteFile(ruleFile, []byte(ruleLoadSet(n, 1001+i%2)), 0o600); err != nil {
					b.Fatal(err)
				}
				i++
				b.StartTimer()
				if out, err := exec.Command(natwallBin, "reload", "--socket", a.socket).CombinedOutput(); err != nil {
					b.Fatalf("reload: %v\n%s", err, out)
				}
			}
		})
		b.Run(fmt.Sprintf("iptables-restore/rules=%d", total), func(b *testing.B) {
			ns, err := lab.NewNetNS("iptables")
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { ns.Close() })
			dir := b.TempDir()
			inputs := make([]string, 2)
			for k := range inputs {
				rs, err := rules.Parse([]rules.Source{{Name: "rules.yaml", Data: []byte(ruleLoadSet(n, 1001+k))}}, rules.Options{})
				if err != nil {
					b.Fatal(err)
				}
				text, err := reference.RestoreInput(rs, false)
				if err != nil {
					b.Fatal(err)
				}
				inputs[k] = filepath.Join(dir, fmt.Sprintf("rules-%d.v4", k))
				if err := os.WriteFile(inputs[k], []byte(text), 0o600); err != nil {
					b.Fatal(err)
				}
			}
			i := 0
			for b.Loop() {
				// The shell only redirects the file, as an operator's
				// `iptables-restore < rules` does.
				if out, err := ns.Run(context.Background(), "sh", "-c", "exec iptables-restore < "+inputs[i%2]); err != nil {
					b.Fatalf("iptables-restore: %v\n%s", err, out)
				}
				i++
			}
		})
	}
}
