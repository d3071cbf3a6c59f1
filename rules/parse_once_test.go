package rules_test

import (
	"fmt"
	"testing"

	"github.com/natwall/natwall/rules"
)

// A rule file is parsed once; what it says about empty files, broken YAML
// and second documents is what it said when it was parsed twice.
func TestParseDocumentEdges(t *testing.T) {
	for _, c := range []struct {
		name, data, want string
	}{
		{"empty", "", "f.yaml:1:1: empty rule file (write {} for a file with no rules)"},
		{"comment only", "# nothing\n", "f.yaml:1:1: empty rule file (write {} for a file with no rules)"},
		{"empty mapping", "{}\n", "<nil>"},
		{"leading separator", "---\n{}\n", "<nil>"},
		{"not a mapping", "- a\n", "f.yaml:1:1: a rule file is a mapping with address_sets, stateless and stateful"},
		{"broken", "stateless:\n  - {id: a\n", "f.yaml:1:1: not valid YAML: did not find expected ',' or '}'"},
		{"second document", "{}\n---\n{}\n", "f.yaml:2:1: a rule file is one YAML document, but a second one starts here: merge it into the first or give it a file of its own"},
		{"broken second document", "{}\n---\n{a: [\n", "f.yaml:3:1: a rule file is one YAML document, but a second one starts here: merge it into the first or give it a file of its own"},
		{"empty second document", "{}\n---\n", "f.yaml:2:1: a rule file is one YAML document, but a second one starts here: merge it into the first or give it a file of its own"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := rules.Parse([]rules.Source{{Name: "f.yaml", Data: []byte(c.data)}}, rules.Options{})
			if got := fmt.Sprint(err); got != c.want {
				t.Errorf("got  %s\nwant %s", got, c.want)
			}
		})
	}
}
