package controlplane

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/natwall/natwall/controlplane/api"
	"github.com/natwall/natwall/controlplane/flows"
	"github.com/natwall/natwall/dataplane"
	"github.com/natwall/natwall/rules"
)

// ReloadTrigger says what asked for a reload.
type ReloadTrigger string

const (
	TriggerStart  ReloadTrigger = "start"
	TriggerSignal ReloadTrigger = "signal" // SIGHUP, systemctl reload
	TriggerFiles  ReloadTrigger = "files"  // the config or a rule file changed
	TriggerAPI    ReloadTrigger = "api"    // natwall reload
)

// reloader is the one way config and rules change while natwall runs:
// SIGHUP, file changes and the API all come here, one reload at a time.
// Each reload is a transaction: read and validate the config, read and
// compile the rules, and only when everything is good apply the settings
// and flip the rules. On any error the last good set stays live.
type reloader struct {
	// source is where the config was read from; a zero source keeps the
	// running config and reloads the rules alone.
	source     LoadOptions
	sysctlRoot string
	log        *slog.Logger
	level      *slog.LevelVar
	// loader is nil when the daemon started with the built-in policy.
	loader *ruleLoader
	// applySettings is nil when the dataplane cannot change its settings
	// live; a settings change then needs a restart.
	applySettings func(dataplane.Settings) error
	state         func() *dataplane.State
	// stream, once set, receives a flow end for each flow a reload
	// closes (rules.revalidate: close); ended is the event it is built in.
	stream *flows.Stream
	ended  dataplane.FlowEvent
	// applied, if set, follows a good reload with what else depends on
	// the live config (the ICMP guard's inside networks); a failure is
	// logged, the reload stands.
	applied func(old, next Config) error
	// generation reads the dataplane's rule generation, for results.
	generation func() (uint32, error)

	mu       sync.Mutex
	cfg      *Config // the daemon's; its live fields are rewritten here
	settings dataplane.Settings
	// attempted fingerprints the files the last reload read.
	attempted [sha256.Size]byte
	last      api.ReloadResult

	reloads         *prometheus.CounterVec
	closed          prometheus.Counter
	lastOK          prometheus.Gauge
	lastSuccessTime prometheus.Gauge
	restartPending  prometheus.Gauge
}

func newReloader(cfg *Config, settings dataplane.Settings) *reloader {
	return &reloader{
		cfg:      cfg,
		settings: settings,
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "natwall_config_reloads_total",
			Help: "Config and rule set loads, by result: a failed one leaves the last good set live.",
		}, []string{"result"}),
		closed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "natwall_flows_revalidated_closed_total",
			Help: "Established flows closed on a reload because the new rules would not admit them (rules.revalidate: close).",
		}),
		lastOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "natwall_config_last_reload_successful",
			Help: "1 if the last config and rule load succeeded, 0 if it failed and the last good set stayed live.",
		}),
		lastSuccessTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "natwall_config_last_reload_success_timestamp_seconds",
			Help: "When the config and rules were last loaded successfully, in seconds since the epoch.",
		}),
		restartPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "natwall_config_restart_required",
			Help: "1 if the config file holds changes that take effect only at the next start.",
		}),
	}
}

func (r *reloader) collectors() []prometheus.Collector {
	return []prometheus.Collector{r.reloads, r.closed, r.lastOK, r.lastSuccessTime, r.restartPending}
}

// config is the running config, with its live fields as the last reload
// left them.
func (r *reloader) config() Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	return *r.cfg
}

