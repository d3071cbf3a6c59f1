package dataplane

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"

	"github.com/google/gopacket/layers"

	"github.com/natwall/natwall/rules"
)

// testRule is a rule for naiveStage: zero values match anything.
type testRule struct {
	id               uint32
	src, dst         netip.Prefix
	proto            uint8
	dportLo, dportHi uint16
	icmpType         int // -1: any
	zone             int // -1: any
	action           rules.Action
}

func anyRule(id uint32, action rules.Action) testRule {
	return testRule{id: id, icmpType: -1, zone: -1, action: action}
}

// naiveStage builds classifier tables the slow, obvious way: for every
// value of every field, the set of rules matching it, deduplicated.
func naiveStage(trs []testRule, def rules.Action, defID uint32) *rules.StageTables {
	st := &rules.StageTables{Default: def, DefaultID: defID}
	words := (len(trs) + 63) / 64
	ids := map[string]uint32{}
	intern := func(match func(r testRule) bool) uint32 {
		bv := make([]uint64, words)
		for i, r := range trs {
			if match(r) {
				bv[i/64] |= 1 << (i % 64)
			}
		}
		key := fmt.Sprint(bv)
		if id, ok := ids[key]; ok {
			return id
		}
		id := uint32(len(st.Bitvectors))
		ids[key] = id
		st.Bitvectors = append(st.Bitvectors, bv)
		return id
	}
	for _, r := range trs {
		st.RuleIDs = append(st.RuleIDs, r.id)
		st.Actions = append(st.Actions, r.action)
	}
	prefixes := map[netip.Prefix]bool{netip.MustParsePrefix("0.0.0.0/0"): true, netip.MustParsePrefix("::/0"): true}
	for _, r := range trs {
		for _, p := range []netip.Prefix{r.src, r.dst} {
			if p.IsValid() {
				prefixes[p.Masked()] = true
			}
		}
	}
	contains := func(rule, p netip.Prefix) bool {
		if !rule.IsValid() {
			return true
		}
		return rule.Addr().Is4() == p.Addr().Is4() && rule.Bits() <= p.Bits() && rule.Contains(p.Addr())
	}
	for p := range prefixes {
		st.Src = append(st.Src, rules.PrefixBV{Prefix: p, BV: intern(func(r testRule) bool { return contains(r.src, p) })})
		st.Dst = append(st.Dst, rules.PrefixBV{Prefix: p, BV: intern(func(r testRule) bool { return contains(r.dst, p) })})
	}
	for v := 0; v < 256; v++ {
		st.Proto[v] = intern(func(r testRule) bool { return r.proto == 0 || r.proto == uint8(v) })
	}
	for v := 0; v < 65536; v++ {
		st.SrcPort[v] = intern(func(r testRule) bool { return true })
		st.DstPort[v] = intern(func(r testRule) bool {
			return r.dportHi == 0 || (uint16(v) >= r.dportLo && uint16(v) <= r.dportHi)
		})
		st.ICMP[v] = intern(func(r testRule) bool { return r.icmpType < 0 || r.icmpType == v>>8 })
	}
	st.NoPort = intern(func(r testRule) bool { return r.dportHi == 0 })
	st.NoICMP = intern(func(r testRule) bool { return r.icmpType < 0 })
	for z := range st.Zone {
		st.Zone[z] = intern(func(r testRule) bool { return r.zone < 0 || r.zone == z })
	}
	return st
}

