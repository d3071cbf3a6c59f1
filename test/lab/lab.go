package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Shape is how the appliance is wired to clients and servers.
type Shape int

const (
	// OneNIC gives the appliance a single NIC carrying both its inside and
	// outside addresses, on one bridge with every client and server: a cloud
	// VM whose one NIC reaches every subnet. Forwarded traffic enters and
	// leaves through the same NIC (XDP_TX).
	OneNIC Shape = iota + 1
	// TwoNIC gives the appliance an inside NIC on the clients' bridge and an
	// outside NIC on the servers' bridge. Forwarded traffic crosses from one
	// NIC to the other (bpf_redirect).
	TwoNIC
)

func (s Shape) String() string {
	switch s {
	case OneNIC:
		return "OneNIC"
	case TwoNIC:
		return "TwoNIC"
	default:
		return fmt.Sprintf("Shape(%d)", int(s))
	}
}

// Options describe the topology New builds.
type Options struct {
	// Shape is required.
	Shape Shape
	// Clients and Servers are how many of each to create; 0 means 1.
	Clients int
	Servers int
	// ServerRoutesToInside gives servers explicit routes to the inside
	// networks via the appliance's outside address. Servers route everything
	// to the appliance by default anyway; without these routes a server knows
	// only its own subnet and that default route, which is all a server behind
	// NAT ever needs, and a test that deletes the default route then cuts the
	// servers off from untranslated inside addresses.
	ServerRoutesToInside bool
	// ApplianceMTU, if not 0, is the MTU of the appliance's NICs and of the
	// bridge ports facing them (1280 to 65535). Clients and servers keep 1500,
	// so frames bigger than ApplianceMTU are dropped on their way to the
	// appliance, as on a real link with mismatched MTUs.
	ApplianceMTU int
}

func (o Options) withDefaults() (Options, error) {
	if o.Shape != OneNIC && o.Shape != TwoNIC {
		return o, fmt.Errorf("options: shape %v: want OneNIC or TwoNIC", o.Shape)
	}
	for _, count := range []struct {
		name string
		n    *int
	}{{"clients", &o.Clients}, {"servers", &o.Servers}} {
		if *count.n == 0 {
			*count.n = 1
		}
		if *count.n < 0 || *count.n > MaxHosts {
			return o, fmt.Errorf("options: %d %s: want 1 to %d", *count.n, count.name, MaxHosts)
		}
	}
	// IPv6 needs 1280; a veth takes at most 65535.
	if o.ApplianceMTU != 0 && (o.ApplianceMTU < 1280 || o.ApplianceMTU > 65535) {
		return o, fmt.Errorf("options: appliance MTU %d: want 1280 to 65535", o.ApplianceMTU)
	}
	return o, nil
}

// Host is a client or a server.
type Host struct {
	NS        *NetNS
	IPv4      netip.Addr
	IPv6      netip.Addr
	Interface string // the host's NIC, HostNIC
	// Port is the fabric end of the host's NIC.
	Port Port
}

// Port is a bridge port in a fabric namespace: the far end of a NIC's veth.
// Capturing on it sees exactly what the NIC sends and receives, from outside
// the NIC's namespace.
type Port struct {
	NS   *NetNS
	Name string
}

// Lab is a built topology. Close tears it down.
type Lab struct {
	// Appliance is where natwall runs.
	Appliance *NetNS
	// ApplianceNICs are the appliance's NIC names, the inside one first:
	// [InsideNIC OutsideNIC] for TwoNIC, [SingleNIC] for OneNIC.
	ApplianceNICs []string
	// AppliancePorts are the fabric ends of ApplianceNICs, in the same order.
	// Each carries an XDP_PASS program, without which frames natwall sends
	// with XDP_TX would not be delivered (see wire.create).
	AppliancePorts []Port
	Clients        []*Host
	Servers        []*Host
	// Fabric holds the namespaces with the bridges: [lan wan] for TwoNIC,
	// [fabric] for OneNIC.
	Fabric []*NetNS

	opts Options
	// namespaces lists everything to delete, in creation order.
	namespaces []*NetNS
	// wires lists the veth pairs, each deleted from its fabric end.
	wires []*wire

	closeMu sync.Mutex
	closed  bool
}

