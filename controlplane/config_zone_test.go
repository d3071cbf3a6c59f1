package controlplane

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/spf13/pflag"

	"github.com/natwall/natwall/dataplane"
	"github.com/natwall/natwall/rules"
)

const twoNICConfig = "interfaces: [eth0, eth1]\ninside_networks: [198.18.0.0/24]\n"

// outside_interfaces and reverse_path, from the file, the environment and
// flags, and what they refuse.
func TestLoadConfigZones(t *testing.T) {
	clearNatwallEnv(t)
	tests := []struct {
		name    string
		yaml    string
		env     map[string]string
		flags   []string
		outside []string
		rp      dataplane.ReversePathMode
	}{
		{"defaults: no outside NIC, strict", twoNICConfig, nil, nil, nil, dataplane.ReversePathStrict},
		{"file", twoNICConfig + "outside_interfaces: [eth1]\nreverse_path: loose\n", nil, nil, []string{"eth1"}, dataplane.ReversePathLoose},
		{"neighbor", minimalConfig + "reverse_path: neighbor\n", nil, nil, nil, dataplane.ReversePathNeighbor},
		{"environment", twoNICConfig, map[string]string{"NATWALL_OUTSIDE_INTERFACES": "eth1", "NATWALL_REVERSE_PATH": "off"}, nil,
			[]string{"eth1"}, dataplane.ReversePathOff},
		{"flags over environment", twoNICConfig, map[string]string{"NATWALL_REVERSE_PATH": "off"},
			[]string{"--outside-interfaces=eth0", "--reverse-path=strict"}, []string{"eth0"}, dataplane.ReversePathStrict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			fs := pflag.NewFlagSet("natwall", pflag.ContinueOnError)
			AddFlags(fs)
			if err := fs.Parse(tt.flags); err != nil {
				t.Fatal(err)
			}
			cfg, err := loadConfig("natwall.yaml", []byte(tt.yaml), fs)
			if err != nil {
				t.Fatalf("loadConfig: %v", err)
			}
			if !slices.Equal(cfg.OutsideInterfaces, tt.outside) || cfg.ReversePath != tt.rp {
				t.Fatalf("outside %v reverse path %v, want %v %v", cfg.OutsideInterfaces, cfg.ReversePath, tt.outside, tt.rp)
			}
		})
	}
}

func TestLoadConfigZoneErrors(t *testing.T) {
	clearNatwallEnv(t)
	tests := []struct {
		name string
		yaml string
		want string
	}{
		{"outside NIC not attached", twoNICConfig + "outside_interfaces: [eth2]\n",
			`natwall.yaml:3:22: outside_interfaces[0]: "eth2" is not one of interfaces`},
		{"outside NIC twice", twoNICConfig + "outside_interfaces: [eth1, eth1]\n",
			`natwall.yaml:3:28: outside_interfaces[1]: "eth1" is listed twice`},
		{"every NIC outside", twoNICConfig + "outside_interfaces: [eth0, eth1]\n",
			`natwall.yaml:3:21: outside_interfaces: names every interface: inside hosts would have none to arrive on (with one NIC, leave it empty)`},
		{"the one NIC outside", minimalConfig + "outside_interfaces: [eth0]\n",
			`natwall.yaml:3:21: outside_interfaces: names every interface: inside hosts would have none to arrive on (with one NIC, leave it empty)`},
		{"unknown reverse path mode", twoNICConfig + "reverse_path: on\n",
			`natwall.yaml:3:15: reverse_path: "on" is not one of strict, neighbor, loose, off`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			expectConfigError(t, tt.yaml, tt.want)
		})
	}
}

// The daemon hands both settings to the dataplane as configured, and
// every mode's name is the one the config spells.
func TestDaemonSettingsCarryZones(t *testing.T) {
	for name, mode := range dataplane.ReversePathModes {
		if mode.String() != name {
			t.Errorf("ReversePathMode %d is named %q, want %q", int(mode), mode.String(), name)
		}
	}
	cfg := testDaemonConfig()
	cfg.Interfaces = []string{"eth0", "eth1"}
	cfg.OutsideInterfaces = []string{"eth1"}
	cfg.ReversePath = dataplane.ReversePathLoose
	dp := &fakeDataplane{}
	dp.attached.Store(true)
	d, _, opened := testDaemon(t, cfg, dp)
	r := start(t, d)
	r.waitReady(t)
	if err := r.stop(t); err != nil {
		t.Fatalf("run = %v", err)
	}
	if len(*opened) != 1 {
		t.Fatalf("dataplane opened %d times", len(*opened))
	}
	got := (*opened)[0].Settings
	if !slices.Equal(got.OutsideInterfaces, []string{"eth1"}) || got.ReversePath != dataplane.ReversePathLoose {
		t.Fatalf("dataplane settings: outside %v, reverse path %v; want [eth1], loose", got.OutsideInterfaces, got.ReversePath)
	}
}

// A reload revalidates a hairpinned flow as the dataplane classified it:
// east-west, to the inside host behind the external endpoint.
func TestRevalidateHairpinOnTranslatedDestination(t *testing.T) {
	f := dataplane.Flow{
		Proto:    17,
		Src:      netip.MustParseAddrPort("198.18.1.21:8888"),
		Dst:      netip.MustParseAddrPort("198.19.1.1:40000"),
		ReplySrc: netip.MustParseAddrPort("198.18.1.20:7777"),
		ReplyDst: netip.MustParseAddrPort("198.19.1.1:8888"),
		Zone:     dataplane.ZoneEastWest,
		SNAT:     true,
		DNAT:     true,
	}
	p := flowPacket(f)
	if p.Dst != netip.MustParseAddr("198.18.1.20") || p.DstPort != 7777 || p.Direction != rules.EastWest {
		t.Fatalf("hairpin flow revalidated as %+v, want east-west to 198.18.1.20:7777", p)
	}
	f.DNAT = false
	if p := flowPacket(f); p.Dst != f.Dst.Addr() || p.DstPort != f.Dst.Port() {
		t.Fatalf("untranslated flow revalidated as %+v", p)
	}
}
