package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sys/unix"

	"github.com/natwall/natwall/controlplane/api"
	"github.com/natwall/natwall/controlplane/flows"
	"github.com/natwall/natwall/dataplane"
	"github.com/natwall/natwall/rules"
)

// DataplaneState is what metrics and health read from the dataplane.
type DataplaneState interface {
	Attached() bool
	Attachments() []dataplane.Attachment
	Counters() ([]dataplane.ReasonCount, error)
}

// Dataplane is the part of *dataplane.Dataplane the daemon drives.
type Dataplane interface {
	DataplaneState
	Close() error
	Detach() error
}

var _ Dataplane = (*dataplane.Dataplane)(nil)

// Run is `natwall run`: it sets the kernel's forwarding sysctls, attaches
// the dataplane, serves metrics and health, reloads on SIGHUP and file
// changes, and when ctx is cancelled (SIGTERM, SIGINT) stops serving and
// detaches the dataplane or leaves it attached, as cfg.OnExit says. cfg
// must come from LoadConfig(source); a reload reads source again. It logs
// to stderr as cfg.Log says.
func Run(ctx context.Context, cfg Config, source LoadOptions) error {
	level := new(slog.LevelVar)
	level.Set(cfg.Log.Level)
	d := &daemon{
		cfg:        cfg,
		source:     source,
		level:      level,
		log:        newLogger(cfg.Log.Format, level, os.Stderr),
		sysctlRoot: ProcSys,
		interfaceExists: func(name string) error {
			_, err := net.InterfaceByName(name)
			return err
		},
		pinnedInterfaces: dataplane.PinnedInterfaces,
		openDataplane: func(opts dataplane.Options) (Dataplane, error) {
			dp, err := dataplane.Open(opts)
			if err != nil {
				return nil, err
			}
			return dp, nil
		},
		guardICMP: func(inside []netip.Prefix, log *slog.Logger) (io.Closer, error) {
			return installICMPGuard(inside, log)
		},
	}
	return d.run(ctx)
}

// daemon holds one run's settings and the calls tests replace.
type daemon struct {
	cfg Config
	// source is where cfg was read from, for reloads.
	source        LoadOptions
	level         *slog.LevelVar
	log           *slog.Logger
	sysctlRoot    string
	openDataplane func(dataplane.Options) (Dataplane, error)
	// interfaceExists reports a NIC missing from natwall's network namespace.
	interfaceExists func(name string) error
	// pinnedInterfaces names the NICs a natwall left enforcing under a pin
	// directory; nil means none.
	pinnedInterfaces func(pinDir string) ([]string, error)
	// guardICMP installs the netfilter guard against the host's own ICMP
	// errors quoting inside addresses (icmp_guard.go); nil installs none.
	guardICMP func(inside []netip.Prefix, log *slog.Logger) (io.Closer, error)
	// ready, if set, is called with the bound listeners once serving starts.
	ready func(metrics, health *httpServer)
	// flows is the flow stream, once the dataplane is open: the API's
	// live tail subscribes to it.
	flows *flows.Stream
}

