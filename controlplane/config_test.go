package controlplane

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/natwall/natwall/controlplane/api"
	"github.com/natwall/natwall/dataplane"
)

const minimalConfig = "interfaces: [eth0]\ninside_networks: [198.18.0.0/24]\n"

// clearNatwallEnv unsets NATWALL_* variables inherited from the test's
// environment, restoring them afterwards, so that loads are hermetic.
func clearNatwallEnv(t testing.TB) {
	t.Helper()
	for _, kv := range os.Environ() {
		name, value, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, envPrefix) {
			t.Setenv(name, value) // registers the restore
			os.Unsetenv(name)
		}
	}
}

func writeConfig(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func defaultConntrack() ConntrackConfig {
	return ConntrackConfig{TableSize: 262144, GCInterval: 10 * time.Second, Timeouts: dataplane.DefaultTimeouts(),
		UnansweredPerSource: dataplane.DefaultUnansweredPerSource}
}

func TestLoadConfigExample(t *testing.T) {
	clearNatwallEnv(t)
	cfg, err := LoadConfig(LoadOptions{File: "testdata/natwall.yaml"})
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	want := Config{
		File:               "testdata/natwall.yaml",
		Interfaces:         []string{"eth0", "eth1"},
		XDPMode:            dataplane.ModeNative,
		XDPGenericFallback: false,
		InsideNetworks:     []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24"), netip.MustParsePrefix("2001:db8:1::/64")},
		MalformedAction:    dataplane.MalformedDrop,
		PinDir:             "/sys/fs/bpf/natwall",
		OnExit:             ExitDetach,
		Metrics:            MetricsConfig{Listen: "127.0.0.1:9617", RuleHitsLimit: 5000},
		Health:             HealthConfig{Listen: "0.0.0.0:9618"},
		API:                APIConfig{Socket: api.DefaultSocket},
		Log:                LogConfig{Level: slog.LevelInfo, Format: LogJSON},
		Sysctl:             SysctlConfig{Manage: true},
		StateDir:           DefaultStateDir,
		Revalidate:         RevalidateKeep,
		Reload:             ReloadConfig{Watch: true},
		Conntrack:          defaultConntrack(),
		EVE:                defaultEVE(),
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("LoadConfig(example) =\n%+v\nwant\n%+v", cfg, want)
	}
}

func TestLoadConfigValues(t *testing.T) {
	clearNatwallEnv(t)
	defaults := Config{
		File:            "natwall.yaml",
		Interfaces:      []string{"eth0"},
		InsideNetworks:  []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24")},
		MalformedAction: dataplane.MalformedDrop,
		PinDir:          dataplane.DefaultPinDir,
		OnExit:          ExitDetach,
		Metrics:         MetricsConfig{Listen: DefaultMetricsListen, RuleHitsLimit: 5000},
		API:             APIConfig{Socket: api.DefaultSocket},
		Log:             LogConfig{Level: slog.LevelInfo, Format: LogAuto},
		Sysctl:          SysctlConfig{Manage: true},
		StateDir:        DefaultStateDir,
		Revalidate:      RevalidateKeep,
		Reload:          ReloadConfig{Watch: true},
		Conntrack:       defaultConntrack(),
		EVE:             defaultEVE(),
	}
	tests := []struct {
		name string
		yaml string
		want func(*Config)
	}{
		{"defaults", minimalConfig, func(*Config) {}},
		{"snat and conntrack", minimalConfig + "snat:\n  enabled: true\n  addresses: [198.19.1.1]\n  port_range: 20000-20015\n  mapping: address-port-dependent\n  exclude: [198.19.9.0/24]\nconntrack:\n  table_size: 4096\n  invalid_tcp_reset: true\n  gc_interval: 1s\n  timeouts:\n    udp: 2m\nrules:\n  paths: [/etc/natwall/rules]\n", func(c *Config) {
			c.SNAT = &dataplane.SNAT{Addresses: []netip.Addr{netip.MustParseAddr("198.19.1.1")}, PortMin: 20000, PortMax: 20015,
				Mode: dataplane.MappingAddressPortDependent, Exclude: []netip.Prefix{netip.MustParsePrefix("198.19.9.0/24")}, Overload: true}
			c.Conntrack.TableSize, c.Conntrack.InvalidTCPReset, c.Conntrack.GCInterval, c.Conntrack.Timeouts.UDP = 4096, true, time.Second, 2*time.Minute
			c.RulePaths = []string{"/etc/natwall/rules"}
		}},
		{"generic mode with fallback", minimalConfig + "xdp_mode: generic\nxdp_generic_fallback: true\n", func(c *Config) {
			c.XDPMode = dataplane.ModeGeneric
			c.XDPGenericFallback = true
		}},
		{"ipv6 inside network", "interfaces: [eth0]\ninside_networks: [198.18.0.0/15, 2001:db8::/32]\n", func(c *Config) {
			c.InsideNetworks = []netip.Prefix{netip.MustParsePrefix("198.18.0.0/15"), netip.MustParsePrefix("2001:db8::/32")}
		}},
		{"interfaces as one string", "interfaces: eth0, eth1\ninside_networks: [198.18.0.0/24]\n", func(c *Config) {
			c.Interfaces = []string{"eth0", "eth1"}
		}},
		{"malformed pass, keep on exit", minimalConfig + "malformed_action: pass\non_exit: keep\n", func(c *Config) {
			c.MalformedAction = dataplane.MalformedPass
			c.OnExit = ExitKeep
		}},
		{"replace incompatible state", minimalConfig + "on_incompatible_state: replace\n", func(c *Config) {
			c.ReplaceIncompatibleState = true
		}},
		{"rule hits off", minimalConfig + "metrics:\n  rule_hits_limit: 0\n", func(c *Config) {
			c.Metrics.RuleHitsLimit = 0
		}},
		{"vlan pass", minimalConfig + "vlan_action: pass\n", func(c *Config) {
			c.VLANAction = dataplane.VLANPass
		}},
		{"pin dir cleaned", minimalConfig + "pin_dir: /sys/fs/bpf/natwall-b/\n", func(c *Config) {
			c.PinDir = "/sys/fs/bpf/natwall-b"
		}},
		{"health on the metrics listener", minimalConfig + "metrics: {listen: '[::1]:9000'}\nhealth: {listen: '[::1]:9000'}\n", func(c *Config) {
			c.Metrics.Listen = "[::1]:9000"
		}},
		{"separate health listener", minimalConfig + "health: {listen: ':9618'}\n", func(c *Config) {
			c.Health.Listen = ":9618"
		}},
		{"log", minimalConfig + "log: {level: debug, format: text}\n", func(c *Config) {
			c.Log = LogConfig{Level: slog.LevelDebug, Format: LogText}
		}},
		{"null section keeps defaults", minimalConfig + "metrics:\nlog: ~\n", func(*Config) {}},
		{"sysctl unmanaged", minimalConfig + "sysctl:\n  manage: false\n", func(c *Config) {
			c.Sysctl.Manage = false
		}},
		{"anchors and aliases", "interfaces: &nics [eth0]\ninside_networks: [198.18.0.0/24]\n", func(*Config) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := loadConfig("natwall.yaml", []byte(tt.yaml), nil)
			if err != nil {
				t.Fatalf("loadConfig: %v", err)
			}
			want := defaults
			want.Interfaces = append([]string(nil), defaults.Interfaces...)
			tt.want(&want)
			if !reflect.DeepEqual(cfg, want) {
				t.Errorf("got\n%+v\nwant\n%+v", cfg, want)
			}
		})
	}
}