func TestClassifierStages(t *testing.T) {
	fx := newFibFixture(t)
	fx.apply(t, natSettings(1024, 65535))

	web := anyRule(10, rules.Allow)
	web.proto, web.dportLo, web.dportHi = 6, 443, 443
	blockedNet := anyRule(11, rules.Deny)
	blockedNet.dst = netip.MustParsePrefix("198.19.1.11/32")
	rejectSSH := anyRule(12, rules.Reject)
	rejectSSH.proto, rejectSSH.dportLo, rejectSSH.dportHi = 6, 22, 22
	alertDNS := anyRule(13, rules.Alert)
	alertDNS.proto, alertDNS.dportLo, alertDNS.dportHi = 17, 53, 53
	allowDNS := anyRule(14, rules.Allow)
	allowDNS.proto, allowDNS.dportLo, allowDNS.dportHi = 17, 50, 60
	ping := anyRule(15, rules.Allow)
	ping.proto, ping.icmpType, ping.zone = 1, 8, int(natwallNwZoneNW_ZONE_OUTBOUND)
	v6web := anyRule(16, rules.Allow)
	v6web.dst, v6web.proto = netip.MustParsePrefix("2001:db8:2::/64"), 17

	dropBogon := anyRule(20, rules.Drop)
	dropBogon.src = netip.MustParsePrefix("198.18.9.0/24")

	stateful := naiveStage([]testRule{blockedNet, web, rejectSSH, alertDNS, allowDNS, ping, v6web}, rules.Deny, 2)
	stateless := naiveStage([]testRule{dropBogon}, rules.Pass, 1)
	must(t, loadRules(&fx.objs, stateless, stateful))

	udp := func(src, dst string, dport uint16) []byte {
		return frame4(t, l4spec{proto: layers.IPProtocolUDP, src: src, dst: dst, sport: 40000, dport: dport})
	}
	syn := func(src, dst string, dport uint16) []byte {
		return frame4(t, l4spec{proto: layers.IPProtocolTCP, src: src, dst: dst, sport: 40000, dport: dport, tcpFlags: "S"})
	}
	for _, tc := range []struct {
		name  string
		frame []byte
		in    string
		want  Reason
	}{
		{"allowed by port", syn("198.18.1.20", "198.19.1.10", 443), "a0", ReasonFwdRedirect},
		{"first match wins over a later allow", syn("198.18.1.20", "198.19.1.11", 443), "a0", ReasonDropACLDeny},
		{"default deny", syn("198.18.1.20", "198.19.1.10", 80), "a0", ReasonDropACLDeny},
		{"reject answers with a RST", syn("198.18.1.20", "198.19.1.10", 22), "a0", ReasonReplyTCPRST},
		{"alert continues to the allow", udp("198.18.1.20", "198.19.1.10", 53), "a0", ReasonFwdRedirect},
		{"port range", udp("198.18.1.20", "198.19.1.10", 60), "a0", ReasonFwdRedirect},
		{"port range end", udp("198.18.1.20", "198.19.1.10", 61), "a0", ReasonDropACLDeny},
		{"icmp type and zone", frame4(t, l4spec{proto: layers.IPProtocolICMPv4, src: "198.18.1.20", dst: "198.19.1.10", icmpType: 8, icmpID: 1}), "a0", ReasonFwdRedirect},
		{"stateless drop on every packet", udp("198.18.9.5", "198.19.1.10", 53), "a0", ReasonDropACLStateless},
		{"v6 prefix", packet{v6: true, src: "2001:db8:1::10", dst: "2001:db8:2::10"}.build(t), "a0", ReasonFwdRedirect},
		{"v6 default deny", packet{v6: true, src: "2001:db8:1::10", dst: "2001:db8:3::10"}.build(t), "a0", ReasonDropACLDeny},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fx.expect(t, tc.frame, tc.in, tc.want)
		})
	}
	// Replies of an allowed flow need no rule.
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolTCP, src: "198.19.1.10", dst: natAddr, sport: 443, dport: 40000, tcpFlags: "SA"}), "b0", ReasonFwdRedirect)

	st := fx.state()
	hits, err := st.RuleHits([]uint32{2, 10, 13, 14, 20})
	must(t, err)
	// Flows, not packets, for the stateful stage: https once; DNS 53
	// (after its alert) and 60; the default for tcp/80, udp/61 and v6.
	if hits[10].Packets != 1 || hits[13].Packets != 1 || hits[14].Packets != 2 || hits[20].Packets != 1 || hits[2].Packets != 3 {
		t.Fatalf("rule hits %+v", hits)
	}
	// The flow records the rule that admitted it.
	found := false
	must(t, st.Flows(func(f Flow) bool {
		if f.Dst.Port() == 443 {
			found = f.RuleID == 10
		}
		return true
	}))
	if !found {
		t.Fatalf("the https flow does not name rule 10")
	}

	// A reload flips generations; an empty stateful stage brings back the
	// built-in policy.
	must(t, loadRules(&fx.objs, nil, nil))
	fx.expect(t, syn("198.18.1.20", "198.19.1.10", 80), "a0", ReasonFwdRedirect)
	fx.expect(t, udp("198.18.9.5", "198.19.1.10", 5353), "a0", ReasonFwdRedirect)
}

// reject for anything but TCP answers with ICMP destination unreachable,
// administratively prohibited, quoting the rejected packet.
func TestClassifierRejectICMP(t *testing.T) {
	fx := newFibFixture(t)
	rej := anyRule(30, rules.Reject)
	rej.proto = 17
	must(t, loadRules(&fx.objs, nil, naiveStage([]testRule{rej}, rules.Deny, 2)))

	in := frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: "198.19.1.10", sport: 40000, dport: 9000})
	res := fx.expect(t, in, "a0", ReasonReplyICMPUnreach)
	if res.action != xdpTX {
		t.Fatalf("action %d, want XDP_TX", res.action)
	}
	out := res.out
	got := decode4(t, out) // verifies the IP and ICMP checksums
	if got.src != "198.19.1.10" || got.dst != "198.18.1.20" {
		t.Fatalf("unreachable sent %s -> %s", got.src, got.dst)
	}
	icmp := out[14+20:]
	if icmp[0] != 3 || icmp[1] != 13 {
		t.Fatalf("ICMP type %d code %d, want 3/13", icmp[0], icmp[1])
	}
	if got.inner == nil || got.inner.src != "198.18.1.20" || got.inner.dport != 9000 {
		t.Fatalf("quoted header %+v", got.inner)
	}
	if tot := int(out[14+2])<<8 | int(out[14+3]); tot != 20+8+28 {
		t.Fatalf("ICMP error IP length %d, want %d", tot, 20+8+28)
	}

	// IPv6: type 1 code 1.
	res6 := fx.expect(t, packet{v6: true, src: "2001:db8:1::10", dst: "2001:db8:2::10"}.build(t), "a0", ReasonReplyICMPUnreach)
	ip6 := res6.out[14:]
	if ip6[6] != 58 || ip6[40] != 1 || ip6[41] != 1 {
		t.Fatalf("ICMPv6 next header %d type %d code %d, want 58 1/1", ip6[6], ip6[40], ip6[41])
	}
	plen := int(ip6[4])<<8 | int(ip6[5])
	if sum := pseudoChecksum6(ip6[8:24], ip6[24:40], 58, ip6[40:40+plen]); sum != 0 {
		t.Fatalf("ICMPv6 checksum invalid (residue %#04x)", sum)
	}
	if net6 := netip.AddrFrom16([16]byte(ip6[24:40])); net6.String() != "2001:db8:1::10" {
		t.Fatalf("ICMPv6 error sent to %s", net6)
	}
}

