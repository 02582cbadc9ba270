package executor

import (
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pyexec/pyexec/internal/confine"
	"github.com/pyexec/pyexec/pkg/api"
)

// sessionModes are the session starters under test, confined as far as the kernel allows.
func sessionModes(t *testing.T) map[string]LocalStarter {
	t.Helper()
	out := map[string]LocalStarter{}
	for name, ex := range modesWith(t, Isolation{Kernel: confine.Probe(confine.NoCap)}) {
		if name != modeForkWarm {
			out[name] = ex.(LocalStarter)
		}
	}
	return out
}

func newSession(t *testing.T, st LocalStarter, req SessionRequest) *LocalSession {
	t.Helper()
	if req.Limits == (Limits{}) {
		req.Limits = defaultLimits
	}
	ss, err := st.NewSession(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ss.Close)
	return ss
}

func call(t *testing.T, ss *LocalSession, code string, edit ...func(*Request)) api.ExecuteResult {
	t.Helper()
	req := Request{ID: "call", Code: code, Limits: defaultLimits}
	for _, e := range edit {
		e(&req)
	}
	res, err := ss.Execute(context.Background(), req, nil)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func resultText(res api.ExecuteResult) string {
	for _, o := range res.Outputs {
		if o.Type == api.OutputExecuteResult {
			return o.Data["text/plain"]
		}
	}
	return ""
}

// A session keeps its globals, imports, environment and files from one call to the next;
// each call returns only the files it created or changed, and its own output.
func TestSessionKeepsState(t *testing.T) {
	for mode, st := range sessionModes(t) {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ss := newSession(t, st, SessionRequest{ID: "s", Env: map[string]string{"START": "yes"},
				Files: []File{{Path: "in.txt", Data: []byte("41")}}})
			res := call(t, ss, "import json\nx = int(open('in.txt').read()) + 1\nopen('a.txt', 'w').write('a')\nprint('one')\nimport os\nos.environ['LATER'] = 'kept'\nos.environ['START']")
			if res.ExitCode != 0 || res.Stdout != "one\n" || resultText(res) != "'yes'" {
				t.Fatalf("first call: %+v", res)
			}
			if len(res.Files) != 1 || res.Files[0].Path != "a.txt" {
				t.Fatalf("first call files: %+v", res.Files)
			}
			res = call(t, ss, "open('b.txt', 'w').write(str(x))\nprint(json.dumps(x), os.environ['LATER'], os.environ['CALL'])\nx", func(r *Request) {
				r.Env = map[string]string{"CALL": "two"}
				r.Files = []File{{Path: "sub/c.txt", Data: []byte("c")}}
			})
			if res.ExitCode != 0 || res.Stdout != "42 kept two\n" || resultText(res) != "42" {
				t.Fatalf("second call: %+v", res)
			}
			if len(res.Files) != 1 || res.Files[0].Path != "b.txt" {
				t.Fatalf("second call returned %+v; want only b.txt (a.txt is unchanged, sub/c.txt is an input)", res.Files)
			}
			res = call(t, ss, "print(open('a.txt').read() + open('sub/c.txt').read())\nraise ValueError('boom')")
			if res.ExitCode != 1 || res.Stdout != "ac\n" || !strings.Contains(res.Stderr, "ValueError: boom") || !strings.Contains(res.Stderr, "<cell-3>") {
				t.Fatalf("third call: %+v", res)
			}
			// An exception and SystemExit end the call, not the session.
			res = call(t, ss, "import sys\nsys.exit(3)")
			if res.ExitCode != 3 || res.SessionLost {
				t.Fatalf("sys.exit: %+v", res)
			}
			if res := call(t, ss, "x"); resultText(res) != "42" {
				t.Fatalf("after sys.exit: %+v", res)
			}
		})
	}
}

// Two sessions see neither each other's globals nor each other's files.
func TestSessionsAreIsolated(t *testing.T) {
	for mode, st := range sessionModes(t) {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			a := newSession(t, st, SessionRequest{ID: "a"})
			b := newSession(t, st, SessionRequest{ID: "b"})
			call(t, a, "secret = 'a-only'\nopen('a.txt', 'w').write('a')")
			res := call(t, b, "print('secret' in globals())")
			if res.Stdout != "False\n" {
				t.Fatalf("b sees a's globals: %+v", res)
			}
			res = call(t, b, "import os\nprint(os.getcwd())\nprint(os.listdir('.'))")
			if strings.Contains(res.Stdout, "a.txt") {
				t.Fatalf("b sees a's files: %+v", res)
			}
			aWork := a.work
			res = call(t, b, "import os\ntry:\n    print(open("+pyQuote(filepath.Join(aWork, "a.txt"))+").read())\nexcept OSError as e:\n    print(type(e).__name__)")
			if confine.Probe(confine.NoCap).LandlockABI > 0 && res.Stdout != "PermissionError\n" {
				t.Fatalf("b read a's file by its path: %+v", res)
			}
		})
	}
}

func pyQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", "\\'") + "'" }

// A timeout interrupts the code (KeyboardInterrupt) and keeps the session when it stops; code
// that does not stop is killed with its session, and the result says so.
func TestSessionTimeoutInterruptsThenKills(t *testing.T) {
	for mode, st := range sessionModes(t) {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ss := newSession(t, st, SessionRequest{ID: "t"})
			call(t, ss, "kept = 7")
			res := call(t, ss, "import time\nwhile True:\n    time.sleep(0.01)", func(r *Request) { r.Timeout = 300 * time.Millisecond })
			if res.Reason != api.ReasonTimeout || !res.TimedOut || res.SessionLost || !strings.Contains(res.Stderr, "KeyboardInterrupt") {
				t.Fatalf("interrupted call: %+v", res)
			}
			if res := call(t, ss, "kept"); resultText(res) != "7" {
				t.Fatalf("state after the interrupt: %+v", res)
			}
			res = call(t, ss, "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    time.sleep(0.01)", func(r *Request) { r.Timeout = 300 * time.Millisecond })
			if res.Reason != api.ReasonTimeout || !res.SessionLost || res.Signal != "SIGKILL" {
				t.Fatalf("a call that ignores the interrupt: %+v", res)
			}
			if _, err := ss.Execute(context.Background(), Request{ID: "after", Code: "kept", Limits: defaultLimits}, nil); !errors.Is(err, ErrSessionEnded) {
				t.Fatalf("a call after the session was lost: %v", err)
			}
			if !ss.Ended() {
				t.Fatal("Ended() is false after the session was lost")
			}
		})
	}
}

// One call at a time: a second one while the first runs gets ErrSessionBusy.
func TestSessionOneCallAtATime(t *testing.T) {
	st := sessionModes(t)[ModeFork]
	ss := newSession(t, st, SessionRequest{ID: "busy"})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if res, err := ss.Execute(context.Background(), Request{ID: "first", Code: "import time\nopen('started', 'w').close()\ntime.sleep(1)", Limits: defaultLimits}, nil); err != nil || res.ExitCode != 0 {
			t.Errorf("the first call: %+v, %v", res, err)
		}
	}()
	deadline := time.Now().Add(20 * time.Second)
	for _, err := os.Stat(filepath.Join(ss.work, "started")); err != nil; _, err = os.Stat(filepath.Join(ss.work, "started")) {
		if time.Now().After(deadline) {
			t.Fatal("the first call never started")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := ss.Execute(context.Background(), Request{ID: "second", Code: "1", Limits: defaultLimits}, nil); !errors.Is(err, ErrSessionBusy) {
		t.Fatalf("a second call while the first runs: %v, want ErrSessionBusy", err)
	}
	wg.Wait()
	if res := call(t, ss, "2"); resultText(res) != "2" {
		t.Fatalf("after the busy call: %+v", res)
	}
}

// The memory limit holds for the session's life: a MemoryError ends the call, not the session.
// The interpreter exiting ends the session and the result says so. Processes the code starts
// end with the call.
func TestSessionLimitsAndEnd(t *testing.T) {
	for mode, st := range sessionModes(t) {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			lim := defaultLimits
			lim.MemoryLimitMB = 256
			ss := newSession(t, st, SessionRequest{ID: "m", Limits: lim})
			// An allocation past the address-space backstop is a MemoryError the session survives.
			res := call(t, ss, "x = bytearray(64 << 30)")
			if res.Reason != api.ReasonMemoryLimit || res.SessionLost {
				t.Fatalf("allocation over the limit: %+v", res)
			}
			res = call(t, ss, "import subprocess\np = subprocess.Popen(['sleep', '60'])\nprint(p.pid)")
			pid := strings.TrimSpace(res.Stdout)
			if res.ExitCode != 0 || pid == "" {
				t.Fatalf("popen: %+v", res)
			}
			if _, err := os.Stat("/proc/" + pid); err == nil {
				if b, _ := os.ReadFile("/proc/" + pid + "/stat"); !strings.Contains(string(b), ") Z") {
					t.Fatalf("the process the call started (%s) outlived the call", pid)
				}
			}
			res = call(t, ss, "import os\nos._exit(5)")
			if !res.SessionLost || res.ExitCode != 5 {
				t.Fatalf("os._exit: %+v", res)
			}
			if _, err := ss.Execute(context.Background(), Request{ID: "after", Code: "1", Limits: defaultLimits}, nil); !errors.Is(err, ErrSessionEnded) {
				t.Fatalf("a call after the interpreter exited: %v", err)
			}
		})
	}
}

