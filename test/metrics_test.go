package test

import (
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/natwall/natwall/test/lab"
)

// TestMetricsDocumented scrapes a live daemon with rules and SNAT, after
// traffic: the per-rule counters must count it, `promtool check metrics`
// must find nothing to complain about, and docs/metrics.md must list
// exactly the natwall_* metrics exported.
func TestMetricsDocumented(t *testing.T) {
	l := newLab(t, lab.Options{Shape: lab.TwoNIC})
	dir := t.TempDir()
	ruleFile := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(ruleFile, []byte(`stateless:
  - {id: no-telnet, priority: 10, action: drop, protocol: tcp, dst_ports: [23]}
stateful:
  default_action: deny
  rules:
    - {id: stream, priority: 10, action: allow, protocol: udp, dst_ports: [9000]}
    - {id: ping, priority: 20, action: allow, protocol: icmp}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startNatwall(t, l, natConfig(fmt.Sprintf("state_dir: %s\nrules:\n  paths: [%s]\neve:\n  output: file\n  path: %s\n",
		filepath.Join(dir, "state"), ruleFile, filepath.Join(dir, "eve.json"))))
	client, server := l.Clients[0], l.Servers[0]
	warmUp(t, client.NS, server.IPv4)
	startUDPServer(t, server, 9000)
	conn, err := client.NS.ListenPacket("udp4", netip.AddrPortFrom(client.IPv4, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := udpAsk(conn, netip.AddrPortFrom(server.IPv4, 9000)); err != nil {
		t.Fatal(err)
	}

	var hits float64
	waitFor(t, "the stream rule's hit", func() bool {
		for _, m := range a.metrics(t)["natwall_rule_hits_total"].GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "rule" && lp.GetValue() == "stream" {
					hits = m.GetCounter().GetValue()
				}
			}
		}
		return hits >= 1
	})

	resp, err := a.http.Get("http://" + metricsListen + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	scrape, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	promtool := exec.Command("promtool", "check", "metrics")
	promtool.Stdin = bytes.NewReader(scrape)
	if out, err := promtool.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}

	exported := map[string]bool{}
	for _, line := range strings.Split(string(scrape), "\n") {
		if name, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, _, _ = strings.Cut(name, " ")
			if strings.HasPrefix(name, "natwall_") {
				exported[name] = true
			}
		}
	}
	doc, err := os.ReadFile("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(natwall_[a-z0-9_]+)` \\|").FindAllStringSubmatch(string(doc), -1) {
		documented[m[1]] = true
	}
	var missing, stale []string
	for name := range exported {
		if !documented[name] {
			missing = append(missing, name)
		}
	}
	for name := range documented {
		if !exported[name] {
			stale = append(stale, name)
		}
	}
	slices.Sort(missing)
	slices.Sort(stale)
	if len(missing) > 0 {
		t.Errorf("exported but not in docs/metrics.md: %v", missing)
	}
	if len(stale) > 0 {
		t.Errorf("in docs/metrics.md but not exported: %v", stale)
	}
}
