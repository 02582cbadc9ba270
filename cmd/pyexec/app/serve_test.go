package app

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pyexec/pyexec/internal/settings"
	"github.com/pyexec/pyexec/internal/testutil"
	"github.com/pyexec/pyexec/pkg/api"
	"github.com/pyexec/pyexec/pkg/client"
)

// sidecar is a real `pyexec serve` process: the test binary acting as pyexec. In the pod's
// configuration (sidecarOptions.runnerUID) it comes with a `pyexec runner` process of its own,
// as the pod's runner container.
type sidecar struct {
	t      testing.TB
	cmd    *exec.Cmd
	socket string
	probe  string // host:port of the probe server
	client *client.Client

	// runnerSocket is the server's --runner-socket, empty where serve starts its runner itself.
	runnerSocket string
	// newRunner is the command of the runner process; runner is the one running.
	newRunner func() *exec.Cmd
	runner    *runnerProc

	mu    sync.Mutex
	lines []map[string]any // structured log lines from stderr, the server's and the runner's
	done  chan struct{}
}

// runnerProc is a `pyexec runner` process that the test started, as the kubelet starts the
// pod's runner container.
type runnerProc struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once it was waited for
}

// startSidecar starts `pyexec serve` with a private socket and report and waits until ready.
func startSidecar(t testing.TB, wrap []string, args ...string) *sidecar {
	t.Helper()
	return startSidecarWith(t, sidecarOptions{wrap: wrap}, args...)
}

// sidecarOptions say how to start a sidecar.
type sidecarOptions struct {
	wrap []string // a command that runs pyexec, such as setpriv
	bin  string   // the pyexec binary; default this test binary
	dir  string   // where its files go (short: socket paths are limited to 108 bytes); default a new one
	uid  int      // run as this uid and gid, with no capability; 0: as the test
	// runnerUID, with uid, starts the runner as the injected pod does: `pyexec runner
	// --server-socket` as this uid in the server's group, which dials the server's
	// --runner-socket. The work root and the runner socket's directory are made first, as
	// pyexec init makes them in the pod. 0: serve starts its runner as its child.
	runnerUID int
	// runnerCgroup is a cgroup v1 directory the runner joins before it runs (a memory
	// cgroup: the runner container's limit).
	runnerCgroup string
	// serverCgroup is a cgroup v1 directory the server joins before it runs, with uid (a
	// memory cgroup: the server container's limit).
	serverCgroup string
	// serverEnv is added to the server's environment (not the runner's).
	serverEnv []string
	// runnerShm runs the runner in a mount namespace of its own with a 16 MiB tmpfs on
	// /dev/shm, as the injector gives its container one, and --shm-dir /dev/shm.
	runnerShm bool
	// inherit are files the server inherits from whoever starts it, as from a shell.
	inherit []*os.File
}

// runnerSocketPath is where a sidecar of dir listens for its runner (sidecarOptions.runnerUID).
func runnerSocketPath(dir string) string { return filepath.Join(dir, "runner", "runner.sock") }

func startSidecarWith(t testing.TB, o sidecarOptions, args ...string) *sidecar {
	t.Helper()
	py := testutil.RequireSystemPython(t)
	dir := o.dir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "pxs"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		if err := os.Chmod(dir, 0o755); err != nil { // executions run as nobody and must reach their work dir
			t.Fatal(err)
		}
	}
	s := &sidecar{t: t, socket: filepath.Join(dir, "run", "pyexec.sock"), done: make(chan struct{})}
	full := append([]string{"serve", "--python", py, "--socket", s.socket, "--report", filepath.Join(dir, "run", "preflight.json"),
		"--packages-dir", filepath.Join(dir, "packages"), "--work-dir", filepath.Join(dir, "work"), "--probe-addr", "127.0.0.1:0"}, args...)
	self := o.bin
	if self == "" {
		// As root it starts its runner as nobody, which must be able to run it.
		self = testutil.ShareTestBinary(t)
	}
	env := []string{"PYEXEC_TEST_AS_MAIN=1", "PYEXEC_CONTAINER=true", "PATH=/usr/bin:/bin", "HOME=/", "PYEXEC_TEST_SECRET=hunter2"}
	if o.runnerUID != 0 {
		if o.uid == 0 {
			t.Fatal("a runner of its own needs the server's uid too")
		}
		s.runnerSocket = runnerSocketPath(dir)
		// As pyexec init makes them in the pod: the server's, mode 0710; the runner, in the
		// server's group, may only enter them.
		for _, d := range []string{filepath.Join(dir, "work"), filepath.Dir(s.runnerSocket)} {
			if err := os.MkdirAll(d, 0o710); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(d, o.uid, o.uid); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(d, 0o710); err != nil {
				t.Fatal(err)
			}
		}
		full = append(full, "--runner-socket", s.runnerSocket, "--runner-uid", strconv.Itoa(o.runnerUID))
		s.newRunner = runnerCommand(t, self, s.runnerSocket, o, env)
	}
	argv := append(append(append([]string{}, o.wrap...), self), full...)
	if o.serverCgroup != "" {
		// The shell joins the cgroup as root; setpriv then drops to the server's uid and gid.
		argv = append(joinCgroup(t, o.serverCgroup, o.uid, o.uid), argv...)
	}
	s.cmd = exec.Command(argv[0], argv[1:]...)
	s.cmd.ExtraFiles = o.inherit
	if o.uid != 0 && o.serverCgroup == "" {
		s.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(o.uid), Gid: uint32(o.uid)}}
	}
	s.cmd.Env = append(env[:len(env):len(env)], o.serverEnv...)
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(s.done)
		s.readLogs(stderr)
	}()
	t.Cleanup(s.stop)
	if s.newRunner != nil {
		s.startRunner()
	}
	s.client = client.New(s.socket)
	s.waitReady()
	return s
}

