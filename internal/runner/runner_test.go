package runner

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"

	"github.com/pyexec/pyexec/internal/confine"
	"github.com/pyexec/pyexec/internal/executor"
	"github.com/pyexec/pyexec/internal/testutil"
	"github.com/pyexec/pyexec/pkg/api"
)

// TestMain lets the test binary be a runner (PYEXEC_RUNNER_TEST): "child" on fd 3, "dial"
// dialing PYEXEC_RUNNER_SOCKET as a server of uid PYEXEC_RUNNER_SERVER_UID.
func TestMain(m *testing.M) {
	switch os.Getenv("PYEXEC_RUNNER_TEST") {
	case "child":
		f := os.NewFile(3, "control")
		c, err := net.FileConn(f)
		if err != nil {
			os.Exit(3)
		}
		os.Exit(exitOf(Run(context.Background(), Options{Control: c.(*net.UnixConn), ServerUID: -1, Log: stderrLog()})))
	case "dial":
		uid, _ := strconv.Atoi(os.Getenv("PYEXEC_RUNNER_SERVER_UID"))
		os.Exit(exitOf(Run(context.Background(), Options{Socket: os.Getenv("PYEXEC_RUNNER_SOCKET"), ServerUID: uid, Log: stderrLog()})))
	}
	os.Exit(m.Run())
}

func exitOf(err error) int {
	if err != nil {
		fmt.Fprintln(os.Stderr, "runner:", err)
		return 1
	}
	return 0
}

func stderrLog() logr.Logger {
	return funcr.New(func(prefix, args string) { fmt.Fprintln(os.Stderr, prefix, args) }, funcr.Options{})
}

// syncLog keeps the lines a logger writes, for tests that look for one.
type syncLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *syncLog) logger() logr.Logger {
	return funcr.New(func(prefix, args string) {
		l.mu.Lock()
		l.lines = append(l.lines, prefix+" "+args)
		l.mu.Unlock()
	}, funcr.Options{})
}

func (l *syncLog) has(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.ContainsFunc(l.lines, func(line string) bool { return strings.Contains(line, s) })
}

var testLimits = executor.Limits{Timeout: 20 * time.Second, MemoryLimitMB: 1024, MaxOutputBytes: 1 << 20, MaxFileBytes: 8 << 20, MaxFilesOut: 16}

// clientConfig is a client's config for a runner in mode, its work root in a directory every
// user may reach.
func clientConfig(t testing.TB, mode string, warm int) ClientConfig {
	t.Helper()
	py := testutil.RequireSystemPython(t)
	root := t.TempDir()
	for d := root; d != os.TempDir() && d != "/"; d = filepath.Dir(d) { // a runner of its own uid reaches it
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return ClientConfig{
		Runner: Config{Python: py, Mode: mode, Warm: warm, Supervisors: 2, WorkDir: filepath.Join(root, "work"),
			PackagesDir: filepath.Join(root, "packages"), Path: "/usr/bin:/bin", Preload: []string{"json"}},
		Kernel:   confine.Probe(confine.NoCap),
		GID:      -1,
		MaxFrame: MaxFrameFor(1<<20, 32<<20, 8<<20, 10<<20),
		Log:      stderrLog(),
	}
}

// childClient is a client whose runner is this test binary started as a child of the test.
func childClient(t testing.TB, cfg ClientConfig) (*Client, *childProcs) {
	t.Helper()
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	procs := &childProcs{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.RunChild(ctx, Child{
			Command: func() *exec.Cmd {
				cmd := exec.Command(os.Args[0])
				cmd.Env = []string{"PYEXEC_RUNNER_TEST=child", "PATH=/usr/bin:/bin"}
				cmd.Stderr = os.Stderr
				cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
				return cmd
			},
			Start: func(cmd *exec.Cmd) error {
				err := cmd.Start()
				if err == nil {
					procs.add(cmd.Process.Pid)
				}
				return err
			},
			Done: func(int) {},
		})
	}()
	t.Cleanup(func() {
		c.Close()
		cancel()
		<-done
	})
	waitReady(t, c)
	return c, procs
}

// childProcs are the runners started so far, latest last.
type childProcs struct {
	mu   sync.Mutex
	pids []int
}

func (p *childProcs) add(pid int) {
	p.mu.Lock()
	p.pids = append(p.pids, pid)
	p.mu.Unlock()
}

func (p *childProcs) latest() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pids[len(p.pids)-1]
}

