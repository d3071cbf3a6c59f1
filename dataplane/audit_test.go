package dataplane

import (
	"net/netip"
	"testing"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/google/gopacket/layers"

	"github.com/natwall/natwall/rules"
)

// auditRules is an enforcing policy shadowing a new deny rule in audit
// mode, with a logged reject rule, a deny rule without log and a logged
// default. inside is 198.18.0.0/16, so the test frames are outbound.
const auditRules = `stateful:
  default_action: deny
  default_log: true
  rules:
    - {id: shadow-telnet, priority: 10, action: deny, mode: audit, protocol: tcp, dst_ports: [23]}
    - {id: telnet-lab, priority: 20, action: allow, protocol: tcp, dst_ports: [23]}
    - {id: no-smb, priority: 30, action: reject, log: true, protocol: tcp, dst_ports: [445]}
    - {id: quiet-deny, priority: 40, action: deny, protocol: udp, dst_ports: [9001]}
`

var auditRuleIDs = map[string]uint32{"shadow-telnet": 100, "telnet-lab": 101, "no-smb": 102, "quiet-deny": 103}

// loadYAMLRules parses, compiles and loads a rule file the way the daemon
// does, naming rules by auditRuleIDs.
func loadYAMLRules(t *testing.T, fx *fibFixture, text string) {
	t.Helper()
	rs, err := rules.Parse([]rules.Source{{Name: "audit.yaml", Data: []byte(text)}},
		rules.Options{Inside: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/16")}})
	must(t, err)
	tbl, err := rules.Compile(rs, func(id string) uint32 { return auditRuleIDs[id] })
	must(t, err)
	must(t, loadRules(&fx.objs, tbl.Stateless, tbl.Stateful))
}

// pendingEvents reads every event the ring holds now: BPF_PROG_RUN
// submits synchronously, so what a run reported is there when it returns.
func pendingEvents(t *testing.T, rd *ringbuf.Reader, er *EventReader) []FlowEvent {
	t.Helper()
	var out []FlowEvent
	for rd.AvailableBytes() > 0 {
		var ev FlowEvent
		must(t, er.ReadInto(&ev))
		out = append(out, ev)
	}
	return out
}

func alertsOf(evs []FlowEvent) []FlowEvent {
	var out []FlowEvent
	for _, ev := range evs {
		if ev.Type == FlowAlert {
			out = append(out, ev)
		}
	}
	return out
}

func TestAuditFlagsMatchTheDataplane(t *testing.T) {
	if uint8(rules.FlagLog) != uint8(natwallNwAclRuleFlagsNW_ACL_RULE_LOG) || uint8(rules.FlagAudit) != uint8(natwallNwAclRuleFlagsNW_ACL_RULE_AUDIT) {
		t.Fatalf("rules.FlagLog %d, FlagAudit %d; the dataplane's are %d, %d", rules.FlagLog, rules.FlagAudit,
			natwallNwAclRuleFlagsNW_ACL_RULE_LOG, natwallNwAclRuleFlagsNW_ACL_RULE_AUDIT)
	}
}

// TestAuditAndLoggedDecisions: an audit deny rule counts a hit, reports
// an audit alert and lets the next rule decide; a logged reject and a
// logged default report one alert each, with the rule and the reason; a
// deny without log reports nothing.
func TestAuditAndLoggedDecisions(t *testing.T) {
	fx := newFibFixture(t)
	fx.apply(t, natSettings(1024, 65535))
	loadYAMLRules(t, fx, auditRules)
	rd, err := ringbuf.NewReader(fx.objs.NwEvents)
	must(t, err)
	defer rd.Close()
	er := &EventReader{rd: rd, clk: newMonoClock()}
	st := fx.state()
	ids := []uint32{100, 101, 102, 103, rules.StatefulDefaultID}
	syn := func(sport, dport uint16) []byte {
		return frame4(t, l4spec{proto: layers.IPProtocolTCP, src: "198.18.1.20", dst: "198.19.1.10", sport: sport, dport: dport, tcpFlags: "S"})
	}
	udp := func(sport, dport uint16) []byte {
		return frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: "198.19.1.10", sport: sport, dport: dport})
	}

	cases := []struct {
		name   string
		frame  []byte
		want   Reason
		hits   map[uint32]uint64 // rule hits this packet adds
		alert  uint32            // rule of the one alert, 0 for none
		audit  bool
		reason Reason
		stat   Stat
	}{
		{"audit deny lets the next rule decide", syn(40000, 23), ReasonFwdRedirect,
			map[uint32]uint64{100: 1, 101: 1}, 100, true, ReasonNone, StatAuditMatched},
		{"logged reject", syn(40001, 445), ReasonReplyTCPRST,
			map[uint32]uint64{102: 1}, 102, false, ReasonDropACLReject, StatDecisionLogged},
		{"deny without log", udp(40002, 9001), ReasonDropACLDeny,
			map[uint32]uint64{103: 1}, 0, false, 0, 0},
		{"logged default", udp(40003, 7777), ReasonDropACLDeny,
			map[uint32]uint64{rules.StatefulDefaultID: 1}, rules.StatefulDefaultID, false, ReasonDropACLDeny, StatDecisionLogged},
	}
	pendingEvents(t, rd, er)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before, err := st.RuleHits(ids)
			must(t, err)
			statsBefore, err := st.Stats()
			must(t, err)
			fx.expect(t, tc.frame, "a0", tc.want)
			after, err := st.RuleHits(ids)
			must(t, err)
			statsAfter, err := st.Stats()
			must(t, err)
			for _, id := range ids {
				if d := after[id].Packets - before[id].Packets; d != tc.hits[id] {
					t.Errorf("rule %d counted %d hits, want %d", id, d, tc.hits[id])
				}
			}
			alerts := alertsOf(pendingEvents(t, rd, er))
			if tc.alert == 0 {
				if len(alerts) != 0 {
					t.Fatalf("alerts %+v, want none", alerts)
				}
				if statsAfter[StatDecisionLogged] != statsBefore[StatDecisionLogged] || statsAfter[StatAuditMatched] != statsBefore[StatAuditMatched] {
					t.Fatal("a decision without log was counted as reported")
				}
				return
			}
			if len(alerts) != 1 {
				t.Fatalf("%d alerts %+v, want 1", len(alerts), alerts)
			}
			a := alerts[0]
			if a.Flow.RuleID != tc.alert || a.Audit != tc.audit || a.Logged == tc.audit || a.Reason != tc.reason ||
				a.Flow.Src != netip.MustParseAddrPort("198.18.1.20:"+itoa(tc.frame)) || a.Flow.Dst.Addr() != netip.MustParseAddr("198.19.1.10") ||
				a.Flow.Zone != ZoneOutbound {
				t.Fatalf("alert %+v (reason %s), want rule %d audit %v reason %s", a, a.Reason.Name(), tc.alert, tc.audit, tc.reason.Name())
			}
			if statsAfter[tc.stat] != statsBefore[tc.stat]+1 {
				t.Fatalf("stat %d went %d -> %d, want +1", tc.stat, statsBefore[tc.stat], statsAfter[tc.stat])
			}
		})
	}

	// The audited flow was admitted by the rule after the audit rule.
	var flowRule uint32
	must(t, st.Flows(func(f Flow) bool {
		if f.Src.Port() == 40000 {
			flowRule = f.RuleID
		}
		return true
	}))
	if flowRule != 101 {
		t.Fatalf("the audited flow names rule %d, want 101 (telnet-lab)", flowRule)
	}
}

