package l7

import (
	"crypto/tls"
	"encoding/binary"
	"net"
	"testing"
	"time"
)

// captureHello returns the bytes Go's crypto/tls client sends first, read
// from the server side of an in-memory connection.
func captureHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	go func() {
		_ = tls.Client(client, cfg).Handshake() // fails once the pipe closes
	}()
	var buf []byte
	var ch ClientHello
	chunk := make([]byte, 4096)
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		n, err := server.Read(chunk)
		if err != nil {
			t.Fatalf("reading the client's hello: %v", err)
		}
		buf = append(buf, chunk[:n]...)
		if ParseClientHello(buf, &ch) != TLSNeedMore {
			return buf
		}
	}
}

func goHello(t testing.TB, name string, curves ...tls.CurveID) []byte {
	return captureHello(t, &tls.Config{ServerName: name, InsecureSkipVerify: true, CurvePreferences: curves})
}

func TestClientHelloFromGo(t *testing.T) {
	for _, tc := range []struct {
		desc       string
		serverName string
		curves     []tls.CurveID
		minLen     int
		want       string
	}{
		{"classic x25519", "www.Example.COM", []tls.CurveID{tls.X25519}, 0, "www.example.com"},
		// X25519MLKEM768 (Go's default, tlsmlkem=1) carries a 1216-byte
		// share: the hello is larger than a 1460-byte segment.
		{"post-quantum key share", "github.com", []tls.CurveID{tls.X25519MLKEM768, tls.X25519}, 1461, "github.com"},
		{"default curves", "api.github.com", nil, 1461, "api.github.com"},
		{"trailing dot", "example.org.", nil, 0, "example.org"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			data := goHello(t, tc.serverName, tc.curves...)
			if len(data) < tc.minLen {
				t.Fatalf("hello is %d bytes, want at least %d", len(data), tc.minLen)
			}
			var ch ClientHello
			if r := ParseClientHello(data, &ch); r != TLSOK || string(ch.Name()) != tc.want {
				t.Fatalf("got %s %q, want ok %q", r, ch.Name(), tc.want)
			}
			if ch.Len != len(data) || ch.ECH {
				t.Fatalf("Len %d of %d bytes, ECH %v", ch.Len, len(data), ch.ECH)
			}
			// Every proper prefix needs more bytes: a client sending one
			// byte per segment is never misjudged.
			for i := 0; i < len(data); i++ {
				if r := ParseClientHello(data[:i], &ch); r != TLSNeedMore {
					t.Fatalf("prefix of %d bytes: %s, want need_more", i, r)
				}
			}
		})
	}
}

func TestClientHelloNoSNIFromGo(t *testing.T) {
	// Go sends no server_name for an IP address.
	data := captureHello(t, &tls.Config{ServerName: "198.18.0.1", InsecureSkipVerify: true})
	var ch ClientHello
	if r := ParseClientHello(data, &ch); r != TLSNoSNI {
		t.Fatalf("got %s, want no_sni", r)
	}
}

// record wraps handshake bytes in TLS handshake records of at most size
// bytes each.
func records(hs []byte, size int) []byte {
	var out []byte
	for len(hs) > 0 {
		n := min(size, len(hs))
		out = append(out, recordHandshake, 3, 1, byte(n>>8), byte(n))
		out = append(out, hs[:n]...)
		hs = hs[n:]
	}
	return out
}

// unwrap joins the handshake bytes of Go's records.
func unwrap(t testing.TB, data []byte) []byte {
	var hs []byte
	for len(data) >= 5 {
		n := int(binary.BigEndian.Uint16(data[3:]))
		hs = append(hs, data[5:5+n]...)
		data = data[5+n:]
	}
	return hs
}

// hello builds a ClientHello handshake message with the given extensions.
func hello(exts ...[]byte) []byte {
	body := []byte{3, 3}
	body = append(body, make([]byte, 32)...)
	body = append(body, 0)                // session id
	body = append(body, 0, 2, 0x13, 0x01) // one suite
	body = append(body, 1, 0)             // null compression
	if exts != nil {
		var e []byte
		for _, x := range exts {
			e = append(e, x...)
		}
		body = binary.BigEndian.AppendUint16(body, uint16(len(e)))
		body = append(body, e...)
	}
	hs := []byte{handshakeClient, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}
	return append(hs, body...)
}

func ext(typ uint16, body []byte) []byte {
	out := binary.BigEndian.AppendUint16(nil, typ)
	out = binary.BigEndian.AppendUint16(out, uint16(len(body)))
	return append(out, body...)
}

// sniExtList is a server_name extension listing names as host_names.
func sniExtList(names ...string) []byte {
	var list []byte
	for _, n := range names {
		list = append(list, nameTypeHost)
		list = binary.BigEndian.AppendUint16(list, uint16(len(n)))
		list = append(list, n...)
	}
	body := binary.BigEndian.AppendUint16(nil, uint16(len(list)))
	return ext(extServerName, append(body, list...))
}

