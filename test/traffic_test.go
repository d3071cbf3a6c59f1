package test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/netip"
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
	pc, err := server.ListenPacket("udp", net.JoinHostPort(listenAddr(dst), fmt.Sprint(port)))
	if err != nil {
		return err
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
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
