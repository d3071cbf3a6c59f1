// Package inspect holds a PENDING flow's first client-to-server packets,
// reassembles their IP fragments and TCP segments into the stream's first
// bytes, and reads them with rules.Classify until it can name the flow
// (TLS SNI, HTTP Host) or a bound says it never will. The daemon feeds it
// the packets XDP held; natwall inspect feeds it a capture's.
package inspect

import (
	"errors"
	"time"

	"github.com/natwall/natwall/rules"
	"github.com/natwall/natwall/rules/l7"
)

// Config bounds what is held. Zero fields take the defaults.
type Config struct {
	// MaxBytes is the stream prefix held per flow (default l7.MaxHold,
	// 16 KiB).
	MaxBytes int
	// HoldTime is how long a flow may wait for its name (default 5 s).
	HoldTime time.Duration
	// MaxSessions is the number of flows held at once (default 4096).
	MaxSessions int
	// SkipChecksums reads packets whatever their checksums say, for
	// captures made where the NIC computes them (checksum offload). The
	// daemon always checks.
	SkipChecksums bool
}

const (
	DefaultHoldTime    = 5 * time.Second
	DefaultMaxSessions = 4096
	// maxDatagram bounds one fragmented datagram being reassembled; a
	// held packet is at most 2 KiB, but a capture's may be larger.
	maxDatagram = 65535
	// maxFragDatagrams bounds the datagrams in reassembly per flow.
	maxFragDatagrams = 4
)

// heldBudget bounds the bytes of packets one session keeps for
// reinjection: room for a ClientHello sent a byte per IPv6 segment (61
// bytes a byte: 92 KB for a 1.5 KB post-quantum hello) and for resends,
// 128 KiB at the default MaxBytes. With MaxSessions at its default that
// bounds held packets at 512 MiB.
func heldBudget(maxBytes int) int { return 8 * maxBytes }

// Reasons a decision names besides Classify's parser results.
const (
	ReasonConflict     = "conflict"      // overlapping bytes that differ
	ReasonBytesBound   = "hold_bytes"    // MaxBytes without a complete hello or head
	ReasonHoldTimeout  = "hold_timeout"  // HoldTime without a complete hello or head
	ReasonSessionLimit = "session_limit" // MaxSessions flows already held
	ReasonFragments    = "fragments"     // too many datagrams in reassembly
	ReasonChecksum     = "checksum"      // a reassembled segment with a wrong TCP checksum
	ReasonHeldBudget   = "held_budget"   // the held packets outgrew heldBudget
)

// tooLarge is the parsers' result for a hello or head that cannot fit
// the hold budget.
var tooLarge = l7.TLSTooLarge.String()

// ErrNotTCP is returned for a packet that is not a readable IPv4/IPv6
// TCP packet (or fragment of one); the session is unchanged.
var ErrNotTCP = errors.New("not a readable TCP/IP packet")

// Result is what a feed or a sweep says about a flow.
type Result struct {
	Key Key
	// Decided is false while the flow waits for more data.
	Decided bool
	// Info and Outcome, when decided: resume the stateful stage with
	// Info (OutcomeResume), or deny without rules (OutcomeDeny).
	Info    rules.L7Info
	Outcome rules.Outcome
	Reason  string
	// Packets are the flow's held packets in arrival order, for
	// reinjection after an allow; the session no longer owns them.
	Packets [][]byte
	// Held is how long the flow was held.
	Held time.Duration
}

type fragDatagram struct {
	id    uint32
	buf   *span
	total int // payload length, known once the last fragment came
	first []byte
}

type session struct {
	isn1    uint32
	started time.Time
	stream  *span
	packets [][]byte
	// kept is the bytes of packets, bounded by heldBudget.
	kept  int
	frags []fragDatagram
	ch    l7.ClientHello
	req   l7.HTTPRequest
	// parsed is the scratch decode of a reassembled datagram.
	parsed Parsed
}

// Inspector is the set of held flows. It is not safe for concurrent use:
// one goroutine (the daemon's reader, or the offline tool) owns it.
type Inspector struct {
	cfg      Config
	sessions map[Key]*session
	// free are spans of decided flows, reused so that a new flow does
	// not allocate and zero MaxBytes.
	free []*span
}

