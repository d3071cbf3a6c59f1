package flowlog

import (
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/natwall/natwall/dataplane"
)

// Options selects what a Writer logs.
type Options struct {
	// Flows writes `flow` records; Alerts writes `alert` records.
	Flows, Alerts bool
	Encoder       Encoder
	Log           *slog.Logger
}

// flushAt is how much a Writer buffers before writing in the middle of a
// batch.
const flushAt = 256 << 10

// Writer is the flow stream's EVE sink (a flows.Sink): it encodes each
// event into a buffer and writes the buffer once per batch.
type Writer struct {
	out  io.Writer
	opts Options
	buf  []byte

	lastWarn time.Time
	records  [2]atomic.Uint64 // flow, alert
	errors   atomic.Uint64
}

// NewWriter returns a Writer to out, which a batch reaches in one Write
// (unless it exceeds flushAt).
func NewWriter(out io.Writer, opts Options) *Writer {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	return &Writer{out: out, opts: opts, buf: make([]byte, 0, flushAt+4096)}
}

// HandleFlowEvent implements flows.Sink.
func (w *Writer) HandleFlowEvent(ev *dataplane.FlowEvent) {
	switch ev.Type {
	case dataplane.FlowEnded, dataplane.FlowActive:
		if !w.opts.Flows {
			return
		}
		w.buf = w.opts.Encoder.AppendFlow(w.buf, ev)
		w.records[0].Add(1)
	case dataplane.FlowAlert:
		if !w.opts.Alerts {
			return
		}
		w.buf = w.opts.Encoder.AppendAlert(w.buf, ev)
		w.records[1].Add(1)
	default:
		return
	}
	if len(w.buf) >= flushAt {
		w.Flush()
	}
}

// Flush implements flows.Sink: it writes what is buffered. A failed write
// loses its records, counted; the next batch tries again.
func (w *Writer) Flush() {
	if len(w.buf) == 0 {
		return
	}
	_, err := w.out.Write(w.buf)
	w.buf = w.buf[:0]
	if err != nil {
		w.errors.Add(1)
		if now := time.Now(); now.Sub(w.lastWarn) > 10*time.Second {
			w.lastWarn = now
			w.opts.Log.Error("write EVE log", "error", err)
		}
	}
}

var (
	eveRecordsDesc = prometheus.NewDesc("natwall_eve_records_total", "EVE JSON records written, by event_type.", []string{"event_type"}, nil)
	eveErrorsDesc  = prometheus.NewDesc("natwall_eve_write_errors_total", "EVE JSON batches lost because their write failed.", nil, nil)
)

// Describe implements prometheus.Collector.
func (w *Writer) Describe(ch chan<- *prometheus.Desc) {
	ch <- eveRecordsDesc
	ch <- eveErrorsDesc
}

// Collect implements prometheus.Collector.
func (w *Writer) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(eveRecordsDesc, prometheus.CounterValue, float64(w.records[0].Load()), "flow")
	ch <- prometheus.MustNewConstMetric(eveRecordsDesc, prometheus.CounterValue, float64(w.records[1].Load()), "alert")
	ch <- prometheus.MustNewConstMetric(eveErrorsDesc, prometheus.CounterValue, float64(w.errors.Load()))
}
