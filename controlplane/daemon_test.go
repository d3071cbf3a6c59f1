package controlplane

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/natwall/natwall/dataplane"
	"github.com/natwall/natwall/rules"
)

// syncBuffer is a log sink the daemon's goroutines may write concurrently.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func testDaemonConfig() Config {
	return Config{
		Interfaces:      []string{"eth0"},
		XDPMode:         dataplane.ModeGeneric,
		InsideNetworks:  []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24")},
		MalformedAction: dataplane.MalformedPass,
		PinDir:          "/sys/fs/bpf/natwall-test",
		OnExit:          ExitDetach,
		Metrics:         MetricsConfig{Listen: "127.0.0.1:0"},
		Sysctl:          SysctlConfig{Manage: true},
		// As LoadConfig fills it: 0 would mean no limit.
		Conntrack: ConntrackConfig{UnansweredPerSource: dataplane.DefaultUnansweredPerSource},
	}
}

// testDaemon returns a daemon over a fake dataplane and a fake /proc/sys.
func testDaemon(t *testing.T, cfg Config, dp *fakeDataplane) (*daemon, *syncBuffer, *[]dataplane.Options) {
	t.Helper()
	logs := &syncBuffer{}
	var opened []dataplane.Options
	d := &daemon{
		cfg:        cfg,
		log:        slog.New(slog.NewJSONHandler(logs, nil)),
		sysctlRoot: writeSysctlTree(t, kernelDefaults(cfg.Interfaces...)),
		// The NICs that exist are those the fake /proc/sys has.
		interfaceExists: func(name string) error {
			if !slices.Contains(cfg.Interfaces, name) {
				return errors.New("no such network interface")
			}
			return nil
		},
		openDataplane: func(opts dataplane.Options) (Dataplane, error) {
			opened = append(opened, opts)
			return dp, nil
		},
	}
	return d, logs, &opened
}

type listeners struct{ metrics, health string }

// running is a daemon started by start; done closes when run returns.
type running struct {
	cancel context.CancelFunc
	ready  chan listeners
	done   chan struct{}
	err    error
}

// start runs d until the test cancels it or ends.
func start(t *testing.T, d *daemon) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	r := &running{cancel: cancel, ready: make(chan listeners, 1), done: make(chan struct{})}
	d.ready = func(m, h *httpServer) {
		l := listeners{metrics: m.Addr().String()}
		if h != nil {
			l.health = h.Addr().String()
		}
		r.ready <- l
	}
	go func() {
		r.err = d.run(ctx)
		close(r.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

func (r *running) waitReady(t *testing.T) listeners {
	t.Helper()
	select {
	case l := <-r.ready:
		return l
	case <-r.done:
		t.Fatalf("run returned before serving: %v", r.err)
	case <-time.After(10 * time.Second):
		t.Fatal("daemon not ready after 10s")
	}
	return listeners{}
}

// stop cancels the daemon and returns what run returned.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case <-r.done:
		return r.err
	case <-time.After(shutdownTimeout + 5*time.Second):
		t.Fatal("run did not return after cancel")
		return nil
	}
}

