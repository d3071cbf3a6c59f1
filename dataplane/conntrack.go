package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"sort"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// TCPState is a tracked TCP connection's state.
type TCPState = natwallNwTcpState

// Zone is the way a flow crosses the appliance.
type Zone = natwallNwZone

// Zones that callers (tests, revalidation) refer to by name.
const (
	ZoneOutbound = natwallNwZoneNW_ZONE_OUTBOUND
	ZoneEastWest = natwallNwZoneNW_ZONE_EAST_WEST
	ZoneLocal    = natwallNwZoneNW_ZONE_LOCAL
)

// Flow is one tracked flow. Src and Dst are the original direction as the
// initiator sent it; ReplySrc and ReplyDst are what the responder's packets
// carry. For a translated flow ReplyDst is the external (SNAT) endpoint.
type Flow struct {
	Proto              uint8
	Src, Dst           netip.AddrPort
	ReplySrc, ReplyDst netip.AddrPort
	TCPState           TCPState
	Zone               Zone
	SNAT, DNAT         bool
	SeenReply          bool
	RuleID             uint32
	Created, LastSeen  time.Time
	PacketsOrig        uint64
	BytesOrig          uint64
	PacketsReply       uint64
	BytesReply         uint64

	key4 *natwallNwTuple4
	key6 *natwallNwTuple6
}

// FlowFilter selects flows; zero fields match everything.
type FlowFilter struct {
	// Addr matches either endpoint of either direction.
	Addr  netip.Prefix
	Port  uint16
	Proto uint8
}

func (f FlowFilter) Match(fl Flow) bool {
	if f.Proto != 0 && fl.Proto != f.Proto {
		return false
	}
	eps := []netip.AddrPort{fl.Src, fl.Dst, fl.ReplySrc, fl.ReplyDst}
	if f.Addr.IsValid() {
		found := false
		for _, ep := range eps {
			found = found || f.Addr.Contains(ep.Addr())
		}
		if !found {
			return false
		}
	}
	if f.Port != 0 {
		found := false
		for _, ep := range eps {
			found = found || ep.Port() == f.Port
		}
		if !found {
			return false
		}
	}
	return true
}

// State is the dataplane's pinned connection-tracking and NAT state. It
// works against a running dataplane, whether or not a daemon drives it.
type State struct {
	ct4, ct4Rev, ct6        *ebpf.Map
	snatFwd, snatRev        *ebpf.Map
	config, stats, counters *ebpf.Map
	ruleHits                *ebpf.Map
	snatCount               *ebpf.Map
	snatRelease             *ebpf.Program
	owned                   bool
	gc                      *gcScratch
}

// OpenState opens the pinned state under pinDir, for tools such as the
// conntrack CLI. Close it when done.
func OpenState(pinDir string) (*State, error) {
	if pinDir == "" {
		pinDir = DefaultPinDir
	}
	s := &State{owned: true}
	for name, m := range map[string]**ebpf.Map{
		"nw_ct4": &s.ct4, "nw_ct4_rev": &s.ct4Rev, "nw_ct6": &s.ct6,
		"nw_snat4_fwd": &s.snatFwd, "nw_snat4_rev": &s.snatRev,
		"nw_config": &s.config, "nw_stats": &s.stats, "nw_counters": &s.counters,
		"nw_rule_hits": &s.ruleHits, "nw_snat_count": &s.snatCount,
	} {
		mm, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, name), nil)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("open pinned map %s (is natwall running?): %w", name, err)
		}
		*m = mm
	}
	if err := s.loadRelease(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// loadRelease loads the program that decrements the pinned SNAT in-use
// counts, for a State that did not load the dataplane itself.
func (s *State) loadRelease() error {
	spec, err := loadNatwall()
	if err != nil {
		return err
	}
	var objs struct {
		Release *ebpf.Program `ebpf:"nw_snat_release"`
	}
	if err := spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{
		MapReplacements: map[string]*ebpf.Map{"nw_snat_count": s.snatCount},
	}); err != nil {
		return fmt.Errorf("load nw_snat_release: %w", err)
	}
	s.snatRelease = objs.Release
	return nil
}

