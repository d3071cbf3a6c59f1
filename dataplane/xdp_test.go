package dataplane

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// These tests run the XDP program in the kernel with BPF_PROG_RUN, inside a
// network namespace whose routes and neighbours give bpf_fib_lookup real
// answers:
//
//	a0 198.18.1.1/24 2001:db8:1::1/64   ingress; neighbour .20 / ::20 (hairpin)
//	b0 198.19.1.1/24 2001:db8:2::1/64   neighbour .10 / ::10
//	c0 198.19.3.1/24 2001:db8:3::1/64   MTU 1280; neighbour .10 / ::10
//	198.19.9.0/24 and 2001:db8:9::/64 are blackholed.
var (
	clientMAC  = net.HardwareAddr{0x02, 0, 0, 0, 0x01, 0x10}
	hairpinMAC = net.HardwareAddr{0x02, 0, 0, 0, 0x01, 0x20}
	serverMAC  = net.HardwareAddr{0x02, 0, 0, 0, 0x02, 0x10}
	smallMAC   = net.HardwareAddr{0x02, 0, 0, 0, 0x03, 0x10}
)

// fixtureTableSize is the capacity of the fixture's flow and SNAT tables.
const fixtureTableSize = 64

const (
	xdpAborted  = 0
	xdpDrop     = 1
	xdpPass     = 2
	xdpTX       = 3
	xdpRedirect = 4
)

// xdpMD mirrors the kernel's struct xdp_md, the context BPF_PROG_RUN takes.
type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

type fibFixture struct {
	objs     natwallObjects
	ns       netns.NsHandle
	ifaces   map[string]netlink.Link
	settings Settings
}

// fixtureSettings: 198.18.0.0/16 and 2001:db8:1::/48 are inside, no SNAT.
func fixtureSettings() Settings {
	s := DefaultSettings()
	s.Inside = []netip.Prefix{netip.MustParsePrefix("198.18.0.0/16"), netip.MustParsePrefix("2001:db8:1::/48")}
	// The fixture routes only its connected subnets, and tests send from
	// anywhere in the inside networks: the reverse-path check has its own
	// tests (security_zone_test.go), with the default, strict.
	s.ReversePath = ReversePathOff
	return s
}

func (fx *fibFixture) apply(t testing.TB, s Settings) {
	t.Helper()
	if err := applySettings(&fx.objs, s); err != nil {
		t.Fatal(err)
	}
	fx.settings = s
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root and the kernel; CI must run it as root")
	}
	t.Skip("needs root")
}

// inNetNS runs fn on a thread inside ns: BPF_PROG_RUN resolves the ingress
// ifindex and does its FIB lookups in the calling thread's namespace.
func inNetNS(ns netns.NsHandle, fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		return err
	}
	defer netns.Set(orig)
	return fn()
}

func newFibFixture(t testing.TB) *fibFixture {
	t.Helper()
	requireRoot(t)

	name := fmt.Sprintf("nwtest-xdp-%d", os.Getpid())
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	ns, err := netns.NewNamed(name)
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("create netns: %v", err)
	}
	if err := netns.Set(orig); err != nil {
		t.Fatalf("restore netns: %v", err)
	}
	orig.Close()
	runtime.UnlockOSThread()

	fx := &fibFixture{ns: ns, ifaces: map[string]netlink.Link{}}
	t.Cleanup(func() {
		fx.objs.Close()
		ns.Close()
		netns.DeleteNamed(name)
	})

	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()

	links := []struct {
		name, peer string
		mtu        int
		addrs      []string
		neigh      []string
		mac        net.HardwareAddr
	}{
		{"a0", "a1", 1500, []string{"198.18.1.1/24", "2001:db8:1::1/64"}, []string{"198.18.1.20", "2001:db8:1::20", "198.18.1.21"}, hairpinMAC},
		{"b0", "b1", 1500, []string{"198.19.1.1/24", "2001:db8:2::1/64"}, []string{"198.19.1.10", "2001:db8:2::10", "198.19.1.11"}, serverMAC},
		{"c0", "c1", 1280, []string{"198.19.3.1/24", "2001:db8:3::1/64"}, []string{"198.19.3.10", "2001:db8:3::10"}, smallMAC},
	}
	for _, l := range links {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: l.name, MTU: l.mtu}, PeerName: l.peer}
		if err := h.LinkAdd(veth); err != nil {
			t.Fatalf("add %s: %v", l.name, err)
		}
		for _, n := range []string{l.name, l.peer} {
			link, err := h.LinkByName(n)
			if err != nil {
				t.Fatal(err)
			}
			if err := h.LinkSetUp(link); err != nil {
				t.Fatal(err)
			}
		}
		link, _ := h.LinkByName(l.name)
		fx.ifaces[l.name] = link
		for _, a := range l.addrs {
			addr, _ := netlink.ParseAddr(a)
			addr.Flags = unix.IFA_F_NODAD
			if err := h.AddrAdd(link, addr); err != nil {
				t.Fatalf("addr %s: %v", a, err)
			}
		}
		for _, ip := range l.neigh {
			family := netlink.FAMILY_V4
			if netip.MustParseAddr(ip).Is6() {
				family = netlink.FAMILY_V6
			}
			err := h.NeighAdd(&netlink.Neigh{LinkIndex: link.Attrs().Index, Family: family,
				State: netlink.NUD_PERMANENT, IP: net.ParseIP(ip), HardwareAddr: l.mac})
			if err != nil {
				t.Fatalf("neigh %s: %v", ip, err)
			}
		}
	}
	for _, dst := range []string{"198.19.9.0/24", "2001:db8:9::/64"} {
		_, ipnet, _ := net.ParseCIDR(dst)
		if err := h.RouteAdd(&netlink.Route{Dst: ipnet, Type: unix.RTN_BLACKHOLE}); err != nil {
			t.Fatalf("blackhole %s: %v", dst, err)
		}
	}
	err = inNetNS(ns, func() error {
		for _, k := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
			if err := os.WriteFile("/proc/sys/"+k, []byte("1"), 0); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("enable forwarding: %v", err)
	}

	spec, err := loadNatwall()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinNone
		// Small flow and SNAT tables keep the fixture cheap and let
		// tests fill them.
		switch m.Name {
		case "nw_ct4", "nw_ct4_rev", "nw_ct6", "nw_snat4_fwd", "nw_snat4_rev":
			m.MaxEntries = fixtureTableSize
		}
	}
	if err := spec.LoadAndAssign(&fx.objs, nil); err != nil {
		t.Fatalf("load: %+v", err)
	}
	fx.setTxPorts(t, "a0", "b0", "c0")
	fx.apply(t, fixtureSettings())
	return fx
}

