package executor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pyexec/pyexec/internal/testutil"
	"github.com/pyexec/pyexec/pkg/api"
)

// A session's files are listed and read while a call runs in it; what is not a regular file
// of its working directory is ErrFileNotFound, a file over the cap ErrFileTooLarge; once the
// session is closed, both say ErrSessionEnded.
func TestSessionFilesAndReadFile(t *testing.T) {
	for mode, st := range sessionModes(t) {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ss := newSession(t, st, SessionRequest{ID: "s", Files: []File{{Path: "in/put.txt", Data: []byte("input")}}})
			l, err := ss.Files()
			if err != nil || l.Truncated || l.Partial || l.Total != 1 || len(l.Files) != 1 || l.Files[0].Path != "in/put.txt" || l.Files[0].Size != 5 {
				t.Fatalf("before any call: %+v %v", l, err)
			}
			done := make(chan api.ExecuteResult, 1)
			go func() {
				res, _ := ss.Execute(context.Background(), Request{ID: "slow", Limits: defaultLimits, Code: `import os, time
os.makedirs('out')
open('out/during.txt', 'w').write('during')
os.symlink('/etc/passwd', 'passwd')
os.symlink('in', 'inlink')
os.mkfifo('fifo')
time.sleep(60)`}, nil)
				done <- res
			}()
			deadline := time.Now().Add(20 * time.Second)
			for {
				data, err := readFile(ss, "out/during.txt", 1<<20)
				if err == nil && string(data) == "during" {
					break
				}
				// Not there yet, or created and not yet written.
				if (err != nil && !errors.Is(err, ErrFileNotFound)) || (err == nil && len(data) > 0) || time.Now().After(deadline) {
					t.Fatalf("reading a file while the call runs: %q, %v", data, err)
				}
				time.Sleep(10 * time.Millisecond)
			}
			waitUntil(t, func() bool {
				_, err := readFile(ss, "fifo", 1)
				return errors.Is(err, ErrFileNotFound) && fileExists(ss, "fifo")
			})
			l, err = ss.Files()
			if files := l.Files; err != nil || l.Truncated || l.Total != 2 || len(files) != 2 || files[0].Path != "in/put.txt" || files[1].Path != "out/during.txt" || files[1].Size != 6 {
				t.Fatalf("while the call runs: %+v %v", l, err)
			}
			for _, p := range []string{"nope", "out", ".", "passwd", "inlink/put.txt", "in/put.txt/x", "fifo", "../s", "/etc/passwd", ""} {
				if data, err := readFile(ss, p, 1<<20); !errors.Is(err, ErrFileNotFound) {
					t.Errorf("OpenFile(%q) = %q, %v; want ErrFileNotFound", p, data, err)
				}
			}
			if data, err := readFile(ss, "in/put.txt", 5); err != nil || string(data) != "input" {
				t.Errorf("at the cap: %q, %v", data, err)
			}
			if data, err := readFile(ss, "in/put.txt", 4); !errors.Is(err, ErrFileTooLarge) {
				t.Errorf("over the cap: %q, %v", data, err)
			}
			// Read as it is read: a file that shrank since it was opened ends early.
			if body, err := ss.OpenFile("out/during.txt", 1<<20); err != nil || body.Size() != 6 {
				t.Errorf("OpenFile: %v", err)
			} else {
				if err := os.Truncate(filepath.Join(ss.work, "out/during.txt"), 2); err != nil {
					t.Fatal(err)
				}
				data, err := io.ReadAll(body)
				body.Close()
				if err != nil || string(data) != "du" {
					t.Errorf("a file that shrank to 2 bytes of 6: %q, %v", data, err)
				}
			}
			select {
			case res := <-done:
				t.Fatalf("the call ended early: %+v", res)
			default:
			}
			ss.Close()
			if res := <-done; !res.SessionLost {
				t.Errorf("the call in the closed session: %+v", res)
			}
			if _, err := ss.Files(); !errors.Is(err, ErrSessionEnded) {
				t.Errorf("Files after Close: %v", err)
			}
			if _, err := readFile(ss, "in/put.txt", 1<<20); !errors.Is(err, ErrSessionEnded) {
				t.Errorf("OpenFile after Close: %v", err)
			}
		})
	}
}

func fileExists(ss *LocalSession, p string) bool {
	_, err := os.Lstat(filepath.Join(ss.work, p))
	return err == nil
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
	}
}

