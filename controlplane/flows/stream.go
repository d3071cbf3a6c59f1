// Package flows is natwall's one flow stream: flow starts, flow ends
// (whether the dataplane or the collector ended them), alert-rule matches
// and long flows' periodic reports, read from the dataplane's ring buffer
// in batches, decoded once, and fanned out to sinks such as flow logs,
// domain filtering, learning and the CLI's live tail.
//
// Every sink has its own bounded queue and goroutine. A sink that falls
// behind loses the events its queue has no room for, and the loss is
// counted per sink; it never stalls the reader, the other sinks or the
// dataplane.
package flows

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/natwall/natwall/dataplane"
)

// Sink consumes the flow stream. The stream calls a sink from one
// goroutine of its own, never concurrently, in stream order.
type Sink interface {
	// HandleFlowEvent takes one event. ev and what it points to are
	// valid only during the call: copy what you keep.
	HandleFlowEvent(ev *dataplane.FlowEvent)
	// Flush is called when the sink has taken every queued event: a
	// sink that buffers output writes it now, once per batch.
	Flush()
}

// Filter selects events; the zero Filter selects all.
type Filter struct {
	// Types, if not empty, are the event types selected.
	Types []dataplane.FlowEventType
	// Flow selects by address, port and protocol.
	Flow dataplane.FlowFilter
}

// Match reports whether f selects ev.
func (f *Filter) Match(ev *dataplane.FlowEvent) bool {
	if len(f.Types) > 0 {
		found := false
		for _, t := range f.Types {
			found = found || t == ev.Type
		}
		if !found {
			return false
		}
	}
	return f.Flow.Match(ev.Flow)
}

// DefaultQueueLen is a sink's queue, in events: at 20 ms between reader
// wakeups it absorbs bursts of about 400,000 events per second.
const DefaultQueueLen = 8192

// EventSource is the dataplane's ring buffer, as *dataplane.EventReader
// reads it.
type EventSource interface {
	// ReadInto blocks until an event arrives and decodes it into ev. It
	// returns an error matching os.ErrClosed once the source is closed.
	ReadInto(ev *dataplane.FlowEvent) error
	// Drained reports whether the last read emptied the source.
	Drained() bool
	Close() error
}

// Stream fans flow events out to sinks. Its zero value is not usable:
// make one with NewStream.
type Stream struct {
	log *slog.Logger

	mu   sync.Mutex // serialises changes to subs
	subs atomic.Pointer[[]*subscription]
	wg   sync.WaitGroup

	byType       [4]atomic.Uint64 // start, end, alert, active
	decodeErrors atomic.Uint64
	// Totals of ended flows, for natwall_flow_{packets,bytes}_total.
	packetsOrig, packetsReply atomic.Uint64
	bytesOrig, bytesReply     atomic.Uint64
	lostSubscribers           atomic.Uint64
}

// NewStream returns a stream with no sinks.
func NewStream(log *slog.Logger) *Stream {
	s := &Stream{log: log}
	s.subs.Store(&[]*subscription{})
	return s
}

// subscription is one sink's queue: two buffers, one filled by the
// publisher while the sink's goroutine works through the other, so an
// event is copied once and a batch costs one wakeup.
type subscription struct {
	name   string
	filter Filter
	sink   Sink
	lost   atomic.Uint64
	// onLost, if set, counts a loss elsewhere too.
	onLost *atomic.Uint64

	mu      sync.Mutex
	queue   []dataplane.FlowEvent
	spare   []dataplane.FlowEvent
	pending bool // wake has a token or the sink is about to take queue
	wake    chan struct{}
	stop    chan struct{}
	stopped sync.Once
}

// close tells the sink's goroutine to take what is queued and exit.
func (sub *subscription) close() { sub.stopped.Do(func() { close(sub.stop) }) }

// AddSink attaches sink under name, the label of its loss counter, with a
// queue of queueLen events (DefaultQueueLen if 0). The returned function
// detaches it, after it has taken what was queued.
func (s *Stream) AddSink(name string, sink Sink, filter Filter, queueLen int) (remove func()) {
	if queueLen <= 0 {
		queueLen = DefaultQueueLen
	}
	sub := &subscription{
		name: name, filter: filter, sink: sink,
		queue: make([]dataplane.FlowEvent, 0, queueLen),
		spare: make([]dataplane.FlowEvent, 0, queueLen),
		wake:  make(chan struct{}, 1),
		stop:  make(chan struct{}),
	}
	return s.attach(sub)
}

func (s *Stream) attach(sub *subscription) func() {
	s.mu.Lock()
	old := *s.subs.Load()
	next := append(append(make([]*subscription, 0, len(old)+1), old...), sub)
	s.subs.Store(&next)
	s.mu.Unlock()
	s.wg.Go(sub.run)
	return func() {
		s.mu.Lock()
		cur := *s.subs.Load()
		next := make([]*subscription, 0, len(cur))
		for _, o := range cur {
			if o != sub {
				next = append(next, o)
			}
		}
		s.subs.Store(&next)
		s.mu.Unlock()
		sub.close()
	}
}

// Subscribe attaches a channel sink at runtime, for a live view such as
// `natwall flows`: events f selects arrive on the channel until cancel is
// called, which closes it. A subscriber that does not keep up loses
// events, counted under the sink label "subscribe".
func (s *Stream) Subscribe(f Filter) (events <-chan dataplane.FlowEvent, cancel func()) {
	ch := make(chan dataplane.FlowEvent, 256)
	done := make(chan struct{})
	cs := &chanSink{ch: ch, done: done}
	sub := &subscription{
		name: "subscribe", filter: f, sink: cs, onLost: &s.lostSubscribers,
		queue: make([]dataplane.FlowEvent, 0, 1024),
		spare: make([]dataplane.FlowEvent, 0, 1024),
		wake:  make(chan struct{}, 1),
		stop:  make(chan struct{}),
	}
	cs.closeCh = func() { close(ch) }
	remove := s.attach(sub)
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			close(done) // unblocks a send to a reader that went away
			remove()
		})
	}
}