func (fx *fibFixture) ifindex(name string) uint32 { return uint32(fx.ifaces[name].Attrs().Index) }
func (fx *fibFixture) mac(name string) net.HardwareAddr {
	return fx.ifaces[name].Attrs().HardwareAddr
}

func (fx *fibFixture) setTxPorts(t testing.TB, names ...string) {
	t.Helper()
	var key, val uint32
	it := fx.objs.NwTxPorts.Iterate()
	var stale []uint32
	for it.Next(&key, &val) {
		stale = append(stale, key)
	}
	for _, k := range stale {
		fx.objs.NwTxPorts.Delete(k)
	}
	// The kernel resolves devmap ifindexes in the caller's namespace.
	err := inNetNS(fx.ns, func() error {
		for _, n := range names {
			idx := fx.ifindex(n)
			if err := fx.objs.NwTxPorts.Put(idx, idx); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (fx *fibFixture) setMalformed(t *testing.T, a MalformedAction) {
	t.Helper()
	s := fx.settings
	s.MalformedAction = a
	fx.apply(t, s)
}

type runResult struct {
	action uint32
	out    []byte
	reason Reason
}

// run feeds one frame to the program as if it arrived on ingress, and
// returns the action, the frame as the program left it, and the one reason
// whose counter moved.
func (fx *fibFixture) run(t testing.TB, frame []byte, ingress string) runResult {
	t.Helper()
	before, err := readCounters(fx.objs.NwCounters)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, len(frame)+256)
	var ret uint32
	err = inNetNS(fx.ns, func() error {
		var err error
		ret, err = fx.objs.XdpNatwall.Run(&ebpf.RunOptions{
			Data:    frame,
			DataOut: out,
			Context: xdpMD{DataEnd: uint32(len(frame)), IngressIfindex: fx.ifindex(ingress)},
		})
		return err
	})
	if err != nil {
		t.Fatalf("BPF_PROG_RUN: %v", err)
	}
	after, err := readCounters(fx.objs.NwCounters)
	if err != nil {
		t.Fatal(err)
	}
	res := runResult{action: ret, out: out[:len(frame)], reason: Reason(0)}
	moved := 0
	for i := range after {
		dp := after[i].Packets - before[i].Packets
		db := after[i].Bytes - before[i].Bytes
		if dp == 0 {
			continue
		}
		moved++
		res.reason = after[i].Reason
		if dp != 1 || db != uint64(len(frame)) {
			t.Errorf("reason %s counted %d packets / %d bytes, want 1 / %d", after[i].Reason.Name(), dp, db, len(frame))
		}
	}
	if moved != 1 {
		t.Fatalf("%d reason counters moved for one packet, want exactly 1", moved)
	}
	return res
}

// packet describes a test frame; build turns it into bytes with gopacket.
type packet struct {
	v6        bool
	src, dst  string
	proto     layers.IPProtocol
	ttl       uint8
	size      int // pad the payload so the L3 datagram has this length
	vlans     int
	prioTags  bool // the tags carry VLAN ID 0 (802.1Q priority tags), PCP 5
	ipOptions []layers.IPv4Option
	frag      uint16 // IPv4 frag_off field (flags<<13 | offset)
	extHdrs   []byte // raw IPv6 extension headers inserted before L4; first byte of each is set by build
	extTypes  []layers.IPProtocol
	srcMAC    net.HardwareAddr
	dstMAC    net.HardwareAddr
	l4Raw     []byte // replaces the L4 header+payload when set
}

func (p packet) build(t testing.TB) []byte {
	t.Helper()
	if p.ttl == 0 {
		p.ttl = 64
	}
	if p.proto == 0 {
		p.proto = layers.IPProtocolUDP
	}
	if p.srcMAC == nil {
		p.srcMAC = clientMAC
	}
	if p.dstMAC == nil {
		p.dstMAC = net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 1}
	}
	src, dst := net.ParseIP(p.src), net.ParseIP(p.dst)

	var netLayer gopacket.NetworkLayer
	var ipLayer gopacket.SerializableLayer
	if p.v6 {
		ip6 := &layers.IPv6{Version: 6, HopLimit: p.ttl, NextHeader: p.proto, SrcIP: src, DstIP: dst}
		netLayer, ipLayer = ip6, ip6
	} else {
		ip4 := &layers.IPv4{Version: 4, IHL: 5, TTL: p.ttl, Protocol: p.proto, SrcIP: src, DstIP: dst,
			Flags: layers.IPv4Flag(p.frag >> 13), FragOffset: p.frag & 0x1fff, Options: p.ipOptions, Id: 0x1234}
		netLayer, ipLayer = ip4, ip4
	}

	l4 := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	payload := gopacket.Payload(bytes.Repeat([]byte{0x5a}, 16))
	switch {
	case p.l4Raw != nil:
		l4.AppendBytes(len(p.l4Raw))
		copy(l4.Bytes(), p.l4Raw)
	case p.proto == layers.IPProtocolTCP:
		tcp := &layers.TCP{SrcPort: 40000, DstPort: 443, SYN: true, Seq: 1, Window: 64240}
		tcp.SetNetworkLayerForChecksum(netLayer)
		must(t, gopacket.SerializeLayers(l4, opts, tcp, payload))
	case p.proto == layers.IPProtocolUDP:
		udp := &layers.UDP{SrcPort: 40000, DstPort: 9000}
		udp.SetNetworkLayerForChecksum(netLayer)
		must(t, gopacket.SerializeLayers(l4, opts, udp, payload))
	case p.proto == layers.IPProtocolICMPv4:
		must(t, gopacket.SerializeLayers(l4, opts,
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 7, Seq: 1}, payload))
	case p.proto == layers.IPProtocolICMPv6:
		icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeEchoRequest, 0)}
		icmp.SetNetworkLayerForChecksum(netLayer)
		must(t, gopacket.SerializeLayers(l4, opts, icmp, &layers.ICMPv6Echo{Identifier: 7, SeqNumber: 1}, payload))
	default:
		l4.AppendBytes(16)
	}
	upper := append([]byte(nil), l4.Bytes()...)

	// IPv6 extension headers: chain their next-header bytes, then the IPv6
	// header's next header points at the first one.
	if p.v6 && len(p.extTypes) > 0 {
		ip6 := ipLayer.(*layers.IPv6)
		ext := append([]byte(nil), p.extHdrs...)
		off := 0
		for i, typ := range p.extTypes {
			next := p.proto
			if i+1 < len(p.extTypes) {
				next = p.extTypes[i+1]
			}
			ext[off] = byte(next)
			off += extLen(typ, ext[off:])
		}
		ip6.NextHeader = p.extTypes[0]
		upper = append(ext, upper...)
	}

	l3len := len(upper) + 20 + optLen(p.ipOptions)
	if p.v6 {
		l3len = len(upper) + 40
	}
	if p.size > l3len {
		upper = append(upper, make([]byte, p.size-l3len)...)
	}

	var ls []gopacket.SerializableLayer
	eth := &layers.Ethernet{SrcMAC: p.srcMAC, DstMAC: p.dstMAC, EthernetType: layers.EthernetTypeIPv4}
	if p.v6 {
		eth.EthernetType = layers.EthernetTypeIPv6
	}
	ls = append(ls, eth)
	if p.vlans > 0 {
		inner := eth.EthernetType
		eth.EthernetType = layers.EthernetTypeDot1Q
		for i := 0; i < p.vlans; i++ {
			typ := layers.EthernetTypeDot1Q
			if i == p.vlans-1 {
				typ = inner
			}
			tag := &layers.Dot1Q{VLANIdentifier: uint16(100 + i), Type: typ}
			if p.prioTags {
				tag.VLANIdentifier, tag.Priority = 0, 5
			}
			ls = append(ls, tag)
		}
	}
	ls = append(ls, ipLayer, gopacket.Payload(upper))
	buf := gopacket.NewSerializeBuffer()
	must(t, gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...))
	return buf.Bytes()
}

