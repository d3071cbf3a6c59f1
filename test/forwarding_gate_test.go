package test

import (
	"context"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/natwall/natwall/test/lab"
)

// TestForwardingOnlyWhileEnforcing floods an inside host from outside with
// datagrams the policy denies (nothing inside opened a flow) while natwall
// starts, runs and stops with on_exit detach. The kernel must never forward
// one of them: natwall used to turn forwarding on about 0.4 s before XDP was
// attached, and to leave it on after detaching, so the appliance routed
// unfiltered in both windows. Meanwhile an inside host still reaches the
// outside while natwall runs.
func TestForwardingOnlyWhileEnforcing(t *testing.T) {
	for _, shape := range shapes {
		t.Run(shape.String(), func(t *testing.T) {
			l := newLab(t, lab.Options{Shape: shape, ServerRoutesToInside: true})
			client, server := l.Clients[0], l.Servers[0]
			target := netip.AddrPortFrom(client.IPv4, 9100)

			listener, err := client.NS.ListenPacket("udp4", target.String())
			if err != nil {
				t.Fatal(err)
			}
			defer listener.Close()
			var received atomic.Int64
			go func() {
				buf := make([]byte, 64)
				for {
					if _, _, err := listener.ReadFrom(buf); err != nil {
						return
					}
					received.Add(1)
				}
			}()

			ctx, stopFlood := context.WithCancel(testContext(t))
			defer stopFlood()
			conn, err := server.NS.Dial(ctx, "udp4", target.String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			var sent atomic.Int64
			flooding := make(chan struct{})
			go func() {
				defer close(flooding)
				for ctx.Err() == nil {
					// An unroutable moment (no neighbour yet) is an
					// error here; the flood goes on regardless.
					if _, err := conn.Write([]byte("unsolicited")); err == nil {
						sent.Add(1)
					} else if ne, ok := err.(net.Error); ok && !ne.Timeout() {
						time.Sleep(time.Millisecond)
					}
					time.Sleep(200 * time.Microsecond)
				}
			}()

			for sent.Load() < 50 {
				time.Sleep(time.Millisecond)
			}
			a := startNatwall(t, l, "")
			warmUp(t, client.NS, server.IPv4)
			time.Sleep(200 * time.Millisecond)
			denied := a.packets(t)["drop_policy"]
			a.stop(t)
			fwd, err := l.Appliance.ReadSysctl("net.ipv4.ip_forward")
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(300 * time.Millisecond)
			stopFlood()
			<-flooding

			if fwd != "0" {
				t.Errorf("net.ipv4.ip_forward = %s after natwall detached, want 0", fwd)
			}
			if denied == 0 {
				t.Errorf("drop_policy did not count the flood while natwall ran")
			}
			if n := sent.Load(); n < 500 {
				t.Fatalf("only %d datagrams sent: the flood did not cover start and stop", n)
			}
			if n := received.Load(); n != 0 {
				t.Errorf("the inside host received %d of %d unsolicited datagrams: the kernel forwarded while natwall did not enforce",
					n, sent.Load())
			}
		})
	}
}
