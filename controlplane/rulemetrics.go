package controlplane

import (
	"log/slog"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/natwall/natwall/dataplane"
)

var (
	ruleHitsDesc = prometheus.NewDesc("natwall_rule_hits_total",
		"Matches of each live rule: packets for stateless rules, flows for stateful ones.",
		[]string{"stage", "rule", "action"}, nil)
	ruleBytesDesc = prometheus.NewDesc("natwall_rule_bytes_total",
		"Bytes of the packets each live stateless rule matched.",
		[]string{"rule", "action"}, nil)
	ruleSeriesDesc = prometheus.NewDesc("natwall_rule_metrics_enabled",
		"1 while natwall_rule_hits_total has a series per live rule; 0 when the rule set has more rules than metrics.rule_hits_limit.",
		nil, nil)
)

// ruleMetrics exports every live rule's hit counters, read from the
// dataplane at scrape time. A scrape costs one counter read per rule, so
// past limit rules (metrics.rule_hits_limit) the per-rule series are left
// out; `natwall rules` still shows them.
type ruleMetrics struct {
	rules func() []LiveRule
	hits  func(ids []uint32) (map[uint32]dataplane.ReasonCount, error)
	limit int
	log   *slog.Logger
	// warned is set once the limit has been reported for the live set.
	warned       atomic.Bool
	scrapeErrors prometheus.Counter
}

func (m *ruleMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- ruleHitsDesc
	ch <- ruleBytesDesc
	ch <- ruleSeriesDesc
}

func (m *ruleMetrics) Collect(ch chan<- prometheus.Metric) {
	live := m.rules()
	if m.limit == 0 || len(live) > m.limit {
		if m.limit > 0 && !m.warned.Swap(true) {
			m.log.Warn("more live rules than metrics.rule_hits_limit: no per-rule metrics (natwall rules shows the hits)",
				"rules", len(live), "limit", m.limit)
		}
		ch <- prometheus.MustNewConstMetric(ruleSeriesDesc, prometheus.GaugeValue, 0)
		return
	}
	m.warned.Store(false)
	ch <- prometheus.MustNewConstMetric(ruleSeriesDesc, prometheus.GaugeValue, 1)
	if len(live) == 0 {
		return
	}
	ids := make([]uint32, len(live))
	for i, r := range live {
		ids[i] = r.Number
	}
	hits, err := m.hits(ids)
	if err != nil {
		// Missing series rather than zeros keep rate() from seeing resets.
		m.scrapeErrors.Inc()
		m.log.Error("read rule hit counters for metrics", "error", err)
		return
	}
	for _, r := range live {
		h := hits[r.Number]
		ch <- prometheus.MustNewConstMetric(ruleHitsDesc, prometheus.CounterValue, float64(h.Packets), r.Stage, r.ID, r.Action)
		if r.Stage == "stateless" {
			ch <- prometheus.MustNewConstMetric(ruleBytesDesc, prometheus.CounterValue, float64(h.Bytes), r.ID, r.Action)
		}
	}
}
