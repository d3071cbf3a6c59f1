package dataplane

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// The appliance's external address in the fixture (b0's address).
const natAddr = "198.19.1.1"

func natSettings(portMin, portMax uint16) Settings {
	s := fixtureSettings()
	s.SNAT = &SNAT{
		Addresses: []netip.Addr{netip.MustParseAddr(natAddr)},
		PortMin:   portMin,
		PortMax:   portMax,
	}
	return s
}

type l4spec struct {
	proto            layers.IPProtocol
	src, dst         string
	sport, dport     uint16
	tcpFlags         string // "S", "SA", "A", "R", "F"
	icmpType, icmpID uint16
	zeroUDPChecksum  bool
}

// frame4 builds an IPv4 frame with correct checksums.
func frame4(t testing.TB, s l4spec) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: s.proto, Flags: layers.IPv4DontFragment,
		SrcIP: net.ParseIP(s.src), DstIP: net.ParseIP(s.dst)}
	eth := &layers.Ethernet{SrcMAC: clientMAC, DstMAC: net.HardwareAddr{2, 0xaa, 0, 0, 0, 1}, EthernetType: layers.EthernetTypeIPv4}
	payload := gopacket.Payload([]byte("natwall-test-payload"))
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	switch s.proto {
	case layers.IPProtocolTCP:
		tcp := &layers.TCP{SrcPort: layers.TCPPort(s.sport), DstPort: layers.TCPPort(s.dport), Seq: 100, Ack: 1, Window: 1000}
		for _, f := range s.tcpFlags {
			switch f {
			case 'S':
				tcp.SYN = true
			case 'A':
				tcp.ACK = true
			case 'R':
				tcp.RST = true
			case 'F':
				tcp.FIN = true
			}
		}
		tcp.SetNetworkLayerForChecksum(ip)
		must(t, gopacket.SerializeLayers(buf, opts, eth, ip, tcp, payload))
	case layers.IPProtocolUDP:
		udp := &layers.UDP{SrcPort: layers.UDPPort(s.sport), DstPort: layers.UDPPort(s.dport)}
		udp.SetNetworkLayerForChecksum(ip)
		must(t, gopacket.SerializeLayers(buf, opts, eth, ip, udp, payload))
		if s.zeroUDPChecksum {
			b := buf.Bytes()
			b[14+20+6], b[14+20+7] = 0, 0
		}
	case layers.IPProtocolICMPv4:
		icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(uint8(s.icmpType), 0), Id: s.icmpID, Seq: 1}
		must(t, gopacket.SerializeLayers(buf, opts, eth, ip, icmp, payload))
	}
	return append([]byte(nil), buf.Bytes()...)
}

// icmpError4 wraps the first 28 bytes of the IP datagram inside frame into
// an ICMP destination-unreachable from src to dst.
func icmpError4(t testing.TB, src, dst string, about []byte) []byte {
	t.Helper()
	inner := about[14:]
	if len(inner) > 28 {
		inner = inner[:28]
	}
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolICMPv4,
		SrcIP: net.ParseIP(src), DstIP: net.ParseIP(dst)}
	eth := &layers.Ethernet{SrcMAC: serverMAC, DstMAC: net.HardwareAddr{2, 0xaa, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4}
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodePort)}
	buf := gopacket.NewSerializeBuffer()
	must(t, gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, icmp, gopacket.Payload(inner)))
	return append([]byte(nil), buf.Bytes()...)
}

// decoded is what a test needs of a frame natwall emitted, with every
// checksum it carries verified against a recomputation.
type decoded struct {
	src, dst     string
	sport, dport uint16
	icmpID       uint16
	inner        *decoded // for ICMP errors: the embedded packet
}