func TestLoadConfigErrors(t *testing.T) {
	clearNatwallEnv(t)
	tests := []struct {
		name string
		yaml string
		want string // the whole error, one line per problem
	}{
		{"bad enum", minimalConfig + "xdp_mode: fast\n",
			`natwall.yaml:3:11: xdp_mode: "fast" is not one of native, generic`},
		{"unknown key with suggestion", minimalConfig + "xdp_mod: native\n",
			`natwall.yaml:3:1: xdp_mod: unknown key (did you mean xdp_mode?)`},
		{"unknown key far from any", minimalConfig + "frobnicate: 1\n",
			`natwall.yaml:3:1: frobnicate: unknown key`},
		{"unknown nested key", minimalConfig + "metrics:\n  listne: 127.0.0.1:1\n",
			`natwall.yaml:4:3: metrics.listne: unknown key (did you mean metrics.listen?)`},
		{"dotted key at top level", minimalConfig + "metrics.listen: 127.0.0.1:1\n",
			`natwall.yaml:3:1: metrics.listen: unknown key (nest keys: metrics: followed by an indented mapping)`},
		{"key set twice", minimalConfig + "on_exit: keep\non_exit: detach\n",
			`natwall.yaml:4:1: on_exit: set twice (first at line 3)`},
		{"section not a mapping", minimalConfig + "log: text\n",
			`natwall.yaml:3:6: log: must be a mapping with the keys level, format`},
		{"syntax error", "interfaces: [eth0\n",
			`natwall.yaml:1: did not find expected ',' or ']'`},
		{"tab indentation", "interfaces:\n\t- eth0\n",
			`natwall.yaml:2: found character that cannot start any token`},
		{"not a mapping", "- eth0\n",
			`natwall.yaml:1:1: the config must be a mapping of keys to values`},
		{"two documents", minimalConfig + "---\nxdp_mode: native\n",
			`natwall.yaml:3:1: a second YAML document; the config is one document`},
		{"missing required", "xdp_mode: native\n",
			"natwall.yaml: interfaces: required: at least one NIC to attach XDP to\n" +
				"natwall.yaml: inside_networks: required: the CIDRs natwall protects ($HOME_NET)"},
		{"comments only", "# interfaces: [eth0]\n",
			"natwall.yaml: interfaces: required: at least one NIC to attach XDP to\n" +
				"natwall.yaml: inside_networks: required: the CIDRs natwall protects ($HOME_NET)"},
		{"empty interface list", "interfaces: []\ninside_networks: [198.18.0.0/24]\n",
			`natwall.yaml:1:13: interfaces: required: at least one NIC to attach XDP to`},
		{"duplicate interface", "interfaces: [eth0, eth1, eth0]\ninside_networks: [198.18.0.0/24]\n",
			`natwall.yaml:1:26: interfaces[2]: "eth0" is listed twice (also interfaces[0])`},
		{"interface name too long", "interfaces: [eth0123456789abcd]\ninside_networks: [198.18.0.0/24]\n",
			`natwall.yaml:1:14: interfaces[0]: "eth0123456789abcd" is longer than 15 bytes, the kernel's limit`},
		{"interface name with slash", "interfaces: [a/b]\ninside_networks: [198.18.0.0/24]\n",
			`natwall.yaml:1:14: interfaces[0]: "a/b" contains '/', ':' or a blank, which interface names cannot`},
		{"interface not a string", "interfaces: [{a: b}]\ninside_networks: [198.18.0.0/24]\n",
			`natwall.yaml:1:14: interfaces[0]: must be a string, not map[a:b]`},
		{"interfaces a mapping", "interfaces: {a: b}\ninside_networks: [198.18.0.0/24]\n",
			"natwall.yaml:1:13: interfaces: must be a list such as [a, b], not a mapping"},
		{"bad cidr", "interfaces: [eth0]\ninside_networks: [198.18.0.0/33]\n",
			`natwall.yaml:2:19: inside_networks[0]: "198.18.0.0/33" is not a CIDR such as 198.18.0.0/24 or 2001:db8::/64`},
		{"address without length", "interfaces: [eth0]\ninside_networks: [198.18.0.1]\n",
			`natwall.yaml:2:19: inside_networks[0]: "198.18.0.1" is not a CIDR such as 198.18.0.0/24 or 2001:db8::/64`},
		{"cidr with host bits", "interfaces: [eth0]\ninside_networks: [198.18.0.0/24, 2001:db8::1/64]\n",
			`natwall.yaml:2:34: inside_networks[1]: "2001:db8::1/64" has host bits set (did you mean 2001:db8::/64?)`},
		{"duplicate cidr", "interfaces: [eth0]\ninside_networks: [198.18.0.0/24, 198.18.0.0/24]\n",
			`natwall.yaml:2:34: inside_networks[1]: "198.18.0.0/24" is listed twice`},
		{"malformed action", minimalConfig + "malformed_action: reject\n",
			`natwall.yaml:3:19: malformed_action: "reject" is not one of drop, pass`},
		{"rule hits limit above both stages", minimalConfig + "metrics:\n  rule_hits_limit: 70000\n",
			`natwall.yaml:4:20: metrics.rule_hits_limit: 70000 is not from 0 to 65536 rules`},
		{"rule hits limit not a number", minimalConfig + "metrics:\n  rule_hits_limit: lots\n",
			`natwall.yaml:4:20: metrics.rule_hits_limit: "lots" is not a whole number of rules from 0 to 65536`},
		{"incompatible state action", minimalConfig + "on_incompatible_state: ignore\n",
			`natwall.yaml:3:24: on_incompatible_state: "ignore" is not one of refuse, replace`},
		{"vlan action", minimalConfig + "vlan_action: strip\n",
			`natwall.yaml:3:14: vlan_action: "strip" is not one of drop, pass`},
		{"relative pin dir", minimalConfig + "pin_dir: bpf/natwall\n",
			`natwall.yaml:3:10: pin_dir: "bpf/natwall" must be an absolute path`},
		{"pin dir is bpffs root", minimalConfig + "pin_dir: /sys/fs/bpf/\n",
			`natwall.yaml:3:10: pin_dir: "/sys/fs/bpf/" must be a directory of its own, such as /sys/fs/bpf/natwall`},
		{"on exit", minimalConfig + "on_exit: stay\n",
			`natwall.yaml:3:10: on_exit: "stay" is not one of detach, keep`},
		{"listen without port", minimalConfig + "metrics: {listen: 127.0.0.1}\n",
			`natwall.yaml:3:19: metrics.listen: "127.0.0.1" is not host:port`},
		{"listen port out of range", minimalConfig + "health: {listen: ':70000'}\n",
			`natwall.yaml:3:18: health.listen: ":70000" has no valid port number`},
		{"listen as a number", minimalConfig + "metrics:\n  listen: 9617\n",
			`natwall.yaml:4:11: metrics.listen: must be host:port such as 127.0.0.1:9617, not the bare number 9617 (did you mean ":9617"?)`},
		// Wrong types and limits name the key and the form it expects.
		{"duration as a number", minimalConfig + "conntrack:\n  timeouts:\n    udp: 300\n",
			`natwall.yaml:5:10: conntrack.timeouts.udp: must be a duration with a unit, such as 300s, not the bare number 300 (did you mean 300s?)`},
		{"duration without unit from a string", minimalConfig + "conntrack: {gc_interval: '30'}\n",
			`natwall.yaml:3:26: conntrack.gc_interval: "30" has no unit (did you mean 30s?)`},
		{"duration garbage", minimalConfig + "conntrack: {gc_interval: soon}\n",
			`natwall.yaml:3:26: conntrack.gc_interval: "soon" is not a duration such as 2h4m or 30s`},
		{"timeout over the dataplane's limit", minimalConfig + "conntrack:\n  timeouts:\n    tcp_established: 721h\n",
			`natwall.yaml:5:22: conntrack.timeouts.tcp_established: "721h" is not from 1s to 720h`},
		{"timeout below a second", minimalConfig + "conntrack: {timeouts: {icmp: 500ms}}\n",
			`natwall.yaml:3:30: conntrack.timeouts.icmp: "500ms" is not from 1s to 720h`},
		{"gc interval over an hour", minimalConfig + "conntrack: {gc_interval: 2h}\n",
			`natwall.yaml:3:26: conntrack.gc_interval: "2h" is not from 100ms to 1h`},
		{"table size that would wrap to 1024", minimalConfig + "conntrack: {table_size: 4294968320}\n",
			`natwall.yaml:3:25: conntrack.table_size: 4294968320 is not from 1024 to 16777216 flows`},
		{"table size beyond int64", minimalConfig + "conntrack: {table_size: '99999999999999999999'}\n",
			`natwall.yaml:3:25: conntrack.table_size: 99999999999999999999 is not from 1024 to 16777216 flows`},
		{"table size negative", minimalConfig + "conntrack: {table_size: -1}\n",
			`natwall.yaml:3:25: conntrack.table_size: -1 is not from 1024 to 16777216 flows`},
		{"table size not a number", minimalConfig + "conntrack: {table_size: lots}\n",
			`natwall.yaml:3:25: conntrack.table_size: "lots" is not a whole number of flows from 1024 to 16777216`},
		{"table size a float", minimalConfig + "conntrack: {table_size: 1.5e6}\n",
			`natwall.yaml:3:25: conntrack.table_size: must be a whole number of flows from 1024 to 16777216, not 1.5e+06`},
		{"port range as a number", minimalConfig + "snat: {port_range: 1024}\n",
			`natwall.yaml:3:20: snat.port_range: must be a range lo-hi such as 1024-65535, not 1024`},
		{"enum as a list", minimalConfig + "xdp_mode: [native]\n",
			`natwall.yaml:3:11: xdp_mode: must be one of native, generic, not a list`},
		{"log format names no empty choice", minimalConfig + "log: {format: yaml}\n",
			`natwall.yaml:3:15: log.format: "yaml" is not one of json, text`},
		{"bool as a mapping", minimalConfig + "sysctl: {manage: {a: 1}}\n",
			`natwall.yaml:3:18: sysctl.manage: must be true or false, not a mapping`},
		{"empty metrics listen", minimalConfig + "metrics: {listen: ''}\n",
			`natwall.yaml:3:19: metrics.listen: required: host:port for /metrics and /healthz`},
		{"log level", minimalConfig + "log: {level: verbose}\n",
			`natwall.yaml:3:14: log.level: "verbose" is not one of debug, info, warn, error`},
		{"bool", minimalConfig + "sysctl: {manage: maybe}\n",
			`natwall.yaml:3:18: sysctl.manage: "maybe" is not true or false`},
		{"every problem at once, in file order", "xdp_mode: fast\ninterfaces: [eth0]\nbogus: 1\n",
			"natwall.yaml:1:11: xdp_mode: \"fast\" is not one of native, generic\n" +
				"natwall.yaml:3:1: bogus: unknown key\n" +
				"natwall.yaml: inside_networks: required: the CIDRs natwall protects ($HOME_NET)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			expectConfigError(t, tt.yaml, tt.want)
		})
	}
}

