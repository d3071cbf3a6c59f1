// Package dataplane loads natwall's XDP program, attaches it to the
// appliance's NICs, pins its state in bpffs and reads its counters. It is the
// only product package that imports cilium/ebpf (the benchmark, test/bench,
// drives its own programs).
package dataplane

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// DefaultPinDir is where maps and links are pinned unless configured.
const DefaultPinDir = "/sys/fs/bpf/natwall"

// ErrLocked means another natwall process owns the pin directory.
var ErrLocked = errors.New("pin directory is locked by another natwall process")

// XDPMode is how the XDP program is attached to a NIC.
type XDPMode int

const (
	// ModeNative runs the program in the NIC driver: the fast path.
	ModeNative XDPMode = iota
	// ModeGeneric runs the program after the kernel allocated an skb:
	// correct but much slower; only for NICs whose driver lacks XDP.
	ModeGeneric
)

func (m XDPMode) String() string {
	switch m {
	case ModeNative:
		return "native"
	case ModeGeneric:
		return "generic"
	}
	return fmt.Sprintf("XDPMode(%d)", int(m))
}

func (m XDPMode) attachFlags() link.XDPAttachFlags {
	if m == ModeGeneric {
		return link.XDPGenericMode
	}
	return link.XDPDriverMode
}

// MalformedAction is what happens to a packet natwall cannot parse safely.
type MalformedAction int

const (
	// MalformedDrop drops it: the fail-closed default.
	MalformedDrop MalformedAction = iota
	// MalformedPass hands it to the kernel stack, which validates it again.
	MalformedPass
)

func (a MalformedAction) String() string {
	switch a {
	case MalformedDrop:
		return "drop"
	case MalformedPass:
		return "pass"
	}
	return fmt.Sprintf("MalformedAction(%d)", int(a))
}

// Options configure Open.
type Options struct {
	// Interfaces are the NICs to attach to, by name.
	Interfaces []string
	// Mode is the requested attach mode.
	Mode XDPMode
	// AllowGenericFallback attaches in generic mode where the driver
	// refuses native mode, instead of failing.
	AllowGenericFallback bool
	// PinDir is the bpffs directory for maps and links; DefaultPinDir if empty.
	PinDir string
	// Settings are applied before the program is attached.
	Settings Settings
	// FlowTableSize is the capacity of each flow table (and SNAT mapping
	// table); 0 keeps the compiled-in default. Pinned tables of another
	// size are not reused: they are replaced with empty ones, with a
	// warning, since a new size is asked for.
	FlowTableSize uint32
	// ReplaceIncompatibleState replaces pinned maps of another layout
	// (from another natwall build) with empty ones. Without it, Open
	// refuses them with ErrIncompatibleState and changes nothing.
	ReplaceIncompatibleState bool
	// Logger receives attach events; slog.Default() if nil.
	Logger *slog.Logger
}

// Attachment is the program attached to one NIC.
type Attachment struct {
	Interface string
	Ifindex   int
	Mode      XDPMode
	// FellBack is true when native mode was refused and generic was used.
	FellBack bool
}

// ReasonCount is a reason's counters summed over all CPUs.
type ReasonCount struct {
	Reason  Reason
	Packets uint64
	Bytes   uint64
}

// Dataplane is natwall's loaded and attached XDP program.
type Dataplane struct {
	opts        Options
	log         *slog.Logger
	objs        natwallObjects
	acl         aclWriter
	links       []link.Link
	attachments []Attachment
	lock        *os.File
}

