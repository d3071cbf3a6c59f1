package test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"go.yaml.in/yaml/v3"
	"golang.org/x/sys/unix"

	"github.com/natwall/natwall/rules"
	"github.com/natwall/natwall/rules/rulestest"
	"github.com/natwall/natwall/test/lab"
	"github.com/natwall/natwall/test/reference"
)

var differentialSeed = flag.Uint64("differential.seed", 1, "seed of the first random rule set of TestRulesMatchIptables")

// fixtureDir holds the differential cases that once failed: every run
// replays them first.
const fixtureDir = "testdata/differential"

// outcome is what became of a packet at the appliance, as seen on the wire.
type outcome string

const (
	delivered outcome = "delivered" // sent on towards its destination
	dropped   outcome = "dropped"   // nothing came of it
	rejected  outcome = "rejected"  // a TCP RST or ICMP unreachable came back
)

// probe is one packet of a differential case, as a fixture records it.
type probe struct {
	Src      netip.Addr `yaml:"src"`
	Dst      netip.Addr `yaml:"dst"`
	Protocol uint8      `yaml:"protocol"`
	SrcPort  uint16     `yaml:"sport,omitempty"`
	DstPort  uint16     `yaml:"dport,omitempty"`
	ICMPType uint8      `yaml:"icmp_type,omitempty"`
	ICMPCode uint8      `yaml:"icmp_code,omitempty"`
	// MidFlow makes a TCP probe an ACK of no known flow instead of a SYN.
	MidFlow bool    `yaml:"mid_flow,omitempty"`
	Want    outcome `yaml:"want"`
	// What each implementation did, when the case was recorded.
	Natwall  outcome `yaml:"natwall,omitempty"`
	Iptables outcome `yaml:"iptables,omitempty"`
}

func (p probe) packet() rules.Packet {
	pkt := rules.Packet{Src: p.Src, Dst: p.Dst, Protocol: p.Protocol}
	switch p.Protocol {
	case 6, 17:
		pkt.HasPorts, pkt.SrcPort, pkt.DstPort = true, p.SrcPort, p.DstPort
	case 1, 58:
		pkt.IsICMP, pkt.ICMPType, pkt.ICMPCode = true, p.ICMPType, p.ICMPCode
	}
	return pkt
}

// modelOutcome is what the rule model, taken rule by rule, does with p:
// the stateless stage, then for a packet that opens a flow the stateful
// stage.
func modelOutcome(rs *rules.RuleSet, p probe) outcome {
	if i, _ := rules.FirstMatch(rs.Stateless, p.packet()); i >= 0 && rs.Stateless[i].Action == rules.Drop {
		return dropped
	}
	if p.MidFlow {
		return dropped
	}
	act := rs.StatefulDefault
	if i, _ := rules.FirstMatch(rs.Stateful, p.packet()); i >= 0 {
		act = rs.Stateful[i].Action
	}
	switch act {
	case rules.Allow:
		return delivered
	case rules.Reject:
		return rejected
	}
	return dropped
}

// fixture is a differential case in a file.
type fixture struct {
	Seed    uint64  `yaml:"seed,omitempty"`
	Rules   string  `yaml:"rules"` // a rule file
	Packets []probe `yaml:"packets"`
}

// diffCase is a rule set and its probes, tagged for the wire.
type diffCase struct {
	name   string
	fx     fixture
	rs     *rules.RuleSet
	tags   []int
	random bool // written to fixtureDir if it fails
}

func newDiffCase(name string, fx fixture, random bool) (*diffCase, error) {
	rs, err := rules.Parse([]rules.Source{{Name: name, Data: []byte(fx.Rules)}}, rules.Options{})
	if err != nil {
		return nil, err
	}
	return &diffCase{name: name, fx: fx, rs: rs, random: random}, nil
}

