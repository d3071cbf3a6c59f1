// Package l7 parses the first client-to-server bytes of a flow for the
// name they are addressed to: a TLS ClientHello's server_name, or HTTP/1.x
// request heads' Host. It is pure Go, used by the inspector that holds a
// PENDING flow's first data (../../shared/ARCHITECTURE.md §4), and decodes
// into caller-owned structs so a call does not allocate.
package l7

// MaxHold is how many client-to-server bytes a flow may have held before a
// verdict: a ClientHello or request head not complete within it is
// TooLarge, and the flow is denied (docs/rules.md, the "no name" table).
const MaxHold = 16 << 10

// MaxName is the longest DNS name, without a trailing dot.
const MaxName = 253

// TLSResult says what ParseClientHello found.
type TLSResult int

const (
	TLSOK           TLSResult = iota // a ClientHello with one valid host_name
	TLSNeedMore                      // the bytes so far are a prefix of a ClientHello
	TLSTooLarge                      // no complete ClientHello within MaxHold bytes
	TLSNotTLS                        // not a TLS handshake record
	TLSMalformed                     // a TLS handshake, but not a well-formed ClientHello
	TLSNoSNI                         // a ClientHello without a host_name
	TLSDuplicateSNI                  // two server_name extensions or host_names: deny
	TLSIPLiteral                     // the host_name is an IP address: reject
	TLSBadName                       // the host_name is not an LDH DNS name: reject
)

var tlsResultNames = [...]string{"ok", "need_more", "too_large", "not_tls", "malformed", "no_sni", "duplicate_sni", "ip_literal", "bad_name"}

func (r TLSResult) String() string {
	if r < 0 || int(r) >= len(tlsResultNames) {
		return "unknown"
	}
	return tlsResultNames[r]
}

// ClientHello is what ParseClientHello decodes. Reuse one per flow.
type ClientHello struct {
	// ECH is set when the hello carries encrypted_client_hello (0xfe0d):
	// the name is then the outer, public one.
	ECH bool
	// Len is how many input bytes the records holding the ClientHello
	// took, once it is complete.
	Len     int
	nameLen int
	name    [MaxName]byte
	hs      [MaxHold]byte // the handshake message, joined across records
}

// Name is the server name, lowercased, without a trailing dot; empty
// unless the result was TLSOK.
func (ch *ClientHello) Name() []byte { return ch.name[:ch.nameLen] }

const (
	recordHandshake   = 0x16
	recordHeaderLen   = 5
	maxRecordLen      = 1 << 14 // RFC 8446 §5.1: TLSPlaintext.length
	handshakeClient   = 1
	extServerName     = 0
	extECH            = 0xfe0d
	nameTypeHost      = 0
	handshakeHdrLen   = 4
	clientHelloMinLen = 2 + 32 + 1 + 2 + 2 + 1 // version, random, empty session, one suite, one method
)

// ParseClientHello decodes the ClientHello at the start of data, the
// reassembled client-to-server bytes of a TCP flow. The handshake message
// may span several records; bytes after it are not looked at.
func ParseClientHello(data []byte, ch *ClientHello) TLSResult {
	ch.ECH, ch.Len, ch.nameLen = false, 0, 0
	if len(data) > MaxHold {
		data = data[:MaxHold]
	}
	hsLen, need := 0, -1 // handshake bytes joined; message length once known
	off := 0
	for {
		if len(data)-off < recordHeaderLen {
			// Reject a non-TLS stream on its first bytes, not after 16 KiB.
			if r := checkHeaderPrefix(data[off:], off == 0); r != TLSNeedMore {
				return r
			}
			return needMore(off + recordHeaderLen)
		}
		h := data[off : off+recordHeaderLen]
		if r := checkHeaderPrefix(h, off == 0); r != TLSNeedMore {
			return r
		}
		n := int(h[3])<<8 | int(h[4])
		if n == 0 || n > maxRecordLen {
			return TLSMalformed
		}
		body := data[off+recordHeaderLen:]
		if len(body) < n {
			return needMore(off + recordHeaderLen + n)
		}
		body = body[:n]
		off += recordHeaderLen + n
		if need < 0 && hsLen+len(body) >= handshakeHdrLen {
			// The message header itself may be split across records.
			var hdr [handshakeHdrLen]byte
			k := copy(hdr[:], ch.hs[:hsLen])
			copy(hdr[k:], body)
			if hdr[0] != handshakeClient {
				return TLSMalformed
			}
			need = handshakeHdrLen + (int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3]))
			if need > MaxHold-recordHeaderLen {
				return TLSTooLarge
			}
		}
		take := len(body)
		if need >= 0 && hsLen+take > need {
			// A record may carry the next handshake message too.
			take = need - hsLen
		}
		copy(ch.hs[hsLen:], body[:take])
		hsLen += take
		if need >= 0 && hsLen == need {
			ch.Len = off
			return ch.parseBody(ch.hs[handshakeHdrLen:hsLen])
		}
	}
}