// wire is a veth pair from an endpoint's NIC to a port on a fabric bridge.
type wire struct {
	endpoint *NetNS
	nic      string
	fabric   *NetNS
	port     string
	mtu      int // 0: the kernel's default
	addrs    []netip.Prefix
	// xdpPeer puts an XDP_PASS program on the fabric end, so that frames the
	// endpoint sends with XDP_TX are delivered (see wire.create).
	xdpPeer bool
}

type route struct {
	dst netip.Prefix
	via netip.Addr
}

// Steps of New, named for the failure-injection tests.
const (
	stepNamespaces = "namespaces"
	stepSysctls    = "sysctls"
	stepBridges    = "bridges"
	stepLinks      = "links"
	stepCarrier    = "carrier"
	stepAddresses  = "addresses"
	stepRoutes     = "routes"
	stepReady      = "ready"
)

var buildSteps = []string{stepNamespaces, stepSysctls, stepBridges, stepLinks, stepCarrier, stepAddresses, stepRoutes, stepReady}

// readyTimeout bounds the wait for links to come up and addresses to become
// usable.
const readyTimeout = 10 * time.Second

// New builds the topology opts describe and returns once every address is
// usable. If it fails, it removes whatever it had built.
func New(opts Options) (*Lab, error) {
	return build(opts, nil)
}

// build is New with a hook called after each step, through which tests make a
// step fail.
func build(opts Options, afterStep func(step string) error) (_ *Lab, err error) {
	opts, err = opts.withDefaults()
	if err != nil {
		return nil, err
	}
	l := &Lab{opts: opts}
	defer closeOnError(l, &err)

	steps := []struct {
		name string
		run  func() error
	}{
		{stepNamespaces, l.createNamespaces},
		{stepSysctls, l.configureSysctls},
		{stepBridges, l.createBridges},
		{stepLinks, l.createLinks},
		{stepCarrier, l.waitCarrier},
		{stepAddresses, l.addAddresses},
		{stepRoutes, l.addRoutes},
		{stepReady, l.waitAddressesUsable},
	}
	for _, step := range steps {
		if err := step.run(); err != nil {
			return nil, fmt.Errorf("build %v lab: %s: %w", opts.Shape, step.name, err)
		}
		if afterStep != nil {
			if err := afterStep(step.name); err != nil {
				return nil, fmt.Errorf("build %v lab: after %s: %w", opts.Shape, step.name, err)
			}
		}
	}
	return l, nil
}

func closeOnError(c interface{ Close() error }, err *error) {
	if *err != nil {
		if closeErr := c.Close(); closeErr != nil {
			*err = errors.Join(*err, fmt.Errorf("clean up: %w", closeErr))
		}
	}
}

func (l *Lab) newNetNS(role string) (*NetNS, error) {
	ns, err := NewNetNS(role)
	if err != nil {
		return nil, err
	}
	l.namespaces = append(l.namespaces, ns)
	return ns, nil
}

