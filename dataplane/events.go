package dataplane

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/cilium/ebpf/ringbuf"
)

// FlowEventType says whether a flow started or ended.
type FlowEventType uint8

const (
	FlowStarted FlowEventType = FlowEventType(natwallNwEventTypeNW_EVENT_FLOW_NEW)
	FlowEnded   FlowEventType = FlowEventType(natwallNwEventTypeNW_EVENT_FLOW_END)
)

func (t FlowEventType) String() string {
	switch t {
	case FlowStarted:
		return "flow_start"
	case FlowEnded:
		return "flow_end"
	}
	return fmt.Sprintf("event_%d", uint8(t))
}

// FlowEvent is a flow's start or end as the dataplane reported it.
type FlowEvent struct {
	Type FlowEventType
	Time time.Time
	Flow Flow
	// Reason ended or admitted the flow; ReasonNone for a plain expiry.
	Reason Reason
}

// EventReader reads flow events from the dataplane's ring buffer.
type EventReader struct {
	rd  *ringbuf.Reader
	clk monoClock
}

// Events opens a reader of the dataplane's flow events. There is one ring
// buffer: run one reader per dataplane.
func (d *Dataplane) Events() (*EventReader, error) {
	rd, err := ringbuf.NewReader(d.objs.NwEvents)
	if err != nil {
		return nil, fmt.Errorf("open flow event ring buffer: %w", err)
	}
	return &EventReader{rd: rd, clk: newMonoClock()}, nil
}

// Read blocks until an event arrives. After Close it returns an error
// matching os.ErrClosed.
func (r *EventReader) Read() (FlowEvent, error) {
	rec, err := r.rd.Read()
	if err != nil {
		if errors.Is(err, ringbuf.ErrClosed) {
			return FlowEvent{}, os.ErrClosed
		}
		return FlowEvent{}, err
	}
	var raw natwallNwFlowEvent
	if err := binary.Read(bytes.NewReader(rec.RawSample), binary.NativeEndian, &raw); err != nil {
		return FlowEvent{}, fmt.Errorf("decode flow event: %w", err)
	}
	return decodeEvent(&raw, r.clk), nil
}

// Close unblocks Read.
func (r *EventReader) Close() error { return r.rd.Close() }

func eventAddr(family uint8, b [16]uint8) netip.Addr {
	if family == 4 {
		return netip.AddrFrom4([4]byte{b[0], b[1], b[2], b[3]})
	}
	return netip.AddrFrom16(b)
}

func decodeEvent(raw *natwallNwFlowEvent, clk monoClock) FlowEvent {
	f := Flow{
		Proto:        raw.Proto,
		Src:          netip.AddrPortFrom(eventAddr(raw.Family, raw.Saddr), port(raw.Sport)),
		Dst:          netip.AddrPortFrom(eventAddr(raw.Family, raw.Daddr), port(raw.Dport)),
		ReplySrc:     netip.AddrPortFrom(eventAddr(raw.Family, raw.NatDaddr), port(raw.NatDport)),
		ReplyDst:     netip.AddrPortFrom(eventAddr(raw.Family, raw.NatSaddr), port(raw.NatSport)),
		TCPState:     TCPState(raw.TcpState),
		Zone:         Zone(raw.Zone),
		SNAT:         raw.Flags&uint8(natwallNwCtFlagsNW_CT_SNAT) != 0,
		DNAT:         raw.Flags&uint8(natwallNwCtFlagsNW_CT_DNAT) != 0,
		SeenReply:    raw.Flags&uint8(natwallNwCtFlagsNW_CT_SEEN_REPLY) != 0,
		RuleID:       raw.RuleId,
		PacketsOrig:  raw.PacketsOrig,
		BytesOrig:    raw.BytesOrig,
		PacketsReply: raw.PacketsReply,
		BytesReply:   raw.BytesReply,
	}
	return FlowEvent{Type: FlowEventType(raw.Type), Time: clk.time(raw.TimestampNs), Flow: f, Reason: Reason(raw.Reason)}
}
