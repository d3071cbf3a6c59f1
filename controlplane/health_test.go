package controlplane

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/natwall/natwall/dataplane"
)

func TestHealthHandler(t *testing.T) {
	tests := []struct {
		name     string
		method   string
		attached bool
		wantCode int
		wantBody string
	}{
		{"attached", http.MethodGet, true, http.StatusOK, "ok"},
		// The recorder keeps the body a server discards for HEAD.
		{"attached, HEAD", http.MethodHead, true, http.StatusOK, "ok"},
		{"not attached", http.MethodGet, false, http.StatusServiceUnavailable, "xdp program not attached"},
		{"POST", http.MethodPost, true, http.StatusMethodNotAllowed, "method not allowed\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dp := &fakeDataplane{}
			dp.attached.Store(tt.attached)
			rec := httptest.NewRecorder()
			HealthHandler(dp).ServeHTTP(rec, httptest.NewRequest(tt.method, HealthPath, nil))
			if rec.Code != tt.wantCode || rec.Body.String() != tt.wantBody {
				t.Errorf("%s %s = %d %q, want %d %q", tt.method, HealthPath, rec.Code, rec.Body, tt.wantCode, tt.wantBody)
			}
			if cc := rec.Header().Get("Cache-Control"); tt.wantCode != http.StatusMethodNotAllowed && cc != "no-store" {
				t.Errorf("Cache-Control = %q, want no-store", cc)
			}
		})
	}
}

func TestMetricsHandler(t *testing.T) {
	dp := &fakeDataplane{attachments: []dataplane.Attachment{{Interface: "eth0", Mode: dataplane.ModeNative}}}
	dp.attached.Store(true)
	dp.setCounters([]dataplane.ReasonCount{{Reason: dataplane.ReasonFwdTX, Packets: 7, Bytes: 700}}, nil)
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(dp, slog.New(slog.DiscardHandler)))
	var notReady error
	h := MetricsHandler(dp, func() error { return notReady }, reg, slog.New(slog.DiscardHandler))

	tests := []struct {
		path     string
		wantCode int
		wantBody string
	}{
		{MetricsPath, http.StatusOK, `natwall_packets_total{reason="fwd_tx",verdict="forward"} 7`},
		{HealthPath, http.StatusOK, "ok"},
		{ReadyPath, http.StatusOK, "ready"},
		{"/", http.StatusNotFound, ""},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tt.path, nil))
		if rec.Code != tt.wantCode || !strings.Contains(rec.Body.String(), tt.wantBody) {
			t.Errorf("GET %s = %d %q, want %d containing %q", tt.path, rec.Code, rec.Body, tt.wantCode, tt.wantBody)
		}
	}

	notReady = errors.New("xdp program not attached")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, ReadyPath, nil))
	if rec.Code != http.StatusServiceUnavailable || rec.Body.String() != "not ready: xdp program not attached" {
		t.Errorf("GET %s while not ready = %d %q, want 503 with the reason", ReadyPath, rec.Code, rec.Body)
	}
}

// TestHTTPServerShutdown checks that serve answers until its context is
// cancelled, then returns nil with the port released.
func TestHTTPServerShutdown(t *testing.T) {
	dp := &fakeDataplane{}
	dp.attached.Store(true)
	srv, err := listenHTTP(t.Context(), "health", "127.0.0.1:0", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- srv.serve(ctx, HealthHandler(dp)) }()

	url := "http://" + srv.Addr().String() + HealthPath
	if code, body := get(t, url); code != http.StatusOK || body != "ok" {
		t.Fatalf("GET %s = %d %q, want 200 ok", url, code, body)
	}
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("serve after cancel = %v, want nil", err)
		}
	case <-time.After(shutdownTimeout + 5*time.Second):
		t.Fatal("serve did not return after cancel")
	}
	if c, err := net.Dial("tcp", srv.Addr().String()); err == nil {
		c.Close()
		t.Error("listener still accepts after shutdown")
	}
}

func TestListenHTTPPortTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	_, err = listenHTTP(t.Context(), "metrics", taken.Addr().String(), slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "listen for metrics on "+taken.Addr().String()) {
		t.Errorf("listenHTTP on a taken port = %v, want an error naming it", err)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}
