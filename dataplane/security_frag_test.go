package dataplane

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/google/gopacket/layers"

	"golang.org/x/sys/unix"

	"github.com/natwall/natwall/rules"
)

// TestVerifiedInstructions loads the program and logs how many instructions
// the verifier processed, the number the 1M limit applies to.
func TestVerifiedInstructions(t *testing.T) {
	requireRoot(t)
	spec, err := loadNatwall()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinNone
	}
	var objs natwallObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			for _, l := range ve.Log[max(0, len(ve.Log)-40):] {
				t.Log(l)
			}
		}
		t.Fatalf("load: %v", err)
	}
	defer objs.Close()
	info, err := objs.XdpNatwall.Info()
	if err != nil {
		t.Fatal(err)
	}
	n, ok := info.VerifiedInstructions()
	if !ok {
		t.Fatal("kernel does not report verified instructions")
	}
	t.Logf("xdp_natwall: %d verified instructions", n)
	// The verifier refuses a program at 1,000,000: keep a tenth for the
	// next change, which should find out here rather than at load.
	if n > 900000 {
		t.Errorf("%d verified instructions: within a tenth of the verifier's 1M limit", n)
	}
}

// flowEnds drains the flow event ring and returns the flow ends in it,
// decoded from struct nw_flow_event: type at byte 8, reason at 12, the
// original source address at 24 and source port at 88.
func flowEnds(t *testing.T, rd *ringbuf.Reader) []flowEnd {
	t.Helper()
	var out []flowEnd
	for {
		rd.SetDeadline(time.Now().Add(100 * time.Millisecond))
		rec, err := rd.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return out
		}
		must(t, err)
		b := rec.RawSample
		if b[8] != uint8(natwallNwEventTypeNW_EVENT_FLOW_END) {
			continue
		}
		out = append(out, flowEnd{
			reason: Reason(binary.LittleEndian.Uint32(b[12:])),
			src:    netip.AddrFrom4([4]byte(b[24:28])),
			sport:  binary.BigEndian.Uint16(b[88:]),
		})
	}
}

type flowEnd struct {
	reason Reason
	src    netip.Addr
	sport  uint16
}

// runMany feeds frames to the program without reading counters between
// them, for floods, and returns how many frames got each XDP action. They
// all run on CPU 0, as packets of one receive queue do: an LRU map keeps
// each CPU's newest entries on a list of that CPU, out of reach of
// evictions until the CPU needs room, so a flood only evicts what was
// inserted where it runs.
func (fx *fibFixture) runMany(t testing.TB, frames [][]byte, ingress string) map[uint32]int {
	t.Helper()
	actions := map[uint32]int{}
	err := inNetNS(fx.ns, func() error {
		var old, cpu0 unix.CPUSet
		if err := unix.SchedGetaffinity(0, &old); err != nil {
			return err
		}
		cpu0.Set(0)
		if err := unix.SchedSetaffinity(0, &cpu0); err != nil {
			return err
		}
		defer unix.SchedSetaffinity(0, &old)
		for _, f := range frames {
			ret, err := fx.objs.XdpNatwall.Run(&ebpf.RunOptions{
				Data:    f,
				DataOut: make([]byte, len(f)+256),
				Context: xdpMD{DataEnd: uint32(len(f)), IngressIfindex: fx.ifindex(ingress)},
			})
			if err != nil {
				return err
			}
			actions[ret]++
		}
		return nil
	})
	if err != nil {
		t.Fatalf("BPF_PROG_RUN: %v", err)
	}
	return actions
}

func (fx *fibFixture) reasonPackets(t testing.TB, r Reason) uint64 {
	t.Helper()
	counts, err := readCounters(fx.objs.NwCounters)
	if err != nil {
		t.Fatal(err)
	}
	return counts[r].Packets
}

