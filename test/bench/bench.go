// Package bench measures natwall against the Linux alternatives its users
// would otherwise run (forwarding, iptables, nftables), side by side in one
// run on one machine, following ../shared/research/performance.md §4. It
// backs `make bench`; cmd/natwall-bench is its command line.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Options select what a run measures.
type Options struct {
	RuleCounts []int
	// Reps is how many times every trial runs; configurations interleave
	// within each repetition.
	Reps int
	// Duration is one forwarding trial's measuring time.
	Duration time.Duration
	// ConnDuration is one connection-rate trial's time.
	ConnDuration time.Duration
	// EstablishedFlows is how many flows the established cases warm up
	// and cycle through (or N, if larger); establishedFlows if 0. The
	// suite's miniature run takes fewer, to warm up in seconds.
	EstablishedFlows uint32
	// StateFlows is how many flows the state measurement opens;
	// stateFlows if 0.
	StateFlows int
	// Configs restricts the run to these configuration IDs; all if empty.
	Configs []string
	// Progress receives a line per trial.
	Progress io.Writer
}

// QuickOptions finish in a few minutes, for development.
func QuickOptions() Options {
	return Options{RuleCounts: []int{10, 1000}, Reps: 1, Duration: 500 * time.Millisecond, ConnDuration: time.Second}
}

// FullOptions are `make bench`'s.
func FullOptions() Options {
	return Options{RuleCounts: []int{10, 100, 1000, 10000}, Reps: 3, Duration: time.Second, ConnDuration: 2 * time.Second}
}

// A case is how traffic meets the rules.
type trafficCase struct {
	Name string // first, spread, default
	// NewFlows makes every packet a new flow; otherwise a fixed set of
	// flows is pre-warmed in both directions.
	NewFlows bool
	// OneDestination sends every packet to the same address and port.
	OneDestination bool
}

var (
	caseFirst   = trafficCase{Name: "first"}
	caseSpread  = trafficCase{Name: "spread"}
	caseDefault = trafficCase{Name: "default"}
	caseNew     = trafficCase{Name: "spread", NewFlows: true}
	// caseExhausted sends every new flow to one destination and port, so
	// that the translator cannot share a port in use with it (a new
	// destination would let it overload one): once the few ports are
	// taken, every packet meets an address with no port left.
	caseExhausted = trafficCase{Name: "exhausted", NewFlows: true, OneDestination: true}
	// Configurations without rules see one established and one new-flow
	// case.
	ruleFreeCases = []trafficCase{caseFirst, {Name: "first", NewFlows: true}}
	ruleCases     = []trafficCase{caseFirst, caseSpread, caseDefault, caseNew}
)

// rotateEstablished starts each repetition's established cases at a
// different one, so that no case always runs first after a setup; new-flow
// cases, which fill the tables, stay last.
func rotateEstablished(cases []trafficCase, rep int) []trafficCase {
	var established, fresh []trafficCase
	for _, c := range cases {
		if c.NewFlows {
			fresh = append(fresh, c)
		} else {
			established = append(established, c)
		}
	}
	k := rep % max(len(established), 1)
	return append(append(established[k:], established[:k]...), fresh...)
}

func (c trafficCase) traffic(rules int, flows uint32) traffic {
	tr := traffic{flows: flows, dportBase: ruleBasePort, dportCount: 1, dsts: 1}
	switch c.Name {
	case "spread":
		tr.dportCount = uint16(max(rules, 1))
		tr.flows = uint32(max(rules, int(flows)))
	case "default":
		tr.dportBase = unmatchedPort
	}
	if c.NewFlows {
		tr.flows, tr.dsts = 0, newFlowDsts
	}
	if c.OneDestination {
		tr.dsts, tr.dportBase, tr.dportCount = 1, ruleBasePort, 1
	}
	return tr
}

func (c trafficCase) trafficName() string {
	if c.NewFlows {
		return "new"
	}
	return "established"
}

