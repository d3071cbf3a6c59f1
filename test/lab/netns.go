package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ErrClosed is returned by operations on a NetNS or Lab after Close.
var ErrClosed = errors.New("lab: closed")

// netnsDir is where `ip netns` looks for named namespaces.
const netnsDir = "/run/netns"

// namePrefix starts the name of every namespace the lab creates; the pid of
// the creating process follows it, which is what Sweep keys on.
const namePrefix = "nwlab-"

// namespaceCounter makes names unique within one process.
var namespaceCounter atomic.Uint64

// NetNS is a named network namespace created by the lab, bound at
// /run/netns/<Name>. Its methods are safe for concurrent use.
type NetNS struct {
	name string
	path string

	// mu guards handle against Close while a thread is being switched into
	// the namespace: a closed and reused descriptor would switch it somewhere
	// else entirely.
	mu        sync.RWMutex
	handle    netns.NsHandle
	closed    bool
	processes []*Process
	// closers run when the namespace closes, before its processes are
	// stopped, so that what owns a process can stop it its own way.
	closers []func()
}

// NewNetNS creates a network namespace named nwlab-<pid>-<n>-<role>, with its
// loopback interface up. role may hold letters, digits, '-' and '_'.
func NewNetNS(role string) (*NetNS, error) {
	if err := validateRole(role); err != nil {
		return nil, err
	}
	name := fmt.Sprintf("%s%d-%d-%s", namePrefix, os.Getpid(), namespaceCounter.Add(1), role)
	return createNetNS(name)
}

func validateRole(role string) error {
	if role == "" {
		return errors.New("namespace role is empty")
	}
	for _, r := range role {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return fmt.Errorf("namespace role %q: character %q not allowed", role, r)
		}
	}
	return nil
}

// netnsDirShared is set once /run/netns is a shared mount point.
var (
	netnsDirMu     sync.Mutex
	netnsDirShared bool
)

// shareNetnsDir makes /run/netns a mount point of its own with shared
// propagation, as `ip netns add` does, before the lab binds a namespace
// there. Otherwise the first `ip netns add` by anyone else while lab
// namespaces exist bind-mounts the directory onto itself, copying their
// mounts into a peer that unmounting the originals does not reach: they
// stay busy until reboot, and every later lab fails.
func shareNetnsDir() error {
	netnsDirMu.Lock()
	defer netnsDirMu.Unlock()
	if netnsDirShared {
		return nil
	}
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", netnsDir, err)
	}
	makeShared := func() error { return unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "") }
	err := makeShared()
	if errors.Is(err, unix.EINVAL) {
		// Not a mount point yet.
		if err := unix.Mount(netnsDir, netnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind-mount %s onto itself: %w", netnsDir, err)
		}
		err = makeShared()
	}
	if err != nil {
		return fmt.Errorf("make %s a shared mount: %w", netnsDir, err)
	}
	netnsDirShared = true
	return nil
}

