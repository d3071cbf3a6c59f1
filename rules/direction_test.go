package rules

import (
	"net/netip"
	"strings"
	"testing"
)

var (
	dirInside = []netip.Prefix{netip.MustParsePrefix("198.18.0.0/16"), netip.MustParsePrefix("2001:db8:1::/48")}
	dirLocal  = []netip.Prefix{netip.MustParsePrefix("198.18.1.1/24"), netip.MustParsePrefix("198.19.1.1/24"), netip.MustParsePrefix("2001:db8:2::1/64"), netip.MustParsePrefix("198.19.5.5/32")}
)

func TestDirectionOf(t *testing.T) {
	for _, tc := range []struct {
		src, dst  string
		want      Direction
		stateless Direction
	}{
		{"198.18.1.20", "198.19.7.7", Outbound, Outbound},
		{"198.19.7.7", "198.18.1.20", Inbound, Inbound}, // from the internet to an inside host
		{"198.18.1.20", "198.18.2.30", EastWest, EastWest},
		{"198.19.7.7", "198.19.8.8", Transit, Transit},
		{"2001:db8:2::7", "2001:db8:1::20", Inbound, Inbound},
		{"2001:db8:1::20", "2001:db8:1:5::1", EastWest, EastWest},
		// The appliance's own: its addresses, its subnets' broadcasts,
		// the limited broadcast, multicast, loopback. The stateless
		// stage sees the zone of the addresses alone.
		{"198.19.7.7", "198.19.1.1", Local, Transit},
		{"198.18.1.20", "198.18.1.1", Local, EastWest},
		{"198.19.7.7", "198.18.1.255", Local, Inbound},
		{"198.18.1.20", "198.19.1.255", Local, Outbound},
		{"198.18.1.20", "198.19.5.255", Outbound, Outbound}, // a /32 has no broadcast
		{"198.18.1.20", "198.19.5.5", Local, Outbound},
		{"198.18.1.20", "255.255.255.255", Local, Outbound},
		{"198.18.1.20", "224.0.0.5", Local, Outbound},
		{"198.18.1.20", "127.0.0.1", Local, Outbound},
		{"2001:db8:1::20", "2001:db8:2::1", Local, Outbound},
		{"2001:db8:1::20", "ff02::1", Local, Outbound},
		{"fe80::1", "fe80::2", Local, Transit},
		{"2001:db8:1::20", "::1", Local, Outbound},
		// A link-scoped source to a routed address keeps its zone: the
		// dataplane drops it (ExplainPacket), whatever the rules say.
		{"fe80::1", "2001:db8:1::20", Inbound, Inbound},
		// An IPv4-mapped IPv6 address is IPv6: not the IPv4 one's zone.
		{"2001:db8:1::20", "::ffff:198.18.1.20", Outbound, Outbound},
	} {
		src, dst := netip.MustParseAddr(tc.src), netip.MustParseAddr(tc.dst)
		if got := DirectionOf(src, dst, dirInside, dirLocal); got != tc.want {
			t.Errorf("DirectionOf(%s, %s) = %s, want %s", src, dst, got, tc.want)
		}
		if got := AddressDirection(src, dst, dirInside); got != tc.stateless {
			t.Errorf("AddressDirection(%s, %s) = %s, want %s", src, dst, got, tc.stateless)
		}
	}
	// No inside networks: every address is outside.
	if got := DirectionOf(netip.MustParseAddr("198.18.1.20"), netip.MustParseAddr("198.19.7.7"), nil, nil); got != Transit {
		t.Errorf("without inside networks: %s, want transit", got)
	}
}

