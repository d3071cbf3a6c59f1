package rules

import (
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// Suricata rule files (*.rules) hold the subset of Suricata's rule
// language that AWS Network Firewall users write for stateful rule groups
// in strict order: a rule per line, evaluated in file order. A file takes
// one place in the stateful stage, given by a "# natwall: priority N" line
// before its first rule; its rules share that priority and keep their
// order. Every keyword is either understood or an error naming it:
// nothing is ignored. docs/rules.md lists what is supported.

var suricataActions = map[string]Action{"pass": Allow, "drop": Deny, "reject": Reject, "alert": Alert}

// suricataProtos maps a header protocol to its IP protocol and, for the
// application protocols, the L7 protocol it requires.
var suricataProtos = map[string]struct {
	ip  int
	app AppProto
}{
	"ip": {-1, AppUnknown}, "tcp": {6, AppUnknown}, "udp": {17, AppUnknown}, "icmp": {1, AppUnknown},
	"tls": {6, AppTLS}, "http": {6, AppHTTP},
}

// suricataFlow says what each flow keyword option means to natwall, whose
// stateful rules see a flow's first packet and, for L7 rules, the
// client's first data: "" for accepted, else why not.
var suricataFlow = map[string]string{
	"to_server":   "",
	"from_client": "",
	"established": "",
	"not_established": "natwall decides a flow on its first packet and lets a pending flow's handshake pass by itself; " +
		"a rule for the handshake alone would decide the whole flow: leave it out",
	"stateless":   "natwall's stateful rules see flows; write a stateless rule in a YAML file",
	"to_client":   "stateful rules see the client's side; replies of an allowed flow need no rule",
	"from_server": "stateful rules see the client's side; replies of an allowed flow need no rule",
	"only_stream": "not supported", "no_stream": "not supported", "only_frag": "not supported", "no_frag": "not supported",
}

// suricataMeta are the keywords kept as they are and shown by check and
// explain.
var suricataMeta = map[string]bool{"msg": true, "sid": true, "rev": true, "classtype": true, "reference": true, "metadata": true}

var directivePattern = regexp.MustCompile(`^#\s*natwall:\s*(.*?)\s*$`)

// listExpr is a Suricata address or port: a value, or a [list], either
// negated with !.
type listExpr struct {
	neg   bool
	text  string
	items []*listExpr // a [list] when not nil
	pos   Pos
}

// suriExprs are what a Suricata rule leaves to resolve: its addresses and
// ports (variables may name sets of any file).
type suriExprs struct {
	src, dst, sport, dport *listExpr
	bidir                  bool
	icmp                   bool // Suricata's icmp: ICMP and ICMPv6
}

// logical is a rule's text after joining continued lines, with where each
// piece came from.
type logical struct {
	text  []byte
	segs  []segment
	file  string
	first bool
}

type segment struct {
	off, line, col int
}

func (l *logical) pos(off int) Pos {
	s := l.segs[0]
	for _, t := range l.segs {
		if t.off <= off {
			s = t
		}
	}
	return Pos{File: l.file, Line: s.line, Col: s.col + off - s.off}
}

func (p *parser) suricataFile(src Source) {
	top := Pos{File: src.Name, Line: 1, Col: 1}
	if len(src.Data) > MaxFileSize {
		p.add(top, "file is larger than %d bytes", MaxFileSize)
		return
	}
	lines := strings.Split(string(src.Data), "\n")
	priority, priPos, rulesSeen := -1, Pos{}, 0
	// mode audit puts the file's drop and reject rules in audit mode, as
	// a YAML rule's mode: audit.
	audit, modePos := false, Pos{}
	var cur *logical
	for i, raw := range lines {
		line := strings.TrimSuffix(raw, "\r")
		if cur == nil {
			trimmed := strings.TrimLeft(line, " \t")
			col := len(line) - len(trimmed) + 1
			if trimmed == "" {
				continue
			}
			if trimmed[0] == '#' {
				if m := directivePattern.FindStringSubmatch(trimmed); m != nil {
					pos := Pos{File: src.Name, Line: i + 1, Col: col}
					f := strings.Fields(m[1])
					switch {
					case len(f) == 2 && f[0] == "mode":
						switch {
						case modePos != (Pos{}):
							p.add(pos, "mode is already set at %s", modePos)
						case rulesSeen > 0:
							p.add(pos, "the mode line must come before the first rule")
						case f[1] != "audit" && f[1] != "enforce":
							p.add(pos, "mode %q is not enforce or audit", f[1])
						default:
							audit, modePos = f[1] == "audit", pos
						}
					case len(f) != 2 || f[0] != "priority":
						p.add(pos, "unknown natwall directive %q (known: priority N, mode audit|enforce)", m[1])
					case priority >= 0:
						p.add(pos, "priority is already set at %s", priPos)
					case rulesSeen > 0:
						p.add(pos, "the priority line must come before the first rule")
					default:
						n, err := strconv.Atoi(f[1])
						if err != nil || n < 0 || n > 1_000_000_000 {
							p.add(pos, "priority %q is not a whole number from 0 to 1000000000", f[1])
						} else {
							priority, priPos = n, pos
						}
					}
				}
				continue
			}
			cur = &logical{file: src.Name}
			cur.segs = append(cur.segs, segment{0, i + 1, col})
			line = trimmed
		} else {
			cur.segs = append(cur.segs, segment{len(cur.text), i + 1, 1})
		}
		if strings.HasSuffix(line, "\\") {
			cur.text = append(cur.text, line[:len(line)-1]...)
			if i+1 < len(lines) {
				continue
			}
		} else {
			cur.text = append(cur.text, line...)
		}
		rulesSeen++
		if priority < 0 && rulesSeen == 1 {
			p.add(cur.pos(0), "a .rules file needs a \"# natwall: priority N\" line before its first rule, placing its rules, in file order, among the other files' stateful rules")
		}
		if r := p.suricataRule(cur); r != nil {
			if audit && (r.Action == Deny || r.Action == Reject) {
				if r.L7 != nil {
					p.add(r.Pos, "mode audit (%s) cannot cover a rule with a tls or http condition (rule %q)", modePos, r.ID)
				}
				r.Audit = true
			}
			r.Priority, r.priPos = max(priority, 0), priPos
			r.sharedPriority = rulesSeen > 1
			p.rules = append(p.rules, r)
		}
		cur = nil
	}
	if rulesSeen == 0 {
		p.add(top, "no rules in a .rules file (an empty file is more likely a truncated write than an intent)")
	}
}

// suricataRule parses one rule: action proto src sport dir dst dport (options).
func (p *parser) suricataRule(l *logical) *rawRule {
	text := string(l.text)
	var toks []string
	var offs []int
	off := 0
	for len(toks) < 7 {
		for off < len(text) && (text[off] == ' ' || text[off] == '\t') {
			off++
		}
		if off == len(text) || text[off] == '(' {
			break
		}
		start, depth := off, 0
		for off < len(text) && (depth > 0 || (text[off] != ' ' && text[off] != '\t' && text[off] != '(')) {
			switch text[off] {
			case '[':
				depth++
			case ']':
				depth--
			}
			off++
		}
		if depth != 0 {
			p.add(l.pos(start), "a [list] needs its closing ]")
			return nil
		}
		toks, offs = append(toks, text[start:off]), append(offs, start)
	}
	if len(toks) < 7 {
		p.add(l.pos(off), "a rule is: action protocol source port direction destination port (options)")
		return nil
	}
	r := &rawRule{stage: Stateful, Rule: Rule{Pos: l.pos(0), Protocol: -1, ICMPType: -1, ICMPCode: -1}}
	ex := &suriExprs{}
	bad := false
	fail := func(off int, format string, args ...any) {
		p.add(l.pos(off), format, args...)
		bad = true
	}
	act, ok := suricataActions[toks[0]]
	if !ok {
		fail(offs[0], "action %q is not one of pass, drop, reject, alert", toks[0])
	}
	r.Action = act
	proto, ok := suricataProtos[toks[1]]
	if !ok {
		fail(offs[1], "protocol %q is not one of ip, tcp, udp, icmp, tls, http", toks[1])
	}
	r.Protocol, ex.icmp = proto.ip, toks[1] == "icmp"
	switch toks[4] {
	case "->":
	case "<>":
		ex.bidir = true
	default:
		fail(offs[4], "direction %q is not -> or <>", toks[4])
	}
	for k, dst := range []**listExpr{&ex.src, &ex.sport, nil, &ex.dst, &ex.dport} {
		if dst == nil {
			continue
		}
		e, msg, at := parseList(toks[2+k], 0)
		if msg != "" {
			fail(offs[2+k]+at, "%s", msg)
			continue
		}
		setPos(e, l, offs[2+k])
		*dst = e
	}
	if !bad && (ex.sport.text != "any" || ex.dport.text != "any" || ex.sport.neg || ex.dport.neg || ex.sport.items != nil || ex.dport.items != nil) && r.Protocol != 6 && r.Protocol != 17 {
		fail(offs[3], "ports need protocol tcp, udp, tls or http")
	}
	for off < len(text) && (text[off] == ' ' || text[off] == '\t') {
		off++
	}
	end := strings.LastIndexByte(text, ')')
	if off >= len(text) || text[off] != '(' || end < off || strings.TrimSpace(text[end+1:]) != "" {
		p.add(l.pos(off), "options go in parentheses after the header: (msg:\"...\"; sid:1;)")
		return nil
	}
	o := &optParser{p: p, l: l, r: r, proto: proto.app, text: text[:end], off: off + 1}
	o.options()
	if o.bad || bad {
		return nil
	}
	o.finish()
	if o.bad {
		return nil
	}
	r.suri = ex
	return r
}

func setPos(e *listExpr, l *logical, base int) {
	e.pos = l.pos(base + e.pos.Col)
	for _, it := range e.items {
		setPos(it, l, base)
	}
}

// parseList parses an address or port expression; pos.Col holds offsets
// until setPos. It returns a message and offset on error.
func parseList(s string, base int) (*listExpr, string, int) {
	e, rest, msg, at := parseItem(s, base)
	if msg != "" {
		return nil, msg, at
	}
	if rest != "" {
		return nil, "unexpected " + strconv.Quote(rest), base + len(s) - len(rest)
	}
	return e, "", 0
}

func parseItem(s string, at int) (*listExpr, string, string, int) {
	e := &listExpr{pos: Pos{Col: at}}
	if strings.HasPrefix(s, "!") {
		e.neg = true
		s, at = s[1:], at+1
	}
	if !strings.HasPrefix(s, "[") {
		n := strings.IndexAny(s, ",]")
		if n < 0 {
			n = len(s)
		}
		e.text = strings.TrimSpace(s[:n])
		if e.text == "" {
			return nil, "", "an empty entry", at
		}
		return e, s[n:], "", 0
	}
	s, at = s[1:], at+1
	e.items = []*listExpr{}
	for {
		trimmed := strings.TrimLeft(s, " ")
		at += len(s) - len(trimmed)
		s = trimmed
		it, rest, msg, where := parseItem(s, at)
		if msg != "" {
			return nil, "", msg, where
		}
		at += len(s) - len(rest)
		s = rest
		e.items = append(e.items, it)
		s = strings.TrimLeft(s, " ")
		switch {
		case strings.HasPrefix(s, ","):
			s, at = s[1:], at+1
		case strings.HasPrefix(s, "]"):
			return e, s[1:], "", 0
		default:
			return nil, "", "a [list] needs its closing ]", at
		}
	}
}

// optParser reads a rule's options.
type optParser struct {
	p     *parser
	l     *logical
	r     *rawRule
	proto AppProto // the header's application protocol
	text  string
	off   int
	bad   bool

	buffer   AppProto // the sticky buffer contents go to; AppUnknown for none
	bufPos   Pos
	cond     *L7Cond
	last     *NameMatch // the last content, for its modifiers
	lastRaw  []byte
	lastPos  Pos
	lastOpts map[string]bool
	nocase   bool
	depth    int // depth of the last content, -1 if none
	meta     RuleMeta
	sidSet   bool
	// pendingUnbuffered is set while the last content has no buffer yet:
	// only a legacy http_host after it can give it one.
	pendingUnbuffered bool
}

func (o *optParser) fail(pos Pos, format string, args ...any) {
	o.p.add(pos, format, args...)
	o.bad = true
}

func (o *optParser) options() {
	seen := map[string]Pos{}
	for {
		for o.off < len(o.text) && (o.text[o.off] == ' ' || o.text[o.off] == '\t') {
			o.off++
		}
		if o.off >= len(o.text) {
			return
		}
		kstart := o.off
		for o.off < len(o.text) && o.text[o.off] != ':' && o.text[o.off] != ';' {
			o.off++
		}
		key := strings.TrimSpace(o.text[kstart:o.off])
		pos := o.l.pos(kstart)
		var value string
		vpos := pos
		if o.off < len(o.text) && o.text[o.off] == ':' {
			o.off++
			for o.off < len(o.text) && o.text[o.off] == ' ' {
				o.off++
			}
			vpos = o.l.pos(o.off)
			v, ok := o.value()
			if !ok {
				o.fail(vpos, "%s: the value's quotes are not closed", key)
				return
			}
			value = v
		}
		if o.off < len(o.text) && o.text[o.off] == ';' {
			o.off++
		} else if strings.TrimSpace(o.text[o.off:]) != "" {
			o.fail(o.l.pos(o.off), "%s: expected ; after the value", key)
			return
		}
		if key == "" {
			o.fail(pos, "an empty option")
			continue
		}
		if prev, dup := seen[key]; dup && suricataMeta[key] && key != "reference" && key != "metadata" {
			o.fail(pos, "%s is set twice (first at %s)", key, prev)
			continue
		}
		seen[key] = pos
		o.option(key, value, pos, vpos)
	}
}

// value reads an option's value up to its unescaped ';', keeping quotes
// and escapes for the keyword to interpret.
func (o *optParser) value() (string, bool) {
	start, quoted := o.off, false
	for ; o.off < len(o.text); o.off++ {
		switch c := o.text[o.off]; {
		case c == '\\' && o.off+1 < len(o.text):
			o.off++
		case c == '"':
			quoted = !quoted
		case c == ';' && !quoted:
			return strings.TrimRight(o.text[start:o.off], " "), true
		}
	}
	return strings.TrimRight(o.text[start:], " "), !quoted
}

// unquote removes a value's quotes and escapes (\" \; \\), as Suricata
// writes msg and content.
func unquote(v string) (string, bool) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return "", false
	}
	v = v[1 : len(v)-1]
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == '\\' {
			if i+1 == len(v) {
				return "", false
			}
			i++
			c = v[i]
		} else if c == '"' {
			return "", false
		}
		b.WriteByte(c)
	}
	return b.String(), true
}

