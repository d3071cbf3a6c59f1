package controlplane

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/natwall/natwall/rules"
)

// explain --live derives the direction from the daemon's inside networks
// and the host's own addresses, as the dataplane does, when the request
// names none.
func TestLiveExplainDerivesDirection(t *testing.T) {
	dir := t.TempDir()
	ruleFile := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(ruleFile, []byte(`stateful:
  default_action: deny
  rules:
    - {id: web-in, priority: 1, action: allow, direction: inbound, protocol: tcp, dst_ports: [443]}
    - {id: ssh-local, priority: 2, action: allow, direction: local, protocol: tcp, dst_ports: [22]}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	inside := []netip.Prefix{netip.MustParsePrefix("198.18.0.0/16")}
	l := &ruleLoader{paths: []string{ruleFile}, inside: inside, stateDir: filepath.Join(dir, "state"),
		apply: func(sl, sf *rules.StageTables) error { return nil }}
	if _, _, err := l.load(); err != nil {
		t.Fatal(err)
	}
	cfg := Config{RulePaths: []string{ruleFile}, StateDir: l.stateDir, InsideNetworks: inside}
	p := &apiProviders{config: func() Config { return cfg }}
	for _, tc := range []struct {
		dst       string
		dport     uint16
		rule, why string
	}{
		{"198.18.5.20", 443, "web-in", "198.19.7.7 is outside, 198.18.5.20 is inside"},
		// The host's loopback address is the appliance's own.
		{"127.0.0.1", 22, "ssh-local", "local for the stateful stage"},
	} {
		src := netip.MustParseAddr("198.19.7.7")
		ex, err := p.Explain(t.Context(), rules.Packet{Src: src, Dst: netip.MustParseAddr(tc.dst), Protocol: 6, HasPorts: true, SrcPort: 40000, DstPort: tc.dport}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if d := ex.Decisions[len(ex.Decisions)-1]; d.Rule != tc.rule || d.Action != "allow" || !strings.Contains(ex.DirectionWhy, tc.why) {
			t.Errorf("%s: %+v (%s), want rule %s allowing, direction %q", tc.dst, d, ex.DirectionWhy, tc.rule, tc.why)
		}
	}
	local, err := applianceAddrs()
	if err != nil || len(local) == 0 {
		t.Fatalf("the host's addresses: %v, %v", local, err)
	}
	// Each of the host's addresses is the appliance's.
	for _, a := range local {
		if !a.Addr().Is4() {
			continue
		}
		ex, err := p.Explain(t.Context(), rules.Packet{Src: netip.MustParseAddr("198.19.7.7"), Dst: a.Addr(), Protocol: 6, HasPorts: true, DstPort: 22}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if d := ex.Decisions[len(ex.Decisions)-1]; d.Rule != "ssh-local" {
			t.Errorf("ssh to the host's %s: %+v (%s), want ssh-local", a, d, ex.DirectionWhy)
		}
	}
}
