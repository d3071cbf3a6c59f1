package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/cilium/ebpf/ringbuf"
)

// ReasonNone is a flow event's reason when none applies: a flow that
// started, or ended on its idle timeout.
const ReasonNone = natwallNwReasonNW_REASON_NONE

// FlowEventType says whether a flow started or ended.
type FlowEventType uint8

const (
	FlowStarted FlowEventType = FlowEventType(natwallNwEventTypeNW_EVENT_FLOW_NEW)
	FlowEnded   FlowEventType = FlowEventType(natwallNwEventTypeNW_EVENT_FLOW_END)
	FlowAlert   FlowEventType = FlowEventType(natwallNwEventTypeNW_EVENT_ALERT)
	// FlowActive is a long flow's periodic report, which the control
	// plane's collector makes from its walk; the dataplane never sends it.
	FlowActive FlowEventType = 128
)

func (t FlowEventType) String() string {
	switch t {
	case FlowStarted:
		return "flow_start"
	case FlowEnded:
		return "flow_end"
	case FlowAlert:
		return "alert"
	case FlowActive:
		return "flow_active"
	}
	return fmt.Sprintf("event_%d", uint8(t))
}

// FlowEvent is a flow's start or end, or an alert rule's match, as the
// dataplane reported it (or, for ByGC ends and FlowActive, the collector).
type FlowEvent struct {
	Type FlowEventType
	Time time.Time
	Flow Flow
	// Reason ended or admitted the flow; ReasonNone for a plain expiry.
	Reason Reason
	// ByGC is set on flow ends that the control plane's collector produced
	// for flows it removed, rather than the dataplane.
	ByGC bool
	// Shutdown marks the flow ends a stopping daemon reports for the flows
	// still live when it detaches the dataplane (on_exit: detach), which
	// removes them; ByGC is set too.
	Shutdown bool
	// Audit marks an alert of an audit rule or default: it would have
	// denied, and the packet went on.
	Audit bool
	// Logged marks an alert reporting a deny or reject decision of a rule
	// with logging on; Reason is the decision's.
	Logged bool
}

// EventReader reads flow events from the dataplane's ring buffer.
type EventReader struct {
	rd  *ringbuf.Reader
	clk monoClock
	rec ringbuf.Record
	// batch is how long the reader waits after draining the ring before
	// it blocks in epoll again, so a burst costs one wakeup per batch
	// instead of one per event.
	batch time.Duration
	// drained is set when the last read found the ring empty.
	drained bool
}

// EventBatchInterval bounds how late an event is delivered: under load the
// reader wakes at most once per interval.
const EventBatchInterval = 20 * time.Millisecond

// Events opens a reader of the dataplane's flow events. There is one ring
// buffer: run one reader per dataplane.
func (d *Dataplane) Events() (*EventReader, error) {
	rd, err := ringbuf.NewReader(d.objs.NwEvents)
	if err != nil {
		return nil, fmt.Errorf("open flow event ring buffer: %w", err)
	}
	return &EventReader{rd: rd, clk: newMonoClock(), batch: EventBatchInterval}, nil
}

// Read blocks until an event arrives. After Close it returns an error
// matching os.ErrClosed.
func (r *EventReader) Read() (FlowEvent, error) {
	var ev FlowEvent
	err := r.ReadInto(&ev)
	return ev, err
}

// ReadInto is Read into a caller-owned event; it does not allocate.
func (r *EventReader) ReadInto(ev *FlowEvent) error {
	if r.drained && r.rd.AvailableBytes() == 0 {
		// The ring was empty last time: let a burst accumulate before
		// paying for another wakeup. The kernel only wakes a reader that
		// has caught up, so while we sleep submits cost no wakeup.
		time.Sleep(r.batch)
	}
	if err := r.rd.ReadInto(&r.rec); err != nil {
		if errors.Is(err, ringbuf.ErrClosed) {
			return os.ErrClosed
		}
		return err
	}
	r.drained = r.rd.AvailableBytes() == 0
	if err := DecodeFlowEvent(r.rec.RawSample, r.clk, ev); err != nil {
		return err
	}
	return nil
}

// Drained reports whether the last read emptied the ring: a reader that
// hands events on in batches passes them on now.
func (r *EventReader) Drained() bool { return r.drained }

// Close unblocks Read.
func (r *EventReader) Close() error { return r.rd.Close() }

// flowEventSize is sizeof(struct nw_flow_event).
const flowEventSize = 144

func eventAddr(family uint8, b []byte) netip.Addr {
	if family == 4 {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16([16]byte(b[:16]))
}

// DecodeFlowEvent decodes a struct nw_flow_event into ev field by field,
// without reflection or allocation.
func DecodeFlowEvent(b []byte, clk monoClock, ev *FlowEvent) error {
	if len(b) < flowEventSize {
		return fmt.Errorf("decode flow event: %d bytes, want %d", len(b), flowEventSize)
	}
	ne := binary.NativeEndian
	be := binary.BigEndian
	family := b[9]
	flags := b[21]
	alert := b[22]
	*ev = FlowEvent{
		Type:   FlowEventType(b[8]),
		Time:   clk.time(ne.Uint64(b[0:])),
		Reason: Reason(ne.Uint32(b[12:])),
		Flow: Flow{
			Proto:        b[10],
			TCPState:     TCPState(b[11]),
			RuleID:       ne.Uint32(b[16:]),
			Zone:         Zone(b[20]),
			SNAT:         flags&uint8(natwallNwCtFlagsNW_CT_SNAT) != 0,
			DNAT:         flags&uint8(natwallNwCtFlagsNW_CT_DNAT) != 0,
			SeenReply:    flags&uint8(natwallNwCtFlagsNW_CT_SEEN_REPLY) != 0,
			Src:          netip.AddrPortFrom(eventAddr(family, b[24:40]), be.Uint16(b[88:])),
			Dst:          netip.AddrPortFrom(eventAddr(family, b[40:56]), be.Uint16(b[90:])),
			ReplySrc:     netip.AddrPortFrom(eventAddr(family, b[72:88]), be.Uint16(b[94:])),
			ReplyDst:     netip.AddrPortFrom(eventAddr(family, b[56:72]), be.Uint16(b[92:])),
			PacketsOrig:  ne.Uint64(b[96:]),
			BytesOrig:    ne.Uint64(b[104:]),
			PacketsReply: ne.Uint64(b[112:]),
			BytesReply:   ne.Uint64(b[120:]),
		},
		Audit:  alert&uint8(natwallNwAlertFlagsNW_ALERT_AUDIT) != 0,
		Logged: alert&uint8(natwallNwAlertFlagsNW_ALERT_LOGGED) != 0,
	}
	// Alerts describe a first packet, not a flow: they carry no lifetime.
	if created := ne.Uint64(b[128:]); created != 0 {
		ev.Flow.Created = clk.time(created)
		ev.Flow.LastSeen = clk.time(ne.Uint64(b[136:]))
	}
	return nil
}
