package controlplane

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync/atomic"

	"github.com/natwall/natwall/dataplane"
	"github.com/natwall/natwall/rules"
)

// RuleIDs gives every rule id a stable number for the dataplane, which
// counters and flows use. It is kept in a file so that a rule keeps its
// counters across reloads and restarts; a removed rule's number is never
// given to another rule.
type RuleIDs struct {
	path string
	IDs  map[string]uint32 `json:"ids"`
	Next uint32            `json:"next"`
}

// LoadRuleIDs reads the id file at path, or starts afresh if there is none.
func LoadRuleIDs(path string) (*RuleIDs, error) {
	r := &RuleIDs{path: path, IDs: map[string]uint32{}, Next: rules.StatefulDefaultID + 1}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read rule ids: %w", err)
	}
	if err := json.Unmarshal(data, r); err != nil {
		return nil, fmt.Errorf("rule id file %s: %w", path, err)
	}
	if r.IDs == nil {
		r.IDs = map[string]uint32{}
	}
	return r, nil
}

// ID is the number of the rule named id, allocating one if it is new.
func (r *RuleIDs) ID(id string) uint32 {
	if n, ok := r.IDs[id]; ok {
		return n
	}
	n := r.Next
	r.IDs[id] = n
	r.Next++
	return n
}

// Save writes the ids atomically: a crash leaves the old file or the new.
func (r *RuleIDs) Save() error {
	if r.Next > uint32(dataplane.MaxRuleID) {
		return fmt.Errorf("rule ids exhausted (%d): remove %s to renumber", r.Next, r.path)
	}
	return writeJSONAtomic(r.path, r)
}

// LiveRule is one rule of the live rule set, for `natwall rules`.
type LiveRule struct {
	ID       string `json:"id"`
	Number   uint32 `json:"number"`
	Stage    string `json:"stage"`
	Priority int    `json:"priority"`
	Action   string `json:"action"`
	At       string `json:"at"`
	// Report is how the rule's decisions are reported: "audit" (it
	// reports what it would deny and lets evaluation go on), "log", or
	// empty.
	Report string `json:"report,omitempty"`
}

func ruleReport(r *rules.Rule) string {
	switch {
	case r.Audit:
		return "audit"
	case r.Log:
		return "log"
	}
	return ""
}

// LiveRules is the rule set the dataplane enforces, as the daemon last
// applied it.
type LiveRules struct {
	Files           []string   `json:"files"`
	Rules           []LiveRule `json:"rules"`
	StatefulDefault string     `json:"stateful_default"`
	// Inside and Sources are what the set was compiled from, byte for
	// byte, so that `natwall explain --live` explains this set even after
	// the files on disk are edited or broken.
	Inside  []netip.Prefix `json:"inside_networks"`
	Sources []rules.Source `json:"sources"`
	// SNATAddresses are what the set's forwards' external: snat stood for.
	SNATAddresses []netip.Addr `json:"snat_addresses,omitempty"`
}

// RuleSet parses the recorded sources again, giving the live rule set.
func (l LiveRules) RuleSet() (*rules.RuleSet, error) {
	if len(l.Sources) == 0 {
		return nil, errors.New("the live rule set has no recorded sources (written by an older natwall run?): reload it with SIGHUP")
	}
	return rules.Parse(l.Sources, rules.Options{Inside: l.Inside, SNATAddresses: l.SNATAddresses})
}

// Rule file names in the state directory.
const (
	ruleIDsFile   = "rule-ids.json"
	liveRulesFile = "rules.json"
)

// ruleLoader compiles rule files and applies them to the dataplane; a set
// that does not load changes nothing.
type ruleLoader struct {
	paths    []string
	inside   []netip.Prefix
	stateDir string
	apply    func(stateless, stateful *rules.StageTables) error
	// snat is what forwards' external: snat stands for; setForwards loads
	// the forwards, nil when the dataplane has none.
	snat        []netip.Addr
	setForwards func([]dataplane.Forward) error
	// live is the rule list of the set last committed, for metrics, which
	// read it while a reload may be running.
	live atomic.Pointer[[]LiveRule]
}

// liveRules is the committed set's rules; nil before the first commit.
func (l *ruleLoader) liveRules() []LiveRule {
	if p := l.live.Load(); p != nil {
		return *p
	}
	return nil
}

