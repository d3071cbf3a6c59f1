package controlplane

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// ProcSys is where the kernel exposes sysctls for the calling thread's
// network namespace.
const ProcSys = "/proc/sys"

// Sysctl is one kernel setting natwall needs.
type Sysctl struct {
	// Path is relative to /proc/sys, slash separated, so that interface
	// names with dots (eth0.100) stay unambiguous.
	Path string
	// Value is written when the current value is neither it nor one of Accept.
	Value string
	// Accept lists other values that are just as good and left alone.
	Accept []string
}

// Name is the sysctl(8) spelling: dots between components, and the dots
// inside a component (an interface name) shown as slashes.
func (s Sysctl) Name() string {
	parts := strings.Split(s.Path, "/")
	for i, p := range parts {
		parts[i] = strings.ReplaceAll(p, ".", "/")
	}
	return strings.Join(parts, ".")
}

func (s Sysctl) satisfiedBy(current string) bool {
	return current == s.Value || slices.Contains(s.Accept, current)
}

// SysctlChange is a setting whose value differed from what natwall needs.
type SysctlChange struct {
	Name     string
	Old, New string
}

// ForwardingSysctls lists what a forwarding appliance needs, in the order
// they must be applied, for the given NICs.
func ForwardingSysctls(interfaces []string) []Sysctl {
	var s []Sysctl
	v4conf := func(dev, key, value string, accept ...string) {
		s = append(s, Sysctl{Path: "net/ipv4/conf/" + dev + "/" + key, Value: value, Accept: accept})
	}
	v6conf := func(dev, key, value string, accept ...string) {
		s = append(s, Sysctl{Path: "net/ipv6/conf/" + dev + "/" + key, Value: value, Accept: accept})
	}

	// With IPv6 forwarding on, the kernel ignores router advertisements on
	// a NIC whose accept_ra is 1, so a cloud VM whose IPv6 default route
	// comes from RAs would lose it when the route expires. 2 keeps
	// accepting them while forwarding; 0 means the admin turned RAs off.
	// This must precede forwarding=1.
	for _, dev := range interfaces {
		v6conf(dev, "accept_ra", "2", "0")
	}
	s = append(s, ForwardingSwitches("1")...)

	devs := append([]string{"all", "default"}, interfaces...)
	for _, dev := range devs {
		// Strict reverse-path filtering (1) drops a packet when the route
		// back to its source leaves through another NIC. Cloud routing is
		// asymmetric by design: route tables steer subnets' traffic to the
		// appliance, whose own routes may point elsewhere, and with two
		// NICs the return path is the other NIC. XDP forwards before the
		// filter, but the packets it passes to the kernel (unresolved
		// neighbour, fragmentation needed, TTL expiry) would vanish.
		// Loose mode (2) still drops sources with no route at all; 0 is
		// also fine. The kernel uses the larger of all and the NIC's value,
		// so each needs setting.
		v4conf(dev, "rp_filter", "2", "0")
		// A one-NIC appliance sends traffic back out of the NIC it came
		// in on, exactly when the kernel would send an ICMP redirect
		// telling the client to bypass the appliance (and its firewall).
		// The kernel sends them if all or the NIC says so.
		v4conf(dev, "send_redirects", "0")
		// A router does not let others rewrite its routes.
		v4conf(dev, "accept_redirects", "0")
		v6conf(dev, "accept_redirects", "0")
	}
	return s
}

// ForwardingSwitches are the two settings that make the kernel route
// between NICs, set to value ("1" on, "0" off). The daemon sets them last at
// start, once the dataplane enforces, and clears them first at a detaching
// stop: with them on and no XDP program, the kernel forwards with no policy
// and no NAT.
func ForwardingSwitches(value string) []Sysctl {
	return []Sysctl{
		{Path: "net/ipv4/ip_forward", Value: value},
		{Path: "net/ipv6/conf/all/forwarding", Value: value},
	}
}

// isForwardingSwitch reports whether s is one of ForwardingSwitches.
func isForwardingSwitch(s Sysctl) bool {
	return slices.ContainsFunc(ForwardingSwitches(s.Value), func(f Sysctl) bool { return f.Path == s.Path })
}

// PlanSysctls reads each setting under root (normally ProcSys) and returns
// those that differ from what natwall needs, without writing. IPv6 settings
// are left out when the kernel has IPv6 disabled.
func PlanSysctls(root string, settings []Sysctl) ([]SysctlChange, error) {
	ipv6, err := ipv6Enabled(root)
	if err != nil {
		return nil, err
	}
	var changes []SysctlChange
	for _, s := range settings {
		if !ipv6 && strings.HasPrefix(s.Path, "net/ipv6/") {
			continue
		}
		current, err := readSysctl(root, s.Path)
		if err != nil {
			return nil, fmt.Errorf("read sysctl %s: %w", s.Name(), err)
		}
		if !s.satisfiedBy(current) {
			changes = append(changes, SysctlChange{Name: s.Name(), Old: current, New: s.Value})
		}
	}
	return changes, nil
}

// ApplySysctls writes each setting under root (normally ProcSys) whose
// value differs, in order, logs every change as old -> new and returns
// them. It stops at the first failure; the settings changed before it stay
// changed, and are returned with the error.
func ApplySysctls(root string, settings []Sysctl, log *slog.Logger) ([]SysctlChange, error) {
	ipv6, err := ipv6Enabled(root)
	if err != nil {
		return nil, err
	}
	if !ipv6 {
		log.Warn("ipv6 is disabled in the kernel; skipping ipv6 sysctls")
	}
	var changes []SysctlChange
	for _, s := range settings {
		if !ipv6 && strings.HasPrefix(s.Path, "net/ipv6/") {
			continue
		}
		current, err := readSysctl(root, s.Path)
		if err != nil {
			return changes, fmt.Errorf("read sysctl %s: %w", s.Name(), err)
		}
		if s.satisfiedBy(current) {
			continue
		}
		if err := writeSysctl(root, s.Path, s.Value); err != nil {
			return changes, fmt.Errorf("set sysctl %s=%s: %w", s.Name(), s.Value, err)
		}
		// The kernel may clamp or ignore a value without an error.
		after, err := readSysctl(root, s.Path)
		if err != nil {
			return changes, fmt.Errorf("read back sysctl %s: %w", s.Name(), err)
		}
		if after != s.Value {
			return changes, fmt.Errorf("set sysctl %s=%s: the kernel kept %s", s.Name(), s.Value, after)
		}
		c := SysctlChange{Name: s.Name(), Old: current, New: s.Value}
		changes = append(changes, c)
		log.Info("sysctl changed", "sysctl", c.Name, "old", c.Old, "new", c.New)
	}
	return changes, nil
}

// ipv6Enabled reports whether the kernel has IPv6 (ipv6.disable=1 removes
// the whole net/ipv6 tree); root itself must exist.
func ipv6Enabled(root string) (bool, error) {
	if _, err := os.Stat(filepath.Join(root, "net", "ipv4")); err != nil {
		return false, fmt.Errorf("sysctl root %s: %w", root, err)
	}
	_, err := os.Stat(filepath.Join(root, "net", "ipv6"))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("sysctl root %s: %w", root, err)
	}
}

func readSysctl(root, path string) (string, error) {
	b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(path)))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// writeSysctl writes an existing file only: a missing one means a missing
// interface, which must fail rather than be created under a test root.
func writeSysctl(root, path, value string) error {
	f, err := os.OpenFile(filepath.Join(root, filepath.FromSlash(path)), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value + "\n")
	return errors.Join(err, f.Close())
}
