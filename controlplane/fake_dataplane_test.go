package controlplane

import (
	"sync"
	"sync/atomic"

	"github.com/natwall/natwall/dataplane"
)

// fakeDataplane stands in for *dataplane.Dataplane, which needs root and a
// NIC; what it reports is set by the test.
type fakeDataplane struct {
	attached    atomic.Bool
	attachments []dataplane.Attachment

	mu          sync.Mutex
	counts      []dataplane.ReasonCount
	countersErr error
	closed      int
	detached    int
}

func (f *fakeDataplane) Attached() bool { return f.attached.Load() }

func (f *fakeDataplane) Attachments() []dataplane.Attachment {
	return append([]dataplane.Attachment(nil), f.attachments...)
}

func (f *fakeDataplane) Counters() ([]dataplane.ReasonCount, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.countersErr != nil {
		return nil, f.countersErr
	}
	return append([]dataplane.ReasonCount(nil), f.counts...), nil
}

func (f *fakeDataplane) setCounters(counts []dataplane.ReasonCount, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.counts, f.countersErr = counts, err
}

func (f *fakeDataplane) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed++
	return nil
}

func (f *fakeDataplane) Detach() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.detached++
	return nil
}

func (f *fakeDataplane) stops() (closed, detached int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed, f.detached
}