func waitReady(t testing.TB, c *Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatalf("no runner: %v", err)
	}
}

func run(t *testing.T, c executor.Executor, req executor.Request) api.ExecuteResult {
	t.Helper()
	if req.Limits == (executor.Limits{}) {
		req.Limits = testLimits
	}
	res, err := c.Execute(context.Background(), req, nil)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// dirsOf lists the execution and session directories in the work root.
func dirsOf(t *testing.T, c *Client) []string {
	t.Helper()
	entries, err := os.ReadDir(c.cfg.Runner.WorkDir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if executor.IsDirName(e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out
}

// streamed collects what an execution streams.
type streamed struct {
	mu     sync.Mutex
	stdout strings.Builder
	events int
}

func (s *streamed) Write(stream string, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events++
	if stream == api.EventStdout {
		s.stdout.Write(data)
	}
}

// Through the protocol an execution is what it was in process: its output, files, env, stdin
// and exit; streamed as it runs; and killed, with its result, when its caller cancels. Its
// directory is the server's, and gone after it.
func TestExecutionsThroughTheRunner(t *testing.T) {
	for _, mode := range []string{executor.ModeFork, executor.ModeSpawn} {
		t.Run(mode, func(t *testing.T) {
			c, _ := childClient(t, clientConfig(t, mode, 0))
			res := run(t, c, executor.Request{ID: "a", Code: "import os, sys\nprint(os.environ['A'], sys.stdin.read())\nopen('out.txt', 'w').write('x' * 3)\nsys.exit(4)",
				Env: map[string]string{"A": "env"}, Stdin: []byte("in"), Files: []executor.File{{Path: "d/in.txt", Data: []byte("i")}}})
			if res.Stdout != "env in\n" || res.ExitCode != 4 || res.Reason != api.ReasonExit || len(res.Files) != 1 || res.Files[0].Path != "out.txt" || res.ID != "a" {
				t.Fatalf("%+v", res)
			}

			var out streamed
			res, err := c.Execute(context.Background(), executor.Request{ID: "s", Code: "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.05)", Limits: testLimits}, &out)
			if err != nil || res.Stdout != "0\n1\n2\n" || out.stdout.String() != res.Stdout || out.events < 2 {
				t.Fatalf("streamed: %+v %v, events %d %q", res, err, out.events, out.stdout.String())
			}

			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(500*time.Millisecond, cancel)
			res, err = c.Execute(ctx, executor.Request{ID: "c", Code: "import time\nprint('before', flush=True)\ntime.sleep(60)", Limits: testLimits}, nil)
			if err != nil || res.Reason != api.ReasonSignal || res.Stdout != "before\n" {
				t.Fatalf("cancelled: %+v %v", res, err)
			}
			// The channel that carried the Cancel is not reused: the next execution is intact.
			if res := run(t, c, executor.Request{ID: "n", Code: "print(6*7)"}); res.Stdout != "42\n" {
				t.Fatalf("after the cancel: %+v", res)
			}
			for deadline := time.Now().Add(5 * time.Second); len(dirsOf(t, c)) != 0; time.Sleep(20 * time.Millisecond) {
				if time.Now().After(deadline) { // removed after the result: not at once
					t.Fatalf("directories left in the work root: %v", dirsOf(t, c))
				}
			}
		})
	}
}

// Executions run at once on channels of their own.
func TestConcurrentExecutions(t *testing.T) {
	c, _ := childClient(t, clientConfig(t, executor.ModeFork, 0))
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := c.Execute(context.Background(), executor.Request{ID: strconv.Itoa(i), Code: fmt.Sprintf("print(%d)", i), Limits: testLimits}, nil)
			if err == nil && res.Stdout != fmt.Sprintf("%d\n", i) {
				err = fmt.Errorf("execution %d got %q", i, res.Stdout)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// A session keeps its state across calls; its files are read through the runner; closing it
// empties and removes its directory. One started ahead of time is taken in its own directory,
// and the one the server made goes to the next one started ahead of time.
func TestSessionsThroughTheRunner(t *testing.T) {
	c, _ := childClient(t, clientConfig(t, executor.ModeFork, 1))
	c.WarmSession(executor.SessionRequest{Limits: testLimits})
	spare := dirsOf(t, c)
	if len(spare) != 1 {
		t.Fatalf("the session started ahead of time: %v", spare)
	}
	var ss executor.Session
	var err error
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		ss, err = c.NewSession(context.Background(), executor.SessionRequest{ID: "s-1", Limits: testLimits, Files: []executor.File{{Path: "in.txt", Data: []byte("hello")}}})
		if err != nil {
			t.Fatal(err)
		}
		if rs := ss.(*remoteSession); filepath.Base(rs.fam.dir) == spare[0] {
			break // it took the spare, once that was ready
		}
		ss.Close()
		if time.Now().After(deadline) {
			t.Fatal("no session came from the one started ahead of time")
		}
	}
	defer ss.Close()
	if res, err := ss.Execute(context.Background(), executor.Request{ID: "1", Code: "x = open('in.txt').read()\nopen('out.txt', 'w').write(x.upper())", Limits: testLimits}, nil); err != nil || res.ExitCode != 0 {
		t.Fatalf("%+v %v", res, err)
	}
	if res, err := ss.Execute(context.Background(), executor.Request{ID: "2", Code: "print(x)", Limits: testLimits}, nil); err != nil || res.Stdout != "hello\n" {
		t.Fatalf("the state of the last call: %+v %v", res, err)
	}
	files, err := ss.Files()
	if err != nil || len(files.Files) != 2 || files.Total != 2 {
		t.Fatalf("files %+v %v", files, err)
	}
	if data, err := readFile(ss, "out.txt", 100); err != nil || string(data) != "HELLO" {
		t.Fatalf("out.txt: %q %v", data, err)
	}
	if _, err := readFile(ss, "out.txt", 2); !errors.Is(err, executor.ErrFileTooLarge) {
		t.Errorf("a file over the limit: %v", err)
	}
	if _, err := readFile(ss, "missing", 100); !errors.Is(err, executor.ErrFileNotFound) {
		t.Errorf("a missing file: %v", err)
	}
	// A file's body left unread: its channel is not the next request's.
	body, err := ss.OpenFile("out.txt", 100)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(io.Discard, body, 2); err != nil {
		t.Fatal(err)
	}
	body.Close()
	for range 3 {
		if data, err := readFile(ss, "out.txt", 100); err != nil || string(data) != "HELLO" {
			t.Fatalf("out.txt after a body left unread: %q %v", data, err)
		}
	}
	if ss.Memory() <= 0 || ss.Ended() {
		t.Errorf("a live session: memory %d, ended %v", ss.Memory(), ss.Ended())
	}
	// The session's directory and the next spare's are all the work root holds.
	if dirs := dirsOf(t, c); len(dirs) != 2 {
		t.Errorf("directories: %v", dirs)
	}
	ss.Close()
	if !ss.Ended() {
		t.Error("a closed session has not ended")
	}
	if _, err := ss.Execute(context.Background(), executor.Request{ID: "3", Code: "1", Limits: testLimits}, nil); !errors.Is(err, executor.ErrSessionEnded) {
		t.Errorf("a call after close: %v", err)
	}
	if dirs := dirsOf(t, c); len(dirs) != 1 {
		t.Errorf("after the session was closed: %v", dirs)
	}
	c.Close()
	if dirs := dirsOf(t, c); len(dirs) != 0 {
		t.Errorf("after the client was closed: %v", dirs)
	}
}

// A session whose interpreter ends between calls is seen to have ended without a call.
func TestSessionEndedBetweenCalls(t *testing.T) {
	c, _ := childClient(t, clientConfig(t, executor.ModeSpawn, 0))
	ss, err := c.NewSession(context.Background(), executor.SessionRequest{ID: "s-2", Limits: testLimits})
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	// Between calls the interpreter is at rest (stopped): it can only be ended from outside, as
	// the kernel's OOM killer would.
	res, err := ss.Execute(context.Background(), executor.Request{ID: "1", Code: "import os\nprint(os.getpid())", Limits: testLimits}, nil)
	pid, perr := strconv.Atoi(strings.TrimSpace(res.Stdout))
	if err != nil || perr != nil {
		t.Fatalf("%+v %v", res, err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !ss.Ended(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the session did not end")
		}
	}
}

// A runner that dies takes its executions and sessions with it: what ran fails with
// ErrRunnerGone, the sessions have ended, the client is not ready until the next runner comes,
// the next one empties what the last one left, and keeps a session ahead of time again.
func TestRunnerDies(t *testing.T) {
	c, procs := childClient(t, clientConfig(t, executor.ModeFork, 1))
	c.WarmSession(executor.SessionRequest{Limits: testLimits})
	ss, err := c.NewSession(context.Background(), executor.SessionRequest{ID: "s-3", Limits: testLimits})
	if err != nil {
		t.Fatal(err)
	}
	first := procs.latest()
	errCh := make(chan error, 1)
	go func() {
		_, err := c.Execute(context.Background(), executor.Request{ID: "x", Code: "import os, time\nos.makedirs('a/b')\nopen('a/b/f', 'w').write('x')\nos.chmod('a', 0)\nprint('in', flush=True)\ntime.sleep(60)", Limits: testLimits}, nil)
		errCh <- err
	}()
	time.Sleep(time.Second) // the execution has made its files
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := <-errCh; !errors.Is(err, ErrRunnerGone) {
		t.Fatalf("the execution the runner took with it: %v", err)
	}
	for deadline := time.Now().Add(5 * time.Second); c.Ready() == nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the client did not see its runner go")
		}
	}
	if !ss.Ended() {
		t.Error("the session of a dead runner has not ended")
	}
	waitReady(t, c)
	if procs.latest() == first {
		t.Fatal("the runner was not started again")
	}
	if res := run(t, c, executor.Request{ID: "n", Code: "print('next')"}); res.Stdout != "next\n" {
		t.Fatalf("%+v", res)
	}
	ss.Close()
	// What is left: the directory of the new runner's session started ahead of time.
	var dirs []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if dirs = dirsOf(t, c); len(dirs) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("want the new spare's directory alone, have %v", dirs)
		}
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		next, err := c.NewSession(context.Background(), executor.SessionRequest{ID: "s-4", Limits: testLimits})
		if err != nil {
			t.Fatal(err)
		}
		took := filepath.Base(next.(*remoteSession).fam.dir) == dirs[0]
		next.Close()
		if took {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the new runner keeps no session ahead of time")
		}
	}
}

// A runner of another protocol is refused, and says why.
func TestAnotherProtocolIsRefused(t *testing.T) {
	c, err := NewClient(clientConfig(t, executor.ModeSpawn, 0))
	if err != nil {
		t.Fatal(err)
	}
	ours, theirs := socketPair(t)
	errCh := make(chan error, 1)
	go func() { errCh <- c.Attach(ours) }()
	if err := writeFrame(theirs, &Hello{Protocol: Protocol + 1, Version: "v9"}); err != nil {
		t.Fatal(err)
	}
	var cfg Config
	if err := readFrame(theirs, handshakeFrame, &cfg); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(cfg.Refused, fmt.Sprintf("protocol %d, the server %d", Protocol+1, Protocol)) {
		t.Errorf("refusal: %q", cfg.Refused)
	}
	if err := <-errCh; err == nil || c.Ready() == nil {
		t.Errorf("a runner of another protocol was attached: %v", err)
	}
}

func socketPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "pair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

// Uids of the tests that run the runner as a user of its own; no other test uses them.
const (
	serverUID = 61011
	runnerUID = 61012
)

// dialingRunner starts this test binary as a runner of uid, dialing socket for a server of
// serverUID, in the group gid.
func dialingRunner(t *testing.T, socket string, serverUID, uid, gid int) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(testutil.ShareTestBinary(t))
	cmd.Env = []string{"PYEXEC_RUNNER_TEST=dial", "PYEXEC_RUNNER_SOCKET=" + socket, "PYEXEC_RUNNER_SERVER_UID=" + strconv.Itoa(serverUID), "PATH=/usr/bin:/bin"}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	return cmd
}

