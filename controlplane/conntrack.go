package controlplane

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/natwall/natwall/dataplane"
)

// NATSysctls are the settings SNAT needs beyond forwarding: a translated
// packet that natwall hands to the kernel to forward (neighbour not yet
// resolved, fragmentation) carries the appliance's own address as its
// source, which the kernel otherwise drops as a martian.
//
// The kernel's ephemeral ports, which the appliance's own connections use,
// move to the top of the port space: excludeLocalPorts takes them out of
// the SNAT range, and there they cost it the fewest ports and leave inside
// clients' usual source ports (Linux 32768-60999) free to be preserved.
func NATSysctls(interfaces []string) []Sysctl {
	s := []Sysctl{{Path: localPortRange, Value: "61000\t65535"}}
	for _, dev := range interfaces {
		s = append(s, Sysctl{Path: "net/ipv4/conf/" + dev + "/accept_local", Value: "1"})
	}
	return s
}

// FlowSink receives flow events; flow logs and learning attach here.
type FlowSink interface {
	FlowEvent(dataplane.FlowEvent)
}

// flowSource is what the tracker needs of the dataplane.
type flowSource interface {
	State() *dataplane.State
	Events() (*dataplane.EventReader, error)
}

// flowTracker collects expired flows and unused SNAT mappings, drains the
// flow-event ring buffer, and exports flow and NAT metrics.
type flowTracker struct {
	src      flowSource
	log      *slog.Logger
	interval time.Duration
	sinks    []FlowSink

	mu                     sync.Mutex
	usage                  dataplane.TableUsage
	expired                uint64
	packetsOut, packetsIn  uint64
	bytesOut, bytesIn      uint64
	eventsStart, eventsEnd atomic.Uint64
	eventsAlert            atomic.Uint64
}

// run works until ctx is done.
func (t *flowTracker) run(ctx context.Context) {
	var wg sync.WaitGroup
	if rd, err := t.src.Events(); err != nil {
		t.log.Error("flow events unavailable", "error", err)
	} else {
		wg.Go(func() { t.drain(rd) })
		context.AfterFunc(ctx, func() { rd.Close() })
	}
	tick := time.NewTicker(t.interval)
	defer tick.Stop()
	t.collect()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-tick.C:
			t.collect()
		}
	}
}

func (t *flowTracker) drain(rd *dataplane.EventReader) {
	for {
		ev, err := rd.Read()
		if errors.Is(err, os.ErrClosed) {
			return
		}
		if err != nil {
			t.log.Warn("read flow event", "error", err)
			continue
		}
		switch ev.Type {
		case dataplane.FlowStarted:
			t.eventsStart.Add(1)
		case dataplane.FlowEnded:
			t.eventsEnd.Add(1)
		default:
			t.eventsAlert.Add(1)
		}
		for _, s := range t.sinks {
			s.FlowEvent(ev)
		}
	}
}

func (t *flowTracker) collect() {
	st := t.src.State()
	now := time.Now()
	gone, err := st.CollectExpired(now)
	if err != nil {
		t.log.Error("collect expired flows", "error", err)
	}
	var pOut, pIn, bOut, bIn uint64
	for _, f := range gone {
		pOut += f.PacketsOrig
		pIn += f.PacketsReply
		bOut += f.BytesOrig
		bIn += f.BytesReply
		t.log.Debug("flow expired",
			"src", f.Src.String(), "dst", f.Dst.String(), "reply_src", f.ReplySrc.String(), "reply_dst", f.ReplyDst.String(),
			"proto", f.Proto, "tcp_state", dataplane.TCPStateName(f.TCPState), "zone", dataplane.ZoneName(f.Zone),
			"rule_id", f.RuleID, "packets_orig", f.PacketsOrig, "bytes_orig", f.BytesOrig,
			"packets_reply", f.PacketsReply, "bytes_reply", f.BytesReply, "duration", f.LastSeen.Sub(f.Created).String())
	}
	if _, err := st.CollectMappings(now); err != nil {
		t.log.Error("collect SNAT mappings", "error", err)
	}
	usage, err := st.Usage()
	if err != nil {
		t.log.Error("count flows", "error", err)
	}
	t.mu.Lock()
	t.expired += uint64(len(gone))
	t.packetsOut, t.packetsIn = t.packetsOut+pOut, t.packetsIn+pIn
	t.bytesOut, t.bytesIn = t.bytesOut+bOut, t.bytesIn+bIn
	if err == nil {
		t.usage = usage
	}
	t.mu.Unlock()
}

