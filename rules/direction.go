package rules

import "net/netip"

// Endpoints is what the dataplane knows of a packet's addresses besides
// the addresses themselves: the inside networks, and the appliance's own
// addresses with their prefix lengths (an address alone is a /32 or
// /128). It is all DirectionOf needs to place a flow's first packet in a
// zone as bpf/xdp_natwall.c does.
type Endpoints struct {
	Inside []netip.Prefix
	Local  []netip.Prefix
	// ArrivedOutside: the packet arrives on a NIC named in
	// outside_interfaces, where an inside source is spoofed.
	ArrivedOutside bool
	// SNAT are the SNAT addresses, which forwards with external: snat
	// listen on.
	SNAT []netip.Addr
}

// inside reports whether a is in an inside network. An IPv4-mapped IPv6
// address is IPv6, as the dataplane's lookups take it.
func (e Endpoints) inside(a netip.Addr) bool {
	for _, p := range e.Inside {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

var (
	ipv4Multicast = netip.MustParsePrefix("224.0.0.0/4")
	ipv4Loopback  = netip.MustParsePrefix("127.0.0.0/8")
	ipv4Broadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})
	ipv6Multicast = netip.MustParsePrefix("ff00::/8")
	ipv6LinkLocal = netip.MustParsePrefix("fe80::/10")
)

// LinkScoped reports whether a is an IPv6 link-local or multicast
// address: the dataplane never routes a packet from or to one.
func LinkScoped(a netip.Addr) bool {
	return a.Is6() && !a.Is4In6() && (ipv6Multicast.Contains(a) || ipv6LinkLocal.Contains(a))
}

// forAppliance reports whether a packet to dst is the appliance's own, as
// the route lookup answers "not forwarded": one of its addresses, the
// broadcast address of one of its IPv4 subnets, the limited broadcast,
// IPv4 multicast, loopback. IPv6 link-scoped destinations are the
// appliance's too, but the dataplane hands them to the kernel on a path of
// their own (ExplainPacket).
func (e Endpoints) forAppliance(dst netip.Addr) bool {
	if dst == ipv4Broadcast || ipv4Multicast.Contains(dst) || ipv4Loopback.Contains(dst) || dst == netip.IPv6Loopback() {
		return true
	}
	for _, p := range e.Local {
		if p.Addr() == dst {
			return true
		}
		if q := p.Masked(); q.Addr().Is4() && q.Bits() <= 30 && lastAddr(q) == dst {
			return true
		}
	}
	return false
}

// lastAddr is an IPv4 prefix's last address, its directed broadcast.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Addr().As4()
	for i := p.Bits(); i < 32; i++ {
		a[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom4(a)
}

// AddressDirection is the zone the inside networks alone give a packet
// from src to dst: the zone the stateless stage classifies every packet
// in. It is never Local.
func AddressDirection(src, dst netip.Addr, inside []netip.Prefix) Direction {
	e := Endpoints{Inside: inside}
	switch s, d := e.inside(src), e.inside(dst); {
	case s && d:
		return EastWest
	case s:
		return Outbound
	case d:
		return Inbound
	}
	return Transit
}

// DirectionOf is the zone the dataplane's stateful stage classifies a
// flow's first packet from src to dst in: Local when the destination is
// the appliance's (one of local, a broadcast or multicast address, an IPv6
// link-scoped one), else AddressDirection. A flow that hairpins through
// one of the appliance's SNAT mappings is classified by the inside host
// that owns the mapping, which only the live flow table knows: DirectionOf
// says Local for it.
func DirectionOf(src, dst netip.Addr, inside, local []netip.Prefix) Direction {
	e := Endpoints{Inside: inside, Local: local}
	if e.forAppliance(dst) || LinkScoped(dst) {
		return Local
	}
	return AddressDirection(src, dst, inside)
}
