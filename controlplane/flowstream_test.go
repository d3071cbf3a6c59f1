package controlplane

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/natwall/natwall/controlplane/flowlog"
)

// TestRunRefusesUnwritableEVEPath: an EVE file natwall cannot open stops
// the start before sysctls are set or the dataplane is opened.
func TestRunRefusesUnwritableEVEPath(t *testing.T) {
	dir := t.TempDir()
	cfg := testDaemonConfig()
	cfg.EVE = EVEConfig{Output: EVEFile, Path: dir, MaxSize: 1 << 20, MaxFiles: 2} // a directory
	dp := &fakeDataplane{}
	d, _, opened := testDaemon(t, cfg, dp)
	err := d.run(t.Context())
	if err == nil || !strings.Contains(err.Error(), "eve.path") {
		t.Fatalf("run = %v, want an eve.path error", err)
	}
	if len(*opened) != 0 {
		t.Error("dataplane opened despite the EVE error")
	}
	if v, _ := readSysctl(d.sysctlRoot, "net/ipv4/ip_forward"); v == "1" {
		t.Error("sysctls applied despite the EVE error")
	}
}

func TestOpenEVE(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new", "dir", "eve.json")
	out, err := openEVE(EVEConfig{Output: EVEFile, Path: path, MaxSize: 1 << 20, MaxFiles: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := out.Write([]byte("{}\n")); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(path); string(data) != "{}\n" {
		t.Fatalf("file holds %q", data)
	}
	if out, err := openEVE(EVEConfig{Output: EVEOff}); out != nil || err != nil {
		t.Fatalf("off: %v, %v", out, err)
	}
	var none *eveOutput
	if err := none.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestLiveRuleNames names rule numbers from the live rule set, and picks
// up a reload's file.
func TestLiveRuleNames(t *testing.T) {
	dir := t.TempDir()
	write := func(live LiveRules) {
		t.Helper()
		if err := writeJSONAtomic(filepath.Join(dir, liveRulesFile), live); err != nil {
			t.Fatal(err)
		}
	}
	write(LiveRules{StatefulDefault: "deny", Rules: []LiveRule{{ID: "web", Number: 3, Action: "allow"}}})
	names := &liveRuleNames{path: filepath.Join(dir, liveRulesFile)}
	for _, tc := range []struct {
		n    uint32
		want flowlog.Rule
		ok   bool
	}{
		{3, flowlog.Rule{ID: "web", Action: "allow"}, true},
		{2, flowlog.Rule{ID: "stateful-default", Action: "deny"}, true},
		{9, flowlog.Rule{}, false},
	} {
		if got, ok := names.Rule(tc.n); got != tc.want || ok != tc.ok {
			t.Errorf("rule %d: %+v, %v; want %+v, %v", tc.n, got, ok, tc.want, tc.ok)
		}
	}
	write(LiveRules{StatefulDefault: "deny", Rules: []LiveRule{{ID: "web", Number: 3, Action: "alert"}, {ID: "new", Number: 9, Action: "allow"}}})
	future := time.Now().Add(time.Minute)
	if err := os.Chtimes(filepath.Join(dir, liveRulesFile), future, future); err != nil {
		t.Fatal(err)
	}
	names.checked = time.Time{} // as if a second had passed
	if got, ok := names.Rule(9); !ok || got.ID != "new" {
		t.Errorf("after the reload rule 9 is %+v, %v", got, ok)
	}
	if got, _ := names.Rule(3); got.Action != "alert" {
		t.Errorf("after the reload rule 3 is %+v", got)
	}
}
