package test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/natwall/natwall/test/lab"
)

// serverSegment is what the server last sent on the connection, read from
// a capture on its NIC: where its sequence space is, and the translated
// endpoint it addresses the client by.
type serverSegment struct {
	nextSeq uint32
	dst     netip.AddrPort
}

func lastServerSegment(t *testing.T, c *lab.Capture, server netip.AddrPort, payload int) serverSegment {
	t.Helper()
	// tcpdump may not have written the server's segment yet.
	want := fmt.Sprintf("%s.%d > ", server.Addr(), server.Port())
	deadline := time.Now().Add(5 * time.Second)
	for !slices.ContainsFunc(c.Lines(), func(l string) bool {
		return strings.Contains(l, want) && strings.HasSuffix(l, fmt.Sprintf("length %d", payload))
	}) {
		if time.Now().After(deadline) {
			t.Fatalf("no segment of %d bytes from the server captured: %q", payload, c.Lines())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, _, err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	var last *serverSegment
	for _, f := range c.Frames() {
		p := gopacket.NewPacket(f.Data, layers.LayerTypeEthernet, gopacket.Default)
		ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if ip == nil || tcp == nil {
			continue
		}
		src, _ := netip.AddrFromSlice(ip.SrcIP.To4())
		if netip.AddrPortFrom(src, uint16(tcp.SrcPort)) != server {
			continue
		}
		dst, _ := netip.AddrFromSlice(ip.DstIP.To4())
		n := tcp.Seq + uint32(len(tcp.Payload))
		if tcp.SYN || tcp.FIN {
			n++
		}
		last = &serverSegment{nextSeq: n, dst: netip.AddrPortFrom(dst, uint16(tcp.DstPort))}
	}
	if last == nil {
		t.Fatalf("the capture saw nothing from the server: %d frames, link type %d, lines %q", len(c.Frames()), c.LinkType(), c.Lines())
	}
	return *last
}

// injectTCP sends one crafted TCP segment from ns through a raw socket, so
// that it takes the same route as the server's own packets.
func injectTCP(t *testing.T, ns *lab.NetNS, src, dst netip.AddrPort, tcp *layers.TCP) {
	t.Helper()
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP, Flags: layers.IPv4DontFragment,
		SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
	tcp.SrcPort, tcp.DstPort = layers.TCPPort(src.Port()), layers.TCPPort(dst.Port())
	tcp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, tcp); err != nil {
		t.Fatal(err)
	}
	err := ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, buf.Bytes(), 0, &unix.SockaddrInet4{Addr: dst.Addr().As4()})
	})
	if err != nil {
		t.Fatalf("inject: %v", err)
	}
}

func tcpFlowState(t *testing.T, a *appliance, port uint16) string {
	t.Helper()
	flows := flowsMentioning(conntrackJSON(t, a, "--proto", "tcp"), fmt.Sprintf(":%d", port))
	if len(flows) != 1 {
		t.Fatalf("%d flows for port %d, want 1", len(flows), port)
	}
	s, _ := flows[0]["tcp_state"].(string)
	return s
}

// waitCounter polls a reason counter until it reaches want.
func waitCounter(t *testing.T, a *appliance, reason string, want float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for a.packets(t)[reason] < want {
		if time.Now().After(deadline) {
			t.Fatalf("%s = %.0f after 5s, want %.0f", reason, a.packets(t)[reason], want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestBlindRSTDoesNotKillAConnection: a real, translated TCP connection
// through the appliance. A RST forged from the server's address and port
// with a sequence number outside the client's window is dropped by
// natwall, which keeps the flow established, and the connection carries
// on. The same RST at the client's next expected sequence number is
// forwarded and resets the client's socket.
func TestBlindRSTDoesNotKillAConnection(t *testing.T) {
	l := newLab(t, lab.Options{Shape: lab.TwoNIC})
	watchForLeaks(t, l)
	a := startNatwall(t, l, natConfig(""))
	server, client := l.Servers[0], l.Clients[0]
	warmUp(t, client.NS, server.IPv4)
	ctx := testContext(t)

	serverEP := netip.AddrPortFrom(server.IPv4, 7100)
	ln, err := server.NS.Listen("tcp4", serverEP.String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go echoServer(ln)
	conn, err := client.NS.Dial(ctx, "tcp4", serverEP.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	clientPort := uint16(conn.LocalAddr().(*net.TCPAddr).Port)

	capture, err := lab.StartCapture(server.NS, server.Interface, fmt.Sprintf("tcp and port %d", serverEP.Port()))
	if err != nil {
		t.Fatal(err)
	}
	const first = "before the blind reset"
	if err := roundTrip(conn, first); err != nil {
		t.Fatal(err)
	}
	seg := lastServerSegment(t, capture, serverEP, len(first))
	if seg.dst.Addr() != lab.ApplianceOutsideV4 {
		t.Fatalf("the server sees the client as %s, want the appliance's %s", seg.dst, lab.ApplianceOutsideV4)
	}

	// Blind: half the sequence space away from anything in the window.
	injectTCP(t, server.NS, serverEP, seg.dst, &layers.TCP{RST: true, Seq: seg.nextSeq + 1<<31})
	waitCounter(t, a, "drop_tcp_rst_out_of_window", 1)
	if s := tcpFlowState(t, a, clientPort); s != "established" {
		t.Fatalf("after a blind RST the flow is %q, want established", s)
	}
	const second = "after the blind reset"
	if err := roundTrip(conn, second); err != nil {
		t.Fatalf("the connection died of a blind RST: %v", err)
	}

	// In the window: exactly what the client expects next, since the
	// echo server has sent the second message since.
	injectTCP(t, server.NS, serverEP, seg.dst, &layers.TCP{RST: true, Seq: seg.nextSeq + uint32(len(second))})
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = conn.Read(make([]byte, 1))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("after an in-window RST the client read %v, want connection reset", err)
	}
	if s := tcpFlowState(t, a, clientPort); s != "close" {
		t.Fatalf("after an in-window RST the flow is %q, want close", s)
	}
	if p := a.packets(t); p["drop_tcp_rst_out_of_window"] != 1 || p["drop_tcp_bad_checksum"] != 0 {
		t.Errorf("drop_tcp_rst_out_of_window = %.0f, drop_tcp_bad_checksum = %.0f; want 1 and 0",
			p["drop_tcp_rst_out_of_window"], p["drop_tcp_bad_checksum"])
	}
}