func createNetNS(name string) (_ *NetNS, err error) {
	if err := shareNetnsDir(); err != nil {
		return nil, err
	}
	path := filepath.Join(netnsDir, name)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return nil, fmt.Errorf("create netns mount point: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, errors.Join(fmt.Errorf("create netns mount point: %w", err), os.Remove(path))
	}

	ns := &NetNS{name: name, path: path, handle: netns.None()}
	defer func() {
		if err != nil {
			err = errors.Join(err, ns.Close())
		}
	}()

	mounted := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		origin, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			mounted <- fmt.Errorf("current network namespace: %w", err)
			return
		}
		defer origin.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			mounted <- fmt.Errorf("unshare network namespace: %w", err)
			return
		}
		mountErr := unix.Mount("/proc/thread-self/ns/net", path, "", unix.MS_BIND, "")
		if mountErr != nil {
			mountErr = fmt.Errorf("bind-mount network namespace at %s: %w", path, mountErr)
		}
		// Switching back matters, rather than letting the thread end with the
		// goroutine: the runtime never ends the main thread, and a main
		// thread parked in the new namespace would keep it alive and make
		// /proc/<pid>/ns/net name it.
		if err := netns.Set(origin); err != nil {
			mounted <- errors.Join(mountErr, fmt.Errorf("return to the original network namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		mounted <- mountErr
	}()
	if err := <-mounted; err != nil {
		return nil, err
	}

	handle, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	ns.handle = handle
	// A new namespace's loopback is down, and without it nothing inside can
	// reach its own addresses.
	if err := ns.setUp("lo"); err != nil {
		return nil, err
	}
	return ns, nil
}

// Name is the namespace's name, as `ip netns list` shows it.
func (ns *NetNS) Name() string { return ns.name }

// Path is the namespace's bind mount, usable with nsenter --net= or setns.
func (ns *NetNS) Path() string { return ns.path }

func (ns *NetNS) String() string { return ns.name }

// Close stops the processes started with Start (SIGTERM, then SIGKILL after
// DefaultStopGrace) and unmounts and removes the namespace. The kernel frees
// the namespace, with its links, once nothing holds it any more: sockets
// created inside it with Do, Listen or Dial keep it alive until they are
// closed. Calling Close again returns nil.
func (ns *NetNS) Close() error {
	// Marked closed first, so that no process can start behind the back of
	// the stopping below.
	ns.mu.Lock()
	if ns.closed {
		ns.mu.Unlock()
		return nil
	}
	ns.closed = true
	closers, processes := ns.closers, ns.processes
	ns.closers, ns.processes = nil, nil
	ns.mu.Unlock()

	for _, closer := range closers {
		closer()
	}
	stopAll(processes)

	ns.mu.Lock()
	defer ns.mu.Unlock()
	var errs []error
	if ns.handle.IsOpen() {
		if err := ns.handle.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close handle of %s: %w", ns.name, err))
		}
	}
	if err := removeNamedNetNS(ns.path); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// stopProcesses stops every process started in the namespace that is still
// running, all at once so their grace periods overlap. Their exit statuses are
// left to whoever waits for them: Close reports failures to clean up, not how
// the programs ended.
func (ns *NetNS) stopProcesses() {
	ns.mu.Lock()
	processes := ns.processes
	ns.processes = nil
	ns.mu.Unlock()
	stopAll(processes)
}

func stopAll(processes []*Process) {
	var wg sync.WaitGroup
	for _, p := range processes {
		wg.Go(func() { _ = p.Stop() })
	}
	wg.Wait()
}

// onClose registers fn to run when the namespace closes; if it already has, fn
// runs at once.
func (ns *NetNS) onClose(fn func()) {
	ns.mu.Lock()
	if !ns.closed {
		ns.closers = append(ns.closers, fn)
		ns.mu.Unlock()
		return
	}
	ns.mu.Unlock()
	fn()
}

func removeNamedNetNS(path string) error {
	// EINVAL: not a mount point, e.g. when creation failed before the bind
	// mount; ENOENT: a concurrent Sweep got there first.
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// Sweep removes the namespaces left behind by lab users that no longer run:
// those named nwlab-<pid>-… whose pid is not alive. Processes still running
// inside them are killed first. Namespaces of live processes, including
// concurrent `go test` binaries, are left alone. It returns the names it
// removed.
func Sweep() ([]string, error) {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", netnsDir, err)
	}
	var removed []string
	var errs []error
	for _, entry := range entries {
		pid, ok := parseNetNSName(entry.Name())
		if !ok || processAlive(pid) {
			continue
		}
		path := filepath.Join(netnsDir, entry.Name())
		if err := killProcessesIn(path); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := removeNamedNetNS(path); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, entry.Name())
	}
	return removed, errors.Join(errs...)
}

// parseNetNSName returns the pid of the process that created a lab namespace
// named name, and false for names the lab did not give.
func parseNetNSName(name string) (pid int, ok bool) {
	rest, ok := strings.CutPrefix(name, namePrefix)
	if !ok {
		return 0, false
	}
	pidText, rest, ok := strings.Cut(rest, "-")
	if !ok || rest == "" {
		return 0, false
	}
	for _, r := range pidText {
		if r < '0' || r > '9' {
			return 0, false
		}
	}
	pid, err := strconv.Atoi(pidText)
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

func processAlive(pid int) bool {
	// EPERM means the process exists but belongs to someone else.
	if err := unix.Kill(pid, 0); err != nil && !errors.Is(err, unix.EPERM) {
		return false
	}
	// A killed test binary whose parent has not reaped it yet is a zombie:
	// it still has a pid, but will never clean up.
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return !errors.Is(err, fs.ErrNotExist)
	}
	return !zombie(stat)
}

// zombie reports whether the contents of /proc/<pid>/stat describe a process
// that has exited: its state, the field after the parenthesised command name
// (which may itself hold parentheses), is Z or X.
func zombie(stat []byte) bool {
	end := bytes.LastIndexByte(stat, ')')
	if end < 0 || end+2 >= len(stat) {
		return false
	}
	state := stat[end+2]
	return state == 'Z' || state == 'X'
}

