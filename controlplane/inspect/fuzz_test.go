package inspect

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/natwall/natwall/rules"
)

// records frames packets for FuzzFeed: a 2-byte length before each.
func records(pkts ...[]byte) []byte {
	var out []byte
	for _, p := range pkts {
		out = binary.BigEndian.AppendUint16(out, uint16(len(p)))
		out = append(out, p...)
	}
	return out
}

// FuzzFeed feeds a sequence of packets to sessions of two flows, checking
// that Feed never panics and that what it hands out is consistent: nothing
// held while waiting or beside an error, held packets are fed ones, the
// session table stays within its bound.
func FuzzFeed(f *testing.F) {
	classic := clientHello(f, "www.example.com", true)
	pq := clientHello(f, "www.example.com", false)
	httpReq := []byte("GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n")
	f.Add(records(flow4.seg(f, 0, classic)), flow4.firstSeq(), false)
	f.Add(records(reversed(flow4.segs(f, pq, 400))...), flow4.firstSeq(), false)
	f.Add(records(flow6.segs(f, pq, 1000)...), flow6.firstSeq(), true)
	f.Add(records(flow4.fragments(f, pq, 512, 7)...), flow4.firstSeq(), false)
	f.Add(records(reversed(flow6.fragments(f, pq, 600, 9))...), flow6.firstSeq(), false)
	f.Add(records(flow4.segs(f, httpReq, 3)...), flow4.firstSeq(), true)
	f.Add(records(flow4.seg(f, 0, classic[:80]), flow4.seg(f, 40, classic[40:])), flow4.firstSeq(), false)
	f.Add([]byte{0, 1, 0x45}, uint32(0), false)
	f.Fuzz(func(t *testing.T, data []byte, firstSeq uint32, skipChecksums bool) {
		in := New(Limits{MaxBytes: 4096, MaxSessions: 1, SkipChecksums: skipChecksums})
		keys := [2]Key{flow4.key(), flow6.key()}
		var fed [][]byte
		now := t0
		for i := 0; len(data) >= 2; i++ {
			n := min(int(binary.BigEndian.Uint16(data)), len(data)-2)
			pkt := data[2 : 2+n]
			data = data[2+n:]
			fed = append(fed, pkt)
			now = now.Add(time.Duration(n) * time.Millisecond)
			r, err := in.Feed(keys[i%3/2], firstSeq, pkt, now)
			if err != nil {
				if r.Outcome != rules.OutcomeWait || r.Held != nil {
					t.Fatalf("an error with a result: %+v", r)
				}
				continue
			}
			if r.Outcome == rules.OutcomeWait && r.Held != nil {
				t.Fatalf("held packets handed out while waiting")
			}
			for _, h := range r.Held {
				found := false
				for _, p := range fed {
					found = found || bytes.Equal(h, p)
				}
				if !found {
					t.Fatalf("a held packet that was not fed")
				}
			}
			if in.Len() > 1 {
				t.Fatalf("Len %d past MaxSessions 1", in.Len())
			}
		}
		for _, e := range in.Expire(now.Add(time.Hour)) {
			if e.Result.Outcome != rules.OutcomeDeny || e.Result.Reason != ReasonHoldTimeout {
				t.Fatalf("expired as %+v", e.Result)
			}
		}
		if in.Len() != 0 {
			t.Fatalf("Len %d after expiring everything", in.Len())
		}
	})
}
