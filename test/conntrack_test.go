package test

import (
	"encoding/json"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/natwall/natwall/test/lab"
)

// conntrackJSON runs `natwall conntrack list -o json` against the live
// dataplane and decodes it generically, so the test does not depend on the
// CLI's Go types.
func conntrackJSON(t *testing.T, a *appliance, args ...string) []map[string]any {
	t.Helper()
	ctx := testContext(t)
	out, err := a.lab.Appliance.Run(ctx, natwallBin, append([]string{"conntrack", "list", "-o", "json", "--socket", a.socket}, args...)...)
	if err != nil {
		t.Fatalf("natwall conntrack list: %v", err)
	}
	var flows []map[string]any
	if err := json.Unmarshal(out, &flows); err != nil {
		t.Fatalf("decode conntrack list output: %v\n%s", err, out)
	}
	return flows
}

// flowsMentioning returns the flows whose JSON mentions s anywhere.
func flowsMentioning(flows []map[string]any, s string) []map[string]any {
	var out []map[string]any
	for _, f := range flows {
		b, _ := json.Marshal(f)
		if strings.Contains(string(b), s) {
			out = append(out, f)
		}
	}
	return out
}

// RFC 4787 REQ-5 in miniature: with a 2-second UDP timeout the flow is
// collected once idle, its mapping is freed, and a late reply from the
// server is not admitted.
func TestNATIdleTimeout(t *testing.T) {
	l := newLab(t, lab.Options{Shape: lab.TwoNIC})
	watchForLeaks(t, l)
	a := startNatwall(t, l, natConfig("")+"conntrack:\n  gc_interval: 500ms\n  timeouts:\n    udp: 2s\n")
	server, client := l.Servers[0], l.Clients[0]
	warmUp(t, client.NS, server.IPv4)
	srv := startUDPServer(t, server, 9000)

	pc, err := client.NS.ListenPacket("udp4", netip.AddrPortFrom(client.IPv4, 45000).String())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	seen, err := udpAsk(pc, netip.AddrPortFrom(server.IPv4, 9000))
	if err != nil {
		t.Fatal(err)
	}
	if got := flowsMentioning(conntrackJSON(t, a, "--proto", "udp"), "45000"); len(got) != 1 {
		t.Fatalf("conntrack list shows %d flows for port 45000, want 1", len(got))
	}

	deadline := time.Now().Add(10 * time.Second)
	for len(flowsMentioning(conntrackJSON(t, a, "--proto", "udp"), "45000")) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the idle UDP flow was not collected within 10s of a 2s timeout")
		}
		time.Sleep(200 * time.Millisecond)
	}

	// A late datagram from the server to the old mapping finds no flow.
	late := []byte("late")
	if _, err := srv.conn.WriteTo(late, net.UDPAddrFromAddrPort(seen)); err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Now().Add(time.Second))
	if n, _, err := pc.ReadFrom(make([]byte, 64)); err == nil {
		t.Fatalf("a reply after the flow expired was delivered (%d bytes)", n)
	}
	fam := a.metrics(t)["natwall_flows_expired_total"]
	if fam == nil || fam.Metric[0].GetCounter().GetValue() < 1 {
		t.Errorf("natwall_flows_expired_total did not count the expiry")
	}
}

// natwall conntrack list shows the translated view of a live flow, and
// flush removes it.
func TestConntrackCLI(t *testing.T) {
	l := newLab(t, lab.Options{Shape: lab.TwoNIC})
	a := startNatwall(t, l, natConfig(""))
	server, client := l.Servers[0], l.Clients[0]
	warmUp(t, client.NS, server.IPv4)
	startUDPServer(t, server, 9000)
	pc, err := client.NS.ListenPacket("udp4", netip.AddrPortFrom(client.IPv4, 46000).String())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if _, err := udpAsk(pc, netip.AddrPortFrom(server.IPv4, 9000)); err != nil {
		t.Fatal(err)
	}

	flows := flowsMentioning(conntrackJSON(t, a, "--addr", client.IPv4.String()+"/32"), "46000")
	if len(flows) != 1 {
		t.Fatalf("%d flows for the client's port, want 1", len(flows))
	}
	b, _ := json.Marshal(flows[0])
	for _, want := range []string{client.IPv4.String(), server.IPv4.String(), lab.ApplianceOutsideV4.String()} {
		if !strings.Contains(string(b), want) {
			t.Errorf("flow %s does not mention %s", b, want)
		}
	}

	ctx := testContext(t)
	out, err := l.Appliance.Run(ctx, natwallBin, "nat", "--socket", a.socket)
	if err != nil || !strings.Contains(string(out), lab.ApplianceOutsideV4.String()) {
		t.Errorf("natwall nat: %v\n%s", err, out)
	}
	if out, err := l.Appliance.Run(ctx, natwallBin, "conntrack", "flush", "--socket", a.socket, "--port", "46000"); err != nil {
		t.Fatalf("natwall conntrack flush: %v\n%s", err, out)
	}
	if got := flowsMentioning(conntrackJSON(t, a), "46000"); len(got) != 0 {
		t.Fatalf("%d flows left after flush", len(got))
	}
}