// Open loads the program, re-using pinned maps where they exist so that a
// restart keeps the live state, and attaches it to every configured NIC.
// A NIC that already runs natwall (a pinned link) gets the new program
// swapped in atomically; it never runs without one.
func Open(opts Options) (_ *Dataplane, err error) {
	if len(opts.Interfaces) == 0 {
		return nil, errors.New("no interfaces to attach to")
	}
	if opts.PinDir == "" {
		opts.PinDir = DefaultPinDir
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	d := &Dataplane{opts: opts, log: opts.Logger}
	d.acl.objs = &d.objs
	defer func() {
		if err != nil {
			d.Close()
		}
	}()

	if err := ensureBPFFS(opts.PinDir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(opts.PinDir, "links"), 0o700); err != nil {
		return nil, fmt.Errorf("create pin directory: %w", err)
	}
	if d.lock, err = lockDir(opts.PinDir); err != nil {
		return nil, err
	}

	spec, err := loadNatwall()
	if err != nil {
		return nil, fmt.Errorf("read XDP object: %w", err)
	}
	if n := opts.FlowTableSize; n > 0 {
		for _, m := range []*ebpf.MapSpec{spec.Maps["nw_ct4"], spec.Maps["nw_ct4_rev"], spec.Maps["nw_ct6"],
			spec.Maps["nw_snat4_fwd"], spec.Maps["nw_snat4_rev"]} {
			m.MaxEntries = n
		}
	}
	// State of another layout is never adopted, and never replaced
	// unasked: a dataplane an earlier natwall left pinned may still be
	// forwarding with it.
	differ, err := checkPinnedLayout(spec, opts.PinDir)
	if err != nil {
		return nil, err
	}
	// Maps the control plane writes whole (settings, rules) or that only
	// count are replaced, with a warning: nothing is lost that the start
	// does not rebuild, bar counters.
	rebuilt := slices.DeleteFunc(slices.Clone(differ), isConnectionState)
	differ = slices.DeleteFunc(differ, func(name string) bool { return !isConnectionState(name) })
	if len(rebuilt) > 0 {
		d.log.Warn("replacing pinned maps of another layout that the start rebuilds; their counters restart", "maps", rebuilt)
		if err := unpinMaps(opts.PinDir, rebuilt); err != nil {
			return nil, err
		}
	}
	if len(differ) > 0 {
		if !opts.ReplaceIncompatibleState {
			return nil, fmt.Errorf("%w: %s in %s come from a natwall with another layout, which this one would misread; "+
				"the dataplane pinned there goes on enforcing. To replace it and lose its flows, run `natwall teardown --pin-dir %s`, "+
				"or set on_incompatible_state: replace", ErrIncompatibleState, strings.Join(differ, ", "), opts.PinDir, opts.PinDir)
		}
		d.log.Warn("replacing pinned maps of another layout (on_incompatible_state: replace); their state is lost", "maps", differ)
		if err := unpinMaps(opts.PinDir, differ); err != nil {
			return nil, err
		}
	}
	load := func() error {
		return spec.LoadAndAssign(&d.objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: opts.PinDir}})
	}
	// Mappings pinned by a natwall that kept no in-use counts cannot be
	// counted now: they start empty with the counts.
	if dropped, err := unpinSNATTogether(opts.PinDir, nil); err != nil {
		return nil, err
	} else if len(dropped) > 0 {
		d.log.Warn("pinned SNAT mappings have no in-use counts; starting them empty", "maps", dropped)
	}
	err = load()
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		// Another table size, or a natwall whose tables are laid out
		// differently: their state cannot be carried over, and keeping
		// them would keep natwall down.
		var dropped []string
		if dropped, err = unpinIncompatible(spec, opts.PinDir); err == nil {
			d.log.Warn("pinned state does not fit this natwall or its table sizes; starting those tables empty",
				"maps", dropped)
			err = load()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("load XDP program: %w", err)
	}
	if err := writeLayout(spec, opts.PinDir); err != nil {
		return nil, err
	}
	if err := d.Apply(opts.Settings); err != nil {
		return nil, err
	}

	for _, name := range opts.Interfaces {
		iface, err := net.InterfaceByName(name)
		if err != nil {
			return nil, fmt.Errorf("interface %s: %w", name, err)
		}
		idx := uint32(iface.Index)
		if err := d.objs.NwTxPorts.Put(idx, idx); err != nil {
			return nil, fmt.Errorf("add %s to tx ports: %w", name, err)
		}
	}
	for _, name := range opts.Interfaces {
		if err := d.attach(name); err != nil {
			return nil, err
		}
	}
	if err := d.detachStale(); err != nil {
		return nil, err
	}
	return d, nil
}

