package dataplane

import (
	"bytes"
	"encoding/binary"
	"net"
	"reflect"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/natwall/natwall/rules"
)

// TestAlertRunDoesNotHideDecidingRule: alert rules report and let
// evaluation go on, however many of them match before the rule that
// decides, within one 64-rule word or across words. The deciding rule,
// never the stage default, decides, and every alert is counted.
func TestAlertRunDoesNotHideDecidingRule(t *testing.T) {
	fx := newFibFixture(t)
	for _, alerts := range []int{4, 5, 9, 63, 64, 70, 200} {
		var trs []testRule
		for i := 0; i < alerts; i++ {
			a := anyRule(uint32(100+i), rules.Alert)
			a.proto = 17
			trs = append(trs, a)
		}
		allow := anyRule(90, rules.Allow)
		allow.proto = 17
		trs = append(trs, allow)
		must(t, loadRules(&fx.objs, nil, naiveStage(trs, rules.Deny, 2)))
		before, err := fx.state().RuleHits([]uint32{90, 2, 100, uint32(100 + alerts - 1)})
		must(t, err)

		sport := uint16(20000 + alerts)
		udp := frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: "198.19.1.10", sport: sport, dport: 9000})
		if res := fx.run(t, udp, "a0"); res.reason != ReasonFwdRedirect {
			t.Fatalf("%d alerts before the allow: got %s, want fwd_redirect (the allow decides)", alerts, res.reason.Name())
		}
		after, err := fx.state().RuleHits([]uint32{90, 2, 100, uint32(100 + alerts - 1)})
		must(t, err)
		if after[90].Packets != before[90].Packets+1 || after[2].Packets != before[2].Packets {
			t.Fatalf("%d alerts: allow counted %d, default %d; want the allow once", alerts,
				after[90].Packets-before[90].Packets, after[2].Packets-before[2].Packets)
		}
		for _, id := range []uint32{100, uint32(100 + alerts - 1)} {
			if after[id].Packets != before[id].Packets+1 {
				t.Fatalf("%d alerts: alert %d counted %d times, want 1", alerts, id, after[id].Packets-before[id].Packets)
			}
		}
		var flowRule uint32
		must(t, fx.state().Flows(func(f Flow) bool {
			if f.Src.Port() == sport {
				flowRule = f.RuleID
			}
			return true
		}))
		if flowRule != 90 {
			t.Fatalf("%d alerts: the flow names rule %d, want 90", alerts, flowRule)
		}
	}

	// With only alerts matching, the default decides.
	var trs []testRule
	for i := 0; i < 8; i++ {
		a := anyRule(uint32(100+i), rules.Alert)
		a.proto = 17
		trs = append(trs, a)
	}
	must(t, loadRules(&fx.objs, nil, naiveStage(trs, rules.Deny, 2)))
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: "198.19.1.10", sport: 19999, dport: 9000}), "a0", ReasonDropACLDeny)
}

// hookedProgram loads a second copy of the XDP program over the fixture's
// maps, with the test hook that flips the classifier to generation gen
// right after a packet is classified under gen - 1.
func hookedProgram(t *testing.T, fx *fibFixture, gen uint32) *ebpf.Program {
	t.Helper()
	spec, err := loadNatwall()
	must(t, err)
	v, ok := spec.Variables["nw_test_flip_gen_after_classify"]
	if !ok {
		t.Fatal("the object has no nw_test_flip_gen_after_classify")
	}
	must(t, v.Set(gen))
	repl := map[string]*ebpf.Map{}
	maps := reflect.ValueOf(fx.objs.natwallMaps)
	for i := 0; i < maps.NumField(); i++ {
		m := maps.Field(i).Interface().(*ebpf.Map)
		name := maps.Type().Field(i).Tag.Get("ebpf")
		repl[name] = m
		if ms, ok := spec.Maps[name]; ok {
			ms.Pinning = ebpf.PinNone
			ms.MaxEntries = m.MaxEntries()
		}
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: repl})
	if err != nil {
		t.Fatalf("load the hooked program: %+v", err)
	}
	t.Cleanup(func() { coll.Close() })
	return coll.Programs["xdp_natwall"]
}

