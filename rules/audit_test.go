package rules

import (
	"fmt"
	"strings"
	"testing"
)

// auditPolicy shadows a new deny rule (mode: audit) inside an enforcing
// policy, logs a reject rule's and the default's decisions.
const auditPolicy = `stateful:
  default_action: deny
  default_log: true
  rules:
    - id: shadow-telnet
      priority: 10
      action: deny
      mode: audit
      protocol: tcp
      dst_ports: [23]
    - id: telnet-lab
      priority: 20
      action: allow
      protocol: tcp
      dst_ports: [23]
    - id: no-smb
      priority: 30
      action: reject
      log: true
      protocol: tcp
      dst_ports: [445]
    - id: quiet-deny
      priority: 40
      action: deny
      mode: enforce
      protocol: udp
`

func parseOne(t *testing.T, text string) (*RuleSet, error) {
	t.Helper()
	return Parse([]Source{{Name: "audit.yaml", Data: []byte(text)}}, Options{Inside: testInside})
}

func tcpTo(port uint16) Packet {
	return Packet{Src: mustAddr("198.18.0.2"), Dst: mustAddr("198.19.0.9"), Protocol: 6, HasPorts: true, SrcPort: 40000, DstPort: port, Direction: Outbound}
}

func TestAuditAndLogCompile(t *testing.T) {
	rs, err := parseOne(t, auditPolicy)
	if err != nil {
		t.Fatal(err)
	}
	if !rs.DefaultLog || rs.Audit || rs.DefaultAudit() {
		t.Fatalf("default_log %v, audit %v", rs.DefaultLog, rs.Audit)
	}
	tbl, err := Compile(rs, seqIDs())
	if err != nil {
		t.Fatal(err)
	}
	st := tbl.Stateful
	for i, want := range []struct {
		action Action
		flags  RuleFlags
	}{{Alert, FlagAudit}, {Allow, 0}, {Reject, FlagLog}, {Deny, 0}} {
		if st.Actions[i] != want.action || st.Flags[i] != want.flags {
			t.Errorf("rule %s compiled to %s flags %d, want %s flags %d", rs.Stateful[i].ID, st.Actions[i], st.Flags[i], want.action, want.flags)
		}
	}
	if st.Default != Deny || st.DefaultFlags != FlagLog {
		t.Errorf("default %s flags %d, want deny with FlagLog", st.Default, st.DefaultFlags)
	}
	if tbl.Stateless.DefaultFlags != 0 {
		t.Errorf("stateless default flags %d", tbl.Stateless.DefaultFlags)
	}
	for _, tc := range []struct {
		name   string
		p      Packet
		rule   int
		alerts []int
	}{
		// The audit rule reports and the next rule decides.
		{"audit then allow", tcpTo(23), 1, []int{0}},
		{"logged reject", tcpTo(445), 2, nil},
		{"default", tcpTo(80), -1, nil},
	} {
		rule, alerts := st.Lookup(tc.p)
		ref, refAlerts := FirstMatch(rs.Stateful, tc.p)
		if rule != tc.rule || fmt.Sprint(alerts) != fmt.Sprint(tc.alerts) || ref != rule || fmt.Sprint(refAlerts) != fmt.Sprint(alerts) {
			t.Errorf("%s: tables %d %v, reference %d %v, want %d %v", tc.name, rule, alerts, ref, refAlerts, tc.rule, tc.alerts)
		}
	}
	ex := Explain(rs, tbl, tcpTo(23))
	d := ex.Decisions[len(ex.Decisions)-1]
	if d.Rule != "telnet-lab" || d.Action != "allow" || len(d.Alerts) != 0 || len(d.Audit) != 1 || d.Audit[0] != "shadow-telnet: audit: would deny" {
		t.Errorf("explain: %+v", d)
	}
}

