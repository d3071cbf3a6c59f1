package rules

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
)

var testInside = []netip.Prefix{netip.MustParsePrefix("198.18.0.0/16"), netip.MustParsePrefix("2001:db8:1::/48")}

func seqIDs() IDFunc {
	ids := map[string]uint32{}
	return func(id string) uint32 {
		if n, ok := ids[id]; ok {
			return n
		}
		ids[id] = uint32(len(ids) + 10)
		return ids[id]
	}
}

func TestLoadExample(t *testing.T) {
	rs, err := Load([]string{"testdata"}, Options{Inside: testInside})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs.Stateless) != 1 || len(rs.Stateful) != 4 || rs.StatefulDefault != Deny {
		t.Fatalf("loaded %d stateless, %d stateful, default %s", len(rs.Stateless), len(rs.Stateful), rs.StatefulDefault)
	}
	if got := []string{rs.Stateful[0].ID, rs.Stateful[1].ID}; got[0] != "audit-dns" || got[1] != "web-https" {
		t.Fatalf("stateful order %v, want priority order", got)
	}
	web := rs.Stateful[1]
	if len(web.Src) != 2 || web.Pos.Line != 12 || web.Pos.File != "testdata/example.yaml" {
		t.Fatalf("web-https resolved to %+v", web)
	}
	// internet is everything outside the inside networks.
	for _, p := range web.Dst {
		for _, in := range testInside {
			if p.Overlaps(in) {
				t.Fatalf("internet includes %s, inside %s", p, in)
			}
		}
	}
	tbl, err := Compile(rs, seqIDs())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		p    Packet
		want string
	}{
		{"https out", Packet{Src: mustAddr("198.18.10.5"), Dst: mustAddr("198.19.1.10"), Protocol: 6, HasPorts: true, SrcPort: 40000, DstPort: 443, Direction: Outbound}, "web-https"},
		{"https to inside", Packet{Src: mustAddr("198.18.10.5"), Dst: mustAddr("198.18.1.10"), Protocol: 6, HasPorts: true, SrcPort: 40000, DstPort: 443, Direction: EastWest}, ""},
		{"port range", Packet{Src: mustAddr("2001:db8:10::5"), Dst: mustAddr("2001:db8:2::10"), Protocol: 6, HasPorts: true, DstPort: 8080, Direction: Outbound}, "web-https"},
		{"ping", Packet{Src: mustAddr("198.18.1.1"), Dst: mustAddr("198.19.1.10"), Protocol: 1, IsICMP: true, ICMPType: 8, Direction: Outbound}, "ping-out"},
		{"ping reply is not a request", Packet{Src: mustAddr("198.18.1.1"), Dst: mustAddr("198.19.1.10"), Protocol: 1, IsICMP: true, ICMPType: 0, Direction: Outbound}, ""},
		{"dns alerts then defaults", Packet{Src: mustAddr("198.18.1.1"), Dst: mustAddr("198.19.1.10"), Protocol: 17, HasPorts: true, DstPort: 53, Direction: Outbound}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			i, _ := tbl.Stateful.Lookup(tc.p)
			j, _ := FirstMatch(rs.Stateful, tc.p)
			got := ""
			if i >= 0 {
				got = rs.Stateful[i].ID
			}
			if got != tc.want || i != j {
				t.Fatalf("tables chose %q (index %d), reference index %d, want %q", got, i, j, tc.want)
			}
		})
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// Every error names file:line:col and a reason; all are reported at once;
// a broken set yields no RuleSet.
func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"unknown key", "stateless:\n  - id: a\n    priority: 1\n    action: drop\n    sorce: [198.18.0.0/24]\n", []string{"f.yaml:5:5: unknown key \"sorce\""}},
		{"bad cidr", "stateless:\n  - id: a\n    priority: 1\n    action: drop\n    src: [198.18.0.300/24]\n", []string{"f.yaml:5:11: \"198.18.0.300/24\" is not a CIDR"}},
		{"host bits", "stateless:\n  - id: a\n    priority: 1\n    action: drop\n    src: [198.18.0.1/24]\n", []string{"f.yaml:5:11: \"198.18.0.1/24\" has host bits set (did you mean 198.18.0.0/24?)"}},
		{"wrong stage action", "stateless:\n  - id: a\n    priority: 1\n    action: allow\n", []string{"f.yaml:4:13: stateless action \"allow\" is not one of drop, pass"}},
		{"ports need tcp", "stateful:\n  rules:\n    - id: a\n      priority: 1\n      action: allow\n      dst_ports: [80]\n", []string{"f.yaml:6:7: ports need protocol tcp or udp"}},
		{"duplicates", "stateless:\n  - {id: a, priority: 1, action: drop}\n  - {id: a, priority: 1, action: drop}\n", []string{"f.yaml:3:5: rule id \"a\" is already used at f.yaml:2:5", "f.yaml:3:23: stateless priority 1 is already used at f.yaml:2:23"}},
		{"unknown set", "stateless:\n  - {id: a, priority: 1, action: drop, src: [nope]}\n", []string{"f.yaml:2:46: \"nope\" is not a CIDR"}},
		{"set cycle", "address_sets:\n  a: [b]\n  b: [a]\nstateless:\n  - {id: r, priority: 1, action: drop, src: [a]}\n", []string{"refers to itself"}},
		{"empty file", "", []string{"f.yaml:1:1: empty rule file"}},
		{"not yaml", "stateless: [\n", []string{"f.yaml:1:1: not valid YAML"}},
		{"missing fields", "stateful:\n  rules:\n    - {action: allow}\n", []string{"f.yaml:3:7: rule has no id", "has no priority"}},
		{"bad port range", "stateful:\n  rules:\n    - {id: a, priority: 1, action: allow, protocol: tcp, dst_ports: [90-80]}\n", []string{"dst_ports entry \"90-80\""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs, err := Parse([]Source{{Name: "f.yaml", Data: []byte(tc.yaml)}}, Options{Inside: testInside})
			if err == nil || rs != nil {
				t.Fatalf("accepted: %+v", rs)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// 30,000 stateful and 30,000 stateless rules compile.
func TestCompileLargeRuleSet(t *testing.T) {
	if testing.Short() {
		t.Skip("large compile in -short mode")
	}
	var b strings.Builder
	b.WriteString("stateless:\n")
	for i := 0; i < 30000; i++ {
		fmt.Fprintf(&b, "  - {id: sl%d, priority: %d, action: drop, src: [198.19.%d.%d/32], protocol: udp, dst_ports: [%d]}\n", i, i, i/256, i%256, 1000+i%50)
	}
	b.WriteString("stateful:\n  rules:\n")
	for i := 0; i < 30000; i++ {
		fmt.Fprintf(&b, "    - {id: sf%d, priority: %d, action: allow, dst: [198.18.%d.%d/32], protocol: tcp, dst_ports: [443]}\n", i, i, i/256, i%256)
	}
	rs, err := Parse([]Source{{Name: "big.yaml", Data: []byte(b.String())}}, Options{Inside: testInside})
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := Compile(rs, seqIDs())
	if err != nil {
		t.Fatal(err)
	}
	p := Packet{Src: mustAddr("198.18.3.3"), Dst: mustAddr("198.18.100.7"), Protocol: 6, HasPorts: true, DstPort: 443, Direction: Outbound}
	if i, _ := tbl.Stateful.Lookup(p); i != 100*256+7 {
		t.Fatalf("30,000-rule stateful set chose rule %d, want %d", i, 100*256+7)
	}
	t.Logf("%d stateless and %d stateful bit vectors", len(tbl.Stateless.Bitvectors), len(tbl.Stateful.Bitvectors))
}

func FuzzParse(f *testing.F) {
	example, _ := os.ReadFile("testdata/example.yaml")
	f.Add(example)
	f.Add([]byte("stateless:\n  - {id: a, priority: 1, action: drop, src: [198.18.0.0/24]}\n"))
	f.Add([]byte("address_sets:\n  a: [b]\n  b: [a]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rs, err := Parse([]Source{{Name: "fuzz.yaml", Data: data}}, Options{Inside: testInside})
		if err != nil {
			if rs != nil {
				t.Fatal("a rule set came back with errors")
			}
			list, ok := err.(ErrorList)
			if !ok || len(list) == 0 {
				t.Fatalf("error is not a positioned ErrorList: %v", err)
			}
			for _, e := range list {
				if e.Pos.File != "fuzz.yaml" || e.Pos.Line < 1 {
					t.Fatalf("error without a position: %v", e)
				}
			}
			return
		}
		if _, err := Compile(rs, seqIDs()); err != nil && len(rs.Stateful)+len(rs.Stateless) <= 2*MaxRulesPerStage {
			t.Fatalf("accepted rule set does not compile: %v", err)
		}
	})
}
