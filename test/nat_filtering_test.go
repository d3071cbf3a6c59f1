package test

import (
	"net"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/natwall/natwall/test/lab"
)

// RFC 4787 REQ-8 and RFC 5382 REQ-3, end to end: an inside endpoint talks
// to server 0 port 9000; then server 0 from port 9001, and server 1 from
// ports 9000 and 9001, send to its mapping unsolicited. Each mode delivers
// exactly the senders it admits, and the inside endpoint's answer to an
// admitted sender leaves from the same external endpoint.
func TestNATFilteringModes(t *testing.T) {
	for _, tc := range []struct {
		mode  string
		admit []string
	}{
		{"address-port-dependent", nil},
		{"address-dependent", []string{"server0:9001"}},
		{"endpoint-independent", []string{"server0:9001", "server1:9000", "server1:9001"}},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			l := newLab(t, lab.Options{Shape: lab.TwoNIC, Servers: 2})
			watchForLeaks(t, l)
			a := startNatwall(t, l, natConfig("  filtering: "+tc.mode+"\n"))
			client := l.Clients[0]
			warmUp(t, client.NS, l.Servers[0].IPv4)
			warmUp(t, client.NS, l.Servers[1].IPv4)
			startUDPServer(t, l.Servers[0], 9000)

			conn, err := client.NS.ListenPacket("udp4", netip.AddrPortFrom(client.IPv4, 40500).String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			mapped, err := udpAsk(conn, netip.AddrPortFrom(l.Servers[0].IPv4, 9000))
			if err != nil {
				t.Fatal(err)
			}
			if mapped.Addr() != lab.ApplianceOutsideV4 {
				t.Fatalf("client mapped to %s", mapped)
			}
			before := a.packets(t)

			senders := map[string]net.PacketConn{}
			for _, s := range []struct {
				name string
				host *lab.Host
				port uint16
			}{{"server0:9001", l.Servers[0], 9001}, {"server1:9000", l.Servers[1], 9000}, {"server1:9001", l.Servers[1], 9001}} {
				pc, err := s.host.NS.ListenPacket("udp4", netip.AddrPortFrom(s.host.IPv4, s.port).String())
				if err != nil {
					t.Fatal(err)
				}
				defer pc.Close()
				senders[s.name] = pc
			}
			// Each sender tries a few times: one lost datagram must not
			// look like filtering.
			for try := 0; try < 3; try++ {
				for name, pc := range senders {
					if _, err := pc.WriteTo([]byte(name), net.UDPAddrFromAddrPort(mapped)); err != nil {
						t.Fatal(err)
					}
				}
				time.Sleep(50 * time.Millisecond)
			}
			got := map[string]net.Addr{}
			buf := make([]byte, 256)
			for {
				conn.SetReadDeadline(time.Now().Add(time.Second))
				n, from, err := conn.ReadFrom(buf)
				if err != nil {
					break
				}
				got[string(buf[:n])] = from
			}
			var delivered []string
			for name := range got {
				delivered = append(delivered, name)
			}
			sort.Strings(delivered)
			if strings.Join(delivered, ",") != strings.Join(tc.admit, ",") {
				t.Fatalf("delivered from %v, want %v", delivered, tc.admit)
			}
			// What was admitted can be answered, from the mapping.
			for _, name := range tc.admit {
				if _, err := conn.WriteTo([]byte("answer"), got[name]); err != nil {
					t.Fatal(err)
				}
				pc := senders[name]
				pc.SetReadDeadline(time.Now().Add(2 * time.Second))
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					t.Fatalf("%s got no answer: %v", name, err)
				}
				if ap := from.(*net.UDPAddr).AddrPort(); netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()) != mapped || string(buf[:n]) != "answer" {
					t.Fatalf("%s got %q from %s, want the answer from %s", name, buf[:n], from, mapped)
				}
			}
			after := a.packets(t)
			if d := after["fwd_redirect"] + after["fwd_tx"] - before["fwd_redirect"] - before["fwd_tx"]; d < float64(len(tc.admit)) {
				t.Errorf("only %.0f packets forwarded for %d admitted senders", d, len(tc.admit))
			}
			if filtered := 3 - len(tc.admit); filtered > 0 && after["pass_local"]-before["pass_local"] < float64(filtered) {
				t.Errorf("pass_local rose by %.0f, want at least %d filtered datagrams", after["pass_local"]-before["pass_local"], filtered)
			}
		})
	}
}
