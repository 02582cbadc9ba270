package executor

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"

	"github.com/pyexec/pyexec/internal/confine"
	"github.com/pyexec/pyexec/internal/proc"
	"github.com/pyexec/pyexec/internal/testutil"
	"github.com/pyexec/pyexec/pkg/api"
)

// defaultLimits are generous; cases lower what they test.
var defaultLimits = Limits{Timeout: 20 * time.Second, MemoryLimitMB: 1024, MaxOutputBytes: 1 << 20, MaxProcesses: 0, MaxFileBytes: 8 << 20, MaxFilesOut: 16}

// modes are the executors under test, confined as far as the kernel allows; every behaviour
// case runs against each.
func modes(t *testing.T) map[string]Executor {
	t.Helper()
	return modesWith(t, Isolation{Kernel: confine.Probe(confine.NoCap)})
}

// modesWith are the executors with the given confinement.
func modesWith(t *testing.T, iso Isolation) map[string]Executor {
	t.Helper()
	py := testutil.RequireSystemPython(t)
	pkgs := t.TempDir()
	// A packages dir with a current tree, as internal/packages lays it out.
	if err := os.MkdirAll(filepath.Join(pkgs, "trees", "1"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("trees/1", filepath.Join(pkgs, "current")); err != nil {
		t.Fatal(err)
	}
	cfg := SpawnConfig{Python: py, PackagesDir: pkgs, WorkDir: t.TempDir(), Path: "/usr/bin:/bin", Isolation: iso, Log: logr.Discard()}
	sp, err := NewSpawn(cfg)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]Executor{ModeSpawn: sp}
	for name, warm := range map[string]int{ModeFork: 0, modeForkWarm: 1} {
		cfg.WorkDir = t.TempDir()
		fk, err := NewFork(ForkConfig{SpawnConfig: cfg, Preload: []string{"json"}, Warm: warm})
		if err != nil {
			t.Fatal(err)
		}
		if err := fk.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(fk.Close)
		out[name] = fk
	}
	return out
}

// modeForkWarm is fork mode where every execution runs in a spare.
const modeForkWarm = "fork-warm"

// awaitSpare waits until fk has a spare ready.
func awaitSpare(t testing.TB, fk *Fork) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		fk.pool.Lock()
		n := len(fk.spares)
		fk.pool.Unlock()
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no spare became ready")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// recorder is a streaming Output that keeps the events in order.
type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) Write(stream string, data []byte) {
	r.mu.Lock()
	r.events = append(r.events, stream+":"+string(data))
	r.mu.Unlock()
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// alive reports whether pid runs (a zombie counts as gone).
func alive(pid int) bool {
	p, ok := proc.ReadStat(pid)
	return ok && !p.Zombie
}

// pidsFrom parses "pid:N" lines of the code's stdout.
func pidsFrom(t *testing.T, stdout string) []int {
	t.Helper()
	var pids []int
	for _, line := range strings.Split(stdout, "\n") {
		if rest, ok := strings.CutPrefix(line, "pid:"); ok {
			pid, err := strconv.Atoi(rest)
			if err != nil {
				t.Fatalf("bad pid line %q", line)
			}
			pids = append(pids, pid)
		}
	}
	if len(pids) == 0 {
		t.Fatalf("the code printed no pid: %q", stdout)
	}
	return pids
}

func assertGone(t *testing.T, pids []int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for alive(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("process %d outlived its execution", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

type behaviour struct {
	name  string
	req   Request
	check func(t *testing.T, res api.ExecuteResult, elapsed time.Duration)
}

func behaviours(packagesTree string) []behaviour {
	return []behaviour{
		{"hello", Request{Code: "import sys\nprint('out')\nprint('err', file=sys.stderr)"}, func(t *testing.T, r api.ExecuteResult, _ time.Duration) {
			if r.ExitCode != 0 || r.Reason != api.ReasonExit || r.Stdout != "out\n" || r.Stderr != "err\n" || r.TimedOut || r.Signal != "" {
				t.Errorf("%+v", r)
			}
		}},
		{"a figure comes back, matplotlib's cache does not", Request{Code: "import os, matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([1, 2])\nfig.savefig('p.png')\nprint(os.path.basename(os.environ['MPLCONFIGDIR']))"},
			func(t *testing.T, r api.ExecuteResult, _ time.Duration) {
				if r.ExitCode != 0 || r.Stdout != mplDir+"\n" || len(r.Files) != 1 || r.Files[0].Path != "p.png" {
					t.Errorf("%+v", r)
				}
			}},
		// Semaphores and shared memory live in /dev/shm: confined code may use names it knows
		// there, but not list it.
		{"multiprocessing works confined; /dev/shm cannot be listed", Request{Code: "import multiprocessing as mp, os\nfrom multiprocessing import shared_memory\nif __name__ == '__main__':\n    with mp.Pool(2) as p:\n        print(p.map(abs, [-1, -2]))\n    s = shared_memory.SharedMemory(create=True, size=10); s.close(); s.unlink()\n    try:\n        os.listdir('/dev/shm')\n    except PermissionError:\n        print('unlisted')"},
			func(t *testing.T, r api.ExecuteResult, _ time.Duration) {
				if r.ExitCode != 0 || r.Stdout != "[1, 2]\nunlisted\n" {
					t.Errorf("%+v", r)
				}
			}},
		{"a final expression is the execute_result, as in a notebook cell", Request{Code: "x = 2\nx * 21"},
			func(t *testing.T, r api.ExecuteResult, _ time.Duration) {
				if r.ExitCode != 0 || r.Stdout != "" || len(r.Outputs) != 1 || r.Outputs[0].Type != api.OutputExecuteResult ||
					len(r.Outputs[0].Data) != 1 || r.Outputs[0].Data["text/plain"] != "42" {
					t.Errorf("%+v", r)
				}
			}},
		{"display() and _repr_html_; a final None is no output", Request{Code: "class T:\n    def _repr_html_(self):\n        return '<b>t</b>'\ndisplay('a', T())\nprint('p')\nNone"},
			func(t *testing.T, r api.ExecuteResult, _ time.Duration) {
				if r.ExitCode != 0 || r.Stdout != "p\n" || len(r.Outputs) != 2 ||
					r.Outputs[0].Type != api.OutputDisplayData || r.Outputs[0].Data["text/plain"] != "'a'" ||
					r.Outputs[1].Type != api.OutputDisplayData || r.Outputs[1].Data["text/html"] != "<b>t</b>" || !strings.HasPrefix(r.Outputs[1].Data["text/plain"], "<__main__.T object") {
					t.Errorf("%+v", r)
				}
			}},
		{"matplotlib figures: plt.show() and the end of the code send each open one as a PNG, then close it", Request{Code: "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([1, 2])\nplt.show()\nprint(len(plt.get_fignums()))\nplt.figure()\nplt.plot([3, 1])\n1/0"},
			func(t *testing.T, r api.ExecuteResult, _ time.Duration) {
				if r.ExitCode != 1 || r.Stdout != "0\n" || !strings.Contains(r.Stderr, "ZeroDivisionError") || len(r.Outputs) != 2 {
					t.Fatalf("%+v", r)
				}
				for _, o := range r.Outputs {
					if o.Type != api.OutputDisplayData || !strings.HasPrefix(o.Data["image/png"], "iVBORw0KGgo") || !strings.HasPrefix(o.Data["text/plain"], "<Figure size") {
						t.Errorf("output %+v", o)
					}
				}
			}},
		{"outputs and files share --max-files-out-bytes", Request{Code: "display('x' * 600)\ndisplay('y' * 600)\nopen('f.txt', 'w').write('z' * 100)", Limits: Limits{MaxFilesOutBytes: 1000}},
			func(t *testing.T, r api.ExecuteResult, _ time.Duration) {
				if r.ExitCode != 0 || len(r.Outputs) != 1 || !r.OutputsTruncated || len(r.Files) != 1 || r.FilesTruncated {
					t.Errorf("%+v", r)
				}
			}},
		// ps shows a bootstrap and the parameters, not pyexec's Python (30 KB).
		{"the supervisor's command line is short", Request{Code: "import os\nprint(len(open('/proc/%d/cmdline' % os.getppid(), 'rb').read()))"},
			func(t *testing.T, r api.ExecuteResult, _ time.Duration) {
				n, err := strconv.Atoi(strings.TrimSpace(r.Stdout))
				if r.ExitCode != 0 || err != nil || n > 4096 {
					t.Errorf("%+v", r)
				}
			}},
		{"sys.exit status", Request{Code: "import sys\nsys.exit(3)"}, func(t *testing.T, r api.ExecuteResult, _ time.Duration) {
			if r.ExitCode != 3 || r.Reason != api.ReasonExit {
				t.Errorf("%+v", r)
			}
		}},
		{"atexit handlers and non-daemon threads run before the end", Request{Code: "import atexit, threading, time\natexit.register(lambda: print('atexit'))\nthreading.Thread(target=lambda: (time.sleep(0.2), print('thread'))).start()\nprint('main')"},
			func(t *testing.T, r api.ExecuteResult, _ time.Duration) {
				if r.ExitCode != 0 || r.Stdout != "main\nthread\natexit\n" {
					t.Errorf("%+v", r)
				}
			}},
		{"sys.exit with a message", Request{Code: "import sys\nsys.exit('bye')"}, func(t *testing.T, r api.ExecuteResult, _ time.Duration) {
			if r.ExitCode != 1 || r.Stderr != "bye\n" {
				t.Errorf("%+v", r)
			}
		}},
		{"os._exit keeps unflushed output", Request{Code: "import os\nprint('before', end='')\nos._exit(7)"}, func(t *testing.T, r api.ExecuteResult, _ time.Duration) {
			if r.ExitCode != 7 || r.Stdout != "before" {
				t.Errorf("%+v", r)
			}
		}},
		{"exception traceback shows the code only", Request{Code: "x = 1\nraise ValueError('bad value')"}, func(t *testing.T, r api.ExecuteResult, _ time.Duration) {
			want := "Traceback (most recent call last):\n  File \"<code>\", line 2, in <module>\n    raise ValueError('bad value')\nValueError: bad value\n"
			if r.ExitCode != 1 || r.Reason != api.ReasonExit || r.Stderr != want {
				t.Errorf("exit %d stderr:\n%s\nwant:\n%s", r.ExitCode, r.Stderr, want)
			}
		}},
		{"syntax error", Request{Code: "def f(:\n"}, func(t *testing.T, r api.ExecuteResult, _ time.Duration) {
			if r.ExitCode != 1 || !strings.Contains(r.Stderr, "SyntaxError") || !strings.Contains(r.Stderr, `File "<code>", line 1`) {
				t.Errorf("%+v", r)
			}
		}},
		{"stdin", Request{Code: "import sys\nprint(sys.stdin.read().upper())", Stdin: []byte("hello")}, func(t *testing.T, r api.ExecuteResult, _ time.Duration) {
			if r.Stdout != "HELLO\n" {
				t.Errorf("%+v", r)
			}
		}},
		{"scrubbed environment", Request{Code: "import os, json\nprint(json.dumps(dict(os.environ), sort_keys=True))\nprint(os.getcwd())", Env: map[string]string{"GREETING": "hi"}},
			func(t *testing.T, r api.ExecuteResult, _ time.Duration) {
				lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
				if len(lines) != 2 {
					t.Fatalf("%+v", r)
				}
				cwd := lines[1]
				for _, want := range []string{`"GREETING": "hi"`, `"HOME": "` + cwd + `"`, `"TMPDIR": "` + cwd + `"`, `"PYTHONPATH": "` + packagesTree + `"`,
					`"MPLBACKEND": "Agg"`, `"PYTHONUNBUFFERED": "1"`, `"OPENBLAS_NUM_THREADS": "`, `"LANG": "C.UTF-8"`, `"PATH": "/usr/bin:/bin"`} {
					if !strings.Contains(lines[0], want) {
						t.Errorf("environment lacks %s: %s", want, lines[0])
					}
				}
				if strings.Contains(lines[0], "PYEXEC_TEST_SECRET") || strings.Contains(lines[0], "hunter2") {
					t.Errorf("the server's environment leaked: %s", lines[0])
				}
			}},
		{"timeout kills an endless loop", Request{Code: "while True:\n    pass", Limits: Limits{Timeout: time.Second}}, func(t *testing.T, r api.ExecuteResult, d time.Duration) {
			if r.Reason != api.ReasonTimeout || !r.TimedOut || r.ExitCode != 137 || r.Signal != "SIGKILL" || d > 10*time.Second {
				t.Errorf("%+v after %v", r, d)
			}
		}},
		{"timeout kills a process that ignores SIGTERM", Request{Code: "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\ntime.sleep(600)", Limits: Limits{Timeout: time.Second}},
			func(t *testing.T, r api.ExecuteResult, d time.Duration) {
				if r.Reason != api.ReasonTimeout || r.Stdout != "ready\n" || d > 10*time.Second {
					t.Errorf("%+v after %v", r, d)
				}
			}},
		{"timeout kills a setsid escaper", Request{Code: testutil.SetsidEscaperCode + "time.sleep(600)", Limits: Limits{Timeout: 2 * time.Second}}, func(t *testing.T, r api.ExecuteResult, _ time.Duration) {
			if r.Reason != api.ReasonTimeout {
				t.Errorf("%+v", r)
			}
			assertGone(t, pidsFrom(t, r.Stdout))
		}},
		{"a setsid escaper dies with its execution", Request{Code: testutil.SetsidEscaperCode}, func(t *testing.T, r api.ExecuteResult, d time.Duration) {
			if r.Reason != api.ReasonExit || r.ExitCode != 0 || d > 10*time.Second {
				t.Errorf("%+v after %v", r, d)
			}
			assertGone(t, pidsFrom(t, r.Stdout))
		}},
		{"output flood is cut at the cap", Request{Code: "while True:\n    print('x' * 999)", Limits: Limits{MaxOutputBytes: 64 << 10}}, func(t *testing.T, r api.ExecuteResult, _ time.Duration) {
			if r.Reason != api.ReasonOutputLimit || !r.StdoutTruncated || len(r.Stdout) != 64<<10 || r.StderrTruncated {
				t.Errorf("reason %s truncated %v len %d", r.Reason, r.StdoutTruncated, len(r.Stdout))
			}
		}},
		{"memory touched past the limit kills the tree, and the output so far is kept", Request{Code: "print('start', flush=True)\nb = bytearray(1024**3)\nprint('after')", Limits: Limits{MemoryLimitMB: 256}}, func(t *testing.T, r api.ExecuteResult, _ time.Duration) {
			if r.Reason != api.ReasonMemoryLimit || r.ExitCode != 137 || r.Signal != "SIGKILL" || r.Stdout != "start\n" {
				t.Errorf("%+v", r)
			}
		}},
		{"an allocation past the address-space backstop raises MemoryError", Request{Code: "print('start', flush=True)\nb = bytearray(64 * 1024**3)", Limits: Limits{MemoryLimitMB: 256}}, func(t *testing.T, r api.ExecuteResult, _ time.Duration) {
			if r.Reason != api.ReasonMemoryLimit || r.ExitCode != 1 || r.Stdout != "start\n" || !strings.HasSuffix(r.Stderr, "MemoryError\n") {
				t.Errorf("%+v", r)
			}
		}},
		{"children that together pass the memory limit are killed with the code", Request{Code: "import os, time\nfor _ in range(8):\n    pid = os.fork()\n    if pid == 0:\n        b = bytearray(48 << 20)\n        time.sleep(60)\n        os._exit(0)\n    print('pid:%d' % pid, flush=True)\ntime.sleep(60)", Limits: Limits{MemoryLimitMB: 256}},
			func(t *testing.T, r api.ExecuteResult, d time.Duration) {
				// Each child is far under the limit: RLIMIT_AS alone would let them all live.
				if r.Reason != api.ReasonMemoryLimit || r.ExitCode != 137 || d > 30*time.Second {
					t.Errorf("%+v after %v", r, d)
				}
				assertGone(t, pidsFrom(t, r.Stdout))
			}},
		{"huge file write stops at the file limit", Request{Code: "f = open('big.bin', 'wb')\nfor _ in range(100):\n    f.write(b'0' * (1 << 20))", Limits: Limits{MaxFileBytes: 1 << 20}},
			func(t *testing.T, r api.ExecuteResult, _ time.Duration) {
				// The file stops at the limit, and a file at the limit is returned.
				if r.ExitCode != 1 || !strings.Contains(r.Stderr, "File too large") || len(r.Files) != 1 || r.Files[0].Size != 1<<20 || r.FilesTruncated {
					t.Errorf("exit %d stderr %q files %d truncated %v", r.ExitCode, r.Stderr, len(r.Files), r.FilesTruncated)
				}
			}},
		{"files in and out", Request{Code: filesCode, Files: []File{{Path: "data.csv", Data: []byte("a,b\n1,2\n")}, {Path: "keep.txt", Data: []byte("same")}, {Path: "edit.txt", Data: []byte("old")}}},
			func(t *testing.T, r api.ExecuteResult, _ time.Duration) {
				want := []api.OutputFile{
					{Path: "edit.txt", Size: 3, ContentBase64: b64("new")},
					{Path: "out/plot.png", Size: 8, ContentBase64: b64("\x89PNG\r\n\x1a\n")},
					{Path: "sum.txt", Size: 1, ContentBase64: b64("3")},
				}
				if r.ExitCode != 0 || fmt.Sprint(r.Files) != fmt.Sprint(want) || r.FilesTruncated {
					t.Errorf("exit %d stderr %s files %+v truncated %v; want %+v", r.ExitCode, r.Stderr, r.Files, r.FilesTruncated, want)
				}
			}},
		{"files out are capped in count", Request{Code: "for i in range(5):\n    open(f'f{i}.txt', 'w').write(str(i))", Limits: Limits{MaxFilesOut: 2}},
			func(t *testing.T, r api.ExecuteResult, _ time.Duration) {
				if len(r.Files) != 2 || r.Files[0].Path != "f0.txt" || !r.FilesTruncated {
					t.Errorf("%+v", r)
				}
			}},
		{"input files named like stdlib modules do not switch the limits off",
			Request{Code: "import csv\nprint(csv.VERSION)\nb = bytearray(4 * 1024**3)", Limits: Limits{MemoryLimitMB: 256},
				Files: []File{{Path: "csv.py", Data: []byte("VERSION = 'mine'\n")}, {Path: "json.py", Data: []byte("raise SystemExit('json shadowed')\n")},
					{Path: "resource.py", Data: []byte("raise SystemExit('resource shadowed')\n")}, {Path: "types.py", Data: []byte("raise SystemExit('types shadowed')\n")}}},
			func(t *testing.T, r api.ExecuteResult, _ time.Duration) {
				// The runner used the real modules (and set the memory limit); the code still
				// imports its own modules from its working directory, as python does.
				if r.Reason != api.ReasonMemoryLimit || r.Stdout != "mine\n" {
					t.Errorf("reason %s stdout %q stderr %q", r.Reason, r.Stdout, r.Stderr)
				}
			}},
		{"a symlink out of the working dir is not followed", Request{Code: "import os\nos.symlink('/etc/passwd', 'leak')\nos.symlink('/etc', 'dir')"},
			func(t *testing.T, r api.ExecuteResult, _ time.Duration) {
				if r.ExitCode != 0 || len(r.Files) != 0 {
					t.Errorf("%+v", r)
				}
			}},
		{"a forked child left running is killed, the result does not wait for it",
			Request{Code: "import os, time\nif os.fork() == 0:\n    time.sleep(60)\n    os._exit(0)\nprint('pid:%d' % os.getpid())"},
			func(t *testing.T, r api.ExecuteResult, d time.Duration) {
				if r.ExitCode != 0 || r.Reason != api.ReasonExit || d > 10*time.Second {
					t.Fatalf("%+v after %v", r, d)
				}
				assertGone(t, pidsFrom(t, r.Stdout))
			}},
		{"code that reports its own end early is killed with the result",
			Request{Code: "import os, time\nprint('pid:%d' % os.getpid(), flush=True)\nfor fd in map(int, os.listdir('/proc/self/fd')):\n    try:\n        if fd > 2 and os.readlink('/proc/self/fd/%d' % fd).startswith(('pipe:', 'socket:')):\n            os.write(fd, b'0')\n    except OSError:\n        pass\ntime.sleep(600)"},
			func(t *testing.T, r api.ExecuteResult, d time.Duration) {
				if d > 10*time.Second || r.Reason != api.ReasonExit {
					t.Fatalf("%+v after %v", r, d)
				}
				assertGone(t, pidsFrom(t, r.Stdout))
			}},
		{"a forked child's sys.exit does not end the execution",
			Request{Code: "import os, sys, time\nif os.fork() == 0:\n    sys.exit(5)\ntime.sleep(0.5)\nprint('parent done')\nsys.exit(3)"},
			func(t *testing.T, r api.ExecuteResult, _ time.Duration) {
				if r.ExitCode != 3 || r.Stdout != "parent done\n" {
					t.Errorf("%+v", r)
				}
			}},
		{"code that closes its own standard streams", Request{Code: "import os, sys\nprint('bye', flush=True)\nos.close(1)\nos.close(2)\nsys.exit(4)"},
			func(t *testing.T, r api.ExecuteResult, _ time.Duration) {
				if r.ExitCode != 4 || r.Stdout != "bye\n" {
					t.Errorf("%+v", r)
				}
			}},
	}
}

const filesCode = `import os
rows = open('data.csv').read().splitlines()
open('sum.txt', 'w').write(str(sum(int(x) for x in rows[1].split(','))))
open('edit.txt', 'w').write('new')
os.makedirs('out')
open('out/plot.png', 'wb').write(b'\x89PNG\r\n\x1a\n')
`

func TestBehaviours(t *testing.T) {
	t.Setenv("PYEXEC_TEST_SECRET", "hunter2")
	for mode, ex := range modes(t) {
		tree := filepath.Join(packagesDirOf(ex), "trees", "1")
		cases := behaviours(tree)
		var ran atomic.Int64
		if fk, ok := ex.(*Fork); ok {
			// Every case must have run in a fork of the zygote, not in the spawn fallback; in
			// fork-warm, each in a spare.
			t.Cleanup(func() {
				if n := fk.Fallbacks(); n != 0 {
					t.Errorf("%s: %d executions fell back to spawn mode", mode, n)
				}
				if hits := fk.WarmHits(); mode == modeForkWarm && hits != ran.Load() {
					t.Errorf("%s: %d of %d executions ran in a spare", mode, hits, ran.Load())
				}
			})
		}
		for _, b := range cases {
			t.Run(mode+"/"+b.name, func(t *testing.T) {
				if mode == modeForkWarm {
					awaitSpare(t, ex.(*Fork)) // one at a time: each takes the spare
				} else {
					t.Parallel()
				}
				req := b.req
				req.ID = "test"
				req.Limits = mergeLimits(defaultLimits, b.req.Limits)
				start := time.Now()
				ran.Add(1)
				res, err := ex.Execute(context.Background(), req, nil)
				if err != nil {
					t.Fatal(err)
				}
				b.check(t, res, time.Since(start))
			})
		}
	}
}

// mergeLimits overrides the defaults with the case's non-zero limits.
func mergeLimits(d, c Limits) Limits {
	if c.Timeout != 0 {
		d.Timeout = c.Timeout
	}
	if c.MemoryLimitMB != 0 {
		d.MemoryLimitMB = c.MemoryLimitMB
	}
	if c.MaxOutputBytes != 0 {
		d.MaxOutputBytes = c.MaxOutputBytes
	}
	if c.MaxProcesses != 0 {
		d.MaxProcesses = c.MaxProcesses
	}
	if c.MaxFileBytes != 0 {
		d.MaxFileBytes = c.MaxFileBytes
	}
	if c.MaxFilesOut != 0 {
		d.MaxFilesOut = c.MaxFilesOut
	}
	if c.MaxFilesOutBytes != 0 {
		d.MaxFilesOutBytes = c.MaxFilesOutBytes
	}
	return d
}

func TestStreamingKeepsOrderAndRunes(t *testing.T) {
	for mode, ex := range modes(t) {
		t.Run(mode, func(t *testing.T) {
			code := "import sys, time\nsys.stdout.buffer.write(b'caf\\xc3')\nsys.stdout.flush()\ntime.sleep(0.2)\nsys.stdout.buffer.write(b'\\xa9\\n')\nprint('oops', file=sys.stderr)\nprint('end')"
			rec := &recorder{}
			res, err := ex.Execute(context.Background(), Request{ID: "s", Code: code, Limits: defaultLimits}, rec)
			if err != nil {
				t.Fatal(err)
			}
			// Each stream keeps its order and never splits a character; the two streams are
			// separate pipes, so their interleaving is not asserted.
			var stdout, stderr []string
			for _, e := range rec.events {
				stream, data, _ := strings.Cut(e, ":")
				if !utf8.ValidString(data) {
					t.Errorf("event %q splits a character", e)
				}
				if stream == api.EventStdout {
					stdout = append(stdout, data)
				} else {
					stderr = append(stderr, data)
				}
			}
			if len(stdout) < 2 || stdout[0] != "caf" || strings.Join(stdout, "") != "café\nend\n" || strings.Join(stderr, "") != "oops\n" || res.Stdout != "café\nend\n" {
				t.Errorf("stdout events %q stderr events %q result %q", stdout, stderr, res.Stdout)
			}
		})
	}
}

func TestCancelKillsTheExecution(t *testing.T) {
	for mode, ex := range modes(t) {
		t.Run(mode, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			rec := &recorder{}
			done := make(chan api.ExecuteResult)
			go func() {
				res, _ := ex.Execute(ctx, Request{ID: "c", Code: "import time\nprint('go', flush=True)\ntime.sleep(600)", Limits: defaultLimits}, rec)
				done <- res
			}()
			for {
				rec.mu.Lock()
				n := len(rec.events)
				rec.mu.Unlock()
				if n > 0 {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			cancel()
			select {
			case res := <-done:
				if res.Reason != api.ReasonSignal || res.Signal != "SIGKILL" {
					t.Errorf("%+v", res)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("cancel did not stop the execution")
			}
		})
	}
}

// forkBombUID is used by no other test.
const forkBombUID = 61001

func processesOf(uid int) []int {
	var out []int
	for _, p := range proc.ReadAll() {
		if owner, ok := testutil.ProcessUID(p.PID); !p.Zombie && ok && owner == uid {
			out = append(out, p.PID)
		}
	}
	return out
}

func TestWorkingDirectoryRemoved(t *testing.T) {
	for mode, ex := range modes(t) {
		t.Run(mode, func(t *testing.T) {
			workDir := workDirOf(ex)
			res, err := ex.Execute(context.Background(), Request{ID: "w", Code: "import os\nos.makedirs('locked/inner')\nopen('locked/inner/f', 'w').write('x')\nos.chmod('locked/inner', 0)\nos.chmod('locked', 0)", Limits: defaultLimits}, nil)
			if err != nil || res.ExitCode != 0 {
				t.Fatalf("%+v %v", res, err)
			}
			entries, _ := os.ReadDir(workDir)
			for _, e := range entries {
				if e.Name() != zygoteConfigDir { // the zygote's, not an execution's
					t.Errorf("left behind: %v", e)
				}
			}
		})
	}
}

// readCapped is what reads output files as the server (possibly root): a symlink or FIFO that
// the code swapped in after the directory walk must give nothing, and never block.
func TestReadCappedRefusesLinksAndFIFOs(t *testing.T) {
	work := t.TempDir()
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("root only"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(work, "link")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(work, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "ok.txt"), []byte("fine"), 0o644); err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(work)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, name := range []string{"link", "fifo"} {
			if data, big := readCapped(root, name, 1<<20); data != nil || big {
				t.Errorf("%s: read %q", name, data)
			}
		}
		if data, _ := readCapped(root, "ok.txt", 1<<20); string(data) != "fine" {
			t.Errorf("ok.txt: %q", data)
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("readCapped blocked on a FIFO")
	}
}

func packagesDirOf(ex Executor) string {
	if f, ok := ex.(*Fork); ok {
		return f.cfg.PackagesDir
	}
	return ex.(*Spawn).cfg.PackagesDir
}

func workDirOf(ex Executor) string {
	if f, ok := ex.(*Fork); ok {
		return f.cfg.WorkDir
	}
	return ex.(*Spawn).cfg.WorkDir
}

func newFork(t *testing.T, warm int, preload ...string) *Fork {
	t.Helper()
	py := testutil.RequireSystemPython(t)
	fk, err := NewFork(ForkConfig{SpawnConfig: SpawnConfig{Python: py, WorkDir: t.TempDir(), Path: "/usr/bin:/bin", Log: logr.Discard()}, Preload: preload, Warm: warm})
	if err != nil {
		t.Fatal(err)
	}
	if err := fk.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fk.Close)
	return fk
}

func run1(t *testing.T, ex Executor, code string) api.ExecuteResult {
	t.Helper()
	res, err := ex.Execute(context.Background(), Request{ID: "x", Code: code, Limits: defaultLimits}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// In fork mode the preload modules are already imported, and nothing of one execution — a
// module attribute, the random sequence, the directory, an open file, an environment variable —
// is seen by the next: neither in a child forked on demand nor in a spare.
func TestForkPreloadsAndIsolates(t *testing.T) {
	for _, warm := range []int{0, 1} {
		t.Run(fmt.Sprintf("warm=%d", warm), func(t *testing.T) {
			fk := newFork(t, warm, "decimal")
			run := func(code string) api.ExecuteResult {
				if warm > 0 {
					awaitSpare(t, fk)
				}
				return run1(t, fk, code)
			}
			if r := run("import sys\nprint('decimal' in sys.modules)"); r.Stdout != "True\n" {
				t.Fatalf("preload not imported: %+v", r)
			}
			leak := "import builtins, decimal, os\ndecimal.LEAK = 1\nbuiltins.LEAK = 1\nos.chdir('/')\nos.environ['LEAK'] = '1'\nLEAK_FILE = open('/proc/self/stat')\nprint('set')"
			if r := run(leak); r.Stdout != "set\n" {
				t.Fatalf("%+v", r)
			}
			see := "import builtins, decimal, os\nprint(hasattr(decimal, 'LEAK'), hasattr(builtins, 'LEAK'), os.getcwd() == '/', 'LEAK' in os.environ, 'LEAK_FILE' in globals())"
			if r := run(see); r.Stdout != "False False False False False\n" {
				t.Fatalf("state leaked between executions: %+v", r)
			}
			a, b := run("import random\nprint(random.random())"), run("import random\nprint(random.random())")
			if a.Stdout == b.Stdout || a.Stdout == "" {
				t.Fatalf("two executions share a random sequence: %q %q", a.Stdout, b.Stdout)
			}
			if fk.Mode() != ModeFork {
				t.Fatalf("mode %s", fk.Mode())
			}
			if want := int64(5 * warm); fk.WarmHits() != want {
				t.Errorf("%d executions ran in a spare, want %d", fk.WarmHits(), want)
			}
		})
	}
}

// The out-of-memory killer takes the code's process first (oom_score_adj 1000), whether it was
// spawned, forked on demand, taken from a spare (which raised it before it waited), or is a
// session's interpreter; the server and the runner keep theirs.
func TestCodeIsTheOutOfMemoryKillersFirstChoice(t *testing.T) {
	const code = "print(open('/proc/self/oom_score_adj').read().strip())"
	for mode, ex := range modes(t) {
		t.Run(mode, func(t *testing.T) {
			if mode == modeForkWarm {
				awaitSpare(t, ex.(*Fork))
			}
			before := int64(0)
			if fk, ok := ex.(*Fork); ok {
				before = fk.WarmHits()
			}
			if r := run1(t, ex, code); r.Stdout != "1000\n" {
				t.Fatalf("the code's oom_score_adj: %+v", r)
			}
			if fk, ok := ex.(*Fork); ok && mode == modeForkWarm && fk.WarmHits() != before+1 {
				t.Fatalf("the execution did not run in a spare")
			}
			if st, ok := ex.(LocalStarter); ok && mode != modeForkWarm {
				ss := newSession(t, st, SessionRequest{ID: "oom"})
				for range 2 {
					if r := call(t, ss, code); r.Stdout != "1000\n" {
						t.Fatalf("the session's oom_score_adj: %+v", r)
					}
				}
			}
		})
	}
	mine, err := os.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(mine)) == "1000" {
		t.Fatal("the test's own process (the runner's place) was raised too")
	}
}

// A spare that died while it waited costs nothing but the warm start: the execution is forked
// on demand.
func TestForkDeadSpareForksOnDemand(t *testing.T) {
	fk := newFork(t, 1)
	awaitSpare(t, fk)
	fk.pool.Lock()
	pid := fk.spares[0].pid
	fk.pool.Unlock()
	tree := append(proc.Descendants(pid), pid)
	proc.KillTree(pid)
	assertGone(t, tree)
	if r := run1(t, fk, "print('served')"); r.Stdout != "served\n" || r.ExitCode != 0 {
		t.Fatalf("%+v", r)
	}
	if fk.WarmHits() != 0 || fk.Fallbacks() != 0 {
		t.Errorf("warm hits %d, fallbacks %d: want the execution forked on demand", fk.WarmHits(), fk.Fallbacks())
	}
}

// Spares are replaced after an execution only when none is in flight: under load executions
// are forked on demand and no warm-up competes with them.
func TestForkRefillsOnlyWhenIdle(t *testing.T) {
	fk := newFork(t, 1)
	awaitSpare(t, fk)
	// The long execution takes the spare and runs until the test lets it end: no sleep of it
	// has to outlast the rest.
	long := make(chan api.ExecuteResult)
	go func() {
		long <- run1(t, fk, "import os, time\nopen('started', 'w').close()\nwhile not os.path.exists('release'):\n    time.sleep(0.01)")
	}()
	var started []string
	deadline := time.Now().Add(20 * time.Second)
	for len(started) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the long execution did not start")
		}
		time.Sleep(5 * time.Millisecond)
		started, _ = filepath.Glob(filepath.Join(fk.cfg.WorkDir, "x-*", "work", "started"))
	}
	if fk.WarmHits() != 1 {
		t.Fatalf("warm hits %d: the long execution did not take the spare", fk.WarmHits())
	}
	if r := run1(t, fk, "print(1)"); r.ExitCode != 0 { // forked on demand, ends first
		t.Fatalf("%+v", r)
	}
	fk.pool.Lock()
	starting, ready := fk.starting, len(fk.spares)
	fk.pool.Unlock()
	if starting != 0 || ready != 0 {
		t.Fatalf("%d spares starting and %d ready while an execution runs, want none", starting, ready)
	}
	if err := os.WriteFile(filepath.Join(filepath.Dir(started[0]), "release"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := <-long; r.ExitCode != 0 {
		t.Fatalf("%+v", r)
	}
	awaitSpare(t, fk) // idle now: replaced
	if fk.WarmHits() != 1 {
		t.Errorf("warm hits %d, want 1", fk.WarmHits())
	}
}

// When the zygote dies, executions run in spawn mode at once, and the zygote comes back.
func TestForkFallsBackAndRestarts(t *testing.T) {
	fk := newFork(t, 1)
	fk.mu.Lock()
	pid := fk.zygote.Process.Pid
	exited := fk.exited
	fk.mu.Unlock()
	if err := unix.Kill(pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	if r := run1(t, fk, "print('still served')"); r.Stdout != "still served\n" {
		t.Fatalf("no fallback: %+v", r)
	}
	if fk.Mode() != ModeSpawn {
		t.Fatalf("mode %s right after the crash, want spawn", fk.Mode())
	}
	deadline := time.Now().Add(10 * time.Second)
	for fk.Mode() != ModeFork {
		if time.Now().After(deadline) {
			t.Fatal("the zygote did not come back")
		}
		time.Sleep(200 * time.Millisecond)
		run1(t, fk, "pass") // a request after the backoff restarts it
	}
}

// With numpy and matplotlib preloaded, in a spare and forked on demand: numpy.random differs
// between executions, the warm-up left no figure open, a figure saves as PNG without a font
// cache being built, and the zygote built its cache once in its own directory.
func TestForkScientificPreload(t *testing.T) {
	py := testutil.RequireSystemPython(t)
	if out, err := exec.Command(py, "-c", "import numpy, matplotlib").CombinedOutput(); err != nil {
		t.Fatalf("numpy and matplotlib are test dependencies (make deps installs python3-numpy and python3-matplotlib): %s", out)
	}
	for _, warm := range []int{0, 1} {
		t.Run(fmt.Sprintf("warm=%d", warm), func(t *testing.T) {
			fk := newFork(t, warm, "numpy", "matplotlib")
			run := func(code string) api.ExecuteResult {
				if warm > 0 {
					awaitSpare(t, fk)
				}
				return run1(t, fk, code)
			}
			a := run("import numpy\nprint(numpy.random.random())")
			b := run("import numpy\nprint(numpy.random.random())")
			if a.ExitCode != 0 || a.Stdout == b.Stdout {
				t.Fatalf("two executions share numpy's random sequence: %+v %+v", a, b)
			}
			plot := "import sys, matplotlib.pyplot as plt\nfig = plt.figure()\nprint(fig.number, plt.get_backend())\nfig.gca().plot([1, 2])\nfig.savefig('p.png')"
			r := run(plot)
			if r.ExitCode != 0 || r.Stdout != "1 agg\n" || r.Stderr != "" {
				t.Fatalf("%+v", r)
			}
			if len(r.Files) != 1 || !strings.HasPrefix(r.Files[0].ContentBase64, b64("\x89PNG")[:4]) {
				t.Fatalf("no PNG returned: %+v", r.Files)
			}
			// The figure left open comes back as a display_data; with pyplot preloaded, show()
			// sends and closes what is open.
			if len(r.Outputs) != 1 || !strings.HasPrefix(r.Outputs[0].Data["image/png"], "iVBORw0KGgo") {
				t.Fatalf("the open figure as an output: %+v", r.Outputs)
			}
			if s := run("import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()\nprint(len(plt.get_fignums()))"); s.Stdout != "0\n" || len(s.Outputs) != 1 {
				t.Fatalf("plt.show() with pyplot preloaded: %+v", s)
			}
			cache, _ := filepath.Glob(filepath.Join(fk.cfg.WorkDir, zygoteConfigDir, "fontlist-*.json"))
			if len(cache) != 1 {
				t.Errorf("font cache in the zygote's MPLCONFIGDIR: %v", cache)
			}
			if want := int64(4 * warm); fk.WarmHits() != want {
				t.Errorf("%d executions ran in a spare, want %d", fk.WarmHits(), want)
			}
		})
	}
}

// Supervisors of finished executions run the next ones; one that the code killed, or that was
// killed with its execution at the timeout, is not used again, and the next execution runs.
func TestForkReusesSupervisors(t *testing.T) {
	fk := newFork(t, 0)
	parent := func() string {
		t.Helper()
		r := run1(t, fk, "import os\nprint(os.getppid())")
		if r.ExitCode != 0 || r.Stdout == "" {
			t.Fatalf("%+v", r)
		}
		return r.Stdout
	}
	first := parent()
	if again := parent(); again != first || fk.reused.Load() != 1 {
		t.Fatalf("supervisor %s, then %s (%d reused): want the first one again", first, again, fk.reused.Load())
	}
	// Nothing of one execution stays open in the supervisor: the code sees as many
	// descriptors each time.
	fds := func() string {
		return run1(t, fk, "import os\nprint(parent := os.getppid(), len(os.listdir('/proc/self/fd')))").Stdout
	}
	if a, b := fds(), fds(); a != b || !strings.HasPrefix(a, strings.TrimSpace(first)+" ") {
		t.Fatalf("descriptors seen by executions of supervisor %s: %q, then %q", first, a, b)
	}
	if r := run1(t, fk, "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)"); r.Reason == api.ReasonTimeout {
		t.Fatalf("%+v", r)
	}
	afterKill := parent()
	if afterKill == first {
		t.Fatal("a supervisor killed by its code ran the next execution")
	}
	lim := defaultLimits
	lim.Timeout = time.Second
	res, err := fk.Execute(context.Background(), Request{ID: "t", Code: "import time\ntime.sleep(60)", Limits: lim}, nil)
	if err != nil || res.Reason != api.ReasonTimeout {
		t.Fatalf("%+v %v", res, err)
	}
	if next := parent(); next == afterKill {
		t.Fatal("the supervisor killed at the timeout ran the next execution")
	}
}

// Kept supervisors go once no execution has run for RestAfter, and executions run on.
func TestForkLetsKeptSupervisorsGoAtRest(t *testing.T) {
	fk := newFork(t, 0)
	fk.cfg.RestAfter = 500 * time.Millisecond
	run1(t, fk, "print(1)")
	fk.pool.Lock()
	kept := len(fk.idle)
	var pid int
	if kept == 1 {
		pid = fk.idle[0].pid
	}
	fk.pool.Unlock()
	if kept != 1 {
		t.Fatalf("%d kept supervisors after an execution, want 1", kept)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		fk.pool.Lock()
		kept = len(fk.idle)
		fk.pool.Unlock()
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if kept == 0 && (err != nil || bytes.Contains(b, []byte(") Z"))) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d kept supervisors, supervisor %d still there, at rest", kept, pid)
		}
	}
	if r := run1(t, fk, "print(2)"); r.Stdout != "2\n" {
		t.Fatalf("%+v", r)
	}
}

// Once no execution has run for RestAfter the executor rests: its warm spare is replaced by a
// cold one, which has not run the warm-up and runs the next execution; the spare that replaces
// that one warms up again.
func TestForkRests(t *testing.T) {
	py := testutil.RequireSystemPython(t)
	marks := filepath.Join(t.TempDir(), "warm-ups")
	fk, err := NewFork(ForkConfig{SpawnConfig: SpawnConfig{Python: py, WorkDir: t.TempDir(), Path: "/usr/bin:/bin", Log: logr.Discard()},
		Warm: 1, WarmupCode: fmt.Sprintf("open(%q, 'a').write('w')", marks), RestAfter: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := fk.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fk.Close)
	warmUps := func() int {
		b, _ := os.ReadFile(marks)
		return len(b)
	}
	// spare waits for a ready spare, then says whether it is cold.
	spare := func() bool {
		t.Helper()
		awaitSpare(t, fk)
		fk.pool.Lock()
		defer fk.pool.Unlock()
		return fk.spares[0].cold
	}
	if spare() || warmUps() != 1 {
		t.Fatalf("the first spare: want it warmed up, have %d warm-ups", warmUps())
	}
	if r := run1(t, fk, "print(1)"); r.Stdout != "1\n" || fk.WarmHits() != 1 {
		t.Fatalf("in the warm spare: %+v, %d warm hits", r, fk.WarmHits())
	}
	if spare() || warmUps() != 2 {
		t.Fatalf("the spare after an execution: want it warmed up, have %d warm-ups", warmUps())
	}
	for deadline := time.Now().Add(10 * time.Second); !spare(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no cold spare after RestAfter without executions")
		}
	}
	if warmUps() != 2 {
		t.Fatalf("%d warm-ups: the cold spare warmed up", warmUps())
	}
	if r := run1(t, fk, "print(2)"); r.Stdout != "2\n" || fk.WarmHits() != 2 {
		t.Fatalf("in the cold spare: %+v, %d warm hits", r, fk.WarmHits())
	}
	if spare() || warmUps() != 3 {
		t.Fatalf("the spare after the rest: want it warmed up, have %d warm-ups", warmUps())
	}
}

// A spare still warming up when the executor rests is replaced by a cold one once ready.
func TestForkRestsWhileASpareWarmsUp(t *testing.T) {
	py := testutil.RequireSystemPython(t)
	fk, err := NewFork(ForkConfig{SpawnConfig: SpawnConfig{Python: py, WorkDir: t.TempDir(), Path: "/usr/bin:/bin", Log: logr.Discard()},
		Warm: 1, WarmupCode: "import time\ntime.sleep(1)", RestAfter: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := fk.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fk.Close)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		fk.pool.Lock()
		cold := len(fk.spares) == 1 && fk.spares[0].cold && fk.resting
		fk.pool.Unlock()
		if cold {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no cold spare after the rest")
		}
	}
}

// A supervisor kept for the next execution that something stopped (SIGSTOP) is resumed when it
// takes one: the execution does not wait for its timeout.
func TestForkResumesAStoppedSupervisor(t *testing.T) {
	fk := newFork(t, 0)
	run1(t, fk, "print(1)")
	fk.pool.Lock()
	if len(fk.idle) != 1 {
		fk.pool.Unlock()
		t.Fatalf("%d idle supervisors, want 1", len(fk.idle))
	}
	pid := fk.idle[0].pid
	fk.pool.Unlock()
	if err := unix.Kill(pid, unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:])); len(f) > 0 && f[0] == "T" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the supervisor did not stop")
		}
		time.Sleep(5 * time.Millisecond)
	}
	lim := defaultLimits
	lim.Timeout = 5 * time.Second
	res, err := fk.Execute(context.Background(), Request{ID: "x", Code: "print(2)", Limits: lim}, nil)
	if err != nil || res.Reason != api.ReasonExit || res.Stdout != "2\n" {
		t.Fatalf("%+v %v", res, err)
	}
	if fk.reused.Load() < 1 {
		t.Fatal("the execution did not go to the kept supervisor")
	}
}
