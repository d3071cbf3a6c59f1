package controlplane

import (
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"testing"

	"github.com/natwall/natwall/dataplane"
)

type fakeGuard struct{ closed int }

func (g *fakeGuard) Close() error { g.closed++; return nil }

// With SNAT the daemon installs the ICMP guard for the inside networks
// before it opens the dataplane, removes it when it detaches, and keeps it
// when the dataplane stays attached (it still translates). A guard that
// cannot be installed stops the start before anything is attached.
func TestDaemonInstallsICMPGuardWithSNAT(t *testing.T) {
	for _, tc := range []struct {
		name       string
		snat       bool
		onExit     ExitAction
		installErr error
		wantCalls  int
		wantClosed int
	}{
		{"snat, detach", true, ExitDetach, nil, 1, 1},
		{"snat, keep", true, ExitKeep, nil, 1, 0},
		{"no snat", false, ExitDetach, nil, 0, 0},
		{"install fails", true, ExitDetach, errors.New("no iptables"), 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testDaemonConfig()
			cfg.OnExit = tc.onExit
			cfg.Sysctl.Manage = false // the fake /proc/sys lacks the NAT sysctls; not what this is about
			if tc.snat {
				cfg.SNAT = &dataplane.SNAT{Addresses: []netip.Addr{netip.MustParseAddr("198.19.1.1")}, PortMin: 1024, PortMax: 65535}
			}
			d, _, opened := testDaemon(t, cfg, &fakeDataplane{})
			g := &fakeGuard{}
			var calls int
			d.guardICMP = func(inside []netip.Prefix, _ *slog.Logger) (io.Closer, error) {
				calls++
				if !slices.Equal(inside, cfg.InsideNetworks) {
					t.Errorf("guard for %v, want %v", inside, cfg.InsideNetworks)
				}
				if len(*opened) != 0 {
					t.Errorf("guard installed after the dataplane was opened")
				}
				if tc.installErr != nil {
					return nil, tc.installErr
				}
				return g, nil
			}
			r := start(t, d)
			if tc.installErr == nil {
				r.waitReady(t)
				r.cancel()
			}
			<-r.done
			if tc.installErr != nil && (!errors.Is(r.err, tc.installErr) || len(*opened) != 0) {
				t.Fatalf("run returned %v with %d dataplanes opened; want the guard's error and none", r.err, len(*opened))
			}
			if calls != tc.wantCalls || g.closed != tc.wantClosed {
				t.Fatalf("guard installed %d times, removed %d; want %d, %d", calls, g.closed, tc.wantCalls, tc.wantClosed)
			}
		})
	}
}
