package dataplane

import (
	"fmt"
	"strings"
	"testing"
)

// The TCP state-machine fuzz: random segment sequences from both sides of
// one connection (an inside client on a0, an outside server on b0, and
// anyone spoofing either), through the real XDP program. After every
// segment it checks two properties:
//
//   - nothing from outside is forwarded unless a flow opened from inside
//     existed before it, and no flow is ever opened from outside (the
//     built-in policy admits none);
//   - a segment clearly outside the window, or one that would change
//     state with a bad checksum, is dropped and leaves the flow exactly as
//     it was.
//
// "Clearly outside" is judged against the flow's own tracked ends, read
// from the map before the segment, with a margin wider than any window the
// fuzz can open (scale at most 7: 8 MiB), so that the property does not
// restate the check it tests.

// tcpSideChallenge is NW_TCP_SIDE_CHALLENGE of enum nw_tcp_side_flags
// (bpf/lib/types.h), which bpf2go cannot see: no BTF type names it.
const tcpSideChallenge = 1 << 2

// fuzzFarMargin is beyond the largest window (65535 << 7) plus payload.
const fuzzFarMargin = 1 << 24

var fuzzFlags = [8]string{"S", "SA", "A", "PA", "FA", "R", "RA", "F"}
var fuzzPayloads = [8]int{0, 1, 10, 100, 536, 1000, 1400, 0}
var fuzzWindows = [8]uint16{0, 1, 512, 1000, 8192, 29200, 64240, 65535}

// fuzzStep is one segment, decoded from four bytes of fuzz input.
type fuzzStep struct {
	fromServer bool
	flags      string
	badSum     bool
	payload    int
	seqMode    byte
	param      byte
	ackMode    byte
	wscale     int
	win        uint16
}

func decodeFuzzSteps(data []byte) []fuzzStep {
	var steps []fuzzStep
	for i := 0; i+4 <= len(data) && len(steps) < 64; i += 4 {
		b0, b1, b2, b3 := data[i], data[i+1], data[i+2], data[i+3]
		s := fuzzStep{
			fromServer: b0&1 != 0,
			flags:      fuzzFlags[b0>>1&7],
			badSum:     b0&0x10 != 0,
			payload:    fuzzPayloads[b0>>5],
			seqMode:    b1 % 6,
			param:      b2,
			ackMode:    b3 & 3,
			wscale:     int(b3 >> 2 & 7),
			win:        fuzzWindows[b3>>5],
		}
		if s.wscale == 7 {
			s.wscale = -1
		}
		steps = append(steps, s)
	}
	return steps
}

// clearFlows empties the flow tables between fuzz inputs.
func (fx *fibFixture) clearFlows(t testing.TB) {
	t.Helper()
	var k4 natwallNwTuple4
	var e4 natwallNwCt4Entry
	var keys []natwallNwTuple4
	it := fx.objs.NwCt4.Iterate()
	for it.Next(&k4, &e4) {
		keys = append(keys, k4, e4.Reply)
	}
	for _, k := range keys {
		fx.objs.NwCt4.Delete(k)
		fx.objs.NwCt4Rev.Delete(k)
	}
}

// signedDist is b - a in sequence space.
func signedDist(a, b uint32) int64 { return int64(int32(b - a)) }

func far(a, b uint32) bool {
	d := signedDist(a, b)
	return d > fuzzFarMargin || d < -fuzzFarMargin
}

func FuzzTCPStateMachine(f *testing.F) {
	// Handshake, data both ways, close from both sides.
	f.Add([]byte{0x00, 0, 0, 0xff, 0x03, 0, 0, 0xff, 0x04, 0, 0, 0xe0, 0x66, 0, 0, 0xe0, 0x47, 0, 0, 0xe0, 0x08, 0, 0, 0xe0, 0x09, 0, 0, 0xe0, 0x04, 0, 0, 0xe0})
	// Handshake with window scaling, then a blind RST from outside, then
	// one in the window.
	f.Add([]byte{0x00, 0, 0, 0xdc, 0x03, 0, 0, 0xdc, 0x04, 0, 0, 0xe0, 0x0b, 3, 7, 0xe0, 0x0b, 0, 0, 0xe0})
	// A SYN-ACK from nowhere, a RST with a bad checksum, a FIN far off.
	f.Add([]byte{0x03, 0, 0, 0xe0, 0x00, 0, 0, 0xff, 0x1b, 0, 0, 0xe0, 0x03, 0, 0, 0xe0, 0x04, 0, 0, 0xe0, 0x09, 4, 9, 0xe0})
	// Closed, then the ports reused.
	f.Add([]byte{0x00, 0, 0, 0xff, 0x03, 0, 0, 0xff, 0x04, 0, 0, 0xe0, 0x0b, 0, 0, 0xe0, 0x00, 1, 200, 0xff, 0x03, 0, 0, 0xff})
	// Through SNAT (odd length): handshake, blind RST, data, in-window RST.
	f.Add([]byte{0x00, 0, 0, 0xff, 0x03, 0, 0, 0xff, 0x04, 0, 0, 0xe0, 0x0b, 3, 1, 0xe0, 0x67, 0, 0, 0xe0, 0x0b, 0, 0, 0xe0, 0})

	fx := newFibFixture(f)
	plain, snat := fixtureSettings(), natSettings(1024, 65535)
	f.Fuzz(func(t *testing.T, data []byte) {
		fx.clearFlows(t)
		c := newTCPConn(fx, 40500)
		c.cnxt, c.snxt = 0xfffff000, 0x7ffff000
		// Odd-length inputs run through SNAT: the server then
		// addresses the client by its mapping, once there is one.
		translated := len(data)%2 == 1
		if translated {
			fx.apply(t, snat)
			c.replyDst, c.replyPort = natAddr, 1
		} else {
			fx.apply(t, plain)
		}
		for i, s := range decodeFuzzSteps(data) {
			fuzzOneStep(t, c, i, s)
			if translated {
				if ext, ok := c.mappedPort(t); ok {
					c.replyPort = ext
				}
			}
		}
	})
}

