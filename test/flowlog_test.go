package test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/natwall/natwall/test/lab"
)

// eveRecord is the part of an EVE line the flow-log test checks.
type eveRecord struct {
	Timestamp string `json:"timestamp"`
	FlowID    uint64 `json:"flow_id"`
	EventType string `json:"event_type"`
	SrcIP     string `json:"src_ip"`
	SrcPort   int    `json:"src_port"`
	DestIP    string `json:"dest_ip"`
	DestPort  int    `json:"dest_port"`
	Proto     string `json:"proto"`
	Direction string `json:"direction"`
	Flow      *struct {
		PktsToServer  uint64 `json:"pkts_toserver"`
		PktsToClient  uint64 `json:"pkts_toclient"`
		BytesToServer uint64 `json:"bytes_toserver"`
		BytesToClient uint64 `json:"bytes_toclient"`
		Start         string `json:"start"`
		End           string `json:"end"`
		State         string `json:"state"`
		Reason        string `json:"reason"`
	} `json:"flow"`
	Rule *struct {
		Number uint32 `json:"number"`
		ID     string `json:"id"`
		Action string `json:"action"`
	} `json:"rule"`
	NAT *struct {
		SrcIP   string `json:"src_ip"`
		SrcPort int    `json:"src_port"`
		DestIP  string `json:"dest_ip"`
	} `json:"nat"`
	Alert *struct {
		Action      string `json:"action"`
		SignatureID uint32 `json:"signature_id"`
		Rev         int    `json:"rev"`
		Signature   string `json:"signature"`
		Category    string `json:"category"`
		Severity    int    `json:"severity"`
	} `json:"alert"`
}

func readEVE(t *testing.T, path string) []eveRecord {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []eveRecord
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			return out // a partial last line is still being written
		}
		if err != nil {
			t.Fatal(err)
		}
		var rec eveRecord
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Fatalf("EVE line is not JSON: %v\n%s", err, line)
		}
		out = append(out, rec)
	}
}

