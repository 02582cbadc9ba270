package executor

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"github.com/pyexec/pyexec/pkg/api"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// writeTestFiles writes each file of files (path → content) under dir.
func writeTestFiles(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	for p, data := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCollectFilesTotalCap is the attack of 32 files of 10 MB, scaled down: the files together
// are 6 times the total cap. The result holds at most the cap, says files were left out, and
// the server did not read the files that could not fit.
func TestCollectFilesTotalCap(t *testing.T) {
	const (
		fileSize = 1 << 20
		nFiles   = 48
		total    = 8<<20 + 100 // room for 8 big files, then for the small one only
	)
	work := t.TempDir()
	files := map[string][]byte{"z-small.txt": []byte("fits after")}
	for i := range nFiles {
		files[fmt.Sprintf("big/f%02d.bin", i)] = bytes.Repeat([]byte{byte('a' + i%26)}, fileSize)
	}
	writeTestFiles(t, work, files)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	got, truncated := collectFilesUpTo(work, nil, 10<<20, 100, total, nil)
	runtime.ReadMemStats(&after)

	if !truncated {
		t.Error("files_truncated false, want true")
	}
	var sum int64
	var names []string
	for _, f := range got {
		sum += f.Size
		names = append(names, f.Path)
		data, err := base64.StdEncoding.DecodeString(f.ContentBase64)
		if err != nil || !bytes.Equal(data, files[f.Path]) || int64(len(data)) != f.Size {
			t.Errorf("%s: content does not match the file (size %d, %v)", f.Path, f.Size, err)
		}
	}
	if sum > total {
		t.Errorf("returned %d bytes, over the cap of %d", sum, total)
	}
	want := "[big/f00.bin big/f01.bin big/f02.bin big/f03.bin big/f04.bin big/f05.bin big/f06.bin big/f07.bin z-small.txt]"
	if fmt.Sprint(names) != want {
		t.Errorf("files %v, want %s", names, want)
	}
	// What was allocated: the result (base64: 4/3 of the cap) and the file being read, not
	// the 48 MiB on disk.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 3*total {
		t.Errorf("collecting allocated %d bytes, more than 3 times the cap of %d", alloc, total)
	}
}

// TestCollectFilesCapsTogether checks the total cap beside the count and size caps, and that
// an input file left as it was neither counts against the cap nor is reported as left out.
func TestCollectFilesCapsTogether(t *testing.T) {
	input := bytes.Repeat([]byte("i"), 3000)
	tests := []struct {
		name      string
		files     map[string][]byte
		maxBytes  int64
		maxFiles  int
		maxTotal  int64
		want      string
		truncated bool
	}{
		{"all fit", map[string][]byte{"a": []byte("12345"), "b": []byte("678")}, 100, 10, 8, "[a b]", false},
		{"no total given is the default, not no cap", map[string][]byte{"a": make([]byte, DefaultMaxFilesOutBytes/2+1), "b": make([]byte, DefaultMaxFilesOutBytes/2)}, 0, 10, 0, "[a]", true},
		{"the total cap leaves one out", map[string][]byte{"a": []byte("12345"), "b": []byte("678")}, 100, 10, 7, "[a]", true},
		{"a smaller file after one left out", map[string][]byte{"a": []byte("12345"), "b": []byte("6789"), "c": []byte("0")}, 100, 10, 6, "[a c]", true},
		{"the count cap first", map[string][]byte{"a": []byte("1"), "b": []byte("2"), "c": []byte("3")}, 100, 2, 100, "[a b]", true},
		{"the file cap", map[string][]byte{"a": []byte("12345"), "b": []byte("6")}, 4, 10, 100, "[b]", true},
		{"empty files fit in a spent cap", map[string][]byte{"a": []byte("12"), "b": {}}, 100, 10, 2, "[a b]", false},
		{"an unchanged input over the caps is skipped", map[string][]byte{"in.txt": input, "out.txt": []byte("new")}, 100, 1, 10, "[out.txt]", false},
		{"a changed input over the cap is left out", map[string][]byte{"in.txt": append([]byte("x"), input[1:]...), "out.txt": []byte("new")}, 100, 10, 10, "[out.txt]", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			work := t.TempDir()
			writeTestFiles(t, work, tt.files)
			// Read, and kept open (OpenFiles): the same files, the same contents.
			for _, open := range []*OpenFiles{nil, {}} {
				got, truncated := collectFilesUpTo(work, map[string][]byte{"in.txt": input}, tt.maxBytes, tt.maxFiles, tt.maxTotal, open)
				var names []string
				for _, f := range got {
					names = append(names, f.Path)
					content, err := base64.StdEncoding.DecodeString(f.ContentBase64)
					if of := open.File(f.Path); of != nil {
						content = make([]byte, f.Size)
						_, err = of.ReadAt(content, 0)
						if f.ContentBase64 != "" {
							t.Errorf("open: %s has its content in the result too", f.Path)
						}
					} else if open != nil {
						t.Errorf("open: %s is not open", f.Path)
					}
					if err != nil || !bytes.Equal(content, tt.files[f.Path]) || f.Size != int64(len(content)) {
						t.Errorf("open %v: %s of size %d holds %q (%v), want %q", open != nil, f.Path, f.Size, content, err, tt.files[f.Path])
					}
				}
				if fmt.Sprint(names) != tt.want || truncated != tt.truncated {
					t.Errorf("open %v: files %v truncated %v, want %s %v", open != nil, names, truncated, tt.want, tt.truncated)
				}
				if open != nil && len(open.files) != len(got) {
					t.Errorf("open: %d files open for %d returned", len(open.files), len(got))
				}
				open.Close()
			}
		})
	}
}

