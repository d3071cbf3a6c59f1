package dataplane

import (
	"bytes"
	"fmt"
	"net"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/natwall/natwall/rules"
)

// TestVLANPriorityTagsGetThePolicy: a frame whose tags all carry VLAN ID 0
// is untagged traffic with a priority. It must meet the policy like an
// untagged frame (the kernel would strip the tags and forward it
// unfiltered), and when forwarded leave untagged and otherwise exactly as
// the untagged frame would. A frame of a real VLAN is dropped, counted, or
// with VLANPass handed to the kernel.
func TestVLANPriorityTagsGetThePolicy(t *testing.T) {
	fx := newFibFixture(t)
	tests := []struct {
		name   string
		pkt    packet
		want   Reason
		action uint32
	}{
		{"priority tag, outbound udp forwarded",
			packet{src: "198.18.1.10", dst: "198.19.1.10", vlans: 1, prioTags: true}, ReasonFwdRedirect, xdpRedirect},
		{"two priority tags, outbound tcp forwarded",
			packet{src: "198.18.1.10", dst: "198.19.1.11", proto: layers.IPProtocolTCP, vlans: 2, prioTags: true}, ReasonFwdRedirect, xdpRedirect},
		{"priority tag, v6 outbound forwarded",
			packet{v6: true, src: "2001:db8:1::10", dst: "2001:db8:2::10", vlans: 1, prioTags: true}, ReasonFwdRedirect, xdpRedirect},
		{"priority tag, inbound tcp SYN meets the policy",
			packet{src: "198.19.1.10", dst: "198.18.1.10", proto: layers.IPProtocolTCP, vlans: 1, prioTags: true}, ReasonDropPolicy, xdpDrop},
		{"priority tag, v6 inbound udp meets the policy",
			packet{v6: true, src: "2001:db8:2::10", dst: "2001:db8:1::10", vlans: 1, prioTags: true}, ReasonDropPolicy, xdpDrop},
		{"vlan 100 dropped", packet{src: "198.19.1.10", dst: "198.18.1.10", vlans: 1}, ReasonDropVLAN, xdpDrop},
		{"qinq dropped", packet{src: "198.18.1.10", dst: "198.19.1.10", vlans: 2}, ReasonDropVLAN, xdpDrop},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frame := tt.pkt.build(t)
			res := fx.run(t, frame, "a0")
			if res.reason != tt.want || res.action != tt.action {
				t.Fatalf("got %s/%d, want %s/%d", res.reason.Name(), res.action, tt.want.Name(), tt.action)
			}
			if res.action != xdpRedirect {
				return
			}
			untagged := tt.pkt
			untagged.vlans = 0
			plain := untagged.build(t)
			out := res.out[:len(plain)]
			if !bytes.Equal(out[12:14], plain[12:14]) {
				t.Fatalf("forwarded frame has EtherType %x, want the untagged %x", out[12:14], plain[12:14])
			}
			checkForwarded(t, fx, plain, out, "a0")
		})
	}

	s := fx.settings
	s.VLANAction = VLANPass
	fx.apply(t, s)
	frame := packet{src: "198.19.1.10", dst: "198.18.1.10", vlans: 1}.build(t)
	if res := fx.run(t, frame, "a0"); res.reason != ReasonPassVLAN || res.action != xdpPass {
		t.Fatalf("vlan_action pass: got %s/%d, want pass_vlan/XDP_PASS", res.reason.Name(), res.action)
	}
	// Priority tags still meet the policy.
	frame = packet{src: "198.19.1.10", dst: "198.18.1.10", proto: layers.IPProtocolTCP, vlans: 1, prioTags: true}.build(t)
	if res := fx.run(t, frame, "a0"); res.reason != ReasonDropPolicy {
		t.Fatalf("vlan_action pass, priority tag: got %s, want drop_policy", res.reason.Name())
	}
}

