package rules

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

// summary is one line per stateful rule, as the corpus compiles.
func summary(rs *RuleSet) string {
	var b strings.Builder
	fmt.Fprintf(&b, "stateful default %s\n", rs.StatefulDefault)
	ports := func(prs []PortRange) string {
		if prs == nil {
			return "any"
		}
		var s []string
		for _, r := range prs {
			if r.Lo == r.Hi {
				s = append(s, fmt.Sprint(r.Lo))
			} else {
				s = append(s, fmt.Sprintf("%d-%d", r.Lo, r.Hi))
			}
		}
		return strings.Join(s, ",")
	}
	addrs := func(ps []netip.Prefix) string {
		if ps == nil {
			return "any"
		}
		var s []string
		for _, p := range ps {
			s = append(s, p.String())
		}
		if len(s) > 4 {
			return fmt.Sprintf("%s,... (%d prefixes)", strings.Join(s[:4], ","), len(s))
		}
		return strings.Join(s, ",")
	}
	for _, r := range rs.Stateful {
		fmt.Fprintf(&b, "%s %s pri=%d %s proto=%d src=%s sport=%s dst=%s dport=%s",
			r.Pos, r.ID, r.Priority, r.Action, r.Protocol, addrs(r.Src), ports(r.SrcPorts), addrs(r.Dst), ports(r.DstPorts))
		if r.L7 != nil {
			fmt.Fprintf(&b, " l7=[%s]", describeL7(r.L7))
		}
		if m := r.Meta; m != nil {
			fmt.Fprintf(&b, " rev=%d msg=%q", m.Rev, m.Msg)
			if m.Classtype != "" {
				fmt.Fprintf(&b, " classtype=%s", m.Classtype)
			}
			if m.References != nil {
				fmt.Fprintf(&b, " reference=%q", m.References)
			}
			if m.Metadata != nil {
				fmt.Fprintf(&b, " metadata=%q", m.Metadata)
			}
		}
		b.WriteByte('\n')
	}
	return b.String()
}

func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to write it)", err)
	}
	if got != string(want) {
		t.Fatalf("%s differs (go test -run %s -update, then review the diff):\n%s", path, t.Name(), got)
	}
}

// The corpus of realistic rules parses, and compiles to what the golden
// summary records.
func TestSuricataCorpus(t *testing.T) {
	rs, err := Load([]string{"testdata/suricata"}, Options{Inside: testInside, InspectL7: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Compile(rs, seqIDs()); err != nil {
		t.Fatal(err)
	}
	golden(t, "testdata/suricata/corpus.golden", summary(rs))
}

func TestSuricataCorpusDecisions(t *testing.T) {
	rs, err := Load([]string{"testdata/suricata"}, Options{Inside: testInside, InspectL7: true})
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := Compile(rs, seqIDs())
	if err != nil {
		t.Fatal(err)
	}
	out := func(dst string, port uint16) Packet {
		return Packet{Src: mustAddr("198.18.1.1"), Dst: mustAddr(dst), Protocol: 6, HasPorts: true, SrcPort: 40000, DstPort: port, Direction: Outbound}
	}
	for _, tc := range []struct {
		desc   string
		p      Packet
		info   *L7Info
		rule   string
		alerts string
	}{
		{"another name", out("198.19.0.1", 443), &L7Info{AppTLS, "example.com"}, "sid:104", ""},
		{"exact sni", out("198.19.0.1", 443), &L7Info{AppTLS, "www.example.com"}, "sid:101", ""},
		{"dotprefix apex", out("198.19.0.1", 8443), &L7Info{AppTLS, "amazonaws.com"}, "sid:102", ""},
		{"dotprefix subdomain", out("198.19.0.1", 443), &L7Info{AppTLS, "s3.eu-west-1.amazonaws.com"}, "sid:102", ""},
		{"dotprefix needs the dot", out("198.19.0.1", 443), &L7Info{AppTLS, "evilamazonaws.com"}, "sid:104", ""},
		{"tls without sni", out("198.19.0.1", 443), &L7Info{AppTLS, ""}, "sid:104", ""},
		{"http host", out("198.19.0.1", 80), &L7Info{AppHTTP, "repo.example.org"}, "sid:103", ""},
		{"http elsewhere", out("198.19.0.1", 80), &L7Info{AppHTTP, "other.example.org"}, "sid:105", ""},
		{"neither tls nor http falls to the network rules", out("198.51.100.9", 443), &L7Info{AppUnknown, ""}, "sid:111", ""},
		{"partner net except the lab", Packet{Src: mustAddr("198.18.99.1"), Dst: mustAddr("198.51.100.9"), Protocol: 6, HasPorts: true, DstPort: 22, Direction: Outbound}, &L7Info{AppUnknown, ""}, "sid:112", ""},
		{"negated address", out("198.51.100.7", 22), &L7Info{AppUnknown, ""}, "", ""},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			ex := ExplainFlow(rs, tbl, tc.p, tc.info)
			last := ex.Decisions[len(ex.Decisions)-1]
			if last.Rule != tc.rule || strings.Join(last.Alerts, ",") != tc.alerts {
				t.Fatalf("%s: %+v", ex.Packet, ex.Decisions)
			}
		})
	}
	// A flow that no L7 rule can see is decided on its first packet.
	ex := Explain(rs, tbl, Packet{Src: mustAddr("198.18.1.1"), Dst: mustAddr("198.18.0.53"), Protocol: 17, HasPorts: true, DstPort: 53, Direction: EastWest})
	if last := ex.Decisions[len(ex.Decisions)-1]; last.Rule != "sid:110" || last.Meta == nil || last.Meta.Msg != "DNS to our resolvers" {
		t.Fatalf("dns: %+v", ex.Decisions)
	}
}

