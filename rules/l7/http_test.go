package l7

import (
	"bufio"
	"bytes"
	"net"
	"net/http"
	"strings"
	"testing"
)

// captureRequest returns the bytes Go's net/http client sends for req.
func captureRequest(t testing.TB, req *http.Request) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := req.Write(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestHTTPRequestFromGo(t *testing.T) {
	for _, tc := range []struct{ url, host, want string }{
		{"http://Example.COM/index.html", "", "example.com"},
		{"http://example.com:8080/a?b=c", "", "example.com"},
		{"http://example.org./", "", "example.org"},
		{"http://198.18.0.1/", "api.example.net", "api.example.net"},
	} {
		req, err := http.NewRequest("GET", tc.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if tc.host != "" {
			req.Host = tc.host
		}
		req.Header.Set("User-Agent", strings.Repeat("x", 3000)) // longer than a segment
		data := captureRequest(t, req)
		var r HTTPRequest
		if got := ParseHTTPRequest(data, &r); got != HTTPOK || string(r.Name()) != tc.want || r.Len != len(data) || r.AbsoluteURI {
			t.Fatalf("%s: got %s %q Len %d of %d", tc.url, got, r.Name(), r.Len, len(data))
		}
		for i := 0; i < len(data); i++ {
			if got := ParseHTTPRequest(data[:i], &r); got != HTTPNeedMore {
				t.Fatalf("%s: prefix of %d bytes: %s, want need_more", tc.url, i, got)
			}
		}
	}
}

func TestHTTPRequestCrafted(t *testing.T) {
	long := strings.Repeat("a", MaxHold)
	for _, tc := range []struct {
		desc, data string
		want       HTTPResult
		name       string
		absolute   bool
	}{
		{"plain", "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", HTTPOK, "example.com", false},
		{"http/1.0", "GET / HTTP/1.0\r\nhost:EXAMPLE.com.\r\n\r\n", HTTPOK, "example.com", false},
		{"port", "GET / HTTP/1.1\r\nHost: example.com:8080\r\n\r\n", HTTPOK, "example.com", false},
		{"whitespace around the value", "GET / HTTP/1.1\r\nHost: \t example.com \t\r\n\r\n", HTTPOK, "example.com", false},
		{"body after the head", "POST /x HTTP/1.1\r\nHost: a.example\r\nContent-Length: 3\r\n\r\nabc", HTTPOK, "a.example", false},
		{"absolute uri", "GET http://example.com/x HTTP/1.1\r\nHost: example.com\r\n\r\n", HTTPOK, "example.com", true},
		{"absolute uri without host", "GET http://Example.com:80/x HTTP/1.0\r\n\r\n", HTTPOK, "example.com", true},
		{"absolute uri and empty host", "GET http://example.com/x HTTP/1.1\r\nHost:\r\n\r\n", HTTPOK, "example.com", true},
		{"absolute uri disagrees with host", "GET http://evil.example/ HTTP/1.1\r\nHost: example.com\r\n\r\n", HTTPHostMismatch, "", true},
		{"connect", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", HTTPOK, "example.com", true},
		{"connect disagrees", "CONNECT evil.example:443 HTTP/1.1\r\nHost: example.com\r\n\r\n", HTTPHostMismatch, "", true},
		{"userinfo", "GET http://example.com@evil.example/ HTTP/1.1\r\nHost: example.com\r\n\r\n", HTTPMalformed, "", false},
		{"options asterisk", "OPTIONS * HTTP/1.1\r\nHost: example.com\r\n\r\n", HTTPOK, "example.com", false},
		{"duplicate host", "GET / HTTP/1.1\r\nHost: example.com\r\nHost: evil.example\r\n\r\n", HTTPDuplicateHost, "", false},
		{"duplicate identical host", "GET / HTTP/1.1\r\nHost: example.com\r\nhOST: example.com\r\n\r\n", HTTPDuplicateHost, "", false},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: example.com\r\n evil.example\r\n\r\n", HTTPMalformed, "", false},
		{"obs-fold of another field", "GET / HTTP/1.1\r\nX-A: 1\r\n\t2\r\nHost: example.com\r\n\r\n", HTTPMalformed, "", false},
		{"space before colon", "GET / HTTP/1.1\r\nHost : evil.example\r\nHost: example.com\r\n\r\n", HTTPMalformed, "", false},
		{"bare lf", "GET / HTTP/1.1\nHost: example.com\n\n", HTTPMalformed, "", false},
		{"bare lf in headers", "GET / HTTP/1.1\r\nHost: example.com\n\r\n", HTTPMalformed, "", false},
		{"bare cr", "GET / HTTP/1.1\r\nHost: example.com\rX: y\r\n\r\n", HTTPMalformed, "", false},
		{"nul in value", "GET / HTTP/1.1\r\nHost: example.com\x00.evil\r\n\r\n", HTTPMalformed, "", false},
		{"missing host 1.1", "GET / HTTP/1.1\r\nUser-Agent: x\r\n\r\n", HTTPNoHost, "", false},
		{"empty host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", HTTPNoHost, "", false},
		{"ipv4 host", "GET / HTTP/1.1\r\nHost: 198.18.0.1:80\r\n\r\n", HTTPIPLiteral, "", false},
		{"ipv6 host", "GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n", HTTPIPLiteral, "", false},
		{"underscore host", "GET / HTTP/1.1\r\nHost: a_b.example\r\n\r\n", HTTPBadName, "", false},
		{"bad port", "GET / HTTP/1.1\r\nHost: example.com:http\r\n\r\n", HTTPBadName, "", false},
		{"incomplete head", "GET / HTTP/1.1\r\nHost: example.com\r\n", HTTPNeedMore, "", false},
		{"incomplete after cr", "GET / HTTP/1.1\r\nHost: example.com\r\n\r", HTTPNeedMore, "", false},
		{"empty", "", HTTPNeedMore, "", false},
		{"head beyond the budget", "GET / HTTP/1.1\r\nX: " + long, HTTPTooLarge, "", false},
		{"tls", "\x16\x03\x01\x02\x00\x01", HTTPNotHTTP, "", false},
		{"ssh", "SSH-2.0-OpenSSH_9.6\r\n", HTTPNotHTTP, "", false},
		{"one byte of tls", "\x16", HTTPNotHTTP, "", false},
		{"long first word", strings.Repeat("A", 40), HTTPNotHTTP, "", false},
		{"http/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", HTTPNotHTTP, "", false},
		{"http/0.9", "GET /\r\n", HTTPNotHTTP, "", false},
		{"double space", "GET  / HTTP/1.1\r\nHost: example.com\r\n\r\n", HTTPMalformed, "", false},
		{"relative target", "GET example.com HTTP/1.1\r\nHost: example.com\r\n\r\n", HTTPMalformed, "", false},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			var r HTTPRequest
			got := ParseHTTPRequest([]byte(tc.data), &r)
			if got != tc.want || string(r.Name()) != tc.name || (got == HTTPOK && r.AbsoluteURI != tc.absolute) {
				t.Fatalf("got %s %q absolute %v, want %s %q absolute %v", got, r.Name(), r.AbsoluteURI, tc.want, tc.name, tc.absolute)
			}
		})
	}
}

func TestHTTPRequestNoAllocs(t *testing.T) {
	data := []byte("GET http://www.example.com/path HTTP/1.1\r\nHost: WWW.example.com:80\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n")
	r := new(HTTPRequest)
	if n := testing.AllocsPerRun(100, func() { ParseHTTPRequest(data, r) }); n != 0 {
		t.Fatalf("%v allocations per call", n)
	}
}

func FuzzHTTPRequest(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"))
	f.Add([]byte("GET http://example.com/x HTTP/1.1\r\nHost: example.com:80\r\n\r\n"))
	f.Add([]byte("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a.example\r\n b.example\r\n\r\n"))
	f.Add([]byte("OPTIONS * HTTP/1.0\r\n\r\n"))
	f.Add([]byte("\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var r HTTPRequest
		res := ParseHTTPRequest(data, &r)
		name := r.Name()
		if res != HTTPOK {
			if len(name) != 0 {
				t.Fatalf("%s with a name %q", res, name)
			}
			return
		}
		if r.Len <= 0 || r.Len > len(data) {
			t.Fatalf("Len %d of %d", r.Len, len(data))
		}
		var again [MaxName]byte
		if n, r2 := NormalizeName(name, &again); r2 != NameOK || string(again[:n]) != string(name) {
			t.Fatalf("name %q is not normal", name)
		}
		// Go's server reads the same head for the same host.
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(data[:r.Len])))
		if err != nil {
			t.Fatalf("ok %q, but net/http rejects the head: %v", name, err)
		}
		host := req.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.TrimSuffix(strings.ToLower(host), ".")
		if host != string(name) {
			t.Fatalf("name %q, net/http's host %q", name, req.Host)
		}
		// Bytes after a complete head change nothing.
		var r2 HTTPRequest
		if res2 := ParseHTTPRequest(append(data[:r.Len:r.Len], 0xff), &r2); res2 != HTTPOK || string(r2.Name()) != string(name) {
			t.Fatalf("trailing byte changed %q to %s %q", name, res2, r2.Name())
		}
	})
}

func BenchmarkHTTPRequest(b *testing.B) {
	data := []byte("GET /index.html HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\nAccept-Encoding: gzip\r\n\r\n")
	var r HTTPRequest
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if ParseHTTPRequest(data, &r) != HTTPOK {
			b.Fatal("not ok")
		}
	}
}
