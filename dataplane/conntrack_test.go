package dataplane

import (
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/google/gopacket/layers"
)

func (fx *fibFixture) state() *State {
	d := Dataplane{objs: fx.objs}
	return d.State()
}

func collectFlows(t *testing.T, s *State) []Flow {
	t.Helper()
	var out []Flow
	must(t, s.Flows(func(f Flow) bool { out = append(out, f); return true }))
	return out
}

func TestStateFlowsAndFlush(t *testing.T) {
	fx := newFibFixture(t)
	fx.apply(t, natSettings(1024, 65535))
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: "198.19.1.10", sport: 5000, dport: 9000}), "a0", ReasonFwdRedirect)
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolTCP, src: "198.18.1.21", dst: "198.19.1.10", sport: 5001, dport: 443, tcpFlags: "S"}), "a0", ReasonFwdRedirect)
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolTCP, src: "198.19.1.10", dst: natAddr, sport: 443, dport: 5001, tcpFlags: "SA"}), "b0", ReasonFwdRedirect)
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolTCP, src: "198.18.1.21", dst: "198.19.1.10", sport: 5001, dport: 443, tcpFlags: "A"}), "a0", ReasonFwdRedirect)
	fx.expect(t, packet{v6: true, src: "2001:db8:1::10", dst: "2001:db8:2::10"}.build(t), "a0", ReasonFwdRedirect)

	s := fx.state()
	flows := collectFlows(t, s)
	if len(flows) != 3 {
		t.Fatalf("%d flows, want 3: %+v", len(flows), flows)
	}
	for _, f := range flows {
		switch {
		case f.Proto == 6:
			if f.TCPState != natwallNwTcpStateNW_TCP_ESTABLISHED || !f.SeenReply || f.PacketsOrig != 2 || f.PacketsReply != 1 {
				t.Errorf("tcp flow %+v: want established, 2 packets out, 1 back", f)
			}
			if !f.SNAT || f.ReplyDst.Addr() != netip.MustParseAddr(natAddr) || f.Src.Addr() != netip.MustParseAddr("198.18.1.21") {
				t.Errorf("tcp flow translation %v -> %v / reply %v -> %v", f.Src, f.Dst, f.ReplySrc, f.ReplyDst)
			}
			if ZoneName(f.Zone) != "outbound" {
				t.Errorf("zone %s", ZoneName(f.Zone))
			}
		case f.Src.Addr().Is6():
			if f.SNAT || f.ReplyDst != f.Src {
				t.Errorf("IPv6 flow was translated: %+v", f)
			}
		}
		if time.Since(f.LastSeen) > time.Minute || f.Created.After(time.Now().Add(time.Second)) {
			t.Errorf("flow times off: created %v last seen %v", f.Created, f.LastSeen)
		}
	}

	n, err := s.Flush(FlowFilter{Addr: netip.MustParsePrefix("198.18.1.21/32")})
	must(t, err)
	if n != 1 {
		t.Fatalf("flushed %d flows, want 1", n)
	}
	if got := len(collectFlows(t, s)); got != 2 {
		t.Fatalf("%d flows left, want 2", got)
	}
	// With its flow gone, the server's next segment is not admitted.
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolTCP, src: "198.19.1.10", dst: natAddr, sport: 443, dport: 5001, tcpFlags: "A"}), "b0", ReasonPassLocal)
}

func TestStateCollectExpiredAndMappings(t *testing.T) {
	fx := newFibFixture(t)
	s := natSettings(30000, 30000) // one port: a second endpoint needs it freed
	s.Timeouts.UDP = time.Second
	fx.apply(t, s)
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: "198.19.1.10", sport: 5000, dport: 9000}), "a0", ReasonFwdRedirect)
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.21", dst: "198.19.1.10", sport: 5000, dport: 9000}), "a0", ReasonDropSNATExhausted)

	st := fx.state()
	usage, err := st.SNATUsage()
	must(t, err)
	for _, u := range usage {
		if u.Proto == 17 && (u.Mappings != 1 || u.Capacity != 1) {
			t.Fatalf("udp usage %+v, want 1 of 1", u)
		}
	}
	// Nothing is expired yet, and a mapping in use is kept.
	gone, err := st.CollectExpired(time.Now())
	must(t, err)
	if len(gone) != 0 {
		t.Fatalf("collected %d live flows", len(gone))
	}
	// In the future, the flow has expired, with its final counters.
	later := time.Now().Add(time.Minute)
	gone, err = st.CollectExpired(later)
	must(t, err)
	if len(gone) != 1 || gone[0].PacketsOrig != 1 {
		t.Fatalf("collected %+v, want the one flow with its packet count", gone)
	}
	freed, err := st.CollectMappings(later)
	must(t, err)
	if freed != 1 {
		t.Fatalf("freed %d mappings, want 1", freed)
	}
	// The port can now serve another inside endpoint.
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.21", dst: "198.19.1.10", sport: 5000, dport: 9000}), "a0", ReasonFwdRedirect)
}