// TestIPv4SourceRouteDropped: a loose or strict source route lets the sender
// choose the path past natwall; Linux with accept_source_route=0 drops it,
// and so does natwall, counted apart. An option whose length is below 2 or
// runs past the header is malformed. Other options still pass.
func TestIPv4SourceRouteDropped(t *testing.T) {
	fx := newFibFixture(t)
	route := []byte{4, 198, 19, 1, 10} // pointer, one hop
	opt := func(typ byte, data []byte) []layers.IPv4Option {
		return []layers.IPv4Option{{OptionType: typ, OptionLength: uint8(len(data) + 2), OptionData: data}, {OptionType: 0}}
	}
	// withOptLen builds p and rewrites its first option's length byte.
	withOptLen := func(p packet, n byte) []byte {
		f := p.build(t)
		f[14+21] = n
		return f
	}
	out := packet{src: "198.18.1.10", dst: "198.19.1.10"}
	in := packet{src: "198.19.1.10", dst: "198.18.1.10", proto: layers.IPProtocolTCP}
	with := func(p packet, o []layers.IPv4Option) packet { p.ipOptions = o; return p }
	tests := []struct {
		name   string
		frame  []byte
		want   Reason
		action uint32
	}{
		{"outbound LSRR", with(out, opt(0x83, route)).build(t), ReasonDropIPv4SrcRoute, xdpDrop},
		{"outbound SSRR", with(out, opt(0x89, route)).build(t), ReasonDropIPv4SrcRoute, xdpDrop},
		{"inbound LSRR after NOPs", with(in, append([]layers.IPv4Option{{OptionType: 1}, {OptionType: 1}}, opt(0x83, route)...)).build(t), ReasonDropIPv4SrcRoute, xdpDrop},
		{"inbound SSRR after record route", with(in, append(opt(0x07, make([]byte, 5))[:1], opt(0x89, route)...)).build(t), ReasonDropIPv4SrcRoute, xdpDrop},
		{"record route forwarded", with(out, opt(0x07, []byte{4, 0, 0, 0, 0})).build(t), ReasonFwdRedirect, xdpRedirect},
		{"option length past the header", withOptLen(with(out, opt(0x07, []byte{4, 0, 0, 0, 0})), 0x30), ReasonMalformedIPv4, xdpDrop},
		{"option length 1", withOptLen(with(out, opt(0x07, []byte{4, 0, 0, 0, 0})), 1), ReasonMalformedIPv4, xdpDrop},
		{"option length 0 hides an LSRR", withOptLen(with(out, opt(0x83, route)), 0), ReasonMalformedIPv4, xdpDrop},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := fx.run(t, tt.frame, "a0")
			if res.reason != tt.want || res.action != tt.action {
				t.Fatalf("got %s/%d, want %s/%d", res.reason.Name(), res.action, tt.want.Name(), tt.action)
			}
			if res.action == xdpRedirect {
				checkForwarded(t, fx, tt.frame, res.out, "a0")
			}
		})
	}
	// An option whose type byte is the header's last: no room for its length.
	f := with(out, []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 1}}).build(t)
	if f[14]&0xf != 6 {
		t.Fatalf("test frame: IHL %d, want 6", f[14]&0xf)
	}
	f[14+23] = 7
	if res := fx.run(t, f, "a0"); res.reason != ReasonMalformedIPv4 {
		t.Fatalf("option without a length byte: got %s, want malformed_ipv4", res.reason.Name())
	}
}

// TestICMPErrorMustGoToTheQuotedSource: an error quoting a tracked flow is
// admitted only when it is addressed to the source of the quoted packet,
// so an outsider cannot reach another inside host by quoting a flow.
func TestICMPErrorMustGoToTheQuotedSource(t *testing.T) {
	fx := newFibFixture(t)
	sent := fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: "198.19.1.10", sport: 6000, dport: 9000}), "a0", ReasonFwdRedirect)
	fx.expect(t, icmpError4(t, "198.19.1.10", "198.18.1.21", sent.out), "b0", ReasonDropICMPErrorMismatch)
	fx.expect(t, icmpError4(t, "198.19.1.11", "198.18.1.20", sent.out), "b0", ReasonFwdRedirect)

	// With SNAT the quoted source is the external address.
	fx.apply(t, natSettings(1024, 65535))
	sent = fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: "198.19.1.10", sport: 6001, dport: 9000}), "a0", ReasonFwdRedirect)
	fx.expect(t, icmpError4(t, "198.19.1.10", "198.18.1.21", sent.out), "b0", ReasonDropICMPErrorMismatch)
	fx.expect(t, icmpError4(t, "198.19.1.10", natAddr, sent.out), "b0", ReasonFwdRedirect)

	// IPv6.
	out := packet{v6: true, src: "2001:db8:1::20", dst: "2001:db8:2::10"}.build(t)
	fx.expect(t, out, "a0", ReasonFwdRedirect)
	fx.expect(t, icmpError6(t, "2001:db8:2::10", "2001:db8:1::21", out), "b0", ReasonDropICMPErrorMismatch)
	fx.expect(t, icmpError6(t, "2001:db8:2::10", "2001:db8:1::20", out), "b0", ReasonFwdRedirect)
}

