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