func TestFlowEvents(t *testing.T) {
	fx := newFibFixture(t)
	fx.apply(t, natSettings(1024, 65535))
	rd, err := ringbuf.NewReader(fx.objs.NwEvents)
	must(t, err)
	defer rd.Close()
	er := &EventReader{rd: rd, clk: newMonoClock()}

	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: "198.19.1.10", sport: 5000, dport: 9000}), "a0", ReasonFwdRedirect)
	rd.SetDeadline(time.Now().Add(5 * time.Second))
	ev, err := er.Read()
	must(t, err)
	if ev.Type != FlowStarted || ev.Flow.Src != netip.MustParseAddrPort("198.18.1.20:5000") ||
		ev.Flow.Dst != netip.MustParseAddrPort("198.19.1.10:9000") || ev.Flow.ReplyDst.Addr() != netip.MustParseAddr(natAddr) {
		t.Fatalf("event %+v", ev)
	}
}

func TestStateCollect(t *testing.T) {
	fx := newFibFixture(t)
	s := natSettings(30000, 30000) // one port: a second endpoint needs it freed
	s.Timeouts.UDP = time.Second
	fx.apply(t, s)
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: "198.19.1.10", sport: 5000, dport: 9000}), "a0", ReasonFwdRedirect)
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.21", dst: "198.19.1.10", sport: 5000, dport: 9000}), "a0", ReasonDropSNATExhausted)
	fx.expect(t, packet{v6: true, src: "2001:db8:1::10", dst: "2001:db8:2::10"}.build(t), "a0", ReasonFwdRedirect)
	st := fx.state()

	// More stale IPv6 flows than one batch holds, so the walk and the
	// deletes take several batch syscalls.
	defer func(n int) { gcBatch = n }(gcBatch)
	gcBatch = 16
	const stale = 50
	if int(fx.objs.NwCt6.MaxEntries()) < stale+10 {
		t.Fatalf("ct6 holds %d entries, test needs %d", fx.objs.NwCt6.MaxEntries(), stale+10)
	}
	for i := 0; i < stale; i++ {
		k := natwallNwTuple6{Saddr: [16]uint8{0x20, 0x01, 0x0d, 0xb8, 3, 14: uint8(i >> 8), 15: uint8(i)},
			Daddr: [16]uint8{0x20, 0x01, 0x0d, 0xb8, 4, 15: 1}, Sport: port(1000), Dport: port(53), Proto: 17}
		e := natwallNwCt6Entry{St: natwallNwCtState{CreatedNs: 1, LastSeenNs: 1, PacketsOrig: 1}}
		must(t, fx.objs.NwCt6.Put(&k, &e))
	}

	udpMappings := func(res GCResult) int {
		for _, u := range res.SNAT {
			if u.Proto == 17 {
				return u.Mappings
			}
		}
		return -1
	}
	for _, tc := range []struct {
		name                   string
		at                     time.Time
		expired4, expired6     int
		freed                  int
		flows4, flows6, udpMap int
	}{
		{"now: only the stale entries", time.Now(), 0, stale, 0, 1, 1, 1},
		{"later: the UDP flow and its mapping", time.Now().Add(time.Minute), 1, 1, 1, 0, 0, 0},
		{"nothing left", time.Now().Add(time.Minute), 0, 0, 0, 0, 0, 0},
	} {
		res, err := st.Collect(tc.at)
		must(t, err)
		var got4, got6 int
		for _, f := range res.Expired {
			if f.Src.Addr().Is4() {
				got4++
				if f.PacketsOrig != 1 || f.Src != netip.MustParseAddrPort("198.18.1.20:5000") {
					t.Errorf("%s: expired IPv4 flow %+v", tc.name, f)
				}
			} else {
				got6++
			}
		}
		if got4 != tc.expired4 || got6 != tc.expired6 || res.MappingsFreed != tc.freed {
			t.Errorf("%s: expired %d+%d, freed %d; want %d+%d, %d", tc.name, got4, got6, res.MappingsFreed, tc.expired4, tc.expired6, tc.freed)
		}
		if res.Usage.FlowsV4 != tc.flows4 || res.Usage.FlowsV6 != tc.flows6 || udpMappings(res) != tc.udpMap {
			t.Errorf("%s: usage %+v, udp mappings %d; want %d, %d, %d", tc.name, res.Usage, udpMappings(res), tc.flows4, tc.flows6, tc.udpMap)
		}
		// The cached counts agree with a full walk.
		u, err := st.Usage()
		must(t, err)
		if u.FlowsV4 != res.Usage.FlowsV4 || u.FlowsV6 != res.Usage.FlowsV6 {
			t.Errorf("%s: collect counted %+v, tables hold %+v", tc.name, res.Usage, u)
		}
	}
	// The port can now serve another inside endpoint.
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.21", dst: "198.19.1.10", sport: 5000, dport: 9000}), "a0", ReasonFwdRedirect)
}
