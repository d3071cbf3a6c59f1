package test

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/natwall/natwall/test/lab"
)

// natConfig turns on SNAT to the appliance's outside address.
func natConfig(extra string) string {
	return fmt.Sprintf(`snat:
  enabled: true
  addresses: [%s]
%s`, lab.ApplianceOutsideV4, extra)
}

// watchForLeaks captures on every server's bridge port for the whole test
// and fails it if a single IPv4 packet with an inside source address
// appears there: the standing invariant of a NAT (IPv6 is not translated).
func watchForLeaks(t *testing.T, l *lab.Lab) {
	t.Helper()
	for _, s := range l.Servers {
		c, err := lab.StartCapture(s.Port.NS, s.Port.Name, fmt.Sprintf("ip and src net %s", lab.InsideNetworkV4))
		if err != nil {
			t.Fatal(err)
		}
		port := s.Port.Name
		t.Cleanup(func() {
			n, lines, err := c.Stop()
			if err != nil {
				t.Errorf("leak capture on %s: %v", port, err)
			}
			if n > 0 {
				t.Errorf("%d packets with an inside source address reached the outside on %s:\n%s", n, port, strings.Join(lines, "\n"))
			}
		})
	}
}

// udpServer answers every datagram with the source address it saw.
type udpServer struct {
	conn net.PacketConn
	mu   sync.Mutex
	seen []netip.AddrPort
}

func startUDPServer(t *testing.T, h *lab.Host, port int) *udpServer {
	t.Helper()
	pc, err := h.NS.ListenPacket("udp4", netip.AddrPortFrom(h.IPv4, uint16(port)).String())
	if err != nil {
		t.Fatal(err)
	}
	s := &udpServer{conn: pc}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			ap := from.(*net.UDPAddr).AddrPort()
			ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
			s.mu.Lock()
			s.seen = append(s.seen, ap)
			s.mu.Unlock()
			pc.WriteTo([]byte(ap.String()), from)
		}
	}()
	return s
}

// udpAsk sends one datagram from conn to dst and returns the server's
// answer: the address it saw the datagram come from.
func udpAsk(conn net.PacketConn, dst netip.AddrPort) (netip.AddrPort, error) {
	buf := make([]byte, 256)
	for try := 0; try < 5; try++ {
		if _, err := conn.WriteTo([]byte("who am i"), net.UDPAddrFromAddrPort(dst)); err != nil {
			return netip.AddrPort{}, err
		}
		conn.SetReadDeadline(time.Now().Add(time.Second))
		n, _, err := conn.ReadFrom(buf)
		if err == nil {
			return netip.ParseAddrPort(string(buf[:n]))
		}
	}
	return netip.AddrPort{}, fmt.Errorf("no answer from %s", dst)
}