func decode4(t *testing.T, frame []byte) decoded {
	t.Helper()
	ip := frame[14:]
	hl := int(ip[0]&0xf) * 4
	tot := int(binary.BigEndian.Uint16(ip[2:]))
	checkIPv4Checksum(t, ip[:hl])
	d := decoded{src: net.IP(ip[12:16]).String(), dst: net.IP(ip[16:20]).String()}
	l4 := ip[hl:tot]
	switch ip[9] {
	case 6, 17:
		d.sport = binary.BigEndian.Uint16(l4)
		d.dport = binary.BigEndian.Uint16(l4[2:])
		sumOff := 16
		if ip[9] == 17 {
			sumOff = 6
		}
		if !(ip[9] == 17 && binary.BigEndian.Uint16(l4[6:]) == 0) {
			if got := pseudoChecksum(ip[12:16], ip[16:20], ip[9], l4); got != 0 {
				t.Errorf("%s L4 checksum invalid after translation (residue %#04x, field %#04x)", layers.IPProtocol(ip[9]), got, binary.BigEndian.Uint16(l4[sumOff:]))
			}
		}
	case 1:
		if ipChecksum(l4) != 0 {
			t.Errorf("ICMP checksum invalid after translation")
		}
		switch l4[0] {
		case 0, 8:
			d.icmpID = binary.BigEndian.Uint16(l4[4:])
		case 3, 11, 12:
			in := l4[8:]
			ihl := int(in[0]&0xf) * 4
			checkIPv4Checksum(t, in[:ihl])
			inner := decoded{src: net.IP(in[12:16]).String(), dst: net.IP(in[16:20]).String()}
			if in[9] == 6 || in[9] == 17 {
				inner.sport = binary.BigEndian.Uint16(in[ihl:])
				inner.dport = binary.BigEndian.Uint16(in[ihl+2:])
			}
			d.inner = &inner
		}
	}
	return d
}

func checkIPv4Checksum(t *testing.T, hdr []byte) {
	t.Helper()
	if ipChecksum(hdr) != 0 {
		t.Errorf("IPv4 header checksum invalid: %x", hdr)
	}
}

// pseudoChecksum sums an L4 segment with its pseudo-header; a valid
// checksum makes the result 0.
func pseudoChecksum(src, dst []byte, proto byte, seg []byte) uint16 {
	ph := append(append(append([]byte(nil), src...), dst...), 0, proto, byte(len(seg)>>8), byte(len(seg)))
	b := append(ph, seg...)
	if len(b)%2 == 1 {
		b = append(b, 0)
	}
	return ipChecksum(b)
}

func (fx *fibFixture) expect(t *testing.T, frame []byte, ingress string, want Reason) runResult {
	t.Helper()
	res := fx.run(t, frame, ingress)
	if res.reason != want {
		t.Fatalf("got reason %s, want %s", res.reason.Name(), want.Name())
	}
	return res
}

func (fx *fibFixture) stat(t *testing.T, s natwallNwStat) uint64 {
	t.Helper()
	var perCPU []uint64
	if err := fx.objs.NwStats.Lookup(s, &perCPU); err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, v := range perCPU {
		n += v
	}
	return n
}

func TestSNATOutboundAndReply(t *testing.T) {
	fx := newFibFixture(t)
	fx.apply(t, natSettings(1024, 65535))

	for _, tc := range []struct {
		name string
		out  l4spec
	}{
		{"udp", l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: "198.19.1.10", sport: 40000, dport: 9000}},
		{"tcp", l4spec{proto: layers.IPProtocolTCP, src: "198.18.1.20", dst: "198.19.1.10", sport: 40001, dport: 443, tcpFlags: "S"}},
		{"udp zero checksum", l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: "198.19.1.10", sport: 40002, dport: 9000, zeroUDPChecksum: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := fx.expect(t, frame4(t, tc.out), "a0", ReasonFwdRedirect)
			got := decode4(t, res.out)
			// RFC 4787 REQ-3: the source port is preserved when free.
			if got.src != natAddr || got.sport != tc.out.sport || got.dst != tc.out.dst || got.dport != tc.out.dport {
				t.Fatalf("outbound translated to %s:%d -> %s:%d, want %s:%d -> %s:%d",
					got.src, got.sport, got.dst, got.dport, natAddr, tc.out.sport, tc.out.dst, tc.out.dport)
			}
			if tc.out.zeroUDPChecksum && binary.BigEndian.Uint16(res.out[14+20+6:]) != 0 {
				t.Errorf("a zero UDP checksum must stay zero (RFC 768: none computed)")
			}

			reply := tc.out
			reply.src, reply.dst, reply.sport, reply.dport = tc.out.dst, natAddr, tc.out.dport, tc.out.sport
			if reply.proto == layers.IPProtocolTCP {
				reply.tcpFlags = "SA"
			}
			res = fx.expect(t, frame4(t, reply), "b0", ReasonFwdRedirect)
			got = decode4(t, res.out)
			if got.src != tc.out.dst || got.sport != tc.out.dport || got.dst != tc.out.src || got.dport != tc.out.sport {
				t.Fatalf("reply translated to %s:%d -> %s:%d, want %s:%d -> %s:%d",
					got.src, got.sport, got.dst, got.dport, tc.out.dst, tc.out.dport, tc.out.src, tc.out.sport)
			}
		})
	}
}

