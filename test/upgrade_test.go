package test

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/natwall/natwall/test/lab"
)

// upgradeFrom is the earlier build TestUpgradeUnderTCP starts with: the
// merge of bench-daemon, a main commit before the tcp challenge-ACK fix,
// the rule-compile and flow-log changes that followed it, with the same
// pinned layout. NWTEST_UPGRADE_FROM picks another commit (one with
// another layout is refused, see TestIncompatiblePinnedStateAndTeardown).
const upgradeFrom = "8218aa7"

// buildAt builds cmd/natwall as of commit, from `git archive` of this
// repository. A clone without that history (a shallow one) cannot: then
// it builds this tree under another version string, so that the test
// still hands the state from one binary to another, and says so.
// -trimpath lets the build cache serve a second run whatever the
// temporary directory.
func buildAt(t *testing.T, commit string) string {
	t.Helper()
	src := t.TempDir()
	var ldflags []string
	if err := exec.Command("git", "-C", "..", "cat-file", "-e", commit+"^{commit}").Run(); err != nil {
		t.Logf("WARNING: commit %s is not in this clone (shallow?): upgrading from this tree built as version upgrade-test-%s instead", commit, commit)
		src = ".."
		ldflags = []string{"-ldflags", "-X github.com/natwall/natwall/controlplane.Version=upgrade-test-" + commit}
	} else {
		archive := exec.Command("sh", "-c", fmt.Sprintf("git -C .. archive --format=tar %q | tar -x -C %q", commit, src))
		if out, err := archive.CombinedOutput(); err != nil {
			t.Fatalf("git archive %s: %v\n%s", commit, err, out)
		}
	}
	bin := filepath.Join(t.TempDir(), "natwall")
	build := exec.Command("go", append(append([]string{"build", "-trimpath"}, ldflags...), "-o", bin, "./cmd/natwall")...)
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build natwall at %s: %v\n%s", commit, err, out)
	}
	return bin
}

// TestUpgradeUnderTCP starts an earlier natwall build with on_exit keep,
// opens a TCP connection through it and keeps it busy (a round trip every
// 5 ms), stops the old daemon, opens new connections while no daemon
// runs, and starts the current build over the pinned state: it must adopt
// it, the first connection must go on without one retransmission or
// policy/invalid drop, and new connections must work before, during and
// after the gap. The reverse (current to earlier) is not promised.
func TestUpgradeUnderTCP(t *testing.T) {
	commit := upgradeFrom
	if env := os.Getenv("NWTEST_UPGRADE_FROM"); env != "" {
		commit = env
	}
	t0 := time.Now()
	oldBin := buildAt(t, commit)
	t.Logf("built natwall at %s in %v", commit, time.Since(t0).Round(time.Second))
	if same, err := sameFile(oldBin, natwallBin); err != nil || same {
		t.Fatalf("the earlier build is the same binary as this one (%v): the test would prove nothing", err)
	}

	l := newLab(t, lab.Options{Shape: lab.TwoNIC})
	a := startNatwallBin(t, l, oldBin, natConfig("")+"on_exit: keep\n")
	client, server := l.Clients[0], l.Servers[0]
	warmUp(t, client.NS, server.IPv4)
	ctx := testContext(t)
	conn := echoConn(t, ctx, client, server, 7100)

	snmp0, err := client.NS.Snmp()
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu          sync.Mutex
		trips       int
		tripErr     error
		slowest     time.Duration
		stopTraffic = make(chan struct{})
		done        = make(chan struct{})
	)
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stopTraffic:
				return
			case <-time.After(5 * time.Millisecond):
			}
			start := time.Now()
			err := roundTrip(conn, fmt.Sprintf("trip %06d", i))
			mu.Lock()
			if err != nil {
				tripErr = fmt.Errorf("round trip %d: %w", i, err)
				mu.Unlock()
				return
			}
			trips++
			slowest = max(slowest, time.Since(start))
			mu.Unlock()
		}
	}()

	newConn := func(when string) {
		t.Helper()
		if err := tcpEchoTo(ctx, client.NS, netip.AddrPortFrom(server.IPv4, 7100), 4096); err != nil {
			t.Errorf("a new TCP connection %s: %v", when, err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	newConn("under the earlier build")
	a.stop(t)
	for i := range 3 {
		newConn(fmt.Sprintf("while no daemon runs (%d)", i))
		time.Sleep(100 * time.Millisecond)
	}
	a.bin = natwallBin
	a.start(t)
	time.Sleep(300 * time.Millisecond)
	newConn("under the current build")
	time.Sleep(300 * time.Millisecond)
	close(stopTraffic)
	<-done

	snmp1, err := client.NS.Snmp()
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	retrans := snmp1["Tcp.RetransSegs"] - snmp0["Tcp.RetransSegs"]
	t.Logf("long-lived TCP connection across the upgrade from %s: %d round trips, slowest %v, %d retransmitted segments", commit, trips, slowest, retrans)
	if tripErr != nil {
		t.Errorf("the established connection broke across the upgrade: %v", tripErr)
	}
	if trips < 50 {
		t.Errorf("only %d round trips on the established connection, want at least 50", trips)
	}
	if retrans != 0 {
		t.Errorf("%d TCP segments retransmitted across the upgrade, want none", retrans)
	}
	if p := a.packets(t); p["drop_ct_invalid"] != 0 || p["drop_policy"] != 0 {
		t.Errorf("packets found no flow across the upgrade: %v invalid, %v policy", p["drop_ct_invalid"], p["drop_policy"])
	}
	// The flow state is adopted whole: not even the maps a start may
	// rebuild (and whose counters would restart) differ in layout.
	if out := a.proc.Output(); strings.Contains(out, "another layout") {
		t.Errorf("the current build replaced pinned maps of the earlier one:\n%s", out)
	}
}

// sameFile reports whether files a and b hold the same bytes.
func sameFile(a, b string) (bool, error) {
	da, err := os.ReadFile(a)
	if err != nil {
		return false, err
	}
	db, err := os.ReadFile(b)
	if err != nil {
		return false, err
	}
	return bytes.Equal(da, db), nil
}