// unpinIncompatible removes the pins in dir of maps whose type, key, value
// or capacity differ from spec's, and names them.
func unpinIncompatible(spec *ebpf.CollectionSpec, dir string) ([]string, error) {
	var dropped []string
	for name, ms := range spec.Maps {
		if ms.Pinning != ebpf.PinByName {
			continue
		}
		path := filepath.Join(dir, name)
		m, err := ebpf.LoadPinnedMap(path, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return dropped, fmt.Errorf("pinned map %s: %w", name, err)
		}
		fits := m.Type() == ms.Type && m.KeySize() == ms.KeySize && m.ValueSize() == ms.ValueSize &&
			m.MaxEntries() == ms.MaxEntries && m.Flags() == ms.Flags
		m.Close()
		if fits {
			continue
		}
		if err := os.Remove(path); err != nil {
			return dropped, fmt.Errorf("unpin %s: %w", name, err)
		}
		dropped = append(dropped, name)
	}
	// The SNAT in-use counts describe the mapping tables: one without the
	// others would count ports nobody holds, or miss ports held.
	extra, err := unpinSNATTogether(dir, dropped)
	dropped = append(dropped, extra...)
	if err != nil {
		return dropped, err
	}
	sort.Strings(dropped)
	return dropped, nil
}

// snatTables are the maps whose state only makes sense together.
var snatTables = []string{"nw_snat4_fwd", "nw_snat4_rev", "nw_snat_count"}

// unpinSNATTogether unpins every SNAT table when dropped names one of them,
// or when one is not pinned at all (a natwall from before the counts), and
// returns the ones it removed.
func unpinSNATTogether(dir string, dropped []string) ([]string, error) {
	missing := false
	for _, name := range snatTables {
		if _, err := os.Stat(filepath.Join(dir, name)); errors.Is(err, os.ErrNotExist) && !slices.Contains(dropped, name) {
			missing = true
		}
	}
	if !missing && !slices.ContainsFunc(dropped, func(n string) bool { return slices.Contains(snatTables, n) }) {
		return nil, nil
	}
	var extra []string
	for _, name := range snatTables {
		if slices.Contains(dropped, name) {
			continue
		}
		err := os.Remove(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return extra, fmt.Errorf("unpin %s: %w", name, err)
		}
		extra = append(extra, name)
	}
	return extra, nil
}

func (d *Dataplane) linkPin(iface string) string {
	return filepath.Join(d.opts.PinDir, "links", iface)
}

func (d *Dataplane) attach(name string) error {
	iface, err := net.InterfaceByName(name)
	if err != nil {
		return fmt.Errorf("interface %s: %w", name, err)
	}
	pin := d.linkPin(name)

	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		if err := l.Update(d.objs.XdpNatwall); err != nil {
			l.Close()
			return fmt.Errorf("replace program on %s: %w", name, err)
		}
		mode, err := attachedMode(iface.Index)
		if err != nil {
			l.Close()
			return fmt.Errorf("%s: %w", name, err)
		}
		d.links = append(d.links, l)
		d.attachments = append(d.attachments, Attachment{Interface: name, Ifindex: iface.Index, Mode: mode})
		d.log.Info("xdp program replaced", "interface", name, "pin", pin)
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("load pinned link for %s: %w", name, err)
	}

	mode, fellBack := d.opts.Mode, false
	l, err := link.AttachXDP(link.XDPOptions{Program: d.objs.XdpNatwall, Interface: iface.Index, Flags: mode.attachFlags()})
	if err != nil && mode == ModeNative && d.opts.AllowGenericFallback && nativeUnsupported(err) {
		d.log.Warn("native XDP refused by the driver; falling back to generic mode, which is much slower",
			"interface", name, "error", err)
		mode, fellBack = ModeGeneric, true
		l, err = link.AttachXDP(link.XDPOptions{Program: d.objs.XdpNatwall, Interface: iface.Index, Flags: mode.attachFlags()})
	}
	if err != nil {
		return fmt.Errorf("attach XDP to %s in %s mode: %w", name, mode, err)
	}
	if err := l.Pin(pin); err != nil {
		l.Close()
		return fmt.Errorf("pin link for %s: %w", name, err)
	}
	d.links = append(d.links, l)
	d.attachments = append(d.attachments, Attachment{Interface: name, Ifindex: iface.Index, Mode: mode, FellBack: fellBack})
	d.log.Info("xdp program attached", "interface", name, "mode", mode.String(), "pin", pin)
	return nil
}

