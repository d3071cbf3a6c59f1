package rules

import (
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// MaxFileSize bounds a rule file, so a runaway generator or a hostile file
// cannot exhaust the daemon's memory.
const MaxFileSize = 16 << 20

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$`)

// Options say how to resolve a rule set.
type Options struct {
	// Inside are the inside networks: the "inside" tag, and "internet" is
	// everything else.
	Inside []netip.Prefix
	// InspectL7 accepts rules with L7 conditions (tls_sni, http_host,
	// Suricata name rules, domain lists). Without it they are errors: a
	// daemon that cannot hold PENDING flows for its inspector would
	// otherwise enforce them on addresses and ports alone, so an
	// allow-by-name rule would allow every name. natwall check and explain
	// set it; natwall run sets it once its inspector runs.
	InspectL7 bool
	// SNATAddresses are what a forward's "external: snat" stands for, to
	// find overlaps with forwards on one of them; nil when unknown, and
	// then snat overlaps every address.
	SNATAddresses []netip.Addr
}

// SuricataExt ends the names of Suricata rule files; other rule files are
// YAML.
const SuricataExt = ".rules"

func isRuleFile(name string) bool {
	return strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml") || strings.HasSuffix(name, SuricataExt)
}

// Load reads, validates and merges the rule files at paths (files, or
// directories whose *.yaml, *.yml and *.rules files are read in name
// order). It returns an ErrorList naming every problem with file:line:col,
// and no RuleSet at all when there is one.
func Load(paths []string, opts Options) (*RuleSet, error) {
	srcs, err := ReadSources(paths)
	if err != nil {
		return nil, err
	}
	return Parse(srcs, opts)
}

// ReadSources reads the rule files at paths as Load does, for a caller
// that keeps what it parsed: the daemon records the sources of the set it
// applied, so the live set can be explained after the files change.
func ReadSources(paths []string) ([]Source, error) {
	var files []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("rule path: %w", err)
		}
		if !st.IsDir() {
			files = append(files, p)
			continue
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			return nil, fmt.Errorf("rule directory: %w", err)
		}
		for _, e := range entries {
			if !e.IsDir() && isRuleFile(e.Name()) {
				files = append(files, filepath.Join(p, e.Name()))
			}
		}
	}
	if len(files) == 0 {
		return nil, ErrNoRuleFiles
	}
	srcs := make([]Source, 0, len(files))
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return nil, fmt.Errorf("rule file: %w", err)
		}
		data, err := io.ReadAll(io.LimitReader(fh, MaxFileSize+1))
		fh.Close()
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", f, err)
		}
		srcs = append(srcs, Source{Name: f, Data: data})
	}
	return srcs, nil
}

// Source is one rule file's name and content.
type Source struct {
	Name string `json:"name"`
	Data []byte `json:"data"`
}

// rawRule is a rule as written, before sets are resolved.
type rawRule struct {
	Rule
	stage    Stage
	src, dst []ref
	priPos   Pos
	// sharedPriority is set on the rules after the first of a file or
	// list that takes one priority for rules kept in their order.
	sharedPriority bool
	// suri holds a Suricata rule's address and port expressions.
	suri *suriExprs
}

type rawPortSet struct {
	pos   Pos
	ports []PortRange
}

type ref struct {
	text string
	pos  Pos
}

type rawSet struct {
	name    string
	pos     Pos
	members []ref
}

// Parse is Load on contents already read.
func Parse(srcs []Source, opts Options) (*RuleSet, error) {
	p := &parser{sets: map[string]*rawSet{}, portSets: map[string]*rawPortSet{}}
	for _, src := range srcs {
		if strings.HasSuffix(src.Name, SuricataExt) {
			p.suricataFile(src)
		} else {
			p.file(src)
		}
	}
	rs := p.resolve(opts)
	p.resolveDNAT(rs, opts)
	if len(p.errs) > 0 {
		return nil, p.errs.sorted()
	}
	return rs, nil
}

type parser struct {
	errorSink
	sets       map[string]*rawSet
	portSets   map[string]*rawPortSet
	rules      []*rawRule
	defAction  Action
	defPos     Pos
	defaultSet bool
	dnat       []DNAT
	// The stateful section's default_log and audit, and where each was
	// set (zero when not).
	defLog, audit       bool
	defLogPos, auditPos Pos
}

func posOf(file string, n *yaml.Node) Pos { return Pos{File: file, Line: n.Line, Col: n.Column} }

func (p *parser) file(src Source) {
	top := Pos{File: src.Name, Line: 1, Col: 1}
	if len(src.Data) > MaxFileSize {
		p.add(top, "file is larger than %d bytes", MaxFileSize)
		return
	}
	// One decoder reads the document and then looks for a second one
	// after "---", which would otherwise be dropped unseen: the file is
	// parsed once (yaml.Unmarshal and a second decoder parsed it twice,
	// most of a large reload's time).
	dec := yaml.NewDecoder(bytes.NewReader(src.Data))
	var doc, second yaml.Node
	if err := dec.Decode(&doc); err != nil && err != io.EOF {
		line := 1
		if m := regexp.MustCompile(`line (\d+)`).FindStringSubmatch(err.Error()); m != nil {
			line, _ = strconv.Atoi(m[1])
		}
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		msg = regexp.MustCompile(`^line \d+: `).ReplaceAllString(msg, "")
		p.add(Pos{File: src.Name, Line: line, Col: 1}, "not valid YAML: %s", msg)
		return
	} else if err == nil {
		if err := dec.Decode(&second); err != io.EOF {
			line := second.Line
			if m := regexp.MustCompile(`line (\d+)`).FindStringSubmatch(fmt.Sprint(err)); err != nil && m != nil {
				line, _ = strconv.Atoi(m[1])
			}
			p.add(Pos{File: src.Name, Line: max(line, 1), Col: 1}, "a rule file is one YAML document, but a second one starts here: merge it into the first or give it a file of its own")
			return
		}
	}
	// An empty file is more likely a truncated write than an intent.
	if len(doc.Content) == 0 {
		p.add(top, "empty rule file (write {} for a file with no rules)")
		return
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		p.add(posOf(src.Name, root), "a rule file is a mapping with address_sets, stateless and stateful")
		return
	}
	p.mapping(src.Name, root, map[string]func(k, v *yaml.Node){
		"address_sets": func(k, v *yaml.Node) { p.addressSets(src.Name, v) },
		"port_sets":    func(k, v *yaml.Node) { p.portSetsOf(src.Name, v) },
		"domain_lists": func(k, v *yaml.Node) { p.domainLists(src.Name, v) },
		"stateless":    func(k, v *yaml.Node) { p.ruleList(src.Name, v, Stateless) },
		"stateful":     func(k, v *yaml.Node) { p.stateful(src.Name, v) },
		"dnat":         func(k, v *yaml.Node) { p.dnatList(src.Name, v) },
	})
}

// mapping walks a mapping node, calling the handler of each key and
// reporting unknown and repeated keys.
func (p *parser) mapping(file string, n *yaml.Node, handlers map[string]func(k, v *yaml.Node)) {
	known := make([]string, 0, len(handlers))
	for name := range handlers {
		known = append(known, name)
	}
	p.fields(file, n, known, func(k, v *yaml.Node) { handlers[k.Value](k, v) })
}

// fields walks a mapping node whose keys may be those in known, calling
// handle for each and reporting unknown and repeated keys.
func (p *parser) fields(file string, n *yaml.Node, known []string, handle func(k, v *yaml.Node)) {
	if n.Kind != yaml.MappingNode {
		p.add(posOf(file, n), "expected a mapping")
		return
	}
	// Slices, not maps: a rule has a handful of keys, and maps per rule
	// were a tenth of parsing 30,000 of them.
	seen := make([]string, 0, 16)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch {
		case !slices.Contains(known, k.Value):
			names := slices.Clone(known)
			sort.Strings(names)
			p.add(posOf(file, k), "unknown key %q (known: %s)", k.Value, strings.Join(names, ", "))
		case slices.Contains(seen, k.Value):
			p.add(posOf(file, k), "%q is set twice", k.Value)
		default:
			seen = append(seen, k.Value)
			handle(k, v)
		}
	}
}

func (p *parser) addressSets(file string, n *yaml.Node) {
	if n.Kind != yaml.MappingNode {
		p.add(posOf(file, n), "address_sets is a mapping of set names to lists of CIDRs and set names")
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		pos := posOf(file, k)
		switch {
		case !idPattern.MatchString(k.Value):
			p.add(pos, "set name %q must be letters, digits, and _ . : -", k.Value)
			continue
		case isTag(k.Value):
			p.add(pos, "set name %q is a built-in tag", k.Value)
			continue
		case isAddr(k.Value):
			p.add(pos, "set name %q is an address: name sets with letters", k.Value)
			continue
		}
		if prev, dup := p.sets[k.Value]; dup {
			p.add(pos, "address set %q is already defined at %s", k.Value, prev.pos)
			continue
		}
		p.sets[k.Value] = &rawSet{name: k.Value, pos: pos, members: p.refs(file, v, "address set")}
	}
}

func (p *parser) portSetsOf(file string, n *yaml.Node) {
	if n.Kind != yaml.MappingNode {
		p.add(posOf(file, n), "port_sets is a mapping of set names to lists of ports and ranges")
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		pos := posOf(file, k)
		if !idPattern.MatchString(k.Value) {
			p.add(pos, "set name %q must be letters, digits, and _ . : -", k.Value)
			continue
		}
		if prev, dup := p.portSets[k.Value]; dup {
			p.add(pos, "port set %q is already defined at %s", k.Value, prev.pos)
			continue
		}
		p.portSets[k.Value] = &rawPortSet{pos: pos, ports: p.ports(file, v, "port set")}
	}
}

func (p *parser) refs(file string, n *yaml.Node, what string) []ref {
	switch n.Kind {
	case yaml.ScalarNode:
		return []ref{{text: n.Value, pos: posOf(file, n)}}
	case yaml.SequenceNode:
		var out []ref
		for _, el := range n.Content {
			if el.Kind != yaml.ScalarNode {
				p.add(posOf(file, el), "%s entries are CIDRs, set names or tags", what)
				continue
			}
			out = append(out, ref{text: el.Value, pos: posOf(file, el)})
		}
		if len(out) == 0 {
			p.add(posOf(file, n), "empty %s list: leave the key out to match any address", what)
		}
		return out
	default:
		p.add(posOf(file, n), "%s is a list of CIDRs, set names or tags", what)
		return nil
	}
}

func (p *parser) stateful(file string, n *yaml.Node) {
	p.mapping(file, n, map[string]func(k, v *yaml.Node){
		"default_action": func(k, v *yaml.Node) {
			pos := posOf(file, v)
			if p.defaultSet {
				p.add(pos, "stateful default_action is already set at %s", p.defPos)
				return
			}
			a, ok := map[string]Action{"deny": Deny, "reject": Reject, "allow": Allow}[v.Value]
			if !ok || v.Kind != yaml.ScalarNode {
				p.add(pos, "default_action %q is not one of deny, reject, allow", v.Value)
				return
			}
			p.defAction, p.defPos, p.defaultSet = a, pos, true
		},
		"default_log": func(k, v *yaml.Node) {
			pos := posOf(file, v)
			if p.defLogPos != (Pos{}) {
				p.add(pos, "stateful default_log is already set at %s", p.defLogPos)
				return
			}
			if b, ok := p.boolean(file, v, "default_log"); ok {
				p.defLog, p.defLogPos = b, pos
			}
		},
		"audit": func(k, v *yaml.Node) {
			pos := posOf(file, v)
			if p.auditPos != (Pos{}) {
				p.add(pos, "stateful audit is already set at %s", p.auditPos)
				return
			}
			if b, ok := p.boolean(file, v, "audit"); ok {
				p.audit, p.auditPos = b, pos
			}
		},
		"rules": func(k, v *yaml.Node) { p.ruleList(file, v, Stateful) },
	})
}

// boolean reads true or false, and nothing else YAML would take for one.
func (p *parser) boolean(file string, v *yaml.Node, what string) (bool, bool) {
	s, ok := p.scalar(file, v, what)
	if !ok {
		return false, false
	}
	switch s {
	case "true":
		return true, true
	case "false":
		return false, true
	}
	p.add(posOf(file, v), "%s %q is not true or false", what, s)
	return false, false
}

func (p *parser) ruleList(file string, n *yaml.Node, stage Stage) {
	if n.Kind != yaml.SequenceNode {
		p.add(posOf(file, n), "%s rules are a list", stage)
		return
	}
	for _, el := range n.Content {
		p.rule(file, el, stage)
	}
}

func (p *parser) scalar(file string, v *yaml.Node, what string) (string, bool) {
	if v.Kind != yaml.ScalarNode {
		p.add(posOf(file, v), "%s must be a single value", what)
		return "", false
	}
	return v.Value, true
}

func (p *parser) integer(file string, v *yaml.Node, what string, lo, hi int) (int, bool) {
	s, ok := p.scalar(file, v, what)
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		p.add(posOf(file, v), "%s %q is not a whole number from %d to %d", what, s, lo, hi)
		return 0, false
	}
	return n, true
}

// stageActions are the actions each stage's rules may take.
var stageActions = map[Stage][]Action{Stateless: {Drop, Pass}, Stateful: {Allow, Deny, Reject, Alert}}

// protocolNames are the protocols a rule may name, -1 for any.
var protocolNames = map[string]int{"any": -1, "tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}

// ruleKeys are the keys a rule may have.
var ruleKeys = []string{"tls_sni", "http_host", "id", "description", "log", "mode", "priority", "action", "src", "dst", "protocol", "src_ports", "dst_ports", "icmp_type", "icmp_code", "direction"}

func (p *parser) rule(file string, n *yaml.Node, stage Stage) {
	r := &rawRule{stage: stage, Rule: Rule{Pos: posOf(file, n), Protocol: -1, ICMPType: -1, ICMPCode: -1, Priority: -1}}
	if n.Kind != yaml.MappingNode {
		p.add(r.Pos, "a rule is a mapping with id, priority, action and matches")
		return
	}
	var protoPos, portsPos, icmpPos, l7Pos, logPos, modePos Pos
	actionWritten := false
	l7Handler := func(proto AppProto) func(k, v *yaml.Node) {
		return func(k, v *yaml.Node) {
			if l7Pos == (Pos{}) {
				l7Pos = posOf(file, k)
			}
			if stage == Stateless {
				p.add(posOf(file, k), "%s is for stateful rules: stateless rules see packets, not the names flows carry", k.Value)
				return
			}
			r.L7 = append(r.L7, p.names(file, v, proto, k.Value)...)
		}
	}
	// One handler and a switch, not a map of closures: building those per
	// rule was most of the walk over a 30,000-rule file.
	p.fields(file, n, ruleKeys, func(k, v *yaml.Node) {
		switch k.Value {
		case "tls_sni":
			l7Handler(AppTLS)(k, v)
		case "http_host":
			l7Handler(AppHTTP)(k, v)
		case "id":
			if s, ok := p.scalar(file, v, "id"); ok {
				if !idPattern.MatchString(s) {
					p.add(posOf(file, v), "id %q must be 1-128 letters, digits, and _ . : -", s)
				}
				r.ID = s
			}
		case "description":
			p.scalar(file, v, "description")
		case "log":
			if b, ok := p.boolean(file, v, "log"); ok {
				r.Log, logPos = b, posOf(file, k)
			}
		case "mode":
			s, ok := p.scalar(file, v, "mode")
			if !ok {
				return
			}
			switch s {
			case "enforce":
			case "audit":
				r.Audit = true
			default:
				p.add(posOf(file, v), "mode %q is not enforce or audit", s)
				return
			}
			modePos = posOf(file, k)
		case "priority":
			if n, ok := p.integer(file, v, "priority", 0, 1_000_000_000); ok {
				r.Priority, r.priPos = n, posOf(file, v)
			}
		case "action":
			actionWritten = true
			s, ok := p.scalar(file, v, "action")
			if !ok {
				return
			}
			allowed := stageActions[stage]
			for _, a := range allowed {
				if a.String() == s {
					r.Action = a
					return
				}
			}
			names := make([]string, len(allowed))
			for i, a := range allowed {
				names[i] = a.String()
			}
			p.add(posOf(file, v), "%s action %q is not one of %s", stage, s, strings.Join(names, ", "))
		case "src":
			r.src = p.refs(file, v, "src")
		case "dst":
			r.dst = p.refs(file, v, "dst")
		case "protocol":
			s, ok := p.scalar(file, v, "protocol")
			if !ok {
				return
			}
			protoPos = posOf(file, v)
			if n, known := protocolNames[strings.ToLower(s)]; known {
				r.Protocol = n
			} else if n, err := strconv.Atoi(s); err == nil && n >= 0 && n <= 255 {
				r.Protocol = n
			} else {
				p.add(protoPos, "protocol %q is not tcp, udp, icmp, icmpv6, any or a number 0-255", s)
			}
		case "src_ports":
			r.SrcPorts, portsPos = p.ports(file, v, "src_ports"), posOf(file, k)
		case "dst_ports":
			r.DstPorts, portsPos = p.ports(file, v, "dst_ports"), posOf(file, k)
		case "icmp_type":
			if n, ok := p.integer(file, v, "icmp_type", 0, 255); ok {
				r.ICMPType, icmpPos = n, posOf(file, k)
			}
		case "icmp_code":
			if n, ok := p.integer(file, v, "icmp_code", 0, 255); ok {
				r.ICMPCode = n
				if icmpPos == (Pos{}) {
					icmpPos = posOf(file, k)
				}
			}
		case "direction":
			s, ok := p.scalar(file, v, "direction")
			if !ok {
				return
			}
			for d, name := range directionNames {
				if name == s {
					r.Direction = d
					return
				}
			}
			p.add(posOf(file, v), "direction %q is not one of any, outbound, inbound, east-west, transit, local", s)
		}
	})
	if r.ID == "" {
		p.add(r.Pos, "rule has no id")
	}
	if r.Priority < 0 {
		p.add(r.Pos, "rule %q has no priority", r.ID)
	}
	if r.Action == 0 && !actionWritten {
		p.add(r.Pos, "rule %q has no action", r.ID)
	}
	if (r.SrcPorts != nil || r.DstPorts != nil) && r.Protocol != 6 && r.Protocol != 17 {
		p.add(portsPos, "ports need protocol tcp or udp (rule %q)", r.ID)
	}
	if (r.ICMPType >= 0 || r.ICMPCode >= 0) && r.Protocol != 1 && r.Protocol != 58 {
		p.add(icmpPos, "icmp_type and icmp_code need protocol icmp or icmpv6 (rule %q)", r.ID)
	}
	if r.ICMPCode >= 0 && r.ICMPType < 0 {
		p.add(icmpPos, "icmp_code needs icmp_type (rule %q)", r.ID)
	}
	if r.L7 != nil && r.Protocol != 6 {
		p.add(l7Pos, "tls_sni and http_host need protocol tcp (rule %q)", r.ID)
	}
	p.decisionReporting(r, logPos, modePos)
	_ = protoPos
	p.rules = append(p.rules, r)
}

// decisionReporting checks a rule's log and mode: both are for the
// stateful deny and reject rules, the only ones whose decision would
// otherwise go unreported (alert rules always report, and allowed flows
// have flow records).
func (p *parser) decisionReporting(r *rawRule, logPos, modePos Pos) {
	decides := r.stage == Stateful && (r.Action == Deny || r.Action == Reject)
	if r.Log && !decides {
		p.add(logPos, "log is for stateful deny and reject rules, not %s %s (rule %q)", r.stage, r.Action, r.ID)
	}
	if !r.Audit {
		return
	}
	switch {
	case !decides:
		p.add(modePos, "mode: audit is for stateful deny and reject rules, not %s %s (rule %q)", r.stage, r.Action, r.ID)
	case r.Log:
		p.add(logPos, "log is implied by mode: audit, which reports every match (rule %q)", r.ID)
	case r.L7 != nil:
		p.add(modePos, "mode: audit cannot be combined with tls_sni or http_host (rule %q)", r.ID)
	}
}

// names reads a tls_sni or http_host list: names matched exactly, or
// .example.com for the domain and every subdomain.
func (p *parser) names(file string, n *yaml.Node, proto AppProto, what string) []L7Cond {
	items := []*yaml.Node{n}
	if n.Kind == yaml.SequenceNode {
		items = n.Content
	}
	var out []L7Cond
	for _, el := range items {
		pos := posOf(file, el)
		if el.Kind != yaml.ScalarNode {
			p.add(pos, "%s entries are names such as www.example.com or .example.com", what)
			continue
		}
		c, msg := nameCond(proto, el.Value)
		if msg != "" {
			p.add(pos, "%s: %s", what, msg)
			continue
		}
		out = append(out, c)
	}
	if len(items) == 0 {
		p.add(posOf(file, n), "empty %s: leave the key out to match any name", what)
	}
	return out
}

func (p *parser) ports(file string, n *yaml.Node, what string) []PortRange {
	items := []*yaml.Node{n}
	if n.Kind == yaml.SequenceNode {
		items = n.Content
	}
	var out []PortRange
	for _, el := range items {
		pos := posOf(file, el)
		if el.Kind != yaml.ScalarNode {
			p.add(pos, "%s entries are ports or ranges such as 8000-8080", what)
			continue
		}
		lo, hi, isRange := strings.Cut(el.Value, "-")
		a, err1 := strconv.Atoi(strings.TrimSpace(lo))
		b, err2 := a, error(nil)
		if isRange {
			b, err2 = strconv.Atoi(strings.TrimSpace(hi))
		}
		if err1 != nil || err2 != nil || a < 0 || b > 65535 || a > b {
			p.add(pos, "%s entry %q is not a port 0-65535 or a range lo-hi", what, el.Value)
			continue
		}
		out = append(out, PortRange{uint16(a), uint16(b)})
	}
	if len(out) == 0 && len(items) == 0 {
		p.add(posOf(file, n), "empty %s: leave the key out to match any port", what)
	}
	return out
}

func isAddr(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

func isTag(s string) bool {
	switch s {
	case "any", "inside", "internet", "azure-lb", "metadata":
		return true
	}
	return false
}

// resolve expands set references and tags, checks ids and priorities
// across files, and orders each stage by priority.
func (p *parser) resolve(opts Options) *RuleSet {
	rs := &RuleSet{StatefulDefault: Deny}
	if p.defaultSet {
		rs.StatefulDefault, rs.DefaultPos = p.defAction, p.defPos
	}
	rs.DefaultLog, rs.Audit = p.defLog, p.audit
	if rs.DefaultLog && rs.StatefulDefault == Allow {
		p.add(p.defLogPos, "default_log is for a deny or reject default, and the default_action is allow")
	}
	resolved := map[string][]netip.Prefix{}
	var expand func(r ref, stack []string) []netip.Prefix
	expand = func(r ref, stack []string) []netip.Prefix {
		switch r.text {
		case "any":
			return []netip.Prefix{anyV4, anyV6}
		case "inside":
			if len(opts.Inside) == 0 {
				p.add(r.pos, "the inside tag needs inside_networks configured")
			}
			return append([]netip.Prefix(nil), opts.Inside...)
		case "internet":
			return complement(opts.Inside)
		case "azure-lb":
			return []netip.Prefix{azureLB}
		case "metadata":
			return []netip.Prefix{metadata}
		}
		if pfx, err := netip.ParsePrefix(r.text); err == nil {
			if pfx != pfx.Masked() {
				p.add(r.pos, "%q has host bits set (did you mean %s?)", r.text, pfx.Masked())
			}
			return []netip.Prefix{pfx.Masked()}
		}
		if a, err := netip.ParseAddr(r.text); err == nil {
			return []netip.Prefix{netip.PrefixFrom(a, a.BitLen())}
		}
		set, ok := p.sets[r.text]
		if !ok {
			p.add(r.pos, "%q is not a CIDR, an address, a tag or a defined address set", r.text)
			return nil
		}
		if slices.Contains(stack, r.text) {
			p.add(r.pos, "address set %q refers to itself through %s", r.text, strings.Join(append(stack, r.text), " -> "))
			return nil
		}
		if got, ok := resolved[r.text]; ok {
			return got
		}
		var out []netip.Prefix
		for _, m := range set.members {
			out = append(out, expand(m, append(stack, r.text))...)
		}
		resolved[r.text] = out
		return out
	}
	ids := map[string]Pos{}
	prios := map[Stage]map[int]Pos{Stateless: {}, Stateful: {}}
	for _, r := range p.rules {
		if r.ID != "" {
			if prev, dup := ids[r.ID]; dup {
				p.add(r.Pos, "rule id %q is already used at %s", r.ID, prev)
			} else {
				ids[r.ID] = r.Pos
			}
		}
		if r.Priority >= 0 && !r.sharedPriority {
			if prev, dup := prios[r.stage][r.Priority]; dup {
				p.add(r.priPos, "%s priority %d is already used at %s", r.stage, r.Priority, prev)
			} else {
				prios[r.stage][r.Priority] = r.priPos
			}
		}
		if r.suri != nil {
			for i, rule := range p.resolveSuricata(r, expand, opts) {
				if i > 0 {
					if prev, dup := ids[rule.ID]; dup {
						p.add(r.Pos, "rule id %q is already used at %s", rule.ID, prev)
					}
					ids[rule.ID] = r.Pos
				}
				rs.Stateful = append(rs.Stateful, rule)
			}
			continue
		}
		rule := r.Rule
		errsBefore := len(p.errs)
		for _, ref := range r.src {
			rule.Src = append(rule.Src, expand(ref, nil)...)
		}
		for _, ref := range r.dst {
			rule.Dst = append(rule.Dst, expand(ref, nil)...)
		}
		reported := len(p.errs) > errsBefore
		if r.src != nil && len(rule.Src) == 0 && !reported {
			p.add(r.Pos, "rule %q: src resolves to no address at all", r.ID)
		}
		if r.dst != nil && len(rule.Dst) == 0 && !reported {
			p.add(r.Pos, "rule %q: dst resolves to no address at all", r.ID)
		}
		if r.stage == Stateless {
			rs.Stateless = append(rs.Stateless, rule)
		} else {
			rs.Stateful = append(rs.Stateful, rule)
		}
	}
	// A set no rule uses is checked too: a broken one is a mistake today
	// and an outage the day a rule starts using it.
	setNames := make([]string, 0, len(p.sets))
	for name := range p.sets {
		setNames = append(setNames, name)
	}
	sort.Strings(setNames)
	for _, name := range setNames {
		if _, done := resolved[name]; !done {
			expand(ref{text: name, pos: p.sets[name].pos}, nil)
		}
	}
	if !opts.InspectL7 {
		reported := map[Pos]bool{}
		for _, r := range rs.Stateful {
			if r.L7 != nil && !reported[r.Pos] {
				reported[r.Pos] = true
				p.add(r.Pos, "rule %q has an L7 condition, which this natwall cannot enforce without its L7 inspector: refused rather than enforced on addresses and ports alone", r.ID)
			}
		}
	}
	if rs.Audit {
		for i := range rs.Stateful {
			if r := &rs.Stateful[i]; (r.Action == Deny || r.Action == Reject) && r.L7 == nil {
				r.Audit = true
			}
		}
	}
	for _, st := range []*[]Rule{&rs.Stateless, &rs.Stateful} {
		sort.SliceStable(*st, func(i, j int) bool { return (*st)[i].Priority < (*st)[j].Priority })
	}
	return rs
}

// complement is every address of each family not inside one of ps.
func complement(ps []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, root := range []netip.Prefix{anyV4, anyV6} {
		var inFamily []netip.Prefix
		for _, p := range ps {
			if p.Addr().Is4() == root.Addr().Is4() {
				inFamily = append(inFamily, p.Masked())
			}
		}
		out = append(out, subtract(root, inFamily)...)
	}
	return out
}

// subtract splits p into the largest prefixes that overlap none of holes.
func subtract(p netip.Prefix, holes []netip.Prefix) []netip.Prefix {
	for _, h := range holes {
		if h.Bits() <= p.Bits() && h.Contains(p.Addr()) {
			return nil // p lies inside a hole
		}
	}
	overlaps := false
	for _, h := range holes {
		if p.Contains(h.Addr()) {
			overlaps = true
			break
		}
	}
	if !overlaps {
		return []netip.Prefix{p}
	}
	lo, hi := halves(p)
	return append(subtract(lo, holes), subtract(hi, holes)...)
}

func halves(p netip.Prefix) (netip.Prefix, netip.Prefix) {
	bits := p.Bits() + 1
	lo := netip.PrefixFrom(p.Addr(), bits)
	b := p.Addr().AsSlice()
	idx := (bits - 1) / 8
	b[idx] |= 0x80 >> ((bits - 1) % 8)
	hiAddr, _ := netip.AddrFromSlice(b)
	return lo, netip.PrefixFrom(hiAddr, bits)
}