// The policy's audit: true turns every deny and reject rule, and the
// default, into audit: nothing is denied, everything it would deny is
// reported.
func TestPolicyAudit(t *testing.T) {
	rs, err := parseOne(t, strings.Replace(auditPolicy, "  default_log: true\n", "  audit: true\n", 1))
	if err != nil {
		t.Fatal(err)
	}
	if !rs.DefaultAudit() {
		t.Fatal("default not in audit")
	}
	tbl, err := Compile(rs, seqIDs())
	if err != nil {
		t.Fatal(err)
	}
	st := tbl.Stateful
	for i, r := range rs.Stateful {
		wantAudit := r.Action == Deny || r.Action == Reject
		if r.Audit != wantAudit || (st.Flags[i] == FlagAudit) != wantAudit || (wantAudit && st.Actions[i] != Alert) {
			t.Errorf("rule %s: audit %v, compiled %s flags %d", r.ID, r.Audit, st.Actions[i], st.Flags[i])
		}
	}
	if st.Default != Allow || st.DefaultFlags != FlagAudit {
		t.Errorf("default compiled to %s flags %d, want allow with FlagAudit", st.Default, st.DefaultFlags)
	}
	ex := Explain(rs, tbl, tcpTo(445))
	d := ex.Decisions[len(ex.Decisions)-1]
	// The audit rule is what would have decided: the default is not
	// reported as auditing too.
	if d.Rule != "" || d.Action != "allow" || strings.Contains(d.Why, "audit") || fmt.Sprint(d.Audit) != "[no-smb: audit: would reject]" {
		t.Errorf("explain: %+v", d)
	}
	d = Explain(rs, tbl, tcpTo(80)).Decisions[1]
	if d.Rule != "" || d.Action != "allow" || !strings.Contains(d.Why, "audit: would deny") || d.Audit != nil {
		t.Errorf("explain of the audit default: %+v", d)
	}
	if !strings.HasPrefix(ex.Verdict, "the flow is allowed") {
		t.Errorf("verdict %q", ex.Verdict)
	}
}

// Every misuse is an error at its file:line:col; the golden file holds
// the messages.
func TestAuditLogErrors(t *testing.T) {
	cases := []struct{ name, text string }{
		{"audit on allow", "stateful:\n  rules:\n    - {id: a, priority: 1, action: allow, mode: audit}\n"},
		{"audit on alert", "stateful:\n  rules:\n    - {id: a, priority: 1, action: alert, mode: audit}\n"},
		{"audit on stateless drop", "stateless:\n  - {id: a, priority: 1, action: drop, mode: audit}\n"},
		{"log on allow", "stateful:\n  rules:\n    - {id: a, priority: 1, action: allow, log: true}\n"},
		{"log on stateless", "stateless:\n  - {id: a, priority: 1, action: drop, log: true}\n"},
		{"log with audit", "stateful:\n  rules:\n    - {id: a, priority: 1, action: deny, mode: audit, log: true}\n"},
		{"audit with l7", "stateful:\n  rules:\n    - {id: a, priority: 1, action: deny, mode: audit, protocol: tcp, tls_sni: [a.example]}\n"},
		{"unknown mode", "stateful:\n  rules:\n    - {id: a, priority: 1, action: deny, mode: shadow}\n"},
		{"log not a bool", "stateful:\n  rules:\n    - {id: a, priority: 1, action: deny, log: yes}\n"},
		{"log a list", "stateful:\n  rules:\n    - {id: a, priority: 1, action: deny, log: [true]}\n"},
		{"default_log on allow default", "stateful:\n  default_action: allow\n  default_log: true\n"},
		{"audit not a bool", "stateful:\n  audit: on\n"},
	}
	var b strings.Builder
	for _, tc := range cases {
		_, err := Parse([]Source{{Name: "audit.yaml", Data: []byte(tc.text)}}, Options{Inside: testInside, InspectL7: true})
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		fmt.Fprintf(&b, "%s:\n%v\n", tc.name, err)
	}
	twice := []Source{
		{Name: "a.yaml", Data: []byte("stateful:\n  audit: true\n  default_log: false\n")},
		{Name: "b.yaml", Data: []byte("stateful:\n  audit: false\n  default_log: true\n")},
	}
	if _, err := Parse(twice, Options{Inside: testInside}); err == nil {
		t.Error("audit and default_log set in two files: accepted")
	} else {
		fmt.Fprintf(&b, "set in two files:\n%v\n", err)
	}
	golden(t, "testdata/audit/errors.golden", b.String())
}

// A rule in mode: enforce, or with log: false, is the plain rule.
func TestEnforceIsDefault(t *testing.T) {
	rs, err := parseOne(t, "stateful:\n  audit: false\n  default_log: false\n  rules:\n    - {id: a, priority: 1, action: deny, mode: enforce, log: false}\n")
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := Compile(rs, seqIDs())
	if err != nil {
		t.Fatal(err)
	}
	if r := rs.Stateful[0]; r.Audit || r.Log || tbl.Stateful.Flags[0] != 0 || tbl.Stateful.Actions[0] != Deny || tbl.Stateful.DefaultFlags != 0 {
		t.Fatalf("rule %+v compiled to %s flags %d", r, tbl.Stateful.Actions[0], tbl.Stateful.Flags[0])
	}
}

