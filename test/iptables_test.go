package test

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sort"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/natwall/natwall/rules"
	"github.com/natwall/natwall/rules/rulestest"
	"github.com/natwall/natwall/test/lab"
	"github.com/natwall/natwall/test/reference"
)

// awayFromConnected moves an address out of the lab's connected subnets
// (where the appliance would try to resolve it as a neighbour, or own it)
// into routed space, keeping the rest of it.
func awayFromConnected(a netip.Addr) netip.Addr {
	if a.Is4() {
		b := a.As4()
		if b[2] == 1 {
			b[2] = 5
		}
		return netip.AddrFrom4(b)
	}
	b := a.As16()
	if b[6] == 0 && b[7] == 0 {
		b[6] = 1
	}
	return netip.AddrFrom16(b)
}

// frameFor builds the Ethernet frame p describes, tagged with tag in the
// IPv4 identification or the IPv6 flow label.
func frameFor(t *testing.T, p rules.Packet, tag int, src, dst net.HardwareAddr) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: src, DstMAC: dst, EthernetType: layers.EthernetTypeIPv4}
	var ip gopacket.SerializableLayer
	var nl gopacket.NetworkLayer
	proto := layers.IPProtocol(p.Protocol)
	if p.Src.Is4() {
		v4 := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto, Id: uint16(tag), SrcIP: p.Src.AsSlice(), DstIP: p.Dst.AsSlice()}
		ip, nl = v4, v4
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		v6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, FlowLabel: uint32(tag), SrcIP: p.Src.AsSlice(), DstIP: p.Dst.AsSlice()}
		ip, nl = v6, v6
	}
	var l4 []gopacket.SerializableLayer
	switch {
	case p.Protocol == 6:
		tcp := &layers.TCP{SrcPort: layers.TCPPort(p.SrcPort), DstPort: layers.TCPPort(p.DstPort), ACK: true, Window: 100}
		tcp.SetNetworkLayerForChecksum(nl)
		l4 = append(l4, tcp)
	case p.Protocol == 17:
		udp := &layers.UDP{SrcPort: layers.UDPPort(p.SrcPort), DstPort: layers.UDPPort(p.DstPort)}
		udp.SetNetworkLayerForChecksum(nl)
		l4 = append(l4, udp)
	case p.IsICMP:
		l4 = append(l4, gopacket.Payload([]byte{p.ICMPType, p.ICMPCode, 0, 0, 0, 0, 0, 0}))
	}
	buf := gopacket.NewSerializeBuffer()
	layers := append([]gopacket.SerializableLayer{eth, ip}, append(l4, gopacket.Payload("natwall-differential"))...)
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, layers...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// tagOf reads a captured frame's tag back.
func tagOf(frame []byte) (int, bool) {
	if len(frame) < 14+40 {
		return 0, false
	}
	switch binary.BigEndian.Uint16(frame[12:]) {
	case 0x0800:
		return int(binary.BigEndian.Uint16(frame[14+4:])), true
	case 0x86dd:
		return int(binary.BigEndian.Uint32(frame[14:]) & 0xfffff), true
	}
	return 0, false
}

// The rule model compiled to iptables decides random packets as the rules
// taken one by one do. With TestClassifierMatchesReference (the dataplane's
// classifier against the same reference), natwall and iptables agree.
func TestStatelessRulesMatchIptables(t *testing.T) {
	l := newLab(t, lab.Options{Shape: lab.TwoNIC})
	ctx := testContext(t)
	if err := l.EnableApplianceForwarding(); err != nil {
		t.Fatal(err)
	}
	server := l.Servers[0]
	for _, cmd := range [][]string{
		{"sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.in0.rp_filter=0", "net.ipv4.conf.all.send_redirects=0"},
		{"ip", "route", "add", "198.18.0.0/15", "via", server.IPv4.String()},
		{"ip", "-6", "route", "add", "2001:db8::/46", "via", server.IPv6.String()},
	} {
		if out, err := l.Appliance.Run(ctx, cmd[0], cmd[1:]...); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	in0, err := l.Appliance.Interface(lab.InsideNIC)
	if err != nil {
		t.Fatal(err)
	}
	client := l.Clients[0]
	clientNIC, err := client.NS.Interface(client.Interface)
	if err != nil {
		t.Fatal(err)
	}
	// The server must not answer (or reject) what it receives.
	if out, err := server.NS.Run(ctx, "ip", "link", "set", server.Interface, "arp", "on"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}

	r := rand.New(rand.NewPCG(5, 6))
	total := 0
	for set := 0; set < 8; set++ {
		rs := rulestest.RandomRules(r, 1+r.IntN(60), []rules.Action{rules.Drop, rules.Pass})
		for i := range rs {
			rs[i].Direction = rules.AnyDirection
		}
		err := l.Appliance.Do(func() error { return reference.Stateless(rs) })
		if err != nil {
			t.Fatal(err)
		}
		var frames [][]byte
		want := map[int]bool{}
		for i := 0; i < 250; i++ {
			p := rulestest.RandomPacket(r)
			p.Src, p.Dst = awayFromConnected(p.Src), awayFromConnected(p.Dst)
			tag := set*1000 + i + 1
			if m, _ := rules.FirstMatch(rs, p); m < 0 || rs[m].Action == rules.Pass {
				want[tag] = true
			}
			frames = append(frames, frameFor(t, p, tag, clientNIC.HardwareAddr, in0.HardwareAddr))
		}
		capture, err := lab.StartCapture(server.Port.NS, server.Port.Name, "ip or ip6")
		if err != nil {
			t.Fatal(err)
		}
		if err := injectFrames(client.NS, client.Interface, frames); err != nil {
			t.Fatal(err)
		}
		// Wait for what should pass, then a little longer for what
		// should not but might.
		deadline := time.Now().Add(5 * time.Second)
		for len(capture.Lines()) < len(want) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(200 * time.Millisecond)
		_, _, err = capture.Stop()
		if err != nil {
			t.Fatal(err)
		}
		got := map[int]bool{}
		for _, f := range capture.Frames() {
			if tag, ok := tagOf(f.Data); ok && tag > set*1000 && tag <= set*1000+250 {
				got[tag] = true
			}
		}
		var missing, extra []int
		for tag := range want {
			if !got[tag] {
				missing = append(missing, tag)
			}
		}
		for tag := range got {
			if !want[tag] {
				extra = append(extra, tag)
			}
		}
		sort.Ints(missing)
		sort.Ints(extra)
		if len(missing)+len(extra) > 0 {
			t.Fatalf("rule set %d: iptables dropped %v that the rules pass, and passed %v that they drop", set, missing, extra)
		}
		total += 250
	}
	t.Logf("%d packets: iptables and the rules agree", total)
}

// injectFrames writes raw Ethernet frames out of ifname in ns.
func injectFrames(ns *lab.NetNS, ifname string, frames [][]byte) error {
	return ns.Do(func() error {
		iface, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		addr := &unix.SockaddrLinklayer{Ifindex: iface.Index, Halen: 6}
		for i, f := range frames {
			if err := unix.Sendto(fd, f, 0, addr); err != nil {
				return fmt.Errorf("send frame: %w", err)
			}
			// Paced, so the capture on the far side keeps up.
			if i%20 == 19 {
				time.Sleep(5 * time.Millisecond)
			}
		}
		return nil
	})
}