// joinCgroup returns the prefix of a command that joins the cgroup v1 directory cgroup as
// root, then runs the rest as uid and gid with no supplementary group.
func joinCgroup(t testing.TB, cgroup string, uid, gid int) []string {
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatalf("setpriv (util-linux) is needed to start a process in a cgroup: %v", err)
	}
	return []string{"/bin/sh", "-c", `echo $$ > "$0/cgroup.procs" && exec "$@"`, cgroup,
		setpriv, "--reuid", strconv.Itoa(uid), "--regid", strconv.Itoa(gid), "--clear-groups", "--"}
}

// runnerCommand returns the command of the pod's runner: `pyexec runner` as o.runnerUID in the
// server's group (gid o.uid), dialing socket, in o.runnerCgroup if set.
func runnerCommand(t testing.TB, self, socket string, o sidecarOptions, env []string) func() *exec.Cmd {
	argv := []string{self, "runner", "--server-socket", socket, "--server-uid", strconv.Itoa(o.uid)}
	asRoot := o.runnerCgroup != "" || o.runnerShm
	if asRoot {
		setpriv, err := exec.LookPath("setpriv")
		if err != nil {
			t.Fatalf("setpriv (util-linux) is needed to start the runner in a cgroup or with a /dev/shm of its own: %v", err)
		}
		// The shell joins the cgroup and mounts /dev/shm as root; setpriv then drops to the
		// runner's uid and gid.
		script := `exec "$@"`
		if o.runnerShm {
			script = `mount -t tmpfs -o size=16m,mode=1777 pyexec-shm /dev/shm && ` + script
			argv = append(argv, "--shm-dir", "/dev/shm")
		}
		if o.runnerCgroup != "" {
			script = `echo $$ > "$0/cgroup.procs" && ` + script
		}
		argv = append([]string{"/bin/sh", "-c", script, o.runnerCgroup,
			setpriv, "--reuid", strconv.Itoa(o.runnerUID), "--regid", strconv.Itoa(o.uid), "--clear-groups", "--"}, argv...)
		if o.runnerShm {
			argv = append([]string{"unshare", "--mount", "--propagation", "private"}, argv...)
		}
	}
	return func() *exec.Cmd {
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = env
		// What the server inherits (from a shell), the runner does too: it must not reach the
		// code either.
		cmd.ExtraFiles = o.inherit
		// A process group of its own, as the first process of its container.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if !asRoot {
			cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(o.runnerUID), Gid: uint32(o.uid)}
		}
		return cmd
	}
}

// startRunner starts the runner process, as the kubelet starts (or restarts) the runner
// container; its log lines join the server's.
func (s *sidecar) startRunner() {
	s.t.Helper()
	cmd := s.newRunner()
	r, w, err := os.Pipe()
	if err != nil {
		s.t.Fatal(err)
	}
	// A file, not a pipe of exec's: Wait then does not wait for the processes the runner
	// leaves with its stderr.
	cmd.Stderr = w
	err = cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		s.t.Fatal(err)
	}
	p := &runnerProc{cmd: cmd, exited: make(chan struct{})}
	go func() {
		defer r.Close()
		s.readLogs(r)
	}()
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	s.runner = p
}

// stop stops the runner process: once its server is gone, SIGTERM ends it.
func (p *runnerProc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

func (s *sidecar) readLogs(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) != nil {
			line = map[string]any{"raw": sc.Text()}
		}
		s.mu.Lock()
		s.lines = append(s.lines, line)
		if line["msg"] == "serving probes" {
			s.probe, _ = line["addr"].(string)
		}
		s.mu.Unlock()
	}
}

// logs returns the log lines with the given message.
func (s *sidecar) logs(msg string) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range s.lines {
		if l["msg"] == msg {
			out = append(out, l)
		}
	}
	return out
}

func (s *sidecar) waitReady() {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		probe := s.probe
		s.mu.Unlock()
		if probe != "" {
			if resp, err := http.Get("http://" + probe + "/readyz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return
				}
			}
		}
		select {
		case <-s.done:
			s.t.Fatalf("pyexec serve exited before it was ready: %v", s.allLogs())
		case <-time.After(50 * time.Millisecond):
		}
	}
	s.t.Fatalf("pyexec serve not ready after 30 s: %v", s.allLogs())
}

func (s *sidecar) allLogs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, _ := json.Marshal(s.lines)
	if len(b) > 4000 {
		b = append(b[:4000], "..."...)
	}
	return string(b)
}

func (s *sidecar) stop() {
	if s.runner != nil {
		// As at the pod's end: both get SIGTERM; the runner stops once its server is gone.
		_ = s.runner.cmd.Process.Signal(syscall.SIGTERM)
	}
	if s.cmd.ProcessState == nil {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(40 * time.Second):
			_ = s.cmd.Process.Kill()
		}
		_ = s.cmd.Wait()
	}
	if s.runner != nil {
		s.runner.stop()
	}
}