// killProcessesIn SIGKILLs every process whose network namespace is the one
// bound at path: left running, they would keep the namespace alive after its
// name is gone.
func killProcessesIn(path string) error {
	var target unix.Stat_t
	if err := unix.Stat(path, &target); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("stat %s: %w", path, err)
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return fmt.Errorf("list processes: %w", err)
	}
	var errs []error
	for _, proc := range procs {
		pid, err := strconv.Atoi(proc.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join("/proc", proc.Name(), "ns", "net"), &st); err != nil {
			continue // exited meanwhile, or a kernel thread
		}
		if st.Dev != target.Dev || st.Ino != target.Ino {
			continue
		}
		if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("kill pid %d in %s: %w", pid, path, err))
		}
	}
	return errors.Join(errs...)
}

// Do runs fn on an OS thread switched into the namespace and switches the
// thread back afterwards. Sockets fn creates stay in the namespace for their
// whole life, so Do is the way to open Go listeners and connections there, and
// package-level netlink calls inside fn act on the namespace too.
//
// fn runs on another goroutine: it must not call t.FailNow, and goroutines it
// starts run in the caller's namespace, not this one. A panic in fn is
// re-raised in the caller.
func (ns *NetNS) Do(fn func() error) error {
	type result struct {
		err      error
		panicked bool
		panicVal any
	}
	done := make(chan result, 1)
	go func() {
		// Every early return leaves the thread locked, so the runtime ends it
		// (or, the main thread, parks it) rather than reuse a thread whose
		// namespace is not known.
		runtime.LockOSThread()
		origin, err := netns.Get()
		if err != nil {
			done <- result{err: fmt.Errorf("current network namespace: %w", err)}
			return
		}
		defer origin.Close()

		if err := ns.enter(); err != nil {
			done <- result{err: err}
			return
		}
		var r result
		func() {
			defer func() {
				if v := recover(); v != nil {
					r.panicked, r.panicVal = true, v
				}
			}()
			r.err = fn()
		}()
		if err := netns.Set(origin); err != nil {
			r.err = errors.Join(r.err, fmt.Errorf("return from %s to the original network namespace: %w", ns.name, err))
			done <- r
			return
		}
		runtime.UnlockOSThread()
		done <- r
	}()
	r := <-done
	if r.panicked {
		panic(r.panicVal)
	}
	return r.err
}

func (ns *NetNS) enter() error {
	ns.mu.RLock()
	defer ns.mu.RUnlock()
	if ns.closed {
		return fmt.Errorf("enter %s: %w", ns.name, ErrClosed)
	}
	if err := netns.Set(ns.handle); err != nil {
		return fmt.Errorf("enter %s: %w", ns.name, err)
	}
	return nil
}

// Listen is net.Listen inside the namespace. addr must hold an IP literal:
// name resolution would not run in the namespace.
func (ns *NetNS) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := ns.Do(func() (err error) {
		l, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s %s in %s: %w", network, addr, ns.name, err)
	}
	return l, nil
}

