package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// runMainEnv makes the test binary run main instead of the tests, so that
// exit codes and stderr are tested as an operator sees them.
const runMainEnv = "GO_TEST_RUN_NATWALL_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// natwall runs the natwall command in a child process without NATWALL_*
// variables and returns its exit code, stdout and stderr.
func natwall(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), exe, args...)
	cmd.Env = []string{runMainEnv + "=1"}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NATWALL_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, stdout.String(), stderr.String()
	case errors.As(err, &exit):
		return exit.ExitCode(), stdout.String(), stderr.String()
	default:
		t.Fatalf("run %v: %v", args, err)
		return 0, "", ""
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bad := write("bad.yaml", "interfaces: [eth0]\ninside_networks: [198.18.0.0/24]\nxdp_mode: fast\n")
	typo := write("typo.yaml", "interfaces: [eth0]\ninside_networks: [198.18.0.0/24]\nmetrics:\n  listn: 127.0.0.1:1\n")
	broken := write("broken.yaml", "interfaces: [eth0\n")
	good := write("good.yaml", "interfaces: [eth0]\ninside_networks: [198.18.0.0/24]\n")

	tests := []struct {
		name       string
		args       []string
		wantStderr string
	}{
		{"bad value", []string{"run", "--config", bad},
			bad + `:3:11: xdp_mode: "fast" is not one of native, generic`},
		{"unknown key", []string{"run", "-c", typo},
			typo + `:4:3: metrics.listn: unknown key (did you mean metrics.listen?)`},
		{"unparseable yaml", []string{"run", "--config", broken},
			broken + `:1: did not find expected ',' or ']'`},
		{"missing file", []string{"run", "--config", filepath.Join(dir, "absent.yaml")},
			"read config: open " + filepath.Join(dir, "absent.yaml")},
		{"bad flag value", []string{"run", "--config", good, "--log-level", "loud"},
			`flag --log-level: log.level: "loud" is not one of debug, info, warn, error`},
		{"unknown flag", []string{"run", "--config", good, "--bogus"},
			"unknown flag: --bogus"},
		{"stray argument", []string{"run", good},
			`unknown command "` + good + `" for "natwall run"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := natwall(t, tt.args...)
			if code == 0 {
				t.Fatalf("natwall %v exited 0, want non-zero", tt.args)
			}
			if !strings.Contains(stderr, tt.wantStderr) {
				t.Errorf("stderr:\n%s\nwant it to contain:\n%s", stderr, tt.wantStderr)
			}
			if !strings.HasPrefix(stderr, "natwall: ") {
				t.Errorf("stderr %q does not start with natwall: ", stderr)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	code, stdout, stderr := natwall(t, "version")
	if code != 0 || !strings.HasPrefix(stdout, "natwall ") || !strings.Contains(stdout, "\ngo: go") {
		t.Errorf("natwall version = %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

func TestRootCommandHasSubcommands(t *testing.T) {
	for _, name := range []string{"run", "version"} {
		cmd, _, err := rootCmd.Find([]string{name})
		if err != nil || cmd.Name() != name {
			t.Errorf("rootCmd has no %q subcommand: %v", name, err)
		}
	}
	run, _, _ := newRootCmd().Find([]string{"run"})
	for _, flag := range []string{"config", "interfaces", "metrics-listen", "log-level", "on-exit"} {
		if run.Flags().Lookup(flag) == nil {
			t.Errorf("natwall run has no --%s", flag)
		}
	}
}
