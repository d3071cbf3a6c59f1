package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
)

func runHost(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}

// connRateConfigs are measured for new TCP connections per second, with
// the rule count at its smallest.
var connRateConfigs = []string{"B2", "B3", "B5", "O2", "O3"}

const connRatePort = 9000

// connectionRates measures new TCP connections per second end to end: a Go
// client in the generator's namespace connects, sends a byte, reads the
// answer and closes, in a loop, through the DUT to a server behind the
// sink (§4.3.3, netperf TCP_CRR's pattern), with one and two clients.
func (b *bench) connectionRates(report *Report, rep int) error {
	server, err := b.topo.sink.Listen("tcp", netJoin(sinkAddr.Addr().String(), connRatePort))
	if err != nil {
		return err
	}
	defer server.Close()
	go serveOneByte(server)

	n := b.opts.RuleCounts[0]
	for _, id := range connRateConfigs {
		cfg := configByID(id)
		if len(b.opts.Configs) > 0 && !containsID(b.selected(), id) {
			continue
		}
		if _, err := cfg.setup(b, n); err != nil {
			return errors.Join(fmt.Errorf("%s: %w", id, err), b.teardown())
		}
		for _, clients := range []int{1, 2} {
			rate, err := b.connectionRate(clients)
			if err != nil {
				return errors.Join(fmt.Errorf("%s: %w", id, err), b.teardown())
			}
			report.addConnRate(cfg, n, clients, rate)
			fmt.Fprintf(b.opts.Progress, "rep %d  %-3s N=%-6d TCP connect/request/close, %d client(s): %.0f/s\n", rep+1, id, n, clients, rate)
		}
		if err := b.teardown(); err != nil {
			return err
		}
	}
	return nil
}

func containsID(cs []config, id string) bool {
	for _, c := range cs {
		if c.ID == id {
			return true
		}
	}
	return false
}

func netJoin(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }

func serveOneByte(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			var buf [1]byte
			if _, err := io.ReadFull(c, buf[:]); err == nil {
				_, _ = c.Write(buf[:])
			}
		}()
	}
}

// connectionRate runs clients loops for the configured time and returns
// completed connections per second. A failed connection fails the trial:
// a rate of broken connections is no rate.
func (b *bench) connectionRate(clients int) (float64, error) {
	ctx, cancel := context.WithTimeout(b.ctx, b.opts.ConnDuration)
	defer cancel()
	var done atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, clients)
	start := time.Now()
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Sockets belong to the namespace of the thread that opens
			// them: the loop runs on a thread inside the generator's.
			errs[i] = b.topo.gen.Do(func() error {
				d := net.Dialer{Timeout: 3 * time.Second}
				addr := netJoin(sinkAddr.Addr().String(), connRatePort)
				for ctx.Err() == nil {
					if err := requestOnce(&d, addr); err != nil {
						if ctx.Err() != nil {
							return nil
						}
						return err
					}
					done.Add(1)
				}
				return nil
			})
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	return float64(done.Load()) / time.Since(start).Seconds(), nil
}

func requestOnce(d *net.Dialer, addr string) error {
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(3 * time.Second)); err != nil {
		return err
	}
	if _, err := c.Write([]byte{'x'}); err != nil {
		return err
	}
	var buf [1]byte
	_, err = io.ReadFull(c, buf[:])
	return err
}

// stateFlows is how many flows the state measurement opens by default
// (§4.3.4).
const stateFlows = 100_000

// statePerFlow opens Options.StateFlows new flows through natwall with SNAT and
// through Linux with MASQUERADE, and measures what each keeps per flow.
func (b *bench) statePerFlow(report *Report) error {
	n := b.opts.RuleCounts[0]
	var st StateResult
	st.Flows = b.opts.StateFlows

	if _, err := configByID("O3").setup(b, n); err != nil {
		return errors.Join(err, b.teardown())
	}
	err := b.openFlows()
	if err == nil {
		st.Natwall, err = natwallStateBytes(b.pinDir)
	}
	if err = errors.Join(err, b.teardown()); err != nil {
		return fmt.Errorf("natwall state: %w", err)
	}

	if _, err := configByID("B3").setup(b, n); err != nil {
		return errors.Join(err, b.teardown())
	}
	before, err := slabUsage()
	if err == nil {
		err = b.openFlows()
	}
	var after slab
	if err == nil {
		time.Sleep(100 * time.Millisecond)
		after, err = slabUsage()
	}
	if err = errors.Join(err, b.teardown()); err != nil {
		return fmt.Errorf("Linux state: %w", err)
	}
	st.LinuxConntrackObjects = after.conntrackObjects - before.conntrackObjects
	st.LinuxConntrackObjSize = after.conntrackObjSize
	st.LinuxSlabBytes = after.totalBytes - before.totalBytes
	report.State = &st
	return nil
}

func (b *bench) openFlows() error {
	gen, err := newGenerator(b.topo, caseNew.traffic(1, 0))
	if err != nil {
		return err
	}
	defer gen.Close()
	err = gen.trickle(uint64(b.opts.StateFlows))
	time.Sleep(50 * time.Millisecond)
	return err
}

// natwallStateBytes is what natwall's flows occupy: in every per-flow map,
// the entries in use times the kernel's accounted bytes per entry.
func natwallStateBytes(pinDir string) (MapState, error) {
	out := MapState{PerMap: map[string]MapUse{}}
	for _, name := range []string{"nw_ct4", "nw_ct4_rev", "nw_snat4_fwd", "nw_snat4_rev"} {
		m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, name), nil)
		if err != nil {
			return out, err
		}
		info, err := m.Info()
		if err != nil {
			m.Close()
			return out, err
		}
		memlock, _ := info.Memlock()
		entries := 0
		key := make([]byte, m.KeySize())
		it := m.Iterate()
		var val []byte
		for it.Next(&key, &val) {
			entries++
		}
		err = it.Err()
		m.Close()
		if err != nil {
			return out, err
		}
		use := MapUse{Entries: entries, BytesPerEntry: float64(memlock) / float64(info.MaxEntries)}
		out.PerMap[name] = use
		out.Bytes += use.BytesPerEntry * float64(entries)
		if name == "nw_ct4" {
			out.Flows = entries
		}
	}
	return out, nil
}

type slab struct {
	conntrackObjects, conntrackObjSize int64
	totalBytes                         int64
}

// slabUsage reads the nf_conntrack slab cache and the kernel's total slab
// memory; the extensions NAT needs live in the general kmalloc caches.
func slabUsage() (slab, error) {
	var s slab
	f, err := os.Open("/proc/slabinfo")
	if err != nil {
		return s, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || fields[0] != "nf_conntrack" {
			continue
		}
		s.conntrackObjects, _ = strconv.ParseInt(fields[1], 10, 64)
		s.conntrackObjSize, _ = strconv.ParseInt(fields[3], 10, 64)
	}
	if err := sc.Err(); err != nil {
		return s, err
	}
	meminfo, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(meminfo), "\n") {
		if rest, ok := strings.CutPrefix(line, "Slab:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return s, err
			}
			s.totalBytes = kb * 1024
		}
	}
	if s.conntrackObjSize == 0 {
		return s, errors.New("no nf_conntrack cache in /proc/slabinfo")
	}
	return s, nil
}