// RFC 4787 REQ-1 / RFC 5382 REQ-1: one inside endpoint keeps one external
// endpoint whatever the destination.
func TestSNATEndpointIndependentMapping(t *testing.T) {
	fx := newFibFixture(t)
	fx.apply(t, natSettings(1024, 65535))
	first := decode4(t, fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: "198.19.1.10", sport: 5000, dport: 9000}), "a0", ReasonFwdRedirect).out)
	second := decode4(t, fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: "198.19.1.11", sport: 5000, dport: 7000}), "a0", ReasonFwdRedirect).out)
	if first.src != second.src || first.sport != second.sport {
		t.Fatalf("mapping differs per destination: %s:%d vs %s:%d", first.src, first.sport, second.src, second.sport)
	}
}

// Two inside hosts using the same source port: the second cannot keep it,
// and no external port ever serves two inside endpoints.
func TestSNATPortCollisionPicksAnotherPort(t *testing.T) {
	fx := newFibFixture(t)
	fx.apply(t, natSettings(1024, 65535))
	a := decode4(t, fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: "198.19.1.10", sport: 5000, dport: 9000}), "a0", ReasonFwdRedirect).out)
	b := decode4(t, fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.21", dst: "198.19.1.10", sport: 5000, dport: 9000}), "a0", ReasonFwdRedirect).out)
	if a.sport != 5000 {
		t.Errorf("first endpoint lost its free port: %d", a.sport)
	}
	if b.sport == a.sport || b.sport < 1024 {
		t.Fatalf("second endpoint got external port %d (first has %d)", b.sport, a.sport)
	}
}

func TestSNATICMPEcho(t *testing.T) {
	fx := newFibFixture(t)
	fx.apply(t, natSettings(1024, 65535))
	// Identifier 7 is outside the port range, so it must be remapped.
	out := decode4(t, fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolICMPv4, src: "198.18.1.20", dst: "198.19.1.10", icmpType: 8, icmpID: 7}), "a0", ReasonFwdRedirect).out)
	if out.src != natAddr || out.icmpID < 1024 {
		t.Fatalf("echo request left as %s id %d", out.src, out.icmpID)
	}
	back := decode4(t, fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolICMPv4, src: "198.19.1.10", dst: natAddr, icmpType: 0, icmpID: out.icmpID}), "b0", ReasonFwdRedirect).out)
	if back.dst != "198.18.1.20" || back.icmpID != 7 {
		t.Fatalf("echo reply translated to %s id %d, want 198.18.1.20 id 7", back.dst, back.icmpID)
	}
}