// needMore is TLSNeedMore, or TLSTooLarge when the bytes needed do not fit
// the hold budget.
func needMore(total int) TLSResult {
	if total > MaxHold {
		return TLSTooLarge
	}
	return TLSNeedMore
}

// checkHeaderPrefix checks what there is of a record header: TLSNeedMore
// means it is fine so far. Records after the first that are not handshake
// records interleave something a ClientHello must not have before it.
func checkHeaderPrefix(h []byte, first bool) TLSResult {
	bad := TLSMalformed
	if first {
		bad = TLSNotTLS
	}
	if len(h) > 0 && h[0] != recordHandshake {
		return bad
	}
	// Record versions 3.0 to 3.4 (TLS 1.3 hellos say 3.1).
	if len(h) > 1 && h[1] != 3 {
		return bad
	}
	if len(h) > 2 && h[2] > 4 {
		return bad
	}
	return TLSNeedMore
}

// reader walks a byte string without allocating; a short read sets bad.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) bytes(n int) []byte {
	if n < 0 || len(r.b) < n {
		r.bad = true
		r.b = nil
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) u8() int {
	b := r.bytes(1)
	if b == nil {
		return 0
	}
	return int(b[0])
}

func (r *reader) u16() int {
	b := r.bytes(2)
	if b == nil {
		return 0
	}
	return int(b[0])<<8 | int(b[1])
}

func (ch *ClientHello) parseBody(b []byte) TLSResult {
	if len(b) < clientHelloMinLen {
		return TLSMalformed
	}
	r := reader{b: b}
	if v := r.u16(); v>>8 != 3 {
		return TLSMalformed
	}
	r.bytes(32) // random
	if sid := r.u8(); sid > 32 {
		return TLSMalformed
	} else {
		r.bytes(sid)
	}
	suites := r.u16()
	if suites == 0 || suites%2 != 0 {
		return TLSMalformed
	}
	r.bytes(suites)
	comp := r.u8()
	if comp == 0 {
		return TLSMalformed
	}
	r.bytes(comp)
	if r.bad {
		return TLSMalformed
	}
	if len(r.b) == 0 {
		return TLSNoSNI // SSL 3.0-style hello without extensions
	}
	exts := reader{b: r.bytes(r.u16())}
	if r.bad || len(r.b) != 0 {
		return TLSMalformed
	}
	var sni []byte
	seenSNI := false
	for len(exts.b) > 0 {
		typ := exts.u16()
		body := exts.bytes(exts.u16())
		if exts.bad {
			return TLSMalformed
		}
		switch typ {
		case extECH:
			ch.ECH = true
		case extServerName:
			if seenSNI {
				return TLSDuplicateSNI
			}
			seenSNI = true
			name, res := serverName(body)
			if res != TLSOK {
				return res
			}
			sni = name
		}
	}
	if sni == nil {
		return TLSNoSNI
	}
	n, res := NormalizeName(sni, &ch.name)
	switch res {
	case NameIPLiteral:
		return TLSIPLiteral
	case NameBad:
		return TLSBadName
	}
	ch.nameLen = n
	return TLSOK
}

// serverName is the host_name of a server_name extension (RFC 6066 §3);
// nil with TLSOK when the list has no host_name entry.
func serverName(body []byte) ([]byte, TLSResult) {
	r := reader{b: body}
	list := reader{b: r.bytes(r.u16())}
	if r.bad || len(r.b) != 0 || len(list.b) == 0 {
		return nil, TLSMalformed
	}
	var host []byte
	for len(list.b) > 0 {
		typ := list.u8()
		name := list.bytes(list.u16())
		if list.bad {
			return nil, TLSMalformed
		}
		if typ != nameTypeHost {
			continue
		}
		if host != nil {
			return nil, TLSDuplicateSNI // "MUST NOT contain more than one name of the same name_type"
		}
		if len(name) == 0 {
			return nil, TLSMalformed
		}
		host = name
	}
	return host, TLSOK
}