func (s *sidecar) execute(t *testing.T, req api.ExecuteRequest) *api.ExecuteResult {
	t.Helper()
	res, err := s.client.Execute(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func seconds(s float64) *float64 { return &s }

func TestServeExecutesAndLogsOneLine(t *testing.T) {
	s := startSidecar(t, nil)
	res := s.execute(t, api.ExecuteRequest{Code: "import os\nprint(1)\nprint(os.environ.get('PYEXEC_TEST_SECRET'))"})
	if res.ExitCode != 0 || res.Reason != api.ReasonExit || res.Stdout != "1\nNone\n" || res.ID == "" {
		t.Fatalf("%+v", res)
	}
	var lines []map[string]any
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if lines = s.logs("execution finished"); len(lines) == 1 {
			break
		}
	}
	if len(lines) != 1 {
		t.Fatalf("want one log line per execution, got %d: %s", len(lines), s.allLogs())
	}
	l := lines[0]
	if l["id"] != res.ID || l["reason"] != "exit" || l["exitCode"] != 0.0 || l["stdoutBytes"] != float64(len(res.Stdout)) || l["code"] != nil {
		t.Errorf("log line %v", l)
	}
	info, err := s.client.Info(context.Background())
	if err != nil || info.Preflight.Source != "serve" || !info.Preflight.OK || info.Mode != "fork" || info.Python.Executable != testutil.SystemPython {
		t.Errorf("info %+v err %v", info, err)
	}
}

func TestServeProbes(t *testing.T) {
	s := startSidecar(t, nil)
	s.execute(t, api.ExecuteRequest{Code: "pass"})
	for path, want := range map[string]string{"/healthz": "ok", "/readyz": "", "/metrics": `pyexec_executions_total{reason="exit"} 1`} {
		resp, err := http.Get("http://" + s.probe + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("%s: %d %q; want 200 containing %q", path, resp.StatusCode, body, want)
		}
	}
}

// In fork mode (the default, one spare) executions run in spares when they are spaced, and the
// sidecar's memory is exported.
func TestServeForkSparesAndMemory(t *testing.T) {
	s := startSidecar(t, nil)
	deadline := time.Now().Add(20 * time.Second)
	for metric(t, s, "pyexec_fork_warm_executions_total") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no execution ran in a spare: %v warm", metric(t, s, "pyexec_fork_warm_executions_total"))
		}
		s.execute(t, api.ExecuteRequest{Code: "pass"})
		time.Sleep(300 * time.Millisecond) // the spare is replaced while idle
	}
	if fb := metric(t, s, "pyexec_fork_fallbacks_total"); fb != 0 {
		t.Errorf("%v executions fell back to spawn mode", fb)
	}
	rss, pss := metric(t, s, "pyexec_sidecar_rss_bytes"), metric(t, s, "pyexec_sidecar_pss_bytes")
	// serve, the zygote and a spare's two processes: each is a few MiB at least.
	if pss < 8<<20 || rss < pss {
		t.Errorf("sidecar RSS %v, PSS %v", rss, pss)
	}
}

// With --rest-after the sidecar rests once no execution has run for that long (its spare goes
// cold), and the next execution runs in a spare all the same.
func TestServeRests(t *testing.T) {
	s := startSidecar(t, nil, "--rest-after", "1s", "--verbosity", "1")
	for deadline := time.Now().Add(20 * time.Second); len(s.logs("resting")) == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not resting after 1 s without executions: %v", s.allLogs())
		}
	}
	for deadline := time.Now().Add(20 * time.Second); metric(t, s, "pyexec_fork_warm_executions_total") < 1; time.Sleep(300 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no execution ran in the cold spare")
		}
		if res := s.execute(t, api.ExecuteRequest{Code: "print(1)"}); res.Stdout != "1\n" {
			t.Fatalf("%+v", res)
		}
	}
}

func TestPyexecRun(t *testing.T) {
	s := startSidecar(t, nil)
	tests := []struct {
		args           []string
		code           int
		stdout, stderr string
	}{
		{[]string{"-c", "print('hi')"}, 0, "hi\n", ""},
		{[]string{"-c", "import sys\nprint('bad', file=sys.stderr)\nsys.exit(3)"}, 3, "", "bad\n"},
		{[]string{"--stream", "-c", "print('streamed')"}, 0, "streamed\n", ""},
		{[]string{"--timeout", "1s", "-c", "while True: pass"}, ExitRunTimeout, "", "pyexec: killed after the time limit\n"},
		{[]string{"-c", "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)"}, 128 + 11, "", ""},
	}
	for _, tt := range tests {
		r := run(t, nil, append([]string{"run", "--socket", s.socket}, tt.args...)...)
		if r.code != tt.code || r.stdout != tt.stdout || r.stderr != tt.stderr {
			t.Errorf("run %q: exit %d stdout %q stderr %q; want %d %q %q", tt.args, r.code, r.stdout, r.stderr, tt.code, tt.stdout, tt.stderr)
		}
	}
	gone := run(t, nil, "run", "--socket", filepath.Join(t.TempDir(), "none.sock"), "-c", "pass")
	if gone.code != ExitRunFailed || !strings.Contains(gone.stderr, "pyexec sidecar unreachable") {
		t.Errorf("unreachable: exit %d stderr %q", gone.code, gone.stderr)
	}
}

// A flood of concurrent requests: every one is answered, with a result or a 429.
func TestServeFlood(t *testing.T) {
	s := startSidecar(t, nil, "--max-concurrent", "2", "--queue", "3")
	const n = 30
	var ok, full, other int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := s.client.Execute(context.Background(), api.ExecuteRequest{Code: "import time\ntime.sleep(0.3)"})
			mu.Lock()
			defer mu.Unlock()
			var apiErr *client.APIError
			switch {
			case err == nil && res.ExitCode == 0:
				ok++
			case errors.As(err, &apiErr) && apiErr.Status == 429 && apiErr.Code == api.ErrCodeQueueFull && apiErr.RetryAfter > 0:
				full++
			default:
				other++
				t.Errorf("unexpected answer: %+v %v", res, err)
			}
		}()
	}
	wg.Wait()
	t.Logf("%d requests: %d executed, %d refused with 429", n, ok, full)
	if ok+full != n || other != 0 || full == 0 || ok < 5 {
		t.Fatalf("%d executed + %d refused + %d other, want %d answered with some 429s", ok, full, other, n)
	}
}

