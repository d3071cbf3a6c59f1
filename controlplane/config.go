// Package controlplane runs natwall's daemon: configuration, kernel
// settings, the dataplane's lifetime, metrics and health.
package controlplane

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"

	"github.com/natwall/natwall/controlplane/api"
	"github.com/natwall/natwall/dataplane"
)

// ExitAction is what happens to the dataplane when the daemon stops.
type ExitAction string

const (
	// ExitDetach removes the XDP program and its pinned state.
	ExitDetach ExitAction = "detach"
	// ExitKeep leaves the program attached and its maps pinned, so that the
	// next daemon (a restart or an upgrade) takes over the live flows.
	ExitKeep ExitAction = "keep"
)

// LogFormat is how log records are written.
type LogFormat string

const (
	// LogAuto is JSON, or text when stderr is a terminal.
	LogAuto LogFormat = ""
	LogJSON LogFormat = "json"
	LogText LogFormat = "text"
)

// Config is the whole configuration of `natwall run`, validated.
type Config struct {
	// File is the config file it was read from; empty when there was none.
	File string

	Interfaces []string
	// OutsideInterfaces are the Interfaces that face the outside: an
	// inside source arriving on one is spoofed (docs/security.md).
	OutsideInterfaces []string
	// ReversePath is how a new flow's source must route back.
	ReversePath        dataplane.ReversePathMode
	XDPMode            dataplane.XDPMode
	XDPGenericFallback bool
	// InsideNetworks is $HOME_NET: traffic from them is outbound.
	InsideNetworks  []netip.Prefix
	MalformedAction dataplane.MalformedAction
	// VLANAction is what happens to frames tagged with a VLAN ID other
	// than 0 (priority tags always meet the policy).
	VLANAction dataplane.VLANAction
	PinDir     string
	// ReplaceIncompatibleState replaces pinned maps of another layout
	// instead of refusing to start.
	ReplaceIncompatibleState bool
	OnExit                   ExitAction

	Metrics MetricsConfig
	Health  HealthConfig
	API     APIConfig
	Log     LogConfig
	Sysctl  SysctlConfig

	// StateDir keeps rule numbers and the live rule set.
	StateDir string
	// RulePaths are rule files or directories; none means the built-in
	// policy (flows may start from inside only).
	RulePaths []string
	// Revalidate applies to established flows on a rule reload.
	Revalidate Revalidate
	Reload     ReloadConfig
	// SNAT is nil when outbound flows are not translated.
	SNAT      *dataplane.SNAT
	Conntrack ConntrackConfig
	EVE       EVEConfig
}

// ReloadConfig says what starts a reload besides SIGHUP and the API.
type ReloadConfig struct {
	// Watch reloads when the config file or a rule file changes.
	Watch bool
}

// ConntrackConfig sizes and times the flow tables.
type ConntrackConfig struct {
	TableSize       uint32
	InvalidTCPReset bool
	GCInterval      time.Duration
	Timeouts        dataplane.Timeouts
	// UnansweredPerSource limits the unanswered flows of one source
	// host (dataplane.Settings.UnansweredPerSource); 0 is no limit.
	UnansweredPerSource uint32
}

// MetricsConfig is the HTTP listener for /metrics and /healthz.
type MetricsConfig struct {
	Listen string
	// RuleHitsLimit is the largest rule set whose rules each get hit
	// counter series; 0 turns them off.
	RuleHitsLimit int
}

// maxRuleHitsLimit is both stages full.
const maxRuleHitsLimit = 2 * dataplane.MaxRulesPerStage

// HealthConfig is an optional second listener serving only /healthz, for
// cloud load balancer probes that must reach the VM from outside while
// metrics stay on a private address.
type HealthConfig struct {
	// Listen is empty when health is served on the metrics listener only.
	Listen string
}

// APIConfig is the local API the CLI talks to.
type APIConfig struct {
	// Socket is the unix socket's path. LoadConfig never leaves it empty;
	// a Config built by hand without it runs no API.
	Socket string
}

// LogConfig configures the daemon's slog logger.
type LogConfig struct {
	Level  slog.Level
	Format LogFormat
}

// SysctlConfig controls the kernel settings natwall needs (see ForwardingSysctls).
type SysctlConfig struct {
	// Manage sets them at startup; when false they are only checked.
	Manage bool
}

// Defaults of the optional keys.
const (
	DefaultMetricsListen = "127.0.0.1:9617"
	envPrefix            = "NATWALL_"
)

// MaxConfigSize bounds a config file, as rules.MaxFileSize bounds a rule
// file: a config is a page of YAML, and a runaway or hostile file must not
// be read into memory whole.
const MaxConfigSize = 1 << 20

// Limits checked when the config is loaded, so that a value the dataplane
// would refuse stops natwall before anything is pinned or attached.
const (
	minTableSize  = 1024
	maxTableSize  = 16 << 20
	maxTimeout    = 30 * 24 * time.Hour // the dataplane's limit, 720h
	maxGCInterval = time.Hour
)

type valueKind int

const (
	kindString valueKind = iota
	kindBool
	kindList
)

// configKey is one setting. Its environment variable and flag names are
// derived from key: metrics.listen is NATWALL_METRICS_LISTEN and --metrics-listen.
type configKey struct {
	key   string
	kind  valueKind
	def   any // nil: no default
	usage string
	// form is the expected value, for errors about a value of the wrong
	// type ("must be <form>, not 300"); empty for lists and booleans.
	form string
}