func TestRunLifecycle(t *testing.T) {
	tests := []struct {
		name         string
		onExit       ExitAction
		healthListen string
		wantClosed   int
		wantDetached int
	}{
		{name: "detach on exit", onExit: ExitDetach, wantDetached: 1},
		{name: "keep on exit", onExit: ExitKeep, wantClosed: 1},
		{name: "separate health listener", onExit: ExitDetach, healthListen: "127.0.0.1:0", wantDetached: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testDaemonConfig()
			cfg.OnExit = tt.onExit
			cfg.Health.Listen = tt.healthListen
			dp := &fakeDataplane{attachments: []dataplane.Attachment{{Interface: "eth0", Ifindex: 2, Mode: dataplane.ModeGeneric}}}
			dp.attached.Store(true)
			d, logs, opened := testDaemon(t, cfg, dp)

			r := start(t, d)
			l := r.waitReady(t)
			if v, _ := readSysctl(d.sysctlRoot, "net/ipv4/ip_forward"); v != "1" {
				t.Errorf("ip_forward = %s while running, want 1", v)
			}

			if code, body := get(t, "http://"+l.metrics+HealthPath); code != http.StatusOK || body != "ok" {
				t.Errorf("metrics listener %s = %d %q, want 200 ok", HealthPath, code, body)
			}
			if code, body := get(t, "http://"+l.metrics+MetricsPath); code != http.StatusOK ||
				!strings.Contains(body, `natwall_xdp_attached{interface="eth0",mode="generic"} 1`) ||
				!strings.Contains(body, "process_start_time_seconds") {
				t.Errorf("GET %s = %d, body without natwall_xdp_attached or process metrics:\n%s", MetricsPath, code, body)
			}
			if tt.healthListen != "" {
				if code, _ := get(t, "http://"+l.health+HealthPath); code != http.StatusOK {
					t.Errorf("health listener %s = %d, want 200", HealthPath, code)
				}
				if code, _ := get(t, "http://"+l.health+MetricsPath); code != http.StatusNotFound {
					t.Errorf("health listener serves %s: %d, want 404", MetricsPath, code)
				}
			}
			dp.attached.Store(false)
			for _, addr := range []string{l.metrics, l.health} {
				if addr == "" {
					continue
				}
				if code, _ := get(t, "http://"+addr+HealthPath); code != http.StatusServiceUnavailable {
					t.Errorf("%s on %s after detach by someone else = %d, want 503", HealthPath, addr, code)
				}
			}

			if err := r.stop(t); err != nil {
				t.Errorf("run = %v, want nil after cancel", err)
			}
			if closed, detached := dp.stops(); closed != tt.wantClosed || detached != tt.wantDetached {
				t.Errorf("on_exit %s: Close %d, Detach %d times; want %d, %d", tt.onExit, closed, detached, tt.wantClosed, tt.wantDetached)
			}
			if _, err := net.Dial("tcp", l.metrics); err == nil {
				t.Error("metrics listener still open after run returned")
			}

			wantSettings := dataplane.DefaultSettings()
			wantSettings.MalformedAction = dataplane.MalformedPass
			wantSettings.Inside = cfg.InsideNetworks
			want := dataplane.Options{
				Interfaces: cfg.Interfaces, Mode: dataplane.ModeGeneric, PinDir: cfg.PinDir,
				Settings: wantSettings, Logger: d.log,
			}
			if len(*opened) != 1 || !reflect.DeepEqual((*opened)[0], want) {
				t.Errorf("dataplane opened with %+v, want %+v", *opened, want)
			}
			for _, msg := range []string{`"msg":"natwall starting"`, `"msg":"sysctl changed"`, `"msg":"natwall running"`, `"msg":"natwall stopping"`} {
				if !strings.Contains(logs.String(), msg) {
					t.Errorf("log lacks %s:\n%s", msg, logs)
				}
			}
		})
	}
}

func TestRunWarnsAboutGenericFallback(t *testing.T) {
	dp := &fakeDataplane{attachments: []dataplane.Attachment{{Interface: "eth0", Mode: dataplane.ModeGeneric, FellBack: true}}}
	dp.attached.Store(true)
	d, logs, _ := testDaemon(t, testDaemonConfig(), dp)
	r := start(t, d)
	r.waitReady(t)
	if err := r.stop(t); err != nil {
		t.Errorf("run = %v", err)
	}
	if !strings.Contains(logs.String(), `"level":"WARN","msg":"xdp running in generic mode`) {
		t.Errorf("no generic-mode warning in\n%s", logs)
	}
}

