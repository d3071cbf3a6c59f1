package test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/natwall/natwall/test/lab"
)

// Crafted packets through a real appliance (issue 14): each case sends one
// packet from a host's NIC, then asserts what the appliance let out towards
// another host and which reason counter moved. The helpers below (prefixed
// adversary) are meant for every class of the issue, not just the zone
// classes (2, 9, 12) this file tests.

// adversaryLab is a lab with natwall attached to the appliance.
type adversaryLab struct {
	*lab.Lab
	natwall *appliance
}

// newAdversaryLab builds a lab of opts.Shape and starts natwall with
// extraConfig. With two NICs the outside one is named outside
// (outside_interfaces), as an operator of a two-NIC appliance would. Every
// host has talked to the appliance, so neighbours are resolved and first
// packets are forwarded in XDP rather than handed to the kernel to resolve.
func newAdversaryLab(t *testing.T, opts lab.Options, extraConfig string) *adversaryLab {
	t.Helper()
	l := newLab(t, opts)
	if opts.Shape == lab.TwoNIC {
		extraConfig = "outside_interfaces: [" + lab.OutsideNIC + "]\n" + extraConfig
	}
	al := &adversaryLab{Lab: l, natwall: startNatwall(t, l, extraConfig)}
	for _, c := range l.Clients {
		warmUp(t, c.NS, l.Servers[0].IPv4)
		warmUp(t, c.NS, l.Servers[0].IPv6)
	}
	// Servers reach the appliance itself: inbound flows may be denied.
	for _, s := range l.Servers {
		warmUp(t, s.NS, lab.ApplianceOutsideV4)
		warmUp(t, s.NS, lab.ApplianceOutsideV6)
	}
	return al
}

// isClient reports whether h is on the inside.
func (al *adversaryLab) isClient(h *lab.Host) bool { return slices.Contains(al.Clients, h) }

// applianceNICToward is the appliance's NIC on h's segment.
func (al *adversaryLab) applianceNICToward(h *lab.Host) string {
	if al.Options().Shape == lab.OneNIC {
		return lab.SingleNIC
	}
	if al.isClient(h) {
		return lab.InsideNIC
	}
	return lab.OutsideNIC
}

func adversaryMAC(t *testing.T, ns *lab.NetNS, name string) net.HardwareAddr {
	t.Helper()
	iface, err := ns.Interface(name)
	if err != nil {
		t.Fatal(err)
	}
	return iface.HardwareAddr
}

// adversaryLinkLocal is the IPv6 link-local address of NIC name in ns.
func adversaryLinkLocal(t *testing.T, ns *lab.NetNS, name string) netip.Addr {
	t.Helper()
	var found netip.Addr
	err := ns.Do(func() error {
		iface, err := net.InterfaceByName(name)
		if err != nil {
			return err
		}
		addrs, err := iface.Addrs()
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().IsLinkLocalUnicast() {
				found = p.Addr()
				return nil
			}
		}
		return fmt.Errorf("%s has no link-local address", name)
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// adversaryPacket is one crafted packet. Its payload carries a marker with
// its name, by which it is recognised wherever it arrives, translated or not.
type adversaryPacket struct {
	Name string
	// From is the host whose NIC sends it, to the appliance's MAC.
	From     *lab.Host
	Src, Dst netip.AddrPort
	// Proto is TCP (a SYN) or UDP.
	Proto layers.IPProtocol
}

func (p adversaryPacket) marker() []byte { return []byte("natwall-adversary " + p.Name) }

// frame builds p as an Ethernet frame from src to dst with gopacket.
func (p adversaryPacket) frame(src, dst net.HardwareAddr) ([]byte, error) {
	eth := &layers.Ethernet{SrcMAC: src, DstMAC: dst, EthernetType: layers.EthernetTypeIPv4}
	var ip gopacket.SerializableLayer
	var nl gopacket.NetworkLayer
	if p.Src.Addr().Is4() {
		v4 := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: p.Proto, SrcIP: p.Src.Addr().AsSlice(), DstIP: p.Dst.Addr().AsSlice()}
		ip, nl = v4, v4
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		v6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: p.Proto, SrcIP: p.Src.Addr().AsSlice(), DstIP: p.Dst.Addr().AsSlice()}
		ip, nl = v6, v6
	}
	var l4 gopacket.SerializableLayer
	switch p.Proto {
	case layers.IPProtocolTCP:
		tcp := &layers.TCP{SrcPort: layers.TCPPort(p.Src.Port()), DstPort: layers.TCPPort(p.Dst.Port()), SYN: true, Seq: 1000, Window: 64240}
		tcp.SetNetworkLayerForChecksum(nl)
		l4 = tcp
	case layers.IPProtocolUDP:
		udp := &layers.UDP{SrcPort: layers.UDPPort(p.Src.Port()), DstPort: layers.UDPPort(p.Dst.Port())}
		udp.SetNetworkLayerForChecksum(nl)
		l4 = udp
	default:
		return nil, fmt.Errorf("adversary packet %s: protocol %v not supported", p.Name, p.Proto)
	}
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, l4, gopacket.Payload(p.marker()))
	return buf.Bytes(), err
}