func extLen(typ layers.IPProtocol, hdr []byte) int {
	switch typ {
	case layers.IPProtocolIPv6Fragment:
		return 8
	case layers.IPProtocolAH:
		return (int(hdr[1]) + 2) * 4
	default:
		return (int(hdr[1]) + 1) * 8
	}
}

func optLen(opts []layers.IPv4Option) int {
	n := 0
	for _, o := range opts {
		if o.OptionType <= 1 {
			n++
		} else {
			n += int(o.OptionLength)
		}
	}
	return (n + 3) &^ 3
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Extension-header building blocks: 8 bytes each, next header filled in by build.
var (
	hopByHop   = []byte{0, 0, 1, 4, 0, 0, 0, 0} // PadN
	destOpts   = []byte{0, 0, 1, 4, 0, 0, 0, 0}
	routing0   = []byte{0, 0, 0, 1, 0, 0, 0, 0} // type 0, segments left 1
	routing2   = []byte{0, 0, 2, 0, 0, 0, 0, 0} // type 2, segments left 0
	fragFirst  = []byte{0, 0, 0x00, 0x01, 0, 0, 0, 9}
	fragLater  = []byte{0, 0, 0x00, 0xb8, 0, 0, 0, 9} // offset 23*8, no MF
	fragAtomic = []byte{0, 0, 0, 0, 0, 0, 0, 9}
	hopTyp     = layers.IPProtocolIPv6HopByHop
	dstTyp     = layers.IPProtocolIPv6Destination
	rtTyp      = layers.IPProtocolIPv6Routing
	fragTyp    = layers.IPProtocolIPv6Fragment
)

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func repeatTypes(t layers.IPProtocol, n int) []layers.IPProtocol {
	out := make([]layers.IPProtocol, n)
	for i := range out {
		out[i] = t
	}
	return out
}

func TestEveryReasonNamed(t *testing.T) {
	for r := Reason(0); int(r) < NumReasons; r++ {
		info, ok := reasonInfos[r]
		if !ok {
			t.Errorf("nw_reason %d has no name in reasonInfos", r)
			continue
		}
		if info.name == "" || info.verdict == "" {
			t.Errorf("nw_reason %d has an empty name or verdict", r)
		}
	}
	if len(reasonInfos) != NumReasons {
		t.Errorf("reasonInfos names %d reasons, the C enum has %d", len(reasonInfos), NumReasons)
	}
}

func TestXDPVerdicts(t *testing.T) {
	fx := newFibFixture(t)

	tests := []struct {
		name    string
		pkt     packet
		ingress string
		want    Reason
		action  uint32
	}{
		{"v4 redirect to another NIC", packet{src: "198.18.1.10", dst: "198.19.1.10"}, "a0", ReasonFwdRedirect, xdpRedirect},
		{"v6 redirect to another NIC", packet{v6: true, src: "2001:db8:1::10", dst: "2001:db8:2::10"}, "a0", ReasonFwdRedirect, xdpRedirect},
		{"v4 hairpin out the ingress NIC", packet{src: "198.18.1.10", dst: "198.18.1.20"}, "a0", ReasonFwdTX, xdpTX},
		{"v6 hairpin out the ingress NIC", packet{v6: true, src: "2001:db8:1::10", dst: "2001:db8:1::20"}, "a0", ReasonFwdTX, xdpTX},
		{"v4 tcp forwarded", packet{src: "198.18.1.10", dst: "198.19.1.10", proto: layers.IPProtocolTCP}, "a0", ReasonFwdRedirect, xdpRedirect},
		{"v4 icmp forwarded", packet{src: "198.18.1.10", dst: "198.19.1.10", proto: layers.IPProtocolICMPv4}, "a0", ReasonFwdRedirect, xdpRedirect},
		{"v6 icmp forwarded", packet{v6: true, src: "2001:db8:1::10", dst: "2001:db8:2::10", proto: layers.IPProtocolICMPv6}, "a0", ReasonFwdRedirect, xdpRedirect},
		{"v4 with options forwarded", packet{src: "198.18.1.10", dst: "198.19.1.10", ipOptions: []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}}, "a0", ReasonFwdRedirect, xdpRedirect},
		{"v4 unknown protocol forwarded", packet{src: "198.18.1.10", dst: "198.19.1.10", proto: 47}, "a0", ReasonFwdRedirect, xdpRedirect},
		{"v4 later fragment without its first", packet{src: "198.18.1.10", dst: "198.19.1.10", frag: 185, l4Raw: make([]byte, 16)}, "a0", ReasonDropFragNoFirst, xdpDrop},
		{"v6 ext headers walked", packet{v6: true, src: "2001:db8:1::10", dst: "2001:db8:2::10", proto: layers.IPProtocolTCP,
			extTypes: []layers.IPProtocol{hopTyp, dstTyp, rtTyp, dstTyp}, extHdrs: cat(hopByHop, destOpts, routing2, destOpts)}, "a0", ReasonFwdRedirect, xdpRedirect},
		{"v6 atomic fragment is a whole datagram", packet{v6: true, src: "2001:db8:1::10", dst: "2001:db8:2::10", proto: layers.IPProtocolTCP,
			extTypes: []layers.IPProtocol{fragTyp}, extHdrs: fragAtomic}, "a0", ReasonFwdRedirect, xdpRedirect},
		{"v6 later fragment without its first", packet{v6: true, src: "2001:db8:1::10", dst: "2001:db8:2::10", proto: layers.IPProtocolTCP,
			extTypes: []layers.IPProtocol{fragTyp}, extHdrs: fragLater, l4Raw: make([]byte, 8)}, "a0", ReasonDropFragNoFirst, xdpDrop},
		{"v6 8 ext headers is the limit", packet{v6: true, src: "2001:db8:1::10", dst: "2001:db8:2::10",
			extTypes: repeatTypes(dstTyp, 8), extHdrs: bytes.Repeat(destOpts, 8)}, "a0", ReasonFwdRedirect, xdpRedirect},

		{"v4 for this host", packet{src: "198.18.1.10", dst: "198.18.1.1"}, "a0", ReasonPassLocal, xdpPass},
		{"v6 for this host", packet{v6: true, src: "2001:db8:1::10", dst: "2001:db8:1::1"}, "a0", ReasonPassLocal, xdpPass},
		{"v4 broadcast", packet{src: "198.18.1.10", dst: "198.18.1.255"}, "a0", ReasonPassLocal, xdpPass},
		{"v4 TTL 1 for this host is delivered", packet{src: "198.18.1.10", dst: "198.18.1.1", ttl: 1}, "a0", ReasonPassLocal, xdpPass},
		{"v4 TTL 1 expires", packet{src: "198.18.1.10", dst: "198.19.1.10", ttl: 1}, "a0", ReasonPassTTLExpired, xdpPass},
		{"v6 hop limit 1 expires", packet{v6: true, src: "2001:db8:1::10", dst: "2001:db8:2::10", ttl: 1}, "a0", ReasonPassTTLExpired, xdpPass},
		{"v4 neighbour unresolved", packet{src: "198.18.1.10", dst: "198.19.1.99"}, "a0", ReasonPassNoNeigh, xdpPass},
		{"v6 neighbour unresolved", packet{v6: true, src: "2001:db8:1::10", dst: "2001:db8:2::99"}, "a0", ReasonPassNoNeigh, xdpPass},
		{"v4 over egress MTU", packet{src: "198.18.1.10", dst: "198.19.3.10", size: 1400, frag: 0x4000}, "a0", ReasonPassFragNeeded, xdpPass},
		{"v6 over egress MTU", packet{v6: true, src: "2001:db8:1::10", dst: "2001:db8:3::10", size: 1400}, "a0", ReasonPassFragNeeded, xdpPass},
		{"v4 at egress MTU forwarded", packet{src: "198.18.1.10", dst: "198.19.3.10", size: 1280}, "a0", ReasonFwdRedirect, xdpRedirect},
		{"v4 blackholed", packet{src: "198.18.1.10", dst: "198.19.9.1"}, "a0", ReasonPassNoRoute, xdpPass},
		{"v6 blackholed", packet{v6: true, src: "2001:db8:1::10", dst: "2001:db8:9::1"}, "a0", ReasonPassNoRoute, xdpPass},
		{"v6 link-local destination", packet{v6: true, src: "fe80::10", dst: "fe80::1"}, "a0", ReasonPassLinkLocal, xdpPass},
		{"v6 multicast (NDP)", packet{v6: true, src: "2001:db8:1::10", dst: "ff02::1:ff00:1", proto: layers.IPProtocolICMPv6}, "a0", ReasonPassLinkLocal, xdpPass},
		{"vlan tagged", packet{src: "198.18.1.10", dst: "198.19.1.10", vlans: 1}, "a0", ReasonDropVLAN, xdpDrop},
		{"qinq tagged", packet{src: "198.18.1.10", dst: "198.19.1.10", vlans: 2}, "a0", ReasonDropVLAN, xdpDrop},

		{"three vlan tags", packet{src: "198.18.1.10", dst: "198.19.1.10", vlans: 3}, "a0", ReasonMalformedVLAN, xdpDrop},
		{"v6 9 ext headers", packet{v6: true, src: "2001:db8:1::10", dst: "2001:db8:2::10",
			extTypes: repeatTypes(dstTyp, 9), extHdrs: bytes.Repeat(destOpts, 9)}, "a0", ReasonMalformedIPv6ExtHdr, xdpDrop},
		{"v6 hop-by-hop not first", packet{v6: true, src: "2001:db8:1::10", dst: "2001:db8:2::10",
			extTypes: []layers.IPProtocol{dstTyp, hopTyp}, extHdrs: cat(destOpts, hopByHop)}, "a0", ReasonMalformedIPv6ExtHdr, xdpDrop},
		{"v6 routing header type 0", packet{v6: true, src: "2001:db8:1::10", dst: "2001:db8:2::10",
			extTypes: []layers.IPProtocol{rtTyp}, extHdrs: routing0}, "a0", ReasonMalformedIPv6ExtHdr, xdpDrop},
		{"v6 two fragment headers", packet{v6: true, src: "2001:db8:1::10", dst: "2001:db8:2::10",
			extTypes: []layers.IPProtocol{fragTyp, fragTyp}, extHdrs: cat(fragFirst, fragFirst)}, "a0", ReasonMalformedIPv6ExtHdr, xdpDrop},
		{"v6 first fragment without L4 header", packet{v6: true, src: "2001:db8:1::10", dst: "2001:db8:2::10", proto: layers.IPProtocolTCP,
			extTypes: []layers.IPProtocol{fragTyp}, extHdrs: fragFirst, l4Raw: make([]byte, 8)}, "a0", ReasonMalformedL4, xdpDrop},
		{"v4 first fragment without L4 header", packet{src: "198.18.1.10", dst: "198.19.1.10", proto: layers.IPProtocolTCP, frag: 0x2000, l4Raw: make([]byte, 8)}, "a0", ReasonMalformedL4, xdpDrop},
		{"v4 tcp data offset past the end", packet{src: "198.18.1.10", dst: "198.19.1.10", proto: layers.IPProtocolTCP,
			l4Raw: []byte{0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0xf0, 2, 0, 0, 0, 0, 0, 0}}, "a0", ReasonMalformedL4, xdpDrop},
		{"v4 tcp data offset below 5", packet{src: "198.18.1.10", dst: "198.19.1.10", proto: layers.IPProtocolTCP,
			l4Raw: []byte{0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 2, 0, 0, 0, 0, 0, 0}}, "a0", ReasonMalformedL4, xdpDrop},
		{"v4 udp length past the datagram", packet{src: "198.18.1.10", dst: "198.19.1.10", proto: layers.IPProtocolUDP,
			l4Raw: []byte{0, 1, 0, 2, 0, 64, 0, 0}}, "a0", ReasonMalformedL4, xdpDrop},
		{"v4 udp length below header", packet{src: "198.18.1.10", dst: "198.19.1.10", proto: layers.IPProtocolUDP,
			l4Raw: []byte{0, 1, 0, 2, 0, 4, 0, 0}}, "a0", ReasonMalformedL4, xdpDrop},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frame := tt.pkt.build(t)
			res := fx.run(t, frame, tt.ingress)
			if res.reason != tt.want || res.action != tt.action {
				t.Fatalf("got reason %s action %d, want %s action %d", res.reason.Name(), res.action, tt.want.Name(), tt.action)
			}
			switch res.action {
			case xdpTX, xdpRedirect:
				checkForwarded(t, fx, frame, res.out, tt.ingress)
			default:
				if !bytes.Equal(frame, res.out) {
					t.Errorf("a packet that was not forwarded was modified")
				}
			}
		})
	}
}

