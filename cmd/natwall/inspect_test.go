package main

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// tlsHello is Go crypto/tls's ClientHello record for name.
func tlsHello(t *testing.T, name string) []byte {
	t.Helper()
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	go func() {
		_ = tls.Client(c, &tls.Config{ServerName: name, InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}, CurvePreferences: []tls.CurveID{tls.X25519MLKEM768}}).Handshake()
	}()
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	var rec []byte
	buf := make([]byte, 4096)
	for len(rec) < 5 || len(rec) < 5+int(binary.BigEndian.Uint16(rec[3:])) {
		n, err := s.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		rec = append(rec, buf[:n]...)
	}
	return rec
}

// capture writes an Ethernet pcap of TCP flows, each a handshake and the
// client's data segments, as a client behind natwall would send them.
type capture struct {
	t   *testing.T
	w   *pcapgo.Writer
	now time.Time
}

func (c *capture) frame(ip gopacket.SerializableLayer, tcp *layers.TCP, payload []byte) {
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}}
	switch ip.(type) {
	case *layers.IPv4:
		eth.EthernetType = layers.EthernetTypeIPv4
		tcp.SetNetworkLayerForChecksum(ip.(*layers.IPv4))
	default:
		eth.EthernetType = layers.EthernetTypeIPv6
		tcp.SetNetworkLayerForChecksum(ip.(*layers.IPv6))
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, tcp, gopacket.Payload(payload)); err != nil {
		c.t.Fatal(err)
	}
	c.raw(buf.Bytes())
}

func (c *capture) raw(b []byte) {
	c.now = c.now.Add(time.Millisecond)
	if err := c.w.WritePacket(gopacket.CaptureInfo{Timestamp: c.now, CaptureLength: len(b), Length: len(b)}, b); err != nil {
		c.t.Fatal(err)
	}
}

func ipLayer(src, dst netip.Addr) gopacket.SerializableLayer {
	if src.Is4() {
		return &layers.IPv4{Version: 4, TTL: 64, Id: 7, Protocol: layers.IPProtocolTCP, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	}
	return &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
}

const captureISN = 1000

// flow writes the handshake of src→dst and then the client's segments,
// each at its stream offset.
func (c *capture) flow(src, dst netip.AddrPort, segs ...[2]any) {
	tcp := func(seq uint32) *layers.TCP {
		return &layers.TCP{SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()), Seq: seq, Window: 65535}
	}
	syn := tcp(captureISN)
	syn.SYN = true
	c.frame(ipLayer(src.Addr(), dst.Addr()), syn, nil)
	synack := &layers.TCP{SrcPort: layers.TCPPort(dst.Port()), DstPort: layers.TCPPort(src.Port()), Seq: 5000, Ack: captureISN + 1, SYN: true, ACK: true, Window: 65535}
	c.frame(ipLayer(dst.Addr(), src.Addr()), synack, nil)
	ack := tcp(captureISN + 1)
	ack.ACK, ack.Ack = true, 5001
	c.frame(ipLayer(src.Addr(), dst.Addr()), ack, nil)
	for _, s := range segs {
		seg := tcp(captureISN + 1 + uint32(s[0].(int)))
		seg.ACK, seg.PSH, seg.Ack = true, true, 5001
		c.frame(ipLayer(src.Addr(), dst.Addr()), seg, s[1].([]byte))
	}
}

// fragmentedFlow writes a handshake, then the client's whole stream in
// one TCP segment sent as IPv4 fragments of 256 bytes.
func (c *capture) fragmentedFlow(src, dst netip.AddrPort, stream []byte) {
	c.flow(src, dst)
	ip := &layers.IPv4{Version: 4, TTL: 64, Id: 99, Protocol: layers.IPProtocolTCP, SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()), Seq: captureISN + 1, Ack: 5001, ACK: true, PSH: true, Window: 65535}
	tcp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, tcp, gopacket.Payload(stream)); err != nil {
		c.t.Fatal(err)
	}
	l4 := buf.Bytes()
	for off := 0; off < len(l4); off += 256 {
		end := min(off+256, len(l4))
		frag := *ip
		frag.FragOffset = uint16(off / 8)
		if end < len(l4) {
			frag.Flags = layers.IPv4MoreFragments
		}
		eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4}
		out := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(out, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, &frag, gopacket.Payload(l4[off:end])); err != nil {
			c.t.Fatal(err)
		}
		c.raw(out.Bytes())
	}
}