func (l *Lab) createNamespaces() error {
	var err error
	switch l.opts.Shape {
	case TwoNIC:
		lan, err := l.newNetNS("lan")
		if err != nil {
			return err
		}
		wan, err := l.newNetNS("wan")
		if err != nil {
			return err
		}
		l.Fabric = []*NetNS{lan, wan}
		l.ApplianceNICs = []string{InsideNIC, OutsideNIC}
	case OneNIC:
		fabric, err := l.newNetNS("fabric")
		if err != nil {
			return err
		}
		l.Fabric = []*NetNS{fabric}
		l.ApplianceNICs = []string{SingleNIC}
	}
	insideFabric, outsideFabric := l.Fabric[0], l.Fabric[len(l.Fabric)-1]

	if l.Appliance, err = l.newNetNS("appliance"); err != nil {
		return err
	}
	if l.Clients, err = l.newHosts("client", l.opts.Clients, ClientAddrs, insideFabric, "c"); err != nil {
		return err
	}
	if l.Servers, err = l.newHosts("server", l.opts.Servers, ServerAddrs, outsideFabric, "s"); err != nil {
		return err
	}

	inside := []netip.Prefix{
		netip.PrefixFrom(ApplianceInsideV4, InsideSubnetV4.Bits()),
		netip.PrefixFrom(ApplianceInsideV6, InsideSubnetV6.Bits()),
	}
	outside := []netip.Prefix{
		netip.PrefixFrom(ApplianceOutsideV4, OutsideSubnetV4.Bits()),
		netip.PrefixFrom(ApplianceOutsideV6, OutsideSubnetV6.Bits()),
	}
	switch l.opts.Shape {
	case TwoNIC:
		l.wires = append(l.wires,
			&wire{endpoint: l.Appliance, nic: InsideNIC, fabric: insideFabric, port: "fw-in", mtu: l.opts.ApplianceMTU, addrs: inside, xdpPeer: true},
			&wire{endpoint: l.Appliance, nic: OutsideNIC, fabric: outsideFabric, port: "fw-out", mtu: l.opts.ApplianceMTU, addrs: outside, xdpPeer: true})
	case OneNIC:
		l.wires = append(l.wires,
			&wire{endpoint: l.Appliance, nic: SingleNIC, fabric: insideFabric, port: "fw", mtu: l.opts.ApplianceMTU, addrs: append(inside, outside...), xdpPeer: true})
	}
	for _, w := range l.wires {
		l.AppliancePorts = append(l.AppliancePorts, Port{NS: w.fabric, Name: w.port})
	}
	for _, hosts := range []struct {
		hosts            []*Host
		subnet4, subnet6 netip.Prefix
	}{
		{l.Clients, InsideSubnetV4, InsideSubnetV6},
		{l.Servers, OutsideSubnetV4, OutsideSubnetV6},
	} {
		for _, h := range hosts.hosts {
			l.wires = append(l.wires, &wire{
				endpoint: h.NS, nic: h.Interface, fabric: h.Port.NS, port: h.Port.Name,
				addrs: []netip.Prefix{
					netip.PrefixFrom(h.IPv4, hosts.subnet4.Bits()),
					netip.PrefixFrom(h.IPv6, hosts.subnet6.Bits()),
				},
			})
		}
	}
	return nil
}

func (l *Lab) newHosts(role string, n int, addrs func(int) (netip.Addr, netip.Addr, error), fabric *NetNS, portPrefix string) ([]*Host, error) {
	hosts := make([]*Host, 0, n)
	for i := range n {
		v4, v6, err := addrs(i)
		if err != nil {
			return nil, err
		}
		ns, err := l.newNetNS(fmt.Sprintf("%s%d", role, i))
		if err != nil {
			return nil, err
		}
		hosts = append(hosts, &Host{
			NS: ns, IPv4: v4, IPv6: v6, Interface: HostNIC,
			Port: Port{NS: fabric, Name: fmt.Sprintf("%s%d", portPrefix, i)},
		})
	}
	return hosts, nil
}

// endpoints are the namespaces that hold addresses: the appliance, clients
// and servers.
func (l *Lab) endpoints() []*NetNS {
	ns := []*NetNS{l.Appliance}
	for _, h := range slices.Concat(l.Clients, l.Servers) {
		ns = append(ns, h.NS)
	}
	return ns
}

