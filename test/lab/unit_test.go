package lab

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// These tests need neither root nor namespaces.

func TestHostAddrs(t *testing.T) {
	tests := []struct {
		server bool
		i      int
		v4, v6 string
	}{
		{false, 0, "198.18.1.10", "2001:db8:1::10"},
		{false, 15, "198.18.1.25", "2001:db8:1::25"},
		{false, 90, "198.18.1.100", "2001:db8:1::100"},
		{false, MaxHosts - 1, "198.18.1.254", "2001:db8:1::254"},
		{true, 0, "198.19.1.10", "2001:db8:2::10"},
		{true, 1, "198.19.1.11", "2001:db8:2::11"},
	}
	for _, tt := range tests {
		addrs := ClientAddrs
		if tt.server {
			addrs = ServerAddrs
		}
		v4, v6, err := addrs(tt.i)
		if err != nil {
			t.Fatal(err)
		}
		if v4 != netip.MustParseAddr(tt.v4) || v6 != netip.MustParseAddr(tt.v6) {
			t.Errorf("host %d (server %v) = %s, %s; want %s, %s", tt.i, tt.server, v4, v6, tt.v4, tt.v6)
		}
	}
	for _, i := range []int{-1, MaxHosts} {
		if _, _, err := ClientAddrs(i); err == nil {
			t.Errorf("ClientAddrs(%d) succeeded", i)
		}
	}
}

func TestAddressingInvariants(t *testing.T) {
	for _, p := range []netip.Prefix{InsideSubnetV4, InsideSubnetV6} {
		if !InsideNetworkV4.Contains(p.Addr()) && !InsideNetworkV6.Contains(p.Addr()) {
			t.Errorf("inside subnet %s outside the inside networks", p)
		}
	}
	for _, p := range []netip.Prefix{OutsideSubnetV4, OutsideSubnetV6} {
		if InsideNetworkV4.Overlaps(p) || InsideNetworkV6.Overlaps(p) {
			t.Errorf("outside subnet %s overlaps the inside networks", p)
		}
	}
	// Lab traffic must stay within the benchmarking and documentation ranges.
	allowed := []netip.Prefix{netip.MustParsePrefix("198.18.0.0/15"), netip.MustParsePrefix("2001:db8::/32")}
	for _, a := range []netip.Addr{ApplianceInsideV4, ApplianceInsideV6, ApplianceOutsideV4, ApplianceOutsideV6} {
		if !slices.ContainsFunc(allowed, func(p netip.Prefix) bool { return p.Contains(a) }) {
			t.Errorf("%s outside the lab's ranges", a)
		}
	}
	if !InsideSubnetV4.Contains(ApplianceInsideV4) || !InsideSubnetV6.Contains(ApplianceInsideV6) ||
		!OutsideSubnetV4.Contains(ApplianceOutsideV4) || !OutsideSubnetV6.Contains(ApplianceOutsideV6) {
		t.Error("an appliance address is outside its subnet")
	}
}

func TestParseNetNSName(t *testing.T) {
	tests := []struct {
		name string
		pid  int
		ok   bool
	}{
		{"nwlab-1234-7-client0", 1234, true},
		{"nwlab-1-1-x", 1, true},
		{"nwlab-1234-", 0, false},
		{"nwlab-1234", 0, false},
		{"nwlab--1-x", 0, false},
		{"nwlab-0-1-x", 0, false},
		{"nwlab-+12-1-x", 0, false},
		{"nwlab-12a-1-x", 0, false},
		{"nwlabx1234-1-foreign", 0, false},
		{"nwlab-99999999999999999999-1-x", 0, false},
		{"other-1234-1-x", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		pid, ok := parseNetNSName(tt.name)
		if pid != tt.pid || ok != tt.ok {
			t.Errorf("parseNetNSName(%q) = %d, %v; want %d, %v", tt.name, pid, ok, tt.pid, tt.ok)
		}
	}
}

func TestZombie(t *testing.T) {
	tests := map[string]bool{
		"123 (sleep) S 1 123":    false,
		"123 (lab.test) Z 1 123": true,
		"123 (a) b) X 1":         true,
		"123 (weird) R) S 1":     false,
		"123 (truncated)":        false,
		"":                       false,
	}
	for stat, want := range tests {
		if got := zombie([]byte(stat)); got != want {
			t.Errorf("zombie(%q) = %v, want %v", stat, got, want)
		}
	}
}

func FuzzParseNetNSName(f *testing.F) {
	for _, seed := range []string{"nwlab-1234-7-client0", "nwlab-1-1-x", "nwlab--1", "ip-netns"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, name string) {
		pid, ok := parseNetNSName(name)
		if !ok {
			return
		}
		if pid <= 0 || !strings.HasPrefix(name, namePrefix) {
			t.Errorf("parseNetNSName(%q) = %d, true", name, pid)
		}
	})
}

