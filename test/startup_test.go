package test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/natwall/natwall/test/lab"
)

// expectNoXDP fails the test if any appliance NIC still runs an XDP program.
func expectNoXDP(t *testing.T, l *lab.Lab, when string) {
	t.Helper()
	for _, nic := range l.ApplianceNICs {
		err := l.Appliance.Do(func() error {
			link, err := netlink.LinkByName(nic)
			if err != nil {
				return err
			}
			if x := link.Attrs().Xdp; x != nil && x.Attached {
				return fmt.Errorf("XDP program %d attached to %s", x.ProgId, nic)
			}
			return nil
		})
		if err != nil {
			t.Errorf("%s: %v", when, err)
		}
	}
}

// TestStartWithBrokenRulePathLeavesNothing starts a live `natwall run`
// whose rule path does not exist, with on_exit keep (the shipped unit's
// setting, which used to leave the built-in policy attached and its maps
// pinned): it must exit non-zero with no XDP program on the appliance's
// NICs and nothing under its pin directory.
func TestStartWithBrokenRulePathLeavesNothing(t *testing.T) {
	l := newLab(t, lab.Options{Shape: lab.TwoNIC})
	pinDir := fmt.Sprintf("/sys/fs/bpf/natwall-test-%d-%d", os.Getpid(), pinCounter.Add(1))
	t.Cleanup(func() { os.RemoveAll(pinDir) })
	config := filepath.Join(t.TempDir(), "natwall.yaml")
	extra := fmt.Sprintf("on_exit: keep\nstate_dir: %s\nrules:\n  paths: [%s]\n", t.TempDir(), filepath.Join(t.TempDir(), "missing.yaml"))
	if err := os.WriteFile(config, []byte(natwallConfig(l, pinDir, extra)), 0o600); err != nil {
		t.Fatal(err)
	}
	proc, err := l.Appliance.Start(natwallBin, "run", "--config", config)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-proc.Done():
	case <-time.After(20 * time.Second):
		proc.Stop()
		t.Fatalf("natwall still running 20s after a start with a broken rule path:\n%s", proc.Output())
	}
	if err := proc.Wait(); err == nil {
		t.Fatalf("natwall exited 0 with a broken rule path:\n%s", proc.Output())
	}
	expectNoXDP(t, l, "after the failed start")
	if entries, err := os.ReadDir(pinDir); !os.IsNotExist(err) {
		t.Errorf("pin directory %s exists after the failed start (%d entries, %v)", pinDir, len(entries), err)
	}
}
