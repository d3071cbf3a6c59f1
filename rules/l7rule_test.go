package rules

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

const l7YAML = `stateful:
  default_action: deny
  rules:
    - id: audit-tls
      priority: 5
      action: alert
      protocol: tcp
      dst_ports: [443]
      tls_sni: [.tracker.example]
    - id: github
      priority: 10
      action: allow
      protocol: tcp
      dst_ports: [443]
      tls_sni: [github.com, .githubusercontent.com, API.GitHub.com.]
    - id: bad-sites
      priority: 20
      action: reject
      protocol: tcp
      dst_ports: [80, 443]
      tls_sni: [.bad.example]
      http_host: [.bad.example]
    - id: web-out
      priority: 30
      action: allow
      protocol: tcp
      dst_ports: [80, 443]
`

func loadL7(t *testing.T) (*RuleSet, *Tables) {
	t.Helper()
	rs, err := Parse([]Source{{Name: "l7.yaml", Data: []byte(l7YAML)}}, Options{Inside: testInside, InspectL7: true})
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := Compile(rs, seqIDs())
	if err != nil {
		t.Fatal(err)
	}
	return rs, tbl
}

func TestL7Conditions(t *testing.T) {
	rs, tbl := loadL7(t)
	if got := fmt.Sprint(tbl.Stateful.L7); got != "[true true true false]" {
		t.Fatalf("compiled L7 marks %s", got)
	}
	if got := describeL7(rs.Stateful[1].L7); got != "tls_sni github.com or tls_sni .githubusercontent.com or tls_sni api.github.com" {
		t.Fatalf("github's names: %s", got)
	}
	https := Packet{Src: mustAddr("198.18.1.1"), Dst: mustAddr("198.19.1.10"), Protocol: 6, HasPorts: true, SrcPort: 40000, DstPort: 443, Direction: Outbound}
	http := https
	http.DstPort = 80
	ssh := https
	ssh.DstPort = 22
	for _, tc := range []struct {
		desc   string
		p      Packet
		info   *L7Info
		rule   string
		action string
		alerts string
	}{
		{"first packet is pending", https, nil, "audit-tls", "pending", ""},
		{"l3/l4 decides without l7", ssh, nil, "", "deny", ""},
		{"exact", https, &L7Info{AppTLS, "github.com"}, "github", "allow", ""},
		{"written in capitals with a dot", https, &L7Info{AppTLS, "api.github.com"}, "github", "allow", ""},
		{"exact is not a suffix", https, &L7Info{AppTLS, "evilgithub.com"}, "web-out", "allow", ""},
		{"exact is not a subdomain", https, &L7Info{AppTLS, "www.github.com"}, "web-out", "allow", ""},
		{"domain apex", https, &L7Info{AppTLS, "githubusercontent.com"}, "github", "allow", ""},
		{"subdomain", https, &L7Info{AppTLS, "raw.githubusercontent.com"}, "github", "allow", ""},
		{"suffix without a dot is another domain", https, &L7Info{AppTLS, "evilgithubusercontent.com"}, "web-out", "allow", ""},
		{"sni rule does not see http", http, &L7Info{AppHTTP, "github.com"}, "web-out", "allow", ""},
		{"host rule", http, &L7Info{AppHTTP, "www.bad.example"}, "bad-sites", "reject", ""},
		{"sni of the same rule", https, &L7Info{AppTLS, "bad.example"}, "bad-sites", "reject", ""},
		{"alert then decide", https, &L7Info{AppTLS, "a.tracker.example"}, "web-out", "allow", "audit-tls"},
		{"no sni matches no name", https, &L7Info{AppTLS, ""}, "web-out", "allow", ""},
		{"not tls", https, &L7Info{AppUnknown, ""}, "web-out", "allow", ""},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			ex := ExplainFlow(rs, tbl, tc.p, tc.info)
			last := ex.Decisions[len(ex.Decisions)-1]
			if last.Rule != tc.rule || last.Action != tc.action || strings.Join(last.Alerts, ",") != tc.alerts {
				t.Fatalf("%s: %+v", ex.Packet, ex.Decisions)
			}
			if tc.info != nil {
				// The reference evaluation agrees with the tables.
				i, _ := FirstMatch(rs.Stateful, tc.p)
				j, _ := Resume(rs.Stateful, tc.p, i, *tc.info)
				if got := idOf(rs.Stateful, j); got != tc.rule {
					t.Fatalf("reference resumed to %q", got)
				}
			}
		})
	}
	ex := ExplainFlow(rs, tbl, https, nil)
	if !strings.HasPrefix(ex.Verdict, "pending") || ex.Decisions[1].L7 != "tls_sni .tracker.example" {
		t.Fatalf("pending explanation: %+v", ex)
	}
}