var configKeys = []configKey{
	{key: "interfaces", kind: kindList, usage: "NICs to attach XDP to (required)"},
	{key: "xdp_mode", kind: kindString, def: "native", usage: "XDP attach mode: native or generic", form: "one of native, generic"},
	{key: "xdp_generic_fallback", kind: kindBool, def: false, usage: "attach in generic mode where the driver refuses native mode"},
	{key: "inside_networks", kind: kindList, usage: "CIDRs of the protected networks, $HOME_NET (required)"},
	{key: "outside_interfaces", kind: kindList, usage: "the interfaces facing the outside: inside sources arriving on them are dropped as spoofed (default: none)"},
	{key: "reverse_path", kind: kindString, def: "strict", usage: "a new flow's source must route back out of its arrival NIC (strict), and from the route's next hop (neighbor), by any NIC (loose), or is not checked (off)", form: "one of strict, neighbor, loose, off"},
	{key: "malformed_action", kind: kindString, def: "drop", usage: "what to do with packets that cannot be parsed: drop or pass", form: "one of drop, pass"},
	{key: "vlan_action", kind: kindString, def: "drop", usage: "what to do with frames tagged with a VLAN ID other than 0: drop, or pass to the kernel's VLAN device unfiltered", form: "one of drop, pass"},
	{key: "pin_dir", kind: kindString, def: dataplane.DefaultPinDir, usage: "bpffs directory for natwall's pinned maps and links", form: "an absolute path such as /sys/fs/bpf/natwall"},
	{key: "on_incompatible_state", kind: kindString, def: "refuse", usage: "pinned maps from a natwall with another layout: refuse to start (they go on enforcing), or replace them, losing their flows", form: "one of refuse, replace"},
	{key: "on_exit", kind: kindString, def: string(ExitDetach), usage: "on shutdown: detach the dataplane, or keep it attached for the next daemon", form: "one of detach, keep"},
	{key: "metrics.listen", kind: kindString, def: DefaultMetricsListen, usage: "host:port serving /metrics and /healthz", form: "host:port such as 127.0.0.1:9617"},
	{key: "metrics.rule_hits_limit", kind: kindString, def: "5000", usage: "export per-rule hit counters while the live rule set has at most this many rules; 0 never", form: "a whole number of rules from 0 to 65536"},
	{key: "health.listen", kind: kindString, def: "", usage: "extra host:port serving only /healthz (default: none)", form: "host:port such as 0.0.0.0:9618"},
	{key: "api.socket", kind: kindString, def: api.DefaultSocket, usage: "unix socket of the local API the CLI uses (root only, mode 0600)", form: "an absolute path such as " + api.DefaultSocket},
	{key: "log.level", kind: kindString, def: "info", usage: "log level: debug, info, warn or error", form: "one of debug, info, warn, error"},
	{key: "log.format", kind: kindString, def: string(LogAuto), usage: "log format: json or text (default: text on a terminal, json otherwise)", form: "one of json, text"},
	{key: "sysctl.manage", kind: kindBool, def: true, usage: "set the kernel's forwarding sysctls at startup"},
	{key: "state_dir", kind: kindString, def: DefaultStateDir, usage: "directory for rule numbers and the live rule set", form: "an absolute path such as /var/lib/natwall"},
	{key: "rules.paths", kind: kindList, usage: "rule files or directories of *.yaml (default: none, the built-in policy)"},
	{key: "reload.watch", kind: kindBool, def: true, usage: "reload when the config file or a rule file changes (SIGHUP and natwall reload always work)"},
	{key: "rules.revalidate", kind: kindString, def: string(RevalidateKeep), usage: "on reload, keep or close established flows the new rules deny", form: "one of keep, close"},
	{key: "snat.enabled", kind: kindBool, def: false, usage: "translate outbound IPv4 flows to snat.addresses"},
	{key: "snat.addresses", kind: kindList, usage: "the appliance's external IPv4 addresses (required with snat.enabled)"},
	{key: "snat.port_range", kind: kindString, def: "1024-65535", usage: "external ports (and ICMP identifiers) to allocate", form: "a range lo-hi such as 1024-65535"},
	{key: "snat.mapping", kind: kindString, def: dataplane.MappingEndpointIndependent.String(), usage: "endpoint-independent or address-port-dependent", form: "one of endpoint-independent, address-port-dependent"},
	{key: "snat.exclude", kind: kindList, usage: "IPv4 destinations never translated"},
	{key: "snat.overload", kind: kindBool, def: true, usage: "when an address has no free port, share ports across destinations (5-tuples stay unique)"},
	{key: "snat.host_quota", kind: kindString, def: "auto", usage: "external ports one inside host may hold per address and protocol (auto: a quarter of snat.port_range)", form: "auto, or a whole number of ports within snat.port_range"},
	{key: "snat.filtering", kind: kindString, def: dataplane.FilterAddressPortDependent.String(), usage: "which outside endpoints reach a mapping unsolicited", form: "one of endpoint-independent, address-dependent, address-port-dependent"},
	{key: "conntrack.table_size", kind: kindString, def: "262144", usage: "flows each flow table holds", form: "a whole number of flows from 1024 to 16777216"},
	{key: "conntrack.invalid_tcp_reset", kind: kindBool, def: false, usage: "answer inside TCP of no known flow with a RST"},
	{key: "conntrack.unanswered_per_source", kind: kindString, def: strconv.Itoa(dataplane.DefaultUnansweredPerSource), usage: "unanswered flows one source host may hold, 0 for no limit", form: "a whole number of flows from 0 to 16777216"},
	{key: "conntrack.gc_interval", kind: kindString, def: "10s", usage: "how often expired flows are collected", form: "a duration with a unit, such as 10s"},
	{key: "conntrack.timeouts.tcp_syn", kind: kindString, def: dataplane.DefaultTimeouts().TCPSyn.String(), usage: "idle timeout of TCP handshakes", form: "a duration with a unit, such as 300s"},
	{key: "conntrack.timeouts.tcp_established", kind: kindString, def: dataplane.DefaultTimeouts().TCPEstablished.String(), usage: "idle timeout of established TCP", form: "a duration with a unit, such as 300s"},
	{key: "conntrack.timeouts.tcp_transitory", kind: kindString, def: dataplane.DefaultTimeouts().TCPTransitory.String(), usage: "idle timeout of closing TCP", form: "a duration with a unit, such as 300s"},
	{key: "conntrack.timeouts.tcp_close", kind: kindString, def: dataplane.DefaultTimeouts().TCPClose.String(), usage: "idle timeout after a TCP RST", form: "a duration with a unit, such as 300s"},
	{key: "conntrack.timeouts.udp", kind: kindString, def: dataplane.DefaultTimeouts().UDP.String(), usage: "idle timeout of UDP flows", form: "a duration with a unit, such as 300s"},
	{key: "conntrack.timeouts.icmp", kind: kindString, def: dataplane.DefaultTimeouts().ICMP.String(), usage: "idle timeout of ICMP flows", form: "a duration with a unit, such as 300s"},
	{key: "conntrack.timeouts.other", kind: kindString, def: dataplane.DefaultTimeouts().Other.String(), usage: "idle timeout of other protocols", form: "a duration with a unit, such as 300s"},
}

