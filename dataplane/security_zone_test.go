package dataplane

import (
	"net"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/natwall/natwall/rules"
)

// Issue 14, classes 2 (spoofed sources), 9 (hairpin) and 12 (traffic to the
// appliance). The fixture's a0 is the inside NIC (198.18.1.0/24,
// 2001:db8:1::/64), b0 the outside one (198.19.1.0/24, 2001:db8:2::/64).

// applyInFixtureNS applies s where the fixture's NICs exist, so that
// OutsideInterfaces resolve to the ifindexes BPF_PROG_RUN reports.
func (fx *fibFixture) applyInFixtureNS(t *testing.T, s Settings) {
	t.Helper()
	if err := inNetNS(fx.ns, func() error { return applySettings(&fx.objs, s) }); err != nil {
		t.Fatal(err)
	}
	fx.settings = s
}

// zoneSettings are the fixture's settings with the reverse-path check in
// the given mode and the given NICs named outside.
func zoneSettings(rp ReversePathMode, outside ...string) Settings {
	s := fixtureSettings()
	s.ReversePath = rp
	s.OutsideInterfaces = outside
	return s
}

// zoneFrame6 builds an IPv6 frame: TCP with flags "S" or "A" to dport,
// UDP to dport, or ICMPv6 of icmpType.
func zoneFrame6(t testing.TB, src, dst string, proto layers.IPProtocol, flags string, dport uint16, icmpType uint8) []byte {
	t.Helper()
	ip := &layers.IPv6{Version: 6, HopLimit: 255, NextHeader: proto, SrcIP: net.ParseIP(src), DstIP: net.ParseIP(dst)}
	eth := &layers.Ethernet{SrcMAC: clientMAC, DstMAC: net.HardwareAddr{2, 0xaa, 0, 0, 0, 1}, EthernetType: layers.EthernetTypeIPv6}
	payload := gopacket.Payload([]byte("natwall-zone-test"))
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	switch proto {
	case layers.IPProtocolTCP:
		tcp := &layers.TCP{SrcPort: 40000, DstPort: layers.TCPPort(dport), Seq: 1, Ack: 1, Window: 1000,
			SYN: flags == "S", ACK: flags == "A"}
		tcp.SetNetworkLayerForChecksum(ip)
		must(t, gopacket.SerializeLayers(buf, opts, eth, ip, tcp, payload))
	case layers.IPProtocolUDP:
		udp := &layers.UDP{SrcPort: 40000, DstPort: layers.UDPPort(dport)}
		udp.SetNetworkLayerForChecksum(ip)
		must(t, gopacket.SerializeLayers(buf, opts, eth, ip, udp, payload))
	case layers.IPProtocolICMPv6:
		icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(icmpType, 0)}
		icmp.SetNetworkLayerForChecksum(ip)
		// Echo, or the 4 reserved bytes and a target of NS/NA/MLD.
		must(t, gopacket.SerializeLayers(buf, opts, eth, ip, icmp, gopacket.Payload(make([]byte, 20))))
	}
	return append([]byte(nil), buf.Bytes()...)
}

func udp4(t testing.TB, src, dst string, dport uint16) []byte {
	return frame4(t, l4spec{proto: layers.IPProtocolUDP, src: src, dst: dst, sport: 40000, dport: dport})
}

func syn4(t testing.TB, src, dst string, dport uint16) []byte {
	return frame4(t, l4spec{proto: layers.IPProtocolTCP, src: src, dst: dst, sport: 40000, dport: dport, tcpFlags: "S"})
}

type zoneCase struct {
	name  string
	frame []byte
	in    string
	want  Reason
}

func (fx *fibFixture) expectAll(t *testing.T, cases []zoneCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { fx.expect(t, tc.frame, tc.in, tc.want) })
	}
}

