package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/natwall/natwall/rules"
)

// daemonState is an in-memory daemon behind the API's provider
// interfaces: it keeps flows and rules, and records what it was asked.
type daemonState struct {
	mu        sync.Mutex
	flows     []Flow
	filters   []FlowFilter
	flushed   []FlowFilter
	packets   []rules.Packet
	reloadErr error
	reloadRes ReloadResult
	events    chan FlowEvent
}

func (d *daemonState) Status(context.Context) (Status, error) {
	return Status{Version: "v1.2.3", Interfaces: []Interface{{Name: "eth0", Mode: "native", Attached: true}}, RuleGeneration: 4}, nil
}

func (d *daemonState) Rules(context.Context) ([]Rule, error) {
	return []Rule{{ID: "web", Number: 3, Stage: "stateful", Priority: 10, Action: "allow", At: "r.yaml:3:7", Hits: 9}}, nil
}

func (d *daemonState) Explain(_ context.Context, p rules.Packet, _ *rules.L7Info) (rules.Explanation, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.packets = append(d.packets, p)
	return rules.Explanation{Packet: "p", Verdict: "allowed"}, nil
}

func (d *daemonState) Flows(_ context.Context, f FlowFilter) ([]Flow, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.filters = append(d.filters, f)
	return d.flows, nil
}

func (d *daemonState) Flush(_ context.Context, f FlowFilter) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.flushed = append(d.flushed, f)
	return 2, nil
}

func (d *daemonState) NAT(context.Context) ([]NATUsage, error) {
	return []NATUsage{{Address: "198.19.0.1", Protocol: "tcp", InUse: 1, Capacity: 10}}, nil
}