// TestRunWarnsAboutUnfilteredSettings: every setting that hands the
// kernel traffic natwall did not check is announced at start, and its safe
// value is not; the setting reaches the dataplane either way.
func TestRunWarnsAboutUnfilteredSettings(t *testing.T) {
	tests := []struct {
		name    string
		set     func(*Config)
		warning string // "" for none
		check   func(dataplane.Settings) bool
	}{
		{"malformed drop", func(c *Config) { c.MalformedAction = dataplane.MalformedDrop }, "",
			func(s dataplane.Settings) bool { return s.MalformedAction == dataplane.MalformedDrop }},
		{"malformed pass", func(c *Config) { c.MalformedAction = dataplane.MalformedPass },
			`"level":"WARN","msg":"malformed_action is pass: the kernel forwards the packets natwall could not check`,
			func(s dataplane.Settings) bool { return s.MalformedAction == dataplane.MalformedPass }},
		{"vlan drop", func(c *Config) { c.VLANAction = dataplane.VLANDrop }, "",
			func(s dataplane.Settings) bool { return s.VLANAction == dataplane.VLANDrop }},
		{"vlan pass", func(c *Config) { c.VLANAction = dataplane.VLANPass }, "vlan_action is pass",
			func(s dataplane.Settings) bool { return s.VLANAction == dataplane.VLANPass }},
		{"reverse path strict", func(c *Config) { c.ReversePath = dataplane.ReversePathStrict }, "",
			func(s dataplane.Settings) bool { return s.ReversePath == dataplane.ReversePathStrict }},
		{"reverse path off", func(c *Config) { c.ReversePath = dataplane.ReversePathOff }, "reverse_path is off",
			func(s dataplane.Settings) bool { return s.ReversePath == dataplane.ReversePathOff }},
	}
	warnings := []string{"malformed_action is pass", "vlan_action is pass", "reverse_path is off"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testDaemonConfig()
			cfg.MalformedAction = dataplane.MalformedDrop
			tt.set(&cfg)
			dp := &fakeDataplane{}
			dp.attached.Store(true)
			d, logs, opened := testDaemon(t, cfg, dp)
			r := start(t, d)
			r.waitReady(t)
			if err := r.stop(t); err != nil {
				t.Errorf("run = %v", err)
			}
			if len(*opened) != 1 || !tt.check((*opened)[0].Settings) {
				t.Errorf("dataplane opened with %+v", *opened)
			}
			for _, w := range warnings {
				want := tt.warning != "" && strings.Contains(tt.warning, w)
				if got := strings.Contains(logs.String(), w); got != want {
					t.Errorf("warning %q logged = %v, want %v:\n%s", w, got, want, logs)
				}
			}
			if tt.warning != "" && !strings.Contains(logs.String(), tt.warning) {
				t.Errorf("log lacks %q:\n%s", tt.warning, logs)
			}
		})
	}
}

func TestRunSysctlsUnmanaged(t *testing.T) {
	cfg := testDaemonConfig()
	cfg.Sysctl.Manage = false
	dp := &fakeDataplane{}
	d, logs, _ := testDaemon(t, cfg, dp)
	r := start(t, d)
	r.waitReady(t)
	if err := r.stop(t); err != nil {
		t.Errorf("run = %v", err)
	}
	if v, _ := readSysctl(d.sysctlRoot, "net/ipv4/ip_forward"); v != "0" {
		t.Errorf("ip_forward = %s with sysctl.manage false, want it untouched (0)", v)
	}
	if !strings.Contains(logs.String(), `"sysctl":"net.ipv4.ip_forward","current":"0","needed":"1"`) {
		t.Errorf("no warning about ip_forward in\n%s", logs)
	}
}

