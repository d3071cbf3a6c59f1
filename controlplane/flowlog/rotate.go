package flowlog

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
)

// File is an append-only log file rotated by size: when a write would take
// it past MaxSize it is renamed path.1 (path.1 to path.2, and so on), the
// oldest beyond MaxFiles is removed, and a new file is started. A write is
// never split across files, so records stay whole.
type File struct {
	path     string
	maxSize  int64
	maxFiles int

	mu   sync.Mutex
	f    *os.File
	size int64
}

// OpenFile opens path for appending, creating it (mode 0640) if needed.
// maxSize is in bytes; maxFiles is how many rotated files are kept.
func OpenFile(path string, maxSize int64, maxFiles int) (*File, error) {
	if maxSize <= 0 || maxFiles < 1 {
		return nil, fmt.Errorf("eve log %s: max size %d and max files %d must be positive", path, maxSize, maxFiles)
	}
	l := &File{path: path, maxSize: maxSize, maxFiles: maxFiles}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *File) open() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("open eve log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("open eve log: %w", err)
	}
	l.f, l.size = f, st.Size()
	return nil
}

// Write appends p, rotating first if p would not fit.
func (l *File) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return 0, os.ErrClosed
	}
	var rotateErr error
	if l.size > 0 && l.size+int64(len(p)) > l.maxSize {
		if rotateErr = l.rotate(); rotateErr != nil && l.f == nil {
			// Keep logging to the unrotated file rather than lose records.
			if err := l.open(); err != nil {
				return 0, errors.Join(rotateErr, err)
			}
		}
	}
	n, err := l.f.Write(p)
	l.size += int64(n)
	return n, errors.Join(rotateErr, err)
}

func (l *File) rotated(i int) string { return l.path + "." + strconv.Itoa(i) }

func (l *File) rotate() error {
	if err := l.f.Close(); err != nil {
		return fmt.Errorf("rotate eve log: %w", err)
	}
	l.f = nil
	if err := os.Remove(l.rotated(l.maxFiles)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("rotate eve log: %w", err)
	}
	for i := l.maxFiles - 1; i >= 1; i-- {
		if err := os.Rename(l.rotated(i), l.rotated(i+1)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("rotate eve log: %w", err)
		}
	}
	if err := os.Rename(l.path, l.rotated(1)); err != nil {
		return fmt.Errorf("rotate eve log: %w", err)
	}
	return l.open()
}

// Close closes the file; it does not remove it.
func (l *File) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