// LastResult is the outcome of the last reload that did anything.
func (r *reloader) LastResult() api.ReloadResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// Reload runs one transaction. A change of the files that leaves their
// contents as they were (an editor's temporary file, a touch) does nothing
// and reports the last result.
func (r *reloader) Reload(trigger ReloadTrigger) api.ReloadResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	start := time.Now()
	res, skipped := r.transaction(trigger)
	if skipped {
		r.log.Debug("files changed without changing their contents; nothing to reload")
		return r.last
	}
	res.Time, res.Trigger = start.UTC(), string(trigger)
	if r.generation != nil {
		res.Generation, _ = r.generation()
	}
	took := time.Since(start)
	r.last = res
	if !res.OK {
		r.reloads.WithLabelValues("error").Inc()
		r.lastOK.Set(0)
		for _, e := range append([]string{res.Error}, res.Errors...)[min(1, len(res.Errors)):] {
			r.log.Error("reload rejected; the last good config and rules stay live", "trigger", string(trigger), "error", e)
		}
		return res
	}
	r.reloads.WithLabelValues("ok").Inc()
	r.lastOK.Set(1)
	r.lastSuccessTime.Set(float64(res.Time.UnixNano()) / 1e9)
	if len(res.NeedsRestart) > 0 {
		r.restartPending.Set(1)
		r.log.Warn("config changes that take effect only at the next start", "keys", res.NeedsRestart)
	} else {
		r.restartPending.Set(0)
	}
	r.log.Info("reloaded", "trigger", string(trigger), "changed", res.Changed,
		"stateless", res.Stateless, "stateful", res.Stateful, "generation", res.Generation, "duration", took.String())
	return res
}

// transaction is Reload's work, under r.mu.
func (r *reloader) transaction(trigger ReloadTrigger) (res api.ReloadResult, skipped bool) {
	// invalid is a config or rule file that does not validate, each
	// problem a line of Errors; fail is anything else.
	invalid := func(err error) (api.ReloadResult, bool) {
		res.Errors, res.Changed = errorLines(err), nil
		res.Error = res.Errors[0]
		if len(res.Errors) > 1 {
			res.Error = fmt.Sprintf("%d problems in the config and rule files; the last good set stays live", len(res.Errors))
		}
		return res, false
	}
	fail := func(err error) (api.ReloadResult, bool) {
		res.Error, res.Changed = err.Error(), nil
		return res, false
	}
	next, configData, configErr := r.readConfig(trigger)
	if configErr == nil {
		res.NeedsRestart = restartOnlyChanges(*r.cfg, next)
		next = withLiveFields(*r.cfg, next)
	} else {
		next = *r.cfg
	}
	var srcs []rules.Source
	var srcErr error
	if r.loader != nil {
		srcs, srcErr = rules.ReadSources(next.RulePaths)
	}
	// A file event whose files read as the last attempt's did, good or
	// bad, is a no-op: a touch, an editor's swap file, or the second event
	// of one save.
	fingerprint := filesFingerprint(configData, srcs)
	if trigger == TriggerFiles && fingerprint == r.attempted {
		return res, true
	}
	r.attempted = fingerprint
	if err := errors.Join(configErr, srcErr); err != nil {
		return invalid(err)
	}

	var prepared *preparedRules
	if r.loader != nil {
		var err error
		r.loader.snat = snatAddresses(next)
		if prepared, err = r.loader.prepareSources(next.RulePaths, srcs, next.InsideNetworks); err != nil {
			return invalid(err)
		}
	}
	settings, err := runtimeSettings(next, r.sysctlRoot, r.log)
	if err != nil {
		return invalid(err)
	}
	settingsChanged := trigger != TriggerStart && !reflect.DeepEqual(settings, r.settings)
	if settingsChanged && r.applySettings == nil {
		return fail(errors.New("this dataplane cannot change its settings live: restart natwall"))
	}

	// Everything is valid: flip. Settings go first, so that new rules
	// never meet the old inside networks; if the rules are then refused,
	// the old settings return.
	if settingsChanged {
		if err := r.applySettings(settings); err != nil {
			return fail(fmt.Errorf("apply settings: %w", err))
		}
		res.Changed = append(res.Changed, "settings")
	}
	if prepared != nil {
		if err := r.loader.commit(prepared); err != nil {
			if settingsChanged {
				if rerr := r.applySettings(r.settings); rerr != nil {
					err = errors.Join(err, fmt.Errorf("restore the last good settings: %w", rerr))
				}
			}
			return fail(err)
		}
		res.Changed = append(res.Changed, "rules")
		res.Stateless, res.Stateful = len(prepared.rs.Stateless), len(prepared.rs.Stateful)
		if next.Revalidate == RevalidateClose && r.state != nil && trigger != TriggerStart {
			r.closeDenied(prepared.tbl)
		}
	}
	if r.level != nil && r.level.Level() != next.Log.Level {
		r.level.Set(next.Log.Level)
		res.Changed = append(res.Changed, "log.level")
	}
	if r.applied != nil {
		if err := r.applied(*r.cfg, next); err != nil {
			r.log.Error("after the reload", "error", err)
		}
	}
	*r.cfg = next
	r.settings = settings
	res.OK = true
	return res, false
}

