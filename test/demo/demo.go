// Package demo is `natwall demo`: it builds a lab of network namespaces, runs
// natwall in the appliance, sends real traffic through it, and tells in plain
// words what happened, with the counters that prove it.
package demo

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/natwall/natwall/dataplane"
	"github.com/natwall/natwall/test/lab"
)

// metricsListen is where the demo's natwall serves /healthz and /metrics,
// inside the appliance's namespace.
const metricsListen = "127.0.0.1:9617"

// Options configure Run.
type Options struct {
	// Natwall is the natwall binary to run in the appliance.
	Natwall string
	// Out receives the story.
	Out io.Writer
}

// Run builds the lab, runs the demo and tears everything down, also when
// ctx is cancelled (Ctrl-C).
func Run(ctx context.Context, opts Options) (err error) {
	out := opts.Out
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }

	if os.Geteuid() != 0 {
		return errors.New("the demo builds network namespaces and loads XDP programs: run it as root")
	}
	if _, err := lab.Sweep(); err != nil {
		return err
	}

	say("== Building the lab")
	say("   Two clients in a private subnet (%s), one server on the \"internet\" (%s),", lab.InsideSubnetV4, lab.OutsideSubnetV4)
	say("   and an appliance VM with two NICs between them (in0 inside, out0 outside).")
	say("   The clients' default route points at the appliance, as a cloud route table (UDR) would.")
	l, err := lab.New(lab.Options{Shape: lab.TwoNIC, Clients: 2, Servers: 1})
	if err != nil {
		return err
	}
	defer func() {
		say("\n== Cleaning up: stopping natwall, deleting the namespaces")
		err = errors.Join(err, l.Close())
	}()
	if err := l.LikeRealNICs(ctx); err != nil {
		return err
	}

	dir, err := os.MkdirTemp("", "natwall-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	pinDir := fmt.Sprintf("/sys/fs/bpf/natwall-demo-%d", os.Getpid())
	defer os.RemoveAll(pinDir)
	config := filepath.Join(dir, "natwall.yaml")
	cfg := fmt.Sprintf(`interfaces: [%s, %s]
inside_networks: [%s, %s]
pin_dir: %s
metrics:
  listen: %s
api:
  socket: %s
log:
  format: text
snat:
  enabled: true
  addresses: [%s]
`, lab.InsideNIC, lab.OutsideNIC, lab.InsideNetworkV4, lab.InsideNetworkV6, pinDir, metricsListen, filepath.Join(dir, "natwall.sock"), lab.ApplianceOutsideV4)
	if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
		return err
	}

	say("\n== Starting natwall on the appliance")
	say("   natwall run --config %s", config)
	for _, line := range strings.Split(strings.TrimSpace(cfg), "\n") {
		say("     %s", line)
	}
	proc, err := l.Appliance.Start(opts.Natwall, "run", "--config", config)
	if err != nil {
		return err
	}
	defer proc.Stop()
	st, err := waitDataplane(ctx, l, pinDir, proc)
	if err != nil {
		return err
	}
	defer st.Close()
	say("   natwall is attached: XDP on in0 and out0, native mode, state pinned under %s.", pinDir)

	client0, client1, server := l.Clients[0], l.Clients[1], l.Servers[0]
	kernelBefore, err := l.Appliance.Snmp()
	if err != nil {
		return err
	}

	say("\n== Sending traffic through the appliance")
	if err := warmUp(ctx, client0.NS, server.IPv4); err != nil {
		return err
	}
	for _, dst := range []netip.Addr{server.IPv4, server.IPv6} {
		start := time.Now()
		if err := client0.NS.Ping(ctx, dst); err != nil {
			return fmt.Errorf("ping %s: %w", dst, err)
		}
		say("   client0 pinged %s: answered in %v", dst, time.Since(start).Round(time.Microsecond))
	}

	seen, err := tcpTransfer(ctx, client0.NS, server.NS, server.IPv4, 9000, 4<<20)
	if err != nil {
		return err
	}
	say("   client0 (%s) sent 4 MiB over TCP to %s:9000; the server saw it come from %s.", client0.IPv4, server.IPv4, seen)
	if seen.Addr() == lab.ApplianceOutsideV4 {
		say("   That is the appliance's outside address: natwall translated the source (SNAT).")
	}
	seen1, err := tcpTransfer(ctx, client1.NS, server.NS, server.IPv4, 9001, 64<<10)
	if err != nil {
		return err
	}
	say("   client1 (%s) connected too; the server saw %s.", client1.IPv4, seen1)
	seen6, err := tcpTransfer(ctx, client0.NS, server.NS, server.IPv6, 9002, 64<<10)
	if err != nil {
		return err
	}
	say("   Over IPv6, which natwall tracks but does not translate, the server saw %s.", seen6)

	if _, err := client0.NS.Dial(ctx, "tcp", netip.AddrPortFrom(server.IPv4, 9003).String()); err == nil {
		say("   (unexpected: a connection to a closed port succeeded)")
	} else {
		say("   A connection to a closed port on the server was refused at once: the server's RST came back through natwall.")
	}
	ctxIn, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, errIn := server.NS.Dial(ctxIn, "tcp", netip.AddrPortFrom(client0.IPv4, 22).String())
	cancel()
	if errIn != nil {
		say("   The server tried to connect in to client0 (%s:22): natwall dropped it (only replies come in).", client0.IPv4)
	}

	say("\n== What natwall did")
	counters, err := st.Counters()
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "   reason\tverdict\tpackets\tbytes")
	var fwd uint64
	sort.Slice(counters, func(i, j int) bool { return counters[i].Packets > counters[j].Packets })
	for _, c := range counters {
		if c.Packets == 0 {
			continue
		}
		if c.Reason.Verdict() == dataplane.VerdictForward {
			fwd += c.Packets
		}
		fmt.Fprintf(tw, "   %s\t%s\t%d\t%d\n", c.Reason.Name(), c.Reason.Verdict(), c.Packets, c.Bytes)
	}
	tw.Flush()
	kernelAfter, err := l.Appliance.Snmp()
	if err != nil {
		return err
	}
	kfwd := kernelAfter["Ip.ForwDatagrams"] - kernelBefore["Ip.ForwDatagrams"] +
		kernelAfter["Ip6OutForwDatagrams"] - kernelBefore["Ip6OutForwDatagrams"]
	say("   natwall forwarded %d packets in XDP; the appliance's kernel forwarded %d.", fwd, kfwd)
	say("   (The kernel only sees what it must handle: the first packet to a neighbour not yet")
	say("   resolved, ARP and neighbour discovery, traffic for the appliance itself.)")

	say("\n== Connection tracking (natwall conntrack list)")
	tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "   proto\tfrom\tto\tas the server sees it\tstate\tpackets out/back")
	err = st.Flows(func(f dataplane.Flow) bool {
		proto := dataplane.ProtoName(f.Proto)
		state := dataplane.TCPStateName(f.TCPState)
		if state == "" {
			state = "-"
		}
		fmt.Fprintf(tw, "   %s\t%s\t%s\t%s -> %s\t%s\t%d/%d\n", proto, f.Src, f.Dst, f.ReplyDst, f.ReplySrc, state, f.PacketsOrig, f.PacketsReply)
		return true
	})
	tw.Flush()
	if err != nil {
		return err
	}
	usage, err := st.SNATUsage()
	if err != nil {
		return err
	}
	for _, u := range usage {
		if u.Mappings > 0 {
			say("   SNAT: %d of %d %s ports in use on %s", u.Mappings, u.Capacity, map[uint8]string{6: "TCP", 17: "UDP", 1: "ICMP"}[u.Proto], u.Addr)
		}
	}
	return nil
}

