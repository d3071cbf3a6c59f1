package rules

import (
	"strings"

	"go.yaml.in/yaml/v3"
)

// Domain lists are AWS Network Firewall's domain list rule groups, as a
// rule-file form: names, and what to do with flows that name them, from
// the inside networks to the internet unless src and dst say otherwise.
//
//	domain_lists:
//	  - id: egress
//	    priority: 500
//	    type: allowlist          # allowlist, denylist, rejectlist, alertlist
//	    target_types: [tls_sni, http_host]
//	    targets: [.example.com, api.github.com]
//
// A list becomes stateful rules at its priority, in this order, per target
// type: one rule matching the names (allow, deny, reject or alert); and,
// for an allowlist, one denying every other flow of that protocol, named
// or not, as AWS's allowlists deny what they do not list.
var domainListActions = map[string]Action{"allowlist": Allow, "denylist": Deny, "rejectlist": Reject, "alertlist": Alert}

var domainTargetTypes = map[string]AppProto{"tls_sni": AppTLS, "http_host": AppHTTP}

func (p *parser) domainLists(file string, n *yaml.Node) {
	if n.Kind != yaml.SequenceNode {
		p.add(posOf(file, n), "domain_lists is a list of lists with id, priority, type, target_types and targets")
		return
	}
	for _, el := range n.Content {
		p.domainList(file, el)
	}
}

func (p *parser) domainList(file string, n *yaml.Node) {
	pos := posOf(file, n)
	if n.Kind != yaml.MappingNode {
		p.add(pos, "a domain list is a mapping with id, priority, type, target_types and targets")
		return
	}
	var id string
	priority, action := -1, Action(0)
	var priPos Pos
	var types []AppProto
	var targets []*yaml.Node
	targetsPos := pos
	var src, dst []ref
	written := map[string]bool{}
	handlers := map[string]func(k, v *yaml.Node){
		"id": func(k, v *yaml.Node) {
			if s, ok := p.scalar(file, v, "id"); ok {
				if !idPattern.MatchString(s) {
					p.add(posOf(file, v), "id %q must be 1-128 letters, digits, and _ . : -", s)
				}
				id = s
			}
		},
		"description": func(k, v *yaml.Node) { p.scalar(file, v, "description") },
		"priority": func(k, v *yaml.Node) {
			if n, ok := p.integer(file, v, "priority", 0, 1_000_000_000); ok {
				priority, priPos = n, posOf(file, v)
			}
		},
		"type": func(k, v *yaml.Node) {
			s, ok := p.scalar(file, v, "type")
			if !ok {
				return
			}
			if action, ok = domainListActions[s]; !ok {
				p.add(posOf(file, v), "domain list type %q is not one of allowlist, denylist, rejectlist, alertlist", s)
			}
		},
		"target_types": func(k, v *yaml.Node) {
			items := []*yaml.Node{v}
			if v.Kind == yaml.SequenceNode {
				items = v.Content
			}
			seen := map[AppProto]bool{}
			for _, el := range items {
				t, ok := domainTargetTypes[strings.ToLower(el.Value)]
				switch {
				case el.Kind != yaml.ScalarNode || !ok:
					p.add(posOf(file, el), "target type %q is not tls_sni or http_host", el.Value)
				case seen[t]:
					p.add(posOf(file, el), "target type %s is given twice", el.Value)
				default:
					seen[t] = true
					types = append(types, t)
				}
			}
			if len(items) == 0 {
				p.add(posOf(file, v), "empty target_types: give tls_sni, http_host or both")
			}
		},
		"targets": func(k, v *yaml.Node) {
			targetsPos = posOf(file, k)
			if v.Kind != yaml.SequenceNode || len(v.Content) == 0 {
				p.add(posOf(file, v), "targets is a list of names such as www.example.com or .example.com")
				return
			}
			targets = v.Content
		},
		"src": func(k, v *yaml.Node) { src = p.refs(file, v, "src") },
		"dst": func(k, v *yaml.Node) { dst = p.refs(file, v, "dst") },
	}
	for key, h := range handlers {
		handlers[key] = func(k, v *yaml.Node) { written[key] = true; h(k, v) }
	}
	p.mapping(file, n, handlers)
	for _, missing := range []struct {
		bad  bool
		what string
	}{{id == "", "id"}, {priority < 0, "priority"}, {action == 0, "type"}, {types == nil, "target_types"}, {targets == nil, "targets"}} {
		if missing.bad {
			if !written[missing.what] {
				p.add(pos, "domain list %q has no %s", id, missing.what)
			}
			return
		}
	}
	if src == nil {
		src = []ref{{text: "inside", pos: pos}}
	}
	if dst == nil {
		dst = []ref{{text: "internet", pos: pos}}
	}
	first := true
	for _, t := range types {
		var conds []L7Cond
		for _, el := range targets {
			if el.Kind != yaml.ScalarNode {
				p.add(posOf(file, el), "targets are names such as www.example.com or .example.com")
				continue
			}
			c, msg := nameCond(t, el.Value)
			if msg != "" {
				p.add(posOf(file, el), "targets: %s", msg)
				continue
			}
			conds = append(conds, c)
		}
		if len(conds) == 0 {
			p.add(targetsPos, "domain list %q has no usable targets", id)
			return
		}
		gen := func(suffix string, a Action, l7 []L7Cond) {
			p.rules = append(p.rules, &rawRule{
				Rule: Rule{ID: id + ":" + t.field() + suffix, Priority: priority, Action: a, Pos: pos,
					Protocol: 6, ICMPType: -1, ICMPCode: -1, L7: l7},
				stage: Stateful, src: src, dst: dst, priPos: priPos, sharedPriority: !first,
			})
			first = false
		}
		gen("", action, conds)
		if action == Allow {
			gen(":other", Deny, []L7Cond{{Proto: t, BSize: -1}})
		}
	}
}