// SIGTERM with work in flight: new requests are refused, the running execution finishes with
// its result, the socket is removed and the process exits 0.
func TestServeDrainsOnSIGTERM(t *testing.T) {
	s := startSidecar(t, nil, "--drain-timeout", "20s")
	resCh := make(chan *api.ExecuteResult, 1)
	go func() {
		res, err := s.client.Execute(context.Background(), api.ExecuteRequest{Code: "import time\nprint('started', flush=True)\ntime.sleep(1.5)\nprint('finished')"})
		if err != nil {
			t.Error(err)
		}
		resCh <- res
	}()
	waitForLog(t, s, func() bool { return len(inFlight(t, s)) > 0 })
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if _, err := s.client.Execute(context.Background(), api.ExecuteRequest{Code: "pass"}); err == nil {
		t.Error("a new request was accepted while draining")
	}
	res := <-resCh
	if res == nil || res.Stdout != "started\nfinished\n" {
		t.Fatalf("in-flight result %+v", res)
	}
	if err := s.cmd.Wait(); err != nil {
		t.Fatalf("exit: %v", err)
	}
	if _, err := os.Stat(s.socket); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
}

func inFlight(t *testing.T, s *sidecar) string {
	resp, err := http.Get("http://" + s.probe + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "pyexec_executions_in_flight ") && !strings.HasSuffix(line, " 0") {
			return line
		}
	}
	return ""
}

func waitForLog(t *testing.T, s *sidecar, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("condition not met: %s", s.allLogs())
}

func TestServeRefusesPeerUID(t *testing.T) {
	s := startSidecar(t, nil, "--allow-uids", "12345")
	_, err := s.client.Execute(context.Background(), api.ExecuteRequest{Code: "pass"})
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 403 || !strings.Contains(apiErr.Message, strconv.Itoa(os.Getuid())) {
		t.Fatalf("err = %v, want 403 naming uid %d", err, os.Getuid())
	}
	waitForLog(t, s, func() bool { return len(s.logs("peer refused")) == 1 })
}

// A second server on a live socket is refused; after a crash (SIGKILL leaves the socket
// file), a new server takes the stale socket over.
func TestServeLiveAndStaleSocket(t *testing.T) {
	s := startSidecar(t, nil)
	self, _ := os.Executable()
	second := exec.Command(self, "serve", "--python", testutil.SystemPython, "--socket", s.socket, "--probe-addr", "",
		"--report", filepath.Join(filepath.Dir(s.socket), "preflight.json"))
	second.Env = s.cmd.Env
	out, err := second.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "another server is listening on "+s.socket) {
		t.Fatalf("second server: %v: %s", err, out)
	}
	s.execute(t, api.ExecuteRequest{Code: "pass"}) // the first still serves

	_ = s.cmd.Process.Kill()
	<-s.done
	_ = s.cmd.Wait()
	if _, err := os.Stat(s.socket); err != nil {
		t.Fatalf("precondition: SIGKILL should leave the socket file: %v", err)
	}
	third := exec.Command(self, "serve", "--python", testutil.SystemPython, "--socket", s.socket, "--probe-addr", "",
		"--report", filepath.Join(filepath.Dir(s.socket), "preflight.json"), "--work-dir", filepath.Join(filepath.Dir(s.socket), "w3"))
	third.Env = s.cmd.Env
	if err := third.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = third.Process.Signal(syscall.SIGTERM); _ = third.Wait() }()
	c := client.New(s.socket)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if info, err := c.Info(context.Background()); err == nil && info.Ready {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the new server did not take the stale socket over")
		}
	}
	if res, err := c.Execute(context.Background(), api.ExecuteRequest{Code: "print(2)"}); err != nil || res.Stdout != "2\n" {
		t.Fatalf("%+v %v", res, err)
	}
}

// TestPythonClient runs the stdlib Python client's own tests with Debian's interpreter against
// a real pyexec serve.
func TestPythonClient(t *testing.T) {
	s := startSidecar(t, nil)
	dir, err := filepath.Abs("../../../clients/python")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testutil.SystemPython, "-B", "-m", "unittest", "discover", "-s", dir, "-v")
	cmd.Env = []string{"PYEXEC_SOCKET=" + s.socket, "PATH=/usr/bin:/bin", "HOME=" + t.TempDir()}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python client tests: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "\nOK") {
		t.Fatalf("python client tests did not end OK:\n%s", out)
	}
	t.Logf("%s", out[strings.LastIndex(string(out), "Ran "):])
}

// The Python client installs with pip: its wheel, built from clients/python (pyproject.toml)
// with Debian's setuptools and no index, goes into a fresh venv, and the installed module runs
// code through a real sidecar, with AsyncClient.
func TestPythonClientWheel(t *testing.T) {
	s := startSidecar(t, nil)
	src, err := filepath.Abs("../../../clients/python")
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	tree := filepath.Join(work, "src") // built from a copy: the build leaves its files behind
	if out, err := exec.Command("cp", "-r", src, tree).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + work, "PIP_NO_INPUT=1", "PIP_DISABLE_PIP_VERSION_CHECK=1"}
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Env, cmd.Dir = append(env, "PYEXEC_SOCKET="+s.socket), work
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		return string(out)
	}
	dist := filepath.Join(work, "dist")
	run(testutil.SystemPython, "-m", "pip", "wheel", "--no-deps", "--no-index", "--no-build-isolation", "-w", dist, tree)
	wheels, _ := filepath.Glob(filepath.Join(dist, "pyexec_client-*-py3-none-any.whl"))
	if len(wheels) != 1 {
		t.Fatalf("wheels built: %v", wheels)
	}
	venv := filepath.Join(work, "venv")
	run(testutil.SystemPython, "-m", "venv", venv)
	run(filepath.Join(venv, "bin", "pip"), "install", "--no-index", "--no-deps", wheels[0])
	out := run(filepath.Join(venv, "bin", "python"), "-c", "import asyncio, importlib.metadata, pyexec_client\n"+
		"print(importlib.metadata.version('pyexec-client'), pyexec_client.__file__.startswith('"+venv+"'))\n"+
		"print(asyncio.run(pyexec_client.AsyncClient().execute('print(6 * 7)')).stdout, end='')")
	if out != "0.1.0 True\n42\n" {
		t.Errorf("the installed client: %q", out)
	}
}