// withIPv4 returns a copy of an IPv4 frame with another source and
// identification, its header checksum recomputed.
func withIPv4(frame []byte, src net.IP, id uint16) []byte {
	f := append([]byte(nil), frame...)
	ip := f[14:]
	hl := int(ip[0]&0xf) * 4
	copy(ip[12:16], src.To4())
	binary.BigEndian.PutUint16(ip[4:], id)
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip[:hl]))
	return f
}

// A flood of first fragments that the policy drops must not evict the
// fragment tracking of an admitted datagram: its later fragment still
// passes. Before, every first fragment was recorded before the verdict, and
// 20,000 of them pushed the admitted one out of the 8192-entry LRU table.
func TestFragmentFloodKeepsAdmittedDatagrams(t *testing.T) {
	fx := newFibFixture(t)
	legit := frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: "198.19.1.10", sport: 5000, dport: 9000})
	first, second := fragments4(t, withIPv4(legit, net.ParseIP("198.18.1.20"), 0xfeed), 16)
	if got := fx.runMany(t, [][]byte{first}, "a0"); got[xdpRedirect] != 1 {
		t.Fatalf("admitted first fragment: actions %v, want a redirect", got)
	}

	// From outside to an inside host: the built-in policy admits no
	// inbound flow. Sources and identifications vary, so every first
	// fragment would have been a distinct record.
	attack := frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.19.1.10", dst: "198.18.1.20", sport: 53, dport: 9000})
	attackFirst, attackLater := fragments4(t, attack, 16)
	const flood = 20000
	frames := make([][]byte, flood)
	for i := range frames {
		frames[i] = withIPv4(attackFirst, net.IPv4(198, 19, 1, byte(2+i%250)), uint16(i))
	}
	before := fx.reasonPackets(t, ReasonDropPolicy)
	if got := fx.runMany(t, frames, "b0"); got[xdpDrop] != flood {
		t.Fatalf("flood of first fragments: actions %v, want all %d dropped", got, flood)
	}
	if n := fx.reasonPackets(t, ReasonDropPolicy) - before; n != flood {
		t.Fatalf("drop_policy counted %d of the %d first fragments", n, flood)
	}

	fx.expect(t, second, "a0", ReasonFwdRedirect)
	// The attacker's later fragments find no record: their first was dropped.
	fx.expect(t, withIPv4(attackLater, net.IPv4(198, 19, 1, 2), 0), "b0", ReasonDropFragNoFirst)
	fx.expect(t, withIPv4(attackLater, net.IPv4(198, 19, 1, 3), 1), "b0", ReasonDropFragNoFirst)
}

// A later fragment follows only a first fragment that was admitted: one
// whose first fragment a policy dropped, stateful or stateless, is dropped
// as drop_frag_no_first, while the same datagram admitted passes whole.
func TestFragmentOfDroppedFirstIsDropped(t *testing.T) {
	fx := newFibFixture(t)
	dropDNS := anyRule(41, rules.Drop)
	dropDNS.proto, dropDNS.dportLo, dropDNS.dportHi = 17, 53, 53
	must(t, loadRules(&fx.objs, naiveStage([]testRule{dropDNS}, rules.Pass, 1), nil))

	cases := []struct {
		name                  string
		frame                 []byte
		ingress               string
		wantFirst, wantSecond Reason
	}{
		{"admitted outbound datagram", frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.20", dst: "198.19.1.10", sport: 5000, dport: 9000}),
			"a0", ReasonFwdRedirect, ReasonFwdRedirect},
		{"inbound, no flow may start", frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.19.1.10", dst: "198.18.1.20", sport: 5000, dport: 9000}),
			"b0", ReasonDropPolicy, ReasonDropFragNoFirst},
		{"stateless drop rule", frame4(t, l4spec{proto: layers.IPProtocolUDP, src: "198.18.1.21", dst: "198.19.1.10", sport: 5000, dport: 53}),
			"a0", ReasonDropACLStateless, ReasonDropFragNoFirst},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			first, second := fragments4(t, withIPv4(tc.frame, net.IP(tc.frame[14+12:14+16]), uint16(100+i)), 16)
			fx.expect(t, first, tc.ingress, tc.wantFirst)
			fx.expect(t, second, tc.ingress, tc.wantSecond)
		})
	}
}

