package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/natwall/natwall/controlplane/api"
	"github.com/natwall/natwall/dataplane"
	"github.com/natwall/natwall/rules"
)

// apiProviders implements the API's providers over the daemon's dataplane.
type apiProviders struct {
	config func() Config // the running config, as the last reload left it
	dp     Dataplane
	state  func() *dataplane.State // nil without a flow source
	// usage is the flow tables' fill at the last collection; nil without
	// a flow source.
	usage    func() dataplane.TableUsage
	reloader *reloader
}

// ruleGenerationReader is the dataplane's rule generation.
type ruleGenerationReader interface {
	RuleGeneration() (uint32, error)
}

// providers lists what this daemon can serve; a nil field answers 503.
func (p *apiProviders) providers(hub *flowHub) api.Providers {
	out := api.Providers{Status: p, Rules: p, Reloader: apiReloader{p.reloader}}
	if p.state != nil {
		out.Conntrack = p
	}
	if hub != nil {
		out.Flows = hub
	}
	return out
}

// Status implements api.StatusProvider.
func (p *apiProviders) Status(ctx context.Context) (api.Status, error) {
	cfg := p.config()
	st := api.Status{Version: ReadBuildInfo().Version, RulePaths: cfg.RulePaths, Interfaces: []api.Interface{}, NAT: []api.NATUsage{}}
	if st.RulePaths == nil {
		st.RulePaths = []string{}
	}
	attachments := p.dp.Attachments()
	attachedTo, canCheck := p.dp.(interface{ AttachedTo(string) bool })
	for _, name := range cfg.Interfaces {
		i := slices.IndexFunc(attachments, func(a dataplane.Attachment) bool { return a.Interface == name })
		if i < 0 {
			st.Interfaces = append(st.Interfaces, api.Interface{Name: name, Mode: "-"})
			continue
		}
		a := attachments[i]
		attached := true
		if canCheck {
			attached = attachedTo.AttachedTo(name)
		}
		st.Interfaces = append(st.Interfaces, api.Interface{Name: name, Mode: a.Mode.String(), FellBack: a.FellBack, Attached: attached})
	}
	var errs []error
	if g, ok := p.dp.(ruleGenerationReader); ok {
		gen, err := g.RuleGeneration()
		errs = append(errs, err)
		st.RuleGeneration = gen
	}
	if p.reloader != nil {
		if last := p.reloader.LastResult(); !last.Time.IsZero() {
			st.LastReload = &last
		}
	}
	if p.usage != nil {
		// The last collection's count: counting now would walk the tables.
		u := p.usage()
		st.FlowTable = api.TableFill{FlowsV4: u.FlowsV4, FlowsV6: u.FlowsV6, Capacity: u.Capacity}
	}
	if p.state != nil {
		nat, err := p.NAT(ctx)
		errs = append(errs, err)
		st.NAT = nat
	}
	return st, errors.Join(errs...)
}

// Rules implements api.RulesProvider.
func (p *apiProviders) Rules(context.Context) ([]api.Rule, error) {
	cfg := p.config()
	if len(cfg.RulePaths) == 0 {
		return []api.Rule{}, nil // the built-in policy has no rules to count
	}
	live, err := ReadLiveRules(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	hits := map[uint32]dataplane.ReasonCount{}
	if p.state != nil {
		ids := make([]uint32, len(live.Rules))
		for i, r := range live.Rules {
			ids[i] = r.Number
		}
		if hits, err = p.state().RuleHits(ids); err != nil {
			return nil, err
		}
	}
	counted := make([]RuleHits, len(live.Rules))
	for i, r := range live.Rules {
		counted[i] = RuleHits{LiveRule: r, Hits: hits[r.Number].Packets, Bytes: hits[r.Number].Bytes}
	}
	SortRuleHits(counted)
	out := make([]api.Rule, len(counted))
	for i, r := range counted {
		out[i] = api.Rule{ID: r.ID, Number: r.Number, Stage: r.Stage, Priority: r.Priority, Action: r.Action, At: r.At, Report: r.Report, Hits: r.Hits, Bytes: r.Bytes}
	}
	return out, nil
}

// Explain implements api.RulesProvider with the set the daemon last
// applied, from the copy of its sources kept in the state directory: the
// files on disk may have been edited, or broken, since.
func (p *apiProviders) Explain(_ context.Context, pkt rules.Packet, info *rules.L7Info) (rules.Explanation, error) {
	cfg := p.config()
	if len(cfg.RulePaths) == 0 {
		return rules.Explanation{}, fmt.Errorf("no rule paths: the built-in policy is in force: %w", api.ErrNotConfigured)
	}
	live, err := ReadLiveRules(cfg.StateDir)
	if err != nil {
		return rules.Explanation{}, err
	}
	rs, err := live.RuleSet()
	if err != nil {
		return rules.Explanation{}, err
	}
	// Explain names rules by id, so its numbers need not be the daemon's.
	next := uint32(rules.StatefulDefaultID)
	tbl, err := rules.Compile(rs, func(string) uint32 { next++; return next })
	if err != nil {
		return rules.Explanation{}, err
	}
	local, err := applianceAddrs()
	if err != nil {
		return rules.Explanation{}, err
	}
	return rules.ExplainPacket(rs, tbl, pkt, info, rules.Endpoints{Inside: cfg.InsideNetworks, Local: local, SNAT: live.SNATAddresses}), nil
}

// applianceAddrs are this host's own addresses with their prefix lengths:
// the packets the dataplane takes for the appliance's (the local zone) are
// those its route lookup does not forward, to these and their broadcasts.
func applianceAddrs() ([]netip.Prefix, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("the appliance's addresses: %w", err)
	}
	var out []netip.Prefix
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(n.IP)
		if !ok {
			continue
		}
		bits, _ := n.Mask.Size()
		out = append(out, netip.PrefixFrom(ip.Unmap(), bits))
	}
	return out, nil
}

