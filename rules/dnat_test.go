package rules

import (
	"net/netip"
	"strings"
	"testing"
)

const dnatFile = `dnat:
  - id: jump-box-ssh
    external: snat
    protocol: tcp
    port: 50022
    to: 198.18.1.4
    to_port: 22
  - id: games
    external: 198.19.0.1
    protocol: udp
    ports: 60000-60009
    to: 198.18.1.5
    to_port: 7000-7009
  - id: same-port
    external: 198.19.0.1
    protocol: tcp
    port: 8443
    to: 198.18.1.6
`

func TestDNATParse(t *testing.T) {
	rs, err := Parse([]Source{{Name: "fw.yaml", Data: []byte(dnatFile)}}, Options{Inside: testInside})
	if err != nil {
		t.Fatal(err)
	}
	want := []DNAT{
		{ID: "jump-box-ssh", Pos: Pos{"fw.yaml", 2, 5}, ExternalSNAT: true, Protocol: 6, Ports: PortRange{50022, 50022}, To: mustAddr("198.18.1.4"), ToPort: 22},
		{ID: "games", Pos: Pos{"fw.yaml", 8, 5}, External: mustAddr("198.19.0.1"), Protocol: 17, Ports: PortRange{60000, 60009}, To: mustAddr("198.18.1.5"), ToPort: 7000},
		{ID: "same-port", Pos: Pos{"fw.yaml", 14, 5}, External: mustAddr("198.19.0.1"), Protocol: 6, Ports: PortRange{8443, 8443}, To: mustAddr("198.18.1.6"), ToPort: 8443},
	}
	if len(rs.DNAT) != len(want) {
		t.Fatalf("got %d forwards, want %d", len(rs.DNAT), len(want))
	}
	for i := range want {
		if rs.DNAT[i] != want[i] {
			t.Errorf("forward %d: got %+v, want %+v", i, rs.DNAT[i], want[i])
		}
	}
	if to, ok := rs.DNAT[1].Translate(60005); !ok || to != netip.MustParseAddrPort("198.18.1.5:7005") {
		t.Errorf("60005 translates to %s %v", to, ok)
	}
	if _, ok := rs.DNAT[1].Translate(60010); ok {
		t.Error("60010 is past the range")
	}

	snat := []netip.Addr{mustAddr("198.19.0.1"), mustAddr("198.19.0.2")}
	ex, err := ExpandDNAT(rs.DNAT, snat)
	if err != nil || len(ex) != 4 || ex[0].External != snat[0] || ex[1].External != snat[1] || ex[0].ExternalSNAT {
		t.Fatalf("expanded to %+v, %v", ex, err)
	}
	if _, err := ExpandDNAT(rs.DNAT, nil); err == nil || !strings.Contains(err.Error(), "fw.yaml:2:5") {
		t.Fatalf("snat without SNAT addresses: %v", err)
	}
}