// TestStatelessVerdictRememberedUnderItsGeneration: a flow remembers its
// stateless verdict under the generation that classified the packet. A
// reload that lands between the classification and the remembering (the
// test hook makes it land there) must not let the old verdict pass for
// the new rule set's: the next packet is classified again, and dropped by
// the new rules.
func TestStatelessVerdictRememberedUnderItsGeneration(t *testing.T) {
	fx := newFibFixture(t)
	pass := anyRule(30, rules.Pass)
	pass.proto, pass.dportLo, pass.dportHi = 17, 53, 53
	drop := pass
	drop.id, drop.action = 31, rules.Drop

	must(t, loadRules(&fx.objs, naiveStage([]testRule{pass}, rules.Pass, 1), nil))
	var gen uint32
	must(t, fx.objs.NwAclGen.Lookup(uint32(0), &gen))
	query := frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: "198.19.1.10", sport: 40000, dport: 53})
	fx.expect(t, query, "a0", ReasonFwdRedirect) // creates the flow

	// A reload under way: the new rules are in the idle tables, and the
	// flip comes right after the next packet's classification.
	_, err := writeStage(&fx.objs, nil, uint8((gen+1)&1), uint8(natwallNwAclStageNW_ACL_STATELESS), naiveStage([]testRule{drop}, rules.Pass, 1))
	must(t, err)
	_, err = writeStage(&fx.objs, nil, uint8((gen+1)&1), uint8(natwallNwAclStageNW_ACL_STATEFUL), nil)
	must(t, err)
	normal := fx.objs.XdpNatwall
	fx.objs.XdpNatwall = hookedProgram(t, fx, gen+1)
	fx.expect(t, query, "a0", ReasonFwdRedirect) // passed by the old rules
	fx.objs.XdpNatwall = normal

	var now uint32
	must(t, fx.objs.NwAclGen.Lookup(uint32(0), &now))
	if now != gen+1 {
		t.Fatalf("the hook left generation %d, want %d", now, gen+1)
	}
	key := natwallNwTuple4{Saddr: beUint32([4]byte{198, 18, 1, 20}), Daddr: beUint32([4]byte{198, 19, 1, 10}),
		Sport: htons(40000), Dport: htons(53), Proto: 17}
	var e natwallNwCt4Entry
	must(t, fx.objs.NwCt4.Lookup(key, &e))
	if e.St.StatelessTag[0] != gen+1 || e.St.StatelessRule[0] != 30 {
		t.Fatalf("flow remembers rule %d under tag %d; want rule 30 under tag %d (the generation that classified it)",
			e.St.StatelessRule[0], e.St.StatelessTag[0], gen+1)
	}
	fx.expect(t, query, "a0", ReasonDropACLStateless)
	hits, err := fx.state().RuleHits([]uint32{30, 31})
	must(t, err)
	if hits[30].Packets != 2 || hits[31].Packets != 1 {
		t.Fatalf("pass rule counted %d (want 2), drop rule %d (want 1)", hits[30].Packets, hits[31].Packets)
	}

	// After an ordinary reload the kept verdict names the rule and the
	// generation in force.
	must(t, loadRules(&fx.objs, naiveStage([]testRule{pass}, rules.Pass, 1), nil))
	fx.expect(t, query, "a0", ReasonFwdRedirect)
	must(t, fx.objs.NwAclGen.Lookup(uint32(0), &now))
	must(t, fx.objs.NwCt4.Lookup(key, &e))
	if e.St.StatelessTag[0] != now+1 || e.St.StatelessRule[0] != 30 {
		t.Fatalf("after a reload the flow remembers rule %d under tag %d, want rule 30 under %d", e.St.StatelessRule[0], e.St.StatelessTag[0], now+1)
	}
	fx.expect(t, query, "a0", ReasonFwdRedirect)
}

// icmp4 is an ICMP message of any type with an identifier at the echo's
// place (as every query and reply has).
func icmp4(t testing.TB, src, dst string, typ, id uint16) []byte {
	return frame4(t, l4spec{proto: layers.IPProtocolICMPv4, src: src, dst: dst, icmpType: typ, icmpID: id})
}

func icmp6(t testing.TB, src, dst string, typ uint8, id uint16) []byte {
	t.Helper()
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolICMPv6, SrcIP: net.ParseIP(src), DstIP: net.ParseIP(dst)}
	eth := &layers.Ethernet{SrcMAC: clientMAC, DstMAC: net.HardwareAddr{2, 0xaa, 0, 0, 0, 1}, EthernetType: layers.EthernetTypeIPv6}
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, 0)}
	icmp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	must(t, gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, icmp, &layers.ICMPv6Echo{Identifier: id, SeqNumber: 1}, gopacket.Payload("natwall-test")))
	return append([]byte(nil), buf.Bytes()...)
}

