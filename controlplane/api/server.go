package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"
)

// Providers are what the server serves; a nil provider's paths answer
// 503 (e.g. no flow source while flow events are unavailable).
type Providers struct {
	Status    StatusProvider
	Rules     RulesProvider
	Conntrack ConntrackProvider
	Flows     FlowSource
	Reloader  Reloader
}

// ErrorBody is every error answer's body.
type ErrorBody struct {
	Error string `json:"error"`
	// Details are the problems behind a validation error, each
	// file:line:col: reason.
	Details []string `json:"details,omitempty"`
}

// maxRequestBody bounds request bodies: the largest is an explain request.
const maxRequestBody = 64 << 10

// NewHandler serves the API from p.
func NewHandler(p Providers, log *slog.Logger) http.Handler {
	h := &handler{p: p, log: log}
	mux := http.NewServeMux()
	methods := map[string]string{}
	handle := func(method, path string, fn http.HandlerFunc) {
		methods[path] = method
		mux.HandleFunc(method+" "+path, fn)
	}
	handle(http.MethodGet, StatusPath, h.status)
	handle(http.MethodGet, RulesPath, h.rules)
	handle(http.MethodPost, ExplainPath, h.explain)
	handle(http.MethodGet, ConntrackPath, h.conntrack)
	handle(http.MethodPost, FlushPath, h.flush)
	handle(http.MethodGet, NATPath, h.nat)
	handle(http.MethodGet, FlowsPath, h.flows)
	handle(http.MethodPost, ReloadPath, h.reload)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if m, ok := methods[r.URL.Path]; ok {
			w.Header().Set("Allow", m)
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s takes %s, not %s", r.URL.Path, m, r.Method), nil)
			return
		}
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such API path %s", r.URL.Path), nil)
	})
	return mux
}

type handler struct {
	p   Providers
	log *slog.Logger
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string, details []string) {
	writeJSON(w, code, ErrorBody{Error: msg, Details: details})
}

// unavailable answers for a provider the daemon does not have.
func unavailable(w http.ResponseWriter, what string) {
	writeError(w, http.StatusServiceUnavailable, what+" is not available from this daemon", nil)
}

// ErrNotConfigured is returned by providers for what the daemon's config
// leaves out, such as a reload without rule paths; it answers 409.
var ErrNotConfigured = errors.New("not configured")

// fail answers a provider's error.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, ErrNotConfigured) {
		writeError(w, http.StatusConflict, err.Error(), nil)
		return
	}
	h.log.Warn("api request failed", "path", r.URL.Path, "error", err)
	writeError(w, http.StatusInternalServerError, err.Error(), nil)
}

// noQuery refuses parameters on paths that take none: a typo must not be
// silently ignored.
func noQuery(w http.ResponseWriter, r *http.Request) bool {
	if len(r.URL.Query()) > 0 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%s takes no parameters", r.URL.Path), nil)
		return false
	}
	return true
}

func (h *handler) status(w http.ResponseWriter, r *http.Request) {
	if h.p.Status == nil {
		unavailable(w, "status")
		return
	}
	if !noQuery(w, r) {
		return
	}
	st, err := h.p.Status.Status(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (h *handler) rules(w http.ResponseWriter, r *http.Request) {
	if h.p.Rules == nil {
		unavailable(w, "rules")
		return
	}
	if !noQuery(w, r) {
		return
	}
	list, err := h.p.Rules.Rules(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if list == nil {
		list = []Rule{}
	}
	writeJSON(w, http.StatusOK, list)
}

func (h *handler) explain(w http.ResponseWriter, r *http.Request) {
	if h.p.Rules == nil {
		unavailable(w, "explain")
		return
	}
	var req ExplainRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, maxRequestBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "explain request: "+err.Error(), nil)
		return
	}
	p, err := req.Packet()
	if err != nil {
		writeError(w, http.StatusBadRequest, "explain request: "+err.Error(), nil)
		return
	}
	info, err := req.L7()
	if err != nil {
		writeError(w, http.StatusBadRequest, "explain request: "+err.Error(), nil)
		return
	}
	ex, err := h.p.Rules.Explain(r.Context(), p, info)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ex)
}

