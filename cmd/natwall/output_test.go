package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/natwall/natwall/controlplane/api"
	"github.com/natwall/natwall/rules"
)

var update = flag.Bool("update", false, "rewrite the golden files")

var (
	goldenNow  = time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	goldenFlow = api.Flow{Proto: "tcp", Src: "198.18.0.2:40000", Dst: "198.19.0.9:443", ReplySrc: "198.19.0.9:443",
		ReplyDst: "198.19.255.1:40000", TCPState: "established", Zone: "outbound", SNAT: true, RuleID: 7,
		Created: goldenNow.Add(-90 * time.Second), LastSeen: goldenNow.Add(-2 * time.Second),
		PacketsOrig: 12, BytesOrig: 3400, PacketsReply: 10, BytesReply: 25000}
	goldenUDP = api.Flow{Proto: "udp", Src: "[2001:db8:1::2]:5353", Dst: "[2001:db8:2::9]:53", ReplySrc: "[2001:db8:2::9]:53",
		ReplyDst: "[2001:db8:1::2]:5353", Zone: "outbound", RuleID: 8,
		Created: goldenNow.Add(-5 * time.Second), LastSeen: goldenNow.Add(-5 * time.Second), PacketsOrig: 1, BytesOrig: 60}
)

// goldenViews are one value of each printed kind, with the values that
// are easy to get wrong: a true (yes, quoted "true" in YAML only if a
// string), a number-like string, IPv6 endpoints, empty lists.
var goldenViews = map[string]any{
	"status": statusView(api.Status{
		Version: "v0.9.0",
		Interfaces: []api.Interface{
			{Name: "eth0", Mode: "native", Attached: true},
			{Name: "eth1", Mode: "generic", FellBack: true, Attached: false},
		},
		RuleGeneration: 3,
		RulePaths:      []string{"/etc/natwall/rules.yaml"},
		LastReload: &api.ReloadResult{Time: goldenNow.Add(-time.Minute), Error: "1 errors in the rule files; the last good rule set stays live",
			Errors: []string{`/etc/natwall/rules.yaml:3:39: stateful action "alow" is not one of allow, deny, reject, alert`}, Generation: 3},
		FlowTable: api.TableFill{FlowsV4: 1024, FlowsV6: 3, Capacity: 262144},
		NAT:       []api.NATUsage{{Address: "198.19.255.1", Protocol: "tcp", InUse: 640, Capacity: 64512}},
	}),
	"status-idle": statusView(api.Status{Version: "1024", Interfaces: []api.Interface{}, RulePaths: []string{}, NAT: []api.NATUsage{}}),
	"rules": ruleList{
		{ID: "web", Number: 3, Stage: "stateful", Priority: 10, Action: "allow", At: "/etc/natwall/rules.yaml:3:7", Hits: 41},
		{ID: "block-bogon", Number: 2, Stage: "stateless", Priority: 1, Action: "drop", At: "/etc/natwall/rules.yaml:9:7", Hits: 5, Bytes: 300},
		{ID: "true", Number: 4, Stage: "stateful", Priority: 20, Action: "deny", At: "/etc/natwall/rules.yaml:12:7"},
	},
	"conntrack": flowList{goldenFlow, goldenUDP},
	"nat":       natView{{Address: "198.19.255.1", Protocol: "udp", InUse: 0, Capacity: 64512}},
	"explain": explanationView(rules.Explanation{Packet: "tcp 198.18.0.2:40000 -> 198.19.0.9:443 outbound",
		Decisions: []rules.Decision{
			{Stage: "stateless", Action: "pass", Why: "no stateless rule matches"},
			{Stage: "stateful", Rule: "web", At: "/etc/natwall/rules.yaml:3:7", Action: "allow", Alerts: []string{"log-web"}, Why: "destination port 443"},
		}, Verdict: "allowed: a flow is created"}),
	"reload": reloadView(api.ReloadResult{Time: goldenNow, OK: true, Stateless: 1, Stateful: 2, Generation: 4}),
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to write it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from %s:\n--- got\n%s--- want\n%s", name, path, got, want)
	}
}

func TestRenderGolden(t *testing.T) {
	clock = func() time.Time { return goldenNow }
	t.Cleanup(func() { clock = time.Now })
	for name, v := range goldenViews {
		for _, format := range outputFormats {
			t.Run(name+"/"+format, func(t *testing.T) {
				var buf bytes.Buffer
				if err := render(&buf, format, v); err != nil {
					t.Fatal(err)
				}
				golden(t, name+"."+format, buf.Bytes())
			})
		}
	}
}

// TestRenderYAMLIsJSON checks that yaml output is the json output's data:
// the same keys, and strings that look like numbers or booleans stay
// strings.
func TestRenderYAMLIsJSON(t *testing.T) {
	var buf bytes.Buffer
	if err := render(&buf, "yaml", goldenViews["rules"]); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`- id: web`, `id: "true"`, `at: /etc/natwall/rules.yaml:3:7`, `hits: 41`} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("yaml lacks %q:\n%s", want, buf.String())
		}
	}
	buf.Reset()
	if err := render(&buf, "yaml", goldenViews["status-idle"]); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `version: "1024"`) || !strings.Contains(buf.String(), "interfaces: []") {
		t.Errorf("yaml of an idle status:\n%s", buf.String())
	}
}

func TestRenderRefusesOtherFormats(t *testing.T) {
	for _, format := range []string{"", "text", "JSON", "yml", "table,json"} {
		var buf bytes.Buffer
		err := render(&buf, format, goldenViews["rules"])
		if exitCode(err) != exitUsage || buf.Len() != 0 {
			t.Errorf("render(%q) = %v (exit %d), wrote %q; want a usage error and nothing written", format, err, exitCode(err), buf.String())
		}
	}
}

func TestStreamGolden(t *testing.T) {
	events := []api.FlowEvent{
		{Type: "flow_start", Time: goldenNow, Reason: "none", Flow: goldenFlow},
		{Type: "flow_end", Time: goldenNow.Add(1500 * time.Millisecond), Reason: "none", Lost: 2, Flow: goldenUDP},
		{Type: "alert", Time: goldenNow.Add(2 * time.Second), Reason: "drop_acl", Flow: goldenFlow},
	}
	local := time.Local
	time.Local = time.UTC
	t.Cleanup(func() { time.Local = local })
	for _, format := range outputFormats {
		t.Run(format, func(t *testing.T) {
			var buf bytes.Buffer
			s := newStream(&buf, format)
			for _, ev := range events {
				if err := s.write(flowEventView(ev)); err != nil {
					t.Fatal(err)
				}
			}
			golden(t, "flows."+format, buf.Bytes())
		})
	}
}