// RFC 4787 REQ-1 (endpoint-independent mapping) and REQ-3 (port
// preservation), seen from two servers; ICMP echo through the NAT.
func TestNATEndpointIndependentMapping(t *testing.T) {
	for _, shape := range shapes {
		t.Run(shape.String(), func(t *testing.T) {
			l := newLab(t, lab.Options{Shape: shape, Servers: 2})
			watchForLeaks(t, l)
			startNatwall(t, l, natConfig(""))
			client := l.Clients[0]
			warmUp(t, client.NS, l.Servers[0].IPv4)
			warmUp(t, client.NS, l.Servers[1].IPv4)

			s0 := startUDPServer(t, l.Servers[0], 9000)
			s1 := startUDPServer(t, l.Servers[1], 9001)
			_, _ = s0, s1
			conn, err := client.NS.ListenPacket("udp4", netip.AddrPortFrom(client.IPv4, 40123).String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			seen0, err := udpAsk(conn, netip.AddrPortFrom(l.Servers[0].IPv4, 9000))
			if err != nil {
				t.Fatal(err)
			}
			seen1, err := udpAsk(conn, netip.AddrPortFrom(l.Servers[1].IPv4, 9001))
			if err != nil {
				t.Fatal(err)
			}
			want := netip.AddrPortFrom(lab.ApplianceOutsideV4, 40123)
			if seen0 != want || seen1 != want {
				t.Fatalf("servers saw %s and %s, want both %s (one mapping, source port kept)", seen0, seen1, want)
			}
		})
	}
}

// RFC 4787 REQ-9: an inside host reaches another inside host through its
// external address and port.
func TestNATHairpinning(t *testing.T) {
	l := newLab(t, lab.Options{Shape: lab.TwoNIC, Clients: 2})
	watchForLeaks(t, l)
	startNatwall(t, l, natConfig(""))
	server := l.Servers[0]
	warmUp(t, l.Clients[0].NS, server.IPv4)
	warmUp(t, l.Clients[1].NS, server.IPv4)
	startUDPServer(t, server, 9000)

	a, err := l.Clients[0].NS.ListenPacket("udp4", netip.AddrPortFrom(l.Clients[0].IPv4, 41000).String())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	mapped, err := udpAsk(a, netip.AddrPortFrom(server.IPv4, 9000))
	if err != nil {
		t.Fatal(err)
	}

	b, err := l.Clients[1].NS.ListenPacket("udp4", netip.AddrPortFrom(l.Clients[1].IPv4, 42000).String())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// b learns its own mapping first, as a peer-to-peer client would.
	bMapped, err := udpAsk(b, netip.AddrPortFrom(server.IPv4, 9000))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.WriteTo([]byte("hello via the NAT"), net.UDPAddrFromAddrPort(mapped)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	a.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, from, err := a.ReadFrom(buf)
	if err != nil {
		t.Fatalf("hairpinned datagram to %s never arrived: %v", mapped, err)
	}
	src := from.(*net.UDPAddr).AddrPort()
	if string(buf[:n]) != "hello via the NAT" || netip.AddrPortFrom(src.Addr().Unmap(), src.Port()) != bMapped {
		t.Fatalf("got %q from %s, want it from b's external endpoint %s", buf[:n], src, bMapped)
	}
}

// The insertion race behind Kubernetes' 5-second DNS delays: 128 inside
// clients send their first UDP packet, all from the same source port, to
// the same server at the same moment. Every one must get a distinct
// external endpoint and an answer; nothing may be dropped or shared.
func TestNATFirstPacketRace(t *testing.T) {
	const clients = 128
	l := newLab(t, lab.Options{Shape: lab.TwoNIC, Clients: 2})
	watchForLeaks(t, l)
	a := startNatwall(t, l, natConfig(""))
	server := l.Servers[0]
	startUDPServer(t, server, 53)
	ctx := testContext(t)

	// 64 more inside addresses on each client host.
	var addrs []struct {
		ns   *lab.NetNS
		addr netip.Addr
	}
	for i := 0; i < clients; i++ {
		h := l.Clients[i%2]
		addr := netip.AddrFrom4([4]byte{198, 18, 1, byte(100 + i)})
		if _, err := h.NS.IP(ctx, "addr", "add", addr.String()+"/24", "dev", h.Interface, "nodad"); err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, struct {
			ns   *lab.NetNS
			addr netip.Addr
		}{h.NS, addr})
	}
	warmUp(t, l.Clients[0].NS, server.IPv4)
	warmUp(t, l.Clients[1].NS, server.IPv4)
	before := a.packets(t)

	conns := make([]net.PacketConn, clients)
	for i, c := range addrs {
		pc, err := c.ns.ListenPacket("udp4", netip.AddrPortFrom(c.addr, 5353).String())
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		conns[i] = pc
	}
	dst := net.UDPAddrFromAddrPort(netip.AddrPortFrom(server.IPv4, 53))
	start := make(chan struct{})
	var wg sync.WaitGroup
	seen := make([]netip.AddrPort, clients)
	errs := make([]error, clients)
	for i, pc := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if _, err := pc.WriteTo([]byte("query"), dst); err != nil {
				errs[i] = err
				return
			}
			buf := make([]byte, 256)
			pc.SetReadDeadline(time.Now().Add(3 * time.Second))
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				errs[i] = fmt.Errorf("client %s: no answer to its first packet: %w", addrs[i].addr, err)
				return
			}
			seen[i], errs[i] = netip.ParseAddrPort(string(buf[:n]))
		}()
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	distinct := map[netip.AddrPort]bool{}
	for _, s := range seen {
		distinct[s] = true
	}
	if len(distinct) != clients {
		t.Errorf("%d distinct external endpoints for %d clients", len(distinct), clients)
	}
	after := a.packets(t)
	for reason, v := range after {
		if strings.HasPrefix(reason, "drop_") && v != before[reason] {
			t.Errorf("%s rose by %.0f during the race", reason, v-before[reason])
		}
	}
}