// randomCase makes a rule set of up to 30 stateless and 40 stateful rules
// and n probes, each opening a flow of its own, or TCP of no flow.
func randomCase(seed uint64, n int) (*diffCase, error) {
	r := rand.New(rand.NewPCG(seed, 0))
	// The stateless stage alone, the stateful stage alone, or both.
	stages := r.IntN(3)
	rs := &rules.RuleSet{StatefulDefault: []rules.Action{rules.Allow, rules.Reject, rules.Deny}[r.IntN(3)]}
	if stages != 1 {
		rs.Stateless = rulestest.RandomRules(r, 1+r.IntN(30), []rules.Action{rules.Drop, rules.Pass})
	}
	if stages != 0 {
		rs.Stateful = rulestest.RandomRules(r, 1+r.IntN(40), []rules.Action{rules.Allow, rules.Deny, rules.Reject})
	} else if rs.StatefulDefault == rules.Deny {
		rs.StatefulDefault = rules.Allow // else the stateless stage's passes and drops look alike
	}
	// A rule for any address pair would decide nearly every packet after
	// it, leaving the rest untested: the default plays that part.
	anyPair := func(ru rules.Rule) bool { return ru.Src == nil && ru.Dst == nil }
	rs.Stateless = slices.DeleteFunc(rs.Stateless, anyPair)
	rs.Stateful = slices.DeleteFunc(rs.Stateful, anyPair)
	for i := range rs.Stateful {
		rs.Stateful[i].ID = fmt.Sprint("f", i) // ids are unique across stages
	}
	fx := fixture{Seed: seed, Rules: ruleFile(rs)}
	// A probe that met an earlier one's flow, either way round, would be
	// decided by that flow and not by the rules.
	type endpoint struct {
		addr netip.Addr
		port uint16
	}
	seen := map[[2]endpoint]bool{}
	all := append(append([]rules.Rule(nil), rs.Stateless...), rs.Stateful...)
	for len(fx.Packets) < n {
		p := rulestest.RandomPacket(r)
		if len(all) > 0 && r.IntN(4) > 0 {
			aimAt(r, &p, all[r.IntN(len(all))])
		}
		pr := probe{Src: awayFromConnected(p.Src), Dst: awayFromConnected(p.Dst), Protocol: p.Protocol,
			SrcPort: p.SrcPort, DstPort: p.DstPort, ICMPCode: p.ICMPCode}
		switch pr.Protocol {
		case 1: // only an echo request opens an ICMP flow, in natwall as in conntrack
			pr.ICMPType = 8
		case 58:
			pr.ICMPType = 128
		case 6:
			pr.MidFlow = r.IntN(8) == 0
		}
		a, b := endpoint{pr.Src, pr.SrcPort}, endpoint{pr.Dst, pr.DstPort}
		if seen[[2]endpoint{a, b}] || seen[[2]endpoint{b, a}] {
			continue
		}
		seen[[2]endpoint{a, b}] = true
		fx.Packets = append(fx.Packets, pr)
	}
	c, err := newDiffCase(fmt.Sprintf("seed %d", seed), fx, true)
	if err != nil {
		return nil, fmt.Errorf("seed %d: the rule file written does not load: %w\n%s", seed, err, fx.Rules)
	}
	for i := range c.fx.Packets {
		c.fx.Packets[i].Want = modelOutcome(c.rs, c.fx.Packets[i])
	}
	return c, nil
}

