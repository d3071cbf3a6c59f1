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
}

// Collect is one garbage collection: it removes expired flows and unused
// SNAT mappings, and counts what is left, in a single batched walk of each
// table instead of one per question and one syscall per entry.
func (s *State) Collect(now time.Time) (GCResult, error) {
	return s.CollectVisiting(now, nil)
}

// CollectVisiting is Collect that also shows live every flow it keeps,
// from the same walk: flow logs report long flows this way without a walk
// of their own. f is valid only during the call.
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

	var expired []Flow
	inUse := map[natwallNwSnat4Key]struct{}{}
	k4 := make([]natwallNwTuple4, gcBatch)
	e4 := make([]natwallNwCt4Entry, gcBatch)
	if err := batchWalk(s.ct4, k4, e4, func(k *natwallNwTuple4, e *natwallNwCt4Entry) {
		res.Usage.FlowsV4++
		f := flow4(*k, e, clk)
		if now.Sub(f.LastSeen) > timeouts.Timeout(f) {
			expired = append(expired, f)
			return
		}
		if live != nil {
			live(&f)
		}
		if e.St.Flags&uint8(natwallNwCtFlagsNW_CT_SNAT) != 0 {
			inUse[natwallNwSnat4Key{Addr: e.Reply.Daddr, Port: e.Reply.Dport, Proto: k.Proto}] = struct{}{}
			inUse[natwallNwSnat4Key{Addr: e.Reply.Daddr, Port: e.Reply.Dport, Proto: k.Proto,
				RemoteAddr: k.Daddr, RemotePort: k.Dport}] = struct{}{}
		}
	}); err != nil {
		return res, fmt.Errorf("walk IPv4 flows: %w", err)
	}
	k6 := make([]natwallNwTuple6, gcBatch)
	e6 := make([]natwallNwCt6Entry, gcBatch)
	if err := batchWalk(s.ct6, k6, e6, func(k *natwallNwTuple6, e *natwallNwCt6Entry) {
		res.Usage.FlowsV6++
		f := flow6(*k, e, clk)
		if now.Sub(f.LastSeen) > timeouts.Timeout(f) {
			expired = append(expired, f)
		} else if live != nil {
			live(&f)
		}
	}); err != nil {
		return res, fmt.Errorf("walk IPv6 flows: %w", err)
	}

	var rev4 []natwallNwTuple4
	var del4 []natwallNwTuple4
	var del6 []natwallNwTuple6
	for _, f := range expired {
		// The flow may have seen a packet since the walk read it: look
		// again, and keep it (and its mapping) if it is live.
		fresh, ok := s.reload(f)
		if ok && now.Sub(fresh.LastSeen) <= timeouts.Timeout(fresh) {
			if fresh.key4 != nil && fresh.SNAT {
				k := *fresh.key4
				var e natwallNwCt4Entry
				if s.ct4.Lookup(&k, &e) == nil {
					inUse[natwallNwSnat4Key{Addr: e.Reply.Daddr, Port: e.Reply.Dport, Proto: k.Proto}] = struct{}{}
					inUse[natwallNwSnat4Key{Addr: e.Reply.Daddr, Port: e.Reply.Dport, Proto: k.Proto,
						RemoteAddr: k.Daddr, RemotePort: k.Dport}] = struct{}{}
				}
			}
			continue
		}
		if !ok {
			// The dataplane removed it meanwhile and reported it.
			continue
		}
		f = fresh
		if f.key4 != nil {
			del4 = append(del4, *f.key4)
			var e natwallNwCt4Entry
			if s.ct4.Lookup(f.key4, &e) == nil {
				rev4 = append(rev4, e.Reply)
			}
			res.Usage.FlowsV4--
		} else {
			del6 = append(del6, *f.key6)
			res.Usage.FlowsV6--
		}
		res.Expired = append(res.Expired, f)
	}
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
	rk := make([]natwallNwSnat4Key, gcBatch)
	rv := make([]natwallNwSnat4Endpoint, gcBatch)
	if err := batchWalk(s.snatRev, rk, rv, func(k *natwallNwSnat4Key, inside *natwallNwSnat4Endpoint) {
		if _, ok := inUse[*k]; !ok && now.Sub(clk.time(inside.CreatedNs)) >= mappingGrace {
			staleRev = append(staleRev, *k)
			staleFwd = append(staleFwd, natwallNwSnat4Key{Addr: inside.Addr, Port: inside.Port, Proto: k.Proto,
				RemoteAddr: k.RemoteAddr, RemotePort: k.RemotePort})
			return
		}
		counts[usageKey{k.Addr, k.Proto}]++
	}); err != nil {
		return res, fmt.Errorf("walk SNAT mappings: %w", err)
	}
	// Forward side first: a new flow then allocates afresh instead of
	// reusing a mapping whose port is being released.
	if err := deleteKeys(s.snatFwd, staleFwd); err != nil {
		return res, fmt.Errorf("delete SNAT mappings: %w", err)
	}
	if err := deleteKeys(s.snatRev, staleRev); err != nil {
		return res, fmt.Errorf("delete SNAT mappings: %w", err)
	}
	res.MappingsFreed = len(staleRev)
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