// An inside source on a NIC named outside is spoofed, whatever it is sent
// to and whether or not a reverse-path check would catch it: it opens no
// flow, gets no SNAT mapping and reaches no local rule. The same packets on
// the inside NIC, and the outside's replies, still pass.
func TestZoneSpoofedInsideOnOutsideNIC(t *testing.T) {
	fx := newFibFixture(t)
	s := zoneSettings(ReversePathOff, "b0")
	s.SNAT = natSettings(1024, 65535).SNAT
	fx.applyInFixtureNS(t, s)

	mappings := fx.stat(t, natwallNwStatNW_STAT_SNAT_NEW_MAPPING)
	fx.expectAll(t, []zoneCase{
		{"attack: v4 inside source on the outside NIC", udp4(t, "198.18.1.20", "198.19.1.10", 9000), "b0", ReasonDropSpoofedInside},
		{"attack: v4 inside source to another inside host", udp4(t, "198.18.1.20", "198.18.1.21", 9000), "b0", ReasonDropSpoofedInside},
		{"attack: v4 inside source to the appliance", syn4(t, "198.18.1.20", natAddr, 22), "b0", ReasonDropSpoofedInside},
		{"attack: v6 inside source on the outside NIC", zoneFrame6(t, "2001:db8:1::20", "2001:db8:2::10", layers.IPProtocolUDP, "", 9000, 0), "b0", ReasonDropSpoofedInside},
		{"attack: v6 inside source to the appliance", zoneFrame6(t, "2001:db8:1::20", "2001:db8:2::1", layers.IPProtocolTCP, "S", 22, 0), "b0", ReasonDropSpoofedInside},
		{"legit: outside source on the outside NIC meets the policy", udp4(t, "198.19.1.10", "198.18.1.20", 9000), "b0", ReasonDropPolicy},
	})
	if got := fx.stat(t, natwallNwStatNW_STAT_SNAT_NEW_MAPPING); got != mappings {
		t.Fatalf("spoofed packets created %d SNAT mappings", got-mappings)
	}

	// The same flow from the inside NIC opens, and its replies come back.
	out := decode4(t, fx.expect(t, udp4(t, "198.18.1.20", "198.19.1.10", 9000), "a0", ReasonFwdRedirect).out)
	if out.src != natAddr {
		t.Fatalf("outbound flow left as %s, want %s", out.src, natAddr)
	}
	reply := frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.19.1.10", dst: natAddr, sport: 9000, dport: out.sport})
	fx.expect(t, reply, "b0", ReasonFwdRedirect)
	fx.expect(t, zoneFrame6(t, "2001:db8:1::20", "2001:db8:2::10", layers.IPProtocolUDP, "", 9000, 0), "a0", ReasonFwdRedirect)

	// Naming no NIC outside turns the check off: the reverse-path check
	// is then what catches the spoof.
	fx.applyInFixtureNS(t, zoneSettings(ReversePathStrict))
	fx.expect(t, udp4(t, "198.18.1.20", "198.19.1.10", 9001), "b0", ReasonDropReversePath)
}

