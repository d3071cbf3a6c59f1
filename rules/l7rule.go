package rules

import (
	"fmt"
	"strings"

	"github.com/natwall/natwall/rules/l7"
)

// AppProto is the application protocol a flow's first data speaks, as the
// inspector found it.
type AppProto int

const (
	AppUnknown AppProto = iota // neither TLS nor HTTP/1.x
	AppTLS                     // a TLS ClientHello; its name is the SNI
	AppHTTP                    // an HTTP/1.x request head; its name is the Host
)

var appProtoNames = map[AppProto]string{AppUnknown: "unknown", AppTLS: "tls", AppHTTP: "http"}

func (a AppProto) String() string { return appProtoNames[a] }

// field is the name an L7 condition on a is written with.
func (a AppProto) field() string {
	switch a {
	case AppTLS:
		return "tls_sni"
	case AppHTTP:
		return "http_host"
	}
	return "unknown"
}

// NameMatch is one content match on a name: the name starts with, ends
// with, equals (both) or contains (neither) Value. Names are matched
// lowercased, so Value is lowercase.
type NameMatch struct {
	Value      string
	StartsWith bool
	EndsWith   bool
}

// L7Cond is one application-layer condition: the flow speaks Proto and,
// when Contents are given, the name it carries satisfies all of them. With
// DotPrefix the name is matched with a "." before it, so ".example.com"
// ending it means example.com or any subdomain. BSize, when not -1, is
// the exact length the (prefixed) name must have.
type L7Cond struct {
	Proto     AppProto
	DotPrefix bool
	BSize     int
	Contents  []NameMatch
}

// L7Info is what the inspector learnt from a flow's first data: its
// protocol and the normalised name it carries, empty if none.
type L7Info struct {
	Proto AppProto
	Name  string
}

func (i L7Info) String() string {
	if i.Proto == AppUnknown {
		return "first data that is neither TLS nor HTTP"
	}
	if i.Name == "" {
		return map[AppProto]string{AppTLS: "a ClientHello without SNI", AppHTTP: "an HTTP request without Host"}[i.Proto]
	}
	return map[AppProto]string{AppTLS: "SNI ", AppHTTP: "Host "}[i.Proto] + i.Name
}

// Matches reports whether info satisfies c. A condition with matches
// never holds for a flow that carries no name.
func (c *L7Cond) Matches(info L7Info) bool {
	if info.Proto != c.Proto {
		return false
	}
	if len(c.Contents) == 0 && c.BSize < 0 {
		return true
	}
	if info.Name == "" {
		return false
	}
	buf := info.Name
	if c.DotPrefix {
		buf = "." + buf
	}
	if c.BSize >= 0 && len(buf) != c.BSize {
		return false
	}
	for _, m := range c.Contents {
		var ok bool
		switch {
		case m.StartsWith && m.EndsWith:
			ok = buf == m.Value
		case m.StartsWith:
			ok = strings.HasPrefix(buf, m.Value)
		case m.EndsWith:
			ok = strings.HasSuffix(buf, m.Value)
		default:
			ok = strings.Contains(buf, m.Value)
		}
		if !ok {
			return false
		}
	}
	return true
}

// String writes c as a YAML name when it is one (example.com, or
// .example.com for the domain and its subdomains), else as its matches.
func (c *L7Cond) String() string {
	if name, ok := c.yamlName(); ok {
		return c.Proto.field() + " " + name
	}
	parts := []string{c.Proto.field()}
	if c.DotPrefix {
		parts = append(parts, "dotprefix")
	}
	if c.BSize >= 0 {
		parts = append(parts, fmt.Sprintf("bsize %d", c.BSize))
	}
	for _, m := range c.Contents {
		kind := "contains"
		switch {
		case m.StartsWith && m.EndsWith:
			kind = "is"
		case m.StartsWith:
			kind = "startswith"
		case m.EndsWith:
			kind = "endswith"
		}
		parts = append(parts, fmt.Sprintf("%s %q", kind, m.Value))
	}
	if len(c.Contents) == 0 && c.BSize < 0 {
		parts = append(parts, "any name or none")
	}
	return strings.Join(parts, " ")
}

