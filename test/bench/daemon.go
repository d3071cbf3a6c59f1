package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/natwall/natwall/controlplane/api"
	"github.com/natwall/natwall/test/lab"
)

// natwall's configurations run `natwall run` as an operator deploys it: the
// daemon with its GC, metrics and API, in the DUT's namespace, from one
// binary built per bench run.

// daemonMetricsListen is the daemon's /metrics, /readyz listener, inside
// the DUT's namespace, where no other helper's daemon can collide with it.
const daemonMetricsListen = "127.0.0.1:9617"

// daemonReadyTimeout bounds the start: loading and verifying the program
// takes seconds on a busy machine.
const daemonReadyTimeout = 60 * time.Second

// buildNatwall builds cmd/natwall into dir. It runs from any directory of
// the module: `make bench` runs from the root, go test from test/bench.
func buildNatwall(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "natwall")
	goTool := os.Getenv("GO")
	if goTool == "" {
		goTool = "go"
	}
	out, err := exec.CommandContext(ctx, goTool, "build", "-o", bin, "github.com/natwall/natwall/cmd/natwall").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build natwall: %w: %s", err, out)
	}
	return bin, nil
}

// daemonConfig is what one natwall configuration changes in the daemon's
// config.
type daemonConfig struct {
	// rules is the rule file's text.
	rules string
	snat  bool
	// snatPorts, when set, is snat.port_range (e.g. "1024-1087"); the host
	// quota is then the whole range, so that one inside host can exhaust
	// the address instead of meeting its quota first.
	snatPorts string
}

// daemon is one `natwall run` in the DUT's namespace.
type daemon struct {
	proc   *lab.Process
	ns     *lab.NetNS
	pinDir string
	socket string
	http   *http.Client
}

// configText is the daemon's YAML config. What differs from
// deploy/natwall.yaml's defaults, and why:
//   - sysctl.manage false: natwall would set loose rp_filter and other
//     settings in the DUT's namespace, which the Linux configurations
//     measured after it would then run with;
//   - conntrack.unanswered_per_source 0: the generator opens up to 64,000
//     flows from one source address in a row, which the per-source limit
//     rightly treats as a flood; the new-flow cases measure the path that
//     creates flows, not that limit;
//   - conntrack.table_size natwallFlowTable: room for every flow a
//     new-flow trial opens, as Linux's conntrack limit is raised to match;
//   - address-port-dependent mapping: ports per destination, as Linux
//     MASQUERADE allocates them.
func (dc daemonConfig) configText(pinDir, socket, stateDir, ruleFile string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "interfaces: [%s, %s]\noutside_interfaces: [%s]\nxdp_mode: native\n", dutInIf, dutOutIf, dutOutIf)
	fmt.Fprintf(&b, "inside_networks: [%s]\npin_dir: %s\non_exit: detach\nstate_dir: %s\n", insideNetwork, pinDir, stateDir)
	fmt.Fprintf(&b, "metrics:\n  listen: %s\napi:\n  socket: %s\nlog:\n  level: warn\n  format: json\nsysctl:\n  manage: false\n", daemonMetricsListen, socket)
	fmt.Fprintf(&b, "rules:\n  paths: [%s]\n", ruleFile)
	fmt.Fprintf(&b, "conntrack:\n  table_size: %d\n  unanswered_per_source: 0\n", natwallFlowTable)
	if dc.snat {
		fmt.Fprintf(&b, "snat:\n  enabled: true\n  addresses: [%s]\n  mapping: address-port-dependent\n", dutOutsideAddr.Addr())
		if dc.snatPorts != "" {
			first, last, _ := strings.Cut(dc.snatPorts, "-")
			lo, _ := strconv.Atoi(first)
			hi, _ := strconv.Atoi(last)
			fmt.Fprintf(&b, "  port_range: %s\n  host_quota: %d\n", dc.snatPorts, hi-lo+1)
		}
	}
	return b.String()
}

// startDaemon writes dc's config and rule file, runs `natwall run` in the
// DUT's namespace and waits for /readyz.
func (b *bench) startDaemon(dc daemonConfig) (*daemon, error) {
	dir, err := os.MkdirTemp(b.scratch, "daemon-")
	if err != nil {
		return nil, err
	}
	ruleFile := filepath.Join(dir, "rules.yaml")
	configFile := filepath.Join(dir, "natwall.yaml")
	d := &daemon{
		ns:     b.topo.dut,
		pinDir: b.pinDir,
		// The socket's directory is the daemon's alone, like the pins.
		socket: filepath.Join("/run", filepath.Base(b.pinDir), "natwall.sock"),
	}
	d.http = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return d.ns.Dial(ctx, network, addr)
		},
	}}
	if err := os.WriteFile(ruleFile, []byte(dc.rules), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(configFile, []byte(dc.configText(d.pinDir, d.socket, dir, ruleFile)), 0o600); err != nil {
		return nil, err
	}
	if d.proc, err = d.ns.Start(b.natwallBin, "run", "--config", configFile); err != nil {
		return nil, err
	}
	if err := d.waitReady(b.ctx); err != nil {
		return nil, errors.Join(err, d.stop())
	}
	return d, nil
}