func (d *daemon) run(ctx context.Context) (err error) {
	cfg, log := d.cfg, d.log
	build := ReadBuildInfo()
	log.Info("natwall starting",
		"version", build.Version, "revision", build.Revision, "config", cfg.File,
		"interfaces", cfg.Interfaces, "xdp_mode", cfg.XDPMode.String(),
		"inside_networks", cfg.InsideNetworks, "outside_interfaces", cfg.OutsideInterfaces,
		"reverse_path", cfg.ReversePath.String(), "on_exit", string(cfg.OnExit))

	if cfg.MalformedAction == dataplane.MalformedPass {
		// The kernel validates what it is handed, but it has no policy:
		// with forwarding on it routes such a packet on as it is.
		log.Warn("malformed_action is pass: the kernel forwards the packets natwall could not check, with no policy and no NAT; use drop on an appliance that must enforce")
	}
	if cfg.VLANAction == dataplane.VLANPass {
		log.Warn("vlan_action is pass: frames tagged with a VLAN ID go to the kernel's VLAN devices, which route them with no policy and no NAT")
	}
	if cfg.ReversePath == dataplane.ReversePathOff {
		log.Warn("reverse_path is off: a new flow's source is not checked against the route back to it, so spoofed inside sources can open flows")
	}

	// A missing NIC is named as such before any sysctl under its name is
	// read or anything is bound, pinned or attached.
	for _, name := range cfg.Interfaces {
		if err := d.interfaceExists(name); err != nil {
			return fmt.Errorf("interface %s does not exist in natwall's network namespace: %w", name, err)
		}
	}

	// A configured rule set that does not load stops the start here, before
	// anything is pinned or attached: natwall never runs the built-in
	// policy in its place.
	if err := checkRules(cfg); err != nil {
		return fmt.Errorf("rules: %w", err)
	}

	// Bind first: a taken port must fail before the system is changed.
	metricsSrv, err := listenHTTP(ctx, "metrics", cfg.Metrics.Listen, log)
	if err != nil {
		return err
	}
	var healthSrv *httpServer
	if cfg.Health.Listen != "" {
		if healthSrv, err = listenHTTP(ctx, "health", cfg.Health.Listen, log); err != nil {
			return errors.Join(err, metricsSrv.close())
		}
	}
	// The API socket too: a live daemon on it refuses this start.
	var apiLn net.Listener
	if cfg.API.Socket != "" {
		if apiLn, err = api.Listen(cfg.API.Socket); err != nil {
			err = errors.Join(err, metricsSrv.close())
			if healthSrv != nil {
				err = errors.Join(err, healthSrv.close())
			}
			return err
		}
	}
	closeListeners := func() error {
		err := metricsSrv.close()
		if healthSrv != nil {
			err = errors.Join(err, healthSrv.close())
		}
		if apiLn != nil {
			err = errors.Join(err, apiLn.Close())
		}
		return err
	}

	eve, err := openEVE(cfg.EVE)
	if err != nil {
		return errors.Join(err, closeListeners())
	}
	defer func() { err = errors.Join(err, eve.Close()) }()

	if err := d.sysctls(); err != nil {
		return errors.Join(err, closeListeners())
	}
	// A dataplane an earlier daemon left pinned goes on enforcing its last
	// good rules through the takeover, and through a failed start.
	var pinned []string
	if d.pinnedInterfaces != nil {
		if pinned, err = d.pinnedInterfaces(cfg.PinDir); err != nil {
			return errors.Join(err, closeListeners())
		}
	}
	if err := d.holdForwarding(pinned); err != nil {
		return errors.Join(err, closeListeners())
	}

	// started is set once the dataplane enforces the configured rules; a
	// start that fails before that undoes what it did.
	started := false
	// With SNAT, the host's own ICMP errors about translated packets
	// would carry inside addresses out: guarded before anything forwards.
	// The guard stays with a dataplane left attached, which still
	// translates.
	if cfg.SNAT != nil && d.guardICMP != nil {
		guard, gerr := d.guardICMP(cfg.InsideNetworks, log)
		if gerr != nil {
			return errors.Join(fmt.Errorf("install ICMP guard: %w", gerr), closeListeners())
		}
		defer func() {
			// The guard stays while a dataplane that translates stays:
			// one left attached (on_exit: keep, read from d.cfg as a
			// reload may change it), or a pinned one a failed takeover
			// leaves enforcing.
			stays := started && d.cfg.OnExit == ExitKeep || !started && len(pinned) > 0
			if !stays {
				err = errors.Join(err, guard.Close())
			}
		}()
	}

	settings, err := runtimeSettings(cfg, d.sysctlRoot, log)
	if err != nil {
		return errors.Join(err, closeListeners())
	}
	dp, err := d.openDataplane(dataplane.Options{
		Interfaces:               cfg.Interfaces,
		Mode:                     cfg.XDPMode,
		AllowGenericFallback:     cfg.XDPGenericFallback,
		PinDir:                   cfg.PinDir,
		Settings:                 settings,
		FlowTableSize:            cfg.Conntrack.TableSize,
		ReplaceIncompatibleState: cfg.ReplaceIncompatibleState,
		Logger:                   log,
	})
	if err != nil {
		return errors.Join(fmt.Errorf("open dataplane: %w", err), closeListeners())
	}
	defer func() {
		if !started && len(pinned) == 0 {
			err = errors.Join(err, d.abandonStart(dp))
			return
		}
		err = errors.Join(err, d.stopDataplane(dp))
	}()
	for _, a := range dp.Attachments() {
		if a.FellBack {
			log.Warn("xdp running in generic mode because the driver refused native mode: expect a fraction of native throughput",
				"interface", a.Interface)
		}
	}

	registry := prometheus.NewRegistry()
	collector := NewCollector(dp, log)
	registry.MustRegister(
		collector,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)

	rl, err := d.newReloader(dp, settings)
	if err != nil {
		return errors.Join(err, closeListeners())
	}
	registry.MustRegister(rl.collectors()...)
	if cfg.SNAT != nil && d.guardICMP != nil {
		// The guard names the inside networks, which a reload may change.
		// Installing again replaces its rules in place.
		rl.applied = func(old, next Config) error {
			if slices.Equal(old.InsideNetworks, next.InsideNetworks) {
				return nil
			}
			_, err := d.guardICMP(next.InsideNetworks, log)
			return err
		}
	}
	if fs, ok := dp.(flowSource); ok && rl.loader != nil {
		st := fs.State()
		registry.MustRegister(&ruleMetrics{rules: rl.loader.liveRules, hits: st.RuleHits,
			limit: cfg.Metrics.RuleHitsLimit, log: log, scrapeErrors: collector.scrapeErrors})
	}
	if res := rl.Reload(TriggerStart); !res.OK {
		msg := res.Error
		if len(res.Errors) > 0 {
			msg = strings.Join(res.Errors, "; ")
		}
		return errors.Join(fmt.Errorf("rules: %s", msg), closeListeners())
	}
	// Only now does the dataplane enforce the configured policy.
	if err := d.enableForwarding(); err != nil {
		return errors.Join(err, closeListeners())
	}
	started = true

	serveCtx, stopServing := context.WithCancelCause(ctx)
	defer stopServing(nil)
	var wg sync.WaitGroup
	providers := &apiProviders{config: rl.config, dp: dp, reloader: rl}
	var hub *flowHub
	stopFlows := func() {}
	if fs, ok := dp.(flowSource); ok {
		var coll *flows.Collector
		d.flows, coll, stopFlows = d.startFlows(serveCtx, &wg, fs, registry, eve)
		// Set before anything that triggers a reload is served.
		rl.stream = d.flows
		hub = newFlowHub()
		d.flows.AddSink("api", hub, flows.Filter{}, 0)
		providers.state = fs.State
		providers.usage = func() dataplane.TableUsage {
			res, _, _ := coll.Last()
			return res.Usage
		}
	}
	wg.Go(func() { rl.reloadOnHangup(serveCtx) })
	if d.cfg.Reload.Watch {
		wg.Go(func() {
			if err := rl.watchFiles(serveCtx); err != nil {
				log.Warn("not watching the config and rule files; reload with SIGHUP or natwall reload", "error", err)
			}
		})
	}
	var serveErrs [3]error
	start := func(i int, s *httpServer, h http.Handler) {
		wg.Go(func() {
			if err := s.serve(serveCtx, h); err != nil {
				serveErrs[i] = err
				stopServing(err)
			}
		})
	}
	// Serving starts once the config and rules are in force, so readiness
	// is down to the dataplane staying attached.
	ready := func() error {
		if !dp.Attached() {
			return errors.New("xdp program not attached")
		}
		return nil
	}
	start(0, metricsSrv, MetricsHandler(dp, ready, registry, log))
	if healthSrv != nil {
		start(1, healthSrv, healthOnlyHandler(dp, ready))
	}
	if apiLn != nil {
		wg.Go(func() {
			if err := api.Serve(serveCtx, apiLn, api.NewHandler(providers.providers(hub), log), log); err != nil {
				serveErrs[2] = err
				stopServing(err)
			}
		})
	}

	attrs := []any{"metrics", metricsSrv.Addr().String()}
	if healthSrv != nil {
		attrs = append(attrs, "health", healthSrv.Addr().String())
	}
	if apiLn != nil {
		attrs = append(attrs, "api", cfg.API.Socket)
	}
	log.Info("natwall running", attrs...)
	if d.ready != nil {
		d.ready(metricsSrv, healthSrv)
	}

	<-serveCtx.Done()
	if ctx.Err() != nil {
		log.Info("natwall stopping", "cause", context.Cause(ctx).Error())
	}
	stopServing(nil)
	wg.Wait()
	if d.flows != nil && d.cfg.OnExit == ExitDetach {
		d.endFlowsAtShutdown(providers.state())
	}
	stopFlows()
	return errors.Join(serveErrs[:]...)
}

