package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/natwall/natwall/test/lab"
)

// cliResult is one run of the natwall CLI.
type cliResult struct {
	code           int
	stdout, stderr string
}

// cli runs the natwall binary against a's API socket, from the host: the
// socket is a file, reachable from any network namespace.
func cli(t *testing.T, a *appliance, args ...string) cliResult {
	t.Helper()
	cmd := exec.CommandContext(testContext(t), natwallBin, append(args, "--socket", a.socket)...)
	return runCLI(t, cmd)
}

func runCLI(t *testing.T, cmd *exec.Cmd) cliResult {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := cliResult{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		res.code = exit.ExitCode()
	case err != nil:
		t.Fatalf("%v: %v", cmd.Args, err)
	}
	return res
}

// cliJSON runs a CLI command with -o json, which must succeed, into out.
func cliJSON(t *testing.T, a *appliance, out any, args ...string) {
	t.Helper()
	res := cli(t, a, append(args, "-o", "json")...)
	if res.code != 0 {
		t.Fatalf("natwall %v exited %d: %s", args, res.code, res.stderr)
	}
	if err := json.Unmarshal([]byte(res.stdout), out); err != nil {
		t.Fatalf("natwall %v: %v\n%s", args, err, res.stdout)
	}
}

type statusJSON struct {
	Interfaces []struct {
		Name     string `json:"name"`
		Mode     string `json:"mode"`
		Attached bool   `json:"attached"`
	} `json:"interfaces"`
	RuleGeneration uint32 `json:"rule_generation"`
	LastReload     *struct {
		OK         bool     `json:"ok"`
		Errors     []string `json:"errors"`
		Stateful   int      `json:"stateful"`
		Generation uint32   `json:"generation"`
	} `json:"last_reload"`
	FlowTable struct {
		Capacity int `json:"capacity"`
	} `json:"flow_table"`
	NAT []struct {
		Address  string `json:"address"`
		Protocol string `json:"protocol"`
		InUse    int    `json:"in_use"`
	} `json:"nat"`
}

func ruleHits(t *testing.T, a *appliance) map[string]uint64 {
	t.Helper()
	var list []struct {
		ID   string `json:"id"`
		Hits uint64 `json:"hits"`
	}
	cliJSON(t, a, &list, "rules")
	out := map[string]uint64{}
	for _, r := range list {
		out[r.ID] = r.Hits
	}
	return out
}

