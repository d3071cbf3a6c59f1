package dataplane

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"testing"

	"github.com/natwall/natwall/rules"
	"github.com/natwall/natwall/rules/rulestest"
)

// The fixture's own addresses: packets to them are the kernel's, and the
// stateful stage sees only some of them.
var fixtureLocal = map[netip.Addr]bool{
	netip.MustParseAddr("198.18.1.1"): true, netip.MustParseAddr("198.19.1.1"): true,
	netip.MustParseAddr("198.19.3.1"): true, netip.MustParseAddr("2001:db8:1::1"): true,
	netip.MustParseAddr("2001:db8:2::1"): true, netip.MustParseAddr("2001:db8:3::1"): true,
}

// ruleHitsDelta is what one packet did to the rule counters of ids lo..hi:
// the rules that decided (counted with the packet's bytes) and the alert
// rules (counted with none).
type ruleHitsDelta struct {
	decided, alerted []uint32
}

type hitsReader struct {
	s      *State
	ids    []uint32
	before map[uint32]ReasonCount
}

func newHitsReader(t testing.TB, s *State, hi uint32) *hitsReader {
	h := &hitsReader{s: s}
	for id := uint32(1); id <= hi; id++ {
		h.ids = append(h.ids, id)
	}
	var err error
	h.before, err = s.RuleHits(h.ids)
	must(t, err)
	return h
}

func (h *hitsReader) delta(t testing.TB, frameLen int) ruleHitsDelta {
	t.Helper()
	after, err := h.s.RuleHits(h.ids)
	must(t, err)
	var d ruleHitsDelta
	for _, id := range h.ids {
		dp, db := after[id].Packets-h.before[id].Packets, after[id].Bytes-h.before[id].Bytes
		switch {
		case dp == 0 && db == 0:
		case dp == 1 && db == uint64(frameLen):
			d.decided = append(d.decided, id)
		case dp == 1 && db == 0:
			d.alerted = append(d.alerted, id)
		default:
			t.Fatalf("rule %d counted %d packets / %d bytes for one packet of %d bytes", id, dp, db, frameLen)
		}
	}
	h.before = after
	return d
}

// canStartFlow: which of rulestest's packets may open a flow, so that the
// stateful stage classifies them (rawFrame's TCP segments are turned into
// SYNs for this test).
func canStartFlow(p rules.Packet) bool {
	switch {
	case p.Protocol == 1:
		return p.ICMPType == 8
	case p.Protocol == 58:
		return p.ICMPType == 128
	}
	return true
}

func fixtureDirection(p rules.Packet) rules.Direction {
	inside := fixtureSettings().Inside
	in := func(a netip.Addr) bool {
		for _, q := range inside {
			if q.Contains(a) {
				return true
			}
		}
		return false
	}
	switch src, dst := in(p.Src), in(p.Dst); {
	case src && dst:
		return rules.EastWest
	case src:
		return rules.Outbound
	case dst:
		return rules.Inbound
	}
	return rules.Transit
}

// maskL7 is rs as a packet that is not TCP meets it: rules with an L7
// condition cannot match it (no name), whatever their other fields.
func maskL7(rs []rules.Rule, p rules.Packet) []rules.Rule {
	if p.Protocol == 6 {
		return rs
	}
	out := slices.Clone(rs)
	for i := range out {
		if out[i].L7 != nil {
			out[i].Protocol = int(p.Protocol) ^ 1 // any protocol but p's
		}
	}
	return out
}

