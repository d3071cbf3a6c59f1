package bench

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/natwall/natwall/test/lab"
)

// traffic is what the generator sends in one trial.
type traffic struct {
	// flows is the number of distinct flows cycled through; 0 makes every
	// packet a new flow.
	flows uint32
	// Destination ports dportBase+i for i in [0, dportCount): a case
	// spreads packets over the rules' ports or aims at one of them.
	dportBase, dportCount uint16
	// dsts spreads packets over sinkDestinations' first dsts addresses.
	dsts uint32
}

const (
	// ruleBasePort is rule i's destination port, plus i.
	ruleBasePort = 20000
	// unmatchedPort matches no rule: packets to it take the default action.
	unmatchedPort = 19000
	// establishedFlows is the number of pre-warmed flows in established
	// mode, unless the rules need more to be spread over. §4.3 suggests 1k;
	// with as many flows as the largest rule set, every case and rule count
	// keeps the same flow-table footprint, and only the rules vary.
	establishedFlows = 10_000
	// newFlowDsts keeps new flows from exhausting the SNAT port space of
	// any one destination: translators allocate ports per destination.
	newFlowDsts = 4096
)

func (tr traffic) config() benchbpfNwbGenConfig {
	return benchbpfNwbGenConfig{
		Flows:      tr.flows,
		SrcBase:    beUint32(genSources.Addr()),
		SrcCount:   uint32(1) << (32 - genSources.Bits()),
		DstBase:    beUint32(sinkDestinations.Addr()) + 1,
		DstCount:   max(tr.dsts, 1),
		SportBase:  1024,
		SportCount: 64000,
		DportBase:  tr.dportBase,
		DportCount: max(tr.dportCount, 1),
	}
}

func beUint32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// xdpMD is struct xdp_md, the context BPF_PROG_RUN takes.
type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// BPF_F_TEST_XDP_LIVE_FRAMES: frames the program sends really leave.
const liveFrames = 1 << 1

// generator sends the frames of one traffic spec out of gen0.
type generator struct {
	objs  benchbpfObjects
	frame []byte
	topo  *topology
}

func newGenerator(topo *topology, tr traffic) (*generator, error) {
	spec, err := loadBenchbpf()
	if err != nil {
		return nil, err
	}
	if err := spec.Variables["nwb_traffic"].Set(tr.config()); err != nil {
		return nil, err
	}
	g := &generator{topo: topo}
	if err := spec.LoadAndAssign(&g.objs, nil); err != nil {
		return nil, fmt.Errorf("load the generator: %w", err)
	}
	g.frame, err = templateFrame(topo)
	if err != nil {
		g.Close()
		return nil, err
	}
	return g, nil
}

// templateFrame is the generator's frame: 64 bytes (with FCS) of IPv4
// UDP from gen0 to dut0, with the addresses and ports of its first flow,
// which nwb_gen rewrites for every packet.
func templateFrame(topo *topology) ([]byte, error) {
	return frameOf(topo, traffic{}, 0)
}

// frameOf is the frame the generator sends for flow (as nwb_gen writes
// it), for timing one packet with BPF_PROG_RUN.
func frameOf(topo *topology, tr traffic, flow uint32) ([]byte, error) {
	cfg := tr.config()
	addr := func(v uint32) net.IP { return net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v)) }
	eth := &layers.Ethernet{SrcMAC: topo.genMAC, DstMAC: topo.dutInMAC, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP,
		SrcIP: addr(cfg.SrcBase + (flow/uint32(cfg.SportCount))%cfg.SrcCount),
		DstIP: addr(cfg.DstBase + flow%cfg.DstCount)}
	udp := &layers.UDP{SrcPort: layers.UDPPort(uint32(cfg.SportBase) + flow%uint32(cfg.SportCount)),
		DstPort: layers.UDPPort(uint32(cfg.DportBase) + flow%uint32(cfg.DportCount))}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		return nil, err
	}
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, udp, gopacket.Payload(make([]byte, 18)))
	return buf.Bytes(), err
}

func (g *generator) Close() error { return g.objs.Close() }

func (g *generator) generated() (uint64, error) {
	var n uint64
	err := g.objs.NwbGenerated.Get(&n)
	return n, err
}