// checkForwarded verifies what forwarding must change and nothing else:
// the MACs, the TTL or hop limit, and the IPv4 header checksum.
func checkForwarded(t *testing.T, fx *fibFixture, in, out []byte, ingress string) {
	t.Helper()
	pin := gopacket.NewPacket(in, layers.LayerTypeEthernet, gopacket.Default)
	pout := gopacket.NewPacket(out, layers.LayerTypeEthernet, gopacket.Default)
	eth, ok := pout.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if !ok || pout.NetworkLayer() == nil {
		t.Fatalf("forwarded frame does not decode to Ethernet and IP")
	}

	var wantDst net.HardwareAddr
	var egress string
	if ip4, ok := pout.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
		orig := pin.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if ip4.TTL != orig.TTL-1 {
			t.Errorf("TTL %d, want %d", ip4.TTL, orig.TTL-1)
		}
		wantDst, egress = neighbourOf(ip4.DstIP)
		// Recompute the checksum from scratch and compare with the
		// incrementally updated one.
		hdr := append([]byte(nil), ip4.Contents...)
		got := binary.BigEndian.Uint16(hdr[10:])
		hdr[10], hdr[11] = 0, 0
		if want := ipChecksum(hdr); got != want {
			t.Errorf("IPv4 checksum %#04x after TTL decrement, recomputed %#04x", got, want)
		}
	} else {
		ip6 := pout.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
		orig := pin.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
		if ip6.HopLimit != orig.HopLimit-1 {
			t.Errorf("hop limit %d, want %d", ip6.HopLimit, orig.HopLimit-1)
		}
		wantDst, egress = neighbourOf(ip6.DstIP)
	}
	if !bytes.Equal(eth.DstMAC, wantDst) {
		t.Errorf("dst MAC %s, want the next hop's %s", eth.DstMAC, wantDst)
	}
	if !bytes.Equal(eth.SrcMAC, fx.mac(egress)) {
		t.Errorf("src MAC %s, want egress %s's %s", eth.SrcMAC, egress, fx.mac(egress))
	}
	// Beyond the MACs, TTL and checksum, not one byte may change.
	l3 := 14
	masked := func(b []byte) []byte {
		c := append([]byte(nil), b[12:]...)
		if c[2]>>4 == 4 {
			c[l3-12+8], c[l3-12+10], c[l3-12+11] = 0, 0, 0
		} else {
			c[l3-12+7] = 0
		}
		return c
	}
	if !bytes.Equal(masked(in), masked(out)) {
		t.Errorf("forwarding changed bytes other than MACs, TTL and checksum")
	}
}

