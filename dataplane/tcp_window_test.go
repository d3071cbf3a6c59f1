package dataplane

import (
	"net"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/natwall/natwall/rules"
)

// tcpSeg is one TCP segment of a test, built with gopacket and correct
// checksums unless a test breaks them.
type tcpSeg struct {
	v6           bool
	src, dst     string
	sport, dport uint16
	flags        string // any of S A F R P
	seq, ack     uint32
	win          uint16
	wscale       int // the SYN's window scale option; < 0: none
	payload      int
	badTCPSum    bool
	badIPSum     bool
}

func (s tcpSeg) frame(t testing.TB) []byte {
	t.Helper()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(s.sport), DstPort: layers.TCPPort(s.dport), Seq: s.seq, Ack: s.ack, Window: s.win}
	for _, f := range s.flags {
		switch f {
		case 'S':
			tcp.SYN = true
		case 'A':
			tcp.ACK = true
		case 'F':
			tcp.FIN = true
		case 'R':
			tcp.RST = true
		case 'P':
			tcp.PSH = true
		}
	}
	if tcp.SYN {
		tcp.Options = append(tcp.Options, layers.TCPOption{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}})
		if s.wscale >= 0 {
			tcp.Options = append(tcp.Options,
				layers.TCPOption{OptionType: layers.TCPOptionKindNop},
				layers.TCPOption{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{byte(s.wscale)}})
		}
	}
	payload := gopacket.Payload(make([]byte, s.payload))
	for i := range payload {
		payload[i] = byte(i)
	}
	buf := gopacket.NewSerializeBuffer()
	eth := &layers.Ethernet{SrcMAC: clientMAC, DstMAC: net.HardwareAddr{2, 0xaa, 0, 0, 0, 1}}
	l3 := 14
	if s.v6 {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP, SrcIP: net.ParseIP(s.src), DstIP: net.ParseIP(s.dst)}
		tcp.SetNetworkLayerForChecksum(ip)
		must(t, gopacket.SerializeLayers(buf, opts, eth, ip, tcp, payload))
	} else {
		eth.EthernetType = layers.EthernetTypeIPv4
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP, Flags: layers.IPv4DontFragment,
			SrcIP: net.ParseIP(s.src), DstIP: net.ParseIP(s.dst)}
		tcp.SetNetworkLayerForChecksum(ip)
		must(t, gopacket.SerializeLayers(buf, opts, eth, ip, tcp, payload))
	}
	b := append([]byte(nil), buf.Bytes()...)
	l4 := l3 + 20
	if s.v6 {
		l4 = l3 + 40
	}
	if s.badTCPSum {
		b[l4+16] ^= 0x01
	}
	if s.badIPSum && !s.v6 {
		b[l3+10] ^= 0x01
	}
	return b
}

// tcpConn drives one connection through the fixture: a client inside on
// a0, a server outside on b0, and each side's next sequence number.
type tcpConn struct {
	fx                 *fibFixture
	v6                 bool
	client, server     string
	replyDst           string // what the server's packets are addressed to
	cport, sport       uint16
	cnxt, snxt         uint32 // next sequence number each side sends
	cwin, swin         uint16
	cscale, sscale     int
	clientIn, serverIn string
	replyPort          uint16
}

func newTCPConn(fx *fibFixture, cport uint16) *tcpConn {
	return &tcpConn{fx: fx, client: "198.18.1.20", server: "198.19.1.10", replyDst: "198.18.1.20",
		cport: cport, sport: 443, cnxt: 1000, snxt: 5000, cwin: 64240, swin: 65160, cscale: -1, sscale: -1,
		clientIn: "a0", serverIn: "b0"}
}

// fromClient builds a client segment at the client's next sequence number,
// acknowledging everything the server sent.
func (c *tcpConn) fromClient(flags string, payload int) tcpSeg {
	return tcpSeg{v6: c.v6, src: c.client, dst: c.server, sport: c.cport, dport: c.sport, flags: flags,
		seq: c.cnxt, ack: c.snxt, win: c.cwin, wscale: c.cscale, payload: payload}
}

func (c *tcpConn) fromServer(flags string, payload int) tcpSeg {
	port := c.cport
	if c.replyPort != 0 {
		port = c.replyPort
	}
	return tcpSeg{v6: c.v6, src: c.server, dst: c.replyDst, sport: c.sport, dport: port, flags: flags,
		seq: c.snxt, ack: c.cnxt, win: c.swin, wscale: c.sscale, payload: payload}
}