// itoa is the source port of a test frame, as text.
func itoa(frame []byte) string {
	p := uint16(frame[34])<<8 | uint16(frame[35])
	return netip.AddrPortFrom(netip.IPv4Unspecified(), p).String()[len("0.0.0.0:"):]
}

// TestLoggedDenyFloodIsBounded: each packet of a denied flow is a first
// packet, so an attacker hammering a logged deny rule would fill the ring
// buffer flow logs share. Reports stop at the per-CPU budget; every packet
// is still dropped and counted, and the reports held back are counted.
func TestLoggedDenyFloodIsBounded(t *testing.T) {
	fx := newFibFixture(t)
	fx.apply(t, natSettings(1024, 65535))
	loadYAMLRules(t, fx, auditRules)
	rd, err := ringbuf.NewReader(fx.objs.NwEvents)
	must(t, err)
	defer rd.Close()
	er := &EventReader{rd: rd, clk: newMonoClock()}
	st := fx.state()

	const flood = 1500
	frames := make([][]byte, flood)
	for i := range frames {
		frames[i] = frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: "198.19.1.10", sport: uint16(10000 + i), dport: 7777})
	}
	statsBefore, err := st.Stats()
	must(t, err)
	deniedBefore := fx.reasonPackets(t, ReasonDropACLDeny)
	fx.runMany(t, frames, "a0") // pinned to CPU 0: one budget
	statsAfter, err := st.Stats()
	must(t, err)
	alerts := alertsOf(pendingEvents(t, rd, er))
	logged := statsAfter[StatDecisionLogged] - statsBefore[StatDecisionLogged]
	suppressed := statsAfter[StatLogSuppressed] - statsBefore[StatLogSuppressed]
	lost := statsAfter[StatEventsLost] - statsBefore[StatEventsLost]
	if d := fx.reasonPackets(t, ReasonDropACLDeny) - deniedBefore; d != flood {
		t.Fatalf("%d of %d packets dropped as acl_deny", d, flood)
	}
	if logged != flood || uint64(len(alerts))+suppressed+lost != flood {
		t.Fatalf("logged %d, reported %d, suppressed %d, lost %d; want %d in all", logged, len(alerts), suppressed, lost, flood)
	}
	if len(alerts) > 1024 || suppressed < flood-1024 {
		t.Fatalf("%d alerts reported, %d suppressed: over the budget of 1024 per CPU and second", len(alerts), suppressed)
	}
}