func neighbourOf(dst net.IP) (net.HardwareAddr, string) {
	a, _ := netip.AddrFromSlice(dst)
	a = a.Unmap()
	switch {
	case netip.MustParsePrefix("198.18.1.0/24").Contains(a), netip.MustParsePrefix("2001:db8:1::/64").Contains(a):
		return hairpinMAC, "a0"
	case netip.MustParsePrefix("198.19.3.0/24").Contains(a), netip.MustParsePrefix("2001:db8:3::/64").Contains(a):
		return smallMAC, "c0"
	default:
		return serverMAC, "b0"
	}
}

func ipChecksum(hdr []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(hdr); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(hdr[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

func TestXDPEgressUnmanagedGoesToKernel(t *testing.T) {
	fx := newFibFixture(t)
	fx.setTxPorts(t, "a0")
	res := fx.run(t, packet{src: "198.18.1.10", dst: "198.19.1.10"}.build(t), "a0")
	if res.reason != ReasonPassEgressUnmanaged || res.action != xdpPass {
		t.Fatalf("got %s/%d, want pass_egress_unmanaged/XDP_PASS", res.reason.Name(), res.action)
	}
}

func TestXDPForwardingDisabledGoesToKernel(t *testing.T) {
	fx := newFibFixture(t)
	err := inNetNS(fx.ns, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/conf/a0/forwarding", []byte("0"), 0)
	})
	must(t, err)
	res := fx.run(t, packet{src: "198.18.1.10", dst: "198.19.1.10"}.build(t), "a0")
	if res.reason != ReasonPassFwdDisabled || res.action != xdpPass {
		t.Fatalf("got %s/%d, want pass_fwd_disabled/XDP_PASS", res.reason.Name(), res.action)
	}
}

func TestXDPNotIPGoesToKernel(t *testing.T) {
	fx := newFibFixture(t)
	buf := gopacket.NewSerializeBuffer()
	must(t, gopacket.SerializeLayers(buf, gopacket.SerializeOptions{},
		&layers.Ethernet{SrcMAC: clientMAC, DstMAC: layers.EthernetBroadcast, EthernetType: layers.EthernetTypeARP},
		&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: layers.ARPRequest, SourceHwAddress: clientMAC, SourceProtAddress: []byte{198, 18, 1, 10},
			DstHwAddress: make([]byte, 6), DstProtAddress: []byte{198, 18, 1, 1}}))
	res := fx.run(t, buf.Bytes(), "a0")
	if res.reason != ReasonPassNotIP || res.action != xdpPass {
		t.Fatalf("got %s/%d, want pass_not_ip/XDP_PASS", res.reason.Name(), res.action)
	}
}

// truncationCase is a well-formed frame and where its headers end, so the
// test knows which malformed reason each cut must produce.
type truncationCase struct {
	name   string
	pkt    packet
	l3     int    // offset of the L3 header
	l3End  int    // end of the fixed L3 header (plus IPv4 options)
	extEnd int    // end of IPv6 extension headers (== l3End without)
	l4End  int    // end of the L4 header
	ip     Reason // reason for a cut inside the L3 header
}

// datagramEnd is where the IP datagram ends; Ethernet pads short frames to
// 60 bytes, and cutting padding leaves a whole datagram.
func datagramEnd(frame []byte, tc truncationCase) int {
	ip := frame[tc.l3:]
	if tc.pkt.v6 {
		return tc.l3 + 40 + int(binary.BigEndian.Uint16(ip[4:]))
	}
	return tc.l3 + int(binary.BigEndian.Uint16(ip[2:]))
}

func truncationCases() []truncationCase {
	v4 := func(name string, p packet, l4 int) truncationCase {
		p.src, p.dst = "198.18.1.10", "198.19.1.10"
		l3 := 14 + 4*p.vlans
		end := l3 + 20 + optLen(p.ipOptions)
		return truncationCase{name, p, l3, end, end, end + l4, ReasonMalformedIPv4}
	}
	v6 := func(name string, p packet, l4 int) truncationCase {
		p.v6, p.src, p.dst = true, "2001:db8:1::10", "2001:db8:2::10"
		l3 := 14 + 4*p.vlans
		return truncationCase{name, p, l3, l3 + 40, l3 + 40 + len(p.extHdrs), l3 + 40 + len(p.extHdrs) + l4, ReasonMalformedIPv6}
	}
	return []truncationCase{
		v4("v4 tcp", packet{proto: layers.IPProtocolTCP}, 20),
		v4("v4 udp", packet{proto: layers.IPProtocolUDP}, 8),
		v4("v4 icmp", packet{proto: layers.IPProtocolICMPv4}, 8),
		v4("v4 tcp with options", packet{proto: layers.IPProtocolTCP, ipOptions: []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}}, 20),
		v4("v4 udp in vlan", packet{proto: layers.IPProtocolUDP, vlans: 2}, 8),
		v6("v6 tcp", packet{proto: layers.IPProtocolTCP}, 20),
		v6("v6 udp", packet{proto: layers.IPProtocolUDP}, 8),
		v6("v6 icmpv6", packet{proto: layers.IPProtocolICMPv6}, 8),
		v6("v6 tcp behind ext headers", packet{proto: layers.IPProtocolTCP,
			extTypes: []layers.IPProtocol{hopTyp, dstTyp, fragTyp}, extHdrs: cat(hopByHop, destOpts, fragAtomic)}, 20),
		v6("v6 udp in vlan", packet{proto: layers.IPProtocolUDP, vlans: 1}, 8),
	}
}