func idOf(rules []Rule, i int) string {
	if i < 0 {
		return ""
	}
	return rules[i].ID
}

func TestL7Errors(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"stateless", "stateless:\n  - {id: a, priority: 1, action: drop, tls_sni: [a.example]}\n", "f.yaml:2:40: tls_sni is for stateful rules"},
		{"no protocol", "stateful:\n  rules:\n    - {id: a, priority: 1, action: allow, tls_sni: [a.example]}\n", "f.yaml:3:43: tls_sni and http_host need protocol tcp"},
		{"udp", "stateful:\n  rules:\n    - {id: a, priority: 1, action: allow, protocol: udp, http_host: [a.example]}\n", "need protocol tcp"},
		{"wildcard", "stateful:\n  rules:\n    - {id: a, priority: 1, action: allow, protocol: tcp, tls_sni: ['*.a.example']}\n", "f.yaml:3:68: tls_sni: \"*.a.example\": wildcards are written .a.example"},
		{"ip literal", "stateful:\n  rules:\n    - {id: a, priority: 1, action: allow, protocol: tcp, tls_sni: [198.18.0.1]}\n", "is an IP address, not a name"},
		{"bad name", "stateful:\n  rules:\n    - {id: a, priority: 1, action: allow, protocol: tcp, http_host: [a_b.example]}\n", "is not a DNS name"},
		{"empty", "stateful:\n  rules:\n    - {id: a, priority: 1, action: allow, protocol: tcp, http_host: []}\n", "empty http_host"},
		{"not a list of names", "stateful:\n  rules:\n    - {id: a, priority: 1, action: allow, protocol: tcp, http_host: [{a: b}]}\n", "http_host entries are names"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]Source{{Name: "f.yaml", Data: []byte(tc.yaml)}}, Options{Inside: testInside, InspectL7: true})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// An L7 rule shadows only rules with its own condition; an L3/L4 rule
// before an L7 rule shadows it.
func TestL7Lint(t *testing.T) {
	src := `stateful:
  rules:
    - {id: sni, priority: 10, action: allow, protocol: tcp, tls_sni: [a.example]}
    - {id: web, priority: 20, action: deny, protocol: tcp}
    - {id: sni-again, priority: 30, action: deny, protocol: tcp, tls_sni: [a.example]}
    - {id: all, priority: 40, action: allow, protocol: tcp, tls_sni: [.example]}
`
	rs, err := Parse([]Source{{Name: "l.yaml", Data: []byte(src)}}, Options{Inside: testInside, InspectL7: true})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range Lint(rs) {
		got = append(got, w.Rule)
	}
	if strings.Join(got, ",") != "sni-again,all" {
		t.Fatalf("lint warned about %v, want [sni-again all]", got)
	}
	// A rule for every TLS flow covers the name rules after it; a name
	// rule covers neither a wider name rule nor an HTTP one.
	sur := "# natwall: priority 1\n" +
		"drop tls any any -> any any (sid:1;)\n" +
		"pass tls any any -> any any (tls.sni; content:\"a.example\"; startswith; endswith; sid:2;)\n" +
		"pass http any any -> any any (http.host; content:\"a.example\"; sid:3;)\n"
	rs, err = Parse([]Source{{Name: "l.rules", Data: []byte(sur)}}, Options{InspectL7: true})
	if err != nil {
		t.Fatal(err)
	}
	got = nil
	for _, w := range Lint(rs) {
		got = append(got, w.Rule)
	}
	if strings.Join(got, ",") != "sid:2" {
		t.Fatalf("suricata lint warned about %v, want [sid:2]", got)
	}
}