// The runner socket takes the runner's uid alone, one runner at a time, and the runner talks
// only to a server of the uid it was told.
func TestRunnerSocketTakesTheRunnerAlone(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("SKIPPED: needs root to run the runner as a uid of its own; the runner socket's checks did not run")
	}
	cfg := clientConfig(t, executor.ModeSpawn, 0)
	cfg.GID = runnerUID // the runner's group: it writes in the server's directories through it
	log := &syncLog{}
	cfg.Log = log.logger()
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	socket := filepath.Join(filepath.Dir(cfg.Runner.WorkDir), "runner.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: socket, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(socket, 0o666); err != nil {
		t.Fatal(err)
	}
	go c.Serve(l, runnerUID)

	// A runner told another server's uid does not talk to this one (the test runs as root).
	dialingRunner(t, socket, serverUID, runnerUID, runnerUID)
	time.Sleep(time.Second)
	if c.Ready() == nil {
		t.Fatal("a runner attached to a server of a uid it was not told")
	}
	// A process of another uid is refused at once.
	other := dialingRunner(t, socket, 0, runnerUID+1, runnerUID+1)
	for deadline := time.Now().Add(10 * time.Second); !log.has("uid 61013 is not the runner's 61012"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a process of another uid was not refused")
		}
	}
	_ = syscall.Kill(-other.Process.Pid, syscall.SIGKILL)
	if c.Ready() == nil {
		t.Fatal("a runner of another uid was attached")
	}
	// The runner's uid, told the server's: attached, and it runs code as its uid.
	dialingRunner(t, socket, 0, runnerUID, runnerUID)
	waitReady(t, c)
	if h, _, _ := c.Runner(); h.UID != runnerUID {
		t.Fatalf("runner %+v", h)
	}
	// A uid of its own has no entry in /etc/passwd: what code asks of its user still works.
	if res := run(t, c, executor.Request{ID: "u", Code: "import getpass, os, pwd, subprocess, sys\nprint(os.getuid(), getpass.getuser(), os.path.expanduser('~') == os.getcwd())\n" +
		"try:\n    pwd.getpwuid(os.getuid())\nexcept KeyError:\n    print('no passwd entry')\n" +
		"subprocess.run([sys.executable, '-m', 'pip', '--version'], check=True, stdout=subprocess.DEVNULL)\nprint('pip ok')"}); res.Stdout != strconv.Itoa(runnerUID)+" pyexec True\nno passwd entry\npip ok\n" {
		t.Fatalf("%+v", res)
	}
	// A second process of the runner's uid while one is attached is refused: code of that
	// uid cannot take the server's requests.
	first, _, _ := c.Runner()
	dialingRunner(t, socket, 0, runnerUID, runnerUID)
	for deadline := time.Now().Add(10 * time.Second); !log.has("a runner is already connected"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a second runner was not refused")
		}
	}
	if now, _, _ := c.Runner(); now.PID != first.PID {
		t.Fatalf("the runner changed: %+v, was %+v", now, first)
	}
}

