package flowlog

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/natwall/natwall/dataplane"
)

var update = flag.Bool("update", false, "rewrite the golden files")

type ruleTable map[uint32]Rule

func (t ruleTable) Rule(n uint32) (Rule, bool) { r, ok := t[n]; return r, ok }

var (
	t0     = time.Date(2026, 12, 3, 9, 30, 0, 123456789, time.UTC)
	testRT = ruleTable{
		12: {ID: "allow-dns", Action: "allow"},
		40: {ID: "watch \"telnet\"\n", Action: "alert"},
	}
)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// eveCases are the records the golden files hold, one file per case.
var eveCases = []struct {
	name string
	ev   dataplane.FlowEvent
}{
	{"flow_udp_snat_timeout", dataplane.FlowEvent{Type: dataplane.FlowEnded, Time: t0.Add(40 * time.Second), ByGC: true, Flow: dataplane.Flow{
		Proto: 17, Src: ap("198.18.0.2:40000"), Dst: ap("198.19.0.9:53"),
		ReplySrc: ap("198.19.0.9:53"), ReplyDst: ap("198.18.255.1:1024"),
		Zone: 0, SNAT: true, SeenReply: true, RuleID: 12,
		Created: t0, LastSeen: t0.Add(10*time.Second + 500*time.Millisecond),
		PacketsOrig: 3, BytesOrig: 300, PacketsReply: 2, BytesReply: 250,
	}}},
	{"flow_tcp6_closed", dataplane.FlowEvent{Type: dataplane.FlowEnded, Time: t0.Add(time.Minute), Flow: dataplane.Flow{
		Proto: 6, Src: ap("[2001:db8:1::10]:5555"), Dst: ap("[2001:db8:2::10]:443"),
		ReplySrc: ap("[2001:db8:2::10]:443"), ReplyDst: ap("[2001:db8:1::10]:5555"),
		TCPState: 5, Zone: 2, SeenReply: true, RuleID: 99,
		Created: t0, LastSeen: t0.Add(2 * time.Second),
		PacketsOrig: 10, BytesOrig: 1000, PacketsReply: 12, BytesReply: 90000,
	}}},
	{"flow_icmp_active_new", dataplane.FlowEvent{Type: dataplane.FlowActive, Time: t0.Add(10 * time.Minute), ByGC: true, Flow: dataplane.Flow{
		Proto: 1, Src: ap("198.18.0.2:7"), Dst: ap("198.19.0.9:7"),
		ReplySrc: ap("198.19.0.9:7"), ReplyDst: ap("198.18.0.2:7"), Zone: 3, RuleID: 2,
		Created: t0, LastSeen: t0.Add(9 * time.Minute), PacketsOrig: 600, BytesOrig: 50400,
	}}},
	{"alert_escaped_signature", dataplane.FlowEvent{Type: dataplane.FlowAlert, Time: t0, Flow: dataplane.Flow{
		Proto: 6, Src: ap("198.19.0.9:33000"), Dst: ap("198.18.0.2:23"), Zone: 1, RuleID: 40,
	}}},
	{"alert_unknown_rule", dataplane.FlowEvent{Type: dataplane.FlowAlert, Time: t0, Flow: dataplane.Flow{
		Proto: 17, Src: ap("198.18.0.2:40000"), Dst: ap("198.19.0.9:53"), Zone: 0, RuleID: 7,
	}}},
}

// goldenEVE encodes ev and requires testdata/<name>.json to hold exactly
// the record (-update rewrites it); it returns the record.
func goldenEVE(t *testing.T, enc Encoder, ev *dataplane.FlowEvent, name string) []byte {
	t.Helper()
	got, ok := enc.AppendEvent(nil, ev)
	if !ok {
		t.Fatal("no record")
	}
	return goldenRecord(t, got, name)
}

// goldenRecord requires testdata/<name>.json to hold exactly got
// (-update rewrites it) and returns it.
func goldenRecord(t *testing.T, got []byte, name string) []byte {
	t.Helper()
	path := filepath.Join("testdata", name+".json")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	return got
}

func TestEVEGolden(t *testing.T) {
	enc := Encoder{Rules: testRT}
	for _, tc := range eveCases {
		t.Run(tc.name, func(t *testing.T) {
			got := goldenEVE(t, enc, &tc.ev, tc.name)
			var v map[string]any
			if err := json.Unmarshal(got, &v); err != nil {
				t.Fatalf("record is not JSON: %v", err)
			}
			if len(bytes.Split(bytes.TrimSuffix(got, []byte("\n")), []byte("\n"))) != 1 {
				t.Fatal("record spans lines")
			}
		})
	}
}