func TestDNATErrors(t *testing.T) {
	fwd := func(body string) string { return "dnat:\n  - " + strings.ReplaceAll(body, "\n", "\n    ") + "\n" }
	base := "id: a\nexternal: 198.19.0.1\nprotocol: tcp\nport: 80\nto: 198.18.1.4\n"
	for _, tc := range []struct {
		name, file, want string
	}{
		{"not a list", "dnat: {id: a}\n", "fw.yaml:1:7: dnat is a list"},
		{"unknown key", fwd(base + "too: 1"), `fw.yaml:7:5: unknown key "too"`},
		{"missing to", fwd("id: a\nexternal: 198.19.0.1\nprotocol: tcp\nport: 80"), `fw.yaml:2:5: forward "a": to is required`},
		{"missing port", fwd("id: a\nexternal: 198.19.0.1\nprotocol: tcp\nto: 198.18.1.4"), `forward "a": port (or ports, a range) is required`},
		{"port and ports", fwd(base + "ports: 80-81"), "fw.yaml:7:5: forward \"a\": port and ports both set"},
		{"port is a range", fwd("id: a\nexternal: 198.19.0.1\nprotocol: tcp\nport: 80-81\nto: 198.18.1.4"), `fw.yaml:5:11: port "80-81" is a range`},
		{"icmp", fwd("id: a\nexternal: 198.19.0.1\nprotocol: icmp\nport: 80\nto: 198.18.1.4"), `fw.yaml:4:15: protocol "icmp": a forward is tcp or udp`},
		{"port 0", fwd("id: a\nexternal: 198.19.0.1\nprotocol: tcp\nport: 0\nto: 198.18.1.4"), `fw.yaml:5:11: port "0" is not a port 1-65535`},
		{"v6 external", fwd("id: a\nexternal: 2001:db8::1\nprotocol: tcp\nport: 80\nto: 198.18.1.4"), `fw.yaml:3:15: external "2001:db8::1" is not an IPv4 address or snat`},
		{"target not inside", fwd("id: a\nexternal: 198.19.0.1\nprotocol: tcp\nport: 80\nto: 198.19.1.4"), `fw.yaml:2:5: forward "a": target 198.19.1.4 is not inside`},
		{"external inside", fwd("id: a\nexternal: 198.18.0.1\nprotocol: tcp\nport: 80\nto: 198.18.1.4"), `forward "a": external 198.18.0.1 is inside`},
		{"range lengths differ", fwd("id: a\nexternal: 198.19.0.1\nprotocol: udp\nports: 100-109\nto: 198.18.1.4\nto_port: 200-204"), `fw.yaml:7:14: forward "a": to_port 200-204 has 5 ports, the external range 100-109 has 10`},
		{"target past 65535", fwd("id: a\nexternal: 198.19.0.1\nprotocol: udp\nports: 100-109\nto: 198.18.1.4\nto_port: 65530"), `to_port 65530 plus the range's 10 ports runs past 65535`},
		{"overlap", fwd(base) + "  - {id: b, external: 198.19.0.1, protocol: tcp, ports: 70-90, to: 198.18.1.5}\n",
			`fw.yaml:8:5: forward "b": 198.19.0.1 tcp ports 70-90 overlap forward "a" at fw.yaml:2:5`},
		{"duplicate id", fwd(base) + "  - {id: a, external: 198.19.0.1, protocol: udp, port: 80, to: 198.18.1.5}\n", `forward id "a" is already used at fw.yaml:2:5`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]Source{{Name: "fw.yaml", Data: []byte(tc.file)}}, Options{Inside: testInside})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	// snat overlaps the SNAT addresses, or every address when they are not known.
	viaSNAT := fwd(base) + "  - {id: b, external: snat, protocol: tcp, port: 80, to: 198.18.1.5}\n"
	for _, snat := range [][]netip.Addr{nil, {mustAddr("198.19.0.1")}} {
		_, err := Parse([]Source{{Name: "fw.yaml", Data: []byte(viaSNAT)}}, Options{Inside: testInside, SNATAddresses: snat})
		if err == nil || !strings.Contains(err.Error(), `fw.yaml:8:5: forward "b": snat tcp ports 80-80 overlap forward "a"`) {
			t.Fatalf("snat %v: got %v", snat, err)
		}
	}
	// Other protocols and other addresses do not overlap.
	ok := fwd(base) + "  - {id: b, external: 198.19.0.1, protocol: udp, port: 80, to: 198.18.1.5}\n" +
		"  - {id: c, external: snat, protocol: tcp, port: 80, to: 198.18.1.5}\n"
	if _, err := Parse([]Source{{Name: "fw.yaml", Data: []byte(ok)}}, Options{Inside: testInside, SNATAddresses: []netip.Addr{mustAddr("198.19.0.2")}}); err != nil {
		t.Fatal(err)
	}
}