// filesFingerprint digests the config file's bytes and the rule files.
func filesFingerprint(config []byte, srcs []rules.Source) [sha256.Size]byte {
	h := sha256.New()
	h.Write(config)
	for _, src := range srcs {
		h.Write([]byte{0})
		h.Write([]byte(src.Name))
		h.Write([]byte{0})
		h.Write(src.Data)
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

// readConfig reads the config again, or keeps the running one at start and
// when it came from nowhere that can change. It also returns the file's
// bytes, for the fingerprint.
func (r *reloader) readConfig(trigger ReloadTrigger) (Config, []byte, error) {
	var data []byte
	if r.source.File != "" {
		var err error
		if data, err = readConfigFile(r.source.File); err != nil {
			return Config{}, nil, err
		}
	}
	if trigger == TriggerStart || (r.source.File == "" && r.source.Flags == nil) {
		return *r.cfg, data, nil
	}
	next, err := LoadConfig(r.source)
	return next, data, err
}

func (r *reloader) closeDenied(tbl *rules.Tables) {
	var closed func(*dataplane.Flow, dataplane.Reason)
	if r.stream != nil {
		// Each flow closed becomes a flow end on the stream, as one the
		// collector removes does; its reason is the new rules' decision.
		now := time.Now()
		closed = func(f *dataplane.Flow, why dataplane.Reason) {
			r.ended = dataplane.FlowEvent{Type: dataplane.FlowEnded, Time: now, Flow: *f, Reason: why, ByGC: true}
			r.stream.Publish(&r.ended)
		}
		defer r.stream.Flush()
	}
	n, err := closeDenied(r.state(), tbl, closed)
	r.closed.Add(float64(n))
	if err != nil {
		r.log.Error("close flows the new rules deny", "error", err)
	} else if n > 0 {
		r.log.Info("closed established flows the new rules deny", "flows", n)
	}
}

// errorLines splits a config or rule error into one line per problem.
func errorLines(err error) []string {
	var list rules.ErrorList
	if errors.As(err, &list) {
		lines := make([]string, len(list))
		for i, e := range list {
			lines[i] = e.Pos.String() + ": " + e.Msg
		}
		return lines
	}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		var lines []string
		for _, e := range joined.Unwrap() {
			lines = append(lines, errorLines(e)...)
		}
		return lines
	}
	return []string{err.Error()}
}

// restartOnlyChanges names the keys whose change next brings that a running
// daemon cannot apply: they size, bind or attach what is already in place.
func restartOnlyChanges(old, next Config) []string {
	var keys []string
	changed := func(key string, differ bool) {
		if differ {
			keys = append(keys, key)
		}
	}
	changed("interfaces", !slices.Equal(old.Interfaces, next.Interfaces))
	changed("xdp_mode", old.XDPMode != next.XDPMode)
	changed("xdp_generic_fallback", old.XDPGenericFallback != next.XDPGenericFallback)
	changed("pin_dir", old.PinDir != next.PinDir)
	changed("on_incompatible_state", old.ReplaceIncompatibleState != next.ReplaceIncompatibleState)
	changed("metrics.listen", old.Metrics.Listen != next.Metrics.Listen)
	changed("metrics.rule_hits_limit", old.Metrics.RuleHitsLimit != next.Metrics.RuleHitsLimit)
	changed("health.listen", old.Health != next.Health)
	changed("log.format", old.Log.Format != next.Log.Format)
	changed("sysctl.manage", old.Sysctl != next.Sysctl)
	changed("state_dir", old.StateDir != next.StateDir)
	changed("conntrack.table_size", old.Conntrack.TableSize != next.Conntrack.TableSize)
	changed("conntrack.gc_interval", old.Conntrack.GCInterval != next.Conntrack.GCInterval)
	changed("reload.watch", old.Reload != next.Reload)
	// SNAT on or off changes sysctls and the ICMP guard, set at start.
	changed("snat.enabled", (old.SNAT == nil) != (next.SNAT == nil))
	// Rule files replace the built-in policy, and the other way round,
	// only at a start.
	changed("rules.paths", (len(old.RulePaths) == 0) != (len(next.RulePaths) == 0))
	return keys
}

// withLiveFields is old with the settings a running daemon applies taken
// from next.
func withLiveFields(old, next Config) Config {
	live := old
	live.InsideNetworks = next.InsideNetworks
	live.MalformedAction = next.MalformedAction
	live.VLANAction = next.VLANAction
	live.OutsideInterfaces = next.OutsideInterfaces
	live.ReversePath = next.ReversePath
	live.OnExit = next.OnExit
	live.Log.Level = next.Log.Level
	live.Revalidate = next.Revalidate
	if (old.SNAT == nil) == (next.SNAT == nil) {
		live.SNAT = next.SNAT
	}
	live.Conntrack.InvalidTCPReset = next.Conntrack.InvalidTCPReset
	live.Conntrack.Timeouts = next.Conntrack.Timeouts
	live.Conntrack.UnansweredPerSource = next.Conntrack.UnansweredPerSource
	if (len(old.RulePaths) == 0) == (len(next.RulePaths) == 0) {
		live.RulePaths = next.RulePaths
	}
	return live
}

// runtimeSettings is what cfg asks of the dataplane while it runs.
func runtimeSettings(cfg Config, sysctlRoot string, log *slog.Logger) (dataplane.Settings, error) {
	s := dataplane.DefaultSettings()
	s.MalformedAction = cfg.MalformedAction
	s.VLANAction = cfg.VLANAction
	s.Inside = cfg.InsideNetworks
	s.InvalidTCPReset = cfg.Conntrack.InvalidTCPReset
	s.OutsideInterfaces = cfg.OutsideInterfaces
	s.ReversePath = cfg.ReversePath
	s.UnansweredPerSource = cfg.Conntrack.UnansweredPerSource
	if cfg.Conntrack.Timeouts != (dataplane.Timeouts{}) {
		s.Timeouts = cfg.Conntrack.Timeouts
	}
	var err error
	if s.SNAT, err = excludeLocalPorts(cfg.SNAT, sysctlRoot, log); err != nil {
		return s, err
	}
	return s, nil
}

// reloadOnHangup reloads on every SIGHUP until ctx is done.
func (r *reloader) reloadOnHangup(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			r.Reload(TriggerSignal)
		}
	}
}

