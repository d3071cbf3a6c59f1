package test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/natwall/natwall/test/lab"
)

// floodUnanswered opens n UDP flows from one socket of h to ports of dst
// where nothing listens, as a scan does. Replies are at most the few ICMP
// errors the destination's rate limit lets through.
func floodUnanswered(t *testing.T, h *lab.Host, dst netip.Addr, n int) {
	t.Helper()
	pc, err := h.NS.ListenPacket("udp4", netip.AddrPortFrom(h.IPv4, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for i := 0; i < n; i++ {
		to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, uint16(20000+i)))
		if _, err := pc.WriteTo([]byte("anyone?"), to); err != nil {
			t.Fatal(err)
		}
	}
}

// One inside host that opens flows nobody answers neither fills the flow
// table for the others nor stops their new flows: with the per-source
// limit it is stopped at its limit; without it, the full table evicts its
// unanswered flows for the others' new ones.
func TestFloodOfUnansweredFlowsFromOneHost(t *testing.T) {
	const table, limit, flood = 1024, 128, 3000
	for _, tc := range []struct {
		name  string
		limit int
	}{
		{"per-source limit", limit},
		{"early drop", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLab(t, lab.Options{Shape: lab.TwoNIC, Clients: 2})
			watchForLeaks(t, l)
			a := startNatwall(t, l, natConfig(fmt.Sprintf(
				"conntrack:\n  table_size: %d\n  unanswered_per_source: %d\n  gc_interval: 200ms\n", table, tc.limit)))
			server, attacker, victim := l.Servers[0], l.Clients[0], l.Clients[1]
			warmUp(t, attacker.NS, server.IPv4)
			warmUp(t, victim.NS, server.IPv4)
			ctx := testContext(t)

			// The victim's established connection, from before the flood.
			conn := echoConn(t, ctx, victim, server, 7000)

			floodUnanswered(t, attacker, server.IPv4, flood)
			if tc.limit > 0 {
				// The attacker stops at its limit, well short of the table.
				waitFor(t, "drop_ct_src_limit counts the flood", func() bool {
					return a.packets(t)["drop_ct_src_limit"] >= flood-limit-100
				})
				created := a.metricValue(t, "natwall_flows_created_total", "ipv4")
				// natwall_flows_active is the last collection's count:
				// once it has seen the attacker's flows, it stays.
				waitFor(t, "a collection counts the attacker's flows", func() bool {
					return a.metricValue(t, "natwall_flows_active", "ipv4") >= limit
				})
				if active := a.metricValue(t, "natwall_flows_active", "ipv4"); active > limit+100 {
					t.Errorf("%.0f flows active after a flood from one host limited to %d unanswered", active, limit)
				}
				if created > limit+100 {
					t.Errorf("%.0f flows created for a host limited to %d unanswered", created, limit)
				}
			} else {
				waitFor(t, "the flood evicts its own unanswered flows", func() bool {
					return a.metricValue(t, "natwall_flows_early_dropped_total") >= flood-table-100
				})
			}

			// The other host still opens new flows, TCP and UDP, and its
			// established connection is untouched.
			if err := tcpEcho(ctx, victim.NS, server.NS, server.IPv4, 7001, 64<<10); err != nil {
				t.Fatalf("new TCP connection of another host after the flood: %v", err)
			}
			if err := udpEcho(ctx, victim.NS, server.NS, server.IPv4, 7002, 5); err != nil {
				t.Fatalf("new UDP flow of another host after the flood: %v", err)
			}
			if err := roundTrip(conn, "after"); err != nil {
				t.Fatalf("established connection after the flood: %v", err)
			}
			p := a.packets(t)
			if tc.limit == 0 && p["drop_ct_src_limit"] != 0 {
				t.Errorf("drop_ct_src_limit = %.0f with no limit configured", p["drop_ct_src_limit"])
			}
		})
	}
}

// rawFirstFragments sends first fragments of UDP datagrams to dst from
// spoofed outside sources, each with its own identification, until ctx
// ends or, when n > 0, n are sent, and returns how many it sent.
func rawFirstFragments(ctx context.Context, ns *lab.NetNS, dst netip.Addr, n int) (int, error) {
	var fd int
	err := ns.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
		return err
	})
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	pkt := make([]byte, 20+24)
	pkt[0], pkt[8], pkt[9] = 0x45, 64, unix.IPPROTO_UDP
	binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
	binary.BigEndian.PutUint16(pkt[6:], 0x2000) // more fragments, offset 0
	copy(pkt[16:20], dst.AsSlice())
	udp := pkt[20:]
	binary.BigEndian.PutUint16(udp[0:], 53)
	binary.BigEndian.PutUint16(udp[2:], 9000)
	binary.BigEndian.PutUint16(udp[4:], 1200) // the whole datagram's length
	to := &unix.SockaddrInet4{Addr: dst.As4()}
	sent := 0
	for i := 0; ctx.Err() == nil && (n == 0 || sent < n); i++ {
		binary.BigEndian.PutUint16(pkt[4:], uint16(i))
		// Sources on the servers' own subnet: spoofed, but nothing a
		// reverse-path check could tell from real ones.
		copy(pkt[12:16], []byte{198, 19, 1, byte(100 + i%100)})
		if err := unix.Sendto(fd, pkt, 0, to); err != nil {
			if err == unix.ENOBUFS {
				continue
			}
			return sent, err
		}
		sent++
		if sent%64 == 0 {
			time.Sleep(time.Millisecond) // pace it: the echoes share two CPUs with it
		}
	}
	return sent, nil
}

