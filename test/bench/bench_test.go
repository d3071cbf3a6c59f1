package bench

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/natwall/natwall/test/lab"
)

// TestSmallRun runs the benchmark in miniature, so that `make bench` cannot
// rot between the runs that take its numbers: every configuration kind must
// forward, every metric must be measured, and the page must hold them.
func TestSmallRun(t *testing.T) {
	lab.RequirePrivileges(t)
	if testing.Short() {
		t.Skip("builds namespaces and sends a few million packets")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	report, err := Run(ctx, Options{
		RuleCounts: []int{10}, Reps: 1, Duration: 200 * time.Millisecond, ConnDuration: 300 * time.Millisecond,
		Configs: []string{"B1", "B3", "B6", "B7", "O1", "O3"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"B1": 2, "B3": 4, "B6": 4, "B7": 4, "O1": 4, "O3": 4} // results per configuration
	for _, f := range report.Forwarding {
		want[f.Config]--
		if f.Mpps.Median <= 0 {
			t.Errorf("%s %s %s: nothing reached the sink", f.Config, f.Traffic, f.Case)
		}
		natwallEstablished := strings.HasPrefix(f.Config, "O") && f.Traffic == "established"
		if natwallEstablished != (f.NsPerPacket != nil) || natwallEstablished != (f.ProgRunNs != nil) {
			t.Errorf("%s %s %s: XDP ns/packet measured in place: %v, with BPF_PROG_RUN: %v, want %v",
				f.Config, f.Traffic, f.Case, f.NsPerPacket != nil, f.ProgRunNs != nil, natwallEstablished)
		}
	}
	for _, sk := range report.Skipped {
		if sk.ID != "B6" || sk.Reason == "" {
			t.Errorf("only B6 may be skipped, for a kernel without flowtables, and with a reason: %+v", sk)
		}
		delete(want, sk.ID)
	}
	for cfg, missing := range want {
		if missing != 0 {
			t.Errorf("%s: %d results missing", cfg, missing)
		}
	}
	if len(report.ConnRate) != 4 {
		t.Errorf("connection rates of B3 and O3 with 1 and 2 clients, got %+v", report.ConnRate)
	}
	for _, c := range report.ConnRate {
		if c.PerSecond.Median <= 0 {
			t.Errorf("%s: no connections completed", c.Config)
		}
	}
	if len(report.RuleLoad) != 5-len(report.Skipped) {
		t.Errorf("rule load times of B3, B6, B7, O1 and O3 (less those skipped), got %+v", report.RuleLoad)
	}
	// Flows are trickled in below both devices' rates, so most become
	// state; a machine busy with other tests loses some, and the per-flow
	// figures divide by what was kept.
	if s := report.State; s == nil || s.Natwall.Flows < stateFlows/2 || s.LinuxConntrackObjects < stateFlows/2 {
		t.Errorf("state measurement incomplete: %+v", s)
	}
	if len(report.Goals) < 4 {
		t.Errorf("goals evaluated: %+v", report.Goals)
	}
	if _, err := json.Marshal(report); err != nil {
		t.Fatal(err)
	}
	var page strings.Builder
	if err := report.WriteMarkdown(&page, "test"); err != nil {
		t.Fatal(err)
	}
	for _, section := range []string{"## Goals", "## Forwarding, established flows", "## Forwarding, new flows", "## New TCP connections per second", "## Rule load time", "## State per flow"} {
		if !strings.Contains(page.String(), section) {
			t.Errorf("the page lacks %q", section)
		}
	}
}
