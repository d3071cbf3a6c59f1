package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
)

// Timeouts are idle timeouts per protocol and TCP state. A flow idle for
// longer is expired: the dataplane treats it as gone on its next packet and
// the control plane's collector removes it.
type Timeouts struct {
	TCPSyn         time.Duration // SYN_SENT, SYN_RECV
	TCPEstablished time.Duration
	TCPTransitory  time.Duration // FIN_WAIT, TIME_WAIT
	TCPClose       time.Duration // after RST
	UDP            time.Duration
	ICMP           time.Duration
	Other          time.Duration
}

// DefaultTimeouts meet the NAT behaviour RFCs: UDP at least 2 minutes
// (RFC 4787 REQ-5), TCP established at least 2 hours 4 minutes and
// transitory 4 minutes (RFC 5382 REQ-5), ICMP at least 60 seconds
// (RFC 5508 REQ-2).
func DefaultTimeouts() Timeouts {
	return Timeouts{
		TCPSyn:         4 * time.Minute,
		TCPEstablished: 2*time.Hour + 4*time.Minute,
		TCPTransitory:  4 * time.Minute,
		TCPClose:       10 * time.Second,
		UDP:            5 * time.Minute,
		ICMP:           60 * time.Second,
		Other:          10 * time.Minute,
	}
}

func (t Timeouts) seconds() ([natwallNwTimeoutNW_TIMEOUT_MAX]uint32, error) {
	var out [natwallNwTimeoutNW_TIMEOUT_MAX]uint32
	set := func(i natwallNwTimeout, name string, d time.Duration) error {
		if d < time.Second || d > 30*24*time.Hour {
			return fmt.Errorf("timeout %s %v: must be between 1s and 720h", name, d)
		}
		out[i] = uint32(d / time.Second)
		return nil
	}
	return out, errors.Join(
		set(natwallNwTimeoutNW_TIMEOUT_TCP_SYN, "tcp_syn", t.TCPSyn),
		set(natwallNwTimeoutNW_TIMEOUT_TCP_ESTABLISHED, "tcp_established", t.TCPEstablished),
		set(natwallNwTimeoutNW_TIMEOUT_TCP_TRANSITORY, "tcp_transitory", t.TCPTransitory),
		set(natwallNwTimeoutNW_TIMEOUT_TCP_CLOSE, "tcp_close", t.TCPClose),
		set(natwallNwTimeoutNW_TIMEOUT_UDP, "udp", t.UDP),
		set(natwallNwTimeoutNW_TIMEOUT_ICMP, "icmp", t.ICMP),
		set(natwallNwTimeoutNW_TIMEOUT_OTHER, "other", t.Other),
	)
}

// MappingMode is how SNAT maps inside endpoints to external ports.
type MappingMode int

const (
	// MappingEndpointIndependent gives an inside endpoint one external
	// port for every destination (RFC 4787 REQ-1): peer-to-peer and
	// hairpinning work, and a port serves one endpoint at a time.
	MappingEndpointIndependent MappingMode = iota
	// MappingAddressPortDependent gives a new external port per
	// destination endpoint, the model AWS NAT Gateway uses: the same
	// external port can serve different destinations, so capacity is per
	// destination, at the cost of EIM's guarantees and of hairpinning.
	MappingAddressPortDependent
)

func (m MappingMode) String() string {
	if m == MappingAddressPortDependent {
		return "address-port-dependent"
	}
	return "endpoint-independent"
}

// FilteringMode is which unsolicited inbound packets reach an inside
// endpoint through its endpoint-independent mapping (RFC 4787 REQ-8,
// RFC 5382 REQ-3). Replies of a flow always do.
type FilteringMode int

const (
	// FilterAddressPortDependent admits only a flow's own replies: the
	// exact destination address and port the inside endpoint sent to.
	FilterAddressPortDependent FilteringMode = iota
	// FilterAddressDependent also admits any port of an address the
	// mapping has sent to.
	FilterAddressDependent
	// FilterEndpointIndependent admits any outside endpoint to a mapped
	// port.
	FilterEndpointIndependent
)

func (m FilteringMode) String() string {
	switch m {
	case FilterAddressDependent:
		return "address-dependent"
	case FilterEndpointIndependent:
		return "endpoint-independent"
	}
	return "address-port-dependent"
}

// MaxSNATAddresses is how many external addresses one appliance translates to.
const MaxSNATAddresses = len(natwallNwRuntimeConfig{}.SnatAddrs)

