package test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/natwall/natwall/test/lab"
)

// procCPU is a process's user and system CPU time, from /proc/<pid>/stat.
func procCPU(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// Fields after the command name, which may hold spaces.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond // USER_HZ is 100
}

// benchDaemon runs bin with config in the lab's appliance until healthy,
// scraping /metrics every 5s as Prometheus would.
func benchDaemon(b *testing.B, l *lab.Lab, bin, config string) (pid int, stop func()) {
	b.Helper()
	path := filepath.Join(b.TempDir(), "natwall.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		b.Fatal(err)
	}
	proc, err := l.Appliance.Start(bin, "run", "--config", path)
	if err != nil {
		b.Fatal(err)
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return l.Appliance.Dial(ctx, network, addr)
	}}}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get("http://" + metricsListen + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("natwall not healthy: %v\n%s", err, proc.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(5 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if resp, err := client.Get("http://" + metricsListen + "/metrics"); err == nil {
					resp.Body.Close()
				}
			}
		}
	}()
	return proc.Pid(), func() {
		close(done)
		if err := proc.Stop(); err != nil {
			b.Errorf("natwall did not stop cleanly: %v\n%s", err, proc.Output())
		}
	}
}

// benchMetric is the sum of a metric family's samples on the daemon's
// /metrics: it proves the flows a case counts on exist.
func benchMetric(b *testing.B, l *lab.Lab, name string) float64 {
	b.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return l.Appliance.Dial(ctx, network, addr)
	}}}
	resp, err := client.Get("http://" + metricsListen + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		b.Fatal(err)
	}
	sum := 0.0
	for _, m := range families[name].GetMetric() {
		sum += m.GetGauge().GetValue() + m.GetCounter().GetValue()
	}
	return sum
}

// sendFlows opens sockets UDP sockets on the client and sends one datagram
// per (socket, destination port), ports from 1024 up, at rate flows per
// second: every datagram is a new flow. The server drops them.
func sendFlows(b *testing.B, client *lab.Host, dst netip.Addr, sockets, perSocket int, rate float64) {
	b.Helper()
	conns := make([]net.PacketConn, sockets)
	for i := range conns {
		c, err := client.NS.ListenPacket("udp4", netip.AddrPortFrom(client.IPv4, 0).String())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		conns[i] = c
	}
	start := time.Now()
	sent := 0
	payload := []byte("flow")
	for p := 0; p < perSocket; p++ {
		for _, c := range conns {
			c.WriteTo(payload, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, uint16(1024+p))))
			sent++
		}
		if rate > 0 {
			if ahead := time.Duration(float64(sent)/rate*float64(time.Second)) - time.Since(start); ahead > 0 {
				time.Sleep(ahead)
			}
		}
	}
}