// TestXDPTruncation cuts every test frame at every byte offset. A cut frame
// whose length fields still claim the missing bytes must be malformed at the
// layer it was cut in; so must a cut frame whose IP length fields were
// rewritten to match the cut, down to the L4 header. Never forwarded, never
// passed, never a verdict on a header that is not all there.
func TestXDPTruncation(t *testing.T) {
	fx := newFibFixture(t)
	for _, tc := range truncationCases() {
		t.Run(tc.name, func(t *testing.T) {
			frame := tc.pkt.build(t)
			// The kernel refuses BPF_PROG_RUN on less than an Ethernet
			// header, as drivers drop runts before XDP sees them.
			for cut := 14; cut < datagramEnd(frame, tc); cut++ {
				raw := append([]byte(nil), frame[:cut]...)
				want := tc.ip
				if cut < tc.l3 {
					want = ReasonMalformedVLAN
				}
				if res := fx.run(t, raw, "a0"); res.reason != want || res.action != xdpDrop {
					t.Errorf("cut at %d (length fields intact): got %s/%d, want %s/XDP_DROP", cut, res.reason.Name(), res.action, want.Name())
				}

				if cut < tc.l3End {
					continue
				}
				fixed := fixLengths(raw, tc)
				want = 0
				switch {
				case cut == tc.l3End && tc.pkt.v6 && len(tc.pkt.extTypes) > 0 && tc.pkt.extTypes[0] == hopTyp:
					want = ReasonMalformedIPv6 // payload length 0 before a hop-by-hop header announces a jumbogram
				case cut < tc.extEnd:
					want = ReasonMalformedIPv6ExtHdr
				case cut < tc.l4End:
					want = ReasonMalformedL4
				case tc.pkt.proto == layers.IPProtocolUDP:
					want = ReasonMalformedL4 // the UDP length still claims the cut bytes
				}
				res := fx.run(t, fixed, "a0")
				if want == 0 {
					if res.reason.Verdict() == VerdictMalformed {
						t.Errorf("cut at %d (lengths fixed): payload-only cut was %s", cut, res.reason.Name())
					}
					continue
				}
				if res.reason != want || res.action != xdpDrop {
					t.Errorf("cut at %d (lengths fixed): got %s/%d, want %s/XDP_DROP", cut, res.reason.Name(), res.action, want.Name())
				}
			}
		})
	}
}