// aimAt moves p into ru's match where it can, so that ru or one of the
// rules before it decides p: random packets alone mostly meet the first
// broad rule, or none.
func aimAt(r *rand.Rand, p *rules.Packet, ru rules.Rule) {
	into := func(a *netip.Addr, ps []netip.Prefix) {
		var fit []netip.Prefix
		for _, pf := range ps {
			if pf.Addr().Is4() == a.Is4() {
				fit = append(fit, pf)
			}
		}
		if len(fit) == 0 {
			return
		}
		// The prefix's bits over a's: a stays in the space the lab routes.
		pf := fit[r.IntN(len(fit))]
		b, pb := a.AsSlice(), pf.Addr().AsSlice()
		for i := 0; i < pf.Bits(); i++ {
			bit := byte(0x80) >> (i % 8)
			b[i/8] = b[i/8]&^bit | pb[i/8]&bit
		}
		*a, _ = netip.AddrFromSlice(b)
	}
	into(&p.Src, ru.Src)
	into(&p.Dst, ru.Dst)
	if ru.Protocol == 6 || ru.Protocol == 17 {
		p.Protocol, p.HasPorts, p.IsICMP = uint8(ru.Protocol), true, false
		for _, f := range []struct {
			port *uint16
			prs  []rules.PortRange
		}{{&p.SrcPort, ru.SrcPorts}, {&p.DstPort, ru.DstPorts}} {
			if len(f.prs) > 0 {
				pr := f.prs[r.IntN(len(f.prs))]
				*f.port = pr.Lo + uint16(r.IntN(int(pr.Hi-pr.Lo)+1))
			}
		}
	}
}

// ruleFile writes rs as ops would, so that natwall loads it through its
// front end. Directions are left out: iptables knows no inside networks.
func ruleFile(rs *rules.RuleSet) string {
	var b strings.Builder
	portRange := func(p rules.PortRange) string { return fmt.Sprintf("%d-%d", p.Lo, p.Hi) }
	write := func(indent string, r rules.Rule) {
		fmt.Fprintf(&b, "%s- {id: %s, priority: %d, action: %s", indent, r.ID, r.Priority, r.Action)
		yamlList(&b, "src", r.Src, netip.Prefix.String)
		yamlList(&b, "dst", r.Dst, netip.Prefix.String)
		if r.Protocol >= 0 {
			fmt.Fprintf(&b, ", protocol: %d", r.Protocol)
		}
		yamlList(&b, "src_ports", r.SrcPorts, portRange)
		yamlList(&b, "dst_ports", r.DstPorts, portRange)
		if r.ICMPType >= 0 {
			fmt.Fprintf(&b, ", icmp_type: %d", r.ICMPType)
		}
		if r.ICMPCode >= 0 {
			fmt.Fprintf(&b, ", icmp_code: %d", r.ICMPCode)
		}
		b.WriteString("}\n")
	}
	if len(rs.Stateless) > 0 {
		b.WriteString("stateless:\n")
		for _, r := range rs.Stateless {
			write("  ", r)
		}
	}
	fmt.Fprintf(&b, "stateful:\n  default_action: %s\n", rs.StatefulDefault)
	if len(rs.Stateful) > 0 {
		b.WriteString("  rules:\n")
		for _, r := range rs.Stateful {
			write("    ", r)
		}
	}
	return b.String()
}

// yamlList writes a rule's list, if it has one.
func yamlList[T any](b *strings.Builder, key string, v []T, str func(T) string) {
	if v == nil {
		return
	}
	items := make([]string, len(v))
	for i, x := range v {
		items[i] = str(x)
	}
	fmt.Fprintf(b, ", %s: [%s]", key, strings.Join(items, ", "))
}

