package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckSuricataCorpus(t *testing.T) {
	out, errOut, err := runCmd(t, "check", "--inside", "198.18.0.0/16,2001:db8:1::/48", "../../rules/testdata/suricata")
	if err != nil || !strings.Contains(out, "ok: 0 stateless and 25 stateful rules (15 with L7 conditions)") {
		t.Fatalf("check: %v\n%s%s", err, out, errOut)
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.rules")
	os.WriteFile(bad, []byte("# natwall: priority 1\nalert tls any any -> any any (tls.sni; ja3.hash; sid:1;)\n"), 0o600)
	_, errOut, err = runCmd(t, "check", bad)
	if err == nil || !strings.Contains(errOut, bad+`:2:40: unsupported keyword "ja3.hash"`) {
		t.Fatalf("check bad: %v\n%s", err, errOut)
	}
}

func TestExplainSNI(t *testing.T) {
	base := []string{"explain", "--rules", "../../rules/testdata/suricata", "--inside", "198.18.0.0/16,2001:db8:1::/48",
		"--src", "198.18.1.1", "--dst", "198.19.1.10", "--dport", "443"}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{nil, []string{"stateful  pending sid:101", "L7: tls_sni www.example.com", "sid 101 rev 1: allow the company site over TLS", "pending: the handshake passes"}},
		{[]string{"--sni", "WWW.Example.com."}, []string{"stateful  allow  sid:101", "evaluation resumed at the pending rule with SNI www.example.com", "the flow is allowed"}},
		{[]string{"--sni", "other.example"}, []string{"stateful  deny   sid:104", "denied: dropped"}},
		{[]string{"--sni", ""}, []string{"ClientHello without SNI", "stateful  deny   sid:104"}},
		{[]string{"--host", "repo.example.org"}, []string{"Host repo.example.org", "deny   sid:105"}},
	} {
		out, errOut, err := runCmd(t, append(append([]string(nil), base...), tc.args...)...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", tc.args, err, errOut)
		}
		// Columns are padded to the widest cell: compare with runs of
		// spaces collapsed.
		flat := strings.Join(strings.Fields(out), " ")
		for _, w := range tc.want {
			if !strings.Contains(flat, strings.Join(strings.Fields(w), " ")) {
				t.Errorf("%v: output lacks %q:\n%s", tc.args, w, out)
			}
		}
	}
}

// Flag mistakes read as sentences, not as Go's parse errors.
func TestExplainFlagErrors(t *testing.T) {
	base := []string{"explain", "--rules", "../../rules/testdata", "--inside", "198.18.0.0/16"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--dst", "198.19.1.1"}, "--src is required: the packet's source address"},
		{[]string{"--src", "198.18.1.1"}, "--dst is required: the packet's destination address"},
		{[]string{"--src", "nope", "--dst", "198.19.1.1"}, `--src "nope" is not an IPv4 or IPv6 address`},
		{[]string{"--src", "198.18.1.1", "--dst", "2001:db8::1"}, "different address families"},
		{[]string{"--src", "198.18.1.1", "--dst", "198.19.1.1", "--proto", "sctp"}, `--proto "sctp" is not tcp, udp, icmp, icmpv6 or a protocol number`},
		{[]string{"--src", "198.18.1.1", "--dst", "198.19.1.1", "--sni", "198.19.1.1"}, "is an IP address"},
		{[]string{"--src", "198.18.1.1", "--dst", "198.19.1.1", "--sni", "a", "--host", "b"}, "none of the others can be"},
	} {
		_, _, err := runCmd(t, append(append([]string(nil), base...), tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "ParseAddr") {
			t.Errorf("%v: error %v, want %q", tc.args, err, tc.want)
		}
	}
}