// A call shares the execution's lifecycle: its stdin reaches the code, its output streams as
// it comes, an output cap or the caller's cancellation interrupts it (the session lives on,
// its state kept), and the result says why it ended.
func TestSessionCallLifecycle(t *testing.T) {
	for mode, st := range sessionModes(t) {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ss := newSession(t, st, SessionRequest{ID: "l"})
			call(t, ss, "kept = 7")

			rec := &recorder{}
			res, err := ss.Execute(context.Background(), Request{ID: "stream", Code: "import sys\nprint(sys.stdin.read())\nprint('err', file=sys.stderr)",
				Stdin: []byte("from stdin"), Limits: defaultLimits}, rec)
			if err != nil || res.Stdout != "from stdin\n" || res.Stderr != "err\n" || res.Reason != api.ReasonExit {
				t.Fatalf("stdin and streams: %+v %v", res, err)
			}
			var streamed strings.Builder
			for _, ev := range rec.events {
				if data, ok := strings.CutPrefix(ev, api.EventStdout+":"); ok {
					streamed.WriteString(data)
				}
			}
			if streamed.String() != res.Stdout {
				t.Fatalf("streamed stdout %q, result %q", streamed.String(), res.Stdout)
			}

			res = call(t, ss, "while True:\n    print('y' * 100)", func(r *Request) { r.MaxOutputBytes = 1000 })
			if res.Reason != api.ReasonOutputLimit || !res.StdoutTruncated || len(res.Stdout) != 1000 || res.TimedOut || res.SessionLost {
				t.Fatalf("a call over the output cap: %+v", res)
			}

			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			res, err = ss.Execute(ctx, Request{ID: "cancel", Code: "import time\nwhile True:\n    time.sleep(0.01)", Limits: defaultLimits}, nil)
			if err != nil || res.Reason != api.ReasonSignal || res.TimedOut || res.SessionLost || !strings.Contains(res.Stderr, "KeyboardInterrupt") {
				t.Fatalf("a cancelled call: %+v %v", res, err)
			}
			if res := call(t, ss, "kept"); resultText(res) != "7" {
				t.Fatalf("state after the interrupted calls: %+v", res)
			}
		})
	}
}

// Rich outputs come back per call; a figure is a PNG that decodes.
func TestSessionOutputs(t *testing.T) {
	st := sessionModes(t)[ModeSpawn]
	ss := newSession(t, st, SessionRequest{ID: "o"})
	res := call(t, ss, "display('first')\n1 + 1")
	if len(res.Outputs) != 2 || res.Outputs[0].Type != api.OutputDisplayData || resultText(res) != "2" {
		t.Fatalf("outputs: %+v", res.Outputs)
	}
	res = call(t, ss, "None")
	if len(res.Outputs) != 0 {
		t.Fatalf("the second call re-sent the first's outputs: %+v", res.Outputs)
	}
	res = call(t, ss, "import matplotlib.pyplot as plt\nplt.plot([1, 2], [2, 1])\nplt.show()\n_ = plt.plot([0, 1])")
	if res.ExitCode != 0 || len(res.Outputs) != 2 {
		t.Fatalf("want two figures, one at plt.show() and one at the end: %+v", res)
	}
	for _, o := range res.Outputs {
		png, err := base64.StdEncoding.DecodeString(o.Data["image/png"])
		if err != nil || !strings.HasPrefix(string(png), "\x89PNG\r\n") {
			t.Fatalf("a figure is not a PNG (%v): %.40q", err, png)
		}
	}
	if res := call(t, ss, "plt.get_fignums()"); resultText(res) != "[]" {
		t.Fatalf("figures stay open after their call: %+v", res)
	}
}

// Close kills the session's processes and removes its directory.
func TestSessionClose(t *testing.T) {
	st := sessionModes(t)[ModeFork]
	ss := newSession(t, st, SessionRequest{ID: "c"})
	call(t, ss, "1")
	sup, dir := ss.sup, ss.dir
	ss.Close()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("the session's directory is still there: %v", err)
	}
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(sup) + "/stat"); err == nil && !strings.Contains(string(b), ") Z") {
		t.Fatalf("the supervisor %d still runs after Close", sup)
	}
	if _, err := ss.Execute(context.Background(), Request{ID: "after", Code: "1", Limits: defaultLimits}, nil); !errors.Is(err, ErrSessionEnded) {
		t.Fatalf("a call after Close: %v", err)
	}
}