func (o *optParser) option(key, value string, pos, vpos Pos) {
	needNone := func() bool {
		if value != "" {
			o.fail(vpos, "%s takes no value", key)
			return false
		}
		return true
	}
	switch key {
	case "msg":
		s, ok := unquote(value)
		if !ok {
			o.fail(vpos, "msg is a quoted string")
		}
		o.meta.Msg = s
	case "sid":
		n, err := strconv.ParseUint(value, 10, 32)
		if err != nil || n == 0 {
			o.fail(vpos, "sid %q is not a whole number from 1 to 4294967295", value)
			return
		}
		o.meta.SID, o.sidSet = n, true
	case "rev":
		n, err := strconv.Atoi(value)
		if err != nil || n < 0 {
			o.fail(vpos, "rev %q is not a whole number", value)
			return
		}
		o.meta.Rev = n
	case "classtype":
		if value == "" || strings.ContainsAny(value, " \"") {
			o.fail(vpos, "classtype is one word, such as policy-violation")
		}
		o.meta.Classtype = value
	case "reference":
		if !strings.Contains(value, ",") {
			o.fail(vpos, "reference is type,id, such as url,example.com/advisory")
		}
		o.meta.References = append(o.meta.References, value)
	case "metadata":
		for _, kv := range strings.Split(value, ",") {
			if kv = strings.TrimSpace(kv); kv != "" {
				o.meta.Metadata = append(o.meta.Metadata, kv)
			}
		}
	case "flow":
		for _, f := range strings.Split(value, ",") {
			f = strings.TrimSpace(f)
			why, known := suricataFlow[f]
			switch {
			case !known:
				o.fail(vpos, "flow option %q is not one of to_server, from_client, established (and natwall refuses the others by name)", f)
			case why != "":
				o.fail(vpos, "flow:%s: %s", f, why)
			}
		}
	case "tls.sni", "tls_sni", "http.host":
		if !needNone() {
			return
		}
		o.setBuffer(map[string]AppProto{"tls.sni": AppTLS, "tls_sni": AppTLS, "http.host": AppHTTP}[key], pos)
	case "http_host":
		// The legacy modifier: the content before it is on http.host.
		if !needNone() {
			return
		}
		if o.last == nil || o.buffer != AppUnknown {
			o.fail(pos, "http_host modifies the content before it; with a sticky buffer write http.host before the content")
			return
		}
		o.setBuffer(AppHTTP, pos)
		o.cond.Contents = append(o.cond.Contents, *o.last)
		o.last = &o.cond.Contents[len(o.cond.Contents)-1]
		o.buffer = AppUnknown // a legacy modifier does not stick
		o.pendingUnbuffered = false
	case "dotprefix":
		if !needNone() {
			return
		}
		if o.cond == nil || o.buffer == AppUnknown {
			o.fail(pos, "dotprefix transforms a buffer: write it right after tls.sni or http.host")
			return
		}
		if len(o.cond.Contents) > 0 {
			o.fail(pos, "dotprefix must come before the buffer's contents")
			return
		}
		o.cond.DotPrefix = true
	case "bsize":
		if o.cond == nil || o.buffer == AppUnknown {
			o.fail(pos, "bsize needs a buffer before it: tls.sni or http.host")
			return
		}
		n, err := strconv.Atoi(value)
		if err != nil || n < 0 || n > 255 {
			o.fail(vpos, "bsize %q: only an exact size 0-255 is supported", value)
			return
		}
		o.cond.BSize = n
	case "content":
		o.content(value, pos, vpos)
	case "nocase", "startswith", "endswith", "fast_pattern":
		if !needNone() {
			return
		}
		if o.last == nil {
			o.fail(pos, "%s modifies a content: write it after one", key)
			return
		}
		if o.lastOpts[key] {
			o.fail(pos, "%s is given twice for one content", key)
			return
		}
		o.lastOpts[key] = true
		switch key {
		case "nocase":
			o.nocase = true
		case "startswith":
			o.last.StartsWith = true
		case "endswith":
			o.last.EndsWith = true
		}
	case "depth", "offset":
		if o.last == nil {
			o.fail(pos, "%s modifies a content: write it after one", key)
			return
		}
		n, err := strconv.Atoi(value)
		ok := err == nil && ((key == "offset" && n == 0) || (key == "depth" && n == len(o.lastRaw)))
		if !ok {
			o.fail(vpos, "%s:%s: only the exact-match idiom (offset:0, depth equal to the content's length) is supported", key, value)
			return
		}
		if key == "depth" {
			o.last.StartsWith = true
		}
	case "isdataat":
		if o.last == nil || strings.ReplaceAll(value, " ", "") != "!1,relative" {
			o.fail(pos, "isdataat: only isdataat:!1,relative after a content (it ends the buffer) is supported")
			return
		}
		o.last.EndsWith = true
	default:
		o.fail(pos, "unsupported keyword %q", key)
	}
}

