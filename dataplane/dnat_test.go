package dataplane

import (
	"net/netip"
	"testing"

	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/natwall/natwall/rules"
)

// Inbound NAT (issue 15 item 3). The fixture's natAddr (b0's address) is
// the external address; 198.18.1.20 and .21 are inside hosts on a0,
// 198.19.1.10 and .11 outside ones on b0.

const dnatTarget = "198.18.1.20"

// dnatForwards: a jump box's TCP 50022 -> :22, and a UDP range
// 60000-60009 -> 7000-7009.
func dnatForwards() []Forward {
	ext := netip.MustParseAddr(natAddr)
	to := netip.MustParseAddr(dnatTarget)
	return []Forward{
		{ID: 101, External: ext, Proto: unix.IPPROTO_TCP, PortMin: 50022, PortMax: 50022, To: to, ToPort: 22},
		{ID: 102, External: ext, Proto: unix.IPPROTO_UDP, PortMin: 60000, PortMax: 60009, To: to, ToPort: 7000},
	}
}

func newDNATFixture(t *testing.T) *fibFixture {
	t.Helper()
	fx := newFibFixture(t)
	fx.apply(t, natSettings(1024, 65535))
	must(t, setForwards(&fx.objs, dnatForwards()))
	return fx
}

func (fx *fibFixture) flowFrom(t *testing.T, src netip.AddrPort) (Flow, bool) {
	t.Helper()
	var found Flow
	var ok bool
	must(t, fx.state().Flows(func(f Flow) bool {
		if f.Src == src {
			found, ok = f, true
			return false
		}
		return true
	}))
	return found, ok
}

func TestDNATForwardAndReply(t *testing.T) {
	fx := newDNATFixture(t)
	before := fx.stat(t, natwallNwStatNW_STAT_DNAT_FLOWS)
	syn := l4spec{proto: layers.IPProtocolTCP, src: "198.19.1.10", dst: natAddr, sport: 40000, dport: 50022, tcpFlags: "S"}
	got := decode4(t, fx.expect(t, frame4(t, syn), "b0", ReasonFwdRedirect).out)
	if got.src != "198.19.1.10" || got.sport != 40000 || got.dst != dnatTarget || got.dport != 22 {
		t.Fatalf("forwarded as %s:%d -> %s:%d, want 198.19.1.10:40000 -> %s:22", got.src, got.sport, got.dst, got.dport, dnatTarget)
	}
	synAck := l4spec{proto: layers.IPProtocolTCP, src: dnatTarget, dst: "198.19.1.10", sport: 22, dport: 40000, tcpFlags: "SA"}
	back := decode4(t, fx.expect(t, frame4(t, synAck), "a0", ReasonFwdRedirect).out)
	if back.src != natAddr || back.sport != 50022 || back.dst != "198.19.1.10" || back.dport != 40000 {
		t.Fatalf("reply translated to %s:%d -> %s:%d, want %s:50022 -> 198.19.1.10:40000", back.src, back.sport, back.dst, back.dport, natAddr)
	}
	f, ok := fx.flowFrom(t, netip.MustParseAddrPort("198.19.1.10:40000"))
	if !ok {
		t.Fatal("no flow for the forward")
	}
	if !f.DNAT || f.SNAT || f.Zone != natwallNwZoneNW_ZONE_INBOUND || f.ReplySrc != netip.MustParseAddrPort(dnatTarget+":22") ||
		f.Dst != netip.MustParseAddrPort(natAddr+":50022") {
		t.Fatalf("flow %+v: want dnat, inbound, %s:50022 with reply source %s:22", f, natAddr, dnatTarget)
	}
	if n := fx.stat(t, natwallNwStatNW_STAT_DNAT_FLOWS) - before; n != 1 {
		t.Fatalf("dnat flows counted %d, want 1", n)
	}
	// The forward counts its flows under its number, as a rule does.
	hits, err := fx.state().RuleHits([]uint32{101, 102})
	must(t, err)
	if hits[101].Packets != 1 || hits[102].Packets != 0 {
		t.Fatalf("forward hits %+v, want 1 flow for 101, none for 102", hits)
	}
}

