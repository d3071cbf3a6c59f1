package test

import (
	"bytes"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/natwall/natwall/test/lab"
)

// guardDrops reads the packets the ICMP guard's DROP rules have dropped in
// the appliance, or -1 when the chain is absent.
func guardDrops(t *testing.T, l *lab.Lab) int {
	t.Helper()
	out, err := l.Appliance.Run(testContext(t), "iptables", "-w", "-t", "filter", "-L", "NATWALL-ICMP-GUARD", "-v", "-x", "-n")
	if err != nil {
		return -1
	}
	n := 0
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 2 && f[2] == "DROP" {
			v, err := strconv.Atoi(f[0])
			if err != nil {
				t.Fatalf("iptables counter %q: %v", line, err)
			}
			n += v
		}
	}
	return n
}

// An inside host that is gone when its flow's reply comes: natwall
// translates the reply and hands it to the kernel to resolve the
// neighbour, which fails, and the kernel answers the server with a host
// unreachable that quotes the translated reply, inside address and all.
// That packet never passes XDP; the netfilter guard natwall installs at
// start drops it, so nothing on the server's wire carries the inside
// address. natwall removes the guard when it stops.
func TestApplianceOwnICMPErrorDoesNotLeakInside(t *testing.T) {
	for _, shape := range shapes {
		t.Run(shape.String(), func(t *testing.T) {
			l := newLab(t, lab.Options{Shape: shape})
			watchForLeaks(t, l)
			a := startNatwall(t, l, natConfig(""))
			ctx := testContext(t)
			client, server := l.Clients[0], l.Servers[0]
			warmUp(t, client.NS, server.IPv4)
			if n := guardDrops(t, l); n != 0 {
				t.Fatalf("guard chain missing or not fresh at start (%d drops)", n)
			}

			gone := netip.MustParseAddr("198.18.1.240")
			if _, err := client.NS.IP(ctx, "addr", "add", gone.String()+"/24", "dev", client.Interface, "nodad"); err != nil {
				t.Fatal(err)
			}
			srv := startUDPServer(t, server, 9000)
			conn, err := client.NS.ListenPacket("udp4", netip.AddrPortFrom(gone, 40555).String())
			if err != nil {
				t.Fatal(err)
			}
			mapped, err := udpAsk(conn, netip.AddrPortFrom(server.IPv4, 9000))
			conn.Close()
			if err != nil {
				t.Fatal(err)
			}
			// The host leaves, and the appliance forgets its neighbour.
			if _, err := client.NS.IP(ctx, "addr", "del", gone.String()+"/24", "dev", client.Interface); err != nil {
				t.Fatal(err)
			}
			if _, err := l.Appliance.IP(ctx, "neigh", "flush", "to", gone.String()); err != nil {
				t.Fatal(err)
			}

			c, err := lab.StartCapture(server.Port.NS, server.Port.Name, "icmp")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := srv.conn.WriteTo([]byte("late reply"), net.UDPAddrFromAddrPort(mapped)); err != nil {
				t.Fatal(err)
			}
			// Neighbour resolution gives up after about 3 s.
			deadline := time.Now().Add(15 * time.Second)
			for guardDrops(t, l) < 1 {
				if time.Now().After(deadline) {
					out, _ := l.Appliance.Run(ctx, "iptables", "-w", "-L", "-v", "-n")
					t.Fatalf("the kernel's host unreachable never met the guard:\n%s", out)
				}
				time.Sleep(100 * time.Millisecond)
			}
			if _, _, err := c.Stop(); err != nil {
				t.Fatal(err)
			}
			inside := gone.As4()
			for _, f := range c.Frames() {
				if bytes.Contains(f.Data, inside[:]) {
					t.Errorf("ICMP on the server's wire carries %s: % x", gone, f.Data)
				}
			}

			a.stop(t)
			out, err := l.Appliance.Run(ctx, "iptables", "-w", "-S")
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(out), "NATWALL-ICMP-GUARD") {
				t.Fatalf("guard left after natwall stopped:\n%s", out)
			}
		})
	}
}