// endpointSysctls quiet IPv6 and make addresses usable at once. They are set
// before any link exists, so that each new link copies the "default" values.
var endpointSysctls = []struct{ key, value string }{
	// Duplicate address detection would keep every IPv6 address tentative
	// for a second or more; the lab's addresses are unique by construction.
	{"net.ipv6.conf.all.accept_dad", "0"},
	{"net.ipv6.conf.default.accept_dad", "0"},
	// No router advertisements are sent in the lab, so nobody need ask.
	{"net.ipv6.conf.all.accept_ra", "0"},
	{"net.ipv6.conf.default.accept_ra", "0"},
	{"net.ipv6.conf.default.router_solicitations", "0"},
	// Cloud fabrics deliver by route table, not by redirect. In the OneNIC
	// shape, where the kernel forwards out of the NIC a packet came in on, an
	// accepted redirect would send clients straight to servers, around the
	// appliance.
	{"net.ipv4.conf.all.accept_redirects", "0"},
	{"net.ipv4.conf.default.accept_redirects", "0"},
	{"net.ipv6.conf.all.accept_redirects", "0"},
	{"net.ipv6.conf.default.accept_redirects", "0"},
	{"net.ipv4.conf.all.send_redirects", "0"},
	{"net.ipv4.conf.default.send_redirects", "0"},
}

// fabricSysctls keep the bridges' namespaces silent: they switch frames and
// must not add link-local addresses, router solicitations or MLD reports of
// their own to captures.
var fabricSysctls = []struct{ key, value string }{
	{"net.ipv6.conf.all.disable_ipv6", "1"},
	{"net.ipv6.conf.default.disable_ipv6", "1"},
}

// configureSysctls leaves forwarding off in the appliance: natwall turns it on
// itself, and tests that want the kernel to forward call
// EnableApplianceForwarding.
func (l *Lab) configureSysctls() error {
	for _, ns := range l.endpoints() {
		for _, s := range endpointSysctls {
			if err := ns.Sysctl(s.key, s.value); err != nil {
				return err
			}
		}
	}
	for _, ns := range l.Fabric {
		for _, s := range fabricSysctls {
			if err := ns.Sysctl(s.key, s.value); err != nil {
				return err
			}
		}
	}
	return nil
}

func (l *Lab) createBridges() error {
	snooping := false
	for _, ns := range l.Fabric {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = BridgeName
		// Without a multicast querier, snooping would come to forward IPv6
		// neighbour solicitations only to the ports it saw MLD reports from.
		br := &netlink.Bridge{LinkAttrs: attrs, MulticastSnooping: &snooping}
		if err := ns.Do(func() error { return netlink.LinkAdd(br) }); err != nil {
			return fmt.Errorf("add bridge %s in %s: %w", BridgeName, ns, err)
		}
		if err := ns.setUp(BridgeName); err != nil {
			return err
		}
	}
	return nil
}

func (l *Lab) createLinks() error {
	for _, w := range l.wires {
		if err := w.create(); err != nil {
			return err
		}
	}
	return nil
}