func TestExplainPacketPaths(t *testing.T) {
	rs, err := Parse([]Source{{Name: "t.yaml", Data: []byte(`
stateless:
  - {id: no-telnet, priority: 1, action: drop, protocol: tcp, dst_ports: [23]}
stateful:
  default_action: deny
  rules:
    - {id: web-in, priority: 10, action: allow, direction: inbound, protocol: tcp, dst_ports: [443]}
    - {id: web-out, priority: 11, action: reject, direction: outbound, protocol: tcp, dst_ports: [443]}
    - {id: ssh-local, priority: 20, action: allow, direction: local, protocol: tcp, dst_ports: [22]}
    - {id: ping-local, priority: 21, action: allow, direction: local, protocol: icmpv6}
`)}}, Options{Inside: dirInside})
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := Compile(rs, func(string) uint32 { return 10 })
	if err != nil {
		t.Fatal(err)
	}
	ep := Endpoints{Inside: dirInside, Local: dirLocal}
	tcp := func(src, dst string, dport uint16) Packet {
		return Packet{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Protocol: 6, HasPorts: true, SrcPort: 40000, DstPort: dport}
	}
	icmp6 := func(src, dst string, typ uint8) Packet {
		return Packet{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Protocol: 58, IsICMP: true, ICMPType: typ}
	}
	for _, tc := range []struct {
		name       string
		p          Packet
		given      Direction
		stage      string
		rule       string
		action     string
		reason     string
		whyContain string
	}{
		{"inbound from the internet is derived", tcp("198.19.7.7", "198.18.1.20", 443), AnyDirection, "stateful", "web-in", "allow", "", "198.19.7.7 is outside, 198.18.1.20 is inside"},
		{"outbound", tcp("198.18.1.20", "198.19.7.7", 443), AnyDirection, "stateful", "web-out", "reject", "", "derived"},
		{"a given direction that contradicts the endpoints", tcp("198.19.7.7", "198.18.1.20", 443), Outbound, "stateful", "web-out", "reject", "", "outbound given; the endpoints say inbound"},
		{"a given direction the endpoints agree with", tcp("198.19.7.7", "198.18.1.20", 443), Inbound, "stateful", "web-in", "allow", "", "inbound given, as the endpoints say"},
		{"stateless drop", tcp("198.19.7.7", "198.18.1.20", 23), AnyDirection, "stateless", "no-telnet", "drop", "", ""},
		{"ssh to the appliance", tcp("198.19.7.7", "198.19.1.1", 22), AnyDirection, "stateful", "ssh-local", "allow", "", "local for the stateful stage"},
		{"udp to the appliance goes to its kernel", Packet{Src: netip.MustParseAddr("198.19.7.7"), Dst: netip.MustParseAddr("198.19.1.1"), Protocol: 17, HasPorts: true, DstPort: 53}, AnyDirection, "dataplane", "", "pass", "pass_local", ""},
		{"neighbour solicitation", icmp6("fe80::1", "ff02::1:ff00:1", 135), AnyDirection, "dataplane", "", "pass", "pass_link_local", ""},
		{"neighbour solicitation to a global address", icmp6("fe80::1", "2001:db8:2::1", 135), AnyDirection, "dataplane", "", "pass", "pass_link_local", ""},
		{"echo to all nodes meets the local rules", icmp6("2001:db8:1::20", "ff02::1", 128), AnyDirection, "stateful", "ping-local", "allow", "", ""},
		{"udp to a multicast group", Packet{Src: netip.MustParseAddr("2001:db8:1::20"), Dst: netip.MustParseAddr("ff02::fb"), Protocol: 17, HasPorts: true, DstPort: 5353}, AnyDirection, "dataplane", "", "pass", "pass_link_local", ""},
		{"link-local source to a routed address", tcp("fe80::1", "2001:db8:1::20", 443), AnyDirection, "dataplane", "", "drop", "drop_link_scoped_src", ""},
		{"link-local source to the appliance", tcp("fe80::1", "2001:db8:2::1", 22), AnyDirection, "stateful", "ssh-local", "allow", "", ""},
		{"link-local source to the appliance, another port", tcp("fe80::1", "2001:db8:2::1", 80), AnyDirection, "stateful", "(default)", "deny", "", ""},
		{"an ICMP error of no flow", icmp6("2001:db8:2::7", "2001:db8:1::20", 1), AnyDirection, "dataplane", "", "drop", "drop_icmp_error_no_flow", ""},
		{"an echo reply opens no flow", icmp6("2001:db8:2::7", "2001:db8:1::20", 129), AnyDirection, "dataplane", "", "drop", "drop_ct_invalid", ""},
	} {
		p := tc.p
		p.Direction = tc.given
		ex := ExplainPacket(rs, tbl, p, nil, ep)
		last := ex.Decisions[len(ex.Decisions)-1]
		rule := last.Rule
		if rule == "" && last.Stage != "dataplane" {
			rule = "(default)"
		}
		if last.Stage != tc.stage || rule != tc.rule || last.Action != tc.action || last.Reason != tc.reason {
			t.Errorf("%s: last decision %+v, want stage %s rule %q action %s reason %q", tc.name, last, tc.stage, tc.rule, tc.action, tc.reason)
		}
		if !strings.Contains(ex.DirectionWhy, tc.whyContain) {
			t.Errorf("%s: direction %q lacks %q", tc.name, ex.DirectionWhy, tc.whyContain)
		}
		if ex.Verdict == "" {
			t.Errorf("%s: no verdict", tc.name)
		}
	}
	// On an outside interface an inside source is spoofed; an outside
	// one is judged as anywhere else.
	out := Endpoints{Inside: dirInside, Local: dirLocal, ArrivedOutside: true}
	if last := ExplainPacket(rs, tbl, tcp("198.18.1.20", "198.18.2.30", 443), nil, out).Decisions; last[len(last)-1].Reason != "drop_spoofed_inside" {
		t.Errorf("inside source on an outside NIC: %+v", last)
	}
	if last := ExplainPacket(rs, tbl, tcp("198.19.7.7", "198.18.1.20", 443), nil, out).Decisions; last[len(last)-1].Rule != "web-in" {
		t.Errorf("outside source on an outside NIC: %+v", last)
	}
}
