package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestExitCodes runs natwall as an operator would and checks the exit
// code each kind of failure has (README.md, "Exit codes").
func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	goodRules := write("rules.yaml", "stateful:\n  rules:\n    - {id: web, priority: 10, action: allow, protocol: tcp, dst_ports: [443]}\n")
	badRules := write("bad-rules.yaml", "stateful:\n  rules:\n    - {id: web, priority: 10, action: alow}\n")
	good := write("good.yaml", "interfaces: [eth0]\ninside_networks: [198.18.0.0/24]\nrules:\n  paths: ["+goodRules+"]\n")
	badValue := write("bad.yaml", "interfaces: [eth0]\ninside_networks: [198.18.0.0/24]\nxdp_mode: fast\n")
	badSocket := write("bad-socket.yaml", "interfaces: [eth0]\ninside_networks: [198.18.0.0/24]\napi:\n  socket: natwall.sock\n")
	brokenRules := write("broken-rules.yaml", "interfaces: [eth0]\ninside_networks: [198.18.0.0/24]\nrules:\n  paths: ["+badRules+"]\n")
	noDaemon := filepath.Join(dir, "none.sock")

	tests := []struct {
		name string
		args []string
		code int
		// wantStderr, wantStdout must appear in the output.
		wantStderr, wantStdout string
	}{
		{"version", []string{"version"}, exitOK, "", "natwall "},
		{"help flag", []string{"--help"}, exitOK, "", "Available Commands"},
		{"help command", []string{"help", "conntrack"}, exitOK, "", "flush"},
		{"no command", nil, exitUsage, "needs a subcommand", ""},
		{"unknown command", []string{"stauts"}, exitUsage, `unknown command "stauts" for "natwall"`, ""},
		{"unknown subcommand", []string{"conntrack", "lsit"}, exitUsage, `unknown command "lsit" for "natwall conntrack"`, ""},
		{"group without subcommand", []string{"conntrack"}, exitUsage, "natwall conntrack needs a subcommand: flush, list", ""},
		{"config without subcommand", []string{"config"}, exitUsage, "needs a subcommand: check", ""},
		{"unknown completion shell", []string{"completion", "tcsh"}, exitUsage, `unknown command "tcsh"`, ""},
		{"unknown help topic", []string{"help", "stauts"}, exitUsage, "no help topic", ""},
		{"unknown flag", []string{"status", "--bogus"}, exitUsage, "unknown flag: --bogus", ""},
		{"stray argument", []string{"status", "now"}, exitUsage, `unknown command "now" for "natwall status"`, ""},
		{"bad output format", []string{"rules", "-o", "xml", "--socket", noDaemon}, exitUsage, `-o "xml" is not one of table, wide, json, yaml`, ""},
		{"output format checked first", []string{"conntrack", "list", "-o", "text", "--socket", noDaemon}, exitUsage, "-o", ""},
		{"bad filter", []string{"conntrack", "list", "--proto", "sctpp", "--socket", noDaemon}, exitUsage, `--proto "sctpp"`, ""},
		{"flush without filter", []string{"conntrack", "flush", "--socket", noDaemon}, exitUsage, "no filter", ""},
		{"flush all with filter", []string{"conntrack", "flush", "--all", "--port", "53", "--socket", noDaemon}, exitUsage, "--all goes without", ""},
		{"flows bad type", []string{"flows", "--type", "begin", "--socket", noDaemon}, exitUsage, `type "begin"`, ""},
		{"explain without rules or live", []string{"explain", "--src", "198.18.0.1", "--dst", "198.19.0.1"}, exitUsage, "--rules or --live", ""},
		{"explain bad address", []string{"explain", "--live", "--src", "198.18.0.300", "--dst", "198.19.0.1", "--socket", noDaemon}, exitUsage, "--src", ""},
		{"status unreachable", []string{"status", "--socket", noDaemon}, exitUnreachable, "cannot reach natwall at " + noDaemon, ""},
		{"rules unreachable", []string{"rules", "--socket", noDaemon}, exitUnreachable, "cannot reach natwall", ""},
		{"conntrack unreachable", []string{"conntrack", "list", "--socket", noDaemon}, exitUnreachable, "cannot reach natwall", ""},
		{"flush unreachable", []string{"conntrack", "flush", "--all", "--socket", noDaemon}, exitUnreachable, "cannot reach natwall", ""},
		{"nat unreachable", []string{"nat", "--socket", noDaemon}, exitUnreachable, "cannot reach natwall", ""},
		{"flows unreachable", []string{"flows", "--socket", noDaemon}, exitUnreachable, "cannot reach natwall", ""},
		{"reload unreachable", []string{"reload", "--socket", noDaemon}, exitUnreachable, "cannot reach natwall", ""},
		{"explain live unreachable", []string{"explain", "--live", "--src", "198.18.0.1", "--dst", "198.19.0.1", "--socket", noDaemon}, exitUnreachable, "cannot reach natwall", ""},
		{"config check good", []string{"config", "check", good}, exitOK, "", "ok: " + good},
		{"config check bad value", []string{"config", "check", badValue}, exitInvalid, badValue + `:3:11: xdp_mode: "fast" is not one of native, generic`, ""},
		{"config check bad socket", []string{"config", "check", badSocket}, exitInvalid, badSocket + `:4:11: api.socket: "natwall.sock" must be an absolute path`, ""},
		{"config check broken rules", []string{"config", "check", brokenRules}, exitInvalid, badRules + `:3:39: stateful action "alow"`, ""},
		{"config check without file", []string{"config", "check"}, exitUsage, "accepts 1 arg", ""},
		{"run dry-run good", []string{"run", "--dry-run", "--config", good}, exitOK, "", "ok: " + good},
		{"run dry-run bad", []string{"run", "--dry-run", "-c", badValue}, exitInvalid, badValue + ":3:11:", ""},
		{"run dry-run broken rules", []string{"run", "--dry-run", "-c", brokenRules}, exitInvalid, badRules + ":3:39:", ""},
		{"run bad config", []string{"run", "-c", badValue}, exitInvalid, badValue + ":3:11:", ""},
		{"check rules good", []string{"check", goodRules}, exitOK, "", "ok: 0 stateless and 1 stateful rules"},
		{"check rules bad", []string{"check", badRules}, exitInvalid, badRules + ":3:39:", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := natwall(t, tt.args...)
			if code != tt.code {
				t.Fatalf("natwall %v exited %d, want %d\nstdout:\n%s\nstderr:\n%s", tt.args, code, tt.code, stdout, stderr)
			}
			if !strings.Contains(stderr, tt.wantStderr) {
				t.Errorf("stderr:\n%s\nwant it to contain:\n%s", stderr, tt.wantStderr)
			}
			if !strings.Contains(stdout, tt.wantStdout) {
				t.Errorf("stdout:\n%s\nwant it to contain:\n%s", stdout, tt.wantStdout)
			}
			if code != exitOK && stdout != "" {
				t.Errorf("a failure printed to stdout:\n%s", stdout)
			}
		})
	}
}

func TestShellCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		code, stdout, stderr := natwall(t, "completion", shell)
		if code != 0 || !strings.Contains(stdout, "natwall") {
			t.Errorf("completion %s = %d, %d bytes, stderr %q", shell, code, len(stdout), stderr)
		}
	}
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"__complete", "sta"}, []string{"status"}},
		{[]string{"__complete", "conntrack", ""}, []string{"flush", "list"}},
		{[]string{"__complete", "status", "-o", ""}, outputFormats},
		{[]string{"__complete", "flows", "--type", ""}, []string{"flow_start", "flow_end", "alert"}},
		{[]string{"__complete", "conntrack", "list", "--proto", ""}, []string{"tcp", "udp", "icmp", "icmpv6"}},
	}
	for _, tt := range tests {
		code, stdout, stderr := natwall(t, tt.args...)
		if code != 0 {
			t.Errorf("natwall %v = %d: %s", tt.args, code, stderr)
		}
		var got []string
		for _, line := range strings.Split(stdout, "\n") {
			if line != "" && !strings.HasPrefix(line, ":") {
				got = append(got, strings.SplitN(line, "\t", 2)[0])
			}
		}
		if strings.Join(got, " ") != strings.Join(tt.want, " ") {
			t.Errorf("natwall %v completes %q, want %q", tt.args, got, tt.want)
		}
	}
}

// TestCommandsDoNotImportDataplane enforces that the CLI asks the daemon
// and never opens the dataplane's pinned maps itself: no package under
// cmd/ imports dataplane/ or cilium/ebpf, tests included. (natwall run
// links the dataplane through controlplane; that is the daemon.)
func TestCommandsDoNotImportDataplane(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}: {{join .Imports " "}} {{join .TestImports " "}} {{join .XTestImports " "}}`, "../...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) == 0 || !strings.Contains(string(out), "github.com/natwall/natwall/cmd/natwall:") {
		t.Fatalf("go list found no cmd packages:\n%s", out)
	}
	for _, line := range lines {
		pkg, imports, _ := strings.Cut(line, ": ")
		for _, imp := range strings.Fields(imports) {
			if imp == "github.com/natwall/natwall/dataplane" || strings.HasPrefix(imp, "github.com/cilium/ebpf") {
				t.Errorf("%s imports %s: the CLI must ask the daemon through controlplane/api", pkg, imp)
			}
		}
	}
}