// The list holds the first files by path (as strings sort: "a-b" before "a/x", though the
// walk meets "a/x" first), however many there are; symlinks and special files are left out.
func TestSessionFilesListFirstByPath(t *testing.T) {
	dir := t.TempDir()
	write := func(p string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(p), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 50 {
		write("f/" + strconv.Itoa(100+i))
	}
	for _, p := range []string{"a/x", "a/y", "a-b", "c/d/e"} {
		write(p)
	}
	if err := os.Symlink("a", filepath.Join(dir, "0link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "0passwd")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "0fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		max       int
		want      []string
		truncated bool
	}{
		{3, []string{"a-b", "a/x", "a/y"}, true},
		{5, []string{"a-b", "a/x", "a/y", "c/d/e", "f/100"}, true},
		{54, nil, false},
		{1000, nil, false},
	} {
		l := listFiles(dir, tt.max, time.Time{})
		files, truncated := l.Files, l.Truncated
		if l.Total != 54 || l.Partial {
			t.Errorf("max %d: total %d, partial %v; want 54 files seen, the walk complete", tt.max, l.Total, l.Partial)
		}
		if tt.want == nil && (len(files) != 54 || files[53].Path != "f/149") {
			t.Errorf("max %d: %d files, the last %+v", tt.max, len(files), files[len(files)-1])
		}
		for i, p := range tt.want {
			if i >= len(files) || files[i].Path != p || files[i].Size != int64(len(p)) || files[i].ModifiedAt.IsZero() {
				t.Errorf("max %d: %+v; want %v", tt.max, files, tt.want)
				break
			}
		}
		if (tt.want != nil && len(files) != len(tt.want)) || truncated != tt.truncated {
			t.Errorf("max %d: %d files, truncated %v", tt.max, len(files), truncated)
		}
	}
	if l := listFiles(filepath.Join(dir, "none"), 10, time.Time{}); len(l.Files) != 0 || l.Files == nil || l.Truncated || l.Total != 0 {
		t.Errorf("no work dir: %+v", l)
	}
}

// A listing stops at its deadline and says so: the files are then the first by path of those
// the walk saw, and the total counts those.
func TestSessionFilesListStopsAtItsDeadline(t *testing.T) {
	dir := t.TempDir()
	for i := range 3 * walkBatch {
		if err := os.WriteFile(filepath.Join(dir, strconv.Itoa(i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	l := listFiles(dir, 10, time.Now().Add(-time.Second))
	if !l.Partial || !l.Truncated || l.Total >= 3*walkBatch || len(l.Files) > 10 {
		t.Errorf("a listing past its deadline: partial %v, truncated %v, total %d, %d files; want partial, truncated, fewer than %d seen",
			l.Partial, l.Truncated, l.Total, len(l.Files), 3*walkBatch)
	}
	if l := listFiles(dir, 10, time.Now().Add(time.Minute)); l.Partial || !l.Truncated || l.Total != 3*walkBatch || len(l.Files) != 10 || l.Files[0].Path != "0" {
		t.Errorf("a listing within its deadline: %+v", l)
	}
}

// The paths of one listing are bounded in bytes, so that its frame from the runner is too.
func TestSessionFilesListBoundsItsPathBytes(t *testing.T) {
	dir := t.TempDir()
	long := strings.Repeat("d", 200)
	if err := os.MkdirAll(filepath.Join(dir, long, long), 0o755); err != nil {
		t.Fatal(err)
	}
	n := 2 * maxListingPathBytes / (2*len(long) + 10)
	for i := range n {
		if err := os.WriteFile(filepath.Join(dir, long, long, fmt.Sprintf("%08d", i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	l := listFiles(dir, n, time.Time{})
	bytes := 0
	for _, f := range l.Files {
		bytes += len(f.Path)
	}
	if !l.Truncated || l.Total != n || len(l.Files) == 0 || bytes > maxListingPathBytes || len(l.Files) >= n {
		t.Errorf("%d files of %d listed, %d bytes of paths (at most %d), truncated %v", len(l.Files), l.Total, bytes, maxListingPathBytes, l.Truncated)
	}
}

// readFile reads a file of a session whole, as the server's file endpoint does, and checks
// that it has the size OpenFile said.
func readFile(ss Session, p string, max int64) ([]byte, error) {
	body, err := ss.OpenFile(p, max)
	if err != nil {
		return nil, err
	}
	return testutil.ReadSized(body)
}