func envName(key string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

func flagName(key string) string {
	return strings.NewReplacer(".", "-", "_", "-").Replace(key)
}

// AddFlags defines a flag for every config key on fs; pass the same fs to
// LoadConfig. A flag overrides the environment, which overrides the file.
func AddFlags(fs *pflag.FlagSet) {
	for _, k := range configKeys {
		name := flagName(k.key)
		switch k.kind {
		case kindList:
			fs.StringSlice(name, nil, k.usage)
		case kindBool:
			fs.Bool(name, k.def.(bool), k.usage)
		case kindString:
			def, _ := k.def.(string)
			fs.String(name, def, k.usage)
		}
	}
}

// ConfigError is one invalid setting, located as precisely as its source allows.
type ConfigError struct {
	// Source is the config file, "environment" or "flag --name"; empty
	// when a required key is missing everywhere.
	Source string
	// Line and Column locate the error in a config file; 0 when unknown.
	Line, Column int
	// Key is the dotted config key, with [i] for a list element; for an
	// environment variable, its name.
	Key string
	Msg string
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	if e.Source != "" {
		b.WriteString(e.Source)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
			if e.Column > 0 {
				fmt.Fprintf(&b, ":%d", e.Column)
			}
		}
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// LoadOptions say where LoadConfig reads from.
type LoadOptions struct {
	// File is the YAML config file; empty to configure from the
	// environment and flags alone.
	File string
	// Flags holds the flags defined by AddFlags; those that were set
	// override the other sources. May be nil.
	Flags *pflag.FlagSet
}

// LoadConfig reads the config file, then NATWALL_* environment variables,
// then flags, and validates the result whole. Every problem is reported,
// each as a *ConfigError naming its key and source (joined with errors.Join).
// Unknown keys and unknown NATWALL_* variables are errors: a typo must not
// silently leave a setting at its default.
func LoadConfig(opts LoadOptions) (Config, error) {
	var data []byte
	if opts.File != "" {
		var err error
		if data, err = readConfigFile(opts.File); err != nil {
			return Config{}, err
		}
	}
	return loadConfig(opts.File, data, opts.Flags)
}

// readConfigFile reads at most MaxConfigSize+1 bytes, so that loadConfig
// sees an oversized file as one without reading all of it.
func readConfigFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return data, nil
}

// configLoader gathers one load's sources and the errors found in them.
type configLoader struct {
	file  string
	v     *viper.Viper
	flags *pflag.FlagSet
	env   map[string]bool // NATWALL_* variables that are set and non-empty
	// nodes holds each file key's value node, for positions; list elements
	// are stored as key[i].
	nodes map[string]*yaml.Node
	// badSections are sections that are not mappings in the file.
	badSections map[string]bool
	errs        []error
}

func loadConfig(file string, data []byte, flags *pflag.FlagSet) (Config, error) {
	if len(data) > MaxConfigSize {
		return Config{}, &ConfigError{Source: file, Msg: fmt.Sprintf("file is larger than %d bytes; a config is a page of YAML (rules go in rules.paths)", MaxConfigSize)}
	}
	l := &configLoader{file: file, v: viper.New(), flags: flags, env: map[string]bool{},
		nodes: map[string]*yaml.Node{}, badSections: map[string]bool{}}

	if err := l.readFile(data); err != nil {
		return Config{}, err
	}
	l.checkEnviron(os.Environ())
	for _, k := range configKeys {
		if k.def != nil {
			l.v.SetDefault(k.key, k.def)
		}
		if err := l.v.BindEnv(k.key, envName(k.key)); err != nil {
			return Config{}, fmt.Errorf("bind %s: %w", envName(k.key), err)
		}
		if flags != nil {
			if f := flags.Lookup(flagName(k.key)); f != nil {
				if err := l.v.BindPFlag(k.key, f); err != nil {
					return Config{}, fmt.Errorf("bind flag --%s: %w", f.Name, err)
				}
			}
		}
	}

	cfg := l.build()
	if len(l.errs) > 0 {
		return Config{}, l.joinedErrors()
	}
	return cfg, nil
}

// joinedErrors lists the file's errors in file order, then the others.
func (l *configLoader) joinedErrors() error {
	rank := func(err error) (int, int, int) {
		var ce *ConfigError
		if errors.As(err, &ce) && ce.Line > 0 {
			return 0, ce.Line, ce.Column
		}
		return 1, 0, 0
	}
	slices.SortStableFunc(l.errs, func(a, b error) int {
		ga, la, ca := rank(a)
		gb, lb, cb := rank(b)
		if c := cmp.Compare(ga, gb); c != 0 {
			return c
		}
		if c := cmp.Compare(la, lb); c != 0 {
			return c
		}
		return cmp.Compare(ca, cb)
	})
	return errors.Join(l.errs...)
}

var yamlLineError = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// readFile parses the file twice: into yaml.Node to check keys with their
// positions, and into viper, which layers it under environment and flags.
func (l *configLoader) readFile(data []byte) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return nil // only comments
	} else if err != nil {
		return l.yamlError(err)
	}
	var next yaml.Node
	if err := dec.Decode(&next); err == nil {
		return &ConfigError{Source: l.file, Line: next.Line, Column: next.Column, Msg: "a second YAML document; the config is one document"}
	} else if !errors.Is(err, io.EOF) {
		return l.yamlError(err)
	}
	if len(doc.Content) == 0 {
		return nil
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil
	}
	if root.Kind != yaml.MappingNode {
		return &ConfigError{Source: l.file, Line: root.Line, Column: root.Column, Msg: "the config must be a mapping of keys to values"}
	}
	// Unknown keys are reported with the invalid values of known ones.
	l.walk(root, "")
	l.v.SetConfigType("yaml")
	if err := l.v.ReadConfig(bytes.NewReader(data)); err != nil {
		if len(l.errs) > 0 {
			// What viper refused (a key set twice) is among them.
			return l.joinedErrors()
		}
		return &ConfigError{Source: l.file, Msg: err.Error()}
	}
	return nil
}

