package inspect

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/natwall/natwall/rules"
)

var t0 = time.Date(2026, 12, 4, 1, 0, 0, 0, time.UTC)

type want struct {
	outcome rules.Outcome
	info    rules.L7Info
	reason  string
	held    int // packets handed out with the decision
}

func tlsName(name string) rules.L7Info { return rules.L7Info{Proto: rules.AppTLS, Name: name} }

// feedAll feeds pkts in order, every one but the last expected to wait, and
// returns the last result.
func feedAll(t *testing.T, in *Inspector, f flow, pkts [][]byte) Result {
	t.Helper()
	var r Result
	for i, p := range pkts {
		var err error
		r, err = in.Feed(f.key(), f.firstSeq(), p, t0.Add(time.Duration(i)*time.Millisecond))
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		if i < len(pkts)-1 && r.Outcome != rules.OutcomeWait {
			t.Fatalf("packet %d of %d decided early: %v %v %q", i, len(pkts), r.Outcome, r.Info, r.Reason)
		}
	}
	return r
}

func check(t *testing.T, r Result, w want, fed [][]byte) {
	t.Helper()
	if r.Outcome != w.outcome || r.Info != w.info || r.Reason != w.reason {
		t.Errorf("got %v %+v %q, want %v %+v %q", r.Outcome, r.Info, r.Reason, w.outcome, w.info, w.reason)
	}
	if len(r.Held) != w.held {
		t.Errorf("held %d packets, want %d", len(r.Held), w.held)
	}
	if fed == nil {
		return
	}
	// Held is the fed packets in arrival order, duplicates left out.
	j := 0
	for _, h := range r.Held {
		for j < len(fed) && !bytes.Equal(fed[j], h) {
			j++
		}
		if j == len(fed) {
			t.Fatalf("a held packet is not a fed one, or out of order")
		}
		j++
	}
}

