package bench

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"
)

// Report is a run's results, as JSON and as docs/benchmarks.md.
type Report struct {
	Machine   Machine
	Started   time.Time
	Reps      int
	TrialSecs float64
	// EstablishedFlows is the established cases' flow count (or N).
	EstablishedFlows uint32
	PinnedCPUs       bool
	Forwarding       []ForwardingResult
	ConnRate         []ConnRateResult
	RuleLoad         []LoadResult
	State            *StateResult `json:",omitempty"`
	Goals            []Goal
	// Skipped are the configurations this machine cannot run.
	Skipped []SkippedConfig `json:",omitempty"`

	samples map[resultKey][]sample
	conns   map[resultKey][]float64
	loads   map[resultKey][]float64
	names   map[string]string
}

type resultKey struct {
	Config        string
	Rules         int
	Traffic, Case string
	Clients       int
}

type SkippedConfig struct {
	ID, Name, Reason string
}

// Stat summarises the repetitions of one measurement.
type Stat struct {
	Median, Min, Max float64
	Reps             int
}

func summarise(xs []float64) Stat {
	if len(xs) == 0 {
		return Stat{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Stat{Median: m, Min: s[0], Max: s[len(s)-1], Reps: len(s)}
}

type ForwardingResult struct {
	Config, Name  string
	Rules         int
	Traffic, Case string
	Mpps          Stat
	// DeltaNs is the median's time per packet over the no-op XDP
	// forwarder's (B1) with the same kind of traffic.
	DeltaNs float64
	// NsPerPacket is natwall's XDP program's own run time per packet,
	// in place; ProgRunNs the same under BPF_PROG_RUN for one packet.
	NsPerPacket *Stat `json:",omitempty"`
	ProgRunNs   *Stat `json:",omitempty"`
	// natwall run's view of the measured window: the packets its program
	// took a verdict on per second (natwall_packets_total, so it counts
	// the drops the sink never sees), the daemon's CPU seconds
	// (/proc/<pid>/stat utime + stime) and, for the exhaustion case, the
	// share of the verdicts that were drop_snat_exhausted.
	VerdictMpps      *Stat `json:",omitempty"`
	DaemonCPUSeconds *Stat `json:",omitempty"`
	ExhaustedShare   *Stat `json:",omitempty"`
}

type ConnRateResult struct {
	Config    string
	Rules     int
	Clients   int
	PerSecond Stat
}

type LoadResult struct {
	Config  string
	Rules   int
	Seconds Stat
}

type StateResult struct {
	// Flows is how many flows the generator opened in each.
	Flows   int
	Natwall MapState
	// nf_conntrack objects the flows added, their slab object size, and
	// how much the kernel's slab memory grew in all (NAT and other
	// extensions live in kmalloc caches).
	LinuxConntrackObjects int64
	LinuxConntrackObjSize int64
	LinuxSlabBytes        int64
}

type MapState struct {
	// Flows is how many flows natwall holds; Bytes what they occupy.
	Flows  int
	Bytes  float64
	PerMap map[string]MapUse
}

type MapUse struct {
	Entries       int
	BytesPerEntry float64
}

// NatwallBytesPerFlow and LinuxBytesPerFlow are the state one flow costs.
func (s *StateResult) NatwallBytesPerFlow() float64 {
	return s.Natwall.Bytes / float64(max(s.Natwall.Flows, 1))
}

// LinuxBytesPerFlow counts whichever is larger: the conntrack object
// alone, or all the slab memory the flows took (extensions such as NAT's
// live in kmalloc caches).
func (s *StateResult) LinuxBytesPerFlow() float64 {
	return max(float64(s.LinuxConntrackObjSize), float64(s.LinuxSlabBytes)/float64(max(s.LinuxConntrackObjects, 1)))
}

// Goal is a target from issue 8 and where the run stands against it.
type Goal struct {
	Goal, Target, Measured string
	Met                    bool
}

type Machine struct {
	CPU, Kernel, GoVersion, Natwall string
	CPUs                            int
	MemoryGiB                       float64
}

func newReport(opts Options, pinned bool) *Report {
	r := &Report{
		Machine: describeMachine(), Started: time.Now().UTC(), Reps: opts.Reps, TrialSecs: opts.Duration.Seconds(), EstablishedFlows: opts.EstablishedFlows, PinnedCPUs: pinned,
		samples: map[resultKey][]sample{}, conns: map[resultKey][]float64{}, loads: map[resultKey][]float64{}, names: map[string]string{},
	}
	for _, c := range configs {
		r.names[c.ID] = c.Name
	}
	return r
}

func describeMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), Natwall: "unknown"}
	if cpuinfo, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(cpuinfo), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		m.MemoryGiB = float64(si.Totalram) * float64(si.Unit) / (1 << 30)
	}
	if out, err := exec.Command("git", "describe", "--always", "--dirty").Output(); err == nil {
		m.Natwall = strings.TrimSpace(string(out))
	}
	return m
}