// An input file that cannot be created where it asks to be is the request's fault: 400.
func TestServeInputFileThatCannotBeWritten(t *testing.T) {
	s := startSidecar(t, nil)
	long := strings.Repeat("n", 300) // over NAME_MAX
	_, err := s.client.Execute(context.Background(), api.ExecuteRequest{Code: "pass", Files: []api.InputFile{{Path: long, ContentBase64: ""}}})
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 400 || !strings.Contains(apiErr.Message, "file name too long") {
		t.Fatalf("err = %v, want 400 naming the file", err)
	}
}

// BenchmarkServePrint is the latency of print(1) through the socket, one request at a time
// (spawn mode: a fresh interpreter under the runner per execution).
func BenchmarkServePrint(b *testing.B) {
	s := startSidecar(b, nil, "--max-concurrent", "2", "--queue", "64")
	req := api.ExecuteRequest{Code: "print(1)"}
	for b.Loop() {
		res, err := s.client.Execute(context.Background(), req)
		if err != nil || res.Stdout != "1\n" {
			b.Fatalf("%+v %v", res, err)
		}
	}
}

// BenchmarkServePrintParallel is the throughput of print(1) with clients on every core.
func BenchmarkServePrintParallel(b *testing.B) {
	s := startSidecar(b, nil, "--max-concurrent", "2", "--queue", "64")
	req := api.ExecuteRequest{Code: "print(1)"}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			res, err := s.client.Execute(context.Background(), req)
			if err != nil || res.Stdout != "1\n" {
				b.Errorf("%+v %v", res, err)
				return
			}
		}
	})
}

// TestServeLimits sends every limit's worst case through a real pyexec serve (running code as a
// uid of its own, so RLIMIT_NPROC holds the fork loop without touching other tests) and checks
// that each is reported and that the server stays healthy.
func TestServeLimits(t *testing.T) {
	s := startSidecar(t, nil, "--timeout", "3s", "--max-output-bytes", "65536", "--memory-limit-mb", "256",
		"--max-file-bytes", "1048576", "--max-processes", "64", "--run-as", strconv.Itoa(limitsUID))
	tests := []struct {
		name   string
		req    api.ExecuteRequest
		reason string
		check  func(r *api.ExecuteResult) bool
	}{
		{"infinite loop", api.ExecuteRequest{Code: "while True: pass", TimeoutSeconds: seconds(1)}, api.ReasonTimeout,
			func(r *api.ExecuteResult) bool { return r.TimedOut && r.ExitCode == 137 }},
		{"fork loop", api.ExecuteRequest{Code: "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass", TimeoutSeconds: seconds(2)}, api.ReasonTimeout,
			func(r *api.ExecuteResult) bool { return r.TimedOut }},
		{"output flood", api.ExecuteRequest{Code: "while True: print('y' * 100)"}, api.ReasonOutputLimit,
			func(r *api.ExecuteResult) bool { return r.StdoutTruncated && len(r.Stdout) == 65536 }},
		{"4 GB touched", api.ExecuteRequest{Code: "x = bytearray(4 << 30)"}, api.ReasonMemoryLimit,
			func(r *api.ExecuteResult) bool { return r.ExitCode == 137 && r.Signal == "SIGKILL" }},
		{"64 GB allocation", api.ExecuteRequest{Code: "x = bytearray(64 << 30)"}, api.ReasonMemoryLimit,
			func(r *api.ExecuteResult) bool { return strings.HasSuffix(r.Stderr, "MemoryError\n") }},
		{"fork and hold past the budget", api.ExecuteRequest{Code: "import os, time\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n            time.sleep(30)\n            os._exit(0)\n        n += 1\nexcept OSError as e:\n    print(n, e.errno)\n    raise"}, api.ReasonProcessLimit,
			func(r *api.ExecuteResult) bool { return r.Stdout == "63 11\n" && r.ExitCode == 1 }},
		{"huge file", api.ExecuteRequest{Code: "open('f', 'wb').write(b'0' * (100 << 20))"}, api.ReasonExit,
			func(r *api.ExecuteResult) bool {
				return r.ExitCode == 1 && strings.Contains(r.Stderr, "File too large")
			}},
		{"setsid escaper", api.ExecuteRequest{Code: testutil.SetsidEscaperCode + "time.sleep(600)", TimeoutSeconds: seconds(1)}, api.ReasonTimeout,
			func(r *api.ExecuteResult) bool { return strings.HasPrefix(r.Stdout, "pid:") }},
		{"ignores SIGTERM", api.ExecuteRequest{Code: "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(600)", TimeoutSeconds: seconds(1)}, api.ReasonTimeout,
			func(r *api.ExecuteResult) bool { return r.TimedOut }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := s.execute(t, tt.req)
			if r.Reason != tt.reason || !tt.check(r) {
				t.Errorf("reason %s exit %d stdout %.80q stderr %.200q", r.Reason, r.ExitCode, r.Stdout, r.Stderr)
			}
			if after := s.execute(t, api.ExecuteRequest{Code: "print('healthy')"}); after.Stdout != "healthy\n" {
				t.Errorf("the server is not healthy after %s: %+v", tt.name, after)
			}
		})
	}
	// The last execution's processes end after its result (the runner answers first), and on
	// a busy machine not at once.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		left := processesOfUID(limitsUID)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("processes of uid %d left: %v", limitsUID, describeProcs(left))
			break
		}
	}
}

