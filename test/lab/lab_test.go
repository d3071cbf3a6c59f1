package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var shapes = []Shape{OneNIC, TwoNIC}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestShapes(t *testing.T) {
	for _, shape := range shapes {
		t.Run(shape.String(), func(t *testing.T) {
			l := NewT(t, Options{Shape: shape, Clients: 2, Servers: 2})
			ctx := testContext(t)

			wantNICs := map[Shape][]string{OneNIC: {SingleNIC}, TwoNIC: {InsideNIC, OutsideNIC}}[shape]
			if !slices.Equal(l.ApplianceNICs, wantNICs) {
				t.Errorf("ApplianceNICs = %v, want %v", l.ApplianceNICs, wantNICs)
			}
			wantFabrics := map[Shape]int{OneNIC: 1, TwoNIC: 2}[shape]
			if len(l.Fabric) != wantFabrics {
				t.Errorf("%d fabric namespaces, want %d", len(l.Fabric), wantFabrics)
			}
			if len(l.AppliancePorts) != len(l.ApplianceNICs) {
				t.Errorf("%d appliance ports for %d NICs", len(l.AppliancePorts), len(l.ApplianceNICs))
			}
			// Each port is the peer of its NIC: a veth's iflink is its peer's
			// ifindex.
			for i, p := range l.AppliancePorts {
				port, err := p.NS.link(p.Name)
				if err != nil {
					t.Fatal(err)
				}
				nic, err := l.Appliance.Interface(l.ApplianceNICs[i])
				if err != nil {
					t.Fatal(err)
				}
				if port.Attrs().ParentIndex != nic.Index {
					t.Errorf("port %s is the peer of ifindex %d, not of %s (%d)", p.Name, port.Attrs().ParentIndex, nic.Name, nic.Index)
				}
			}
			for i, c := range l.Clients {
				v4, v6, _ := ClientAddrs(i)
				if c.IPv4 != v4 || c.IPv6 != v6 || !InsideSubnetV4.Contains(v4) || !InsideSubnetV6.Contains(v6) {
					t.Errorf("client %d has %s and %s", i, c.IPv4, c.IPv6)
				}
			}
			for i, s := range l.Servers {
				v4, v6, _ := ServerAddrs(i)
				if s.IPv4 != v4 || s.IPv6 != v6 || InsideNetworkV4.Contains(v4) || InsideNetworkV6.Contains(v6) {
					t.Errorf("server %d has %s and %s", i, s.IPv4, s.IPv6)
				}
			}

			// The appliance answers for its own addresses without help.
			for _, c := range l.Clients {
				for _, dst := range []netip.Addr{ApplianceInsideV4, ApplianceInsideV6} {
					if err := c.NS.Ping(ctx, dst); err != nil {
						t.Errorf("client %s to appliance: %v", c.IPv4, err)
					}
				}
			}
			for _, s := range l.Servers {
				for _, dst := range []netip.Addr{ApplianceOutsideV4, ApplianceOutsideV6} {
					if err := s.NS.Ping(ctx, dst); err != nil {
						t.Errorf("server %s to appliance: %v", s.IPv4, err)
					}
				}
			}

			// Nothing forwards until someone turns forwarding on.
			if err := l.Clients[0].NS.Ping(ctx, l.Servers[0].IPv4); err == nil {
				t.Error("client reached a server through an appliance that does not forward")
			}
		})
	}
}

