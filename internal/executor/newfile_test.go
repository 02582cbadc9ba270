package executor

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// The runner's own files of an execution are written whole, 0600, and never through a symlink.
func TestWriteNewFile(t *testing.T) {
	dir := t.TempDir()
	data := bytes.Repeat([]byte("# a line of code\n"), 300_000) // 5 MiB
	path := filepath.Join(dir, "code.py")
	if err := writeNewFile(path, data); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes of %d: %v", len(got), len(data), err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v: %v", st.Mode(), err)
	}
	if err := writeNewFile(path, nil); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Size() != 0 {
		t.Fatalf("not truncated: %d bytes", st.Size())
	}
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "env.json")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if err := writeNewFile(link, []byte("x")); err == nil {
		t.Fatal("written through a symlink")
	}
	if got, _ := os.ReadFile(target); string(got) != "keep" {
		t.Fatalf("the symlink's target changed: %q", got)
	}
}