func (r *Report) addSample(cfg config, n int, c trafficCase, s sample) {
	k := resultKey{Config: cfg.ID, Rules: n, Traffic: c.trafficName(), Case: c.Name}
	r.samples[k] = append(r.samples[k], s)
}

func (r *Report) addConnRate(cfg config, n, clients int, rate float64) {
	k := resultKey{Config: cfg.ID, Rules: n, Clients: clients}
	r.conns[k] = append(r.conns[k], rate)
}

func (r *Report) addLoad(cfg config, n int, d time.Duration) {
	k := resultKey{Config: cfg.ID, Rules: n}
	r.loads[k] = append(r.loads[k], d.Seconds())
}

// finish turns the samples into results, in configuration order, and
// evaluates the goals.
func (r *Report) finish() {
	order := map[string]int{}
	for i, c := range configs {
		order[c.ID] = i
	}
	keys := make([]resultKey, 0, len(r.samples))
	for k := range r.samples {
		keys = append(keys, k)
	}
	caseOrder := map[string]int{"first": 0, "spread": 1, "default": 2, "exhausted": 3}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.Traffic != b.Traffic {
			return a.Traffic == "established"
		}
		if a.Rules != b.Rules {
			return a.Rules < b.Rules
		}
		if a.Config != b.Config {
			return order[a.Config] < order[b.Config]
		}
		return caseOrder[a.Case] < caseOrder[b.Case]
	})
	for _, k := range keys {
		var mpps, ns, progRun, verdicts, cpu, exhausted []float64
		for _, s := range r.samples[k] {
			mpps = append(mpps, s.Mpps)
			if s.VerdictMpps > 0 {
				verdicts = append(verdicts, s.VerdictMpps)
				cpu = append(cpu, s.DaemonCPUSeconds)
			}
			if s.ExhaustedShare > 0 {
				exhausted = append(exhausted, s.ExhaustedShare)
			}
			if s.NsPerPacket > 0 {
				ns = append(ns, s.NsPerPacket)
			}
			if s.ProgRunNs > 0 {
				progRun = append(progRun, s.ProgRunNs)
			}
		}
		fr := ForwardingResult{Config: k.Config, Name: r.names[k.Config], Rules: k.Rules, Traffic: k.Traffic, Case: k.Case, Mpps: summarise(mpps)}
		if len(ns) > 0 {
			st := summarise(ns)
			fr.NsPerPacket = &st
		}
		if len(progRun) > 0 {
			st := summarise(progRun)
			fr.ProgRunNs = &st
		}
		fr.VerdictMpps, fr.DaemonCPUSeconds, fr.ExhaustedShare = optionalStat(verdicts), optionalStat(cpu), optionalStat(exhausted)
		r.Forwarding = append(r.Forwarding, fr)
	}
	for i := range r.Forwarding {
		f := &r.Forwarding[i]
		// At port exhaustion the sink sees only the first few flows: the
		// case's rate is natwall's verdict rate, not the sink's.
		if f.ExhaustedShare != nil {
			continue
		}
		if b1 := r.mpps("B1", 0, f.Traffic, "first"); b1 > 0 && f.Mpps.Median > 0 {
			f.DeltaNs = 1e3/f.Mpps.Median - 1e3/b1
		}
	}
	for k, xs := range r.conns {
		r.ConnRate = append(r.ConnRate, ConnRateResult{Config: k.Config, Rules: k.Rules, Clients: k.Clients, PerSecond: summarise(xs)})
	}
	sort.Slice(r.ConnRate, func(i, j int) bool {
		a, b := r.ConnRate[i], r.ConnRate[j]
		if a.Clients != b.Clients {
			return a.Clients < b.Clients
		}
		return order[a.Config] < order[b.Config]
	})
	for k, xs := range r.loads {
		r.RuleLoad = append(r.RuleLoad, LoadResult{Config: k.Config, Rules: k.Rules, Seconds: summarise(xs)})
	}
	sort.Slice(r.RuleLoad, func(i, j int) bool {
		a, b := r.RuleLoad[i], r.RuleLoad[j]
		if a.Rules != b.Rules {
			return a.Rules < b.Rules
		}
		return order[a.Config] < order[b.Config]
	})
	r.Goals = r.evaluateGoals()
}

