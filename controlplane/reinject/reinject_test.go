package reinject

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/natwall/natwall/test/lab"
)

// udpPacket builds a UDP datagram from src to dst as XDP leaves a held
// packet: complete, checksummed, TTL already decremented.
func udpPacket(t testing.TB, src, dst netip.AddrPort, payload []byte) []byte {
	t.Helper()
	udp := &layers.UDP{SrcPort: layers.UDPPort(src.Port()), DstPort: layers.UDPPort(dst.Port())}
	var ip gopacket.NetworkLayer
	if src.Addr().Is4() {
		ip4 := &layers.IPv4{Version: 4, IHL: 5, TTL: 63, Id: 0x4242, Flags: layers.IPv4DontFragment,
			Protocol: layers.IPProtocolUDP, SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
		ip = ip4
	} else {
		ip = &layers.IPv6{Version: 6, HopLimit: 63, NextHeader: layers.IPProtocolUDP,
			SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
	}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ip.(gopacket.SerializableLayer), udp, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// applianceSender opens a Sender in the lab's appliance, closed with the
// test.
func applianceSender(t *testing.T, l *lab.Lab) *Sender {
	t.Helper()
	var s *Sender
	if err := l.Appliance.Do(func() (err error) { s, err = Open(); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// A packet sent from the appliance with a client's source (not an address
// of the appliance, as without SNAT) reaches the server unchanged, header
// and all, in both families, with the appliance's forwarding off: it is
// routed as a packet the host sends, never forwarded.
func TestSendDeliversHeldPacketUnchanged(t *testing.T) {
	l := lab.NewT(t, lab.Options{Shape: lab.TwoNIC})
	client, server := l.Clients[0], l.Servers[0]
	s := applianceSender(t, l)

	for _, tc := range []struct {
		name     string
		src, dst netip.Addr
		network  string
	}{
		{"ipv4", client.IPv4, server.IPv4, "udp4"},
		{"ipv6", client.IPv6, server.IPv6, "udp6"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := server.NS.ListenPacket(tc.network, netip.AddrPortFrom(tc.dst, 0).String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			dst := conn.LocalAddr().(*net.UDPAddr).AddrPort()
			dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
			src := netip.AddrPortFrom(tc.src, 40123)
			payload := []byte("held ClientHello bytes for " + tc.name)
			pkt := udpPacket(t, src, dst, payload)

			capture, err := lab.StartCapture(server.Port.NS, server.Port.Name, "udp port "+strconv.Itoa(int(dst.Port())))
			if err != nil {
				t.Fatal(err)
			}
			// The server may first need the appliance to resolve it; the
			// neighbour queue holds the packet meanwhile.
			if err := s.Send(pkt); err != nil {
				t.Fatalf("send: %v", err)
			}
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			got := make([]byte, 2048)
			n, from, err := conn.ReadFrom(got)
			if err != nil {
				t.Fatalf("server received nothing: %v", err)
			}
			if !bytes.Equal(got[:n], payload) {
				t.Fatalf("payload %q, want %q", got[:n], payload)
			}
			if f := from.(*net.UDPAddr).AddrPort(); f.Addr().Unmap() != src.Addr() || f.Port() != src.Port() {
				t.Fatalf("from %v, want %v", f, src)
			}
			if _, _, err := capture.Stop(); err != nil {
				t.Fatal(err)
			}
			frames := capture.Frames()
			if len(frames) != 1 {
				t.Fatalf("captured %d frames, want 1", len(frames))
			}
			if wire := frames[0].Data[14:]; !bytes.Equal(wire, pkt) {
				t.Fatalf("on the wire:\n% x\nsent:\n% x", wire, pkt)
			}
		})
	}
}

// Buffers that are not exactly one IP packet are refused before a raw
// socket, which sends whatever it is given, sees them.
func TestDestinationRefusesMalformed(t *testing.T) {
	good4 := udpPacket(t, netip.MustParseAddrPort("198.18.1.2:1"), netip.MustParseAddrPort("198.19.1.2:2"), []byte("x"))
	good6 := udpPacket(t, netip.MustParseAddrPort("[2001:db8::1]:1"), netip.MustParseAddrPort("[2001:db8::2]:2"), []byte("x"))
	with := func(p []byte, i int, v byte) []byte { p = bytes.Clone(p); p[i] = v; return p }
	for _, tc := range []struct {
		name string
		pkt  []byte
		want netip.Addr
	}{
		{"ipv4", good4, netip.MustParseAddr("198.19.1.2")},
		{"ipv6", good6, netip.MustParseAddr("2001:db8::2")},
		{"empty", nil, netip.Addr{}},
		{"version 5", with(good4, 0, 0x55), netip.Addr{}},
		{"ipv4 short header", good4[:19], netip.Addr{}},
		{"ipv4 truncated", good4[:len(good4)-1], netip.Addr{}},
		{"ipv4 trailing bytes", append(bytes.Clone(good4), 0), netip.Addr{}},
		{"ipv4 ihl 4", with(good4, 0, 0x44), netip.Addr{}},
		{"ipv4 ihl past total", with(good4, 0, 0x4f), netip.Addr{}},
		{"ipv6 short header", good6[:39], netip.Addr{}},
		{"ipv6 truncated", good6[:len(good6)-1], netip.Addr{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst, _, err := destination(tc.pkt)
			if !tc.want.IsValid() {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("err %v, want ErrMalformed", err)
				}
				return
			}
			if err != nil || dst != tc.want {
				t.Fatalf("destination %v, %v; want %v", dst, err, tc.want)
			}
		})
	}
}

// FuzzDestination: any buffer is refused or yields an address inside it,
// and an accepted one is exactly as long as its header says.
func FuzzDestination(f *testing.F) {
	f.Add(udpPacket(f, netip.MustParseAddrPort("198.18.1.2:1"), netip.MustParseAddrPort("198.19.1.2:2"), []byte("x")))
	f.Add(udpPacket(f, netip.MustParseAddrPort("[2001:db8::1]:1"), netip.MustParseAddrPort("[2001:db8::2]:2"), nil))
	f.Add([]byte{0x45})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		dst, v6, err := destination(pkt)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		if v6 != dst.Is6() || !dst.IsValid() {
			t.Fatalf("destination %v, v6 %v", dst, v6)
		}
		if v6 && len(pkt) < 40 || !v6 && len(pkt) < 20 {
			t.Fatalf("accepted %d bytes", len(pkt))
		}
	})
}