func segLen(s tcpSeg) uint32 {
	n := uint32(s.payload)
	for _, f := range s.flags {
		if f == 'S' || f == 'F' {
			n++
		}
	}
	return n
}

// send feeds s to the fixture from its sender's side and expects want; a
// forwarded segment at the sender's next sequence number advances it.
func (c *tcpConn) send(t *testing.T, s tcpSeg, want Reason) {
	t.Helper()
	in, next := c.clientIn, &c.cnxt
	if s.src == c.server {
		in, next = c.serverIn, &c.snxt
	}
	c.fx.expect(t, s.frame(t), in, want)
	if want == ReasonFwdRedirect && s.seq == *next {
		*next += segLen(s)
	}
}

func (c *tcpConn) handshake(t *testing.T) {
	t.Helper()
	c.send(t, c.fromClient("S", 0), ReasonFwdRedirect)
	c.send(t, c.fromServer("SA", 0), ReasonFwdRedirect)
	c.send(t, c.fromClient("A", 0), ReasonFwdRedirect)
	c.expectState(t, natwallNwTcpStateNW_TCP_ESTABLISHED)
}

// entry is the flow's conntrack entry, found by the client's port.
func (c *tcpConn) entry(t *testing.T) (natwallNwCtState, bool) {
	t.Helper()
	if c.v6 {
		var k natwallNwTuple6
		var e natwallNwCt6Entry
		it := c.fx.objs.NwCt6.Iterate()
		for it.Next(&k, &e) {
			if htons(k.Sport) == c.cport {
				return e.St, true
			}
		}
		must(t, it.Err())
		return natwallNwCtState{}, false
	}
	var k natwallNwTuple4
	var e natwallNwCt4Entry
	it := c.fx.objs.NwCt4.Iterate()
	for it.Next(&k, &e) {
		if htons(k.Sport) == c.cport && k.Proto == 6 {
			return e.St, true
		}
	}
	must(t, it.Err())
	return natwallNwCtState{}, false
}

func (c *tcpConn) expectState(t *testing.T, want TCPState) {
	t.Helper()
	st, ok := c.entry(t)
	if !ok {
		t.Fatalf("flow from port %d is gone, want %s", c.cport, TCPStateName(want))
	}
	if TCPState(st.TcpState) != want {
		t.Fatalf("flow state %s, want %s", TCPStateName(TCPState(st.TcpState)), TCPStateName(want))
	}
}

// TestTCPBlindRSTDropped: a RST whose sequence number is not in the
// receiver's window is a blind reset. It is dropped with its own reason
// and the connection goes on, from either side and in either family.
func TestTCPBlindRSTDropped(t *testing.T) {
	fx := newFibFixture(t)
	for i, tc := range []struct {
		name   string
		v6     bool
		mutate func(c *tcpConn, s *tcpSeg)
		server bool
	}{
		{"from outside, seq half the space away", false, func(c *tcpConn, s *tcpSeg) { s.seq += 1 << 31 }, true},
		{"from outside, seq just past the window", false, func(c *tcpConn, s *tcpSeg) { s.seq += uint32(c.cwin) + 1 }, true},
		{"from outside, seq before what the receiver acknowledged", false, func(c *tcpConn, s *tcpSeg) { s.seq -= 1 }, true},
		{"from inside, seq far off", false, func(c *tcpConn, s *tcpSeg) { s.seq += 0x10000000 }, false},
		{"from outside, RST+ACK acknowledging unsent data", false, func(c *tcpConn, s *tcpSeg) { s.flags = "RA"; s.ack += 1 << 30 }, true},
		{"v6 from outside", true, func(c *tcpConn, s *tcpSeg) { s.seq += 1 << 31 }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTCPConn(fx, uint16(41000+i))
			if tc.v6 {
				c.v6, c.client, c.server, c.replyDst = true, "2001:db8:1::20", "2001:db8:2::10", "2001:db8:1::20"
			}
			c.handshake(t)
			c.send(t, c.fromServer("PA", 100), ReasonFwdRedirect)
			c.send(t, c.fromClient("A", 0), ReasonFwdRedirect)
			var rst tcpSeg
			if tc.server {
				rst = c.fromServer("R", 0)
			} else {
				rst = c.fromClient("R", 0)
			}
			tc.mutate(c, &rst)
			before, _ := c.entry(t)
			if tc.server {
				c.send(t, rst, ReasonDropTCPRSTOutOfWindow)
			} else {
				c.send(t, rst, ReasonDropTCPRSTOutOfWindow)
			}
			after, _ := c.entry(t)
			if before.Tcp != after.Tcp || before.TcpState != after.TcpState {
				t.Fatalf("a dropped RST changed the flow: %+v -> %+v", before, after)
			}
			c.expectState(t, natwallNwTcpStateNW_TCP_ESTABLISHED)
			c.send(t, c.fromClient("PA", 10), ReasonFwdRedirect)
			c.send(t, c.fromServer("A", 0), ReasonFwdRedirect)
		})
	}
}