// ListenPacket is net.ListenPacket inside the namespace. addr must hold an IP
// literal.
func (ns *NetNS) ListenPacket(network, addr string) (net.PacketConn, error) {
	var c net.PacketConn
	err := ns.Do(func() (err error) {
		c, err = net.ListenPacket(network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s %s in %s: %w", network, addr, ns.name, err)
	}
	return c, nil
}

// Dial connects from inside the namespace. addr must hold an IP literal.
func (ns *NetNS) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := ns.Do(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s %s from %s: %w", network, addr, ns.name, err)
	}
	return c, nil
}

// sysctlPath turns "net.ipv4.ip_forward" into /proc/sys/net/ipv4/ip_forward. A
// key already written with slashes is taken as it is, which is how to name an
// interface whose name holds a dot ("net/ipv4/conf/eth0.100/forwarding").
func sysctlPath(key string) (string, error) {
	if key == "" || strings.Contains(key, "..") || strings.HasPrefix(key, "/") {
		return "", fmt.Errorf("invalid sysctl key %q", key)
	}
	if !strings.Contains(key, "/") {
		key = strings.ReplaceAll(key, ".", "/")
	}
	return filepath.Join("/proc/sys", key), nil
}

// Sysctl sets a kernel parameter inside the namespace. The file is opened from
// inside, because /proc/sys/net shows the namespace of whoever opens it.
func (ns *NetNS) Sysctl(key, value string) error {
	path, err := sysctlPath(key)
	if err != nil {
		return err
	}
	err = ns.Do(func() error {
		return os.WriteFile(path, []byte(value), 0)
	})
	if err != nil {
		return fmt.Errorf("sysctl %s=%s in %s: %w", key, value, ns.name, err)
	}
	return nil
}

// ReadSysctl reads a kernel parameter inside the namespace, without the
// trailing newline.
func (ns *NetNS) ReadSysctl(key string) (string, error) {
	path, err := sysctlPath(key)
	if err != nil {
		return "", err
	}
	var value []byte
	err = ns.Do(func() (err error) {
		value, err = os.ReadFile(path)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("read sysctl %s in %s: %w", key, ns.name, err)
	}
	return strings.TrimSpace(string(value)), nil
}

// Interface describes the network interface called name inside the
// namespace: its ifindex, MAC address, MTU and flags.
func (ns *NetNS) Interface(name string) (*net.Interface, error) {
	link, err := ns.link(name)
	if err != nil {
		return nil, err
	}
	attrs := link.Attrs()
	return &net.Interface{
		Index:        attrs.Index,
		MTU:          attrs.MTU,
		Name:         attrs.Name,
		HardwareAddr: attrs.HardwareAddr,
		Flags:        attrs.Flags,
	}, nil
}

// link looks up the interface called name in the namespace.
//
// Every netlink call of the lab goes through Do with the netlink package's
// own functions, which open their socket on the calling thread. A
// netlink.Handle would not do: once closed, it quietly falls back to the
// namespace of the calling thread, which could be the host's.
func (ns *NetNS) link(name string) (netlink.Link, error) {
	var link netlink.Link
	err := ns.Do(func() (err error) {
		link, err = netlink.LinkByName(name)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("interface %s in %s: %w", name, ns.name, err)
	}
	return link, nil
}

// setUp sets the interface called name up.
func (ns *NetNS) setUp(name string) error {
	err := ns.Do(func() error {
		link, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(link)
	})
	if err != nil {
		return fmt.Errorf("set %s in %s up: %w", name, ns.name, err)
	}
	return nil
}

// command prepares name to run inside the namespace. nsenter enters only the
// network namespace; `ip netns exec` would also remount /sys, hiding the
// host's bpffs at /sys/fs/bpf where natwall pins its maps and links.
func (ns *NetNS) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + ns.path, "--", name}, args...)...)
	// A process group of its own lets Stop and a cancelled context reach the
	// children a program starts, too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return signalGroup(cmd.Process.Pid, unix.SIGKILL) }
	// A grandchild that outlives the program and holds its output open must
	// not make Wait hang.
	cmd.WaitDelay = time.Second
	return cmd
}

// Run runs a program inside the namespace and returns its combined output.
// The error names the command line and includes the output.
func (ns *NetNS) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	if ns.isClosed() {
		return nil, fmt.Errorf("run %s in %s: %w", commandLine(name, args), ns.name, ErrClosed)
	}
	out, err := ns.command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("run %s in %s: %w: %s", commandLine(name, args), ns.name, err, bytes.TrimSpace(out))
	}
	return out, nil
}

// IP runs the ip(8) command inside the namespace, for the odd configuration a
// test needs beyond the lab's, such as
//
//	ns.IP(ctx, "route", "replace", "198.19.1.10/32", "dev", "out0", "mtu", "lock", "1200")
func (ns *NetNS) IP(ctx context.Context, args ...string) ([]byte, error) {
	return ns.Run(ctx, "ip", args...)
}

// Ping sends one ICMP or ICMPv6 echo request to dst from inside the namespace
// and returns nil if a reply came back within a second.
func (ns *NetNS) Ping(ctx context.Context, dst netip.Addr) error {
	_, err := ns.Run(ctx, "ping", "-n", "-c1", "-W1", dst.String())
	return err
}

func (ns *NetNS) isClosed() bool {
	ns.mu.RLock()
	defer ns.mu.RUnlock()
	return ns.closed
}

func signalGroup(pid int, sig unix.Signal) error {
	if err := unix.Kill(-pid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signal process group %d with %s: %w", pid, unix.SignalName(sig), err)
	}
	return nil
}

// commandLine renders a command for error messages, quoting the arguments
// that would otherwise be ambiguous.
func commandLine(name string, args []string) string {
	parts := make([]string, 0, 1+len(args))
	for _, a := range append([]string{name}, args...) {
		if a == "" || strings.ContainsAny(a, " \t\n\"'\\$`") {
			a = strconv.Quote(a)
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}