func TestForwarding(t *testing.T) {
	for _, shape := range shapes {
		t.Run(shape.String(), func(t *testing.T) {
			l := NewT(t, Options{Shape: shape, Clients: 2, Servers: 2})
			ctx := testContext(t)
			before := snmp(t, l.Appliance)

			if err := l.EnableApplianceForwarding(); err != nil {
				t.Fatal(err)
			}
			pings := 0
			for _, c := range l.Clients {
				for _, s := range l.Servers {
					for _, dst := range []netip.Addr{s.IPv4, s.IPv6} {
						if err := c.NS.Ping(ctx, dst); err != nil {
							t.Errorf("client %s to server %s: %v", c.IPv4, dst, err)
						}
					}
					pings++
				}
			}

			for _, dst := range []netip.Addr{l.Servers[1].IPv4, l.Servers[1].IPv6} {
				if err := echoOverTCP(ctx, l.Clients[1].NS, l.Servers[1].NS, dst); err != nil {
					t.Errorf("TCP to %s: %v", dst, err)
				}
			}

			after := snmp(t, l.Appliance)
			// Each ping is a request and a reply.
			for _, counter := range []string{"Ip.ForwDatagrams", "Ip6OutForwDatagrams"} {
				if got := after[counter] - before[counter]; got < int64(2*pings) {
					t.Errorf("%s rose by %d, want at least %d", counter, got, 2*pings)
				}
			}
		})
	}
}

// echoOverTCP connects from client to a listener on dst in server and checks
// that what it sends comes back.
func echoOverTCP(ctx context.Context, client, server *NetNS, dst netip.Addr) error {
	ln, err := server.Listen("tcp", net.JoinHostPort(dst.String(), "0"))
	if err != nil {
		return err
	}
	defer ln.Close()
	served := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		defer conn.Close()
		_, err = io.Copy(conn, conn)
		served <- err
	}()

	conn, err := client.Dial(ctx, "tcp", ln.Addr().String())
	if err != nil {
		return err
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		conn.SetDeadline(deadline)
	}
	want := []byte("through the appliance\n")
	if _, err := conn.Write(want); err != nil {
		return err
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	got, err := io.ReadAll(conn)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("echo returned %q, want %q", got, want)
	}
	if remote := conn.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap(); remote != dst {
		return fmt.Errorf("connected to %s, want %s", remote, dst)
	}
	return <-served
}

func snmp(t *testing.T, ns *NetNS) map[string]int64 {
	t.Helper()
	counters, err := ns.Snmp()
	if err != nil {
		t.Fatal(err)
	}
	return counters
}

// TestOptions needs no privileges: New checks its options before it creates
// anything.
func TestOptions(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want string // part of the error
	}{
		{"no shape", Options{}, "shape"},
		{"unknown shape", Options{Shape: 7}, "shape"},
		{"negative clients", Options{Shape: TwoNIC, Clients: -1}, "clients"},
		{"too many servers", Options{Shape: OneNIC, Servers: MaxHosts + 1}, "servers"},
		{"MTU too small for IPv6", Options{Shape: TwoNIC, ApplianceMTU: 1279}, "MTU"},
		{"MTU too large for a veth", Options{Shape: TwoNIC, ApplianceMTU: 65536}, "MTU"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := ownNamespaces(t)
			l, err := New(tt.opts)
			if err == nil {
				l.Close()
				t.Fatal("New succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
			if after := ownNamespaces(t); !slices.Equal(after, before) {
				t.Errorf("namespaces before %v, after %v", before, after)
			}
		})
	}
}

func TestApplianceMTUAndInterface(t *testing.T) {
	l := NewT(t, Options{Shape: TwoNIC, ApplianceMTU: 9000})
	for _, nic := range l.ApplianceNICs {
		iface, err := l.Appliance.Interface(nic)
		if err != nil {
			t.Fatal(err)
		}
		if iface.Index <= 0 || len(iface.HardwareAddr) != 6 || iface.MTU != 9000 || iface.Flags&net.FlagUp == 0 {
			t.Errorf("appliance %s: %+v, want an index, a MAC, MTU 9000, up", nic, iface)
		}
	}
	client, err := l.Clients[0].NS.Interface(HostNIC)
	if err != nil {
		t.Fatal(err)
	}
	if client.MTU != 1500 {
		t.Errorf("client MTU %d, want 1500", client.MTU)
	}
	if _, err := l.Appliance.Interface("nonexistent0"); err == nil {
		t.Error("Interface found a NIC that does not exist")
	}
}

