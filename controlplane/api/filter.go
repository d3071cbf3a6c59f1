package api

import (
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
)

// FlowFilter selects flows and flow events; zero fields match everything.
type FlowFilter struct {
	// Addr matches either endpoint of either direction.
	Addr netip.Prefix
	// Port matches either endpoint's port of either direction.
	Port  uint16
	Proto uint8
	// Types, for flow events only: flow_start, flow_end, alert.
	Types []string
}

// EventTypes are the flow event types, as FlowEvent.Type names them.
var EventTypes = []string{"flow_start", "flow_end", "alert"}

// IsZero reports a filter that matches everything.
func (f FlowFilter) IsZero() bool {
	return !f.Addr.IsValid() && f.Port == 0 && f.Proto == 0 && len(f.Types) == 0
}

// Query is f as URL query parameters.
func (f FlowFilter) Query() url.Values {
	q := url.Values{}
	if f.Addr.IsValid() {
		q.Set("addr", f.Addr.String())
	}
	if f.Port != 0 {
		q.Set("port", strconv.Itoa(int(f.Port)))
	}
	if f.Proto != 0 {
		q.Set("proto", strconv.Itoa(int(f.Proto)))
	}
	for _, t := range f.Types {
		q.Add("type", t)
	}
	return q
}

// ParseFlowFilter reads a filter from its parts as a person types them:
// addr is a CIDR or an address, proto a name or number; empty parts match
// everything.
func ParseFlowFilter(addr, port, proto string, types []string) (FlowFilter, error) {
	var f FlowFilter
	if addr != "" {
		p, err := netip.ParsePrefix(addr)
		if err != nil {
			a, aerr := netip.ParseAddr(addr)
			if aerr != nil {
				return f, fmt.Errorf("addr %q is not a CIDR or an address", addr)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		f.Addr = p.Masked()
	}
	if port != "" {
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			return f, fmt.Errorf("port %q is not a port number from 1 to 65535", port)
		}
		f.Port = uint16(n)
	}
	if proto != "" {
		n, err := ParseProtocol(proto)
		if err != nil {
			return f, fmt.Errorf("proto %w", err)
		}
		f.Proto = n
	}
	for _, t := range types {
		if !slices.Contains(EventTypes, t) {
			return f, fmt.Errorf("type %q is not one of flow_start, flow_end, alert", t)
		}
		if !slices.Contains(f.Types, t) {
			f.Types = append(f.Types, t)
		}
	}
	return f, nil
}

// filterFromQuery is ParseFlowFilter over URL query parameters; extra
// names the parameters the path takes besides the filter's.
func filterFromQuery(q url.Values, extra ...string) (FlowFilter, error) {
	for k, v := range q {
		if k != "addr" && k != "port" && k != "proto" && k != "type" && !slices.Contains(extra, k) {
			return FlowFilter{}, fmt.Errorf("unknown parameter %q", k)
		}
		if k != "type" && len(v) > 1 {
			return FlowFilter{}, fmt.Errorf("parameter %q given %d times", k, len(v))
		}
	}
	return ParseFlowFilter(q.Get("addr"), q.Get("port"), q.Get("proto"), q["type"])
}