// New returns an empty inspector with cfg's bounds.
func New(cfg Config) *Inspector {
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = l7.MaxHold
	}
	if cfg.HoldTime <= 0 {
		cfg.HoldTime = DefaultHoldTime
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	return &Inspector{cfg: cfg, sessions: make(map[Key]*session)}
}

// Len is the number of flows held now.
func (in *Inspector) Len() int { return len(in.sessions) }

// Feed adds one held IP packet of flow key, whose client sent its first
// data byte at sequence number isn1 (SYN seq + 1). pkt is copied. The
// result waits, or decides the flow and hands back its packets; a decided
// flow's session is gone, so a later packet of it starts a new one.
func (in *Inspector) Feed(key Key, isn1 uint32, pkt []byte, now time.Time) (Result, error) {
	var p Parsed
	if !ParseIP(pkt, &p) || p.Proto != protoTCP {
		return Result{Key: key}, ErrNotTCP
	}
	if !p.IsFragment() && !ParseTCP(&p) {
		return Result{Key: key}, ErrNotTCP
	}
	if !in.cfg.SkipChecksums && (!p.V6 && !ipv4HeaderValid(pkt) || !p.IsFragment() && !tcpChecksumValid(p.Src, p.Dst, p.L4)) {
		return Result{Key: key}, ErrChecksum
	}
	s := in.sessions[key]
	if s == nil {
		if len(in.sessions) >= in.cfg.MaxSessions {
			// Fail closed: a flood of silent handshakes must not turn
			// the next flows' names into no names that a denylist
			// lets through.
			return Result{Key: key, Decided: true, Info: rules.L7Info{Proto: rules.AppUnknown},
				Outcome: rules.OutcomeDeny, Reason: ReasonSessionLimit, Packets: [][]byte{clone(pkt)}}, nil
		}
		s = &session{isn1: isn1, started: now, stream: in.newStream()}
		in.sessions[key] = s
	}
	// The stream is bounded by MaxBytes, but not what carries it: a
	// client resending one segment, or sending one byte per packet,
	// would otherwise grow the session without limit. Past the budget
	// the flow is denied, like any hit bound.
	if s.kept+len(pkt) > heldBudget(in.cfg.MaxBytes) {
		return in.finish(key, s, now, rules.L7Info{Proto: rules.AppUnknown}, rules.OutcomeDeny, ReasonHeldBudget), nil
	}
	s.kept += len(pkt)
	s.packets = append(s.packets, clone(pkt))
	if now.Sub(s.started) >= in.cfg.HoldTime {
		return in.timeout(key, s, now), nil
	}
	seg := &p
	if p.IsFragment() {
		var reason string
		seg, reason = s.addFragment(&p)
		if reason != "" {
			return in.finish(key, s, now, rules.L7Info{Proto: rules.AppUnknown}, rules.OutcomeDeny, reason), nil
		}
		if seg == nil {
			return Result{Key: key}, nil
		}
		// A reassembled segment the server would drop for its
		// checksum cannot be told from one it reads: deny.
		if !in.cfg.SkipChecksums && !tcpChecksumValid(seg.Src, seg.Dst, seg.L4) {
			return in.finish(key, s, now, rules.L7Info{Proto: rules.AppUnknown}, rules.OutcomeDeny, ReasonChecksum), nil
		}
	}
	if seg.Flags&tcpFlagSYN != 0 {
		// A SYN's sequence number is the ISN itself; data on it (TFO)
		// starts one byte later.
		seg.Seq++
	}
	off := int(int32(seg.Seq - s.isn1))
	data := seg.Payload
	if off < 0 {
		if -off >= len(data) {
			data = nil
		} else {
			data = data[-off:]
		}
		off = 0
	}
	conflict, clipped := s.stream.write(off, data)
	if conflict {
		return in.finish(key, s, now, rules.L7Info{Proto: rules.AppUnknown}, rules.OutcomeDeny, ReasonConflict), nil
	}
	info, out, reason := rules.Classify(s.stream.contiguous(), &s.ch, &s.req)
	if out == rules.OutcomeWait || reason == tooLarge {
		// A hit bound denies (docs/rules.md, the "no name" table):
		// resuming with no name would let a client that pads or
		// stalls its hello past a denylist.
		if clipped || s.stream.prefix >= in.cfg.MaxBytes || reason == tooLarge {
			return in.finish(key, s, now, rules.L7Info{Proto: info.Proto}, rules.OutcomeDeny, ReasonBytesBound), nil
		}
		return Result{Key: key}, nil
	}
	return in.finish(key, s, now, info, out, reason), nil
}

