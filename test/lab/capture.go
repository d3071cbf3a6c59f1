package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// captureStartTimeout bounds the wait for tcpdump to start listening.
const captureStartTimeout = 10 * time.Second

// Capture is tcpdump running on an interface inside a namespace. It keeps both
// tcpdump's one-line summaries and the packets themselves.
type Capture struct {
	ns    *NetNS
	iface string
	proc  *Process
	path  string

	mu      sync.Mutex
	lines   []string
	changed chan struct{} // closed and replaced whenever a line arrives

	stopOnce sync.Once
	stopped  chan struct{} // closed when stop has finished
	linkType uint32
	frames   []Frame
	stopErr  error
}

// StartCapture starts tcpdump on iface inside ns with a pcap-filter(7)
// expression ("" captures everything), and returns once tcpdump is
// listening, so that nothing sent afterwards is missed. The capture is
// stopped when ns is closed, if Stop was not called before.
func StartCapture(ns *NetNS, iface, bpfFilter string) (*Capture, error) {
	// The .pcap suffix is one AppArmor's tcpdump profile lets it write.
	f, err := os.CreateTemp("", "nwlab-capture-*.pcap")
	if err != nil {
		return nil, fmt.Errorf("capture on %s in %s: %w", iface, ns, err)
	}
	path := f.Name()
	if err := f.Close(); err != nil {
		return nil, errors.Join(fmt.Errorf("capture on %s in %s: %w", iface, ns, err), os.Remove(path))
	}

	c := &Capture{ns: ns, iface: iface, path: path, changed: make(chan struct{}), stopped: make(chan struct{})}
	listening := make(chan struct{})
	var listeningOnce sync.Once
	hooks := lineHooks{
		stdout: c.addLine,
		stderr: func(line string) {
			if strings.Contains(line, "listening on") {
				listeningOnce.Do(func() { close(listening) })
			}
		},
	}
	args := []string{
		"-n",               // no name lookups
		"-l",               // line-buffered summaries
		"-U",               // flush the file after every packet
		"--immediate-mode", // hand over each packet as it comes instead of a buffer at a time
		"-B", "16384",      // KiB of kernel buffer: a busy machine must not make the capture lose packets
		"-Z", "root", // keep the privileges to write the file we created
		"-i", iface,
		"-w", path,
		"--print", // summaries on stdout as well as the file
	}
	if bpfFilter != "" {
		args = append(args, bpfFilter)
	}
	c.proc, err = ns.start(hooks, "tcpdump", args...)
	if err != nil {
		return nil, errors.Join(err, os.Remove(path))
	}

	timer := time.NewTimer(captureStartTimeout)
	defer timer.Stop()
	select {
	case <-listening:
	case <-c.proc.Done():
		return nil, errors.Join(fmt.Errorf("capture on %s in %s: %w", iface, ns, c.proc.Wait()), os.Remove(path))
	case <-timer.C:
		return nil, errors.Join(
			fmt.Errorf("capture on %s in %s: tcpdump not listening after %s", iface, ns, captureStartTimeout),
			c.proc.StopWithin(time.Second), os.Remove(path))
	}
	ns.onClose(func() { c.stopOnce.Do(c.stop) })
	return c, nil
}

func (c *Capture) addLine(line string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lines = append(c.lines, line)
	close(c.changed)
	c.changed = make(chan struct{})
}

// Lines returns tcpdump's summaries of the packets captured so far, one line
// per packet.
func (c *Capture) Lines() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.lines)
}

// WaitFor waits until at least n packets have been captured, or ctx ends.
func (c *Capture) WaitFor(ctx context.Context, n int) error {
	for {
		c.mu.Lock()
		got, changed := len(c.lines), c.changed
		c.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("capture on %s in %s: %d of %d packets: %w", c.iface, c.ns, got, n, ctx.Err())
		}
	}
}

// Stop stops tcpdump and returns the number of packets captured and their
// summaries. It fails if the kernel dropped packets before tcpdump could read
// them: such a capture cannot show that a packet never passed. Calling Stop
// again returns the same results.
func (c *Capture) Stop() (packets int, lines []string, err error) {
	c.stopOnce.Do(c.stop)
	return len(c.frames), c.Lines(), c.stopErr
}

// Frames returns the captured packets, for decoding with gopacket; it is nil
// until Stop has returned.
func (c *Capture) Frames() []Frame {
	select {
	case <-c.stopped:
		return c.frames
	default:
		return nil
	}
}

// LinkType is the pcap link type of Frames' data (1, Ethernet, on the lab's
// interfaces); 0 until Stop has returned.
func (c *Capture) LinkType() uint32 {
	select {
	case <-c.stopped:
		return c.linkType
	default:
		return 0
	}
}

var kernelDrops = regexp.MustCompile(`(\d+) packets? dropped by kernel`)

func (c *Capture) stop() {
	defer close(c.stopped)
	var errs []error
	if err := c.proc.Stop(); err != nil {
		errs = append(errs, err)
	}
	data, err := os.ReadFile(c.path)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("read tcpdump's file: %w", err))
	default:
		c.linkType, c.frames, err = parsePcap(data)
		if err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(c.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	if m := kernelDrops.FindStringSubmatch(c.proc.Output()); m != nil {
		if n, _ := strconv.Atoi(m[1]); n > 0 {
			errs = append(errs, fmt.Errorf("the kernel dropped %d packets before tcpdump read them", n))
		}
	}
	if err := errors.Join(errs...); err != nil {
		c.stopErr = fmt.Errorf("stop capture on %s in %s: %w", c.iface, c.ns, err)
	}
}
