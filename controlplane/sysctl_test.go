package controlplane

import (
	"bytes"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

func TestSysctlName(t *testing.T) {
	tests := []struct{ path, name string }{
		{"net/ipv4/ip_forward", "net.ipv4.ip_forward"},
		{"net/ipv4/conf/eth0/rp_filter", "net.ipv4.conf.eth0.rp_filter"},
		{"net/ipv4/conf/eth0.100/rp_filter", "net.ipv4.conf.eth0/100.rp_filter"},
	}
	for _, tt := range tests {
		if got := (Sysctl{Path: tt.path}).Name(); got != tt.name {
			t.Errorf("Sysctl{%s}.Name() = %s, want %s", tt.path, got, tt.name)
		}
	}
}

// kernelDefaults are the values a fresh Debian VM has, which natwall must change.
func kernelDefaults(ifaces ...string) map[string]string {
	v := map[string]string{
		"net/ipv4/ip_forward":          "0",
		"net/ipv6/conf/all/forwarding": "0",
		"net/ipv4/ip_local_port_range": "32768\t60999",
	}
	for _, dev := range append([]string{"all", "default"}, ifaces...) {
		v["net/ipv4/conf/"+dev+"/rp_filter"] = "1"
		v["net/ipv4/conf/"+dev+"/send_redirects"] = "1"
		v["net/ipv4/conf/"+dev+"/accept_redirects"] = "1"
		v["net/ipv6/conf/"+dev+"/accept_redirects"] = "1"
		v["net/ipv6/conf/"+dev+"/accept_ra"] = "1"
	}
	return v
}

func writeSysctlTree(t *testing.T, values map[string]string) string {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "net", "ipv4"), 0o755); err != nil {
		t.Fatal(err)
	}
	for path, value := range values {
		p := filepath.Join(root, filepath.FromSlash(path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(value+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func readSysctlTree(t *testing.T, root string, paths map[string]string) map[string]string {
	t.Helper()
	got := map[string]string{}
	for path := range paths {
		v, err := readSysctl(root, path)
		if err != nil {
			t.Fatal(err)
		}
		got[path] = v
	}
	return got
}

func TestApplySysctls(t *testing.T) {
	tests := []struct {
		name        string
		ifaces      []string
		before      map[string]string
		wantChanged []string // sysctl names, in order
		wantAfter   map[string]string
	}{
		{
			name:   "fresh VM, one NIC",
			ifaces: []string{"eth0"},
			before: kernelDefaults("eth0"),
			wantChanged: []string{
				"net.ipv6.conf.eth0.accept_ra",
				"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding",
				"net.ipv4.conf.all.rp_filter", "net.ipv4.conf.all.send_redirects", "net.ipv4.conf.all.accept_redirects", "net.ipv6.conf.all.accept_redirects",
				"net.ipv4.conf.default.rp_filter", "net.ipv4.conf.default.send_redirects", "net.ipv4.conf.default.accept_redirects", "net.ipv6.conf.default.accept_redirects",
				"net.ipv4.conf.eth0.rp_filter", "net.ipv4.conf.eth0.send_redirects", "net.ipv4.conf.eth0.accept_redirects", "net.ipv6.conf.eth0.accept_redirects",
			},
			wantAfter: map[string]string{
				"net/ipv4/ip_forward": "1", "net/ipv6/conf/all/forwarding": "1",
				"net/ipv6/conf/eth0/accept_ra": "2", "net/ipv6/conf/all/accept_ra": "1",
				"net/ipv4/conf/all/rp_filter": "2", "net/ipv4/conf/eth0/rp_filter": "2",
				"net/ipv4/conf/eth0/send_redirects": "0", "net/ipv6/conf/eth0/accept_redirects": "0",
			},
		},
		{
			name:   "acceptable values are left alone",
			ifaces: []string{"eth0"},
			before: func() map[string]string {
				v := kernelDefaults("eth0")
				v["net/ipv4/conf/all/rp_filter"] = "0"
				v["net/ipv4/conf/eth0/rp_filter"] = "2"
				v["net/ipv6/conf/eth0/accept_ra"] = "0"
				v["net/ipv4/ip_forward"] = "1"
				return v
			}(),
			wantChanged: []string{
				"net.ipv6.conf.all.forwarding",
				"net.ipv4.conf.all.send_redirects", "net.ipv4.conf.all.accept_redirects", "net.ipv6.conf.all.accept_redirects",
				"net.ipv4.conf.default.rp_filter", "net.ipv4.conf.default.send_redirects", "net.ipv4.conf.default.accept_redirects", "net.ipv6.conf.default.accept_redirects",
				"net.ipv4.conf.eth0.send_redirects", "net.ipv4.conf.eth0.accept_redirects", "net.ipv6.conf.eth0.accept_redirects",
			},
			wantAfter: map[string]string{
				"net/ipv4/conf/all/rp_filter": "0", "net/ipv4/conf/eth0/rp_filter": "2", "net/ipv6/conf/eth0/accept_ra": "0",
			},
		},
		{
			name:   "ipv6 disabled in the kernel",
			ifaces: []string{"eth0.100"},
			before: func() map[string]string {
				v := kernelDefaults("eth0.100")
				for k := range v {
					if strings.HasPrefix(k, "net/ipv6/") {
						delete(v, k)
					}
				}
				return v
			}(),
			wantChanged: []string{
				"net.ipv4.ip_forward",
				"net.ipv4.conf.all.rp_filter", "net.ipv4.conf.all.send_redirects", "net.ipv4.conf.all.accept_redirects",
				"net.ipv4.conf.default.rp_filter", "net.ipv4.conf.default.send_redirects", "net.ipv4.conf.default.accept_redirects",
				"net.ipv4.conf.eth0/100.rp_filter", "net.ipv4.conf.eth0/100.send_redirects", "net.ipv4.conf.eth0/100.accept_redirects",
			},
			wantAfter: map[string]string{"net/ipv4/conf/eth0.100/rp_filter": "2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := writeSysctlTree(t, tt.before)
			settings := ForwardingSysctls(tt.ifaces)

			planned, err := PlanSysctls(root, settings)
			if err != nil {
				t.Fatalf("PlanSysctls: %v", err)
			}
			if got := readSysctlTree(t, root, tt.before); !reflect.DeepEqual(got, tt.before) {
				t.Fatalf("PlanSysctls wrote: %v", got)
			}

			var logs bytes.Buffer
			changes, err := ApplySysctls(root, settings, slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil {
				t.Fatalf("ApplySysctls: %v", err)
			}
			if !reflect.DeepEqual(changes, planned) {
				t.Errorf("ApplySysctls changed %v, PlanSysctls planned %v", changes, planned)
			}
			var names []string
			for _, c := range changes {
				names = append(names, c.Name)
				if c.Old != tt.before[pathOf(c.Name)] {
					t.Errorf("%s: old = %s, want %s", c.Name, c.Old, tt.before[pathOf(c.Name)])
				}
				line := "sysctl=" + c.Name + " old=" + c.Old + " new=" + c.New
				if !strings.Contains(logs.String(), line) {
					t.Errorf("no log line with %q in\n%s", line, logs.String())
				}
			}
			if !reflect.DeepEqual(names, tt.wantChanged) {
				t.Errorf("changed\n%v\nwant\n%v", names, tt.wantChanged)
			}
			for path, want := range tt.wantAfter {
				if got, _ := readSysctl(root, path); got != want {
					t.Errorf("%s = %s after apply, want %s", path, got, want)
				}
			}

			again, err := ApplySysctls(root, settings, slog.New(slog.DiscardHandler))
			if err != nil || len(again) != 0 {
				t.Errorf("second ApplySysctls = %v, %v; want no changes", again, err)
			}
		})
	}
}

// pathOf inverts Sysctl.Name for the names in these tests.
func pathOf(name string) string {
	parts := strings.Split(name, ".")
	for i, p := range parts {
		parts[i] = strings.ReplaceAll(p, "/", ".")
	}
	return strings.Join(parts, "/")
}

func TestApplySysctlsErrors(t *testing.T) {
	t.Run("missing interface", func(t *testing.T) {
		root := writeSysctlTree(t, kernelDefaults("eth0"))
		_, err := ApplySysctls(root, ForwardingSysctls([]string{"eth9"}), slog.New(slog.DiscardHandler))
		if err == nil || !strings.Contains(err.Error(), "net.ipv6.conf.eth9.accept_ra") || !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("error = %v, want a missing net.ipv6.conf.eth9.accept_ra", err)
		}
		if _, statErr := os.Stat(filepath.Join(root, "net/ipv6/conf/eth9")); !os.IsNotExist(statErr) {
			t.Errorf("ApplySysctls created settings for a missing interface")
		}
	})
	t.Run("missing root", func(t *testing.T) {
		_, err := PlanSysctls(filepath.Join(t.TempDir(), "absent"), ForwardingSysctls(nil))
		if err == nil {
			t.Error("PlanSysctls on a missing root succeeded")
		}
	})
	t.Run("value the kernel does not keep", func(t *testing.T) {
		root := writeSysctlTree(t, map[string]string{"net/ipv4/ip_forward": "0"})
		// A directory in place of the file: writing fails like a read-only sysctl.
		bad := []Sysctl{{Path: "net/ipv4/ip_forward", Value: "1"}, {Path: "net/ipv4/conf", Value: "1"}}
		changes, err := ApplySysctls(root, bad, slog.New(slog.DiscardHandler))
		if err == nil {
			t.Fatal("ApplySysctls succeeded")
		}
		if len(changes) != 1 || changes[0].Name != "net.ipv4.ip_forward" {
			t.Errorf("changes before the failure = %v, want ip_forward", changes)
		}
	})
}

// requireRoot fails under CI, where root is expected, and skips elsewhere.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("needs root (CI=true: not skipping)")
	}
	t.Skip("needs root")
}

// TestApplySysctlsNetns applies the settings to a real kernel, in a network
// namespace of its own with a veth NIC.
func TestApplySysctlsNetns(t *testing.T) {
	requireRoot(t)

	// The namespace belongs to this thread; /proc/sys/net shows the
	// namespace of the thread that opens it.
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("new netns: %v", err)
	}
	defer func() {
		ns.Close()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: the runtime then discards it.
			t.Errorf("restore netns: %v", err)
			return
		}
		runtime.UnlockOSThread()
	}()

	const nic = "nwtest0"
	// The namespace, and the pair with it, vanish when the last handle closes.
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: nic}, PeerName: nic + "p"}); err != nil {
		t.Fatalf("add veth pair: %v", err)
	}
	// Start from what natwall must fix, whatever the namespace's defaults are.
	start := []Sysctl{
		{Path: "net/ipv4/ip_forward", Value: "0"},
		{Path: "net/ipv4/conf/all/rp_filter", Value: "1"},
		{Path: "net/ipv4/conf/" + nic + "/rp_filter", Value: "1"},
		{Path: "net/ipv4/conf/" + nic + "/send_redirects", Value: "1"},
		{Path: "net/ipv6/conf/" + nic + "/accept_ra", Value: "1"},
	}
	for _, s := range start {
		if err := writeSysctl(ProcSys, s.Path, s.Value); err != nil {
			t.Fatal(err)
		}
	}

	var logs bytes.Buffer
	changes, err := ApplySysctls(ProcSys, ForwardingSysctls([]string{nic}), slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("ApplySysctls: %v", err)
	}
	changed := map[string]SysctlChange{}
	for _, c := range changes {
		changed[c.Name] = c
	}
	for _, want := range []SysctlChange{
		{Name: "net.ipv4.ip_forward", Old: "0", New: "1"},
		{Name: "net.ipv4.conf.all.rp_filter", Old: "1", New: "2"},
		{Name: "net.ipv4.conf." + nic + ".rp_filter", Old: "1", New: "2"},
		{Name: "net.ipv4.conf." + nic + ".send_redirects", Old: "1", New: "0"},
		{Name: "net.ipv6.conf." + nic + ".accept_ra", Old: "1", New: "2"},
	} {
		if changed[want.Name] != want {
			t.Errorf("change of %s = %+v, want %+v", want.Name, changed[want.Name], want)
		}
	}
	for _, s := range ForwardingSysctls([]string{nic}) {
		got, err := readSysctl(ProcSys, s.Path)
		if err != nil {
			t.Fatal(err)
		}
		if !s.satisfiedBy(got) {
			t.Errorf("%s = %s after apply, want %s", s.Name(), got, s.Value)
		}
	}
	if again, err := PlanSysctls(ProcSys, ForwardingSysctls([]string{nic})); err != nil || len(again) != 0 {
		t.Errorf("PlanSysctls after apply = %v, %v; want nothing left", again, err)
	}
}
