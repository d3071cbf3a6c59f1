package inspect

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/natwall/natwall/controlplane/flowlog"
	"github.com/natwall/natwall/dataplane"
	"github.com/natwall/natwall/rules"
)

// Capture runs a pcap or pcapng capture's TCP flows through the stateful
// stage of tbl (compiled from rs) and, for PENDING ones, an Inspector
// with the default bounds, as natwall would decide them, and writes an
// EVE alert to w for every alert rule hit and every deny or reject
// decision (natwall inspect). ep gives the directions. Only errors
// reading the capture are returned.
func Capture(w io.Writer, pcapPath string, rs *rules.RuleSet, tbl *rules.Tables, ep rules.Endpoints, cfg Config) error {
	inside, local := ep.Inside, ep.Local
	file, err := os.Open(pcapPath)
	if err != nil {
		return err
	}
	defer file.Close()
	src, err := openCapture(file)
	if err != nil {
		return fmt.Errorf("%s: %w", pcapPath, err)
	}
	o := &offlineInspector{
		rs: rs, tbl: tbl, inside: inside, local: local,
		in:    New(cfg),
		flows: make(map[Key]*offlineFlow),
		frags: make(map[fragKey]Key),
		out:   w,
	}
	o.enc = flowlog.Encoder{Rules: stageNames{rs.Stateful, tbl.Stateful}}
	for {
		data, ci, err := src.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: %w", pcapPath, err)
		}
		if ip := networkBytes(data, src.LinkType()); ip != nil {
			if err := o.packet(ip, ci.Timestamp); err != nil {
				return err
			}
		}
	}
	return o.flush()
}

type captureSource interface {
	ReadPacketData() ([]byte, gopacket.CaptureInfo, error)
	LinkType() layers.LinkType
}

