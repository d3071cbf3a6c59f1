package inspect

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// ErrChecksum is returned for a packet whose IPv4 header or TCP checksum
// is wrong. Its bytes are never read: the server drops such a segment, and
// the client resends it, perhaps with other bytes, after the verdict.
var ErrChecksum = errors.New("bad checksum")

// Key is a flow's original tuple, client to server, before NAT: the key
// the dataplane holds the flow's packets under. The protocol is TCP.
type Key struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
}

// Parsed is one IP packet decoded in place: Payload and the fragment
// fields point into the caller's bytes.
type Parsed struct {
	Src, Dst netip.Addr
	V6       bool
	Proto    uint8
	// Fragment fields: a packet is a fragment when MoreFrags or FragOff
	// is set. FragOff is in bytes, L4 holds the fragment's bytes.
	FragID    uint32
	FragOff   int
	MoreFrags bool
	// L4 is everything after the IP headers (of this fragment).
	L4 []byte
	// TCP, once ParseTCP has run on an unfragmented L4.
	SrcPort, DstPort uint16
	Seq              uint32
	Flags            uint8
	Payload          []byte
}

// IsFragment reports whether p is part of a fragmented datagram.
func (p *Parsed) IsFragment() bool { return p.MoreFrags || p.FragOff != 0 }

const (
	protoTCP      = 6
	tcpFlagSYN    = 0x02
	ipv6HopByHop  = 0
	ipv6Routing   = 43
	ipv6Fragment  = 44
	ipv6DestOpts  = 60
	ipv6NoNext    = 59
	maxV6Headers  = 8
	ipv4MinHeader = 20
)

// ParseIP decodes an IPv4 or IPv6 header (and IPv6 extension headers)
// into p without allocating. It reports false for anything it cannot
// read safely; such a packet is never fed to a session.
func ParseIP(b []byte, p *Parsed) bool {
	*p = Parsed{}
	if len(b) < 1 {
		return false
	}
	switch b[0] >> 4 {
	case 4:
		if len(b) < ipv4MinHeader {
			return false
		}
		ihl := int(b[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(b[2:4]))
		if ihl < ipv4MinHeader || total < ihl || total > len(b) {
			return false
		}
		frag := binary.BigEndian.Uint16(b[6:8])
		p.FragID = uint32(binary.BigEndian.Uint16(b[4:6]))
		p.MoreFrags = frag&0x2000 != 0
		p.FragOff = int(frag&0x1fff) * 8
		p.Proto = b[9]
		p.Src = netip.AddrFrom4([4]byte(b[12:16]))
		p.Dst = netip.AddrFrom4([4]byte(b[16:20]))
		p.L4 = b[ihl:total]
		return true
	case 6:
		if len(b) < 40 {
			return false
		}
		plen := int(binary.BigEndian.Uint16(b[4:6]))
		if 40+plen > len(b) {
			return false
		}
		p.V6 = true
		p.Src = netip.AddrFrom16([16]byte(b[8:24]))
		p.Dst = netip.AddrFrom16([16]byte(b[24:40]))
		next := b[6]
		rest := b[40 : 40+plen]
		for range maxV6Headers {
			switch next {
			case ipv6HopByHop, ipv6Routing, ipv6DestOpts:
				if len(rest) < 8 {
					return false
				}
				n := (int(rest[1]) + 1) * 8
				if n > len(rest) {
					return false
				}
				next, rest = rest[0], rest[n:]
			case ipv6Fragment:
				if len(rest) < 8 {
					return false
				}
				off := binary.BigEndian.Uint16(rest[2:4])
				p.FragOff = int(off>>3) * 8
				p.MoreFrags = off&1 != 0
				p.FragID = binary.BigEndian.Uint32(rest[4:8])
				next, rest = rest[0], rest[8:]
			case ipv6NoNext:
				return false
			default:
				p.Proto = next
				p.L4 = rest
				return true
			}
		}
		return false // too many extension headers to be a client's packet
	}
	return false
}

// ParseTCP decodes the TCP header of an unfragmented p.L4.
func ParseTCP(p *Parsed) bool {
	b := p.L4
	if p.Proto != protoTCP || len(b) < 20 {
		return false
	}
	off := int(b[12]>>4) * 4
	if off < 20 || off > len(b) {
		return false
	}
	p.SrcPort = binary.BigEndian.Uint16(b[0:2])
	p.DstPort = binary.BigEndian.Uint16(b[2:4])
	p.Seq = binary.BigEndian.Uint32(b[4:8])
	p.Flags = b[13]
	p.Payload = b[off:]
	return true
}

// ipv4HeaderValid reports whether an IPv4 header's checksum is right.
func ipv4HeaderValid(b []byte) bool {
	ihl := int(b[0]&0x0f) * 4
	return len(b) >= ihl && fold(sum16(b[:ihl])) == 0xffff
}

// tcpChecksumValid reports whether the TCP segment l4, from src to dst,
// carries a right checksum (over the pseudo-header and the segment).
func tcpChecksumValid(src, dst netip.Addr, l4 []byte) bool {
	var sum uint32
	if src.Is4() {
		a, b := src.As4(), dst.As4()
		sum = sum16(a[:]) + sum16(b[:])
	} else {
		a, b := src.As16(), dst.As16()
		sum = sum16(a[:]) + sum16(b[:])
	}
	n := uint32(len(l4))
	sum += protoTCP + n>>16 + n&0xffff
	return fold(sum+sum16(l4)) == 0xffff
}

func sum16(b []byte) uint32 {
	var sum uint32
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	return sum
}

func fold(sum uint32) uint16 {
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}