// FuzzClassifierDifferential: the kernel's classifier against the Go
// reference (the rules taken one by one), on random rule sets for both
// stages, the stateful one rich in alert rules so that long runs of them
// precede the deciding rule, and with rules with an L7 condition (where
// the scan stops: drop_l7_pending; never for non-TCP), loaded at a random
// generation over stale tables in the idle one. For every packet the stateless rule that decided,
// the stateful rule that decided, and every alert rule hit (read from the
// per-rule counters) must be the reference's. A packet of an admitted flow
// is sent again: the verdict its flow keeps must be the same rule's.
func FuzzClassifierDifferential(f *testing.F) {
	fx := newFibFixture(f)
	// Every destination the packets use is routed, so that none is taken
	// for the appliance's own (an unroutable one is the kernel's).
	for _, dst := range []string{"198.18.0.0/15", "2001:db8::/32"} {
		if out, err := exec.Command("ip", "-n", fmt.Sprintf("nwtest-xdp-%d", os.Getpid()), "route", "add", dst, "dev", "b0").CombinedOutput(); err != nil {
			f.Fatalf("route %s: %v: %s", dst, err, out)
		}
	}
	f.Add(uint64(1), uint8(10), uint8(40), uint8(0))
	f.Add(uint64(2), uint8(0), uint8(130), uint8(3))
	f.Add(uint64(3), uint8(30), uint8(7), uint8(2))
	f.Add(uint64(4), uint8(39), uint8(149), uint8(1))
	f.Add(uint64(5), uint8(5), uint8(90), uint8(7))
	f.Fuzz(func(t *testing.T, seed uint64, nStateless, nStateful, flips uint8) {
		r := rand.New(rand.NewPCG(seed, uint64(nStateless)<<16|uint64(nStateful)<<8|uint64(flips)))
		next := uint32(rules.StatefulDefaultID)
		ids := func(string) uint32 { next++; return next }
		randomSet := func() (*rules.RuleSet, *rules.Tables) {
			next = rules.StatefulDefaultID
			rs := &rules.RuleSet{
				Stateless: rulestest.RandomRules(r, int(nStateless)%40, []rules.Action{rules.Pass, rules.Drop}),
				Stateful: rulestest.RandomRules(r, 1+int(nStateful)%150,
					[]rules.Action{rules.Alert, rules.Alert, rules.Alert, rules.Allow, rules.Deny, rules.Reject}),
				StatefulDefault: []rules.Action{rules.Deny, rules.Allow}[r.IntN(2)],
			}
			// Half the alert rules match every packet, so that runs of
			// them longer than the kernel examines at once are common.
			for i := range rs.Stateful {
				if ru := &rs.Stateful[i]; ru.Action == rules.Alert && r.IntN(2) == 0 {
					*ru = rules.Rule{ID: ru.ID, Priority: ru.Priority, Action: rules.Alert, Protocol: -1, ICMPType: -1, ICMPCode: -1}
				}
			}
			// Deny and reject rules in audit mode, or logged; sometimes
			// the whole policy in audit mode.
			rs.Audit = r.IntN(8) == 0
			for i := range rs.Stateful {
				if ru := &rs.Stateful[i]; (ru.Action == rules.Deny || ru.Action == rules.Reject) && ru.L7 == nil {
					ru.Audit = rs.Audit || r.IntN(4) == 0
					ru.Log = !ru.Audit && r.IntN(2) == 0
				}
			}
			// Rules with an L7 condition, of any action: the scan
			// stops at them. Most are TCP as rules requires; the
			// others test the kernel's own guard that they never
			// match anything but TCP.
			for i := range rs.Stateful {
				if ru := &rs.Stateful[i]; r.IntN(6) == 0 {
					ru.L7, ru.Audit, ru.Log = []rules.L7Cond{{DotPrefix: true}}, false, false
					if r.IntN(4) != 0 {
						ru.Protocol, ru.ICMPType, ru.ICMPCode = 6, -1, -1
					}
				}
			}
			tbl, err := rules.Compile(rs, ids)
			must(t, err)
			return rs, tbl
		}
		// A random generation, with another rule set in the idle tables.
		for k := 0; k < int(flips%4); k++ {
			if r.IntN(2) == 0 {
				_, decoy := randomSet()
				must(t, loadRules(&fx.objs, decoy.Stateless, decoy.Stateful))
			} else {
				must(t, invalidateStatelessVerdicts(&fx.objs))
			}
		}
		rs, tbl := randomSet()
		must(t, loadRules(&fx.objs, tbl.Stateless, tbl.Stateful))
		st := fx.state()
		_, err := st.Flush(FlowFilter{})
		must(t, err)
		hits := newHitsReader(t, st, next)

		ruleID := func(stage *rules.StageTables, i int) uint32 {
			if i < 0 {
				return stage.DefaultID
			}
			return stage.RuleIDs[i]
		}
		classified, alerts, pending := 0, 0, 0
		for n := 0; n < 20; n++ {
			p := rulestest.RandomPacket(r)
			for fixtureLocal[p.Dst] {
				p = rulestest.RandomPacket(r)
			}
			p.Direction = fixtureDirection(p)
			frame := rawFrame(p)
			if p.Protocol == 6 {
				frame[len(frame)-20+13] = 0x02 // SYN
				setTCPChecksum(frame)
			}
			desc := fmt.Sprintf("seed %d packet %d %+v", seed, n, p)

			sl, _ := rules.FirstMatch(rs.Stateless, p)
			wantStateless := ruleID(tbl.Stateless, sl)
			drop := sl >= 0 && rs.Stateless[sl].Action == rules.Drop
			sf, wantAlerts := rules.FirstMatch(maskL7(rs.Stateful, p), p)
			wantStateful := ruleID(tbl.Stateful, sf)
			action := rs.StatefulDefault
			if rs.DefaultAudit() {
				action = rules.Allow
			}
			if sf >= 0 {
				action = rs.Stateful[sf].Action
			}
			var want []uint32
			for _, a := range wantAlerts {
				want = append(want, tbl.Stateful.RuleIDs[a])
			}

			res := fx.run(t, frame, "a0")
			d := hits.delta(t, len(frame))
			slices.Sort(d.decided)
			stateful := !drop && canStartFlow(p)
			wantDecided := []uint32{wantStateless}
			if stateful {
				wantDecided = append(wantDecided, wantStateful)
				slices.Sort(wantDecided)
			} else {
				want = nil
			}
			if !slices.Equal(d.decided, wantDecided) || !slices.Equal(d.alerted, want) {
				t.Fatalf("%s: kernel decided by rules %v with alerts %v (%s); reference: stateless %d, stateful %d (classified %v), alerts %v",
					desc, d.decided, d.alerted, res.reason.Name(), wantStateless, wantStateful, stateful, want)
			}
			switch {
			case drop:
				if res.reason != ReasonDropACLStateless {
					t.Fatalf("%s: stateless drop, kernel says %s", desc, res.reason.Name())
				}
				continue
			case !stateful:
				continue
			}
			classified++
			alerts += len(want)
			if sf >= 0 && rs.Stateful[sf].L7 != nil {
				if res.reason != ReasonDropL7Pending {
					t.Fatalf("%s: L7 rule %d pending, kernel says %s", desc, sf, res.reason.Name())
				}
				pending++
				continue
			}
			denied := res.reason == ReasonDropACLDeny
			rejected := res.reason == ReasonReplyTCPRST || res.reason == ReasonReplyICMPUnreach || res.reason == ReasonDropACLReject
			if denied != (action == rules.Deny) || rejected != (action == rules.Reject) {
				t.Fatalf("%s: stateful %v by rule %d, kernel says %s", desc, action, wantStateful, res.reason.Name())
			}
			if action != rules.Allow {
				continue
			}
			// The admitted flow's next packets: classified once more
			// (the first packet had no flow to remember its verdict in),
			// then by the verdict the flow keeps. Same rule each time,
			// and the stateful stage never again.
			for again := 0; again < 2; again++ {
				res2 := fx.run(t, frame, "a0")
				d := hits.delta(t, len(frame))
				if !slices.Equal(d.decided, []uint32{wantStateless}) || len(d.alerted) != 0 || res2.reason != res.reason {
					t.Fatalf("%s, again: kernel decided by %v alerts %v (%s); want stateless rule %d alone (%s)",
						desc, d.decided, d.alerted, res2.reason.Name(), wantStateless, res.reason.Name())
				}
			}
			_, err := st.Flush(FlowFilter{})
			must(t, err)
		}
		t.Logf("seed %d: %d of 20 packets met the stateful stage, %d alerts, %d pending", seed, classified, alerts, pending)
	})
}
