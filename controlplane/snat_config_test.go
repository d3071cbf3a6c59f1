package controlplane

import (
	"net/netip"
	"testing"

	"github.com/natwall/natwall/dataplane"
)

const snatBase = minimalConfig + "snat:\n  enabled: true\n  addresses: [198.19.1.1]\n  port_range: 20000-20099\n"

func TestLoadConfigSNATAllocation(t *testing.T) {
	clearNatwallEnv(t)
	base := dataplane.SNAT{Addresses: []netip.Addr{netip.MustParseAddr("198.19.1.1")}, PortMin: 20000, PortMax: 20099}
	tests := []struct {
		name  string
		extra string
		want  func(*dataplane.SNAT)
	}{
		// Overloading is on by default, the quota automatic, the
		// filtering the strictest.
		{"defaults", "", func(n *dataplane.SNAT) {
			n.Overload = true
		}},
		{"no overloading", "  overload: false\n", func(*dataplane.SNAT) {}},
		{"quota as a number", "  host_quota: 25\n", func(n *dataplane.SNAT) {
			n.Overload, n.HostQuota = true, 25
		}},
		{"quota as a string", "  host_quota: '100'\n", func(n *dataplane.SNAT) {
			n.Overload, n.HostQuota = true, 100
		}},
		{"quota auto", "  host_quota: auto\n", func(n *dataplane.SNAT) {
			n.Overload = true
		}},
		{"endpoint-independent filtering", "  filtering: endpoint-independent\n", func(n *dataplane.SNAT) {
			n.Overload, n.Filtering = true, dataplane.FilterEndpointIndependent
		}},
		{"address-dependent filtering", "  filtering: address-dependent\n", func(n *dataplane.SNAT) {
			n.Overload, n.Filtering = true, dataplane.FilterAddressDependent
		}},
		{"address-port-dependent filtering", "  filtering: address-port-dependent\n", func(n *dataplane.SNAT) {
			n.Overload, n.Filtering = true, dataplane.FilterAddressPortDependent
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := loadConfig("natwall.yaml", []byte(snatBase+tt.extra), nil)
			if err != nil {
				t.Fatal(err)
			}
			want := base
			tt.want(&want)
			if cfg.SNAT == nil {
				t.Fatal("SNAT not enabled")
			}
			got := *cfg.SNAT
			if got.Overload != want.Overload || got.HostQuota != want.HostQuota || got.Filtering != want.Filtering ||
				got.PortMin != want.PortMin || got.PortMax != want.PortMax {
				t.Fatalf("SNAT %+v, want %+v", got, want)
			}
		})
	}
	// The automatic quota is a quarter of the range.
	cfg, err := loadConfig("natwall.yaml", []byte(snatBase), nil)
	if err != nil {
		t.Fatal(err)
	}
	if q := cfg.SNAT.Quota(); q != 25 {
		t.Fatalf("automatic quota %d for 100 ports, want 25", q)
	}
}

func TestLoadConfigSNATAllocationErrors(t *testing.T) {
	clearNatwallEnv(t)
	tests := []struct{ name, extra, want string }{
		{"quota zero", "  host_quota: 0\n", `natwall.yaml:7:15: snat.host_quota: 0 is not from 1 to the 100 ports of snat.port_range`},
		{"quota negative", "  host_quota: -5\n", `natwall.yaml:7:15: snat.host_quota: -5 is not from 1 to the 100 ports of snat.port_range`},
		{"quota over the range", "  host_quota: 101\n", `natwall.yaml:7:15: snat.host_quota: 101 is not from 1 to the 100 ports of snat.port_range`},
		{"quota a word", "  host_quota: fair\n", `natwall.yaml:7:15: snat.host_quota: "fair" is not auto or a whole number of ports`},
		{"filtering unknown", "  filtering: full-cone\n", `natwall.yaml:7:14: snat.filtering: "full-cone" is not one of endpoint-independent, address-dependent, address-port-dependent`},
		{"overload not a bool", "  overload: sometimes\n", `natwall.yaml:7:13: snat.overload: "sometimes" is not true or false`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			expectConfigError(t, snatBase+tt.extra, tt.want)
		})
	}
}