const (
	// natwallFlowTable and the Linux conntrack limit hold every flow a
	// new-flow trial opens: a full table measures the full-table path.
	natwallFlowTable  = 1 << 21
	linuxConntrackMax = 1 << 21
	newFlowLimit      = 1_500_000
)

// bench is one run's state.
type bench struct {
	ctx     context.Context
	opts    Options
	started time.Time
	topo    *topology
	sink    *counterProgram
	scratch string
	pinDir  string
	// What the current configuration attached, for teardown.
	ceiling   *counterProgram
	replyPath *counterProgram
	daemon    *daemon
	ipset     bool
	// natwallBin is `natwall run`'s binary, built once per run.
	natwallBin string
}

// sample is one trial's measurement.
type sample struct {
	Mpps, SentMpps float64
	// NsPerPacket is natwall's in-place kernel run time per packet.
	NsPerPacket float64
	// ProgRunNs is natwall's time for one established packet of the case
	// under BPF_PROG_RUN, without the veth around it.
	ProgRunNs float64
	// What natwall run reports over the measured window: the packets its
	// program took a verdict on per second (natwall_packets_total), the
	// share of them dropped for want of a SNAT port, and the daemon's own
	// CPU time (user + system, all threads).
	VerdictMpps, ExhaustedShare float64
	DaemonCPUSeconds            float64
}

