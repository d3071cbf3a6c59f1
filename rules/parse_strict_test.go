package rules

import (
	"strings"
	"testing"
)

// Issue 16 item 12: what used to pass silently.
func TestParseStrict(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"second document", "stateful:\n  rules:\n    - {id: a, priority: 1, action: allow}\n---\nstateless:\n  - {id: b, priority: 1, action: drop}\n", "f.yaml:4:1: a rule file is one YAML document, but a second one starts here"},
		{"second empty document", "stateful:\n  default_action: deny\n---\n", "f.yaml:3:1: a rule file is one YAML document"},
		{"broken second document", "stateful:\n  default_action: deny\n---\n[\n", "a rule file is one YAML document"},
		{"unused set cycle", "address_sets:\n  a: [b]\n  b: [a]\nstateful:\n  default_action: deny\n", "refers to itself"},
		{"unused set with a bad member", "address_sets:\n  a: [198.18.0.300]\nstateful:\n  default_action: deny\n", `f.yaml:2:7: "198.18.0.300" is not a CIDR`},
		{"unused set with host bits", "address_sets:\n  a: [198.18.0.1/24]\nstateful:\n  default_action: deny\n", `f.yaml:2:7: "198.18.0.1/24" has host bits set`},
		{"set named like an address", "address_sets:\n  1.2.3.4: [198.18.0.0/24]\nstateful:\n  default_action: deny\n", `set name "1.2.3.4" is an address`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs, err := Parse([]Source{{Name: "f.yaml", Data: []byte(tc.yaml)}}, Options{Inside: testInside})
			if err == nil || rs != nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
	// One leading "---" is one document; an error in a used set is
	// reported once.
	if _, err := Parse([]Source{{Name: "f.yaml", Data: []byte("---\nstateful:\n  default_action: deny\n")}}, Options{}); err != nil {
		t.Fatalf("leading ---: %v", err)
	}
	_, err := Parse([]Source{{Name: "f.yaml", Data: []byte("address_sets:\n  a: [nope]\nstateless:\n  - {id: r, priority: 1, action: drop, src: [a]}\n")}}, Options{})
	if list, ok := err.(ErrorList); !ok || len(list) != 1 {
		t.Fatalf("errors for a broken used set: %v", err)
	}
}

func TestLintExplicitAny(t *testing.T) {
	src := `stateful:
  rules:
    - {id: by-tag, priority: 1, action: allow, src: [any], dst: [any]}
    - {id: by-cidr, priority: 2, action: allow, protocol: any, src: [0.0.0.0/0], dst: [0.0.0.0/0]}
    - {id: narrow, priority: 3, action: allow, src: [198.18.0.0/16]}
`
	rs, err := Parse([]Source{{Name: "l.yaml", Data: []byte(src)}}, Options{Inside: testInside})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range Lint(rs) {
		if strings.Contains(w.Msg, "allows everything") {
			got = append(got, w.Rule)
		}
	}
	if strings.Join(got, ",") != "by-tag,by-cidr" {
		t.Fatalf("any-to-any warnings for %v, want by-tag and by-cidr", got)
	}
}
