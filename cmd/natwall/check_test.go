package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runCmd(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errb bytes.Buffer
	c := newCheckCmd()
	switch args[0] {
	case "explain":
		c = newExplainCmd()
	case "inspect":
		c = newInspectCmd()
	}
	c.SetArgs(args[1:])
	c.SetOut(&out)
	c.SetErr(&errb)
	c.SilenceUsage = true
	c.SilenceErrors = true
	err = c.Execute()
	return out.String(), errb.String(), err
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("stateful:\n  rules:\n    - {id: web, priority: 1, action: allow, protocol: tcp, dst_ports: [443]}\n    - {id: web2, priority: 2, action: deny, protocol: tcp, dst_ports: [443]}\n"), 0o600)
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("stateless:\n  - {id: a, priority: 1, action: allow}\n"), 0o600)

	out, errOut, err := runCmd(t, "check", good)
	if err != nil || !strings.Contains(out, "ok: 0 stateless and 2 stateful rules") || !strings.Contains(errOut, `rule "web2" matches exactly`) {
		t.Fatalf("check good: %v\n%s%s", err, out, errOut)
	}
	if _, _, err := runCmd(t, "check", "--strict", good); err == nil {
		t.Fatal("--strict passed with a warning")
	}
	_, errOut, err = runCmd(t, "check", bad)
	if err == nil || !strings.Contains(errOut, bad+`:2:34: stateless action "allow" is not one of drop, pass`) {
		t.Fatalf("check bad: %v\n%s", err, errOut)
	}
	if strings.Contains(errOut, "has no action") {
		t.Errorf("a wrong action is also reported as missing:\n%s", errOut)
	}
}

func TestExplainJSON(t *testing.T) {
	out, _, err := runCmd(t, "explain", "--rules", "../../rules/testdata", "--inside", "198.18.0.0/16",
		"--src", "198.18.250.3", "--dst", "198.19.1.10", "--dport", "443", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"stage": "stateless"`, `"rule": "block-bogon"`, `"verdict": "dropped by the stateless stage"`} {
		if !strings.Contains(out, want) {
			t.Errorf("explain output lacks %s:\n%s", want, out)
		}
	}
}
