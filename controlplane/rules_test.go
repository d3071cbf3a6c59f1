package controlplane

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/natwall/natwall/rules"
)

func TestRuleIDsAreStable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ids.json")
	a, err := LoadRuleIDs(path)
	if err != nil {
		t.Fatal(err)
	}
	web, ssh := a.ID("web"), a.ID("ssh")
	if web == ssh || web <= rules.StatefulDefaultID {
		t.Fatalf("ids %d %d", web, ssh)
	}
	if err := a.Save(); err != nil {
		t.Fatal(err)
	}
	b, err := LoadRuleIDs(path)
	if err != nil {
		t.Fatal(err)
	}
	if b.ID("ssh") != ssh || b.ID("web") != web {
		t.Fatal("ids changed across a restart")
	}
	if n := b.ID("new"); n == web || n == ssh {
		t.Fatalf("a new rule got an old number %d", n)
	}
}

// A rule set that does not load changes nothing: the dataplane keeps the
// last good one and the live-rules file still describes it.
func TestRuleLoaderKeepsLastGood(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "rules.yaml")
	var applied int
	l := &ruleLoader{paths: []string{file}, stateDir: filepath.Join(dir, "state"),
		apply: func(sl, sf *rules.StageTables) error { applied++; return nil }}

	os.WriteFile(file, []byte("stateful:\n  rules:\n    - {id: web, priority: 1, action: allow, protocol: tcp, dst_ports: [443]}\n"), 0o600)
	if _, _, err := l.load(); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(file, []byte("stateful:\n  rules:\n    - {id: web, priority: 1, action: allow, protocol: tcp, dst_ports: [443]}\n    - {id: oops, priority: 2, action: allw}\n"), 0o600)
	_, _, err := l.load()
	var list rules.ErrorList
	if !errors.As(err, &list) || !strings.Contains(err.Error(), "rules.yaml:4:39") {
		t.Fatalf("bad rule file error %v, want a positioned ErrorList", err)
	}
	if applied != 1 {
		t.Fatalf("a broken rule set was applied")
	}
	live, err := ReadLiveRules(l.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(live.Rules) != 1 || live.Rules[0].ID != "web" {
		t.Fatalf("live rules %+v, want the last good set", live)
	}
}

// The live rule set records its sources and inside networks when, and only
// when, it is applied: after a broken edit it still parses to the set the
// dataplane enforces, with "inside" resolved as the daemon resolved it.
func TestLiveRulesSnapshot(t *testing.T) {
	dir := t.TempDir()
	ruleDir := filepath.Join(dir, "rules.d")
	os.Mkdir(ruleDir, 0o755)
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(ruleDir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("10-sets.yaml", "address_sets:\n  web: [198.19.1.0/24]\n")
	write("20-rules.yaml", "stateful:\n  default_action: deny\n  rules:\n    - {id: web, priority: 1, action: allow, src: [inside], dst: [web], protocol: tcp, dst_ports: [443]}\n")
	l := &ruleLoader{paths: []string{ruleDir}, inside: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/16")},
		stateDir: filepath.Join(dir, "state"), apply: func(sl, sf *rules.StageTables) error { return nil }}
	if _, _, err := l.load(); err != nil {
		t.Fatal(err)
	}
	write("20-rules.yaml", "stateful:\n  rules:\n    - {id: web, priority: 1, action: reject, dst: [nosuchset]}\n")
	if _, _, err := l.load(); err == nil {
		t.Fatal("a broken rule set loaded")
	}

	live, err := ReadLiveRules(l.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := live.RuleSet()
	if err != nil {
		t.Fatalf("the recorded live set does not parse: %v", err)
	}
	next := uint32(rules.StatefulDefaultID)
	tbl, err := rules.Compile(rs, func(string) uint32 { next++; return next })
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		src, rule, action string
	}{
		{"198.18.1.10", "web", "allow"}, // inside, so the recorded inside networks are used
		{"198.20.1.10", "", "deny"},     // outside: the default
	} {
		p := rules.Packet{Src: netip.MustParseAddr(tc.src), Dst: netip.MustParseAddr("198.19.1.10"), Protocol: 6,
			HasPorts: true, SrcPort: 40000, DstPort: 443, Direction: rules.Outbound}
		d := rules.Explain(rs, tbl, p).Decisions[1]
		if d.Rule != tc.rule || d.Action != tc.action || (tc.rule != "" && !strings.HasSuffix(d.At, "20-rules.yaml:4:7")) {
			t.Errorf("%s: live set decides %+v, want rule %q %s", tc.src, d, tc.rule, tc.action)
		}
	}

	if _, err := (LiveRules{}).RuleSet(); err == nil {
		t.Error("a live-rules file without sources gave a rule set")
	}
}
