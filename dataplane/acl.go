package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/cilium/ebpf"

	"github.com/natwall/natwall/rules"
)

// MaxRulesPerStage is how many rules one classifier stage holds.
const MaxRulesPerStage = len(natwallNwAclBitvec{}.Words) * 64

// aclActions translates rule actions into the dataplane's enum nw_acl_action.
var aclActions = map[rules.Action]natwallNwAclAction{
	rules.Pass:   natwallNwAclActionNW_ACL_PASS,
	rules.Drop:   natwallNwAclActionNW_ACL_DROP,
	rules.Allow:  natwallNwAclActionNW_ACL_ALLOW,
	rules.Deny:   natwallNwAclActionNW_ACL_DENY,
	rules.Reject: natwallNwAclActionNW_ACL_REJECT,
	rules.Alert:  natwallNwAclActionNW_ACL_ALERT,
}

func validateStage(s *rules.StageTables) error {
	if len(s.RuleIDs) > MaxRulesPerStage || len(s.RuleIDs) != len(s.Actions) {
		return fmt.Errorf("%d rules (%d actions), at most %d per stage", len(s.RuleIDs), len(s.Actions), MaxRulesPerStage)
	}
	if _, ok := aclActions[s.Default]; !ok {
		return fmt.Errorf("default action %v", s.Default)
	}
	if s.Flags != nil && len(s.Flags) != len(s.RuleIDs) {
		return fmt.Errorf("%d rules, %d rule flags", len(s.RuleIDs), len(s.Flags))
	}
	for _, a := range s.Actions {
		if _, ok := aclActions[a]; !ok {
			return fmt.Errorf("action %v", a)
		}
	}
	words := (len(s.RuleIDs) + 63) / 64
	for i, bv := range s.Bitvectors {
		if len(bv) != words {
			return fmt.Errorf("bit vector %d has %d words, want %d", i, len(bv), words)
		}
	}
	check := func(what string, id uint32) error {
		if int(id) >= len(s.Bitvectors) {
			return fmt.Errorf("%s names bit vector %d of %d", what, id, len(s.Bitvectors))
		}
		return nil
	}
	var errs []error
	for _, p := range append(append([]rules.PrefixBV(nil), s.Src...), s.Dst...) {
		errs = append(errs, check("prefix "+p.Prefix.String(), p.BV))
	}
	errs = append(errs, check("no-port", s.NoPort), check("no-ICMP", s.NoICMP))
	for _, tbl := range [][]uint32{s.Proto[:], s.SrcPort[:], s.DstPort[:], s.ICMP[:], s.Zone[:]} {
		for _, id := range tbl {
			if err := check("field table", id); err != nil {
				return err
			}
		}
	}
	for _, fam := range []struct {
		list []rules.PrefixBV
		name string
	}{{s.Src, "source"}, {s.Dst, "destination"}} {
		var v4, v6 bool
		for _, p := range fam.list {
			v4 = v4 || p.Prefix == netip.MustParsePrefix("0.0.0.0/0")
			v6 = v6 || p.Prefix == netip.MustParsePrefix("::/0")
		}
		if len(s.RuleIDs) > 0 && (!v4 || !v6) {
			errs = append(errs, fmt.Errorf("%s prefixes lack a /0 for each family", fam.name))
		}
	}
	return errors.Join(errs...)
}

// LoadRules writes a rule set into the idle generation of the classifier,
// then flips the active generation with one map update: a packet reads the
// generation once, so it is classified by the old rule set or the new one,
// never a mix. A nil stage means "no rule set": the built-in policy.
func (d *Dataplane) LoadRules(stateless, stateful *rules.StageTables) error {
	return d.acl.load(stateless, stateful)
}

// aclWriter writes rule sets into the classifier and remembers what each
// generation's stages hold, so that the next write into a generation
// deletes exactly the prefixes the new set lacks and rewrites only the
// port entries that change, instead of walking the prefix tries key by
// key (the walk was 40% of a 30,000-rule load). What pinned maps hold
// after a restart is not known: the first write into each generation
// walks, as does the one after a failed write.
type aclWriter struct {
	mu   sync.Mutex
	objs *natwallObjects
	held [2][2]*heldStage // by generation, stage; nil: unknown
}

