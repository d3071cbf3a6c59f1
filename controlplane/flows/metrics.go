package flows

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/natwall/natwall/dataplane"
)

var (
	flowsActiveDesc   = prometheus.NewDesc("natwall_flows_active", "Tracked flows at the last collection, by family.", []string{"family"}, nil)
	flowCapacityDesc  = prometheus.NewDesc("natwall_flow_table_capacity", "Flows each flow table holds.", nil, nil)
	flowsCreatedDesc  = prometheus.NewDesc("natwall_flows_created_total", "Flows the dataplane created (NAT Gateway's ConnectionAttemptCount).", []string{"family"}, nil)
	flowsEstabDesc    = prometheus.NewDesc("natwall_flows_established_total", "TCP flows that completed their handshake (ConnectionEstablishedCount).", nil, nil)
	flowsExpiredDesc  = prometheus.NewDesc("natwall_flows_expired_total", "Flows removed after their idle timeout (IdleTimeoutCount).", nil, nil)
	eventsLostDesc    = prometheus.NewDesc("natwall_flow_events_lost_total", "Flow events lost because the ring buffer was full.", nil, nil)
	eventsDesc        = prometheus.NewDesc("natwall_flow_events_total", "Flow events on the flow stream, by type.", []string{"type"}, nil)
	decodeErrorsDesc  = prometheus.NewDesc("natwall_flow_event_errors_total", "Ring buffer records that could not be read or decoded.", nil, nil)
	sinkLostDesc      = prometheus.NewDesc("natwall_flow_sink_events_lost_total", "Flow events a sink lost because its queue was full.", []string{"sink"}, nil)
	portsInUseDesc    = prometheus.NewDesc("natwall_snat_ports_in_use", "External ports mapped at the last collection, by address and protocol.", []string{"address", "protocol"}, nil)
	portsCapDesc      = prometheus.NewDesc("natwall_snat_ports_capacity", "External ports available, by address and protocol.", []string{"address", "protocol"}, nil)
	portErrorsDesc    = prometheus.NewDesc("natwall_snat_port_allocation_errors_total", "First packets dropped for want of a free external port (ErrorPortAllocation).", nil, nil)
	mappingsDesc      = prometheus.NewDesc("natwall_snat_mappings_created_total", "SNAT mappings created.", nil, nil)
	preservedDesc     = prometheus.NewDesc("natwall_snat_ports_preserved_total", "SNAT mappings that kept the inside source port.", nil, nil)
	hairpinDesc       = prometheus.NewDesc("natwall_hairpin_flows_total", "Flows from one inside host to another through its external endpoint.", nil, nil)
	icmpTranslateDesc = prometheus.NewDesc("natwall_icmp_errors_translated_total", "ICMP errors translated with the header they embed.", nil, nil)
	flowPacketsDesc   = prometheus.NewDesc("natwall_flow_packets_total", "Packets of flows that ended, by direction.", []string{"direction"}, nil)
	flowBytesDesc     = prometheus.NewDesc("natwall_flow_bytes_total", "Bytes of flows that ended, by direction.", []string{"direction"}, nil)
	earlyDropDesc     = prometheus.NewDesc("natwall_flows_early_dropped_total", "Flows that never saw a reply, evicted to make room in a full flow table.", nil, nil)
	overloadedDesc    = prometheus.NewDesc("natwall_snat_mappings_overloaded_total", "SNAT mappings that share an external port across destinations, made once an address had no free port (snat.overload).", nil, nil)
	retriedDesc       = prometheus.NewDesc("natwall_snat_claims_retried_total", "External port claims retried after a failure other than the port being taken.", nil, nil)
	filterAdmitDesc   = prometheus.NewDesc("natwall_snat_filter_admitted_total", "Inbound flows the SNAT filtering mode opened to a mapping (snat.filtering).", nil, nil)
	dnatFlowsDesc     = prometheus.NewDesc("natwall_dnat_flows_total", "Flows opened through an inbound NAT forward (dnat), hairpins included.", nil, nil)
	auditDesc         = prometheus.NewDesc("natwall_audit_matches_total", "First packets an audit rule or audit default would have denied and let through (mode: audit).", nil, nil)
	loggedDesc        = prometheus.NewDesc("natwall_decisions_logged_total", "Deny and reject decisions of rules with log: true reported as alerts.", nil, nil)
	logSuppressedDesc = prometheus.NewDesc("natwall_decisions_log_suppressed_total", "Logged decisions and audit matches over the per-CPU budget of alert events, counted but not reported.", nil, nil)
	atQuotaDesc       = prometheus.NewDesc("natwall_snat_hosts_at_quota", "Inside hosts holding their whole SNAT port quota of some protocol at the last collection (snat.host_quota).", nil, nil)
)