func (w *wire) create() error {
	bridge, err := w.fabric.link(BridgeName)
	if err != nil {
		return err
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = w.port
	attrs.MasterIndex = bridge.Attrs().Index
	attrs.MTU = w.mtu
	veth := &netlink.Veth{
		LinkAttrs:     attrs,
		PeerName:      w.nic,
		PeerNamespace: netlink.NsFd(int(w.endpoint.handle)),
	}
	if err := w.fabric.Do(func() error { return netlink.LinkAdd(veth) }); err != nil {
		return fmt.Errorf("add veth %s (%s) - %s (%s): %w", w.port, w.fabric, w.nic, w.endpoint, err)
	}

	// A veth hands the frames that reach it by XDP (XDP_TX on the veth
	// itself, XDP_REDIRECT into it) to its peer's NAPI instance, which
	// exists only while the peer has GRO on or an XDP program attached;
	// without either, the frames are dropped without a trace. GRO is enough
	// for XDP_REDIRECT, whose sender flushes the peer's queue. XDP_TX frames
	// are flushed only towards a peer with an XDP program (veth_xdp_flush,
	// seen on Linux 6.18): with GRO alone they stay queued, undelivered. So
	// GRO goes on at every veth end, and the fabric ends facing the
	// appliance, whose NICs natwall sends from in both ways, get an XDP_PASS
	// program.
	if w.xdpPeer {
		if err := attachXDP(w.fabric, w.port, "nwlab_pass", xdpPassProgram); err != nil {
			return err
		}
	}
	for _, end := range []struct {
		ns   *NetNS
		name string
	}{{w.fabric, w.port}, {w.endpoint, w.nic}} {
		if err := end.ns.Do(func() error { return setGRO(end.name, true) }); err != nil {
			return fmt.Errorf("in %s: %w", end.ns, err)
		}
		link, err := end.ns.link(end.name)
		if err != nil {
			return err
		}
		if w.mtu != 0 && link.Attrs().MTU != w.mtu {
			return fmt.Errorf("veth %s in %s: MTU %d, want %d", end.name, end.ns, link.Attrs().MTU, w.mtu)
		}
		if err := end.ns.setUp(end.name); err != nil {
			return err
		}
	}
	return nil
}

// waitCarrier waits until every endpoint NIC is operationally up, which a
// veth is once both its ends are: addresses added before would start out
// tentative.
func (l *Lab) waitCarrier() error {
	return poll(readyTimeout, func() error {
		for _, w := range l.wires {
			link, err := w.endpoint.link(w.nic)
			if err != nil {
				return err
			}
			if state := link.Attrs().OperState; state != netlink.OperUp {
				return fmt.Errorf("%s in %s is %s, not up", w.nic, w.endpoint, state)
			}
		}
		return nil
	})
}

func (l *Lab) addAddresses() error {
	for _, w := range l.wires {
		link, err := w.endpoint.link(w.nic)
		if err != nil {
			return err
		}
		for _, prefix := range w.addrs {
			addr := &netlink.Addr{IPNet: prefixIPNet(prefix)}
			if prefix.Addr().Is6() {
				addr.Flags = unix.IFA_F_NODAD
			}
			if err := w.endpoint.Do(func() error { return netlink.AddrAdd(link, addr) }); err != nil {
				return fmt.Errorf("add %s to %s in %s: %w", prefix, w.nic, w.endpoint, err)
			}
		}
	}
	return nil
}

func (l *Lab) addRoutes() error {
	for _, c := range l.Clients {
		routes := []route{
			{netip.MustParsePrefix("0.0.0.0/0"), ApplianceInsideV4},
			{netip.MustParsePrefix("::/0"), ApplianceInsideV6},
		}
		if err := addRoutes(c, routes); err != nil {
			return err
		}
	}
	for _, s := range l.Servers {
		routes := []route{
			{netip.MustParsePrefix("0.0.0.0/0"), ApplianceOutsideV4},
			{netip.MustParsePrefix("::/0"), ApplianceOutsideV6},
		}
		if l.opts.ServerRoutesToInside {
			routes = append(routes,
				route{InsideNetworkV4, ApplianceOutsideV4},
				route{InsideNetworkV6, ApplianceOutsideV6})
		}
		if err := addRoutes(s, routes); err != nil {
			return err
		}
	}
	return nil
}

func addRoutes(h *Host, routes []route) error {
	link, err := h.NS.link(h.Interface)
	if err != nil {
		return err
	}
	for _, r := range routes {
		route := &netlink.Route{
			LinkIndex: link.Attrs().Index,
			Dst:       prefixIPNet(r.dst),
			Gw:        net.IP(r.via.AsSlice()),
		}
		err := h.NS.Do(func() error { return netlink.RouteAdd(route) })
		if err != nil {
			return fmt.Errorf("add route %s via %s in %s: %w", r.dst, r.via, h.NS, err)
		}
	}
	return nil
}

// waitAddressesUsable waits until no IPv6 address in the lab is tentative,
// including the link-local ones the kernel adds itself, so that no test
// races duplicate address detection.
func (l *Lab) waitAddressesUsable() error {
	return poll(readyTimeout, func() error {
		for _, w := range l.wires {
			link, err := w.endpoint.link(w.nic)
			if err != nil {
				return err
			}
			var addrs []netlink.Addr
			err = w.endpoint.Do(func() (err error) {
				addrs, err = netlink.AddrList(link, netlink.FAMILY_ALL)
				return err
			})
			if err != nil {
				return fmt.Errorf("addresses of %s in %s: %w", w.nic, w.endpoint, err)
			}
			present := make(map[netip.Addr]bool)
			linkLocal := false
			for _, a := range addrs {
				ip, _ := netip.AddrFromSlice(a.IP)
				ip = ip.Unmap()
				if a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0 {
					return fmt.Errorf("%s on %s in %s is still tentative", ip, w.nic, w.endpoint)
				}
				present[ip] = true
				linkLocal = linkLocal || ip.Is6() && ip.IsLinkLocalUnicast()
			}
			for _, want := range w.addrs {
				if !present[want.Addr()] {
					return fmt.Errorf("%s missing on %s in %s", want.Addr(), w.nic, w.endpoint)
				}
			}
			// The link-local address comes with carrier; until it is there,
			// a tentative one could still appear.
			if !linkLocal {
				return fmt.Errorf("no IPv6 link-local address on %s in %s yet", w.nic, w.endpoint)
			}
		}
		return nil
	})
}

// EnableApplianceForwarding makes the appliance's kernel forward IPv4 and
// IPv6, for tests that need a baseline without natwall.
func (l *Lab) EnableApplianceForwarding() error {
	for _, key := range []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"} {
		if err := l.Appliance.Sysctl(key, "1"); err != nil {
			return fmt.Errorf("enable forwarding: %w", err)
		}
	}
	return nil
}

