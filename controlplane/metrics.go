package controlplane

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	packetsDesc = prometheus.NewDesc("natwall_packets_total",
		"Packets the XDP program finished with, by the reason it gave and that reason's verdict.",
		[]string{"reason", "verdict"}, nil)
	bytesDesc = prometheus.NewDesc("natwall_bytes_total",
		"Bytes of the packets in natwall_packets_total.",
		[]string{"reason", "verdict"}, nil)
	attachedDesc = prometheus.NewDesc("natwall_xdp_attached",
		"1 while natwall's XDP program is attached to every configured interface, as the kernel reports it; 0 otherwise.",
		[]string{"interface", "mode"}, nil)
	fallbackDesc = prometheus.NewDesc("natwall_xdp_generic_fallback",
		"1 when the interface's driver refused native XDP and the program runs in the much slower generic mode.",
		[]string{"interface"}, nil)
	buildInfoDesc = prometheus.NewDesc("natwall_build_info",
		"Always 1; the labels identify the running natwall binary.",
		[]string{"version", "revision", "goversion"}, nil)
)

// Collector exports the dataplane's state, read from the kernel at scrape
// time, so that a scrape never shows a stale copy.
type Collector struct {
	dp           DataplaneState
	log          *slog.Logger
	build        BuildInfo
	scrapeErrors prometheus.Counter
}

// NewCollector returns a Collector over dp; register it with a prometheus.Registry.
func NewCollector(dp DataplaneState, log *slog.Logger) *Collector {
	return &Collector{
		dp:    dp,
		log:   log,
		build: ReadBuildInfo(),
		scrapeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "natwall_scrape_errors_total",
			Help: "Scrapes that could not read the dataplane's counters; the packet and byte series are missing from those scrapes.",
		}),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- packetsDesc
	ch <- bytesDesc
	ch <- attachedDesc
	ch <- fallbackDesc
	ch <- buildInfoDesc
	c.scrapeErrors.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(buildInfoDesc, prometheus.GaugeValue, 1,
		c.build.Version, c.build.Revision, c.build.GoVersion)

	attached := 0.0
	if c.dp.Attached() {
		attached = 1
	}
	for _, a := range c.dp.Attachments() {
		ch <- prometheus.MustNewConstMetric(attachedDesc, prometheus.GaugeValue, attached, a.Interface, a.Mode.String())
		fellBack := 0.0
		if a.FellBack {
			fellBack = 1
		}
		ch <- prometheus.MustNewConstMetric(fallbackDesc, prometheus.GaugeValue, fellBack, a.Interface)
	}

	counts, err := c.dp.Counters()
	if err != nil {
		// Leaving the series out, rather than reporting zeros, keeps
		// rate() from seeing a counter reset.
		c.scrapeErrors.Inc()
		c.log.Error("read dataplane counters for metrics", "error", err)
		counts = nil
	}
	for _, rc := range counts {
		reason, verdict := rc.Reason.Name(), rc.Reason.Verdict()
		ch <- prometheus.MustNewConstMetric(packetsDesc, prometheus.CounterValue, float64(rc.Packets), reason, verdict)
		ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.CounterValue, float64(rc.Bytes), reason, verdict)
	}
	c.scrapeErrors.Collect(ch)
}