// A fork bomb in a runner of its own uid, under its limit of processes: the limit holds it,
// the time limit kills the whole tree, and nothing of it is left.
func TestForkLoopInTheRunner(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("SKIPPED: needs root to run the runner as a uid of its own; the fork bomb did not run")
	}
	const bombUID = 61001 // no other test uses it
	cfg := clientConfig(t, executor.ModeSpawn, 0)
	cfg.GID = bombUID
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	ours, theirs := socketPair(t)
	go func() {
		if err := c.Attach(ours); err != nil {
			t.Error(err)
		}
	}()
	f, err := theirs.File()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testutil.ShareTestBinary(t))
	cmd.Env = []string{"PYEXEC_RUNNER_TEST=child", "PATH=/usr/bin:/bin"}
	cmd.ExtraFiles = []*os.File{f}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: &syscall.Credential{Uid: bombUID, Gid: bombUID}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	theirs.Close()
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	waitReady(t, c)
	lim := testLimits
	lim.Timeout, lim.MaxProcesses = 2*time.Second, 64
	res, err := c.Execute(context.Background(), executor.Request{ID: "bomb", Code: "import os\nprint(os.getuid(), flush=True)\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass", Limits: lim}, nil)
	if err != nil || res.Reason != api.ReasonTimeout || res.Stdout != strconv.Itoa(bombUID)+"\n" {
		t.Fatalf("%+v %v", res, err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		left := tasksOf(bombUID, cmd.Process.Pid)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d processes of uid %d left besides the runner: %v", len(left), bombUID, left)
		}
	}
	for deadline := time.Now().Add(5 * time.Second); len(dirsOf(t, c)) != 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("directories left: %v", dirsOf(t, c))
		}
	}
}