func TestClientHelloCrafted(t *testing.T) {
	ok := sniExtList("example.com")
	big := make([]byte, 3000)
	for _, tc := range []struct {
		desc string
		data []byte
		want TLSResult
		name string
		ech  bool
	}{
		{"one record", records(hello(ok), 1<<14), TLSOK, "example.com", false},
		{"a record per byte", records(hello(ok), 1), TLSOK, "example.com", false},
		{"split in the handshake header", records(hello(ok), 3), TLSOK, "example.com", false},
		{"bytes after the hello", append(records(hello(ok), 100), 0x17, 3, 3, 0, 1, 0), TLSOK, "example.com", false},
		{"ech", records(hello(ok, ext(extECH, []byte{0, 1, 2})), 1<<14), TLSOK, "example.com", true},
		{"padding beyond a segment", records(hello(ext(21, big), ok), 1<<14), TLSOK, "example.com", false},
		{"uppercase and dot", records(hello(sniExtList("WWW.Example.Com.")), 1<<14), TLSOK, "www.example.com", false},
		{"http", []byte("GET / HTTP/1.1\r\n"), TLSNotTLS, "", false},
		{"ssh", []byte("SSH-2.0-OpenSSH_9.6\r\n"), TLSNotTLS, "", false},
		{"one byte of http", []byte("G"), TLSNotTLS, "", false},
		{"record version 2", []byte{0x16, 2, 0}, TLSNotTLS, "", false},
		{"empty", nil, TLSNeedMore, "", false},
		{"server hello", records(append([]byte{2}, hello(ok)[1:]...), 1<<14), TLSMalformed, "", false},
		{"alert between records", append(records(hello(ok)[:10], 10), 0x15, 3, 3, 0, 2, 2, 40), TLSMalformed, "", false},
		{"empty record", []byte{0x16, 3, 1, 0, 0}, TLSMalformed, "", false},
		{"oversized record", []byte{0x16, 3, 1, 0x40, 0x01}, TLSMalformed, "", false},
		{"no extensions", records(hello(), 1<<14), TLSNoSNI, "", false},
		{"no sni", records(hello(ext(10, []byte{0, 2, 0, 29})), 1<<14), TLSNoSNI, "", false},
		{"duplicate sni extension", records(hello(ok, sniExtList("evil.example")), 1<<14), TLSDuplicateSNI, "", false},
		{"two host_names", records(hello(sniExtList("example.com", "evil.example")), 1<<14), TLSDuplicateSNI, "", false},
		{"ipv4 literal", records(hello(sniExtList("198.18.0.1")), 1<<14), TLSIPLiteral, "", false},
		{"ipv6 literal", records(hello(sniExtList("2001:db8::1")), 1<<14), TLSIPLiteral, "", false},
		{"underscore", records(hello(sniExtList("a_b.example.com")), 1<<14), TLSBadName, "", false},
		{"nul byte", records(hello(sniExtList("example.com\x00.evil")), 1<<14), TLSBadName, "", false},
		{"empty label", records(hello(sniExtList("a..example.com")), 1<<14), TLSBadName, "", false},
		{"leading hyphen", records(hello(sniExtList("-a.example.com")), 1<<14), TLSBadName, "", false},
		{"just a dot", records(hello(sniExtList(".")), 1<<14), TLSBadName, "", false},
		{"empty host_name", records(hello(sniExtList("")), 1<<14), TLSMalformed, "", false},
		{"hello larger than the budget", []byte{0x16, 3, 1, 0, 4, 1, 0, 0x40, 0}, TLSTooLarge, "", false},
		{"records beyond the budget", records(hello(ext(21, make([]byte, MaxHold)), ok), 1<<14)[:MaxHold], TLSTooLarge, "", false},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			var ch ClientHello
			r := ParseClientHello(tc.data, &ch)
			if r != tc.want || string(ch.Name()) != tc.name || (r == TLSOK && ch.ECH != tc.ech) {
				t.Fatalf("got %s %q ech %v, want %s %q ech %v", r, ch.Name(), ch.ECH, tc.want, tc.name, tc.ech)
			}
		})
	}
}

func TestClientHelloNoAllocs(t *testing.T) {
	data := goHello(t, "github.com")
	ch := new(ClientHello)
	if n := testing.AllocsPerRun(100, func() { ParseClientHello(data, ch) }); n != 0 {
		t.Fatalf("%v allocations per call", n)
	}
}

func FuzzClientHello(f *testing.F) {
	f.Add(goHello(f, "github.com"))
	f.Add(goHello(f, "www.example.com", tls.X25519))
	hs := unwrap(f, goHello(f, "example.net"))
	f.Add(records(hs, 7))
	f.Add(records(hello(sniExtList("example.com"), ext(extECH, []byte{1})), 1<<14))
	f.Add(records(hello(sniExtList("example.com", "x.example")), 1<<14))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var ch ClientHello
		r := ParseClientHello(data, &ch)
		name := ch.Name()
		if r != TLSOK {
			if len(name) != 0 {
				t.Fatalf("%s with a name %q", r, name)
			}
			return
		}
		if ch.Len <= 0 || ch.Len > len(data) {
			t.Fatalf("Len %d of %d", ch.Len, len(data))
		}
		// A name is as normalisation leaves it: one spelling per name.
		var again [MaxName]byte
		if n, r2 := NormalizeName(name, &again); r2 != NameOK || string(again[:n]) != string(name) {
			t.Fatalf("name %q is not normal", name)
		}
		// More bytes after a complete hello change nothing.
		var ch2 ClientHello
		if r2 := ParseClientHello(append(data[:ch.Len:ch.Len], 0xff), &ch2); r2 != TLSOK || string(ch2.Name()) != string(name) {
			t.Fatalf("trailing byte changed %q to %s %q", name, r2, ch2.Name())
		}
	})
}