func (o *optParser) setBuffer(proto AppProto, pos Pos) {
	if o.cond != nil && o.cond.Proto != proto {
		o.fail(pos, "a rule matches one name: tls.sni or http.host, not both")
		return
	}
	if o.proto != AppUnknown && o.proto != proto {
		o.fail(pos, "%s does not go with protocol %s", proto.field(), o.proto)
		return
	}
	o.buffer, o.bufPos = proto, pos
	if o.cond == nil {
		o.cond = &L7Cond{Proto: proto, BSize: -1}
	}
}

func (o *optParser) content(value string, pos, vpos Pos) {
	o.closeContent()
	if strings.HasPrefix(value, "!") {
		o.fail(vpos, "a negated content is not supported: match the names to exclude in an earlier rule")
		return
	}
	raw, ok := contentBytes(value)
	if !ok {
		o.fail(vpos, "content is a quoted string; |hex| bytes and \\\" \\; \\\\ escapes are allowed")
		return
	}
	if len(raw) == 0 {
		o.fail(vpos, "an empty content")
		return
	}
	o.lastRaw, o.lastPos, o.lastOpts, o.nocase = raw, vpos, map[string]bool{}, false
	m := NameMatch{Value: string(raw)}
	if o.buffer == AppUnknown {
		o.last = &m
		o.pendingUnbuffered = true
		return
	}
	o.cond.Contents = append(o.cond.Contents, m)
	o.last = &o.cond.Contents[len(o.cond.Contents)-1]
}