// expectConfigError requires loading yaml as natwall.yaml to fail with
// exactly want, as a *ConfigError.
func expectConfigError(t *testing.T, yaml, want string) {
	t.Helper()
	_, err := loadConfig("natwall.yaml", []byte(yaml), nil)
	if err == nil {
		t.Fatal("loadConfig succeeded, want an error")
	}
	if err.Error() != want {
		t.Errorf("error:\n%s\nwant:\n%s", err, want)
	}
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Errorf("error %T is not a *ConfigError", err)
	}
}

func TestLoadConfigSizeCap(t *testing.T) {
	clearNatwallEnv(t)
	tests := []struct {
		name    string
		size    int
		wantErr bool
	}{
		{"at the cap", MaxConfigSize, false},
		{"one byte over", MaxConfigSize + 1, true},
		{"50 MB", 50 << 20, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A valid config padded with a comment to the size.
			text := minimalConfig + "#"
			text += strings.Repeat("x", tt.size-len(text)-1) + "\n"
			path := writeConfig(t, "natwall.yaml", text)
			_, err := LoadConfig(LoadOptions{File: path})
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("LoadConfig of %d bytes: %v", tt.size, err)
				}
				return
			}
			want := fmt.Sprintf("%s: file is larger than %d bytes", path, MaxConfigSize)
			var ce *ConfigError
			if err == nil || !errors.As(err, &ce) || !strings.HasPrefix(err.Error(), want) {
				t.Fatalf("LoadConfig of %d bytes = %v, want a *ConfigError starting %q", tt.size, err, want)
			}
		})
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	clearNatwallEnv(t)
	_, err := LoadConfig(LoadOptions{File: filepath.Join(t.TempDir(), "absent.yaml")})
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadConfig(absent file) error = %v, want ErrNotExist", err)
	}
}