// waitDataplane waits until natwall reports itself healthy, which it does
// only once its program is attached, then opens its pinned state.
func waitDataplane(ctx context.Context, l *lab.Lab, pinDir string, proc *lab.Process) (*dataplane.State, error) {
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return l.Appliance.Dial(ctx, network, addr)
		}}}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get("http://" + metricsListen + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return dataplane.OpenState(pinDir)
			}
		}
		select {
		case <-proc.Done():
			return nil, fmt.Errorf("natwall exited:\n%s", proc.Output())
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("natwall not healthy within 20s:\n%s", proc.Output())
		}
	}
}

// warmUp pings until the path answers: natwall has just attached, and the
// first packets wait for neighbour resolution.
func warmUp(ctx context.Context, ns *lab.NetNS, dst netip.Addr) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := ns.Ping(ctx, dst)
		if err == nil || time.Now().After(deadline) {
			return err
		}
	}
}

// tcpTransfer sends n bytes from client to a sink on server and returns the
// address the server saw the connection come from.
func tcpTransfer(ctx context.Context, client, server *lab.NetNS, dst netip.Addr, port, n int) (netip.AddrPort, error) {
	ln, err := server.Listen("tcp", netip.AddrPortFrom(dst, uint16(port)).String())
	if err != nil {
		return netip.AddrPort{}, err
	}
	defer ln.Close()
	type result struct {
		from netip.AddrPort
		data []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		data, err := io.ReadAll(c)
		done <- result{from: c.RemoteAddr().(*net.TCPAddr).AddrPort(), data: data, err: err}
	}()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, "tcp", netip.AddrPortFrom(dst, uint16(port)).String())
	if err != nil {
		return netip.AddrPort{}, err
	}
	payload := make([]byte, n)
	rand.Read(payload)
	if _, err := c.Write(payload); err != nil {
		c.Close()
		return netip.AddrPort{}, err
	}
	c.Close()
	select {
	case r := <-done:
		if r.err != nil {
			return netip.AddrPort{}, r.err
		}
		if !bytes.Equal(r.data, payload) {
			return netip.AddrPort{}, fmt.Errorf("the server received %d bytes that differ from the %d sent", len(r.data), n)
		}
		return netip.AddrPortFrom(r.from.Addr().Unmap(), r.from.Port()), nil
	case <-ctx.Done():
		return netip.AddrPort{}, fmt.Errorf("transfer to %s: %w", dst, ctx.Err())
	}
}