// Random rule sets with L7 conditions: the tables' pending rule and their
// resumed decision agree with the rules read in order.
func TestL7ResumeMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	names := []string{"a.example", ".example", "b.a.example", ".a.example", "c.test"}
	infos := []L7Info{{AppTLS, "a.example"}, {AppTLS, "b.a.example"}, {AppHTTP, "c.test"}, {AppHTTP, "x.example"}, {AppTLS, ""}, {AppUnknown, ""}}
	for set := 0; set < 40; set++ {
		var b strings.Builder
		b.WriteString("stateful:\n  rules:\n")
		for i := 0; i < 1+r.IntN(100); i++ {
			fmt.Fprintf(&b, "    - {id: r%d, priority: %d, action: %s, protocol: tcp, dst_ports: [%d]", i, i, []string{"allow", "deny", "reject", "alert"}[r.IntN(4)], 1+r.IntN(4))
			if r.IntN(2) == 0 {
				fmt.Fprintf(&b, ", %s: [%s]", []string{"tls_sni", "http_host"}[r.IntN(2)], names[r.IntN(len(names))])
			}
			b.WriteString("}\n")
		}
		rs, err := Parse([]Source{{Name: "r.yaml", Data: []byte(b.String())}}, Options{InspectL7: true})
		if err != nil {
			t.Fatal(err)
		}
		tbl, err := Compile(rs, seqIDs())
		if err != nil {
			t.Fatal(err)
		}
		for k := 0; k < 50; k++ {
			p := Packet{Src: mustAddr("198.18.0.1"), Dst: mustAddr("198.19.0.1"), Protocol: 6, HasPorts: true, DstPort: uint16(1 + r.IntN(5)), Direction: Outbound}
			info := infos[r.IntN(len(infos))]
			i, ia := tbl.Stateful.Lookup(p)
			j, ja := FirstMatch(rs.Stateful, p)
			if i != j || fmt.Sprint(ia) != fmt.Sprint(ja) {
				t.Fatalf("first packet: tables %d %v, reference %d %v", i, ia, j, ja)
			}
			if i < 0 || !tbl.Stateful.L7[i] {
				continue
			}
			i, ia = tbl.Stateful.Resume(rs.Stateful, p, i, info)
			j, ja = Resume(rs.Stateful, p, j, info)
			if i != j || fmt.Sprint(ia) != fmt.Sprint(ja) {
				t.Fatalf("resumed with %v: tables %d %v, reference %d %v", info, i, ia, j, ja)
			}
		}
	}
}

// A daemon that cannot inspect refuses L7 rules instead of enforcing
// their addresses and ports alone.
func TestL7RefusedWithoutInspector(t *testing.T) {
	_, err := Parse([]Source{{Name: "l7.yaml", Data: []byte(l7YAML)}}, Options{Inside: testInside})
	if err == nil || !strings.Contains(err.Error(), `l7.yaml:10:7: rule "github" has an L7 condition, which this natwall cannot enforce without its L7 inspector`) {
		t.Fatalf("error %v", err)
	}
	if _, err := Parse([]Source{{Name: "plain.yaml", Data: []byte("stateful:\n  rules:\n    - {id: a, priority: 1, action: allow, protocol: tcp}\n")}}, Options{}); err != nil {
		t.Fatalf("a set without L7 rules: %v", err)
	}
}
