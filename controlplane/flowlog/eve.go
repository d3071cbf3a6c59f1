// Package flowlog writes the flow stream as EVE JSON, the format Suricata
// and AWS Network Firewall emit and SIEM pipelines parse: one `flow`
// record when a flow ends (and periodically while a long flow lasts), and
// one `alert` record per alert-rule match. Records are appended to a
// reused buffer field by field, without reflection or allocation.
package flowlog

import (
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/natwall/natwall/dataplane"
)

// Rule is what a record says about the rule behind a flow or alert.
type Rule struct {
	// ID is the rule's stable name (or Suricata sid).
	ID string
	// Action is the rule's action as rules spell it: allow, alert, ...
	Action string
}

// RuleNames resolves the dataplane's rule numbers. It is called from the
// sink's goroutine for every record: it must be cheap.
type RuleNames interface {
	Rule(number uint32) (Rule, bool)
}

// timeLayout is EVE's: microseconds and a numeric zone offset.
const timeLayout = "2006-01-02T15:04:05.000000-0700"

// Encoder appends EVE records. Its zero value writes times in UTC and
// names no rules.
type Encoder struct {
	Rules RuleNames
	// Location is the zone of the records' times; nil is UTC.
	Location *time.Location
}

// FlowID is a flow's EVE flow_id: a hash of its original tuple, so that an
// alert on a flow's first packet and the flow's records share it. It fits
// in 51 bits, which JSON readers that parse numbers as doubles keep exact.
func FlowID(f *dataplane.Flow) uint64 {
	var b [37]byte
	s, d := f.Src.Addr().As16(), f.Dst.Addr().As16()
	copy(b[0:], s[:])
	copy(b[16:], d[:])
	b[32], b[33] = byte(f.Src.Port()>>8), byte(f.Src.Port())
	b[34], b[35] = byte(f.Dst.Port()>>8), byte(f.Dst.Port())
	b[36] = f.Proto
	// FNV-1a, inline: hash/fnv's interface value would escape.
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h & (1<<51 - 1)
}

// hasPorts reports whether the tuple's ports are ports: for ICMP they are
// the echo identifier, which EVE does not print as a port.
func hasPorts(proto uint8) bool { return proto == 6 || proto == 17 }

// AppendEvent appends ev as one EVE line (with its newline) and reports
// whether it is a record EVE has: flow ends and active-flow reports are
// `flow` records, alerts `alert` records; flow starts are not logged.
func (e *Encoder) AppendEvent(b []byte, ev *dataplane.FlowEvent) ([]byte, bool) {
	switch ev.Type {
	case dataplane.FlowEnded, dataplane.FlowActive:
		return e.AppendFlow(b, ev), true
	case dataplane.FlowAlert:
		return e.AppendAlert(b, ev), true
	}
	return b, false
}

func (e *Encoder) header(b []byte, ev *dataplane.FlowEvent, eventType string) []byte {
	f := &ev.Flow
	b = append(b, `{"timestamp":`...)
	b = e.appendTime(b, ev.Time)
	b = append(b, `,"flow_id":`...)
	b = strconv.AppendUint(b, FlowID(f), 10)
	b = append(b, `,"event_type":"`...)
	b = append(b, eventType...)
	b = append(b, `","src_ip":`...)
	b = appendAddr(b, f.Src.Addr())
	if hasPorts(f.Proto) {
		b = append(b, `,"src_port":`...)
		b = strconv.AppendUint(b, uint64(f.Src.Port()), 10)
	}
	b = append(b, `,"dest_ip":`...)
	b = appendAddr(b, f.Dst.Addr())
	if hasPorts(f.Proto) {
		b = append(b, `,"dest_port":`...)
		b = strconv.AppendUint(b, uint64(f.Dst.Port()), 10)
	}
	b = append(b, `,"proto":`...)
	b = appendString(b, dataplane.ProtoEVEName(f.Proto))
	b = append(b, `,"direction":`...)
	b = appendString(b, dataplane.ZoneName(f.Zone))
	return b
}

// AppendFlow appends a `flow` record. The initiator is the client:
// toserver counts the original direction, toclient the reply.
func (e *Encoder) AppendFlow(b []byte, ev *dataplane.FlowEvent) []byte {
	f := &ev.Flow
	b = e.header(b, ev, "flow")
	b = append(b, `,"flow":{"pkts_toserver":`...)
	b = strconv.AppendUint(b, f.PacketsOrig, 10)
	b = append(b, `,"pkts_toclient":`...)
	b = strconv.AppendUint(b, f.PacketsReply, 10)
	b = append(b, `,"bytes_toserver":`...)
	b = strconv.AppendUint(b, f.BytesOrig, 10)
	b = append(b, `,"bytes_toclient":`...)
	b = strconv.AppendUint(b, f.BytesReply, 10)
	start, end := f.Created, f.LastSeen
	if start.IsZero() {
		start, end = ev.Time, ev.Time
	}
	b = append(b, `,"start":`...)
	b = e.appendTime(b, start)
	b = append(b, `,"end":`...)
	b = e.appendTime(b, end)
	b = append(b, `,"age":`...)
	b = strconv.AppendInt(b, int64(end.Sub(start)/time.Second), 10)
	b = append(b, `,"state":"`...)
	b = append(b, flowState(f)...)
	b = append(b, `","reason":"`...)
	b = append(b, flowReason(ev)...)
	b = append(b, `"}`...)

	b = append(b, `,"rule":{"number":`...)
	b = strconv.AppendUint(b, uint64(f.RuleID), 10)
	action := "allow" // a flow exists only when admitted
	if r, ok := e.rule(f.RuleID); ok {
		b = append(b, `,"id":`...)
		b = appendString(b, r.ID)
		if r.Action != "" {
			action = r.Action
		}
	}
	b = append(b, `,"action":`...)
	b = appendString(b, action)
	b = append(b, '}')

	if f.SNAT || f.DNAT {
		// The tuple as the far side saw it: the reply, reversed.
		b = append(b, `,"nat":{"src_ip":`...)
		b = appendAddr(b, f.ReplyDst.Addr())
		if hasPorts(f.Proto) {
			b = append(b, `,"src_port":`...)
			b = strconv.AppendUint(b, uint64(f.ReplyDst.Port()), 10)
		}
		b = append(b, `,"dest_ip":`...)
		b = appendAddr(b, f.ReplySrc.Addr())
		if hasPorts(f.Proto) {
			b = append(b, `,"dest_port":`...)
			b = strconv.AppendUint(b, uint64(f.ReplySrc.Port()), 10)
		}
		b = append(b, '}')
	}
	return append(b, "}\n"...)
}

