package rules

import (
	"strings"
	"testing"

	"github.com/natwall/natwall/rules/l7"
)

const domainListYAML = `domain_lists:
  - id: blocked
    priority: 10
    type: rejectlist
    target_types: [tls_sni]
    targets: [.bad.example]
  - id: seen
    priority: 15
    type: alertlist
    target_types: [tls_sni]
    targets: [.watch.example]
  - id: egress
    priority: 20
    type: allowlist
    target_types: [TLS_SNI, http_host]
    targets: [.example.com, api.github.com]
stateful:
  default_action: allow
  rules:
    - {id: ssh-out, priority: 5, action: allow, protocol: tcp, dst_ports: [22]}
`

func TestDomainLists(t *testing.T) {
	rs, err := Parse([]Source{{Name: "d.yaml", Data: []byte(domainListYAML)}}, Options{Inside: testInside, InspectL7: true})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range rs.Stateful {
		ids = append(ids, r.ID)
	}
	if got := strings.Join(ids, " "); got != "ssh-out blocked:tls_sni seen:tls_sni egress:tls_sni egress:tls_sni:other egress:http_host egress:http_host:other" {
		t.Fatalf("generated rules %s", got)
	}
	tbl, err := Compile(rs, seqIDs())
	if err != nil {
		t.Fatal(err)
	}
	out := Packet{Src: mustAddr("198.18.1.1"), Dst: mustAddr("198.19.1.10"), Protocol: 6, HasPorts: true, SrcPort: 40000, DstPort: 443, Direction: Outbound}
	inbound := Packet{Src: mustAddr("198.19.1.10"), Dst: mustAddr("198.18.1.1"), Protocol: 6, HasPorts: true, SrcPort: 40000, DstPort: 443, Direction: Inbound}
	for _, tc := range []struct {
		desc         string
		p            Packet
		info         L7Info
		rule, action string
		alerts       string
	}{
		{"listed apex", out, L7Info{AppTLS, "example.com"}, "egress:tls_sni", "allow", ""},
		{"listed subdomain over http", out, L7Info{AppHTTP, "www.example.com"}, "egress:http_host", "allow", ""},
		{"listed exact", out, L7Info{AppTLS, "api.github.com"}, "egress:tls_sni", "allow", ""},
		{"an allowlist denies other names", out, L7Info{AppTLS, "github.com"}, "egress:tls_sni:other", "deny", ""},
		{"and other hosts", out, L7Info{AppHTTP, "evil.example"}, "egress:http_host:other", "deny", ""},
		{"and tls without sni", out, L7Info{AppTLS, ""}, "egress:tls_sni:other", "deny", ""},
		{"but not other protocols", out, L7Info{AppUnknown, ""}, "", "allow", ""},
		{"rejectlist first", out, L7Info{AppTLS, "x.bad.example"}, "blocked:tls_sni", "reject", ""},
		{"alertlist reports, then the allowlist decides", out, L7Info{AppTLS, "a.watch.example"}, "egress:tls_sni:other", "deny", "seen:tls_sni"},
		{"lists apply from the inside only", inbound, L7Info{AppTLS, "github.com"}, "", "allow", ""},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			info := tc.info
			ex := ExplainFlow(rs, tbl, tc.p, &info)
			last := ex.Decisions[len(ex.Decisions)-1]
			if last.Rule != tc.rule || last.Action != tc.action || strings.Join(last.Alerts, ",") != tc.alerts {
				t.Fatalf("%s: %+v", ex.Packet, ex.Decisions)
			}
		})
	}
}

func TestDomainListErrors(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"bad type", "domain_lists:\n  - {id: a, priority: 1, type: blocklist, target_types: [tls_sni], targets: [a.example]}\n", `f.yaml:2:32: domain list type "blocklist" is not one of allowlist, denylist, rejectlist, alertlist`},
		{"bad target type", "domain_lists:\n  - {id: a, priority: 1, type: denylist, target_types: [dns], targets: [a.example]}\n", `f.yaml:2:57: target type "dns" is not tls_sni or http_host`},
		{"bad target", "domain_lists:\n  - {id: a, priority: 1, type: denylist, target_types: [tls_sni], targets: ['*.a.example']}\n", `f.yaml:2:77: targets: "*.a.example": wildcards are written .a.example`},
		{"no targets", "domain_lists:\n  - {id: a, priority: 1, type: denylist, target_types: [tls_sni]}\n", `f.yaml:2:5: domain list "a" has no targets`},
		{"priority clash", "domain_lists:\n  - {id: a, priority: 1, type: denylist, target_types: [tls_sni], targets: [a.example]}\nstateful:\n  rules:\n    - {id: r, priority: 1, action: allow}\n", `f.yaml:5:25: stateful priority 1 is already used at f.yaml:2:23`},
		{"id clash", "domain_lists:\n  - {id: a, priority: 1, type: denylist, target_types: [tls_sni], targets: [a.example]}\nstateful:\n  rules:\n    - {id: 'a:tls_sni', priority: 2, action: allow}\n", `rule id "a:tls_sni" is already used`},
		{"no inside networks", "domain_lists:\n  - {id: a, priority: 1, type: denylist, target_types: [tls_sni], targets: [a.example]}\n", `the inside tag needs inside_networks configured`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := Options{Inside: testInside, InspectL7: true}
			if tc.name == "no inside networks" {
				opts = Options{InspectL7: true}
			}
			_, err := Parse([]Source{{Name: "f.yaml", Data: []byte(tc.yaml)}}, opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// YAML with L7 conditions and domain lists: errors are positioned, and an
// accepted set's names are normal and its L7 rules marked.
func FuzzL7YAML(f *testing.F) {
	f.Add([]byte(l7YAML))
	f.Add([]byte(domainListYAML))
	f.Add([]byte("domain_lists:\n  - {id: a, priority: 1, type: allowlist, target_types: [http_host], targets: [A.Example., .b.example]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rs, err := Parse([]Source{{Name: "fuzz.yaml", Data: data}}, Options{Inside: testInside, InspectL7: true})
		if err != nil {
			list, ok := err.(ErrorList)
			if rs != nil || !ok || len(list) == 0 {
				t.Fatalf("bad error result: %v", err)
			}
			for _, e := range list {
				if e.Pos.File != "fuzz.yaml" || e.Pos.Line < 1 || e.Msg == "" {
					t.Fatalf("error without a position or reason: %v", e)
				}
			}
			return
		}
		tbl, err := Compile(rs, seqIDs())
		if err != nil {
			return // more rules than a stage holds
		}
		for i, r := range rs.Stateful {
			if tbl.Stateful.L7[i] != (r.L7 != nil) || (r.L7 != nil && r.Protocol != 6) {
				t.Fatalf("rule %s: L7 mark %v, protocol %d", r.ID, tbl.Stateful.L7[i], r.Protocol)
			}
			for _, c := range r.L7 {
				for _, m := range c.Contents {
					if norm, _ := l7.NormalizeString(strings.TrimPrefix(m.Value, ".")); norm != strings.TrimPrefix(m.Value, ".") {
						t.Fatalf("rule %s: name %q is not normal", r.ID, m.Value)
					}
				}
			}
		}
	})
}