// Run builds the topology, runs every trial and returns the report. It
// leaves nothing behind: namespaces, pins and sysctls are restored.
func Run(ctx context.Context, opts Options) (_ *Report, err error) {
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	if opts.StateFlows == 0 {
		opts.StateFlows = stateFlows
	}
	if opts.EstablishedFlows == 0 {
		opts.EstablishedFlows = establishedFlows
	}
	b := &bench{ctx: ctx, opts: opts, started: time.Now(), pinDir: fmt.Sprintf("/sys/fs/bpf/natwall-bench-%d", os.Getpid())}
	if b.scratch, err = os.MkdirTemp("", "natwall-bench-"); err != nil {
		return nil, err
	}
	defer os.RemoveAll(b.scratch)
	restoreSysctls, err := raiseConntrackLimits()
	if err != nil {
		return nil, err
	}
	defer restoreSysctls()
	if b.topo, err = newTopology(ctx); err != nil {
		return nil, err
	}
	defer b.topo.Close()
	if b.sink, err = attachCounter(b.topo.sink, sinkIf, "nwb_sink", nil, 0); err != nil {
		return nil, err
	}
	defer b.sink.Close()
	defer b.teardown()

	if slices.ContainsFunc(b.selected(), func(c config) bool { return c.Natwall }) {
		fmt.Fprintln(opts.Progress, "building natwall")
		if b.natwallBin, err = buildNatwall(ctx, b.scratch); err != nil {
			return nil, err
		}
	}

	report := newReport(opts, b.topo.pinned)
	var runnable []config
	for _, cfg := range b.selected() {
		if cfg.unsupported != nil {
			if err := cfg.unsupported(b); err != nil {
				report.Skipped = append(report.Skipped, SkippedConfig{ID: cfg.ID, Name: cfg.Name, Reason: firstLine(err.Error())})
				fmt.Fprintf(opts.Progress, "%s skipped: this machine cannot run it: %v\n", cfg.ID, err)
				continue
			}
		}
		runnable = append(runnable, cfg)
	}
	for rep := range opts.Reps {
		for _, cfg := range runnable {
			counts, cases := []int{0}, ruleFreeCases
			switch {
			case cfg.Cases != nil:
				counts, cases = opts.RuleCounts[:1], cfg.Cases
			case cfg.PerRuleCount:
				counts, cases = opts.RuleCounts, ruleCases
			}
			for _, n := range counts {
				if err := b.configuration(report, rep, cfg, n, cases); err != nil {
					return nil, fmt.Errorf("%s with %d rules: %w", cfg.ID, n, err)
				}
			}
		}
		if err := b.connectionRates(report, rep); err != nil {
			return nil, err
		}
		fmt.Fprintf(opts.Progress, "%5.0fs rep %d connection rates measured\n", time.Since(b.started).Seconds(), rep+1)
	}
	if sel := b.selected(); containsID(sel, "O3") && containsID(sel, "B3") {
		if err := b.statePerFlow(report); err != nil {
			return nil, err
		}
		fmt.Fprintf(opts.Progress, "%5.0fs state per flow measured\n", time.Since(b.started).Seconds())
	}
	report.finish()
	return report, ctx.Err()
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func (b *bench) selected() []config {
	if len(b.opts.Configs) == 0 {
		return configs
	}
	var out []config
	for _, c := range configs {
		if slices.Contains(b.opts.Configs, c.ID) {
			out = append(out, c)
		}
	}
	return out
}

func configByID(id string) config {
	for _, c := range configs {
		if c.ID == id {
			return c
		}
	}
	panic("no configuration " + id)
}

// configuration sets cfg up for n rules, runs its cases and tears it down.
func (b *bench) configuration(report *Report, rep int, cfg config, n int, cases []trafficCase) error {
	if err := b.ctx.Err(); err != nil {
		return err
	}
	setupStart := time.Now()
	load, err := cfg.setup(b, n)
	fmt.Fprintf(b.opts.Progress, "%5.0fs %s N=%d set up in %.1fs\n", time.Since(b.started).Seconds(), cfg.ID, n, time.Since(setupStart).Seconds())
	if err == nil && !cfg.Natwall {
		b.replyPath, err = attachCounter(b.topo.dut, dutOutIf, "nwb_pass", nil, 0)
	}
	if err == nil {
		err = b.topo.pinNAPI()
	}
	if err != nil {
		return errors.Join(err, b.teardown())
	}
	if load > 0 {
		report.addLoad(cfg, n, load)
	}
	for _, c := range rotateEstablished(cases, rep) {
		s, err := b.trial(cfg, n, c)
		if err != nil {
			return errors.Join(fmt.Errorf("%s traffic, %s: %w", c.trafficName(), c.Name, err), b.teardown())
		}
		report.addSample(cfg, n, c, s)
		fmt.Fprintf(b.opts.Progress, "%5.0fs rep %d  %-3s N=%-6d %-11s %-9s %7.3f Mpps (generator %.3f)%s\n",
			time.Since(b.started).Seconds(), rep+1, cfg.ID, n, c.trafficName(), c.Name, s.Mpps, s.SentMpps, nsNote(s))
	}
	return b.teardown()
}

func nsNote(s sample) string {
	if s.VerdictMpps == 0 {
		return ""
	}
	note := fmt.Sprintf(", natwall %.3f M verdicts/s, %.0f ns/packet in XDP, daemon %.2f CPU s", s.VerdictMpps, s.NsPerPacket, s.DaemonCPUSeconds)
	if s.ExhaustedShare > 0 {
		note += fmt.Sprintf(", %.0f %% drop_snat_exhausted", 100*s.ExhaustedShare)
	}
	return note
}

// trial sends one case's traffic through the configured DUT and measures
// what reaches the far side.
func (b *bench) trial(cfg config, n int, c trafficCase) (sample, error) {
	tr := c.traffic(n, b.opts.EstablishedFlows)
	gen, err := newGenerator(b.topo, tr)
	if err != nil {
		return sample{}, err
	}
	defer gen.Close()
	if !c.NewFlows && cfg.ID != "B0" {
		if err := b.warm(gen, tr); err != nil {
			return sample{}, err
		}
	}
	counter := b.sink
	if cfg.ID == "B0" {
		counter = b.ceiling
	}
	limit := uint64(0)
	if c.NewFlows {
		limit = newFlowLimit
	}
	// The daemon is scraped outside the window its CPU time is taken
	// over, so that the scrapes are not counted as its work.
	var verdicts0 map[string]float64
	var cpu0 time.Duration
	if cfg.Natwall {
		if verdicts0, err = b.daemon.packets(b.ctx); err != nil {
			return sample{}, err
		}
		if cpu0, err = b.daemon.cpu(); err != nil {
			return sample{}, err
		}
	}
	before, err := counter.count()
	if err != nil {
		return sample{}, err
	}
	sent, elapsed, err := gen.send(b.opts.Duration, limit)
	if err != nil {
		return sample{}, err
	}
	// Frames still queued on the veths arrive within microseconds.
	time.Sleep(20 * time.Millisecond)
	after, err := counter.count()
	if err != nil {
		return sample{}, err
	}
	s := sample{Mpps: float64(after-before) / elapsed.Seconds() / 1e6, SentMpps: float64(sent) / elapsed.Seconds() / 1e6}
	if !cfg.Natwall {
		return s, nil
	}
	cpu1, err := b.daemon.cpu()
	if err != nil {
		return sample{}, err
	}
	verdicts1, err := b.daemon.packets(b.ctx)
	if err != nil {
		return sample{}, err
	}
	s.DaemonCPUSeconds = (cpu1 - cpu0).Seconds()
	var total float64
	for reason, n := range verdicts1 {
		total += n - verdicts0[reason]
	}
	s.VerdictMpps = total / elapsed.Seconds() / 1e6
	if c.OneDestination && total > 0 {
		s.ExhaustedShare = (verdicts1["drop_snat_exhausted"] - verdicts0["drop_snat_exhausted"]) / total
	}
	// A new-flow pass after the trial goes on opening flows, within the
	// room the flow table has left.
	if s.NsPerPacket, err = b.natwallNsPerPacket(gen, limit/4); err != nil {
		return sample{}, err
	}
	if !c.NewFlows {
		if s.ProgRunNs, err = b.natwallProgRun(tr); err != nil {
			return sample{}, err
		}
	}
	return s, nil
}

// warm runs every flow of tr through the DUT in both directions: the sink
// answers while warming, so that stateful firewalls consider the flows
// established, as they would be in a real exchange. A DUT that opens flows
// slowly loses warm-up packets to full veth rings, so passes over all the
// flows repeat, trickled, until one arrives whole.
func (b *bench) warm(gen *generator, tr traffic) error {
	if err := b.sink.setEcho(true); err != nil {
		return err
	}
	defer b.sink.setEcho(false)
	const maxPasses = 40
	for range maxPasses {
		before, err := b.sink.count()
		if err != nil {
			return err
		}
		if err := gen.trickle(uint64(tr.flows)); err != nil {
			return err
		}
		time.Sleep(20 * time.Millisecond)
		after, err := b.sink.count()
		if err != nil {
			return err
		}
		if after-before >= uint64(tr.flows) {
			return nil
		}
	}
	return fmt.Errorf("%d flows still not established after %d warm-up passes", tr.flows, maxPasses)
}

// natwallNsPerPacket measures the program's own run time per packet in a
// separate pass: BPF statistics cost time of their own, so they stay off
// while the rate is measured (§4.3.2b).
func (b *bench) natwallNsPerPacket(gen *generator, limit uint64) (float64, error) {
	prog, err := b.natwallProgram()
	if err != nil {
		return 0, err
	}
	defer prog.Close()
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return 0, fmt.Errorf("enable BPF statistics: %w", err)
	}
	defer stats.Close()
	runStats := func() (time.Duration, uint64, error) {
		st, err := prog.Stats()
		if err != nil {
			return 0, 0, err
		}
		return st.Runtime, st.RunCount, nil
	}
	rt0, n0, err := runStats()
	if err != nil {
		return 0, err
	}
	if _, _, err := gen.send(b.opts.Duration/4, limit); err != nil {
		return 0, err
	}
	// The DUT's NAPI thread drains the veth ring after the generator
	// returns, later still on a busy machine.
	var rt1 time.Duration
	var n1 uint64
	for deadline := time.Now().Add(2 * time.Second); ; {
		time.Sleep(20 * time.Millisecond)
		if rt1, n1, err = runStats(); err != nil {
			return 0, err
		}
		if n1 > n0 {
			break
		}
		if time.Now().After(deadline) {
			return 0, errors.New("natwall's program did not run")
		}
	}
	return float64((rt1 - rt0).Nanoseconds()) / float64(n1-n0), nil
}