func (l *configLoader) yamlError(err error) error {
	if m := yamlLineError.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &ConfigError{Source: l.file, Line: line, Msg: m[2]}
	}
	return &ConfigError{Source: l.file, Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
}

// walk checks a mapping's keys against configKeys and records where each
// value is. prefix is "" at the top level, "section." below it.
func (l *configLoader) walk(m *yaml.Node, prefix string) {
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		keyNode, val := m.Content[i], m.Content[i+1]
		for val.Kind == yaml.AliasNode && val.Alias != nil {
			val = val.Alias
		}
		key := prefix + keyNode.Value
		if keyNode.Kind != yaml.ScalarNode {
			l.fileError(keyNode, "", "a key must be a plain name")
			continue
		}
		if first, dup := seen[keyNode.Value]; dup {
			l.fileError(keyNode, key, fmt.Sprintf("set twice (first at line %d)", first.Line))
			continue
		}
		seen[keyNode.Value] = keyNode

		switch {
		case strings.Contains(keyNode.Value, "."):
			section, _, _ := strings.Cut(keyNode.Value, ".")
			l.fileError(keyNode, key, fmt.Sprintf("unknown key (nest keys: %s: followed by an indented mapping)", section))
		case isLeafKey(key):
			l.nodes[key] = val
			if val.Kind == yaml.SequenceNode {
				for j, el := range val.Content {
					l.nodes[fmt.Sprintf("%s[%d]", key, j)] = el
				}
			}
		case isSection(key):
			switch {
			case val.Kind == yaml.MappingNode:
				l.walk(val, key+".")
			case val.Kind == yaml.ScalarNode && val.Tag == "!!null":
			default:
				l.badSections[key] = true
				l.fileError(val, key, fmt.Sprintf("must be a mapping with the keys %s", strings.Join(sectionKeys(key), ", ")))
			}
		default:
			msg := "unknown key"
			if s := suggestKey(key, prefix); s != "" {
				msg += fmt.Sprintf(" (did you mean %s?)", s)
			}
			l.fileError(keyNode, key, msg)
		}
	}
}

func (l *configLoader) fileError(n *yaml.Node, key, msg string) {
	l.errs = append(l.errs, &ConfigError{Source: l.file, Line: n.Line, Column: n.Column, Key: key, Msg: msg})
}