// A session is started ahead of time once the first session has been created, not before. It
// is taken by a request like it, which gets its files at once and its env with the first call;
// another is started for the next. A request unlike it (another memory limit) gets a session of
// its own.
func TestSessionFromSpare(t *testing.T) {
	fk := sessionModes(t)[ModeFork].(*Fork)
	fk.WarmSession(SessionRequest{Limits: defaultLimits})
	time.Sleep(time.Second)
	fk.sessions.mu.Lock()
	early := fk.sessions.spare != nil || fk.sessions.starting
	fk.sessions.mu.Unlock()
	if early {
		t.Fatal("a session was started ahead of time before the first one was created")
	}
	newSession(t, fk, SessionRequest{ID: "first"})
	spare := func() *LocalSession {
		deadline := time.Now().Add(20 * time.Second)
		for {
			fk.sessions.mu.Lock()
			ss := fk.sessions.spare
			fk.sessions.mu.Unlock()
			if ss != nil {
				return ss
			}
			if time.Now().After(deadline) {
				t.Fatal("no session was started ahead of time")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	first := spare()
	ss := newSession(t, fk, SessionRequest{ID: "taken", Env: map[string]string{"FROM": "request"}, Files: []File{{Path: "in.txt", Data: []byte("input")}}})
	if ss != first {
		t.Fatal("the request did not take the session started ahead of time")
	}
	res := call(t, ss, "import os\nprint(os.environ['FROM'], open('in.txt').read())\nleft = 1")
	if res.Stdout != "request input\n" {
		t.Fatalf("the taken session's first call: %+v", res)
	}
	if next := spare(); next == first {
		t.Fatal("no new session was started ahead of time")
	} else if res := call(t, newSession(t, fk, SessionRequest{ID: "second"}), "print('left' in globals(), os.listdir('.') if 'os' in globals() else [])"); res.Stdout != "False []\n" {
		t.Fatalf("the next spare saw the first session's state: %+v", res)
	}
	lim := defaultLimits
	lim.MemoryLimitMB = 300
	other := newSession(t, fk, SessionRequest{ID: "other", Limits: lim})
	if other == spare() {
		t.Fatal("a request with another memory limit took the spare")
	}
}

// A signal to the server (the Go runtime preempts goroutines with SIGURG) must not make a live
// session look ended: poll(2) answers EINTR then.
func TestSessionAliveUnderSignals(t *testing.T) {
	ss := newSession(t, sessionModes(t)[ModeFork], SessionRequest{ID: "alive"})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				_ = syscall.Kill(os.Getpid(), syscall.SIGURG)
			}
		}
	}()
	ended := 0
	for range 200000 {
		if ss.Ended() {
			ended++
		}
	}
	close(stop)
	wg.Wait()
	if ended > 0 {
		t.Fatalf("a live session looked ended %d times in 200000", ended)
	}
	if res := call(t, ss, "print('alive')"); res.Stdout != "alive\n" {
		t.Fatalf("%+v", res)
	}
}