// frags6 builds the two fragments of a UDP datagram from src to dst, with
// an extension header of type ext (none when 0) after the Fragment header:
// the first fragment carries it, and the Fragment header of both names it
// as the next header rather than UDP.
func frags6(t *testing.T, src, dst string, id uint32, ext layers.IPProtocol) (first, second []byte) {
	t.Helper()
	s, d := net.ParseIP(src).To16(), net.ParseIP(dst).To16()
	payload := make([]byte, 32)
	for i := range payload {
		payload[i] = byte(i)
	}
	udp := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], 5000)
	binary.BigEndian.PutUint16(udp[2:], 9000)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	udp = append(udp, payload...)
	binary.BigEndian.PutUint16(udp[6:], pseudoChecksum6(s, d, 17, udp))

	fragmentable, next := udp, byte(17)
	switch ext {
	case dstTyp: // PadN
		fragmentable, next = append([]byte{17, 0, 1, 4, 0, 0, 0, 0}, udp...), byte(ext)
	case rtTyp: // type 2, no segments left
		fragmentable, next = append([]byte{17, 0, 2, 0, 0, 0, 0, 0}, udp...), byte(ext)
	}
	mk := func(data []byte, off int, more bool) []byte {
		f := make([]byte, 14+40+8, 14+40+8+len(data))
		copy(f[0:], net.HardwareAddr{2, 0xaa, 0, 0, 0, 1})
		copy(f[6:], clientMAC)
		binary.BigEndian.PutUint16(f[12:], 0x86dd)
		ip := f[14:]
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(8+len(data)))
		ip[6], ip[7] = 44, 64
		copy(ip[8:], s)
		copy(ip[24:], d)
		fh := ip[40:]
		fh[0] = next
		fo := uint16(off)
		if more {
			fo |= 1
		}
		binary.BigEndian.PutUint16(fh[2:], fo)
		binary.BigEndian.PutUint32(fh[4:], id)
		return append(f, data...)
	}
	return mk(fragmentable[:24], 0, true), mk(fragmentable[24:], 24, false)
}

// An IPv6 datagram whose fragmentable part starts with an extension header
// gets through: its later fragments name that header, not UDP, in their
// Fragment header, and the offsets count from the Fragment header.
func TestIPv6FragmentsWithExtensionHeaders(t *testing.T) {
	fx := newFibFixture(t)
	for i, ext := range []layers.IPProtocol{0, dstTyp, rtTyp} {
		first, second := frags6(t, "2001:db8:1::20", "2001:db8:2::10", uint32(0x5000+i), ext)
		fx.expect(t, first, "a0", ReasonFwdRedirect)
		fx.expect(t, second, "a0", ReasonFwdRedirect)
	}

	// Attacks on the same path: a later fragment out of place, one of a
	// datagram never admitted, one of a first fragment the policy dropped.
	first, second := frags6(t, "2001:db8:1::21", "2001:db8:2::10", 0x6000, dstTyp)
	fx.expect(t, first, "a0", ReasonFwdRedirect)
	shifted := append([]byte(nil), second...)
	binary.BigEndian.PutUint16(shifted[14+40+2:], 16) // offset 16, inside the first fragment
	fx.expect(t, shifted, "a0", ReasonDropFragOverlap)
	fx.expect(t, second, "a0", ReasonFwdRedirect)
	_, orphan := frags6(t, "2001:db8:1::22", "2001:db8:2::10", 0x6001, dstTyp)
	fx.expect(t, orphan, "a0", ReasonDropFragNoFirst)
	inFirst, inSecond := frags6(t, "2001:db8:2::10", "2001:db8:1::20", 0x6002, rtTyp)
	fx.expect(t, inFirst, "b0", ReasonDropPolicy)
	fx.expect(t, inSecond, "b0", ReasonDropFragNoFirst)
}

func udpFlow(src, dst string, sport, dport uint16) l4spec {
	return l4spec{proto: layers.IPProtocolUDP, src: src, dst: dst, sport: sport, dport: dport}
}

