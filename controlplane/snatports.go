package controlplane

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/natwall/natwall/dataplane"
)

// localPortRange is where the kernel reads the ephemeral ports it gives the
// appliance's own connections.
const localPortRange = "net/ipv4/ip_local_port_range"

// excludeLocalPorts returns snat with the kernel's ephemeral port range
// (net.ipv4.ip_local_port_range) taken out of its external ports. Left in,
// an inside flow could be mapped to the external address and port of a
// connection the appliance itself made, and receive that connection's
// replies. The dataplane allocates from one contiguous range, so when the
// ephemeral range splits the configured one, the larger side is kept; the
// choice is logged. A range with nothing left is an error.
func excludeLocalPorts(snat *dataplane.SNAT, sysctlRoot string, log *slog.Logger) (*dataplane.SNAT, error) {
	if snat == nil {
		return nil, nil
	}
	raw, err := readSysctl(sysctlRoot, localPortRange)
	if err != nil {
		return nil, fmt.Errorf("read sysctl %s: %w", Sysctl{Path: localPortRange}.Name(), err)
	}
	lo, hi, err := parsePortRange(raw)
	if err != nil {
		return nil, fmt.Errorf("sysctl %s = %q: %w", Sysctl{Path: localPortRange}.Name(), raw, err)
	}
	min, max := snat.PortMin, snat.PortMax
	if hi < min || lo > max {
		return snat, nil
	}
	below := [2]int{int(min), int(lo) - 1}
	above := [2]int{int(hi) + 1, int(max)}
	keep := below
	if above[1]-above[0] > below[1]-below[0] {
		keep = above
	}
	if keep[1] < keep[0] {
		return nil, fmt.Errorf("snat.port_range %d-%d lies inside the kernel's ephemeral ports %d-%d (net.ipv4.ip_local_port_range), which the appliance's own connections use: choose SNAT ports outside them, or move them",
			min, max, lo, hi)
	}
	out := *snat
	out.PortMin, out.PortMax = uint16(keep[0]), uint16(keep[1])
	log.Warn("SNAT leaves out the kernel's ephemeral ports, which the appliance's own connections use; shrink net.ipv4.ip_local_port_range to give SNAT more",
		"snat_port_range", fmt.Sprintf("%d-%d", min, max), "ip_local_port_range", fmt.Sprintf("%d-%d", lo, hi),
		"snat_ports", fmt.Sprintf("%d-%d", out.PortMin, out.PortMax))
	return &out, nil
}

// parsePortRange reads ip_local_port_range's "lo<whitespace>hi".
func parsePortRange(s string) (lo, hi uint16, err error) {
	fields := strings.Fields(s)
	if len(fields) != 2 {
		return 0, 0, fmt.Errorf("want two ports")
	}
	var ports [2]uint16
	for i, f := range fields {
		n, err := strconv.ParseUint(f, 10, 16)
		if err != nil || n == 0 {
			return 0, 0, fmt.Errorf("%q is not a port from 1 to 65535", f)
		}
		ports[i] = uint16(n)
	}
	if ports[0] > ports[1] {
		return 0, 0, fmt.Errorf("low port %d above high port %d", ports[0], ports[1])
	}
	return ports[0], ports[1], nil
}