// icmpError6 wraps the IPv6 datagram in frame into a destination
// unreachable from src to dst.
func icmpError6(t testing.TB, src, dst string, about []byte) []byte {
	t.Helper()
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolICMPv6, SrcIP: net.ParseIP(src), DstIP: net.ParseIP(dst)}
	eth := &layers.Ethernet{SrcMAC: serverMAC, DstMAC: net.HardwareAddr{2, 0xaa, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv6}
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeDestinationUnreachable, 4)}
	icmp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	must(t, gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, icmp, gopacket.Payload(append(make([]byte, 4), about[14:]...))))
	return append([]byte(nil), buf.Bytes()...)
}

// TestICMPStatelessVerdictNotKept: after an outbound ping and its reply, an
// inbound echo request with the same identifier matches the flow's reply
// tuple. The stateless pass the reply got must not cover it: a stateless
// rule dropping inbound echo requests still applies.
func TestICMPStatelessVerdictNotKept(t *testing.T) {
	fx := newFibFixture(t)
	dropEcho := anyRule(40, rules.Drop)
	dropEcho.proto, dropEcho.icmpType, dropEcho.zone = 1, 8, int(natwallNwZoneNW_ZONE_INBOUND)
	must(t, loadRules(&fx.objs, naiveStage([]testRule{dropEcho}, rules.Pass, 1), nil))
	ping := frame4(t, l4spec{proto: layers.IPProtocolICMPv4, src: "198.18.1.20", dst: "198.19.1.10", icmpType: 8, icmpID: 77})
	pong := frame4(t, l4spec{proto: layers.IPProtocolICMPv4, src: "198.19.1.10", dst: "198.18.1.20", icmpType: 0, icmpID: 77})
	probe := frame4(t, l4spec{proto: layers.IPProtocolICMPv4, src: "198.19.1.10", dst: "198.18.1.20", icmpType: 8, icmpID: 77})
	fx.expect(t, ping, "a0", ReasonFwdRedirect)
	fx.expect(t, pong, "b0", ReasonFwdRedirect)
	fx.expect(t, pong, "b0", ReasonFwdRedirect)
	fx.expect(t, probe, "b0", ReasonDropACLStateless)
}

// TestICMPOnlyRequestsOpenFlows: from inside, only query requests open a
// flow; a source quench or redirect is an error about another packet and
// is forwarded only with the flow it quotes (here none).
func TestICMPOnlyRequestsOpenFlows(t *testing.T) {
	fx := newFibFixture(t)
	// Each to its own destination, so that each message meets no flow
	// (query kinds are keyed apart: TestICMPQueryFlowsKeyedByKind).
	dsts := map[uint16]string{8: "198.19.1.10", 13: "198.19.1.11"}
	icmp := func(typ uint16) []byte {
		dst, ok := dsts[typ]
		if !ok {
			dst = fmt.Sprintf("198.19.1.%d", 100+typ)
		}
		return frame4(t, l4spec{proto: layers.IPProtocolICMPv4, src: "198.18.1.20", dst: dst, icmpType: typ, icmpID: 9})
	}
	for _, tc := range []struct {
		typ  uint16
		want Reason
	}{
		{8, ReasonFwdRedirect},   // echo request
		{13, ReasonFwdRedirect},  // timestamp request
		{0, ReasonDropCTInvalid}, // echo reply: answers nothing
		{9, ReasonDropCTInvalid}, // router advertisement
		{4, ReasonMalformedL4},   // source quench without a quoted header
		{5, ReasonMalformedL4},   // redirect without a quoted header
	} {
		if res := fx.run(t, icmp(tc.typ), "a0"); res.reason != tc.want {
			t.Errorf("ICMP type %d from inside: got %s, want %s", tc.typ, res.reason.Name(), tc.want.Name())
		}
	}
	stray := frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.19.1.10", dst: "198.18.1.20", sport: 1, dport: 2})
	quench := icmpError4(t, "198.18.1.20", "198.19.1.10", stray)
	quench[14+20] = 4 // source quench (checksum is not checked)
	fx.expect(t, quench, "a0", ReasonDropICMPErrorNoFlow)
}