func isLeafKey(key string) bool {
	return slices.ContainsFunc(configKeys, func(k configKey) bool { return k.key == key })
}

func isSection(name string) bool {
	return len(sectionKeys(name)) > 0
}

func sectionKeys(section string) []string {
	var keys []string
	for _, k := range configKeys {
		if leaf, ok := strings.CutPrefix(k.key, section+"."); ok {
			keys = append(keys, leaf)
		}
	}
	return keys
}

// suggestKey finds the known key nearest to a misspelt one at the same level.
func suggestKey(key, prefix string) string {
	var candidates []string
	for _, k := range configKeys {
		name, ok := strings.CutPrefix(k.key, prefix)
		if !ok {
			continue
		}
		if prefix == "" {
			name, _, _ = strings.Cut(name, ".")
		}
		candidates = append(candidates, prefix+name)
	}
	best, bestDist := "", 3 // further than 2 edits is not a typo
	for _, c := range candidates {
		if d := editDistance(key, c); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// checkEnviron rejects NATWALL_* variables that name no key.
func (l *configLoader) checkEnviron(environ []string) {
	known := map[string]bool{}
	for _, k := range configKeys {
		known[envName(k.key)] = true
	}
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, envPrefix) {
			continue
		}
		if !known[name] {
			msg := "unknown setting"
			key := strings.ToLower(strings.TrimPrefix(name, envPrefix))
			if s := nearestEnv(key); s != "" {
				msg += fmt.Sprintf(" (did you mean %s?)", s)
			}
			l.errs = append(l.errs, &ConfigError{Source: "environment", Key: name, Msg: msg})
			continue
		}
		// viper ignores empty variables; so do the error locations.
		if value != "" {
			l.env[name] = true
		}
	}
}

func nearestEnv(lowerKey string) string {
	best, bestDist := "", 3
	for _, k := range configKeys {
		flat := strings.ReplaceAll(k.key, ".", "_")
		if d := editDistance(lowerKey, flat); d < bestDist {
			best, bestDist = envName(k.key), d
		}
	}
	return best
}

// origin locates a key's effective value, mirroring viper's precedence.
func (l *configLoader) origin(key string) *ConfigError {
	base, _, _ := strings.Cut(key, "[") // the list of an element
	if l.flags != nil {
		if f := l.flags.Lookup(flagName(base)); f != nil && f.Changed {
			return &ConfigError{Source: "flag --" + f.Name, Key: key}
		}
	}
	if name := envName(base); l.env[name] {
		return &ConfigError{Source: "environment " + name, Key: key}
	}
	n := l.nodes[key]
	if n == nil {
		// A list given as one string has no nodes for its elements.
		n = l.nodes[base]
	}
	if n == nil {
		return &ConfigError{Source: l.file, Key: key}
	}
	return &ConfigError{Source: l.file, Line: n.Line, Column: n.Column, Key: key}
}

func (l *configLoader) fail(key, format string, args ...any) {
	e := l.origin(key)
	e.Msg = fmt.Sprintf(format, args...)
	l.errs = append(l.errs, e)
}

// raw is a key's effective value, nil when unset everywhere. Viper returns
// YAML values typed, flag values typed by the flag, environment as strings.
func (l *configLoader) raw(key string) any {
	if section, _, ok := strings.Cut(key, "."); ok && l.badSections[section] {
		// Already reported; viper would read the scalar as the key's value.
		for _, k := range configKeys {
			if k.key == key {
				return k.def
			}
		}
	}
	return l.v.Get(key)
}

func (l *configLoader) str(key string) (string, bool) {
	switch v := l.raw(key).(type) {
	case nil:
		return "", true
	case string:
		return strings.TrimSpace(v), true
	default:
		l.wrongType(key, v)
		return "", false
	}
}

// wrongType reports a value of the wrong YAML type, naming the form the
// key expects: YAML reads 300 as a number, and 127.0.0.1 as a string
// only by luck, so the message says what to write instead.
func (l *configLoader) wrongType(key string, v any) {
	form := "a string"
	if k := lookupKey(key); k != nil && k.form != "" {
		form = k.form
	}
	switch v.(type) {
	case int, int64, uint64, float64:
		if strings.HasPrefix(form, "a duration") {
			l.fail(key, "must be %s, not the bare number %v (did you mean %vs?)", form, v, v)
			return
		}
		if strings.HasPrefix(form, "host:port") {
			l.fail(key, "must be %s, not the bare number %v (did you mean \":%v\"?)", form, v, v)
			return
		}
	case map[string]any, []any:
		l.fail(key, "must be %s, not a %s", form, yamlKind(v))
		return
	}
	l.fail(key, "must be %s, not %v", form, v)
}

func yamlKind(v any) string {
	if _, ok := v.([]any); ok {
		return "list"
	}
	return "mapping"
}

func lookupKey(key string) *configKey {
	base, _, _ := strings.Cut(key, "[")
	for i := range configKeys {
		if configKeys[i].key == base {
			return &configKeys[i]
		}
	}
	return nil
}

func (l *configLoader) boolean(key string) bool {
	switch v := l.raw(key).(type) {
	case bool:
		return v
	case string:
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			l.fail(key, "%q is not true or false", v)
		}
		return b
	case map[string]any, []any:
		l.fail(key, "must be true or false, not a %s", yamlKind(v))
		return false
	default:
		l.fail(key, "must be true or false, not %v", v)
		return false
	}
}

