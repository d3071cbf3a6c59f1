// Package test holds natwall's integration tests: the real natwall binary
// runs in a lab appliance namespace (test/lab) and real clients and servers
// send traffic through it.
package test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/natwall/natwall/test/lab"
)

// natwallBin is the natwall binary TestMain builds for this run.
var natwallBin string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "natwall-test-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	natwallBin = filepath.Join(dir, "natwall")
	build := exec.Command("go", "build", "-o", natwallBin, "../cmd/natwall")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build natwall:", err)
		return 1
	}
	return m.Run()
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

var pinCounter atomic.Int32

// appliance is natwall running in a lab's appliance namespace.
type appliance struct {
	lab    *lab.Lab
	proc   *lab.Process
	pinDir string
	// socket is the daemon's API socket.
	socket string
	config string
	http   *http.Client
	// bin is the natwall binary start runs; empty is natwallBin.
	bin string
}

const metricsListen = "127.0.0.1:9617"

// natwallConfig is the config every test starts from; extra YAML is
// appended to it. Its API socket is apiSocket(pinDir).
func natwallConfig(l *lab.Lab, pinDir, extra string) string {
	return fmt.Sprintf(`interfaces: [%s]
inside_networks: [%s, %s]
pin_dir: %s
metrics:
  listen: %s
api:
  socket: %s
log:
  level: debug
  format: text
%s`, strings.Join(l.ApplianceNICs, ", "), lab.InsideNetworkV4, lab.InsideNetworkV6, pinDir, metricsListen, apiSocket(pinDir), extra)
}

// apiSocket is the API socket of the daemon pinned at pinDir, in a
// directory of its own named like the pin directory (with the pid).
func apiSocket(pinDir string) string {
	return filepath.Join("/run", filepath.Base(pinDir), "natwall.sock")
}

// startNatwall runs `natwall run` in the appliance and waits until it
// reports healthy. It is stopped, and its pinned state checked gone, when
// the test ends.
func startNatwall(t testing.TB, l *lab.Lab, extraConfig string) *appliance {
	t.Helper()
	return startNatwallBin(t, l, "", extraConfig)
}

// startNatwallBin is startNatwall running bin (empty: natwallBin).
func startNatwallBin(t testing.TB, l *lab.Lab, bin, extraConfig string) *appliance {
	t.Helper()
	a := &appliance{
		bin:    bin,
		lab:    l,
		pinDir: fmt.Sprintf("/sys/fs/bpf/natwall-test-%d-%d", os.Getpid(), pinCounter.Add(1)),
	}
	a.config = filepath.Join(t.TempDir(), "natwall.yaml")
	if err := os.WriteFile(a.config, []byte(natwallConfig(l, a.pinDir, extraConfig)), 0o600); err != nil {
		t.Fatal(err)
	}
	a.http = &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return l.Appliance.Dial(ctx, network, addr)
		}},
	}
	a.socket = apiSocket(a.pinDir)
	t.Cleanup(func() { os.RemoveAll(a.pinDir); os.RemoveAll(filepath.Dir(a.socket)) })
	a.start(t)
	t.Cleanup(func() { a.stop(t) })
	return a
}

func (a *appliance) start(t testing.TB) {
	t.Helper()
	bin := a.bin
	if bin == "" {
		bin = natwallBin
	}
	proc, err := a.lab.Appliance.Start(bin, "run", "--config", a.config)
	if err != nil {
		t.Fatal(err)
	}
	a.proc = proc
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := a.http.Get("http://" + metricsListen + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-proc.Done():
			t.Fatalf("natwall exited before it was healthy:\n%s", proc.Output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("natwall not healthy after 20s (last error %v):\n%s", err, proc.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM and expects a clean exit.
func (a *appliance) stop(t testing.TB) {
	t.Helper()
	if a.proc == nil {
		return
	}
	err := a.proc.Stop()
	if err != nil {
		t.Errorf("natwall did not exit cleanly: %v\n%s", err, a.proc.Output())
	}
	a.proc = nil
}

// metrics scrapes /metrics.
func (a *appliance) metrics(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := a.http.Get("http://" + metricsListen + "/metrics")
	if err != nil {
		t.Fatalf("scrape metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse metrics: %v", err)
	}
	return families
}

// packets returns natwall_packets_total by reason.
func (a *appliance) packets(t *testing.T) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	fam := a.metrics(t)["natwall_packets_total"]
	if fam == nil {
		t.Fatal("no natwall_packets_total in /metrics")
	}
	for _, m := range fam.Metric {
		for _, l := range m.Label {
			if l.GetName() == "reason" {
				out[l.GetValue()] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// metricValue returns a natwall gauge or counter, summed over its series,
// or over those with a label of value labelValue when given.
func (a *appliance) metricValue(t *testing.T, name string, labelValue ...string) float64 {
	t.Helper()
	fam := a.metrics(t)[name]
	if fam == nil {
		t.Fatalf("no %s in /metrics", name)
	}
	total := 0.0
	for _, m := range fam.Metric {
		if len(labelValue) > 0 && !slices.ContainsFunc(m.Label, func(l *dto.LabelPair) bool { return l.GetValue() == labelValue[0] }) {
			continue
		}
		if m.Gauge != nil {
			total += m.Gauge.GetValue()
		} else {
			total += m.Counter.GetValue()
		}
	}
	return total
}

// forwarded is how many packets natwall forwarded in XDP.
func forwarded(p map[string]float64) float64 { return p["fwd_tx"] + p["fwd_redirect"] }

// newLab builds a lab whose hosts send like real NICs (see LikeRealNICs).
func newLab(t *testing.T, opts lab.Options) *lab.Lab {
	t.Helper()
	l := lab.NewT(t, opts)
	if err := l.LikeRealNICs(testContext(t)); err != nil {
		t.Fatal(err)
	}
	return l
}

// warmUp pings dst until it answers: the first packets after natwall
// attaches may meet a NIC restarting for XDP or neighbours being resolved,
// neither of which is what a test is about.
func warmUp(t *testing.T, ns *lab.NetNS, dst netip.Addr) {
	t.Helper()
	ctx := testContext(t)
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := ns.Ping(ctx, dst)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never answered a ping from %s: %v", dst, ns, err)
		}
	}
}