func TestValidateRole(t *testing.T) {
	for role, ok := range map[string]bool{"client0": true, "proc-close": true, "a_b": true, "": false, "a/b": false, "a b": false, "..": false} {
		if err := validateRole(role); (err == nil) != ok {
			t.Errorf("validateRole(%q) = %v, want ok %v", role, err, ok)
		}
	}
}

func TestSysctlPath(t *testing.T) {
	tests := []struct {
		key, path string
	}{
		{"net.ipv4.ip_forward", "/proc/sys/net/ipv4/ip_forward"},
		{"net.ipv6.conf.all.forwarding", "/proc/sys/net/ipv6/conf/all/forwarding"},
		{"net/ipv4/conf/eth0.100/forwarding", "/proc/sys/net/ipv4/conf/eth0.100/forwarding"},
		{"", ""},
		{"/etc/passwd", ""},
		{"net/../../etc/passwd", ""},
		{"net....etc", ""},
	}
	for _, tt := range tests {
		path, err := sysctlPath(tt.key)
		if tt.path == "" {
			if err == nil {
				t.Errorf("sysctlPath(%q) = %q, want an error", tt.key, path)
			}
			continue
		}
		if err != nil || path != tt.path {
			t.Errorf("sysctlPath(%q) = %q, %v; want %q", tt.key, path, err, tt.path)
		}
	}
}

func TestCommandLine(t *testing.T) {
	got := commandLine("sh", []string{"-c", "echo a; exit 3", ""})
	if want := `sh -c "echo a; exit 3" ""`; got != want {
		t.Errorf("commandLine = %s, want %s", got, want)
	}
}

func TestLineWriter(t *testing.T) {
	var lines []string
	log := &outputLog{}
	w := &lineWriter{log: log, onLine: func(l string) { lines = append(lines, l) }}
	for _, chunk := range []string{"one\ntw", "o\n", "\nthr", "ee"} {
		if n, err := w.Write([]byte(chunk)); n != len(chunk) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", chunk, n, err)
		}
	}
	w.flush()
	if want := []string{"one", "two", "", "three"}; !slices.Equal(lines, want) {
		t.Errorf("lines %q, want %q", lines, want)
	}
	if got := log.String(); got != "one\ntwo\n\nthree" {
		t.Errorf("log %q", got)
	}

	lines = nil
	long := strings.Repeat("x", maxLine+10)
	w.Write([]byte(long))
	if len(lines) != 1 || len(lines[0]) != len(long) {
		t.Errorf("a line without newline past maxLine was not handed over: %d lines", len(lines))
	}
}

func TestOutputLogKeepsTheTail(t *testing.T) {
	log := &outputLog{}
	log.append([]byte(strings.Repeat("a", maxOutput)))
	log.append([]byte("tail"))
	got := log.String()
	if !strings.HasPrefix(got, "[lab: 4 earlier bytes dropped]\n") || !strings.HasSuffix(got, "atail") {
		t.Errorf("log starts %q, ends %q", got[:40], got[len(got)-10:])
	}
}

