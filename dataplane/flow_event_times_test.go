package dataplane

import (
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/google/gopacket/layers"
)

// TestFlowEventCarriesLifetime: a flow's end event from the dataplane
// carries when the flow was created and last seen, for flow logs.
func TestFlowEventCarriesLifetime(t *testing.T) {
	fx := newFibFixture(t)
	s := natSettings(1024, 65535)
	s.Timeouts.UDP = time.Second
	fx.apply(t, s)
	rd, err := ringbuf.NewReader(fx.objs.NwEvents)
	must(t, err)
	defer rd.Close()
	er := &EventReader{rd: rd, clk: newMonoClock()}
	pkt := frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: "198.19.1.10", sport: 5000, dport: 9000})
	before := time.Now()
	fx.expect(t, pkt, "a0", ReasonFwdRedirect)
	rd.SetDeadline(time.Now().Add(5 * time.Second))
	start, err := er.Read()
	must(t, err)
	if start.Type != FlowStarted || start.Flow.Created.Before(before.Add(-time.Second)) || start.Flow.Created.After(time.Now()) {
		t.Fatalf("start event %+v, want created about %v", start, before)
	}
	// Past the timeout, the next packet finds the flow expired: the
	// dataplane ends it and reports the old flow's lifetime.
	time.Sleep(1100 * time.Millisecond)
	fx.expect(t, pkt, "a0", ReasonFwdRedirect)
	end, err := er.Read()
	must(t, err)
	if end.Type != FlowEnded || !end.Flow.Created.Equal(start.Flow.Created) || end.Flow.LastSeen.Before(end.Flow.Created) ||
		end.Time.Sub(end.Flow.LastSeen) < time.Second || end.Flow.PacketsOrig != 1 {
		t.Fatalf("end event %+v, start %+v", end, start)
	}
}

// TestCollectVisitingShowsLiveFlows: the collection shows each flow it
// keeps to the visitor, and not the ones it removes.
func TestCollectVisitingShowsLiveFlows(t *testing.T) {
	fx := newFibFixture(t)
	fx.apply(t, natSettings(1024, 65535))
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: "198.19.1.10", sport: 5000, dport: 9000}), "a0", ReasonFwdRedirect)
	st := fx.state()
	for _, tc := range []struct {
		name    string
		at      time.Time
		visits  int
		expired int
	}{
		{"live", time.Now(), 1, 0},
		{"expired", time.Now().Add(time.Hour), 0, 1},
	} {
		var seen []Flow
		res, err := st.CollectVisiting(tc.at, func(f *Flow) { seen = append(seen, *f) })
		must(t, err)
		if len(seen) != tc.visits || len(res.Expired) != tc.expired {
			t.Fatalf("%s: %d visits, %d expired; want %d, %d", tc.name, len(seen), len(res.Expired), tc.visits, tc.expired)
		}
		for _, f := range seen {
			if f.Src != netip.MustParseAddrPort("198.18.1.20:5000") || !f.SNAT || f.Created.IsZero() {
				t.Errorf("%s: visited %+v", tc.name, f)
			}
		}
	}
}
