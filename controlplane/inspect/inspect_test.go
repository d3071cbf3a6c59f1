package inspect

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/natwall/natwall/rules"
)

var (
	client4 = netip.MustParseAddr("198.18.0.2")
	server4 = netip.MustParseAddr("198.19.0.2")
	client6 = netip.MustParseAddr("2001:db8::2")
	server6 = netip.MustParseAddr("2001:db8:1::2")
)

const isn1 = 0xfffffff0 // wraps within the first bytes, on purpose

// goHello is the first flight of Go's crypto/tls client, read from the
// server side of an in-memory connection.
func goHello(t testing.TB, name string, curves ...tls.CurveID) []byte {
	t.Helper()
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	cfg := &tls.Config{ServerName: name, InsecureSkipVerify: true, CurvePreferences: curves}
	go func() { _ = tls.Client(c, cfg).Handshake() }()
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	var hdr [5]byte
	if _, err := readFull(s, hdr[:]); err != nil {
		t.Fatalf("reading the hello's record header: %v", err)
	}
	body := make([]byte, binary.BigEndian.Uint16(hdr[3:]))
	if _, err := readFull(s, body); err != nil {
		t.Fatalf("reading the hello: %v", err)
	}
	return append(hdr[:], body...)
}

func readFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// rerecord splits the handshake bytes of one TLS record into records of
// at most size bytes.
func rerecord(rec []byte, size int) []byte {
	hs := rec[5:]
	var out []byte
	for len(hs) > 0 {
		n := min(size, len(hs))
		out = append(out, 22, 3, 1, byte(n>>8), byte(n))
		out = append(out, hs[:n]...)
		hs = hs[n:]
	}
	return out
}

