package flows

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/natwall/natwall/dataplane"
)

// Collector is the flow tables' garbage collection: on every tick one
// batched walk (dataplane.State.CollectVisiting) removes expired flows and
// unused SNAT mappings and counts what is left. Each flow it removes
// becomes a flow end on the stream, and each flow that has lived past
// another multiple of ActiveInterval a FlowActive report.
type Collector struct {
	State    *dataplane.State
	Stream   *Stream
	Log      *slog.Logger
	Interval time.Duration
	// ActiveInterval, if not zero, is how often a long flow is reported
	// while it lasts.
	ActiveInterval time.Duration

	mu      sync.Mutex
	last    dataplane.GCResult // Expired is not kept
	valid   bool
	expired uint64
	prev    time.Time
	ev      dataplane.FlowEvent
}

// Run collects at once and then every Interval until ctx is done.
func (c *Collector) Run(ctx context.Context) {
	tick := time.NewTicker(c.Interval)
	defer tick.Stop()
	c.Collect(time.Now())
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			c.Collect(now)
		}
	}
}

// Collect runs one collection as of now.
func (c *Collector) Collect(now time.Time) {
	var visit func(*dataplane.Flow)
	if c.ActiveInterval > 0 && !c.prev.IsZero() {
		prev := c.prev
		visit = func(f *dataplane.Flow) {
			if crossedMultiple(f.Created, prev, now, c.ActiveInterval) {
				c.ev = dataplane.FlowEvent{Type: dataplane.FlowActive, Time: now, Flow: *f, ByGC: true}
				c.Stream.Publish(&c.ev)
			}
		}
	}
	res, err := c.State.CollectVisiting(now, visit)
	c.prev = now
	if err != nil {
		c.Log.Error("collect expired flows", "error", err)
	}
	for i := range res.Expired {
		c.ev = dataplane.FlowEvent{Type: dataplane.FlowEnded, Time: now, Flow: res.Expired[i], ByGC: true}
		c.Stream.Publish(&c.ev)
	}
	c.Stream.Flush()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expired += uint64(len(res.Expired))
	if err == nil {
		res.Expired = nil
		c.last, c.valid = res, true
	}
}

// crossedMultiple reports whether a flow created at created reached an age
// that is a multiple of every in (prev, now]: each long flow is reported
// once per interval without the collector remembering flows.
func crossedMultiple(created, prev, now time.Time, every time.Duration) bool {
	if created.IsZero() {
		return false
	}
	if created.After(prev) {
		prev = created // new since the last walk
	}
	return now.Sub(created)/every > prev.Sub(created)/every
}

// Last is what the latest successful collection counted; ok is false
// before the first one.
func (c *Collector) Last() (res dataplane.GCResult, expired uint64, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last, c.expired, c.valid
}
