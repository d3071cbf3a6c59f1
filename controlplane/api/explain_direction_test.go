package api

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/natwall/natwall/rules"
)

// A request's direction is derived unless it names one; a packet of two
// address families is no packet.
func TestExplainRequestDirection(t *testing.T) {
	v4 := func(dir string) ExplainRequest {
		return ExplainRequest{Src: netip.MustParseAddr("198.19.0.1"), Dst: netip.MustParseAddr("198.18.0.1"), Protocol: ProtoTCP, DstPort: 443, Direction: dir}
	}
	for _, tc := range []struct {
		req  ExplainRequest
		want rules.Direction
		err  string
	}{
		{v4(""), rules.AnyDirection, ""},
		{v4(DeriveDirection), rules.AnyDirection, ""},
		{v4("inbound"), rules.Inbound, ""},
		{v4("local"), rules.Local, ""},
		{v4("any"), 0, "is not derive, outbound"},
		{ExplainRequest{Src: netip.MustParseAddr("198.19.0.1"), Dst: netip.MustParseAddr("2001:db8::1")}, 0, "different address families"},
	} {
		p, err := tc.req.Packet()
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%+v: %v, want an error with %q", tc.req, err, tc.err)
		case tc.err == "" && (err != nil || p.Direction != tc.want):
			t.Errorf("%+v: %v, %v; want direction %s", tc.req, p.Direction, err, tc.want)
		}
	}
}
