package flows

import (
	"io"
	"testing"
	"time"

	"github.com/natwall/natwall/controlplane/flowlog"
)

// BenchmarkStreamToEVE is the control plane's cost per flow event after
// decoding: publish to the stream, hand over to the EVE sink's goroutine,
// encode and write in batches. It reports the allocations per event.
func BenchmarkStreamToEVE(b *testing.B) {
	s := NewStream(quiet)
	w := flowlog.NewWriter(io.Discard, flowlog.Options{Flows: true, Alerts: true})
	s.AddSink("eve", w, Filter{}, 0)
	ev := event(1)
	ev.Time = time.Now()
	ev.Flow.Created, ev.Flow.LastSeen = ev.Time.Add(-time.Second), ev.Time
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		s.Publish(&ev)
		// Batches of 256, as the ring buffer reader hands them over.
		if i++; i%256 == 0 {
			s.Flush()
		}
	}
	s.Close()
	if lost := s.Losses()[0].Lost; lost > 0 {
		b.ReportMetric(float64(lost)/float64(b.N), "lost/op")
	}
}