// A tiny port range: allocations beyond it fail, are counted, and never
// reuse a port held by another inside endpoint.
func TestNATPortExhaustion(t *testing.T) {
	const ports, clients = 16, 20
	l := newLab(t, lab.Options{Shape: lab.TwoNIC})
	watchForLeaks(t, l)
	a := startNatwall(t, l, natConfig("  port_range: 20000-20015\n  overload: false\n  host_quota: 16\n"))
	server := l.Servers[0]
	startUDPServer(t, server, 9000)
	ctx := testContext(t)
	client := l.Clients[0]
	warmUp(t, client.NS, server.IPv4)

	got := map[netip.AddrPort]netip.Addr{}
	failed := 0
	for i := 0; i < clients; i++ {
		addr := netip.AddrFrom4([4]byte{198, 18, 1, byte(100 + i)})
		if _, err := client.NS.IP(ctx, "addr", "add", addr.String()+"/24", "dev", client.Interface, "nodad"); err != nil {
			t.Fatal(err)
		}
		pc, err := client.NS.ListenPacket("udp4", netip.AddrPortFrom(addr, 5000).String())
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		seen, err := udpAsk(pc, netip.AddrPortFrom(server.IPv4, 9000))
		if err != nil {
			failed++
			continue
		}
		if owner, dup := got[seen]; dup {
			t.Fatalf("external endpoint %s given to %s and %s", seen, owner, addr)
		}
		got[seen] = addr
	}
	if len(got) != ports || failed != clients-ports {
		t.Fatalf("%d clients mapped, %d failed; want %d and %d", len(got), failed, ports, clients-ports)
	}
	if p := a.packets(t); p["drop_snat_exhausted"] < clients-ports {
		t.Fatalf("drop_snat_exhausted = %.0f, want at least %d", p["drop_snat_exhausted"], clients-ports)
	}
}