// endFlowsAtShutdown reports every flow still live as ended, before the
// detach that follows removes them with the dataplane: their flow logs
// would otherwise never be written. With on_exit: keep the flows go on
// under the pinned dataplane, and the next daemon's collector reports
// their ends. A flow that sees packets between this walk and the detach
// is reported with the counts of the walk.
func (d *daemon) endFlowsAtShutdown(st *dataplane.State) {
	now := time.Now()
	var ev dataplane.FlowEvent
	n := 0
	err := st.Flows(func(f dataplane.Flow) bool {
		ev = dataplane.FlowEvent{Type: dataplane.FlowEnded, Time: now, Flow: f, ByGC: true, Shutdown: true}
		d.flows.Publish(&ev)
		n++
		return true
	})
	d.flows.Flush()
	if err != nil {
		d.log.Error("report the flows live at shutdown", "error", err)
	}
	d.log.Info("flows live at shutdown reported as ended", "flows", n)
}

// ruleApplier is the dataplane's rule loading.
type ruleApplier interface {
	LoadRules(stateless, stateful *rules.StageTables) error
}

// settingsApplier is the dataplane's live settings.
type settingsApplier interface {
	Apply(dataplane.Settings) error
}

// newReloader returns the reloader over dp, whose settings are those it
// was opened with. With rule files configured, the dataplane must load
// rules.
func (d *daemon) newReloader(dp Dataplane, settings dataplane.Settings) (*reloader, error) {
	rl := newReloader(&d.cfg, settings)
	rl.source, rl.sysctlRoot, rl.log, rl.level = d.source, d.sysctlRoot, d.log, d.level
	if sa, ok := dp.(settingsApplier); ok {
		rl.applySettings = sa.Apply
	}
	if fs, ok := dp.(flowSource); ok {
		rl.state = fs.State
	}
	if g, ok := dp.(ruleGenerationReader); ok {
		rl.generation = g.RuleGeneration
	}
	if len(d.cfg.RulePaths) > 0 {
		ra, ok := dp.(ruleApplier)
		if !ok {
			return nil, errors.New("this dataplane cannot load rules")
		}
		rl.loader = &ruleLoader{stateDir: d.cfg.StateDir, apply: ra.LoadRules}
		rl.loader.snat = snatAddresses(d.cfg)
		if fa, ok := dp.(forwardApplier); ok {
			rl.loader.setForwards = fa.SetForwards
		}
	}
	return rl, nil
}