// closeContent checks the content just finished, now its modifiers are
// known: names are matched lowercased, so a content with capitals but no
// nocase could never match, and one with bytes no name has neither.
func (o *optParser) closeContent() {
	if o.last == nil {
		return
	}
	if o.pendingUnbuffered {
		o.fail(o.lastPos, "content without tls.sni or http.host: natwall matches names, not payload")
		o.pendingUnbuffered = false
	}
	v := o.last.Value
	if o.nocase {
		v = strings.ToLower(v)
	} else if v != strings.ToLower(v) {
		o.fail(o.lastPos, "content %q has capitals, but names are matched lowercased: add nocase or write it in lowercase", v)
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			o.fail(o.lastPos, "content %q can never match a name: names are letters, digits, hyphens and dots", o.last.Value)
			break
		}
	}
	o.last.Value = v
	o.last = nil
}

// contentBytes decodes a quoted content with |hex| bytes.
func contentBytes(v string) ([]byte, bool) {
	s, ok := unquote(v)
	if !ok {
		return nil, false
	}
	var out []byte
	for i := 0; i < len(s); i++ {
		if s[i] != '|' {
			out = append(out, s[i])
			continue
		}
		end := strings.IndexByte(s[i+1:], '|')
		if end < 0 {
			return nil, false
		}
		hex := strings.ReplaceAll(s[i+1:i+1+end], " ", "")
		if len(hex)%2 != 0 {
			return nil, false
		}
		for j := 0; j < len(hex); j += 2 {
			b, err := strconv.ParseUint(hex[j:j+2], 16, 8)
			if err != nil {
				return nil, false
			}
			out = append(out, byte(b))
		}
		i += end + 1
	}
	return out, true
}