// A full flow table makes room for new flows by evicting ones that were
// never answered (early drop), and keeps the established ones.
func TestNATTableFull(t *testing.T) {
	const size = 1024
	l := newLab(t, lab.Options{Shape: lab.TwoNIC})
	watchForLeaks(t, l)
	a := startNatwall(t, l, natConfig(fmt.Sprintf("conntrack:\n  table_size: %d\n", size)))
	server := l.Servers[0]
	client := l.Clients[0]
	warmUp(t, client.NS, server.IPv4)
	ctx := testContext(t)

	// An established TCP connection, opened before the table fills.
	conn := echoConn(t, ctx, client, server, 7000)

	// Fill the table with one-packet UDP flows.
	pc, err := client.NS.ListenPacket("udp4", netip.AddrPortFrom(client.IPv4, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for i := 0; i < size+200; i++ {
		dst := net.UDPAddrFromAddrPort(netip.AddrPortFrom(server.IPv4, uint16(10000+i)))
		if _, err := pc.WriteTo([]byte("x"), dst); err != nil {
			t.Fatal(err)
		}
	}
	// Nothing listens on those ports: the flows stay unanswered, which is
	// what a full table evicts.
	deadline := time.Now().Add(5 * time.Second)
	for a.metricValue(t, "natwall_flows_early_dropped_total") == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no early drop after %d new flows into a %d-entry table", size+200, size)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := roundTrip(conn, "after"); err != nil {
		t.Fatalf("established connection broken by a full table: %v", err)
	}
}

func roundTrip(c net.Conn, msg string) error {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := c.Read(buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return fmt.Errorf("echo %q, want %q", buf, msg)
	}
	return nil
}

// Stopping and starting the daemon keeps an established, translated TCP
// connection alive: the dataplane stays attached with its pinned state
// while no daemon runs, and the next daemon takes it over.
func TestNATRestartKeepsConnections(t *testing.T) {
	l := newLab(t, lab.Options{Shape: lab.TwoNIC})
	watchForLeaks(t, l)
	a := startNatwall(t, l, natConfig("")+"on_exit: keep\n")
	server, client := l.Servers[0], l.Clients[0]
	warmUp(t, client.NS, server.IPv4)
	ctx := testContext(t)

	ln, err := server.NS.Listen("tcp4", netip.AddrPortFrom(server.IPv4, 7000).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go echoServer(ln)
	conn, err := client.NS.Dial(ctx, "tcp4", netip.AddrPortFrom(server.IPv4, 7000).String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	for round := 0; round < 3; round++ {
		if err := roundTrip(conn, fmt.Sprintf("round %d, daemon up", round)); err != nil {
			t.Fatal(err)
		}
		a.stop(t)
		if err := roundTrip(conn, fmt.Sprintf("round %d, daemon down", round)); err != nil {
			t.Fatalf("connection broken while the daemon was down: %v", err)
		}
		a.start(t)
	}
	if err := roundTrip(conn, "done"); err != nil {
		t.Fatal(err)
	}
	// The flow the daemons shared is still the one translated flow.
	if p := a.packets(t); p["drop_ct_invalid"] != 0 {
		t.Errorf("drop_ct_invalid = %.0f: a packet of the connection found no flow", p["drop_ct_invalid"])
	}
}

// A restart with another flow table size cannot keep the pinned tables:
// natwall starts with empty ones, says so, and forwards, instead of
// refusing to start.
func TestRestartWithAnotherTableSize(t *testing.T) {
	l := newLab(t, lab.Options{Shape: lab.TwoNIC})
	a := startNatwall(t, l, natConfig("conntrack:\n  table_size: 4096\n")+"on_exit: keep\n")
	server, client := l.Servers[0], l.Clients[0]
	warmUp(t, client.NS, server.IPv4)
	a.stop(t)

	if err := os.WriteFile(a.config, []byte(natwallConfig(l, a.pinDir, natConfig("conntrack:\n  table_size: 8192\n"))), 0o600); err != nil {
		t.Fatal(err)
	}
	a.start(t)
	out := a.proc.Output()
	if !strings.Contains(out, "starting those tables empty") || !strings.Contains(out, "nw_ct4") {
		t.Errorf("natwall did not report the tables it could not keep:\n%s", out)
	}
	if err := client.NS.Ping(testContext(t), server.IPv4); err != nil {
		t.Fatalf("no forwarding after the restart: %v", err)
	}
}

// Where natwall should behave like Linux MASQUERADE, it does: the same
// scenario through a twin appliance running iptables MASQUERADE gives the
// same observations.
func TestNATMatchesLinuxMasquerade(t *testing.T) {
	observe := func(t *testing.T, l *lab.Lab) []string {
		ctx := testContext(t)
		client := l.Clients[0]
		warmUp(t, client.NS, l.Servers[0].IPv4)
		warmUp(t, client.NS, l.Servers[1].IPv4)
		startUDPServer(t, l.Servers[0], 9000)
		startUDPServer(t, l.Servers[1], 9000)
		var obs []string
		// Two sockets of one host, one port each; each asks both servers.
		for _, port := range []uint16{40000, 40001} {
			pc, err := client.NS.ListenPacket("udp4", netip.AddrPortFrom(client.IPv4, port).String())
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			for _, s := range l.Servers {
				seen, err := udpAsk(pc, netip.AddrPortFrom(s.IPv4, 9000))
				if err != nil {
					t.Fatal(err)
				}
				obs = append(obs, fmt.Sprintf("udp %d -> %s seen as %s", port, s.IPv4, seen))
			}
		}
		// ICMP echo: the server sees the appliance's address.
		if err := client.NS.Ping(ctx, l.Servers[0].IPv4); err != nil {
			t.Fatal(err)
		}
		// A TCP connection: the server sees the appliance's address and
		// the client's port.
		ln, err := l.Servers[0].NS.Listen("tcp4", netip.AddrPortFrom(l.Servers[0].IPv4, 7000).String())
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		accepted := make(chan string, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				accepted <- err.Error()
				return
			}
			accepted <- c.RemoteAddr().String()
			c.Close()
		}()
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(client.IPv4, 41000))}
		var c net.Conn
		err = client.NS.Do(func() error {
			var err error
			c, err = d.DialContext(ctx, "tcp4", netip.AddrPortFrom(l.Servers[0].IPv4, 7000).String())
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		obs = append(obs, "tcp 41000 seen as "+<-accepted)
		sort.Strings(obs)
		return obs
	}

	var linux, natwall []string
	t.Run("linux", func(t *testing.T) {
		l := newLab(t, lab.Options{Shape: lab.TwoNIC, Servers: 2})
		watchForLeaks(t, l)
		ctx := testContext(t)
		if err := l.EnableApplianceForwarding(); err != nil {
			t.Fatal(err)
		}
		if out, err := l.Appliance.Run(ctx, "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", lab.OutsideNIC,
			"-s", lab.InsideNetworkV4.String(), "-j", "MASQUERADE"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		linux = observe(t, l)
	})
	t.Run("natwall", func(t *testing.T) {
		l := newLab(t, lab.Options{Shape: lab.TwoNIC, Servers: 2})
		watchForLeaks(t, l)
		startNatwall(t, l, natConfig(""))
		natwall = observe(t, l)
	})
	if strings.Join(linux, "\n") != strings.Join(natwall, "\n") {
		t.Fatalf("natwall and Linux MASQUERADE differ:\nlinux:\n  %s\nnatwall:\n  %s",
			strings.Join(linux, "\n  "), strings.Join(natwall, "\n  "))
	}
	t.Logf("natwall and Linux MASQUERADE agree:\n  %s", strings.Join(natwall, "\n  "))
}
