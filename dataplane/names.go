package dataplane

import (
	"strconv"

	"github.com/natwall/natwall/rules"
)

// The name tables of the dataplane's enums: the one place zones, TCP
// states and protocols get the names that rules, the CLI, metrics and flow
// logs print. names_test.go fails when the C enums grow a value these do
// not name, or when the rules package numbers zones differently.

type zoneInfo struct {
	name      string
	direction rules.Direction
}

var zoneInfos = map[Zone]zoneInfo{
	natwallNwZoneNW_ZONE_OUTBOUND:  {"outbound", rules.Outbound},
	natwallNwZoneNW_ZONE_INBOUND:   {"inbound", rules.Inbound},
	natwallNwZoneNW_ZONE_EAST_WEST: {"east-west", rules.EastWest},
	natwallNwZoneNW_ZONE_TRANSIT:   {"transit", rules.Transit},
	natwallNwZoneNW_ZONE_LOCAL:     {"local", rules.Local},
}

// ZoneName is the zone's name as rules, CLI and logs spell it.
func ZoneName(z Zone) string {
	if info, ok := zoneInfos[z]; ok {
		return info.name
	}
	return "zone_" + strconv.FormatUint(uint64(z), 10)
}

// ZoneDirection is the rules' direction a flow of zone z matches;
// rules.AnyDirection for a zone the table does not know.
func ZoneDirection(z Zone) rules.Direction {
	return zoneInfos[z].direction
}

var tcpStateNames = map[TCPState]string{
	natwallNwTcpStateNW_TCP_NONE:        "",
	natwallNwTcpStateNW_TCP_SYN_SENT:    "syn_sent",
	natwallNwTcpStateNW_TCP_SYN_RECV:    "syn_recv",
	natwallNwTcpStateNW_TCP_ESTABLISHED: "established",
	natwallNwTcpStateNW_TCP_FIN_WAIT:    "fin_wait",
	natwallNwTcpStateNW_TCP_TIME_WAIT:   "time_wait",
	natwallNwTcpStateNW_TCP_CLOSE:       "close",
}

// TCPStateName is the state's lowercase name, as CLI and logs print it;
// empty for flows that are not TCP.
func TCPStateName(s TCPState) string { return tcpStateNames[s] }

type protoInfo struct {
	name string // rules, CLI and metric labels
	eve  string // EVE JSON's proto field, as Suricata spells it
}

// protoInfos are the IP protocols natwall tracks by name; others are
// printed as numbers.
var protoInfos = [256]protoInfo{
	1:  {"icmp", "ICMP"},
	6:  {"tcp", "TCP"},
	17: {"udp", "UDP"},
	58: {"icmpv6", "IPv6-ICMP"},
}

// ProtoName is an IP protocol's lowercase name, or its number.
func ProtoName(p uint8) string {
	if n := protoInfos[p].name; n != "" {
		return n
	}
	return strconv.Itoa(int(p))
}

// ProtoEVEName is an IP protocol as EVE JSON's proto field spells it, or
// its number.
func ProtoEVEName(p uint8) string {
	if n := protoInfos[p].eve; n != "" {
		return n
	}
	return strconv.Itoa(int(p))
}

// ProtoNumber is the protocol named name by ProtoName.
func ProtoNumber(name string) (uint8, bool) {
	for p, info := range protoInfos {
		if info.name != "" && info.name == name {
			return uint8(p), true
		}
	}
	return 0, false
}