// TestTCPRSTInWindowEndsFlow: a RST at the receiver's next expected
// sequence number, or anywhere in its window, ends the flow.
func TestTCPRSTInWindowEndsFlow(t *testing.T) {
	fx := newFibFixture(t)
	for i, tc := range []struct {
		name   string
		offset uint32
		flags  string
		server bool
	}{
		{"server RST at rcv.nxt", 0, "R", true},
		{"server RST+ACK at rcv.nxt", 0, "RA", true},
		{"server RST inside the window", 30000, "R", true},
		{"client RST at rcv.nxt", 0, "R", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTCPConn(fx, uint16(42000+i))
			c.handshake(t)
			var rst tcpSeg
			if tc.server {
				rst = c.fromServer(tc.flags, 0)
			} else {
				rst = c.fromClient(tc.flags, 0)
			}
			rst.seq += tc.offset
			in := c.clientIn
			if tc.server {
				in = c.serverIn
			}
			fx.expect(t, rst.frame(t), in, ReasonFwdRedirect)
			c.expectState(t, natwallNwTcpStateNW_TCP_CLOSE)
		})
	}
}

// TestTCPBadChecksumChangesNothing: a segment that would create a flow or
// change its state must carry valid checksums; else it is dropped and
// counted, and the flow stays as it was. Established data is not checked.
func TestTCPBadChecksumChangesNothing(t *testing.T) {
	fx := newFibFixture(t)
	c := newTCPConn(fx, 43000)

	syn := c.fromClient("S", 0)
	syn.badTCPSum = true
	fx.expect(t, syn.frame(t), c.clientIn, ReasonDropTCPBadChecksum)
	if _, ok := c.entry(t); ok {
		t.Fatal("a SYN with a bad checksum created a flow")
	}
	syn.badTCPSum, syn.badIPSum = false, true
	fx.expect(t, syn.frame(t), c.clientIn, ReasonDropTCPBadChecksum)

	c.handshake(t)
	for _, tc := range []struct {
		name     string
		flags    string
		tcp, ip  bool
		fromSide string
	}{
		{"RST, bad TCP checksum", "R", true, false, "server"},
		{"RST, bad IPv4 header checksum", "R", false, true, "server"},
		{"FIN, bad TCP checksum", "FA", true, false, "client"},
		{"SYN-ACK again, bad TCP checksum", "SA", true, false, "server"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s tcpSeg
			in := c.serverIn
			if tc.fromSide == "server" {
				s = c.fromServer(tc.flags, 0)
			} else {
				s, in = c.fromClient(tc.flags, 0), c.clientIn
			}
			s.badTCPSum, s.badIPSum = tc.tcp, tc.ip
			before, _ := c.entry(t)
			fx.expect(t, s.frame(t), in, ReasonDropTCPBadChecksum)
			after, _ := c.entry(t)
			if before.Tcp != after.Tcp || before.TcpState != after.TcpState || before.PacketsOrig != after.PacketsOrig || before.PacketsReply != after.PacketsReply {
				t.Fatalf("a dropped segment changed the flow: %+v -> %+v", before, after)
			}
		})
	}
	c.expectState(t, natwallNwTcpStateNW_TCP_ESTABLISHED)

	// The fast path does not checksum data: the endpoint discards it.
	data := c.fromClient("PA", 50)
	data.badTCPSum = true
	fx.expect(t, data.frame(t), c.clientIn, ReasonFwdRedirect)

	// v6: the pseudo-header is the IPv6 one.
	c6 := newTCPConn(fx, 43001)
	c6.v6, c6.client, c6.server, c6.replyDst = true, "2001:db8:1::20", "2001:db8:2::10", "2001:db8:1::20"
	c6.handshake(t)
	rst := c6.fromServer("R", 0)
	rst.badTCPSum = true
	fx.expect(t, rst.frame(t), c6.serverIn, ReasonDropTCPBadChecksum)
	c6.expectState(t, natwallNwTcpStateNW_TCP_ESTABLISHED)
	rst.badTCPSum = false
	fx.expect(t, rst.frame(t), c6.serverIn, ReasonFwdRedirect)
	c6.expectState(t, natwallNwTcpStateNW_TCP_CLOSE)

	// The IPv4 header checksum covers its options.
	rr := []layers.IPv4Option{{OptionType: 0x07, OptionLength: 7, OptionData: []byte{4, 0, 0, 0, 0}}, {OptionType: 0}}
	withOpts := packet{src: "198.18.1.20", dst: "198.19.1.11", proto: layers.IPProtocolTCP, ipOptions: rr}.build(t)
	bad := append([]byte(nil), withOpts...)
	bad[14+24] ^= 0x01 // in the record route data, past the fixed header
	fx.expect(t, bad, "a0", ReasonDropTCPBadChecksum)
	fx.expect(t, withOpts, "a0", ReasonFwdRedirect)

	// Odd lengths and every size step of the summing loop.
	for _, n := range []int{1, 3, 255, 256, 257, 511, 1001, 1400} {
		c := newTCPConn(fx, uint16(43100+n))
		c.handshake(t)
		fin := c.fromClient("FA", n)
		bad := fin
		bad.badTCPSum = true
		fx.expect(t, bad.frame(t), c.clientIn, ReasonDropTCPBadChecksum)
		c.send(t, fin, ReasonFwdRedirect)
		c.expectState(t, natwallNwTcpStateNW_TCP_FIN_WAIT)
	}
}

