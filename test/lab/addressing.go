package lab

import (
	"fmt"
	"net/netip"
	"strconv"
)

// The lab's fixed addressing. Inside is where clients live, outside is the
// "internet" where servers live; both come from the benchmarking ranges
// 198.18.0.0/15 and the documentation prefix 2001:db8::/32, so a lab packet can
// never be mistaken for real traffic.
var (
	// InsideNetworkV4 and InsideNetworkV6 are the inside networks to configure
	// in natwall ($HOME_NET). The client subnets below lie within them, the
	// outside subnets do not.
	InsideNetworkV4 = netip.MustParsePrefix("198.18.0.0/16")
	InsideNetworkV6 = netip.MustParsePrefix("2001:db8:1::/48")

	// InsideSubnetV4 and InsideSubnetV6 hold the clients and the appliance's
	// inside addresses.
	InsideSubnetV4 = netip.MustParsePrefix("198.18.1.0/24")
	InsideSubnetV6 = netip.MustParsePrefix("2001:db8:1::/64")

	// OutsideSubnetV4 and OutsideSubnetV6 hold the servers and the appliance's
	// outside addresses.
	OutsideSubnetV4 = netip.MustParsePrefix("198.19.1.0/24")
	OutsideSubnetV6 = netip.MustParsePrefix("2001:db8:2::/64")

	// ApplianceInsideV4 and ApplianceInsideV6 are the clients' default gateway.
	ApplianceInsideV4 = netip.MustParseAddr("198.18.1.1")
	ApplianceInsideV6 = netip.MustParseAddr("2001:db8:1::1")

	// ApplianceOutsideV4 and ApplianceOutsideV6 are the servers' default
	// gateway and the natural SNAT addresses.
	ApplianceOutsideV4 = netip.MustParseAddr("198.19.1.1")
	ApplianceOutsideV6 = netip.MustParseAddr("2001:db8:2::1")
)

// Interface names the lab gives the NICs it creates.
const (
	// InsideNIC and OutsideNIC are the appliance's NICs in the TwoNIC shape.
	InsideNIC  = "in0"
	OutsideNIC = "out0"
	// SingleNIC is the appliance's only NIC in the OneNIC shape.
	SingleNIC = "eth0"
	// HostNIC is every client's and server's NIC.
	HostNIC = "eth0"
	// BridgeName is the bridge in each fabric namespace.
	BridgeName = "br0"
)

// firstHostNumber is the host number of client 0 and server 0; the numbers
// below it are left for the appliance and for addresses tests add themselves.
const firstHostNumber = 10

// MaxHosts is the most clients, and the most servers, a lab can have: host
// numbers run from 10 to 254.
const MaxHosts = 255 - firstHostNumber

// ClientAddrs returns the addresses of client i (counting from 0):
// 198.18.1.(10+i) and 2001:db8:1::N, where N spells the same decimal digits as
// the IPv4 address's last octet (client 0 is 198.18.1.10 and 2001:db8:1::10,
// client 15 is 198.18.1.25 and 2001:db8:1::25), so the two read alike in
// captures.
func ClientAddrs(i int) (v4, v6 netip.Addr, err error) {
	return hostAddrs(InsideSubnetV4, InsideSubnetV6, i)
}

// ServerAddrs returns the addresses of server i (counting from 0):
// 198.19.1.(10+i) and 2001:db8:2::N, numbered as in ClientAddrs.
func ServerAddrs(i int) (v4, v6 netip.Addr, err error) {
	return hostAddrs(OutsideSubnetV4, OutsideSubnetV6, i)
}

func hostAddrs(subnet4, subnet6 netip.Prefix, i int) (netip.Addr, netip.Addr, error) {
	if i < 0 || i >= MaxHosts {
		return netip.Addr{}, netip.Addr{}, fmt.Errorf("host index %d outside [0, %d)", i, MaxHosts)
	}
	host := firstHostNumber + i

	a4 := subnet4.Addr().As4()
	a4[3] = byte(host)

	// Reading the decimal digits as hex puts the same digits in the last
	// group of the IPv6 address as in the last octet of the IPv4 address.
	group, err := strconv.ParseUint(strconv.Itoa(host), 16, 16)
	if err != nil {
		return netip.Addr{}, netip.Addr{}, fmt.Errorf("host number %d as an IPv6 group: %w", host, err)
	}
	a16 := subnet6.Addr().As16()
	a16[14] = byte(group >> 8)
	a16[15] = byte(group)
	return netip.AddrFrom4(a4), netip.AddrFrom16(a16), nil
}
