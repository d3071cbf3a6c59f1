package bench

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
)

// config is one configuration of the device under test
// (../shared/research/performance.md §4.2).
type config struct {
	ID, Name string
	// PerRuleCount is true for configurations measured at every N.
	PerRuleCount bool
	// Natwall is true for natwall's own configurations.
	Natwall bool
	// setup configures the device under test for n rules and returns how
	// long loading the rules took (zero where there are none).
	setup func(b *bench, n int) (time.Duration, error)
	// Cases, if set, are the only traffic cases the configuration sees,
	// at the smallest rule count.
	Cases []trafficCase
	// unsupported, if set, says why this kernel cannot run the
	// configuration, or returns nil.
	unsupported func(b *bench) error
}

var configs = []config{
	{ID: "B0", Name: "XDP drop at the DUT (ingest ceiling)", setup: func(b *bench, _ int) (time.Duration, error) {
		return 0, b.attachCeiling("nwb_drop")
	}},
	{ID: "B1", Name: "XDP no-op forwarder, devmap redirect", setup: func(b *bench, _ int) (time.Duration, error) {
		return 0, b.attachCeiling("nwb_redirect")
	}},
	{ID: "B2", Name: "Linux forwarding, no netfilter", setup: func(*bench, int) (time.Duration, error) { return 0, nil }},
	{ID: "B3", Name: "Linux + iptables, ESTABLISHED first, MASQUERADE", PerRuleCount: true, setup: func(b *bench, n int) (time.Duration, error) {
		return b.restore("iptables-restore", iptablesRules(n))
	}},
	{ID: "B4", Name: "Linux + nftables linear chain, masquerade", PerRuleCount: true, setup: func(b *bench, n int) (time.Duration, error) {
		return b.restore("nft", nftRules(n, false, false))
	}},
	{ID: "B5", Name: "Linux + nftables concatenated set, masquerade", PerRuleCount: true, setup: func(b *bench, n int) (time.Duration, error) {
		return b.restore("nft", nftRules(n, true, false))
	}},
	{ID: "B6", Name: "Linux + nftables concatenated set + flowtable, masquerade", PerRuleCount: true, setup: func(b *bench, n int) (time.Duration, error) {
		return b.restore("nft", nftRules(n, true, true))
	}, unsupported: func(b *bench) error {
		// Kernels built without CONFIG_NF_FLOW_TABLE refuse the flowtable.
		_, err := b.restore("nft", nftRules(1, true, true))
		return errors.Join(err, b.teardown())
	}},
	{ID: "B7", Name: "Linux + iptables with an ipset hash:net,port, MASQUERADE", PerRuleCount: true, setup: func(b *bench, n int) (time.Duration, error) {
		b.ipset = true
		set, err := b.restore("ipset", ipsetRules(n))
		if err != nil {
			return 0, err
		}
		rules, err := b.restore("iptables-restore", iptablesIpsetRules())
		return set + rules, err
	}},
	{ID: "O1", Name: "natwall stateless rules", PerRuleCount: true, Natwall: true, setup: func(b *bench, n int) (time.Duration, error) {
		return b.runNatwall(daemonConfig{rules: natwallRules(n, "stateless")}, n)
	}},
	{ID: "O2", Name: "natwall stateful rules", PerRuleCount: true, Natwall: true, setup: func(b *bench, n int) (time.Duration, error) {
		return b.runNatwall(daemonConfig{rules: natwallRules(n, "stateful")}, n)
	}},
	{ID: "O3", Name: "natwall stateful rules + SNAT", PerRuleCount: true, Natwall: true, setup: func(b *bench, n int) (time.Duration, error) {
		return b.runNatwall(daemonConfig{rules: natwallRules(n, "stateful"), snat: true}, n)
	}},
	{ID: "O3X", Name: fmt.Sprintf("natwall stateful rules + SNAT, %d ports on its one address (port exhaustion)", exhaustionPorts),
		Natwall: true, Cases: []trafficCase{caseExhausted}, setup: func(b *bench, n int) (time.Duration, error) {
			return b.runNatwall(daemonConfig{rules: natwallRules(n, "stateful"), snat: true,
				snatPorts: fmt.Sprintf("1024-%d", 1024+exhaustionPorts-1)}, n)
		}},
}