// TestRunFailures checks that each startup failure is reported, leaves no
// listener behind, and that nothing is changed before the port is bound.
func TestRunFailures(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()

	tests := []struct {
		name        string
		mutate      func(*Config)
		openErr     error
		wantErr     string
		wantOpened  bool
		wantForward bool
	}{
		{
			name:    "metrics port taken",
			mutate:  func(c *Config) { c.Metrics.Listen = taken.Addr().String() },
			wantErr: "listen for metrics on " + taken.Addr().String(),
		},
		{
			name:    "health port taken",
			mutate:  func(c *Config) { c.Health.Listen = taken.Addr().String() },
			wantErr: "listen for health on " + taken.Addr().String(),
		},
		{
			name:    "missing interface",
			mutate:  func(c *Config) { c.Interfaces = []string{"eth0", "eth9"} },
			wantErr: "interface eth9 does not exist in natwall's network namespace",
		},
		{
			// Unmanaged sysctls used to let this reach the dataplane,
			// which pinned its maps before failing.
			name: "missing interface, sysctls unmanaged",
			mutate: func(c *Config) {
				c.Interfaces = []string{"eth9"}
				c.Sysctl.Manage = false
			},
			wantErr: "interface eth9 does not exist in natwall's network namespace",
		},
		{
			// Before: the dataplane was opened and attached with the
			// built-in policy, and with on_exit keep left so.
			name:    "rule path that does not load",
			mutate:  func(c *Config) { c.RulePaths = []string{"/nonexistent/natwall-rules.yaml"} },
			wantErr: "rules: ",
		},
		{
			// Forwarding stays off: nothing enforces.
			name:       "dataplane refuses",
			openErr:    dataplane.ErrLocked,
			wantErr:    "open dataplane: " + dataplane.ErrLocked.Error(),
			wantOpened: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testDaemonConfig()
			cfg.Metrics.Listen = "127.0.0.1:0"
			if tt.mutate != nil {
				tt.mutate(&cfg)
			}
			dp := &fakeDataplane{}
			d, _, _ := testDaemon(t, cfg, dp)
			d.sysctlRoot = writeSysctlTree(t, kernelDefaults("eth0"))
			d.interfaceExists = func(name string) error {
				if name != "eth0" {
					return errors.New("no such network interface")
				}
				return nil
			}
			opened := false
			d.openDataplane = func(dataplane.Options) (Dataplane, error) {
				opened = true
				if tt.openErr != nil {
					return nil, tt.openErr
				}
				return dp, nil
			}
			var bound []string
			d.ready = func(m, _ *httpServer) { bound = append(bound, m.Addr().String()) }

			err := d.run(t.Context())
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("run = %v, want an error containing %q", err, tt.wantErr)
			}
			if tt.openErr != nil && !errors.Is(err, tt.openErr) {
				t.Errorf("run error %v does not wrap %v", err, tt.openErr)
			}
			if opened != tt.wantOpened {
				t.Errorf("dataplane opened = %v, want %v", opened, tt.wantOpened)
			}
			if len(bound) != 0 {
				t.Errorf("served on %v despite the failure", bound)
			}
			if v, _ := readSysctl(d.sysctlRoot, "net/ipv4/ip_forward"); (v == "1") != tt.wantForward {
				t.Errorf("ip_forward = %s after the failed start; forwarding should be %v", v, tt.wantForward)
			}
			if closed, detached := dp.stops(); closed+detached != 0 {
				t.Errorf("dataplane stopped (%d, %d) though it never opened", closed, detached)
			}
		})
	}
}

func TestNewLogger(t *testing.T) {
	tests := []struct {
		cfg       LogConfig
		wantJSON  bool
		wantDebug bool
	}{
		{LogConfig{Level: slog.LevelInfo, Format: LogAuto}, true, false}, // a buffer is no terminal
		{LogConfig{Level: slog.LevelDebug, Format: LogJSON}, true, true},
		{LogConfig{Level: slog.LevelWarn, Format: LogText}, false, false},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		log := NewLogger(tt.cfg, &buf)
		log.Debug("d")
		log.Warn("w", "interface", "eth0")
		out := buf.String()
		if isJSON := strings.HasPrefix(out, "{"); isJSON != tt.wantJSON {
			t.Errorf("%+v: output %q, JSON = %v, want %v", tt.cfg, out, isJSON, tt.wantJSON)
		}
		if hasDebug := strings.Contains(out, "DEBUG"); hasDebug != tt.wantDebug {
			t.Errorf("%+v: output %q, debug logged = %v, want %v", tt.cfg, out, hasDebug, tt.wantDebug)
		}
	}
}