// natwallProgRun times natwall's program with BPF_PROG_RUN on one packet
// of the case, a flow the warm-up established (§4.3.2a). The middle flow
// stands for the case: with traffic spread over the rules it hits the
// middle rule's port. BPF_PROG_RUN's repeat mode would replay the packet
// natwall rewrote (TTL, source translation), so every call runs the
// original once; the result is the median of the kernel's timings.
func (b *bench) natwallProgRun(tr traffic) (float64, error) {
	const calls, repeat = 20_000, 1
	frame, err := frameOf(b.topo, tr, tr.flows/2)
	if err != nil {
		return 0, err
	}
	prog, err := b.natwallProgram()
	if err != nil {
		return 0, err
	}
	defer prog.Close()
	var timings []float64
	err = b.topo.dut.Do(func() error {
		restore, err := pinThread(dutCPU, b.topo.pinned)
		if err != nil {
			return err
		}
		defer restore()
		for range calls {
			ret, per, err := prog.Benchmark(frame, repeat, nil)
			if err != nil {
				return err
			}
			if ret != xdpRedirect {
				return fmt.Errorf("natwall's verdict on an established flow's packet is XDP action %d, not a redirect", ret)
			}
			timings = append(timings, float64(per.Nanoseconds()))
		}
		return nil
	})
	return summarise(timings).Median, err
}

