package controlplane

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/natwall/natwall/dataplane"
	"github.com/natwall/natwall/rules"
)

const (
	allowWeb = "stateful:\n  rules:\n    - {id: web, priority: 10, action: allow, protocol: tcp, dst_ports: [443]}\n"
	allowSSH = "stateful:\n  rules:\n    - {id: ssh, priority: 10, action: allow, protocol: tcp, dst_ports: [22]}\n"
	// brokenRules has a bad action at line 3, column 39.
	brokenRules = "stateful:\n  rules:\n    - {id: web, priority: 10, action: alow}\n"
)

// reloadFixture is a reloader over real config and rule files in a
// temporary directory, with the dataplane's two entry points recorded.
type reloadFixture struct {
	dir, configFile, ruleFile string
	r                         *reloader
	cfg                       *Config
	level                     *slog.LevelVar

	mu           sync.Mutex
	ruleLoads    int
	settings     []dataplane.Settings
	failRuleLoad error
}

func newReloadFixture(t *testing.T, config string) *reloadFixture {
	t.Helper()
	clearNatwallEnv(t)
	f := &reloadFixture{dir: t.TempDir()}
	f.configFile = filepath.Join(f.dir, "natwall.yaml")
	f.ruleFile = filepath.Join(f.dir, "rules.yaml")
	f.write(t, f.ruleFile, allowWeb)
	f.writeConfig(t, config)
	source := LoadOptions{File: f.configFile}
	cfg, err := LoadConfig(source)
	if err != nil {
		t.Fatal(err)
	}
	f.cfg = &cfg
	root := writeSysctlTree(t, map[string]string{localPortRange: "61000\t65535"})
	log := slog.New(slog.DiscardHandler)
	settings, err := runtimeSettings(cfg, root, log)
	if err != nil {
		t.Fatal(err)
	}
	f.level = new(slog.LevelVar)
	f.level.Set(cfg.Log.Level)
	f.r = newReloader(f.cfg, settings)
	f.r.source, f.r.sysctlRoot, f.r.log, f.r.level = source, root, log, f.level
	f.r.applySettings = func(s dataplane.Settings) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.settings = append(f.settings, s)
		return nil
	}
	f.r.loader = &ruleLoader{stateDir: filepath.Join(f.dir, "state"), apply: func(_, _ *rules.StageTables) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.failRuleLoad != nil {
			return f.failRuleLoad
		}
		f.ruleLoads++
		return nil
	}}
	if res := f.r.Reload(TriggerStart); !res.OK {
		t.Fatalf("start: %v", res.Errors)
	}
	return f
}