// checkRules reads, parses and compiles the configured rule files without
// applying them or numbering their rules in the state directory.
func checkRules(cfg Config) error {
	if len(cfg.RulePaths) == 0 {
		return nil
	}
	srcs, err := rules.ReadSources(cfg.RulePaths)
	if err != nil {
		return err
	}
	rs, err := rules.Parse(srcs, rules.Options{Inside: cfg.InsideNetworks})
	if err != nil {
		return err
	}
	var n uint32
	_, err = rules.Compile(rs, func(string) uint32 { n++; return n })
	return err
}

// sysctls sets the sysctls a forwarding appliance needs but the forwarding
// switches themselves (see holdForwarding and enableForwarding), or with
// sysctl.manage off only warns about those, switches included, that would
// stop natwall from working as intended.
func (d *daemon) sysctls() error {
	settings := ForwardingSysctls(d.cfg.Interfaces)
	if d.cfg.SNAT != nil {
		settings = append(settings, NATSysctls(d.cfg.Interfaces)...)
	}
	if d.cfg.Sysctl.Manage {
		settings = slices.DeleteFunc(settings, isForwardingSwitch)
		if _, err := ApplySysctls(d.sysctlRoot, settings, d.log); err != nil {
			return fmt.Errorf("apply sysctls (set sysctl.manage to false to manage them yourself): %w", err)
		}
		return nil
	}
	changes, err := PlanSysctls(d.sysctlRoot, settings)
	if err != nil {
		d.log.Warn("cannot check sysctls", "error", err)
		return nil
	}
	for _, c := range changes {
		d.log.Warn("sysctl differs from what natwall needs; leaving it because sysctl.manage is false",
			"sysctl", c.Name, "current", c.Old, "needed", c.New)
	}
	return nil
}

// forwardingOn reports whether either forwarding switch is on.
func (d *daemon) forwardingOn() (bool, error) {
	off, err := PlanSysctls(d.sysctlRoot, ForwardingSwitches("0"))
	return len(off) > 0, err
}

