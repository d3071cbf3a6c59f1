package controlplane

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/natwall/natwall/dataplane"
)

func TestCollector(t *testing.T) {
	twoNICs := []dataplane.Attachment{
		{Interface: "eth0", Ifindex: 2, Mode: dataplane.ModeNative},
		{Interface: "eth1", Ifindex: 3, Mode: dataplane.ModeGeneric, FellBack: true},
	}
	counts := []dataplane.ReasonCount{
		{Reason: dataplane.ReasonFwdTX, Packets: 10, Bytes: 1500},
		{Reason: dataplane.ReasonPassNoNeigh, Packets: 2, Bytes: 120},
		{Reason: dataplane.ReasonMalformedIPv4, Packets: 1, Bytes: 60},
	}
	const packetsHead = `
# HELP natwall_packets_total Packets the XDP program finished with, by the reason it gave and that reason's verdict.
# TYPE natwall_packets_total counter
`
	const bytesHead = `
# HELP natwall_bytes_total Bytes of the packets in natwall_packets_total.
# TYPE natwall_bytes_total counter
`
	const attachedHead = `
# HELP natwall_xdp_attached 1 while natwall's XDP program is attached to every configured interface, as the kernel reports it; 0 otherwise.
# TYPE natwall_xdp_attached gauge
`
	const fallbackHead = `
# HELP natwall_xdp_generic_fallback 1 when the interface's driver refused native XDP and the program runs in the much slower generic mode.
# TYPE natwall_xdp_generic_fallback gauge
`
	const errorsHead = `
# HELP natwall_scrape_errors_total Scrapes that could not read the dataplane's counters; the packet and byte series are missing from those scrapes.
# TYPE natwall_scrape_errors_total counter
`
	tests := []struct {
		name        string
		attached    bool
		attachments []dataplane.Attachment
		countersErr error
		want        string
	}{
		{
			name: "attached, one NIC fell back", attached: true, attachments: twoNICs,
			want: packetsHead + `
natwall_packets_total{reason="fwd_tx",verdict="forward"} 10
natwall_packets_total{reason="pass_no_neigh",verdict="pass"} 2
natwall_packets_total{reason="malformed_ipv4",verdict="malformed"} 1
` + bytesHead + `
natwall_bytes_total{reason="fwd_tx",verdict="forward"} 1500
natwall_bytes_total{reason="pass_no_neigh",verdict="pass"} 120
natwall_bytes_total{reason="malformed_ipv4",verdict="malformed"} 60
` + attachedHead + `
natwall_xdp_attached{interface="eth0",mode="native"} 1
natwall_xdp_attached{interface="eth1",mode="generic"} 1
` + fallbackHead + `
natwall_xdp_generic_fallback{interface="eth0"} 0
natwall_xdp_generic_fallback{interface="eth1"} 1
` + errorsHead + `
natwall_scrape_errors_total 0
`,
		},
		{
			name: "program gone from a NIC", attached: false, attachments: twoNICs[:1],
			want: packetsHead + `
natwall_packets_total{reason="fwd_tx",verdict="forward"} 10
natwall_packets_total{reason="pass_no_neigh",verdict="pass"} 2
natwall_packets_total{reason="malformed_ipv4",verdict="malformed"} 1
` + bytesHead + `
natwall_bytes_total{reason="fwd_tx",verdict="forward"} 1500
natwall_bytes_total{reason="pass_no_neigh",verdict="pass"} 120
natwall_bytes_total{reason="malformed_ipv4",verdict="malformed"} 60
` + attachedHead + `
natwall_xdp_attached{interface="eth0",mode="native"} 0
` + fallbackHead + `
natwall_xdp_generic_fallback{interface="eth0"} 0
` + errorsHead + `
natwall_scrape_errors_total 0
`,
		},
		{
			name: "counters unreadable: series left out, error counted", attached: true, attachments: twoNICs[:1],
			countersErr: errors.New("map lookup: bad file descriptor"),
			want: attachedHead + `
natwall_xdp_attached{interface="eth0",mode="native"} 1
` + fallbackHead + `
natwall_xdp_generic_fallback{interface="eth0"} 0
` + errorsHead + `
natwall_scrape_errors_total 1
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dp := &fakeDataplane{attachments: tt.attachments}
			dp.attached.Store(tt.attached)
			dp.setCounters(counts, tt.countersErr)
			c := NewCollector(dp, slog.New(slog.DiscardHandler))
			err := testutil.CollectAndCompare(c, strings.NewReader(tt.want),
				"natwall_packets_total", "natwall_bytes_total", "natwall_xdp_attached",
				"natwall_xdp_generic_fallback", "natwall_scrape_errors_total")
			if err != nil {
				t.Error(err)
			}
			problems, err := testutil.CollectAndLint(c)
			if err != nil || len(problems) != 0 {
				t.Errorf("lint: %v %v", problems, err)
			}
		})
	}
}

func TestCollectorScrapeErrorsAccumulate(t *testing.T) {
	dp := &fakeDataplane{}
	dp.setCounters(nil, errors.New("gone"))
	c := NewCollector(dp, slog.New(slog.DiscardHandler))
	for range 3 {
		testutil.CollectAndCount(c)
	}
	dp.setCounters([]dataplane.ReasonCount{{Reason: dataplane.ReasonFwdTX, Packets: 1, Bytes: 64}}, nil)
	want := `
# HELP natwall_scrape_errors_total Scrapes that could not read the dataplane's counters; the packet and byte series are missing from those scrapes.
# TYPE natwall_scrape_errors_total counter
natwall_scrape_errors_total 3
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "natwall_scrape_errors_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(c, "natwall_packets_total"); n != 1 {
		t.Errorf("natwall_packets_total series after recovery = %d, want 1", n)
	}
}

func TestCollectorBuildInfo(t *testing.T) {
	bi := ReadBuildInfo()
	want := fmt.Sprintf(`
# HELP natwall_build_info Always 1; the labels identify the running natwall binary.
# TYPE natwall_build_info gauge
natwall_build_info{goversion=%q,revision=%q,version=%q} 1
`, bi.GoVersion, bi.Revision, bi.Version)
	c := NewCollector(&fakeDataplane{}, slog.New(slog.DiscardHandler))
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "natwall_build_info"); err != nil {
		t.Error(err)
	}
}

func TestReadBuildInfoVersionFromLdflags(t *testing.T) {
	old := Version
	t.Cleanup(func() { Version = old })
	Version = "v9.8.7"
	if got := ReadBuildInfo().Version; got != "v9.8.7" {
		t.Errorf("ReadBuildInfo().Version = %q, want the -X value v9.8.7", got)
	}
	Version = ""
	if got := ReadBuildInfo().Version; got == "" {
		t.Error("ReadBuildInfo().Version is empty without -X")
	}
}