// list accepts a YAML sequence of strings, or one string of items
// separated by commas or blanks (environment variables and flags).
func (l *configLoader) list(key string) (items []string, ok bool) {
	ok = true
	switch v := l.raw(key).(type) {
	case nil:
	case string:
		items = strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
	case []string:
		for _, s := range v {
			items = append(items, strings.TrimSpace(s))
		}
	case []any:
		for i, el := range v {
			s, isString := el.(string)
			if !isString {
				l.fail(fmt.Sprintf("%s[%d]", key, i), "must be a string, not %v", el)
				ok = false
				continue
			}
			items = append(items, strings.TrimSpace(s))
		}
	case map[string]any:
		l.fail(key, "must be a list such as [a, b], not a mapping")
		ok = false
	default:
		l.fail(key, "must be a list such as [a, b], not %v", v)
		ok = false
	}
	return items, ok
}

func (l *configLoader) oneOf(key string, choices ...string) (string, bool) {
	s, ok := l.str(key)
	if !ok {
		return "", false
	}
	if !slices.Contains(choices, s) {
		// An empty choice (the automatic default) is left out: it reads
		// as a stray comma.
		named := slices.DeleteFunc(slices.Clone(choices), func(c string) bool { return c == "" })
		l.fail(key, "%q is not one of %s", s, strings.Join(named, ", "))
		return "", false
	}
	return s, true
}

func (l *configLoader) build() Config {
	cfg := Config{File: l.file}
	var ok bool

	cfg.Interfaces, ok = l.list("interfaces")
	if ok && len(cfg.Interfaces) == 0 {
		l.fail("interfaces", "required: at least one NIC to attach XDP to")
	}
	for i, name := range cfg.Interfaces {
		key := fmt.Sprintf("interfaces[%d]", i)
		if err := validInterfaceName(name); err != nil {
			l.fail(key, "%q %v", name, err)
		} else if j := slices.Index(cfg.Interfaces[:i], name); j >= 0 {
			l.fail(key, "%q is listed twice (also interfaces[%d])", name, j)
		}
	}

	l.buildZones(&cfg)

	if mode, ok := l.oneOf("xdp_mode", "native", "generic"); ok && mode == "generic" {
		cfg.XDPMode = dataplane.ModeGeneric
	}
	cfg.XDPGenericFallback = l.boolean("xdp_generic_fallback")

	cidrs, ok := l.list("inside_networks")
	if ok && len(cidrs) == 0 {
		l.fail("inside_networks", "required: the CIDRs natwall protects ($HOME_NET)")
	}
	for i, s := range cidrs {
		key := fmt.Sprintf("inside_networks[%d]", i)
		p, err := netip.ParsePrefix(s)
		switch {
		case err != nil:
			l.fail(key, "%q is not a CIDR such as 198.18.0.0/24 or 2001:db8::/64", s)
		case p != p.Masked():
			l.fail(key, "%q has host bits set (did you mean %s?)", s, p.Masked())
		case slices.Contains(cfg.InsideNetworks, p):
			l.fail(key, "%q is listed twice", s)
		default:
			cfg.InsideNetworks = append(cfg.InsideNetworks, p)
		}
	}

	if a, ok := l.oneOf("malformed_action", "drop", "pass"); ok && a == "pass" {
		cfg.MalformedAction = dataplane.MalformedPass
	}
	if a, ok := l.oneOf("vlan_action", "drop", "pass"); ok && a == "pass" {
		cfg.VLANAction = dataplane.VLANPass
	}
	if a, ok := l.oneOf("on_incompatible_state", "refuse", "replace"); ok && a == "replace" {
		cfg.ReplaceIncompatibleState = true
	}

	if dir, ok := l.str("pin_dir"); ok {
		if err := validPinDir(dir); err != nil {
			l.fail("pin_dir", "%q %v", dir, err)
		}
		cfg.PinDir = filepath.Clean(dir)
	}

	if a, ok := l.oneOf("on_exit", string(ExitDetach), string(ExitKeep)); ok {
		cfg.OnExit = ExitAction(a)
	}

	if addr, ok := l.str("metrics.listen"); ok {
		if addr == "" {
			l.fail("metrics.listen", "required: host:port for /metrics and /healthz")
		} else if err := validListenAddr(addr); err != nil {
			l.fail("metrics.listen", "%q %v", addr, err)
		}
		cfg.Metrics.Listen = addr
	}
	if n, ok := l.wholeNumber("metrics.rule_hits_limit", 0, int64(maxRuleHitsLimit), "rules"); ok {
		cfg.Metrics.RuleHitsLimit = int(n)
	}
	if addr, ok := l.str("health.listen"); ok && addr != "" {
		if err := validListenAddr(addr); err != nil {
			l.fail("health.listen", "%q %v", addr, err)
		}
		if addr != cfg.Metrics.Listen {
			cfg.Health.Listen = addr
		}
	}

	if path, ok := l.str("api.socket"); ok {
		if err := api.ValidSocketPath(path); err != nil {
			l.fail("api.socket", "%q %v", path, err)
		}
		cfg.API.Socket = filepath.Clean(path)
	}

	if level, ok := l.oneOf("log.level", "debug", "info", "warn", "error"); ok {
		// The choices above are exactly the names slog parses.
		_ = cfg.Log.Level.UnmarshalText([]byte(level))
	}
	if f, ok := l.oneOf("log.format", string(LogAuto), string(LogJSON), string(LogText)); ok {
		cfg.Log.Format = LogFormat(f)
	}

	cfg.Sysctl.Manage = l.boolean("sysctl.manage")

	if dir, ok := l.str("state_dir"); ok {
		if !filepath.IsAbs(dir) {
			l.fail("state_dir", "%q must be an absolute path", dir)
		}
		cfg.StateDir = filepath.Clean(dir)
	}
	cfg.RulePaths, _ = l.list("rules.paths")
	if r, ok := l.oneOf("rules.revalidate", string(RevalidateKeep), string(RevalidateClose)); ok {
		cfg.Revalidate = Revalidate(r)
	}
	cfg.Reload.Watch = l.boolean("reload.watch")
	l.buildSNAT(&cfg)
	l.buildConntrack(&cfg)
	l.buildEVE(&cfg)
	return cfg
}