// waitForEVE polls the log until match selects a record.
func waitForEVE(t *testing.T, path string, what string, match func(*eveRecord) bool) eveRecord {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		for _, rec := range readEVE(t, path) {
			if match(&rec) {
				return rec
			}
		}
		if time.Now().After(deadline) {
			data, _ := os.ReadFile(path)
			t.Fatalf("no EVE record of %s within 15s; the log holds:\n%s", what, data)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func eveTime(t *testing.T, s string) time.Time {
	t.Helper()
	ts, err := time.Parse("2006-01-02T15:04:05.000000-0700", s)
	if err != nil {
		t.Fatalf("EVE time %q: %v", s, err)
	}
	return ts
}

func ruleNumbers(t *testing.T, stateDir string) map[string]uint32 {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(stateDir, "rule-ids.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ids struct {
		IDs map[string]uint32 `json:"ids"`
	}
	if err := json.Unmarshal(data, &ids); err != nil {
		t.Fatal(err)
	}
	return ids.IDs
}

// udpFrame is the frame length the dataplane counts for a UDP/IPv4
// datagram: Ethernet, IPv4 and UDP headers and the payload.
func udpFrame(payload int) uint64 { return uint64(14 + 20 + 8 + payload) }

// TestFlowLogAndAlertsFromLiveTraffic runs natwall with EVE output to a
// file and checks, field by field, the flow and alert records of real
// flows: one ended by the dataplane (its next packet found it expired),
// one ended by the collector, and the alert rule's match on each first
// packet.
func TestFlowLogAndAlertsFromLiveTraffic(t *testing.T) {
	l := newLab(t, lab.Options{Shape: lab.TwoNIC})
	dir := t.TempDir()
	ruleFile, stateDir, evePath := filepath.Join(dir, "rules.yaml"), filepath.Join(dir, "state"), filepath.Join(dir, "log", "eve.json")
	if err := os.WriteFile(ruleFile, []byte(`stateful:
  default_action: deny
  rules:
    - {id: watch-echo, priority: 5, action: alert, protocol: udp, dst_ports: [9000]}
    - {id: udp-echo, priority: 10, action: allow, protocol: udp, dst_ports: [9000]}
    - {id: web, priority: 20, action: allow, protocol: tcp, dst_ports: [7000]}
    - {id: ping, priority: 30, action: allow, protocol: icmp}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	config := func(gcInterval string) string {
		return natConfig(fmt.Sprintf(`state_dir: %s
rules:
  paths: [%s]
conntrack:
  gc_interval: %s
  timeouts: {udp: 1s, tcp_transitory: 1s, tcp_close: 1s}
eve:
  output: file
  path: %s
`, stateDir, ruleFile, gcInterval, evePath))
	}
	// Phase 1: the collector runs only at startup, so a flow end can only
	// come from the dataplane.
	a := startNatwall(t, l, config("1h"))
	server, client := l.Servers[0], l.Clients[0]
	warmUp(t, client.NS, server.IPv4)
	startUDPServer(t, server, 9000)
	numbers := ruleNumbers(t, stateDir)

	pc, err := client.NS.ListenPacket("udp4", netip.AddrPortFrom(client.IPv4, 45100).String())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	dst := netip.AddrPortFrom(server.IPv4, 9000)
	ask := func() (seen netip.AddrPort, reply int) {
		t.Helper()
		if _, err := pc.WriteTo([]byte("who am i"), net.UDPAddrFromAddrPort(dst)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 256)
		pc.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("no answer from %s: %v", dst, err)
		}
		seen, err = netip.ParseAddrPort(string(buf[:n]))
		if err != nil {
			t.Fatal(err)
		}
		return seen, n
	}
	seen, replyLen := ask()
	time.Sleep(1500 * time.Millisecond) // past the 1s UDP timeout: the reason of this test
	ask()                               // finds the flow expired: the dataplane ends it

	udp := waitForEVE(t, evePath, "the UDP flow", func(r *eveRecord) bool {
		return r.EventType == "flow" && r.Proto == "UDP" && r.SrcPort == 45100
	})
	if got := a.metricValue(t, "natwall_flow_events_total", "flow_end"); got != 1 {
		t.Errorf("natwall_flow_events_total{type=flow_end} = %v, want 1 (from the dataplane)", got)
	}
	if udp.SrcIP != client.IPv4.String() || udp.DestIP != server.IPv4.String() || udp.DestPort != 9000 || udp.Direction != "outbound" {
		t.Errorf("UDP flow tuple: %+v", udp)
	}
	if f := udp.Flow; f.PktsToServer != 1 || f.PktsToClient != 1 || f.BytesToServer != udpFrame(len("who am i")) ||
		f.BytesToClient != udpFrame(replyLen) || f.State != "established" || f.Reason != "timeout" {
		t.Errorf("UDP flow counters: %+v, want 1 packet of %d bytes each way (%d back)", *f, udpFrame(8), udpFrame(replyLen))
	}
	start, end, logged := eveTime(t, udp.Flow.Start), eveTime(t, udp.Flow.End), eveTime(t, udp.Timestamp)
	if end.Before(start) || end.Sub(start) > time.Second || logged.Sub(end) < time.Second || time.Since(start) > time.Minute {
		t.Errorf("UDP flow times: start %v end %v logged %v", start, end, logged)
	}
	if udp.Rule == nil || udp.Rule.ID != "udp-echo" || udp.Rule.Number != numbers["udp-echo"] || udp.Rule.Action != "allow" {
		t.Errorf("UDP flow rule: %+v, want udp-echo (%d)", udp.Rule, numbers["udp-echo"])
	}
	if udp.NAT == nil || udp.NAT.SrcIP != lab.ApplianceOutsideV4.String() || udp.NAT.SrcPort != int(seen.Port()) || udp.NAT.DestIP != server.IPv4.String() {
		t.Errorf("UDP flow NAT: %+v, want the mapping the server saw, %s", udp.NAT, seen)
	}

	alert := waitForEVE(t, evePath, "the alert rule's match", func(r *eveRecord) bool {
		return r.EventType == "alert" && r.SrcPort == 45100
	})
	if al := alert.Alert; al == nil || al.Action != "allowed" || al.Signature != "watch-echo" || al.SignatureID != numbers["watch-echo"] ||
		al.Rev != 1 || al.Category != "natwall alert rule" || al.Severity != 3 {
		t.Errorf("alert: %+v", alert.Alert)
	}
	if alert.FlowID != udp.FlowID || alert.Proto != "UDP" || alert.DestIP != server.IPv4.String() || alert.DestPort != 9000 {
		t.Errorf("alert %+v does not name the flow %+v", alert, udp)
	}
	var alerts int
	for _, r := range readEVE(t, evePath) {
		if r.EventType == "alert" && r.SrcPort == 45100 {
			alerts++
		}
	}
	if alerts != 2 {
		t.Errorf("%d alerts for port 45100, want one per flow: 2", alerts)
	}
	a.stop(t)

	// Phase 2: the collector ends flows every 500ms.
	if err := os.WriteFile(a.config, []byte(natwallConfig(l, a.pinDir, config("500ms"))), 0o600); err != nil {
		t.Fatal(err)
	}
	a.start(t)
	warmUp(t, client.NS, server.IPv4)
	ln, err := server.NS.Listen("tcp", netip.AddrPortFrom(server.IPv4, 7000).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go echoServer(ln)
	conn, err := client.NS.Dial(testContext(t), "tcp", netip.AddrPortFrom(server.IPv4, 7000).String())
	if err != nil {
		t.Fatal(err)
	}
	clientPort := conn.LocalAddr().(*net.TCPAddr).Port
	msg := bytes.Repeat([]byte("x"), 1000)
	if _, err := conn.Write(msg); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(conn, make([]byte, len(msg))); err != nil {
		t.Fatal(err)
	}
	conn.Close()

	tcp := waitForEVE(t, evePath, "the TCP flow, collected", func(r *eveRecord) bool {
		return r.EventType == "flow" && r.Proto == "TCP" && r.SrcPort == clientPort
	})
	// SYN, ACK, data, FIN, ACK at least; the payload's bytes both ways.
	if f := tcp.Flow; f.PktsToServer < 4 || f.PktsToClient < 3 || f.BytesToServer < 1000 || f.BytesToClient < 1000 ||
		f.State != "closed" || f.Reason != "timeout" {
		t.Errorf("TCP flow: %+v", *f)
	}
	if tcp.Rule == nil || tcp.Rule.ID != "web" || tcp.NAT == nil || tcp.NAT.SrcIP != lab.ApplianceOutsideV4.String() || tcp.DestPort != 7000 {
		t.Errorf("TCP flow rule %+v, NAT %+v", tcp.Rule, tcp.NAT)
	}
	if data, err := os.ReadFile(evePath); err == nil {
		t.Logf("EVE log:\n%s", data)
	}
	waitFor(t, "the collector's flow end to be counted", func() bool {
		return a.metricValue(t, "natwall_flow_events_total", "flow_end") >= 1
	})
	if lost := a.metricValue(t, "natwall_flow_sink_events_lost_total", "eve"); lost != 0 {
		t.Errorf("the EVE sink lost %v events", lost)
	}
	if n := a.metricValue(t, "natwall_eve_records_total", "flow"); n < 1 {
		t.Errorf("natwall_eve_records_total{event_type=flow} = %v", n)
	}
}

// TestFlowLogAtShutdown: a daemon stopping with on_exit detach removes the
// live flows with the dataplane, so it writes their flow-end records first,
// with flow.reason shutdown. With on_exit keep the flows go on, and it
// writes none: the next daemon reports their end.
func TestFlowLogAtShutdown(t *testing.T) {
	for _, onExit := range []string{"detach", "keep"} {
		t.Run(onExit, func(t *testing.T) {
			l := newLab(t, lab.Options{Shape: lab.TwoNIC})
			evePath := filepath.Join(t.TempDir(), "eve.json")
			a := startNatwall(t, l, natConfig(fmt.Sprintf("on_exit: %s\nconntrack:\n  gc_interval: 1h\neve:\n  output: file\n  path: %s\n", onExit, evePath)))
			client, server := l.Clients[0], l.Servers[0]
			warmUp(t, client.NS, server.IPv4)
			startUDPServer(t, server, 9000)
			pc, err := client.NS.ListenPacket("udp4", netip.AddrPortFrom(client.IPv4, 45200).String())
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			if _, err := udpAsk(pc, netip.AddrPortFrom(server.IPv4, 9000)); err != nil {
				t.Fatal(err)
			}
			a.stop(t)

			var ends []eveRecord
			for _, r := range readEVE(t, evePath) {
				if r.EventType == "flow" && r.Proto == "UDP" && r.SrcPort == 45200 {
					ends = append(ends, r)
				}
			}
			switch onExit {
			case "detach":
				if len(ends) != 1 || ends[0].Flow == nil || ends[0].Flow.Reason != "shutdown" ||
					ends[0].Flow.PktsToServer != 1 || ends[0].Flow.PktsToClient != 1 || ends[0].DestPort != 9000 {
					t.Fatalf("flow-end records of the live UDP flow at shutdown: %+v, want one with reason shutdown and its packet each way", ends)
				}
			case "keep":
				if len(ends) != 0 {
					t.Errorf("on_exit keep wrote flow ends for a flow that goes on: %+v", ends)
				}
				out, err := l.Appliance.Run(testContext(t), natwallBin, "teardown", "--pin-dir", a.pinDir)
				if err != nil {
					t.Fatalf("natwall teardown: %v\n%s", err, out)
				}
			}
		})
	}
}