// TestCLIAgainstLiveDaemon drives a live natwall run through its API with
// the natwall binary: status, rules whose hits move under traffic,
// conntrack list and flush, a flow tail, reload (good and broken), explain
// --live, config check, and a daemon gone.
func TestCLIAgainstLiveDaemon(t *testing.T) {
	l := newLab(t, lab.Options{Shape: lab.TwoNIC})
	dir := t.TempDir()
	ruleFile := filepath.Join(dir, "rules.yaml")
	write := func(body string) {
		if err := os.WriteFile(ruleFile, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	const baseRules = `stateful:
  default_action: deny
  rules:
    - {id: web, priority: 10, action: allow, protocol: tcp, dst_ports: [7000]}
    - {id: dns, priority: 20, action: allow, protocol: udp, dst_ports: [9000]}
    - {id: ping, priority: 30, action: allow, protocol: icmp}
    - {id: ping6, priority: 31, action: allow, protocol: icmpv6}
`
	write(baseRules)
	a := startNatwall(t, l, natConfig("")+fmt.Sprintf("state_dir: %s\nrules:\n  paths: [%s]\n", filepath.Join(dir, "state"), ruleFile))
	server, client := l.Servers[0], l.Clients[0]
	warmUp(t, client.NS, server.IPv4)
	ctx := testContext(t)

	// The socket is root's alone.
	fi, err := os.Lstat(a.socket)
	if err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("api socket %s: %v, %v; want a socket of mode 0600", a.socket, fi.Mode(), err)
	}

	var st statusJSON
	cliJSON(t, a, &st, "status")
	var names []string
	for _, i := range st.Interfaces {
		names = append(names, i.Name)
		if !i.Attached || i.Mode != "native" {
			t.Errorf("status interface %+v, want attached in native mode", i)
		}
	}
	if !slices.Equal(names, l.ApplianceNICs) {
		t.Errorf("status interfaces %v, want %v", names, l.ApplianceNICs)
	}
	if st.LastReload == nil || !st.LastReload.OK || st.LastReload.Stateful != 4 || st.RuleGeneration == 0 ||
		st.LastReload.Generation != st.RuleGeneration {
		t.Errorf("status rules: generation %d, last reload %+v; want the start's load of 4 stateful rules", st.RuleGeneration, st.LastReload)
	}
	if st.FlowTable.Capacity == 0 {
		t.Errorf("status flow table %+v", st.FlowTable)
	}
	if i := slices.IndexFunc(st.NAT, func(n struct {
		Address  string `json:"address"`
		Protocol string `json:"protocol"`
		InUse    int    `json:"in_use"`
	}) bool {
		return n.Address == lab.ApplianceOutsideV4.String() && n.Protocol == "udp"
	}); i < 0 {
		t.Errorf("status NAT %+v has no udp entry for %s", st.NAT, lab.ApplianceOutsideV4)
	}
	if res := cli(t, a, "status"); res.code != 0 || !strings.Contains(res.stdout, "INTERFACE") || !strings.Contains(res.stdout, l.ApplianceNICs[0]) {
		t.Errorf("status table: %d\n%s%s", res.code, res.stdout, res.stderr)
	}

	// Hits move under traffic: two TCP flows to web. (Warm-up pings hit ping.)
	ln, err := server.NS.Listen("tcp", netip.AddrPortFrom(server.IPv4, 7000).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go echoServer(ln)
	before := ruleHits(t, a)
	if before["web"] != 0 || before["ping"] == 0 {
		t.Errorf("hits before traffic %v, want web 0 and ping counted", before)
	}
	for range 2 {
		if _, err := dialWithin(ctx, client.NS, netip.AddrPortFrom(server.IPv4, 7000), 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if after := ruleHits(t, a); after["web"] != 2 || after["dns"] != 0 {
		t.Errorf("hits after two web flows %v, want web 2 and dns 0", after)
	}

	// A flow tail with filters sees a UDP flow start.
	startUDPServer(t, server, 9000)
	tailCtx, stopTail := context.WithTimeout(ctx, 20*time.Second)
	defer stopTail()
	tail := exec.CommandContext(tailCtx, natwallBin, "flows", "-o", "json", "--socket", a.socket,
		"--proto", "udp", "--port", "9000", "--type", "flow_start", "--count", "1")
	tailOut, err := tail.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var tailErr bytes.Buffer
	tail.Stderr = &tailErr
	if err := tail.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(tailOut)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	// The tail subscribes asynchronously: new flows until it reports one.
	var event string
	for port := uint16(45100); event == "" && port < 45200; port++ {
		pc, err := client.NS.ListenPacket("udp4", netip.AddrPortFrom(client.IPv4, port).String())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := udpAsk(pc, netip.AddrPortFrom(server.IPv4, 9000)); err != nil {
			t.Fatal(err)
		}
		pc.Close()
		select {
		case event = <-lines:
		case <-time.After(300 * time.Millisecond):
		}
	}
	if err := tail.Wait(); err != nil {
		t.Fatalf("natwall flows --count 1: %v\n%s", err, tailErr.String())
	}
	var ev struct {
		Type string `json:"type"`
		Flow struct {
			Proto, Src, Dst string
			SNAT            bool `json:"snat"`
		} `json:"flow"`
	}
	if err := json.Unmarshal([]byte(event), &ev); err != nil {
		t.Fatalf("flow tail printed %q: %v (stderr %s)", event, err, tailErr.String())
	}
	if ev.Type != "flow_start" || ev.Flow.Proto != "udp" || ev.Flow.Dst != netip.AddrPortFrom(server.IPv4, 9000).String() ||
		!strings.HasPrefix(ev.Flow.Src, client.IPv4.String()+":") || !ev.Flow.SNAT {
		t.Errorf("flow tail event %s, want a translated udp flow start from %s to %s:9000", event, client.IPv4, server.IPv4)
	}

	// conntrack list and flush, by filter.
	var flows []map[string]any
	cliJSON(t, a, &flows, "conntrack", "list", "--proto", "udp", "--port", "9000")
	if len(flows) == 0 {
		t.Fatal("conntrack list shows no udp flow to port 9000")
	}
	for _, f := range flows {
		if f["proto"] != "udp" || f["dst"] != netip.AddrPortFrom(server.IPv4, 9000).String() {
			t.Errorf("the filter let through %v", f)
		}
	}
	var tcpFlows []map[string]any
	cliJSON(t, a, &tcpFlows, "conntrack", "list", "--port", "7000")
	res := cli(t, a, "conntrack", "flush", "--proto", "udp", "--port", "9000")
	if res.code != 0 || res.stdout != fmt.Sprintf("flushed %d flows\n", len(flows)) {
		t.Errorf("conntrack flush: %d %q %s, want %d flows flushed", res.code, res.stdout, res.stderr, len(flows))
	}
	cliJSON(t, a, &flows, "conntrack", "list", "--proto", "udp", "--port", "9000")
	var tcpAfter []map[string]any
	cliJSON(t, a, &tcpAfter, "conntrack", "list", "--port", "7000")
	if len(flows) != 0 || len(tcpAfter) != len(tcpFlows) || len(tcpFlows) == 0 {
		t.Errorf("after the udp flush: %d udp flows (want 0), tcp flows %d -> %d (want kept)", len(flows), len(tcpFlows), len(tcpAfter))
	}

	// config check of the running config, and run --dry-run: the same.
	if res := runCLI(t, exec.CommandContext(ctx, natwallBin, "config", "check", a.config)); res.code != 0 || !strings.HasPrefix(res.stdout, "ok: ") {
		t.Errorf("config check of the running config: %d %s%s", res.code, res.stdout, res.stderr)
	}
	if res := runCLI(t, exec.CommandContext(ctx, natwallBin, "run", "--dry-run", "-c", a.config)); res.code != 0 {
		t.Errorf("run --dry-run of the running config: %d %s%s", res.code, res.stdout, res.stderr)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("interfaces: [eth0]\ninside_networks: [198.18.0.0/24]\nconntrack:\n  table_size: lots\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if res := runCLI(t, exec.CommandContext(ctx, natwallBin, "config", "check", bad)); res.code != 3 || !strings.Contains(res.stderr, bad+":4:15: conntrack.table_size") {
		t.Errorf("config check of a bad config: %d %s, want exit 3 naming %s:4:15", res.code, res.stderr, bad)
	}

	// reload: a new rule applies, with a new generation.
	write(baseRules + "    - {id: web2, priority: 40, action: allow, protocol: tcp, dst_ports: [7001]}\n")
	var reloaded struct {
		OK         bool   `json:"ok"`
		Stateful   int    `json:"stateful"`
		Generation uint32 `json:"generation"`
	}
	cliJSON(t, a, &reloaded, "reload")
	if !reloaded.OK || reloaded.Stateful != 5 || reloaded.Generation <= st.RuleGeneration {
		t.Errorf("reload: %+v, want 5 stateful rules in a generation after %d", reloaded, st.RuleGeneration)
	}
	ln2, err := server.NS.Listen("tcp", netip.AddrPortFrom(server.IPv4, 7001).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	go echoServer(ln2)
	if _, err := dialWithin(ctx, client.NS, netip.AddrPortFrom(server.IPv4, 7001), 5*time.Second); err != nil {
		t.Fatalf("the reloaded rule web2 does not admit 7001: %v", err)
	}

	// A broken file: reload exits 3 naming file:line:col, the last good
	// set stays, status says so, and explain --live explains the live set.
	write(baseRules + "    - {id: web2, priority: 40, action: alow, protocol: tcp, dst_ports: [7001]}\n")
	res = cli(t, a, "reload")
	if res.code != 3 || !strings.Contains(res.stderr, ruleFile+":8:40: stateful action \"alow\"") {
		t.Errorf("reload of a broken file: exit %d, stderr %s; want 3 and %s:8:40", res.code, res.stderr, ruleFile)
	}
	if _, err := dialWithin(ctx, client.NS, netip.AddrPortFrom(server.IPv4, 7001), 5*time.Second); err != nil {
		t.Errorf("after a broken reload the last good set should still admit 7001: %v", err)
	}
	cliJSON(t, a, &st, "status")
	if st.LastReload == nil || st.LastReload.OK || len(st.LastReload.Errors) != 1 || !strings.HasPrefix(st.LastReload.Errors[0], ruleFile+":8:40:") ||
		st.RuleGeneration != reloaded.Generation {
		t.Errorf("status after a broken reload: generation %d, last reload %+v", st.RuleGeneration, st.LastReload)
	}
	var ex struct {
		Decisions []struct{ Stage, Rule, Action, At string }
	}
	cliJSON(t, a, &ex, "explain", "--live", "--src", client.IPv4.String(), "--dst", server.IPv4.String(), "--dport", "7001")
	if d := ex.Decisions[len(ex.Decisions)-1]; d.Rule != "web2" || d.Action != "allow" || d.At != ruleFile+":8:7" {
		t.Errorf("explain --live: %+v, want the live rule web2 at %s:8:7", d, ruleFile)
	}
	if res := runCLI(t, exec.CommandContext(ctx, natwallBin, "config", "check", a.config)); res.code != 3 || !strings.Contains(res.stderr, ruleFile+":8:40:") {
		t.Errorf("config check with the broken rule file: %d %s", res.code, res.stderr)
	}

	// Every format of every listing works against the live daemon.
	for _, args := range [][]string{{"status"}, {"rules"}, {"conntrack", "list"}, {"nat"}} {
		for _, format := range []string{"table", "wide", "json", "yaml"} {
			if res := cli(t, a, append(args, "-o", format)...); res.code != 0 || res.stdout == "" {
				t.Errorf("natwall %v -o %s: exit %d, %d bytes, %s", args, format, res.code, len(res.stdout), res.stderr)
			}
		}
	}

	// flush --all empties the table.
	if res := cli(t, a, "conntrack", "flush", "--all"); res.code != 0 || !strings.HasPrefix(res.stdout, "flushed ") || res.stdout == "flushed 0 flows\n" {
		t.Errorf("conntrack flush --all: %d %q %s", res.code, res.stdout, res.stderr)
	}
	cliJSON(t, a, &flows, "conntrack", "list")
	if len(flows) != 0 {
		t.Errorf("%d flows left after flush --all: %v", len(flows), flows)
	}

	// The daemon gone: its socket too, and the CLI says it is unreachable.
	a.stop(t)
	if _, err := os.Lstat(a.socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("api socket after stop: %v", err)
	}
	if res := cli(t, a, "status"); res.code != 4 || !strings.Contains(res.stderr, "cannot reach natwall at "+a.socket) {
		t.Errorf("status with the daemon stopped: %d %s, want 4", res.code, res.stderr)
	}
}

// TestSecondDaemonRefusedBySocket starts a second natwall run on the first
// one's API socket: it must exit non-zero, naming the socket, and leave the
// first one serving.
func TestSecondDaemonRefusedBySocket(t *testing.T) {
	l := newLab(t, lab.Options{Shape: lab.TwoNIC})
	a := startNatwall(t, l, "")
	pinDir := fmt.Sprintf("/sys/fs/bpf/natwall-test-%d-%d", os.Getpid(), pinCounter.Add(1))
	t.Cleanup(func() { os.RemoveAll(pinDir) })
	config := filepath.Join(t.TempDir(), "second.yaml")
	// Its own pin directory and metrics port, the first one's socket.
	cfg := strings.Replace(natwallConfig(l, pinDir, ""), apiSocket(pinDir), a.socket, 1)
	cfg = strings.Replace(cfg, metricsListen, "127.0.0.1:9618", 1)
	if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	// In the appliance, where its interfaces are: the socket must be what
	// stops it.
	proc, err := l.Appliance.Start(natwallBin, "run", "--config", config)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-proc.Done():
	case <-time.After(20 * time.Second):
		proc.Stop()
		t.Fatalf("the second natwall still runs 20s after its start:\n%s", proc.Output())
	}
	if err := proc.Wait(); err == nil || !strings.Contains(proc.Output(), a.socket) || !strings.Contains(proc.Output(), "in use") {
		t.Errorf("second natwall run on a live socket: %v, output:\n%s", err, proc.Output())
	}
	if _, err := os.Stat(pinDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused daemon pinned %s: %v", pinDir, err)
	}
	if res := cli(t, a, "status", "-o", "json"); res.code != 0 {
		t.Errorf("the first daemon's api after the refused start: %d %s", res.code, res.stderr)
	}
}
