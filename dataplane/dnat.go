package dataplane

import (
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Forward is an inbound NAT rule (DNAT, port forwarding): flows from
// anywhere to External:PortMin..PortMax go to To:ToPort.., port by port,
// as Azure Load Balancer inbound NAT rules and Azure Firewall DNAT rules do.
type Forward struct {
	// ID is the forward's stable number, 1 to MaxRuleID: its flows count
	// as hits under it, as a stateful rule's do.
	ID uint32
	// External is an IPv4 address of the appliance.
	External netip.Addr
	// Proto is unix.IPPROTO_TCP or unix.IPPROTO_UDP.
	Proto uint8
	// PortMin..PortMax is the external port range; PortMin maps to ToPort,
	// PortMin+1 to ToPort+1 and so on.
	PortMin, PortMax uint16
	// To is the target, an inside IPv4 address.
	To     netip.Addr
	ToPort uint16
}

// MaxForwardPorts bounds the external endpoints all forwards together name.
const MaxForwardPorts = 1 << 16

func (f Forward) entries() (map[natwallNwDnat4Key]natwallNwDnat4Target, error) {
	if f.ID == 0 || int(f.ID) > MaxRuleID {
		return nil, fmt.Errorf("forward number %d: want 1 to %d", f.ID, MaxRuleID)
	}
	if !f.External.Is4() || !f.To.Is4() {
		return nil, fmt.Errorf("forward %d: %s -> %s: IPv4 only", f.ID, f.External, f.To)
	}
	if f.Proto != unix.IPPROTO_TCP && f.Proto != unix.IPPROTO_UDP {
		return nil, fmt.Errorf("forward %d: protocol %d: tcp or udp only", f.ID, f.Proto)
	}
	if f.PortMin == 0 || f.PortMax < f.PortMin || f.ToPort == 0 || int(f.ToPort)+int(f.PortMax-f.PortMin) > 65535 {
		return nil, fmt.Errorf("forward %d: ports %d-%d -> %d: empty, zero or past 65535", f.ID, f.PortMin, f.PortMax, f.ToPort)
	}
	out := make(map[natwallNwDnat4Key]natwallNwDnat4Target, int(f.PortMax-f.PortMin)+1)
	for p := int(f.PortMin); p <= int(f.PortMax); p++ {
		k := natwallNwDnat4Key{Addr: beUint32(f.External.As4()), Port: beUint16(uint16(p)), Proto: f.Proto}
		out[k] = natwallNwDnat4Target{Addr: beUint32(f.To.As4()), Port: beUint16(f.ToPort + uint16(p-int(f.PortMin))), ForwardId: f.ID}
	}
	return out, nil
}

// beUint16 is the uint16 whose in-memory bytes are v in network order.
func beUint16(v uint16) uint16 { return v>>8 | v<<8 }

// SetForwards makes the dataplane's forwards exactly fs. Entries are
// written one by one, new and changed ones first, then stale ones deleted:
// an external endpoint in both the old and the new set is never missing,
// and a flow a forward already opened keeps its target until it ends.
func (d *Dataplane) SetForwards(fs []Forward) error {
	return setForwards(&d.objs, fs)
}

func setForwards(objs *natwallObjects, fs []Forward) error {
	want := map[natwallNwDnat4Key]natwallNwDnat4Target{}
	var errs []error
	for _, f := range fs {
		es, err := f.entries()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for k, v := range es {
			if _, dup := want[k]; dup {
				errs = append(errs, fmt.Errorf("forward %d: %s port %d is forwarded twice", f.ID, f.External, beUint16(k.Port)))
			}
			want[k] = v
		}
	}
	if len(want) > MaxForwardPorts {
		errs = append(errs, fmt.Errorf("forwards name %d external ports, at most %d", len(want), MaxForwardPorts))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for k, v := range want {
		if err := objs.NwDnat4.Put(k, v); err != nil {
			return fmt.Errorf("write forward %d: %w", v.ForwardId, err)
		}
	}
	return deleteWhere(objs.NwDnat4, func(k natwallNwDnat4Key, _ natwallNwDnat4Target) bool {
		_, keep := want[k]
		return !keep
	})
}
