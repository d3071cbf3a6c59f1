package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// ErrUnreachable matches the errors of a client that could not reach the
// daemon: no socket, nobody listening, or no permission to open it.
var ErrUnreachable = errors.New("natwall daemon unreachable")

// UnreachableError is a failed connection to the daemon's socket.
type UnreachableError struct {
	Socket string
	Err    error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach natwall at %s (is natwall run running, and are you root?): %v", e.Socket, e.Err)
}

func (e *UnreachableError) Unwrap() []error { return []error{ErrUnreachable, e.Err} }

// Error is an error answer of the daemon.
type Error struct {
	StatusCode int
	Message    string
	Details    []string
}

func (e *Error) Error() string {
	if len(e.Details) == 0 {
		return e.Message
	}
	return e.Message + ":\n  " + strings.Join(e.Details, "\n  ")
}

// Invalid reports an answer about input that does not validate, such as
// rule files a reload refused.
func (e *Error) Invalid() bool { return e.StatusCode == http.StatusUnprocessableEntity }

// Client talks to the daemon's API socket.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient is a client of the daemon listening at socket.
func NewClient(socket string) *Client {
	dialer := &net.Dialer{}
	return &Client{
		socket: socket,
		http: &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				conn, err := dialer.DialContext(ctx, "unix", socket)
				if err != nil {
					return nil, &UnreachableError{Socket: socket, Err: err}
				}
				return conn, nil
			},
			DisableCompression: true,
		}},
	}
}

// do sends a request and returns the response of a 2xx answer.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	u := url.URL{Scheme: "http", Host: "natwall", Path: path, RawQuery: q.Encode()}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var unreachable *UnreachableError
		if errors.As(err, &unreachable) {
			return nil, unreachable
		}
		return nil, fmt.Errorf("natwall api %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	var eb ErrorBody
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err := json.Unmarshal(data, &eb); err != nil || eb.Error == "" {
		eb.Error = fmt.Sprintf("natwall api %s %s: %s", method, path, resp.Status)
	}
	return nil, &Error{StatusCode: resp.StatusCode, Message: eb.Error, Details: eb.Details}
}

func (c *Client) call(ctx context.Context, method, path string, q url.Values, body, out any) error {
	resp, err := c.do(ctx, method, path, q, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("natwall api %s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// Status is the daemon's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	return st, c.call(ctx, http.MethodGet, StatusPath, nil, nil, &st)
}

// Rules lists the live rules with their hits.
func (c *Client) Rules(ctx context.Context) ([]Rule, error) {
	var out []Rule
	return out, c.call(ctx, http.MethodGet, RulesPath, nil, nil, &out)
}

// Explain explains a packet against the live rule set. Its result is
// decoded into out, which is a *rules.Explanation in the CLI.
func (c *Client) Explain(ctx context.Context, req ExplainRequest, out any) error {
	return c.call(ctx, http.MethodPost, ExplainPath, nil, req, out)
}

// Conntrack lists the tracked flows f selects.
func (c *Client) Conntrack(ctx context.Context, f FlowFilter) ([]Flow, error) {
	var out []Flow
	return out, c.call(ctx, http.MethodGet, ConntrackPath, f.Query(), nil, &out)
}

// Flush deletes the flows f selects; with all, f must be empty and every
// flow goes.
func (c *Client) Flush(ctx context.Context, f FlowFilter, all bool) (int, error) {
	q := f.Query()
	if all {
		q.Set("all", "true")
	}
	var out FlushResult
	return out.Flushed, c.call(ctx, http.MethodPost, FlushPath, q, nil, &out)
}

// NAT is the SNAT port use.
func (c *Client) NAT(ctx context.Context) ([]NATUsage, error) {
	var out []NATUsage
	return out, c.call(ctx, http.MethodGet, NATPath, nil, nil, &out)
}

// Reload applies the rule files again. A set that does not validate is
// an *Error whose Invalid is true, its Details each problem.
func (c *Client) Reload(ctx context.Context) (ReloadResult, error) {
	var res ReloadResult
	return res, c.call(ctx, http.MethodPost, ReloadPath, nil, nil, &res)
}

// Flows calls fn with each flow event f selects until ctx is done, the
// daemon stops (an error), or fn returns an error (returned) or
// ErrStopTail (nil is returned).
func (c *Client) Flows(ctx context.Context, f FlowFilter, fn func(FlowEvent) error) error {
	resp, err := c.do(ctx, http.MethodGet, FlowsPath, f.Query(), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue // heartbeat
		}
		var ev FlowEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			return fmt.Errorf("natwall api flows: decode event: %w", err)
		}
		if err := fn(ev); errors.Is(err, ErrStopTail) {
			return nil
		} else if err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("natwall api flows: %w", err)
	}
	return errors.New("natwall api flows: the daemon ended the stream (stopping?)")
}

// ErrStopTail, returned by a Flows callback, ends the tail without error.
var ErrStopTail = errors.New("stop tail")
