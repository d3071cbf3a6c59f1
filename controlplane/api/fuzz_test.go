package api

import (
	"encoding/json"
	"net/url"
	"reflect"
	"testing"
)

// FuzzFlowFilterQuery: any query either fails or gives a filter whose own
// query reads back as the same filter.
func FuzzFlowFilterQuery(f *testing.F) {
	for _, seed := range []string{
		"", "addr=198.18.0.7&proto=udp", "addr=198.18.1.9/24&port=53", "addr=2001:db8::1&proto=58",
		"type=flow_start&type=alert&type=flow_start", "port=0", "port=65536", "proto=256", "proto=icmpv6",
		"addr=198.18.0.0/33", "addr=%zz", "all=true", "port=1&port=2", "addr=::ffff:198.18.0.1/120",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		got, err := filterFromQuery(q)
		if err != nil {
			return
		}
		again, err := filterFromQuery(got.Query())
		if err != nil {
			t.Fatalf("%q gave %+v, whose query %q does not parse: %v", raw, got, got.Query().Encode(), err)
		}
		if !reflect.DeepEqual(got, again) {
			t.Fatalf("%q gave %+v, read back as %+v", raw, got, again)
		}
		if got.Addr.IsValid() && got.Addr != got.Addr.Masked() {
			t.Fatalf("%q kept host bits: %v", raw, got.Addr)
		}
	})
}

// FuzzExplainRequest: any body either fails to decode or to validate, or
// gives a packet of the request's addresses and a known direction.
func FuzzExplainRequest(f *testing.F) {
	for _, seed := range []string{
		`{"src":"198.18.0.1","dst":"198.19.0.1","protocol":6,"dst_port":443,"direction":"outbound"}`,
		`{"src":"2001:db8::1","dst":"2001:db8:1::1","protocol":58,"icmp_type":128,"direction":"inbound"}`,
		`{"src":"198.18.0.1","dst":"198.19.0.1","protocol":300,"direction":"outbound"}`,
		`{"src":"","dst":"198.19.0.1","direction":"local"}`, `{"direction":"any"}`, `{"src":"198.19.0.1","dst":"198.18.0.1","protocol":17}`, `{"src":"fe80::1","dst":"ff02::1","direction":"derive"}`, `{"src":"198.18.0.1","dst":"2001:db8::1"}`, `null`, `[]`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req ExplainRequest
		if err := json.Unmarshal(body, &req); err != nil {
			return
		}
		p, err := req.Packet()
		if err != nil {
			return
		}
		want := req.Direction
		if want == "" || want == DeriveDirection {
			want = "any" // rules.AnyDirection: ExplainPacket derives it
		}
		if p.Src != req.Src || p.Dst != req.Dst || p.Direction.String() != want || req.Direction == "any" {
			t.Fatalf("%s gave %+v", body, p)
		}
		if p.Src.Is4() != p.Dst.Is4() {
			t.Fatalf("%s gave a packet of mixed families: %+v", body, p)
		}
		if p.HasPorts && p.IsICMP {
			t.Fatalf("%s gave a packet with ports and ICMP: %+v", body, p)
		}
	})
}