// preparedRules is a rule set read, validated and compiled, with its rule
// numbers allocated but neither saved nor applied.
type preparedRules struct {
	paths  []string
	inside []netip.Prefix
	srcs   []rules.Source
	rs     *rules.RuleSet
	tbl    *rules.Tables
	ids    *RuleIDs
	// forwards are the set's dnat section, for the dataplane.
	forwards []dataplane.Forward
}

// prepare reads, validates and compiles the rule files at paths, whose
// $HOME_NET is inside, and changes nothing. Errors name file:line:col.
func (l *ruleLoader) prepare(paths []string, inside []netip.Prefix) (*preparedRules, error) {
	srcs, err := rules.ReadSources(paths)
	if err != nil {
		return nil, err
	}
	return l.prepareSources(paths, srcs, inside)
}

// prepareSources is prepare of rule files already read from paths.
func (l *ruleLoader) prepareSources(paths []string, srcs []rules.Source, inside []netip.Prefix) (*preparedRules, error) {
	rs, err := rules.Parse(srcs, rules.Options{Inside: inside, SNATAddresses: l.snat})
	if err != nil {
		return nil, err
	}
	ids, err := LoadRuleIDs(filepath.Join(l.stateDir, ruleIDsFile))
	if err != nil {
		return nil, err
	}
	tbl, err := rules.Compile(rs, ids.ID)
	if err != nil {
		return nil, err
	}
	forwards, err := dataplaneForwards(rs.DNAT, l.snat, ids)
	if err != nil {
		return nil, err
	}
	if len(forwards) > 0 && l.setForwards == nil {
		return nil, errNoForwards
	}
	return &preparedRules{paths: paths, inside: inside, srcs: srcs, rs: rs, tbl: tbl, ids: ids, forwards: forwards}, nil
}

// commit applies a prepared set and records it as the live one. If the
// dataplane refuses it, the last good set stays live.
func (l *ruleLoader) commit(p *preparedRules) error {
	// Numbers are saved before they reach the dataplane, so counters never
	// name a rule a later daemon would not know.
	if err := p.ids.Save(); err != nil {
		return err
	}
	live := LiveRules{Files: p.paths, StatefulDefault: p.rs.StatefulDefault.String(), Inside: p.inside, Sources: p.srcs, SNATAddresses: l.snat}
	for _, stage := range []rules.Stage{rules.Stateless, rules.Stateful} {
		for _, r := range p.rs.Rules(stage) {
			live.Rules = append(live.Rules, LiveRule{ID: r.ID, Number: p.ids.ID(r.ID), Stage: stage.String(),
				Priority: r.Priority, Action: r.Action.String(), At: r.Pos.String(), Report: ruleReport(&r)})
		}
	}
	live.Rules = append(live.Rules, liveForwards(p.rs.DNAT, p.ids)...)
	// Encoded while the kernel takes the tables: for 30,000 rules each is
	// about a tenth of a second, and the machine has a core for each. The
	// file is written only once the set is in force.
	type encoding struct {
		data []byte
		err  error
	}
	encoded := make(chan encoding, 1)
	go func() {
		data, err := json.Marshal(live)
		encoded <- encoding{data, err}
	}()
	if err := l.apply(p.tbl.Stateless, p.tbl.Stateful); err != nil {
		<-encoded
		return fmt.Errorf("apply rule set: %w", err)
	}
	if l.setForwards != nil {
		if err := l.setForwards(p.forwards); err != nil {
			<-encoded
			return fmt.Errorf("apply dnat forwards: %w", err)
		}
	}
	l.paths, l.inside = p.paths, p.inside
	l.live.Store(&live.Rules)
	e := <-encoded
	if e.err != nil {
		return e.err
	}
	return writeFileAtomic(filepath.Join(l.stateDir, liveRulesFile), e.data)
}

// load prepares and commits the loader's own paths.
func (l *ruleLoader) load() (*rules.RuleSet, *rules.Tables, error) {
	p, err := l.prepare(l.paths, l.inside)
	if err != nil {
		return nil, nil, err
	}
	if err := l.commit(p); err != nil {
		return nil, nil, err
	}
	return p.rs, p.tbl, nil
}

// Revalidate says what a reload does to established flows that the new
// rule set would not admit.
type Revalidate string