// A range maps 1:1; the ports around it are not forwarded.
func TestDNATPortRange(t *testing.T) {
	fx := newDNATFixture(t)
	for _, tc := range []struct {
		port, want uint16
	}{{60000, 7000}, {60005, 7005}, {60009, 7009}} {
		u := l4spec{proto: layers.IPProtocolUDP, src: "198.19.1.10", dst: natAddr, sport: 5000 + tc.port%100, dport: tc.port}
		got := decode4(t, fx.expect(t, frame4(t, u), "b0", ReasonFwdRedirect).out)
		if got.dst != dnatTarget || got.dport != tc.want {
			t.Fatalf("port %d forwarded to %s:%d, want %s:%d", tc.port, got.dst, got.dport, dnatTarget, tc.want)
		}
		r := l4spec{proto: layers.IPProtocolUDP, src: dnatTarget, dst: "198.19.1.10", sport: tc.want, dport: u.sport}
		back := decode4(t, fx.expect(t, frame4(t, r), "a0", ReasonFwdRedirect).out)
		if back.src != natAddr || back.sport != tc.port {
			t.Fatalf("reply from %d left as %s:%d, want %s:%d", tc.want, back.src, back.sport, natAddr, tc.port)
		}
	}
	fx.expectAll(t, []zoneCase{
		{"below the range: the appliance's", frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.19.1.10", dst: natAddr, sport: 1, dport: 59999}), "b0", ReasonPassLocal},
		{"above the range: the appliance's", frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.19.1.10", dst: natAddr, sport: 1, dport: 60010}), "b0", ReasonPassLocal},
		{"the range's protocol only", frame4(t, l4spec{proto: layers.IPProtocolTCP, src: "198.19.1.10", dst: natAddr, sport: 1, dport: 60001, tcpFlags: "S"}), "b0", ReasonPassLocal},
	})
	// Forwards are replaced whole: the range is gone, the jump box stays.
	must(t, setForwards(&fx.objs, dnatForwards()[:1]))
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.19.1.11", dst: natAddr, sport: 1, dport: 60001}), "b0", ReasonPassLocal)
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolTCP, src: "198.19.1.11", dst: natAddr, sport: 2, dport: 50022, tcpFlags: "S"}), "b0", ReasonFwdRedirect)
}

// The stateful rules see the translated destination: a deny on the
// target blocks the forward, an allow on it admits it, and a rule on the
// external endpoint matches nothing.
func TestDNATRulesSeeTranslatedDestination(t *testing.T) {
	fx := newDNATFixture(t)
	denyTarget := anyRule(40, rules.Deny)
	denyTarget.src = netip.MustParsePrefix("198.19.1.11/32")
	denyTarget.dst = netip.MustParsePrefix(dnatTarget + "/32")
	denyTarget.proto, denyTarget.dportLo, denyTarget.dportHi = 6, 22, 22
	allowTarget := anyRule(41, rules.Allow)
	allowTarget.dst = netip.MustParsePrefix(dnatTarget + "/32")
	allowTarget.proto, allowTarget.dportLo, allowTarget.dportHi = 6, 22, 22
	allowTarget.zone = int(natwallNwZoneNW_ZONE_INBOUND)
	allowExternal := anyRule(42, rules.Allow)
	allowExternal.dst = netip.MustParsePrefix(natAddr + "/32")
	allowExternal.proto, allowExternal.dportLo, allowExternal.dportHi = 17, 60000, 60009
	must(t, loadRules(&fx.objs, nil, naiveStage([]testRule{denyTarget, allowTarget, allowExternal}, rules.Deny, 2)))

	fx.expectAll(t, []zoneCase{
		{"attack: a deny on the target blocks the forward", syn4(t, "198.19.1.11", natAddr, 50022), "b0", ReasonDropACLDeny},
		{"legit: the allow on the target admits it", syn4(t, "198.19.1.10", natAddr, 50022), "b0", ReasonFwdRedirect},
		{"attack: a rule on the external endpoint is not the target's", udp4(t, "198.19.1.10", natAddr, 60001), "b0", ReasonDropACLDeny},
	})
	f, ok := fx.flowFrom(t, netip.MustParseAddrPort("198.19.1.10:40000"))
	if !ok || f.RuleID != 41 {
		t.Fatalf("forwarded flow %+v: want rule 41", f)
	}
}

