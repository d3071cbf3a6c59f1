package controlplane

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/natwall/natwall/dataplane"
	"github.com/natwall/natwall/rules"
)

const dnatRules = `dnat:
  - {id: jump-box-ssh, external: snat, protocol: tcp, port: 50022, to: 198.18.1.4, to_port: 22}
  - {id: games, external: 198.19.0.9, protocol: udp, ports: 60000-60009, to: 198.18.1.5, to_port: 7000}
`

// The rule loader hands the forwards to the dataplane with the rules, snat
// expanded to the SNAT addresses, under numbers that survive reloads.
func TestRuleLoaderForwards(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "rules.yaml")
	var got [][]dataplane.Forward
	l := &ruleLoader{paths: []string{file}, inside: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/16")},
		stateDir: filepath.Join(dir, "state"),
		apply:    func(_, _ *rules.StageTables) error { return nil },
		snat:     []netip.Addr{netip.MustParseAddr("198.19.0.1"), netip.MustParseAddr("198.19.0.2")},
		setForwards: func(fs []dataplane.Forward) error {
			got = append(got, fs)
			return nil
		}}
	must(t, os.WriteFile(file, []byte(dnatRules), 0o600))
	if _, _, err := l.load(); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || len(got[0]) != 3 {
		t.Fatalf("forwards applied: %+v", got)
	}
	fs := got[0]
	if fs[0].External != l.snat[0] || fs[1].External != l.snat[1] || fs[0].ID != fs[1].ID ||
		fs[0].PortMin != 50022 || fs[0].ToPort != 22 || fs[0].To != netip.MustParseAddr("198.18.1.4") {
		t.Fatalf("snat forward expanded to %+v %+v", fs[0], fs[1])
	}
	if fs[2].External != netip.MustParseAddr("198.19.0.9") || fs[2].PortMin != 60000 || fs[2].PortMax != 60009 || fs[2].ToPort != 7000 || fs[2].Proto != 17 {
		t.Fatalf("range forward %+v", fs[2])
	}
	var listed []string
	for _, r := range l.liveRules() {
		if r.Stage == "dnat" {
			listed = append(listed, r.ID)
			if r.ID == "jump-box-ssh" && (r.Number != fs[0].ID || r.Action != "forward" || !strings.HasSuffix(r.At, "rules.yaml:2:5")) {
				t.Fatalf("live forward %+v, want number %d, action forward, at rules.yaml:2:5", r, fs[0].ID)
			}
		}
	}
	if strings.Join(listed, ",") != "jump-box-ssh,games" {
		t.Fatalf("live rules list forwards %v", listed)
	}
	// Reloaded, the numbers stay; emptied, the forwards go.
	if _, _, err := l.load(); err != nil || got[1][0].ID != fs[0].ID || got[1][2].ID != fs[2].ID {
		t.Fatalf("reload: %v, ids %d %d, were %d %d", err, got[1][0].ID, got[1][2].ID, fs[0].ID, fs[2].ID)
	}
	must(t, os.WriteFile(file, []byte("{}\n"), 0o600))
	if _, _, err := l.load(); err != nil || len(got[2]) != 0 {
		t.Fatalf("emptied: %v, %+v", err, got[2])
	}

	// snat with SNAT off, and a dataplane without forwards, refuse the set.
	must(t, os.WriteFile(file, []byte(dnatRules), 0o600))
	l.snat = nil
	if _, _, err := l.load(); err == nil || !strings.Contains(err.Error(), "snat is not enabled") {
		t.Fatalf("snat without SNAT: %v", err)
	}
	l.snat, l.setForwards = []netip.Addr{netip.MustParseAddr("198.19.0.1")}, nil
	if _, _, err := l.load(); !errors.Is(err, errNoForwards) {
		t.Fatalf("dataplane without forwards: %v", err)
	}
}

func TestExplainLiveForward(t *testing.T) {
	live := LiveRules{Inside: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/16")},
		Sources:       []rules.Source{{Name: "rules.yaml", Data: []byte(dnatRules)}},
		SNATAddresses: []netip.Addr{netip.MustParseAddr("198.19.0.1")}}
	rs, err := live.RuleSet()
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := rules.Compile(rs, func(string) uint32 { return 9 })
	if err != nil {
		t.Fatal(err)
	}
	p := rules.Packet{Src: netip.MustParseAddr("198.51.100.7"), Dst: netip.MustParseAddr("198.19.0.1"), Protocol: 6, HasPorts: true, SrcPort: 1, DstPort: 50022, Direction: rules.Local}
	ex := rules.ExplainForwarded(rs, tbl, p, live.SNATAddresses, nil)
	if !strings.Contains(ex.Packet, "forwarded to 198.18.1.4:22 (inbound)") || len(ex.Decisions) != 3 || ex.Decisions[1].Rule != "jump-box-ssh" {
		t.Fatalf("explanation %+v", ex)
	}
	// Another address is not a SNAT address: not forwarded.
	p.Dst = netip.MustParseAddr("198.19.0.2")
	if ex := rules.ExplainForwarded(rs, tbl, p, live.SNATAddresses, nil); len(ex.Decisions) != 2 {
		t.Fatalf("not forwarded, explained as %+v", ex)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
