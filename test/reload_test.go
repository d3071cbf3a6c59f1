package test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/natwall/natwall/test/lab"
)

// Two rule sets that both allow the UDP stream on 9000 and differ in which
// TCP port they open.
const (
	reloadRulesA = `stateful:
  default_action: deny
  rules:
    - {id: stream, priority: 10, action: allow, protocol: udp, dst_ports: [9000]}
    - {id: tcp-a, priority: 20, action: allow, protocol: tcp, dst_ports: [7000]}
    - {id: ping, priority: 30, action: allow, protocol: icmp}
`
	reloadRulesB = `stateful:
  default_action: deny
  rules:
    - {id: stream, priority: 10, action: allow, protocol: udp, dst_ports: [9000]}
    - {id: tcp-b, priority: 20, action: allow, protocol: tcp, dst_ports: [7001]}
    - {id: ping, priority: 30, action: allow, protocol: icmp}
`
)

// TestHotReload drives a live daemon's reloads: rule edits picked up from
// the file without a signal, SIGHUPs, a broken edit that leaves the last
// good set enforcing and says so in the metrics, and a restart-only config
// change. Throughout, a UDP stream that every rule set allows runs through
// the appliance, and not one of its datagrams may be lost.
func TestHotReload(t *testing.T) {
	l := newLab(t, lab.Options{Shape: lab.TwoNIC})
	dir := t.TempDir()
	ruleFile := filepath.Join(dir, "rules.yaml")
	write := func(path, body string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(ruleFile, reloadRulesA)
	a := startNatwall(t, l, fmt.Sprintf("state_dir: %s\nrules:\n  paths: [%s]\n", filepath.Join(dir, "state"), ruleFile))
	client, server := l.Clients[0], l.Servers[0]
	warmUp(t, client.NS, server.IPv4)
	ctx := testContext(t)
	for _, port := range []uint16{7000, 7001} {
		ln, err := server.NS.Listen("tcp", netip.AddrPortFrom(server.IPv4, port).String())
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go echoServer(ln)
	}
	at := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(server.IPv4, port) }
	gauge := func(name string) float64 {
		fam := a.metrics(t)[name]
		if fam == nil || len(fam.GetMetric()) != 1 {
			t.Fatalf("no %s in /metrics", name)
		}
		return fam.GetMetric()[0].GetGauge().GetValue()
	}
	reloads := func(result string) float64 {
		for _, m := range a.metrics(t)["natwall_config_reloads_total"].GetMetric() {
			if m.GetLabel()[0].GetValue() == result {
				return m.GetCounter().GetValue()
			}
		}
		return 0
	}

	stream := startUDPStream(t, ctx, client, server, 9000)

	// Alternate the rule sets ten times: by file change alone, then by
	// SIGHUP (which reloads whatever the watch has or has not seen).
	for i := range 10 {
		before := reloads("ok")
		body := reloadRulesA
		if i%2 == 0 {
			body = reloadRulesB
		}
		write(ruleFile, body)
		if i >= 5 {
			if err := a.proc.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, fmt.Sprintf("reload %d", i), func() bool { return reloads("ok") > before })
		time.Sleep(50 * time.Millisecond)
	}
	// The last set written was A.
	if _, err := dialWithin(ctx, client.NS, at(7000), 2*time.Second); err != nil {
		t.Errorf("rule set A is live, but 7000 is not reachable: %v", err)
	}
	if _, err := dialWithin(ctx, client.NS, at(7001), 500*time.Millisecond); err == nil {
		t.Error("rule set A is live, but 7001 is reachable")
	}
	sent, answered := stream.stop()
	t.Logf("UDP stream across 10 reloads: %d sent, %d answered", sent, answered)
	if sent < 500 || answered != sent {
		t.Errorf("UDP stream across reloads: %d of %d datagrams answered, want all (and at least 500 sent)", answered, sent)
	}
	if got := gauge("natwall_config_last_reload_successful"); got != 1 {
		t.Errorf("natwall_config_last_reload_successful = %v after good reloads", got)
	}

	// A broken edit: rejected, counted, and the last good set enforces.
	failedBefore := reloads("error")
	write(ruleFile, "stateful:\n  rules:\n    - {id: web, priority: 10, action: alow}\n")
	waitFor(t, "the broken edit to be rejected", func() bool { return reloads("error") > failedBefore })
	if got := gauge("natwall_config_last_reload_successful"); got != 0 {
		t.Errorf("natwall_config_last_reload_successful = %v after a broken edit, want 0", got)
	}
	if _, err := dialWithin(ctx, client.NS, at(7000), 2*time.Second); err != nil {
		t.Errorf("after a broken edit the last good rules should still allow 7000: %v", err)
	}
	resp, err := a.http.Get("http://" + metricsListen + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ready" {
		t.Errorf("/readyz after a broken edit = %d %q, want 200 ready: the last good set still enforces", resp.StatusCode, body)
	}

	// A config change that needs a restart: applied nowhere, reported.
	write(ruleFile, reloadRulesA)
	config, err := os.ReadFile(a.config)
	if err != nil {
		t.Fatal(err)
	}
	okBefore := reloads("ok")
	write(a.config, string(config)+"conntrack:\n  table_size: 4096\n")
	waitFor(t, "the config change to be reloaded", func() bool { return reloads("ok") > okBefore })
	if got := gauge("natwall_config_restart_required"); got != 1 {
		t.Errorf("natwall_config_restart_required = %v after a table_size change, want 1", got)
	}
	if got := gauge("natwall_config_last_reload_successful"); got != 1 {
		t.Errorf("natwall_config_last_reload_successful = %v after the good config edit, want 1", got)
	}
}

// udpStream sends numbered datagrams to an echo server at a steady rate
// and counts the answers.
type udpStream struct {
	cancel         context.CancelFunc
	done           chan struct{}
	sent, answered atomic.Int64
}

func startUDPStream(t *testing.T, ctx context.Context, from, to *lab.Host, port uint16) *udpStream {
	t.Helper()
	dst := netip.AddrPortFrom(to.IPv4, port)
	srv, err := serveUDPEcho(to.NS, dst.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	conn, err := from.NS.Dial(ctx, "udp4", dst.String())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &udpStream{cancel: cancel, done: make(chan struct{})}
	go func() {
		buf := make([]byte, 64)
		for {
			if _, err := conn.Read(buf); err != nil {
				return
			}
			s.answered.Add(1)
		}
	}()
	go func() {
		defer close(s.done)
		defer conn.Close()
		var msg [8]byte
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				// Let the last answers arrive.
				time.Sleep(200 * time.Millisecond)
				return
			case <-tick.C:
				binary.BigEndian.PutUint64(msg[:], uint64(s.sent.Load()))
				if _, err := conn.Write(msg[:]); err != nil {
					if ne, ok := err.(net.Error); ok && ne.Timeout() {
						continue
					}
					return
				}
				s.sent.Add(1)
			}
		}
	}()
	return s
}

func (s *udpStream) stop() (sent, answered int64) {
	s.cancel()
	<-s.done
	return s.sent.Load(), s.answered.Load()
}
