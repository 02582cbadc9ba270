package executor

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pyexec/pyexec/internal/confine"
	"github.com/pyexec/pyexec/internal/testutil"
	"github.com/pyexec/pyexec/pkg/api"
)

// holdCode forks children that sleep until a fork is refused, says how many it holds and the
// errno, holds them for the given seconds, and exits 3.
const holdCode = `import os, time
kids = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        kids += 1
except OSError as e:
    print("held", kids, e.errno, flush=True)
time.sleep(%d)
raise SystemExit(3)
`

// busyCode starts ten threads and a subprocess: what a neighbour of a hog must still be able to
// do.
const busyCode = `import subprocess, threading, time
ts = [threading.Thread(target=time.sleep, args=(0.2,)) for _ in range(10)]
for t in ts:
    t.start()
subprocess.run(["/bin/true"], check=True)
for t in ts:
    t.join()
print("ok")
`

// signalOn is an Output that closes seen once stdout has carried want.
type signalOn struct {
	want string
	mu   sync.Mutex
	buf  strings.Builder
	seen chan struct{}
}

func newSignalOn(want string) *signalOn { return &signalOn{want: want, seen: make(chan struct{})} }

func (s *signalOn) Write(stream string, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if stream != "stdout" {
		return
	}
	had := strings.Contains(s.buf.String(), s.want)
	s.buf.Write(data)
	if !had && strings.Contains(s.buf.String(), s.want) {
		close(s.seen)
	}
}

// requireBudget skips where the kernel cannot count an execution's processes, and says what is
// then open.
func requireBudget(t *testing.T) {
	t.Helper()
	if !confine.Probe(confine.NoCap).ProcessBudget {
		t.Skip("SKIPPED: no seccomp user notification with CONTINUE (Linux 5.5): every execution's processes count against RLIMIT_NPROC of one uid, and one that forks up to --max-processes starves the others")
	}
}

// One execution that forks until it is refused holds its budget and no more, and a concurrent
// one still starts its threads and a subprocess: each has a budget of its own.
func TestProcessBudgetPerExecution(t *testing.T) {
	requireBudget(t)
	for mode, ex := range modes(t) {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			lim := defaultLimits
			lim.MaxProcesses = 16
			out := newSignalOn("held")
			done := make(chan api.ExecuteResult, 1)
			go func() {
				res, err := ex.Execute(context.Background(), Request{ID: "hog", Code: fmt.Sprintf(holdCode, 3), Limits: lim}, out)
				if err != nil {
					t.Error(err)
				}
				done <- res
			}()
			select {
			case <-out.seen:
			case res := <-done:
				t.Fatalf("the hog ended before it held its processes: %+v", res)
			case <-time.After(30 * time.Second):
				t.Fatal("the hog never said how many processes it held")
			}
			// The hog's tree is at its budget, and stays there while this runs.
			res, err := ex.Execute(context.Background(), Request{ID: "neighbour", Code: busyCode, Limits: lim}, nil)
			if err != nil || res.ExitCode != 0 || res.Stdout != "ok\n" {
				t.Errorf("the neighbour of a hog: %+v %v", res, err)
			}
			hog := <-done
			// 16 tasks: the code's process and 15 children; EAGAIN (11) for the 16th.
			if hog.Stdout != "held 15 11\n" || hog.ExitCode != 3 || hog.Reason != api.ReasonProcessLimit {
				t.Errorf("the hog: stdout %q exit %d reason %s stderr %.300q", hog.Stdout, hog.ExitCode, hog.Reason, hog.Stderr)
			}
		})
	}
}

// Threads count as RLIMIT_NPROC counts them, and code that copes with a refusal and exits 0 has
// just exited.
func TestProcessBudgetCountsThreads(t *testing.T) {
	requireBudget(t)
	ex := modes(t)[ModeFork]
	lim := defaultLimits
	lim.MaxProcesses = 8
	code := `import threading, time
ts = []
try:
    for _ in range(20):
        t = threading.Thread(target=time.sleep, args=(1,))
        t.start()
        ts.append(t)
except RuntimeError as e:
    print(len(ts), e)
# What ends frees its place: short threads one after another, many more than the budget.
for t in ts:
    t.join()
for _ in range(200):
    t = threading.Thread(target=int)
    t.start()
    t.join()
print("after", threading.active_count())
`
	res, err := ex.Execute(context.Background(), Request{ID: "threads", Code: code, Limits: lim}, nil)
	if err != nil || res.ExitCode != 0 || res.Reason != api.ReasonExit || res.Stdout != "7 can't start new thread\nafter 1\n" {
		t.Fatalf("%+v %v", res, err)
	}
}

// A session's budget holds for its whole life: what its threads hold between calls counts
// against it alone, and a thread that outlives its call and forks is refused past it, while an
// execution beside it starts its own threads.
func TestProcessBudgetPerSession(t *testing.T) {
	requireBudget(t)
	for mode, st := range sessionModes(t) {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			lim := defaultLimits
			lim.MaxProcesses = 16
			ss := newSession(t, st, SessionRequest{ID: "budget", Limits: lim})
			// A thread that outlives its call forks until it is refused, and holds.
			res := call(t, ss, `import os, threading, time
held = []
def hog():
    time.sleep(0.3)  # after the call: its end kills what it started
    try:
        while True:
            if os.fork() == 0:
                time.sleep(60)
                os._exit(0)
            held.append(1)
    except OSError as e:
        held.append(e.errno)
threading.Thread(target=hog, daemon=True).start()
`, func(r *Request) { r.Limits = lim })
			if res.ExitCode != 0 {
				t.Fatalf("first call: %+v", res)
			}
			time.Sleep(500 * time.Millisecond) // between calls
			res, err := st.(Executor).Execute(context.Background(), Request{ID: "beside", Code: busyCode, Limits: lim}, nil)
			if err != nil || res.Stdout != "ok\n" {
				t.Errorf("an execution beside the session: %+v %v", res, err)
			}
			// The interpreter's two threads and 14 children are the session's 16 tasks.
			res = call(t, ss, "import time\nwhile not held or held[-1] == 1:\n    time.sleep(0.05)\nprint(len(held) - 1, held[-1])",
				func(r *Request) { r.Limits = lim })
			if res.Stdout != "14 11\n" || res.ExitCode != 0 {
				t.Errorf("second call: %+v", res)
			}
		})
	}
}