// SNAT configures source translation of outbound IPv4 flows.
type SNAT struct {
	// Addresses are the appliance's external addresses, assigned to
	// inside hosts by a hash of their address (paired pooling).
	Addresses []netip.Addr
	// PortMin and PortMax bound the external ports (and ICMP identifiers).
	PortMin, PortMax uint16
	Mode             MappingMode
	// Exclude lists destinations that are never translated.
	Exclude []netip.Prefix
	// Overload lets an address with no free port map a new inside
	// endpoint to a port already in use, for destinations that port does
	// not talk to yet (the 5-tuple stays unique), as Linux does.
	Overload bool
	// HostQuota is how many endpoint-independent ports one inside host may
	// hold per external address and protocol. 0 is the default, a quarter
	// of the port range; the range's size means no quota.
	HostQuota int
	// Filtering is which unsolicited inbound packets reach a mapping.
	Filtering FilteringMode
}

// portRange is the number of ports in the range, 0 if it is empty.
func (n *SNAT) portRange() int {
	if n.PortMax < n.PortMin {
		return 0
	}
	return int(n.PortMax) - int(n.PortMin) + 1
}

// Quota is the per-host port quota in force: HostQuota, or its default.
func (n *SNAT) Quota() int {
	if n.HostQuota > 0 {
		return n.HostQuota
	}
	return max(n.portRange()/4, 1)
}

// Settings are the dataplane's runtime configuration, applied live.
type Settings struct {
	MalformedAction MalformedAction
	// Inside are the inside networks ($HOME_NET): flows from them may
	// start; from elsewhere only their replies are admitted.
	Inside []netip.Prefix
	// SNAT is nil when outbound flows are not translated.
	SNAT     *SNAT
	Timeouts Timeouts
	// InvalidTCPReset answers inside TCP packets of no known flow with a
	// RST, as AWS NAT Gateway does, so clients fail fast.
	InvalidTCPReset bool
	// VLANAction is what happens to a frame tagged with a VLAN ID other
	// than 0. Priority tags (ID 0) are stripped and the frame goes
	// through the policy like an untagged one.
	VLANAction VLANAction
	// OutsideInterfaces name the NICs that face the outside. A packet
	// with an inside source arriving on one is spoofed and dropped
	// (drop_spoofed_inside). Names are resolved in the calling thread's
	// network namespace when the settings are applied.
	OutsideInterfaces []string
	// ReversePath is how a new flow's source is checked against the
	// route back to it (drop_reverse_path). The zero value is strict.
	ReversePath ReversePathMode
	// UnansweredPerSource is how many unanswered flows one source host (an
	// IPv4 address, an IPv6 /128) may hold; a new flow beyond it is
	// dropped as drop_ct_src_limit. 0 means no limit. A flow counts from
	// its first packet until its first reply, or until it is removed, and
	// at most two windows of UnansweredWindow after it opened.
	UnansweredPerSource uint32
}

// ReversePathMode is how a new flow's source must route back, checked
// with the kernel's FIB on the flow's first packet, as rp_filter does.
type ReversePathMode int

const (
	// ReversePathStrict: the route back to the source leaves by the NIC
	// the packet arrived on (rp_filter=1).
	ReversePathStrict ReversePathMode = iota
	// ReversePathLoose: some route back to the source exists, by any NIC
	// (rp_filter=2), for asymmetric routing and multipath routes.
	ReversePathLoose
	// ReversePathOff: sources are not checked against routes.
	ReversePathOff
	// ReversePathNeighbor is strict, and where the route back's next hop
	// is resolved the frame must come from that neighbour's MAC: hosts
	// sharing the appliance's one NIC cannot forge each other's
	// addresses. Behind one gateway MAC (cloud fabrics) it adds nothing.
	ReversePathNeighbor
)

// ReversePathModes are the modes by name, as the config spells them.
var ReversePathModes = map[string]ReversePathMode{
	"strict":   ReversePathStrict,
	"loose":    ReversePathLoose,
	"off":      ReversePathOff,
	"neighbor": ReversePathNeighbor,
}

func (m ReversePathMode) String() string {
	for name, v := range ReversePathModes {
		if v == m {
			return name
		}
	}
	return fmt.Sprintf("ReversePathMode(%d)", int(m))
}

// DefaultUnansweredPerSource lets a host have a few thousand connection
// attempts or unanswered datagrams in flight, far more than a client
// needs, while 64 such hosts are needed to fill a default table.
const DefaultUnansweredPerSource = 4096

// MaxUnansweredPerSource is the largest per-source limit: a flow table's size.
const MaxUnansweredPerSource = 16 << 20

// UnansweredWindow is the window a source's unanswered flows are counted
// in: the longest idle timeout an unanswered TCP, UDP or ICMP flow has.
// The collector removes expired flows without touching the count, so a
// flow stops counting once two newer windows began.
func (t Timeouts) UnansweredWindow() time.Duration {
	return max(t.TCPSyn, t.UDP, t.ICMP)
}