// TestTCPFINOutOfWindow: a FIN outside the window does not start closing
// the flow; one inside does.
func TestTCPFINOutOfWindow(t *testing.T) {
	fx := newFibFixture(t)
	c := newTCPConn(fx, 44000)
	c.handshake(t)
	fin := c.fromServer("FA", 0)
	fin.seq += 1 << 31
	c.send(t, fin, ReasonDropTCPOutOfWindow)
	c.expectState(t, natwallNwTcpStateNW_TCP_ESTABLISHED)
	fin = c.fromClient("FA", 0)
	fin.seq -= 200000
	c.send(t, fin, ReasonDropTCPOutOfWindow)
	c.expectState(t, natwallNwTcpStateNW_TCP_ESTABLISHED)

	// A SYN-ACK that does not acknowledge the SYN leaves the flow in SYN_SENT.
	c2 := newTCPConn(fx, 44001)
	c2.send(t, c2.fromClient("S", 0), ReasonFwdRedirect)
	synack := c2.fromServer("SA", 0)
	synack.ack += 1 << 20
	c2.send(t, synack, ReasonDropTCPOutOfWindow)
	c2.expectState(t, natwallNwTcpStateNW_TCP_SYN_SENT)
	synack = c2.fromServer("SA", 0)
	synack.ack -= 1 << 20
	c2.send(t, synack, ReasonDropTCPOutOfWindow)
	c2.expectState(t, natwallNwTcpStateNW_TCP_SYN_SENT)
	// A blind RST refusing the SYN must acknowledge it too.
	rst := c2.fromServer("R", 0)
	c2.send(t, rst, ReasonDropTCPRSTOutOfWindow)
	c2.send(t, c2.fromServer("SA", 0), ReasonFwdRedirect)
	c2.expectState(t, natwallNwTcpStateNW_TCP_SYN_RECV)
	// A handshake ACK that acknowledges the wrong thing does not
	// establish it.
	ack := c2.fromClient("A", 0)
	ack.ack += 1 << 24
	c2.send(t, ack, ReasonDropTCPOutOfWindow)
	c2.expectState(t, natwallNwTcpStateNW_TCP_SYN_RECV)
}

