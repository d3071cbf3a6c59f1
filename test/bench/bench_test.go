package bench

import (
	"context"
	"encoding/json"
	"slices"
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
		EstablishedFlows: 1000, StateFlows: 20_000,
		Configs:  []string{"B1", "B3", "B6", "B7", "O1", "O3", "O3X"},
		Progress: testLog{t},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"B1": 2, "B3": 4, "B6": 4, "B7": 4, "O1": 4, "O3": 4, "O3X": 1} // results per configuration
	for _, f := range report.Forwarding {
		want[f.Config]--
		exhaustion := f.Case == "exhausted"
		if f.Mpps.Median <= 0 && !exhaustion {
			t.Errorf("%s %s %s: nothing reached the sink", f.Config, f.Traffic, f.Case)
		}
		natwall := strings.HasPrefix(f.Config, "O")
		natwallEstablished := natwall && f.Traffic == "established"
		if natwall != (f.NsPerPacket != nil) || natwallEstablished != (f.ProgRunNs != nil) {
			t.Errorf("%s %s %s: XDP ns/packet measured in place: %v, with BPF_PROG_RUN: %v, want %v and %v",
				f.Config, f.Traffic, f.Case, f.NsPerPacket != nil, f.ProgRunNs != nil, natwall, natwallEstablished)
		}
		// Every natwall configuration is the daemon: its metrics counted
		// the trial's packets, and its CPU time was read.
		if natwall != (f.VerdictMpps != nil && f.VerdictMpps.Median > 0) || natwall != (f.DaemonCPUSeconds != nil) {
			t.Errorf("%s %s %s: natwall run's verdict rate %+v and CPU time %+v, want them for natwall only",
				f.Config, f.Traffic, f.Case, f.VerdictMpps, f.DaemonCPUSeconds)
		}
		if f.DaemonCPUSeconds != nil && f.DaemonCPUSeconds.Median < 0 {
			t.Errorf("%s %s %s: negative daemon CPU time %+v", f.Config, f.Traffic, f.Case, f.DaemonCPUSeconds)
		}
		// Past its first few flows, the exhaustion case is the path with
		// no port left, counted as such.
		if exhaustion != (f.ExhaustedShare != nil && f.ExhaustedShare.Median > 0.5) {
			t.Errorf("%s %s %s: share of drop_snat_exhausted %+v, want most of the packets in the exhaustion case and none elsewhere",
				f.Config, f.Traffic, f.Case, f.ExhaustedShare)
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
	if len(report.RuleLoad) != 6-len(report.Skipped) {
		t.Errorf("rule load times of B3, B6, B7, O1, O3 and O3X (less those skipped), got %+v", report.RuleLoad)
	}
	// Flows are trickled in below both devices' rates, so most become
	// state; a machine busy with other tests loses some, and the per-flow
	// figures divide by what was kept.
	if s := report.State; s == nil || s.Natwall.Flows < 10_000 || s.LinuxConntrackObjects < 10_000 {
		t.Errorf("state measurement incomplete: %+v", s)
	}
	if len(report.Goals) < 5 {
		t.Errorf("goals evaluated: %+v", report.Goals)
	}
	if !slices.ContainsFunc(report.Goals, func(g Goal) bool { return strings.Contains(g.Goal, "no port left") }) {
		t.Errorf("no goal for the cost at SNAT port exhaustion: %+v", report.Goals)
	}
	if _, err := json.Marshal(report); err != nil {
		t.Fatal(err)
	}
	var page strings.Builder
	if err := report.WriteMarkdown(&page, "test"); err != nil {
		t.Fatal(err)
	}
	for _, section := range []string{"daemon CPU s", "O3X", "## Goals", "## Forwarding, established flows", "## Forwarding, new flows", "## New TCP connections per second", "## Rule load time", "## State per flow"} {
		if !strings.Contains(page.String(), section) {
			t.Errorf("the page lacks %q", section)
		}
	}
}

// testLog hands the run's progress lines to the test's log, which says
// where the time went when the run is too slow.
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