// Sweep denies every flow held longer than the hold time, and returns
// them.
func (in *Inspector) Sweep(now time.Time) []Result {
	var out []Result
	for key, s := range in.sessions {
		if now.Sub(s.started) >= in.cfg.HoldTime {
			out = append(out, in.timeout(key, s, now))
		}
	}
	return out
}

// Forget drops flow key's session without a decision (the flow ended).
func (in *Inspector) Forget(key Key) {
	if s := in.sessions[key]; s != nil && len(in.free) < maxFreeSpans {
		s.stream.reset()
		in.free = append(in.free, s.stream)
	}
	delete(in.sessions, key)
}

func (in *Inspector) timeout(key Key, s *session, now time.Time) Result {
	info, _, _ := rules.Classify(s.stream.contiguous(), &s.ch, &s.req)
	if s.stream.prefix == 0 {
		info = rules.L7Info{Proto: rules.AppUnknown}
	}
	return in.finish(key, s, now, rules.L7Info{Proto: info.Proto}, rules.OutcomeDeny, ReasonHoldTimeout)
}

func (in *Inspector) newStream() *span {
	if n := len(in.free); n > 0 {
		sp := in.free[n-1]
		in.free = in.free[:n-1]
		return sp
	}
	return newSpan(in.cfg.MaxBytes)
}

// maxFreeSpans bounds the spans kept for reuse (16 KiB each by default).
const maxFreeSpans = 64

func (in *Inspector) finish(key Key, s *session, now time.Time, info rules.L7Info, out rules.Outcome, reason string) Result {
	delete(in.sessions, key)
	if len(in.free) < maxFreeSpans {
		s.stream.reset()
		in.free = append(in.free, s.stream)
	}
	s.stream = nil
	return Result{Key: key, Decided: true, Info: info, Outcome: out, Reason: reason, Packets: s.packets, Held: now.Sub(s.started)}
}

// addFragment files one fragment; it returns the reassembled datagram,
// decoded, once complete, nil while not, or a reason to deny.
func (s *session) addFragment(p *Parsed) (*Parsed, string) {
	idx := -1
	for i := range s.frags {
		if s.frags[i].id == p.FragID {
			idx = i
		}
	}
	if idx < 0 {
		if len(s.frags) >= maxFragDatagrams {
			return nil, ReasonFragments
		}
		s.frags = append(s.frags, fragDatagram{id: p.FragID, buf: newSpan(maxDatagram), total: -1})
		idx = len(s.frags) - 1
	}
	d := &s.frags[idx]
	conflict, clipped := d.buf.write(p.FragOff, p.L4)
	if conflict {
		return nil, ReasonConflict
	}
	if clipped {
		return nil, ReasonFragments
	}
	if !p.MoreFrags {
		end := p.FragOff + len(p.L4)
		if d.total >= 0 && d.total != end {
			return nil, ReasonConflict
		}
		d.total = end
	}
	if d.total < 0 || d.buf.prefix < d.total || d.buf.end > d.total {
		if d.total >= 0 && d.buf.end > d.total {
			return nil, ReasonConflict
		}
		return nil, ""
	}
	whole := d.buf.data[:d.total]
	s.frags = append(s.frags[:idx], s.frags[idx+1:]...)
	s.parsed = Parsed{Src: p.Src, Dst: p.Dst, V6: p.V6, Proto: p.Proto, L4: whole}
	if !ParseTCP(&s.parsed) {
		return nil, ReasonFragments
	}
	return &s.parsed, ""
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

// Decide resumes the stateful stage of one generation (its tables st and
// rules rs) at the pending rule for packet p, the flow's first packet,
// with what the inspector learnt. It returns the deciding rule (-1: the
// stage's default action) and the alert rules hit on the way.
func Decide(st *rules.StageTables, rs []rules.Rule, p rules.Packet, pending int, info rules.L7Info) (rule int, alerts []int) {
	return st.Resume(rs, p, pending, info)
}