func TestGROOnEveryVeth(t *testing.T) {
	RequirePrivileges(t)
	if _, err := exec.LookPath("ethtool"); err != nil {
		t.Fatalf("ethtool, which checks the lab independently: %v", err)
	}
	for _, shape := range shapes {
		t.Run(shape.String(), func(t *testing.T) {
			l := NewT(t, Options{Shape: shape, Clients: 2, Servers: 1})
			ctx := testContext(t)
			for _, w := range l.wires {
				for _, end := range []struct {
					ns   *NetNS
					name string
				}{{w.fabric, w.port}, {w.endpoint, w.nic}} {
					out, err := end.ns.Run(ctx, "ethtool", "-k", end.name)
					if err != nil {
						t.Fatal(err)
					}
					if !strings.Contains(string(out), "generic-receive-offload: on") {
						t.Errorf("GRO off on %s in %s:\n%s", end.name, end.ns, out)
					}
				}
			}
		})
	}
}

func TestServerRoutesToInside(t *testing.T) {
	for _, withRoutes := range []bool{false, true} {
		t.Run(fmt.Sprint(withRoutes), func(t *testing.T) {
			l := NewT(t, Options{Shape: TwoNIC, ServerRoutesToInside: withRoutes})
			ctx := testContext(t)
			for _, prefix := range []netip.Prefix{InsideNetworkV4, InsideNetworkV6} {
				family := map[bool]string{true: "-4", false: "-6"}[prefix.Addr().Is4()]
				out, err := l.Servers[0].NS.IP(ctx, family, "route", "show", "exact", prefix.String())
				if err != nil {
					t.Fatal(err)
				}
				if has := strings.Contains(string(out), "via"); has != withRoutes {
					t.Errorf("route to %s: %q, want a route %v", prefix, out, withRoutes)
				}
			}
		})
	}
}

func TestIPCommandSetsRouteMTU(t *testing.T) {
	l := NewT(t, Options{Shape: TwoNIC})
	ctx := testContext(t)
	if _, err := l.Appliance.IP(ctx, "route", "replace", "198.19.1.10/32", "dev", OutsideNIC, "mtu", "lock", "1280"); err != nil {
		t.Fatal(err)
	}
	out, err := l.Appliance.IP(ctx, "route", "get", "198.19.1.10")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "mtu lock 1280") {
		t.Errorf("route get: %s", out)
	}
}

// ownNamespaces lists the namespaces this test binary has bound under
// /run/netns.
func ownNamespaces(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if pid, ok := parseNetNSName(e.Name()); ok && pid == os.Getpid() {
			names = append(names, e.Name())
		}
	}
	return names
}

func hostLinks(t *testing.T) []string {
	t.Helper()
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var links []string
	for _, i := range ifaces {
		links = append(links, fmt.Sprintf("%d:%s", i.Index, i.Name))
	}
	return links
}

func TestCloseLeavesNothing(t *testing.T) {
	RequirePrivileges(t)
	for _, shape := range shapes {
		t.Run(shape.String(), func(t *testing.T) {
			ctx := testContext(t)
			namespacesBefore, linksBefore := ownNamespaces(t), hostLinks(t)

			l, err := New(Options{Shape: shape, Clients: 2, Servers: 2})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
			var names []string
			for _, ns := range l.Namespaces() {
				names = append(names, ns.Name())
			}
			listed, err := exec.CommandContext(ctx, "ip", "netns", "list").Output()
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range names {
				if !strings.Contains(string(listed), name) {
					t.Fatalf("ip netns list does not show %s:\n%s", name, listed)
				}
			}
			daemon, err := l.Servers[1].NS.Start("sleep", "60")
			if err != nil {
				t.Fatal(err)
			}

			if err := l.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if err := l.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}

			select {
			case <-daemon.Done():
			default:
				t.Error("Close left a process running")
			}
			listed, err = exec.CommandContext(ctx, "ip", "netns", "list").Output()
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range names {
				if strings.Contains(string(listed), name) {
					t.Errorf("ip netns list still shows %s", name)
				}
			}
			if after := ownNamespaces(t); !slices.Equal(after, namespacesBefore) {
				t.Errorf("namespaces before %v, after %v", namespacesBefore, after)
			}
			if after := hostLinks(t); !slices.Equal(after, linksBefore) {
				t.Errorf("host links before %v, after %v", linksBefore, after)
			}
			if _, err := l.Appliance.Run(ctx, "true"); !errors.Is(err, ErrClosed) {
				t.Errorf("Run after Close: %v, want ErrClosed", err)
			}
			if _, err := l.Appliance.Start("true"); !errors.Is(err, ErrClosed) {
				t.Errorf("Start after Close: %v, want ErrClosed", err)
			}
			if err := l.Appliance.Do(func() error { return nil }); !errors.Is(err, ErrClosed) {
				t.Errorf("Do after Close: %v, want ErrClosed", err)
			}
		})
	}
}