// A full table evicts the oldest flow that never saw a reply to make room
// for a new one, and counts it; answered UDP and established TCP flows are
// never evicted, and without an unanswered flow the new one is refused.
func TestEarlyDropEvictsOnlyUnansweredFlows(t *testing.T) {
	fx := newFibFixture(t)
	rd, err := ringbuf.NewReader(fx.objs.NwEvents)
	must(t, err)
	defer rd.Close()
	const answered, established = 16, 8
	for i := 0; i < answered; i++ {
		fx.expect(t, frame4(t, udpFlow("198.18.1.20", "198.19.1.10", uint16(10000+i), 9000)), "a0", ReasonFwdRedirect)
		fx.expect(t, frame4(t, udpFlow("198.19.1.10", "198.18.1.20", 9000, uint16(10000+i))), "b0", ReasonFwdRedirect)
	}
	tcp := func(src, dst string, sport, dport uint16, flags string) []byte {
		return frame4(t, l4spec{proto: layers.IPProtocolTCP, src: src, dst: dst, sport: sport, dport: dport, tcpFlags: flags})
	}
	for i := 0; i < established; i++ {
		fx.expect(t, tcp("198.18.1.20", "198.19.1.10", uint16(30000+i), 443, "S"), "a0", ReasonFwdRedirect)
		fx.expect(t, tcp("198.19.1.10", "198.18.1.20", 443, uint16(30000+i), "SA"), "b0", ReasonFwdRedirect)
		fx.expect(t, tcp("198.18.1.20", "198.19.1.10", uint16(30000+i), 443, "A"), "a0", ReasonFwdRedirect)
	}
	// The rest of the table: unanswered, as a scan or a flood leaves it.
	unanswered := fixtureTableSize - answered - established
	for i := 0; i < unanswered; i++ {
		fx.expect(t, frame4(t, udpFlow("198.18.1.21", "198.19.1.11", uint16(20000+i), 9000)), "a0", ReasonFwdRedirect)
	}

	evicted := fx.stat(t, natwallNwStatNW_STAT_CT_EARLY_DROP)
	// A new flow from another host gets in, by evicting the oldest unanswered one.
	fx.expect(t, frame4(t, udpFlow("198.18.1.22", "198.19.1.10", 7000, 53)), "a0", ReasonFwdRedirect)
	if n := fx.stat(t, natwallNwStatNW_STAT_CT_EARLY_DROP) - evicted; n != 1 {
		t.Fatalf("early drops counted: %d, want 1", n)
	}
	// The control plane hears of it as a flow ended by the full table.
	want := flowEnd{ReasonDropCTFull, netip.MustParseAddr("198.18.1.21"), 20000}
	if ends := flowEnds(t, rd); len(ends) != 1 || ends[0] != want {
		t.Fatalf("flow ends reported: %+v, want only %+v", ends, want)
	}
	// The evicted flow is gone: its late reply opens nothing from outside.
	fx.expect(t, frame4(t, udpFlow("198.19.1.11", "198.18.1.21", 9000, 20000)), "b0", ReasonDropPolicy)
	// The next unanswered one is still there, answered now.
	fx.expect(t, frame4(t, udpFlow("198.19.1.11", "198.18.1.21", 9000, 20001)), "b0", ReasonFwdRedirect)

	// More new flows evict the remaining unanswered ones, oldest first,
	// then their own kind; never an answered or established flow.
	for i := 0; i < 2*fixtureTableSize; i++ {
		fx.expect(t, frame4(t, udpFlow("198.18.1.22", "198.19.1.10", uint16(7001+i), 53)), "a0", ReasonFwdRedirect)
	}
	for i := 0; i < answered; i++ {
		fx.expect(t, frame4(t, udpFlow("198.19.1.10", "198.18.1.20", 9000, uint16(10000+i))), "b0", ReasonFwdRedirect)
	}
	for i := 0; i < established; i++ {
		fx.expect(t, tcp("198.19.1.10", "198.18.1.20", 443, uint16(30000+i), "A"), "b0", ReasonFwdRedirect)
	}
	fx.expect(t, frame4(t, udpFlow("198.19.1.11", "198.18.1.21", 9000, 20001)), "b0", ReasonFwdRedirect)

	// A table of answered flows only: the new flow is refused, nothing evicted.
	var k natwallNwTuple4
	var e natwallNwCt4Entry
	var replies [][]byte
	it := fx.objs.NwCt4.Iterate()
	for it.Next(&k, &e) {
		if e.St.Flags&uint8(natwallNwCtFlagsNW_CT_SEEN_REPLY) == 0 {
			replies = append(replies, frame4(t, udpFlow(addr4(k.Daddr).String(), addr4(k.Saddr).String(), htons(k.Dport), htons(k.Sport))))
		}
	}
	must(t, it.Err())
	if len(replies) == 0 {
		t.Fatal("no unanswered flow left to answer: the evictions above took answered ones")
	}
	fx.runMany(t, replies, "b0")
	evicted = fx.stat(t, natwallNwStatNW_STAT_CT_EARLY_DROP)
	fx.expect(t, frame4(t, udpFlow("198.18.1.23", "198.19.1.10", 7000, 53)), "a0", ReasonDropCTFull)
	if fx.stat(t, natwallNwStatNW_STAT_CT_EARLY_DROP) != evicted {
		t.Fatal("an answered flow was evicted")
	}
}

