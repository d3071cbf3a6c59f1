package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// explain derives the direction from the endpoints and the inside
// networks, as the dataplane does, instead of assuming outbound.
func TestExplainDerivesDirection(t *testing.T) {
	file := filepath.Join(t.TempDir(), "r.yaml")
	os.WriteFile(file, []byte(`stateful:
  default_action: deny
  rules:
    - {id: web-in, priority: 10, action: allow, direction: inbound, protocol: tcp, dst_ports: [443]}
    - {id: web-out, priority: 11, action: reject, direction: outbound, protocol: tcp, dst_ports: [443]}
    - {id: ssh-local, priority: 20, action: allow, direction: local, protocol: tcp, dst_ports: [22]}
`), 0o600)
	base := []string{"explain", "--rules", file, "--inside", "198.18.0.0/16", "--local", "198.18.0.1/24"}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"from the internet to an inside host", []string{"--src", "198.19.7.7", "--dst", "198.18.5.20", "--dport", "443"},
			[]string{"direction: derived: 198.19.7.7 is outside, 198.18.5.20 is inside", "(inbound)", "web-in", "the flow is allowed"}},
		{"from an inside host to the internet", []string{"--src", "198.18.5.20", "--dst", "198.19.7.7", "--dport", "443"},
			[]string{"(outbound)", "web-out", "rejected"}},
		{"an explicit direction the endpoints contradict", []string{"--src", "198.19.7.7", "--dst", "198.18.5.20", "--dport", "443", "--direction", "outbound"},
			[]string{"outbound given; the endpoints say inbound", "web-out"}},
		{"to the appliance", []string{"--src", "198.19.7.7", "--dst", "198.18.0.1", "--dport", "22"},
			[]string{"(local)", "ssh-local", "to the appliance's kernel"}},
		{"to the appliance's subnet broadcast, UDP", []string{"--src", "198.18.0.9", "--dst", "198.18.0.255", "--proto", "udp", "--dport", "67"},
			[]string{"dataplane", "counted as pass_local"}},
		{"IPv6 neighbour solicitation", []string{"--src", "fe80::1", "--dst", "ff02::1:ff00:1", "--proto", "icmpv6", "--icmp-type", "135"},
			[]string{"dataplane", "counted as pass_link_local", "unfiltered"}},
		{"an inside source arriving on an outside interface", []string{"--src", "198.18.5.20", "--dst", "198.19.7.7", "--dport", "443", "--arrived-outside"},
			[]string{"counted as drop_spoofed_inside"}},
		{"an IPv6 link-local source to a routed address", []string{"--src", "fe80::1", "--dst", "2001:db8:9::1", "--dport", "443"},
			[]string{"counted as drop_link_scoped_src"}},
	} {
		out, errOut, err := runCmd(t, append(append([]string{}, base...), tc.args...)...)
		if err != nil {
			t.Errorf("%s: %v\n%s", tc.name, err, errOut)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: output lacks %q:\n%s", tc.name, w, out)
			}
		}
	}
	out, _, err := runCmd(t, append(append([]string{}, base...), "--src", "198.19.7.7", "--dst", "198.18.5.20", "--dport", "443", "-o", "json")...)
	if err != nil || !strings.Contains(out, `"direction_why": "derived: `) {
		t.Errorf("json: %v\n%s", err, out)
	}
	for _, bad := range [][]string{
		{"--src", "198.19.7.7", "--dst", "2001:db8:1::1"}, // mixed families
		{"--src", "198.19.7.7", "--dst", "198.18.5.20", "--direction", "sideways"},
		{"--src", "198.19.7.7", "--dst", "198.18.5.20", "--local", "nonsense"},
	} {
		_, _, err := runCmd(t, append(append([]string{}, base...), bad...)...)
		var usage usageError
		if err == nil || !errors.As(err, &usage) {
			t.Errorf("%v: %v, want a usage error", bad, err)
		}
	}
}
