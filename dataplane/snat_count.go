package dataplane

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// The dataplane counts the endpoint-independent SNAT mappings in use per
// external address and per inside host (nw_snat_count), so that a full
// address or a host at its quota is known from one lookup rather than by
// probing ports. It adds one per port it claims. The collector, the only
// thing that removes mappings, takes off what it removed: decrementing
// (rather than recounting) is exact while packets are claiming ports at
// the same time, which a recount written back from user space would not be.
// The decrement runs in the kernel (the nw_snat_release program), atomic
// with the dataplane's increments.

// countedMapping says whether the dataplane counted the mapping with this
// external key: endpoint-independent (no remote endpoint in the key) and
// for a protocol with ports. Address-and-port-dependent and overloaded
// mappings are per destination and hold no port exclusively.
func countedMapping(k *natwallNwSnat4Key) bool {
	if k.RemoteAddr != 0 || k.RemotePort != 0 {
		return false
	}
	switch k.Proto {
	case unix.IPPROTO_TCP, unix.IPPROTO_UDP, unix.IPPROTO_ICMP:
		return true
	}
	return false
}

// filteredInboundMapping is the mapping an inbound flow admitted by a
// looser filtering mode reached (its original destination), which keeps
// the mapping in use: freeing it would hand the port to another host while
// this flow still delivers it to the first.
func filteredInboundMapping(k *natwallNwTuple4, e *natwallNwCt4Entry) (natwallNwSnat4Key, bool) {
	if e.St.Flags&uint8(natwallNwCtFlagsNW_CT_DNAT) == 0 || e.St.Zone != uint8(natwallNwZoneNW_ZONE_INBOUND) {
		return natwallNwSnat4Key{}, false
	}
	return natwallNwSnat4Key{Addr: k.Daddr, Port: k.Dport, Proto: k.Proto}, true
}

// releaseCounts is what one collection takes off the in-use counts.
type releaseCounts map[natwallNwSnatCountKey]int64

// add records that the mapping rev -> inside was removed.
func (r releaseCounts) add(rev *natwallNwSnat4Key, inside *natwallNwSnat4Endpoint) {
	if !countedMapping(rev) {
		return
	}
	r[natwallNwSnatCountKey{Addr: rev.Addr, Proto: rev.Proto, Owner: uint8(natwallNwSnatCountOwnerNW_SNAT_COUNT_EXTERNAL)}]++
	r[natwallNwSnatCountKey{Addr: inside.Addr, Proto: rev.Proto, Owner: uint8(natwallNwSnatCountOwnerNW_SNAT_COUNT_HOST)}]++
}

// apply decrements the dataplane's counts.
func (r releaseCounts) apply(prog *ebpf.Program) error {
	if len(r) == 0 {
		return nil
	}
	if prog == nil {
		return errors.New("release SNAT counts: no nw_snat_release program")
	}
	for k, n := range r {
		arg := natwallNwSnatReleaseArg{Key: k, N: n}
		if _, err := prog.Run(&ebpf.RunOptions{Context: &arg}); err != nil {
			return fmt.Errorf("release SNAT counts: %w", err)
		}
	}
	return nil
}

// deleteMappings removes SNAT mappings, forward side first so a new flow
// allocates afresh instead of reusing a mapping whose port is going, and
// takes the ones it removed off the in-use counts. fwd[i] and rev[i] are
// the two sides of the same mapping, inside[i] the rev side's value.
func (s *State) deleteMappings(fwd, rev []natwallNwSnat4Key, inside []natwallNwSnat4Endpoint) (int, error) {
	if err := deleteKeys(s.snatFwd, fwd); err != nil {
		return 0, fmt.Errorf("delete SNAT mappings: %w", err)
	}
	released := releaseCounts{}
	freed := 0
	err := deleteKeysReport(s.snatRev, rev, func(i int) {
		freed++
		released.add(&rev[i], &inside[i])
	})
	// What was removed is released even if a later delete failed.
	return freed, errors.Join(err, released.apply(s.snatRelease))
}

// deleteKeysReport is deleteKeys that calls deleted with the index of
// every key it removed (and not for keys that were already gone).
func deleteKeysReport[K any](m *ebpf.Map, keys []K, deleted func(i int)) error {
	for base := 0; base < len(keys); base += gcBatch {
		chunk := keys[base:min(len(keys), base+gcBatch)]
		n, err := m.BatchDelete(chunk, nil)
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return err
		}
		for i := 0; i < n; i++ {
			deleted(base + i)
		}
		if err == nil {
			continue
		}
		// The kernel stopped at a missing key, index n.
		for i := n; i < len(chunk); i++ {
			err := m.Delete(&chunk[i])
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				continue
			}
			if err != nil {
				return err
			}
			deleted(base + i)
		}
	}
	return nil
}

// SNATCount is one in-use count of the dataplane's.
type SNATCount struct {
	// Host is true for an inside host's count, false for an external
	// address's.
	Host  bool
	Addr  string
	Proto uint8
	InUse int64
}

// SNATCounts reads the dataplane's in-use counts of endpoint-independent
// mappings, per external address and per inside host, and protocol.
func (s *State) SNATCounts() ([]SNATCount, error) {
	var out []SNATCount
	var k natwallNwSnatCountKey
	var v int64
	it := s.snatCount.Iterate()
	for it.Next(&k, &v) {
		out = append(out, SNATCount{Host: k.Owner == uint8(natwallNwSnatCountOwnerNW_SNAT_COUNT_HOST),
			Addr: addr4(k.Addr).String(), Proto: k.Proto, InUse: v})
	}
	return out, it.Err()
}

// HostsAtQuota is how many (inside host, protocol) pairs hold their whole
// port quota: their next new endpoint is dropped as drop_snat_host_quota.
func (s *State) HostsAtQuota() (int, error) {
	var cfg natwallNwRuntimeConfig
	if err := s.config.Lookup(uint32(0), &cfg); err != nil {
		return 0, fmt.Errorf("read runtime config: %w", err)
	}
	if cfg.SnatHostQuota == 0 {
		return 0, nil
	}
	counts, err := s.SNATCounts()
	n := 0
	for _, c := range counts {
		if c.Host && c.InUse >= int64(cfg.SnatHostQuota) {
			n++
		}
	}
	return n, err
}