// mappedPort is the external port of the flow's translation, if it has one.
func (c *tcpConn) mappedPort(t *testing.T) (uint16, bool) {
	t.Helper()
	var k natwallNwTuple4
	var e natwallNwCt4Entry
	it := c.fx.objs.NwCt4.Iterate()
	for it.Next(&k, &e) {
		if htons(k.Sport) == c.cport && k.Proto == 6 {
			return htons(e.Reply.Dport), true
		}
	}
	must(t, it.Err())
	return 0, false
}

func fuzzOneStep(t *testing.T, c *tcpConn, i int, s fuzzStep) {
	t.Helper()
	var seg tcpSeg
	if s.fromServer {
		seg = c.fromServer(s.flags, s.payload)
	} else {
		seg = c.fromClient(s.flags, s.payload)
	}
	seg.win, seg.wscale, seg.badTCPSum = s.win, s.wscale, s.badSum
	switch s.seqMode {
	case 1:
		seg.seq += uint32(s.param) * 16
	case 2:
		seg.seq -= uint32(s.param) * 16
	case 3:
		seg.seq += 1<<31 + uint32(s.param)<<8
	case 4:
		seg.seq -= 1<<30 + 1<<25 + uint32(s.param)<<8
	case 5:
		seg.seq = uint32(s.param)<<24 | uint32(s.param)<<5
	}
	switch s.ackMode {
	case 1:
		seg.ack += 1 << 31
	case 2:
		seg.ack += uint32(s.param) * 64
	}

	before, existed := c.entry(t)
	in, dir := c.clientIn, 0
	if s.fromServer {
		in, dir = c.serverIn, 1
	}
	res := c.fx.run(t, seg.frame(t), in)
	after, exists := c.entry(t)
	forwarded := res.action == xdpRedirect || res.action == xdpTX
	if forwarded && s.seqMode == 0 {
		if s.fromServer {
			c.snxt += segLen(seg)
		} else {
			c.cnxt += segLen(seg)
		}
	}
	where := func() string {
		return fmt.Sprintf("step %d, %s from %s: %s", i, s.flags, in, res.reason.Name())
	}

	// Admission: from outside, only what an inside-opened flow admits.
	if s.fromServer && forwarded && !existed {
		t.Fatalf("%s: forwarded from outside with no flow", where())
	}
	if exists && Zone(after.Zone) != natwallNwZoneNW_ZONE_OUTBOUND {
		t.Fatalf("%s: a flow in zone %s exists", where(), ZoneName(Zone(after.Zone)))
	}
	if !existed {
		return
	}

	// Segments that are a new connection or restart one by design.
	bareSYN := seg.flags == "S"
	state := TCPState(before.TcpState)
	if bareSYN && (state == natwallNwTcpStateNW_TCP_CLOSE || state == natwallNwTcpStateNW_TCP_TIME_WAIT) && !s.badSum {
		return
	}
	if bareSYN && dir == 0 && state == natwallNwTcpStateNW_TCP_SYN_SENT && !s.badSum {
		return
	}
	// A challenge ACK (a bare ACK from the responder before its SYN-ACK)
	// and the originator's RST answering it pass by design: they free a
	// TIME_WAIT socket at the responder (TestTCPChallengeACKToANewSYN).
	// Neither may move the state.
	challengeACK := dir == 1 && seg.flags == "A" && seg.payload == 0
	challengeRST := dir == 0 && seg.flags == "R" &&
		before.Tcp[1].Flags&tcpSideChallenge != 0 && seg.seq == before.Tcp[1].Maxack
	if state == natwallNwTcpStateNW_TCP_SYN_SENT && (challengeACK || challengeRST) && !s.badSum {
		if exists && after.TcpState != before.TcpState {
			t.Fatalf("%s: a challenge ACK or its RST moved the flow to %s", where(), TCPStateName(TCPState(after.TcpState)))
		}
		return
	}

	snd, rcv := before.Tcp[dir], before.Tcp[dir^1]
	hasACK := strings.Contains(seg.flags, "A")
	// The responder's SYN or SYN-ACK starts its sequence space afresh:
	// only its acknowledgement can be out of the window.
	seqStarts := dir == 1 && state == natwallNwTcpStateNW_TCP_SYN_SENT && strings.Contains(seg.flags, "S")
	outside := (!seqStarts && snd.Maxwin != 0 && far(snd.End, seg.seq) && far(snd.End, seg.seq+segLen(seg))) ||
		(hasACK && rcv.Maxwin != 0 && far(rcv.End, seg.ack))
	changesState := seg.flags != "A" && seg.flags != "PA" ||
		state == natwallNwTcpStateNW_TCP_SYN_SENT || state == natwallNwTcpStateNW_TCP_SYN_RECV
	badAndChanging := s.badSum && changesState

	if !outside && !badAndChanging {
		return
	}
	if forwarded {
		t.Fatalf("%s: forwarded a segment outside the window (seq %#x ack %#x, sender end %#x, receiver end %#x)",
			where(), seg.seq, seg.ack, snd.End, rcv.End)
	}
	if !exists || after.TcpState != before.TcpState || after.Tcp != before.Tcp || after.Flags != before.Flags ||
		after.PacketsOrig != before.PacketsOrig || after.PacketsReply != before.PacketsReply {
		t.Fatalf("%s: a dropped segment changed the flow:\n%+v\n%+v", where(), before, after)
	}
}