// TestICMPQueryFlowsKeyedByKind: a query flow is answered only by its own
// kind's reply, as in Linux conntrack. An echo reply with a timestamp
// request's identifier, or a timestamp reply to an echo, finds no flow;
// nor does a second request of another kind answer a flow the wrong way.
func TestICMPQueryFlowsKeyedByKind(t *testing.T) {
	fx := newFibFixture(t)
	const in, out = "198.18.1.20", "198.19.1.10"
	type step struct {
		name    string
		frame   []byte
		ingress string
		want    Reason
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"timestamp", []step{
			{"request", icmp4(t, in, out, 13, 9), "a0", ReasonFwdRedirect},
			{"echo reply with its id", icmp4(t, out, in, 0, 9), "b0", ReasonDropCTInvalid},
			{"information reply with its id", icmp4(t, out, in, 16, 9), "b0", ReasonDropCTInvalid},
			{"address mask reply with its id", icmp4(t, out, in, 18, 9), "b0", ReasonDropCTInvalid},
			{"timestamp request back with its id", icmp4(t, out, in, 13, 9), "b0", ReasonDropPolicy},
			{"timestamp reply", icmp4(t, out, in, 14, 9), "b0", ReasonFwdRedirect},
		}},
		{"echo", []step{
			{"request", icmp4(t, in, out, 8, 10), "a0", ReasonFwdRedirect},
			{"timestamp reply with its id", icmp4(t, out, in, 14, 10), "b0", ReasonDropCTInvalid},
			{"echo reply", icmp4(t, out, in, 0, 10), "b0", ReasonFwdRedirect},
		}},
		{"information and address mask", []step{
			{"information request", icmp4(t, in, out, 15, 11), "a0", ReasonFwdRedirect},
			{"address mask request", icmp4(t, in, out, 17, 11), "a0", ReasonFwdRedirect},
			{"address mask reply", icmp4(t, out, in, 18, 11), "b0", ReasonFwdRedirect},
			{"information reply", icmp4(t, out, in, 16, 11), "b0", ReasonFwdRedirect},
		}},
		{"v6 echo", []step{
			{"request", icmp6(t, "2001:db8:1::20", "2001:db8:2::10", 128, 12), "a0", ReasonFwdRedirect},
			{"node information response with its id", icmp6(t, "2001:db8:2::10", "2001:db8:1::20", 140, 12), "b0", ReasonDropCTInvalid},
			{"echo request back with its id", icmp6(t, "2001:db8:2::10", "2001:db8:1::20", 128, 12), "b0", ReasonDropPolicy},
			{"echo reply", icmp6(t, "2001:db8:2::10", "2001:db8:1::20", 129, 12), "b0", ReasonFwdRedirect},
		}},
		{"v6 node information", []step{
			{"query", icmp6(t, "2001:db8:1::20", "2001:db8:2::10", 139, 13), "a0", ReasonFwdRedirect},
			{"echo reply with its id", icmp6(t, "2001:db8:2::10", "2001:db8:1::20", 129, 13), "b0", ReasonDropCTInvalid},
			{"response", icmp6(t, "2001:db8:2::10", "2001:db8:1::20", 140, 13), "b0", ReasonFwdRedirect},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, s := range tc.steps {
				if res := fx.run(t, s.frame, s.ingress); res.reason != s.want {
					t.Fatalf("%s: got %s, want %s", s.name, res.reason.Name(), s.want.Name())
				}
			}
		})
	}

	// With SNAT: the reply comes to the external address and identifier.
	fx.apply(t, natSettings(1024, 65535))
	res := fx.expect(t, icmp4(t, in, out, 13, 21), "a0", ReasonFwdRedirect)
	decode4(t, res.out) // checksums
	ext := binary.BigEndian.Uint16(res.out[14+20+4:])
	if d := decode4(t, res.out); d.src != natAddr {
		t.Fatalf("timestamp request left from %s, want %s", d.src, natAddr)
	}
	fx.expect(t, icmp4(t, out, natAddr, 0, ext), "b0", ReasonPassLocal) // answers nothing: the kernel's
	back := fx.expect(t, icmp4(t, out, natAddr, 14, ext), "b0", ReasonFwdRedirect)
	if d, id := decode4(t, back.out), binary.BigEndian.Uint16(back.out[14+20+4:]); d.dst != in || id != 21 {
		t.Fatalf("timestamp reply translated to %s id %d, want %s id 21", d.dst, id, in)
	}
	// An error quoting the timestamp request finds its flow by kind.
	fx.expect(t, icmpError4(t, out, natAddr, res.out), "b0", ReasonFwdRedirect)
}