// limitsUID runs TestServeLimits's code; no other test uses it.
const limitsUID = 61002

// describeProcs says what each process is: its pid, parent, name, state and command line.
func describeProcs(pids []int) []string {
	var out []string
	for _, pid := range pids {
		stat, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		out = append(out, fmt.Sprintf("%s [%.80q]", strings.TrimSpace(string(stat[:min(len(stat), 60)])), strings.ReplaceAll(string(cmdline), "\x00", " ")))
	}
	return out
}

// processesOfUID lists the live processes of uid but the runner's own (runnerTree), which run
// as that user too. Only that uid's processes are looked at: the runners of other tests (and
// their spares) must not use up the spares runnerTree allows.
func processesOfUID(uid int) []int {
	var procs []procInfo
	for _, p := range readProcTable() {
		if owner, ok := testutil.ProcessUID(p.pid); ok && owner == uid && p.state != "Z" {
			procs = append(procs, p)
		}
	}
	allowed := runnerTree(procs, 2) // --warm 1: one execution's spare, and one session's
	var out []int
	for _, p := range procs {
		if !allowed[p.pid] {
			out = append(out, p.pid)
		}
	}
	return out
}

// TestServePackages installs from wheels the test builds (offline: --no-index --find-links),
// imports an installed package in an execution, and checks the policy and failure answers.
func TestServePackages(t *testing.T) {
	index := t.TempDir()
	testutil.Wheel(t, index, "alpha", "1.0", "beta>=1")
	testutil.Wheel(t, index, "beta", "2.0")
	testutil.Wheel(t, index, "gamma", "1.0")
	testutil.Wheel(t, index, "delta", "1.0", "beta<1")
	s := startSidecar(t, nil, "--no-index", "--find-links", index, "--allow-packages", "alpha,beta,delta")
	ctx := context.Background()

	st, err := s.client.Packages(ctx)
	if err != nil || st.Tree != "" || len(st.Installed) != 0 || strings.Join(st.Allowed, ",") != "alpha,beta,delta" {
		t.Fatalf("before: %+v %v", st, err)
	}
	st, err = s.client.InstallPackages(ctx, api.PackagesRequest{Packages: []string{"alpha>=1"}})
	if err != nil || len(st.Installed) != 2 || st.Installed[0].Name != "alpha" || st.Installed[1].Name != "beta" || st.DurationMS <= 0 {
		t.Fatalf("install: %+v %v", st, err)
	}
	tree := st.Tree
	res := s.execute(t, api.ExecuteRequest{Code: "import alpha, beta\nprint(alpha.VERSION, beta.VERSION, alpha.__file__.startswith(" + strconv.Quote(tree) + "))"})
	if res.Stdout != "1.0 2.0 True\n" {
		t.Fatalf("import after install: %+v", res)
	}

	var apiErr *client.APIError
	_, err = s.client.InstallPackages(ctx, api.PackagesRequest{Packages: []string{"gamma"}})
	if !errors.As(err, &apiErr) || apiErr.Status != 403 || !strings.Contains(apiErr.Message, "package gamma may not be installed at run time: it matches none of --allow-packages alpha,beta,delta") {
		t.Errorf("denied package: %v", err)
	}
	_, err = s.client.InstallPackages(ctx, api.PackagesRequest{Packages: []string{"delta"}})
	if !errors.As(err, &apiErr) || apiErr.Status != 422 || apiErr.Code != api.ErrCodeInstallFailed || !strings.Contains(apiErr.Message, "beta<1") {
		t.Errorf("conflict: %v", err)
	}
	_, err = s.client.InstallPackages(ctx, api.PackagesRequest{Packages: []string{"alpha", "beta>>1"}})
	if !errors.As(err, &apiErr) || apiErr.Status != 400 || !strings.HasPrefix(apiErr.Message, "packages[1]: ") {
		t.Errorf("bad spec: %v", err)
	}
	if after, err := s.client.Packages(ctx); err != nil || after.Tree != tree || strings.Join(after.Requirements, ",") != "alpha>=1" {
		t.Errorf("the failed installs changed the tree: %+v %v", after, err)
	}
}

func TestServePackagesDirReadOnly(t *testing.T) {
	pkgs := t.TempDir()
	testutil.MountTmpfs(t, pkgs, unix.MS_RDONLY)
	s := startSidecar(t, nil, "--packages-dir", pkgs, "--allow-packages", "*")
	_, err := s.client.InstallPackages(context.Background(), api.PackagesRequest{Packages: []string{"alpha"}})
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 409 || apiErr.Code != api.ErrCodePackagesLocked || !strings.Contains(apiErr.Message, pkgs+" is on a read-only filesystem") {
		t.Fatalf("err = %v, want 409 packages_locked naming the dir", err)
	}
	info, err := s.client.Info(context.Background())
	if err != nil || info.Packages == nil || !info.Packages.Locked {
		t.Fatalf("info packages %+v %v", info.Packages, err)
	}
	var found bool
	for _, p := range info.Preflight.Problems {
		found = found || strings.Contains(p, "packages dir is locked")
	}
	if !found {
		t.Errorf("preflight problems %q do not say the packages dir is locked", info.Preflight.Problems)
	}
}