// What the code left at an input file's path is no trap for the server: a FIFO (read or not)
// and a symlink are refused for the request's fault, at once, and the session goes on.
func TestSessionInputFileInTheWay(t *testing.T) {
	ss := newSession(t, sessionModes(t)[ModeFork], SessionRequest{ID: "way"})
	call(t, ss, "import os, threading\nos.mkfifo('fifo')\nos.mkfifo('read')\nos.symlink('/etc/passwd', 'link')\n"+
		"threading.Thread(target=lambda: open('read').read(), daemon=True).start()")
	for _, name := range []string{"fifo", "read", "link"} {
		done := make(chan error, 1)
		go func() {
			_, err := ss.Execute(context.Background(), Request{ID: name, Code: "1", Limits: defaultLimits, Files: []File{{Path: name, Data: []byte("x")}}}, nil)
			done <- err
		}()
		select {
		case err := <-done:
			var fileErr *FileError
			if !errors.As(err, &fileErr) {
				t.Errorf("an input file over %s: %v, want a FileError", name, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("an input file over %s hangs the call", name)
		}
	}
	if b, err := os.ReadFile("/etc/passwd"); err != nil || string(b) == "x" {
		t.Fatalf("the write followed the symlink to /etc/passwd: %q %v", b, err)
	}
	if res := call(t, ss, "print('goes on')"); res.Stdout != "goes on\n" {
		t.Fatalf("after the refusals: %+v", res)
	}
}

// A session started ahead of time is not taken once the packages tree has changed (an install):
// the new session must see the new tree.
func TestSpareSessionFollowsThePackagesTree(t *testing.T) {
	fk := sessionModes(t)[ModeFork].(*Fork)
	fk.WarmSession(SessionRequest{Limits: defaultLimits})
	newSession(t, fk, SessionRequest{ID: "first"}) // the one ahead of time starts after it
	deadline := time.Now().Add(20 * time.Second)
	var spare *LocalSession
	for spare == nil {
		fk.sessions.mu.Lock()
		spare = fk.sessions.spare
		fk.sessions.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatal("no session was started ahead of time")
		}
		time.Sleep(5 * time.Millisecond)
	}
	pkgs := fk.cfg.PackagesDir
	if err := os.MkdirAll(filepath.Join(pkgs, "trees", "2"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pkgs, "trees", "2", "fresh_pkg.py"), []byte("VALUE = 'new'\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("trees/2", filepath.Join(pkgs, "current.new")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(pkgs, "current.new"), filepath.Join(pkgs, "current")); err != nil {
		t.Fatal(err)
	}
	ss := newSession(t, fk, SessionRequest{ID: "after-install"})
	if ss == spare {
		t.Fatal("the session started before the install was taken")
	}
	if res := call(t, ss, "import fresh_pkg\nprint(fresh_pkg.VALUE)"); res.Stdout != "new\n" {
		t.Fatalf("the new tree in a session created after the install: %+v", res)
	}
}

// What the interpreter says on its socket is the code's word: a message nested too deep for
// the supervisor's JSON decoder (a RecursionError, not a ValueError) is dropped like any other
// that is not an answer, and does not end the supervisor, nor the session with it.
func TestSessionSupervisorSurvivesDeepJSON(t *testing.T) {
	code := "import sys\nf = sys._getframe()\nwhile 'conn' not in f.f_locals:\n    f = f.f_back\n" +
		"f.f_locals['conn'].send(b'[' * 100000)\nf.f_locals['conn'].send(b'{\"call\": 0, \"x\": ' + b'[' * 100000)\nprint('still here')\n"
	for mode, st := range sessionModes(t) {
		t.Run(mode, func(t *testing.T) {
			ss := newSession(t, st, SessionRequest{ID: "deep"})
			if res := call(t, ss, code); res.SessionLost || res.ExitCode != 0 || res.Stdout != "still here\n" {
				t.Fatalf("the session's supervisor ended: %+v", res)
			}
			if res := call(t, ss, "print('alive')"); res.Stdout != "alive\n" {
				t.Fatalf("next call: %+v", res)
			}
		})
	}
}

// Each call gets working standard streams whatever the last call's code did to them: closed,
// replaced, detached, reconfigured, patched or deleted them.
func TestSessionStreamsSurviveTheCode(t *testing.T) {
	for name, st := range sessionModes(t) {
		t.Run(name, func(t *testing.T) {
			ss := newSession(t, st, SessionRequest{ID: "streams"})
			steps := []struct{ code, stdout, stderr string }{
				{"import sys\nprint('one')\nsys.stderr.write('e1\\n')", "one\n", "e1\n"},
				{"print('two')\nsys.stderr.write('e2\\n')", "two\n", "e2\n"},
				{"import sys\nprint('three')\nsys.stdout.close()\nsys.stderr.close()", "three\n", ""},
				{"import sys\nprint('four')\nsys.stderr.write('e4\\n')", "four\n", "e4\n"},
				{"import io, sys\nkept = sys.stdout\nsys.stdout = io.StringIO()\nprint('lost')", "", ""},
				{"import sys\nprint('six', sys.stdout is not kept)", "six True\n", ""},
				{"print('seven')", "seven\n", ""},
				{"import sys\nprint('eight')\nsys.stdout.detach()\nsys.stderr.detach()", "eight\n", ""},
				{"print('nine')", "nine\n", ""},
				{"import sys\nsys.stdout.reconfigure(encoding='ascii', errors='strict')\nsys.stdout.write = lambda s: 0", "", ""},
				{"print('été')", "été\n", ""},
				{"import sys\ndel sys.stdout, sys.stderr", "", ""},
				{"print('twelve')", "twelve\n", ""},
			}
			for i, s := range steps {
				if r := call(t, ss, s.code); r.Stdout != s.stdout || r.Stderr != s.stderr || r.ExitCode != 0 {
					t.Fatalf("call %d: stdout %q stderr %q exit %d; want %q, %q", i+1, r.Stdout, r.Stderr, r.ExitCode, s.stdout, s.stderr)
				}
			}
		})
	}
}