// finish checks the rule as a whole and fills in its id and L7 condition.
func (o *optParser) finish() {
	o.closeContent()
	r := o.r
	if !o.sidSet {
		o.fail(r.Pos, "rule has no sid")
		return
	}
	meta := o.meta
	r.Meta = &meta
	r.ID = "sid:" + strconv.FormatUint(meta.SID, 10)
	switch {
	case o.cond != nil:
		if r.Protocol != -1 && r.Protocol != 6 {
			o.fail(o.bufPos, "%s needs protocol tcp, %s or ip", o.cond.Proto.field(), o.cond.Proto)
			return
		}
		r.Protocol = 6
		r.L7 = []L7Cond{*o.cond}
	case o.proto != AppUnknown:
		r.L7 = []L7Cond{{Proto: o.proto, BSize: -1}} // any flow of that protocol
	}
}

// resolveSuricata turns a parsed Suricata rule into model rules: its
// lists resolved, <> made two rules, and icmp one rule per family.
func (p *parser) resolveSuricata(r *rawRule, expand func(ref, []string) []netip.Prefix, opts Options) []Rule {
	ex := r.suri
	rule := r.Rule
	var ok1, ok2 bool
	rule.Src, ok1 = p.suriAddrs(ex.src, expand, opts)
	rule.Dst, ok2 = p.suriAddrs(ex.dst, expand, opts)
	sp, ok3 := p.suriPorts(ex.sport)
	dp, ok4 := p.suriPorts(ex.dport)
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return nil
	}
	rule.SrcPorts, rule.DstPorts = sp, dp
	out := []Rule{rule}
	if ex.icmp {
		v6 := rule
		v6.ID += ":icmpv6"
		v6.Protocol = 58
		out[0].Src, out[0].Dst = family(rule.Src, true), family(rule.Dst, true)
		v6.Src, v6.Dst = family(rule.Src, false), family(rule.Dst, false)
		out = append(out, v6)
		if out = dropUnmatchable(out); len(out) == 0 {
			p.add(r.Pos, "rule %q can never match: its source and destination are of different address families", r.ID)
			return nil
		}
	}
	if ex.bidir {
		n := len(out)
		for i := 0; i < n; i++ {
			rev := out[i]
			rev.ID += ":reverse"
			rev.Src, rev.Dst = out[i].Dst, out[i].Src
			rev.SrcPorts, rev.DstPorts = out[i].DstPorts, out[i].SrcPorts
			out = append(out, rev)
		}
	}
	return out
}

