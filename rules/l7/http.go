package l7

// HTTPResult says what ParseHTTPRequest found.
type HTTPResult int

const (
	HTTPOK            HTTPResult = iota // an HTTP/1.x request head naming one host
	HTTPNeedMore                        // the bytes so far are a prefix of a request head
	HTTPTooLarge                        // no complete request head within MaxHold
	HTTPNotHTTP                         // not an HTTP/1.x request line (HTTP/2's preface included)
	HTTPMalformed                       // an HTTP/1.x request, but a head that servers may read differently: deny
	HTTPNoHost                          // a well-formed head that names no host
	HTTPDuplicateHost                   // two Host fields: deny
	HTTPHostMismatch                    // an absolute URI whose host is not Host's: deny
	HTTPIPLiteral                       // the host is an IP address
	HTTPBadName                         // the host is not an LDH DNS name
)

var httpResultNames = [...]string{"ok", "need_more", "too_large", "not_http", "malformed", "no_host", "duplicate_host", "host_mismatch", "ip_literal", "bad_name"}

func (r HTTPResult) String() string {
	if r < 0 || int(r) >= len(httpResultNames) {
		return "unknown"
	}
	return httpResultNames[r]
}

// HTTPRequest is what ParseHTTPRequest decodes. Reuse one per flow.
type HTTPRequest struct {
	// Len is the length of the request head, through its empty line,
	// once it is complete.
	Len int
	// AbsoluteURI is set when the request target carried the host
	// (absolute-form, or CONNECT's authority-form): the name is then the
	// URI's, which a server must prefer to Host (RFC 9112 §3.2.2).
	AbsoluteURI bool
	// HostField is set when the head had a Host field.
	HostField bool
	nameLen   int
	name      [MaxName]byte
}

// Name is the host, lowercased, without port or trailing dot; empty unless
// the result was HTTPOK.
func (r *HTTPRequest) Name() []byte { return r.name[:r.nameLen] }

// maxMethod bounds the method token: a longer first word is not HTTP.
const maxMethod = 24

// ParseHTTPRequest decodes the HTTP/1.x request head at the start of
// data, the client-to-server bytes of a TCP flow, for the host it is
// addressed to. Only the head is looked at; a body or a pipelined request
// after it is not. Lines end in CRLF: a bare CR or LF, a field line folded
// onto the next (obs-fold), or whitespace before a field's colon are
// malformed, since servers and this parser could disagree about them.
func ParseHTTPRequest(data []byte, req *HTTPRequest) HTTPResult {
	req.Len, req.AbsoluteURI, req.HostField, req.nameLen = 0, false, false, 0
	if len(data) > MaxHold {
		data = data[:MaxHold]
	}
	line, off, st := cutLine(data, 0)
	switch st {
	case lineIncomplete:
		if r := checkRequestLinePrefix(line); r != HTTPNeedMore {
			return r
		}
		return httpNeedMore(len(data))
	case lineBad:
		if checkRequestLinePrefix(line) == HTTPNotHTTP {
			return HTTPNotHTTP
		}
		return HTTPMalformed
	}
	uriHost, r := parseRequestLine(line)
	if r != HTTPOK {
		return r
	}
	var host []byte
	for {
		line, off, st = cutLine(data, off)
		switch st {
		case lineIncomplete:
			return httpNeedMore(len(data))
		case lineBad:
			return HTTPMalformed
		}
		if len(line) == 0 {
			break // the empty line ending the head
		}
		if line[0] == ' ' || line[0] == '\t' {
			return HTTPMalformed // obs-fold
		}
		name, value, ok := splitField(line)
		if !ok {
			return HTTPMalformed
		}
		if equalFold(name, "host") {
			if req.HostField {
				return HTTPDuplicateHost
			}
			req.HostField, host = true, value
		}
	}
	req.Len = off
	if uriHost == nil {
		if len(host) == 0 {
			return HTTPNoHost // no Host, or "Host:" with no value
		}
		n, r := hostToName(host, &req.name)
		if r != HTTPOK {
			return r
		}
		req.nameLen = n
		return HTTPOK
	}
	req.AbsoluteURI = true
	n, r := hostToName(uriHost, &req.name)
	if r != HTTPOK {
		return r
	}
	// An empty Host beside an absolute URI is allowed; any other Host
	// must name the same host, or the server and the rules could each
	// see a different one.
	if len(host) > 0 {
		var other [MaxName]byte
		m, r := hostToName(host, &other)
		if r != HTTPOK || string(other[:m]) != string(req.name[:n]) {
			return HTTPHostMismatch
		}
	}
	req.nameLen = n
	return HTTPOK
}

func httpNeedMore(have int) HTTPResult {
	if have >= MaxHold {
		return HTTPTooLarge
	}
	return HTTPNeedMore
}

type lineState int

const (
	lineOK lineState = iota
	lineIncomplete
	lineBad // a CR or LF not part of a CRLF
)

