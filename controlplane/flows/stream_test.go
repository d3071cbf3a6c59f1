package flows

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/natwall/natwall/dataplane"
)

var quiet = slog.New(slog.DiscardHandler)

// recorder is a sink that keeps what it is given; with gate set, it waits
// for the gate before each event, after saying so on entered.
type recorder struct {
	mu      sync.Mutex
	events  []dataplane.FlowEvent
	flushes int
	gate    chan struct{}
	entered chan struct{}
}

func (r *recorder) HandleFlowEvent(ev *dataplane.FlowEvent) {
	if r.gate != nil {
		select {
		case r.entered <- struct{}{}:
		default:
		}
		<-r.gate
	}
	r.mu.Lock()
	r.events = append(r.events, *ev)
	r.mu.Unlock()
}

func (r *recorder) Flush() {
	r.mu.Lock()
	r.flushes++
	r.mu.Unlock()
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

func event(i int) dataplane.FlowEvent {
	return dataplane.FlowEvent{Type: dataplane.FlowEnded, Flow: dataplane.Flow{
		Proto: 17, Src: netip.AddrPortFrom(netip.MustParseAddr("198.18.0.2"), uint16(1000+i)),
		Dst: netip.MustParseAddrPort("198.19.0.9:53"), PacketsOrig: 1, BytesOrig: 100,
	}}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func lostBy(s *Stream, name string) uint64 {
	for _, l := range s.Losses() {
		if l.Sink == name {
			return l.Lost
		}
	}
	return 0
}

// TestSlowSinkLosesCountedEvents stalls one sink: its bounded queue fills,
// what does not fit is counted lost for it alone, and the fast sink and
// the publisher go on.
func TestSlowSinkLosesCountedEvents(t *testing.T) {
	s := NewStream(quiet)
	slow := &recorder{gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	fast := &recorder{}
	s.AddSink("slow", slow, Filter{}, 8)
	s.AddSink("fast", fast, Filter{}, 64)

	// Half a queue wakes the slow sink, which takes those 4 and stalls.
	for i := range 4 {
		ev := event(i)
		s.Publish(&ev)
	}
	<-slow.entered
	// 8 more fit its queue; 12 are lost. Publish never blocks.
	done := make(chan struct{})
	go func() {
		for i := 4; i < 24; i++ {
			ev := event(i)
			s.Publish(&ev)
		}
		s.Flush()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Publish blocked on a stalled sink")
	}
	waitFor(t, "the fast sink", func() bool { return fast.count() == 24 })
	if got := lostBy(s, "slow"); got != 12 {
		t.Errorf("slow sink lost %d, want 12", got)
	}
	if got := lostBy(s, "fast"); got != 0 {
		t.Errorf("fast sink lost %d", got)
	}
	close(slow.gate)
	waitFor(t, "the slow sink", func() bool { return slow.count() == 12 })
	s.Close()
	// Stream order is kept: the first 4, then 4..11.
	for i, ev := range slow.events {
		if want := uint16(1000 + i); ev.Flow.Src.Port() != want {
			t.Fatalf("slow sink's event %d is port %d, want %d", i, ev.Flow.Src.Port(), want)
		}
	}
	if slow.flushes == 0 || fast.flushes == 0 {
		t.Error("sinks never flushed")
	}
}

func TestFilterAndSubscribe(t *testing.T) {
	s := NewStream(quiet)
	defer s.Close()
	events, cancel := s.Subscribe(Filter{
		Types: []dataplane.FlowEventType{dataplane.FlowEnded},
		Flow:  dataplane.FlowFilter{Port: 1002},
	})
	for i := range 5 {
		ev := event(i)
		s.Publish(&ev)
		alert := event(i)
		alert.Type = dataplane.FlowAlert
		s.Publish(&alert)
	}
	s.Flush()
	select {
	case ev := <-events:
		if ev.Type != dataplane.FlowEnded || ev.Flow.Src.Port() != 1002 {
			t.Fatalf("subscriber got %+v", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no event")
	}
	cancel()
	cancel() // idempotent
	waitFor(t, "the channel to close", func() bool {
		select {
		case _, ok := <-events:
			return !ok
		default:
			return false
		}
	})
}

// TestSubscriberThatDoesNotRead loses events, counted, and its cancel
// still returns.
func TestSubscriberThatDoesNotRead(t *testing.T) {
	s := NewStream(quiet)
	defer s.Close()
	_, cancel := s.Subscribe(Filter{})
	for i := range 5000 {
		ev := event(i)
		s.Publish(&ev)
	}
	s.Flush()
	waitFor(t, "losses", func() bool { return lostBy(s, "subscribe") > 0 })
	cancel()
	// At most 256 in the channel, a batch of 1024 in hand, 1024 queued.
	if lost := lostBy(s, "subscribe"); lost < 5000-256-2*1024 {
		t.Errorf("lost %d of 5000", lost)
	}
}

type sliceSource struct {
	events []dataplane.FlowEvent
	i      int
	closed chan struct{}
	once   sync.Once
}

func (s *sliceSource) ReadInto(ev *dataplane.FlowEvent) error {
	if s.i < len(s.events) {
		*ev = s.events[s.i]
		s.i++
		return nil
	}
	<-s.closed
	return os.ErrClosed
}

// Drained is true at the end of every third event: batches of three.
func (s *sliceSource) Drained() bool { return s.i%3 == 0 || s.i == len(s.events) }
func (s *sliceSource) Close() error  { s.once.Do(func() { close(s.closed) }); return nil }

func TestRunPublishesAndCounts(t *testing.T) {
	src := &sliceSource{closed: make(chan struct{})}
	for i := range 7 {
		src.events = append(src.events, event(i))
	}
	alert := event(9)
	alert.Type = dataplane.FlowAlert
	src.events = append(src.events, alert)
	s := NewStream(quiet)
	rec := &recorder{}
	s.AddSink("rec", rec, Filter{}, 0)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { s.Run(ctx, src) })
	waitFor(t, "events", func() bool { return rec.count() == 8 })
	cancel()
	wg.Wait()
	s.Close()
	if s.byType[1].Load() != 7 || s.byType[2].Load() != 1 || s.packetsOrig.Load() != 7 || s.bytesOrig.Load() != 700 {
		t.Errorf("counted %d ends, %d alerts, %d packets, %d bytes", s.byType[1].Load(), s.byType[2].Load(),
			s.packetsOrig.Load(), s.bytesOrig.Load())
	}
}

type nopSink struct{ n atomic.Int64 }

func (s *nopSink) HandleFlowEvent(*dataplane.FlowEvent) { s.n.Add(1) }
func (s *nopSink) Flush()                               {}

func TestPublishDoesNotAllocate(t *testing.T) {
	s := NewStream(quiet)
	defer s.Close()
	s.AddSink("a", &nopSink{}, Filter{}, 1<<16)
	s.AddSink("b", &nopSink{}, Filter{Flow: dataplane.FlowFilter{Proto: 17, Port: 53}}, 1<<16)
	ev := event(1)
	if n := testing.AllocsPerRun(10000, func() { s.Publish(&ev) }); n != 0 {
		t.Fatalf("%v allocations per published event", n)
	}
}

func TestCrossedMultiple(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return base.Add(time.Duration(s) * time.Second) }
	for _, tc := range []struct {
		name               string
		created, prev, now int
		every              time.Duration
		want               bool
	}{
		{"younger than the interval", 0, 10, 20, time.Minute, false},
		{"reaches the interval this tick", 0, 55, 65, time.Minute, true},
		{"reported last tick", 0, 65, 75, time.Minute, false},
		{"second interval", 0, 115, 125, time.Minute, true},
		{"exactly at the multiple", 0, 50, 60, time.Minute, true},
		{"new since the last walk, already past the interval", 5, 0, 70, time.Minute, true},
		{"no creation time", -1, 50, 70, time.Minute, false},
	} {
		created := at(tc.created)
		if tc.created < 0 {
			created = time.Time{}
		}
		if got := crossedMultiple(created, at(tc.prev), at(tc.now), tc.every); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