// TestLoadConfigPrecedence checks that flags override the environment,
// which overrides the file, and that errors name the source that won.
func TestLoadConfigPrecedence(t *testing.T) {
	file := minimalConfig + "xdp_mode: generic\nmetrics: {listen: '127.0.0.1:1000'}\nlog: {level: warn}\n"
	tests := []struct {
		name    string
		env     map[string]string
		flags   []string
		want    func(*Config)
		wantErr string
	}{
		{name: "file only", want: func(*Config) {}},
		{
			name: "environment overrides the file",
			env: map[string]string{
				"NATWALL_XDP_MODE": "native", "NATWALL_METRICS_LISTEN": "127.0.0.1:2000",
				"NATWALL_INTERFACES": "eth1,eth2", "NATWALL_INSIDE_NETWORKS": "198.18.1.0/24 2001:db8::/32",
				"NATWALL_SYSCTL_MANAGE": "false", "NATWALL_XDP_GENERIC_FALLBACK": "1",
			},
			want: func(c *Config) {
				c.XDPMode = dataplane.ModeNative
				c.Metrics.Listen = "127.0.0.1:2000"
				c.Interfaces = []string{"eth1", "eth2"}
				c.InsideNetworks = []netip.Prefix{netip.MustParsePrefix("198.18.1.0/24"), netip.MustParsePrefix("2001:db8::/32")}
				c.Sysctl.Manage = false
				c.XDPGenericFallback = true
			},
		},
		{
			name:  "flags override the environment",
			env:   map[string]string{"NATWALL_METRICS_LISTEN": "127.0.0.1:2000", "NATWALL_LOG_LEVEL": "error"},
			flags: []string{"--metrics-listen=127.0.0.1:3000", "--interfaces=eth3", "--interfaces=eth4", "--sysctl-manage=false", "--log-level=debug"},
			want: func(c *Config) {
				c.Metrics.Listen = "127.0.0.1:3000"
				c.Interfaces = []string{"eth3", "eth4"}
				c.Sysctl.Manage = false
				c.Log.Level = slog.LevelDebug
			},
		},
		{
			name:  "unset flags do not override",
			env:   map[string]string{"NATWALL_ON_EXIT": "keep"},
			flags: []string{"--pin-dir=/sys/fs/bpf/nw2"},
			want: func(c *Config) {
				c.OnExit = ExitKeep
				c.PinDir = "/sys/fs/bpf/nw2"
			},
		},
		{
			name: "empty environment variable is unset",
			env:  map[string]string{"NATWALL_XDP_MODE": ""},
			want: func(*Config) {},
		},
		{
			name:    "environment error names the variable",
			env:     map[string]string{"NATWALL_XDP_MODE": "turbo"},
			wantErr: `environment NATWALL_XDP_MODE: xdp_mode: "turbo" is not one of native, generic`,
		},
		{
			name:    "flag error names the flag",
			env:     map[string]string{"NATWALL_XDP_MODE": "turbo"},
			flags:   []string{"--xdp-mode=warp"},
			wantErr: `flag --xdp-mode: xdp_mode: "warp" is not one of native, generic`,
		},
		{
			name:    "list element error from a flag",
			flags:   []string{"--inside-networks=198.18.0.0/24,bogus"},
			wantErr: `flag --inside-networks: inside_networks[1]: "bogus" is not a CIDR such as 198.18.0.0/24 or 2001:db8::/64`,
		},
		{
			name:    "bool from the environment",
			env:     map[string]string{"NATWALL_SYSCTL_MANAGE": "sometimes"},
			wantErr: `environment NATWALL_SYSCTL_MANAGE: sysctl.manage: "sometimes" is not true or false`,
		},
		{
			name:    "unknown variable",
			env:     map[string]string{"NATWALL_METRICS_LISTN": "127.0.0.1:1"},
			wantErr: `environment: NATWALL_METRICS_LISTN: unknown setting (did you mean NATWALL_METRICS_LISTEN?)`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearNatwallEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
			AddFlags(fs)
			if err := fs.Parse(tt.flags); err != nil {
				t.Fatal(err)
			}
			cfg, err := loadConfig("natwall.yaml", []byte(file), fs)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("error = %v, want %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("loadConfig: %v", err)
			}
			want, err := loadConfig("natwall.yaml", []byte(file), nil)
			if err != nil {
				t.Fatal(err)
			}
			tt.want(&want)
			if !reflect.DeepEqual(cfg, want) {
				t.Errorf("got\n%+v\nwant\n%+v", cfg, want)
			}
		})
	}
}

