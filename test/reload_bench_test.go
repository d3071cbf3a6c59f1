package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/natwall/natwall/test/lab"
)

// BenchmarkReload30000Rules times `natwall reload` of a 30,000-rule set
// (15,000 stateless, 15,000 stateful) against a live daemon: read,
// validate, compile, swap into the kernel and record, as an operator's
// reload does. Each iteration alternates between two sets so that every
// reload changes the rules.
func BenchmarkReload30000Rules(b *testing.B) {
	l := lab.NewT(b, lab.Options{Shape: lab.TwoNIC})
	dir := b.TempDir()
	ruleFile := filepath.Join(dir, "rules.yaml")
	ruleSet := func(port int) string {
		var s strings.Builder
		s.WriteString("stateless:\n")
		for i := range 15000 {
			fmt.Fprintf(&s, "  - {id: sl%d, priority: %d, action: drop, protocol: tcp, src: [198.19.%d.%d/32], dst_ports: [%d]}\n",
				i, i+1, i/250, i%250+1, port)
		}
		s.WriteString("stateful:\n  default_action: deny\n  rules:\n")
		for i := range 15000 {
			fmt.Fprintf(&s, "    - {id: sf%d, priority: %d, action: allow, protocol: udp, dst: [198.19.%d.%d/32], dst_ports: [%d]}\n",
				i, i+1, i/250, i%250+1, port)
		}
		return s.String()
	}
	if err := os.WriteFile(ruleFile, []byte(ruleSet(1000)), 0o600); err != nil {
		b.Fatal(err)
	}
	a := startNatwall(b, l, fmt.Sprintf("state_dir: %s\nreload:\n  watch: false\nrules:\n  paths: [%s]\n", filepath.Join(dir, "state"), ruleFile))
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		if err := os.WriteFile(ruleFile, []byte(ruleSet(1001+i%2)), 0o600); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		out, err := exec.Command(natwallBin, "reload", "--socket", a.socket).CombinedOutput()
		if err != nil {
			b.Fatalf("reload: %v\n%s", err, out)
		}
	}
}