func (f *reloadFixture) write(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

// writeConfig writes the config file: config plus the fixture's rule file.
func (f *reloadFixture) writeConfig(t *testing.T, config string) {
	t.Helper()
	f.write(t, f.configFile, minimalConfig+"state_dir: '"+filepath.Join(f.dir, "state")+"'\nrules:\n  paths: ['"+f.ruleFile+"']\n"+config)
}

func (f *reloadFixture) calls() (ruleLoads, settingsApplied int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ruleLoads, len(f.settings)
}

func TestReloadTransaction(t *testing.T) {
	tests := []struct {
		name string
		// edit changes the files (or the fixture) after a good start.
		edit             func(t *testing.T, f *reloadFixture)
		trigger          ReloadTrigger
		wantOK           bool
		wantErr          string
		wantChanged      []string
		wantRestart      []string
		wantRuleLoads    int // after the start's one
		wantSettingsSets int
		check            func(t *testing.T, f *reloadFixture)
	}{
		{
			name:          "rule edit",
			edit:          func(t *testing.T, f *reloadFixture) { f.write(t, f.ruleFile, allowSSH) },
			trigger:       TriggerSignal,
			wantOK:        true,
			wantChanged:   []string{"rules"},
			wantRuleLoads: 1,
		},
		{
			name:    "broken rule file",
			edit:    func(t *testing.T, f *reloadFixture) { f.write(t, f.ruleFile, brokenRules) },
			trigger: TriggerSignal,
			wantErr: "rules.yaml:3:39: ",
		},
		{
			name:    "broken config",
			edit:    func(t *testing.T, f *reloadFixture) { f.writeConfig(t, "malformed_action: maybe\n") },
			trigger: TriggerAPI,
			wantErr: `natwall.yaml:6:19: malformed_action: "maybe" is not one of drop, pass`,
		},
		{
			name: "inside networks change live, settings before rules",
			edit: func(t *testing.T, f *reloadFixture) {
				f.write(t, f.configFile, strings.Replace(mustRead(t, f.configFile), "198.18.0.0/24", "198.18.0.0/23", 1))
			},
			trigger:          TriggerSignal,
			wantOK:           true,
			wantChanged:      []string{"settings", "rules"},
			wantRuleLoads:    1,
			wantSettingsSets: 1,
			check: func(t *testing.T, f *reloadFixture) {
				if want := []netip.Prefix{netip.MustParsePrefix("198.18.0.0/23")}; !slices.Equal(f.settings[0].Inside, want) || !slices.Equal(f.cfg.InsideNetworks, want) {
					t.Errorf("inside networks: applied %v, config %v; want %v", f.settings[0].Inside, f.cfg.InsideNetworks, want)
				}
			},
		},
		{
			name: "restart-only keys wait, live ones apply",
			edit: func(t *testing.T, f *reloadFixture) {
				f.writeConfig(t, "conntrack:\n  table_size: 4096\nlog:\n  level: debug\n")
			},
			trigger:       TriggerSignal,
			wantOK:        true,
			wantChanged:   []string{"rules", "log.level"},
			wantRestart:   []string{"conntrack.table_size"},
			wantRuleLoads: 1,
			check: func(t *testing.T, f *reloadFixture) {
				if f.cfg.Conntrack.TableSize != 262144 {
					t.Errorf("table_size changed live to %d", f.cfg.Conntrack.TableSize)
				}
				if f.level.Level() != slog.LevelDebug {
					t.Errorf("log level %v, want debug", f.level.Level())
				}
				if got := testutil.ToFloat64(f.r.restartPending); got != 1 {
					t.Errorf("natwall_config_restart_required = %v, want 1", got)
				}
			},
		},
		{
			name: "snat switched on waits for a restart",
			edit: func(t *testing.T, f *reloadFixture) {
				f.writeConfig(t, "snat:\n  enabled: true\n  addresses: [198.19.0.1]\n")
			},
			trigger:       TriggerSignal,
			wantOK:        true,
			wantChanged:   []string{"rules"},
			wantRestart:   []string{"snat.enabled"},
			wantRuleLoads: 1,
			check: func(t *testing.T, f *reloadFixture) {
				if f.cfg.SNAT != nil {
					t.Errorf("SNAT switched on live: %+v", f.cfg.SNAT)
				}
			},
		},
		{
			name: "dataplane refuses the rules: old settings return",
			edit: func(t *testing.T, f *reloadFixture) {
				f.writeConfig(t, "conntrack:\n  timeouts:\n    udp: 1m\n")
				f.failRuleLoad = errors.New("map update: no space left")
			},
			trigger:          TriggerSignal,
			wantErr:          "apply rule set: map update: no space left",
			wantSettingsSets: 2,
			check: func(t *testing.T, f *reloadFixture) {
				if f.settings[0].Timeouts.UDP != time.Minute || f.settings[1].Timeouts.UDP != dataplane.DefaultTimeouts().UDP {
					t.Errorf("settings applied %+v then %+v, want the new UDP timeout then the old one back",
						f.settings[0].Timeouts, f.settings[1].Timeouts)
				}
			},
		},
		{
			name:    "file event without a change",
			edit:    func(t *testing.T, f *reloadFixture) { f.write(t, f.ruleFile, allowWeb) },
			trigger: TriggerFiles,
			// The result is the start's: nothing ran.
			wantOK:      true,
			wantChanged: []string{"rules"},
		},
		{
			name:          "signal without a change reloads anyway",
			edit:          func(*testing.T, *reloadFixture) {},
			trigger:       TriggerSignal,
			wantOK:        true,
			wantChanged:   []string{"rules"},
			wantRuleLoads: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newReloadFixture(t, "")
			before := *f.cfg
			tt.edit(t, f)
			res := f.r.Reload(tt.trigger)
			if res.OK != (tt.wantErr == "") || res.OK != tt.wantOK {
				t.Fatalf("OK = %v, errors %q", res.OK, res.Errors)
			}
			if tt.wantErr != "" {
				if all := append([]string{res.Error}, res.Errors...); !slices.ContainsFunc(all, func(e string) bool { return strings.Contains(e, tt.wantErr) }) {
					t.Errorf("errors %q, want one containing %q", all, tt.wantErr)
				}
				if got := testutil.ToFloat64(f.r.lastOK); got != 0 {
					t.Errorf("natwall_config_last_reload_successful = %v after a failure", got)
				}
				if !configEqual(*f.cfg, before) {
					t.Errorf("a failed reload changed the live config:\n%+v\nwas\n%+v", *f.cfg, before)
				}
			} else if got := testutil.ToFloat64(f.r.lastOK); got != 1 {
				t.Errorf("natwall_config_last_reload_successful = %v after success", got)
			}
			if !slices.Equal(res.Changed, tt.wantChanged) || !slices.Equal(res.NeedsRestart, tt.wantRestart) {
				t.Errorf("changed %v, needs restart %v; want %v, %v", res.Changed, res.NeedsRestart, tt.wantChanged, tt.wantRestart)
			}
			loads, sets := f.calls()
			if loads != 1+tt.wantRuleLoads || sets != tt.wantSettingsSets {
				t.Errorf("rule loads %d, settings applied %d; want %d, %d", loads, sets, 1+tt.wantRuleLoads, tt.wantSettingsSets)
			}
			if tt.check != nil {
				tt.check(t, f)
			}
			if last := f.r.LastResult(); !slices.Equal(last.Errors, res.Errors) || last.OK != res.OK {
				t.Errorf("LastResult %+v differs from the reload's %+v", last, res)
			}
		})
	}
}