func (c *L7Cond) yamlName() (string, bool) {
	if len(c.Contents) != 1 || c.BSize >= 0 {
		return "", false
	}
	m := c.Contents[0]
	switch {
	case !c.DotPrefix && m.StartsWith && m.EndsWith:
		return m.Value, true
	case c.DotPrefix && !m.StartsWith && m.EndsWith && strings.HasPrefix(m.Value, "."):
		return m.Value, true
	}
	return "", false
}

// nameCond is the condition a YAML name or domain list target stands
// for: "example.com" exactly, ".example.com" the domain and every
// subdomain.
func nameCond(proto AppProto, name string) (L7Cond, string) {
	domain := strings.HasPrefix(name, ".")
	bare := strings.TrimPrefix(name, ".")
	if strings.HasPrefix(bare, "*") {
		return L7Cond{}, fmt.Sprintf("%q: wildcards are written .%s, for the domain and all its subdomains", name, strings.TrimLeft(bare, "*."))
	}
	norm, res := l7.NormalizeString(bare)
	switch res {
	case l7.NameIPLiteral:
		return L7Cond{}, fmt.Sprintf("%q is an IP address, not a name: match addresses with dst", name)
	case l7.NameBad:
		return L7Cond{}, fmt.Sprintf("%q is not a DNS name (letters, digits and hyphens in dot-separated labels)", name)
	}
	if domain {
		return L7Cond{Proto: proto, DotPrefix: true, BSize: -1, Contents: []NameMatch{{Value: "." + norm, EndsWith: true}}}, ""
	}
	return L7Cond{Proto: proto, BSize: -1, Contents: []NameMatch{{Value: norm, StartsWith: true, EndsWith: true}}}, ""
}

// MatchesL7 reports whether info satisfies one of r's L7 conditions; a
// rule without any matches every flow.
func (r *Rule) MatchesL7(info L7Info) bool {
	if r.L7 == nil {
		return true
	}
	for i := range r.L7 {
		if r.L7[i].Matches(info) {
			return true
		}
	}
	return false
}

func describeL7(conds []L7Cond) string {
	parts := make([]string, len(conds))
	for i := range conds {
		parts[i] = conds[i].String()
	}
	return strings.Join(parts, " or ")
}

// RuleMeta is what a Suricata rule says about itself, kept for logs,
// `natwall check` and explain.
type RuleMeta struct {
	SID        uint64   `json:"sid"`
	Rev        int      `json:"rev,omitempty"`
	Msg        string   `json:"msg,omitempty"`
	Classtype  string   `json:"classtype,omitempty"`
	Metadata   []string `json:"metadata,omitempty"`
	References []string `json:"reference,omitempty"`
}

// Resume is the stateful stage resumed at a PENDING flow's rule once the
// inspector knows info: rules from index from on, in order, each matching
// p and, if it has one, its L7 condition. It returns the deciding rule
// (-1 for the default) and the alert rules hit.
func Resume(rules []Rule, p Packet, from int, info L7Info) (rule int, alerts []int) {
	for i := from; i < len(rules); i++ {
		if !rules[i].Matches(p) || !rules[i].MatchesL7(info) {
			continue
		}
		if rules[i].Action == Alert || rules[i].Audit {
			alerts = append(alerts, i)
			continue
		}
		return i, alerts
	}
	return -1, alerts
}

// Resume is Resume on the compiled tables, as the inspector runs it:
// lookups from the pending rule on, each L7 rule they stop at checked
// against info.
func (st *StageTables) Resume(rules []Rule, p Packet, from int, info L7Info) (rule int, alerts []int) {
	for {
		i, more := st.LookupFrom(p, from)
		alerts = append(alerts, more...)
		if i < 0 || st.L7 == nil || !st.L7[i] {
			return i, alerts
		}
		if rules[i].MatchesL7(info) {
			if st.Actions[i] != Alert {
				return i, alerts
			}
			alerts = append(alerts, i)
		}
		from = i + 1
	}
}