// attachedMode asks the kernel how the XDP program on a NIC is attached.
func attachedMode(ifindex int) (XDPMode, error) {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return 0, fmt.Errorf("query XDP mode: %w", err)
	}
	xdp := l.Attrs().Xdp
	if xdp == nil || !xdp.Attached {
		return 0, errors.New("pinned XDP link is not attached")
	}
	if xdp.AttachMode == nl.XDP_ATTACHED_SKB {
		return ModeGeneric, nil
	}
	return ModeNative, nil
}

// nativeUnsupported tells a driver without native XDP from other failures
// (a program already attached, a bad program), which must not fall back.
func nativeUnsupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL)
}

// PinnedInterfaces names the NICs whose natwall link is pinned under
// pinDir: a dataplane an earlier daemon left enforcing (on_exit: keep). A
// missing directory means none.
func PinnedInterfaces(pinDir string) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(pinDir, "links"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read pinned links: %w", err)
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name()
	}
	return names, nil
}

// detachStale removes pinned links of NICs that are no longer configured.
func (d *Dataplane) detachStale() error {
	pinned, err := PinnedInterfaces(d.opts.PinDir)
	if err != nil {
		return err
	}
	for _, name := range pinned {
		if d.isConfigured(name) {
			continue
		}
		pin := d.linkPin(name)
		l, err := link.LoadPinnedLink(pin, nil)
		if err != nil {
			return fmt.Errorf("load stale link %s: %w", pin, err)
		}
		err = errors.Join(l.Unpin(), l.Close())
		if err != nil {
			return fmt.Errorf("detach stale link %s: %w", pin, err)
		}
		d.log.Info("xdp program detached from unconfigured interface", "interface", name)
	}
	return nil
}

func (d *Dataplane) isConfigured(iface string) bool {
	for _, name := range d.opts.Interfaces {
		if name == iface {
			return true
		}
	}
	return false
}

// Attachments lists the NICs the program is attached to.
func (d *Dataplane) Attachments() []Attachment {
	return append([]Attachment(nil), d.attachments...)
}

// Attached reports whether every configured NIC runs this program right
// now, as the kernel sees it: a NIC that vanished or had its program
// replaced by someone else makes it false.
func (d *Dataplane) Attached() bool {
	if len(d.attachments) == 0 {
		return false
	}
	for _, a := range d.attachments {
		if !d.AttachedTo(a.Interface) {
			return false
		}
	}
	return true
}

// AttachedTo reports whether the NIC named iface runs this program now.
func (d *Dataplane) AttachedTo(iface string) bool {
	if d.objs.XdpNatwall == nil {
		return false
	}
	info, err := d.objs.XdpNatwall.Info()
	if err != nil {
		return false
	}
	id, ok := info.ID()
	if !ok {
		return false
	}
	for _, a := range d.attachments {
		if a.Interface != iface {
			continue
		}
		l, err := netlink.LinkByIndex(a.Ifindex)
		if err != nil {
			return false
		}
		xdp := l.Attrs().Xdp
		return xdp != nil && xdp.Attached && xdp.ProgId == uint32(id)
	}
	return false
}

// RunStats is the kernel's total run time and run count of the XDP program,
// kept only while BPF statistics are enabled (kernel.bpf_stats_enabled or
// ebpf.EnableStats): its cost per packet in place, under real traffic.
func (d *Dataplane) RunStats() (runtime time.Duration, runs uint64, err error) {
	st, err := d.objs.XdpNatwall.Stats()
	if err != nil {
		return 0, 0, err
	}
	return st.Runtime, st.RunCount, nil
}

// Counters returns every reason's counters, zeros included.
func (d *Dataplane) Counters() ([]ReasonCount, error) {
	return readCounters(d.objs.NwCounters)
}

func readCounters(m *ebpf.Map) ([]ReasonCount, error) {
	out := make([]ReasonCount, 0, NumReasons)
	var perCPU []natwallNwCounter
	for r := Reason(0); int(r) < NumReasons; r++ {
		if err := m.Lookup(r, &perCPU); err != nil {
			return nil, fmt.Errorf("read counter %s: %w", r.Name(), err)
		}
		rc := ReasonCount{Reason: r}
		for _, c := range perCPU {
			rc.Packets += c.Packets
			rc.Bytes += c.Bytes
		}
		out = append(out, rc)
	}
	return out, nil
}

