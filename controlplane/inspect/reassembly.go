package inspect

import "net/netip"

// assembler places byte ranges at offsets below max and remembers which
// bytes it has, so that a range overlapping others is checked byte by byte:
// servers keep either copy (Linux the first, others the last), so copies
// that differ are a deny, never a choice.
type assembler struct {
	max  int
	buf  []byte   // grows to the highest end written
	have []uint64 // one bit per byte of buf
	// contig is the prefix found so far.
	contig int
}

func (a *assembler) has(i int) bool {
	return i < len(a.buf) && a.have[i>>6]&(1<<(i&63)) != 0
}

// conflicts says whether p at off differs from a byte already there.
func (a *assembler) conflicts(off int, p []byte) bool {
	for i, c := range p {
		if a.has(off+i) && a.buf[off+i] != c {
			return true
		}
	}
	return false
}

// adds says whether p at off holds a byte not there yet.
func (a *assembler) adds(off int, p []byte) bool {
	for i := range p {
		if !a.has(off + i) {
			return true
		}
	}
	return false
}

// write stores p at off; the caller keeps off+len(p) within max.
func (a *assembler) write(off int, p []byte) {
	end := off + len(p)
	if end > len(a.buf) {
		if end > cap(a.buf) {
			// Double, within max: a ClientHello arrives in a few segments.
			grown := make([]byte, end, min(a.max, max(end, 2*cap(a.buf))))
			copy(grown, a.buf)
			a.buf = grown
		} else {
			a.buf = a.buf[:end]
		}
		for len(a.have)*64 < end {
			a.have = append(a.have, 0)
		}
	}
	copy(a.buf[off:], p)
	for i := off; i < end; i++ {
		a.have[i>>6] |= 1 << (i & 63)
	}
}

// prefix is how many bytes from offset 0 are all there. It only grows, so
// the scan resumes where the last one stopped.
func (a *assembler) prefix() int {
	for a.contig < len(a.buf) && a.has(a.contig) {
		a.contig++
	}
	return a.contig
}

type fragKey struct {
	src, dst netip.Addr
	id       uint32
	proto    uint8
}

// fragQueue reassembles one IP datagram's transport bytes.
type fragQueue struct {
	key    fragKey
	stream assembler
	total  int // the datagram's transport length, once the last fragment came; else -1
}

// fragQueue finds or opens the queue of ip's datagram. reason is set when
// the fragment breaks a bound: its datagram would be larger than a TCP
// header and MaxBytes of payload can need, or the session already
// reassembles maxFragQueues datagrams.
func (s *session) fragQueue(ip *ipPacket, maxBytes int) (*fragQueue, string, error) {
	limit := 60 + maxBytes // the longest TCP header, then the bytes read
	if ip.fragOff+len(ip.transport) > limit {
		return nil, ReasonFragmentBounds, nil
	}
	if ip.more && len(ip.transport)%8 != 0 {
		return nil, "", errMalformedFragment
	}
	k := fragKey{src: ip.src, dst: ip.dst, id: ip.fragID, proto: ip.proto}
	for _, q := range s.frags {
		if q.key == k {
			end := ip.fragOff + len(ip.transport)
			if q.total >= 0 && (end > q.total || !ip.more && end != q.total) || !ip.more && end < len(q.stream.buf) {
				return nil, ReasonConflict, nil
			}
			return q, "", nil
		}
	}
	if len(s.frags) >= maxFragQueues {
		return nil, ReasonFragmentBounds, nil
	}
	q := &fragQueue{key: k, stream: assembler{max: limit}, total: -1}
	s.frags = append(s.frags, q)
	return q, "", nil
}

func (q *fragQueue) add(ip *ipPacket) {
	q.stream.write(ip.fragOff, ip.transport)
	if !ip.more {
		q.total = ip.fragOff + len(ip.transport)
	}
}

// datagram is the reassembled transport bytes once every fragment is there.
// Bytes past the last fragment's end (only a conflicting fragment writes
// them) make the datagram unusable: it never completes.
func (q *fragQueue) datagram() ([]byte, bool) {
	if q.total < 0 || len(q.stream.buf) != q.total || q.stream.prefix() != q.total {
		return nil, false
	}
	return q.stream.buf, true
}

func (s *session) dropFragQueue(q *fragQueue) {
	for i, f := range s.frags {
		if f == q {
			s.frags = append(s.frags[:i], s.frags[i+1:]...)
			return
		}
	}
}