func optionalStat(xs []float64) *Stat {
	if len(xs) == 0 {
		return nil
	}
	st := summarise(xs)
	return &st
}

// result is a measurement's result, or nil if the run did not make it.
func (r *Report) result(config string, rules int, traffic, cas string) *ForwardingResult {
	for i, f := range r.Forwarding {
		if f.Config == config && f.Rules == rules && f.Traffic == traffic && f.Case == cas {
			return &r.Forwarding[i]
		}
	}
	return nil
}

// mpps is a measurement's median rate, or 0.
func (r *Report) mpps(config string, rules int, traffic, cas string) float64 {
	if f := r.result(config, rules, traffic, cas); f != nil {
		return f.Mpps.Median
	}
	return 0
}

// xdpNs is natwall's in-place time per packet for a measurement, or 0.
func (r *Report) xdpNs(config string, rules int, traffic, cas string) float64 {
	if f := r.result(config, rules, traffic, cas); f != nil && f.NsPerPacket != nil {
		return f.NsPerPacket.Median
	}
	return 0
}

// verdictMpps is natwall's median verdict rate for a measurement, or 0.
func (r *Report) verdictMpps(config string, rules int, traffic, cas string) float64 {
	if f := r.result(config, rules, traffic, cas); f != nil && f.VerdictMpps != nil {
		return f.VerdictMpps.Median
	}
	return 0
}

func (r *Report) connRate(config string, clients int) float64 {
	for _, c := range r.ConnRate {
		if c.Config == config && c.Clients == clients {
			return c.PerSecond.Median
		}
	}
	return 0
}

func (r *Report) ruleCounts() []int {
	var ns []int
	for _, f := range r.Forwarding {
		if f.Rules > 0 && !slices.Contains(ns, f.Rules) {
			ns = append(ns, f.Rules)
		}
	}
	slices.Sort(ns)
	return ns
}

func (r *Report) evaluateGoals() []Goal {
	var goals []Goal
	ratioGoal := func(goal, target string, num, den, want float64, what string) {
		if num == 0 || den == 0 {
			return
		}
		ratio := num / den
		goals = append(goals, Goal{Goal: goal, Target: target, Measured: fmt.Sprintf("%.2f× (%s)", ratio, what), Met: ratio >= want})
	}
	ns := r.ruleCounts()
	if len(ns) == 0 {
		return nil
	}
	lo, hi := ns[0], ns[len(ns)-1]
	est := "established"
	for _, n := range slices.Compact([]int{lo, hi}) {
		want := 3.0
		if n >= 10000 {
			want = 20
		}
		ratioGoal(fmt.Sprintf("natwall stateful + SNAT (O3) vs Linux + iptables MASQUERADE (B3), established flows, N = %d", n),
			fmt.Sprintf("≥ %.0f×", want), r.mpps("O3", n, est, "spread"), r.mpps("B3", n, est, "spread"), want,
			fmt.Sprintf("%.3f vs %.3f Mpps", r.mpps("O3", n, est, "spread"), r.mpps("B3", n, est, "spread")))
	}
	// Flatness is judged on natwall's own time per packet (in place),
	// which the veths and the sink around it do not blur.
	for _, cfg := range []string{"O1", "O3"} {
		if lo != hi {
			a, b := r.xdpNs(cfg, lo, est, "spread"), r.xdpNs(cfg, hi, est, "spread")
			if a > 0 && b > 0 {
				goals = append(goals, Goal{Goal: fmt.Sprintf("natwall (%s) per-packet cost in XDP at N = %d over N = %d, traffic spread over the rules", cfg, hi, lo),
					Target: "≤ 1.25×", Measured: fmt.Sprintf("%.2f× (%.0f vs %.0f ns)", b/a, b, a), Met: b/a <= 1.25})
			}
		}
		first, def := r.xdpNs(cfg, hi, est, "first"), r.xdpNs(cfg, hi, est, "default")
		if first > 0 && def > 0 {
			spread := max(first, def) / min(first, def)
			goals = append(goals, Goal{Goal: fmt.Sprintf("natwall (%s) flat between first-rule and default traffic at N = %d, cost in XDP", cfg, hi), Target: "within 10 %",
				Measured: fmt.Sprintf("%.0f vs %.0f ns (%.0f %%)", first, def, (spread-1)*100), Met: spread <= 1.10})
		}
	}
	ratioGoal(fmt.Sprintf("natwall stateless (O1) vs the no-op XDP forwarder (B1), N = %d", lo), "≥ 0.8×",
		r.mpps("O1", lo, est, "spread"), r.mpps("B1", 0, est, "first"), 0.8,
		fmt.Sprintf("%.3f vs %.3f Mpps", r.mpps("O1", lo, est, "spread"), r.mpps("B1", 0, est, "first")))
	ratioGoal(fmt.Sprintf("new flows per second, natwall (O3) vs Linux conntrack + MASQUERADE (B3), N = %d, every packet a new flow", lo), "≥ 2×",
		r.mpps("O3", lo, "new", "spread"), r.mpps("B3", lo, "new", "spread"), 2,
		fmt.Sprintf("%.3f vs %.3f M flows/s", r.mpps("O3", lo, "new", "spread"), r.mpps("B3", lo, "new", "spread")))
	if normal, exhausted := r.xdpNs("O3", lo, "new", "spread"), r.xdpNs("O3X", lo, "new", "exhausted"); normal > 0 && exhausted > 0 {
		goals = append(goals, Goal{Goal: fmt.Sprintf("natwall per-packet cost in XDP when the SNAT address has no port left (O3X) over a normal new flow (O3), N = %d", lo),
			Target: "≤ 2×", Measured: fmt.Sprintf("%.2f× (%.0f vs %.0f ns; %.3f vs %.3f M verdicts/s)", exhausted/normal, exhausted, normal,
				r.verdictMpps("O3X", lo, "new", "exhausted"), r.verdictMpps("O3", lo, "new", "spread")), Met: exhausted/normal <= 2})
	}
	ratioGoal("new TCP connections per second end to end, natwall (O3) vs Linux + iptables MASQUERADE (B3), 2 clients", "≥ 2×",
		r.connRate("O3", 2), r.connRate("B3", 2), 2, fmt.Sprintf("%.0f vs %.0f conn/s", r.connRate("O3", 2), r.connRate("B3", 2)))
	if s := r.State; s != nil && s.Natwall.Flows > 0 && s.LinuxConntrackObjects > 0 {
		ours, linux := s.NatwallBytesPerFlow(), s.LinuxBytesPerFlow()
		goals = append(goals, Goal{Goal: "state per flow, natwall (conntrack + SNAT) vs Linux (nf_conntrack + NAT)", Target: "≤ ½",
			Measured: fmt.Sprintf("%.0f vs %.0f bytes (%.2f×)", ours, linux, ours/linux), Met: ours <= linux/2})
	}
	return goals
}