// tasksOf lists the live processes of uid other than the runner.
func tasksOf(uid, runner int) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == runner {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil || strings.Contains(string(stat[strings.LastIndexByte(string(stat), ')'):]), ") Z ") {
			continue
		}
		if owner, ok := testutil.ProcessUID(pid); ok && owner == uid {
			out = append(out, pid)
		}
	}
	return out
}

// bigResultCode prints a line and writes a file of 1 MiB of random bytes: a result far over
// maxInlineResult.
const bigResultCode = "import os\nprint('big')\nopen('f.bin', 'wb').write(os.urandom(1 << 20))"

// A large result streams: the client gets its figures at once and its body (the API's JSON,
// the file in base64) as it reads, over the channel, which it gets back once the body is read
// whole, and closes when it is not. The runner going in the middle of a body is an error of
// the read, not a short body taken for whole.
func TestLargeResultsStream(t *testing.T) {
	c, procs := childClient(t, clientConfig(t, executor.ModeFork, 0))
	readBody := func(res api.ExecuteResult) (api.ExecuteResult, error) {
		defer res.Encoded.Close()
		b, err := io.ReadAll(res.Encoded)
		if err != nil {
			return api.ExecuteResult{}, err
		}
		if int64(len(b)) != res.Encoded.Size() || !bytes.HasSuffix(b, []byte("}\n")) {
			t.Fatalf("a body of %d bytes, %d said", len(b), res.Encoded.Size())
		}
		var whole api.ExecuteResult
		return whole, json.Unmarshal(b, &whole)
	}
	checkBig := func(what string, res api.ExecuteResult) {
		t.Helper()
		if _, ok := res.Encoded.(*streamedResult); !ok {
			t.Fatalf("%s: a result of 1 MiB came as %T, not streamed", what, res.Encoded)
		}
		// stdout in the body alone, its size beside.
		stdout, stderr := res.Encoded.(*streamedResult).OutputBytes()
		if res.Stdout != "" || stdout != len("big\n") || stderr != 0 || len(res.Files) != 1 || res.Files[0].Size != 1<<20 || res.Files[0].ContentBase64 != "" {
			t.Fatalf("%s: the figures: %+v, stdout %d bytes, stderr %d", what, res, stdout, stderr)
		}
		whole, err := readBody(res)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		data, err := base64.StdEncoding.DecodeString(whole.Files[0].ContentBase64)
		if whole.ID != res.ID || whole.Stdout != "big\n" || err != nil || len(data) != 1<<20 {
			t.Fatalf("%s: the body: id %q stdout %q, a file of %d bytes (%v)", what, whole.ID, whole.Stdout, len(data), err)
		}
	}

	checkBig("an execution", run(t, c, executor.Request{ID: "b1", Code: bigResultCode}))
	small := run(t, c, executor.Request{ID: "s1", Code: "print(1)"})
	if _, ok := small.Encoded.(passedResult); !ok || small.Stdout != "1\n" {
		t.Fatalf("a small result came as %T: %+v", small.Encoded, small)
	}
	if whole, err := readBody(small); err != nil || whole.Stdout != "1\n" || whole.ID != "s1" {
		t.Fatalf("a small result's body: %+v %v", whole, err)
	}

	ss, err := c.NewSession(context.Background(), executor.SessionRequest{ID: "s-1", Limits: testLimits})
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	res, err := ss.Execute(context.Background(), executor.Request{ID: "b2", Code: bigResultCode, Limits: testLimits}, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkBig("a session's call", res)
	// The session's channel came back whole: the next call is in step.
	if res, err := ss.Execute(context.Background(), executor.Request{ID: "b3", Code: "print(x)", Limits: testLimits}, nil); err != nil || res.ExitCode == 0 {
		t.Fatalf("the next call: %+v %v", res, err)
	}
	// A session's body left unread: its channel is not the next call's.
	res, err = ss.Execute(context.Background(), executor.Request{ID: "b3", Code: bigResultCode, Limits: testLimits}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(io.Discard, res.Encoded, 100); err != nil {
		t.Fatal(err)
	}
	res.Encoded.Close()
	for i := range 3 {
		if res, err := ss.Execute(context.Background(), executor.Request{ID: fmt.Sprint("c", i), Code: "print(6*7)", Limits: testLimits}, nil); err != nil || res.Stdout != "42\n" {
			t.Fatalf("a session's call after a body left unread: %+v %v", res, err)
		}
	}
	ss.Close()

	// A body left unread: another execution runs meanwhile; closing it gives up its channel,
	// and the executions after are intact, the directories all gone.
	unread := run(t, c, executor.Request{ID: "b4", Code: bigResultCode})
	if res := run(t, c, executor.Request{ID: "n1", Code: "print(6*7)"}); res.Stdout != "42\n" {
		t.Fatalf("beside an unread body: %+v", res)
	}
	if _, err := io.CopyN(io.Discard, unread.Encoded, 100); err != nil {
		t.Fatal(err)
	}
	unread.Encoded.Close()
	for i := range 4 {
		if res := run(t, c, executor.Request{ID: fmt.Sprint("n", i+2), Code: "print(6*7)"}); res.Stdout != "42\n" {
			t.Fatalf("after a body left unread: %+v", res)
		}
	}
	checkBig("after a body left unread", run(t, c, executor.Request{ID: "b5", Code: bigResultCode}))
	for deadline := time.Now().Add(5 * time.Second); len(dirsOf(t, c)) != 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("directories left in the work root: %v", dirsOf(t, c))
		}
	}

	// The runner goes while a body waits: reading it fails.
	cut := run(t, c, executor.Request{ID: "b6", Code: bigResultCode})
	if err := syscall.Kill(procs.latest(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if _, err := readBody(cut); !errors.Is(err, ErrRunnerGone) {
		t.Fatalf("a body whose runner went: %v", err)
	}
}

// readFile reads a file of a session whole, as the server's file endpoint does, and checks
// that it has the size OpenFile said.
func readFile(ss executor.Session, p string, max int64) ([]byte, error) {
	body, err := ss.OpenFile(p, max)
	if err != nil {
		return nil, err
	}
	return testutil.ReadSized(body)
}

// Checkpoints through the runner, of a session that took the one started ahead of time (which
// gets its checkpoint settings when it is taken): taken, listed, restored, deleted, and the
// executor's errors as they were on the runner's side.
func TestCheckpointsThroughTheRunner(t *testing.T) {
	c, _ := childClient(t, clientConfig(t, executor.ModeFork, 1))
	req := executor.SessionRequest{Limits: testLimits, MaxCheckpoints: 1, CheckpointIdle: time.Minute, MaxCheckpointBytes: 1 << 20}
	c.WarmSession(req)
	req.ID = "s-1"
	ss, err := c.NewSession(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	run := func(code string) api.ExecuteResult {
		t.Helper()
		res, err := ss.Execute(context.Background(), executor.Request{ID: "1", Code: code, Limits: testLimits}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	run("x = 1")
	cp, err := ss.Checkpoint(context.Background())
	if err != nil || cp.ID != "c1" {
		t.Fatalf("checkpoint: %+v %v", cp, err)
	}
	if _, err := ss.Checkpoint(context.Background()); !errors.Is(err, executor.ErrTooManyCheckpoints) {
		t.Errorf("past the cap: %v", err)
	}
	run("x = 2")
	if err := ss.Restore(context.Background(), "c1"); err != nil {
		t.Fatal(err)
	}
	if res := run("print(x)"); res.Stdout != "1\n" {
		t.Fatalf("after the restore: %+v", res)
	}
	if l, err := ss.Checkpoints(); err != nil || len(l) != 1 || l[0].ID != "c1" {
		t.Fatalf("list: %+v %v", l, err)
	}
	if err := ss.DeleteCheckpoint("c1"); err != nil {
		t.Fatal(err)
	}
	err = ss.Restore(context.Background(), "c1")
	if !errors.Is(err, executor.ErrCheckpointNotFound) || !strings.Contains(err.Error(), "c1 was deleted") {
		t.Errorf("a deleted checkpoint: %v", err)
	}
}

// A session of the runner forks into branches, sessions of the runner too: each sees the
// session's state, the session's end leaves them, an error comes back as the executor's, and
// the family's directory goes with its last session.
func TestForkThroughTheRunner(t *testing.T) {
	c, _ := childClient(t, clientConfig(t, executor.ModeFork, 1))
	req := executor.SessionRequest{Limits: testLimits, MaxCheckpointBytes: 1 << 20}
	c.WarmSession(req)
	req.ID = "s-1"
	ss, err := c.NewSession(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	run := func(ss executor.Session, code string) api.ExecuteResult {
		t.Helper()
		res, err := ss.Execute(context.Background(), executor.Request{ID: "1", Code: code, Limits: testLimits}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	run(ss, "x = 1\nopen('f.txt', 'w').write('one')")
	bs, err := ss.Fork(context.Background(), []string{"s-2", "s-3"})
	if err != nil || len(bs) != 2 {
		t.Fatalf("fork: %v %v", bs, err)
	}
	dir := ss.(*remoteSession).fam.dir
	ss.Close()
	for i, b := range bs {
		if res := run(b, fmt.Sprintf("x += %d\nprint(x, open('f.txt').read())", i+1)); res.Stdout != fmt.Sprintf("%d one\n", i+2) {
			t.Fatalf("branch %d: %+v", i, res)
		}
	}
	run(bs[0], "import threading\nth = threading.Thread(target=__import__('time').sleep, args=(30,), daemon=True)\nth.start()")
	if _, err := bs[0].Fork(context.Background(), []string{"s-4"}); !errors.Is(err, executor.ErrNotForkable) {
		t.Errorf("a fork with threads: %v", err)
	}
	bs[0].Close()
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("the family's directory with a branch open: %v", err)
	}
	bs[1].Close()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("the family's directory after its last session: %v", err)
	}
}
