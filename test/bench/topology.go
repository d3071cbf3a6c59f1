package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/natwall/natwall/test/lab"
)

// The benchmark topology (../shared/research/performance.md §4.1):
//
//	gen ns                   dut ns                          sink ns
//	[gen0] <-veth-> [dut0]  (device under test)  [dut1] <-veth-> [sink0]
//
// Generated flows come from genSources, a routed inside network behind
// gen0, and go to sinkDestinations, a routed network behind sink0, so the
// device under test forwards them as a NAT instance would: between two
// subnets, with neither end on a connected network.
var (
	genAddr          = netip.MustParsePrefix("198.18.0.2/24")
	dutInsideAddr    = netip.MustParsePrefix("198.18.0.1/24")
	dutOutsideAddr   = netip.MustParsePrefix("198.19.0.1/24")
	sinkAddr         = netip.MustParsePrefix("198.19.0.2/24")
	insideNetwork    = netip.MustParsePrefix("198.18.0.0/16")
	genSources       = netip.MustParsePrefix("198.18.64.0/18")
	sinkDestinations = netip.MustParsePrefix("198.19.128.0/17")
)

const (
	genIf     = "gen0"
	dutInIf   = "dut0"
	dutOutIf  = "dut1"
	sinkIf    = "sink0"
	genCPU    = 0 // the generator thread and the sink's NAPI
	dutCPU    = 1 // nothing but the device under test's NAPI
	minCPUsTo = 2 // split generator and DUT
)

// topology is the three namespaces and their links.
type topology struct {
	gen, dut, sink *lab.NetNS
	// MACs and ifindexes the generator and the ceilings need.
	genMAC, dutInMAC, dutOutMAC, sinkMAC net.HardwareAddr
	genIfindex                           int
	// pinned is false where the machine has too few CPUs to split the
	// generator from the device under test.
	pinned bool
}

func newTopology(ctx context.Context) (_ *topology, err error) {
	t := &topology{}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()
	for _, ns := range []struct {
		into **lab.NetNS
		role string
	}{{&t.gen, "bench-gen"}, {&t.dut, "bench-dut"}, {&t.sink, "bench-sink"}} {
		if *ns.into, err = lab.NewNetNS(ns.role); err != nil {
			return nil, err
		}
	}
	steps := []struct {
		ns   *lab.NetNS
		args []string
	}{
		{t.gen, []string{"link", "add", genIf, "type", "veth", "peer", "name", dutInIf, "netns", t.dut.Name()}},
		{t.sink, []string{"link", "add", sinkIf, "type", "veth", "peer", "name", dutOutIf, "netns", t.dut.Name()}},
		{t.gen, []string{"addr", "add", genAddr.String(), "dev", genIf}},
		{t.dut, []string{"addr", "add", dutInsideAddr.String(), "dev", dutInIf}},
		{t.dut, []string{"addr", "add", dutOutsideAddr.String(), "dev", dutOutIf}},
		{t.sink, []string{"addr", "add", sinkAddr.String(), "dev", sinkIf}},
		{t.gen, []string{"link", "set", genIf, "up"}},
		{t.dut, []string{"link", "set", dutInIf, "up"}},
		{t.dut, []string{"link", "set", dutOutIf, "up"}},
		{t.sink, []string{"link", "set", sinkIf, "up"}},
		{t.gen, []string{"route", "add", "default", "via", dutInsideAddr.Addr().String()}},
		{t.sink, []string{"route", "add", "default", "via", dutOutsideAddr.Addr().String()}},
		{t.dut, []string{"route", "add", genSources.String(), "via", genAddr.Addr().String()}},
		{t.dut, []string{"route", "add", sinkDestinations.String(), "via", sinkAddr.Addr().String()}},
	}
	for _, s := range steps {
		if _, err := s.ns.IP(ctx, s.args...); err != nil {
			return nil, err
		}
	}
	for _, nic := range []struct {
		ns   *lab.NetNS
		name string
		mac  *net.HardwareAddr
	}{{t.gen, genIf, &t.genMAC}, {t.dut, dutInIf, &t.dutInMAC}, {t.dut, dutOutIf, &t.dutOutMAC}, {t.sink, sinkIf, &t.sinkMAC}} {
		ifc, err := nic.ns.Interface(nic.name)
		if err != nil {
			return nil, err
		}
		*nic.mac = ifc.HardwareAddr
		if nic.name == genIf {
			t.genIfindex = ifc.Index
		}
		// GRO gives every veth a NAPI instance, without which it cannot
		// take redirected frames; it also keeps the Linux baselines and the
		// XDP configurations on the same receive path (§4.1). Sending
		// checksum offload is off, as on a real NIC's wire: a frame XDP
		// forwards is never finished by a later stage.
		if _, err := nic.ns.Run(ctx, "ethtool", "-K", nic.name, "gro", "on", "tx", "off"); err != nil {
			return nil, err
		}
	}
	// Static neighbours: the device under test never waits for ARP, and
	// its XDP forwarders never hand a packet to the kernel for resolution.
	for _, n := range []struct {
		addr netip.Addr
		mac  net.HardwareAddr
		dev  string
	}{{genAddr.Addr(), t.genMAC, dutInIf}, {sinkAddr.Addr(), t.sinkMAC, dutOutIf}} {
		if _, err := t.dut.IP(ctx, "neigh", "replace", n.addr.String(), "lladdr", n.mac.String(), "dev", n.dev, "nud", "permanent"); err != nil {
			return nil, err
		}
	}
	for _, kv := range [][2]string{
		{"net.ipv4.ip_forward", "1"},
		{"net.ipv4.conf.all.rp_filter", "0"},
		{"net.ipv4.conf.default.rp_filter", "0"},
		{"net.ipv4.conf." + dutInIf + ".rp_filter", "0"},
		{"net.ipv4.conf." + dutOutIf + ".rp_filter", "0"},
	} {
		if err := t.dut.Sysctl(kv[0], kv[1]); err != nil {
			return nil, err
		}
	}
	// The connection-rate client opens tens of thousands of connections
	// per run, from one address.
	for _, kv := range [][2]string{{"net.ipv4.tcp_tw_reuse", "1"}, {"net.ipv4.ip_local_port_range", "1024 65000"}} {
		if err := t.gen.Sysctl(kv[0], kv[1]); err != nil {
			return nil, err
		}
	}
	t.pinned = numCPU() >= minCPUsTo
	if t.pinned {
		for _, nic := range []struct {
			ns   *lab.NetNS
			name string
		}{{t.dut, dutInIf}, {t.sink, sinkIf}} {
			// sysfs shows the namespace's own devices only when mounted
			// from inside it, which `ip netns exec` does.
			if out, err := runIn(ctx, nic.ns, "sh", "-c", "echo 1 > /sys/class/net/"+nic.name+"/threaded"); err != nil {
				return nil, fmt.Errorf("threaded NAPI on %s: %w: %s", nic.name, err, out)
			}
		}
	}
	return t, nil
}