// RFC 5508 REQ-3: an ICMP error about a translated flow reaches the inside
// host with its embedded header translated back, every checksum intact.
func TestSNATICMPErrorTranslated(t *testing.T) {
	fx := newFibFixture(t)
	fx.apply(t, natSettings(1024, 65535))
	// Take port 6000 first so the flow under test is remapped and both the
	// address and the port of the embedded header must change.
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.21", dst: "198.19.1.10", sport: 6000, dport: 9000}), "a0", ReasonFwdRedirect)
	res := fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: "198.19.1.10", sport: 6000, dport: 9000}), "a0", ReasonFwdRedirect)
	sent := decode4(t, res.out)
	if sent.sport == 6000 {
		t.Fatalf("test needs a remapped port")
	}

	for _, router := range []string{"198.19.1.10", "198.19.1.11"} {
		errFrame := icmpError4(t, router, natAddr, res.out)
		got := decode4(t, fx.expect(t, errFrame, "b0", ReasonFwdRedirect).out)
		if got.dst != "198.18.1.20" || got.src != router {
			t.Fatalf("error from %s delivered %s -> %s", router, got.src, got.dst)
		}
		if got.inner == nil || got.inner.src != "198.18.1.20" || got.inner.sport != 6000 || got.inner.dst != "198.19.1.10" || got.inner.dport != 9000 {
			t.Fatalf("embedded header %+v, want 198.18.1.20:6000 -> 198.19.1.10:9000 (was sent as %s:%d)", got.inner, sent.src, sent.sport)
		}
	}
	// RFC 5508 REQ-5: an error from an inside router about a reply it
	// could not deliver leaves from the external address, like the flow.
	delivered := frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.19.1.10", dst: "198.18.1.20", sport: 9000, dport: 6000})
	got := decode4(t, fx.expect(t, icmpError4(t, "198.18.1.99", "198.19.1.10", delivered), "a0", ReasonFwdRedirect).out)
	if got.src != natAddr || got.dst != "198.19.1.10" {
		t.Fatalf("inside router's error left as %s -> %s, want %s -> 198.19.1.10", got.src, got.dst, natAddr)
	}
	if got.inner == nil || got.inner.dst != natAddr || got.inner.dport != sent.sport {
		t.Fatalf("embedded header %+v, want it addressed to %s:%d", got.inner, natAddr, sent.sport)
	}
	// An error about nothing we track is not forwarded.
	stray := frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: "198.19.1.10", sport: 1, dport: 2})
	fx.expect(t, icmpError4(t, "198.19.1.10", "198.18.1.20", stray), "b0", ReasonDropICMPErrorNoFlow)
}

func TestConntrackPolicy(t *testing.T) {
	fx := newFibFixture(t)
	fx.apply(t, natSettings(1024, 65535))
	// From outside, nothing starts a flow.
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.19.1.10", dst: "198.18.1.20", sport: 9000, dport: 5000}), "b0", ReasonDropPolicy)
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolTCP, src: "198.19.1.10", dst: "198.18.1.20", sport: 9000, dport: 22, tcpFlags: "S"}), "b0", ReasonDropPolicy)
	// To the appliance itself: the kernel's business, untracked.
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolTCP, src: "198.19.1.10", dst: natAddr, sport: 9000, dport: 22, tcpFlags: "S"}), "b0", ReasonPassLocal)
	// A mid-stream TCP packet cannot start a flow, and is never forwarded
	// untranslated.
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolTCP, src: "198.18.1.20", dst: "198.19.1.10", sport: 7000, dport: 443, tcpFlags: "A"}), "a0", ReasonDropCTInvalid)
	// An echo reply is not a request.
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolICMPv4, src: "198.18.1.20", dst: "198.19.1.10", icmpType: 0, icmpID: 9}), "a0", ReasonDropCTInvalid)
	// East-west is tracked but not translated.
	ew := decode4(t, fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.21", dst: "198.18.1.20", sport: 1234, dport: 53}), "a0", ReasonFwdTX).out)
	if ew.src != "198.18.1.21" {
		t.Fatalf("east-west flow was translated to %s", ew.src)
	}
}