func (l *configLoader) buildSNAT(cfg *Config) {
	enabled := l.boolean("snat.enabled")
	addrs, _ := l.list("snat.addresses")
	n := &dataplane.SNAT{}
	for i, s := range addrs {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() {
			l.fail(fmt.Sprintf("snat.addresses[%d]", i), "%q is not an IPv4 address", s)
			continue
		}
		n.Addresses = append(n.Addresses, a)
	}
	if enabled && len(addrs) == 0 {
		l.fail("snat.addresses", "required with snat.enabled: the appliance's external IPv4 addresses")
	}
	if len(addrs) > dataplane.MaxSNATAddresses {
		l.fail("snat.addresses", "%d addresses, at most %d", len(addrs), dataplane.MaxSNATAddresses)
	}
	if r, ok := l.str("snat.port_range"); ok {
		lo, hi, found := strings.Cut(r, "-")
		a, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
		b, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
		if !found || err1 != nil || err2 != nil || a == 0 || a > b {
			l.fail("snat.port_range", "%q is not a range lo-hi of ports from 1 to 65535", r)
		}
		n.PortMin, n.PortMax = uint16(a), uint16(b)
	}
	if m, ok := l.oneOf("snat.mapping", dataplane.MappingEndpointIndependent.String(), dataplane.MappingAddressPortDependent.String()); ok &&
		m == dataplane.MappingAddressPortDependent.String() {
		n.Mode = dataplane.MappingAddressPortDependent
	}
	excl, _ := l.list("snat.exclude")
	for i, s := range excl {
		p, err := netip.ParsePrefix(s)
		if err != nil || !p.Addr().Is4() || p != p.Masked() {
			l.fail(fmt.Sprintf("snat.exclude[%d]", i), "%q is not an IPv4 CIDR without host bits", s)
			continue
		}
		n.Exclude = append(n.Exclude, p)
	}
	n.Overload = l.boolean("snat.overload")
	l.snatQuota(n)
	modes := []dataplane.FilteringMode{dataplane.FilterEndpointIndependent, dataplane.FilterAddressDependent, dataplane.FilterAddressPortDependent}
	names := make([]string, len(modes))
	for i, m := range modes {
		names[i] = m.String()
	}
	if f, ok := l.oneOf("snat.filtering", names...); ok {
		n.Filtering = modes[slices.Index(names, f)]
	}
	if enabled {
		cfg.SNAT = n
	}
}

// buildZones reads the settings that decide where a packet may come from.
func (l *configLoader) buildZones(cfg *Config) {
	outside, _ := l.list("outside_interfaces")
	for i, name := range outside {
		key := fmt.Sprintf("outside_interfaces[%d]", i)
		switch {
		case !slices.Contains(cfg.Interfaces, name):
			l.fail(key, "%q is not one of interfaces", name)
		case slices.Contains(outside[:i], name):
			l.fail(key, "%q is listed twice", name)
		default:
			cfg.OutsideInterfaces = append(cfg.OutsideInterfaces, name)
		}
	}
	if len(cfg.Interfaces) > 0 && len(cfg.OutsideInterfaces) == len(cfg.Interfaces) {
		l.fail("outside_interfaces", "names every interface: inside hosts would have none to arrive on (with one NIC, leave it empty)")
	}
	if m, ok := l.oneOf("reverse_path", "strict", "neighbor", "loose", "off"); ok {
		cfg.ReversePath = dataplane.ReversePathModes[m]
	}
}

// snatQuota reads snat.host_quota: auto (0, the dataplane's default), or
// a number of ports no larger than the port range.
func (l *configLoader) snatQuota(n *dataplane.SNAT) {
	const key = "snat.host_quota"
	ports := int64(n.PortMax) - int64(n.PortMin) + 1
	var q int64
	switch v := l.raw(key).(type) {
	case int:
		q = int64(v)
	case int64:
		q = v
	case uint64:
		q = math.MaxInt64
	default:
		s, ok := l.str(key)
		if !ok || s == "auto" {
			return
		}
		var err error
		if q, err = strconv.ParseInt(s, 10, 64); err != nil {
			l.fail(key, "%q is not auto or a whole number of ports", s)
			return
		}
	}
	if q < 1 || (ports > 0 && q > ports) {
		l.fail(key, "%v is not from 1 to the %d ports of snat.port_range", l.raw(key), ports)
		return
	}
	n.HostQuota = int(q)
}

