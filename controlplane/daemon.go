package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sys/unix"

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
// the dataplane, serves metrics and health, and when ctx is cancelled
// (SIGTERM, SIGINT) stops serving and detaches the dataplane or leaves it
// attached, as cfg.OnExit says. cfg must come from LoadConfig. It logs to
// stderr as cfg.Log says.
func Run(ctx context.Context, cfg Config) error {
	d := &daemon{
		cfg:        cfg,
		log:        NewLogger(cfg.Log, os.Stderr),
		sysctlRoot: ProcSys,
		interfaceExists: func(name string) error {
			_, err := net.InterfaceByName(name)
			return err
		},
		openDataplane: func(opts dataplane.Options) (Dataplane, error) {
			dp, err := dataplane.Open(opts)
			if err != nil {
				return nil, err
			}
			return dp, nil
		},
	}
	return d.run(ctx)
}

// daemon holds one run's settings and the calls tests replace.
type daemon struct {
	cfg           Config
	log           *slog.Logger
	sysctlRoot    string
	openDataplane func(dataplane.Options) (Dataplane, error)
	// interfaceExists reports a NIC missing from natwall's network namespace.
	interfaceExists func(name string) error
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
		"inside_networks", cfg.InsideNetworks, "on_exit", string(cfg.OnExit))

	if cfg.MalformedAction == dataplane.MalformedPass {
		// The kernel validates what it is handed, but it has no policy:
		// with forwarding on it routes such a packet on as it is.
		log.Warn("malformed_action is pass: the kernel forwards the packets natwall could not check, with no policy and no NAT; use drop on an appliance that must enforce")
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
	closeListeners := func() error {
		err := metricsSrv.close()
		if healthSrv != nil {
			err = errors.Join(err, healthSrv.close())
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

	settings := dataplane.DefaultSettings()
	settings.MalformedAction = cfg.MalformedAction
	settings.Inside = cfg.InsideNetworks
	settings.SNAT = cfg.SNAT
	settings.InvalidTCPReset = cfg.Conntrack.InvalidTCPReset
	if cfg.Conntrack.Timeouts != (dataplane.Timeouts{}) {
		settings.Timeouts = cfg.Conntrack.Timeouts
	}
	dp, err := d.openDataplane(dataplane.Options{
		Interfaces:           cfg.Interfaces,
		Mode:                 cfg.XDPMode,
		AllowGenericFallback: cfg.XDPGenericFallback,
		PinDir:               cfg.PinDir,
		Settings:             settings,
		FlowTableSize:        cfg.Conntrack.TableSize,
		Logger:               log,
	})
	if err != nil {
		return errors.Join(fmt.Errorf("open dataplane: %w", err), closeListeners())
	}
	defer func() { err = errors.Join(err, d.stopDataplane(dp)) }()
	for _, a := range dp.Attachments() {
		if a.FellBack {
			log.Warn("xdp running in generic mode because the driver refused native mode: expect a fraction of native throughput",
				"interface", a.Interface)
		}
	}

	registry := prometheus.NewRegistry()
	registry.MustRegister(
		NewCollector(dp, log),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)

	rl, err := d.loadRules(dp, registry)
	if err != nil {
		return err
	}

	serveCtx, stopServing := context.WithCancelCause(ctx)
	defer stopServing(nil)
	var wg sync.WaitGroup
	stopFlows := func() {}
	if fs, ok := dp.(flowSource); ok {
		d.flows, stopFlows = d.startFlows(serveCtx, &wg, fs, registry, eve)
	}
	if rl != nil {
		wg.Go(func() { rl.reloadOnHangup(serveCtx) })
	}
	var serveErrs [2]error
	start := func(i int, s *httpServer, h http.Handler) {
		wg.Go(func() {
			if err := s.serve(serveCtx, h); err != nil {
				serveErrs[i] = err
				stopServing(err)
			}
		})
	}
	start(0, metricsSrv, MetricsHandler(dp, registry, log))
	if healthSrv != nil {
		start(1, healthSrv, healthOnlyHandler(dp))
	}

	attrs := []any{"metrics", metricsSrv.Addr().String()}
	if healthSrv != nil {
		attrs = append(attrs, "health", healthSrv.Addr().String())
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
	stopFlows()
	return errors.Join(serveErrs[:]...)
}

// ruleApplier is the dataplane's rule loading.
type ruleApplier interface {
	LoadRules(stateless, stateful *rules.StageTables) error
}

// loadRules applies the configured rule files, if any. At start a rule set
// that does not load stops the daemon (a pinned dataplane left by an
// earlier daemon keeps enforcing its last good set meanwhile).
func (d *daemon) loadRules(dp Dataplane, reg *prometheus.Registry) (*hangupReloader, error) {
	if len(d.cfg.RulePaths) == 0 {
		return nil, nil
	}
	ra, ok := dp.(ruleApplier)
	if !ok {
		return nil, errors.New("this dataplane cannot load rules")
	}
	rl := &hangupReloader{
		loader:     &ruleLoader{paths: d.cfg.RulePaths, inside: d.cfg.InsideNetworks, stateDir: d.cfg.StateDir, apply: ra.LoadRules},
		log:        d.log,
		revalidate: d.cfg.Revalidate,
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "natwall_config_reloads_total",
			Help: "Rule set loads, by result: a failed one leaves the last good set live.",
		}, []string{"result"}),
	}
	if fs, ok := dp.(flowSource); ok {
		rl.state = fs.State
	}
	rl.closed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "natwall_flows_revalidated_closed_total",
		Help: "Established flows closed on a reload because the new rules would not admit them (rules.revalidate: close).",
	})
	reg.MustRegister(rl.reloads, rl.closed)
	if err := rl.reload(); err != nil {
		return nil, fmt.Errorf("rules: %w", err)
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

// hangupReloader reloads the rule files on SIGHUP.
type hangupReloader struct {
	loader     *ruleLoader
	log        *slog.Logger
	reloads    *prometheus.CounterVec
	revalidate Revalidate
	state      func() *dataplane.State
	closed     prometheus.Counter
}

func (h *hangupReloader) reload() error {
	rs, tbl, err := h.loader.load()
	if err != nil {
		h.reloads.WithLabelValues("error").Inc()
		var list rules.ErrorList
		if errors.As(err, &list) {
			for _, e := range list {
				h.log.Error("rule file rejected; the last good rule set stays live", "at", e.Pos.String(), "error", e.Msg)
			}
		}
		return err
	}
	h.reloads.WithLabelValues("ok").Inc()
	if h.revalidate == RevalidateClose && h.state != nil {
		n, err := closeDenied(h.state(), tbl)
		h.closed.Add(float64(n))
		if err != nil {
			h.log.Error("close flows the new rules deny", "error", err)
		} else if n > 0 {
			h.log.Info("closed established flows the new rules deny", "flows", n)
		}
	}
	h.log.Info("rule set applied", "files", h.loader.paths, "stateless", len(rs.Stateless), "stateful", len(rs.Stateful),
		"stateful_default", rs.StatefulDefault.String())
	return nil
}

func (h *hangupReloader) reloadOnHangup(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			h.reload()
		}
	}
}

// sysctls sets the forwarding sysctls, or with sysctl.manage off only
// warns about those that would stop natwall from working as intended.
func (d *daemon) sysctls() error {
	settings := ForwardingSysctls(d.cfg.Interfaces)
	if d.cfg.SNAT != nil {
		settings = append(settings, NATSysctls(d.cfg.Interfaces)...)
	}
	if d.cfg.Sysctl.Manage {
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

// stopDataplane applies on_exit. Keeping is fail-static: the pinned program
// goes on forwarding with the live flows until the next daemon takes over.
func (d *daemon) stopDataplane(dp Dataplane) error {
	if d.cfg.OnExit == ExitKeep {
		if err := dp.Close(); err != nil {
			return fmt.Errorf("close dataplane: %w", err)
		}
		d.log.Info("dataplane left attached and pinned for the next natwall", "pin_dir", d.cfg.PinDir)
		return nil
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
	opts := &slog.HandlerOptions{Level: cfg.Level}
	format := cfg.Format
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