// runIn runs a command the way `ip netns exec` does, with the namespace's
// own sysfs.
func runIn(ctx context.Context, ns *lab.NetNS, name string, args ...string) ([]byte, error) {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name(), name}, args...)...).CombinedOutput()
}

// pinNAPI puts the device under test's receive processing on its own CPU
// and the sink's next to the generator. XDP attach and detach recreate a
// veth's NAPI threads, so this runs after every configuration change.
func (t *topology) pinNAPI() error {
	if !t.pinned {
		return nil
	}
	threads, err := napiThreads()
	if err != nil {
		return err
	}
	for _, want := range []struct {
		dev string
		cpu int
		// realtime lets the thread preempt the generator, which never
		// sleeps: the sink then counts everything the DUT delivers instead
		// of sharing its CPU with the generator.
		realtime bool
	}{{dutInIf, dutCPU, false}, {sinkIf, genCPU, true}} {
		found := false
		for pid, comm := range threads {
			if strings.HasPrefix(comm, "napi/"+want.dev+"-") {
				var set unix.CPUSet
				set.Set(want.cpu)
				if err := unix.SchedSetaffinity(pid, &set); err != nil {
					return fmt.Errorf("pin %s (pid %d) to CPU %d: %w", comm, pid, want.cpu, err)
				}
				if want.realtime {
					attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: 50}
					if err := unix.SchedSetAttr(pid, &attr, 0); err != nil {
						return fmt.Errorf("real-time priority for %s (pid %d): %w", comm, pid, err)
					}
				}
				found = true
			}
		}
		if !found {
			return fmt.Errorf("no threaded NAPI kthread for %s", want.dev)
		}
	}
	return nil
}

// napiThreads maps the pids of NAPI kthreads to their names.
func napiThreads() (map[int]string, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	threads := map[int]string{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err != nil {
			continue // gone meanwhile
		}
		if name := strings.TrimSpace(string(comm)); strings.HasPrefix(name, "napi/") {
			threads[pid] = name
		}
	}
	return threads, nil
}

func numCPU() int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return 1
	}
	return set.Count()
}

func (t *topology) Close() error {
	var errs []error
	for _, ns := range []*lab.NetNS{t.gen, t.dut, t.sink} {
		if ns != nil {
			errs = append(errs, ns.Close())
		}
	}
	return errors.Join(errs...)
}