// WriteTable prints the results for a terminal.
func (r *Report) WriteTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "config\trules\ttraffic\tcase\tMpps median\tmin\tmax\tΔns vs B1\tXDP ns/pkt\tPROG_RUN ns\tverdict Mpps\tdaemon CPU s\t")
	for _, f := range r.Forwarding {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.3f\t%.3f\t%.3f\t%s\t%s\t%s\t%s\t%s\t\n", f.Config, rulesCell(f.Rules), f.Traffic, f.Case,
			f.Mpps.Median, f.Mpps.Min, f.Mpps.Max, deltaCell(f), medianCell(f.NsPerPacket), medianCell(f.ProgRunNs),
			statCell(f.VerdictMpps, "%.3f"), statCell(f.DaemonCPUSeconds, "%.2f"))
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, c := range r.ConnRate {
		fmt.Fprintf(w, "%-3s N=%-5d %d client(s): %8.0f conn/s (min %.0f, max %.0f)\n", c.Config, c.Rules, c.Clients, c.PerSecond.Median, c.PerSecond.Min, c.PerSecond.Max)
	}
	fmt.Fprintln(w)
	for _, g := range r.Goals {
		fmt.Fprintf(w, "%-4s %s: %s (target %s)\n", metWord(g.Met), g.Goal, g.Measured, g.Target)
	}
}

func medianCell(s *Stat) string {
	if s == nil {
		return "–"
	}
	return fmt.Sprintf("%.0f", s.Median)
}

func statCell(s *Stat, format string) string {
	if s == nil {
		return "–"
	}
	return fmt.Sprintf(format, s.Median)
}

func rulesCell(n int) string {
	if n == 0 {
		return "–"
	}
	return fmt.Sprint(n)
}

func deltaCell(f ForwardingResult) string {
	if f.Config == "B1" || f.DeltaNs == 0 {
		return "–"
	}
	return fmt.Sprintf("%+.0f", f.DeltaNs)
}

func metWord(met bool) string {
	if met {
		return "met"
	}
	return "MISS"
}
