// Package inspect reassembles a PENDING flow's first client-to-server TCP
// bytes from the IP packets the dataplane held, and classifies them with
// rules.Classify (L7DESIGN.md, "Inspector"; issue 17).
//
// Every bound (MaxBytes, HoldTime, MaxSessions) ends in OutcomeDeny. The
// design notes say a bound "resumes with no name"; docs/rules.md, the
// documented "no name" semantics the issue points to, says "no complete
// hello or head within 16 KiB, or the hold time: denied", and rules.Classify
// already denies too_large. Resuming with no name would let a client pass a
// denylist by being slow or by filling the session table, so the bounds fail
// closed, like the dataplane when the inspector is down.
package inspect

import (
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/natwall/natwall/rules"
	"github.com/natwall/natwall/rules/l7"
)

// Key is a flow's original 5-tuple, client to server, before translation:
// the key the dataplane's held-packet header carries.
type Key struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	Proto            uint8
}

func (k Key) String() string {
	return fmt.Sprintf("%v -> %v proto %d", netip.AddrPortFrom(k.Src, k.SrcPort), netip.AddrPortFrom(k.Dst, k.DstPort), k.Proto)
}

// Limits bound what the inspector holds. Zero fields take the defaults.
type Limits struct {
	// MaxBytes is how many first bytes of a flow are reassembled (default
	// and most l7.MaxHold, 16 KiB): no complete hello or head within them
	// is a deny, too_large.
	MaxBytes int
	// HoldTime is how long a session may wait for more bytes (default 5 s).
	HoldTime time.Duration
	// MaxSessions is how many flows may be inspected at once (default 4096).
	MaxSessions int
	// SkipChecksums reads segments whose IP or TCP checksum is wrong, for
	// captures made with checksum offload (natwall inspect --checksum off).
	// Live, a bad checksum is refused: the server drops such a segment, so
	// reading it would let a client show natwall one name and the server
	// another.
	SkipChecksums bool
}

const (
	DefaultMaxBytes    = l7.MaxHold
	DefaultHoldTime    = 5 * time.Second
	DefaultMaxSessions = 4096
	// heldBudgetFactor bounds a session's kept packet bytes at this many
	// times MaxBytes: headers of small segments (one byte each, the slow
	// client) cost more than their payload. A packet over the budget is
	// not kept and its bytes are not read, as if lost: the client
	// retransmits it.
	heldBudgetFactor = 4
	// maxFragQueues bounds the IP datagrams a session reassembles at once.
	maxFragQueues = 4
)

// Reasons the inspector gives besides rules.Classify's parser results.
const (
	ReasonConflict       = "conflict"           // a retransmission or fragment overlap with other bytes
	ReasonTooLarge       = "too_large"          // MaxBytes without a complete hello or head
	ReasonHoldTimeout    = "hold_timeout"       // HoldTime without a complete hello or head
	ReasonSessionLimit   = "session_limit"      // MaxSessions flows held already
	ReasonBeforeFirstSeq = "before_first_seq"   // a segment wholly before the client's first sequence number, ignored
	ReasonFragmentBounds = "fragment_bounds"    // a fragmented datagram too large, or too many at once
	ReasonHeldBudget     = "held_budget"        // the packet was not kept: the session holds too many bytes
	ReasonFragment       = "fragment"           // waiting for the rest of an IP datagram
	ReasonBeyondMaxBytes = "beyond_max_bytes"   // kept for reinjection, not read: past MaxBytes
	ReasonNeedStart      = "need_start"         // bytes came, not those at offset 0
	ReasonBadDatagram    = "malformed_datagram" // reassembled fragments that are no TCP segment
)

// Result is what a Feed (or Expire) decided.
type Result struct {
	// Outcome is OutcomeWait while the session needs more bytes.
	Outcome rules.Outcome
	Info    rules.L7Info
	Reason  string
	// Held is set once decided: the kept packets not handed out before, in
	// arrival order, each a copy the caller owns. The first decision hands
	// out every packet kept; a Feed on a decided session hands out that
	// packet, so each is reinjected (after an allow) exactly once.
	Held [][]byte
}

// Expired is a session Expire ended.
type Expired struct {
	Key    Key
	Result Result
}

// Inspector holds the sessions. It is safe for concurrent use.
type Inspector struct {
	limits   Limits
	mu       sync.Mutex
	sessions map[Key]*session
	// One decode buffer for all sessions: a ClientHello is 16 KiB.
	hello l7.ClientHello
	req   l7.HTTPRequest
}

type session struct {
	start    time.Time
	firstSeq uint32
	stream   assembler
	held     [][]byte
	heldSize int
	// classified is the prefix length Classify last read: with one byte
	// per segment, reading again only a grown prefix bounds the work.
	classified int
	frags      []*fragQueue
	result     Result // Outcome and Info so far; decided unless OutcomeWait
}

