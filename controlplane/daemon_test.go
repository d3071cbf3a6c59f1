package controlplane

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/natwall/natwall/dataplane"
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
			if v, _ := readSysctl(d.sysctlRoot, "net/ipv4/ip_forward"); v != "1" {
				t.Errorf("ip_forward = %s after start, want 1", v)
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

// TestRunWarnsAboutMalformedPass checks that malformed_action: pass is
// announced at start, and drop is not.
func TestRunWarnsAboutMalformedPass(t *testing.T) {
	const warning = `"level":"WARN","msg":"malformed_action is pass: the kernel forwards the packets natwall could not check`
	for _, action := range []dataplane.MalformedAction{dataplane.MalformedPass, dataplane.MalformedDrop} {
		t.Run(action.String(), func(t *testing.T) {
			cfg := testDaemonConfig()
			cfg.MalformedAction = action
			dp := &fakeDataplane{}
			dp.attached.Store(true)
			d, logs, _ := testDaemon(t, cfg, dp)
			r := start(t, d)
			r.waitReady(t)
			if err := r.stop(t); err != nil {
				t.Errorf("run = %v", err)
			}
			if got := strings.Contains(logs.String(), warning); got != (action == dataplane.MalformedPass) {
				t.Errorf("malformed_action %s: warning logged = %v, want %v:\n%s", action, got, action == dataplane.MalformedPass, logs)
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
		wantSysctls bool
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
			name:        "dataplane refuses",
			openErr:     dataplane.ErrLocked,
			wantErr:     "open dataplane: " + dataplane.ErrLocked.Error(),
			wantOpened:  true,
			wantSysctls: true,
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
			if v, _ := readSysctl(d.sysctlRoot, "net/ipv4/ip_forward"); (v == "1") != tt.wantSysctls {
				t.Errorf("ip_forward = %s; sysctls applied should be %v", v, tt.wantSysctls)
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
