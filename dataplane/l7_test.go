package dataplane

import (
	"testing"

	"github.com/google/gopacket/layers"

	"github.com/natwall/natwall/rules"
)

// Rules with an L7 condition, from a rule file: a TCP first packet that
// meets one stops there (the alert rules before it reported, the L7 rule
// counted), whatever its action; this build cannot hold the PENDING flow
// yet, so the packet fails closed with its own reason. Other packets pass
// the L7 rules by as if absent.
func TestClassifierL7Rules(t *testing.T) {
	fx := newFibFixture(t)
	fx.apply(t, natSettings(1024, 65535))
	rs, err := rules.Parse([]rules.Source{{Name: "l7.yaml", Data: []byte(`stateful:
  default_action: deny
  rules:
    - {id: watch, priority: 1, action: alert, protocol: tcp, dst_ports: [443]}
    - {id: sni-alert, priority: 2, action: alert, protocol: tcp, dst_ports: [8443], tls_sni: [.example.com]}
    - {id: sni, priority: 3, action: allow, protocol: tcp, dst_ports: [443], tls_sni: [.example.com]}
    - {id: host-deny, priority: 4, action: deny, protocol: tcp, dst_ports: [80], http_host: [bad.example]}
    - {id: rest, priority: 5, action: allow}
`)}}, rules.Options{Inside: fixtureSettings().Inside, InspectL7: true})
	must(t, err)
	ids := map[string]uint32{}
	tbl, err := rules.Compile(rs, func(id string) uint32 { ids[id] = uint32(100 + len(ids)); return ids[id] })
	must(t, err)
	must(t, loadRules(&fx.objs, nil, tbl.Stateful))
	st := fx.state()

	syn := func(dport uint16) []byte {
		return frame4(t, l4spec{proto: layers.IPProtocolTCP, src: "198.18.1.20", dst: "198.19.1.10", sport: 40000 + dport, dport: dport, tcpFlags: "S"})
	}
	for _, tc := range []struct {
		name    string
		frame   []byte
		want    Reason
		counted []string // rules whose hit counters move
	}{
		{"allow rule with a name: pending", syn(443), ReasonDropL7Pending, []string{"watch", "sni"}},
		{"alert rule with a name: pending, not an alert", syn(8443), ReasonDropL7Pending, []string{"sni-alert"}},
		{"deny rule with a name: pending", syn(80), ReasonDropL7Pending, []string{"host-deny"}},
		{"other tcp", syn(22), ReasonFwdRedirect, []string{"rest"}},
		{"udp to 443 passes the L7 rules by", frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: "198.19.1.10", sport: 40001, dport: 443}), ReasonFwdRedirect, []string{"rest"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			all := []uint32{ids["watch"], ids["sni-alert"], ids["sni"], ids["host-deny"], ids["rest"]}
			before, err := st.RuleHits(all)
			must(t, err)
			fx.expect(t, tc.frame, "a0", tc.want)
			after, err := st.RuleHits(all)
			must(t, err)
			for _, id := range []string{"watch", "sni-alert", "sni", "host-deny", "rest"} {
				moved := after[ids[id]].Packets != before[ids[id]].Packets
				want := false
				for _, c := range tc.counted {
					want = want || c == id
				}
				if moved != want {
					t.Errorf("rule %s counted %v, want %v", id, moved, want)
				}
			}
		})
	}
}