// TestInspectGolden runs natwall inspect over a capture made by
// writeCapture (kept in testdata, rewritten with -update: ClientHellos
// are random) with the Suricata corpus, and compares its EVE output.
func TestInspectGolden(t *testing.T) {
	pcapPath := filepath.Join("testdata", "inspect_l7.pcap")
	if *update {
		writeCapture(t, pcapPath)
	}
	out, errOut, err := runCmd(t, "inspect", "--rules", "../../rules/testdata/suricata", "--var", "HOME_NET=198.18.0.0/16,2001:db8:1::/48",
		"--pcap", pcapPath, "--checksum", "off")
	if err != nil {
		t.Fatalf("inspect: %v\n%s", err, errOut)
	}
	golden := filepath.Join("testdata", "inspect_l7.eve.golden")
	if *update {
		os.WriteFile(golden, []byte(out), 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal([]byte(out), want) {
		t.Fatalf("got\n%s\nwant\n%s", out, want)
	}
}

// writeCapture writes the flows TestInspectGolden expects.
func writeCapture(t *testing.T, pcapPath string) {
	f, err := os.Create(pcapPath)
	if err != nil {
		t.Fatal(err)
	}
	w := pcapgo.NewWriter(f)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	c := &capture{t: t, w: w, now: time.Date(2026, 12, 3, 9, 30, 0, 0, time.UTC)}
	client := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(netip.MustParseAddr("198.18.1.1"), port) }
	server := netip.MustParseAddrPort("198.19.1.10:443")
	allowed := tlsHello(t, "www.example.com")
	if len(allowed) <= 1460 {
		t.Fatalf("the post-quantum ClientHello is %d bytes, want over 1,460", len(allowed))
	}
	denied := tlsHello(t, "other.example")
	// Allowed, split in two segments: no record.
	c.flow(client(40001), server, [2]any{0, allowed[:1460]}, [2]any{1460, allowed[1460:]})
	// Denied, segments out of order.
	c.flow(client(40002), server, [2]any{700, denied[700:]}, [2]any{0, denied[:700]})
	// A retransmission that disagrees: denied without a rule.
	bad := append([]byte(nil), allowed[:200]...)
	bad[60] ^= 0xff
	c.flow(client(40003), server, [2]any{0, allowed[:100]}, [2]any{50, bad[50:200]})
	// Denied, IP fragmented.
	c.fragmentedFlow(client(40004), server, denied)
	// HTTP: the mirror allowed, another host denied.
	c.flow(client(40005), netip.MustParseAddrPort("198.19.1.10:80"), [2]any{0, []byte("GET / HTTP/1.1\r\nHost: repo.example.org\r\n\r\n")})
	c.flow(client(40007), netip.MustParseAddrPort("198.19.1.10:80"), [2]any{0, []byte("GET / HTTP/1.1\r\nHo")}, [2]any{18, []byte("st: Evil.Example.org\r\n\r\n")})
	// IPv6 ClientHello without SNI.
	c.flow(netip.MustParseAddrPort("[2001:db8:1::5]:40006"), netip.MustParseAddrPort("[2001:db8:2::10]:443"), [2]any{0, tlsHello(t, "")})
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

}

func TestInspectErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.rules")
	os.WriteFile(bad, []byte("# natwall: priority 1\nalert tls any any -> any any (tls.sni; ja3.hash; sid:1;)\n"), 0o600)
	notPcap := filepath.Join(dir, "x.pcap")
	os.WriteFile(notPcap, []byte("not a capture"), 0o600)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--rules", bad, "--pcap", notPcap}, bad + `:2:40: unsupported keyword "ja3.hash"`},
		{[]string{"--rules", "../../rules/testdata/suricata", "--var", "HOME_NET=198.18.0.0/16", "--pcap", notPcap}, "neither pcap nor pcapng"},
		{[]string{"--rules", "../../rules/testdata/suricata", "--var", "HOME_NET=198.18.0.0/16", "--pcap", filepath.Join(dir, "missing.pcap")}, "no such file"},
		{[]string{"--rules", "../../rules/testdata/suricata", "--var", "FOO=1", "--pcap", notPcap}, "only HOME_NET"},
		{[]string{"--rules", "../../rules/testdata/suricata", "--checksum", "auto", "--pcap", notPcap}, `--checksum "auto": on or off`},
	} {
		_, errOut, err := runCmd(t, append([]string{"inspect"}, tc.args...)...)
		if err == nil || !strings.Contains(errOut+err.Error(), tc.want) {
			t.Errorf("%v: err %v, stderr %q; want %q", tc.args, err, errOut, tc.want)
		}
	}
}
