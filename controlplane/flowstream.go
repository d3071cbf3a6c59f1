package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/natwall/natwall/controlplane/flowlog"
	"github.com/natwall/natwall/controlplane/flows"
	"github.com/natwall/natwall/dataplane"
	rulespkg "github.com/natwall/natwall/rules"
)

// eveOutput is the opened EVE destination; nil Writer when EVE is off.
type eveOutput struct {
	io.Writer
	close func() error
}

func (e *eveOutput) Close() error {
	if e == nil || e.close == nil {
		return nil
	}
	return e.close()
}

// openEVE opens the configured EVE output, so that a path natwall cannot
// write stops the start before anything is attached.
func openEVE(cfg EVEConfig) (*eveOutput, error) {
	switch cfg.Output {
	case EVEStdout:
		return &eveOutput{Writer: os.Stdout}, nil
	case EVEFile:
		if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o750); err != nil {
			return nil, fmt.Errorf("eve.path: %w", err)
		}
		f, err := flowlog.OpenFile(cfg.Path, cfg.MaxSize, cfg.MaxFiles)
		if err != nil {
			return nil, fmt.Errorf("eve.path: %w", err)
		}
		return &eveOutput{Writer: f, close: f.Close}, nil
	}
	return nil, nil
}

// startFlows starts the flow stream from the dataplane's ring buffer, the
// collector that feeds it the flows it removes, and the EVE sink, and
// registers their metrics. stop detaches the sinks once ctx is done and
// the goroutines in wg have returned.
func (d *daemon) startFlows(ctx context.Context, wg *sync.WaitGroup, src flowSource, reg *prometheus.Registry, eve *eveOutput) (stream *flows.Stream, coll *flows.Collector, stop func()) {
	cfg, log := d.cfg, d.log
	stream = flows.NewStream(log)
	interval := cfg.Conntrack.GCInterval
	if interval <= 0 {
		interval = 10 * time.Second
	}
	coll = &flows.Collector{State: src.State(), Stream: stream, Log: log, Interval: interval}
	if eve != nil && cfg.EVE.Flows {
		coll.ActiveInterval = cfg.EVE.ActiveInterval
	}
	reg.MustRegister(&flows.Metrics{Stream: stream, Collector: coll, State: src.State(), Log: log})
	if eve != nil {
		w := flowlog.NewWriter(eve, flowlog.Options{
			Flows: cfg.EVE.Flows, Alerts: cfg.EVE.Alerts, Log: log,
			Encoder: flowlog.Encoder{Rules: &liveRuleNames{path: filepath.Join(cfg.StateDir, liveRulesFile), log: log}, Location: time.Local},
		})
		reg.MustRegister(w)
		stream.AddSink("eve", w, flows.Filter{Types: eveTypes(cfg.EVE)}, 0)
	}
	if rd, err := src.Events(); err != nil {
		log.Error("flow events unavailable: no flow logs or alerts from the dataplane", "error", err)
	} else {
		wg.Go(func() { stream.Run(ctx, rd) })
	}
	wg.Go(func() { coll.Run(ctx) })
	return stream, coll, stream.Close
}

func eveTypes(cfg EVEConfig) []dataplane.FlowEventType {
	var t []dataplane.FlowEventType
	if cfg.Flows {
		t = append(t, dataplane.FlowEnded, dataplane.FlowActive)
	}
	if cfg.Alerts {
		t = append(t, dataplane.FlowAlert)
	}
	return t
}

// liveRuleNames names rule numbers from the live rule set the daemon
// writes on every load. Numbers are never reused, so a cached name stays
// right; the file is read again when it changes, checked at most once a
// second, so that renamed actions and new rules appear.
type liveRuleNames struct {
	path string

	mu      sync.Mutex
	checked time.Time
	mtime   time.Time
	rules   map[uint32]flowlog.Rule
	log     *slog.Logger
}

// Rule implements flowlog.RuleNames.
func (l *liveRuleNames) Rule(n uint32) (flowlog.Rule, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now := time.Now(); now.Sub(l.checked) >= time.Second {
		l.checked = now
		l.refresh()
	}
	r, ok := l.rules[n]
	return r, ok
}

func (l *liveRuleNames) refresh() {
	st, err := os.Stat(l.path)
	if err != nil || st.ModTime().Equal(l.mtime) {
		return
	}
	live, err := ReadLiveRules(filepath.Dir(l.path))
	if err != nil {
		if l.log != nil && !errors.Is(err, os.ErrNotExist) {
			l.log.Warn("read live rules for flow logs", "error", err)
		}
		return
	}
	rules := map[uint32]flowlog.Rule{
		rulespkg.StatelessDefaultID: {ID: "stateless-default", Action: "pass"},
		rulespkg.StatefulDefaultID:  {ID: "stateful-default", Action: live.StatefulDefault},
	}
	for _, r := range live.Rules {
		rules[r.Number] = flowlog.Rule{ID: r.ID, Action: r.Action}
	}
	l.rules, l.mtime = rules, st.ModTime()
}