// chanSink hands events to a subscriber's channel; while the subscriber
// does not read, its subscription's queue fills and then loses events.
type chanSink struct {
	ch      chan dataplane.FlowEvent
	done    chan struct{}
	closeCh func()
}

func (c *chanSink) HandleFlowEvent(ev *dataplane.FlowEvent) {
	select {
	case c.ch <- *ev:
	case <-c.done:
	}
}

func (c *chanSink) Flush() {}

// stopped is called by the subscription's goroutine as it exits.
func (c *chanSink) stopped() { c.closeCh() }

func (sub *subscription) run() {
	for {
		select {
		case <-sub.wake:
			sub.deliver()
		case <-sub.stop:
			sub.deliver()
			if cs, ok := sub.sink.(*chanSink); ok {
				cs.stopped()
			}
			return
		}
	}
}

func (sub *subscription) deliver() {
	sub.mu.Lock()
	batch := sub.queue
	sub.queue = sub.spare[:0]
	sub.pending = false
	sub.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	for i := range batch {
		sub.sink.HandleFlowEvent(&batch[i])
	}
	sub.sink.Flush()
	sub.spare = batch[:0]
}

// push queues a copy of ev, or counts it lost when the queue is full.
// It reports whether the sink should be woken now: its queue is half
// full, so waiting for the end of the batch risks losses.
func (sub *subscription) push(ev *dataplane.FlowEvent) (wakeNow bool) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if len(sub.queue) == cap(sub.queue) {
		sub.lost.Add(1)
		if sub.onLost != nil {
			sub.onLost.Add(1)
		}
		return false
	}
	sub.queue = append(sub.queue, *ev)
	return len(sub.queue) >= cap(sub.queue)/2
}

// signal wakes the sink if it has events and no wakeup is pending.
func (sub *subscription) signal() {
	sub.mu.Lock()
	if sub.pending || len(sub.queue) == 0 {
		sub.mu.Unlock()
		return
	}
	sub.pending = true
	sub.mu.Unlock()
	select {
	case sub.wake <- struct{}{}:
	default:
	}
}

// Publish queues ev for every sink whose filter selects it. Sinks are
// woken by Flush, or as soon as a queue is half full; Publish itself
// never blocks on a sink.
func (s *Stream) Publish(ev *dataplane.FlowEvent) {
	s.count(ev)
	for _, sub := range *s.subs.Load() {
		if !sub.filter.Match(ev) {
			continue
		}
		if sub.push(ev) {
			sub.signal()
		}
	}
}

// Flush wakes the sinks that have events queued: the end of a batch.
func (s *Stream) Flush() {
	for _, sub := range *s.subs.Load() {
		sub.signal()
	}
}

func (s *Stream) count(ev *dataplane.FlowEvent) {
	switch ev.Type {
	case dataplane.FlowStarted:
		s.byType[0].Add(1)
	case dataplane.FlowEnded:
		s.byType[1].Add(1)
		f := &ev.Flow
		s.packetsOrig.Add(f.PacketsOrig)
		s.packetsReply.Add(f.PacketsReply)
		s.bytesOrig.Add(f.BytesOrig)
		s.bytesReply.Add(f.BytesReply)
	case dataplane.FlowAlert:
		s.byType[2].Add(1)
	case dataplane.FlowActive:
		s.byType[3].Add(1)
	}
}

// Run reads src until ctx is done, publishing every event, and then
// closes src. One event is decoded in place at a time; sinks are woken
// when src runs dry, once per batch.
func (s *Stream) Run(ctx context.Context, src EventSource) {
	stop := context.AfterFunc(ctx, func() { src.Close() })
	defer stop()
	var ev dataplane.FlowEvent
	var lastWarn time.Time
	for {
		err := src.ReadInto(&ev)
		if errors.Is(err, os.ErrClosed) {
			s.Flush()
			return
		}
		if err != nil {
			s.decodeErrors.Add(1)
			// Logged at most once a second: a stream of bad records
			// must not become a stream of log lines.
			if now := time.Now(); now.Sub(lastWarn) > time.Second {
				lastWarn = now
				s.log.Warn("read flow event", "error", err)
			}
			continue
		}
		s.Publish(&ev)
		if src.Drained() {
			s.Flush()
		}
	}
}

// Close detaches every sink after it has taken what was queued, and waits
// for their goroutines.
func (s *Stream) Close() {
	s.mu.Lock()
	subs := *s.subs.Load()
	s.subs.Store(&[]*subscription{})
	s.mu.Unlock()
	for _, sub := range subs {
		sub.close()
	}
	s.wg.Wait()
}

// SinkLoss is one sink's lost events.
type SinkLoss struct {
	Sink string
	Lost uint64
}

// Losses reports the events each attached sink lost, subscribers summed
// under "subscribe" (including those already cancelled).
func (s *Stream) Losses() []SinkLoss {
	var out []SinkLoss
	for _, sub := range *s.subs.Load() {
		if sub.onLost == nil {
			out = append(out, SinkLoss{Sink: sub.name, Lost: sub.lost.Load()})
		}
	}
	return append(out, SinkLoss{Sink: "subscribe", Lost: s.lostSubscribers.Load()})
}