// fixLengths rewrites the IPv4 total length (and checksum) or the IPv6
// payload length to describe a cut frame.
func fixLengths(frame []byte, tc truncationCase) []byte {
	ip := frame[tc.l3:]
	if tc.pkt.v6 {
		binary.BigEndian.PutUint16(ip[4:], uint16(len(ip)-40))
		return frame
	}
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	hl := int(ip[0]&0xf) * 4
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip[:hl]))
	return frame
}

func TestXDPMalformedActionIsConfigurable(t *testing.T) {
	fx := newFibFixture(t)
	frame := packet{src: "198.18.1.10", dst: "198.19.1.10", vlans: 3}.build(t)

	fx.setMalformed(t, MalformedPass)
	if res := fx.run(t, frame, "a0"); res.reason != ReasonMalformedVLAN || res.action != xdpPass {
		t.Fatalf("malformed=pass: got %s/%d, want malformed_vlan/XDP_PASS", res.reason.Name(), res.action)
	}
	fx.setMalformed(t, MalformedDrop)
	if res := fx.run(t, frame, "a0"); res.reason != ReasonMalformedVLAN || res.action != xdpDrop {
		t.Fatalf("malformed=drop: got %s/%d, want malformed_vlan/XDP_DROP", res.reason.Name(), res.action)
	}
}

func TestXDPRunRefusesRunts(t *testing.T) {
	fx := newFibFixture(t)
	err := inNetNS(fx.ns, func() error {
		_, err := fx.objs.XdpNatwall.Run(&ebpf.RunOptions{Data: make([]byte, 13)})
		return err
	})
	if !errors.Is(err, unix.EINVAL) {
		t.Fatalf("BPF_PROG_RUN on 13 bytes: %v, want EINVAL (runts never reach XDP)", err)
	}
}
