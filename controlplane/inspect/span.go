package inspect

// span is bytes received at offsets, possibly out of order, up to a fixed
// capacity: a TCP stream's first bytes, or a fragmented datagram's
// payload. It remembers which bytes it has, so a rewrite of a byte with a
// different value, the bytes a server and natwall could read differently,
// is seen.
type span struct {
	data   []byte
	filled []uint64
	// end is one past the highest byte written; prefix the count of
	// contiguous bytes from offset 0.
	end, prefix int
}

func newSpan(capacity int) *span {
	return &span{data: make([]byte, capacity), filled: make([]uint64, (capacity+63)/64)}
}

func (s *span) has(i int) bool { return s.filled[i/64]&(1<<(i%64)) != 0 }

// write stores b at off; bytes past the capacity are cut and reported by
// clipped. conflict reports a byte already held with another value; the
// held value is kept.
func (s *span) write(off int, b []byte) (conflict, clipped bool) {
	if off >= len(s.data) {
		return false, len(b) > 0
	}
	if off+len(b) > len(s.data) {
		b, clipped = b[:len(s.data)-off], true
	}
	for j, c := range b {
		i := off + j
		if s.has(i) {
			if s.data[i] != c {
				conflict = true
			}
			continue
		}
		s.data[i] = c
		s.filled[i/64] |= 1 << (i % 64)
	}
	if off+len(b) > s.end {
		s.end = off + len(b)
	}
	for s.prefix < s.end && s.has(s.prefix) {
		s.prefix++
	}
	return conflict, clipped
}

// contiguous is the bytes from offset 0 with no hole.
func (s *span) contiguous() []byte { return s.data[:s.prefix] }

// reset empties s for reuse by another flow, clearing only what was
// written.
func (s *span) reset() {
	clear(s.filled[:(s.end+63)/64])
	s.end, s.prefix = 0, 0
}