func (d *daemon) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(daemonReadyTimeout)
	for {
		resp, err := d.get(ctx, "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("/readyz answered %s", resp.Status)
		}
		select {
		case <-d.proc.Done():
			return fmt.Errorf("natwall run exited before it was ready: %w", d.proc.Wait())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("natwall run not ready after %s (last: %v):\n%s", daemonReadyTimeout, err, d.proc.Output())
		}
	}
}

func (d *daemon) get(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+daemonMetricsListen+path, nil)
	if err != nil {
		return nil, err
	}
	return d.http.Do(req)
}

// reload asks the daemon to apply its rule file again through the API, as
// `natwall reload` does, and returns how long the rule set took to be in
// force: read, parse, compile and the swap into the kernel's tables.
func (d *daemon) reload(ctx context.Context, wantRules int) (time.Duration, error) {
	start := time.Now()
	res, err := api.NewClient(d.socket).Reload(ctx)
	took := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("reload: %w", err)
	}
	if !res.OK {
		return 0, fmt.Errorf("reload: %s %v", res.Error, res.Errors)
	}
	if got := res.Stateless + res.Stateful; got != wantRules {
		return 0, fmt.Errorf("reload applied %d rules, want %d", got, wantRules)
	}
	return took, nil
}

// cpu is the daemon's user and system CPU time so far, all threads, from
// /proc/<pid>/stat.
func (d *daemon) cpu() (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", d.proc.Pid()))
	if err != nil {
		return 0, err
	}
	return parseProcCPU(data)
}

// userHZ is the unit of /proc/<pid>/stat's times, 100 on every Linux ABI.
const userHZ = 100

// parseProcCPU reads utime and stime, fields 14 and 15, of a
// /proc/<pid>/stat line; the command name before them may hold spaces
// and parentheses, so fields count from the last ')'.
func parseProcCPU(stat []byte) (time.Duration, error) {
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("/proc/<pid>/stat: no command name")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/<pid>/stat: %d fields after the command name, want 13 or more", len(f))
	}
	var ticks int64
	for _, field := range f[11:13] {
		n, err := strconv.ParseInt(field, 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("/proc/<pid>/stat: CPU time %q", field)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// packets scrapes natwall_packets_total from /metrics, summed by reason.
func (d *daemon) packets(ctx context.Context) (map[string]float64, error) {
	resp, err := d.get(ctx, "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics answered %s", resp.Status)
	}
	return parsePacketsTotal(resp.Body)
}

// parsePacketsTotal sums the natwall_packets_total series of a Prometheus
// text exposition by their reason label.
func parsePacketsTotal(r io.Reader) (map[string]float64, error) {
	const metric = "natwall_packets_total{"
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), metric)
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(line, "} ")
		if !ok {
			return nil, fmt.Errorf("natwall_packets_total: malformed line %q", sc.Text())
		}
		reason := ""
		for _, l := range strings.Split(labels, ",") {
			if v, ok := strings.CutPrefix(l, `reason="`); ok {
				reason = strings.TrimSuffix(v, `"`)
			}
		}
		fields := strings.Fields(value)
		if reason == "" || len(fields) == 0 {
			return nil, fmt.Errorf("natwall_packets_total: malformed line %q", sc.Text())
		}
		n, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return nil, fmt.Errorf("natwall_packets_total: malformed line %q", sc.Text())
		}
		out[reason] += n
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New("no natwall_packets_total in /metrics")
	}
	return out, nil
}

// stop sends SIGTERM, which with on_exit detach removes the program and
// the pins, and makes sure of both: a daemon that had to be killed leaves
// its pins, and removing them detaches its links.
func (d *daemon) stop() error {
	errs := []error{d.proc.Stop()}
	errs = append(errs, os.RemoveAll(d.pinDir), os.RemoveAll(filepath.Dir(d.socket)))
	errs = append(errs, d.ns.Do(func() error {
		for _, dev := range []string{dutInIf, dutOutIf} {
			l, err := netlink.LinkByName(dev)
			if err != nil {
				return err
			}
			if x := l.Attrs().Xdp; x != nil && x.Attached {
				return fmt.Errorf("an XDP program (id %d) is still on %s after natwall run stopped", x.ProgId, dev)
			}
		}
		return nil
	}))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stop natwall run: %w\n%s", err, d.proc.Output())
	}
	return nil
}