// IPv6 flows have their own table and their own creation order.
func TestEarlyDropIPv6(t *testing.T) {
	fx := newFibFixture(t)
	udp6 := func(src, dst string, sport uint16) []byte {
		return packet{v6: true, src: src, dst: dst, l4Raw: udpHeader(sport, 9000)}.build(t)
	}
	fx.expect(t, udp6("2001:db8:1::20", "2001:db8:2::10", 10000), "a0", ReasonFwdRedirect)
	fx.expect(t, packet{v6: true, src: "2001:db8:2::10", dst: "2001:db8:1::20", l4Raw: udpHeader(9000, 10000)}.build(t), "b0", ReasonFwdRedirect)
	for i := 1; i < fixtureTableSize; i++ {
		fx.expect(t, udp6("2001:db8:1::21", "2001:db8:2::10", uint16(10000+i)), "a0", ReasonFwdRedirect)
	}
	evicted := fx.stat(t, natwallNwStatNW_STAT_CT_EARLY_DROP)
	fx.expect(t, udp6("2001:db8:1::22", "2001:db8:2::10", 7000), "a0", ReasonFwdRedirect)
	if n := fx.stat(t, natwallNwStatNW_STAT_CT_EARLY_DROP) - evicted; n != 1 {
		t.Fatalf("early drops counted: %d, want 1", n)
	}
	fx.expect(t, packet{v6: true, src: "2001:db8:2::10", dst: "2001:db8:1::21", l4Raw: udpHeader(9000, 10001)}.build(t), "b0", ReasonDropPolicy)
	fx.expect(t, packet{v6: true, src: "2001:db8:2::10", dst: "2001:db8:1::20", l4Raw: udpHeader(9000, 10000)}.build(t), "b0", ReasonFwdRedirect)
}

// udpHeader is a bare UDP header whose length covers itself only.
func udpHeader(sport, dport uint16) []byte {
	h := make([]byte, 8)
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	binary.BigEndian.PutUint16(h[4:], 8)
	return h
}