func TestFailedConstructionLeavesNothing(t *testing.T) {
	RequirePrivileges(t)
	errInjected := errors.New("injected failure")
	for _, shape := range shapes {
		for _, failAfter := range buildSteps {
			t.Run(fmt.Sprintf("%v/%s", shape, failAfter), func(t *testing.T) {
				namespacesBefore, linksBefore := ownNamespaces(t), hostLinks(t)
				var reached []string
				l, err := build(Options{Shape: shape, Clients: 2, Servers: 2}, func(step string) error {
					reached = append(reached, step)
					if step == failAfter {
						return errInjected
					}
					return nil
				})
				if !errors.Is(err, errInjected) {
					if l != nil {
						l.Close()
					}
					t.Fatalf("build: %v, want the injected failure", err)
				}
				if l != nil {
					t.Error("build returned a lab along with an error")
				}
				if !strings.Contains(err.Error(), failAfter) {
					t.Errorf("error %q does not name step %s", err, failAfter)
				}
				if want := buildSteps[:slices.Index(buildSteps, failAfter)+1]; !slices.Equal(reached, want) {
					t.Errorf("steps run %v, want %v", reached, want)
				}
				if after := ownNamespaces(t); !slices.Equal(after, namespacesBefore) {
					t.Errorf("namespaces before %v, after %v", namespacesBefore, after)
				}
				if after := hostLinks(t); !slices.Equal(after, linksBefore) {
					t.Errorf("host links before %v, after %v", linksBefore, after)
				}
			})
		}
	}
}

func TestSweep(t *testing.T) {
	// First, so that the sweep NewNetNST runs once per test binary comes
	// before the stale namespace exists.
	live := NewNetNST(t, "live")
	ctx := testContext(t)

	exited := exec.Command("true")
	if err := exited.Run(); err != nil {
		t.Fatal(err)
	}
	deadPid := exited.Process.Pid
	if processAlive(deadPid) {
		t.Fatalf("pid %d already reused", deadPid)
	}

	stale, err := createNetNS(fmt.Sprintf("%s%d-1-stale", namePrefix, deadPid))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stale.Close() })
	leftover, err := stale.Start("sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	// Sweep finds the process by its namespace, so wait until it is in it.
	err = pollContext(ctx, func() error {
		var st, nsSt unix.Stat_t
		if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", leftover.Pid()), &st); err != nil {
			return err
		}
		if err := unix.Stat(stale.Path(), &nsSt); err != nil {
			return err
		}
		if st.Ino != nsSt.Ino {
			return errors.New("not in the namespace yet")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	removed, err := Sweep()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(removed, stale.Name()) {
		t.Errorf("Sweep removed %v, not %s", removed, stale.Name())
	}
	if slices.Contains(removed, live.Name()) {
		t.Errorf("Sweep removed %s, whose creator is alive", live.Name())
	}
	for path, want := range map[string]bool{stale.Path(): false, live.Path(): true} {
		if _, err := os.Stat(path); (err == nil) != want {
			t.Errorf("%s exists: %v, want %v", path, err == nil, want)
		}
	}
	select {
	case <-leftover.Done():
	case <-ctx.Done():
		t.Fatal("Sweep left the process in the stale namespace running")
	}
	if err := stale.Close(); err != nil {
		t.Errorf("Close after Sweep: %v", err)
	}
}

func TestRun(t *testing.T) {
	ns := NewNetNST(t, "run")
	ctx := testContext(t)

	out, err := ns.IP(ctx, "-o", "link", "show")
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); len(lines) != 1 || !strings.Contains(lines[0], ": lo:") {
		t.Errorf("a new namespace should hold only lo, has:\n%s", out)
	}

	// nsenter leaves the mounts alone: the host's bpffs stays visible.
	out, err = ns.Run(ctx, "stat", "-f", "-c", "%T", "/sys/fs/bpf")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(out)); got != "bpf_fs" {
		t.Errorf("/sys/fs/bpf inside the namespace is %q, want bpf_fs", got)
	}

	_, err = ns.Run(ctx, "sh", "-c", "echo boom >&2; exit 3")
	if err == nil {
		t.Fatal("a failing command succeeded")
	}
	for _, want := range []string{`sh -c "echo boom >&2; exit 3"`, "boom", "exit status 3", ns.Name()} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}

	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := ns.Run(short, "sleep", "30"); err == nil {
		t.Error("Run outlived its context")
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("Run returned %s after its context ended", elapsed)
	}
}