func TestFeed(t *testing.T) {
	classic := clientHello(t, "www.example.com", true)
	pq := clientHello(t, "www.example.com", false)
	if len(pq) <= 1460 {
		t.Fatalf("the X25519MLKEM768 ClientHello is %d bytes; want more than one 1,460-byte segment", len(pq))
	}
	t.Logf("ClientHello: %d bytes with X25519MLKEM768, %d with X25519 only", len(pq), len(classic))
	nameAt := bytes.Index(classic, []byte("www.example.com"))
	if nameAt < 0 {
		t.Fatal("no SNI in the ClientHello")
	}
	noSNI := clientHello(t, "", true)
	httpReq := []byte("GET /index.html HTTP/1.1\r\nHost: WWW.Example.com\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n")

	first := flow4.seg(t, 0, classic[:100])
	differs := append([]byte(nil), classic[:100]...)
	differs[90] ^= 0xff
	pqFrags4 := flow4.fragments(t, pq, 576, 0x4242)
	pqFrags6 := flow6.fragments(t, pq, 1232, 0x42424242)
	badFrag := flow4.ip(t, append([]byte(nil), flow4.tcp(t, 0, pq)[576:1152]...), 0x4242, 576, true)
	badFrag[len(badFrag)-1] ^= 1
	badFrag = fixIPv4Checksum(badFrag)

	cases := []struct {
		name string
		flow flow
		pkts [][]byte
		want want
	}{
		{"one segment", flow4, [][]byte{flow4.seg(t, 0, classic)}, want{rules.OutcomeResume, tlsName("www.example.com"), "ok", 1}},
		{"SNI split across segments", flow4, [][]byte{flow4.seg(t, 0, classic[:nameAt+4]), flow4.seg(t, nameAt+4, classic[nameAt+4:])}, want{rules.OutcomeResume, tlsName("www.example.com"), "ok", 2}},
		{"post-quantum hello in 1460-byte segments", flow4, flow4.segs(t, pq, 1460), want{rules.OutcomeResume, tlsName("www.example.com"), "ok", 2}},
		{"hello in two TLS records", flow4, [][]byte{flow4.seg(t, 0, twoRecords(classic, 40))}, want{rules.OutcomeResume, tlsName("www.example.com"), "ok", 1}},
		{"two TLS records across segments", flow4, flow4.segs(t, twoRecords(pq, 700), 300), want{rules.OutcomeResume, tlsName("www.example.com"), "ok", (len(pq) + 5 + 299) / 300}},
		{"out of order", flow4, reversed(flow4.segs(t, pq, 500)), want{rules.OutcomeResume, tlsName("www.example.com"), "ok", (len(pq) + 499) / 500}},
		{"exact retransmission", flow4, [][]byte{first, first, flow4.seg(t, 100, classic[100:])}, want{rules.OutcomeResume, tlsName("www.example.com"), "ok", 2}},
		{"retransmission overlapping with new bytes", flow4, [][]byte{first, flow4.seg(t, 50, classic[50:200]), flow4.seg(t, 0, classic)}, want{rules.OutcomeResume, tlsName("www.example.com"), "ok", 3}},
		{"conflicting retransmission", flow4, [][]byte{first, flow4.seg(t, 0, differs)}, want{rules.OutcomeDeny, tlsName(""), "conflict", 2}},
		{"conflicting overlap of a later segment", flow4, [][]byte{flow4.seg(t, 100, classic[100:200]), flow4.seg(t, 0, append(append([]byte(nil), classic[:100]...), 0xee))}, want{rules.OutcomeDeny, rules.L7Info{Proto: rules.AppUnknown}, "conflict", 2}},
		{"one byte per segment", flow4, flow4.segs(t, classic, 1), want{rules.OutcomeResume, tlsName("www.example.com"), "ok", len(classic)}},
		{"HTTP request split", flow4, flow4.segs(t, httpReq, 7), want{rules.OutcomeResume, rules.L7Info{Proto: rules.AppHTTP, Name: "www.example.com"}, "ok", (len(httpReq) + 6) / 7}},
		{"no SNI", flow4, flow4.segs(t, noSNI, 100), want{rules.OutcomeResume, tlsName(""), "no_sni", (len(noSNI) + 99) / 100}},
		{"neither TLS nor HTTP", flow4, [][]byte{flow4.seg(t, 0, []byte("SSH-2.0-OpenSSH_9.6\r\n"))}, want{rules.OutcomeResume, rules.L7Info{Proto: rules.AppUnknown}, "not_tls_or_http", 1}},
		{"keep-alive byte, then data from before the first sequence number", flow4, [][]byte{flow4.seg(t, -1, []byte{0}), flow4.seg(t, -3, append([]byte("xyz"), classic...))}, want{rules.OutcomeResume, tlsName("www.example.com"), "ok", 1}},
		{"reset payload is not data", flow4, [][]byte{flow4.rst(t, []byte("GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n")), flow4.seg(t, 0, classic)}, want{rules.OutcomeResume, tlsName("www.example.com"), "ok", 1}},
		{"data on the SYN", flow4, [][]byte{flow4.syn(t, classic)}, want{rules.OutcomeResume, tlsName("www.example.com"), "ok", 1}},
		{"IPv6", flow6, flow6.segs(t, pq, 1440), want{rules.OutcomeResume, tlsName("www.example.com"), "ok", 2}},
		{"IPv6 out of order", flow6, reversed(flow6.segs(t, pq, 333)), want{rules.OutcomeResume, tlsName("www.example.com"), "ok", (len(pq) + 332) / 333}},
		{"IPv4 fragments", flow4, pqFrags4, want{rules.OutcomeResume, tlsName("www.example.com"), "ok", len(pqFrags4)}},
		{"IPv4 fragments out of order", flow4, reversed(pqFrags4), want{rules.OutcomeResume, tlsName("www.example.com"), "ok", len(pqFrags4)}},
		{"IPv4 fragment repeated", flow4, join(pqFrags4[:1], pqFrags4), want{rules.OutcomeResume, tlsName("www.example.com"), "ok", len(pqFrags4) + 1}},
		{"IPv4 fragment conflicting", flow4, [][]byte{pqFrags4[1], badFrag}, want{rules.OutcomeDeny, rules.L7Info{Proto: rules.AppUnknown}, "conflict", 2}},
		{"IPv6 fragments", flow6, pqFrags6, want{rules.OutcomeResume, tlsName("www.example.com"), "ok", len(pqFrags6)}},
		{"IPv6 fragments out of order", flow6, reversed(pqFrags6), want{rules.OutcomeResume, tlsName("www.example.com"), "ok", len(pqFrags6)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := New(Limits{})
			r := feedAll(t, in, c.flow, c.pkts)
			check(t, r, c.want, c.pkts)
			if in.Len() != 1 {
				t.Errorf("Len %d, want 1 until Forget", in.Len())
			}
			in.Forget(c.flow.key())
			if in.Len() != 0 {
				t.Errorf("Len %d after Forget", in.Len())
			}
		})
	}
}