// BenchmarkDaemonFlowCost measures natwall run's own CPU time while
// real traffic creates flows at a fixed rate, and while 100,000 flows
// and 200,000 flows stay established and are refreshed, net of the idle
// daemon. NWBENCH_BIN picks another binary (an older natwall, for
// before/after), NWBENCH_EVE adds eve.output (file) for binaries that
// have it.
func BenchmarkDaemonFlowCost(b *testing.B) {
	bin := natwallBin
	if env := os.Getenv("NWBENCH_BIN"); env != "" {
		bin = env
	}
	l := lab.NewT(b, lab.Options{Shape: lab.TwoNIC})
	if err := l.LikeRealNICs(context.Background()); err != nil {
		b.Fatal(err)
	}
	server, client := l.Servers[0], l.Clients[0]
	if out, err := server.NS.Run(context.Background(), "iptables", "-A", "INPUT", "-p", "udp", "-j", "DROP"); err != nil {
		b.Fatalf("iptables: %v\n%s", err, out)
	}
	pinDir := fmt.Sprintf("/sys/fs/bpf/natwall-bench-%d", os.Getpid())
	b.Cleanup(func() { os.RemoveAll(pinDir) })
	eve := ""
	if os.Getenv("NWBENCH_EVE") != "" {
		eve = fmt.Sprintf("eve:\n  output: file\n  path: %s\n", filepath.Join(b.TempDir(), "eve.json"))
	}
	config := func(udpTimeout string) string {
		// Every flow stays unanswered (the server drops them): no
		// per-source limit, or all but the first 4,096 would be refused.
		return natwallConfig(l, pinDir, natConfig(fmt.Sprintf("conntrack:\n  table_size: 524288\n  unanswered_per_source: 0\n  gc_interval: 10s\n  timeouts: {udp: %s}\n%s", udpTimeout, eve)))
	}
	config = func(f func(string) string) func(string) string {
		return func(s string) string { return strings.Replace(f(s), "  level: debug\n", "", 1) }
	}(config)

	// New flows: 5,000 per second for 10 seconds, each ended by the
	// collector 2s after its only packet (or by the dataplane).
	pid, stop := benchDaemon(b, l, bin, config("2s"))
	time.Sleep(2 * time.Second)
	c0 := procCPU(b, pid)
	time.Sleep(10 * time.Second)
	idle := procCPU(b, pid) - c0 // per 10s
	const newRate, newFlows = 5000, 50000
	if out := os.Getenv("NWBENCH_PERF"); out != "" {
		// Profile the daemon through the new-flow phase.
		perf := exec.Command("perf", "record", "-g", "-p", strconv.Itoa(pid), "-o", out, "--", "sleep", "22")
		if err := perf.Start(); err != nil {
			b.Fatal(err)
		}
		defer perf.Wait()
	}
	c1 := procCPU(b, pid)
	t1 := time.Now()
	sendFlows(b, client, server.IPv4, 50, newFlows/50, newRate)
	time.Sleep(13 * time.Second) // every flow expired and collected
	window := time.Since(t1)
	if created := benchMetric(b, l, "natwall_flows_created_total"); created < newFlows*0.95 {
		b.Fatalf("the dataplane created %v flows of the %d sent", created, newFlows)
	}
	newCost := procCPU(b, pid) - c1 - time.Duration(float64(idle)*window.Seconds()/10)
	stop()

	// Established: 100,000 and then 200,000 flows that do not time out,
	// each refreshed by one more datagram during the 30-second window
	// (the client's sending costs the daemon nothing: only its own CPU
	// time is counted).
	const estWindow = 30 * time.Second
	estCost := map[int]time.Duration{}
	for _, flows := range []int{100000, 200000} {
		pid, stop = benchDaemon(b, l, bin, config("1h"))
		sockets := flows / 1000
		sendFlows(b, client, server.IPv4, sockets, 1000, 20000)
		time.Sleep(3 * time.Second)
		c2 := procCPU(b, pid)
		t2 := time.Now()
		sendFlows(b, client, server.IPv4, sockets, 1000, float64(flows)/(estWindow.Seconds()-5))
		time.Sleep(estWindow - time.Since(t2))
		estCost[flows] = procCPU(b, pid) - c2 - time.Duration(float64(idle)*estWindow.Seconds()/10)
		if active := benchMetric(b, l, "natwall_flows_active"); active < float64(flows)*0.95 {
			b.Fatalf("%v flows tracked at the last collection, want %d", active, flows)
		}
		stop()
	}

	perFlow := newCost / newFlows
	b.ReportMetric(float64(idle)/float64(time.Millisecond)/10, "idle-cpu-ms/s")
	// CPU milliseconds per second per 1,000 new flows/s: also per mille of a core.
	b.ReportMetric(float64(perFlow*1000)/float64(time.Millisecond), "cpu-ms/s-per-1k-new-flows/s")
	for flows, cost := range estCost {
		b.ReportMetric(float64(cost)/float64(time.Millisecond)/estWindow.Seconds(), fmt.Sprintf("cpu-ms/s-at-%dk-established", flows/1000))
	}
	b.Logf("%s: idle %v/10s; %d new flows cost %v (%v each); 100k established cost %v, 200k %v over %v",
		filepath.Base(bin), idle, newFlows, newCost, perFlow, estCost[100000], estCost[200000], estWindow)
}