// An inside host reaching the forward through the external address gets
// the target, translated both ways so the target answers through the
// appliance; east-west rules between the two hosts apply.
func TestDNATHairpin(t *testing.T) {
	fx := newDNATFixture(t)
	hp := l4spec{proto: layers.IPProtocolTCP, src: "198.18.1.21", dst: natAddr, sport: 33000, dport: 50022, tcpFlags: "S"}
	got := decode4(t, fx.expect(t, frame4(t, hp), "a0", ReasonFwdTX).out)
	if got.src != natAddr || got.dst != dnatTarget || got.dport != 22 {
		t.Fatalf("hairpin delivered %s:%d -> %s:%d, want %s:* -> %s:22", got.src, got.sport, got.dst, got.dport, natAddr, dnatTarget)
	}
	r := l4spec{proto: layers.IPProtocolTCP, src: dnatTarget, dst: natAddr, sport: 22, dport: got.sport, tcpFlags: "SA"}
	back := decode4(t, fx.expect(t, frame4(t, r), "a0", ReasonFwdTX).out)
	if back.src != natAddr || back.sport != 50022 || back.dst != "198.18.1.21" || back.dport != 33000 {
		t.Fatalf("hairpin reply %s:%d -> %s:%d, want %s:50022 -> 198.18.1.21:33000", back.src, back.sport, back.dst, back.dport, natAddr)
	}
	f, ok := fx.flowFrom(t, netip.MustParseAddrPort("198.18.1.21:33000"))
	if !ok || !f.DNAT || !f.SNAT || f.Zone != natwallNwZoneNW_ZONE_EAST_WEST {
		t.Fatalf("hairpin flow %+v: want dnat+snat, east_west", f)
	}

	denyEW := anyRule(50, rules.Deny)
	denyEW.src = netip.MustParsePrefix("198.18.1.21/32")
	denyEW.dst = netip.MustParsePrefix(dnatTarget + "/32")
	denyEW.zone = int(natwallNwZoneNW_ZONE_EAST_WEST)
	must(t, loadRules(&fx.objs, nil, naiveStage([]testRule{denyEW}, rules.Allow, 2)))
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolTCP, src: "198.18.1.21", dst: natAddr, sport: 33001, dport: 50022, tcpFlags: "S"}), "a0", ReasonDropACLDeny)
}

// RFC 5508 for forwarded flows: the target's error about a reply leaves
// from the external endpoint, and an outside error about a reply reaches
// the target with the target's endpoint embedded.
func TestDNATICMPError(t *testing.T) {
	fx := newDNATFixture(t)
	u := l4spec{proto: layers.IPProtocolUDP, src: "198.19.1.10", dst: natAddr, sport: 5353, dport: 60003}
	in := fx.expect(t, frame4(t, u), "b0", ReasonFwdRedirect).out

	// The target has nothing on 7003: its port unreachable goes out.
	translated := fx.stat(t, natwallNwStatNW_STAT_ICMP_ERROR_TRANSLATED)
	got := decode4(t, fx.expect(t, icmpError4(t, dnatTarget, "198.19.1.10", in), "a0", ReasonFwdRedirect).out)
	if got.src != natAddr || got.dst != "198.19.1.10" {
		t.Fatalf("target's error left as %s -> %s, want %s -> 198.19.1.10", got.src, got.dst, natAddr)
	}
	if got.inner == nil || got.inner.src != "198.19.1.10" || got.inner.sport != 5353 || got.inner.dst != natAddr || got.inner.dport != 60003 {
		t.Fatalf("embedded header %+v, want 198.19.1.10:5353 -> %s:60003", got.inner, natAddr)
	}
	if fx.stat(t, natwallNwStatNW_STAT_ICMP_ERROR_TRANSLATED) != translated+1 {
		t.Fatal("translation not counted")
	}

	// The target answers; an outside router reports the answer undeliverable.
	r := l4spec{proto: layers.IPProtocolUDP, src: dnatTarget, dst: "198.19.1.10", sport: 7003, dport: 5353}
	out := fx.expect(t, frame4(t, r), "a0", ReasonFwdRedirect).out
	got = decode4(t, fx.expect(t, icmpError4(t, "198.19.1.11", natAddr, out), "b0", ReasonFwdRedirect).out)
	if got.dst != dnatTarget || got.src != "198.19.1.11" {
		t.Fatalf("outside error delivered %s -> %s, want 198.19.1.11 -> %s", got.src, got.dst, dnatTarget)
	}
	if got.inner == nil || got.inner.src != dnatTarget || got.inner.sport != 7003 || got.inner.dst != "198.19.1.10" || got.inner.dport != 5353 {
		t.Fatalf("embedded header %+v, want %s:7003 -> 198.19.1.10:5353", got.inner, dnatTarget)
	}
}