// bigUDPEcho sends datagrams of size bytes, which the sender's kernel
// fragments, to an echo server and checks each comes back whole.
func bigUDPEcho(ctx context.Context, client, server *lab.NetNS, dst netip.Addr, port, size, count int) error {
	pc, err := serveUDPEcho(server, net.JoinHostPort(dst.String(), fmt.Sprint(port)))
	if err != nil {
		return err
	}
	defer pc.Close()
	c, err := client.Dial(ctx, "udp", netip.AddrPortFrom(dst, uint16(port)).String())
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 65536)
	for i := 0; i < count; i++ {
		msg := make([]byte, size)
		rand.Read(msg)
		var got bool
		for try := 0; try < 5 && !got; try++ {
			if _, err := c.Write(msg); err != nil {
				return err
			}
			c.SetReadDeadline(time.Now().Add(time.Second))
			n, err := c.Read(buf)
			got = err == nil && bytes.Equal(buf[:n], msg)
		}
		if !got {
			return fmt.Errorf("%d-byte datagram %d to %s never came back whole", size, i, dst)
		}
	}
	return nil
}

// Large UDP datagrams, fragmented by the sending kernels, get through in
// both directions, translated in IPv4, while spoofed first fragments the
// policy drops flood the appliance: none of the real fragments is refused.
func TestFragmentedUDPThroughAFragmentFlood(t *testing.T) {
	forEachTopologyWith(t, natConfig(""), func(t *testing.T, l *lab.Lab, a *appliance, fam family) {
		ctx := testContext(t)
		client, server := l.Clients[0], l.Servers[0]
		dst := fam.client(server)
		warmUp(t, client.NS, dst)
		before := a.packets(t)
		kernelBefore, err := l.Appliance.Snmp()
		if err != nil {
			t.Fatal(err)
		}

		// More first fragments than the fragment table holds, before the
		// echoes and while they run.
		sent := 0
		if fam.name == "ipv4" {
			if sent, err = rawFirstFragments(ctx, server.NS, client.IPv4, 20000); err != nil {
				t.Fatalf("fragment flood: %v", err)
			}
		}
		var wg sync.WaitGroup
		floodCtx, stopFlood := context.WithCancel(ctx)
		var during int
		var floodErr error
		if fam.name == "ipv4" {
			wg.Add(1)
			go func() {
				defer wg.Done()
				during, floodErr = rawFirstFragments(floodCtx, server.NS, client.IPv4, 0)
			}()
		}
		for _, size := range []int{1473, 4000, 9000, 30000} {
			if err := bigUDPEcho(ctx, client.NS, server.NS, dst, 7100, size, 10); err != nil {
				stopFlood()
				wg.Wait()
				t.Fatal(err)
			}
		}
		stopFlood()
		wg.Wait()
		if floodErr != nil {
			t.Fatalf("fragment flood: %v", floodErr)
		}
		sent += during

		after := a.packets(t)
		kernelAfter, err := l.Appliance.Snmp()
		if err != nil {
			t.Fatal(err)
		}
		key := "Ip.ForwDatagrams"
		if fam.name == "ipv6" {
			key = "Ip6OutForwDatagrams"
		}
		if d := kernelAfter[key] - kernelBefore[key]; d != 0 {
			t.Errorf("the appliance kernel forwarded %d datagrams (%s): natwall should have forwarded every fragment", d, key)
		}
		for _, r := range []string{"drop_frag_no_first", "drop_frag_overlap"} {
			if d := after[r] - before[r]; d != 0 {
				t.Errorf("%s counted %.0f real fragments", r, d)
			}
		}
		if fam.name == "ipv4" {
			if d := after["drop_policy"] - before["drop_policy"]; sent == 0 || d == 0 || d > float64(sent) {
				t.Errorf("flood of %d first fragments: drop_policy counted %.0f", sent, d)
			}
			t.Logf("%d spoofed first fragments sent before and during the echoes, %.0f dropped by policy", sent, after["drop_policy"]-before["drop_policy"])
		}
	})
}
