package demo

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/natwall/natwall/test/lab"
)

// TestDemo runs the whole demo: what it prints must show translation, the
// fast path and the connection table, and it must leave nothing behind.
func TestDemo(t *testing.T) {
	lab.RequirePrivileges(t)
	bin := filepath.Join(t.TempDir(), "natwall")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/natwall").CombinedOutput(); err != nil {
		t.Fatalf("build natwall: %v\n%s", err, out)
	}
	// Other test packages build labs concurrently, so only namespaces named
	// after this process are the demo's.
	ours := fmt.Sprintf("nwlab-%d-", os.Getpid())
	before := namespacesWithPrefix(t, ours)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := Run(ctx, Options{Natwall: bin, Out: &out}); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	for _, want := range []string{
		"natwall translated the source (SNAT)",
		"natwall dropped it (only replies come in)",
		"fwd_redirect",
		"time_wait",
		"TCP ports in use on 198.19.1.1",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
	after := namespacesWithPrefix(t, ours)
	if after != before {
		t.Errorf("the demo left namespaces behind:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if leftovers, _ := filepath.Glob("/sys/fs/bpf/natwall-demo-*"); len(leftovers) > 0 {
		t.Errorf("the demo left pins behind: %v", leftovers)
	}
}

func namespacesWithPrefix(t *testing.T, prefix string) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatalf("ip netns list: %v", err)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		if name, _, _ := strings.Cut(line, " "); strings.HasPrefix(name, prefix) {
			names = append(names, name)
		}
	}
	return strings.Join(names, "\n")
}