const procSnmpSample = `Ip: Forwarding DefaultTTL InReceives ForwDatagrams
Ip: 2 64 3319 0
Icmp: InMsgs OutTimeExcds
Icmp: 1 0
Tcp: RtoAlgorithm MaxConn
Tcp: 1 -1
`

const procSnmp6Sample = `Ip6InReceives                   	1
Ip6OutForwDatagrams             	7
Icmp6OutTimeExcds               	0
`

func TestParseSnmp(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  map[string]int64 // nil: an error
	}{
		{"proc sample", procSnmpSample, map[string]int64{
			"Ip.Forwarding": 2, "Ip.DefaultTTL": 64, "Ip.InReceives": 3319, "Ip.ForwDatagrams": 0,
			"Icmp.InMsgs": 1, "Icmp.OutTimeExcds": 0, "Tcp.RtoAlgorithm": 1, "Tcp.MaxConn": -1,
		}},
		{"empty", "", map[string]int64{}},
		{"blank lines", "\nIp: A\nIp: 1\n\n", map[string]int64{"Ip.A": 1}},
		{"names without values", "Ip: A B\n", nil},
		{"value count differs", "Ip: A B\nIp: 1\n", nil},
		{"sections differ", "Ip: A\nTcp: 1\n", nil},
		{"no section", "A B\n1 2\n", nil},
		{"not a number", "Ip: A\nIp: x\n", nil},
		{"too large", "Ip: A\nIp: 99999999999999999999\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := map[string]int64{}
			err := parseSnmp([]byte(tt.input), got)
			if tt.want == nil {
				if err == nil {
					t.Errorf("parsed %v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !mapsEqual(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseSnmp6(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  map[string]int64
	}{
		{"proc sample", procSnmp6Sample, map[string]int64{"Ip6InReceives": 1, "Ip6OutForwDatagrams": 7, "Icmp6OutTimeExcds": 0}},
		{"empty", "", map[string]int64{}},
		{"three fields", "Ip6InReceives 1 2\n", nil},
		{"one field", "Ip6InReceives\n", nil},
		{"not a number", "Ip6InReceives one\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := map[string]int64{}
			err := parseSnmp6([]byte(tt.input), got)
			if tt.want == nil {
				if err == nil {
					t.Errorf("parsed %v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !mapsEqual(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func mapsEqual(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func FuzzParseSnmp(f *testing.F) {
	f.Add(procSnmpSample)
	f.Add("Ip: A\nIp: 1\n")
	f.Add("Ip: A B\nIp: 1\n")
	f.Fuzz(func(t *testing.T, input string) {
		got := map[string]int64{}
		if err := parseSnmp([]byte(input), got); err != nil {
			return
		}
		for key := range got {
			section, name, ok := strings.Cut(key, ".")
			if !ok || section == "" || name == "" {
				t.Errorf("key %q is not <section>.<name>", key)
			}
		}
	})
}

func FuzzParseSnmp6(f *testing.F) {
	f.Add(procSnmp6Sample)
	f.Add("Ip6InReceives 1\n")
	f.Fuzz(func(t *testing.T, input string) {
		got := map[string]int64{}
		if err := parseSnmp6([]byte(input), got); err != nil {
			return
		}
		for key := range got {
			if key == "" || strings.ContainsAny(key, " \t\n") {
				t.Errorf("key %q", key)
			}
		}
	})
}

type byteOrder interface {
	binary.ByteOrder
	binary.AppendByteOrder
}

// pcapFile builds a classic pcap file in the given byte order.
func pcapFile(order byteOrder, magic uint32, linkType uint32, records ...[]byte) []byte {
	b := order.AppendUint32(nil, magic)
	b = order.AppendUint16(b, 2)
	b = order.AppendUint16(b, 4)
	b = order.AppendUint32(b, 0)      // thiszone
	b = order.AppendUint32(b, 0)      // sigfigs
	b = order.AppendUint32(b, 262144) // snaplen
	b = order.AppendUint32(b, linkType)
	for i, r := range records {
		b = order.AppendUint32(b, uint32(1700000000+i))
		b = order.AppendUint32(b, 500)
		b = order.AppendUint32(b, uint32(len(r)))
		b = order.AppendUint32(b, uint32(len(r)+4))
		b = append(b, r...)
	}
	return b
}

func TestParsePcap(t *testing.T) {
	frameA, frameB := []byte("0123456789abcd"), []byte{0xff}
	for _, tt := range []struct {
		name  string
		order byteOrder
		magic uint32
		unit  time.Duration
	}{
		{"little endian, microseconds", binary.LittleEndian, pcapMagicMicros, time.Microsecond},
		{"big endian, microseconds", binary.BigEndian, pcapMagicMicros, time.Microsecond},
		{"little endian, nanoseconds", binary.LittleEndian, pcapMagicNanos, time.Nanosecond},
	} {
		t.Run(tt.name, func(t *testing.T) {
			linkType, frames, err := parsePcap(pcapFile(tt.order, tt.magic, 1, frameA, frameB))
			if err != nil {
				t.Fatal(err)
			}
			if linkType != 1 || len(frames) != 2 {
				t.Fatalf("link type %d, %d frames", linkType, len(frames))
			}
			if string(frames[0].Data) != string(frameA) || string(frames[1].Data) != string(frameB) {
				t.Errorf("frames %q, %q", frames[0].Data, frames[1].Data)
			}
			if frames[0].Length != len(frameA)+4 {
				t.Errorf("length %d, want %d", frames[0].Length, len(frameA)+4)
			}
			if want := time.Unix(1700000000, int64(500*tt.unit)); !frames[0].Time.Equal(want) {
				t.Errorf("time %v, want %v", frames[0].Time, want)
			}
		})
	}

	good := pcapFile(binary.LittleEndian, pcapMagicMicros, 1, frameA)
	bad := map[string][]byte{
		"empty":                   nil,
		"short header":            good[:20],
		"unknown magic":           append([]byte{1, 2, 3, 4}, good[4:]...),
		"truncated record":        good[:len(good)-1],
		"truncated record header": append(slices.Clone(good), 1, 2, 3),
		"captured beyond length": func() []byte {
			b := slices.Clone(good)
			binary.LittleEndian.PutUint32(b[24+12:], 1)
			return b
		}(),
		"microseconds out of range": func() []byte {
			b := slices.Clone(good)
			binary.LittleEndian.PutUint32(b[24+4:], 1000000)
			return b
		}(),
		"version 1": func() []byte {
			b := slices.Clone(good)
			binary.LittleEndian.PutUint16(b[4:], 1)
			return b
		}(),
	}
	for name, input := range bad {
		if _, frames, err := parsePcap(input); err == nil {
			t.Errorf("%s: parsed %d frames, want an error", name, len(frames))
		}
	}
	if _, frames, err := parsePcap(good[:24]); err != nil || len(frames) != 0 {
		t.Errorf("header only: %d frames, %v", len(frames), err)
	}
}

func FuzzParsePcap(f *testing.F) {
	f.Add(pcapFile(binary.LittleEndian, pcapMagicMicros, 1, []byte("0123456789abcd")))
	f.Add(pcapFile(binary.BigEndian, pcapMagicNanos, 1, []byte{1}, []byte{}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, input []byte) {
		_, frames, err := parsePcap(input)
		if err != nil {
			return
		}
		total := pcapHeaderLen
		for _, fr := range frames {
			if len(fr.Data) > fr.Length {
				t.Errorf("frame of %d bytes captured from %d", len(fr.Data), fr.Length)
			}
			total += pcapRecordLen + len(fr.Data)
		}
		if total != len(input) {
			t.Errorf("frames account for %d of %d bytes", total, len(input))
		}
	})
}
