package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
)

// Output formats every command that prints data takes with -o. json and
// yaml print the API's objects as they are, with the same field names.
var outputFormats = []string{"table", "wide", "json", "yaml"}

// outputFlag adds -o to cmd, with shell completion of its values.
func outputFlag(cmd *cobra.Command) {
	cmd.Flags().StringP("output", "o", "table", "output format: "+strings.Join(outputFormats, ", "))
	cmd.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return outputFormats, cobra.ShellCompDirectiveNoFileComp
	})
}

// outputFormat is cmd's -o, checked before the command does anything.
func outputFormat(cmd *cobra.Command) (string, error) {
	f, _ := cmd.Flags().GetString("output")
	if !slices.Contains(outputFormats, f) {
		return "", usageErrorf("-o %q is not one of %s", f, strings.Join(outputFormats, ", "))
	}
	return f, nil
}

// table is one block of table output: an optional title line, then
// aligned columns; a table with a title alone is a line of text.
type table struct {
	title  string
	header []string
	rows   [][]string
}

// tabler is data that prints as tables; wide adds columns.
type tabler interface {
	tables(wide bool) []table
}

// clock is the time table output measures ages from; tests fix it.
var clock = time.Now

// render prints v in format, one of outputFormats. For table and wide v
// must be a tabler; json and yaml print v itself.
func render(w io.Writer, format string, v any) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "yaml":
		b, err := toYAML(v)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	case "table", "wide":
		t, ok := v.(tabler)
		if !ok {
			return fmt.Errorf("%T has no table form", v)
		}
		return writeTables(w, t.tables(format == "wide"))
	}
	return usageErrorf("-o %q is not one of %s", format, strings.Join(outputFormats, ", "))
}

func writeTables(w io.Writer, tables []table) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for i, t := range tables {
		if i > 0 {
			fmt.Fprintln(tw)
		}
		if t.title != "" {
			// A title is no column: flush what is aligned before it.
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintln(w, t.title)
		}
		if len(t.header) > 0 {
			fmt.Fprintln(tw, strings.Join(t.header, "\t"))
		}
		for _, r := range t.rows {
			fmt.Fprintln(tw, strings.Join(r, "\t"))
		}
	}
	return tw.Flush()
}

// toYAML is v's JSON form as YAML: the same field names and order, in
// block style.
func toYAML(v any) ([]byte, error) {
	j, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(j, &doc); err != nil {
		return nil, err
	}
	blockStyle(&doc)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// blockStyle drops the flow style and quotes JSON gave every node; the
// encoder quotes again the strings that need it.
func blockStyle(n *yaml.Node) {
	n.Style = 0
	for _, c := range n.Content {
		blockStyle(c)
	}
}

// stream prints a sequence of objects as they come: JSON lines, YAML
// documents, or table rows whose columns widen as longer values arrive.
type stream struct {
	w      io.Writer
	format string
	widths []int
	header bool
}

func newStream(w io.Writer, format string) *stream { return &stream{w: w, format: format} }

// write prints v; for table and wide it is a tabler with one table.
func (s *stream) write(v any) error {
	switch s.format {
	case "json":
		return json.NewEncoder(s.w).Encode(v)
	case "yaml":
		b, err := toYAML(v)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(s.w, "---\n%s", b)
		return err
	}
	tv, ok := v.(tabler)
	if !ok {
		return fmt.Errorf("%T has no table form", v)
	}
	for _, t := range tv.tables(s.format == "wide") {
		if !s.header {
			// The header is as wide as the first rows, which are typical.
			s.header = true
			for _, r := range append([][]string{t.header}, t.rows...) {
				s.widen(r)
			}
			if err := s.line(t.header); err != nil {
				return err
			}
		}
		for _, r := range t.rows {
			if err := s.line(r); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *stream) widen(cells []string) {
	for i, c := range cells {
		if i >= len(s.widths) {
			s.widths = append(s.widths, 0)
		}
		s.widths[i] = max(s.widths[i], utf8.RuneCountInString(c))
	}
}

func (s *stream) line(cells []string) error {
	s.widen(cells)
	var b strings.Builder
	for i, c := range cells {
		n := utf8.RuneCountInString(c)
		b.WriteString(c)
		if i < len(cells)-1 {
			b.WriteString(strings.Repeat(" ", s.widths[i]-n+2))
		}
	}
	b.WriteByte('\n')
	_, err := io.WriteString(s.w, b.String())
	return err
}