var (
	flowsActiveDesc   = prometheus.NewDesc("natwall_flows_active", "Tracked flows at the last collection, by family.", []string{"family"}, nil)
	flowCapacityDesc  = prometheus.NewDesc("natwall_flow_table_capacity", "Flows each flow table holds.", nil, nil)
	flowsCreatedDesc  = prometheus.NewDesc("natwall_flows_created_total", "Flows the dataplane created (NAT Gateway's ConnectionAttemptCount).", []string{"family"}, nil)
	flowsEstabDesc    = prometheus.NewDesc("natwall_flows_established_total", "TCP flows that completed their handshake (ConnectionEstablishedCount).", nil, nil)
	flowsExpiredDesc  = prometheus.NewDesc("natwall_flows_expired_total", "Flows removed after their idle timeout (IdleTimeoutCount).", nil, nil)
	earlyDropDesc     = prometheus.NewDesc("natwall_flows_early_dropped_total", "Flows that never saw a reply, evicted to make room in a full flow table.", nil, nil)
	eventsLostDesc    = prometheus.NewDesc("natwall_flow_events_lost_total", "Flow events lost because the ring buffer was full.", nil, nil)
	eventsDesc        = prometheus.NewDesc("natwall_flow_events_total", "Flow events read from the dataplane, by type.", []string{"type"}, nil)
	portsInUseDesc    = prometheus.NewDesc("natwall_snat_ports_in_use", "External ports mapped, by address and protocol.", []string{"address", "protocol"}, nil)
	portsCapDesc      = prometheus.NewDesc("natwall_snat_ports_capacity", "External ports available, by address and protocol.", []string{"address", "protocol"}, nil)
	portErrorsDesc    = prometheus.NewDesc("natwall_snat_port_allocation_errors_total", "First packets dropped for want of a free external port (ErrorPortAllocation).", nil, nil)
	mappingsDesc      = prometheus.NewDesc("natwall_snat_mappings_created_total", "SNAT mappings created.", nil, nil)
	preservedDesc     = prometheus.NewDesc("natwall_snat_ports_preserved_total", "SNAT mappings that kept the inside source port.", nil, nil)
	hairpinDesc       = prometheus.NewDesc("natwall_hairpin_flows_total", "Flows from one inside host to another through its external endpoint.", nil, nil)
	icmpTranslateDesc = prometheus.NewDesc("natwall_icmp_errors_translated_total", "ICMP errors translated with the header they embed.", nil, nil)
	flowPacketsDesc   = prometheus.NewDesc("natwall_flow_packets_total", "Packets of flows that ended, by direction.", []string{"direction"}, nil)
	flowBytesDesc     = prometheus.NewDesc("natwall_flow_bytes_total", "Bytes of flows that ended, by direction.", []string{"direction"}, nil)
)

// Describe implements prometheus.Collector.
func (t *flowTracker) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{flowsActiveDesc, flowCapacityDesc, flowsCreatedDesc, flowsEstabDesc, flowsExpiredDesc,
		eventsLostDesc, eventsDesc, portsInUseDesc, portsCapDesc, portErrorsDesc, mappingsDesc, preservedDesc, hairpinDesc,
		icmpTranslateDesc, flowPacketsDesc, flowBytesDesc, earlyDropDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: dataplane stats are read now,
// occupancy comes from the last collection, which walked the tables.
func (t *flowTracker) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	st := t.src.State()
	t.mu.Lock()
	gauge(flowsActiveDesc, float64(t.usage.FlowsV4), "ipv4")
	gauge(flowsActiveDesc, float64(t.usage.FlowsV6), "ipv6")
	gauge(flowCapacityDesc, float64(t.usage.Capacity))
	expired := t.expired
	counter(flowPacketsDesc, t.packetsOut, "original")
	counter(flowPacketsDesc, t.packetsIn, "reply")
	counter(flowBytesDesc, t.bytesOut, "original")
	counter(flowBytesDesc, t.bytesIn, "reply")
	t.mu.Unlock()
	counter(eventsDesc, t.eventsStart.Load(), "flow_start")
	counter(eventsDesc, t.eventsEnd.Load(), "flow_end")
	counter(eventsDesc, t.eventsAlert.Load(), "alert")

	if stats, err := st.Stats(); err == nil {
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
	} else {
		t.log.Error("read dataplane stats", "error", err)
	}
	if counts, err := st.Counters(); err == nil {
		for _, c := range counts {
			if c.Reason == dataplane.ReasonDropSNATExhausted {
				counter(portErrorsDesc, c.Packets)
			}
		}
	}
	if usage, err := st.SNATUsage(); err == nil {
		names := map[uint8]string{6: "tcp", 17: "udp", 1: "icmp"}
		for _, u := range usage {
			gauge(portsInUseDesc, float64(u.Mappings), u.Addr.String(), names[u.Proto])
			gauge(portsCapDesc, float64(u.Capacity), u.Addr.String(), names[u.Proto])
		}
	}
}
