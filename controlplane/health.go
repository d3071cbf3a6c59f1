package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Paths served by the daemon's HTTP listeners.
const (
	HealthPath  = "/healthz"
	ReadyPath   = "/readyz"
	MetricsPath = "/metrics"
)

// shutdownTimeout bounds how long in-flight requests may delay shutdown.
const shutdownTimeout = 5 * time.Second

// HealthHandler answers load balancer probes: 200 "ok" while natwall's
// program is attached to every interface, 503 otherwise, so that the
// cloud stops routing through an appliance that would not forward.
func HealthHandler(dp interface{ Attached() bool }) http.Handler {
	return probeHandler("ok", func() error {
		if !dp.Attached() {
			return errors.New("xdp program not attached")
		}
		return nil
	})
}

// probeHandler answers GET and HEAD with 200 and ok while check returns
// nil, and 503 with the error otherwise, never cached.
func probeHandler(ok string, check func() error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if err := check(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, err)
			return
		}
		fmt.Fprint(w, ok)
	})
}

// ReadyHandler answers readiness probes: 200 "ready" when ready returns
// nil, 503 with its error otherwise. The daemon is ready once its config
// is loaded and its rules are applied, and while the dataplane is
// attached; a later failed reload leaves it ready, since the last good set
// still enforces.
func ReadyHandler(ready func() error) http.Handler {
	return probeHandler("ready", func() error {
		if err := ready(); err != nil {
			return fmt.Errorf("not ready: %w", err)
		}
		return nil
	})
}

// healthOnlyHandler serves /healthz and /readyz and nothing else: the
// health listener is reachable from outside the VM, unlike metrics.
func healthOnlyHandler(dp interface{ Attached() bool }, ready func() error) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(HealthPath, HealthHandler(dp))
	mux.Handle(ReadyPath, ReadyHandler(ready))
	return mux
}

// MetricsHandler serves /metrics from gatherer, /healthz and /readyz.
func MetricsHandler(dp interface{ Attached() bool }, ready func() error, gatherer prometheus.Gatherer, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(HealthPath, HealthHandler(dp))
	mux.Handle(ReadyPath, ReadyHandler(ready))
	mux.Handle(MetricsPath, promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelError),
		// A failing collector must not hide the others' metrics.
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	}))
	return mux
}

// httpServer is a bound listener and the server that will serve it.
// Binding first lets the daemon fail before it touches the dataplane.
type httpServer struct {
	name string
	ln   net.Listener
	srv  *http.Server
}

func listenHTTP(ctx context.Context, name, addr string, log *slog.Logger) (*httpServer, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for %s on %s: %w", name, addr, err)
	}
	return &httpServer{
		name: name,
		ln:   ln,
		srv: &http.Server{
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       60 * time.Second,
			MaxHeaderBytes:    16 << 10,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
	}, nil
}

// Addr is the bound address, with the port the kernel chose for port 0.
func (s *httpServer) Addr() net.Addr { return s.ln.Addr() }

// serve serves h until ctx is cancelled, then shuts down gracefully and
// returns nil; it returns an error if serving fails first.
func (s *httpServer) serve(ctx context.Context, h http.Handler) error {
	s.srv.Handler = h
	served := make(chan error, 1)
	go func() { served <- s.srv.Serve(s.ln) }()

	select {
	case err := <-served:
		return fmt.Errorf("serve %s on %s: %w", s.name, s.ln.Addr(), err)
	case <-ctx.Done():
	}

	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	err := s.srv.Shutdown(shutdownCtx)
	if err != nil {
		err = errors.Join(fmt.Errorf("shut down %s: %w", s.name, err), s.srv.Close())
	}
	if serveErr := <-served; !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(err, fmt.Errorf("serve %s: %w", s.name, serveErr))
	}
	return err
}

// close releases the listener of a server that was never served.
func (s *httpServer) close() error {
	return s.ln.Close()
}