func pseudoChecksum6(src, dst []byte, proto byte, seg []byte) uint16 {
	ph := append(append(append([]byte(nil), src...), dst...), 0, 0, byte(len(seg)>>8), byte(len(seg)), 0, 0, 0, proto)
	b := append(ph, seg...)
	if len(b)%2 == 1 {
		b = append(b, 0)
	}
	return ipChecksum(b)
}

// A RST answering a SYN acknowledges the SYN's sequence number plus one
// (RFC 9293 3.10.7.1): a client ignores any other.
func TestRejectSYNAcknowledgesIt(t *testing.T) {
	fx := newFibFixture(t)
	rej := anyRule(40, rules.Reject)
	rej.proto = 6
	must(t, loadRules(&fx.objs, nil, naiveStage([]testRule{rej}, rules.Deny, 2)))
	in := frame4(t, l4spec{proto: layers.IPProtocolTCP, src: "198.18.1.20", dst: "198.19.1.10", sport: 40000, dport: 22, tcpFlags: "S"})
	res := fx.expect(t, in, "a0", ReasonReplyTCPRST)
	decode4(t, res.out) // checksums
	tcp := res.out[14+20:]
	seq := binary.BigEndian.Uint32(in[14+20+4:])
	if flags := tcp[13]; flags != 0x14 {
		t.Fatalf("flags %#02x, want RST|ACK", flags)
	}
	// The test SYN carries 20 bytes of data (as with TCP Fast Open),
	// which the RST acknowledges too.
	if ack := binary.BigEndian.Uint32(tcp[8:]); ack != seq+1+20 {
		t.Fatalf("RST acknowledges %d, want the SYN's %d + 1 + 20 bytes of data", ack, seq)
	}
	if s := binary.BigEndian.Uint32(tcp[4:]); s != 0 {
		t.Fatalf("RST sequence %d, want 0 (the SYN carried no ACK)", s)
	}
}

// A flow's packets skip the stateless classifier once their direction has
// passed, but nothing else changes: the passing rule counts every packet,
// and a reload or new inside networks make the next packet classify again.
func TestStatelessVerdictKeptByFlows(t *testing.T) {
	fx := newFibFixture(t)
	fx.apply(t, natSettings(1024, 65535))
	passDNS := anyRule(30, rules.Pass)
	passDNS.proto, passDNS.dportLo, passDNS.dportHi = 17, 53, 53
	dropDNS := passDNS
	dropDNS.id, dropDNS.action = 31, rules.Drop
	// Stateless rules see the direction: drop DNS only between inside hosts.
	dropEastWestDNS := dropDNS
	dropEastWestDNS.id, dropEastWestDNS.zone = 32, int(natwallNwZoneNW_ZONE_EAST_WEST)

	must(t, loadRules(&fx.objs, naiveStage([]testRule{passDNS}, rules.Pass, 1), nil))
	query := frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: "198.19.1.10", sport: 40000, dport: 53})
	for range 3 {
		fx.expect(t, query, "a0", ReasonFwdRedirect)
	}
	hits, err := fx.state().RuleHits([]uint32{30})
	must(t, err)
	if hits[30].Packets != 3 {
		t.Fatalf("the passing rule counted %d of 3 packets", hits[30].Packets)
	}

	must(t, loadRules(&fx.objs, naiveStage([]testRule{dropDNS}, rules.Pass, 1), nil))
	fx.expect(t, query, "a0", ReasonDropACLStateless)

	// The query passes as outbound traffic, and its flow keeps that. Once
	// 198.19.0.0/16 is inside too, the same query is east-west, and the
	// kept verdict must not outlive the change.
	must(t, loadRules(&fx.objs, naiveStage([]testRule{dropEastWestDNS}, rules.Pass, 1), nil))
	fx.expect(t, query, "a0", ReasonFwdRedirect)
	fx.expect(t, query, "a0", ReasonFwdRedirect)
	settings := natSettings(1024, 65535)
	settings.Inside = append(settings.Inside, netip.MustParsePrefix("198.19.0.0/16"))
	fx.apply(t, settings)
	fx.expect(t, query, "a0", ReasonDropACLStateless)
}