// New returns an Inspector with limits, defaults filled in.
func New(limits Limits) *Inspector {
	if limits.MaxBytes <= 0 || limits.MaxBytes > l7.MaxHold {
		limits.MaxBytes = DefaultMaxBytes
	}
	if limits.HoldTime <= 0 {
		limits.HoldTime = DefaultHoldTime
	}
	if limits.MaxSessions <= 0 {
		limits.MaxSessions = DefaultMaxSessions
	}
	return &Inspector{limits: limits, sessions: make(map[Key]*session)}
}

// Limits returns the limits in force.
func (in *Inspector) Limits() Limits { return in.limits }

// Len is how many sessions are held, decided ones not yet forgotten
// included.
func (in *Inspector) Len() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.sessions)
}

// Forget drops a session, once its verdict is applied.
func (in *Inspector) Forget(key Key) {
	in.mu.Lock()
	defer in.mu.Unlock()
	delete(in.sessions, key)
}

// Feed adds one held IP packet of key's flow. firstSeq is the client's
// first data sequence number (SYN seq + 1) the dataplane recorded. An
// error means the packet was not used nor kept; the session goes on.
func (in *Inspector) Feed(key Key, firstSeq uint32, pkt []byte, now time.Time) (Result, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	s := in.sessions[key]
	if s == nil {
		// Refuse an unusable packet before it takes a session.
		if err := in.check(pkt); err != nil {
			return unusable, err
		}
		var ip ipPacket
		_ = parseIP(pkt, !in.limits.SkipChecksums, &ip)
		if len(in.sessions) >= in.limits.MaxSessions {
			return in.overLimit(firstSeq, &ip, pkt)
		}
		s = &session{start: now, firstSeq: firstSeq, result: Result{Outcome: rules.OutcomeWait, Info: rules.L7Info{Proto: rules.AppUnknown}}}
		s.stream.max = in.limits.MaxBytes
		in.sessions[key] = s
	}
	if s.result.Outcome != rules.OutcomeWait {
		if err := in.check(pkt); err != nil {
			return unusable, err
		}
		r := s.result
		r.Held = [][]byte{clone(pkt)}
		return r, nil
	}
	if now.Sub(s.start) >= in.limits.HoldTime {
		s.decide(rules.OutcomeDeny, ReasonHoldTimeout)
		s.keep(pkt, 0)
		return s.handOut(), nil
	}
	return in.feed(s, pkt)
}

// unusable is the Result beside an error: waiting, so that a caller that
// looked only at the Outcome would still not act on the packet.
var unusable = Result{Outcome: rules.OutcomeWait}

// check parses pkt only to refuse what feed would refuse.
func (in *Inspector) check(pkt []byte) error {
	var ip ipPacket
	if err := parseIP(pkt, !in.limits.SkipChecksums, &ip); err != nil {
		return err
	}
	if ip.fragment {
		return nil
	}
	var seg tcpSegment
	return parseTCP(ip.transport, ip.src, ip.dst, !in.limits.SkipChecksums, &seg)
}

// overLimit decides a new flow when the table is full. A packet that alone
// holds a complete hello or head (most ClientHellos fit one segment) is
// decided on it; otherwise the flow is denied: resuming it with no name
// would let a flood of slow flows open a denylist.
func (in *Inspector) overLimit(firstSeq uint32, ip *ipPacket, pkt []byte) (Result, error) {
	deny := Result{Outcome: rules.OutcomeDeny, Info: rules.L7Info{Proto: rules.AppUnknown}, Reason: ReasonSessionLimit}
	if ip.fragment {
		deny.Held = [][]byte{clone(pkt)}
		return deny, nil
	}
	var seg tcpSegment
	if err := parseTCP(ip.transport, ip.src, ip.dst, !in.limits.SkipChecksums, &seg); err != nil {
		return unusable, err
	}
	deny.Held = [][]byte{clone(pkt)}
	if off, ok := offset(firstSeq, &seg); ok && off == 0 && !seg.rst {
		data := seg.payload[:min(len(seg.payload), in.limits.MaxBytes)]
		info, out, reason := rules.Classify(data, &in.hello, &in.req)
		if out != rules.OutcomeWait {
			return Result{Outcome: out, Info: info, Reason: reason, Held: deny.Held}, nil
		}
		deny.Info = info
	}
	return deny, nil
}

