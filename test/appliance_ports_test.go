package test

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/natwall/natwall/test/lab"
)

// TestSNATLeavesTheAppliancesPortsAlone: with the default SNAT range, an
// inside flow must never take the external address and port of a
// connection the appliance itself made, or it would receive that
// connection's replies. natwall moves the kernel's ephemeral ports to
// 61000-65535 and leaves them out of SNAT. The appliance's own socket on
// such a port keeps getting its answers while an inside host sends from the
// same port number; an inside source port below them is still preserved.
func TestSNATLeavesTheAppliancesPortsAlone(t *testing.T) {
	for _, shape := range shapes {
		t.Run(shape.String(), func(t *testing.T) {
			l := newLab(t, lab.Options{Shape: shape})
			watchForLeaks(t, l)
			startNatwall(t, l, natConfig(""))
			client, server := l.Clients[0], l.Servers[0]
			warmUp(t, client.NS, server.IPv4)
			startUDPServer(t, server, 9000)
			dst := netip.AddrPortFrom(server.IPv4, 9000)

			if got, err := l.Appliance.ReadSysctl("net.ipv4.ip_local_port_range"); err != nil || got != "61000\t65535" {
				t.Fatalf("appliance ip_local_port_range = %q (%v), want 61000-65535", got, err)
			}

			const port = 61234
			own, err := l.Appliance.ListenPacket("udp4", netip.AddrPortFrom(lab.ApplianceOutsideV4, port).String())
			if err != nil {
				t.Fatal(err)
			}
			defer own.Close()
			if seen, err := udpAsk(own, dst); err != nil || seen != netip.AddrPortFrom(lab.ApplianceOutsideV4, port) {
				t.Fatalf("the appliance's own socket: server saw %v (%v)", seen, err)
			}

			inside, err := client.NS.ListenPacket("udp4", netip.AddrPortFrom(client.IPv4, port).String())
			if err != nil {
				t.Fatal(err)
			}
			defer inside.Close()
			seen, err := udpAsk(inside, dst)
			if err != nil {
				t.Fatal(err)
			}
			if seen.Addr() != lab.ApplianceOutsideV4 || seen.Port() == port || seen.Port() < 1024 || seen.Port() > 60999 {
				t.Errorf("inside source port %d mapped to %s: want the appliance's address and a port in 1024-60999", port, seen)
			}
			// The server answers the appliance's port: the appliance,
			// not the inside host, must get it.
			if _, err := udpAsk(own, dst); err != nil {
				t.Errorf("the appliance's own socket lost its replies after an inside host sent from the same port: %v", err)
			}
			inside.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if _, _, err := inside.ReadFrom(make([]byte, 64)); err == nil {
				t.Error("the inside host received a reply meant for the appliance's own socket")
			} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
				t.Fatal(err)
			}

			preserved, err := client.NS.ListenPacket("udp4", netip.AddrPortFrom(client.IPv4, 40123).String())
			if err != nil {
				t.Fatal(err)
			}
			defer preserved.Close()
			if seen, err := udpAsk(preserved, dst); err != nil || seen != netip.AddrPortFrom(lab.ApplianceOutsideV4, 40123) {
				t.Errorf("inside source port 40123: server saw %v (%v), want it preserved", seen, err)
			}
		})
	}
}
