package dataplane

import "testing"

// TestTCPChallengeACKToANewSYN: a server whose socket for the 4-tuple is
// still in TIME_WAIT answers a new SYN whose sequence number it does not
// accept with an ACK of the old connection (RFC 793 3.9, RFC 5961 4), and
// the client answers that with a RST whose sequence number is the ACK's
// acknowledgement, which frees the server's socket before the SYN is sent
// again. Dropping either, as out of window, left such connections to time
// out: a busy client reusing ports saw its connection rate collapse. Both
// pass and change nothing; the handshake then completes as usual. A RST
// from the client with any other sequence number is still blind.
func TestTCPChallengeACKToANewSYN(t *testing.T) {
	fx := newFibFixture(t)
	for i, v6 := range []bool{false, true} {
		c := newTCPConn(fx, uint16(42000+i))
		if v6 {
			c.v6, c.client, c.server, c.replyDst = true, "2001:db8:1::20", "2001:db8:2::10", "2001:db8:1::20"
		}
		c.send(t, c.fromClient("S", 0), ReasonFwdRedirect)

		// The TIME_WAIT socket's ACK: its own old sequence numbers.
		challenge := c.fromServer("A", 0)
		challenge.seq, challenge.ack = 900000, 770000
		c.send(t, challenge, ReasonFwdRedirect)
		c.expectState(t, natwallNwTcpStateNW_TCP_SYN_SENT)

		blind := c.fromClient("R", 0)
		blind.seq, blind.ack = 123456, 0
		c.send(t, blind, ReasonDropTCPRSTOutOfWindow)

		rst := c.fromClient("R", 0)
		rst.seq, rst.ack = 770000, 0
		c.send(t, rst, ReasonFwdRedirect)
		c.expectState(t, natwallNwTcpStateNW_TCP_SYN_SENT)

		// The client's SYN again, and the connection as usual.
		c.send(t, c.fromClient("S", 0), ReasonFwdRedirect)
		c.send(t, c.fromServer("SA", 0), ReasonFwdRedirect)
		c.send(t, c.fromClient("A", 0), ReasonFwdRedirect)
		c.expectState(t, natwallNwTcpStateNW_TCP_ESTABLISHED)
	}
}
