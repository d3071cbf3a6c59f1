package controlplane

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/natwall/natwall/rules"
)

// reloadBenchRules is test/reload_bench_test.go's rule file: n stateless
// and n stateful rules, each a /32 and one destination port.
func reloadBenchRules(n, port int) string {
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

// BenchmarkPrepareCommit30000Rules is the control plane's share of a
// reload of 15,000 + 15,000 rules, without the kernel: read, parse,
// compile, save the rule ids and the live set. On demand:
// go test -run '^$' -bench PrepareCommit ./controlplane/
func BenchmarkPrepareCommit30000Rules(b *testing.B) {
	dir := b.TempDir()
	file := filepath.Join(dir, "rules.yaml")
	l := &ruleLoader{stateDir: filepath.Join(dir, "state"), apply: func(_, _ *rules.StageTables) error { return nil }}
	i := 0
	for b.Loop() {
		b.StopTimer()
		if err := os.WriteFile(file, []byte(reloadBenchRules(15000, 1000+i%2)), 0o600); err != nil {
			b.Fatal(err)
		}
		i++
		b.StartTimer()
		p, err := l.prepare([]string{file}, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := l.commit(p); err != nil {
			b.Fatal(err)
		}
	}
}