// TestForwardingOnlyWhileEnforcing follows the forwarding switches through
// a daemon's life: off while the dataplane attaches (the kernel would
// forward unfiltered), on once it enforces, off again before a detach, and
// untouched while a dataplane left pinned by an earlier daemon still
// enforces or when the admin manages sysctls.
func TestForwardingOnlyWhileEnforcing(t *testing.T) {
	tests := []struct {
		name        string
		unmanaged   bool
		pinned      []string
		onExit      ExitAction
		wantAtOpen  string // ip_forward when the dataplane is opened
		wantRunning string
		wantStopped string
		wantLog     string
	}{
		{name: "fresh start, detach", onExit: ExitDetach, wantAtOpen: "0", wantRunning: "1", wantStopped: "0",
			wantLog: "the kernel was forwarding with no natwall attached"},
		{name: "fresh start, keep", onExit: ExitKeep, wantAtOpen: "0", wantRunning: "1", wantStopped: "1",
			wantLog: "forwarding on: the dataplane enforces the rules"},
		{name: "takeover of a pinned dataplane", pinned: []string{"eth0"}, onExit: ExitDetach,
			wantAtOpen: "1", wantRunning: "1", wantStopped: "0", wantLog: "taking over a dataplane that still enforces"},
		{name: "unmanaged", unmanaged: true, onExit: ExitDetach, wantAtOpen: "1", wantRunning: "1", wantStopped: "1",
			wantLog: "forwarding stays on after the detach because sysctl.manage is false"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testDaemonConfig()
			cfg.OnExit = tt.onExit
			cfg.Sysctl.Manage = !tt.unmanaged
			dp := &fakeDataplane{}
			dp.attached.Store(true)
			d, logs, _ := testDaemon(t, cfg, dp)
			values := kernelDefaults("eth0")
			values["net/ipv4/ip_forward"] = "1"
			values["net/ipv6/conf/all/forwarding"] = "1"
			d.sysctlRoot = writeSysctlTree(t, values)
			d.pinnedInterfaces = func(string) ([]string, error) { return tt.pinned, nil }
			var atOpen string
			d.openDataplane = func(dataplane.Options) (Dataplane, error) {
				atOpen, _ = readSysctl(d.sysctlRoot, "net/ipv4/ip_forward")
				return dp, nil
			}

			r := start(t, d)
			r.waitReady(t)
			running, _ := readSysctl(d.sysctlRoot, "net/ipv4/ip_forward")
			if err := r.stop(t); err != nil {
				t.Fatal(err)
			}
			stopped, _ := readSysctl(d.sysctlRoot, "net/ipv4/ip_forward")
			v6, _ := readSysctl(d.sysctlRoot, "net/ipv6/conf/all/forwarding")
			if atOpen != tt.wantAtOpen || running != tt.wantRunning || stopped != tt.wantStopped {
				t.Errorf("ip_forward at open %s, running %s, stopped %s; want %s, %s, %s",
					atOpen, running, stopped, tt.wantAtOpen, tt.wantRunning, tt.wantStopped)
			}
			if v6 != stopped {
				t.Errorf("ipv6 forwarding %s after stop, ip_forward %s: the switches must move together", v6, stopped)
			}
			if !strings.Contains(logs.String(), tt.wantLog) {
				t.Errorf("log lacks %q:\n%s", tt.wantLog, logs)
			}
		})
	}
}

// rulesRefused is a dataplane that opens but refuses every rule set.
type rulesRefused struct{ *fakeDataplane }

func (rulesRefused) LoadRules(_, _ *rules.StageTables) error {
	return errors.New("map update: argument list too long")
}

// TestFailedStartLeavesNothing: when the start fails after the dataplane
// opened (here the kernel refuses the rules), natwall detaches and unpins
// it even with on_exit keep, unless it took over a pinned dataplane, which
// goes on enforcing its last good rules.
func TestFailedStartLeavesNothing(t *testing.T) {
	for _, tt := range []struct {
		name                     string
		pinned                   []string
		wantClosed, wantDetached int
	}{
		{name: "fresh start", wantDetached: 1},
		{name: "takeover", pinned: []string{"eth0"}, wantClosed: 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			ruleFile := filepath.Join(dir, "rules.yaml")
			if err := os.WriteFile(ruleFile, []byte("stateful:\n  rules:\n    - {id: web, priority: 10, action: allow, protocol: tcp, dst_ports: [443]}\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := testDaemonConfig()
			cfg.OnExit = ExitKeep
			cfg.RulePaths = []string{ruleFile}
			cfg.StateDir = filepath.Join(dir, "state")
			dp := &fakeDataplane{}
			d, _, _ := testDaemon(t, cfg, dp)
			d.pinnedInterfaces = func(string) ([]string, error) { return tt.pinned, nil }
			d.openDataplane = func(dataplane.Options) (Dataplane, error) { return rulesRefused{dp}, nil }
			err := d.run(t.Context())
			if err == nil || !strings.Contains(err.Error(), "argument list too long") {
				t.Fatalf("run = %v, want the dataplane's refusal", err)
			}
			if closed, detached := dp.stops(); closed != tt.wantClosed || detached != tt.wantDetached {
				t.Errorf("Close %d, Detach %d; want %d, %d", closed, detached, tt.wantClosed, tt.wantDetached)
			}
			if v, _ := readSysctl(d.sysctlRoot, "net/ipv4/ip_forward"); v != "0" {
				t.Errorf("ip_forward = %s after the failed start, want 0", v)
			}
		})
	}
}