// duration reads a key that must be a duration from lo to hi.
func (l *configLoader) duration(key string, lo, hi time.Duration) time.Duration {
	s, ok := l.str(key)
	if !ok {
		return 0
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil && isUnsignedNumber(s):
		l.fail(key, "%q has no unit (did you mean %ss?)", s, s)
	case err != nil:
		l.fail(key, "%q is not a duration such as 2h4m or 30s", s)
	case d < lo || d > hi:
		l.fail(key, "%q is not from %s to %s", s, shortDuration(lo), shortDuration(hi))
	}
	return d
}

// isUnsignedNumber reports whether s is digits only, of any length.
func isUnsignedNumber(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}

// shortDuration drops time.Duration's zero minutes and seconds: 720h, not 720h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	s = strings.TrimSuffix(s, "0s")
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	if s == "" || strings.HasSuffix(s, "m") || strings.HasSuffix(s, "h") {
		return s
	}
	return d.String()
}

// wholeNumber reads key as a whole number from lo to hi, of unit ("flows",
// "rules"). The range is checked before the value is narrowed, so that
// 4294968320 is refused rather than wrapped. ok is false when the value
// was reported as wrong.
func (l *configLoader) wholeNumber(key string, lo, hi int64, unit string) (n int64, ok bool) {
	switch v := l.raw(key).(type) {
	case int:
		n = int64(v)
	case int64:
		n = v
	case uint64:
		n = math.MaxInt64
	default:
		s, ok := l.str(key)
		if !ok {
			return 0, false // reported
		}
		var err error
		if n, err = strconv.ParseInt(s, 10, 64); err != nil {
			if !isUnsignedNumber(s) {
				l.fail(key, "%q is not a whole number of %s from %d to %d", s, unit, lo, hi)
				return 0, false
			}
			n = math.MaxInt64 // digits beyond int64: too large
		}
	}
	if n < lo || n > hi {
		l.fail(key, "%v is not from %d to %d %s", l.raw(key), lo, hi, unit)
		return 0, false
	}
	return n, true
}

func (l *configLoader) buildConntrack(cfg *Config) {
	c := &cfg.Conntrack
	if n, ok := l.wholeNumber("conntrack.table_size", minTableSize, maxTableSize, "flows"); ok {
		c.TableSize = uint32(n)
	}
	c.InvalidTCPReset = l.boolean("conntrack.invalid_tcp_reset")
	c.UnansweredPerSource = l.flowCount("conntrack.unanswered_per_source", dataplane.MaxUnansweredPerSource)
	c.GCInterval = l.duration("conntrack.gc_interval", 100*time.Millisecond, maxGCInterval)
	t := &c.Timeouts
	for _, f := range []struct {
		key string
		d   *time.Duration
	}{
		{"tcp_syn", &t.TCPSyn}, {"tcp_established", &t.TCPEstablished}, {"tcp_transitory", &t.TCPTransitory},
		{"tcp_close", &t.TCPClose}, {"udp", &t.UDP}, {"icmp", &t.ICMP}, {"other", &t.Other},
	} {
		*f.d = l.duration("conntrack.timeouts."+f.key, time.Second, maxTimeout)
	}
}

// flowCount reads a whole number of flows from 0 to hi, checked before it
// is narrowed to uint32.
func (l *configLoader) flowCount(key string, hi int64) uint32 {
	var n int64
	switch v := l.raw(key).(type) {
	case int:
		n = int64(v)
	case int64:
		n = v
	case uint64:
		n = math.MaxInt64
	default:
		s, ok := l.str(key)
		if !ok {
			return 0 // reported
		}
		var err error
		if n, err = strconv.ParseInt(s, 10, 64); err != nil {
			if !isUnsignedNumber(s) {
				l.fail(key, "%q is not a whole number of flows from 0 to %d", s, hi)
				return 0
			}
			n = math.MaxInt64
		}
	}
	if n < 0 || n > hi {
		l.fail(key, "%v is not from 0 to %d flows", l.raw(key), hi)
		return 0
	}
	return uint32(n)
}

// validInterfaceName mirrors the kernel's dev_valid_name.
func validInterfaceName(name string) error {
	switch {
	case name == "":
		return errors.New("is empty")
	case len(name) > 15:
		return errors.New("is longer than 15 bytes, the kernel's limit")
	case name == "." || name == "..":
		return errors.New("is not an interface name")
	case strings.ContainsAny(name, "/: \t\n\r\v\f"):
		return errors.New("contains '/', ':' or a blank, which interface names cannot")
	}
	return nil
}

// validPinDir refuses directories that natwall must not own: the dataplane
// removes its pin directory when it detaches.
func validPinDir(dir string) error {
	clean := filepath.Clean(dir)
	switch {
	case !filepath.IsAbs(dir):
		return errors.New("must be an absolute path")
	case clean == "/" || clean == "/sys/fs/bpf":
		return errors.New("must be a directory of its own, such as " + dataplane.DefaultPinDir)
	}
	return nil
}

func validListenAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("is not host:port")
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return errors.New("has no valid port number")
	}
	return nil
}