// State returns the running dataplane's state; it is closed with the Dataplane.
func (d *Dataplane) State() *State {
	return &State{
		ct4: d.objs.NwCt4, ct4Rev: d.objs.NwCt4Rev, ct6: d.objs.NwCt6,
		snatFwd: d.objs.NwSnat4Fwd, snatRev: d.objs.NwSnat4Rev,
		config: d.objs.NwConfig, stats: d.objs.NwStats, counters: d.objs.NwCounters,
		ruleHits: d.objs.NwRuleHits, snatCount: d.objs.NwSnatCount, snatRelease: d.objs.NwSnatRelease,
	}
}

// Close releases maps opened by OpenState.
func (s *State) Close() error {
	if !s.owned {
		return nil
	}
	var errs []error
	for _, m := range []*ebpf.Map{s.ct4, s.ct4Rev, s.ct6, s.snatFwd, s.snatRev, s.config, s.stats, s.counters, s.ruleHits, s.snatCount} {
		if m != nil {
			errs = append(errs, m.Close())
		}
	}
	if s.snatRelease != nil {
		errs = append(errs, s.snatRelease.Close())
	}
	return errors.Join(errs...)
}

// Counters reads the per-reason packet counters.
func (s *State) Counters() ([]ReasonCount, error) { return readCounters(s.counters) }

// monoClock converts the dataplane's CLOCK_MONOTONIC nanoseconds to wall time.
type monoClock struct {
	wall time.Time
	mono uint64
}

func newMonoClock() monoClock {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return monoClock{wall: time.Now(), mono: uint64(ts.Nano())}
}

func (c monoClock) time(ns uint64) time.Time {
	return c.wall.Add(-time.Duration(int64(c.mono) - int64(ns)))
}

