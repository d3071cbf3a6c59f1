package dataplane

import (
	"fmt"

	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/google/gopacket/layers"

	"github.com/natwall/natwall/rules"
)

// These benchmarks run the XDP program in the kernel with BPF_PROG_RUN and
// report the kernel's own ns per run. They need root and run on demand:
//
//	go test -run '^$' -bench . ./dataplane/

// benchRun times a path that leaves the frame unchanged: BPF_PROG_RUN's
// repeat mode runs the program on the same buffer again and again.
func (fx *fibFixture) benchRun(b *testing.B, frame []byte, ingress string, wantAction uint32) {
	b.Helper()
	var ret uint32
	var per time.Duration
	err := inNetNS(fx.ns, func() error {
		var err error
		ret, per, err = fx.objs.XdpNatwall.Benchmark(frame, b.N, nil)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	if ret != wantAction {
		b.Fatalf("action %d, want %d", ret, wantAction)
	}
	b.ReportMetric(float64(per.Nanoseconds()), "ns/packet")
}

// benchOnce times a path that rewrites the frame (TTL, MACs, NAT). Both of
// BPF_PROG_RUN's repeat modes would run the program on the frame it
// already rewrote (live mode recycles pages without restoring them), so
// that the TTL soon expires and translated packets meet no flow. Each
// iteration runs the original frame once, arriving on ingress as in
// production (without a context the kernel feeds it from loopback, and the
// route lookup starts there); the kernel times each run.
func (fx *fibFixture) benchOnce(b *testing.B, frame []byte, ingress string, wantAction uint32) {
	b.Helper()
	fx.benchEach(b, func(int) []byte { return frame }, ingress, wantAction)
}

// benchEach runs frameFor(i) once in iteration i, for paths that need a
// different packet each time, such as a new flow's.
func (fx *fibFixture) benchEach(b *testing.B, frameFor func(i int) []byte, ingress string, wantAction uint32) {
	b.Helper()
	ifindex := fx.ifindex(ingress)
	var total time.Duration
	err := inNetNS(fx.ns, func() error {
		for i := range b.N {
			frame := frameFor(i)
			ctx := xdpMD{DataEnd: uint32(len(frame)), IngressIfindex: ifindex}
			ret, per, err := testRunTimed(fx.objs.XdpNatwall, frame, &ctx)
			if err != nil {
				return err
			}
			if ret != wantAction {
				return fmt.Errorf("action %d, want %d", ret, wantAction)
			}
			total += per
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/packet")
}

// testRunTimed is one BPF_PROG_RUN with a context, returning the kernel's
// duration, which cilium/ebpf's Run (the only call that takes a context)
// does not report.
func testRunTimed(prog *ebpf.Program, frame []byte, ctx *xdpMD) (uint32, time.Duration, error) {
	var attr struct {
		progFD, retval, dataSizeIn, dataSizeOut uint32
		dataIn, dataOut                         uint64
		repeat, duration                        uint32
		ctxSizeIn, ctxSizeOut                   uint32
		ctxIn, ctxOut                           uint64
		flags, cpu, batchSize                   uint32
		_                                       uint32
	}
	attr.progFD = uint32(prog.FD())
	attr.dataSizeIn = uint32(len(frame))
	attr.dataIn = uint64(uintptr(unsafe.Pointer(&frame[0])))
	attr.repeat = 1
	attr.ctxSizeIn = uint32(unsafe.Sizeof(*ctx))
	attr.ctxIn = uint64(uintptr(unsafe.Pointer(ctx)))
	_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_TEST_RUN, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(frame)
	runtime.KeepAlive(ctx)
	if errno != 0 {
		return 0, 0, fmt.Errorf("BPF_PROG_TEST_RUN: %w", errno)
	}
	return attr.retval, time.Duration(attr.duration), nil
}

func BenchmarkXDPForwarding(b *testing.B) {
	fx := newFibFixture(b)
	syn := frame4(b, l4spec{proto: layers.IPProtocolTCP, src: "198.18.1.20", dst: "198.19.1.10", sport: 40000, dport: 443, tcpFlags: "S"})
	ack := frame4(b, l4spec{proto: layers.IPProtocolTCP, src: "198.18.1.20", dst: "198.19.1.10", sport: 40000, dport: 443, tcpFlags: "A"})
	// The handshake's SYN-ACK, so that the flow is established and the
	// benchmark times the established path, not the handshake's.
	synAck := func(dst string, dport uint16) []byte {
		return frame4(b, l4spec{proto: layers.IPProtocolTCP, src: "198.19.1.10", dst: dst, sport: 443, dport: dport, tcpFlags: "SA"})
	}

	b.Run("established", func(b *testing.B) {
		fx.apply(b, fixtureSettings())
		fx.run(b, syn, "a0")
		fx.run(b, synAck("198.18.1.20", 40000), "b0")
		fx.run(b, ack, "a0")
		fx.benchOnce(b, ack, "a0", xdpRedirect)
	})
	b.Run("established-snat", func(b *testing.B) {
		fx.apply(b, natSettings(1024, 65535))
		snat := frame4(b, l4spec{proto: layers.IPProtocolTCP, src: "198.18.1.21", dst: "198.19.1.10", sport: 40001, dport: 443, tcpFlags: "S"})
		fx.run(b, snat, "a0")
		fx.run(b, synAck(natAddr, 40001), "b0")
		snatAck := frame4(b, l4spec{proto: layers.IPProtocolTCP, src: "198.18.1.21", dst: "198.19.1.10", sport: 40001, dport: 443, tcpFlags: "A"})
		fx.run(b, snatAck, "a0")
		fx.benchOnce(b, snatAck, "a0", xdpRedirect)
	})
	udp := func(src, dst string, sport, dport uint16) []byte {
		return frame4(b, l4spec{proto: layers.IPProtocolUDP, src: src, dst: dst, sport: sport, dport: dport})
	}
	b.Run("established-udp", func(b *testing.B) {
		fx.apply(b, fixtureSettings())
		out := udp("198.18.1.22", "198.19.1.10", 40002, 53)
		fx.run(b, out, "a0")
		fx.benchOnce(b, out, "a0", xdpRedirect)
	})
	// A reply is found through the reverse index: two more lookups.
	b.Run("established-udp-reply", func(b *testing.B) {
		fx.apply(b, fixtureSettings())
		fx.run(b, udp("198.18.1.20", "198.19.1.10", 40003, 53), "a0")
		fx.benchOnce(b, udp("198.19.1.10", "198.18.1.20", 53, 40003), "b0", xdpRedirect)
	})
	// Each iteration opens a flow of its own, from a source of its own so
	// that no per-source limit is reached. The fixture's table holds
	// fixtureTableSize flows: it is emptied, untimed, before it fills, so
	// that the path timed is admission, not early drop.
	newFlow := func(i int) []byte {
		if i%(fixtureTableSize/2) == 0 {
			fx.clearFlows(b)
		}
		j := i % 50000
		src := fmt.Sprintf("198.18.%d.%d", 2+j/250, 1+j%250)
		return udp(src, "198.19.1.10", uint16(10000+i/50000), 53)
	}
	b.Run("new-flow", func(b *testing.B) {
		fx.apply(b, fixtureSettings())
		fx.benchEach(b, newFlow, "a0", xdpRedirect)
	})
	b.Run("not-ip", func(b *testing.B) {
		arp := make([]byte, 60)
		arp[12], arp[13] = 0x08, 0x06
		fx.benchRun(b, arp, "a0", xdpPass)
	})
}

// syntheticStage builds a stage of n rules, rule i matching TCP port 80 to
// the /32 at index i, the shape of a large allow list. It builds the
// tables directly; naiveStage's per-value scan is too slow at this size.
func syntheticStage(n int, action, def rules.Action) *rules.StageTables {
	words := (n + 63) / 64
	st := &rules.StageTables{Default: def, DefaultID: 1}
	vec := func(bits ...int) uint32 {
		bv := make([]uint64, words)
		for _, i := range bits {
			bv[i/64] |= 1 << (i % 64)
		}
		st.Bitvectors = append(st.Bitvectors, bv)
		return uint32(len(st.Bitvectors) - 1)
	}
	all := make([]int, n)
	for i := range all {
		all[i] = i
	}
	every, none := vec(all...), vec()
	for i := 0; i < n; i++ {
		st.RuleIDs = append(st.RuleIDs, uint32(100+i))
		st.Actions = append(st.Actions, action)
		st.Dst = append(st.Dst, rules.PrefixBV{Prefix: ruleAddr(i), BV: vec(i)})
	}
	for _, p := range []string{"0.0.0.0/0", "::/0"} {
		st.Src = append(st.Src, rules.PrefixBV{Prefix: netip.MustParsePrefix(p), BV: every})
		st.Dst = append(st.Dst, rules.PrefixBV{Prefix: netip.MustParsePrefix(p), BV: none})
	}
	for i := range st.Proto {
		st.Proto[i] = none
	}
	st.Proto[6] = every
	for i := range st.SrcPort {
		st.SrcPort[i], st.DstPort[i], st.ICMP[i] = every, none, none
	}
	st.DstPort[80] = every
	st.NoPort, st.NoICMP = none, every
	for i := range st.Zone {
		st.Zone[i] = every
	}
	return st
}

// ruleAddr is rule i's destination, inside 198.19.0.0/16 but not the
// fixture's server, so that the default case still routes.
func ruleAddr(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte(100 + i/250), byte(1 + i%250)}), 32)
}

// BenchmarkClassifier measures the stateless stage at 10, 1,000 and 30,000
// rules, for a packet that matches the first rule and one that matches
// none and falls to the default. Both then take the same path (the rule
// and the default pass), so the difference is the classifier's.
func BenchmarkClassifier(b *testing.B) {
	fx := newFibFixture(b)
	// The rules' destinations route like the server's, so both packets
	// take the same path after the classifier.
	if out, err := exec.Command("ip", "-n", fmt.Sprintf("nwtest-xdp-%d", os.Getpid()),
		"route", "add", "198.19.96.0/19", "dev", "b0").CombinedOutput(); err != nil {
		b.Fatalf("%v: %s", err, out)
	}
	first := frame4(b, l4spec{proto: layers.IPProtocolTCP, src: "198.18.1.20", dst: "198.19.100.1", sport: 40000, dport: 80, tcpFlags: "A"})
	miss := frame4(b, l4spec{proto: layers.IPProtocolTCP, src: "198.18.1.20", dst: "198.19.1.10", sport: 40000, dport: 80, tcpFlags: "A"})
	b.Run("rules=0", func(b *testing.B) {
		fx.benchRun(b, miss, "a0", xdpDrop)
	})
	for _, n := range []int{10, 1000, 30000} {
		st := syntheticStage(n, rules.Pass, rules.Pass)
		start := time.Now()
		if err := loadRules(&fx.objs, st, nil); err != nil {
			b.Fatal(err)
		}
		b.Logf("%d rules loaded in %v", n, time.Since(start).Round(time.Millisecond))
		for _, tc := range []struct {
			name  string
			frame []byte
		}{{"first-rule", first}, {"default", miss}} {
			b.Run(fmt.Sprintf("rules=%d/%s", n, tc.name), func(b *testing.B) {
				// Mid-stream ACKs without a flow are dropped after the
				// stateless stage: the same path for both packets.
				fx.benchRun(b, tc.frame, "a0", xdpDrop)
			})
		}
	}
}
