package lab

import (
	"os"
	"strconv"
	"sync"
	"testing"
)

// RequirePrivileges lets a test that builds namespaces run only as root. When
// not root it skips the test, unless the environment variable CI is true: in
// CI such tests must run, so it fails the test instead.
func RequirePrivileges(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if inCI() {
		tb.Fatal("network namespace tests need root, and CI is set: refusing to skip")
	}
	tb.Skip("network namespace tests need root")
}

func inCI() bool {
	ci, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && ci
}

var (
	sweepOnce sync.Once
	sweepErr  error
)

// sweep runs Sweep once per test binary, before its first namespace.
func sweep(tb testing.TB) {
	tb.Helper()
	sweepOnce.Do(func() {
		var removed []string
		removed, sweepErr = Sweep()
		if len(removed) > 0 {
			tb.Logf("removed namespaces left by dead test runs: %v", removed)
		}
	})
	if sweepErr != nil {
		tb.Fatalf("sweep leftover namespaces: %v", sweepErr)
	}
}

// NewT builds a lab for a test: it checks privileges (RequirePrivileges),
// removes what killed test runs left behind (Sweep, once per test binary),
// fails the test if the lab cannot be built and closes the lab when the test
// ends.
func NewT(tb testing.TB, opts Options) *Lab {
	tb.Helper()
	RequirePrivileges(tb)
	sweep(tb)
	l, err := New(opts)
	if err != nil {
		tb.Fatalf("build lab: %v", err)
	}
	tb.Cleanup(func() {
		if err := l.Close(); err != nil {
			tb.Errorf("close lab: %v", err)
		}
	})
	return l
}

// NewNetNST creates a lone namespace for a test, as NewT does a lab.
func NewNetNST(tb testing.TB, role string) *NetNS {
	tb.Helper()
	RequirePrivileges(tb)
	sweep(tb)
	ns, err := NewNetNS(role)
	if err != nil {
		tb.Fatalf("create namespace: %v", err)
	}
	tb.Cleanup(func() {
		if err := ns.Close(); err != nil {
			tb.Errorf("close namespace %s: %v", ns, err)
		}
	})
	return ns
}