func parseRules(text string) (*RuleSet, error) {
	vars, _ := os.ReadFile(filepath.Join("testdata", "suricata", "vars.yaml"))
	return Parse([]Source{{Name: "vars.yaml", Data: vars}, {Name: "f.rules", Data: []byte("# natwall: priority 10\n" + text)}}, Options{Inside: testInside, InspectL7: true})
}

// Every error names file:line:col and a reason; unsupported keywords are
// errors by name.
func TestSuricataErrors(t *testing.T) {
	for _, tc := range []struct{ name, rule, want string }{
		{"unsupported keyword", `alert tls any any -> any any (msg:"x"; ja3.hash; content:"a"; sid:1;)`, `f.rules:2:40: unsupported keyword "ja3.hash"`},
		{"pcre", `alert http any any -> any any (http.host; pcre:"/a/"; sid:1;)`, `f.rules:2:43: unsupported keyword "pcre"`},
		{"no sid", `pass tcp any any -> any 80 (msg:"x";)`, `f.rules:2:1: rule has no sid`},
		{"bad action", `permit tcp any any -> any any (sid:1;)`, `f.rules:2:1: action "permit" is not one of pass, drop, reject, alert`},
		{"bad protocol", `pass dns any any -> any any (sid:1;)`, `f.rules:2:6: protocol "dns" is not one of`},
		{"bad direction", `pass tcp any any <- any any (sid:1;)`, `f.rules:2:18: direction "<-" is not -> or <>`},
		{"bad address", `pass tcp 198.18.0.300 any -> any any (sid:1;)`, `f.rules:2:10: "198.18.0.300" is not an address`},
		{"address in a list", `pass tcp [198.18.0.0/24, nope] any -> any any (sid:1;)`, `f.rules:2:26: "nope" is not an address`},
		{"undefined variable", `pass tcp $NOPE any -> any any (sid:1;)`, `f.rules:2:10: variable $NOPE is not defined`},
		{"undefined port variable", `pass tcp any any -> any $NOPE (sid:1;)`, `f.rules:2:25: variable $NOPE is not defined`},
		{"host bits", `pass tcp 198.18.0.1/24 any -> any any (sid:1;)`, `f.rules:2:10: "198.18.0.1/24" has host bits set`},
		{"bad port", `pass tcp any 70000 -> any any (sid:1;)`, `f.rules:2:14: "70000" is not a port`},
		{"unclosed list", `pass tcp [1.2.3.4 any -> any any (sid:1;)`, `needs its closing ]`},
		{"ports without tcp", `pass icmp any any -> any 80 (sid:1;)`, `ports need protocol tcp, udp, tls or http`},
		{"nothing left", `pass tcp [198.18.0.0/24,!198.18.0.0/16] any -> any any (sid:1;)`, `f.rules:2:10: the addresses resolve to none at all`},
		{"no options", `pass tcp any any -> any any`, `options go in parentheses`},
		{"short header", `pass tcp any any -> (sid:1;)`, `a rule is: action protocol source port direction destination port`},
		{"unclosed quote", `alert tls any any -> any any (msg:"x; sid:1;)`, `f.rules:2:35: msg: the value's quotes are not closed`},
		{"sid twice", `alert tls any any -> any any (sid:1; sid:2;)`, `f.rules:2:38: sid is set twice`},
		{"duplicate sid", "pass tcp any any -> any 1 (sid:7;)\npass tcp any any -> any 2 (sid:7;)", `f.rules:3:1: rule id "sid:7" is already used at f.rules:2:1`},
		{"payload content", `alert tcp any any -> any any (content:"GET"; sid:1;)`, `f.rules:2:39: content without tls.sni or http.host`},
		{"capitals without nocase", `alert tls any any -> any any (tls.sni; content:"Example.com"; sid:1;)`, `f.rules:2:48: content "Example.com" has capitals`},
		{"never a name", `alert tls any any -> any any (tls.sni; content:"a/b"; sid:1;)`, `can never match a name`},
		{"negated content", `alert tls any any -> any any (tls.sni; content:!"a.example"; sid:1;)`, `a negated content is not supported`},
		{"sni and host", `alert tcp any any -> any any (tls.sni; content:"a"; http.host; content:"b"; sid:1;)`, `f.rules:2:53: a rule matches one name`},
		{"host on tls", `alert tls any any -> any any (http.host; content:"a"; sid:1;)`, `http_host does not go with protocol tls`},
		{"sni on udp", `alert udp any any -> any any (tls.sni; content:"a"; sid:1;)`, `tls_sni needs protocol tcp, tls or ip`},
		{"not established", `pass tcp any any -> any any (flow:not_established; sid:1;)`, `flow:not_established: natwall decides a flow on its first packet`},
		{"to client", `pass tcp any any -> any any (flow:established,to_client; sid:1;)`, `flow:to_client: stateful rules see the client's side`},
		{"unknown flow", `pass tcp any any -> any any (flow:sideways; sid:1;)`, `flow option "sideways"`},
		{"depth not the idiom", `alert tls any any -> any any (tls.sni; content:"abc"; depth:5; sid:1;)`, `only the exact-match idiom`},
		{"dotprefix late", `alert tls any any -> any any (tls.sni; content:".a"; dotprefix; sid:1;)`, `dotprefix must come before the buffer's contents`},
		{"modifier without content", `alert tls any any -> any any (tls.sni; nocase; sid:1;)`, `nocase modifies a content`},
		{"http_host without content", `alert tcp any any -> any any (http_host; sid:1;)`, `http_host modifies the content before it`},
		{"bsize range", `alert tls any any -> any any (tls.sni; bsize:<10; sid:1;)`, `only an exact size`},
		{"icmp across families", `alert icmp 198.18.0.1 any -> 2001:db8::1 any (sid:1;)`, `f.rules:2:1: rule "sid:1" can never match: its source and destination are of different address families`},
		{"priority keyword", `alert tls any any -> any any (priority:1; sid:1;)`, `unsupported keyword "priority"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs, err := parseRules(tc.rule)
			if err == nil || rs != nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestSuricataFileOrder(t *testing.T) {
	for _, tc := range []struct{ name, file, want string }{
		{"no priority", "pass tcp any any -> any any (sid:1;)\n", `f.rules:1:1: a .rules file needs a "# natwall: priority N" line`},
		{"priority after a rule", "pass tcp any any -> any 1 (sid:1;)\n# natwall: priority 5\n", `f.rules:2:1: the priority line must come before the first rule`},
		{"unknown directive", "# natwall: order 5\npass tcp any any -> any any (sid:1;)\n", `f.rules:1:1: unknown natwall directive "order 5"`},
		{"empty", "# just a comment\n", `f.rules:1:1: no rules in a .rules file`},
		{"no inside networks", "# natwall: priority 1\npass tcp any any -> $EXTERNAL_NET any (sid:1;)\n", `f.rules:2:21: $EXTERNAL_NET needs inside_networks configured`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := Options{Inside: testInside, InspectL7: true}
			if tc.name == "no inside networks" {
				opts.Inside = nil
			}
			_, err := Parse([]Source{{Name: "f.rules", Data: []byte(tc.file)}}, opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
	// A file's priority is one place among the YAML rules; a clash names
	// both.
	_, err := Parse([]Source{
		{Name: "a.yaml", Data: []byte("stateful:\n  rules:\n    - {id: y, priority: 10, action: allow}\n")},
		{Name: "f.rules", Data: []byte("# natwall: priority 10\npass tcp any any -> any 1 (sid:1;)\npass tcp any any -> any 2 (sid:2;)\n")},
	}, Options{Inside: testInside, InspectL7: true})
	if err == nil || !strings.Contains(err.Error(), "f.rules:1:1: stateful priority 10 is already used at a.yaml:3:25") {
		t.Fatalf("priority clash: %v", err)
	}
	// Rules keep their file order, between the YAML rules around them.
	rs, err := Parse([]Source{
		{Name: "a.yaml", Data: []byte("stateful:\n  rules:\n    - {id: before, priority: 9, action: allow}\n    - {id: after, priority: 11, action: allow}\n")},
		{Name: "f.rules", Data: []byte("# natwall: priority 10\npass tcp any any -> any 3 (sid:3;)\npass tcp any any -> any 1 (sid:1;)\npass tcp any any -> any 2 (sid:2;)\n")},
	}, Options{Inside: testInside, InspectL7: true})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range rs.Stateful {
		ids = append(ids, r.ID)
	}
	if got := strings.Join(ids, " "); got != "before sid:3 sid:1 sid:2 after" {
		t.Fatalf("order %s", got)
	}
}

func FuzzSuricataRule(f *testing.F) {
	for _, name := range []string{"10-aws-style.rules", "20-et-style-sni.rules"} {
		data, err := os.ReadFile(filepath.Join("testdata", "suricata", name))
		if err != nil {
			f.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(line, "pass") || strings.HasPrefix(line, "drop") || strings.HasPrefix(line, "alert") || strings.HasPrefix(line, "reject") {
				f.Add([]byte(line))
			}
		}
	}
	f.Add([]byte(`pass tcp [1.2.3.4,![5.6.7.0/24,!5.6.7.8]] [1:100,!50] <> any any (msg:"a\;b \"q\""; sid:1; rev:2;)`))
	f.Add([]byte("alert tls any any -> any any (tls.sni; \\\n content:\"a|2e|b\"; sid:9;)"))
	vars, _ := os.ReadFile(filepath.Join("testdata", "suricata", "vars.yaml"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rs, err := Parse([]Source{{Name: "vars.yaml", Data: vars}, {Name: "fuzz.rules", Data: append([]byte("# natwall: priority 1\n"), data...)}}, Options{Inside: testInside, InspectL7: true})
		if err != nil {
			if rs != nil {
				t.Fatal("a rule set came back with errors")
			}
			list, ok := err.(ErrorList)
			if !ok || len(list) == 0 {
				t.Fatalf("error is not a positioned ErrorList: %v", err)
			}
			for _, e := range list {
				if e.Pos.File != "fuzz.rules" || e.Pos.Line < 1 || e.Pos.Col < 1 || e.Msg == "" {
					t.Fatalf("error without a position or reason: %v", e)
				}
			}
			return
		}
		tbl, err := Compile(rs, seqIDs())
		if err != nil {
			t.Fatalf("accepted rule set does not compile: %v", err)
		}
		for i, r := range rs.Stateful {
			if r.Meta == nil || !strings.HasPrefix(r.ID, "sid:") {
				t.Fatalf("rule %d without its sid: %+v", i, r)
			}
			if tbl.Stateful.L7[i] != (r.L7 != nil) {
				t.Fatalf("rule %s: L7 mark %v", r.ID, tbl.Stateful.L7[i])
			}
			for _, c := range r.L7 {
				for _, m := range c.Contents {
					if m.Value != strings.ToLower(m.Value) || m.Value == "" {
						t.Fatalf("rule %s: content %q is not a lowercase name part", r.ID, m.Value)
					}
				}
			}
		}
	})
}