func (d *daemonState) Subscribe(ctx context.Context, f FlowFilter) (<-chan FlowEvent, error) {
	d.mu.Lock()
	d.filters = append(d.filters, f)
	d.mu.Unlock()
	out := make(chan FlowEvent)
	go func() {
		defer close(out)
		for {
			select {
			case ev := <-d.events:
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

func (d *daemonState) Reload(context.Context) (ReloadResult, error) { return d.reloadRes, d.reloadErr }
func (d *daemonState) LastResult() ReloadResult                     { return d.reloadRes }

func (d *daemonState) providers() Providers {
	return Providers{Status: d, Rules: d, Conntrack: d, Flows: d, Reloader: d}
}

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestHandlerAnswers(t *testing.T) {
	tests := []struct {
		name, method, target, body string
		state                      func(*daemonState)
		noProviders                bool
		code                       int
		// wantBody must appear in the answer.
		wantBody string
	}{
		{name: "status", method: "GET", target: StatusPath, code: 200, wantBody: `"rule_generation": 4`},
		{name: "status with a parameter", method: "GET", target: StatusPath + "?verbose=1", code: 400, wantBody: "takes no parameters"},
		{name: "status by POST", method: "POST", target: StatusPath, code: 405},
		{name: "unknown path", method: "GET", target: "/v1/statsu", code: 404, wantBody: "no such API path /v1/statsu"},
		{name: "unversioned path", method: "GET", target: "/status", code: 404},
		{name: "rules", method: "GET", target: RulesPath, code: 200, wantBody: `"hits": 9`},
		{name: "nat", method: "GET", target: NATPath, code: 200, wantBody: `"in_use": 1`},
		{name: "conntrack", method: "GET", target: ConntrackPath, code: 200, wantBody: "[]"},
		{name: "conntrack bad port", method: "GET", target: ConntrackPath + "?port=http", code: 400, wantBody: `port \"http\"`},
		{name: "conntrack port 0", method: "GET", target: ConntrackPath + "?port=0", code: 400},
		{name: "conntrack bad addr", method: "GET", target: ConntrackPath + "?addr=198.18.0.300", code: 400},
		{name: "conntrack unknown parameter", method: "GET", target: ConntrackPath + "?src=198.18.0.1", code: 400, wantBody: `unknown parameter \"src\"`},
		{name: "conntrack repeated parameter", method: "GET", target: ConntrackPath + "?port=1&port=2", code: 400},
		{name: "conntrack event type", method: "GET", target: ConntrackPath + "?type=alert", code: 400},
		{name: "conntrack all", method: "GET", target: ConntrackPath + "?all=true", code: 400},
		{name: "flush without filter", method: "POST", target: FlushPath, code: 400, wantBody: "no filter"},
		{name: "flush all", method: "POST", target: FlushPath + "?all=true", code: 200, wantBody: `"flushed": 2`},
		{name: "flush all with filter", method: "POST", target: FlushPath + "?all=true&port=53", code: 400},
		{name: "flush all=1", method: "POST", target: FlushPath + "?all=1", code: 400},
		{name: "flush by GET", method: "GET", target: FlushPath, code: 405},
		{name: "explain", method: "POST", target: ExplainPath, body: `{"src":"198.18.0.1","dst":"198.19.0.1","protocol":6,"dst_port":443,"direction":"outbound"}`,
			code: 200, wantBody: `"verdict": "allowed"`},
		{name: "explain not json", method: "POST", target: ExplainPath, body: `src=1`, code: 400},
		{name: "explain unknown field", method: "POST", target: ExplainPath, body: `{"src":"198.18.0.1","dst":"198.19.0.1","dport":443,"direction":"outbound"}`,
			code: 400, wantBody: "unknown field"},
		{name: "explain bad direction", method: "POST", target: ExplainPath, body: `{"src":"198.18.0.1","dst":"198.19.0.1","direction":"up"}`,
			code: 400, wantBody: `direction \"up\"`},
		{name: "explain no addresses", method: "POST", target: ExplainPath, body: `{"direction":"outbound"}`, code: 400},
		{name: "explain huge body", method: "POST", target: ExplainPath, body: `{"src":"` + strings.Repeat("1", maxRequestBody) + `"}`, code: 400},
		{name: "reload", method: "POST", target: ReloadPath, state: func(d *daemonState) {
			d.reloadRes = ReloadResult{OK: true, Stateful: 2, Generation: 5}
		}, code: 200, wantBody: `"generation": 5`},
		{name: "reload of broken rules", method: "POST", target: ReloadPath, state: func(d *daemonState) {
			d.reloadRes = ReloadResult{Error: "1 errors", Errors: []string{"r.yaml:3:39: action \"alow\""}}
			d.reloadErr = errors.New("1 errors")
		}, code: 422, wantBody: `r.yaml:3:39`},
		{name: "reload that fails to apply", method: "POST", target: ReloadPath, state: func(d *daemonState) {
			d.reloadErr = errors.New("apply rule set: map full")
		}, code: 500, wantBody: "map full"},
		{name: "reload without rules", method: "POST", target: ReloadPath, state: func(d *daemonState) {
			d.reloadErr = fmt.Errorf("no rule paths: %w", ErrNotConfigured)
		}, code: 409, wantBody: "no rule paths"},
		{name: "no status provider", method: "GET", target: StatusPath, noProviders: true, code: 503, wantBody: "not available"},
		{name: "no flow source", method: "GET", target: FlowsPath, noProviders: true, code: 503},
		{name: "no reloader", method: "POST", target: ReloadPath, noProviders: true, code: 503},
		{name: "flows bad type", method: "GET", target: FlowsPath + "?type=flow_begin", code: 400, wantBody: "flow_begin"},
		{name: "flows all", method: "GET", target: FlowsPath + "?all=true", code: 400, wantBody: `unknown parameter \"all\"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &daemonState{}
			if tt.state != nil {
				tt.state(d)
			}
			p := d.providers()
			if tt.noProviders {
				p = Providers{}
			}
			req := httptest.NewRequest(tt.method, tt.target, strings.NewReader(tt.body))
			rec := httptest.NewRecorder()
			NewHandler(p, discard).ServeHTTP(rec, req)
			if rec.Code != tt.code {
				t.Fatalf("%s %s = %d, want %d: %s", tt.method, tt.target, rec.Code, tt.code, rec.Body)
			}
			if !strings.Contains(rec.Body.String(), tt.wantBody) {
				t.Errorf("answer %s lacks %s", rec.Body, tt.wantBody)
			}
			if tt.code >= 400 {
				var eb ErrorBody
				if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Error == "" {
					t.Errorf("error answer %q is not an ErrorBody: %v", rec.Body, err)
				}
			}
		})
	}
}

func TestHandlerPassesFilters(t *testing.T) {
	d := &daemonState{}
	h := NewHandler(d.providers(), discard)
	for _, target := range []string{
		ConntrackPath + "?addr=198.18.0.7&proto=udp",
		ConntrackPath + "?addr=198.18.1.9/24&port=53",
	} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", target, nil))
	}
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", FlushPath+"?proto=17", nil))
	want := []FlowFilter{
		{Addr: netip.MustParsePrefix("198.18.0.7/32"), Proto: ProtoUDP},
		{Addr: netip.MustParsePrefix("198.18.1.0/24"), Port: 53},
	}
	if !reflect.DeepEqual(d.filters, want) {
		t.Errorf("conntrack filters %+v, want %+v", d.filters, want)
	}
	if !reflect.DeepEqual(d.flushed, []FlowFilter{{Proto: ProtoUDP}}) {
		t.Errorf("flush filters %+v", d.flushed)
	}
}

// serve runs the API on a socket in a temporary directory.
func serve(t *testing.T, p Providers) (*Client, string) {
	t.Helper()
	return serveAt(t, filepath.Join(t.TempDir(), "natwall.sock"), p)
}

func serveAt(t *testing.T, path string, p Providers) (*Client, string) {
	t.Helper()
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, NewHandler(p, discard), discard) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return NewClient(path), path
}

func TestClientOverSocket(t *testing.T) {
	d := &daemonState{flows: []Flow{{Proto: "udp", Src: "198.18.0.2:4000", Dst: "198.19.0.9:53"}}}
	c, _ := serve(t, d.providers())
	ctx := t.Context()

	st, err := c.Status(ctx)
	if err != nil || st.Version != "v1.2.3" || st.Interfaces[0].Name != "eth0" {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	flows, err := c.Conntrack(ctx, FlowFilter{Port: 53})
	if err != nil || !reflect.DeepEqual(flows, d.flows) {
		t.Fatalf("Conntrack = %+v, %v", flows, err)
	}
	if n, err := c.Flush(ctx, FlowFilter{}, true); err != nil || n != 2 {
		t.Fatalf("Flush(all) = %d, %v", n, err)
	}
	_, err = c.Flush(ctx, FlowFilter{}, false)
	var apiErr *Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 {
		t.Fatalf("Flush without filter: %v, want a 400 answer", err)
	}
	var ex rules.Explanation
	req := ExplainRequest{Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.19.0.1"), Protocol: ProtoTCP, DstPort: 443, Direction: "inbound"}
	if err := c.Explain(ctx, req, &ex); err != nil || ex.Verdict != "allowed" {
		t.Fatalf("Explain = %+v, %v", ex, err)
	}
	if p := d.packets[0]; p.Direction != rules.Inbound || !p.HasPorts || p.DstPort != 443 {
		t.Errorf("the daemon was asked about %+v", p)
	}

	d.reloadRes = ReloadResult{Errors: []string{"r.yaml:1:2: bad"}}
	d.reloadErr = errors.New("bad rules")
	_, err = c.Reload(ctx)
	if !errors.As(err, &apiErr) || !apiErr.Invalid() || !reflect.DeepEqual(apiErr.Details, []string{"r.yaml:1:2: bad"}) {
		t.Fatalf("Reload of bad rules: %#v", err)
	}
}

func TestClientFlowsTail(t *testing.T) {
	d := &daemonState{events: make(chan FlowEvent)}
	c, _ := serve(t, d.providers())
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	sent := []FlowEvent{
		{Type: "flow_start", Flow: Flow{Proto: "tcp", Src: "198.18.0.2:4000"}},
		{Type: "flow_end", Reason: "none", Lost: 3, Flow: Flow{Proto: "tcp", Src: "198.18.0.2:4000"}},
	}
	go func() {
		for _, ev := range sent {
			select {
			case d.events <- ev:
			case <-ctx.Done():
			}
		}
	}()
	var got []FlowEvent
	err := c.Flows(ctx, FlowFilter{Proto: ProtoTCP, Types: []string{"flow_start", "flow_end"}}, func(ev FlowEvent) error {
		got = append(got, ev)
		if len(got) == len(sent) {
			return ErrStopTail
		}
		return nil
	})
	if err != nil || !reflect.DeepEqual(got, sent) {
		t.Fatalf("Flows = %+v, %v; want %+v", got, err, sent)
	}
	if f := d.filters[0]; f.Proto != ProtoTCP || !reflect.DeepEqual(f.Types, []string{"flow_start", "flow_end"}) {
		t.Errorf("subscribed with %+v", f)
	}
	// A callback's own error ends the tail with that error. A new daemon,
	// so that the first tail's subscription cannot take the event.
	d2 := &daemonState{events: make(chan FlowEvent)}
	c2, _ := serve(t, d2.providers())
	boom := errors.New("boom")
	go func() { d2.events <- sent[0] }()
	if err := c2.Flows(ctx, FlowFilter{}, func(FlowEvent) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("Flows with a failing callback = %v", err)
	}
}

func TestClientUnreachable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "none.sock")
	_, err := NewClient(path).Status(t.Context())
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), path) {
		t.Fatalf("Status with no daemon = %v, want ErrUnreachable naming %s", err, path)
	}
}

func TestServeEndsStreamsAtStop(t *testing.T) {
	d := &daemonState{events: make(chan FlowEvent)}
	path := filepath.Join(t.TempDir(), "natwall.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, NewHandler(d.providers(), discard), discard) }()
	tail := make(chan error, 1)
	subscribed := make(chan struct{})
	go func() {
		tail <- NewClient(path).Flows(context.Background(), FlowFilter{}, func(FlowEvent) error {
			close(subscribed)
			return nil
		})
	}()
	d.events <- FlowEvent{Type: "flow_start"}
	<-subscribed
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(shutdownTimeout + 2*time.Second):
		t.Fatal("Serve did not return with a flow stream open")
	}
	if err := <-tail; err == nil || !strings.Contains(err.Error(), "ended the stream") {
		t.Errorf("the tail ended with %v, want the daemon's end of stream", err)
	}
}
