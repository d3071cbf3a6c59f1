package dataplane

import (
	"encoding/binary"
	"testing"
)

// wellFormed is an independent statement of what the XDP parser must accept
// before it may forward a frame: every length an IP or L4 header claims
// fits in the frame and in the enclosing header. It returns false for
// frames that must never be forwarded.
func wellFormed(frame []byte) bool {
	if len(frame) < 14 {
		return false
	}
	off, typ := 14, binary.BigEndian.Uint16(frame[12:])
	for tags := 0; typ == 0x8100 || typ == 0x88a8; tags++ {
		// Frames of a VLAN are never forwarded in XDP; priority tags
		// (VLAN ID 0), at most two, are stripped and the rest parsed.
		if tags == 2 || len(frame) < off+4 || binary.BigEndian.Uint16(frame[off:])&0x0fff != 0 {
			return false
		}
		typ = binary.BigEndian.Uint16(frame[off+2:])
		off += 4
	}
	switch typ {
	case 0x0800:
		ip := frame[off:]
		if len(ip) < 20 || ip[0]>>4 != 4 || ip[0]&0xf < 5 {
			return false
		}
		hl, tot := int(ip[0]&0xf)*4, int(binary.BigEndian.Uint16(ip[2:]))
		if tot < hl || tot > len(ip) {
			return false
		}
		if !ipv4OptionsWellFormed(ip[20:hl]) {
			return false
		}
		frag := binary.BigEndian.Uint16(ip[6:])
		if frag&0x1fff != 0 {
			return true // a later fragment carries no L4 header
		}
		return l4WellFormed(ip[9], ip[hl:tot], frag&0x2000 != 0)
	case 0x86dd:
		ip := frame[off:]
		if len(ip) < 40 || ip[0]>>4 != 6 {
			return false
		}
		plen := int(binary.BigEndian.Uint16(ip[4:]))
		if 40+plen > len(ip) {
			return false
		}
		next, rest, fragmented := ip[6], ip[40:40+plen], false
		for i := 0; ; i++ {
			switch next {
			case 0, 43, 60, 51, 44:
				if i >= 8 || len(rest) < 8 || (next == 0 && i != 0) {
					return false
				}
				n := (int(rest[1]) + 1) * 8
				switch next {
				case 51:
					n = (int(rest[1]) + 2) * 4
				case 44:
					n = 8
					if fragmented {
						return false
					}
					fo := binary.BigEndian.Uint16(rest[2:])
					fragmented = fo&0xfff9 != 0
					if fo&0xfff8 != 0 {
						return true
					}
				case 43:
					if rest[2] == 0 && rest[3] != 0 {
						return false
					}
				}
				if n > len(rest) {
					return false
				}
				next, rest = rest[0], rest[n:]
				continue
			}
			return l4WellFormed(next, rest, fragmented)
		}
	}
	return false
}

// ipv4OptionsWellFormed: every option but EOL and NOP has a length of at
// least 2 that stays within the options (RFC 791 3.1).
func ipv4OptionsWellFormed(opts []byte) bool {
	for len(opts) > 0 {
		switch opts[0] {
		case 0:
			return true
		case 1:
			opts = opts[1:]
			continue
		}
		if len(opts) < 2 || opts[1] < 2 || int(opts[1]) > len(opts) {
			return false
		}
		opts = opts[opts[1]:]
	}
	return true
}

func l4WellFormed(proto byte, seg []byte, fragmented bool) bool {
	switch {
	// An ICMP error must embed the header it reports on and the 8 bytes
	// after it: natwall finds the error's flow through them.
	case proto == 1 && len(seg) >= 8 && (seg[0] == 3 || seg[0] == 4 || seg[0] == 5 || seg[0] == 11 || seg[0] == 12):
		in := seg[8:]
		return len(in) >= 20 && in[0]&0xf >= 5 && len(in) >= int(in[0]&0xf)*4+8
	case proto == 58 && len(seg) >= 8 && seg[0] >= 1 && seg[0] <= 4:
		return len(seg) >= 8+40+8
	}
	switch proto {
	case 6:
		return len(seg) >= 20 && seg[12]>>4 >= 5 && int(seg[12]>>4)*4 <= len(seg)
	case 17:
		if len(seg) < 8 {
			return false
		}
		ulen := int(binary.BigEndian.Uint16(seg[4:]))
		return fragmented || (ulen >= 8 && ulen <= len(seg))
	case 1, 58:
		return len(seg) >= 8
	}
	return true
}

// FuzzXDPParser feeds arbitrary frames to the XDP program in the kernel and
// checks it against wellFormed: a frame it forwards must be well formed,
// and a malformed-* reason must only be given to a frame that is not.
func FuzzXDPParser(f *testing.F) {
	for _, tc := range truncationCases() {
		f.Add(tc.pkt.build(f))
	}
	f.Add(packet{src: "198.18.1.10", dst: "198.19.1.10", vlans: 3}.build(f))
	f.Add(packet{src: "198.18.1.10", dst: "198.19.1.10", vlans: 2, prioTags: true}.build(f))
	f.Add(packet{v6: true, src: "2001:db8:1::10", dst: "2001:db8:2::10", extTypes: repeatTypes(dstTyp, 9), extHdrs: make([]byte, 72)}.build(f))

	// One namespace and program for every input: the fixture is the
	// expensive part.
	fx := newFibFixture(f)
	f.Fuzz(func(t *testing.T, frame []byte) {
		if len(frame) < 14 || len(frame) > 1500 {
			return
		}
		res := fx.run(t, frame, "a0")
		good := wellFormed(frame)
		switch res.reason.Verdict() {
		case VerdictForward:
			if !good {
				t.Fatalf("forwarded a frame the reference calls malformed (%s): %x", res.reason.Name(), frame)
			}
		case VerdictMalformed:
			if good {
				t.Fatalf("%s for a frame the reference calls well formed: %x", res.reason.Name(), frame)
			}
		}
	})
}