const xdpRedirect = 4

// natwallProgram is the XDP program natwall run attached to the DUT's
// inside NIC.
func (b *bench) natwallProgram() (*ebpf.Program, error) {
	var prog *ebpf.Program
	err := b.topo.dut.Do(func() error {
		link, err := netlink.LinkByName(dutInIf)
		if err != nil {
			return err
		}
		xdp := link.Attrs().Xdp
		if xdp == nil || !xdp.Attached {
			return errors.New("no XDP program on " + dutInIf)
		}
		prog, err = ebpf.NewProgramFromID(ebpf.ProgramID(xdp.ProgId))
		return err
	})
	return prog, err
}

// raiseConntrackLimits sizes Linux's connection table like natwall's for
// the new-flow trials, and returns how to put the old values back.
func raiseConntrackLimits() (restore func(), err error) {
	if _, err := os.Stat("/proc/sys/net/netfilter/nf_conntrack_max"); err != nil {
		// Loading the module is the one thing left to do by hand.
		if out, err := runHost("modprobe", "nf_conntrack"); err != nil {
			return nil, fmt.Errorf("no connection tracking in this kernel (modprobe nf_conntrack: %w: %s)", err, out)
		}
	}
	files := map[string]string{
		"/proc/sys/net/netfilter/nf_conntrack_max":     fmt.Sprint(linuxConntrackMax),
		"/sys/module/nf_conntrack/parameters/hashsize": fmt.Sprint(linuxConntrackMax / 2),
	}
	old := map[string][]byte{}
	restore = func() {
		for f, v := range old {
			_ = os.WriteFile(f, v, 0o644)
		}
	}
	for f, v := range files {
		prev, err := os.ReadFile(f)
		if err != nil {
			restore()
			return nil, err
		}
		old[f] = prev
		if err := os.WriteFile(f, []byte(v), 0o644); err != nil {
			restore()
			return nil, fmt.Errorf("write %s: %w", filepath.Base(f), err)
		}
	}
	return restore, nil
}