const (
	// RevalidateKeep leaves them be until they end, as AWS security groups
	// and Azure NSGs do: the default.
	RevalidateKeep Revalidate = "keep"
	// RevalidateClose removes them: their next packet finds no flow and is
	// dropped, and TCP from inside is answered with a RST when
	// conntrack.invalid_tcp_reset is on.
	RevalidateClose Revalidate = "close"
)

// flowPacket is the first packet of f as the stateful stage saw it.
func flowPacket(f dataplane.Flow) rules.Packet {
	dst := f.Dst
	if f.DNAT {
		// A hairpin is classified on the inside host it reaches.
		dst = f.ReplySrc
	}
	p := rules.Packet{Src: f.Src.Addr(), Dst: dst.Addr(), Protocol: f.Proto, Direction: dataplane.ZoneDirection(f.Zone)}
	switch f.Proto {
	case 6, 17:
		p.HasPorts, p.SrcPort, p.DstPort = true, f.Src.Port(), dst.Port()
	case 1:
		p.IsICMP, p.ICMPType = true, 8 // flows start with an echo request
	case 58:
		p.IsICMP, p.ICMPType = true, 128
	}
	return p
}

// closeDenied removes the flows the stateful stage of tbl would not admit
// now, tells closed (if not nil) of each with the reason, and returns how
// many.
func closeDenied(st *dataplane.State, tbl *rules.Tables, closed func(f *dataplane.Flow, why dataplane.Reason)) (int, error) {
	type victim struct {
		flow dataplane.Flow
		why  dataplane.Reason
	}
	var victims []victim
	err := st.Flows(func(f dataplane.Flow) bool {
		i, _ := tbl.Stateful.Lookup(flowPacket(f))
		act := tbl.Stateful.Default
		if i >= 0 {
			act = tbl.Stateful.Actions[i]
		}
		if act != rules.Allow {
			victims = append(victims, victim{f, revalidationReason(i >= 0, act)})
		}
		return true
	})
	if err != nil {
		return 0, err
	}
	for n := range victims {
		if err := st.Delete(victims[n].flow); err != nil {
			return n, err
		}
		if closed != nil {
			closed(&victims[n].flow, victims[n].why)
		}
	}
	return len(victims), nil
}

// revalidationReason is the reason a flow closed on reload ends with: the
// drop the new rules would give its next packet, so that its flow-end
// record says which decision ended it.
func revalidationReason(byRule bool, act rules.Action) dataplane.Reason {
	switch {
	case !byRule:
		return dataplane.ReasonDropPolicy
	case act == rules.Reject:
		return dataplane.ReasonDropACLReject
	}
	return dataplane.ReasonDropACLDeny
}

// ReadLiveRules reads what the daemon last applied, from its state directory.
func ReadLiveRules(stateDir string) (LiveRules, error) {
	var live LiveRules
	data, err := os.ReadFile(filepath.Join(stateDir, liveRulesFile))
	if err != nil {
		return live, fmt.Errorf("read live rules (is natwall running with rules?): %w", err)
	}
	return live, json.Unmarshal(data, &live)
}

// RuleHits pairs each live rule with its hit counters, most hit first;
// rules never hit stay in the list.
type RuleHits struct {
	LiveRule
	Hits  uint64 `json:"hits"` // packets (stateless) or flows (stateful)
	Bytes uint64 `json:"bytes,omitempty"`
}

// SortRuleHits sorts by hits, then by stage and priority.
func SortRuleHits(h []RuleHits) {
	sort.SliceStable(h, func(i, j int) bool {
		if h[i].Hits != h[j].Hits {
			return h[i].Hits > h[j].Hits
		}
		if h[i].Stage != h[j].Stage {
			return h[i].Stage > h[j].Stage // stateless first
		}
		return h[i].Priority < h[j].Priority
	})
}

// writeJSONAtomic writes compact JSON: the live rules hold every rule and
// the rule files' text, and indenting them was a fifth of a reload's time
// in the control plane. `natwall rules` is what people read, not the file.
func writeJSONAtomic(path string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return writeFileAtomic(path, data)
}

// writeFileAtomic writes data and a newline to path: a crash leaves the
// old file or the new.
func writeFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// DefaultStateDir holds what the daemon keeps besides the pinned maps: the
// rule ids and the live rule set.
const DefaultStateDir = "/var/lib/natwall"