func TestLoadConfigWithoutFile(t *testing.T) {
	clearNatwallEnv(t)
	t.Setenv("NATWALL_INTERFACES", "eth0")
	_, err := LoadConfig(LoadOptions{})
	want := "inside_networks: required: the CIDRs natwall protects ($HOME_NET)"
	if err == nil || err.Error() != want {
		t.Errorf("error = %v, want %s", err, want)
	}
	t.Setenv("NATWALL_INSIDE_NETWORKS", "198.18.0.0/15")
	cfg, err := LoadConfig(LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.File != "" || cfg.Interfaces[0] != "eth0" || cfg.InsideNetworks[0] != netip.MustParsePrefix("198.18.0.0/15") {
		t.Errorf("config from the environment = %+v", cfg)
	}
}

func TestAddFlagsNamesEveryKey(t *testing.T) {
	fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
	AddFlags(fs)
	for _, k := range configKeys {
		if fs.Lookup(flagName(k.key)) == nil {
			t.Errorf("no flag for %s", k.key)
		}
	}
	for _, name := range []string{"interfaces", "metrics-listen", "log-level", "xdp-generic-fallback"} {
		if fs.Lookup(name) == nil {
			t.Errorf("no flag --%s", name)
		}
	}
}

// FuzzLoadConfig checks that no input panics, that every error is located
// in the file, and that every accepted config is valid.
func FuzzLoadConfig(f *testing.F) {
	clearNatwallEnv(f)
	example, err := os.ReadFile("testdata/natwall.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		string(example),
		minimalConfig,
		minimalConfig + "xdp_mode: fast\n",
		"interfaces: &a [eth0]\ninside_networks: *a\n",
		"metrics: {listen: ':0'}\nlog: [1]\n",
		"a: [\n",
		"---\n---\n",
		"interfaces: eth0 eth1\ninside_networks: 198.18.0.0/15,2001:db8::/32\nxdp_mode: !!binary aGk=\n",
		"<<: {interfaces: [eth0]}\n",
		"? [a]\n: b\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := loadConfig("fuzz.yaml", data, nil)
		if err != nil {
			for _, e := range unjoin(err) {
				var ce *ConfigError
				if !errors.As(e, &ce) {
					t.Fatalf("error %T %q is not a *ConfigError", e, e)
				}
				if ce.Source != "fuzz.yaml" {
					t.Fatalf("error %q does not name the file", e)
				}
			}
			return
		}
		if len(cfg.Interfaces) == 0 || len(cfg.InsideNetworks) == 0 {
			t.Fatalf("accepted a config without interfaces or inside networks: %+v", cfg)
		}
		for _, name := range cfg.Interfaces {
			if validInterfaceName(name) != nil {
				t.Fatalf("accepted interface %q", name)
			}
		}
		for _, p := range cfg.InsideNetworks {
			if !p.IsValid() || p != p.Masked() {
				t.Fatalf("accepted inside network %s", p)
			}
		}
		if !filepath.IsAbs(cfg.PinDir) || validListenAddr(cfg.Metrics.Listen) != nil {
			t.Fatalf("accepted pin_dir %q, metrics.listen %q", cfg.PinDir, cfg.Metrics.Listen)
		}
	})
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
