package bench

import (
	"strings"
	"testing"
	"time"
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