// Metrics exports the flow stream, the collector and the dataplane's flow
// and NAT statistics. A scrape reads only per-CPU counter arrays and what
// the last collection counted: its cost does not grow with flows.
type Metrics struct {
	Stream    *Stream
	Collector *Collector
	State     *dataplane.State
	Log       *slog.Logger
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{flowsActiveDesc, flowCapacityDesc, flowsCreatedDesc, flowsEstabDesc, flowsExpiredDesc,
		eventsLostDesc, eventsDesc, decodeErrorsDesc, sinkLostDesc, portsInUseDesc, portsCapDesc, portErrorsDesc, mappingsDesc,
		preservedDesc, hairpinDesc, icmpTranslateDesc, flowPacketsDesc, flowBytesDesc, earlyDropDesc, overloadedDesc,
		retriedDesc, filterAdmitDesc, atQuotaDesc, dnatFlowsDesc, auditDesc, loggedDesc, logSuppressedDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	s := m.Stream
	for i, name := range []string{"flow_start", "flow_end", "alert", "flow_active"} {
		counter(eventsDesc, s.byType[i].Load(), name)
	}
	counter(decodeErrorsDesc, s.decodeErrors.Load())
	for _, l := range s.Losses() {
		counter(sinkLostDesc, l.Lost, l.Sink)
	}
	counter(flowPacketsDesc, s.packetsOrig.Load(), "original")
	counter(flowPacketsDesc, s.packetsReply.Load(), "reply")
	counter(flowBytesDesc, s.bytesOrig.Load(), "original")
	counter(flowBytesDesc, s.bytesReply.Load(), "reply")

	var expired uint64
	if m.Collector != nil {
		res, n, ok := m.Collector.Last()
		expired = n
		if ok {
			gauge(flowsActiveDesc, float64(res.Usage.FlowsV4), "ipv4")
			gauge(flowsActiveDesc, float64(res.Usage.FlowsV6), "ipv6")
			gauge(flowCapacityDesc, float64(res.Usage.Capacity))
			gauge(atQuotaDesc, float64(res.HostsAtQuota))
			for _, u := range res.SNAT {
				gauge(portsInUseDesc, float64(u.Mappings), u.Addr.String(), dataplane.ProtoName(u.Proto))
				gauge(portsCapDesc, float64(u.Capacity), u.Addr.String(), dataplane.ProtoName(u.Proto))
			}
		}
	}
	if m.State == nil {
		return
	}
	if stats, err := m.State.Stats(); err == nil {
		counter(flowsCreatedDesc, stats[dataplane.StatFlowsNewV4], "ipv4")
		counter(flowsCreatedDesc, stats[dataplane.StatFlowsNewV6], "ipv6")
		counter(flowsEstabDesc, stats[dataplane.StatFlowsEstablished])
		counter(flowsExpiredDesc, expired+stats[dataplane.StatFlowsExpiredInDP])
		counter(eventsLostDesc, stats[dataplane.StatEventsLost])
		counter(mappingsDesc, stats[dataplane.StatSNATNewMapping])
		counter(preservedDesc, stats[dataplane.StatSNATPortPreserved])
		counter(hairpinDesc, stats[dataplane.StatHairpin])
		counter(icmpTranslateDesc, stats[dataplane.StatICMPErrTranslated])
		counter(earlyDropDesc, stats[dataplane.StatFlowsEarlyDropped])
		counter(overloadedDesc, stats[dataplane.StatSNATOverloaded])
		counter(retriedDesc, stats[dataplane.StatSNATRetried])
		counter(filterAdmitDesc, stats[dataplane.StatSNATFilterAdmit])
		counter(dnatFlowsDesc, stats[dataplane.StatDNATFlows])
		counter(auditDesc, stats[dataplane.StatAuditMatched])
		counter(loggedDesc, stats[dataplane.StatDecisionLogged])
		counter(logSuppressedDesc, stats[dataplane.StatLogSuppressed])
	} else {
		m.Log.Error("read dataplane stats", "error", err)
	}
	if counts, err := m.State.Counters(); err == nil {
		for _, c := range counts {
			if c.Reason == dataplane.ReasonDropSNATExhausted {
				counter(portErrorsDesc, c.Packets)
			}
		}
	}
}
