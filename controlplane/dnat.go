package controlplane

import (
	"errors"
	"net/netip"

	"github.com/natwall/natwall/dataplane"
	"github.com/natwall/natwall/rules"
)

// forwardApplier is the dataplane's inbound NAT forwards.
type forwardApplier interface {
	SetForwards([]dataplane.Forward) error
}

// snatAddresses are what a forward's external: snat stands for.
func snatAddresses(cfg Config) []netip.Addr {
	if cfg.SNAT == nil {
		return nil
	}
	return cfg.SNAT.Addresses
}

// dataplaneForwards are a rule set's forwards for the dataplane, snat
// expanded, each numbered like a rule (under "dnat:" and its id) so the
// number is stable across reloads.
func dataplaneForwards(ds []rules.DNAT, snat []netip.Addr, ids *RuleIDs) ([]dataplane.Forward, error) {
	expanded, err := rules.ExpandDNAT(ds, snat)
	if err != nil {
		return nil, err
	}
	out := make([]dataplane.Forward, 0, len(expanded))
	for _, d := range expanded {
		out = append(out, dataplane.Forward{ID: ids.ID("dnat:" + d.ID), External: d.External, Proto: d.Protocol,
			PortMin: d.Ports.Lo, PortMax: d.Ports.Hi, To: d.To, ToPort: d.ToPort})
	}
	return out, nil
}

// errNoForwards: the rule files forward ports and the dataplane cannot.
var errNoForwards = errors.New("the rule files have dnat forwards, which this dataplane cannot load")

// liveForwards list the forwards with the rules, stage "dnat": their hits
// are the flows each opened.
func liveForwards(ds []rules.DNAT, ids *RuleIDs) []LiveRule {
	out := make([]LiveRule, 0, len(ds))
	for _, d := range ds {
		out = append(out, LiveRule{ID: d.ID, Number: ids.ID("dnat:" + d.ID), Stage: "dnat", Priority: 0, Action: "forward", At: d.Pos.String()})
	}
	return out
}