func FuzzDNATYAML(f *testing.F) {
	f.Add([]byte(dnatFile))
	f.Add([]byte("dnat:\n  - {id: a, external: snat, protocol: udp, ports: 1-65535, to: 198.18.0.1, to_port: 1}\n"))
	f.Add([]byte("dnat:\n  - {id: a, external: 198.19.0.1, protocol: tcp, port: 65535, to: 198.18.0.1, to_port: 65535-65535}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rs, err := Parse([]Source{{Name: "fuzz.yaml", Data: data}}, Options{Inside: testInside})
		if err != nil {
			if rs != nil {
				t.Fatal("a rule set came back with errors")
			}
			for _, e := range err.(ErrorList) {
				if e.Pos.File != "fuzz.yaml" || e.Pos.Line < 1 {
					t.Fatalf("error without a position: %v", e)
				}
			}
			return
		}
		for _, d := range rs.DNAT {
			if d.Protocol != 6 && d.Protocol != 17 || d.Ports.Lo == 0 || d.Ports.Lo > d.Ports.Hi ||
				int(d.ToPort)+int(d.Ports.Hi-d.Ports.Lo) > 65535 || d.ToPort == 0 || !containsAddr(testInside, d.To) {
				t.Fatalf("accepted a bad forward %+v", d)
			}
		}
	})
}

func TestDNATExplain(t *testing.T) {
	file := dnatFile + `stateful:
  default_action: deny
  rules:
    - {id: ssh-to-jump, priority: 10, action: allow, dst: [198.18.1.4], protocol: tcp, dst_ports: [22]}
    - {id: no-ssh-from-b, priority: 5, action: deny, src: [198.19.9.9], dst: [198.18.1.4]}
stateless:
  - {id: drop-bogon, priority: 1, action: drop, src: [198.19.6.6]}
`
	rs, err := Parse([]Source{{Name: "fw.yaml", Data: []byte(file)}}, Options{Inside: testInside})
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := Compile(rs, seqIDs())
	if err != nil {
		t.Fatal(err)
	}
	snat := []netip.Addr{mustAddr("198.19.0.1")}
	pkt := func(src, dst string, port uint16, dir Direction) Packet {
		return Packet{Src: mustAddr(src), Dst: mustAddr(dst), Protocol: 6, HasPorts: true, SrcPort: 40000, DstPort: port, Direction: dir}
	}
	for _, tc := range []struct {
		name   string
		p      Packet
		stages []string
		rule   string // the last decision's
		packet string
	}{
		{"forwarded and allowed on the target", pkt("198.19.1.10", "198.19.0.1", 50022, Local), []string{"stateless", "dnat", "stateful"}, "ssh-to-jump",
			"tcp 198.19.1.10:40000 -> 198.19.0.1:50022 (local), forwarded to 198.18.1.4:22 (inbound)"},
		{"a deny on the target", pkt("198.19.9.9", "198.19.0.1", 50022, Local), []string{"stateless", "dnat", "stateful"}, "no-ssh-from-b", ""},
		{"forwarded from outside is inbound, whatever the caller assumed", pkt("198.19.1.10", "198.19.0.1", 50022, Outbound), []string{"stateless", "dnat", "stateful"}, "ssh-to-jump",
			"tcp 198.19.1.10:40000 -> 198.19.0.1:50022 (outbound), forwarded to 198.18.1.4:22 (inbound)"},
		{"hairpin is east-west", pkt("198.18.2.2", "198.19.0.1", 50022, Outbound), []string{"stateless", "dnat", "stateful"}, "ssh-to-jump",
			"tcp 198.18.2.2:40000 -> 198.19.0.1:50022 (outbound), forwarded to 198.18.1.4:22 (east-west)"},
		{"stateless drops before the forward", pkt("198.19.6.6", "198.19.0.1", 50022, Local), []string{"stateless", "dnat"}, "jump-box-ssh", ""},
		{"no forward for the port", pkt("198.19.1.10", "198.19.0.1", 50023, Local), []string{"stateless", "stateful"}, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ex := ExplainForwarded(rs, tbl, tc.p, snat, nil)
			var stages []string
			for _, d := range ex.Decisions {
				stages = append(stages, d.Stage)
			}
			if strings.Join(stages, ",") != strings.Join(tc.stages, ",") || ex.Decisions[len(ex.Decisions)-1].Rule != tc.rule {
				t.Fatalf("decisions %+v, want stages %v ending with rule %q", ex.Decisions, tc.stages, tc.rule)
			}
			if tc.packet != "" && ex.Packet != tc.packet {
				t.Fatalf("packet %q, want %q", ex.Packet, tc.packet)
			}
		})
	}
}