// watchDebounce is how long the files must stay quiet after a change
// before a reload reads them: an editor or `git checkout` writes several
// files, and a half-written set would only be rejected.
const watchDebounce = 300 * time.Millisecond

// watchFiles reloads when anything changes in the directories holding the
// config file and the rule paths, until ctx is done. Directories, not
// files, are watched: editors and config management replace a file by
// renaming a new one over it, and Kubernetes swaps a symlinked directory.
// Reload's fingerprint turns changes that leave the contents alone into
// no-ops.
func (r *reloader) watchFiles(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch config and rule files: %w", err)
	}
	defer w.Close()
	watched := map[string]bool{}
	watchNew := func() {
		r.mu.Lock()
		dirs := watchDirs(r.source.File, r.cfg.RulePaths)
		r.mu.Unlock()
		for _, dir := range dirs {
			if watched[dir] {
				continue
			}
			if err := w.Add(dir); err != nil {
				r.log.Warn("cannot watch for changes; reload with SIGHUP or natwall reload", "dir", dir, "error", err)
				continue
			}
			watched[dir] = true
		}
	}
	watchNew()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if ev.Op == fsnotify.Chmod {
				continue
			}
			timer.Reset(watchDebounce)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			r.log.Warn("file watch error", "error", err)
		case <-timer.C:
			r.Reload(TriggerFiles)
			watchNew()
		}
	}
}

// watchDirs are the directories whose changes may change the config or the
// rules: a rule directory itself, and the parent of each file.
func watchDirs(configFile string, rulePaths []string) []string {
	var dirs []string
	add := func(dir string) {
		if dir = filepath.Clean(dir); !slices.Contains(dirs, dir) {
			dirs = append(dirs, dir)
		}
	}
	if configFile != "" {
		add(filepath.Dir(configFile))
	}
	for _, p := range rulePaths {
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			add(p)
		} else {
			add(filepath.Dir(p))
		}
	}
	return dirs
}