// TestPolicyAuditPasses: with the policy's audit: true, nothing the
// stateful stage would deny is denied. A reject rule and the default
// report audit alerts and the flows start, once per flow: an audit rule
// that matched is what would have decided, so the audit default does not
// report the same packet again.
func TestPolicyAuditPasses(t *testing.T) {
	fx := newFibFixture(t)
	fx.apply(t, natSettings(1024, 65535))
	loadYAMLRules(t, fx, "stateful:\n  audit: true\n  rules:\n"+
		"    - {id: no-smb, priority: 30, action: reject, protocol: tcp, dst_ports: [445]}\n")
	rd, err := ringbuf.NewReader(fx.objs.NwEvents)
	must(t, err)
	defer rd.Close()
	er := &EventReader{rd: rd, clk: newMonoClock()}
	st := fx.state()
	before, err := st.Stats()
	must(t, err)

	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolTCP, src: "198.18.1.20", dst: "198.19.1.10", sport: 41000, dport: 445, tcpFlags: "S"}), "a0", ReasonFwdRedirect)
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: "198.19.1.10", sport: 41001, dport: 7777}), "a0", ReasonFwdRedirect)
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: "198.19.1.10", sport: 41001, dport: 7777}), "a0", ReasonFwdRedirect)
	alerts := alertsOf(pendingEvents(t, rd, er))
	if len(alerts) != 2 {
		t.Fatalf("%d alerts %+v, want 2 (one per flow, not per packet)", len(alerts), alerts)
	}
	for i, want := range []uint32{102, rules.StatefulDefaultID} {
		if a := alerts[i]; a.Flow.RuleID != want || !a.Audit || a.Logged || a.Reason != ReasonNone {
			t.Fatalf("alert %d: %+v, want an audit alert of rule %d", i, a, want)
		}
	}
	after, err := st.Stats()
	must(t, err)
	if d := after[StatAuditMatched] - before[StatAuditMatched]; d != 2 {
		t.Fatalf("audit matches counted %d, want 2", d)
	}
}

// TestAuditNeverAdmits: an audit rule only reports. With no rule after it
// that allows, the enforcing default still denies the packet, which is
// reported twice: the audit match and the logged default. IPv6 takes the
// same path, addresses whole.
func TestAuditNeverAdmits(t *testing.T) {
	fx := newFibFixture(t)
	fx.apply(t, natSettings(1024, 65535))
	loadYAMLRules(t, fx, "stateful:\n  default_action: deny\n  default_log: true\n  rules:\n"+
		"    - {id: shadow-telnet, priority: 10, action: deny, mode: audit, protocol: tcp, dst_ports: [23]}\n"+
		"    - {id: no-smb, priority: 30, action: reject, log: true, protocol: tcp, dst_ports: [445]}\n")
	rd, err := ringbuf.NewReader(fx.objs.NwEvents)
	must(t, err)
	defer rd.Close()
	er := &EventReader{rd: rd, clk: newMonoClock()}
	pendingEvents(t, rd, er)

	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolTCP, src: "198.18.1.20", dst: "198.19.1.10", sport: 42000, dport: 23, tcpFlags: "S"}), "a0", ReasonDropACLDeny)
	alerts := alertsOf(pendingEvents(t, rd, er))
	if len(alerts) != 2 || alerts[0].Flow.RuleID != 100 || !alerts[0].Audit ||
		alerts[1].Flow.RuleID != rules.StatefulDefaultID || !alerts[1].Logged || alerts[1].Reason != ReasonDropACLDeny {
		t.Fatalf("alerts %+v, want the audit match then the logged default", alerts)
	}
	var admitted bool
	must(t, fx.state().Flows(func(f Flow) bool {
		admitted = admitted || f.Src.Port() == 42000
		return true
	}))
	if admitted {
		t.Fatal("the audit rule admitted a flow the policy denies")
	}

	v6 := tcpSeg{v6: true, src: "2001:db8:1::10", dst: "2001:db8:2::10", sport: 42001, dport: 445, flags: "S", seq: 1000, win: 65535, wscale: -1}
	fx.expect(t, v6.frame(t), "a0", ReasonReplyTCPRST)
	alerts = alertsOf(pendingEvents(t, rd, er))
	if len(alerts) != 1 {
		t.Fatalf("IPv6 logged reject: %d alerts %+v, want 1", len(alerts), alerts)
	}
	if a := alerts[0]; a.Flow.RuleID != 102 || !a.Logged || a.Reason != ReasonDropACLReject || a.Flow.Proto != 6 ||
		a.Flow.Src != netip.MustParseAddrPort("[2001:db8:1::10]:42001") || a.Flow.Dst != netip.MustParseAddrPort("[2001:db8:2::10]:445") {
		t.Fatalf("IPv6 logged reject alert %+v", a)
	}
}