// An execution that runs while an install swaps the tree keeps the tree it started with; the
// next execution sees the new one.
func TestServeInstallDuringExecution(t *testing.T) {
	index := t.TempDir()
	testutil.Wheel(t, index, "beta", "1.0")
	testutil.Wheel(t, index, "beta", "2.0")
	s := startSidecar(t, nil, "--no-index", "--find-links", index, "--allow-packages", "beta")
	ctx := context.Background()
	if _, err := s.client.InstallPackages(ctx, api.PackagesRequest{Packages: []string{"beta==1.0"}}); err != nil {
		t.Fatal(err)
	}
	running := make(chan *api.ExecuteResult, 1)
	go func() {
		res, err := s.client.Execute(ctx, api.ExecuteRequest{Code: "import sys, time\nprint('started', flush=True)\ntime.sleep(3)\nimport beta\nprint(beta.VERSION)"})
		if err != nil {
			t.Error(err)
		}
		running <- res
	}()
	waitForLog(t, s, func() bool { return inFlight(t, s) != "" })
	if _, err := s.client.InstallPackages(ctx, api.PackagesRequest{Packages: []string{"beta==2.0"}}); err != nil {
		t.Fatal(err)
	}
	if res := s.execute(t, api.ExecuteRequest{Code: "import beta\nprint(beta.VERSION)"}); res.Stdout != "2.0\n" {
		t.Errorf("after the install: %+v", res)
	}
	if res := <-running; res == nil || res.Stdout != "started\n1.0\n" {
		t.Errorf("the execution that ran during the install: %+v", res)
	}
}