// TestCollectFilesSkipsWhatIsNotARegularFile keeps collectFiles' guarantees under the new
// reader: a symlink (even to a file inside work) and a FIFO are neither followed nor read.
func TestCollectFilesSkipsWhatIsNotARegularFile(t *testing.T) {
	work := t.TempDir()
	writeTestFiles(t, work, map[string][]byte{"real.txt": []byte("ok")})
	if err := os.Symlink("/etc/passwd", filepath.Join(work, "leak")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("real.txt", filepath.Join(work, "alias")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(work, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, truncated := collectFilesUpTo(work, nil, 100, 10, 100, nil)
	if len(got) != 1 || got[0].Path != "real.txt" || truncated {
		t.Errorf("files %+v truncated %v, want real.txt alone", got, truncated)
	}
}

// A chunk that ends in the middle of a UTF-8 sequence is cut before it; invalid bytes count as
// whole (JSON shows them as U+FFFD).
func TestUTF8Boundary(t *testing.T) {
	for _, tt := range []struct{ in, complete string }{
		{"", ""},
		{"abc", "abc"},
		{"é", "é"},
		{"a\xc3", "a"},
		{"a\xe2\x82", "a"},
		{"a\xe2\x82\xac", "a€"},
		{"\xf0\x9f\x98", ""},
		{"a\xff", "a\xff"},
		{"a\x80\x80", "a\x80\x80"},
	} {
		if got := tt.in[:utf8Boundary([]byte(tt.in))]; got != tt.complete {
			t.Errorf("utf8Boundary(%q) keeps %q, want %q", tt.in, got, tt.complete)
		}
	}
}

// A directory swapped for a FIFO while the server walks (a session's thread can do it) must
// not block the walk: the FIFO would wait for a writer.
func TestWalkFilesNeverBlocksOnASwap(t *testing.T) {
	work := t.TempDir()
	if err := os.WriteFile(filepath.Join(work, "keep.txt"), []byte("k"), 0o644); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	swapped := make(chan int)
	go func() {
		n := 0
		defer func() { swapped <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			tmp := filepath.Join(work, "tmp")
			os.RemoveAll(tmp)
			if n%2 == 0 {
				_ = os.Mkdir(tmp, 0o755)
				_ = os.WriteFile(filepath.Join(tmp, "f"), []byte("x"), 0o644)
			} else {
				_ = syscall.Mkfifo(tmp, 0o644)
			}
			os.RemoveAll(filepath.Join(work, "d"))
			_ = os.Rename(tmp, filepath.Join(work, "d"))
			n++
		}
	}()
	root, err := os.OpenRoot(work)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	deadline := time.Now().Add(2 * time.Second)
	walks := 0
	for time.Now().Before(deadline) {
		done := make(chan bool, 1)
		go func() {
			found := false
			walkFiles(root, time.Time{}, func(p string, _ func() (*unix.Stat_t, bool)) bool {
				found = found || p == "keep.txt"
				return true
			})
			done <- found
		}()
		select {
		case found := <-done:
			if !found {
				t.Fatal("the walk missed keep.txt")
			}
		case <-time.After(5 * time.Second):
			close(stop)
			t.Fatalf("a walk blocked after %d walks", walks)
		}
		walks++
	}
	close(stop)
	t.Logf("%d walks, %d swaps", walks, <-swapped)
}

// TestReadOutputsCountsEveryByte: the MIME types of outputs (the keys of data) and their JSON
// framing count against the budget with the values, so that outputs of huge keys and empty
// values, or very many empty ones, cannot pass it (code can write the outputs file itself).
func TestReadOutputsCountsEveryByte(t *testing.T) {
	const budget = 1 << 20
	for name, line := range map[string]string{
		"huge keys":       fmt.Sprintf(`{"type":"display_data","data":{"%s":""}}`, strings.Repeat("k", 300<<10)),
		"many tiny ones":  `{"type":"display_data","data":{"":""}}`,
		"many exceptions": `{"type":"error","ename":"E","evalue":"","traceback":["",""]}`,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), outputsFile)
			var b strings.Builder
			for range 4 * budget / len(line) {
				b.WriteString(line + "\n")
			}
			if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
				t.Fatal(err)
			}
			outputs, exc, used, truncated := readOutputs(path, budget)
			encoded, _ := json.Marshal(outputs)
			if !truncated || used > budget || (len(outputs) == 0 && exc == nil) || len(encoded) > budget {
				t.Fatalf("%d outputs, %d bytes counted, %d bytes as JSON, truncated %v; want at most %d bytes, truncated",
					len(outputs), used, len(encoded), truncated, budget)
			}
			t.Logf("%d outputs kept, %d bytes counted, %d bytes as JSON", len(outputs), used, len(encoded))
		})
	}
}

// The record of an exception becomes the result's exception, the last one when the code wrote
// more, and is never an output; a malformed one (no ename) is left out.
func TestReadOutputsTakesTheException(t *testing.T) {
	path := filepath.Join(t.TempDir(), outputsFile)
	lines := `{"type":"display_data","data":{"text/plain":"1"}}
{"type":"error","ename":"Forged","evalue":"by the code","traceback":["x"]}
{"type":"error","evalue":"no name","traceback":[]}
{"type":"error","ename":"ValueError","evalue":"bad","traceback":["Traceback (most recent call last):","ValueError: bad"]}
`
	if err := os.WriteFile(path, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	outputs, exc, used, truncated := readOutputs(path, 1<<20)
	if len(outputs) != 1 || outputs[0].Type != api.OutputDisplayData || truncated || used <= 0 {
		t.Fatalf("outputs %+v, %d bytes, truncated %v", outputs, used, truncated)
	}
	if exc == nil || exc.Ename != "ValueError" || exc.Evalue != "bad" || len(exc.Traceback) != 2 {
		t.Fatalf("exception %+v", exc)
	}
}