// TestTCPSYNOnClosedFlowMeetsTheRules: a SYN reusing the ports of a closed
// or TIME_WAIT flow is a new connection. After a reload that denies the
// service it is denied, and the old entry is gone; while the service is
// allowed it opens a fresh flow.
func TestTCPSYNOnClosedFlowMeetsTheRules(t *testing.T) {
	fx := newFibFixture(t)
	https := anyRule(30, rules.Allow)
	https.proto, https.dportLo, https.dportHi = 6, 443, 443
	allow := naiveStage([]testRule{https}, rules.Deny, 3)
	deny := naiveStage(nil, rules.Deny, 3)

	closeBy := map[string]func(t *testing.T, c *tcpConn){
		"time_wait": func(t *testing.T, c *tcpConn) {
			c.send(t, c.fromClient("FA", 0), ReasonFwdRedirect)
			c.send(t, c.fromServer("FA", 0), ReasonFwdRedirect)
			c.send(t, c.fromClient("A", 0), ReasonFwdRedirect)
			c.expectState(t, natwallNwTcpStateNW_TCP_TIME_WAIT)
		},
		"close": func(t *testing.T, c *tcpConn) {
			c.send(t, c.fromServer("R", 0), ReasonFwdRedirect)
			c.expectState(t, natwallNwTcpStateNW_TCP_CLOSE)
		},
	}
	port := uint16(45000)
	for name, closeFlow := range closeBy {
		t.Run(name+" after a deny reload", func(t *testing.T) {
			must(t, loadRules(&fx.objs, nil, allow))
			port++
			c := newTCPConn(fx, port)
			c.handshake(t)
			closeFlow(t, c)
			must(t, loadRules(&fx.objs, nil, deny))
			c.cnxt += 100000
			c.send(t, c.fromClient("S", 0), ReasonDropACLDeny)
			if _, ok := c.entry(t); ok {
				t.Fatal("the closed flow survived a SYN the rules deny")
			}
			// And nothing of the old flow lets the server in.
			c.send(t, c.fromServer("A", 0), ReasonDropCTInvalid)
		})
		t.Run(name+" still allowed", func(t *testing.T) {
			must(t, loadRules(&fx.objs, nil, allow))
			port++
			c := newTCPConn(fx, port)
			c.handshake(t)
			closeFlow(t, c)
			c.cnxt += 100000
			c.snxt += 7777
			c.handshake(t)
			st, _ := c.entry(t)
			if st.RuleId != 30 || st.PacketsOrig != 2 {
				t.Fatalf("the reused ports did not get a fresh flow: rule %d, %d packets", st.RuleId, st.PacketsOrig)
			}
		})
	}
	t.Run("v6 close after a deny reload", func(t *testing.T) {
		must(t, loadRules(&fx.objs, nil, allow))
		port++
		c := newTCPConn(fx, port)
		c.v6, c.client, c.server, c.replyDst = true, "2001:db8:1::20", "2001:db8:2::10", "2001:db8:1::20"
		c.handshake(t)
		closeBy["close"](t, c)
		must(t, loadRules(&fx.objs, nil, deny))
		c.send(t, c.fromClient("S", 0), ReasonDropACLDeny)
		if _, ok := c.entry(t); ok {
			t.Fatal("the closed v6 flow survived a SYN the rules deny")
		}
	})
	// A SYN from the responder's side on a closed flow is judged as a
	// new inbound connection, not forwarded as part of the old one.
	must(t, loadRules(&fx.objs, nil, nil))
	port++
	c := newTCPConn(fx, port)
	c.handshake(t)
	closeBy["close"](t, c)
	c.send(t, c.fromServer("S", 0), ReasonDropPolicy)
	// A SYN with a bad checksum leaves the closed flow be.
	port++
	c = newTCPConn(fx, port)
	c.handshake(t)
	closeBy["time_wait"](t, c)
	syn := c.fromClient("S", 0)
	syn.badTCPSum = true
	c.send(t, syn, ReasonDropTCPBadChecksum)
	c.expectState(t, natwallNwTcpStateNW_TCP_TIME_WAIT)
}