// A tiny range: allocations beyond it fail and are counted, and no mapping
// is ever handed out twice.
func TestSNATExhaustion(t *testing.T) {
	fx := newFibFixture(t)
	fx.apply(t, natSettings(20000, 20003))
	seen := map[uint16]string{}
	for i := 0; i < 4; i++ {
		src := netip.AddrFrom4([4]byte{198, 18, 2, byte(10 + i)}).String()
		got := decode4(t, fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: src, dst: "198.19.1.10", sport: 5000, dport: 9000}), "a0", ReasonFwdRedirect).out)
		if prev, dup := seen[got.sport]; dup {
			t.Fatalf("external port %d given to %s and %s", got.sport, prev, src)
		}
		seen[got.sport] = src
	}
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.2.99", dst: "198.19.1.10", sport: 5000, dport: 9000}), "a0", ReasonDropSNATExhausted)
	// Existing mappings are untouched.
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.2.10", dst: "198.19.1.10", sport: 5000, dport: 9000}), "a0", ReasonFwdRedirect)
}

func TestConntrackTableFull(t *testing.T) {
	fx := newFibFixture(t)
	for i := 0; i < fixtureTableSize; i++ {
		fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: "198.19.1.10", sport: uint16(10000 + i), dport: 9000}), "a0", ReasonFwdRedirect)
		// Answered: early drop evicts only flows that never were.
		fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.19.1.10", dst: "198.18.1.20", sport: 9000, dport: uint16(10000 + i)}), "b0", ReasonFwdRedirect)
	}
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: "198.19.1.10", sport: 20000, dport: 9000}), "a0", ReasonDropCTFull)
	// Established flows are never evicted for new ones.
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.19.1.10", dst: "198.18.1.20", sport: 9000, dport: 10000}), "b0", ReasonFwdRedirect)
}

// RFC 4787 REQ-9: an inside host reaches another through its external
// endpoint, and sees the other's external address as the source.
func TestSNATHairpin(t *testing.T) {
	fx := newFibFixture(t)
	fx.apply(t, natSettings(1024, 65535))
	b := decode4(t, fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: "198.19.1.10", sport: 7777, dport: 9000}), "a0", ReasonFwdRedirect).out)

	hp := fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.21", dst: natAddr, sport: 8888, dport: b.sport}), "a0", ReasonFwdTX)
	got := decode4(t, hp.out)
	if got.dst != "198.18.1.20" || got.dport != 7777 || got.src != natAddr {
		t.Fatalf("hairpin delivered %s:%d -> %s:%d", got.src, got.sport, got.dst, got.dport)
	}
	back := decode4(t, fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: natAddr, sport: 7777, dport: got.sport}), "a0", ReasonFwdTX).out)
	if back.src != natAddr || back.sport != b.sport || back.dst != "198.18.1.21" || back.dport != 8888 {
		t.Fatalf("hairpin reply %s:%d -> %s:%d", back.src, back.sport, back.dst, back.dport)
	}
}

