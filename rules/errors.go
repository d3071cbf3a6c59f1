package rules

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Error is one problem in a rule file, where it was written.
type Error struct {
	Pos Pos
	Msg string
}

func (e *Error) Error() string { return e.Pos.String() + ": " + e.Msg }

// ErrorList is every problem found in a rule set, in file order. A rule
// set with any is rejected whole.
type ErrorList []*Error

func (l ErrorList) Error() string {
	msgs := make([]string, len(l))
	for i, e := range l {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

func (l ErrorList) sorted() ErrorList {
	sort.SliceStable(l, func(i, j int) bool {
		a, b := l[i].Pos, l[j].Pos
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Col < b.Col
	})
	return l
}

// ErrNoRuleFiles means the paths named no rule file.
var ErrNoRuleFiles = errors.New("no rule files (*.yaml, *.yml, *.rules)")

type errorSink struct{ errs ErrorList }

func (s *errorSink) add(pos Pos, format string, args ...any) {
	s.errs = append(s.errs, &Error{Pos: pos, Msg: fmt.Sprintf(format, args...)})
}
