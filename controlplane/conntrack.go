package controlplane

import (
	"github.com/natwall/natwall/dataplane"
)

// NATSysctls are the settings SNAT needs beyond forwarding: a translated
// packet that natwall hands to the kernel to forward (neighbour not yet
// resolved, fragmentation) carries the appliance's own address as its
// source, which the kernel otherwise drops as a martian.
//
// The kernel's ephemeral ports, which the appliance's own connections use,
// move to the top of the port space: excludeLocalPorts takes them out of
// the SNAT range, and there they cost it the fewest ports and leave inside
// clients' usual source ports (Linux 32768-60999) free to be preserved.
func NATSysctls(interfaces []string) []Sysctl {
	s := []Sysctl{{Path: localPortRange, Value: "61000\t65535"}}
	for _, dev := range interfaces {
		s = append(s, Sysctl{Path: "net/ipv4/conf/" + dev + "/accept_local", Value: "1"})
	}
	return s
}

// flowSource is what the flow stream and the collector need of the
// dataplane.
type flowSource interface {
	State() *dataplane.State
	Events() (*dataplane.EventReader, error)
}
