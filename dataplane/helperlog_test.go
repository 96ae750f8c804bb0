package dataplane

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestCappedLog: a log written past its bound moves to FILE.1 and starts
// again; the two together stay within twice the bound, the newest lines
// are in FILE, and what is written to the descriptor itself afterwards (a
// runtime panic) lands in the new FILE too.
func TestCappedLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ocw0.log")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const max = 1000
	w := CappedLog(f, max)
	line := bytes.Repeat([]byte("x"), 99)
	line = append(line, '\n')
	for range 50 {
		if _, err := w.Write(line); err != nil {
			t.Fatal(err)
		}
	}
	w.Write([]byte("last line\n"))
	f.Write([]byte("straight to the descriptor\n"))
	cur, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	old, err := os.ReadFile(path + ".1")
	if err != nil {
		t.Fatal(err)
	}
	if len(cur) > max+len("straight to the descriptor\n") || len(old) > max {
		t.Errorf("log %d bytes, rotated %d bytes: want each within %d", len(cur), len(old), max)
	}
	if !bytes.Contains(cur, []byte("last line\nstraight to the descriptor\n")) {
		t.Errorf("the newest lines are not in the log:\n%s", cur)
	}
}
