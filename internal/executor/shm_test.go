package executor

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
)

// The janitor's bookkeeping on a directory of its own: a file goes when the last holder active
// when it appeared ends; one that appears while no holder is active goes at once; what was
// there before goes when the janitor starts.
func TestShmJanitor(t *testing.T) {
	dir := t.TempDir()
	write := func(name string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	exists := func(name string) bool {
		_, err := os.Stat(filepath.Join(dir, name))
		return err == nil
	}
	gone := func(name string) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); exists(name); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s is still there", name)
			}
		}
	}
	write("before")
	j, err := newShmJanitor(dir, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(j.close)
	gone("before")

	a := j.hold()
	write("a1")
	time.Sleep(100 * time.Millisecond) // the event is read
	b := j.hold()
	write("ab")
	time.Sleep(100 * time.Millisecond)
	a()
	gone("a1")
	if !exists("ab") {
		t.Fatal("a file b may use went with a")
	}
	write("b2")
	time.Sleep(100 * time.Millisecond)
	b()
	gone("ab")
	gone("b2")

	write("nobody")
	gone("nobody")

	// A session: a file of its call stays after the call and after an execution ends; one that
	// an execution makes while the session is at rest is the execution's alone.
	begin, end, closeSession := j.holdSession()
	begin()
	write("call")
	end()
	e := j.hold()
	write("exec")
	time.Sleep(100 * time.Millisecond)
	e()
	gone("exec")
	if !exists("call") {
		t.Fatal("a file of a session's call went with an execution")
	}
	closeSession()
	gone("call")
}