// filter reads the request's flow filter; types only where events are,
// extra the path's other parameters.
func filter(w http.ResponseWriter, r *http.Request, events bool, extra ...string) (FlowFilter, bool) {
	f, err := filterFromQuery(r.URL.Query(), extra...)
	if err == nil && !events && len(f.Types) > 0 {
		err = errors.New("type filters flow events, not tracked flows")
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return f, false
	}
	return f, true
}

func (h *handler) conntrack(w http.ResponseWriter, r *http.Request) {
	if h.p.Conntrack == nil {
		unavailable(w, "conntrack")
		return
	}
	f, ok := filter(w, r, false)
	if !ok {
		return
	}
	flows, err := h.p.Conntrack.Flows(r.Context(), f)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if flows == nil {
		flows = []Flow{}
	}
	writeJSON(w, http.StatusOK, flows)
}

func (h *handler) flush(w http.ResponseWriter, r *http.Request) {
	if h.p.Conntrack == nil {
		unavailable(w, "conntrack")
		return
	}
	f, ok := filter(w, r, false, "all")
	if !ok {
		return
	}
	// Flushing everything takes an explicit all=true, so that a client
	// that lost its filter on the way cannot empty the table.
	all := r.URL.Query().Get("all")
	switch {
	case all != "" && all != "true":
		writeError(w, http.StatusBadRequest, fmt.Sprintf("all=%q: only all=true", all), nil)
		return
	case all == "true" && !f.IsZero():
		writeError(w, http.StatusBadRequest, "all=true goes without a filter", nil)
		return
	case all == "" && f.IsZero():
		writeError(w, http.StatusBadRequest, "no filter: give addr, port or proto, or all=true to flush every flow", nil)
		return
	}
	n, err := h.p.Conntrack.Flush(r.Context(), f)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.log.Info("flows flushed through the API", "flows", n, "filter", f.Query().Encode())
	writeJSON(w, http.StatusOK, FlushResult{Flushed: n})
}

func (h *handler) nat(w http.ResponseWriter, r *http.Request) {
	if h.p.Conntrack == nil {
		unavailable(w, "nat")
		return
	}
	if !noQuery(w, r) {
		return
	}
	usage, err := h.p.Conntrack.NAT(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if usage == nil {
		usage = []NATUsage{}
	}
	writeJSON(w, http.StatusOK, usage)
}

// flowsHeartbeat is how often an idle flow stream sends an empty line, so
// that a client whose daemon is gone finds out.
const flowsHeartbeat = 15 * time.Second

// flows streams flow events as JSON lines until the client goes or the
// daemon stops.
func (h *handler) flows(w http.ResponseWriter, r *http.Request) {
	if h.p.Flows == nil {
		unavailable(w, "flow events")
		return
	}
	f, ok := filter(w, r, true)
	if !ok {
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	events, err := h.p.Flows.Subscribe(ctx, f)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	enc := json.NewEncoder(w)
	beat := time.NewTicker(flowsHeartbeat)
	defer beat.Stop()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return
			}
			if err := enc.Encode(ev); err != nil {
				return
			}
		case <-beat.C:
			if _, err := io.WriteString(w, "\n"); err != nil {
				return
			}
		case <-ctx.Done():
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

func (h *handler) reload(w http.ResponseWriter, r *http.Request) {
	if h.p.Reloader == nil {
		unavailable(w, "reload")
		return
	}
	if !noQuery(w, r) {
		return
	}
	res, err := h.p.Reloader.Reload(r.Context())
	if errors.Is(err, ErrNotConfigured) {
		h.fail(w, r, err)
		return
	}
	if err != nil {
		// 422 for rule files that do not validate, each problem a detail;
		// 500 for the rest.
		msg := res.Error
		if msg == "" {
			msg = err.Error()
		}
		code := http.StatusInternalServerError
		if len(res.Errors) > 0 {
			code = http.StatusUnprocessableEntity
		}
		writeError(w, code, "reload: "+msg, res.Errors)
		return
	}
	writeJSON(w, http.StatusOK, res)
}
