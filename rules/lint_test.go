package rules

import (
	"strings"
	"testing"
)

func TestLint(t *testing.T) {
	src := `stateful:
  rules:
    - {id: web, priority: 10, action: allow, protocol: tcp, dst_ports: [80-443], dst: [198.19.0.0/16]}
    - {id: https, priority: 20, action: deny, protocol: tcp, dst_ports: [443], dst: [198.19.1.0/24]}
    - {id: web-again, priority: 30, action: deny, protocol: tcp, dst_ports: [80-443], dst: [198.19.0.0/16]}
    - {id: other, priority: 40, action: deny, protocol: udp, dst_ports: [443]}
    - {id: everything, priority: 50, action: allow}
    - {id: audit, priority: 5, action: alert, protocol: tcp}
`
	rs, err := Parse([]Source{{Name: "l.yaml", Data: []byte(src)}}, Options{Inside: testInside})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range Lint(rs) {
		got = append(got, w.String())
	}
	want := []string{
		`l.yaml:4:7: warning: rule "https" can never match: rule "web" (l.yaml:3:7) comes first and matches all its traffic`,
		`l.yaml:5:7: warning: rule "web-again" matches exactly what rule "web" (l.yaml:3:7) matches, which comes first`,
		`l.yaml:7:7: warning: rule "everything" allows everything from anywhere to anywhere`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("lint:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestExplain(t *testing.T) {
	rs, err := Load([]string{"testdata"}, Options{Inside: testInside})
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := Compile(rs, seqIDs())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		p                 Packet
		rule, verdict, at string
	}{
		{Packet{Src: mustAddr("198.18.10.5"), Dst: mustAddr("198.19.1.10"), Protocol: 6, HasPorts: true, SrcPort: 5555, DstPort: 443, Direction: Outbound}, "web-https", "the flow is allowed; its replies need no rule", "testdata/example.yaml:12:7"},
		{Packet{Src: mustAddr("198.18.250.3"), Dst: mustAddr("198.19.1.10"), Protocol: 6, HasPorts: true, DstPort: 443, Direction: Outbound}, "block-bogon", "dropped by the stateless stage", "testdata/example.yaml:5:5"},
		{Packet{Src: mustAddr("198.19.1.10"), Dst: mustAddr("198.18.1.1"), Protocol: 6, HasPorts: true, DstPort: 22, Direction: Local}, "ssh-in", "rejected: a TCP RST or ICMP unreachable goes back to the sender", "testdata/example.yaml:25:7"},
		{Packet{Src: mustAddr("198.18.1.1"), Dst: mustAddr("198.19.1.10"), Protocol: 17, HasPorts: true, DstPort: 53, Direction: Outbound}, "", "denied: dropped", ""},
	} {
		ex := Explain(rs, tbl, tc.p)
		last := ex.Decisions[len(ex.Decisions)-1]
		if last.Rule != tc.rule || ex.Verdict != tc.verdict || last.At != tc.at {
			t.Errorf("%s: decided by %q at %q, verdict %q; want %q at %q, %q", ex.Packet, last.Rule, last.At, ex.Verdict, tc.rule, tc.at, tc.verdict)
		}
	}
	// The DNS packet hit the alert rule on its way to the default.
	ex := Explain(rs, tbl, Packet{Src: mustAddr("198.18.1.1"), Dst: mustAddr("198.19.1.10"), Protocol: 17, HasPorts: true, DstPort: 53, Direction: Outbound})
	if got := ex.Decisions[1].Alerts; len(got) != 1 || got[0] != "audit-dns" {
		t.Errorf("alerts %v, want [audit-dns]", got)
	}
}
