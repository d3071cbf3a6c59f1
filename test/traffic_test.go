package test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/natwall/natwall/test/lab"
)

// tcpEcho sends n random bytes from client to an echo server on server
// (listening on port) at dst, reads them back, and checks they match.
func tcpEcho(ctx context.Context, client, server *lab.NetNS, dst netip.Addr, port, n int) error {
	ln, err := server.Listen("tcp", net.JoinHostPort(listenAddr(dst), fmt.Sprint(port)))
	if err != nil {
		return err
	}
	defer ln.Close()
	go echoServer(ln)
	return tcpEchoTo(ctx, client, netip.AddrPortFrom(dst, uint16(port)), n)
}

// tcpEchoTo sends n random bytes to an echo server at dst and checks the echo.
func tcpEchoTo(ctx context.Context, client *lab.NetNS, dst netip.AddrPort, n int) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, "tcp", dst.String())
	if err != nil {
		return err
	}
	defer c.Close()
	if d, ok := ctx.Deadline(); ok {
		c.SetDeadline(d)
	}
	want := make([]byte, n)
	rand.Read(want)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(want)
		errc <- err
	}()
	got := make([]byte, n)
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("read echo of %d bytes: %w", n, err)
	}
	if err := <-errc; err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("echo of %d bytes differs", n)
	}
	return nil
}

// udpEcho sends datagrams from client to an echo server on server and
// waits for each to come back.
func udpEcho(ctx context.Context, client, server *lab.NetNS, dst netip.Addr, port, count int) error {
	pc, err := serveUDPEcho(server, net.JoinHostPort(listenAddr(dst), fmt.Sprint(port)))
	if err != nil {
		return err
	}
	defer pc.Close()
	c, err := client.Dial(ctx, "udp", netip.AddrPortFrom(dst, uint16(port)).String())
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 2048)
	for i := 0; i < count; i++ {
		msg := []byte(fmt.Sprintf("natwall udp %d", i))
		// UDP may lose the first datagram while neighbours resolve: retry
		// each a few times before calling it lost.
		var got bool
		for try := 0; try < 5 && !got; try++ {
			if _, err := c.Write(msg); err != nil {
				return err
			}
			c.SetReadDeadline(time.Now().Add(time.Second))
			n, err := c.Read(buf)
			if err == nil && bytes.Equal(buf[:n], msg) {
				got = true
			}
		}
		if !got {
			return fmt.Errorf("udp datagram %d to %s never echoed", i, dst)
		}
	}
	return nil
}

// listenAddr is the address a server binds: its own.
func listenAddr(a netip.Addr) string { return a.String() }

// serveUDPEcho answers every datagram to addr in ns with itself, until the
// returned conn is closed.
func serveUDPEcho(ns *lab.NetNS, addr string) (net.PacketConn, error) {
	pc, err := ns.ListenPacket("udp", addr)
	if err != nil {
		return nil, err
	}
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	return pc, nil
}

// echoConn is a TCP connection from client to an echo server it starts on
// server:port, proven with one round trip; both end with the test.
func echoConn(t *testing.T, ctx context.Context, client, server *lab.Host, port uint16) net.Conn {
	t.Helper()
	ln, err := server.NS.Listen("tcp4", netip.AddrPortFrom(server.IPv4, port).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go echoServer(ln)
	conn, err := client.NS.Dial(ctx, "tcp4", netip.AddrPortFrom(server.IPv4, port).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := roundTrip(conn, "before"); err != nil {
		t.Fatal(err)
	}
	return conn
}

// echoServer echoes every connection ln accepts until ln is closed.
func echoServer(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			io.Copy(c, c)
		}()
	}
}
