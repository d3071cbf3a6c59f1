package dataplane

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// gcBatch is how many entries one batch syscall moves. A hash bucket never
// holds this many, so the kernel never asks for a larger batch. Tests
// lower it to cross batch boundaries in small tables.
var gcBatch = 4096

// batchWalk calls fn for every entry of m, gcBatch entries per syscall.
// keys and vals are scratch buffers of gcBatch entries.
func batchWalk[K, V any](m *ebpf.Map, keys []K, vals []V, fn func(k *K, v *V)) error {
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := 0; i < n; i++ {
			fn(&keys[i], &vals[i])
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// deleteKeys removes keys from m in batches. The dataplane may have removed
// some of them already; the kernel stops a batch at the first missing key,
// so the rest of that batch is deleted one by one.
func deleteKeys[K any](m *ebpf.Map, keys []K) error {
	for len(keys) > 0 {
		chunk := keys[:min(len(keys), gcBatch)]
		n, err := m.BatchDelete(chunk, nil)
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return err
		}
		if err != nil {
			for i := n; i < len(chunk); i++ {
				if err := m.Delete(&chunk[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
					return err
				}
			}
		}
		keys = keys[len(chunk):]
	}
	return nil
}

// gcScratch is what a collection reuses from the last: batch buffers and
// the size of the last in-use set.
type gcScratch struct {
	k4       []natwallNwTuple4
	e4       []natwallNwCt4Entry
	k6       []natwallNwTuple6
	e6       []natwallNwCt6Entry
	rk       []natwallNwSnat4Key
	rv       []natwallNwSnat4Endpoint
	expired4 []natwallNwTuple4
	expired6 []natwallNwTuple6
	inUse    int
}

func (s *State) scratch() *gcScratch {
	if s.gc == nil || len(s.gc.k4) != gcBatch {
		s.gc = &gcScratch{
			k4: make([]natwallNwTuple4, gcBatch), e4: make([]natwallNwCt4Entry, gcBatch),
			k6: make([]natwallNwTuple6, gcBatch), e6: make([]natwallNwCt6Entry, gcBatch),
			rk: make([]natwallNwSnat4Key, gcBatch), rv: make([]natwallNwSnat4Endpoint, gcBatch),
		}
	}
	return s.gc
}

// GCResult is what one collection found and did.
type GCResult struct {
	// Expired are the flows removed, with their final counters.
	Expired []Flow
	// MappingsFreed is how many unused SNAT mappings were removed.
	MappingsFreed int
	// Usage is the flow tables' fill after the collection.
	Usage TableUsage
	// SNAT is the external ports mapped after the collection.
	SNAT []PortUsage
	// HostsAtQuota is how many inside hosts hold their whole SNAT port
	// quota of some protocol.
	HostsAtQuota int
}

// Collect is one garbage collection: it removes expired flows and unused
// SNAT mappings, and counts what is left, in a single batched walk of each
// table instead of one per question and one syscall per entry.
func (s *State) Collect(now time.Time) (GCResult, error) {
	return s.CollectVisiting(now, nil)
}

// CollectVisiting is Collect that also shows live every flow it keeps,
// from the same walk: flow logs report long flows this way without a walk
// of their own. f is valid only during the call. Collections of one State
// must not run concurrently.
func (s *State) CollectVisiting(now time.Time, live func(f *Flow)) (GCResult, error) {
	var res GCResult
	var cfg natwallNwRuntimeConfig
	if err := s.config.Lookup(uint32(0), &cfg); err != nil {
		return res, fmt.Errorf("read runtime config: %w", err)
	}
	timeouts, err := s.Timeouts()
	if err != nil {
		return res, err
	}
	clk := newMonoClock()
	res.Usage.Capacity = int(s.ct4.MaxEntries())

	// The walk decides expiry from the raw entries and builds a Flow only
	// for what it reports, so a tick over long flows allocates nothing
	// per flow.
	sc := s.scratch()
	expired4, expired6 := sc.expired4[:0], sc.expired6[:0]
	inUse := make(map[natwallNwSnat4Key]struct{}, sc.inUse)
	markInUse := func(k *natwallNwTuple4, e *natwallNwCt4Entry) {
		if e.St.Flags&uint8(natwallNwCtFlagsNW_CT_SNAT) != 0 {
			inUse[natwallNwSnat4Key{Addr: e.Reply.Daddr, Port: e.Reply.Dport, Proto: k.Proto}] = struct{}{}
			inUse[natwallNwSnat4Key{Addr: e.Reply.Daddr, Port: e.Reply.Dport, Proto: k.Proto,
				RemoteAddr: k.Daddr, RemotePort: k.Dport}] = struct{}{}
		}
		if m, ok := filteredInboundMapping(k, e); ok {
			inUse[m] = struct{}{}
		}
	}
	idle := func(proto uint8, st *natwallNwCtState) bool {
		return now.Sub(clk.time(st.LastSeenNs)) > timeouts.timeoutOf(proto, TCPState(st.TcpState))
	}
	var visit Flow
	if err := batchWalk(s.ct4, sc.k4, sc.e4, func(k *natwallNwTuple4, e *natwallNwCt4Entry) {
		res.Usage.FlowsV4++
		if idle(k.Proto, &e.St) {
			expired4 = append(expired4, *k)
			return
		}
		if live != nil {
			visit = flow4Value(*k, e, clk)
			live(&visit)
		}
		markInUse(k, e)
	}); err != nil {
		return res, fmt.Errorf("walk IPv4 flows: %w", err)
	}
	if err := batchWalk(s.ct6, sc.k6, sc.e6, func(k *natwallNwTuple6, e *natwallNwCt6Entry) {
		res.Usage.FlowsV6++
		if idle(k.Proto, &e.St) {
			expired6 = append(expired6, *k)
		} else if live != nil {
			visit = flow6Value(*k, e, clk)
			live(&visit)
		}
	}); err != nil {
		return res, fmt.Errorf("walk IPv6 flows: %w", err)
	}
	sc.expired4, sc.expired6 = expired4, expired6

	// A flow may have seen a packet since the walk read it: look again,
	// and keep it (and its mapping) if it is live.
	var rev4, del4 []natwallNwTuple4
	for i := range expired4 {
		k := &expired4[i]
		var e natwallNwCt4Entry
		if s.ct4.Lookup(k, &e) != nil {
			continue // the dataplane removed it meanwhile and reported it
		}
		if !idle(k.Proto, &e.St) {
			markInUse(k, &e)
			continue
		}
		del4 = append(del4, *k)
		rev4 = append(rev4, e.Reply)
		res.Usage.FlowsV4--
		res.Expired = append(res.Expired, flow4(*k, &e, clk))
	}
	var del6 []natwallNwTuple6
	for i := range expired6 {
		k := &expired6[i]
		var e natwallNwCt6Entry
		if s.ct6.Lookup(k, &e) != nil || !idle(k.Proto, &e.St) {
			continue
		}
		del6 = append(del6, *k)
		res.Usage.FlowsV6--
		res.Expired = append(res.Expired, flow6(*k, &e, clk))
	}
	sc.inUse = len(inUse)
	// Reply index first, so a reply in flight finds nothing rather than a
	// half-removed flow.
	if err := deleteKeys(s.ct4Rev, rev4); err != nil {
		return res, fmt.Errorf("delete reply index: %w", err)
	}
	if err := deleteKeys(s.ct4, del4); err != nil {
		return res, fmt.Errorf("delete IPv4 flows: %w", err)
	}
	if err := deleteKeys(s.ct6, del6); err != nil {
		return res, fmt.Errorf("delete IPv6 flows: %w", err)
	}

	capacity := 0
	if cfg.SnatPortMax >= cfg.SnatPortMin {
		capacity = int(cfg.SnatPortMax) - int(cfg.SnatPortMin) + 1
	}
	type usageKey struct {
		addr  uint32
		proto uint8
	}
	counts := map[usageKey]int{}
	for i := 0; i < int(cfg.SnatAddrCount) && i < len(cfg.SnatAddrs); i++ {
		for _, p := range []uint8{unix.IPPROTO_TCP, unix.IPPROTO_UDP, unix.IPPROTO_ICMP} {
			counts[usageKey{cfg.SnatAddrs[i], p}] = 0
		}
	}
	var staleFwd, staleRev []natwallNwSnat4Key
	var staleInside []natwallNwSnat4Endpoint
	if err := batchWalk(s.snatRev, sc.rk, sc.rv, func(k *natwallNwSnat4Key, inside *natwallNwSnat4Endpoint) {
		if _, ok := inUse[*k]; !ok && now.Sub(clk.time(inside.CreatedNs)) >= mappingGrace {
			staleRev = append(staleRev, *k)
			staleInside = append(staleInside, *inside)
			staleFwd = append(staleFwd, natwallNwSnat4Key{Addr: inside.Addr, Port: inside.Port, Proto: k.Proto,
				RemoteAddr: k.RemoteAddr, RemotePort: k.RemotePort})
			return
		}
		counts[usageKey{k.Addr, k.Proto}]++
	}); err != nil {
		return res, fmt.Errorf("walk SNAT mappings: %w", err)
	}
	// Freed mappings come off the dataplane's in-use counts (snat_count.go).
	if res.MappingsFreed, err = s.deleteMappings(staleFwd, staleRev, staleInside); err != nil {
		return res, err
	}
	if res.HostsAtQuota, err = s.HostsAtQuota(); err != nil {
		return res, err
	}
	for k, n := range counts {
		res.SNAT = append(res.SNAT, PortUsage{Addr: addr4(k.addr), Proto: k.proto, Mappings: n, Capacity: capacity})
	}
	sort.Slice(res.SNAT, func(i, j int) bool {
		if c := res.SNAT[i].Addr.Compare(res.SNAT[j].Addr); c != 0 {
			return c < 0
		}
		return res.SNAT[i].Proto < res.SNAT[j].Proto
	})
	return res, nil
}