// An idle flow expires: a late reply finds no flow, and the expiry is counted.
func TestConntrackIdleTimeout(t *testing.T) {
	fx := newFibFixture(t)
	s := natSettings(1024, 65535)
	s.Timeouts.UDP = time.Second
	fx.apply(t, s)
	out := decode4(t, fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: "198.19.1.10", sport: 4444, dport: 9000}), "a0", ReasonFwdRedirect).out)

	// Age the flow instead of sleeping.
	key := natwallNwTuple4{Saddr: beUint32([4]byte{198, 18, 1, 20}), Daddr: beUint32([4]byte{198, 19, 1, 10}),
		Sport: htons(4444), Dport: htons(9000), Proto: 17}
	var e natwallNwCt4Entry
	must(t, fx.objs.NwCt4.Lookup(key, &e))
	e.St.LastSeenNs -= uint64(2 * time.Second)
	must(t, fx.objs.NwCt4.Put(key, e))

	before := fx.stat(t, natwallNwStatNW_STAT_CT_EXPIRED_DP)
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.19.1.10", dst: natAddr, sport: 9000, dport: out.sport}), "b0", ReasonPassLocal)
	if fx.stat(t, natwallNwStatNW_STAT_CT_EXPIRED_DP) != before+1 {
		t.Fatalf("expiry was not counted")
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// With InvalidTCPReset, a mid-stream segment from inside is answered with
// a RST (as AWS NAT Gateway does) instead of a silent drop.
func TestInvalidInsideTCPGetsReset(t *testing.T) {
	fx := newFibFixture(t)
	s := natSettings(1024, 65535)
	s.InvalidTCPReset = true
	fx.apply(t, s)

	in := frame4(t, l4spec{proto: layers.IPProtocolTCP, src: "198.18.1.20", dst: "198.19.1.10", sport: 7000, dport: 443, tcpFlags: "A"})
	res := fx.expect(t, in, "a0", ReasonReplyTCPRST)
	if res.action != xdpTX {
		t.Fatalf("action %d, want XDP_TX", res.action)
	}
	got := decode4(t, res.out) // verifies the IP and TCP checksums
	if got.src != "198.19.1.10" || got.sport != 443 || got.dst != "198.18.1.20" || got.dport != 7000 {
		t.Fatalf("RST addressed %s:%d -> %s:%d", got.src, got.sport, got.dst, got.dport)
	}
	tcp := res.out[14+20:]
	if flags := tcp[13]; flags != 0x04 {
		t.Fatalf("TCP flags %#02x, want RST only", flags)
	}
	// RFC 9293 3.10.7.1: the RST's sequence number is the segment's ACK.
	if seq, ack := binary.BigEndian.Uint32(tcp[4:]), binary.BigEndian.Uint32(in[14+20+8:]); seq != ack {
		t.Fatalf("RST seq %d, want the segment's ack %d", seq, ack)
	}
	if tot := binary.BigEndian.Uint16(res.out[14+2:]); tot != 40 {
		t.Fatalf("RST IP length %d, want 40 (no payload)", tot)
	}
	// Never answer a RST with a RST.
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolTCP, src: "198.18.1.20", dst: "198.19.1.10", sport: 7000, dport: 443, tcpFlags: "R"}), "a0", ReasonDropCTInvalid)
	// Nor answer the outside.
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolTCP, src: "198.19.1.10", dst: "198.18.1.20", sport: 443, dport: 7000, tcpFlags: "A"}), "b0", ReasonDropCTInvalid)
}

// Address-and-port-dependent mapping: a new external port per destination,
// so one port can serve two inside endpoints talking to different servers.
func TestSNATAddressPortDependentMapping(t *testing.T) {
	fx := newFibFixture(t)
	s := natSettings(30000, 30000) // a single port
	s.SNAT.Mode = MappingAddressPortDependent
	fx.apply(t, s)
	a := decode4(t, fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: "198.19.1.10", sport: 5000, dport: 9000}), "a0", ReasonFwdRedirect).out)
	b := decode4(t, fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.21", dst: "198.19.1.11", sport: 5000, dport: 9000}), "a0", ReasonFwdRedirect).out)
	if a.sport != 30000 || b.sport != 30000 {
		t.Fatalf("ports %d and %d, want both on the single port 30000", a.sport, b.sport)
	}
	// The same destination needs another port, and there is none.
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.21", dst: "198.19.1.10", sport: 5000, dport: 9000}), "a0", ReasonDropSNATExhausted)
	// Each reply finds its own inside endpoint.
	got := decode4(t, fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.19.1.11", dst: natAddr, sport: 9000, dport: 30000}), "b0", ReasonFwdRedirect).out)
	if got.dst != "198.18.1.21" {
		t.Fatalf("reply from the second server went to %s", got.dst)
	}
}

// fragments4 splits a UDP datagram's IP payload into two fragments at an
// 8-byte boundary, as a router would.
func fragments4(t *testing.T, frame []byte, split int) (first, second []byte) {
	t.Helper()
	ip := frame[14:]
	hl := int(ip[0]&0xf) * 4
	tot := int(binary.BigEndian.Uint16(ip[2:]))
	payload := ip[hl:tot]
	mk := func(data []byte, off int, more bool) []byte {
		f := append(append([]byte(nil), frame[:14+hl]...), data...)
		h := f[14:]
		binary.BigEndian.PutUint16(h[2:], uint16(hl+len(data)))
		fo := uint16(off / 8)
		if more {
			fo |= 0x2000
		}
		binary.BigEndian.PutUint16(h[6:], fo)
		h[10], h[11] = 0, 0
		binary.BigEndian.PutUint16(h[10:], ipChecksum(h[:hl]))
		return f
	}
	return mk(payload[:split], 0, true), mk(payload[split:], split, false)
}

// Later fragments follow their first fragment's flow and translation;
// out-of-order and overlapping ones are dropped and counted.
func TestSNATFragments(t *testing.T) {
	fx := newFibFixture(t)
	fx.apply(t, natSettings(1024, 65535))
	whole := frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: "198.19.1.10", sport: 5000, dport: 9000})
	first, second := fragments4(t, whole, 16)

	out1 := fx.expect(t, first, "a0", ReasonFwdRedirect).out
	out2 := fx.expect(t, second, "a0", ReasonFwdRedirect).out
	for i, out := range [][]byte{out1, out2} {
		checkIPv4Checksum(t, out[14:34])
		if src := netip.AddrFrom4([4]byte(out[14+12 : 14+16])); src.String() != natAddr {
			t.Fatalf("fragment %d left with source %s", i+1, src)
		}
	}
	// Reassembled, the translated datagram's UDP checksum is valid.
	payload := append(append([]byte(nil), out1[34:]...), out2[34:]...)
	if sum := pseudoChecksum(out1[14+12:14+16], out1[14+16:14+20], 17, payload); sum != 0 {
		t.Fatalf("reassembled UDP checksum invalid after translation: %#04x", sum)
	}

	// The same later fragment again overlaps what was already seen.
	other := frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.21", dst: "198.19.1.10", sport: 5001, dport: 9000})
	f1, f2 := fragments4(t, other, 16)
	fx.expect(t, f2, "a0", ReasonDropFragNoFirst)
	fx.expect(t, f1, "a0", ReasonFwdRedirect)
	_, overlapping := fragments4(t, other, 8) // starts at 8, inside the first fragment's 16 bytes
	fx.expect(t, overlapping, "a0", ReasonDropFragOverlap)
	fx.expect(t, f2, "a0", ReasonFwdRedirect)
}

