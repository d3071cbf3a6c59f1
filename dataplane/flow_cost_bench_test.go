package dataplane

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// cpuTime is the process's user and system CPU time: the machine is
// shared, so wall time per op says little about cost.
func cpuTime(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the CPU time per op since start, in milliseconds.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuTime(b)-start)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
}

// benchState loads the dataplane's maps with flow tables of size entries
// and fills them with n established, translated IPv4 flows and their SNAT
// mappings, as a gateway carrying n long flows holds them.
func benchState(b *testing.B, size, n int) *State {
	b.Helper()
	requireRoot(b)
	spec, err := loadNatwall()
	if err != nil {
		b.Fatal(err)
	}
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinNone
		switch m.Name {
		case "nw_ct4", "nw_ct4_rev", "nw_ct6", "nw_snat4_fwd", "nw_snat4_rev":
			m.MaxEntries = uint32(size)
		}
	}
	var objs natwallObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		b.Fatalf("load: %+v", err)
	}
	b.Cleanup(func() { objs.Close() })
	if err := applySettings(&objs, natSettings(1024, 65535)); err != nil {
		b.Fatal(err)
	}
	now := newMonoClock().mono
	ext := binary.LittleEndian.Uint32([]byte{198, 18, 255, 1})
	keys := make([]natwallNwTuple4, n)
	vals := make([]natwallNwCt4Entry, n)
	revs := make([]natwallNwTuple4, n)
	revVals := make([]natwallNwTuple4, n)
	mk := make([]natwallNwSnat4Key, n)
	mv := make([]natwallNwSnat4Endpoint, n)
	fk := make([]natwallNwSnat4Key, n)
	fv := make([]natwallNwSnat4Endpoint, n)
	for i := range n {
		src := binary.LittleEndian.Uint32([]byte{198, 18, byte(i >> 16), byte(i >> 8)})
		dst := binary.LittleEndian.Uint32([]byte{198, 19, 0, 9})
		sport, extPort := port(uint16(i)), port(uint16(1024+i%60000))
		extAddr := ext + uint32(i/60000)<<24
		keys[i] = natwallNwTuple4{Saddr: src, Daddr: dst, Sport: sport, Dport: port(443), Proto: 6}
		reply := natwallNwTuple4{Saddr: dst, Daddr: extAddr, Sport: port(443), Dport: extPort, Proto: 6}
		vals[i] = natwallNwCt4Entry{St: natwallNwCtState{CreatedNs: now, LastSeenNs: now, TcpState: uint8(natwallNwTcpStateNW_TCP_ESTABLISHED),
			Flags: uint8(natwallNwCtFlagsNW_CT_SNAT | natwallNwCtFlagsNW_CT_SEEN_REPLY), PacketsOrig: 10}, Reply: reply}
		revs[i], revVals[i] = reply, keys[i]
		mk[i] = natwallNwSnat4Key{Addr: extAddr, Port: extPort, Proto: 6}
		mv[i] = natwallNwSnat4Endpoint{Addr: src, Port: sport, CreatedNs: now}
		fk[i] = natwallNwSnat4Key{Addr: src, Port: sport, Proto: 6}
		fv[i] = natwallNwSnat4Endpoint{Addr: extAddr, Port: extPort, CreatedNs: now}
	}
	for _, fill := range []struct {
		m    *ebpf.Map
		k, v any
	}{{objs.NwCt4, keys, vals}, {objs.NwCt4Rev, revs, revVals}, {objs.NwSnat4Rev, mk, mv}, {objs.NwSnat4Fwd, fk, fv}} {
		if _, err := fill.m.BatchUpdate(fill.k, fill.v, nil); err != nil {
			b.Fatalf("fill %v: %v", fill.m, err)
		}
	}
	d := Dataplane{objs: objs}
	return d.State()
}

// BenchmarkGCTick is one collection tick plus one scrape over 100,000
// established flows: before, the three per-entry walks and the SNAT walk
// of every scrape; after, one batched walk whose result the scrape reads.
func BenchmarkGCTick(b *testing.B) {
	const flows = 100_000
	st := benchState(b, 131072, flows)
	b.Run("before", func(b *testing.B) {
		start := cpuTime(b)
		defer func() { reportCPU(b, start) }()
		for b.Loop() {
			now := time.Now()
			if gone, err := st.CollectExpired(now); err != nil || len(gone) != 0 {
				b.Fatalf("%d expired, %v", len(gone), err)
			}
			if _, err := st.CollectMappings(now); err != nil {
				b.Fatal(err)
			}
			if u, err := st.Usage(); err != nil || u.FlowsV4 != flows {
				b.Fatalf("usage %+v, %v", u, err)
			}
			if _, err := st.SNATUsage(); err != nil {
				b.Fatal(err)
			}
			if _, err := st.Stats(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("after", func(b *testing.B) {
		start := cpuTime(b)
		defer func() { reportCPU(b, start) }()
		for b.Loop() {
			res, err := st.Collect(time.Now())
			if err != nil || res.Usage.FlowsV4 != flows || len(res.Expired) != 0 {
				b.Fatalf("%+v, %v", res.Usage, err)
			}
			if _, err := st.Stats(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkFlowEventDecode compares the decoder the daemon used
// (binary.Read into the generated struct) with the field decoder.
func BenchmarkFlowEventDecode(b *testing.B) {
	clk := newMonoClock()
	raw := natwallNwFlowEvent{TimestampNs: clk.mono, Type: uint8(FlowEnded), Family: 4, Proto: 6,
		Saddr: [16]uint8{198, 18, 0, 2}, Daddr: [16]uint8{198, 19, 0, 9}, CreatedNs: clk.mono - 1e9, LastSeenNs: clk.mono}
	var buf bytes.Buffer
	if err := binary.Write(&buf, binary.NativeEndian, &raw); err != nil {
		b.Fatal(err)
	}
	rec := buf.Bytes()
	b.Run("reflect", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := reflectDecode(rec, clk); !ok {
				b.Fatal("decode")
			}
		}
	})
	b.Run("fields", func(b *testing.B) {
		b.ReportAllocs()
		var ev FlowEvent
		for b.Loop() {
			if err := DecodeFlowEvent(rec, clk, &ev); err != nil {
				b.Fatal(err)
			}
		}
	})
}