// configEqual compares configs on the fields a reload may change.
func configEqual(a, b Config) bool {
	return slices.Equal(a.InsideNetworks, b.InsideNetworks) && slices.Equal(a.RulePaths, b.RulePaths) &&
		a.MalformedAction == b.MalformedAction && a.Log == b.Log && a.Conntrack.Timeouts == b.Conntrack.Timeouts
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestWatchFilesReloads edits the rule file in place and then replaces it
// by renaming a new file over it, as editors and config management do;
// each must reload without a signal, and a broken save must be rejected
// once, not retried on every later event.
func TestWatchFilesReloads(t *testing.T) {
	f := newReloadFixture(t, "")
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.r.watchFiles(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	waitReloads := func(what string, want int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			if loads, _ := f.calls(); loads == want {
				return
			}
			if time.Now().After(deadline) {
				loads, _ := f.calls()
				t.Fatalf("%s: %d rule loads, want %d", what, loads, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// fsnotify's watch is in place once its goroutine runs; give it a
	// moment before the first write.
	time.Sleep(100 * time.Millisecond)

	f.write(t, f.ruleFile, allowSSH)
	waitReloads("edit in place", 2)
	if last := f.r.LastResult(); last.Trigger != string(TriggerFiles) || !last.OK {
		t.Errorf("last reload %+v, want a good one by files", last)
	}

	tmp := filepath.Join(f.dir, ".rules.yaml.swp")
	f.write(t, tmp, allowWeb)
	if err := os.Rename(tmp, f.ruleFile); err != nil {
		t.Fatal(err)
	}
	waitReloads("rename over", 3)

	f.write(t, f.ruleFile, brokenRules)
	deadline := time.Now().Add(10 * time.Second)
	for f.r.LastResult().OK {
		if time.Now().After(deadline) {
			t.Fatal("the broken save was not reloaded")
		}
		time.Sleep(20 * time.Millisecond)
	}
	f.write(t, filepath.Join(f.dir, "unrelated.txt"), "x")
	time.Sleep(2 * watchDebounce)
	if got := testutil.ToFloat64(f.r.reloads.WithLabelValues("error")); got != 1 {
		t.Errorf("%v failed reloads, want the broken save rejected once", got)
	}
	if loads, _ := f.calls(); loads != 3 {
		t.Errorf("%d rule loads after the broken save, want 3", loads)
	}
}

// TestReloadFollowsWithApplied: what depends on the live config hears of
// a good reload with the old and new configs, and of no failed one.
func TestReloadFollowsWithApplied(t *testing.T) {
	f := newReloadFixture(t, "")
	var calls [][2][]netip.Prefix
	f.r.applied = func(old, next Config) error {
		calls = append(calls, [2][]netip.Prefix{old.InsideNetworks, next.InsideNetworks})
		return errors.New("iptables: not today")
	}
	f.write(t, f.configFile, strings.Replace(mustRead(t, f.configFile), "198.18.0.0/24", "198.18.0.0/23", 1))
	if res := f.r.Reload(TriggerSignal); !res.OK {
		t.Fatalf("reload: %v", res.Errors)
	}
	f.write(t, f.ruleFile, brokenRules)
	if res := f.r.Reload(TriggerSignal); res.OK {
		t.Fatal("a broken rule file reloaded")
	}
	want := [][2][]netip.Prefix{{{netip.MustParsePrefix("198.18.0.0/24")}, {netip.MustParsePrefix("198.18.0.0/23")}}}
	if !reflect.DeepEqual(calls, want) {
		t.Errorf("applied called with %v, want %v", calls, want)
	}
}