// A flow stamped by another CPU after this packet read the clock has a
// last-seen time in this packet's future: it is busy, not expired.
func TestConntrackLastSeenInTheFuture(t *testing.T) {
	fx := newFibFixture(t)
	fx.apply(t, natSettings(1024, 65535))
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: "198.19.1.10", sport: 4445, dport: 9000}), "a0", ReasonFwdRedirect)

	key := natwallNwTuple4{Saddr: beUint32([4]byte{198, 18, 1, 20}), Daddr: beUint32([4]byte{198, 19, 1, 10}),
		Sport: htons(4445), Dport: htons(9000), Proto: 17}
	var e natwallNwCt4Entry
	must(t, fx.objs.NwCt4.Lookup(key, &e))
	e.St.LastSeenNs += uint64(time.Hour)
	must(t, fx.objs.NwCt4.Put(key, e))

	before := fx.stat(t, natwallNwStatNW_STAT_CT_EXPIRED_DP)
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.19.1.10", dst: natAddr, sport: 9000, dport: 4445}), "b0", ReasonFwdRedirect)
	if fx.stat(t, natwallNwStatNW_STAT_CT_EXPIRED_DP) != before {
		t.Fatalf("a flow seen in the future was expired")
	}
}

// Destinations on the exclusion list are never translated.
func TestSNATExclusions(t *testing.T) {
	fx := newFibFixture(t)
	s := natSettings(1024, 65535)
	s.SNAT.Exclude = []netip.Prefix{netip.MustParsePrefix("198.19.1.11/32")}
	fx.apply(t, s)
	excluded := decode4(t, fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: "198.19.1.11", sport: 5000, dport: 9000}), "a0", ReasonFwdRedirect).out)
	if excluded.src != "198.18.1.20" {
		t.Fatalf("a flow to an excluded destination was translated to %s", excluded.src)
	}
	other := decode4(t, fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: "198.19.1.10", sport: 5000, dport: 9000}), "a0", ReasonFwdRedirect).out)
	if other.src != natAddr {
		t.Fatalf("a flow to another destination was not translated (%s)", other.src)
	}
}