// send generates for d, or until limit packets are out if limit is not 0,
// on the generator's CPU. It returns what it sent and how long it took.
// The count is the program's own: cilium/ebpf restarts a run the kernel
// interrupted, so a run can send more than it asked for.
func (g *generator) send(d time.Duration, limit uint64) (sent uint64, elapsed time.Duration, err error) {
	const chunk = 1 << 14 // packets per BPF_PROG_RUN call: ~5 ms at 3 Mpps
	before, err := g.generated()
	if err != nil {
		return 0, 0, err
	}
	err = g.topo.gen.Do(func() error {
		restore, err := pinThread(genCPU, g.topo.pinned)
		if err != nil {
			return err
		}
		defer restore()
		start := time.Now()
		for {
			repeat := uint64(chunk)
			if limit != 0 {
				repeat = min(repeat, limit-sent)
			}
			_, err := g.objs.NwbGen.Run(&ebpf.RunOptions{
				Data:      g.frame,
				Repeat:    uint32(repeat),
				Flags:     liveFrames,
				BatchSize: 64,
				Context:   xdpMD{DataEnd: uint32(len(g.frame)), IngressIfindex: uint32(g.topo.genIfindex)},
			})
			if err != nil {
				return fmt.Errorf("generate: %w", err)
			}
			elapsed = time.Since(start)
			now, err := g.generated()
			if err != nil {
				return err
			}
			sent = now - before
			if elapsed >= d || (limit != 0 && sent >= limit) {
				return nil
			}
		}
	})
	return sent, elapsed, err
}

// trickle sends n packets in bursts no larger than a veth ring, at about
// 30,000 packets per second, below any DUT's rate of opening flows, so
// that every packet arrives.
func (g *generator) trickle(n uint64) error {
	const burst, pause = 64, 2 * time.Millisecond
	for sent := uint64(0); sent < n; {
		k, _, err := g.send(0, min(burst, n-sent))
		if err != nil {
			return err
		}
		sent += k
		time.Sleep(pause)
	}
	return nil
}

// pinThread binds the calling (locked) thread to cpu and returns how to
// undo it.
func pinThread(cpu int, pin bool) (restore func(), err error) {
	if !pin {
		return func() {}, nil
	}
	runtime.LockOSThread()
	var old, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	return func() {
		_ = unix.SchedSetaffinity(0, &old)
		runtime.UnlockOSThread()
	}, nil
}

// counterProgram is an attached XDP program that counts into nwb_count: the
// sink, or the drop ceiling at the device under test.
type counterProgram struct {
	objs benchbpfObjects
	link link.Link
}

// attachCounter loads the bench objects and attaches program (one of
// nwb_sink, nwb_drop, nwb_redirect) to dev in ns, in native mode only.
func attachCounter(ns *lab.NetNS, dev, program string, constants map[string]any, egressIfindex int) (_ *counterProgram, err error) {
	spec, err := loadBenchbpf()
	if err != nil {
		return nil, err
	}
	for name, v := range constants {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("set %s: %w", name, err)
		}
	}
	c := &counterProgram{}
	if err := spec.LoadAndAssign(&c.objs, nil); err != nil {
		return nil, fmt.Errorf("load %s: %w", program, err)
	}
	defer func() {
		if err != nil {
			c.objs.Close()
		}
	}()
	prog := map[string]*ebpf.Program{"nwb_sink": c.objs.NwbSink, "nwb_drop": c.objs.NwbDrop, "nwb_redirect": c.objs.NwbRedirect, "nwb_pass": c.objs.NwbPass}[program]
	if prog == nil {
		return nil, fmt.Errorf("no program %s", program)
	}
	ifc, err := ns.Interface(dev)
	if err != nil {
		return nil, err
	}
	err = ns.Do(func() error {
		// A devmap resolves its ifindexes in the namespace of the thread
		// that writes them.
		if egressIfindex != 0 {
			if err := c.objs.NwbEgress.Put(uint32(0), uint32(egressIfindex)); err != nil {
				return fmt.Errorf("devmap: %w", err)
			}
		}
		// Driver mode or nothing: generic XDP would measure something else
		// (§4.5).
		c.link, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifc.Index, Flags: link.XDPDriverMode})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("attach %s to %s in native mode: %w", program, dev, err)
	}
	return c, nil
}

// count is the packets the program has seen, over all CPUs.
func (c *counterProgram) count() (uint64, error) {
	var perCPU []uint64
	if err := c.objs.NwbCount.Lookup(uint32(0), &perCPU); err != nil {
		return 0, err
	}
	var sum uint64
	for _, n := range perCPU {
		sum += n
	}
	return sum, nil
}

func (c *counterProgram) setEcho(on bool) error {
	v := uint32(0)
	if on {
		v = 1
	}
	return c.objs.NwbSinkEcho.Set(v)
}

func (c *counterProgram) Close() error {
	var errs []error
	if c.link != nil {
		errs = append(errs, c.link.Close())
	}
	errs = append(errs, c.objs.Close())
	return errors.Join(errs...)
}