// A new flow's source must route back out of the NIC it arrived on
// (strict, the default), or at least route somewhere (loose).
func TestZoneReversePath(t *testing.T) {
	if DefaultSettings().ReversePath != ReversePathStrict {
		t.Fatalf("default reverse path %v, want strict", DefaultSettings().ReversePath)
	}
	fx := newFibFixture(t)
	fx.applyInFixtureNS(t, zoneSettings(ReversePathStrict))

	fx.expectAll(t, []zoneCase{
		{"attack: v4 source routed via the other NIC", udp4(t, "198.18.1.20", "198.19.1.10", 9000), "b0", ReasonDropReversePath},
		{"attack: v4 source is the appliance's own address", udp4(t, "198.18.1.1", "198.19.1.10", 9000), "a0", ReasonDropReversePath},
		{"attack: v4 source with no route", udp4(t, "198.18.9.5", "198.19.1.10", 9000), "a0", ReasonDropReversePath},
		{"attack: v4 east-west from an unrouted source", syn4(t, "198.18.9.5", "198.18.1.20", 22), "a0", ReasonDropReversePath},
		{"attack: v6 source routed via the other NIC", zoneFrame6(t, "2001:db8:1::20", "2001:db8:2::10", layers.IPProtocolUDP, "", 9000, 0), "b0", ReasonDropReversePath},
		{"attack: v6 source with no route", zoneFrame6(t, "2001:db8:1:5::1", "2001:db8:2::10", layers.IPProtocolUDP, "", 9000, 0), "a0", ReasonDropReversePath},
		{"attack: v6 source is the appliance's own address", zoneFrame6(t, "2001:db8:1::1", "2001:db8:2::10", layers.IPProtocolUDP, "", 9000, 0), "a0", ReasonDropReversePath},
		{"legit: v4 outbound", udp4(t, "198.18.1.20", "198.19.1.10", 9000), "a0", ReasonFwdRedirect},
		{"legit: v4 reply", frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.19.1.10", dst: "198.18.1.20", sport: 9000, dport: 40000}), "b0", ReasonFwdRedirect},
		{"legit: v4 east-west", udp4(t, "198.18.1.21", "198.18.1.20", 53), "a0", ReasonFwdTX},
		{"legit: v6 outbound", zoneFrame6(t, "2001:db8:1::20", "2001:db8:2::10", layers.IPProtocolUDP, "", 9000, 0), "a0", ReasonFwdRedirect},
		// A packet the policy refuses is refused by the policy: the check
		// runs only for flows about to be created.
		{"denied by policy before the check", udp4(t, "198.19.1.10", "198.18.1.20", 9100), "a0", ReasonDropPolicy},
	})

	// Inside networks behind two NICs: each must arrive on its own.
	several := zoneSettings(ReversePathStrict)
	several.Inside = append(several.Inside, netip.MustParsePrefix("198.19.3.0/24"), netip.MustParsePrefix("2001:db8:3::/64"))
	fx.applyInFixtureNS(t, several)
	fx.expectAll(t, []zoneCase{
		{"several inside routes: attack: c0's network from a0", udp4(t, "198.19.3.10", "198.19.1.10", 9400), "a0", ReasonDropReversePath},
		{"several inside routes: attack: a0's network from c0", udp4(t, "198.18.1.20", "198.19.1.10", 9400), "c0", ReasonDropReversePath},
		{"several inside routes: attack: v6 c0's network from a0", zoneFrame6(t, "2001:db8:3::10", "2001:db8:2::10", layers.IPProtocolUDP, "", 9400, 0), "a0", ReasonDropReversePath},
		{"several inside routes: legit: c0's network from c0", udp4(t, "198.19.3.10", "198.19.1.10", 9400), "c0", ReasonFwdRedirect},
		{"several inside routes: legit: east-west from c0 to a0", udp4(t, "198.19.3.10", "198.18.1.20", 9400), "c0", ReasonFwdRedirect},
		{"several inside routes: legit: v6 c0's network from c0", zoneFrame6(t, "2001:db8:3::10", "2001:db8:2::10", layers.IPProtocolUDP, "", 9400, 0), "c0", ReasonFwdRedirect},
	})

	fx.applyInFixtureNS(t, zoneSettings(ReversePathLoose))
	fx.expectAll(t, []zoneCase{
		{"loose: asymmetric v4 source passes", udp4(t, "198.18.1.20", "198.19.1.10", 9200), "b0", ReasonFwdTX},
		{"loose: asymmetric v6 source passes", zoneFrame6(t, "2001:db8:1::20", "2001:db8:2::10", layers.IPProtocolUDP, "", 9200, 0), "b0", ReasonFwdTX},
		{"loose: v4 source with no route", udp4(t, "198.18.9.5", "198.19.1.10", 9200), "a0", ReasonDropReversePath},
		{"loose: v4 source is the appliance's own address", udp4(t, "198.18.1.1", "198.19.1.10", 9200), "a0", ReasonDropReversePath},
		{"loose: v6 source with no route", zoneFrame6(t, "2001:db8:1:5::1", "2001:db8:2::10", layers.IPProtocolUDP, "", 9200, 0), "a0", ReasonDropReversePath},
	})

	fx.applyInFixtureNS(t, zoneSettings(ReversePathOff))
	fx.expect(t, udp4(t, "198.18.9.5", "198.19.1.10", 9300), "a0", ReasonFwdRedirect)

	if err := applySettings(&fx.objs, zoneSettings(ReversePathMode(7))); err == nil {
		t.Fatal("an unknown reverse-path mode was accepted")
	}
	if err := applySettings(&fx.objs, zoneSettings(ReversePathStrict, "nw-no-such-nic")); err == nil {
		t.Fatal("an outside interface that does not exist was accepted")
	}

	info, err := fx.objs.XdpNatwall.Info()
	must(t, err)
	if n, ok := info.VerifiedInstructions(); ok {
		t.Logf("xdp_natwall: %d verified instructions", n)
	}
}

// A hairpinned flow (an inside host reaching another through its external
// endpoint) is classified on the destination after translation, as
// east-west: rules between the two hosts apply to it. It is still
// translated both ways (RFC 4787 REQ-9).
func TestZoneHairpinIsEastWest(t *testing.T) {
	fx := newFibFixture(t)
	fx.apply(t, natSettings(1024, 65535))
	ext := decode4(t, fx.expect(t, udp4(t, "198.18.1.20", "198.19.1.10", 9000), "a0", ReasonFwdRedirect).out)
	// The mapping's inside endpoint is 198.18.1.20:40000.

	denyEW := anyRule(30, rules.Deny)
	denyEW.src = netip.MustParsePrefix("198.18.1.21/32")
	denyEW.dst = netip.MustParsePrefix("198.18.1.20/32")
	denyEW.proto, denyEW.dportLo, denyEW.dportHi = 17, 40000, 40000
	denyOutbound := anyRule(31, rules.Deny)
	denyOutbound.src = netip.MustParsePrefix("198.18.1.22/32")
	denyOutbound.zone = int(natwallNwZoneNW_ZONE_OUTBOUND)
	stateful := naiveStage([]testRule{denyEW, denyOutbound}, rules.Allow, 2)
	must(t, loadRules(&fx.objs, nil, stateful))

	hairpin := func(src string, sport uint16) []byte {
		return frame4(t, l4spec{proto: layers.IPProtocolUDP, src: src, dst: natAddr, sport: sport, dport: ext.sport})
	}
	fx.expectAll(t, []zoneCase{
		{"attack: east-west deny applies through the external endpoint", hairpin("198.18.1.21", 8888), "a0", ReasonDropACLDeny},
		// Not outbound any more: an outbound deny for .22 does not stop
		// it reaching .20 east-west.
		{"legit: another inside host hairpins", hairpin("198.18.1.22", 8889), "a0", ReasonFwdTX},
		{"legit: the denied host still goes out", udp4(t, "198.18.1.21", "198.19.1.10", 9000), "a0", ReasonFwdRedirect},
	})
	st := fx.state()
	var zone Zone = 255
	var translated, dnat, snat bool
	must(t, st.Flows(func(f Flow) bool {
		if f.Src.Addr().String() == "198.18.1.22" {
			zone = f.Zone
			translated = f.Dst.Addr().String() == natAddr
			dnat, snat = f.DNAT, f.SNAT
		}
		return true
	}))
	if zone != natwallNwZoneNW_ZONE_EAST_WEST || !translated || !dnat || !snat {
		t.Fatalf("hairpin flow zone %s (through %s %v, dnat %v, snat %v), want east_west, translated both ways", ZoneName(zone), natAddr, translated, dnat, snat)
	}
	hits, err := st.RuleHits([]uint32{30})
	must(t, err)
	if hits[30].Packets != 1 {
		t.Fatalf("east-west deny rule counted %d flows, want 1", hits[30].Packets)
	}
}

// IPv6 traffic with a link-scoped address meets the same rules as any
// traffic to the appliance, except neighbour discovery and MLD, which the
// kernel must always see. A link-scoped source is never forwarded.
func TestZoneLinkScopedToAppliance(t *testing.T) {
	fx := newFibFixture(t)
	fx.apply(t, fixtureSettings())

	sshFromInside := anyRule(40, rules.Allow)
	sshFromInside.src = netip.MustParsePrefix("2001:db8:1::/48")
	sshFromInside.proto, sshFromInside.dportLo, sshFromInside.dportHi = 6, 22, 22
	sshFromInside.zone = int(natwallNwZoneNW_ZONE_LOCAL)
	pingFromLink := anyRule(41, rules.Allow)
	pingFromLink.src = netip.MustParsePrefix("fe80::/10")
	pingFromLink.proto, pingFromLink.icmpType = 58, 128
	stateful := naiveStage([]testRule{sshFromInside, pingFromLink}, rules.Deny, 2)
	dropMDNS := anyRule(42, rules.Drop)
	dropMDNS.src = netip.MustParsePrefix("fe80::/10")
	dropMDNS.proto, dropMDNS.dportLo, dropMDNS.dportHi = 17, 5353, 5353
	dropAllNDPToo := anyRule(43, rules.Drop)
	dropAllNDPToo.proto = 58
	dropAllNDPToo.icmpType = 135
	stateless := naiveStage([]testRule{dropMDNS, dropAllNDPToo}, rules.Pass, 1)
	must(t, loadRules(&fx.objs, stateless, stateful))

	tcp6 := func(src, dst, flags string) []byte {
		return zoneFrame6(t, src, dst, layers.IPProtocolTCP, flags, 22, 0)
	}
	icmp6 := func(src, dst string, typ uint8) []byte {
		return zoneFrame6(t, src, dst, layers.IPProtocolICMPv6, "", 0, typ)
	}
	udp6 := func(src, dst string, dport uint16) []byte {
		return zoneFrame6(t, src, dst, layers.IPProtocolUDP, "", dport, 0)
	}
	fx.expectAll(t, []zoneCase{
		{"attack: link-local SSH to the global address meets the local rules", tcp6("fe80::10", "2001:db8:1::1", "S"), "a0", ReasonDropACLDeny},
		{"attack: link-local SSH to the link-local address meets the local rules", tcp6("fe80::10", "fe80::1", "S"), "a0", ReasonDropACLDeny},
		{"attack: link-local source routed onwards", udp6("fe80::10", "2001:db8:2::10", 9000), "a0", ReasonDropLinkScopedSrc},
		{"attack: link-local SYN routed onwards", tcp6("fe80::10", "2001:db8:2::10", "S"), "a0", ReasonDropLinkScopedSrc},
		{"attack: multicast source routed onwards", udp6("ff02::1", "2001:db8:2::10", 9000), "a0", ReasonDropLinkScopedSrc},
		{"attack: stateless rules see link-local traffic", udp6("fe80::10", "ff02::fb", 5353), "a0", ReasonDropACLStateless},
		{"legit: SSH from inside to the appliance", tcp6("2001:db8:1::10", "2001:db8:1::1", "S"), "a0", ReasonPassLocal},
		{"legit: link-local ping the rules allow", icmp6("fe80::10", "2001:db8:1::1", 128), "a0", ReasonPassLocal},
		{"legit: link-local packet of an open connection goes to the kernel", tcp6("fe80::10", "fe80::1", "A"), "a0", ReasonPassLinkLocal},
		{"legit: link-local UDP to the global address (untracked, the kernel's)", udp6("fe80::10", "2001:db8:1::1", 547), "a0", ReasonPassLocal},
		{"legit: neighbour solicitation from link-local to global", icmp6("fe80::10", "2001:db8:1::1", 135), "a0", ReasonPassLinkLocal},
		{"legit: neighbour solicitation to solicited-node multicast", icmp6("fe80::10", "ff02::1:ff00:1", 135), "a0", ReasonPassLinkLocal},
		{"legit: neighbour advertisement", icmp6("fe80::10", "2001:db8:1::1", 136), "a0", ReasonPassLinkLocal},
		{"legit: router solicitation", icmp6("fe80::10", "ff02::2", 133), "a0", ReasonPassLinkLocal},
		{"legit: MLDv2 report", icmp6("fe80::10", "ff02::16", 143), "a0", ReasonPassLinkLocal},
	})
}

// withSrcMAC is frame sent by mac instead.
func withSrcMAC(frame []byte, mac net.HardwareAddr) []byte {
	out := append([]byte(nil), frame...)
	copy(out[6:12], mac)
	return out
}

// With one NIC every source routes back through it; in the neighbour mode
// the frame must also come from the MAC the route back leads to, where the
// appliance has resolved it. The fixture's 198.18.1.20 and 2001:db8:1::20
// are hairpinMAC's, 198.19.1.10 serverMAC's; 198.18.1.10 is unresolved.
func TestZoneReversePathNeighbor(t *testing.T) {
	fx := newFibFixture(t)
	fx.applyInFixtureNS(t, zoneSettings(ReversePathNeighbor))
	v6 := zoneFrame6(t, "2001:db8:1::20", "2001:db8:2::10", layers.IPProtocolUDP, "", 9000, 0)
	fx.expectAll(t, []zoneCase{
		{"attack: v4 a neighbour's address from another MAC", withSrcMAC(udp4(t, "198.18.1.20", "198.19.1.10", 9000), serverMAC), "a0", ReasonDropReversePath},
		{"attack: v6 a neighbour's address from another MAC", withSrcMAC(v6, serverMAC), "a0", ReasonDropReversePath},
		{"attack: still strict about the NIC", withSrcMAC(udp4(t, "198.18.1.20", "198.19.1.10", 9001), hairpinMAC), "b0", ReasonDropReversePath},
		{"legit: v4 from the neighbour itself", withSrcMAC(udp4(t, "198.18.1.20", "198.19.1.10", 9000), hairpinMAC), "a0", ReasonFwdRedirect},
		{"legit: v6 from the neighbour itself", withSrcMAC(v6, hairpinMAC), "a0", ReasonFwdRedirect},
		{"legit: an unresolved neighbour cannot be checked", udp4(t, "198.18.1.10", "198.19.1.10", 9000), "a0", ReasonFwdRedirect},
	})
	fx.applyInFixtureNS(t, zoneSettings(ReversePathStrict))
	fx.expect(t, withSrcMAC(udp4(t, "198.18.1.20", "198.19.1.10", 9002), serverMAC), "a0", ReasonFwdRedirect)
}