func addr4(v uint32) netip.Addr {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

func port(v uint16) uint16 { return v<<8 | v>>8 }

func flowState(f *Flow, st *natwallNwCtState, clk monoClock) {
	f.TCPState = TCPState(st.TcpState)
	f.Zone = Zone(st.Zone)
	f.SNAT = st.Flags&uint8(natwallNwCtFlagsNW_CT_SNAT) != 0
	f.DNAT = st.Flags&uint8(natwallNwCtFlagsNW_CT_DNAT) != 0
	f.SeenReply = st.Flags&uint8(natwallNwCtFlagsNW_CT_SEEN_REPLY) != 0
	f.RuleID = st.RuleId
	f.Created = clk.time(st.CreatedNs)
	f.LastSeen = clk.time(st.LastSeenNs)
	f.PacketsOrig, f.BytesOrig = st.PacketsOrig, st.BytesOrig
	f.PacketsReply, f.BytesReply = st.PacketsReply, st.BytesReply
}

func flow4(k natwallNwTuple4, e *natwallNwCt4Entry, clk monoClock) Flow {
	f := flow4Value(k, e, clk)
	kk := k
	f.key4 = &kk
	return f
}

// flow4Value is flow4 without the key that Delete and reload need: it
// does not allocate.
func flow4Value(k natwallNwTuple4, e *natwallNwCt4Entry, clk monoClock) Flow {
	f := Flow{
		Proto:    k.Proto,
		Src:      netip.AddrPortFrom(addr4(k.Saddr), port(k.Sport)),
		Dst:      netip.AddrPortFrom(addr4(k.Daddr), port(k.Dport)),
		ReplySrc: netip.AddrPortFrom(addr4(e.Reply.Saddr), port(e.Reply.Sport)),
		ReplyDst: netip.AddrPortFrom(addr4(e.Reply.Daddr), port(e.Reply.Dport)),
	}
	flowState(&f, &e.St, clk)
	return f
}

func flow6(k natwallNwTuple6, e *natwallNwCt6Entry, clk monoClock) Flow {
	f := flow6Value(k, e, clk)
	kk := k
	f.key6 = &kk
	return f
}

// flow6Value is flow6 without the key; it does not allocate.
func flow6Value(k natwallNwTuple6, e *natwallNwCt6Entry, clk monoClock) Flow {
	f := Flow{
		Proto: k.Proto,
		Src:   netip.AddrPortFrom(netip.AddrFrom16(k.Saddr), port(k.Sport)),
		Dst:   netip.AddrPortFrom(netip.AddrFrom16(k.Daddr), port(k.Dport)),
	}
	f.ReplySrc, f.ReplyDst = f.Dst, f.Src
	flowState(&f, &e.St, clk)
	return f
}

// Flows calls fn for every tracked flow until fn returns false.
func (s *State) Flows(fn func(Flow) bool) error {
	clk := newMonoClock()
	var k4 natwallNwTuple4
	var e4 natwallNwCt4Entry
	it := s.ct4.Iterate()
	for it.Next(&k4, &e4) {
		if !fn(flow4(k4, &e4, clk)) {
			return nil
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate IPv4 flows: %w", err)
	}
	var k6 natwallNwTuple6
	var e6 natwallNwCt6Entry
	it = s.ct6.Iterate()
	for it.Next(&k6, &e6) {
		if !fn(flow6(k6, &e6, clk)) {
			return nil
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate IPv6 flows: %w", err)
	}
	return nil
}

// Delete removes a flow: reply index first, so a reply in flight finds
// nothing rather than a half-removed flow. Its SNAT mapping is left for
// CollectMappings, since other flows of the endpoint may share it.
func (s *State) Delete(f Flow) error {
	switch {
	case f.key4 != nil:
		var e natwallNwCt4Entry
		if err := s.ct4.Lookup(f.key4, &e); err != nil {
			return ignoreNotExist(err)
		}
		if err := s.ct4Rev.Delete(e.Reply); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return err
		}
		return ignoreNotExist(s.ct4.Delete(f.key4))
	case f.key6 != nil:
		return ignoreNotExist(s.ct6.Delete(f.key6))
	}
	return errors.New("flow has no key")
}

func ignoreNotExist(err error) error {
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil
	}
	return err
}

// Flush deletes the flows matching filter and returns how many it removed.
func (s *State) Flush(filter FlowFilter) (int, error) {
	var victims []Flow
	if err := s.Flows(func(f Flow) bool {
		if filter.Match(f) {
			victims = append(victims, f)
		}
		return true
	}); err != nil {
		return 0, err
	}
	n := 0
	for _, f := range victims {
		if err := s.Delete(f); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// Timeouts reads the idle timeouts the dataplane applies.
func (s *State) Timeouts() (Timeouts, error) {
	var cfg natwallNwRuntimeConfig
	if err := s.config.Lookup(uint32(0), &cfg); err != nil {
		return Timeouts{}, fmt.Errorf("read runtime config: %w", err)
	}
	sec := func(i natwallNwTimeout) time.Duration { return time.Duration(cfg.Timeouts[i]) * time.Second }
	return Timeouts{
		TCPSyn:         sec(natwallNwTimeoutNW_TIMEOUT_TCP_SYN),
		TCPEstablished: sec(natwallNwTimeoutNW_TIMEOUT_TCP_ESTABLISHED),
		TCPTransitory:  sec(natwallNwTimeoutNW_TIMEOUT_TCP_TRANSITORY),
		TCPClose:       sec(natwallNwTimeoutNW_TIMEOUT_TCP_CLOSE),
		UDP:            sec(natwallNwTimeoutNW_TIMEOUT_UDP),
		ICMP:           sec(natwallNwTimeoutNW_TIMEOUT_ICMP),
		Other:          sec(natwallNwTimeoutNW_TIMEOUT_OTHER),
	}, nil
}

// Timeout is the idle timeout that applies to f.
func (t Timeouts) Timeout(f Flow) time.Duration { return t.timeoutOf(f.Proto, f.TCPState) }

func (t Timeouts) timeoutOf(proto uint8, state TCPState) time.Duration {
	switch proto {
	case unix.IPPROTO_TCP:
		switch state {
		case natwallNwTcpStateNW_TCP_ESTABLISHED:
			return t.TCPEstablished
		case natwallNwTcpStateNW_TCP_FIN_WAIT, natwallNwTcpStateNW_TCP_TIME_WAIT:
			return t.TCPTransitory
		case natwallNwTcpStateNW_TCP_CLOSE:
			return t.TCPClose
		}
		return t.TCPSyn
	case unix.IPPROTO_UDP:
		return t.UDP
	case unix.IPPROTO_ICMP, unix.IPPROTO_ICMPV6:
		return t.ICMP
	}
	return t.Other
}

// CollectExpired removes every flow idle past its timeout and returns them
// with their final counters, for flow logs and metrics.
func (s *State) CollectExpired(now time.Time) ([]Flow, error) {
	timeouts, err := s.Timeouts()
	if err != nil {
		return nil, err
	}
	var expired []Flow
	if err := s.Flows(func(f Flow) bool {
		if now.Sub(f.LastSeen) > timeouts.Timeout(f) {
			expired = append(expired, f)
		}
		return true
	}); err != nil {
		return nil, err
	}
	var gone []Flow
	for _, f := range expired {
		// The flow may have seen a packet since it was read: look again.
		if fresh, ok := s.reload(f); ok && now.Sub(fresh.LastSeen) <= timeouts.Timeout(fresh) {
			continue
		} else if ok {
			f = fresh
		}
		if err := s.Delete(f); err != nil {
			return gone, err
		}
		gone = append(gone, f)
	}
	return gone, nil
}

func (s *State) reload(f Flow) (Flow, bool) {
	clk := newMonoClock()
	if f.key4 != nil {
		var e natwallNwCt4Entry
		if s.ct4.Lookup(f.key4, &e) != nil {
			return f, false
		}
		return flow4(*f.key4, &e, clk), true
	}
	var e natwallNwCt6Entry
	if s.ct6.Lookup(f.key6, &e) != nil {
		return f, false
	}
	return flow6(*f.key6, &e, clk), true
}

// mappingGrace protects a mapping the dataplane created for a flow it has
// not inserted yet: the two inserts are microseconds apart.
const mappingGrace = 10 * time.Second

// CollectMappings removes SNAT mappings that no flow uses any more, so
// their external ports can be allocated again, and returns how many.
func (s *State) CollectMappings(now time.Time) (int, error) {
	inUse := map[natwallNwSnat4Key]bool{}
	var k natwallNwTuple4
	var e natwallNwCt4Entry
	it := s.ct4.Iterate()
	for it.Next(&k, &e) {
		if m, ok := filteredInboundMapping(&k, &e); ok {
			inUse[m] = true
		}
		if e.St.Flags&uint8(natwallNwCtFlagsNW_CT_SNAT) == 0 {
			continue
		}
		inUse[natwallNwSnat4Key{Addr: e.Reply.Daddr, Port: e.Reply.Dport, Proto: k.Proto}] = true
		inUse[natwallNwSnat4Key{Addr: e.Reply.Daddr, Port: e.Reply.Dport, Proto: k.Proto,
			RemoteAddr: k.Daddr, RemotePort: k.Dport}] = true
	}
	if err := it.Err(); err != nil {
		return 0, fmt.Errorf("iterate flows: %w", err)
	}
	clk := newMonoClock()
	var rk natwallNwSnat4Key
	var inside natwallNwSnat4Endpoint
	var stale []natwallNwSnat4Key
	var staleInside []natwallNwSnat4Endpoint
	it = s.snatRev.Iterate()
	for it.Next(&rk, &inside) {
		if inUse[rk] || now.Sub(clk.time(inside.CreatedNs)) < mappingGrace {
			continue
		}
		stale = append(stale, rk)
		staleInside = append(staleInside, inside)
	}
	if err := it.Err(); err != nil {
		return 0, fmt.Errorf("iterate mappings: %w", err)
	}
	fwd := make([]natwallNwSnat4Key, len(stale))
	for i, rk := range stale {
		fwd[i] = natwallNwSnat4Key{Addr: staleInside[i].Addr, Port: staleInside[i].Port, Proto: rk.Proto,
			RemoteAddr: rk.RemoteAddr, RemotePort: rk.RemotePort}
	}
	return s.deleteMappings(fwd, stale, staleInside)
}

// PortUsage is how many external ports one address has mapped, per protocol.
type PortUsage struct {
	Addr     netip.Addr
	Proto    uint8
	Mappings int
	// Capacity is the size of the configured port range.
	Capacity int
}

// SNATUsage reports mapped ports per external address and protocol.
func (s *State) SNATUsage() ([]PortUsage, error) {
	var cfg natwallNwRuntimeConfig
	if err := s.config.Lookup(uint32(0), &cfg); err != nil {
		return nil, fmt.Errorf("read runtime config: %w", err)
	}
	capacity := 0
	if cfg.SnatPortMax >= cfg.SnatPortMin {
		capacity = int(cfg.SnatPortMax) - int(cfg.SnatPortMin) + 1
	}
	type key struct {
		addr  netip.Addr
		proto uint8
	}
	counts := map[key]int{}
	for i := 0; i < int(cfg.SnatAddrCount) && i < len(cfg.SnatAddrs); i++ {
		for _, p := range []uint8{unix.IPPROTO_TCP, unix.IPPROTO_UDP, unix.IPPROTO_ICMP} {
			counts[key{addr4(cfg.SnatAddrs[i]), p}] = 0
		}
	}
	var rk natwallNwSnat4Key
	var v natwallNwSnat4Endpoint
	it := s.snatRev.Iterate()
	for it.Next(&rk, &v) {
		counts[key{addr4(rk.Addr), rk.Proto}]++
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate mappings: %w", err)
	}
	out := make([]PortUsage, 0, len(counts))
	for k, n := range counts {
		out = append(out, PortUsage{Addr: k.addr, Proto: k.proto, Mappings: n, Capacity: capacity})
	}
	sort.Slice(out, func(i, j int) bool {
		if c := out[i].Addr.Compare(out[j].Addr); c != 0 {
			return c < 0
		}
		return out[i].Proto < out[j].Proto
	})
	return out, nil
}

// Stat is a dataplane counter that is not a per-packet verdict.
type Stat = natwallNwStat

// Stats that metrics export.
const (
	StatFlowsNewV4        = natwallNwStatNW_STAT_CT_NEW_V4
	StatFlowsNewV6        = natwallNwStatNW_STAT_CT_NEW_V6
	StatFlowsEstablished  = natwallNwStatNW_STAT_CT_ESTABLISHED
	StatFlowsExpiredInDP  = natwallNwStatNW_STAT_CT_EXPIRED_DP
	StatSNATNewMapping    = natwallNwStatNW_STAT_SNAT_NEW_MAPPING
	StatSNATPortPreserved = natwallNwStatNW_STAT_SNAT_PORT_PRESERVED
	StatSNATProbes        = natwallNwStatNW_STAT_SNAT_PROBES
	StatEventsLost        = natwallNwStatNW_STAT_EVENTS_LOST
	StatHairpin           = natwallNwStatNW_STAT_HAIRPIN
	StatICMPErrTranslated = natwallNwStatNW_STAT_ICMP_ERROR_TRANSLATED
	// StatFlowsEarlyDropped counts unanswered flows evicted from a full
	// table to make room for a new one.
	StatFlowsEarlyDropped = natwallNwStatNW_STAT_CT_EARLY_DROP
	StatSNATOverloaded    = natwallNwStatNW_STAT_SNAT_OVERLOADED
	StatSNATRetried       = natwallNwStatNW_STAT_SNAT_RETRIED
	StatSNATFilterAdmit   = natwallNwStatNW_STAT_SNAT_FILTER_ADMITTED
	StatDNATFlows         = natwallNwStatNW_STAT_DNAT_FLOWS
	// StatAuditMatched counts first packets an audit rule or audit
	// default would have denied, which went on.
	StatAuditMatched = natwallNwStatNW_STAT_AUDIT_MATCHED
	// StatDecisionLogged counts alert events of logged deny and reject
	// decisions; StatLogSuppressed those over the per-CPU budget.
	StatDecisionLogged = natwallNwStatNW_STAT_DECISION_LOGGED
	StatLogSuppressed  = natwallNwStatNW_STAT_LOG_SUPPRESSED
	NumStats           = int(natwallNwStatNW_STAT_MAX)
)

// Stats reads every stat, summed over CPUs.
func (s *State) Stats() ([]uint64, error) {
	out := make([]uint64, NumStats)
	var perCPU []uint64
	for i := range out {
		if err := s.stats.Lookup(uint32(i), &perCPU); err != nil {
			return nil, fmt.Errorf("read stat %d: %w", i, err)
		}
		for _, v := range perCPU {
			out[i] += v
		}
	}
	return out, nil
}

// TableUsage is how full the flow tables are.
type TableUsage struct {
	FlowsV4, FlowsV6 int
	Capacity         int
}

// Usage counts entries in the flow tables.
func (s *State) Usage() (TableUsage, error) {
	u := TableUsage{Capacity: int(s.ct4.MaxEntries())}
	var k4 natwallNwTuple4
	var e4 natwallNwCt4Entry
	it := s.ct4.Iterate()
	for it.Next(&k4, &e4) {
		u.FlowsV4++
	}
	if err := it.Err(); err != nil {
		return u, err
	}
	var k6 natwallNwTuple6
	var e6 natwallNwCt6Entry
	it = s.ct6.Iterate()
	for it.Next(&k6, &e6) {
		u.FlowsV6++
	}
	return u, it.Err()
}