// family keeps the prefixes of one family; nil (any) stays any.
func family(ps []netip.Prefix, v4 bool) []netip.Prefix {
	if ps == nil {
		return nil
	}
	out := []netip.Prefix{}
	for _, q := range ps {
		if q.Addr().Is4() == v4 {
			out = append(out, q)
		}
	}
	return out
}

// dropUnmatchable drops the rules left with an empty, not nil, address
// list: the ICMPv6 half of an icmp rule for IPv4 addresses, say.
func dropUnmatchable(rs []Rule) []Rule {
	var out []Rule
	for _, r := range rs {
		if (r.Src != nil && len(r.Src) == 0) || (r.Dst != nil && len(r.Dst) == 0) {
			continue
		}
		out = append(out, r)
	}
	return out
}

// suriAddrs resolves an address expression; nil means any.
func (p *parser) suriAddrs(e *listExpr, expand func(ref, []string) []netip.Prefix, opts Options) ([]netip.Prefix, bool) {
	if !e.neg && e.items == nil && e.text == "any" {
		return nil, true
	}
	errs := len(p.errs)
	got := p.addrSet(e, expand, opts)
	if len(p.errs) > errs {
		return nil, false
	}
	if len(got) == 0 {
		p.add(e.pos, "the addresses resolve to none at all")
		return nil, false
	}
	return got, true
}

