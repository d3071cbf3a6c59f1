package test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/natwall/natwall/test/lab"
)

// Inbound NAT (issue 15 item 3), end to end with real servers on an inside
// host: a jump box on external port 50022 forwarded to its :22, and a UDP
// range 60000-60004 forwarded to 7000-7004.
const dnatRuleFile = `dnat:
  - {id: jump-box-ssh, external: snat, protocol: tcp, port: 50022, to: %[1]s, to_port: 22}
  - {id: game-range, external: %[2]s, protocol: udp, ports: 60000-60004, to: %[1]s, to_port: 7000}
stateful:
  default_action: deny
  rules:
    - {id: out, priority: 10, action: allow, direction: outbound}
    - {id: to-jump-box, priority: 20, action: allow, direction: inbound, dst: [%[1]s], protocol: tcp, dst_ports: [22]}
    - {id: to-games, priority: 30, action: allow, direction: inbound, dst: [%[1]s], protocol: udp, dst_ports: [7000-7004]}
    - {id: hairpin, priority: 40, action: allow, direction: east-west, dst: [%[1]s]}
`

// startPeerEcho listens on h:port and answers each connection with the
// remote address it saw.
func startPeerEcho(t *testing.T, h *lab.Host, port int) {
	t.Helper()
	ln, err := h.NS.Listen("tcp4", netip.AddrPortFrom(h.IPv4, uint16(port)).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprint(c, c.RemoteAddr().String())
			c.Close()
		}
	}()
}

