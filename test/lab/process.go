package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultStopGrace is how long Stop waits after SIGTERM before it sends
// SIGKILL.
const DefaultStopGrace = 5 * time.Second

// maxOutput bounds the output a Process keeps, so a chatty daemon left running
// in a long demo does not grow without limit; the most recent output is kept.
const maxOutput = 1 << 20

// Process is a program running in the background inside a NetNS, started by
// Start. Its stdout and stderr are captured together.
type Process struct {
	ns       *NetNS
	cmdline  string
	cmd      *exec.Cmd
	output   *outputLog
	stopping atomic.Bool
	done     chan struct{}
	waitErr  error // set before done is closed
}

// lineHooks receive a process's output line by line, each called from a single
// goroutine.
type lineHooks struct {
	stdout, stderr func(line string)
}

// Start runs a program in the background inside the namespace. Close stops it
// if nothing else did.
func (ns *NetNS) Start(name string, args ...string) (*Process, error) {
	return ns.start(lineHooks{}, name, args...)
}

func (ns *NetNS) start(hooks lineHooks, name string, args ...string) (*Process, error) {
	p := &Process{
		ns:      ns,
		cmdline: commandLine(name, args),
		output:  &outputLog{},
		done:    make(chan struct{}),
	}
	stdout := &lineWriter{log: p.output, onLine: hooks.stdout}
	stderr := &lineWriter{log: p.output, onLine: hooks.stderr}
	p.cmd = ns.command(context.Background(), name, args...)
	p.cmd.Stdout = stdout
	p.cmd.Stderr = stderr

	// Registering under the lock that Close takes means a process is either
	// refused or stopped by Close, never left behind.
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.closed {
		return nil, fmt.Errorf("start %s in %s: %w", p.cmdline, ns.name, ErrClosed)
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s in %s: %w", p.cmdline, ns.name, err)
	}
	// Forget the processes that have exited, so that a long demo starting
	// many short programs does not accumulate them.
	ns.processes = slices.DeleteFunc(ns.processes, func(q *Process) bool {
		select {
		case <-q.done:
			return true
		default:
			return false
		}
	})
	ns.processes = append(ns.processes, p)

	go func() {
		err := p.cmd.Wait()
		stdout.flush()
		stderr.flush()
		p.waitErr = err
		close(p.done)
	}()
	return p, nil
}

func (p *Process) String() string { return fmt.Sprintf("%s in %s", p.cmdline, p.ns.name) }

// Pid is the process id of the program.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the program has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Signal sends sig to the program (not to its children). It returns
// os.ErrProcessDone once the program has exited.
func (p *Process) Signal(sig os.Signal) error {
	select {
	case <-p.done:
		return os.ErrProcessDone
	default:
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %s: %w", p, err)
	}
	return nil
}

// Wait blocks until the program exits and returns nil if it exited with
// status 0. The error of a failed program ends with the tail of its output.
func (p *Process) Wait() error {
	<-p.done
	if p.waitErr == nil {
		return nil
	}
	return fmt.Errorf("%s: %w%s", p, p.waitErr, outputTail(p.Output()))
}

// Stop is StopWithin(DefaultStopGrace).
func (p *Process) Stop() error { return p.StopWithin(DefaultStopGrace) }

// StopWithin sends SIGTERM to the program and its children, waits up to grace
// for the program to exit, and sends SIGKILL after that. It returns nil if the
// program exited because of the SIGTERM or with status 0, an error if it had
// to be killed, and the program's own failure if it had already exited
// unsuccessfully.
func (p *Process) StopWithin(grace time.Duration) error {
	select {
	case <-p.done:
		return p.stopResult()
	default:
	}
	p.stopping.Store(true)
	if err := signalGroup(p.Pid(), unix.SIGTERM); err != nil {
		return fmt.Errorf("stop %s: %w", p, err)
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-p.done:
		return p.stopResult()
	case <-timer.C:
	}
	if err := signalGroup(p.Pid(), unix.SIGKILL); err != nil {
		return fmt.Errorf("stop %s: %w", p, err)
	}
	<-p.done
	return fmt.Errorf("stop %s: still running %s after SIGTERM, killed%s", p, grace, outputTail(p.Output()))
}

func (p *Process) stopResult() error {
	if p.waitErr == nil {
		return nil
	}
	var exitErr *exec.ExitError
	if p.stopping.Load() && errors.As(p.waitErr, &exitErr) {
		if status, ok := exitErr.Sys().(syscall.WaitStatus); ok {
			// 128+15 is how a shell reports that SIGTERM ended its child.
			if status.Signaled() && status.Signal() == unix.SIGTERM || status.Exited() && status.ExitStatus() == 128+int(unix.SIGTERM) {
				return nil
			}
		}
	}
	return p.Wait()
}

// Output returns what the program has written to stdout and stderr so far,
// interleaved as it arrived; when there was more than a MiB, the oldest
// output is replaced by a note saying how much was dropped.
func (p *Process) Output() string { return p.output.String() }

func outputTail(output string) string {
	const max = 4096
	if output == "" {
		return ""
	}
	if len(output) > max {
		output = "…" + output[len(output)-max:]
	}
	return "\noutput:\n" + output
}

// outputLog keeps the most recent maxOutput bytes of a process's output.
type outputLog struct {
	mu      sync.Mutex
	buf     []byte
	dropped int
}

func (o *outputLog) append(p []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf = append(o.buf, p...)
	if excess := len(o.buf) - maxOutput; excess > 0 {
		o.dropped += excess
		o.buf = append(o.buf[:0], o.buf[excess:]...)
	}
}

func (o *outputLog) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.dropped > 0 {
		return fmt.Sprintf("[lab: %d earlier bytes dropped]\n%s", o.dropped, o.buf)
	}
	return string(o.buf)
}

// maxLine bounds a line handed to a hook; longer runs without a newline are
// handed over in pieces.
const maxLine = 64 << 10

// lineWriter copies one output stream of a process into its log and hands
// complete lines to onLine. exec.Cmd writes each stream from one goroutine, so
// partial needs no lock.
type lineWriter struct {
	log     *outputLog
	onLine  func(string)
	partial []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.log.append(p)
	if w.onLine == nil {
		return len(p), nil
	}
	w.partial = append(w.partial, p...)
	start := 0
	for {
		i := bytes.IndexByte(w.partial[start:], '\n')
		if i < 0 {
			break
		}
		w.onLine(string(w.partial[start : start+i]))
		start += i + 1
	}
	w.partial = append(w.partial[:0], w.partial[start:]...)
	if len(w.partial) >= maxLine {
		w.onLine(string(w.partial))
		w.partial = w.partial[:0]
	}
	return len(p), nil
}

// flush hands over a last line that did not end in a newline; called after
// the process's output has been copied completely.
func (w *lineWriter) flush() {
	if w.onLine != nil && len(w.partial) > 0 {
		w.onLine(string(w.partial))
		w.partial = nil
	}
}
