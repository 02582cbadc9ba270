package executor

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/pyexec/pyexec/pkg/api"
)

// treesMemory stands for the memory cgroup of a runner that holds nothing but its trees: its
// usage is their memory, read from /proc as the watchdog reads it.
type treesMemory struct{ s *Spawn }

func (m treesMemory) Usage() (int64, error)        { return m.s.TreeStats().Memory, nil }
func (m treesMemory) WorkingSet(usage int64) int64 { return usage }

// watchTrees gives ex a memory watchdog of treesMemory under a limit of limit bytes (its mark
// at 90%).
func watchTrees(t *testing.T, ex Executor, limit int64) *Spawn {
	t.Helper()
	sp, ok := ex.(*Spawn)
	if fk, isFork := ex.(*Fork); isFork {
		sp, ok = fk.spawn, true
	}
	if !ok {
		t.Fatalf("%T has no trees", ex)
	}
	sp.watchdog = newMemoryWatchdog(treesMemory{sp}, limit, 90, sp.trees, logr.Discard())
	t.Cleanup(sp.watchdog.close)
	return sp
}

// bigCode holds 128 MiB, written (resident), and waits.
const bigCode = "import time\nx = b'x' * (128 << 20)\nprint('ready', flush=True)\ntime.sleep(60)\n"

// smallCode holds 16 MiB until a file "go" appears in its working directory.
const smallCode = "import os, time\nx = b'x' * (16 << 20)\nprint('ready', flush=True)\nwhile not os.path.exists('go'):\n    time.sleep(0.01)\nprint('done', len(x))\n"

// watchdogLimit puts the mark (90%) between the small tree alone (16 MiB and an interpreter)
// and both trees together (144 MiB and two interpreters).
const watchdogLimit = 150 << 20

// Two executions, one large and one small, in a runner that nears its memory limit: the
// watchdog ends the large one (reason memory_limit, and a note on its stderr) and only it; the
// small one finishes.
func TestMemoryWatchdogEndsTheLargestExecution(t *testing.T) {
	for mode, ex := range modes(t) {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			sp := watchTrees(t, ex, watchdogLimit)
			dir, err := MakeDir(workDirOf(ex), -1)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = RemoveDir(dir) })
			ready := newSignalOn("ready")
			small := make(chan api.ExecuteResult, 1)
			go func() {
				res, err := ex.Execute(context.Background(), Request{ID: "small", Dir: dir, Code: smallCode, Limits: defaultLimits}, ready)
				if err != nil {
					t.Error(err)
				}
				small <- res
			}()
			select {
			case <-ready.seen:
			case res := <-small:
				t.Fatalf("the small execution ended first: %+v", res)
			}
			big, err := ex.Execute(context.Background(), Request{ID: "big", Code: bigCode, Limits: defaultLimits}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if big.Reason != api.ReasonMemoryLimit || big.ExitCode != 137 || big.Signal != "SIGKILL" || !strings.Contains(big.Stderr, "pyexec: ended by the runner's memory watchdog") ||
				!strings.Contains(big.Stderr, "this execution's processes held the most") {
				t.Fatalf("the large execution: reason %s exit %d signal %s stdout %q stderr %q", big.Reason, big.ExitCode, big.Signal, big.Stdout, big.Stderr)
			}
			if err := os.WriteFile(filepath.Join(dir, "work", "go"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			res := <-small
			if res.Reason != api.ReasonExit || res.ExitCode != 0 || res.Stdout != "ready\ndone 16777216\n" {
				t.Fatalf("the small execution: %+v", res)
			}
			if n := sp.TreeStats().WatchdogEnded; n != 1 {
				t.Errorf("trees the watchdog ended: %d, want 1", n)
			}
		})
	}
}

// A session is a tree too: at rest and smaller it lives on when an execution is ended; running
// a call and larger it is ended, and the call says memory_limit and session_lost.
func TestMemoryWatchdogAndSessions(t *testing.T) {
	for mode, st := range sessionModes(t) {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			sp := watchTrees(t, st, watchdogLimit)
			ss := newSession(t, st, SessionRequest{ID: "small"})
			if res := call(t, ss, "x = b'x' * (16 << 20)"); res.ExitCode != 0 {
				t.Fatalf("the session's first call: %+v", res)
			}
			big, err := st.Execute(context.Background(), Request{ID: "big", Code: bigCode, Limits: defaultLimits}, nil)
			if err != nil || big.Reason != api.ReasonMemoryLimit {
				t.Fatalf("the large execution beside a session at rest: %+v %v", big, err)
			}
			if res := call(t, ss, "print(len(x))"); res.Stdout != "16777216\n" || res.SessionLost {
				t.Fatalf("the session after the large execution ended: %+v", res)
			}

			large := newSession(t, st, SessionRequest{ID: "large"})
			res := call(t, large, bigCode)
			if res.Reason != api.ReasonMemoryLimit || !res.SessionLost || !strings.Contains(res.Stderr, "this session's processes held the most") {
				t.Fatalf("the large session's call: %+v", res)
			}
			if _, err := large.Execute(context.Background(), Request{ID: "next", Code: "1", Limits: defaultLimits}, nil); err != ErrSessionEnded || !large.EndedForMemory() {
				t.Fatalf("a call after the watchdog ended the session: %v (ended for memory: %t)", err, large.EndedForMemory())
			}
			if res := call(t, ss, "print(len(x))"); res.Stdout != "16777216\n" {
				t.Fatalf("the small session after the large one ended: %+v", res)
			}
			if n := sp.TreeStats().WatchdogEnded; n != 2 {
				t.Errorf("trees the watchdog ended: %d, want 2", n)
			}
		})
	}
}

// The figures of the trees: an execution and a session, their tasks and memory; none once
// they are over.
func TestTreeStats(t *testing.T) {
	fk := newFork(t, 0)
	ss, err := fk.NewSession(context.Background(), SessionRequest{ID: "s", Limits: defaultLimits})
	if err != nil {
		t.Fatal(err)
	}
	if res := call(t, ss, "import threading, time\nx = b'x' * (32 << 20)\nfor _ in range(3):\n    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()"); res.ExitCode != 0 {
		t.Fatalf("%+v", res)
	}
	out := newSignalOn("ready")
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer close(done)
		_, _ = fk.Execute(ctx, Request{ID: "e", Code: "import time\nx = b'x' * (64 << 20)\nprint('ready', flush=True)\ntime.sleep(60)", Limits: defaultLimits}, out)
	}()
	<-out.seen
	st := fk.TreeStats()
	// The session's interpreter with its 3 threads and the execution's code: 5 tasks at least.
	if st.Trees != 2 || st.Tasks < 5 || st.Memory < 96<<20 || st.Memory > 512<<20 {
		t.Errorf("with a session and an execution: %+v", st)
	}
	cancel()
	<-done
	ss.Close()
	if st := fk.TreeStats(); st.Trees != 0 || st.Tasks != 0 || st.Memory != 0 || st.HighWater != 0 {
		t.Errorf("with nothing running: %+v", st)
	}
}

// The poll comes sooner as the memory nears the mark, within its bounds.
func TestPollAfter(t *testing.T) {
	for headroom, want := range map[int64]time.Duration{-1: minPoll, 0: minPoll, 1 << 20: minPoll, 50 << 20: 48828125, 1 << 30: maxPoll, 1 << 40: maxPoll} {
		if got := pollAfter(headroom); got != want {
			t.Errorf("pollAfter(%d) = %v, want %v", headroom, got, want)
		}
	}
}