// holdForwarding turns the kernel's forwarding off until the dataplane
// enforces: between attaching and loading the rules, and before attaching
// at all, a kernel that forwards does so with no policy and no NAT. A
// dataplane an earlier daemon left enforcing (on_exit: keep) goes on
// forwarding its flows through the takeover, so forwarding stays on then.
func (d *daemon) holdForwarding(pinned []string) error {
	if len(pinned) > 0 {
		d.log.Info("taking over a dataplane that still enforces; forwarding stays on meanwhile", "interfaces", pinned)
		return nil
	}
	if !d.cfg.Sysctl.Manage {
		if on, err := d.forwardingOn(); err == nil && on {
			d.log.Warn("the kernel forwards before natwall attaches, with no policy and no NAT; sysctl.manage is false, so natwall leaves it on")
		}
		return nil
	}
	changes, err := ApplySysctls(d.sysctlRoot, ForwardingSwitches("0"), d.log)
	if err != nil {
		return fmt.Errorf("turn forwarding off until the dataplane enforces: %w", err)
	}
	if len(changes) > 0 {
		d.log.Warn("the kernel was forwarding with no natwall attached; forwarding is off until natwall enforces")
	}
	return nil
}

// enableForwarding turns forwarding on once the dataplane is attached and
// its rules are in force.
func (d *daemon) enableForwarding() error {
	if !d.cfg.Sysctl.Manage {
		return nil
	}
	if _, err := ApplySysctls(d.sysctlRoot, ForwardingSwitches("1"), d.log); err != nil {
		return fmt.Errorf("turn forwarding on: %w", err)
	}
	d.log.Info("forwarding on: the dataplane enforces the rules")
	return nil
}

// disableForwarding turns forwarding off before a detach, so that the
// kernel does not go on routing without the dataplane.
func (d *daemon) disableForwarding() error {
	if !d.cfg.Sysctl.Manage {
		if on, err := d.forwardingOn(); err == nil && on {
			d.log.Warn("forwarding stays on after the detach because sysctl.manage is false: the kernel now forwards with no policy and no NAT")
		}
		return nil
	}
	if _, err := ApplySysctls(d.sysctlRoot, ForwardingSwitches("0"), d.log); err != nil {
		return fmt.Errorf("turn forwarding off before the detach: %w", err)
	}
	d.log.Info("forwarding off: natwall is detaching")
	return nil
}

// abandonStart undoes a start that failed after the dataplane opened,
// whatever on_exit says: keeping a dataplane that never enforced the
// configured rules would leave the built-in policy attached, and its pins
// behind, while systemd restarts natwall in a loop.
func (d *daemon) abandonStart(dp Dataplane) error {
	if err := dp.Detach(); err != nil {
		return fmt.Errorf("detach the dataplane of the failed start: %w", err)
	}
	d.log.Info("start failed: dataplane detached and unpinned", "interfaces", d.cfg.Interfaces)
	return nil
}

// stopDataplane applies on_exit. Keeping is fail-static: the pinned program
// goes on forwarding with the live flows until the next daemon takes over.
// Detaching turns forwarding off first, even if that fails: a detached
// appliance that still forwards would be an open router.
func (d *daemon) stopDataplane(dp Dataplane) error {
	if d.cfg.OnExit == ExitKeep {
		if err := dp.Close(); err != nil {
			return fmt.Errorf("close dataplane: %w", err)
		}
		d.log.Info("dataplane left attached and pinned for the next natwall", "pin_dir", d.cfg.PinDir)
		return nil
	}
	if err := d.disableForwarding(); err != nil {
		return errors.Join(err, dp.Detach())
	}
	if err := dp.Detach(); err != nil {
		return fmt.Errorf("detach dataplane: %w", err)
	}
	d.log.Info("dataplane detached", "interfaces", d.cfg.Interfaces)
	return nil
}

// NewLogger returns the daemon's logger writing to w. LogAuto picks text
// when w is a terminal, for people, and JSON otherwise, for log pipelines.
func NewLogger(cfg LogConfig, w io.Writer) *slog.Logger {
	return newLogger(cfg.Format, cfg.Level, w)
}

// newLogger is NewLogger with a level that may change while it logs.
func newLogger(format LogFormat, level slog.Leveler, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == LogAuto {
		format = LogJSON
		if isTerminal(w) {
			format = LogText
		}
	}
	if format == LogText {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