func dataplaneFilter(f api.FlowFilter) dataplane.FlowFilter {
	return dataplane.FlowFilter{Addr: f.Addr, Port: f.Port, Proto: f.Proto}
}

// Flows implements api.ConntrackProvider.
func (p *apiProviders) Flows(ctx context.Context, f api.FlowFilter) ([]api.Flow, error) {
	filter := dataplaneFilter(f)
	out := []api.Flow{}
	err := p.state().Flows(func(fl dataplane.Flow) bool {
		if filter.Match(fl) {
			out = append(out, apiFlow(fl))
		}
		return ctx.Err() == nil
	})
	if err == nil {
		err = ctx.Err()
	}
	return out, err
}

// Flush implements api.ConntrackProvider.
func (p *apiProviders) Flush(_ context.Context, f api.FlowFilter) (int, error) {
	return p.state().Flush(dataplaneFilter(f))
}

// NAT implements api.ConntrackProvider.
func (p *apiProviders) NAT(context.Context) ([]api.NATUsage, error) {
	usage, err := p.state().SNATUsage()
	if err != nil {
		return nil, err
	}
	out := make([]api.NATUsage, len(usage))
	for i, u := range usage {
		out[i] = api.NATUsage{Address: u.Addr.String(), Protocol: api.ProtocolName(u.Proto), InUse: u.Mappings, Capacity: u.Capacity}
	}
	return out, nil
}

func apiFlow(f dataplane.Flow) api.Flow {
	return api.Flow{Proto: api.ProtocolName(f.Proto), Src: f.Src.String(), Dst: f.Dst.String(), ReplySrc: f.ReplySrc.String(),
		ReplyDst: f.ReplyDst.String(), TCPState: dataplane.TCPStateName(f.TCPState), Zone: dataplane.ZoneName(f.Zone),
		SNAT: f.SNAT, DNAT: f.DNAT, RuleID: f.RuleID, Created: f.Created, LastSeen: f.LastSeen,
		PacketsOrig: f.PacketsOrig, BytesOrig: f.BytesOrig, PacketsReply: f.PacketsReply, BytesReply: f.BytesReply}
}

// apiReloader implements api.Reloader with the daemon's reloader.
type apiReloader struct{ r *reloader }

func (a apiReloader) Reload(context.Context) (api.ReloadResult, error) {
	res := a.r.Reload(TriggerAPI)
	if !res.OK {
		return res, errors.New(res.Error)
	}
	return res, nil
}

func (a apiReloader) LastResult() api.ReloadResult { return a.r.LastResult() }

// flowSubscriberBuffer is how many events a subscriber may fall behind
// before it loses some.
const flowSubscriberBuffer = 1024

// flowHub is the API's flow source: a sink of the flow stream that fans
// events out to subscribers. A subscriber that does not keep up loses
// events; the stream never waits for one.
type flowHub struct {
	active atomic.Int32
	mu     sync.Mutex
	subs   map[*flowSubscriber]struct{}
}

type flowSubscriber struct {
	filter dataplane.FlowFilter
	types  []string
	ch     chan api.FlowEvent
	lost   uint64
}

func newFlowHub() *flowHub { return &flowHub{subs: map[*flowSubscriber]struct{}{}} }

// Subscribe implements api.FlowSource.
func (h *flowHub) Subscribe(ctx context.Context, f api.FlowFilter) (<-chan api.FlowEvent, error) {
	sub := &flowSubscriber{filter: dataplaneFilter(f), types: f.Types, ch: make(chan api.FlowEvent, flowSubscriberBuffer)}
	h.mu.Lock()
	h.subs[sub] = struct{}{}
	h.active.Add(1)
	h.mu.Unlock()
	context.AfterFunc(ctx, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.subs, sub)
		h.active.Add(-1)
		close(sub.ch)
	})
	return sub.ch, nil
}

// Flush implements flows.Sink: events go out as they come.
func (h *flowHub) Flush() {}

// HandleFlowEvent implements flows.Sink.
func (h *flowHub) HandleFlowEvent(ev *dataplane.FlowEvent) {
	if h.active.Load() == 0 {
		return
	}
	typ := ev.Type.String()
	var out api.FlowEvent
	converted := false
	h.mu.Lock()
	defer h.mu.Unlock()
	for sub := range h.subs {
		if len(sub.types) > 0 && !slices.Contains(sub.types, typ) || !sub.filter.Match(ev.Flow) {
			continue
		}
		if !converted {
			out = api.FlowEvent{Type: typ, Time: ev.Time, Reason: ev.Reason.Name(), ByGC: ev.ByGC, Flow: apiFlow(ev.Flow)}
			converted = true
		}
		out.Lost = sub.lost
		select {
		case sub.ch <- out:
			sub.lost = 0
		default:
			sub.lost++
		}
	}
}

// Check validates cfg as `natwall run` does before it changes anything:
// LoadConfig has checked the settings, this reads, parses and compiles the
// rule files. It reads no kernel state, so it runs anywhere: `natwall
// config check` and `natwall run --dry-run`.
func Check(cfg Config) error {
	if err := checkRules(cfg); err != nil {
		return fmt.Errorf("rules: %w", err)
	}
	return nil
}
