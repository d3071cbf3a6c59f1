package rules

import (
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/natwall/natwall/rules/l7"
)

// goClientHello is the first flight of Go's TLS client for name.
func goClientHello(t *testing.T, name string) []byte {
	t.Helper()
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	go func() { _ = tls.Client(client, &tls.Config{ServerName: name, InsecureSkipVerify: true}).Handshake() }()
	var buf []byte
	chunk := make([]byte, 4096)
	var ch l7.ClientHello
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		n, err := server.Read(chunk)
		if err != nil {
			t.Fatal(err)
		}
		buf = append(buf, chunk[:n]...)
		if l7.ParseClientHello(buf, &ch) != l7.TLSNeedMore {
			return buf
		}
	}
}

// From a pending flow's bytes to its verdict, with the corpus: the
// classification and the "no name" semantics, then the resumed rules.
func TestClassifyAndResume(t *testing.T) {
	rs, err := Load([]string{"testdata/suricata"}, Options{Inside: testInside, InspectL7: true})
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := Compile(rs, seqIDs())
	if err != nil {
		t.Fatal(err)
	}
	hello := goClientHello(t, "S3.amazonaws.com")
	for _, tc := range []struct {
		desc    string
		data    []byte
		port    uint16
		out     Outcome
		reason  string
		rule    string
		verdict string
	}{
		{"tls allowed by dotprefix", hello, 443, OutcomeResume, "ok", "sid:102", "allowed"},
		{"half a hello waits", hello[:len(hello)/2], 443, OutcomeWait, "need_more", "", ""},
		{"tls to another name", goClientHello(t, "example.net"), 443, OutcomeResume, "ok", "sid:104", "denied"},
		{"tls without sni", goClientHello(t, "198.19.0.1"), 443, OutcomeResume, "no_sni", "sid:104", "denied"},
		{"http allowed", []byte("GET / HTTP/1.1\r\nHost: Repo.Example.org:80\r\n\r\n"), 80, OutcomeResume, "ok", "sid:103", "allowed"},
		{"http without host", []byte("GET / HTTP/1.0\r\n\r\n"), 80, OutcomeResume, "no_host", "sid:105", "denied"},
		{"http by ip", []byte("GET / HTTP/1.1\r\nHost: 198.19.0.1\r\n\r\n"), 80, OutcomeResume, "ip_literal", "sid:105", "denied"},
		{"two hosts", []byte("GET / HTTP/1.1\r\nHost: repo.example.org\r\nHost: evil.example\r\n\r\n"), 80, OutcomeDeny, "duplicate_host", "", ""},
		{"uri disagrees", []byte("GET http://evil.example/ HTTP/1.1\r\nHost: repo.example.org\r\n\r\n"), 80, OutcomeDeny, "host_mismatch", "", ""},
		{"folded host", []byte("GET / HTTP/1.1\r\nHost: repo.example.org\r\n evil\r\n\r\n"), 80, OutcomeDeny, "malformed", "", ""},
		{"half a head waits", []byte("GET / HTTP/1.1\r\nHost: repo"), 80, OutcomeWait, "need_more", "", ""},
		{"neither", []byte("SSH-2.0-OpenSSH_9.6\r\n"), 22, OutcomeResume, "not_tls_or_http", "", "denied"},
		{"no head within the hold budget", append([]byte("GET / HTTP/1.1\r\nX: "), []byte(strings.Repeat("a", l7.MaxHold))...), 80, OutcomeDeny, "too_large", "", ""},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			var ch l7.ClientHello
			var req l7.HTTPRequest
			info, out, reason := Classify(tc.data, &ch, &req)
			if out != tc.out || reason != tc.reason {
				t.Fatalf("classified %v %s %s, want %s %s", info, out, reason, tc.out, tc.reason)
			}
			if out != OutcomeResume {
				return
			}
			p := Packet{Src: mustAddr("198.18.1.1"), Dst: mustAddr("198.19.0.1"), Protocol: 6, HasPorts: true, SrcPort: 40000, DstPort: tc.port, Direction: Outbound}
			ex := ExplainFlow(rs, tbl, p, &info)
			last := ex.Decisions[len(ex.Decisions)-1]
			if last.Rule != tc.rule || !strings.Contains(ex.Verdict, tc.verdict) {
				t.Fatalf("%s: %+v, %s", ex.Packet, ex.Decisions, ex.Verdict)
			}
		})
	}
}