func fixIPv4Checksum(p []byte) []byte {
	p[10], p[11] = 0, 0
	c := ^checksum(0, p[:20])
	p[10], p[11] = byte(c>>8), byte(c)
	return p
}

func TestDecidedSessionHandsOutLaterPackets(t *testing.T) {
	classic := clientHello(t, "www.example.com", true)
	in := New(Limits{})
	r := feedAll(t, in, flow4, [][]byte{flow4.seg(t, 0, classic)})
	check(t, r, want{rules.OutcomeResume, tlsName("www.example.com"), "ok", 1}, nil)
	later := flow4.seg(t, len(classic), []byte("after the hello"))
	r, err := in.Feed(flow4.key(), flow4.firstSeq(), later, t0)
	if err != nil {
		t.Fatal(err)
	}
	check(t, r, want{rules.OutcomeResume, tlsName("www.example.com"), "ok", 1}, [][]byte{later})
	if _, err := in.Feed(flow4.key(), flow4.firstSeq(), later[:10], t0); err == nil {
		t.Error("a malformed packet on a decided session was taken")
	}
}

func TestMaxBytes(t *testing.T) {
	pq := clientHello(t, "www.example.com", false)
	segs := flow4.segs(t, pq, 500)
	in := New(Limits{MaxBytes: 1000})
	// A segment past MaxBytes waits unread, but is kept for reinjection.
	r, err := in.Feed(flow4.key(), flow4.firstSeq(), segs[2], t0)
	if err != nil || r.Outcome != rules.OutcomeWait || r.Reason != ReasonBeyondMaxBytes {
		t.Fatalf("got %v %q %v", r.Outcome, r.Reason, err)
	}
	r = feedAll(t, in, flow4, segs[:2])
	check(t, r, want{rules.OutcomeDeny, tlsName(""), "too_large", 3}, []([]byte){segs[2], segs[0], segs[1]})

	// The default bound is l7.MaxHold: an HTTP head that never ends.
	head := append([]byte("GET / HTTP/1.1\r\nHost: www.example.com\r\nX-Pad: "), bytes.Repeat([]byte("a"), 17<<10)...)
	in = New(Limits{})
	r = feedAll(t, in, flow6, flow6.segs(t, head, 1400)[:12])
	check(t, r, want{rules.OutcomeDeny, rules.L7Info{Proto: rules.AppHTTP}, "too_large", 12}, nil)
}

