package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/natwall/natwall/test/lab"
)

// TestIncompatiblePinnedStateAndTeardown: a natwall that finds pinned maps
// recorded with another layout (as after an upgrade that changed a map)
// refuses to start and names them, while the dataplane pinned there goes
// on forwarding; `natwall teardown` then removes everything, forwarding
// included, and a fresh start works. With on_incompatible_state: replace
// the start goes ahead, starting those maps empty.
func TestIncompatiblePinnedStateAndTeardown(t *testing.T) {
	l := newLab(t, lab.Options{Shape: lab.TwoNIC})
	a := startNatwall(t, l, "on_exit: keep\n")
	client, server := l.Clients[0], l.Servers[0]
	warmUp(t, client.NS, server.IPv4)
	a.stop(t)

	// Another build's record of nw_ct4's layout.
	layout, err := ebpf.LoadPinnedMap(filepath.Join(a.pinDir, "nw_layout"), nil)
	if err != nil {
		t.Fatalf("no recorded layout in the pin directory: %v", err)
	}
	var key, other [32]byte
	copy(key[:], "nw_ct4")
	copy(other[:], "a layout from another natwall build")
	if err := layout.Put(key, other); err != nil {
		t.Fatal(err)
	}
	layout.Close()

	proc, err := l.Appliance.Start(natwallBin, "run", "--config", a.config)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-proc.Done():
	case <-time.After(20 * time.Second):
		proc.Stop()
		t.Fatalf("natwall started over pinned state of another layout:\n%s", proc.Output())
	}
	if err := proc.Wait(); err == nil {
		t.Fatalf("natwall exited 0 over pinned state of another layout:\n%s", proc.Output())
	}
	if out := proc.Output(); !strings.Contains(out, "nw_ct4") || !strings.Contains(out, "natwall teardown") {
		t.Errorf("the refusal does not name the map and the way out:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(a.pinDir, "nw_ct4")); err != nil {
		t.Errorf("the refused start touched the pinned state: %v", err)
	}
	if err := client.NS.Ping(testContext(t), server.IPv4); err != nil {
		t.Errorf("the pinned dataplane stopped forwarding after the refused start: %v", err)
	}

	out, err := l.Appliance.Run(testContext(t), natwallBin, "teardown", "--pin-dir", a.pinDir)
	if err != nil {
		t.Fatalf("natwall teardown: %v\n%s", err, out)
	}
	expectNoXDP(t, l, "after teardown")
	if _, err := os.Stat(a.pinDir); !os.IsNotExist(err) {
		t.Errorf("pin directory %s still there after teardown (%v)", a.pinDir, err)
	}
	if fwd, err := l.Appliance.ReadSysctl("net.ipv4.ip_forward"); err != nil || fwd != "0" {
		t.Errorf("net.ipv4.ip_forward = %q (%v) after teardown, want 0", fwd, err)
	}
	if out, err := l.Appliance.Run(testContext(t), natwallBin, "teardown", "--pin-dir", a.pinDir); err != nil {
		t.Errorf("a second teardown, with nothing left: %v\n%s", err, out)
	}

	// replace: the same situation, and the start goes ahead.
	a.start(t)
	a.stop(t)
	layout, err = ebpf.LoadPinnedMap(filepath.Join(a.pinDir, "nw_layout"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := layout.Put(key, other); err != nil {
		t.Fatal(err)
	}
	layout.Close()
	config, err := os.ReadFile(a.config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(a.config, append(config, "on_incompatible_state: replace\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	a.start(t)
	if out := a.proc.Output(); !strings.Contains(out, "replacing pinned maps of another layout") {
		t.Errorf("natwall did not say it replaced the maps:\n%s", out)
	}
	warmUp(t, client.NS, server.IPv4)
}