// Every rule set has the same n rules, in the bpf-iptables shape: rule i
// allows UDP from the inside network to the sink's network on port
// ruleBasePort+i. The default action lets traffic through, so that packets
// that match no rule reach the sink and their cost can be measured: the
// work per packet is the same as for a default deny.

func iptablesRules(n int) string {
	var rules strings.Builder
	for i := range n {
		fmt.Fprintf(&rules, "-A FORWARD -s %s -d %s -p udp -m udp --dport %d -j ACCEPT\n", insideNetwork, sinkDestinations, ruleBasePort+i)
	}
	return iptablesWith(rules.String())
}

// iptablesWith is the NAT instance's iptables-restore input around the
// given FORWARD rules.
func iptablesWith(forward string) string {
	var b strings.Builder
	b.WriteString("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n")
	b.WriteString("-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n")
	b.WriteString(forward)
	b.WriteString("COMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n")
	fmt.Fprintf(&b, "-A POSTROUTING -o %s -j MASQUERADE\nCOMMIT\n", dutOutIf)
	return b.String()
}

const ipsetName = "nwb-allowed"

// ipsetRules is the ipset restore input for n rules: each (destination
// network, UDP port) pair is one member.
func ipsetRules(n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "create %s hash:net,port family inet hashsize 4096 maxelem %d\n", ipsetName, max(n, 65536))
	for i := range n {
		fmt.Fprintf(&b, "add %s %s,udp:%d\n", ipsetName, sinkDestinations, ruleBasePort+i)
	}
	return b.String()
}

func iptablesIpsetRules() string {
	return iptablesWith(fmt.Sprintf("-A FORWARD -s %s -m set --match-set %s dst,dst -j ACCEPT\n", insideNetwork, ipsetName))
}

// nftRules is the nftables ruleset for n rules: a linear chain, or one
// concatenated interval set (pipapo), optionally with a flowtable that
// takes established flows off the forward path.
func nftRules(n int, set, flowtable bool) string {
	var b strings.Builder
	b.WriteString("table ip nwbench {\n")
	if flowtable {
		fmt.Fprintf(&b, "  flowtable ft {\n    hook ingress priority filter\n    devices = { %s, %s }\n  }\n", dutInIf, dutOutIf)
	}
	if set {
		b.WriteString("  set allowed {\n    type ipv4_addr . ipv4_addr . inet_service\n    flags interval\n    elements = {\n")
		for i := range n {
			fmt.Fprintf(&b, "      %s . %s . %d,\n", insideNetwork, sinkDestinations, ruleBasePort+i)
		}
		b.WriteString("    }\n  }\n")
	}
	b.WriteString("  chain forward {\n    type filter hook forward priority filter; policy accept;\n")
	if flowtable {
		b.WriteString("    ct state established meta l4proto { tcp, udp } flow add @ft\n")
	}
	b.WriteString("    ct state established,related accept\n")
	if set {
		b.WriteString("    ip saddr . ip daddr . udp dport @allowed accept\n")
	} else {
		for i := range n {
			fmt.Fprintf(&b, "    ip saddr %s ip daddr %s udp dport %d accept\n", insideNetwork, sinkDestinations, ruleBasePort+i)
		}
	}
	fmt.Fprintf(&b, "  }\n  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n    oifname %q masquerade\n  }\n}\n", dutOutIf)
	return b.String()
}

// natwallRules is the rule file for n rules in stage ("stateless" or
// "stateful"). The stateful default is allow; the stateless one is pass.
func natwallRules(n int, stage string) string {
	var b strings.Builder
	action := "pass"
	if stage == "stateful" {
		action = "allow"
		b.WriteString("stateful:\n  default_action: allow\n  rules:\n")
	} else {
		b.WriteString("stateless:\n")
	}
	for i := range n {
		fmt.Fprintf(&b, "  - {id: r%d, priority: %d, action: %s, protocol: udp, src: [%s], dst: [%s], dst_ports: [%d]}\n",
			i, i+1, action, insideNetwork, sinkDestinations, ruleBasePort+i)
	}
	if stage == "stateless" {
		b.WriteString("stateful:\n  default_action: allow\n")
	}
	return b.String()
}

