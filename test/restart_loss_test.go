package test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/natwall/natwall/test/lab"
)

// TestRestartLosesNoPacket restarts the daemon three times under a steady
// UDP stream (a datagram every 2 ms, each answered) with on_exit keep, the
// shipped unit's setting: the pinned dataplane forwards through each gap,
// the new daemon takes it over, and not one datagram may be lost. A new
// flow opened while the daemon is down must work too.
func TestRestartLosesNoPacket(t *testing.T) {
	l := newLab(t, lab.Options{Shape: lab.TwoNIC})
	a := startNatwall(t, l, natConfig("")+"on_exit: keep\n")
	client, server := l.Clients[0], l.Servers[0]
	warmUp(t, client.NS, server.IPv4)
	ctx := testContext(t)
	stream := startUDPStream(t, ctx, client, server, 9000)
	startUDPServer(t, server, 9001)

	for round := range 3 {
		time.Sleep(200 * time.Millisecond)
		a.stop(t)
		// A new flow while no daemon runs: the dataplane alone opens it.
		conn, err := client.NS.ListenPacket("udp4", netip.AddrPortFrom(client.IPv4, uint16(41000+round)).String())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := udpAsk(conn, netip.AddrPortFrom(server.IPv4, 9001)); err != nil {
			t.Errorf("round %d: a new flow while the daemon was down: %v", round, err)
		}
		conn.Close()
		time.Sleep(200 * time.Millisecond)
		a.start(t)
	}
	time.Sleep(200 * time.Millisecond)
	sent, answered := stream.stop()
	t.Logf("UDP stream across 3 restarts: %d sent, %d answered", sent, answered)
	if sent < 300 || answered != sent {
		t.Errorf("UDP stream across restarts: %d of %d datagrams answered, want all (and at least 300 sent)", answered, sent)
	}
	if p := a.packets(t); p["drop_ct_invalid"] != 0 || p["drop_policy"] != 0 {
		t.Errorf("packets found no flow across the restarts: %s", fmt.Sprint(p["drop_ct_invalid"], " invalid, ", p["drop_policy"], " policy"))
	}
}
