package flowlog

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/natwall/natwall/dataplane"
)

func TestFileRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "eve.json")
	// A record from an earlier run stays at the head of the file.
	if err := os.WriteFile(path, []byte("old\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	f, err := OpenFile(path, 100, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	line := func(i int) []byte { return fmt.Appendf(nil, "%039d\n", i) } // 40 bytes
	for i := range 7 {
		if _, err := f.Write(line(i)); err != nil {
			t.Fatal(err)
		}
	}
	// "old" and two lines fit in 100 bytes, then every two lines rotate.
	// Files, newest first: eve.json {6}, .1 {4,5}, .2 {2,3}; {old,0,1} gone.
	for _, tc := range []struct {
		name  string
		lines []int
	}{
		{"eve.json", []int{6}},
		{"eve.json.1", []int{4, 5}},
		{"eve.json.2", []int{2, 3}},
	} {
		got, err := os.ReadFile(filepath.Join(dir, tc.name))
		if err != nil {
			t.Fatal(err)
		}
		var want []byte
		for _, i := range tc.lines {
			want = append(want, line(i)...)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s holds\n%s\nwant\n%s", tc.name, got, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "eve.json.3")); !os.IsNotExist(err) {
		t.Errorf("eve.json.3 exists beyond max_files: %v", err)
	}
	// A write larger than the limit goes whole into a file of its own.
	big := bytes.Repeat([]byte("x"), 250)
	if _, err := f.Write(big); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, big) {
		t.Errorf("oversized write split: current file holds %d bytes", len(got))
	}
}

func TestOpenFileRefusesBadLimits(t *testing.T) {
	for _, tc := range []struct {
		size  int64
		files int
	}{{0, 1}, {100, 0}, {-1, 3}} {
		if _, err := OpenFile(filepath.Join(t.TempDir(), "eve.json"), tc.size, tc.files); err == nil {
			t.Errorf("size %d files %d accepted", tc.size, tc.files)
		}
	}
}

type failingWriter struct{ n int }

func (w *failingWriter) Write(p []byte) (int, error) { w.n++; return 0, os.ErrPermission }

// TestWriterBatches checks that a batch reaches the output in one write,
// that flow starts and disabled record types are not written, and that a
// failed write is counted.
func TestWriterBatches(t *testing.T) {
	var out bytes.Buffer
	w := NewWriter(&out, Options{Flows: true, Alerts: false, Encoder: Encoder{Rules: testRT}})
	for _, tc := range eveCases {
		ev := tc.ev
		w.HandleFlowEvent(&ev)
	}
	w.HandleFlowEvent(&dataplane.FlowEvent{Type: dataplane.FlowStarted})
	if out.Len() != 0 {
		t.Fatal("written before Flush")
	}
	w.Flush()
	if n := bytes.Count(out.Bytes(), []byte("\n")); n != 3 {
		t.Fatalf("%d records, want the 3 flow records:\n%s", n, out.Bytes())
	}
	if bytes.Contains(out.Bytes(), []byte(`"alert"`)) {
		t.Fatal("alert written with alerts off")
	}
	fw := &failingWriter{}
	w = NewWriter(fw, Options{Flows: true, Alerts: true})
	ev := eveCases[0].ev
	w.HandleFlowEvent(&ev)
	w.Flush()
	w.Flush() // nothing buffered: no write
	if fw.n != 1 || w.errors.Load() != 1 {
		t.Fatalf("%d writes, %d errors; want 1, 1", fw.n, w.errors.Load())
	}
}