func TestPyexecBench(t *testing.T) {
	s := startSidecar(t, nil)
	r := run(t, nil, "bench", "--socket", s.socket, "-n", "10", "-c", "2", "--warmup", "1")
	if r.code != ExitOK || !strings.Contains(r.stdout, "executions: 10 ok, 0 failed") || !strings.Contains(r.stdout, "latency: p50 ") || !strings.Contains(r.stdout, "throughput: ") {
		t.Fatalf("exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	failing := run(t, nil, "bench", "--socket", s.socket, "-n", "3", "--warmup", "0", "--code", "raise SystemExit(2)")
	if failing.code != ExitOK || !strings.Contains(failing.stdout, "executions: 0 ok, 3 failed") || !strings.Contains(failing.stdout, "exit code 2") {
		t.Fatalf("failing code: exit %d stdout %q", failing.code, failing.stdout)
	}
}

// parseServe parses a serve command line without running it.
func parseServe(t *testing.T, vars map[string]string, args ...string) *ServeConfig {
	t.Helper()
	var got *ServeConfig
	var out strings.Builder
	root := NewRootCommand(IO{Stdout: &out, Stderr: &out, LookupEnv: env(vars)}, Runners{
		Serve: func(_ context.Context, c *ServeConfig) error { got = c; return nil },
	})
	root.SetArgs(append([]string{"serve"}, args...))
	if err := root.Execute(); err != nil {
		t.Fatalf("serve %v: %v: %s", args, err, out.String())
	}
	return got
}

// The caps that keep the server itself safe: the total of returned files and the connections
// of the socket, from flags and PYEXEC_* variables, into /v1/info's limits.
func TestServeFilesOutAndConnectionFlags(t *testing.T) {
	def := parseServe(t, nil)
	if def.MaxFilesOutBytes != 32<<20 || def.MaxConnections != 256 || def.MaxConnectionsPerUID != 64 {
		t.Errorf("defaults: files out bytes %d, connections %d, per uid %d", def.MaxFilesOutBytes, def.MaxConnections, def.MaxConnectionsPerUID)
	}
	c := parseServe(t, map[string]string{"PYEXEC_MAX_FILES_OUT_BYTES": "1000", "PYEXEC_MAX_CONNECTIONS": "10", "PYEXEC_MAX_CONNECTIONS_PER_UID": "3"},
		"--max-connections-per-uid", "4")
	lim := c.limits()
	if lim.MaxFilesOutBytes != 1000 || lim.MaxConnections != 10 || lim.MaxConnectionsPerUID != 4 {
		t.Errorf("limits %+v; want files out bytes 1000, connections 10, per uid 4 (the flag over the variable)", lim)
	}
	if def.ProbeMaxConnections != DefaultProbeMaxConnections || def.ProbeMaxConnectionsPerIP != DefaultProbeMaxConnectionsPerIP {
		t.Errorf("probe defaults: connections %d, per address %d", def.ProbeMaxConnections, def.ProbeMaxConnectionsPerIP)
	}
	p := parseServe(t, map[string]string{"PYEXEC_PROBE_MAX_CONNECTIONS": "20", "PYEXEC_PROBE_MAX_CONNECTIONS_PER_IP": "3"}, "--probe-max-connections-per-ip", "5")
	if p.ProbeMaxConnections != 20 || p.ProbeMaxConnectionsPerIP != 5 {
		t.Errorf("probe caps %d, %d; want 20 and 5 (the flag over the variable)", p.ProbeMaxConnections, p.ProbeMaxConnectionsPerIP)
	}
	for args, want := range map[string]string{
		"--max-files-out-bytes 0":                                    "--max-files-out-bytes must be positive",
		"--max-connections 0":                                        "--max-connections must be positive",
		"--max-connections-per-uid 0":                                "--max-connections-per-uid must be positive",
		"--max-connections 8 --max-connections-per-uid 9":            "--max-connections-per-uid 9 is over --max-connections 8",
		"--probe-max-connections 0":                                  "--probe-max-connections must be positive",
		"--probe-max-connections-per-ip 0":                           "--probe-max-connections-per-ip must be positive",
		"--probe-max-connections 8 --probe-max-connections-per-ip 9": "--probe-max-connections-per-ip 9 is over --probe-max-connections 8",
	} {
		r := run(t, nil, append([]string{"serve"}, strings.Fields(args)...)...)
		if r.code != ExitUsage || !strings.Contains(r.stderr, want) {
			t.Errorf("serve %s: exit %d stderr %q; want exit 2 mentioning %q", args, r.code, r.stderr, want)
		}
	}
}

// Attack (11) on a real pyexec serve: the socket file is removed. The kubelet's next /readyz
// re-creates it, and the app's next request is served on it; /v1/info reports the new caps.
func TestServeRecreatesRemovedSocket(t *testing.T) {
	s := startSidecar(t, nil, "--max-files-out-bytes", "2097152", "--max-connections", "32", "--max-connections-per-uid", "8")
	if err := os.Remove(s.socket); err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.Info(context.Background()); err == nil {
		t.Fatal("precondition: the removed socket still answered")
	}
	resp, err := http.Get("http://" + s.probe + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz after the socket was removed: %d %s; want 200 with a new socket", resp.StatusCode, body)
	}
	if res := s.execute(t, api.ExecuteRequest{Code: "print(3)"}); res.Stdout != "3\n" {
		t.Fatalf("execution on the re-created socket: %+v", res)
	}
	waitForLog(t, s, func() bool { return len(s.logs("socket re-created")) == 1 })
	info, err := s.client.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if l := info.Limits; l.MaxFilesOutBytes != 2<<20 || l.MaxConnections != 32 || l.MaxConnectionsPerUID != 8 {
		t.Errorf("/v1/info limits %+v", l)
	}
}

// Attack (7) on a real pyexec serve: code writes many files that together are far over
// --max-files-out-bytes. The result holds at most the cap and says files were left out.
func TestServeCapsFilesOutInTotal(t *testing.T) {
	s := startSidecar(t, nil, "--max-files-out-bytes", "4194304", "--max-files-out", "100")
	res := s.execute(t, api.ExecuteRequest{Code: "import os\nfor i in range(32):\n    open(f'f{i:02}.bin', 'wb').write(os.urandom(1 << 20))"})
	var sum int64
	for _, f := range res.Files {
		sum += f.Size
	}
	if res.ExitCode != 0 || !res.FilesTruncated || len(res.Files) != 4 || sum != 4<<20 {
		t.Fatalf("exit %d stderr %q: %d files, %d bytes, truncated %v; want 4 files of 1 MiB, truncated", res.ExitCode, res.Stderr, len(res.Files), sum, res.FilesTruncated)
	}
}

// Every path flag of serve (and init's, which serve takes too) is made absolute at start,
// against the working directory, from a flag or its PYEXEC_ variable: pyexec's processes work
// in other directories (a relative --work-dir made every execution fail). --python keeps a bare
// command name, which is looked up on PATH.
func TestPathFlagsMadeAbsolute(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.MkdirAll(filepath.Join(dir, "rel"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rel", "x"), []byte("numpy\n"), 0o644); err != nil { // --requirements is read
		t.Fatal(err)
	}
	n := 0
	for _, s := range settings.Serve {
		if !s.Path {
			continue
		}
		n++
		for _, byEnv := range []bool{false, true} {
			var extra []string
			if s.Flag == "runner-socket" {
				extra = []string{"--runner-uid", "1000"}
			}
			var c *ServeConfig
			if byEnv {
				c = parseServe(t, map[string]string{s.Env(): "rel/x"}, extra...)
			} else {
				c = parseServe(t, nil, append(extra, "--"+s.Flag, "rel/x")...)
			}
			vars := c.vars()
			if s.Preflight {
				vars = c.Init.vars()
			}
			if got, want := *vars[s.Flag].(*string), filepath.Join(dir, "rel", "x"); got != want {
				t.Errorf("--%s rel/x (by its variable: %v): %q, want %q", s.Flag, byEnv, got, want)
			}
		}
	}
	if n < 8 {
		t.Fatalf("%d path flags; socket, work-dir, runner-socket, python, requirements, packages-dir, report and venv-dir are", n)
	}
	if c := parseServe(t, nil, "--python", "python3"); c.Init.Python != "python3" {
		t.Errorf("--python python3: %q, want the command name kept", c.Init.Python)
	}
}

// A preflight failure that no wait heals — a report that is not JSON, an interpreter that is
// not there — ends serve at once with exit 1 and the cause, where it once stayed up not ready
// for ever.
func TestServeExitsWhenThePreflightCannotPass(t *testing.T) {
	dir := t.TempDir()
	corrupt := filepath.Join(dir, "corrupt.json")
	if err := os.WriteFile(corrupt, []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		args []string
		want string
	}{
		"corrupt report": {[]string{"--report", corrupt}, "corrupt.json"},
		"no interpreter": {[]string{"--report", filepath.Join(dir, "none.json"), "--python", filepath.Join(dir, "no", "python3")}, "python3"},
	} {
		t.Run(name, func(t *testing.T) {
			args := append([]string{"serve", "--socket", filepath.Join(t.TempDir(), "s.sock"), "--probe-addr", "", "--work-dir", t.TempDir(),
				"--packages-dir", t.TempDir()}, c.args...)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var out, errb bytes.Buffer
			done := make(chan int, 1)
			go func() { done <- Main(ctx, args, IO{Stdout: &out, Stderr: &errb, LookupEnv: env(nil)}) }()
			select {
			case code := <-done:
				if code != ExitFailed || !strings.Contains(errb.String(), "cannot start") || !strings.Contains(errb.String(), c.want) {
					t.Fatalf("exit %d, stderr %s", code, errb.String())
				}
			case <-time.After(30 * time.Second):
				cancel()
				<-done
				t.Fatalf("serve still running 30 s on: %s", errb.String())
			}
		})
	}
}
