package inspect

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// Errors Feed returns for a packet it cannot use. The session is left as it
// was: the packet is neither inspected nor kept, so it is never reinjected
// (the client retransmits after the verdict if the bytes mattered).
var (
	ErrMalformed   = errors.New("malformed packet")
	ErrNotTCP      = errors.New("not a TCP segment")
	ErrChecksum    = errors.New("bad checksum")
	ErrUnsupported = errors.New("unsupported packet")
)

var errMalformedFragment = fmt.Errorf("%w: a fragment that is not the last is not a multiple of 8 bytes", ErrMalformed)

const (
	protoTCP      = 6
	ipv6HopByHop  = 0
	ipv6Routing   = 43
	ipv6Fragment  = 44
	ipv6DestOpts  = 60
	maxExtHeaders = 8 // more than a real client sends; bounds the walk
	tcpMinHeader  = 20
)

// ipPacket is what parseIP finds in one IP packet, pointing into it.
type ipPacket struct {
	src, dst netip.Addr
	proto    uint8
	// transport holds the bytes after the IP headers: a whole TCP segment,
	// or a fragment's part of one.
	transport []byte
	fragment  bool
	fragID    uint32
	fragOff   int // in bytes
	more      bool
}

// parseIP reads an IPv4 or IPv6 header without allocating. Bytes after the
// IP length are ignored; a packet shorter than its IP length is an error,
// which is how a packet the dataplane truncated (over 2 KiB) is refused.
func parseIP(b []byte, verify bool, p *ipPacket) error {
	if len(b) < 1 {
		return fmt.Errorf("%w: empty", ErrMalformed)
	}
	switch b[0] >> 4 {
	case 4:
		return parseIPv4(b, verify, p)
	case 6:
		return parseIPv6(b, p)
	}
	return fmt.Errorf("%w: IP version %d", ErrMalformed, b[0]>>4)
}

func parseIPv4(b []byte, verify bool, p *ipPacket) error {
	if len(b) < 20 {
		return fmt.Errorf("%w: IPv4 header of %d bytes", ErrMalformed, len(b))
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if ihl < 20 || ihl > total || total > len(b) {
		return fmt.Errorf("%w: IPv4 header length %d, total length %d, %d bytes", ErrMalformed, ihl, total, len(b))
	}
	if verify && checksum(0, b[:ihl]) != 0xffff {
		return fmt.Errorf("%w: IPv4 header", ErrChecksum)
	}
	flagsOff := binary.BigEndian.Uint16(b[6:8])
	*p = ipPacket{
		src:       netip.AddrFrom4([4]byte(b[12:16])),
		dst:       netip.AddrFrom4([4]byte(b[16:20])),
		proto:     b[9],
		transport: b[ihl:total],
		fragID:    uint32(binary.BigEndian.Uint16(b[4:6])),
		fragOff:   int(flagsOff&0x1fff) * 8,
		more:      flagsOff&0x2000 != 0,
	}
	p.fragment = p.more || p.fragOff != 0
	if p.proto != protoTCP {
		return fmt.Errorf("%w: IP protocol %d", ErrNotTCP, p.proto)
	}
	return nil
}

func parseIPv6(b []byte, p *ipPacket) error {
	if len(b) < 40 {
		return fmt.Errorf("%w: IPv6 header of %d bytes", ErrMalformed, len(b))
	}
	total := 40 + int(binary.BigEndian.Uint16(b[4:6]))
	if total > len(b) {
		return fmt.Errorf("%w: IPv6 payload length %d, %d bytes", ErrMalformed, total-40, len(b))
	}
	*p = ipPacket{
		src: netip.AddrFrom16([16]byte(b[8:24])),
		dst: netip.AddrFrom16([16]byte(b[24:40])),
	}
	next, off := b[6], 40
	for range maxExtHeaders {
		switch next {
		case protoTCP:
			p.proto, p.transport = next, b[off:total]
			return nil
		case ipv6HopByHop, ipv6Routing, ipv6DestOpts:
			if total-off < 8 {
				return fmt.Errorf("%w: IPv6 extension header cut", ErrMalformed)
			}
			n := (int(b[off+1]) + 1) * 8
			if total-off < n {
				return fmt.Errorf("%w: IPv6 extension header of %d bytes, %d left", ErrMalformed, n, total-off)
			}
			next, off = b[off], off+n
		case ipv6Fragment:
			if total-off < 8 {
				return fmt.Errorf("%w: IPv6 fragment header cut", ErrMalformed)
			}
			fo := binary.BigEndian.Uint16(b[off+2 : off+4])
			p.fragOff, p.more = int(fo>>3)*8, fo&1 != 0
			p.fragID = binary.BigEndian.Uint32(b[off+4 : off+8])
			// An atomic fragment (offset 0, no more) is a whole packet
			// (RFC 6946); any other needs reassembly.
			p.fragment = p.more || p.fragOff != 0
			next, off = b[off], off+8
			if p.fragment {
				// Headers after the fragment header would be part of the
				// reassembled bytes; real stacks put TCP right there.
				if next != protoTCP {
					return fmt.Errorf("%w: IPv6 fragment of next header %d", ErrUnsupported, next)
				}
				p.proto, p.transport = next, b[off:total]
				return nil
			}
		default:
			return fmt.Errorf("%w: IPv6 next header %d", ErrNotTCP, next)
		}
	}
	return fmt.Errorf("%w: more than %d IPv6 extension headers", ErrUnsupported, maxExtHeaders)
}

// tcpSegment is what parseTCP finds, pointing into the segment.
type tcpSegment struct {
	seq     uint32
	syn     bool
	rst     bool
	payload []byte
}

// parseTCP reads a whole TCP segment. The checksum is verified because the
// server will: a segment it drops must not be what natwall reads, or a
// client could show natwall one name in a bad segment and the server
// another in the retransmission, after the verdict.
func parseTCP(b []byte, src, dst netip.Addr, verify bool, t *tcpSegment) error {
	if len(b) < tcpMinHeader {
		return fmt.Errorf("%w: TCP header of %d bytes", ErrMalformed, len(b))
	}
	doff := int(b[12]>>4) * 4
	if doff < tcpMinHeader || doff > len(b) {
		return fmt.Errorf("%w: TCP data offset %d, %d bytes", ErrMalformed, doff, len(b))
	}
	if verify && checksum(pseudoHeader(src, dst, len(b)), b) != 0xffff {
		return fmt.Errorf("%w: TCP", ErrChecksum)
	}
	*t = tcpSegment{seq: binary.BigEndian.Uint32(b[4:8]), syn: b[13]&0x02 != 0, rst: b[13]&0x04 != 0, payload: b[doff:]}
	return nil
}

// pseudoHeader is the one's complement sum of the TCP pseudo-header.
func pseudoHeader(src, dst netip.Addr, length int) uint32 {
	var sum uint32
	if src.Is4() {
		s, d := src.As4(), dst.As4()
		sum = sum16(s[:]) + sum16(d[:])
	} else {
		s, d := src.As16(), dst.As16()
		sum = sum16(s[:]) + sum16(d[:])
	}
	return sum + protoTCP + uint32(length>>16) + uint32(length&0xffff)
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

// checksum folds the one's complement sum of b onto initial; a header whose
// checksum field is right folds to 0xffff.
func checksum(initial uint32, b []byte) uint16 {
	sum := uint64(initial) + uint64(sum16(b))
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}
