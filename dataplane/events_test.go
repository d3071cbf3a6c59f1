package dataplane

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"unsafe"
)

func encodeEvent(t testing.TB, raw natwallNwFlowEvent) []byte {
	var buf bytes.Buffer
	if err := binary.Write(&buf, binary.NativeEndian, &raw); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// reflectDecode is the decoder the daemon used before: binary.Read into the
// generated struct. The field reads must agree with it.
func reflectDecode(b []byte, clk monoClock) (FlowEvent, bool) {
	var raw natwallNwFlowEvent
	if binary.Read(bytes.NewReader(b), binary.NativeEndian, &raw) != nil {
		return FlowEvent{}, false
	}
	addr := func(b [16]uint8) netip.Addr {
		if raw.Family == 4 {
			return netip.AddrFrom4([4]byte(b[:4]))
		}
		return netip.AddrFrom16(b)
	}
	f := Flow{
		Proto:        raw.Proto,
		Src:          netip.AddrPortFrom(addr(raw.Saddr), port(raw.Sport)),
		Dst:          netip.AddrPortFrom(addr(raw.Daddr), port(raw.Dport)),
		ReplySrc:     netip.AddrPortFrom(addr(raw.NatDaddr), port(raw.NatDport)),
		ReplyDst:     netip.AddrPortFrom(addr(raw.NatSaddr), port(raw.NatSport)),
		TCPState:     TCPState(raw.TcpState),
		Zone:         Zone(raw.Zone),
		SNAT:         raw.Flags&uint8(natwallNwCtFlagsNW_CT_SNAT) != 0,
		DNAT:         raw.Flags&uint8(natwallNwCtFlagsNW_CT_DNAT) != 0,
		SeenReply:    raw.Flags&uint8(natwallNwCtFlagsNW_CT_SEEN_REPLY) != 0,
		RuleID:       raw.RuleId,
		PacketsOrig:  raw.PacketsOrig,
		BytesOrig:    raw.BytesOrig,
		PacketsReply: raw.PacketsReply,
		BytesReply:   raw.BytesReply,
	}
	if raw.CreatedNs != 0 {
		f.Created, f.LastSeen = clk.time(raw.CreatedNs), clk.time(raw.LastSeenNs)
	}
	return FlowEvent{Type: FlowEventType(raw.Type), Time: clk.time(raw.TimestampNs), Flow: f, Reason: Reason(raw.Reason)}, true
}

func be16(v uint16) uint16 { return port(v) }

func TestDecodeFlowEvent(t *testing.T) {
	if got := unsafe.Sizeof(natwallNwFlowEvent{}); got != flowEventSize {
		t.Fatalf("struct nw_flow_event is %d bytes, decoder assumes %d", got, flowEventSize)
	}
	clk := newMonoClock()
	v4 := natwallNwFlowEvent{
		TimestampNs: clk.mono - 1e9, Type: uint8(FlowEnded), Family: 4, Proto: 17, TcpState: 0,
		Reason: 7, RuleId: 42, Zone: 1,
		Flags: uint8(natwallNwCtFlagsNW_CT_SNAT | natwallNwCtFlagsNW_CT_SEEN_REPLY),
		Saddr: [16]uint8{198, 18, 0, 2}, Daddr: [16]uint8{198, 19, 0, 9},
		NatSaddr: [16]uint8{198, 18, 255, 1}, NatDaddr: [16]uint8{198, 19, 0, 9},
		Sport: be16(40000), Dport: be16(53), NatSport: be16(1024), NatDport: be16(53),
		PacketsOrig: 3, BytesOrig: 300, PacketsReply: 2, BytesReply: 250,
		CreatedNs: clk.mono - 5e9, LastSeenNs: clk.mono - 2e9,
	}
	v6 := natwallNwFlowEvent{
		TimestampNs: clk.mono, Type: uint8(FlowStarted), Family: 6, Proto: 6, TcpState: 2, RuleId: 7,
		Saddr: [16]uint8{0x20, 0x01, 0x0d, 0xb8, 15: 1}, Daddr: [16]uint8{0x20, 0x01, 0x0d, 0xb8, 15: 2},
		NatSaddr: [16]uint8{0x20, 0x01, 0x0d, 0xb8, 15: 1}, NatDaddr: [16]uint8{0x20, 0x01, 0x0d, 0xb8, 15: 2},
		Sport: be16(5555), Dport: be16(443), NatSport: be16(5555), NatDport: be16(443),
	}
	for _, tc := range []struct {
		name string
		raw  natwallNwFlowEvent
		src  string
		rdst string
	}{
		{"ipv4 snat", v4, "198.18.0.2:40000", "198.18.255.1:1024"},
		{"ipv6", v6, "[2001:db8::1]:5555", "[2001:db8::1]:5555"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := encodeEvent(t, tc.raw)
			var got FlowEvent
			if err := DecodeFlowEvent(b, clk, &got); err != nil {
				t.Fatal(err)
			}
			want, _ := reflectDecode(b, clk)
			if got != want {
				t.Fatalf("decoded\n%+v\nwant\n%+v", got, want)
			}
			if got.Flow.Src.String() != tc.src || got.Flow.ReplyDst.String() != tc.rdst {
				t.Fatalf("src %v reply dst %v, want %s %s", got.Flow.Src, got.Flow.ReplyDst, tc.src, tc.rdst)
			}
			if allocs := testing.AllocsPerRun(1000, func() { _ = DecodeFlowEvent(b, clk, &got) }); allocs != 0 {
				t.Fatalf("%v allocations per decoded event, want 0", allocs)
			}
		})
	}
	if err := DecodeFlowEvent(make([]byte, flowEventSize-1), clk, new(FlowEvent)); err == nil {
		t.Fatal("short event decoded without error")
	}
}

func FuzzDecodeFlowEvent(f *testing.F) {
	f.Add(make([]byte, flowEventSize))
	seed := make([]byte, flowEventSize)
	seed[9] = 4
	f.Add(seed)
	clk := newMonoClock()
	f.Fuzz(func(t *testing.T, b []byte) {
		var got FlowEvent
		err := DecodeFlowEvent(b, clk, &got)
		want, ok := reflectDecode(b, clk)
		if (err == nil) != ok {
			t.Fatalf("decoder error %v, reflection ok %v", err, ok)
		}
		if ok && got != want {
			t.Fatalf("decoded %+v, want %+v", got, want)
		}
	})
}