// cutLine returns the CRLF-terminated line starting at b[off:] and the
// offset after it; when incomplete or bad, line is what there is of it.
func cutLine(b []byte, off int) (line []byte, next int, st lineState) {
	for i := off; i < len(b); i++ {
		switch b[i] {
		case '\n':
			return b[off:i], i, lineBad
		case '\r':
			if i+1 == len(b) {
				return b[off:i], i, lineIncomplete
			}
			if b[i+1] != '\n' {
				return b[off:i], i, lineBad
			}
			return b[off:i], i + 2, lineOK
		}
	}
	return b[off:], len(b), lineIncomplete
}

// isTchar reports whether c may appear in a token (RFC 9110 §5.6.2).
func isTchar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// checkRequestLinePrefix rejects a stream that cannot become a request
// line on its first bytes, not after 16 KiB: HTTPNeedMore means fine so far.
func checkRequestLinePrefix(b []byte) HTTPResult {
	for i, c := range b {
		if c == ' ' {
			if i == 0 {
				return HTTPNotHTTP
			}
			return HTTPNeedMore
		}
		if !isTchar(c) || i >= maxMethod {
			return HTTPNotHTTP
		}
	}
	return HTTPNeedMore
}

// parseRequestLine checks method SP request-target SP HTTP-version and
// returns the host the target names, if it names one.
func parseRequestLine(line []byte) ([]byte, HTTPResult) {
	sp := indexByte(line, ' ')
	if sp <= 0 || sp > maxMethod {
		return nil, HTTPNotHTTP
	}
	for _, c := range line[:sp] {
		if !isTchar(c) {
			return nil, HTTPNotHTTP
		}
	}
	rest := line[sp+1:]
	sp2 := indexByte(rest, ' ')
	if sp2 < 0 {
		return nil, HTTPNotHTTP // HTTP/0.9 has no version and no headers
	}
	target, version := rest[:sp2], rest[sp2+1:]
	if len(target) == 0 {
		return nil, HTTPMalformed
	}
	if len(version) != 8 || string(version[:7]) != "HTTP/1." || version[7] < '0' || version[7] > '9' {
		return nil, HTTPNotHTTP
	}
	for _, c := range target {
		// A fragment is never sent (RFC 9112 §3.2); servers differ on
		// where one would end the host.
		if c <= ' ' || c >= 0x7f || c == '#' {
			return nil, HTTPMalformed
		}
	}
	switch {
	case target[0] == '/':
		return nil, HTTPOK // origin-form
	case target[0] == '*':
		if len(target) != 1 {
			return nil, HTTPMalformed
		}
		return nil, HTTPOK // asterisk-form
	case string(line[:sp]) == "CONNECT":
		return authorityHost(target)
	}
	i := index(target, "://")
	if i <= 0 || !(target[0] >= 'a' && target[0] <= 'z' || target[0] >= 'A' && target[0] <= 'Z') {
		return nil, HTTPMalformed
	}
	for _, c := range target[:i] {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.') {
			return nil, HTTPMalformed
		}
	}
	auth := target[i+3:]
	for j, c := range auth {
		if c == '/' || c == '?' {
			auth = auth[:j]
			break
		}
	}
	return authorityHost(auth)
}

// authorityHost checks the authority of a request target. Userinfo
// ("http://good.example@evil.example/") is deprecated and a classic way to
// show one host and reach another: malformed.
func authorityHost(auth []byte) ([]byte, HTTPResult) {
	if len(auth) == 0 || indexByte(auth, '@') >= 0 {
		return nil, HTTPMalformed
	}
	return auth, HTTPOK
}

// splitField splits "name: value" and trims the value's whitespace.
func splitField(line []byte) (name, value []byte, ok bool) {
	colon := indexByte(line, ':')
	if colon <= 0 {
		return nil, nil, false
	}
	name = line[:colon]
	for _, c := range name {
		if !isTchar(c) {
			return nil, nil, false // includes whitespace before the colon
		}
	}
	value = line[colon+1:]
	for len(value) > 0 && (value[0] == ' ' || value[0] == '\t') {
		value = value[1:]
	}
	for len(value) > 0 && (value[len(value)-1] == ' ' || value[len(value)-1] == '\t') {
		value = value[:len(value)-1]
	}
	for _, c := range value {
		if c == 0 || c == 0x7f || (c < ' ' && c != '\t') {
			return nil, nil, false
		}
	}
	return name, value, true
}

// hostToName normalises a uri-host [":" port] into out.
func hostToName(h []byte, out *[MaxName]byte) (int, HTTPResult) {
	if h[0] == '[' {
		return 0, HTTPIPLiteral
	}
	if i := indexByte(h, ':'); i >= 0 {
		port := h[i+1:]
		if len(port) > 5 {
			return 0, HTTPBadName
		}
		for _, c := range port {
			if c < '0' || c > '9' {
				return 0, HTTPBadName
			}
		}
		h = h[:i]
	}
	n, r := NormalizeName(h, out)
	switch r {
	case NameIPLiteral:
		return 0, HTTPIPLiteral
	case NameBad:
		return 0, HTTPBadName
	}
	return n, HTTPOK
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

func index(b []byte, s string) int {
	for i := 0; i+len(s) <= len(b); i++ {
		if string(b[i:i+len(s)]) == s {
			return i
		}
	}
	return -1
}

// equalFold compares b to the lowercase ASCII s, ignoring case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		c := b[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}