// heldStage is what writeStage last wrote into one generation's stage.
type heldStage struct {
	lpm4  map[natwallNwAclLpm4Key]uint32 // prefix to bit vector id
	lpm6  map[natwallNwAclLpm6Key]uint32
	ports [3][]uint32 // source port, destination port, ICMP; nil: unknown
	// vectors are the words of each bit vector id, the compiled tables'
	// own slices (compiled tables are not changed once loaded); nil:
	// unknown. A reload that changes a few rules keeps most vectors.
	vectors [][]uint64
}

// loadRules writes with nothing remembered: every write walks the tries.
func loadRules(objs *natwallObjects, stateless, stateful *rules.StageTables) error {
	return (&aclWriter{objs: objs}).load(stateless, stateful)
}

func (w *aclWriter) load(stateless, stateful *rules.StageTables) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	objs := w.objs
	for _, st := range []*rules.StageTables{stateless, stateful} {
		if st != nil {
			if err := validateStage(st); err != nil {
				return fmt.Errorf("classifier tables: %w", err)
			}
		}
	}
	var active uint32
	if err := objs.NwAclGen.Lookup(uint32(0), &active); err != nil {
		return fmt.Errorf("read active generation: %w", err)
	}
	// The generation counts up: its low bit picks the tables in force, and
	// the whole value tags the stateless verdicts flows keep (acl_tag).
	next := active + 1
	gen := next & 1
	for stage, st := range []*rules.StageTables{stateless, stateful} {
		// Forgotten first: a write that fails half way leaves the stage
		// holding what neither the old record nor the new one says.
		held := w.held[gen][stage]
		w.held[gen][stage] = nil
		now, err := writeStage(objs, held, uint8(gen), uint8(stage), st)
		if err != nil {
			return fmt.Errorf("write %s stage: %w", stageName(stage), err)
		}
		w.held[gen][stage] = now
	}
	if err := objs.NwAclGen.Put(uint32(0), next); err != nil {
		return fmt.Errorf("flip generation: %w", err)
	}
	return nil
}

// invalidateStatelessVerdicts makes flows classify their next packets
// again, keeping the tables in force: the inside networks, which decide
// the direction the stateless rules see, may have changed.
func invalidateStatelessVerdicts(objs *natwallObjects) error {
	var active uint32
	if err := objs.NwAclGen.Lookup(uint32(0), &active); err != nil {
		return fmt.Errorf("read active generation: %w", err)
	}
	if err := objs.NwAclGen.Put(uint32(0), active+2); err != nil {
		return fmt.Errorf("bump generation: %w", err)
	}
	return nil
}

func stageName(stage int) string {
	if stage == int(natwallNwAclStageNW_ACL_STATELESS) {
		return "stateless"
	}
	return "stateful"
}