// Packets that try to get around a forward take the path they would take
// without it.
func TestDNATAttacks(t *testing.T) {
	fx := newFibFixture(t)
	s := zoneSettings(ReversePathOff, "b0")
	s.SNAT = natSettings(1024, 65535).SNAT
	fx.applyInFixtureNS(t, s)
	must(t, setForwards(&fx.objs, dnatForwards()))
	flows := fx.stat(t, natwallNwStatNW_STAT_DNAT_FLOWS)

	fx.expectAll(t, []zoneCase{
		{"attack: the target port straight from outside is plain inbound", syn4(t, "198.19.1.10", dnatTarget, 22), "b0", ReasonDropPolicy},
		{"attack: the target's range port straight from outside", udp4(t, "198.19.1.10", dnatTarget, 7003), "b0", ReasonDropPolicy},
		{"attack: a mid-stream segment to the forward opens nothing", frame4(t, l4spec{proto: layers.IPProtocolTCP, src: "198.19.1.10", dst: natAddr, sport: 1, dport: 50022, tcpFlags: "A"}), "b0", ReasonDropCTInvalid},
		{"attack: a spoofed reply from the target, on the outside NIC", frame4(t, l4spec{proto: layers.IPProtocolTCP, src: dnatTarget, dst: "198.19.1.10", sport: 22, dport: 40000, tcpFlags: "SA"}), "b0", ReasonDropSpoofedInside},
		{"attack: a reply from the target to a flow nobody opened", frame4(t, l4spec{proto: layers.IPProtocolTCP, src: dnatTarget, dst: "198.19.1.10", sport: 22, dport: 40000, tcpFlags: "SA"}), "a0", ReasonDropCTInvalid},
		{"attack: ICMP to the external address is not forwarded", frame4(t, l4spec{proto: layers.IPProtocolICMPv4, src: "198.19.1.10", dst: natAddr, icmpType: 8, icmpID: 50022}), "b0", ReasonPassLocal},
	})
	if got := fx.stat(t, natwallNwStatNW_STAT_DNAT_FLOWS); got != flows {
		t.Fatalf("attacks opened %d forwarded flows", got-flows)
	}
}

// The SNAT allocator never hands out a forwarded port: it would make an
// outbound flow's external endpoint the forward's.
func TestDNATPortNotAllocatedBySNAT(t *testing.T) {
	fx := newFibFixture(t)
	fx.apply(t, natSettings(50022, 50023))
	must(t, setForwards(&fx.objs, dnatForwards()))
	out := l4spec{proto: layers.IPProtocolTCP, src: "198.18.1.21", dst: "198.19.1.10", sport: 50022, dport: 443, tcpFlags: "S"}
	got := decode4(t, fx.expect(t, frame4(t, out), "a0", ReasonFwdRedirect).out)
	if got.sport != 50023 {
		t.Fatalf("outbound flow got external port %d, want 50023 (50022 is forwarded)", got.sport)
	}
	out.src = "198.18.1.20"
	fx.expect(t, frame4(t, out), "a0", ReasonDropSNATExhausted)
	// UDP 50022 is not forwarded: SNAT may use it.
	u := l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.21", dst: "198.19.1.10", sport: 50022, dport: 53}
	if got := decode4(t, fx.expect(t, frame4(t, u), "a0", ReasonFwdRedirect).out); got.sport != 50022 {
		t.Fatalf("UDP flow got external port %d, want its own 50022", got.sport)
	}
}

func TestDNATForwardValidation(t *testing.T) {
	ext := netip.MustParseAddr(natAddr)
	to := netip.MustParseAddr(dnatTarget)
	for _, tc := range []struct {
		name string
		fs   []Forward
	}{
		{"IPv6", []Forward{{ID: 1, External: netip.MustParseAddr("2001:db8::1"), Proto: 6, PortMin: 1, PortMax: 1, To: to, ToPort: 1}}},
		{"ICMP", []Forward{{ID: 1, External: ext, Proto: 1, PortMin: 1, PortMax: 1, To: to, ToPort: 1}}},
		{"number 0", []Forward{{ID: 0, External: ext, Proto: 6, PortMin: 1, PortMax: 1, To: to, ToPort: 1}}},
		{"port 0", []Forward{{ID: 1, External: ext, Proto: 6, PortMin: 0, PortMax: 1, To: to, ToPort: 1}}},
		{"empty range", []Forward{{ID: 1, External: ext, Proto: 6, PortMin: 10, PortMax: 9, To: to, ToPort: 1}}},
		{"target range past 65535", []Forward{{ID: 1, External: ext, Proto: 6, PortMin: 10, PortMax: 20, To: to, ToPort: 65530}}},
		{"overlap", []Forward{
			{ID: 1, External: ext, Proto: 6, PortMin: 10, PortMax: 20, To: to, ToPort: 10},
			{ID: 2, External: ext, Proto: 6, PortMin: 20, PortMax: 20, To: to, ToPort: 99}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fx := newFibFixture(t)
			if err := setForwards(&fx.objs, tc.fs); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}