// Close releases natwall's file descriptors. It does not detach: the
// pinned program keeps forwarding with the pinned state until Detach, so a
// restart or upgrade of the daemon is invisible to traffic.
func (d *Dataplane) Close() error {
	var errs []error
	for _, l := range d.links {
		errs = append(errs, l.Close())
	}
	d.links = nil
	errs = append(errs, d.objs.Close())
	if d.lock != nil {
		errs = append(errs, d.lock.Close())
		d.lock = nil
	}
	return errors.Join(errs...)
}

// Detach removes the program from every NIC and unpins the maps and links
// natwall pinned, so all connection state is gone, then closes the
// Dataplane. It removes the pin directory only if nothing else is left in it.
func (d *Dataplane) Detach() error {
	var errs []error
	for _, l := range d.links {
		errs = append(errs, l.Unpin())
	}
	errs = append(errs, d.Close())
	spec, err := loadNatwall()
	errs = append(errs, err)
	if spec != nil {
		for name, m := range spec.Maps {
			if m.Pinning != ebpf.PinByName {
				continue
			}
			// Unlinking a pin drops bpffs's reference; the map goes with
			// the last file descriptor.
			if err := os.Remove(filepath.Join(d.opts.PinDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	if err := os.Remove(filepath.Join(d.opts.PinDir, layoutMapName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	errs = append(errs, removeEmptyDir(filepath.Join(d.opts.PinDir, "links")), removeEmptyDir(d.opts.PinDir))
	for _, a := range d.attachments {
		d.log.Info("xdp program detached", "interface", a.Interface)
	}
	return errors.Join(errs...)
}

// Teardown removes what natwall attached and pinned under pinDir, with no
// daemon running (on_exit: keep leaves it so): the program from every NIC
// it has a pinned link for, then every map it pinned, whatever their
// layout. It returns the NICs it detached from. It refuses while a daemon
// holds the directory, and does nothing when there is no directory.
func Teardown(pinDir string) (detached []string, err error) {
	if _, err := os.Stat(pinDir); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	lock, err := lockDir(pinDir)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	pinned, err := PinnedInterfaces(pinDir)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, name := range pinned {
		path := filepath.Join(pinDir, "links", name)
		l, err := link.LoadPinnedLink(path, nil)
		if err != nil {
			// A pin whose link can no longer be loaded holds nothing.
			errs = append(errs, fmt.Errorf("load pinned link %s: %w", path, err), os.Remove(path))
			continue
		}
		if err := errors.Join(l.Unpin(), l.Close()); err != nil {
			errs = append(errs, fmt.Errorf("detach %s: %w", name, err))
			continue
		}
		detached = append(detached, name)
	}
	spec, err := loadNatwall()
	if err != nil {
		return detached, errors.Join(append(errs, err)...)
	}
	names := []string{layoutMapName}
	for name, m := range spec.Maps {
		if m.Pinning == ebpf.PinByName {
			names = append(names, name)
		}
	}
	errs = append(errs, unpinMaps(pinDir, names),
		removeEmptyDir(filepath.Join(pinDir, "links")), removeEmptyDir(pinDir))
	return detached, errors.Join(errs...)
}

func removeEmptyDir(dir string) error {
	err := os.Remove(dir)
	if err == nil || errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}

// ensureBPFFS mounts bpffs at /sys/fs/bpf when the pin directory lives
// there and nothing is mounted: `ip netns exec` and some minimal images
// present a /sys without it.
func ensureBPFFS(pinDir string) error {
	const root = "/sys/fs/bpf"
	dir := pinDir
	for {
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err == nil {
			if st.Type == unix.BPF_FS_MAGIC {
				return nil
			}
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	if pinDir != root && !strings.HasPrefix(pinDir, root+"/") {
		return fmt.Errorf("pin directory %s is not on a bpf filesystem", pinDir)
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", root, err)
	}
	if err := unix.Mount("bpf", root, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs at %s: %w", root, err)
	}
	return nil
}

// lockDir takes an exclusive lock on the pin directory for the life of the
// process, so that two daemons never drive the same pinned state.
func lockDir(dir string) (*os.File, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("open pin directory: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w", dir, ErrLocked)
		}
		return nil, fmt.Errorf("lock pin directory: %w", err)
	}
	return f, nil
}