// L7 is what the inspector read in a PENDING flow's first data: Proto
// "tls" or "http" (empty: nothing to report) and the name it carried,
// possibly empty.
type L7 struct {
	Proto string
	Name  string
}

// AppendAlert appends an `alert` record for a rule's match on a flow's
// first packet. signature_id is the rule's number, signature its id.
func (e *Encoder) AppendAlert(b []byte, ev *dataplane.FlowEvent) []byte {
	return e.AppendL7Alert(b, ev, L7{})
}

// AppendL7Alert appends an `alert` record for a rule decided by the
// inspector, with the name it decided on in Suricata's fields: app_proto
// and tls.sni or http.hostname. A flow without a name gets app_proto and
// no name field, as Suricata writes a ClientHello without SNI.
func (e *Encoder) AppendL7Alert(b []byte, ev *dataplane.FlowEvent, app L7) []byte {
	f := &ev.Flow
	b = e.header(b, ev, "alert")
	// Alert rules let the packet go on; an event carrying a drop or
	// reject reason reports a packet natwall blocked (a logged deny or
	// reject). An audit alert says what a rule would have denied: the
	// packet went on, so it is allowed whatever the rule's action.
	action := "allowed"
	switch ev.Reason.Verdict() {
	case dataplane.VerdictDrop, dataplane.VerdictReply:
		if !ev.Audit {
			action = "blocked"
		}
	}
	b = append(b, `,"alert":{"action":"`...)
	b = append(b, action...)
	b = append(b, `","gid":1,"signature_id":`...)
	b = strconv.AppendUint(b, uint64(f.RuleID), 10)
	// natwall does not version rules: every rule is its first revision.
	b = append(b, `,"rev":1,"signature":`...)
	r, ok := e.rule(f.RuleID)
	if ok && r.ID != "" {
		b = appendString(b, r.ID)
	} else {
		b = append(b, `"rule `...)
		b = strconv.AppendUint(b, uint64(f.RuleID), 10)
		b = append(b, '"')
	}
	kind := r.Action
	if kind == "" {
		kind = "alert"
	}
	b = append(b, `,"category":"natwall `...)
	b = appendStringBody(b, kind)
	b = append(b, ` rule","severity":3`...)
	if ev.Audit {
		// EVE's rule metadata: keys with lists of values.
		b = append(b, `,"metadata":{"natwall_mode":["audit"]}`...)
	}
	b = append(b, '}')
	switch app.Proto {
	case "tls":
		b = append(b, `,"app_proto":"tls","tls":{`...)
		if app.Name != "" {
			b = append(b, `"sni":`...)
			b = appendString(b, app.Name)
		}
		b = append(b, '}')
	case "http":
		b = append(b, `,"app_proto":"http","http":{`...)
		if app.Name != "" {
			b = append(b, `"hostname":`...)
			b = appendString(b, app.Name)
		}
		b = append(b, '}')
	}
	return append(b, "}\n"...)
}

func (e *Encoder) rule(n uint32) (Rule, bool) {
	if e.Rules == nil {
		return Rule{}, false
	}
	return e.Rules.Rule(n)
}

// flowState is EVE's flow.state: new until the responder answered,
// closed once TCP closed.
func flowState(f *dataplane.Flow) string {
	switch dataplane.TCPStateName(f.TCPState) {
	case "time_wait", "close":
		return "closed"
	}
	if f.SeenReply {
		return "established"
	}
	return "new"
}

// flowReason is EVE's flow.reason. natwall ends flows on their idle
// timeout; "active" marks a periodic record of a flow that goes on,
// "shutdown" one that a stopping daemon removed with the dataplane.
func flowReason(ev *dataplane.FlowEvent) string {
	switch {
	case ev.Type == dataplane.FlowActive:
		return "active"
	case ev.Shutdown:
		return "shutdown"
	case ev.Reason != dataplane.ReasonNone:
		return "forced"
	}
	return "timeout"
}

func (e *Encoder) appendTime(b []byte, t time.Time) []byte {
	loc := e.Location
	if loc == nil {
		loc = time.UTC
	}
	b = append(b, '"')
	b = t.In(loc).AppendFormat(b, timeLayout)
	return append(b, '"')
}

func appendAddr(b []byte, a netip.Addr) []byte {
	b = append(b, '"')
	b = a.Unmap().AppendTo(b)
	return append(b, '"')
}

func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	b = appendStringBody(b, s)
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"

// appendStringBody escapes s for a JSON string: quotes, backslashes and
// control characters; invalid UTF-8 becomes U+FFFD.
func appendStringBody(b []byte, s string) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return b
}