// Namespaces returns every namespace of the lab.
func (l *Lab) Namespaces() []*NetNS { return slices.Clone(l.namespaces) }

// Options returns the options the lab was built with, defaults filled in.
func (l *Lab) Options() Options { return l.opts }

// Close stops the processes started in the lab's namespaces, deletes its
// links and deletes its namespaces. It does not undo what others did in
// shared places: maps or links natwall pinned in bpffs stay pinned. Calling
// Close again returns nil.
func (l *Lab) Close() error {
	l.closeMu.Lock()
	defer l.closeMu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true

	var wg sync.WaitGroup
	for _, ns := range l.namespaces {
		wg.Go(ns.stopProcesses)
	}
	wg.Wait()

	var errs []error
	// Deleting the links first frees them even if a leaked socket keeps a
	// namespace alive after its name is gone; a veth's peer goes with it.
	for _, w := range l.wires {
		if err := deleteLink(w.fabric, w.port); err != nil {
			errs = append(errs, err)
		}
	}
	for _, ns := range l.Fabric {
		if err := deleteLink(ns, BridgeName); err != nil {
			errs = append(errs, err)
		}
	}
	for _, ns := range slices.Backward(l.namespaces) {
		if err := ns.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// deleteLink deletes the interface called name in ns, if ns is still open and
// the interface still there.
func deleteLink(ns *NetNS, name string) error {
	err := ns.Do(func() error {
		link, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		return netlink.LinkDel(link)
	})
	if err == nil || errors.Is(err, ErrClosed) || errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil
	}
	return fmt.Errorf("delete %s in %s: %w", name, ns, err)
}

func prefixIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{
		IP:   net.IP(p.Addr().AsSlice()),
		Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
	}
}

// pollInterval is how often poll retries; short, since what it waits for
// usually takes milliseconds.
const pollInterval = 10 * time.Millisecond

// poll calls check until it returns nil or timeout passes, and then returns
// check's last error.
func poll(timeout time.Duration, check func() error) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return pollContext(ctx, check)
}

func pollContext(ctx context.Context, check func() error) error {
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for {
		err := check()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (gave up: %w)", err, ctx.Err())
		case <-ticker.C:
		}
	}
}