// TestTCPLegitimateVariants: what real stacks do passes the window check.
func TestTCPLegitimateVariants(t *testing.T) {
	fx := newFibFixture(t)

	t.Run("normal close with data", func(t *testing.T) {
		c := newTCPConn(fx, 46000)
		c.handshake(t)
		c.send(t, c.fromClient("PA", 500), ReasonFwdRedirect)
		c.send(t, c.fromServer("PA", 1400), ReasonFwdRedirect)
		c.send(t, c.fromServer("PA", 1400), ReasonFwdRedirect)
		c.send(t, c.fromClient("A", 0), ReasonFwdRedirect)
		c.send(t, c.fromClient("FA", 0), ReasonFwdRedirect)
		c.expectState(t, natwallNwTcpStateNW_TCP_FIN_WAIT)
		c.send(t, c.fromServer("A", 0), ReasonFwdRedirect)
		c.send(t, c.fromServer("FA", 0), ReasonFwdRedirect)
		c.send(t, c.fromClient("A", 0), ReasonFwdRedirect)
		c.expectState(t, natwallNwTcpStateNW_TCP_TIME_WAIT)
	})

	t.Run("retransmission and keepalive", func(t *testing.T) {
		c := newTCPConn(fx, 46001)
		c.handshake(t)
		seg := c.fromClient("PA", 1000)
		c.send(t, seg, ReasonFwdRedirect)
		c.send(t, seg, ReasonFwdRedirect) // retransmitted
		ka := c.fromClient("A", 0)
		ka.seq--
		c.send(t, ka, ReasonFwdRedirect)
		c.expectState(t, natwallNwTcpStateNW_TCP_ESTABLISHED)
	})

	t.Run("window scaling", func(t *testing.T) {
		c := newTCPConn(fx, 46002)
		c.cscale, c.sscale = 7, 9
		c.handshake(t)
		// The client's window is 64240 << 7 (8 MB): the server may send
		// data that far past what the client acknowledged.
		far := c.fromServer("PA", 100)
		far.seq += 64240<<7 - 200
		c.send(t, far, ReasonFwdRedirect)
		rst := c.fromServer("R", 0)
		rst.seq += 64240 << 6
		c.send(t, rst, ReasonFwdRedirect)
		c.expectState(t, natwallNwTcpStateNW_TCP_CLOSE)
	})

	t.Run("window scale offered by one side only is off", func(t *testing.T) {
		c := newTCPConn(fx, 46003)
		c.cscale = 7
		c.handshake(t)
		far := c.fromServer("PA", 100)
		far.seq += 64240 * 4
		c.send(t, far, ReasonDropTCPOutOfWindow)
		c.expectState(t, natwallNwTcpStateNW_TCP_ESTABLISHED)
	})

	t.Run("SACK-sized windows, scale 14", func(t *testing.T) {
		c := newTCPConn(fx, 46004)
		c.cscale, c.sscale = 14, 14
		c.cwin, c.swin = 65535, 65535
		c.handshake(t)
		// A gigabyte window: a segment half a gigabyte ahead (a hole
		// SACK would report), and acknowledging far back, are fine.
		ahead := c.fromServer("PA", 1000)
		ahead.seq += 1 << 29
		c.send(t, ahead, ReasonFwdRedirect)
		c.send(t, c.fromServer("PA", 1000), ReasonFwdRedirect)
		c.send(t, c.fromClient("A", 0), ReasonFwdRedirect)
		fin := c.fromServer("FA", 0)
		c.send(t, fin, ReasonFwdRedirect)
		c.expectState(t, natwallNwTcpStateNW_TCP_FIN_WAIT)
	})

	t.Run("sequence numbers wrap around", func(t *testing.T) {
		c := newTCPConn(fx, 46005)
		c.cnxt, c.snxt = 0xffffff00, 0xfffffff0
		c.handshake(t)
		for range 4 {
			c.send(t, c.fromClient("PA", 200), ReasonFwdRedirect)
			c.send(t, c.fromServer("PA", 100), ReasonFwdRedirect)
		}
		if c.cnxt > 0x1000 || c.snxt > 0x1000 {
			t.Fatalf("the test did not wrap: %#x %#x", c.cnxt, c.snxt)
		}
		old := c.fromServer("R", 0)
		old.seq = 0xfffffff0
		c.send(t, old, ReasonDropTCPRSTOutOfWindow)
		c.send(t, c.fromServer("R", 0), ReasonFwdRedirect)
		c.expectState(t, natwallNwTcpStateNW_TCP_CLOSE)
	})

	t.Run("server refuses the SYN", func(t *testing.T) {
		c := newTCPConn(fx, 46006)
		c.send(t, c.fromClient("S", 0), ReasonFwdRedirect)
		rst := c.fromServer("RA", 0)
		rst.seq = 0
		c.send(t, rst, ReasonFwdRedirect)
		c.expectState(t, natwallNwTcpStateNW_TCP_CLOSE)
	})

	t.Run("simultaneous open", func(t *testing.T) {
		c := newTCPConn(fx, 46008)
		c.send(t, c.fromClient("S", 0), ReasonFwdRedirect)
		c.send(t, c.fromServer("S", 0), ReasonFwdRedirect)
		c.expectState(t, natwallNwTcpStateNW_TCP_SYN_SENT)
		synack := c.fromClient("SA", 0)
		synack.seq--
		c.send(t, synack, ReasonFwdRedirect)
		synack = c.fromServer("SA", 0)
		synack.seq--
		c.send(t, synack, ReasonFwdRedirect)
		c.expectState(t, natwallNwTcpStateNW_TCP_SYN_RECV)
		c.send(t, c.fromClient("PA", 100), ReasonFwdRedirect)
		c.expectState(t, natwallNwTcpStateNW_TCP_ESTABLISHED)
	})

	t.Run("a forged answer to the SYN does not lock the real one out", func(t *testing.T) {
		c := newTCPConn(fx, 46009)
		c.send(t, c.fromClient("S", 0), ReasonFwdRedirect)
		forged := c.fromServer("S", 0)
		forged.seq += 1 << 31
		c.send(t, forged, ReasonFwdRedirect)
		c.send(t, c.fromServer("SA", 0), ReasonFwdRedirect)
		c.send(t, c.fromClient("A", 0), ReasonFwdRedirect)
		c.expectState(t, natwallNwTcpStateNW_TCP_ESTABLISHED)
		c.send(t, c.fromServer("PA", 1000), ReasonFwdRedirect)
	})

	t.Run("SYN retransmitted with a new ISN", func(t *testing.T) {
		c := newTCPConn(fx, 46007)
		c.send(t, c.fromClient("S", 0), ReasonFwdRedirect)
		c.cnxt = 0x40000000
		c.handshake(t)
	})
}