func writeStage(objs *natwallObjects, held *heldStage, gen, stage uint8, st *rules.StageTables) (*heldStage, error) {
	base := uint32(gen)*uint32(natwallNwAclStageNW_ACL_STAGES) + uint32(stage)
	genStage := uint32(gen)<<8 | uint32(stage)
	vectors := 0
	if st != nil {
		vectors = len(st.Bitvectors)
	}
	if err := deleteVectorsFrom(objs.NwAclBits, genStage, vectors); err != nil {
		return nil, fmt.Errorf("bit vectors: %w", err)
	}
	now := &heldStage{lpm4: map[natwallNwAclLpm4Key]uint32{}, lpm6: map[natwallNwAclLpm6Key]uint32{}}
	if st != nil {
		for field, list := range [][]rules.PrefixBV{st.Src, st.Dst} {
			f := uint8(natwallNwAclFieldNW_ACL_F_SRC)
			if field == 1 {
				f = uint8(natwallNwAclFieldNW_ACL_F_DST)
			}
			for _, p := range list {
				if p.Prefix.Addr().Is4() {
					now.lpm4[natwallNwAclLpm4Key{Prefixlen: 32 + uint32(p.Prefix.Bits()), Gen: gen, Stage: stage,
						Field: f, Addr: beUint32(p.Prefix.Masked().Addr().As4())}] = p.BV
				} else {
					now.lpm6[natwallNwAclLpm6Key{Prefixlen: 32 + uint32(p.Prefix.Bits()), Gen: gen, Stage: stage,
						Field: f, Addr: p.Prefix.Masked().Addr().As16()}] = p.BV
				}
			}
		}
	}
	var was4 map[natwallNwAclLpm4Key]uint32
	var was6 map[natwallNwAclLpm6Key]uint32
	if held != nil {
		was4, was6 = held.lpm4, held.lpm6
	}
	if err := replacePrefixes(objs.NwAclLpm4, was4, now.lpm4, func(k natwallNwAclLpm4Key) bool {
		return k.Gen == gen && k.Stage == stage
	}); err != nil {
		return nil, fmt.Errorf("IPv4 prefixes: %w", err)
	}
	if err := replacePrefixes(objs.NwAclLpm6, was6, now.lpm6, func(k natwallNwAclLpm6Key) bool {
		return k.Gen == gen && k.Stage == stage
	}); err != nil {
		return nil, fmt.Errorf("IPv6 prefixes: %w", err)
	}
	if st == nil {
		if held != nil {
			now.ports = held.ports // the arrays keep what they held
		}
		now.vectors = [][]uint64{} // all deleted
		return now, objs.NwAclStages.Put(base, natwallNwAclMeta{})
	}

	// In chunks: a vector is 4 KiB, and 30,000 of them at once were
	// 120 MiB to allocate and collect.
	const chunk = 512
	var wasVectors [][]uint64
	if held != nil {
		wasVectors = held.vectors
	}
	keys := make([]natwallNwAclBvKey, 0, chunk)
	vals := make([]natwallNwAclBitvec, chunk)
	for first := 0; first < len(st.Bitvectors); first += chunk {
		keys = keys[:0]
		for id := first; id < min(first+chunk, len(st.Bitvectors)); id++ {
			words := st.Bitvectors[id]
			if id < len(wasVectors) && slices.Equal(wasVectors[id], words) {
				continue
			}
			bv := &vals[len(keys)]
			*bv = natwallNwAclBitvec{}
			copy(bv.Words[:], words)
			for w, word := range words {
				if word != 0 {
					bv.Summary[w/64] |= 1 << (w % 64)
				}
			}
			keys = append(keys, natwallNwAclBvKey{GenStage: genStage, Id: uint32(id)})
		}
		if err := batchPut(objs.NwAclBits, keys, vals[:len(keys)]); err != nil {
			return nil, fmt.Errorf("bit vectors: %w", err)
		}
	}
	now.vectors = st.Bitvectors

	for field, tbl := range []*[65536]uint32{&st.SrcPort, &st.DstPort, &st.ICMP} {
		start := (base*3 + uint32(field)) * 65536
		var was []uint32
		if held != nil {
			was = held.ports[field]
		}
		var idx, put []uint32
		for i, v := range tbl {
			if was == nil || was[i] != v {
				idx = append(idx, start+uint32(i))
				put = append(put, v)
			}
		}
		if err := batchPut(objs.NwAclPorts, idx, put); err != nil {
			return nil, fmt.Errorf("port table: %w", err)
		}
		now.ports[field] = slices.Clone(tbl[:])
	}

	ruleKeys := make([]uint32, len(st.RuleIDs))
	ruleVals := make([]natwallNwAclRule, len(st.RuleIDs))
	for i, id := range st.RuleIDs {
		ruleKeys[i] = base*uint32(MaxRulesPerStage) + uint32(i)
		ruleVals[i] = natwallNwAclRule{RuleId: id, Action: uint8(aclActions[st.Actions[i]])}
		if i < len(st.Flags) {
			ruleVals[i].Flags = uint8(st.Flags[i])
		}
		if i < len(st.L7) && st.L7[i] {
			ruleVals[i].Flags |= uint8(natwallNwAclRuleFlagsNW_ACL_RULE_L7)
		}
	}
	if err := batchPut(objs.NwAclRules, ruleKeys, ruleVals); err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}

	words := (len(st.RuleIDs) + 63) / 64
	meta := natwallNwAclMeta{
		Nrules:        uint32(len(st.RuleIDs)),
		Nwords:        uint32(words),
		Nsummary:      uint32((words + 63) / 64),
		DefaultAction: uint32(aclActions[st.Default]),
		DefaultRuleId: st.DefaultID,
		DefaultFlags:  uint32(st.DefaultFlags),
		NoportBv:      st.NoPort,
		NoicmpBv:      st.NoICMP,
		ProtoBv:       st.Proto,
		ZoneBv:        st.Zone,
	}
	return now, objs.NwAclStages.Put(base, meta)
}

