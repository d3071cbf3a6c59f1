package controlplane

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/coreos/go-iptables/iptables"
)

// The appliance kernel's own ICMP errors never pass XDP, so natwall cannot
// translate them. One about a translated reply it was handed (an inside
// host whose neighbour does not answer: host unreachable) quotes the
// packet as translated, with the inside address as its destination, and
// would carry that address to the outside. The guard drops, in the OUTPUT
// chain, every locally generated ICMP error that quotes an inside address
// and is not addressed to an inside host. IPv6 is never translated and
// needs none.
const (
	icmpGuardTable = "filter"
	icmpGuardChain = "NATWALL-ICMP-GUARD"
)

// icmpGuardJump sends the host's own ICMP to the guard chain.
var icmpGuardJump = []string{"-p", "icmp", "-j", icmpGuardChain}

// icmpGuardRules is the guard chain's content for the inside networks:
// errors to inside hosts return (they may quote what they like); errors
// (unreachable, source quench, redirect, time exceeded, parameter problem)
// whose quoted source or destination is inside are dropped.
func icmpGuardRules(inside []netip.Prefix) [][]string {
	var out [][]string
	var v4 []netip.Prefix
	for _, p := range inside {
		if p.Addr().Is4() {
			v4 = append(v4, p.Masked())
		}
	}
	for _, p := range v4 {
		out = append(out, []string{"-d", p.String(), "-j", "RETURN"})
	}
	// u32: the ICMP type is the first byte after the IP header
	// (0>>22&0x3C is its length); the quoted header starts 8 bytes later,
	// its source at +12 and destination at +16.
	const isError = "0>>22&0x3C@0>>24=3:5,11:12"
	for _, p := range v4 {
		mask := uint32(0)
		if p.Bits() > 0 {
			mask = ^uint32(0) << (32 - p.Bits())
		}
		a := p.Addr().As4()
		val := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
		for _, field := range []struct {
			off  int
			name string
		}{{20, "source"}, {24, "destination"}} {
			expr := fmt.Sprintf("%s&&0>>22&0x3C@%d&0x%08x=0x%08x", isError, field.off, mask, val)
			out = append(out, []string{"!", "-f", "-m", "u32", "--u32", expr,
				"-m", "comment", "--comment", "natwall: own ICMP error quoting an inside " + field.name, "-j", "DROP"})
		}
	}
	return out
}

// icmpGuard is the installed guard.
type icmpGuard struct {
	ipt *iptables.IPTables
	log *slog.Logger
}

// installICMPGuard installs the guard for the inside networks, replacing
// any a natwall that did not stop cleanly left behind.
func installICMPGuard(inside []netip.Prefix, log *slog.Logger) (*icmpGuard, error) {
	ipt, err := iptables.NewWithProtocol(iptables.ProtocolIPv4)
	if err != nil {
		return nil, fmt.Errorf("iptables: %w", err)
	}
	g := &icmpGuard{ipt: ipt, log: log}
	exists, err := ipt.ChainExists(icmpGuardTable, icmpGuardChain)
	if err != nil {
		return nil, fmt.Errorf("look for chain %s: %w", icmpGuardChain, err)
	}
	if exists {
		err = ipt.ClearChain(icmpGuardTable, icmpGuardChain)
	} else {
		err = ipt.NewChain(icmpGuardTable, icmpGuardChain)
	}
	if err != nil {
		return nil, fmt.Errorf("create chain %s: %w", icmpGuardChain, err)
	}
	for _, r := range icmpGuardRules(inside) {
		if err := ipt.Append(icmpGuardTable, icmpGuardChain, r...); err != nil {
			return nil, errors.Join(fmt.Errorf("add rule %q to %s: %w", r, icmpGuardChain, err), g.Close())
		}
	}
	ok, err := ipt.Exists(icmpGuardTable, "OUTPUT", icmpGuardJump...)
	if err == nil && !ok {
		err = ipt.Insert(icmpGuardTable, "OUTPUT", 1, icmpGuardJump...)
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("jump from OUTPUT to %s: %w", icmpGuardChain, err), g.Close())
	}
	log.Info("guard installed: the host's own ICMP errors quoting an inside address are dropped",
		"table", icmpGuardTable, "chain", icmpGuardChain)
	return g, nil
}

// Close removes the guard: the jump, then the chain.
func (g *icmpGuard) Close() error {
	err := g.ipt.DeleteIfExists(icmpGuardTable, "OUTPUT", icmpGuardJump...)
	if exists, cerr := g.ipt.ChainExists(icmpGuardTable, icmpGuardChain); cerr != nil {
		err = errors.Join(err, cerr)
	} else if exists {
		err = errors.Join(err, g.ipt.ClearAndDeleteChain(icmpGuardTable, icmpGuardChain))
	}
	if err != nil {
		return fmt.Errorf("remove ICMP guard: %w", err)
	}
	g.log.Info("guard removed", "chain", icmpGuardChain)
	return nil
}