// craftedHello is a minimal ClientHello record carrying a server_name
// extension per name, to build what Go's client never sends.
func craftedHello(names ...string) []byte {
	body := append([]byte{3, 3}, make([]byte, 32)...)
	body = append(body, 0, 0, 2, 0x13, 0x01, 1, 0)
	var exts []byte
	for _, n := range names {
		list := append([]byte{0}, byte(len(n)>>8), byte(len(n)))
		list = append(list, n...)
		e := binary.BigEndian.AppendUint16(nil, uint16(len(list)))
		e = append(e, list...)
		exts = binary.BigEndian.AppendUint16(exts, 0)
		exts = binary.BigEndian.AppendUint16(exts, uint16(len(e)))
		exts = append(exts, e...)
	}
	body = binary.BigEndian.AppendUint16(body, uint16(len(exts)))
	body = append(body, exts...)
	hs := append([]byte{1, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
	return append([]byte{22, 3, 1, byte(len(hs) >> 8), byte(len(hs))}, hs...)
}

func key(v6 bool) Key {
	if v6 {
		return Key{Src: client6, Dst: server6, SrcPort: 40000, DstPort: 443}
	}
	return Key{Src: client4, Dst: server4, SrcPort: 40000, DstPort: 443}
}

// tcpPacket is a client-to-server IP packet of k carrying payload at
// stream offset off (sequence isn1+off), built with gopacket.
func tcpPacket(t testing.TB, k Key, id uint16, off int, payload []byte) []byte {
	t.Helper()
	tcp := &layers.TCP{SrcPort: layers.TCPPort(k.SrcPort), DstPort: layers.TCPPort(k.DstPort),
		Seq: isn1 + uint32(off), Ack: 1, ACK: true, PSH: true, Window: 65535}
	var ip gopacket.SerializableLayer
	if k.Src.Is4() {
		ip4 := &layers.IPv4{Version: 4, TTL: 64, Id: id, Protocol: layers.IPProtocolTCP,
			SrcIP: k.Src.AsSlice(), DstIP: k.Dst.AsSlice()}
		tcp.SetNetworkLayerForChecksum(ip4)
		ip = ip4
	} else {
		ip6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP,
			SrcIP: k.Src.AsSlice(), DstIP: k.Dst.AsSlice()}
		tcp.SetNetworkLayerForChecksum(ip6)
		ip = ip6
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ip, tcp, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// fragment splits an unfragmented IP packet into fragments whose
// payloads are at most size bytes (a multiple of 8).
func fragment(t testing.TB, pkt []byte, size int) [][]byte {
	t.Helper()
	var out [][]byte
	if pkt[0]>>4 == 4 {
		hdr, l4 := pkt[:20], pkt[20:]
		for off := 0; off < len(l4); off += size {
			end := min(off+size, len(l4))
			f := append(append([]byte(nil), hdr...), l4[off:end]...)
			binary.BigEndian.PutUint16(f[2:], uint16(len(f)))
			flags := uint16(off / 8)
			if end < len(l4) {
				flags |= 0x2000
			}
			binary.BigEndian.PutUint16(f[6:], flags)
			f[10], f[11] = 0, 0
			var sum uint32
			for i := 0; i < 20; i += 2 {
				sum += uint32(binary.BigEndian.Uint16(f[i:]))
			}
			for sum > 0xffff {
				sum = sum&0xffff + sum>>16
			}
			binary.BigEndian.PutUint16(f[10:], ^uint16(sum))
			out = append(out, f)
		}
		return out
	}
	hdr, l4 := pkt[:40], pkt[40:]
	for off := 0; off < len(l4); off += size {
		end := min(off+size, len(l4))
		f := append([]byte(nil), hdr...)
		f[6] = ipv6Fragment
		fo := uint16(off/8) << 3
		if end < len(l4) {
			fo |= 1
		}
		fh := []byte{protoTCP, 0, byte(fo >> 8), byte(fo), 0, 0, 0x12, 0x34}
		f = append(f, fh...)
		f = append(f, l4[off:end]...)
		binary.BigEndian.PutUint16(f[4:], uint16(len(f)-40))
		out = append(out, f)
	}
	return out
}

type seg struct {
	off  int
	data []byte
}

// segments cuts stream into pieces at the given offsets.
func segments(stream []byte, cuts ...int) []seg {
	var out []seg
	prev := 0
	for _, c := range append(cuts, len(stream)) {
		out = append(out, seg{prev, stream[prev:c]})
		prev = c
	}
	return out
}

func packets(t testing.TB, k Key, segs []seg) [][]byte {
	var out [][]byte
	for i, s := range segs {
		out = append(out, tcpPacket(t, k, uint16(100+i), s.off, s.data))
	}
	return out
}

func reverse[T any](s []T) []T {
	out := make([]T, len(s))
	for i := range s {
		out[i] = s[len(s)-1-i]
	}
	return out
}

func TestFeed(t *testing.T) {
	hello := goHello(t, "www.example.com")
	pq := goHello(t, "post-quantum.www.example.com", tls.X25519MLKEM768)
	if len(pq) <= 1460 {
		t.Fatalf("the X25519MLKEM768 ClientHello is %d bytes, want over 1,460 (more than one segment)", len(pq))
	}
	noSNI := goHello(t, "")
	sniAt := bytes.Index(hello, []byte("www.example.com"))
	if sniAt < 100 {
		t.Fatalf("SNI at %d, the cuts below assume it later", sniAt)
	}
	conflicting := append([]byte(nil), hello[50:150]...)
	conflicting[20] ^= 0xff
	one := make([]seg, len(hello))
	for i := range hello {
		one[i] = seg{i, hello[i : i+1]}
	}
	http := []byte("GET / HTTP/1.1\r\nHost: Api.Example.com.\r\nUser-Agent: t\r\n\r\n")

	for _, v6 := range []bool{false, true} {
		k := key(v6)
		cases := []struct {
			name    string
			pkts    [][]byte
			waits   int // feeds before the decision
			outcome rules.Outcome
			info    rules.L7Info
			reason  string
		}{
			{"whole hello", packets(t, k, segments(hello)), 0, rules.OutcomeResume, rules.L7Info{Proto: rules.AppTLS, Name: "www.example.com"}, "ok"},
			{"sni split across segments", packets(t, k, segments(hello, sniAt+5)), 1, rules.OutcomeResume, rules.L7Info{Proto: rules.AppTLS, Name: "www.example.com"}, "ok"},
			{"hello across tls records", packets(t, k, segments(rerecord(hello, 64), 200)), 1, rules.OutcomeResume, rules.L7Info{Proto: rules.AppTLS, Name: "www.example.com"}, "ok"},
			{"out of order", reverse(packets(t, k, segments(hello, 40, 80, sniAt+3))), 3, rules.OutcomeResume, rules.L7Info{Proto: rules.AppTLS, Name: "www.example.com"}, "ok"},
			{"duplicate retransmission", packets(t, k, []seg{{0, hello[:100]}, {0, hello[:100]}, {50, hello[50:]}}), 2, rules.OutcomeResume, rules.L7Info{Proto: rules.AppTLS, Name: "www.example.com"}, "ok"},
			{"conflicting retransmission", packets(t, k, []seg{{0, hello[:100]}, {50, conflicting}}), 1, rules.OutcomeDeny, rules.L7Info{}, ReasonConflict},
			{"ip fragmented hello", fragment(t, tcpPacket(t, k, 7, 0, hello), 96), len(fragment(t, tcpPacket(t, k, 7, 0, hello), 96)) - 1, rules.OutcomeResume, rules.L7Info{Proto: rules.AppTLS, Name: "www.example.com"}, "ok"},
			{"post-quantum hello in two segments", packets(t, k, segments(pq, 1460)), 1, rules.OutcomeResume, rules.L7Info{Proto: rules.AppTLS, Name: "post-quantum.www.example.com"}, "ok"},
			{"duplicate sni", packets(t, k, segments(craftedHello("example.com", "evil.example"))), 0, rules.OutcomeDeny, rules.L7Info{Proto: rules.AppTLS}, "duplicate_sni"},
			{"no sni", packets(t, k, segments(noSNI)), 0, rules.OutcomeResume, rules.L7Info{Proto: rules.AppTLS}, "no_sni"},
			{"one byte per segment", packets(t, k, one), len(one) - 1, rules.OutcomeResume, rules.L7Info{Proto: rules.AppTLS, Name: "www.example.com"}, "ok"},
			{"http host", packets(t, k, segments(http, 10)), 1, rules.OutcomeResume, rules.L7Info{Proto: rules.AppHTTP, Name: "api.example.com"}, "ok"},
			{"neither tls nor http", packets(t, k, segments([]byte("SSH-2.0-OpenSSH_9.6\r\n"))), 0, rules.OutcomeResume, rules.L7Info{Proto: rules.AppUnknown}, "not_tls_or_http"},
		}
		for _, c := range cases {
			name := c.name
			if v6 {
				name += "/ipv6"
			}
			t.Run(name, func(t *testing.T) {
				in := New(Config{})
				now := time.Unix(1000, 0)
				for i, p := range c.pkts {
					r, err := in.Feed(k, isn1, p, now)
					if err != nil {
						t.Fatalf("feed %d: %v", i, err)
					}
					if i < c.waits {
						if r.Decided {
							t.Fatalf("feed %d decided early: %+v", i, r)
						}
						continue
					}
					if !r.Decided {
						t.Fatalf("feed %d: still waiting", i)
					}
					if r.Outcome != c.outcome || r.Info != c.info || r.Reason != c.reason {
						t.Fatalf("got %v %+v %q, want %v %+v %q", r.Outcome, r.Info, r.Reason, c.outcome, c.info, c.reason)
					}
					if len(r.Packets) != i+1 || !bytes.Equal(r.Packets[0], c.pkts[0]) {
						t.Fatalf("released %d packets, want the %d fed in order", len(r.Packets), i+1)
					}
					if in.Len() != 0 {
						t.Fatalf("%d sessions left after the decision", in.Len())
					}
					return
				}
				t.Fatal("never decided")
			})
		}
	}
}

func TestBounds(t *testing.T) {
	k := key(false)
	now := time.Unix(1000, 0)
	hello := goHello(t, "www.example.com")

	t.Run("16 KiB", func(t *testing.T) {
		in := New(Config{})
		head := []byte("GET / HTTP/1.1\r\nHost: a.example\r\nX-Pad: ")
		stream := append(head, bytes.Repeat([]byte("a"), 20000)...)
		var r Result
		var err error
		n := 0
		for off := 0; off < len(stream) && !r.Decided; off += 1400 {
			r, err = in.Feed(k, isn1, tcpPacket(t, k, 1, off, stream[off:min(off+1400, len(stream))]), now)
			if err != nil {
				t.Fatal(err)
			}
			n++
		}
		if !r.Decided || r.Outcome != rules.OutcomeDeny || r.Reason != ReasonBytesBound || r.Info != (rules.L7Info{Proto: rules.AppHTTP}) {
			t.Fatalf("got %v", brief(r))
		}
		if n*1400 < 16<<10 {
			t.Fatalf("decided after %d bytes, before the bound", n*1400)
		}
	})
	t.Run("segment past the bound", func(t *testing.T) {
		in := New(Config{MaxBytes: 1024})
		r, _ := in.Feed(k, isn1, tcpPacket(t, k, 1, 0, hello[:500]), now)
		if r.Decided {
			t.Fatal("decided early")
		}
		r, _ = in.Feed(k, isn1, tcpPacket(t, k, 1, 500, hello[500:]), now)
		if !r.Decided || r.Outcome != rules.OutcomeDeny || r.Reason != ReasonBytesBound || r.Info != (rules.L7Info{Proto: rules.AppTLS}) {
			t.Fatalf("got %v", brief(r))
		}
	})
	t.Run("hold timeout", func(t *testing.T) {
		in := New(Config{HoldTime: 2 * time.Second})
		if r, _ := in.Feed(k, isn1, tcpPacket(t, k, 1, 0, hello[:100]), now); r.Decided {
			t.Fatal("decided early")
		}
		if got := in.Sweep(now.Add(time.Second)); len(got) != 0 {
			t.Fatalf("swept %d before the hold time", len(got))
		}
		got := in.Sweep(now.Add(2 * time.Second))
		if len(got) != 1 || got[0].Reason != ReasonHoldTimeout || got[0].Info != (rules.L7Info{Proto: rules.AppTLS}) ||
			got[0].Outcome != rules.OutcomeDeny || len(got[0].Packets) != 1 || got[0].Held != 2*time.Second {
			t.Fatalf("got %d results", len(got))
		}
		if in.Len() != 0 {
			t.Fatal("session kept after the sweep")
		}
	})
	t.Run("hold timeout on feed", func(t *testing.T) {
		in := New(Config{})
		in.Feed(k, isn1, tcpPacket(t, k, 1, 0, hello[:100]), now)
		r, _ := in.Feed(k, isn1, tcpPacket(t, k, 1, 100, hello[100:]), now.Add(DefaultHoldTime))
		if !r.Decided || r.Outcome != rules.OutcomeDeny || r.Reason != ReasonHoldTimeout || len(r.Packets) != 2 {
			t.Fatalf("got %v", brief(r))
		}
	})
	t.Run("session limit", func(t *testing.T) {
		in := New(Config{MaxSessions: 2})
		for port := uint16(1); port <= 2; port++ {
			kk := k
			kk.SrcPort = port
			if r, _ := in.Feed(kk, isn1, tcpPacket(t, kk, 1, 0, hello[:100]), now); r.Decided {
				t.Fatal("decided early")
			}
		}
		kk := k
		kk.SrcPort = 3
		p := tcpPacket(t, kk, 1, 0, hello)
		r, _ := in.Feed(kk, isn1, p, now)
		if !r.Decided || r.Outcome != rules.OutcomeDeny || r.Reason != ReasonSessionLimit || r.Info != (rules.L7Info{Proto: rules.AppUnknown}) || len(r.Packets) != 1 || !bytes.Equal(r.Packets[0], p) {
			t.Fatalf("got %v", brief(r))
		}
		if in.Len() != 2 {
			t.Fatalf("%d sessions, want 2", in.Len())
		}
	})
	t.Run("not tcp", func(t *testing.T) {
		in := New(Config{})
		for _, p := range [][]byte{nil, {0x45}, []byte(strings.Repeat("x", 60))} {
			if _, err := in.Feed(k, isn1, p, now); err != ErrNotTCP {
				t.Fatalf("%x: err %v, want ErrNotTCP", p, err)
			}
		}
		if in.Len() != 0 {
			t.Fatal("a session for garbage")
		}
	})
	t.Run("conflicting fragments", func(t *testing.T) {
		in := New(Config{})
		frags := fragment(t, tcpPacket(t, k, 9, 0, hello), 96)
		bad := append([]byte(nil), frags[0]...)
		bad[len(bad)-1] ^= 0xff
		in.Feed(k, isn1, frags[0], now)
		r, _ := in.Feed(k, isn1, bad, now)
		if !r.Decided || r.Outcome != rules.OutcomeDeny || r.Reason != ReasonConflict {
			t.Fatalf("got %v", brief(r))
		}
	})
}

func FuzzFeed(f *testing.F) {
	hello := goHello(f, "www.example.com")
	k := key(false)
	f.Add(tcpPacket(f, k, 1, 0, hello[:300]), tcpPacket(f, k, 1, 300, hello[300:]))
	frags := fragment(f, tcpPacket(f, k, 1, 0, hello), 96)
	f.Add(frags[0], frags[1])
	k6 := key(true)
	f.Add(tcpPacket(f, k6, 1, 0, hello[:300]), tcpPacket(f, k6, 1, 300, hello[300:]))
	f.Add([]byte{0x60}, []byte{0x45, 0, 0, 20})
	f.Fuzz(func(t *testing.T, a, b []byte) {
		// Checksums checked would turn away nearly every mutation
		// before reassembly; one inspector of each kind.
		in, skip := New(Config{MaxBytes: 4096}), New(Config{MaxBytes: 4096, SkipChecksums: true})
		now := time.Unix(1000, 0)
		for _, p := range [][]byte{a, b, a} {
			if r, err := in.Feed(k, isn1, p, now); err != nil && r.Decided {
				t.Fatal("an error with a decision")
			}
			r, err := skip.Feed(k, isn1, p, now)
			if err != nil && r.Decided {
				t.Fatal("an error with a decision")
			}
			if r.Decided && skip.Len() != 0 {
				t.Fatal("a decided session kept")
			}
		}
		in.Sweep(now.Add(time.Hour))
		skip.Sweep(now.Add(time.Hour))
		if in.Len() != 0 || skip.Len() != 0 {
			t.Fatal("a session survived the sweep")
		}
	})
}

func brief(r Result) string {
	return fmt.Sprintf("decided=%v %v %+v %q (%d packets)", r.Decided, r.Outcome, r.Info, r.Reason, len(r.Packets))
}

// BenchmarkFeedPostQuantumHello is a flow's whole life in the inspector:
// a 1.5 KB ClientHello in two segments, decided on the second.
func BenchmarkFeedPostQuantumHello(b *testing.B) {
	hello := goHello(b, "post-quantum.www.example.com", tls.X25519MLKEM768)
	k := key(false)
	p1, p2 := tcpPacket(b, k, 1, 0, hello[:1400]), tcpPacket(b, k, 2, 1400, hello[1400:])
	in := New(Config{})
	now := time.Unix(1000, 0)
	b.ReportAllocs()
	for b.Loop() {
		in.Feed(k, isn1, p1, now)
		if r, _ := in.Feed(k, isn1, p2, now); !r.Decided {
			b.Fatal("not decided")
		}
	}
}

// A decided flow's buffer serves the next flow: nothing of the first may
// show through.
func TestReusedStream(t *testing.T) {
	in := New(Config{})
	k := key(false)
	now := time.Unix(1000, 0)
	long := goHello(t, "a-much-longer-name.www.example.com")
	if r, _ := in.Feed(k, isn1, tcpPacket(t, k, 1, 0, long), now); r.Info.Name != "a-much-longer-name.www.example.com" {
		t.Fatalf("first flow: %s", brief(r))
	}
	short := []byte("GET / HTTP/1.1\r\nHost: b.example\r\n")
	if r, _ := in.Feed(k, isn1, tcpPacket(t, k, 1, 0, short), now); r.Decided {
		t.Fatalf("second flow decided on the first's bytes: %s", brief(r))
	}
	r, _ := in.Feed(k, isn1, tcpPacket(t, k, 1, len(short), []byte("\r\n")), now)
	if r.Info != (rules.L7Info{Proto: rules.AppHTTP, Name: "b.example"}) {
		t.Fatalf("second flow: %s", brief(r))
	}
}

// A packet with a wrong checksum is never read: the server would drop it
// and take the client's resend, whose bytes could differ, after the
// verdict. Unfragmented, it is refused and leaves no session; reassembled
// from fragments, the flow is denied. SkipChecksums (captures made with
// offload) reads it.
func TestChecksums(t *testing.T) {
	now := time.Unix(1000, 0)
	hello := goHello(t, "www.example.com")
	for _, v6 := range []bool{false, true} {
		k := key(v6)
		ipHeader := 20
		if v6 {
			ipHeader = 40
		}
		badTCP := tcpPacket(t, k, 1, 0, hello)
		badTCP[ipHeader+16] ^= 0xff // the TCP checksum field
		cases := []struct {
			name string
			pkt  []byte
		}{{"tcp", badTCP}}
		if !v6 {
			badIP := tcpPacket(t, k, 1, 0, hello)
			badIP[10] ^= 0xff // the IPv4 header checksum
			cases = append(cases, struct {
				name string
				pkt  []byte
			}{"ipv4 header", badIP})
		}
		for _, tc := range cases {
			t.Run(fmt.Sprintf("v6=%v/%s", v6, tc.name), func(t *testing.T) {
				in := New(Config{})
				r, err := in.Feed(k, isn1, tc.pkt, now)
				if !errors.Is(err, ErrChecksum) || r.Decided || in.Len() != 0 {
					t.Fatalf("got %v, %v, %d sessions; want ErrChecksum and no session", brief(r), err, in.Len())
				}
				skip := New(Config{SkipChecksums: true})
				if r, err := skip.Feed(k, isn1, tc.pkt, now); err != nil || !r.Decided || r.Info.Name != "www.example.com" {
					t.Fatalf("SkipChecksums: got %v, %v", brief(r), err)
				}
			})
		}
		t.Run(fmt.Sprintf("v6=%v/reassembled", v6), func(t *testing.T) {
			in := New(Config{})
			var r Result
			for _, f := range fragment(t, badTCP, 512) {
				var err error
				if r, err = in.Feed(k, isn1, f, now); err != nil {
					t.Fatal(err)
				}
			}
			if !r.Decided || r.Outcome != rules.OutcomeDeny || r.Reason != ReasonChecksum {
				t.Fatalf("got %v, want deny %q", brief(r), ReasonChecksum)
			}
		})
	}
}

// A client that resends one segment over and over grows no session past
// the held-packet budget: the flow is denied.
func TestHeldBudget(t *testing.T) {
	k := key(false)
	in := New(Config{MaxBytes: 1024})
	pkt := tcpPacket(t, k, 1, 0, goHello(t, "www.example.com")[:200])
	var r Result
	feeds := 0
	for !r.Decided && feeds < 1000 {
		var err error
		if r, err = in.Feed(k, isn1, pkt, time.Unix(1000, 0)); err != nil {
			t.Fatal(err)
		}
		feeds++
	}
	if !r.Decided || r.Outcome != rules.OutcomeDeny || r.Reason != ReasonHeldBudget {
		t.Fatalf("after %d resends: %v", feeds, brief(r))
	}
	if kept := (feeds - 1) * len(pkt); kept > heldBudget(1024) {
		t.Fatalf("kept %d bytes, budget %d", kept, heldBudget(1024))
	}
}