// TestICMPQueryFragmentsFollowTheirFlow: a later fragment carries no ICMP
// header; it takes its first fragment's type and identifier, and so its
// query flow.
func TestICMPQueryFragmentsFollowTheirFlow(t *testing.T) {
	fx := newFibFixture(t)
	big := packet{src: "198.18.1.20", dst: "198.19.1.10", proto: layers.IPProtocolICMPv4, size: 200}.build(t)
	first, second := fragments4(t, big, 64)
	fx.expect(t, first, "a0", ReasonFwdRedirect)
	fx.expect(t, second, "a0", ReasonFwdRedirect)
	var flows int
	must(t, fx.state().Flows(func(f Flow) bool { flows++; return true }))
	if flows != 1 {
		t.Fatalf("%d flows after one fragmented echo request, want 1", flows)
	}
}

// icmpErrorOfType is icmpError4 as an error of another type and code,
// with its checksum right; rest is the 4 bytes after the checksum.
func icmpErrorOfType(t testing.TB, typ, code uint8, rest [4]byte, src, dst string, about []byte) []byte {
	t.Helper()
	f := icmpError4(t, src, dst, about)
	icmp := f[14+20:]
	icmp[0], icmp[1], icmp[2], icmp[3] = typ, code, 0, 0
	copy(icmp[4:8], rest[:])
	binary.BigEndian.PutUint16(icmp[2:], ipChecksum(icmp))
	return f
}

// TestICMPQuenchTranslatedRedirectDropped: no inside address leaves in an
// ICMP payload. A source quench from an inside host about a translated
// reply is translated like any error; a redirect, whose gateway field no
// translation covers and which is valid on its sender's link only, is
// dropped in both directions.
func TestICMPQuenchTranslatedRedirectDropped(t *testing.T) {
	fx := newFibFixture(t)
	fx.apply(t, natSettings(1024, 65535))
	const in, server = "198.18.1.20", "198.19.1.10"
	out := fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: in, dst: server, sport: 6000, dport: 9000}), "a0", ReasonFwdRedirect)
	ext := decode4(t, out.out).sport
	reply := fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: server, dst: natAddr, sport: 9000, dport: ext}), "b0", ReasonFwdRedirect)

	quench := fx.expect(t, icmpErrorOfType(t, 4, 0, [4]byte{}, in, server, reply.out), "a0", ReasonFwdRedirect)
	if quench.out[14+20] != 4 {
		t.Fatalf("forwarded ICMP type %d, want 4", quench.out[14+20])
	}
	// decode4 reads the quoted header of the usual errors: make it one.
	tot := int(binary.BigEndian.Uint16(quench.out[14+2:]))
	if ipChecksum(quench.out[14+20:14+tot]) != 0 {
		t.Fatalf("forwarded quench's ICMP checksum is wrong")
	}
	asUnreach := append([]byte(nil), quench.out[:14+tot]...)
	icmp := asUnreach[14+20:]
	icmp[0], icmp[1], icmp[2], icmp[3] = 3, 3, 0, 0
	binary.BigEndian.PutUint16(icmp[2:], ipChecksum(icmp))
	d := decode4(t, asUnreach)
	if d.src != natAddr || d.dst != server || d.inner == nil || d.inner.dst != natAddr || d.inner.dport != ext {
		t.Fatalf("source quench left as %s -> %s quoting %+v; want %s -> %s quoting a packet to %s:%d", d.src, d.dst, d.inner, natAddr, server, natAddr, ext)
	}
	inside := net.ParseIP(in).To4()
	if i := bytes.Index(quench.out[14:], inside); i >= 0 {
		t.Fatalf("the forwarded quench carries the inside address at IP offset %d", i)
	}

	gw := [4]byte{198, 18, 1, 21}
	fx.expect(t, icmpErrorOfType(t, 5, 1, gw, in, server, reply.out), "a0", ReasonDropICMPRedirect)
	fx.expect(t, icmpErrorOfType(t, 5, 1, [4]byte{198, 19, 1, 11}, server, natAddr, out.out), "b0", ReasonDropICMPRedirect)
}