func (p *parser) addrSet(e *listExpr, expand func(ref, []string) []netip.Prefix, opts Options) []netip.Prefix {
	var set []netip.Prefix
	if e.items == nil {
		set = p.addrLeaf(e, expand, opts)
	} else {
		var pos, neg []netip.Prefix
		hasPos := false
		for _, it := range e.items {
			if it.neg {
				inner := *it
				inner.neg = false
				neg = append(neg, p.addrSet(&inner, expand, opts)...)
			} else {
				hasPos = true
				pos = append(pos, p.addrSet(it, expand, opts)...)
			}
		}
		if !hasPos {
			pos = []netip.Prefix{anyV4, anyV6}
		}
		set = minus(pos, neg)
	}
	if e.neg {
		return minus([]netip.Prefix{anyV4, anyV6}, set)
	}
	return set
}

func (p *parser) addrLeaf(e *listExpr, expand func(ref, []string) []netip.Prefix, opts Options) []netip.Prefix {
	switch {
	case e.text == "any":
		return []netip.Prefix{anyV4, anyV6}
	case (e.text == "$HOME_NET" || e.text == "$EXTERNAL_NET") && len(opts.Inside) == 0:
		p.add(e.pos, "%s needs inside_networks configured: $HOME_NET is them, $EXTERNAL_NET the rest", e.text)
		return nil
	case e.text == "$HOME_NET":
		return expand(ref{text: "inside", pos: e.pos}, nil)
	case e.text == "$EXTERNAL_NET":
		return complement(opts.Inside)
	case strings.HasPrefix(e.text, "$"):
		name := e.text[1:]
		if _, ok := p.sets[name]; !ok {
			p.add(e.pos, "variable %s is not defined: define an address set %q in a YAML rule file", e.text, name)
			return nil
		}
		return expand(ref{text: name, pos: e.pos}, nil)
	}
	if _, err := netip.ParsePrefix(e.text); err == nil {
		return expand(ref{text: e.text, pos: e.pos}, nil)
	}
	if _, err := netip.ParseAddr(e.text); err == nil {
		return expand(ref{text: e.text, pos: e.pos}, nil)
	}
	p.add(e.pos, "%q is not an address, a CIDR, any, or a $variable", e.text)
	return nil
}

