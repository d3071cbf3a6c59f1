package controlplane

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/natwall/natwall/controlplane/api"
	"github.com/natwall/natwall/dataplane"
)

func TestDaemonServesAPISocket(t *testing.T) {
	cfg := testDaemonConfig()
	cfg.API.Socket = filepath.Join(t.TempDir(), "run", "natwall.sock")
	dp := &fakeDataplane{attachments: []dataplane.Attachment{{Interface: "eth0", Mode: dataplane.ModeGeneric}}}
	dp.attached.Store(true)
	d, logs, _ := testDaemon(t, cfg, dp)
	r := start(t, d)
	r.waitReady(t)

	fi, err := os.Lstat(cfg.API.Socket)
	if err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != api.SocketMode {
		t.Fatalf("api socket %v, %v; want a socket of mode %v", fi.Mode(), err, api.SocketMode)
	}
	c := api.NewClient(cfg.API.Socket)
	st, err := c.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Interfaces) != 1 || st.Interfaces[0] != (api.Interface{Name: "eth0", Mode: "generic", Attached: true}) {
		t.Errorf("status interfaces %+v", st.Interfaces)
	}
	if len(st.RulePaths) != 0 || st.LastReload == nil || st.LastReload.Trigger != "start" || !st.LastReload.OK {
		t.Errorf("status of a daemon without rules: %+v, want the start's load as the last reload", st)
	}
	// Without rule paths a reload reads the config alone.
	var apiErr *api.Error
	if res, err := c.Reload(t.Context()); err != nil || !res.OK || res.Trigger != "api" || len(res.Changed) != 0 {
		t.Errorf("reload without rule paths = %+v, %v; want a good config reload that changed nothing", res, err)
	}
	if list, err := c.Rules(t.Context()); err != nil || len(list) != 0 {
		t.Errorf("rules without rule paths = %v, %v", list, err)
	}
	// This dataplane has no flow tables: conntrack is unavailable, said so.
	if _, err := c.Conntrack(t.Context(), api.FlowFilter{}); !errors.As(err, &apiErr) || apiErr.StatusCode != 503 {
		t.Errorf("conntrack without flow tables = %v, want 503", err)
	}
	if !strings.Contains(logs.String(), cfg.API.Socket) {
		t.Errorf("the running log does not name the api socket:\n%s", logs)
	}

	// A second daemon on the same socket stops before it opens the dataplane.
	cfg2 := cfg
	d2, _, opened := testDaemon(t, cfg2, &fakeDataplane{})
	err = d2.run(t.Context())
	if !errors.Is(err, api.ErrSocketInUse) {
		t.Errorf("second daemon on a live socket: %v, want ErrSocketInUse", err)
	}
	if len(*opened) != 0 {
		t.Errorf("the refused daemon opened the dataplane %d times", len(*opened))
	}
	if _, err := c.Status(t.Context()); err != nil {
		t.Errorf("the first daemon's api is gone after the refused start: %v", err)
	}

	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(cfg.API.Socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("api socket left after stop: %v", err)
	}
	if _, err := c.Status(t.Context()); !errors.Is(err, api.ErrUnreachable) {
		t.Errorf("status after stop = %v, want unreachable", err)
	}
}

func TestDaemonFailedStartRemovesSocket(t *testing.T) {
	cfg := testDaemonConfig()
	cfg.API.Socket = filepath.Join(t.TempDir(), "natwall.sock")
	d, _, _ := testDaemon(t, cfg, &fakeDataplane{})
	d.openDataplane = func(dataplane.Options) (Dataplane, error) { return nil, errors.New("no bpffs") }
	if err := d.run(t.Context()); err == nil {
		t.Fatal("run succeeded without a dataplane")
	}
	if _, err := os.Lstat(cfg.API.Socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("api socket left after a failed start: %v", err)
	}
}

func flowEvent(typ dataplane.FlowEventType, proto uint8, src, dst string) *dataplane.FlowEvent {
	return &dataplane.FlowEvent{Type: typ, Time: time.Unix(1700000000, 0), Flow: dataplane.Flow{
		Proto: proto, Src: netip.MustParseAddrPort(src), Dst: netip.MustParseAddrPort(dst),
		ReplySrc: netip.MustParseAddrPort(dst), ReplyDst: netip.MustParseAddrPort(src)}}
}

func TestFlowHubFiltersAndDrops(t *testing.T) {
	hub := newFlowHub()
	// No subscriber: events cost nothing and go nowhere.
	hub.HandleFlowEvent(flowEvent(dataplane.FlowStarted, 17, "198.18.0.2:4000", "198.19.0.9:53"))

	ctx, cancel := context.WithCancel(t.Context())
	udp, err := hub.Subscribe(ctx, api.FlowFilter{Proto: api.ProtoUDP, Types: []string{"flow_end"}})
	if err != nil {
		t.Fatal(err)
	}
	all, err := hub.Subscribe(ctx, api.FlowFilter{Addr: netip.MustParsePrefix("198.19.0.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	hub.HandleFlowEvent(flowEvent(dataplane.FlowStarted, 17, "198.18.0.2:4000", "198.19.0.9:53"))
	hub.HandleFlowEvent(flowEvent(dataplane.FlowEnded, 6, "198.18.0.2:4001", "198.19.0.9:443"))
	hub.HandleFlowEvent(flowEvent(dataplane.FlowEnded, 17, "198.18.0.2:4000", "198.19.0.9:53"))
	hub.HandleFlowEvent(flowEvent(dataplane.FlowEnded, 17, "198.18.0.2:4002", "198.20.0.1:53"))

	if ev := <-udp; ev.Type != "flow_end" || ev.Flow.Proto != "udp" || ev.Flow.Src != "198.18.0.2:4000" {
		t.Errorf("udp subscriber got %+v", ev)
	}
	if ev := <-udp; ev.Flow.Dst != "198.20.0.1:53" {
		t.Errorf("udp subscriber's second event %+v", ev)
	}
	for i, want := range []string{"flow_start", "flow_end", "flow_end"} {
		if ev := <-all; ev.Type != want || !strings.HasPrefix(ev.Flow.Dst, "198.19.0.9:") {
			t.Errorf("address subscriber's event %d: %+v, want %s to 198.19.0.9", i, ev, want)
		}
	}

	// A subscriber that does not read loses events, counted on the next.
	for range flowSubscriberBuffer + 5 {
		hub.HandleFlowEvent(flowEvent(dataplane.FlowStarted, 6, "198.18.0.3:5000", "198.19.0.1:80"))
	}
	for range flowSubscriberBuffer {
		if ev := <-all; ev.Lost != 0 {
			t.Fatalf("a buffered event says %d lost", ev.Lost)
		}
	}
	hub.HandleFlowEvent(flowEvent(dataplane.FlowEnded, 6, "198.18.0.3:5000", "198.19.0.1:80"))
	if ev := <-all; ev.Lost != 5 || ev.Type != "flow_end" {
		t.Errorf("after the overflow: %+v, want 5 lost", ev)
	}

	cancel()
	for range udp {
	}
	for range all {
	}
	if n := hub.active.Load(); n != 0 {
		t.Errorf("%d subscribers left after cancel", n)
	}
	hub.HandleFlowEvent(flowEvent(dataplane.FlowStarted, 6, "198.18.0.3:5000", "198.19.0.1:80")) // must not send on a closed channel
}