// VLANAction is what happens to a frame of a VLAN natwall does not route.
type VLANAction int

const (
	// VLANDrop drops it, counted as drop_vlan: nothing tagged reaches a
	// kernel path that would forward it past the policy.
	VLANDrop VLANAction = iota
	// VLANPass hands it to the kernel's VLAN device, counted as
	// pass_vlan. The kernel then routes it with no natwall policy and no
	// NAT: only for VLANs natwall is not meant to guard.
	VLANPass
)

// DefaultSettings drop malformed packets and use DefaultTimeouts and
// DefaultUnansweredPerSource.
func DefaultSettings() Settings {
	return Settings{Timeouts: DefaultTimeouts(), UnansweredPerSource: DefaultUnansweredPerSource}
}

func (s Settings) runtimeConfig() (natwallNwRuntimeConfig, error) {
	var cfg natwallNwRuntimeConfig
	var errs []error
	cfg.MalformedAction = natwallNwMalformedActionNW_MALFORMED_ACTION_DROP
	if s.MalformedAction == MalformedPass {
		cfg.MalformedAction = natwallNwMalformedActionNW_MALFORMED_ACTION_PASS
	}
	timeouts, err := s.Timeouts.seconds()
	errs = append(errs, err)
	cfg.Timeouts = timeouts
	if s.UnansweredPerSource > MaxUnansweredPerSource {
		errs = append(errs, fmt.Errorf("unanswered flows per source %d: must be at most %d", s.UnansweredPerSource, MaxUnansweredPerSource))
	}
	cfg.UnansweredPerSource = s.UnansweredPerSource
	cfg.SrcWindow = uint32(s.Timeouts.UnansweredWindow() / time.Second)
	if s.VLANAction == VLANPass {
		cfg.Flags |= uint32(natwallNwConfigFlagsNW_CFG_VLAN_PASS)
	}
	if s.InvalidTCPReset {
		cfg.Flags |= uint32(natwallNwConfigFlagsNW_CFG_INVALID_TCP_RST)
	}
	switch s.ReversePath {
	case ReversePathStrict:
	case ReversePathLoose:
		cfg.Flags |= uint32(natwallNwConfigFlagsNW_CFG_RP_LOOSE)
	case ReversePathOff:
		cfg.Flags |= uint32(natwallNwConfigFlagsNW_CFG_RP_OFF)
	case ReversePathNeighbor:
		cfg.Flags |= uint32(natwallNwConfigFlagsNW_CFG_RP_NEIGH)
	default:
		errs = append(errs, fmt.Errorf("reverse path: unknown mode %d", int(s.ReversePath)))
	}
	if n := s.SNAT; n != nil {
		cfg.Flags |= uint32(natwallNwConfigFlagsNW_CFG_SNAT)
		if n.Mode == MappingAddressPortDependent {
			cfg.Flags |= uint32(natwallNwConfigFlagsNW_CFG_SNAT_APDM)
		}
		if len(n.Addresses) == 0 || len(n.Addresses) > MaxSNATAddresses {
			errs = append(errs, fmt.Errorf("snat: %d addresses, want 1 to %d", len(n.Addresses), MaxSNATAddresses))
		}
		for i, a := range n.Addresses {
			if !a.Is4() || i >= MaxSNATAddresses {
				errs = append(errs, fmt.Errorf("snat: %s is not an IPv4 address", a))
				continue
			}
			cfg.SnatAddrs[i] = beUint32(a.As4())
		}
		cfg.SnatAddrCount = uint32(len(n.Addresses))
		if n.PortMin == 0 || n.PortMin > n.PortMax {
			errs = append(errs, fmt.Errorf("snat: port range %d-%d is empty or starts at 0", n.PortMin, n.PortMax))
		}
		cfg.SnatPortMin, cfg.SnatPortMax = n.PortMin, n.PortMax
		if n.Overload {
			cfg.Flags |= uint32(natwallNwConfigFlagsNW_CFG_SNAT_OVERLOAD)
		}
		if n.HostQuota < 0 || n.HostQuota > n.portRange() {
			errs = append(errs, fmt.Errorf("snat: host quota %d, want 0 (default) to the %d ports of the range", n.HostQuota, n.portRange()))
		}
		if q := n.Quota(); q < n.portRange() {
			cfg.SnatHostQuota = uint32(q)
		}
		switch n.Filtering {
		case FilterAddressPortDependent:
		case FilterAddressDependent:
			cfg.Flags |= uint32(natwallNwConfigFlagsNW_CFG_SNAT_FILTER_ADF)
		case FilterEndpointIndependent:
			cfg.Flags |= uint32(natwallNwConfigFlagsNW_CFG_SNAT_FILTER_EIF)
		default:
			errs = append(errs, fmt.Errorf("snat: unknown filtering mode %d", n.Filtering))
		}
		for _, p := range n.Exclude {
			if !p.Addr().Is4() {
				errs = append(errs, fmt.Errorf("snat: exclusion %s is not IPv4", p))
			}
		}
	}
	for _, p := range s.Inside {
		if !p.IsValid() {
			errs = append(errs, errors.New("inside network: invalid prefix"))
		}
	}
	return cfg, errors.Join(errs...)
}

