package dataplane

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/natwall/natwall/rules"
)

// generatedEnum returns the values of the bpf2go-generated constants of Go
// type typ: the C enum as the compiler saw it.
func generatedEnum(t *testing.T, typ string) map[string]uint64 {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "natwall_x86_bpfel.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]uint64{}
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok || vs.Type == nil || len(vs.Values) != 1 {
			return true
		}
		if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != typ {
			return true
		}
		lit, ok := vs.Values[0].(*ast.BasicLit)
		if !ok {
			t.Fatalf("%s: value is not a literal", vs.Names[0].Name)
		}
		var v uint64
		for _, c := range lit.Value {
			v = v*10 + uint64(c-'0')
		}
		values[vs.Names[0].Name] = v
		return true
	})
	if len(values) == 0 {
		t.Fatalf("no constants of type %s in the generated file", typ)
	}
	return values
}

func TestEveryZoneNamed(t *testing.T) {
	for name, v := range generatedEnum(t, "natwallNwZone") {
		info, ok := zoneInfos[Zone(v)]
		if !ok {
			t.Errorf("%s (%d) has no entry in zoneInfos", name, v)
			continue
		}
		// NW_ZONE_EAST_WEST is east-west.
		want := strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(name, "natwallNwZoneNW_ZONE_")), "_", "-")
		if info.name != want || info.direction.String() != want {
			t.Errorf("%s: named %q, direction %q; want %q", name, info.name, info.direction, want)
		}
	}
	if got := ZoneName(Zone(200)); got != "zone_200" {
		t.Errorf("unknown zone named %q", got)
	}
}

// TestRulesNumberZonesAsTheDataplane compiles a rule per direction and
// checks that it lands in the zone the dataplane gives that direction.
func TestRulesNumberZonesAsTheDataplane(t *testing.T) {
	for z, info := range zoneInfos {
		rs := &rules.RuleSet{
			StatefulDefault: rules.Deny,
			Stateful: []rules.Rule{{ID: "r", Action: rules.Allow, Protocol: -1, ICMPType: -1, ICMPCode: -1,
				Direction: info.direction}},
		}
		n := uint32(10)
		tbl, err := rules.Compile(rs, func(string) uint32 { n++; return n })
		if err != nil {
			t.Fatal(err)
		}
		st := tbl.Stateful
		for other := range zoneInfos {
			matches := st.Bitvectors[st.Zone[other]][0]&1 != 0
			if matches != (other == z) {
				t.Errorf("a %s rule matches zone %d (%s): %v", info.name, other, ZoneName(other), matches)
			}
		}
	}
}

func TestEveryTCPStateNamed(t *testing.T) {
	for name, v := range generatedEnum(t, "natwallNwTcpState") {
		if strings.HasSuffix(name, "_MAX") {
			continue
		}
		got, ok := tcpStateNames[TCPState(v)]
		want := strings.ToLower(strings.TrimPrefix(name, "natwallNwTcpStateNW_TCP_"))
		if want == "none" {
			want = ""
		}
		if !ok || got != want {
			t.Errorf("%s (%d) named %q, want %q", name, v, got, want)
		}
	}
}

func TestProtoNames(t *testing.T) {
	for _, tc := range []struct {
		proto     uint8
		name, eve string
	}{
		{unix.IPPROTO_TCP, "tcp", "TCP"},
		{unix.IPPROTO_UDP, "udp", "UDP"},
		{unix.IPPROTO_ICMP, "icmp", "ICMP"},
		{unix.IPPROTO_ICMPV6, "icmpv6", "IPv6-ICMP"},
		{unix.IPPROTO_GRE, "47", "47"},
	} {
		if got := ProtoName(tc.proto); got != tc.name {
			t.Errorf("ProtoName(%d) = %q, want %q", tc.proto, got, tc.name)
		}
		if got := ProtoEVEName(tc.proto); got != tc.eve {
			t.Errorf("ProtoEVEName(%d) = %q, want %q", tc.proto, got, tc.eve)
		}
		if p, ok := ProtoNumber(tc.name); ok != (tc.name != "47") || (ok && p != tc.proto) {
			t.Errorf("ProtoNumber(%q) = %d, %v", tc.name, p, ok)
		}
	}
}

// TestRulesSpellProtocolsAsTheTable: the rules' protocol names are the
// table's, so a rule, a flow log and the CLI name a protocol alike.
func TestRulesSpellProtocolsAsTheTable(t *testing.T) {
	for p, info := range protoInfos {
		if info.name == "" {
			continue
		}
		src := rules.Source{Name: "r.yaml", Data: []byte("stateful:\n  rules:\n    - {id: r, priority: 1, action: allow, protocol: " + info.name + "}\n")}
		rs, err := rules.Parse([]rules.Source{src}, rules.Options{})
		if err != nil {
			t.Fatalf("%s: %v", info.name, err)
		}
		if got := rs.Stateful[0].Protocol; got != p {
			t.Errorf("rules read protocol %q as %d, the table has %d", info.name, got, p)
		}
	}
}