// TestEVEFieldSemantics checks the Suricata meanings that golden files
// only freeze: toserver is the initiator's side, times parse back, the
// alert of a first packet shares its flow's flow_id.
func TestEVEFieldSemantics(t *testing.T) {
	enc := Encoder{Rules: testRT}
	var rec struct {
		Timestamp string `json:"timestamp"`
		FlowID    uint64 `json:"flow_id"`
		SrcIP     string `json:"src_ip"`
		DestPort  int    `json:"dest_port"`
		Flow      struct {
			PktsToServer  uint64 `json:"pkts_toserver"`
			BytesToClient uint64 `json:"bytes_toclient"`
			Start, End    string
			Age           int
			State, Reason string
		} `json:"flow"`
		NAT struct {
			SrcIP   string `json:"src_ip"`
			SrcPort int    `json:"src_port"`
		} `json:"nat"`
	}
	ev := eveCases[0].ev
	b, _ := enc.AppendEvent(nil, &ev)
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	start, err := time.Parse(timeLayout, rec.Flow.Start)
	if err != nil || !start.Equal(ev.Flow.Created.Truncate(time.Microsecond)) {
		t.Errorf("start %q (%v), want %v", rec.Flow.Start, err, ev.Flow.Created)
	}
	if rec.SrcIP != "198.18.0.2" || rec.DestPort != 53 || rec.Flow.PktsToServer != 3 || rec.Flow.BytesToClient != 250 ||
		rec.Flow.Age != 10 || rec.Flow.State != "established" || rec.Flow.Reason != "timeout" ||
		rec.NAT.SrcIP != "198.18.255.1" || rec.NAT.SrcPort != 1024 {
		t.Errorf("record %+v", rec)
	}
	alert := dataplane.FlowEvent{Type: dataplane.FlowAlert, Time: t0, Flow: dataplane.Flow{Proto: 17, Src: ev.Flow.Src, Dst: ev.Flow.Dst}}
	if FlowID(&alert.Flow) != rec.FlowID {
		t.Errorf("alert flow_id %d, flow's %d", FlowID(&alert.Flow), rec.FlowID)
	}
	if _, ok := enc.AppendEvent(nil, &dataplane.FlowEvent{Type: dataplane.FlowStarted}); ok {
		t.Error("flow start logged")
	}
}

func TestEVENoAllocs(t *testing.T) {
	enc := Encoder{Rules: testRT}
	buf := make([]byte, 0, 4096)
	for _, tc := range eveCases {
		ev := tc.ev
		if n := testing.AllocsPerRun(1000, func() { buf, _ = enc.AppendEvent(buf[:0], &ev) }); n != 0 {
			t.Errorf("%s: %v allocations per record", tc.name, n)
		}
	}
}

func FuzzEVEString(f *testing.F) {
	for _, s := range []string{"", "allow-dns", "a\"b\\c\n\x00", "\xff\xfe", "ünï", "\u2028"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := appendString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%q encoded as %s: %v", s, b, err)
		}
		// encoding/json replaces each invalid byte with U+FFFD, as we do.
		raw, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var ref string
		if err := json.Unmarshal(raw, &ref); err != nil {
			t.Fatal(err)
		}
		if got != ref {
			t.Fatalf("%q round-tripped to %q, encoding/json gives %q", s, got, ref)
		}
	})
}

// l7Cases are alerts the inspector decided, with the name they carry.
var l7Cases = []struct {
	name string
	ev   dataplane.FlowEvent
	app  L7
}{
	{"alert_l7_tls_sni_denied", dataplane.FlowEvent{Type: dataplane.FlowAlert, Time: t0, Logged: true, Reason: dataplane.ReasonDropACLDeny, Flow: dataplane.Flow{
		Proto: 6, Src: ap("198.18.0.2:40000"), Dst: ap("198.19.0.9:443"), Zone: 0, RuleID: 12,
	}}, L7{Proto: "tls", Name: "evil.example.com"}},
	{"alert_l7_http_hostname", dataplane.FlowEvent{Type: dataplane.FlowAlert, Time: t0, Flow: dataplane.Flow{
		Proto: 6, Src: ap("[2001:db8::2]:40000"), Dst: ap("[2001:db8:1::2]:80"), Zone: 0, RuleID: 40,
	}}, L7{Proto: "http", Name: "api.example.com"}},
	{"alert_l7_tls_no_sni", dataplane.FlowEvent{Type: dataplane.FlowAlert, Time: t0, Flow: dataplane.Flow{
		Proto: 6, Src: ap("198.18.0.2:40001"), Dst: ap("198.19.0.9:443"), Zone: 0, RuleID: 40,
	}}, L7{Proto: "tls"}},
}

func TestEVEL7Golden(t *testing.T) {
	enc := Encoder{Rules: testRT}
	for _, tc := range l7Cases {
		t.Run(tc.name, func(t *testing.T) {
			got := goldenRecord(t, enc.AppendL7Alert(nil, &tc.ev, tc.app), tc.name)
			var v struct {
				AppProto string `json:"app_proto"`
				TLS      *struct {
					SNI string `json:"sni"`
				} `json:"tls"`
				HTTP *struct {
					Hostname string `json:"hostname"`
				} `json:"http"`
			}
			if err := json.Unmarshal(got, &v); err != nil {
				t.Fatalf("record is not JSON: %v", err)
			}
			name := ""
			switch {
			case v.TLS != nil:
				name = v.TLS.SNI
			case v.HTTP != nil:
				name = v.HTTP.Hostname
			}
			if v.AppProto != tc.app.Proto || name != tc.app.Name {
				t.Fatalf("app_proto %q name %q, want %q %q", v.AppProto, name, tc.app.Proto, tc.app.Name)
			}
		})
	}
	buf := make([]byte, 0, 4096)
	ev, app := l7Cases[0].ev, l7Cases[0].app
	if n := testing.AllocsPerRun(1000, func() { buf = enc.AppendL7Alert(buf[:0], &ev, app) }); n != 0 {
		t.Errorf("%v allocations per record", n)
	}
}