// beUint32 is the uint32 whose in-memory bytes are the address in network
// order, as the kernel stores it.
func beUint32(b [4]byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

// Apply writes s into the running dataplane. The runtime config is one map
// value, replaced in one update; the LPM tables are updated entry by entry,
// new entries first, so a prefix present before and after never disappears.
func (d *Dataplane) Apply(s Settings) error {
	return applySettings(&d.objs, s)
}

func applySettings(objs *natwallObjects, s Settings) error {
	cfg, err := s.runtimeConfig()
	if err != nil {
		return err
	}
	var inside4, inside6 []netip.Prefix
	for _, p := range s.Inside {
		if p.Addr().Is4() {
			inside4 = append(inside4, p.Masked())
		} else {
			inside6 = append(inside6, p.Masked())
		}
	}
	var exclude []netip.Prefix
	if s.SNAT != nil {
		for _, p := range s.SNAT.Exclude {
			exclude = append(exclude, p.Masked())
		}
	}
	if err := syncMap(objs.NwInside4, lpm4Keys(inside4)); err != nil {
		return fmt.Errorf("inside networks: %w", err)
	}
	if err := syncMap(objs.NwInside6, lpm6Keys(inside6)); err != nil {
		return fmt.Errorf("inside networks: %w", err)
	}
	if err := invalidateStatelessVerdicts(objs); err != nil {
		return err
	}
	if err := syncMap(objs.NwSnatExcl4, lpm4Keys(exclude)); err != nil {
		return fmt.Errorf("snat exclusions: %w", err)
	}
	outside, err := interfaceIndexes(s.OutsideInterfaces)
	if err != nil {
		return fmt.Errorf("outside interfaces: %w", err)
	}
	if err := syncMap(objs.NwOutsideIfs, outside); err != nil {
		return fmt.Errorf("outside interfaces: %w", err)
	}
	if err := objs.NwConfig.Put(uint32(0), cfg); err != nil {
		return fmt.Errorf("write runtime config: %w", err)
	}
	return nil
}

// syncMap makes m hold exactly want's keys (values: 1), adding before
// deleting so that a key present before and after is never missing.
func syncMap[K comparable](m *ebpf.Map, want []K) error {
	keep := make(map[K]bool, len(want))
	for _, k := range want {
		keep[k] = true
		if err := m.Put(k, uint8(1)); err != nil {
			return err
		}
	}
	return deleteWhere(m, func(k K, _ uint8) bool { return !keep[k] })
}

// deleteWhere deletes the entries of m for which stale returns true.
func deleteWhere[K comparable, V any](m *ebpf.Map, stale func(K, V) bool) error {
	var k K
	var v V
	var victims []K
	it := m.Iterate()
	for it.Next(&k, &v) {
		if stale(k, v) {
			victims = append(victims, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate %s: %w", m, err)
	}
	for _, k := range victims {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return err
		}
	}
	return nil
}

func lpm4Keys(ps []netip.Prefix) []natwallNwLpm4Key {
	keys := make([]natwallNwLpm4Key, len(ps))
	for i, p := range ps {
		keys[i] = natwallNwLpm4Key{Prefixlen: uint32(p.Bits()), Addr: beUint32(p.Addr().As4())}
	}
	return keys
}

func lpm6Keys(ps []netip.Prefix) []natwallNwLpm6Key {
	keys := make([]natwallNwLpm6Key, len(ps))
	for i, p := range ps {
		keys[i] = natwallNwLpm6Key{Prefixlen: uint32(p.Bits()), Addr: p.Addr().As16()}
	}
	return keys
}

// interfaceIndexes resolves NIC names to the ifindexes the XDP program
// sees as ingress_ifindex.
func interfaceIndexes(names []string) ([]uint32, error) {
	out := make([]uint32, 0, len(names))
	for _, name := range names {
		iface, err := net.InterfaceByName(name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		out = append(out, uint32(iface.Index))
	}
	return out, nil
}