// A session's memory is its tree's: children that together pass the limit end the session,
// though each is far under it, and so does a call that touches more than the limit, with its
// output so far. Between calls the session is at rest: a thread that would fork then does not
// run (judged from outside: no child).
func TestSessionMemoryLimit(t *testing.T) {
	for mode, st := range sessionModes(t) {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			lim := defaultLimits
			lim.MemoryLimitMB = 128
			limited := func(r *Request) { r.Limits = lim }
			ss := newSession(t, st, SessionRequest{ID: "children", Limits: lim})
			res := call(t, ss, `import os, threading, time
def hog():
    time.sleep(0.3)  # after the call
    for _ in range(10):
        if os.fork() == 0:
            b = bytearray(32 << 20)
            time.sleep(60)
            os._exit(0)
threading.Thread(target=hog, daemon=True).start()
print(os.getpid())
`, limited)
			pid, err := strconv.Atoi(strings.TrimSpace(res.Stdout))
			if err != nil {
				t.Fatalf("first call: %+v", res)
			}
			time.Sleep(2 * time.Second)
			if state, _ := procState(t, pid); state != "T" || len(childrenOf(t, pid)) != 0 {
				t.Fatalf("between calls the interpreter is %s with children %v: want stopped, none", state, childrenOf(t, pid))
			}
			res = call(t, ss, "import os, time\nfor _ in range(10):\n    if os.fork() == 0:\n        b = bytearray(32 << 20)\n        time.sleep(60)\n        os._exit(0)\ntime.sleep(10)", limited)
			if res.Reason != api.ReasonMemoryLimit || !res.SessionLost || res.DurationMS > 9000 {
				t.Errorf("children past the limit together: %+v", res)
			}

			ss = newSession(t, st, SessionRequest{ID: "touch", Limits: lim})
			res = call(t, ss, "print('start', flush=True)\nb = bytearray(512 << 20)", limited)
			if res.Reason != api.ReasonMemoryLimit || !res.SessionLost || res.Stdout != "start\n" {
				t.Errorf("a call past the limit: %+v", res)
			}
		})
	}
}

// childrenOf lists the children of pid's threads, from /proc.
func childrenOf(t *testing.T, pid int) []string {
	t.Helper()
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, task := range tasks {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
		out = append(out, strings.Fields(string(b))...)
	}
	return out
}

// 32 threads that each multiply two 500x500 arrays under 300 MB: address space that threads
// reserve and never touch is not the limit's.
func TestThreadsOfNumpyUnderTheMemoryLimit(t *testing.T) {
	py := testutil.RequireSystemPython(t)
	if out, err := exec.Command(py, "-c", "import numpy").CombinedOutput(); err != nil {
		t.Fatalf("numpy is a test dependency (make deps installs python3-numpy): %s", out)
	}
	ex := modes(t)[ModeFork]
	lim := defaultLimits
	lim.MemoryLimitMB = 300
	code := `import threading
import numpy as np
a = np.ones((500, 500))
out = []
def f():
    out.append(float((a @ a)[0, 0]))
ts = [threading.Thread(target=f) for _ in range(32)]
for t in ts:
    t.start()
for t in ts:
    t.join()
print(len(out), out[0])
`
	res, err := ex.Execute(context.Background(), Request{ID: "numpy", Code: code, Limits: lim}, nil)
	if err != nil || res.ExitCode != 0 || res.Stdout != "32 500.0\n" {
		t.Fatalf("%+v %v", res, err)
	}
}

// A session at rest takes nothing: between calls its interpreter is stopped, threads and all
// (seen from outside: state T, no CPU time), and the next call goes on where it was.
func TestSessionAtRest(t *testing.T) {
	for mode, st := range sessionModes(t) {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ss := newSession(t, st, SessionRequest{ID: "rest"})
			res := call(t, ss, "import os, threading\nspins = [0]\ndef spin():\n    while True:\n        spins[0] += 1\nthreading.Thread(target=spin, daemon=True).start()\nprint(os.getpid())")
			pid, err := strconv.Atoi(strings.TrimSpace(res.Stdout))
			if err != nil {
				t.Fatalf("first call: %+v", res)
			}
			time.Sleep(200 * time.Millisecond)
			state, ticks := procState(t, pid)
			time.Sleep(time.Second)
			state2, ticks2 := procState(t, pid)
			if state != "T" || state2 != "T" || ticks2 != ticks {
				t.Fatalf("between calls the interpreter is %s then %s, CPU ticks %d then %d: want stopped, no CPU", state, state2, ticks, ticks2)
			}
			// The spinning thread goes on during the call: spins grows while it runs.
			res = call(t, ss, "import time\na = spins[0]\ntime.sleep(0.2)\nprint(spins[0] > a)")
			if res.Stdout != "True\n" || res.ExitCode != 0 {
				t.Errorf("a call after rest: %+v", res)
			}
		})
	}
}

// procState reads a process's state letter and its user+system CPU ticks from /proc.
func procState(t *testing.T, pid int) (string, int) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.Atoi(f[11])
	stime, _ := strconv.Atoi(f[12])
	return f[0], utime + stime
}
