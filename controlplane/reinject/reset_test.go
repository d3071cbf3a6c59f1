package reinject

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/natwall/natwall/test/lab"
)

// A rejected flow ends at both ends: the appliance forwards a real TCP
// handshake but drops the client's first data, as XDP does while the flow
// is PENDING; the resets built from that held segment make the client's
// and the server's sockets fail with ECONNRESET, in both families. The
// server never receives the data.
func TestResetsEndBothEnds(t *testing.T) {
	l := lab.NewT(t, lab.Options{Shape: lab.TwoNIC})
	if err := l.EnableApplianceForwarding(); err != nil {
		t.Fatal(err)
	}
	client, server := l.Clients[0], l.Servers[0]
	s := applianceSender(t, l)
	for _, tc := range []struct {
		name, network, iptables string
		src, dst                netip.Addr
		ipHeader                int
	}{
		{"ipv4", "tcp4", "iptables", client.IPv4, server.IPv4, 20},
		{"ipv6", "tcp6", "ip6tables", client.IPv6, server.IPv6, 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			ln, err := server.NS.Listen(tc.network, netip.AddrPortFrom(tc.dst, 0).String())
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			port := ln.Addr().(*net.TCPAddr).Port
			// Segments with data stand for what XDP holds: longer than
			// any handshake segment (a SYN's header is 40 bytes with its
			// options), and the request below is longer than that.
			hold := []string{"FORWARD", "-p", "tcp", "--dport", strconv.Itoa(port), "-m", "length",
				"--length", strconv.Itoa(tc.ipHeader+40+1) + ":65535", "-j", "DROP"}
			if out, err := l.Appliance.Run(ctx, tc.iptables, append([]string{"-I"}, hold...)...); err != nil {
				t.Fatalf("%s: %v: %s", tc.iptables, err, out)
			}
			defer l.Appliance.Run(context.Background(), tc.iptables, append([]string{"-D"}, hold...)...)
			capture, err := lab.StartCapture(l.AppliancePorts[0].NS, l.AppliancePorts[0].Name,
				"tcp dst port "+strconv.Itoa(port)+" and greater "+strconv.Itoa(14+tc.ipHeader+40+1))
			if err != nil {
				t.Fatal(err)
			}

			accepted := make(chan net.Conn, 1)
			go func() {
				c, err := ln.Accept()
				if err == nil {
					accepted <- c
				}
			}()
			conn, err := client.NS.Dial(ctx, tc.network, netip.AddrPortFrom(tc.dst, uint16(port)).String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			var srv net.Conn
			select {
			case srv = <-accepted:
				defer srv.Close()
			case <-ctx.Done():
				t.Fatal("server accepted nothing")
			}
			if _, err := conn.Write([]byte("GET / HTTP/1.1\r\nHost: denied.example\r\n\r\n")); err != nil {
				t.Fatal(err)
			}
			if err := capture.WaitFor(ctx, 1); err != nil {
				t.Fatalf("no data segment captured: %v", err)
			}
			if _, _, err := capture.Stop(); err != nil {
				t.Fatal(err)
			}
			held := capture.Frames()[0].Data[14:]
			local := conn.LocalAddr().(*net.TCPAddr).AddrPort()
			toClient, toServer, err := Resets(held, netip.AddrPortFrom(local.Addr().Unmap(), local.Port()), netip.AddrPortFrom(tc.dst, uint16(port)))
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range [][]byte{toServer, toClient} {
				if err := s.Send(p); err != nil {
					t.Fatal(err)
				}
			}
			for side, c := range map[string]net.Conn{"client": conn, "server": srv} {
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, err := c.Read(make([]byte, 100))
				if !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("%s read %d bytes, %v; want ECONNRESET", side, n, err)
				}
			}
		})
	}
}

// Resets refuses what is not a TCP segment, and endpoints of the other
// family.
func TestResetsRefuses(t *testing.T) {
	udp := udpPacket(t, netip.MustParseAddrPort("198.18.1.2:1"), netip.MustParseAddrPort("198.19.1.2:2"), []byte("x"))
	c, s := netip.MustParseAddrPort("198.18.1.2:1"), netip.MustParseAddrPort("198.19.1.2:2")
	if _, _, err := Resets(udp, c, s); !errors.Is(err, ErrMalformed) {
		t.Fatalf("UDP: err %v, want ErrMalformed", err)
	}
	if _, _, err := Resets(udp[:10], c, s); !errors.Is(err, ErrMalformed) {
		t.Fatalf("truncated: err %v, want ErrMalformed", err)
	}
}