// adversaryResult is what became of a crafted packet.
type adversaryResult struct {
	// Delivered are the frames carrying the packet's marker that the
	// appliance sent to the watched host.
	Delivered []gopacket.Packet
	// Answers are the other TCP and UDP frames the appliance sent to the
	// watched host meanwhile (a SYN-ACK or RST from its own stack).
	Answers []gopacket.Packet
	// Moved is how much each reason counter moved.
	Moved map[string]float64
}

// adversaryNothingArrives is how long a packet that must not arrive is
// given to arrive anyway: the appliance forwards in microseconds.
const adversaryNothingArrives = 700 * time.Millisecond

// sendAdversarial sends p and captures what the appliance sends to watch
// until the packet arrived there, or for adversaryNothingArrives when
// delivered is false.
func (al *adversaryLab) sendAdversarial(t *testing.T, p adversaryPacket, watch *lab.Host, delivered bool) adversaryResult {
	t.Helper()
	applianceMAC := adversaryMAC(t, al.Appliance, al.applianceNICToward(watch))
	capture, err := lab.StartCapture(watch.Port.NS, watch.Port.Name, fmt.Sprintf("ether src %s and (tcp or udp)", applianceMAC))
	if err != nil {
		t.Fatal(err)
	}
	before := al.natwall.packets(t)
	frame, err := p.frame(adversaryMAC(t, p.From.NS, p.From.Interface), adversaryMAC(t, al.Appliance, al.applianceNICToward(p.From)))
	if err != nil {
		t.Fatal(err)
	}
	if err := injectFrames(p.From.NS, p.From.Interface, [][]byte{frame}); err != nil {
		t.Fatal(err)
	}
	wait := adversaryNothingArrives
	if delivered {
		wait = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(testContext(t), wait)
	defer cancel()
	if delivered {
		// Until a first frame, then until the appliance has been quiet
		// for a moment: the probe may not be the first frame.
		if capture.WaitFor(ctx, 1) == nil {
			for {
				quiet, stopQuiet := context.WithTimeout(ctx, 200*time.Millisecond)
				err := capture.WaitFor(quiet, len(capture.Lines())+1)
				stopQuiet()
				if err != nil {
					break
				}
			}
		}
	} else {
		_ = capture.WaitFor(ctx, math.MaxInt) // returns at the deadline
	}
	if _, _, err := capture.Stop(); err != nil {
		t.Fatal(err)
	}
	res := decodeAdversarial(capture, p)
	after := al.natwall.packets(t)
	res.Moved = map[string]float64{}
	for reason, n := range after {
		if d := n - before[reason]; d != 0 {
			res.Moved[reason] = d
		}
	}
	return res
}

func decodeAdversarial(c *lab.Capture, p adversaryPacket) adversaryResult {
	var res adversaryResult
	for _, f := range c.Frames() {
		pkt := gopacket.NewPacket(f.Data, layers.LayerTypeEthernet, gopacket.Default)
		if app := pkt.ApplicationLayer(); app != nil && bytes.Equal(app.Payload(), p.marker()) {
			res.Delivered = append(res.Delivered, pkt)
			continue
		}
		res.Answers = append(res.Answers, pkt)
	}
	return res
}

// expectAdversarial sends p and fails the test unless it arrived at watch
// (delivered) or did not, and the reason counter moved.
func (al *adversaryLab) expectAdversarial(t *testing.T, p adversaryPacket, watch *lab.Host, delivered bool, reason string) adversaryResult {
	t.Helper()
	res := al.sendAdversarial(t, p, watch, delivered)
	switch {
	case delivered && len(res.Delivered) == 0:
		t.Errorf("%s: never arrived at %s (counters moved: %v)", p.Name, watch.NS, res.Moved)
	case !delivered && len(res.Delivered) > 0:
		t.Errorf("%s: arrived at %s: %v (counters moved: %v)", p.Name, watch.NS, res.Delivered[0], res.Moved)
	}
	if res.Moved[reason] < 1 {
		t.Errorf("%s: reason %s did not move (counters moved: %v)", p.Name, reason, res.Moved)
	}
	return res
}

// adversaryEndpoints decodes the addresses and ports of a delivered frame.
func adversaryEndpoints(t *testing.T, pkt gopacket.Packet) (src, dst netip.AddrPort) {
	t.Helper()
	var sa, da netip.Addr
	switch ip := pkt.NetworkLayer().(type) {
	case *layers.IPv4:
		sa, _ = netip.AddrFromSlice(ip.SrcIP.To4())
		da, _ = netip.AddrFromSlice(ip.DstIP.To4())
	case *layers.IPv6:
		sa, _ = netip.AddrFromSlice(ip.SrcIP)
		da, _ = netip.AddrFromSlice(ip.DstIP)
	default:
		t.Fatalf("not IP: %v", pkt)
	}
	switch l4 := pkt.TransportLayer().(type) {
	case *layers.UDP:
		return netip.AddrPortFrom(sa, uint16(l4.SrcPort)), netip.AddrPortFrom(da, uint16(l4.DstPort))
	case *layers.TCP:
		return netip.AddrPortFrom(sa, uint16(l4.SrcPort)), netip.AddrPortFrom(da, uint16(l4.DstPort))
	}
	t.Fatalf("no TCP or UDP: %v", pkt)
	return
}

// adversaryAddrPort is netip.AddrPortFrom, short for case tables.
func adversaryAddrPort(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }

// forEachAdversaryShape runs fn on a fresh adversary lab of each NIC shape.
func forEachAdversaryShape(t *testing.T, opts lab.Options, config func(t *testing.T) string, fn func(t *testing.T, al *adversaryLab)) {
	for _, shape := range shapes {
		t.Run(shape.String(), func(t *testing.T) {
			o := opts
			o.Shape = shape
			fn(t, newAdversaryLab(t, o, config(t)))
		})
	}
}

// Class 2: an outsider forging an inside source must open no flow, so it
// gets no mapping to talk to the inside host through. With two NICs the
// arrival NIC gives it away; with one NIC only the routes can, for sources
// the appliance does not route back to where the packet came from.
func TestAdversarialZoneSpoofedSources(t *testing.T) {
	forEachAdversaryShape(t, lab.Options{Servers: 2}, func(*testing.T) string { return natConfig("") }, func(t *testing.T, al *adversaryLab) {
		client, attacker, victim := al.Clients[0], al.Servers[0], al.Servers[1]
		unroutedInside4 := netip.MustParseAddr("198.18.200.5")
		unroutedInside6 := netip.MustParseAddr("2001:db8:1:99::5")

		if al.Options().Shape == lab.TwoNIC {
			al.expectAdversarial(t, adversaryPacket{Name: "v4 inside source from outside", From: attacker,
				Src: adversaryAddrPort(client.IPv4, 5000), Dst: adversaryAddrPort(victim.IPv4, 6000), Proto: layers.IPProtocolUDP}, victim, false, "drop_spoofed_inside")
			al.expectAdversarial(t, adversaryPacket{Name: "v6 inside source from outside", From: attacker,
				Src: adversaryAddrPort(client.IPv6, 5000), Dst: adversaryAddrPort(victim.IPv6, 6000), Proto: layers.IPProtocolUDP}, victim, false, "drop_spoofed_inside")
			al.expectAdversarial(t, adversaryPacket{Name: "v4 inside source from outside to the appliance", From: attacker,
				Src: adversaryAddrPort(client.IPv4, 5001), Dst: adversaryAddrPort(lab.ApplianceOutsideV4, 22), Proto: layers.IPProtocolTCP}, client, false, "drop_spoofed_inside")
			// Had the spoof opened a flow, port preservation would have
			// mapped it to 5000; the outsider's "reply" finds nothing.
			al.expectAdversarial(t, adversaryPacket{Name: "reply through the would-be mapping", From: attacker,
				Src: adversaryAddrPort(attacker.IPv4, 6000), Dst: adversaryAddrPort(lab.ApplianceOutsideV4, 5000), Proto: layers.IPProtocolUDP}, client, false, "pass_local")
		}
		// With one NIC the arrival NIC says nothing; the route back to
		// the source does, for sources not reached where they came from.
		fromOutside := "drop_reverse_path"
		if al.Options().Shape == lab.TwoNIC {
			fromOutside = "drop_spoofed_inside"
		}
		al.expectAdversarial(t, adversaryPacket{Name: "v4 inside source the appliance does not route", From: attacker,
			Src: adversaryAddrPort(unroutedInside4, 5000), Dst: adversaryAddrPort(victim.IPv4, 6000), Proto: layers.IPProtocolUDP}, victim, false, fromOutside)
		al.expectAdversarial(t, adversaryPacket{Name: "v6 inside source the appliance does not route", From: attacker,
			Src: adversaryAddrPort(unroutedInside6, 5000), Dst: adversaryAddrPort(victim.IPv6, 6000), Proto: layers.IPProtocolUDP}, victim, false, fromOutside)
		al.expectAdversarial(t, adversaryPacket{Name: "v4 source is the appliance itself", From: attacker,
			Src: adversaryAddrPort(lab.ApplianceInsideV4, 5000), Dst: adversaryAddrPort(victim.IPv4, 6000), Proto: layers.IPProtocolUDP}, victim, false, fromOutside)
		al.expectAdversarial(t, adversaryPacket{Name: "v6 source is the appliance itself", From: attacker,
			Src: adversaryAddrPort(lab.ApplianceInsideV6, 5000), Dst: adversaryAddrPort(victim.IPv6, 6000), Proto: layers.IPProtocolUDP}, victim, false, fromOutside)
		al.expectAdversarial(t, adversaryPacket{Name: "v4 unrouted source from inside", From: client,
			Src: adversaryAddrPort(unroutedInside4, 5002), Dst: adversaryAddrPort(victim.IPv4, 6000), Proto: layers.IPProtocolTCP}, victim, false, "drop_reverse_path")

		fwd := "fwd_redirect"
		if al.Options().Shape == lab.OneNIC {
			fwd = "fwd_tx"
		}
		res := al.expectAdversarial(t, adversaryPacket{Name: "v4 the inside host itself", From: client,
			Src: adversaryAddrPort(client.IPv4, 5000), Dst: adversaryAddrPort(victim.IPv4, 6000), Proto: layers.IPProtocolUDP}, victim, true, fwd)
		if len(res.Delivered) == 0 {
			t.FailNow()
		}
		mapped, _ := adversaryEndpoints(t, res.Delivered[0])
		if mapped.Addr() != lab.ApplianceOutsideV4 {
			t.Errorf("outbound flow left from %s, want the SNAT address %s", mapped, lab.ApplianceOutsideV4)
		}
		al.expectAdversarial(t, adversaryPacket{Name: "v4 the outside answers through the real mapping", From: victim,
			Src: adversaryAddrPort(victim.IPv4, 6000), Dst: mapped, Proto: layers.IPProtocolUDP}, client, true, fwd)
		al.expectAdversarial(t, adversaryPacket{Name: "v6 the inside host itself", From: client,
			Src: adversaryAddrPort(client.IPv6, 5000), Dst: adversaryAddrPort(victim.IPv6, 6000), Proto: layers.IPProtocolUDP}, victim, true, fwd)
	})
}

// adversaryRuleConfig writes a rule file and returns the config naming it.
func adversaryRuleConfig(t *testing.T, rulesYAML, extra string) string {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(file, []byte(rulesYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("state_dir: %s\nrules:\n  paths: [%s]\n%s", filepath.Join(dir, "state"), file, extra)
}

// Class 9: an inside host reaching another through its external endpoint
// meets the east-west rules between the two; other inside hosts still
// hairpin, translated both ways.
func TestAdversarialZoneHairpin(t *testing.T) {
	rulesFor := func(t *testing.T) string {
		c0, _, _ := lab.ClientAddrs(0)
		c1, _, _ := lab.ClientAddrs(1)
		return adversaryRuleConfig(t, fmt.Sprintf(`stateful:
  default_action: allow
  rules:
    - {id: no-c1-to-c0, priority: 10, action: deny, direction: east-west, src: [%s], dst: [%s]}
`, c1, c0), natConfig(""))
	}
	forEachAdversaryShape(t, lab.Options{Clients: 3}, rulesFor, func(t *testing.T, al *adversaryLab) {
		owner, denied, other, server := al.Clients[0], al.Clients[1], al.Clients[2], al.Servers[0]
		fwd := "fwd_redirect"
		if al.Options().Shape == lab.OneNIC {
			fwd = "fwd_tx"
		}
		res := al.expectAdversarial(t, adversaryPacket{Name: "owner opens its mapping", From: owner,
			Src: adversaryAddrPort(owner.IPv4, 41000), Dst: adversaryAddrPort(server.IPv4, 9000), Proto: layers.IPProtocolUDP}, server, true, fwd)
		if len(res.Delivered) == 0 {
			t.FailNow()
		}
		mapped, _ := adversaryEndpoints(t, res.Delivered[0])
		if mapped.Addr() != lab.ApplianceOutsideV4 {
			t.Fatalf("mapping %s, want on %s", mapped, lab.ApplianceOutsideV4)
		}

		al.expectAdversarial(t, adversaryPacket{Name: "denied host through the external endpoint", From: denied,
			Src: adversaryAddrPort(denied.IPv4, 42000), Dst: mapped, Proto: layers.IPProtocolUDP}, owner, false, "drop_acl_deny")
		al.expectAdversarial(t, adversaryPacket{Name: "denied host directly", From: denied,
			Src: adversaryAddrPort(denied.IPv4, 42001), Dst: adversaryAddrPort(owner.IPv4, 41000), Proto: layers.IPProtocolUDP}, owner, false, "drop_acl_deny")
		res = al.expectAdversarial(t, adversaryPacket{Name: "another host through the external endpoint", From: other,
			Src: adversaryAddrPort(other.IPv4, 43000), Dst: mapped, Proto: layers.IPProtocolUDP}, owner, true, "fwd_tx")
		if len(res.Delivered) > 0 {
			src, dst := adversaryEndpoints(t, res.Delivered[0])
			if src.Addr() != lab.ApplianceOutsideV4 || dst != adversaryAddrPort(owner.IPv4, 41000) {
				t.Errorf("hairpin delivered %s -> %s, want from %s to %s", src, dst, lab.ApplianceOutsideV4, adversaryAddrPort(owner.IPv4, 41000))
			}
		}
		al.expectAdversarial(t, adversaryPacket{Name: "denied host still goes out", From: denied,
			Src: adversaryAddrPort(denied.IPv4, 42002), Dst: adversaryAddrPort(server.IPv4, 9000), Proto: layers.IPProtocolUDP}, server, true, fwd)
	})
}

// Class 12: traffic from IPv6 link-local sources to the appliance meets
// the local rules like any other; it is never forwarded; neighbour
// discovery still works.
func TestAdversarialZoneLinkLocalToAppliance(t *testing.T) {
	const port = 2222
	rulesFor := func(t *testing.T) string {
		return adversaryRuleConfig(t, fmt.Sprintf(`stateful:
  default_action: allow
  rules:
    - {id: admin-from-inside, priority: 10, action: allow, direction: local, protocol: tcp, dst_ports: [%d], src: [inside]}
    - {id: no-other-admin, priority: 20, action: deny, direction: local, protocol: tcp, dst_ports: [%d]}
`, port, port), "")
	}
	forEachAdversaryShape(t, lab.Options{}, rulesFor, func(t *testing.T, al *adversaryLab) {
		client, server := al.Clients[0], al.Servers[0]
		ln, err := al.Appliance.Listen("tcp6", fmt.Sprintf("[::]:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go echoServer(ln)
		ctx := testContext(t)
		clientLL := adversaryLinkLocal(t, client.NS, client.Interface)
		applianceNIC := al.applianceNICToward(client)
		applianceLL := adversaryLinkLocal(t, al.Appliance, applianceNIC)

		if _, err := dialWithin(ctx, client.NS, adversaryAddrPort(lab.ApplianceInsideV6, port), 5*time.Second); err != nil {
			t.Fatalf("legit: admin port from an inside address: %v", err)
		}

		before := al.natwall.packets(t)
		dialCtx, cancel := context.WithTimeout(ctx, time.Second)
		c, err := client.NS.Dial(dialCtx, "tcp6", fmt.Sprintf("[%s%%%s]:%d", applianceLL, client.Interface, port))
		cancel()
		if err == nil {
			c.Close()
			t.Errorf("attack: the admin port answered on the appliance's link-local address %s", applianceLL)
		} else if !errors.Is(err, context.DeadlineExceeded) && !strings.Contains(err.Error(), "timeout") {
			t.Errorf("attack: dial to the link-local address failed with %v, want a silent drop", err)
		}
		if d := al.natwall.packets(t)["drop_acl_deny"] - before["drop_acl_deny"]; d < 1 {
			t.Errorf("attack: a SYN to the appliance's link-local address was not denied by the local rules (drop_acl_deny moved %v)", d)
		}

		res := al.expectAdversarial(t, adversaryPacket{Name: "link-local source to the global address", From: client,
			Src: adversaryAddrPort(clientLL, 40000), Dst: adversaryAddrPort(lab.ApplianceInsideV6, port), Proto: layers.IPProtocolTCP}, client, false, "drop_acl_deny")
		for _, a := range res.Answers {
			if tcp, ok := a.TransportLayer().(*layers.TCP); ok && uint16(tcp.SrcPort) == port {
				t.Errorf("attack: the appliance answered a link-local SYN to its global address: %v", a)
			}
		}
		if err := client.NS.Ping(ctx, applianceLL.WithZone(client.Interface)); err != nil {
			t.Errorf("legit: ping to the appliance's link-local address, which the rules allow: %v", err)
		}
		al.expectAdversarial(t, adversaryPacket{Name: "link-local source routed onwards", From: client,
			Src: adversaryAddrPort(clientLL, 40001), Dst: adversaryAddrPort(server.IPv6, 9000), Proto: layers.IPProtocolUDP}, server, false, "drop_link_scoped_src")

		// Neighbour discovery from link-local sources still reaches the
		// kernel: with the client's neighbour entries flushed, it has to
		// resolve the appliance again before anything goes through.
		before = al.natwall.packets(t)
		if out, err := client.NS.IP(ctx, "-6", "neigh", "flush", "dev", client.Interface); err != nil {
			t.Fatalf("flush neighbours: %v: %s", err, out)
		}
		warmUp(t, client.NS, server.IPv6)
		if d := al.natwall.packets(t)["pass_link_local"] - before["pass_link_local"]; d < 1 {
			t.Errorf("legit: no neighbour discovery reached the kernel (pass_link_local moved %v)", d)
		}
	})
}

// Class 2 with one NIC: the arrival NIC cannot tell an outsider forging an
// inside host's address from the host, but with reverse_path: neighbor the
// frame must come from the neighbour the route back leads to.
func TestAdversarialZoneOneNICNeighbor(t *testing.T) {
	al := newAdversaryLab(t, lab.Options{Shape: lab.OneNIC, Servers: 2}, natConfig("reverse_path: neighbor\n"))
	client, attacker, victim := al.Clients[0], al.Servers[0], al.Servers[1]
	al.expectAdversarial(t, adversaryPacket{Name: "v4 an inside host's address from an outside host", From: attacker,
		Src: adversaryAddrPort(client.IPv4, 5000), Dst: adversaryAddrPort(victim.IPv4, 6000), Proto: layers.IPProtocolUDP}, victim, false, "drop_reverse_path")
	al.expectAdversarial(t, adversaryPacket{Name: "v6 an inside host's address from an outside host", From: attacker,
		Src: adversaryAddrPort(client.IPv6, 5000), Dst: adversaryAddrPort(victim.IPv6, 6000), Proto: layers.IPProtocolUDP}, victim, false, "drop_reverse_path")
	al.expectAdversarial(t, adversaryPacket{Name: "v4 the inside host itself", From: client,
		Src: adversaryAddrPort(client.IPv4, 5000), Dst: adversaryAddrPort(victim.IPv4, 6000), Proto: layers.IPProtocolUDP}, victim, true, "fwd_tx")
	al.expectAdversarial(t, adversaryPacket{Name: "v6 the inside host itself", From: client,
		Src: adversaryAddrPort(client.IPv6, 5000), Dst: adversaryAddrPort(victim.IPv6, 6000), Proto: layers.IPProtocolUDP}, victim, true, "fwd_tx")
}
