package test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/natwall/natwall/rules"
	"github.com/natwall/natwall/test/lab"
)

func dialWithin(ctx context.Context, ns *lab.NetNS, dst netip.AddrPort, d time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	start := time.Now()
	c, err := ns.Dial(ctx, "tcp", dst.String())
	if err == nil {
		c.Close()
	}
	return time.Since(start), err
}

// Rules from a file through natwall run: allow, reject (refused at once, as
// a client sees it), the default deny (a timeout); hits per rule; a reload
// on SIGHUP; a broken file on reload leaves the last good set live.
func TestRulesEnforcedAndReloaded(t *testing.T) {
	l := newLab(t, lab.Options{Shape: lab.TwoNIC})
	dir := t.TempDir()
	ruleFile := filepath.Join(dir, "rules.yaml")
	write := func(body string) {
		if err := os.WriteFile(ruleFile, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`stateful:
  default_action: deny
  rules:
    - {id: web, priority: 10, action: allow, protocol: tcp, dst_ports: [7000]}
    - {id: no-admin, priority: 20, action: reject, protocol: tcp, dst_ports: [7001]}
    - {id: ping, priority: 30, action: allow, protocol: icmp}
    - {id: ping6, priority: 31, action: allow, protocol: icmpv6}
`)
	a := startNatwall(t, l, fmt.Sprintf("state_dir: %s\nrules:\n  paths: [%s]\n", filepath.Join(dir, "state"), ruleFile))
	server, client := l.Servers[0], l.Clients[0]
	warmUp(t, client.NS, server.IPv4)
	ctx := testContext(t)
	for _, port := range []int{7000, 7001, 7002} {
		ln, err := server.NS.Listen("tcp", netip.AddrPortFrom(server.IPv4, uint16(port)).String())
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go echoServer(ln)
	}
	at := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(server.IPv4, port) }

	if _, err := dialWithin(ctx, client.NS, at(7000), 5*time.Second); err != nil {
		t.Fatalf("allowed port: %v", err)
	}
	took, err := dialWithin(ctx, client.NS, at(7001), 5*time.Second)
	if !errors.Is(err, syscall.ECONNREFUSED) || took > time.Second {
		t.Fatalf("rejected port: %v after %v, want connection refused at once", err, took)
	}
	if _, err := dialWithin(ctx, client.NS, at(7002), time.Second); err == nil || errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("denied port: %v, want a timeout (a silent drop)", err)
	}

	out, err := l.Appliance.Run(ctx, natwallBin, "rules", "-o", "json", "--socket", a.socket)
	if err != nil {
		t.Fatal(err)
	}
	var hits []struct {
		ID   string `json:"id"`
		Hits uint64 `json:"hits"`
	}
	if err := json.Unmarshal(out, &hits); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	got := map[string]uint64{}
	for _, h := range hits {
		got[h.ID] = h.Hits
	}
	if got["web"] != 1 || got["no-admin"] != 1 || len(hits) != 4 {
		t.Fatalf("rule hits %v (from %s)", got, out)
	}

	// Allow 7001 instead, and reload.
	write(`stateful:
  rules:
    - {id: web, priority: 10, action: allow, protocol: tcp, dst_ports: [7000, 7001]}
`)
	if err := a.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reloaded rule set", func() bool {
		_, err := dialWithin(ctx, client.NS, at(7001), 500*time.Millisecond)
		return err == nil
	})

	// A broken file: the last good set stays.
	write("stateful:\n  rules:\n    - {id: web, priority: 10, action: alow}\n")
	if err := a.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the failed reload to be counted", func() bool {
		fam := a.metrics(t)["natwall_config_reloads_total"]
		for _, m := range fam.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetValue() == "error" && m.GetCounter().GetValue() == 1 {
					return true
				}
			}
		}
		return false
	})
	if _, err := dialWithin(ctx, client.NS, at(7001), 2*time.Second); err != nil {
		t.Fatalf("after a broken reload the last good rules should still allow 7001: %v", err)
	}

	// explain --live answers for the set being enforced, asking the
	// daemon; offline, the broken files are the answer.
	flow := []string{"explain", "-o", "json", "--src", client.IPv4.String(), "--dst", server.IPv4.String(), "--dport", "7001"}
	for _, where := range [][]string{{"--socket", a.socket}} {
		out, err := exec.CommandContext(ctx, natwallBin, append(append(flow, "--live"), where...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("explain --live %s: %v\n%s", where[0], err, out)
		}
		var ex rules.Explanation
		if err := json.Unmarshal(out, &ex); err != nil {
			t.Fatalf("explain --live %s: %v: %s", where[0], err, out)
		}
		if d := ex.Decisions[len(ex.Decisions)-1]; d.Stage != "stateful" || d.Rule != "web" || d.Action != "allow" || d.At != ruleFile+":3:7" {
			t.Errorf("explain --live %s: %+v, want the live rule web at %s:3:7 allowing", where[0], d, ruleFile)
		}
	}
	out, err = exec.CommandContext(ctx, natwallBin, append(flow, "--rules", ruleFile)...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), ruleFile+":3:39") {
		t.Errorf("explain of the broken file: %v\n%s, want its error at %s:3:39", err, out, ruleFile)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// rules.revalidate: a reload that denies an established connection's port
// keeps it (keep, the default) or closes it (close; with invalid_tcp_reset
// the client's next segment is answered with a RST, and the flow's end is
// in the EVE log with reason forced).
func TestRevalidateOnReload(t *testing.T) {
	for _, mode := range []string{"keep", "close"} {
		t.Run(mode, func(t *testing.T) {
			l := newLab(t, lab.Options{Shape: lab.TwoNIC})
			dir := t.TempDir()
			ruleFile := filepath.Join(dir, "rules.yaml")
			write := func(port int) {
				body := fmt.Sprintf("stateful:\n  rules:\n    - {id: web, priority: 10, action: allow, protocol: tcp, dst_ports: [%d]}\n    - {id: ping, priority: 20, action: allow, protocol: icmp}\n", port)
				if err := os.WriteFile(ruleFile, []byte(body), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			write(7000)
			evePath := filepath.Join(dir, "eve.json")
			a := startNatwall(t, l, fmt.Sprintf("state_dir: %s\nrules:\n  paths: [%s]\n  revalidate: %s\nconntrack:\n  invalid_tcp_reset: true\neve:\n  output: file\n  path: %s\n",
				filepath.Join(dir, "state"), ruleFile, mode, evePath))
			server, client := l.Servers[0], l.Clients[0]
			warmUp(t, client.NS, server.IPv4)
			ctx := testContext(t)
			ln, err := server.NS.Listen("tcp", netip.AddrPortFrom(server.IPv4, 7000).String())
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go echoServer(ln)
			conn, err := client.NS.Dial(ctx, "tcp", netip.AddrPortFrom(server.IPv4, 7000).String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if err := roundTrip(conn, "before"); err != nil {
				t.Fatal(err)
			}

			write(7999) // 7000 is no longer allowed
			if err := a.proc.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the reload", func() bool {
				for _, m := range a.metrics(t)["natwall_config_reloads_total"].GetMetric() {
					if m.GetLabel()[0].GetValue() == "ok" && m.GetCounter().GetValue() == 2 {
						return true
					}
				}
				return false
			})
			err = roundTrip(conn, "after")
			switch mode {
			case "keep":
				if err != nil {
					t.Fatalf("revalidate keep: the established connection broke: %v", err)
				}
			case "close":
				if !errors.Is(err, syscall.ECONNRESET) {
					t.Fatalf("revalidate close: the connection's next segment got %v, want a reset", err)
				}
				rec := waitForEVE(t, evePath, "the closed flow's end", func(r *eveRecord) bool {
					return r.EventType == "flow" && r.DestPort == 7000 && r.Proto == "TCP"
				})
				if rec.Flow == nil || rec.Flow.Reason != "forced" || rec.Flow.PktsToServer == 0 || rec.Flow.PktsToClient == 0 {
					t.Errorf("revalidate close: flow-end record %+v, want reason forced and the packets it carried", rec.Flow)
				}
			}
			if mode == "keep" {
				time.Sleep(500 * time.Millisecond)
				for _, r := range readEVE(t, evePath) {
					if r.EventType == "flow" && r.DestPort == 7000 && r.Proto == "TCP" {
						t.Errorf("revalidate keep: a flow-end record for the connection that goes on: %+v", r.Flow)
					}
				}
			}
		})
	}
}

// Reloading under traffic never lets through a packet that neither the old
// nor the new rule set allows: rule sets A (UDP 7000) and B (UDP 7001)
// alternate twenty times while new flows to 7000, 7001 and 7002 arrive;
// nothing to 7002 may ever reach the server.
func TestReloadUnderTraffic(t *testing.T) {
	l := newLab(t, lab.Options{Shape: lab.TwoNIC})
	dir := t.TempDir()
	ruleFile := filepath.Join(dir, "rules.yaml")
	write := func(port int) {
		body := fmt.Sprintf("stateful:\n  rules:\n    - {id: only, priority: 10, action: allow, protocol: udp, dst_ports: [%d]}\n    - {id: ping, priority: 20, action: allow, protocol: icmp}\n", port)
		if err := os.WriteFile(ruleFile, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(7000)
	a := startNatwall(t, l, fmt.Sprintf("state_dir: %s\nrules:\n  paths: [%s]\n", filepath.Join(dir, "state"), ruleFile))
	server, client := l.Servers[0], l.Clients[0]
	warmUp(t, client.NS, server.IPv4)
	in0, err := l.Appliance.Interface(lab.InsideNIC)
	if err != nil {
		t.Fatal(err)
	}
	nic, err := client.NS.Interface(client.Interface)
	if err != nil {
		t.Fatal(err)
	}
	capture, err := lab.StartCapture(server.Port.NS, server.Port.Name, "udp and dst port 7002")
	if err != nil {
		t.Fatal(err)
	}
	allowed, err := lab.StartCapture(server.Port.NS, server.Port.Name, "udp and (dst port 7000 or dst port 7001)")
	if err != nil {
		t.Fatal(err)
	}

	done := make(chan error, 1)
	go func() {
		reloads := func() float64 {
			for _, m := range a.metrics(t)["natwall_config_reloads_total"].GetMetric() {
				if m.GetLabel()[0].GetValue() == "ok" {
					return m.GetCounter().GetValue()
				}
			}
			return 0
		}
		for i := 0; i < 20; i++ {
			write(7000 + (i+1)%2)
			before := reloads()
			if err := a.proc.Signal(syscall.SIGHUP); err != nil {
				done <- err
				return
			}
			deadline := time.Now().Add(10 * time.Second)
			for reloads() == before {
				if time.Now().After(deadline) {
					done <- errors.New("a reload did not happen")
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		done <- nil
	}()

	sport := 10000
	for running := true; running; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			running = false
		default:
		}
		var frames [][]byte
		for _, port := range []uint16{7000, 7001, 7002} {
			sport++
			p := probe{Src: client.IPv4, Dst: server.IPv4, Protocol: 17, SrcPort: uint16(sport), DstPort: port}
			f, err := frameFor(p, sport, nic.HardwareAddr, in0.HardwareAddr)
			if err != nil {
				t.Fatal(err)
			}
			frames = append(frames, f)
		}
		if err := injectFrames(client.NS, client.Interface, frames); err != nil {
			t.Fatal(err)
		}
		// Paced so that the captures keep up on a busy machine: a packet
		// the capture lost could be the leak.
		time.Sleep(2 * time.Millisecond)
	}
	leaked, lines, err := capture.Stop()
	if err != nil {
		t.Fatal(err)
	}
	passed, _, err := allowed.Stop()
	if err != nil {
		t.Fatal(err)
	}
	if leaked != 0 {
		t.Fatalf("%d packets to a port neither rule set allows got through during reloads:\n%v", leaked, lines)
	}
	if passed == 0 {
		t.Fatalf("no allowed probe got through: the test sent nothing")
	}
	t.Logf("%d probes sent, %d allowed ones delivered, none of the others", sport-10000, passed)
}