// attachCeiling puts one of the bench's own programs on dut0.
func (b *bench) attachCeiling(program string) error {
	constants := map[string]any{"nwb_fwd_src": [6]byte(b.topo.dutOutMAC), "nwb_fwd_dst": [6]byte(b.topo.sinkMAC)}
	egress := 0
	if program == "nwb_redirect" {
		ifc, err := b.topo.dut.Interface(dutOutIf)
		if err != nil {
			return err
		}
		egress = ifc.Index
	}
	c, err := attachCounter(b.topo.dut, dutInIf, program, constants, egress)
	if err != nil {
		return err
	}
	b.ceiling = c
	return nil
}

// restore loads a netfilter rule set with iptables-restore or nft -f, the
// way an operator would, and times it.
func (b *bench) restore(tool, ruleset string) (time.Duration, error) {
	file := filepath.Join(b.scratch, "ruleset")
	if err := os.WriteFile(file, []byte(ruleset), 0o600); err != nil {
		return 0, err
	}
	args := []string{file}
	switch tool {
	case "nft":
		args = []string{"-f", file}
	case "ipset":
		args = []string{"restore", "-file", file}
	}
	start := time.Now()
	if _, err := b.topo.dut.Run(b.ctx, tool, args...); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// exhaustionPorts is O3X's snat.port_range: so few that one inside host
// takes them all within its first packets, after which every new flow
// meets an address with no port left.
const exhaustionPorts = 64

// runNatwall starts `natwall run` on both of the DUT's NICs with the rule
// file, checks that it attached in native mode, and times a reload of its
// n rules through the API: parse, compile and the swap into the kernel's
// tables, as an operator's `natwall reload` does.
func (b *bench) runNatwall(dc daemonConfig, n int) (time.Duration, error) {
	d, err := b.startDaemon(dc)
	if err != nil {
		return 0, fmt.Errorf("start natwall run: %w", err)
	}
	b.daemon = d
	err = b.topo.dut.Do(func() error {
		for _, dev := range []string{dutInIf, dutOutIf} {
			l, err := netlink.LinkByName(dev)
			if err != nil {
				return err
			}
			if x := l.Attrs().Xdp; x == nil || !x.Attached || x.AttachMode != nl.XDP_ATTACHED_DRV {
				return fmt.Errorf("natwall run is not attached to %s in native mode: %+v", dev, x)
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return d.reload(b.ctx, n)
}

// teardown returns the device under test to plain Linux forwarding with
// no state: no XDP program, no netfilter rules, no connections tracked.
func (b *bench) teardown() error {
	var errs []error
	for _, c := range []**counterProgram{&b.ceiling, &b.replyPath} {
		if *c != nil {
			errs = append(errs, (*c).Close())
			*c = nil
		}
	}
	if b.daemon != nil {
		errs = append(errs, b.daemon.stop())
		b.daemon = nil
	}
	if _, err := b.topo.dut.Run(b.ctx, "nft", "flush", "ruleset"); err != nil {
		errs = append(errs, err)
	}
	// A set outlives the rules that used it; it goes once they are gone.
	if b.ipset {
		if _, err := b.topo.dut.Run(b.ctx, "ipset", "destroy", ipsetName); err != nil {
			errs = append(errs, err)
		}
		b.ipset = false
	}
	errs = append(errs, b.topo.dut.Do(func() error {
		err := netlink.ConntrackTableFlush(netlink.ConntrackTable)
		if err != nil && strings.Contains(err.Error(), "no such file") {
			return nil // conntrack was never loaded in this namespace
		}
		return err
	}))
	return errors.Join(errs...)
}
