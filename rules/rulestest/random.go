// Package rulestest generates random rule sets and packets for
// differential tests of the classifier: the compiled tables in Go, and the
// dataplane's in the kernel, against the plain first-match reference.
package rulestest

import (
	"fmt"
	"math/rand/v2"
	"net/netip"

	"github.com/natwall/natwall/rules"
)

// Addresses come from a small space, so prefixes overlap and packets hit
// them: 198.18.0.0/15 and 2001:db8:0::/46.
func randomPrefix(r *rand.Rand) netip.Prefix {
	if r.IntN(2) == 0 {
		a := netip.AddrFrom4([4]byte{198, 18 + byte(r.IntN(2)), byte(r.IntN(4)), byte(r.IntN(256))})
		return netip.PrefixFrom(a, 16+r.IntN(17)).Masked()
	}
	a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, byte(r.IntN(3)), 15: byte(r.IntN(256))})
	return netip.PrefixFrom(a, 32+r.IntN(97)).Masked()
}

// RandomRules makes n rules in priority order with overlapping prefixes of
// both families, port ranges, ICMP matches, directions, and actions drawn
// from actions.
func RandomRules(r *rand.Rand, n int, actions []rules.Action) []rules.Rule {
	var out []rules.Rule
	for i := 0; i < n; i++ {
		ru := rules.Rule{ID: fmt.Sprint("r", i), Priority: i, Protocol: -1, ICMPType: -1, ICMPCode: -1}
		ru.Action = actions[r.IntN(len(actions))]
		for k := r.IntN(3); k > 0; k-- {
			ru.Src = append(ru.Src, randomPrefix(r))
		}
		for k := r.IntN(3); k > 0; k-- {
			ru.Dst = append(ru.Dst, randomPrefix(r))
		}
		switch r.IntN(5) {
		case 0, 1:
			ru.Protocol = []int{6, 17}[r.IntN(2)]
			if r.IntN(2) == 0 {
				lo := uint16(r.IntN(100))
				ru.DstPorts = []rules.PortRange{{Lo: lo, Hi: lo + uint16(r.IntN(20))}}
			}
			if r.IntN(4) == 0 {
				ru.SrcPorts = []rules.PortRange{{Lo: uint16(r.IntN(100)), Hi: 100}}
			}
		case 2:
			ru.Protocol = 1
			if r.IntN(2) == 0 {
				ru.ICMPType = 5 + r.IntN(4)
				if r.IntN(2) == 0 {
					ru.ICMPCode = r.IntN(2)
				}
			}
		}
		if r.IntN(3) == 0 {
			ru.Direction = rules.Direction(1 + r.IntN(4))
		}
		out = append(out, ru)
	}
	return out
}

// RandomPacket makes a packet from the same address space: TCP or UDP with
// small ports, ICMP informational types 5 to 9, or another protocol. Its
// Direction is left for the caller, who knows the inside networks.
func RandomPacket(r *rand.Rand) rules.Packet {
	addr := func(v4 bool) netip.Addr {
		if v4 {
			return netip.AddrFrom4([4]byte{198, 18 + byte(r.IntN(2)), byte(r.IntN(4)), byte(1 + r.IntN(254))})
		}
		return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, byte(r.IntN(3)), 15: byte(1 + r.IntN(254))})
	}
	v4 := r.IntN(2) == 0
	p := rules.Packet{Src: addr(v4), Dst: addr(v4), Direction: rules.Direction(1 + r.IntN(4))}
	switch r.IntN(3) {
	case 0:
		p.Protocol, p.HasPorts, p.SrcPort, p.DstPort = []uint8{6, 17}[r.IntN(2)], true, uint16(r.IntN(120)), uint16(r.IntN(120))
	case 1:
		p.Protocol, p.IsICMP, p.ICMPType, p.ICMPCode = 1, true, uint8(5+r.IntN(5)), uint8(r.IntN(3))
		if !v4 {
			p.Protocol = 58
		}
	default:
		p.Protocol = []uint8{47, 50, 132}[r.IntN(3)]
	}
	return p
}