func (in *Inspector) feed(s *session, pkt []byte) (Result, error) {
	verify := !in.limits.SkipChecksums
	var ip ipPacket
	if err := parseIP(pkt, verify, &ip); err != nil {
		return unusable, err
	}
	transport := ip.transport
	if ip.fragment {
		q, reason, err := s.fragQueue(&ip, in.limits.MaxBytes)
		if err != nil {
			return unusable, err
		}
		if reason != "" {
			s.decide(rules.OutcomeDeny, reason)
			s.keep(pkt, 0)
			return s.handOut(), nil
		}
		if q.stream.conflicts(ip.fragOff, ip.transport) {
			s.decide(rules.OutcomeDeny, ReasonConflict)
			s.keep(pkt, 0)
			return s.handOut(), nil
		}
		if !s.keep(pkt, in.limits.MaxBytes*heldBudgetFactor) {
			return s.waiting(ReasonHeldBudget), nil
		}
		q.add(&ip)
		whole, done := q.datagram()
		if !done {
			return s.waiting(ReasonFragment), nil
		}
		s.dropFragQueue(q)
		transport = whole
	}
	var seg tcpSegment
	if err := parseTCP(transport, ip.src, ip.dst, verify, &seg); err != nil {
		if ip.fragment {
			// The fragments were kept; the datagram they make is unusable.
			s.decide(rules.OutcomeDeny, ReasonBadDatagram)
			return s.handOut(), nil
		}
		return unusable, err
	}
	if len(seg.payload) == 0 {
		// Nothing to read nor to reinject: the dataplane holds only data.
		return s.waiting(s.result.Reason), nil
	}
	if seg.rst {
		// A reset's payload is diagnostic text, never stream data
		// (RFC 9293 §3.5.3); the dataplane passes resets itself.
		return s.waiting(s.result.Reason), nil
	}
	off, _ := offset(s.firstSeq, &seg)
	data := seg.payload
	if off < 0 {
		if off+len(data) <= 0 {
			// Wholly before the first data byte: a Windows keep-alive's
			// garbage byte, or an old duplicate. The server drops it, so it
			// is neither read nor kept.
			return s.waiting(ReasonBeforeFirstSeq), nil
		}
		// A server trims what precedes its next expected byte and takes
		// the rest (RFC 9293 §3.10.7.4); so does natwall.
		data, off = data[-off:], 0
	}
	if off >= in.limits.MaxBytes {
		if !ip.fragment && !s.keep(pkt, in.limits.MaxBytes*heldBudgetFactor) {
			return s.waiting(ReasonHeldBudget), nil
		}
		return s.waiting(ReasonBeyondMaxBytes), nil
	}
	data = data[:min(len(data), in.limits.MaxBytes-off)]
	if s.stream.conflicts(off, data) {
		s.decide(rules.OutcomeDeny, ReasonConflict)
		if !ip.fragment {
			s.keep(pkt, 0)
		}
		return s.handOut(), nil
	}
	if !s.stream.adds(off, data) {
		// An exact retransmission: the first copy is kept already.
		return s.waiting(s.result.Reason), nil
	}
	if !ip.fragment && !s.keep(pkt, in.limits.MaxBytes*heldBudgetFactor) {
		return s.waiting(ReasonHeldBudget), nil
	}
	s.stream.write(off, data)
	prefix := s.stream.prefix()
	if prefix == 0 {
		// Nothing to classify yet: an empty prefix is a prefix of anything.
		return s.waiting(ReasonNeedStart), nil
	}
	if prefix == s.classified {
		// Bytes past a hole: the prefix, and so its verdict, is the same.
		return s.waiting(s.result.Reason), nil
	}
	s.classified = prefix
	info, out, reason := rules.Classify(s.stream.buf[:prefix], &in.hello, &in.req)
	s.result.Info, s.result.Reason = info, reason
	if out == rules.OutcomeWait && prefix >= in.limits.MaxBytes {
		out, reason = rules.OutcomeDeny, ReasonTooLarge
	}
	if out == rules.OutcomeWait {
		return s.waiting(reason), nil
	}
	s.decide(out, reason)
	return s.handOut(), nil
}

// Expire ends the undecided sessions older than HoldTime, each denied with
// ReasonHoldTimeout and the protocol Classify saw so far (docs/rules.md:
// "no complete hello or head within ... the hold time: denied"), and drops
// decided ones left unforgotten that long: their Result went out already.
func (in *Inspector) Expire(now time.Time) []Expired {
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []Expired
	for k, s := range in.sessions {
		if now.Sub(s.start) < in.limits.HoldTime {
			continue
		}
		delete(in.sessions, k)
		if s.result.Outcome == rules.OutcomeWait {
			s.decide(rules.OutcomeDeny, ReasonHoldTimeout)
			out = append(out, Expired{Key: k, Result: s.handOut()})
		}
	}
	return out
}

func (s *session) decide(out rules.Outcome, reason string) {
	s.result.Outcome, s.result.Reason = out, reason
}

func (s *session) waiting(reason string) Result {
	return Result{Outcome: rules.OutcomeWait, Info: s.result.Info, Reason: reason}
}

// handOut is the session's Result with the packets not handed out yet.
func (s *session) handOut() Result {
	r := s.result
	r.Held, s.held = s.held, nil
	return r
}

// keep copies pkt into the held packets unless that passes budget bytes
// (0: no budget, for packets that only go out with a deny).
func (s *session) keep(pkt []byte, budget int) bool {
	if budget > 0 && s.heldSize+len(pkt) > budget {
		return false
	}
	s.held = append(s.held, clone(pkt))
	s.heldSize += len(pkt)
	return true
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

// offset is where seg's payload goes in the stream, negative (and false)
// when it starts before firstSeq. A SYN's data follows the SYN's own
// sequence number. Sequence numbers wrap: a payload up to 2 GiB behind
// firstSeq counts as before it.
func offset(firstSeq uint32, seg *tcpSegment) (int, bool) {
	seq := seg.seq
	if seg.syn {
		seq++
	}
	d := int32(seq - firstSeq)
	return int(d), d >= 0
}