func TestHoldTime(t *testing.T) {
	pq := clientHello(t, "www.example.com", false)
	in := New(Limits{HoldTime: 2 * time.Second})
	p := flow4.seg(t, 0, pq[:1000])
	r, err := in.Feed(flow4.key(), flow4.firstSeq(), p, t0)
	if err != nil || r.Outcome != rules.OutcomeWait || len(r.Held) != 0 {
		t.Fatalf("got %v %d held, %v", r.Outcome, len(r.Held), err)
	}
	if ex := in.Expire(t0.Add(2*time.Second - 1)); len(ex) != 0 {
		t.Fatalf("expired early: %+v", ex)
	}
	ex := in.Expire(t0.Add(2 * time.Second))
	if len(ex) != 1 || ex[0].Key != flow4.key() {
		t.Fatalf("expired %+v", ex)
	}
	check(t, ex[0].Result, want{rules.OutcomeDeny, tlsName(""), "hold_timeout", 1}, [][]byte{p})
	if in.Len() != 0 {
		t.Errorf("Len %d after Expire", in.Len())
	}

	// A Feed past the hold time decides too.
	feedAll(t, in, flow6, [][]byte{flow6.seg(t, 0, pq[:1000])})
	r, err = in.Feed(flow6.key(), flow6.firstSeq(), flow6.seg(t, 1000, pq[1000:]), t0.Add(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	check(t, r, want{rules.OutcomeDeny, tlsName(""), "hold_timeout", 2}, nil)
	// Decided and not forgotten: Expire drops it without reporting it again.
	if ex := in.Expire(t0.Add(time.Hour)); len(ex) != 0 || in.Len() != 0 {
		t.Errorf("Expire reported %+v, Len %d", ex, in.Len())
	}
}

func TestSessionLimit(t *testing.T) {
	classic := clientHello(t, "www.example.com", true)
	in := New(Limits{MaxSessions: 2})
	flows := []flow{flow4, flow6}
	for _, f := range flows {
		feedAll(t, in, f, [][]byte{f.seg(t, 0, classic[:50])})
	}
	third := flow4
	third.sport++
	r, err := in.Feed(third.key(), third.firstSeq(), third.seg(t, 0, classic[:50]), t0)
	if err != nil {
		t.Fatal(err)
	}
	check(t, r, want{rules.OutcomeDeny, tlsName(""), "session_limit", 1}, nil)
	// A whole hello in the one packet needs no session.
	r, err = in.Feed(third.key(), third.firstSeq(), third.seg(t, 0, classic), t0)
	if err != nil {
		t.Fatal(err)
	}
	check(t, r, want{rules.OutcomeResume, tlsName("www.example.com"), "ok", 1}, nil)
	if in.Len() != 2 {
		t.Errorf("Len %d, want 2", in.Len())
	}
	in.Forget(flow6.key())
	r = feedAll(t, in, third, [][]byte{third.seg(t, 0, classic[:50])})
	if r.Outcome != rules.OutcomeWait || in.Len() != 2 {
		t.Errorf("after Forget: %v, Len %d", r.Outcome, in.Len())
	}
}

func TestMalformed(t *testing.T) {
	classic := clientHello(t, "www.example.com", true)
	good4 := flow4.seg(t, 0, classic)
	good6 := flow6.seg(t, 0, classic)
	mod := func(p []byte, f func([]byte)) []byte {
		p = append([]byte(nil), p...)
		f(p)
		return p
	}
	cases := []struct {
		name string
		pkt  []byte
		err  error
	}{
		{"empty", nil, ErrMalformed},
		{"version 5", mod(good4, func(p []byte) { p[0] = 0x55 }), ErrMalformed},
		{"IPv4 header cut", good4[:19], ErrMalformed},
		{"IPv4 header length 16", mod(good4, func(p []byte) { p[0] = 0x44 }), ErrMalformed},
		{"IPv4 total length past the packet", good4[:len(good4)-1], ErrMalformed},
		{"IPv4 header checksum", mod(good4, func(p []byte) { p[8]-- }), ErrChecksum},
		{"UDP", fixIPv4Checksum(mod(good4, func(p []byte) { p[9] = 17 })), ErrNotTCP},
		{"TCP header cut", fixIPv4Checksum(mod(good4[:30], func(p []byte) { p[2], p[3] = 0, 30 })), ErrMalformed},
		{"TCP data offset past the segment", fixIPv4Checksum(mod(good4[:40], func(p []byte) { p[2], p[3] = 0, 40; p[32] = 0xf0 })), ErrMalformed},
		{"TCP checksum", mod(good4, func(p []byte) { p[len(p)-1] ^= 1 }), ErrChecksum},
		{"IPv6 header cut", good6[:39], ErrMalformed},
		{"IPv6 payload length past the packet", good6[:len(good6)-1], ErrMalformed},
		{"IPv6 UDP", mod(good6, func(p []byte) { p[6] = 17 }), ErrNotTCP},
		{"IPv6 TCP checksum", mod(good6, func(p []byte) { p[len(p)-1] ^= 1 }), ErrChecksum},
		{"IPv6 extension header cut", mod(good6, func(p []byte) { p[6] = 60; p[41] = 255 }), ErrMalformed},
		{"IPv6 extension header loop", mod(good6, func(p []byte) {
			p[6] = 60
			for off := 40; off+8 <= len(p); off += 8 {
				p[off], p[off+1] = 60, 0
			}
		}), ErrUnsupported},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := New(Limits{})
			r, err := in.Feed(flow4.key(), flow4.firstSeq(), c.pkt, t0)
			if !errors.Is(err, c.err) {
				t.Errorf("error %v, want %v", err, c.err)
			}
			if r.Outcome != rules.OutcomeWait || r.Held != nil || in.Len() != 0 {
				t.Errorf("an unusable packet made a result %+v, Len %d", r, in.Len())
			}
		})
	}

	// With SkipChecksums (captures with offload) the same bytes are read.
	in := New(Limits{SkipChecksums: true})
	r, err := in.Feed(flow4.key(), flow4.firstSeq(), mod(good4, func(p []byte) { p[16+20]++ }), t0)
	if err != nil || r.Info.Name != "www.example.com" {
		t.Errorf("SkipChecksums: %+v, %v", r, err)
	}
}

