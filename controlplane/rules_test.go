package controlplane

import (
	"errors"
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
