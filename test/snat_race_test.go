package test

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/natwall/natwall/dataplane"
	"github.com/natwall/natwall/test/lab"
)

// Two inside hosts send their first UDP packets from the same 64 source
// ports at the same moment: 128 first packets racing for 64 preserved
// ports on both CPUs, 20 times. Every packet must be translated and
// answered, to a distinct external endpoint, and no drop reason may move:
// a claim that fails for another reason than "port taken" is retried, and
// is never mistaken for exhaustion.
func TestSNATFirstPacketRaceTwoHosts(t *testing.T) {
	const ports, runs = 64, 20
	l := newLab(t, lab.Options{Shape: lab.TwoNIC, Clients: 2})
	watchForLeaks(t, l)
	a := startNatwall(t, l, natConfig(""))
	server := l.Servers[0]
	startUDPServer(t, server, 53)
	for _, c := range l.Clients {
		warmUp(t, c.NS, server.IPv4)
	}
	dst := net.UDPAddrFromAddrPort(netip.AddrPortFrom(server.IPv4, 53))
	before := a.packets(t)
	lost := 0
	for run := 0; run < runs; run++ {
		base := uint16(30000 + run*ports)
		type sock struct {
			pc   net.PacketConn
			name string
		}
		var socks []sock
		for _, c := range l.Clients {
			for i := 0; i < ports; i++ {
				src := netip.AddrPortFrom(c.IPv4, base+uint16(i))
				pc, err := c.NS.ListenPacket("udp4", src.String())
				if err != nil {
					t.Fatal(err)
				}
				socks = append(socks, sock{pc, src.String()})
			}
		}
		start := make(chan struct{})
		var wg sync.WaitGroup
		seen := make([]netip.AddrPort, len(socks))
		errs := make([]error, len(socks))
		for i, s := range socks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				if _, err := s.pc.WriteTo([]byte("query"), dst); err != nil {
					errs[i] = err
					return
				}
				buf := make([]byte, 256)
				s.pc.SetReadDeadline(time.Now().Add(3 * time.Second))
				n, _, err := s.pc.ReadFrom(buf)
				if err != nil {
					errs[i] = fmt.Errorf("run %d: %s: no answer to its first packet: %w", run, s.name, err)
					return
				}
				seen[i], errs[i] = netip.ParseAddrPort(string(buf[:n]))
			}()
		}
		close(start)
		wg.Wait()
		for _, s := range socks {
			s.pc.Close()
		}
		distinct := map[netip.AddrPort]bool{}
		for i, err := range errs {
			if err != nil {
				lost++
				t.Error(err)
				continue
			}
			distinct[seen[i]] = true
		}
		if n := len(socks) - lost; len(distinct) < n {
			t.Errorf("run %d: %d distinct external endpoints for %d answered endpoints", run, len(distinct), n)
		}
	}
	st, err := dataplane.OpenState(a.pinDir)
	if err != nil {
		t.Fatal(err)
	}
	stats, err := st.Stats()
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("claims retried after a failure other than \"taken\": %d; ports probed: %d; overloaded mappings: %d; new mappings: %d",
		stats[dataplane.StatSNATRetried], stats[dataplane.StatSNATProbes], stats[dataplane.StatSNATOverloaded], stats[dataplane.StatSNATNewMapping])
	// The address is nowhere near full: overloading here would mean the
	// allocator gave up on free ports, which is what used to drop packets.
	if n := stats[dataplane.StatSNATOverloaded]; n != 0 {
		t.Errorf("%d endpoints overloaded while the address had free ports", n)
	}
	after := a.packets(t)
	for reason, v := range after {
		if strings.HasPrefix(reason, "drop_") && v != before[reason] {
			t.Errorf("%s rose by %.0f during the races", reason, v-before[reason])
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d first packets lost", lost, runs*2*ports)
	}
}
