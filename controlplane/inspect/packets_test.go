package inspect

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// recordingConn is the client side of a handshake that captures what the
// client writes and then fails its read: the ClientHello is all we want.
type recordingConn struct {
	mu  sync.Mutex
	out []byte
}

func (c *recordingConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.out = append(c.out, b...)
	return len(b), nil
}
func (c *recordingConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (c *recordingConn) Close() error                     { return nil }
func (c *recordingConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *recordingConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *recordingConn) SetDeadline(time.Time) error      { return nil }
func (c *recordingConn) SetReadDeadline(time.Time) error  { return nil }
func (c *recordingConn) SetWriteDeadline(time.Time) error { return nil }

// clientHello is the first flight of a real Go TLS client: with
// CurvePreferences nil, Go 1.26 offers X25519MLKEM768 first, and its key
// share makes the hello larger than one 1,460-byte segment; classic sticks
// to X25519.
func clientHello(t testing.TB, serverName string, classic bool) []byte {
	t.Helper()
	conf := &tls.Config{ServerName: serverName, InsecureSkipVerify: serverName == ""}
	if classic {
		conf.CurvePreferences = []tls.CurveID{tls.X25519}
	}
	c := &recordingConn{}
	if err := tls.Client(c, conf).Handshake(); err == nil {
		t.Fatal("handshake without a server succeeded")
	}
	if len(c.out) < 5 || c.out[0] != 0x16 {
		t.Fatalf("not a handshake record: % x", c.out[:min(len(c.out), 8)])
	}
	return c.out
}

// twoRecords re-frames a one-record ClientHello as two TLS records, split at
// at bytes into the handshake message.
func twoRecords(hello []byte, at int) []byte {
	body := hello[5:]
	var out []byte
	for _, part := range [][]byte{body[:at], body[at:]} {
		out = append(out, 0x16, hello[1], hello[2], byte(len(part)>>8), byte(len(part)))
		out = append(out, part...)
	}
	return out
}

// flow builds the client's data segments of one TCP connection.
type flow struct {
	src, dst netip.Addr
	sport    uint16
	dport    uint16
	isn      uint32 // the SYN's sequence number; data starts at isn+1
}

var (
	flow4 = flow{src: netip.MustParseAddr("198.18.0.10"), dst: netip.MustParseAddr("198.19.0.20"), sport: 40000, dport: 443, isn: 0xfffffff0}
	flow6 = flow{src: netip.MustParseAddr("2001:db8::10"), dst: netip.MustParseAddr("2001:db8:1::20"), sport: 40001, dport: 443, isn: 1000}
)

func (f flow) key() Key {
	return Key{Src: f.src, Dst: f.dst, SrcPort: f.sport, DstPort: f.dport, Proto: 6}
}

func (f flow) firstSeq() uint32 { return f.isn + 1 }

// tcp is the TCP segment (header and payload, checksummed) carrying data
// at stream offset off.
func (f flow) tcp(t testing.TB, off int, data []byte) []byte {
	return f.tcpFlags(t, f.firstSeq()+uint32(off), data, func(*layers.TCP) {})
}

func (f flow) tcpFlags(t testing.TB, seq uint32, data []byte, flags func(*layers.TCP)) []byte {
	t.Helper()
	tcp := &layers.TCP{SrcPort: layers.TCPPort(f.sport), DstPort: layers.TCPPort(f.dport), Seq: seq, Ack: 77, ACK: true, PSH: true, Window: 65535}
	flags(tcp)
	if f.src.Is4() {
		tcp.SetNetworkLayerForChecksum(&layers.IPv4{SrcIP: f.src.AsSlice(), DstIP: f.dst.AsSlice(), Protocol: layers.IPProtocolTCP})
	} else {
		tcp.SetNetworkLayerForChecksum(&layers.IPv6{SrcIP: f.src.AsSlice(), DstIP: f.dst.AsSlice(), NextHeader: layers.IPProtocolTCP})
	}
	return serialize(t, tcp, gopacket.Payload(data))
}

// rst is a reset at offset 0 carrying data.
func (f flow) rst(t testing.TB, data []byte) []byte {
	return f.ip(t, f.tcpFlags(t, f.firstSeq(), data, func(h *layers.TCP) { h.RST, h.PSH = true, false }), 0, 0, false)
}

// syn is a SYN carrying data (TCP Fast Open's shape).
func (f flow) syn(t testing.TB, data []byte) []byte {
	return f.ip(t, f.tcpFlags(t, f.isn, data, func(h *layers.TCP) { h.SYN, h.ACK, h.PSH = true, false, false }), 0, 0, false)
}

// ip wraps transport bytes in an IP header; fragOff and more make it a
// fragment of datagram id.
func (f flow) ip(t testing.TB, transport []byte, id uint32, fragOff int, more bool) []byte {
	t.Helper()
	if f.src.Is4() {
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 63, Protocol: layers.IPProtocolTCP, SrcIP: f.src.AsSlice(), DstIP: f.dst.AsSlice(), Id: uint16(id), FragOffset: uint16(fragOff / 8)}
		if more {
			ip.Flags = layers.IPv4MoreFragments
		}
		return serialize(t, ip, gopacket.Payload(transport))
	}
	ip := &layers.IPv6{Version: 6, HopLimit: 63, NextHeader: layers.IPProtocolTCP, SrcIP: f.src.AsSlice(), DstIP: f.dst.AsSlice()}
	if fragOff == 0 && !more && id == 0 {
		return serialize(t, ip, gopacket.Payload(transport))
	}
	ip.NextHeader = layers.IPProtocolIPv6Fragment
	fh := make([]byte, 8, 8+len(transport))
	fh[0] = byte(layers.IPProtocolTCP)
	fo := uint16(fragOff/8) << 3
	if more {
		fo |= 1
	}
	binary.BigEndian.PutUint16(fh[2:], fo)
	binary.BigEndian.PutUint32(fh[4:], id)
	return serialize(t, ip, gopacket.Payload(append(fh, transport...)))
}

// seg is one whole packet with data at stream offset off.
func (f flow) seg(t testing.TB, off int, data []byte) []byte {
	return f.ip(t, f.tcp(t, off, data), 0, 0, false)
}

// segs cuts data into segments of size bytes, in order.
func (f flow) segs(t testing.TB, data []byte, size int) [][]byte {
	var out [][]byte
	for off := 0; off < len(data); off += size {
		out = append(out, f.seg(t, off, data[off:min(off+size, len(data))]))
	}
	return out
}

// fragments is one segment with data at offset 0 as IP fragments of size
// bytes (a multiple of 8) of transport each.
func (f flow) fragments(t testing.TB, data []byte, size int, id uint32) [][]byte {
	tcp := f.tcp(t, 0, data)
	var out [][]byte
	for off := 0; off < len(tcp); off += size {
		end := min(off+size, len(tcp))
		out = append(out, f.ip(t, tcp[off:end], id, off, end < len(tcp)))
	}
	return out
}

func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func reversed(ps [][]byte) [][]byte {
	out := make([][]byte, len(ps))
	for i, p := range ps {
		out[len(ps)-1-i] = p
	}
	return out
}

func join(pss ...[][]byte) [][]byte {
	var out [][]byte
	for _, ps := range pss {
		out = append(out, ps...)
	}
	return out
}

var errAny = errors.New("any error")