// A Suricata file's "# natwall: mode audit" line puts its drop and reject
// rules in audit mode; pass and alert rules are unchanged.
func TestSuricataFileAudit(t *testing.T) {
	text := "# natwall: priority 100\n# natwall: mode audit\n" +
		"drop tcp $HOME_NET any -> $EXTERNAL_NET 23 (msg:\"telnet\"; sid:1;)\n" +
		"reject tcp $HOME_NET any -> $EXTERNAL_NET 445 (sid:2;)\n" +
		"pass tcp $HOME_NET any -> $EXTERNAL_NET 23 (sid:3;)\n"
	rs, err := Parse([]Source{{Name: "shadow.rules", Data: []byte(text)}}, Options{Inside: testInside})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rs.Stateful {
		got = append(got, fmt.Sprintf("%s %s audit=%v", r.ID, r.Action, r.Audit))
	}
	if want := "[sid:1 deny audit=true sid:2 reject audit=true sid:3 allow audit=false]"; fmt.Sprint(got) != want {
		t.Fatalf("got %v, want %s", got, want)
	}
	tbl, err := Compile(rs, seqIDs())
	if err != nil {
		t.Fatal(err)
	}
	if rule, alerts := tbl.Stateful.Lookup(tcpTo(23)); rule != 2 || fmt.Sprint(alerts) != "[0]" {
		t.Fatalf("telnet: rule %d alerts %v, want the pass rule after the audit alert", rule, alerts)
	}

	var b strings.Builder
	for _, bad := range []string{
		"# natwall: priority 100\n# natwall: mode shadow\ndrop tcp any any -> any 23 (sid:1;)\n",
		"# natwall: priority 100\n# natwall: mode audit\n# natwall: mode enforce\ndrop tcp any any -> any 23 (sid:1;)\n",
		"# natwall: priority 100\ndrop tcp any any -> any 23 (sid:1;)\n# natwall: mode audit\n",
		"# natwall: priority 100\n# natwall: mode audit\ndrop tls any any -> any any (tls.sni; content:\"a.example\"; sid:1;)\n",
	} {
		_, err := Parse([]Source{{Name: "shadow.rules", Data: []byte(bad)}}, Options{Inside: testInside, InspectL7: true})
		if err == nil {
			t.Errorf("accepted:\n%s", bad)
			continue
		}
		fmt.Fprintf(&b, "%v\n", err)
	}
	golden(t, "testdata/audit/suricata-errors.golden", b.String())
}

// A flow resumed after its L7 rule meets audit rules as the tables do:
// reported, and evaluation goes on.
func TestResumeThroughAuditRule(t *testing.T) {
	rs, err := Parse([]Source{{Name: "audit.yaml", Data: []byte(`stateful:
  rules:
    - {id: sni-alert, priority: 1, action: alert, protocol: tcp, tls_sni: [a.example]}
    - {id: shadow, priority: 2, action: deny, mode: audit, protocol: tcp}
    - {id: web, priority: 3, action: allow, protocol: tcp}
`)}}, Options{Inside: testInside, InspectL7: true})
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := Compile(rs, seqIDs())
	if err != nil {
		t.Fatal(err)
	}
	info := L7Info{Proto: AppTLS, Name: "a.example"}
	i, pendingAlerts := tbl.Stateful.Lookup(tcpTo(443))
	if i != 0 || len(pendingAlerts) != 0 {
		t.Fatalf("lookup stops at %d %v, want the L7 rule 0", i, pendingAlerts)
	}
	ref, refAlerts := Resume(rs.Stateful, tcpTo(443), 0, info)
	got, alerts := tbl.Stateful.Resume(rs.Stateful, tcpTo(443), 0, info)
	if ref != 2 || got != 2 || fmt.Sprint(refAlerts) != "[0 1]" || fmt.Sprint(alerts) != fmt.Sprint(refAlerts) {
		t.Fatalf("reference %d %v, tables %d %v; want web after the alert and the audit rule", ref, refAlerts, got, alerts)
	}
}