// One host above its limit of unanswered flows is refused with its own
// reason while other hosts still open flows; an answer gives the host its
// flow back, and answered flows never count.
func TestUnansweredFlowsPerSourceLimit(t *testing.T) {
	fx := newFibFixture(t)
	const limit = 8
	s := fixtureSettings()
	s.UnansweredPerSource = limit
	fx.apply(t, s)

	for i := 0; i < limit; i++ {
		fx.expect(t, frame4(t, udpFlow("198.18.1.20", "198.19.1.10", uint16(10000+i), 9000)), "a0", ReasonFwdRedirect)
	}
	fx.expect(t, frame4(t, udpFlow("198.18.1.20", "198.19.1.10", 10100, 9000)), "a0", ReasonDropCTSrcLimit)
	fx.expect(t, frame4(t, l4spec{proto: layers.IPProtocolTCP, src: "198.18.1.20", dst: "198.19.1.10", sport: 10101, dport: 443, tcpFlags: "S"}), "a0", ReasonDropCTSrcLimit)
	// Its existing flows go on.
	fx.expect(t, frame4(t, udpFlow("198.18.1.20", "198.19.1.10", 10000, 9000)), "a0", ReasonFwdRedirect)

	// Another host is not affected, and flows that are answered never
	// count: it opens many more than the limit.
	for i := 0; i < 3*limit; i++ {
		fx.expect(t, frame4(t, udpFlow("198.18.1.21", "198.19.1.10", uint16(10000+i), 9000)), "a0", ReasonFwdRedirect)
		fx.expect(t, frame4(t, udpFlow("198.19.1.10", "198.18.1.21", 9000, uint16(10000+i))), "b0", ReasonFwdRedirect)
	}

	// One answer frees one place; a second reply of the same flow frees
	// nothing more.
	reply := frame4(t, udpFlow("198.19.1.10", "198.18.1.20", 9000, 10003))
	fx.expect(t, reply, "b0", ReasonFwdRedirect)
	fx.expect(t, reply, "b0", ReasonFwdRedirect)
	fx.expect(t, frame4(t, udpFlow("198.18.1.20", "198.19.1.10", 10200, 9000)), "a0", ReasonFwdRedirect)
	fx.expect(t, frame4(t, udpFlow("198.18.1.20", "198.19.1.10", 10201, 9000)), "a0", ReasonDropCTSrcLimit)

	// IPv6 hosts are counted by address too.
	for i := 0; i < limit; i++ {
		fx.expect(t, packet{v6: true, src: "2001:db8:1::20", dst: "2001:db8:2::10", l4Raw: udpHeader(uint16(10000+i), 9000)}.build(t), "a0", ReasonFwdRedirect)
	}
	fx.expect(t, packet{v6: true, src: "2001:db8:1::20", dst: "2001:db8:2::10", l4Raw: udpHeader(10100, 9000)}.build(t), "a0", ReasonDropCTSrcLimit)
	fx.expect(t, packet{v6: true, src: "2001:db8:1::21", dst: "2001:db8:2::10", l4Raw: udpHeader(10100, 9000)}.build(t), "a0", ReasonFwdRedirect)

	// The collector removes expired flows without telling the count: it
	// is forgotten two windows after the flows opened. Age it instead of
	// waiting.
	var key natwallNwSrcKey
	key.Addr[10], key.Addr[11] = 0xff, 0xff
	copy(key.Addr[12:], []byte{198, 18, 1, 20})
	var c natwallNwSrcCount
	must(t, fx.objs.NwSrcFlows.Lookup(key, &c))
	if c.Cur+c.Prev != limit {
		t.Fatalf("198.18.1.20 counted with %d unanswered flows, want %d", c.Cur+c.Prev, limit)
	}
	c.Epoch -= 2
	must(t, fx.objs.NwSrcFlows.Put(key, c))
	fx.expect(t, frame4(t, udpFlow("198.18.1.20", "198.19.1.10", 10202, 9000)), "a0", ReasonFwdRedirect)

	// With no limit, the host opens flows until the table decides.
	s.UnansweredPerSource = 0
	fx.apply(t, s)
	fx.expect(t, frame4(t, udpFlow("198.18.1.20", "198.19.1.10", 10300, 9000)), "a0", ReasonFwdRedirect)
}