// askPeer connects from ns to dst and returns the address the far end saw.
func askPeer(t *testing.T, ns *lab.NetNS, dst netip.AddrPort) netip.AddrPort {
	t.Helper()
	ctx, cancel := context.WithTimeout(testContext(t), 5*time.Second)
	defer cancel()
	c, err := ns.Dial(ctx, "tcp4", dst.String())
	if err != nil {
		t.Fatalf("connect to %s: %v", dst, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read from %s: %v", dst, err)
	}
	seen, err := netip.ParseAddrPort(string(b))
	if err != nil {
		t.Fatalf("%s answered %q", dst, b)
	}
	return seen
}

func TestDNATForwards(t *testing.T) {
	for _, shape := range shapes {
		t.Run(shape.String(), func(t *testing.T) {
			l := newLab(t, lab.Options{Shape: shape, Clients: 2})
			watchForLeaks(t, l)
			target, other, outside := l.Clients[0], l.Clients[1], l.Servers[0]
			ext := lab.ApplianceOutsideV4
			dir := t.TempDir()
			ruleFile := filepath.Join(dir, "dnat.yaml")
			if err := os.WriteFile(ruleFile, []byte(fmt.Sprintf(dnatRuleFile, target.IPv4, ext)), 0o600); err != nil {
				t.Fatal(err)
			}
			a := startNatwall(t, l, natConfig(fmt.Sprintf("state_dir: %s\nrules:\n  paths: [%s]\n", filepath.Join(dir, "state"), ruleFile)))
			warmUp(t, target.NS, outside.IPv4)
			warmUp(t, other.NS, outside.IPv4)
			startPeerEcho(t, target, 22)
			for p := 7000; p <= 7003; p++ { // 7004 stays closed
				startUDPServer(t, target, p)
			}

			// TCP from outside: the inside host sees the real client.
			if seen := askPeer(t, outside.NS, netip.AddrPortFrom(ext, 50022)); seen.Addr() != outside.IPv4 {
				t.Fatalf("the jump box saw %s, want the outside host %s", seen, outside.IPv4)
			}

			// The UDP range, port by port; the answer comes from the
			// external endpoint asked.
			conn, err := outside.NS.ListenPacket("udp4", netip.AddrPortFrom(outside.IPv4, 45000).String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			for p := uint16(60000); p <= 60003; p++ {
				to := netip.AddrPortFrom(ext, p)
				from, seen, err := udpAskFrom(conn, to)
				if err != nil {
					t.Fatal(err)
				}
				if from != to || seen != netip.AddrPortFrom(outside.IPv4, 45000) {
					t.Fatalf("asked %s: answer from %s, server saw %s", to, from, seen)
				}
			}

			// ICMP error for a forwarded flow: nothing listens on 7004, and
			// the inside host's port unreachable, translated back, refuses
			// the outside host's connected socket.
			ctx, cancel := context.WithTimeout(testContext(t), 5*time.Second)
			defer cancel()
			uc, err := outside.NS.Dial(ctx, "udp4", netip.AddrPortFrom(ext, 60004).String())
			if err != nil {
				t.Fatal(err)
			}
			defer uc.Close()
			refused := false
			for try := 0; try < 5 && !refused; try++ {
				uc.Write([]byte("anyone?"))
				uc.SetReadDeadline(time.Now().Add(time.Second))
				_, err := uc.Read(make([]byte, 64))
				refused = errors.Is(err, syscall.ECONNREFUSED)
			}
			if !refused {
				t.Fatal("the inside host's port unreachable never reached the outside host translated")
			}

			// Hairpin: another inside host uses the external address and
			// reaches the jump box, which sees the external address.
			if seen := askPeer(t, other.NS, netip.AddrPortFrom(ext, 50022)); seen.Addr() != ext {
				t.Fatalf("hairpinned, the jump box saw %s, want the external address %s", seen, ext)
			}

			// The rules see the translated destination: their hits are
			// the target's rules'.
			hits := ruleHits(t, a)
			if hits["to-jump-box"] != 1 || hits["to-games"] != 5 || hits["hairpin"] != 1 {
				t.Fatalf("rule hits %v, want to-jump-box 1, to-games 5, hairpin 1", hits)
			}
			// natwall rules lists the forwards too, their hits the flows
			// each opened.
			if hits["jump-box-ssh"] != 2 || hits["game-range"] != 5 {
				t.Fatalf("forward hits %v, want jump-box-ssh 2 (inbound, hairpin), game-range 5", hits)
			}

			// conntrack list shows the translation: reply source the target.
			startTCP := netip.AddrPortFrom(target.IPv4, 22).String()
			var flows []map[string]any
			cliJSON(t, a, &flows, "conntrack", "list", "--port", "50022")
			var inbound, hairpin bool
			for _, f := range flows {
				if f["dst"] != netip.AddrPortFrom(ext, 50022).String() || f["reply_src"] != startTCP || f["dnat"] != true {
					continue
				}
				switch {
				case strings.HasPrefix(f["src"].(string), outside.IPv4.String()+":") && f["zone"] == "inbound" && f["snat"] == false:
					inbound = true
				case strings.HasPrefix(f["src"].(string), other.IPv4.String()+":") && f["zone"] == "east-west" && f["snat"] == true:
					hairpin = true
				}
			}
			if !inbound || !hairpin {
				t.Fatalf("conntrack list --port 50022: %v; want the inbound flow and the hairpin, both dnat with reply source %s", flows, startTCP)
			}
			table := cli(t, a, "conntrack", "list", "--port", "50022")
			if table.code != 0 || !strings.Contains(table.stdout, "REPLY-SRC") ||
				strings.Count(table.stdout, netip.AddrPortFrom(ext, 50022).String()+"  "+startTCP) != 2 {
				t.Fatalf("conntrack list table: %d %s %s", table.code, table.stdout, table.stderr)
			}
			if n := a.metricValue(t, "natwall_rule_hits_total", "jump-box-ssh"); n != 2 {
				t.Fatalf("natwall_rule_hits_total for jump-box-ssh %v, want 2", n)
			}
			if n := a.metricValue(t, "natwall_dnat_flows_total"); n < 7 {
				t.Fatalf("natwall_dnat_flows_total %v, want at least 7 (1 tcp, 5 udp, 1 hairpin)", n)
			}
		})
	}
}

// udpAskFrom is udpAsk that also returns where the answer came from.
func udpAskFrom(conn net.PacketConn, dst netip.AddrPort) (from, seen netip.AddrPort, err error) {
	buf := make([]byte, 256)
	for try := 0; try < 5; try++ {
		if _, err := conn.WriteTo([]byte("who am i"), net.UDPAddrFromAddrPort(dst)); err != nil {
			return from, seen, err
		}
		conn.SetReadDeadline(time.Now().Add(time.Second))
		n, addr, err := conn.ReadFrom(buf)
		if err == nil {
			ap := addr.(*net.UDPAddr).AddrPort()
			seen, err = netip.ParseAddrPort(string(buf[:n]))
			return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), seen, err
		}
	}
	return from, seen, fmt.Errorf("no answer from %s", dst)
}