// The parse of the common path, a whole segment, allocates nothing.
func TestParseNoAllocs(t *testing.T) {
	for _, p := range [][]byte{flow4.seg(t, 0, []byte("GET / HTTP/1.1\r\n")), flow6.seg(t, 0, []byte("GET / HTTP/1.1\r\n"))} {
		allocs := testing.AllocsPerRun(100, func() {
			var ip ipPacket
			var seg tcpSegment
			if parseIP(p, true, &ip) != nil || parseTCP(ip.transport, ip.src, ip.dst, true, &seg) != nil {
				t.Fatal("parse failed")
			}
		})
		if allocs != 0 {
			t.Errorf("%v allocations", allocs)
		}
	}
}

func TestHeldBudget(t *testing.T) {
	classic := clientHello(t, "www.example.com", true)
	segs := flow4.segs(t, classic, 1)
	in := New(Limits{MaxBytes: 1000})
	budget := 1000 * heldBudgetFactor / len(segs[0])
	for i, p := range segs {
		r, err := in.Feed(flow4.key(), flow4.firstSeq(), p, t0)
		if err != nil {
			t.Fatal(err)
		}
		if r.Outcome != rules.OutcomeWait || (i >= budget) != (r.Reason == ReasonHeldBudget) {
			t.Fatalf("packet %d of a budget of %d: %v %q", i, budget, r.Outcome, r.Reason)
		}
	}
	ex := in.Expire(t0.Add(time.Minute))
	if len(ex) != 1 {
		t.Fatalf("expired %d", len(ex))
	}
	check(t, ex[0].Result, want{rules.OutcomeDeny, tlsName(""), "hold_timeout", budget}, segs)
}

func TestFragmentBounds(t *testing.T) {
	pq := clientHello(t, "www.example.com", false)
	frags := flow4.fragments(t, pq, 576, 1)
	r := feedAll(t, New(Limits{MaxBytes: 1000}), flow4, frags[:2])
	check(t, r, want{rules.OutcomeDeny, rules.L7Info{Proto: rules.AppUnknown}, "fragment_bounds", 2}, frags)

	var firsts [][]byte
	for id := range uint32(maxFragQueues + 1) {
		firsts = append(firsts, flow6.fragments(t, pq, 512, id+1)[0])
	}
	r = feedAll(t, New(Limits{}), flow6, firsts)
	check(t, r, want{rules.OutcomeDeny, rules.L7Info{Proto: rules.AppUnknown}, "fragment_bounds", len(firsts)}, firsts)
}

// BenchmarkFeed is a post-quantum ClientHello in two IPv4 segments, through
// a session to its verdict; allocations are the session and packet copies.
func BenchmarkFeed(b *testing.B) {
	pq := clientHello(b, "www.example.com", false)
	segs := flow4.segs(b, pq, 1460)
	in := New(Limits{})
	b.ReportAllocs()
	for b.Loop() {
		for _, p := range segs {
			if _, err := in.Feed(flow4.key(), flow4.firstSeq(), p, t0); err != nil {
				b.Fatal(err)
			}
		}
		in.Forget(flow4.key())
	}
}
