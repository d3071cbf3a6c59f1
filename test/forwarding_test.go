package test

import (
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"github.com/natwall/natwall/test/lab"
)

var shapes = []lab.Shape{lab.OneNIC, lab.TwoNIC}

type family struct {
	name   string
	client func(h *lab.Host) netip.Addr
}

var families = []family{
	{"ipv4", func(h *lab.Host) netip.Addr { return h.IPv4 }},
	{"ipv6", func(h *lab.Host) netip.Addr { return h.IPv6 }},
}

// forEachTopology runs fn for both NIC shapes and both address families,
// with natwall attached to the appliance.
func forEachTopology(t *testing.T, fn func(t *testing.T, l *lab.Lab, a *appliance, fam family)) {
	forEachTopologyWith(t, "", fn)
}

// forEachTopologyWith is forEachTopology with extra natwall config.
func forEachTopologyWith(t *testing.T, config string, fn func(t *testing.T, l *lab.Lab, a *appliance, fam family)) {
	for _, shape := range shapes {
		t.Run(shape.String(), func(t *testing.T) {
			l := newLab(t, lab.Options{Shape: shape})
			if config != "" {
				watchForLeaks(t, l)
			}
			a := startNatwall(t, l, config)
			for _, fam := range families {
				t.Run(fam.name, func(t *testing.T) { fn(t, l, a, fam) })
			}
		})
	}
}

// modes are the two ways natwall forwards: routing only, and with SNAT of
// outbound IPv4 (RFC 5508: traceroute and path MTU discovery must work
// through the NAT, their ICMP errors translated with the headers they embed).
var modes = []struct{ name, config string }{
	{"routing", ""},
	{"snat", natConfig("")},
}

// Ping, TCP and UDP pass through the appliance, forwarded in XDP, and the
// appliance's kernel forwards none of them: the fast path is the path.
func TestForwardingFastPath(t *testing.T) {
	forEachTopology(t, func(t *testing.T, l *lab.Lab, a *appliance, fam family) {
		ctx := testContext(t)
		client, server := l.Clients[0], l.Servers[0]
		dst := fam.client(server)
		warmUp(t, client.NS, dst)

		kernelBefore, err := l.Appliance.Snmp()
		if err != nil {
			t.Fatal(err)
		}
		before := a.packets(t)

		const pings = 20
		for i := 0; i < pings; i++ {
			if err := client.NS.Ping(ctx, dst); err != nil {
				t.Fatalf("ping %d: %v", i, err)
			}
		}
		if err := tcpEcho(ctx, client.NS, server.NS, dst, 7000, 256<<10); err != nil {
			t.Fatalf("tcp through the appliance: %v", err)
		}
		if err := udpEcho(ctx, client.NS, server.NS, dst, 7001, 10); err != nil {
			t.Fatalf("udp through the appliance: %v", err)
		}

		after := a.packets(t)
		kernelAfter, err := l.Appliance.Snmp()
		if err != nil {
			t.Fatal(err)
		}
		if got := forwarded(after) - forwarded(before); got < 2*pings {
			t.Errorf("natwall forwarded %.0f packets, want at least %d (echo requests and replies)", got, 2*pings)
		}
		key := "Ip.ForwDatagrams"
		if fam.name == "ipv6" {
			key = "Ip6OutForwDatagrams"
		}
		if d := kernelAfter[key] - kernelBefore[key]; d != 0 {
			t.Errorf("the appliance kernel forwarded %d datagrams (%s): natwall should have forwarded them all", d, key)
		}
	})
}

// traceroute through the appliance: the appliance's kernel answers the
// expiring probes with time exceeded, and the server answers the rest.
func TestTracerouteThroughAppliance(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) { testTraceroute(t, m.config) })
	}
}

func testTraceroute(t *testing.T, config string) {
	forEachTopologyWith(t, config, func(t *testing.T, l *lab.Lab, a *appliance, fam family) {
		ctx := testContext(t)
		client, server := l.Clients[0], l.Servers[0]
		dst := fam.client(server)
		warmUp(t, client.NS, dst)
		args := []string{"-n", "-q", "1", "-w", "2", "-m", "4", dst.String()}
		if fam.name == "ipv6" {
			args = append([]string{"-6"}, args...)
		}
		out, err := client.NS.Run(ctx, "traceroute", args...)
		if err != nil {
			t.Fatalf("traceroute: %v", err)
		}
		hops := tracerouteHops(string(out))
		gateway := lab.ApplianceInsideV4
		if fam.name == "ipv6" {
			gateway = lab.ApplianceInsideV6
		}
		if len(hops) != 2 || hops[0] != gateway.String() || hops[1] != dst.String() {
			t.Fatalf("traceroute hops %v, want [%s %s]:\n%s", hops, gateway, dst, out)
		}
		if p := a.packets(t); p["pass_ttl_expired"] == 0 {
			t.Errorf("no packet was handed to the kernel as pass_ttl_expired: %v", p)
		}
	})
}

var hopLine = regexp.MustCompile(`^\s*\d+\s+(\S+)`)

func tracerouteHops(out string) []string {
	var hops []string
	for _, line := range strings.Split(out, "\n")[1:] {
		if m := hopLine.FindStringSubmatch(line); m != nil {
			hops = append(hops, m[1])
		}
	}
	return hops
}

// A packet too big for the route to the server is handed to the kernel,
// which sends fragmentation needed / packet too big, so path MTU discovery
// works: a bulk TCP transfer completes over the smaller MTU.
func TestPathMTUDiscovery(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) { testPathMTU(t, m.config) })
	}
}

func testPathMTU(t *testing.T, config string) {
	forEachTopologyWith(t, config, func(t *testing.T, l *lab.Lab, a *appliance, fam family) {
		ctx := testContext(t)
		client, server := l.Clients[0], l.Servers[0]
		dst := fam.client(server)
		out := l.ApplianceNICs[len(l.ApplianceNICs)-1]
		mtu, prefix, icmpKey := "1200", "/32", "Icmp.OutDestUnreachs"
		if fam.name == "ipv6" {
			mtu, prefix, icmpKey = "1280", "/128", "Icmp6OutPktTooBigs"
		}
		if _, err := l.Appliance.IP(ctx, "route", "replace", dst.String()+prefix, "dev", out, "mtu", "lock", mtu); err != nil {
			t.Fatal(err)
		}
		defer l.Appliance.IP(ctx, "route", "del", dst.String()+prefix)

		kernelBefore, err := l.Appliance.Snmp()
		if err != nil {
			t.Fatal(err)
		}
		before := a.packets(t)
		if err := tcpEcho(ctx, client.NS, server.NS, dst, 7100, 512<<10); err != nil {
			t.Fatalf("bulk transfer over a %s-byte path MTU: %v", mtu, err)
		}
		after := a.packets(t)
		kernelAfter, err := l.Appliance.Snmp()
		if err != nil {
			t.Fatal(err)
		}
		if after["pass_frag_needed"] == before["pass_frag_needed"] {
			t.Errorf("no packet was handed to the kernel as pass_frag_needed")
		}
		if kernelAfter[icmpKey] == kernelBefore[icmpKey] {
			t.Errorf("the appliance kernel sent no ICMP (%s)", icmpKey)
		}
		if forwarded(after) == forwarded(before) {
			t.Errorf("nothing was forwarded in XDP after discovery")
		}
	})
}