// The differential suite. Rule sets of both stages go through natwall (the
// daemon, reading a rule file) and through iptables with conntrack
// (test/reference), each in a lab of its own, and packets that open flows
// through both: each packet must be delivered, dropped or rejected as the
// rule model, taken rule by rule, says. The committed fixtures replay
// first, then random cases from -differential.seed on; a random case that
// fails is written to testdata/differential to be committed.
func TestRulesMatchIptables(t *testing.T) {
	const sets, probesPerSet = 12, 200
	var cases []*diffCase
	files, err := filepath.Glob(filepath.Join(fixtureDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range files {
		var fx fixture
		data, err := os.ReadFile(file)
		if err == nil {
			err = yaml.Unmarshal(data, &fx)
		}
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		c, err := newDiffCase(file, fx, false)
		if err != nil {
			t.Fatalf("%s: its rules do not load: %v", file, err)
		}
		cases = append(cases, c)
	}
	for i := uint64(0); i < sets; i++ {
		c, err := randomCase(*differentialSeed+i, probesPerSet)
		if err != nil {
			t.Fatal(err)
		}
		cases = append(cases, c)
	}
	tag := 0
	for _, c := range cases {
		for range c.fx.Packets {
			tag++
			c.tags = append(c.tags, tag)
		}
	}
	if tag >= 1<<16 {
		t.Fatalf("%d packets: a 16-bit IPv4 identification cannot tell them apart", tag)
	}

	nw, ipt := newDiffLab(t), newDiffLab(t)
	dir := t.TempDir()
	rulesPath := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rulesPath, []byte("stateful:\n  default_action: allow\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The probes' sources are routed out of the outside NIC, as iptables'
	// lab (rp_filter=0) routes them: the reverse path is loose here.
	a := startNatwall(t, nw.Lab, fmt.Sprintf("state_dir: %s\nrules:\n  paths: [%s]\nreverse_path: loose\n", filepath.Join(dir, "state"), rulesPath))
	for _, c := range cases {
		// iptables is slow to load a rule set, so both labs work at once.
		done := make(chan error, 1)
		go func() {
			err := ipt.Appliance.Do(func() error { return reference.Install(c.rs) })
			if err == nil {
				err = ipt.send(c)
			}
			done <- err
		}()
		err := reloadRules(t, a, rulesPath, c.fx.Rules)
		if err == nil {
			err = nw.send(c)
		}
		if err := errors.Join(err, <-done); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
	}
	nwSaw, err := nw.outcomes()
	if err != nil {
		t.Fatal(err)
	}
	iptSaw, err := ipt.outcomes()
	if err != nil {
		t.Fatal(err)
	}

	total := map[outcome]int{}
	for _, c := range cases {
		var failed []probe
		for i, p := range c.fx.Packets {
			p.Natwall, p.Iptables = nwSaw.of(c.tags[i]), iptSaw.of(c.tags[i])
			total[p.Want]++
			if model := modelOutcome(c.rs, p); p.Natwall != p.Want || p.Iptables != p.Want || model != p.Want {
				if !c.random {
					t.Errorf("%s: %+v: the rule model says %s", c.name, p, model)
				}
				failed = append(failed, p)
			}
		}
		if len(failed) == 0 || !c.random {
			continue
		}
		fx := c.fx
		fx.Packets = failed
		file, err := writeFixture(fx)
		if err != nil {
			t.Fatal(err)
		}
		t.Errorf("%s: %d of %d packets went otherwise than the rule model says; the case is in %s: find the cause, and commit the file as a regression fixture",
			c.name, len(failed), len(c.fx.Packets), file)
	}
	t.Logf("%d fixtures and seeds %d to %d: packets through natwall and iptables %v",
		len(files), *differentialSeed, *differentialSeed+sets-1, total)
}

func writeFixture(fx fixture) (string, error) {
	var doc yaml.Node
	if err := doc.Encode(fx); err != nil {
		return "", err
	}
	for _, p := range doc.Content[len(doc.Content)-1].Content { // the packets, one a line
		p.Style = yaml.FlowStyle
	}
	buf := bytes.NewBufferString("# Written by TestRulesMatchIptables: natwall or iptables did not do what the\n" +
		"# rule model says (want). Every run replays it; if the model was wrong, fix want.\n")
	enc := yaml.NewEncoder(buf)
	enc.SetIndent(2)
	if err := errors.Join(enc.Encode(&doc), enc.Close()); err != nil {
		return "", err
	}
	file := filepath.Join(fixtureDir, fmt.Sprintf("seed-%d.yaml", fx.Seed))
	if err := os.MkdirAll(fixtureDir, 0o755); err != nil {
		return "", err
	}
	return file, os.WriteFile(file, buf.Bytes(), 0o644)
}

// reloadRules makes natwall apply body as its rule file.
func reloadRules(t *testing.T, a *appliance, file, body string) error {
	t.Helper()
	reloads := func() map[string]float64 {
		out := map[string]float64{}
		for _, m := range a.metrics(t)["natwall_config_reloads_total"].GetMetric() {
			out[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
		return out
	}
	before := reloads()
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		return err
	}
	if err := a.proc.Signal(syscall.SIGHUP); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		now := reloads()
		switch {
		case now["error"] > before["error"]:
			return fmt.Errorf("natwall refused the rule set:\n%s", a.proc.Output())
		case now["ok"] > before["ok"]:
			return nil
		case time.Now().After(deadline):
			return errors.New("natwall did not reload its rules")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// diffLab is a lab whose appliance routes the random cases' addresses
// (198.18.0.0/15 and 2001:db8::/46, off its connected subnets) to server 0,
// and captures what the appliance sends each way.
type diffLab struct {
	*lab.Lab
	clientMAC, insideMAC net.HardwareAddr
	// onward and back capture the appliance's frames to the server and to
	// the client.
	onward, back *lab.Capture
}

func newDiffLab(t *testing.T) *diffLab {
	t.Helper()
	l := newLab(t, lab.Options{Shape: lab.TwoNIC})
	ctx := testContext(t)
	server, client := l.Servers[0], l.Clients[0]
	nic := func(ns *lab.NetNS, name string) net.HardwareAddr {
		iface, err := ns.Interface(name)
		if err != nil {
			t.Fatal(err)
		}
		return iface.HardwareAddr
	}
	d := &diffLab{Lab: l, clientMAC: nic(client.NS, client.Interface), insideMAC: nic(l.Appliance, lab.InsideNIC)}
	outsideMAC, serverMAC := nic(l.Appliance, lab.OutsideNIC), nic(server.NS, server.Interface)
	if err := l.EnableApplianceForwarding(); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range [][]string{
		{"sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.in0.rp_filter=0", "net.ipv4.conf.all.send_redirects=0",
			// iptables rejects every packet it should, not one a second.
			"net.ipv4.icmp_ratemask=0", "net.ipv6.icmp.ratemask="},
		{"ip", "route", "add", "198.18.0.0/15", "via", server.IPv4.String()},
		{"ip", "-6", "route", "add", "2001:db8::/46", "via", server.IPv6.String()},
		// Resolved for good, so that nothing waits for a neighbour.
		{"ip", "neigh", "replace", server.IPv4.String(), "lladdr", serverMAC.String(), "dev", lab.OutsideNIC, "nud", "permanent"},
		{"ip", "neigh", "replace", server.IPv6.String(), "lladdr", serverMAC.String(), "dev", lab.OutsideNIC, "nud", "permanent"},
	} {
		if out, err := l.Appliance.Run(ctx, cmd[0], cmd[1:]...); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	var err error
	if d.onward, err = lab.StartCapture(server.Port.NS, server.Port.Name, "ether src "+outsideMAC.String()+" and (ip or ip6)"); err != nil {
		t.Fatal(err)
	}
	if d.back, err = lab.StartCapture(client.Port.NS, client.Port.Name, "ether src "+d.insideMAC.String()+" and (ip or ip6)"); err != nil {
		t.Fatal(err)
	}
	return d
}

// send sends c's probes from the client, and waits until as many frames as
// the fixture wants delivered or rejected have come out, then a little
// longer for any that should not.
func (d *diffLab) send(c *diffCase) error {
	seen := func() int { return len(d.onward.Lines()) + len(d.back.Lines()) }
	want := seen()
	var frames [][]byte
	for i, p := range c.fx.Packets {
		f, err := frameFor(p, c.tags[i], d.clientMAC, d.insideMAC)
		if err != nil {
			return err
		}
		frames = append(frames, f)
		if p.Want != dropped {
			want++
		}
	}
	if err := injectFrames(d.Clients[0].NS, d.Clients[0].Interface, frames); err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Second)
	for seen() < want && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	return nil
}

// sightings are what became of the probes seen on the wire, by tag.
type sightings map[int]outcome

// of is what became of a probe: one never seen was dropped.
func (s sightings) of(tag int) outcome {
	if o, ok := s[tag]; ok {
		return o
	}
	return dropped
}

// outcomes stops the captures and reads what became of the probes.
func (d *diffLab) outcomes() (sightings, error) {
	out := sightings{}
	for _, c := range []*lab.Capture{d.onward, d.back} {
		if _, _, err := c.Stop(); err != nil {
			return nil, err
		}
		for _, f := range c.Frames() {
			if tag, o, ok := observe(f.Data); ok {
				out[tag] = o
			}
		}
	}
	return out, nil
}

// marker ends every probe, to tell it from anything else the appliance
// sends.
const marker = "natwall-differential"

// frameFor builds the Ethernet frame p describes, tagged with tag in the
// IPv4 identification or the IPv6 flow label, and for TCP in the top half
// of the sequence number too, which a RST answering it acknowledges.
func frameFor(p probe, tag int, src, dst net.HardwareAddr) ([]byte, error) {
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
	switch p.Protocol {
	case 6:
		tcp := &layers.TCP{SrcPort: layers.TCPPort(p.SrcPort), DstPort: layers.TCPPort(p.DstPort), Seq: uint32(tag) << 16,
			SYN: !p.MidFlow, ACK: p.MidFlow, Window: 100}
		tcp.SetNetworkLayerForChecksum(nl)
		l4 = append(l4, tcp)
	case 17:
		udp := &layers.UDP{SrcPort: layers.UDPPort(p.SrcPort), DstPort: layers.UDPPort(p.DstPort)}
		udp.SetNetworkLayerForChecksum(nl)
		l4 = append(l4, udp)
	case 1:
		l4 = append(l4, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(p.ICMPType, p.ICMPCode)})
	case 58:
		icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(p.ICMPType, p.ICMPCode)}
		icmp.SetNetworkLayerForChecksum(nl)
		l4 = append(l4, icmp, &layers.ICMPv6Echo{})
	}
	buf := gopacket.NewSerializeBuffer()
	all := append([]gopacket.SerializableLayer{eth, ip}, append(l4, gopacket.Payload(marker))...)
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, all...); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// observe reads a frame the appliance sent: a probe going on, or an answer
// rejecting one (a TCP RST, an ICMP destination unreachable quoting it),
// and the probe's tag.
func observe(frame []byte) (tag int, o outcome, ok bool) {
	if len(frame) < 14 {
		return 0, "", false
	}
	ethertype := binary.BigEndian.Uint16(frame[12:])
	tag, proto, l4, ok := ipTag(ethertype, frame[14:])
	switch {
	case !ok:
	case (proto == 1 && len(l4) >= 8 && l4[0] == 3) || (proto == 58 && len(l4) >= 8 && l4[0] == 1):
		tag, _, _, ok = ipTag(ethertype, l4[8:])
		return tag, rejected, ok
	case proto == 6 && len(l4) >= 20 && l4[13]&0x04 != 0:
		return int(binary.BigEndian.Uint32(l4[8:]) >> 16), rejected, true
	case bytes.HasSuffix(frame, []byte(marker)):
		return tag, delivered, true
	}
	return 0, "", false
}

// ipTag reads the tag, protocol and payload of an IPv4 or IPv6 packet.
func ipTag(ethertype uint16, ip []byte) (tag int, proto uint8, l4 []byte, ok bool) {
	switch {
	case ethertype == 0x0800 && len(ip) >= 20 && len(ip) >= int(ip[0]&0xf)*4:
		return int(binary.BigEndian.Uint16(ip[4:])), ip[9], ip[int(ip[0]&0xf)*4:], true
	case ethertype == 0x86dd && len(ip) >= 40:
		return int(binary.BigEndian.Uint32(ip) & 0xfffff), ip[6], ip[40:], true
	}
	return 0, 0, nil, false
}

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