// An expired flow the dataplane removes gives its source its place back.
func TestUnansweredLimitReleasedOnExpiry(t *testing.T) {
	fx := newFibFixture(t)
	s := fixtureSettings()
	s.UnansweredPerSource = 1
	fx.apply(t, s)
	open := frame4(t, udpFlow("198.18.1.20", "198.19.1.10", 4444, 9000))
	fx.expect(t, open, "a0", ReasonFwdRedirect)
	fx.expect(t, frame4(t, udpFlow("198.18.1.20", "198.19.1.10", 4445, 9000)), "a0", ReasonDropCTSrcLimit)

	key := natwallNwTuple4{Saddr: beUint32([4]byte{198, 18, 1, 20}), Daddr: beUint32([4]byte{198, 19, 1, 10}),
		Sport: htons(4444), Dport: htons(9000), Proto: 17}
	var e natwallNwCt4Entry
	must(t, fx.objs.NwCt4.Lookup(key, &e))
	e.St.LastSeenNs -= uint64(s.Timeouts.UDP) + 1e9
	must(t, fx.objs.NwCt4.Put(key, e))
	// Its next packet finds it expired, removes it and opens it anew.
	fx.expect(t, open, "a0", ReasonFwdRedirect)
	fx.expect(t, frame4(t, udpFlow("198.18.1.20", "198.19.1.10", 4445, 9000)), "a0", ReasonDropCTSrcLimit)
}

// A TCP handshake that the server answered but the client never completed
// (a SYN flood at a server that answers leaves these) is evictable, as
// Linux evicts flows that are not assured; the established one is not.
func TestEarlyDropEvictsHalfOpenTCP(t *testing.T) {
	fx := newFibFixture(t)
	tcp := func(src, dst string, sport, dport uint16, flags string) []byte {
		return frame4(t, l4spec{proto: layers.IPProtocolTCP, src: src, dst: dst, sport: sport, dport: dport, tcpFlags: flags})
	}
	fx.expect(t, tcp("198.18.1.20", "198.19.1.10", 30000, 443, "S"), "a0", ReasonFwdRedirect)
	fx.expect(t, tcp("198.19.1.10", "198.18.1.20", 443, 30000, "SA"), "b0", ReasonFwdRedirect)
	fx.expect(t, tcp("198.18.1.20", "198.19.1.10", 30000, 443, "A"), "a0", ReasonFwdRedirect)
	fx.expect(t, tcp("198.18.1.20", "198.19.1.10", 30001, 443, "S"), "a0", ReasonFwdRedirect)
	fx.expect(t, tcp("198.19.1.10", "198.18.1.20", 443, 30001, "SA"), "b0", ReasonFwdRedirect)
	for i := 2; i < fixtureTableSize; i++ {
		fx.expect(t, frame4(t, udpFlow("198.18.1.20", "198.19.1.10", uint16(10000+i), 9000)), "a0", ReasonFwdRedirect)
		fx.expect(t, frame4(t, udpFlow("198.19.1.10", "198.18.1.20", 9000, uint16(10000+i))), "b0", ReasonFwdRedirect)
	}
	evicted := fx.stat(t, natwallNwStatNW_STAT_CT_EARLY_DROP)
	fx.expect(t, frame4(t, udpFlow("198.18.1.21", "198.19.1.10", 7000, 53)), "a0", ReasonFwdRedirect)
	if n := fx.stat(t, natwallNwStatNW_STAT_CT_EARLY_DROP) - evicted; n != 1 {
		t.Fatalf("early drops counted: %d, want 1", n)
	}
	// The half-open one went: its late ACK belongs to no flow.
	fx.expect(t, tcp("198.18.1.20", "198.19.1.10", 30001, 443, "A"), "a0", ReasonDropCTInvalid)
	fx.expect(t, tcp("198.19.1.10", "198.18.1.20", 443, 30000, "A"), "b0", ReasonFwdRedirect)
	// Nothing else is evictable now.
	fx.expect(t, frame4(t, udpFlow("198.19.1.10", "198.18.1.21", 53, 7000)), "b0", ReasonFwdRedirect)
	fx.expect(t, frame4(t, udpFlow("198.18.1.21", "198.19.1.10", 7001, 53)), "a0", ReasonDropCTFull)
}