// replacePrefixes makes a generation's stage of a prefix trie hold
// exactly want. With was, what the stage holds, it deletes the keys want
// lacks and writes the ones that are new or changed; without, it walks the
// trie for the stage's keys (mine), deletes them all and writes want.
func replacePrefixes[K comparable](m *ebpf.Map, was, want map[K]uint32, mine func(K) bool) error {
	var stale []K
	if was == nil {
		if err := deleteKeysWhere(m, mine); err != nil {
			return err
		}
	} else {
		for k := range was {
			if _, ok := want[k]; !ok {
				stale = append(stale, k)
			}
		}
		if err := batchDelete(m, stale); err != nil {
			return err
		}
	}
	keys := make([]K, 0, len(want))
	vals := make([]uint32, 0, len(want))
	for k, v := range want {
		if old, ok := was[k]; !ok || old != v {
			keys = append(keys, k)
			vals = append(vals, v)
		}
	}
	return batchPut(m, keys, vals)
}

// deleteKeysWhere deletes m's entries whose key is stale. It walks the
// keys alone: the classifier's values are up to 4 KiB, and reading them
// was most of a reload's time. Deletions go in batches.
func deleteKeysWhere[K any](m *ebpf.Map, stale func(K) bool) error {
	var victims []K
	var key, next K
	var from any // nil: the walk starts at the first key
	for {
		err := m.NextKey(from, &next)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return fmt.Errorf("walk %s: %w", m, err)
		}
		if stale(next) {
			victims = append(victims, next)
		}
		key = next
		from = &key
	}
	return batchDelete(m, victims)
}

// deleteVectorsFrom deletes a stage's bit vectors from id from on. A
// stage's ids are always 0 to n-1 (writeStage writes them in order, and
// deletes from the top down to the new set's count), so the deletion
// stops at the first id that is missing, without walking the map, whose
// values are up to 4 KiB and many. Were an id ever left above a gap, no
// table would name it: the tables only name the ids the new set writes.
func deleteVectorsFrom(m *ebpf.Map, genStage uint32, from int) error {
	const chunk = 4096
	keys := make([]natwallNwAclBvKey, chunk)
	for id := from; id < int(m.MaxEntries()); id += chunk {
		for i := range keys {
			keys[i] = natwallNwAclBvKey{GenStage: genStage, Id: uint32(id + i)}
		}
		n, err := m.BatchDelete(keys, nil)
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			return nil
		case errors.Is(err, ebpf.ErrNotSupported):
			for _, k := range keys {
				if err := m.Delete(k); errors.Is(err, ebpf.ErrKeyNotExist) {
					return nil
				} else if err != nil {
					return err
				}
			}
		case err != nil:
			return err
		case n < chunk:
			return nil
		}
	}
	return nil
}

// batchDelete deletes many keys in few system calls.
func batchDelete[K any](m *ebpf.Map, keys []K) error {
	const chunk = 8192
	for i := 0; i < len(keys); i += chunk {
		j := min(i+chunk, len(keys))
		if _, err := m.BatchDelete(keys[i:j], nil); err != nil {
			if !errors.Is(err, ebpf.ErrNotSupported) {
				return err
			}
			for n := i; n < j; n++ {
				if err := m.Delete(keys[n]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
					return err
				}
			}
		}
	}
	return nil
}

// batchPut writes many entries in few system calls.
func batchPut[K, V any](m *ebpf.Map, keys []K, vals []V) error {
	const chunk = 8192
	for i := 0; i < len(keys); i += chunk {
		j := min(i+chunk, len(keys))
		if _, err := m.BatchUpdate(keys[i:j], vals[i:j], nil); err != nil {
			if !errors.Is(err, ebpf.ErrNotSupported) {
				return err
			}
			for n := i; n < j; n++ {
				if err := m.Put(keys[n], vals[n]); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// RuleHits reads the hit counters by stable rule id: packets and bytes for
// stateless rules, flows (in Packets) for stateful ones.
func (s *State) RuleHits(ids []uint32) (map[uint32]ReasonCount, error) {
	out := make(map[uint32]ReasonCount, len(ids))
	var perCPU []natwallNwRuleCounter
	for _, id := range ids {
		if err := s.ruleHits.Lookup(id, &perCPU); err != nil {
			return nil, fmt.Errorf("read hits of rule %d: %w", id, err)
		}
		var rc ReasonCount
		for _, c := range perCPU {
			rc.Packets += c.Packets
			rc.Bytes += c.Bytes
		}
		out[id] = rc
	}
	return out, nil
}

// MaxRuleID bounds stable rule ids (the hit counter table's size).
const MaxRuleID = 2*MaxRulesPerStage + 1
