package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/natwall/natwall/test/lab"
)

func TestParseProcCPU(t *testing.T) {
	for _, tc := range []struct {
		name, stat string
		want       time.Duration
		wantErr    bool
	}{
		{name: "plain", stat: "4242 (natwall) S 1 4242 4242 0 -1 4194560 1000 0 0 0 150 25 0 0 20 0 12 0 100 0 0",
			want: 1750 * time.Millisecond},
		// A command name may hold spaces and parentheses; the fields count
		// from the last one.
		{name: "name with ) and spaces", stat: "7 (a) b (c) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0",
			want: 70 * time.Millisecond},
		{name: "no name", stat: "4242 natwall S 1", wantErr: true},
		{name: "truncated", stat: "4242 (natwall) S 1 4242 4242 0 -1 4194560 1000 0 0 0 150", wantErr: true},
		{name: "not a number", stat: "1 (x) S 1 1 1 0 -1 0 0 0 0 0 1x 2 0", wantErr: true},
		{name: "negative", stat: "1 (x) S 1 1 1 0 -1 0 0 0 0 0 -1 2 0", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseProcCPU([]byte(tc.stat))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("parseProcCPU(%q) = %v, %v; want %v, error %v", tc.stat, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func FuzzParseProcCPU(f *testing.F) {
	f.Add([]byte("4242 (natwall) S 1 4242 4242 0 -1 4194560 1000 0 0 0 150 25 0 0 20 0 12 0 100 0 0"))
	f.Add([]byte("7 (a) b (c) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0"))
	f.Add([]byte(")"))
	f.Fuzz(func(t *testing.T, stat []byte) {
		d, err := parseProcCPU(stat)
		if err == nil && d < 0 {
			t.Fatalf("negative CPU time %v from %q", d, stat)
		}
	})
}

const metricsSample = `# HELP natwall_packets_total Packets the XDP program finished with.
# TYPE natwall_packets_total counter
natwall_packets_total{reason="fwd_redirect",verdict="forward"} 1.5e+06
natwall_packets_total{reason="drop_snat_exhausted",verdict="drop"} 42
natwall_bytes_total{reason="fwd_redirect",verdict="forward"} 9.6e+07
`

func TestParsePacketsTotal(t *testing.T) {
	got, err := parsePacketsTotal(strings.NewReader(metricsSample))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["fwd_redirect"] != 1.5e6 || got["drop_snat_exhausted"] != 42 {
		t.Errorf("got %v", got)
	}
	for _, bad := range []string{
		"", // no series: not natwall's /metrics
		`natwall_packets_total{verdict="drop"} 1`, // no reason
		`natwall_packets_total{reason="x"} one`,
		`natwall_packets_total{reason="x"`,
	} {
		if got, err := parsePacketsTotal(strings.NewReader(bad)); err == nil {
			t.Errorf("parsePacketsTotal(%q) = %v, want an error", bad, got)
		}
	}
}

func FuzzParsePacketsTotal(f *testing.F) {
	f.Add(metricsSample)
	f.Add(`natwall_packets_total{reason="x"} `)
	f.Fuzz(func(t *testing.T, text string) {
		_, _ = parsePacketsTotal(strings.NewReader(text))
	})
}

// TestDaemonConfigExhaustion checks O3X's config: the few ports, and a
// host quota as large, so that one host exhausts the address.
func TestDaemonConfigExhaustion(t *testing.T) {
	text := daemonConfig{snat: true, snatPorts: "1024-1087"}.configText("/sys/fs/bpf/x", "/run/x/s", "/tmp/x", "/tmp/x/r.yaml")
	for _, want := range []string{"port_range: 1024-1087\n", "host_quota: 64\n", "on_exit: detach\n", "mapping: address-port-dependent\n"} {
		if !strings.Contains(text, want) {
			t.Errorf("config lacks %q:\n%s", want, text)
		}
	}
}

// TestDaemonStartFailure starts natwall run where it cannot attach (a
// namespace without the DUT's NICs): the start must fail with the
// daemon's own words, not hang until the ready timeout, and leave no pins
// or socket directory behind.
func TestDaemonStartFailure(t *testing.T) {
	lab.RequirePrivileges(t)
	if testing.Short() {
		t.Skip("builds natwall")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	scratch := t.TempDir()
	bin, err := buildNatwall(ctx, scratch)
	if err != nil {
		t.Fatal(err)
	}
	b := &bench{ctx: ctx, scratch: scratch, natwallBin: bin, topo: &topology{dut: lab.NewNetNST(t, "bench-fail")},
		pinDir: fmt.Sprintf("/sys/fs/bpf/natwall-bench-fail-%d", os.Getpid())}
	start := time.Now()
	d, err := b.startDaemon(daemonConfig{rules: natwallRules(1, "stateful")})
	if err == nil {
		d.stop()
		t.Fatal("natwall run became ready without the interfaces it attaches to")
	}
	if !strings.Contains(err.Error(), "exited before it was ready") || !strings.Contains(err.Error(), dutInIf) {
		t.Errorf("the error does not say that natwall run exited, and why: %v", err)
	}
	if took := time.Since(start); took >= daemonReadyTimeout {
		t.Errorf("the failed start took %s, the whole ready timeout", took)
	}
	for _, dir := range []string{b.pinDir, filepath.Join("/run", filepath.Base(b.pinDir))} {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind (stat: %v)", dir, err)
		}
	}
}
