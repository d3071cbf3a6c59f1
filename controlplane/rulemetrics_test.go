package controlplane

import (
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/natwall/natwall/dataplane"
)

func TestRuleMetrics(t *testing.T) {
	live := []LiveRule{
		{ID: "web", Number: 3, Stage: "stateful", Action: "allow"},
		{ID: "block-smb", Number: 4, Stage: "stateless", Action: "deny"},
	}
	hits := map[uint32]dataplane.ReasonCount{3: {Packets: 12}, 4: {Packets: 5, Bytes: 300}}
	tests := []struct {
		name    string
		limit   int
		readErr error
		want    string
		errors  float64
	}{
		{name: "every rule", limit: 10, want: `
# HELP natwall_rule_bytes_total Bytes of the packets each live stateless rule matched.
# TYPE natwall_rule_bytes_total counter
natwall_rule_bytes_total{action="deny",rule="block-smb"} 300
# HELP natwall_rule_hits_total Matches of each live rule: packets for stateless rules, flows for stateful ones.
# TYPE natwall_rule_hits_total counter
natwall_rule_hits_total{action="allow",rule="web",stage="stateful"} 12
natwall_rule_hits_total{action="deny",rule="block-smb",stage="stateless"} 5
# HELP natwall_rule_metrics_enabled 1 while natwall_rule_hits_total has a series per live rule; 0 when the rule set has more rules than metrics.rule_hits_limit.
# TYPE natwall_rule_metrics_enabled gauge
natwall_rule_metrics_enabled 1
`},
		{name: "more rules than the limit", limit: 1, want: `
# HELP natwall_rule_metrics_enabled 1 while natwall_rule_hits_total has a series per live rule; 0 when the rule set has more rules than metrics.rule_hits_limit.
# TYPE natwall_rule_metrics_enabled gauge
natwall_rule_metrics_enabled 0
`},
		{name: "turned off", limit: 0, want: `
# HELP natwall_rule_metrics_enabled 1 while natwall_rule_hits_total has a series per live rule; 0 when the rule set has more rules than metrics.rule_hits_limit.
# TYPE natwall_rule_metrics_enabled gauge
natwall_rule_metrics_enabled 0
`},
		// Series left out, not zeroed, and the failure counted.
		{name: "counters unreadable", limit: 10, readErr: errors.New("map lookup: bad fd"), errors: 1, want: `
# HELP natwall_rule_metrics_enabled 1 while natwall_rule_hits_total has a series per live rule; 0 when the rule set has more rules than metrics.rule_hits_limit.
# TYPE natwall_rule_metrics_enabled gauge
natwall_rule_metrics_enabled 1
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			scrapeErrors := prometheus.NewCounter(prometheus.CounterOpts{Name: "natwall_scrape_errors_total"})
			m := &ruleMetrics{
				rules: func() []LiveRule { return live },
				hits: func(ids []uint32) (map[uint32]dataplane.ReasonCount, error) {
					return hits, tt.readErr
				},
				limit: tt.limit, log: slog.New(slog.DiscardHandler), scrapeErrors: scrapeErrors,
			}
			if err := testutil.CollectAndCompare(m, strings.NewReader(tt.want)); err != nil {
				t.Error(err)
			}
			if got := testutil.ToFloat64(scrapeErrors); got != tt.errors {
				t.Errorf("scrape errors %v, want %v", got, tt.errors)
			}
		})
	}
}