// openCapture reads pcap, or else pcapng.
func openCapture(f *os.File) (captureSource, error) {
	if r, err := pcapgo.NewReader(f); err == nil {
		return r, nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	r, err := pcapgo.NewNgReader(f, pcapgo.DefaultNgReaderOptions)
	if err != nil {
		return nil, fmt.Errorf("neither pcap nor pcapng: %w", err)
	}
	return r, nil
}

// networkBytes is the IP packet a captured frame carries, nil if none.
func networkBytes(data []byte, lt layers.LinkType) []byte {
	pkt := gopacket.NewPacket(data, lt, gopacket.DecodeOptions{NoCopy: true, Lazy: true})
	var prev gopacket.Layer
	for _, l := range pkt.Layers() {
		switch l.LayerType() {
		case layers.LayerTypeIPv4, layers.LayerTypeIPv6:
			if prev == nil {
				return data
			}
			return prev.LayerPayload()
		}
		prev = l
	}
	return nil
}

// stageNames names the stateful stage's rules for the EVE records.
type stageNames struct {
	rules []rules.Rule
	st    *rules.StageTables
}

func (s stageNames) Rule(n uint32) (flowlog.Rule, bool) {
	for i, id := range s.st.RuleIDs {
		if id == n {
			return flowlog.Rule{ID: s.rules[i].ID, Action: s.rules[i].Action.String()}, true
		}
	}
	return flowlog.Rule{}, false
}

type offlineFlow struct {
	isn1    uint32
	packet  rules.Packet
	pending int
	done    bool
}

type fragKey struct {
	src, dst netip.Addr
	id       uint32
}

type offlineInspector struct {
	rs            *rules.RuleSet
	tbl           *rules.Tables
	inside, local []netip.Prefix
	in            *Inspector
	flows         map[Key]*offlineFlow
	frags         map[fragKey]Key
	enc           flowlog.Encoder
	out           io.Writer
	buf           []byte
	last          time.Time
}

func (o *offlineInspector) packet(ip []byte, ts time.Time) error {
	o.last = ts
	for _, r := range o.in.Sweep(ts) {
		o.decided(r, ts)
	}
	var p Parsed
	if !ParseIP(ip, &p) || p.Proto != 6 {
		return nil
	}
	var key Key
	if p.IsFragment() && p.FragOff != 0 {
		// Only the first fragment has ports: the rest follow it.
		k, ok := o.frags[fragKey{p.Src, p.Dst, p.FragID}]
		if !ok {
			return nil
		}
		key = k
	} else {
		if !ParseTCP(&p) {
			return nil
		}
		key = Key{Src: p.Src, Dst: p.Dst, SrcPort: p.SrcPort, DstPort: p.DstPort}
		if p.IsFragment() {
			o.frags[fragKey{p.Src, p.Dst, p.FragID}] = key
		}
	}
	const syn, ack = 0x02, 0x10
	fl := o.flows[key]
	if fl == nil && !p.IsFragment() && p.Flags&(syn|ack) == syn {
		return o.firstPacket(key, &p)
	}
	if fl == nil || fl.done || fl.pending < 0 {
		return nil
	}
	if !p.IsFragment() && len(p.Payload) == 0 {
		return nil // the handshake passes
	}
	r, err := o.in.Feed(key, fl.isn1, ip, ts)
	if err != nil || !r.Decided {
		return nil
	}
	o.decided(r, ts)
	return nil
}

// firstPacket runs a flow's SYN through the stateful stage, as the
// dataplane does: decided, or PENDING at a rule with an L7 condition.
func (o *offlineInspector) firstPacket(key Key, p *Parsed) error {
	pkt := rules.Packet{Src: key.Src, Dst: key.Dst, Protocol: 6, SrcPort: key.SrcPort, DstPort: key.DstPort, HasPorts: true,
		Direction: rules.DirectionOf(key.Src, key.Dst, o.inside, o.local)}
	fl := &offlineFlow{isn1: p.Seq + 1, packet: pkt, pending: -1}
	o.flows[key] = fl
	st := o.tbl.Stateful
	rule, alerts := st.Lookup(pkt)
	if rule >= 0 && st.L7 != nil && st.L7[rule] {
		fl.pending = rule
		return nil
	}
	fl.done = true
	o.report(pkt, alerts, rule, rules.L7Info{}, false, o.last)
	return nil
}

func (o *offlineInspector) decided(r Result, ts time.Time) {
	fl := o.flows[r.Key]
	if fl == nil || fl.done {
		return
	}
	fl.done = true
	if r.Outcome == rules.OutcomeDeny {
		// Denied without consulting a rule (conflicting bytes, a
		// malformed hello): reported under the pending rule.
		o.alert(fl.packet, fl.pending, true, r.Info, ts)
		return
	}
	rule, alerts := Decide(o.tbl.Stateful, o.rs.Stateful, fl.packet, fl.pending, r.Info)
	o.report(fl.packet, alerts, rule, r.Info, true, ts)
}

func (o *offlineInspector) report(p rules.Packet, alerts []int, rule int, info rules.L7Info, l7 bool, ts time.Time) {
	for _, a := range alerts {
		o.alertInfo(p, a, false, info, l7, ts)
	}
	if rule >= 0 {
		switch o.tbl.Stateful.Actions[rule] {
		case rules.Deny, rules.Reject:
			o.alertInfo(p, rule, true, info, l7, ts)
		}
	}
}

func (o *offlineInspector) alert(p rules.Packet, rule int, blocked bool, info rules.L7Info, ts time.Time) {
	o.alertInfo(p, rule, blocked, info, true, ts)
}

func (o *offlineInspector) alertInfo(p rules.Packet, rule int, blocked bool, info rules.L7Info, l7 bool, ts time.Time) {
	ev := dataplane.FlowEvent{Type: dataplane.FlowAlert, Time: ts, Logged: true, Flow: dataplane.Flow{
		Proto: 6, Src: netip.AddrPortFrom(p.Src, p.SrcPort), Dst: netip.AddrPortFrom(p.Dst, p.DstPort),
		Zone: dataplane.Zone(p.Direction.ZoneNumber()), RuleID: o.tbl.Stateful.RuleIDs[rule],
	}}
	if blocked {
		ev.Reason = dataplane.ReasonDropACLDeny
		if o.tbl.Stateful.Actions[rule] == rules.Reject {
			ev.Reason = dataplane.ReasonDropACLReject
		}
	}
	var app flowlog.L7
	if l7 && info.Proto != rules.AppUnknown {
		app = flowlog.L7{Proto: info.Proto.String(), Name: info.Name}
	}
	o.buf = o.enc.AppendL7Alert(o.buf[:0], &ev, app)
	o.out.Write(o.buf)
}

// flush decides the flows still held when the capture ends, as their
// hold time would.
func (o *offlineInspector) flush() error {
	for _, r := range o.in.Sweep(o.last.Add(24 * time.Hour)) {
		o.decided(r, o.last)
	}
	return nil
}