// minus is every address of pos not in neg, as prefixes.
func minus(pos, neg []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, q := range pos {
		out = append(out, subtract(q.Masked(), masked(neg))...)
	}
	return out
}

func masked(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, len(ps))
	for i, q := range ps {
		out[i] = q.Masked()
	}
	return out
}

// suriPorts resolves a port expression; nil means any.
func (p *parser) suriPorts(e *listExpr) ([]PortRange, bool) {
	if !e.neg && e.items == nil && e.text == "any" {
		return nil, true
	}
	var bits [65536 / 64]uint64
	if !p.portSet(e, &bits) {
		return nil, false
	}
	var out []PortRange
	for port := 0; port < 65536; port++ {
		if bits[port/64]&(1<<(port%64)) == 0 {
			continue
		}
		lo := port
		for port+1 < 65536 && bits[(port+1)/64]&(1<<((port+1)%64)) != 0 {
			port++
		}
		out = append(out, PortRange{uint16(lo), uint16(port)})
	}
	if len(out) == 0 {
		p.add(e.pos, "the ports resolve to none at all")
		return nil, false
	}
	return out, true
}

func (p *parser) portSet(e *listExpr, bits *[1024]uint64) bool {
	var set [1024]uint64
	if e.items == nil {
		if !p.portLeaf(e, &set) {
			return false
		}
	} else {
		var pos, neg [1024]uint64
		hasPos := false
		for _, it := range e.items {
			target := &pos
			inner := *it
			if it.neg {
				inner.neg, target = false, &neg
			} else {
				hasPos = true
			}
			if !p.portSet(&inner, target) {
				return false
			}
		}
		for i := range set {
			if !hasPos {
				pos[i] = ^uint64(0)
			}
			set[i] = pos[i] &^ neg[i]
		}
	}
	for i := range bits {
		if e.neg {
			bits[i] |= ^set[i]
		} else {
			bits[i] |= set[i]
		}
	}
	return true
}

func (p *parser) portLeaf(e *listExpr, set *[1024]uint64) bool {
	fill := func(lo, hi int) {
		for v := lo; v <= hi; v++ {
			set[v/64] |= 1 << (v % 64)
		}
	}
	if e.text == "any" {
		fill(0, 65535)
		return true
	}
	if strings.HasPrefix(e.text, "$") {
		ranges, ok := p.portSets[e.text[1:]]
		if !ok {
			p.add(e.pos, "variable %s is not defined: define a port set %q in a YAML rule file", e.text, e.text[1:])
			return false
		}
		for _, r := range ranges.ports {
			fill(int(r.Lo), int(r.Hi))
		}
		return true
	}
	lo, hi, isRange := strings.Cut(e.text, ":")
	a, b := 0, 65535
	var err1, err2 error
	if lo != "" || !isRange {
		a, err1 = strconv.Atoi(lo)
	}
	if !isRange {
		b = a
	} else if hi != "" {
		b, err2 = strconv.Atoi(hi)
	}
	if err1 != nil || err2 != nil || a < 0 || b > 65535 || a > b || (isRange && lo == "" && hi == "") {
		p.add(e.pos, "%q is not a port 0-65535, a range lo:hi (lo: or :hi), any or a $variable", e.text)
		return false
	}
	fill(a, b)
	return true
}