// TestTCPWindowThroughSNAT: the reply side's checks use the translated
// tuple's flow; sequence numbers are not translated.
func TestTCPWindowThroughSNAT(t *testing.T) {
	fx := newFibFixture(t)
	fx.apply(t, natSettings(1024, 65535))
	c := newTCPConn(fx, 47000)
	c.replyDst = natAddr
	c.send(t, c.fromClient("S", 0), ReasonFwdRedirect)
	var k natwallNwTuple4
	var e natwallNwCt4Entry
	found := false
	it := fx.objs.NwCt4.Iterate()
	for it.Next(&k, &e) {
		if htons(k.Sport) == c.cport {
			c.replyPort = htons(e.Reply.Dport)
			found = true
		}
	}
	if !found {
		t.Fatal("no flow")
	}
	c.send(t, c.fromServer("SA", 0), ReasonFwdRedirect)
	c.send(t, c.fromClient("A", 0), ReasonFwdRedirect)
	blind := c.fromServer("R", 0)
	blind.seq += 1 << 30
	c.send(t, blind, ReasonDropTCPRSTOutOfWindow)
	res := fx.expect(t, c.fromServer("R", 0).frame(t), c.serverIn, ReasonFwdRedirect)
	d := decode4(t, res.out)
	if d.dst != c.client || d.dport != c.cport {
		t.Fatalf("RST forwarded to %s:%d, want %s:%d", d.dst, d.dport, c.client, c.cport)
	}
	c.expectState(t, natwallNwTcpStateNW_TCP_CLOSE)
}

// TestTCPFlowsFromBeforeWindowTracking: an entry without windows (written
// by a tool, not by the program) changes state as entries used to,
// instead of every segment failing a check against zero windows.
func TestTCPFlowsFromBeforeWindowTracking(t *testing.T) {
	fx := newFibFixture(t)
	c := newTCPConn(fx, 48000)
	c.handshake(t)
	var k natwallNwTuple4
	var e natwallNwCt4Entry
	it := fx.objs.NwCt4.Iterate()
	for it.Next(&k, &e) {
		if htons(k.Sport) == c.cport {
			break
		}
	}
	for i := range e.St.Tcp {
		side := &e.St.Tcp[i]
		side.End, side.Maxend, side.Maxwin, side.Maxack, side.Wscale, side.Flags = 0, 0, 0, 0, 0, 0
	}
	must(t, fx.objs.NwCt4.Put(k, e))
	far := c.fromClient("PA", 10)
	far.seq += 1 << 31
	fx.expect(t, far.frame(t), c.clientIn, ReasonFwdRedirect)
	c.send(t, c.fromServer("R", 0), ReasonFwdRedirect)
	c.expectState(t, natwallNwTcpStateNW_TCP_CLOSE)
}