func TestProcess(t *testing.T) {
	ns := NewNetNST(t, "proc")
	ctx := testContext(t)

	waitOutput := func(p *Process, want string) {
		t.Helper()
		err := pollContext(ctx, func() error {
			if !strings.Contains(p.Output(), want) {
				return fmt.Errorf("output %q lacks %q", p.Output(), want)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	t.Run("stop on SIGTERM", func(t *testing.T) {
		p, err := ns.Start("sh", "-c", "echo to-stdout; echo to-stderr >&2; exec sleep 30")
		if err != nil {
			t.Fatal(err)
		}
		waitOutput(p, "to-stdout")
		waitOutput(p, "to-stderr")
		if err := p.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})

	t.Run("kill after grace", func(t *testing.T) {
		p, err := ns.Start("sh", "-c", `trap "" TERM; echo ready; sleep 30`)
		if err != nil {
			t.Fatal(err)
		}
		waitOutput(p, "ready")
		err = p.StopWithin(100 * time.Millisecond)
		if err == nil || !strings.Contains(err.Error(), "killed") {
			t.Errorf("StopWithin: %v, want an error saying it was killed", err)
		}
		select {
		case <-p.Done():
		default:
			t.Error("process still running after StopWithin")
		}
	})

	t.Run("own failure", func(t *testing.T) {
		p, err := ns.Start("sh", "-c", "echo bye; exit 3")
		if err != nil {
			t.Fatal(err)
		}
		err = p.Wait()
		if err == nil || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "bye") {
			t.Errorf("Wait: %v, want exit status 3 and the output", err)
		}
		if stopErr := p.Stop(); stopErr == nil {
			t.Error("Stop hid that the process had failed")
		}
		if err := p.Signal(unix.SIGHUP); !errors.Is(err, os.ErrProcessDone) {
			t.Errorf("Signal after exit: %v, want os.ErrProcessDone", err)
		}
	})

	t.Run("signal", func(t *testing.T) {
		p, err := ns.Start("sh", "-c", `trap "echo got-hup; exit 0" HUP; echo ready; while :; do sleep 0.05; done`)
		if err != nil {
			t.Fatal(err)
		}
		waitOutput(p, "ready")
		if err := p.Signal(unix.SIGHUP); err != nil {
			t.Fatal(err)
		}
		if err := p.Wait(); err != nil {
			t.Errorf("Wait: %v", err)
		}
		if !strings.Contains(p.Output(), "got-hup") {
			t.Errorf("output %q, want got-hup", p.Output())
		}
	})

	t.Run("closed with its namespace", func(t *testing.T) {
		other := NewNetNST(t, "proc-close")
		p, err := other.Start("sleep", "30")
		if err != nil {
			t.Fatal(err)
		}
		if err := other.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-p.Done():
		default:
			t.Error("Close left the process running")
		}
	})
}

// TestNoThreadLeftInANamespace checks that creating namespaces and entering
// them leaves every thread of the process where it was. A thread left behind
// would run unrelated goroutines inside a lab namespace; the main thread left
// behind would make /proc/<pid>/ns/net name the namespace, and Sweep kill the
// process.
func TestNoThreadLeftInANamespace(t *testing.T) {
	RequirePrivileges(t)
	threadNamespaces := func() map[uint64]int {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			t.Fatal(err)
		}
		inodes := map[uint64]int{}
		for _, task := range tasks {
			var st unix.Stat_t
			if err := unix.Stat(filepath.Join("/proc/self/task", task.Name(), "ns", "net"), &st); err == nil {
				inodes[st.Ino]++
			}
		}
		return inodes
	}
	before := threadNamespaces()
	if len(before) != 1 {
		t.Fatalf("threads already in %d namespaces", len(before))
	}
	for i := range 20 {
		ns := NewNetNST(t, fmt.Sprintf("thread%d", i))
		if err := ns.Do(func() error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	after := threadNamespaces()
	for inode := range after {
		if before[inode] == 0 {
			t.Errorf("%d threads in namespace %d after creating namespaces", after[inode], inode)
		}
	}
}

func TestDo(t *testing.T) {
	a := NewNetNST(t, "do-a")
	b := NewNetNST(t, "do-b")

	inode := func(path string) uint64 {
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	want := map[*NetNS]uint64{a: inode(a.Path()), b: inode(b.Path())}
	host := inode("/proc/thread-self/ns/net")

	errs := make(chan error, 40)
	for i := range cap(errs) {
		ns := []*NetNS{a, b}[i%2]
		go func() {
			errs <- ns.Do(func() error {
				var st unix.Stat_t
				if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
					return err
				}
				if st.Ino != want[ns] {
					return fmt.Errorf("in namespace %d, want %d (%s)", st.Ino, want[ns], ns)
				}
				return nil
			})
		}()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}

	// Threads Do used go back to the pool in the original namespace.
	for range 20 {
		done := make(chan uint64)
		go func() {
			var st unix.Stat_t
			unix.Stat("/proc/thread-self/ns/net", &st)
			done <- st.Ino
		}()
		if got := <-done; got != host {
			t.Fatalf("a thread is in namespace %d after Do, want %d", got, host)
		}
	}

	t.Run("error", func(t *testing.T) {
		errFn := errors.New("from fn")
		if err := a.Do(func() error { return errFn }); !errors.Is(err, errFn) {
			t.Errorf("Do returned %v, want fn's error", err)
		}
	})
	t.Run("panic", func(t *testing.T) {
		defer func() {
			if v := recover(); v != "from fn" {
				t.Errorf("recovered %v, want fn's panic", v)
			}
		}()
		a.Do(func() error { panic("from fn") })
	})
}

func TestSysctl(t *testing.T) {
	ns := NewNetNST(t, "sysctl")
	hostBefore, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"net.ipv4.ip_forward", "net/ipv6/conf/all/forwarding"} {
		for _, value := range []string{"1", "0"} {
			if err := ns.Sysctl(key, value); err != nil {
				t.Fatal(err)
			}
			got, err := ns.ReadSysctl(key)
			if err != nil {
				t.Fatal(err)
			}
			if got != value {
				t.Errorf("%s = %q after setting %q", key, got, value)
			}
		}
	}
	if err := ns.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	hostAfter, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(hostBefore, hostAfter) {
		t.Errorf("the host's ip_forward changed from %q to %q", hostBefore, hostAfter)
	}
	if _, err := ns.ReadSysctl("net.ipv4.no_such_key"); err == nil {
		t.Error("read a sysctl that does not exist")
	}
}

func TestSnmp(t *testing.T) {
	forwarding := NewNetNST(t, "snmp-fwd")
	quiet := NewNetNST(t, "snmp-quiet")
	if err := forwarding.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	// Ip.Forwarding is 1 for a router and 2 for a host: each namespace must
	// report its own.
	for ns, want := range map[*NetNS]int64{forwarding: 1, quiet: 2} {
		counters := snmp(t, ns)
		if got := counters["Ip.Forwarding"]; got != want {
			t.Errorf("%s: Ip.Forwarding = %d, want %d", ns, got, want)
		}
		for _, key := range []string{"Ip.ForwDatagrams", "Icmp.OutTimeExcds", "Ip6OutForwDatagrams", "Icmp6OutTimeExcds", "Udp.InDatagrams", "TcpExt.ListenDrops"} {
			if v, ok := counters[key]; !ok || v != 0 {
				t.Errorf("%s: %s = %d (present %v), want 0 in a new namespace", ns, key, v, ok)
			}
		}
		if got := counters["Tcp.MaxConn"]; got != -1 {
			t.Errorf("%s: Tcp.MaxConn = %d, want -1", ns, got)
		}
	}
}

func TestCapture(t *testing.T) {
	l := NewT(t, Options{Shape: TwoNIC})
	ctx := testContext(t)
	if err := l.EnableApplianceForwarding(); err != nil {
		t.Fatal(err)
	}
	client, server := l.Clients[0], l.Servers[0]
	wan := l.Fabric[1]

	c, err := StartCapture(wan, BridgeName, "icmp and src net "+InsideNetworkV4.String())
	if err != nil {
		t.Fatal(err)
	}
	nothing, err := StartCapture(server.Port.NS, server.Port.Name, "host 198.19.1.99")
	if err != nil {
		t.Fatal(err)
	}
	if err := client.NS.Ping(ctx, server.IPv4); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitFor(ctx, 1); err != nil {
		t.Fatal(err)
	}
	packets, lines, err := c.Stop()
	if err != nil {
		t.Fatal(err)
	}
	if packets != 1 || len(lines) != 1 {
		t.Fatalf("captured %d packets, lines %q; want the one echo request", packets, lines)
	}
	if want := fmt.Sprintf("%s > %s: ICMP echo request", client.IPv4, server.IPv4); !strings.Contains(lines[0], want) {
		t.Errorf("line %q, want %q", lines[0], want)
	}
	frames := c.Frames()
	if c.LinkType() != 1 || len(frames) != 1 {
		t.Fatalf("link type %d, %d frames", c.LinkType(), len(frames))
	}
	data := frames[0].Data
	if len(data) < 34 || data[12] != 0x08 || data[13] != 0x00 || netip.AddrFrom4([4]byte(data[26:30])) != client.IPv4 {
		t.Errorf("frame is not IPv4 from %s: % x", client.IPv4, data)
	}
	if again, _, err := c.Stop(); again != packets || err != nil {
		t.Errorf("second Stop: %d packets, %v", again, err)
	}

	if packets, lines, err := nothing.Stop(); packets != 0 || len(lines) != 0 || err != nil {
		t.Errorf("capture that matches nothing: %d packets, %q, %v", packets, lines, err)
	}

	t.Run("bad filter", func(t *testing.T) {
		if _, err := StartCapture(wan, BridgeName, "this is not a filter("); err == nil {
			t.Error("tcpdump accepted a bad filter")
		}
	})
	t.Run("no such interface", func(t *testing.T) {
		if _, err := StartCapture(wan, "nonexistent0", ""); err == nil {
			t.Error("tcpdump captured on an interface that does not exist")
		}
	})
	t.Run("stopped by Close", func(t *testing.T) {
		ns := NewNetNST(t, "capture")
		c, err := StartCapture(ns, "lo", "")
		if err != nil {
			t.Fatal(err)
		}
		if err := ns.Close(); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.Stop(); err != nil {
			t.Errorf("Stop after Close: %v", err)
		}
		if _, err := os.Stat(c.path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("capture file %s left behind: %v", c.path, err)
		}
	})
}

var errNoXDP = errors.New("no XDP program attached")

// attachedXDP returns the id of the XDP program attached to ifname in ns.
func attachedXDP(ns *NetNS, ifname string) (uint32, error) {
	link, err := ns.link(ifname)
	if err != nil {
		return 0, err
	}
	if xdp := link.Attrs().Xdp; xdp != nil && xdp.Attached {
		return xdp.ProgId, nil
	}
	return 0, fmt.Errorf("%s in %s: %w", ifname, ns, errNoXDP)
}

func TestFabricPortsFacingTheApplianceRunXDP(t *testing.T) {
	for _, shape := range shapes {
		t.Run(shape.String(), func(t *testing.T) {
			l := NewT(t, Options{Shape: shape})
			for _, w := range l.wires {
				_, err := attachedXDP(w.fabric, w.port)
				if facesAppliance := w.endpoint == l.Appliance; facesAppliance != (err == nil) {
					t.Errorf("%s in %s: facing the appliance %v, XDP: %v", w.port, w.fabric, facesAppliance, err)
				}
			}
		})
	}
}

// TestXDPFramesAreDelivered checks the wiring natwall relies on: frames the
// appliance sends back out of a NIC with XDP_TX, or over to the other NIC
// with XDP_REDIRECT, reach the fabric.
func TestXDPFramesAreDelivered(t *testing.T) {
	const (
		bpfCall         = 0x05 | 0x80 // BPF_JMP | BPF_CALL
		bpfFuncRedirect = 23          // BPF_FUNC_redirect
	)
	tests := []struct {
		name     string
		shape    Shape
		redirect bool
	}{
		{"OneNIC/XDP_TX", OneNIC, false},
		{"TwoNIC/XDP_TX", TwoNIC, false},
		{"TwoNIC/XDP_REDIRECT", TwoNIC, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewT(t, Options{Shape: tt.shape})
			ctx := testContext(t)
			client := l.Clients[0]
			// The test programs bounce ARP too: let the kernel answer it
			// first. A single one-second ping can lose the race with the
			// neighbour's resolution on a loaded machine: try for a while.
			for deadline := time.Now().Add(5 * time.Second); ; {
				err := client.NS.Ping(ctx, ApplianceInsideV4)
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal(err)
				}
			}

			// An echo request from the client passes the fabric port facing
			// the appliance's inside NIC on its way in, and again on its way
			// back out; a redirected one passes the port facing the outside
			// NIC once.
			program := []bpfInsn{movImm(0, xdpTX), exit()}
			watch, want := l.AppliancePorts[0], 2
			if tt.redirect {
				out, err := l.Appliance.Interface(OutsideNIC)
				if err != nil {
					t.Fatal(err)
				}
				program = []bpfInsn{movImm(1, int32(out.Index)), movImm(2, 0), {code: bpfCall, imm: bpfFuncRedirect}, exit()}
				watch, want = l.AppliancePorts[1], 1
			}
			if err := attachXDP(l.Appliance, l.ApplianceNICs[0], "nwlab_test", program); err != nil {
				t.Fatal(err)
			}
			filter := fmt.Sprintf("icmp and src host %s and dst host %s", client.IPv4, ApplianceInsideV4)
			c, err := StartCapture(watch.NS, watch.Name, filter)
			if err != nil {
				t.Fatal(err)
			}
			if err := client.NS.Ping(ctx, ApplianceInsideV4); err == nil {
				t.Error("the appliance's kernel answered although XDP took every frame")
			}
			waitCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if err := c.WaitFor(waitCtx, want); err != nil {
				t.Error(err)
			}
			if packets, lines, err := c.Stop(); packets != want || err != nil {
				t.Errorf("captured %d packets (%v), want %d: %q", packets, err, want, lines)
			}
		})
	}
}
