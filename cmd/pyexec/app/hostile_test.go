package app

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pyexec/pyexec/internal/confine"
	"github.com/pyexec/pyexec/internal/testutil"
	"github.com/pyexec/pyexec/pkg/api"
	"github.com/pyexec/pyexec/pkg/client"
)

// The uids of the hostile-code tests, as in the injected pod, which no other test or pod uses:
// the attacks signal every process they can.
const (
	// hostileUID is the server's uid, and its gid the pod's group.
	hostileUID = 61077
	// hostileRunnerUID is the runner's, and so the code's, in the pod's group.
	hostileRunnerUID = 61078
	// hostileAppUID is the app's: in the pod's group, so that it reaches the socket.
	hostileAppUID = 61079
)

// podOptions vary the pod of the hostile-code tests.
type podOptions struct {
	// oneUID starts the runner as the server's child, as its own uid: a non-root server
	// outside Kubernetes, where the identity layer is missing.
	oneUID bool
	// runnerCgroup is the cgroup v1 directory the runner joins (sidecarOptions.runnerCgroup).
	runnerCgroup string
	// runnerShm gives the runner a /dev/shm of its own (sidecarOptions.runnerShm).
	runnerShm bool
	// serverCgroup is the cgroup v1 directory the server joins (sidecarOptions.serverCgroup).
	serverCgroup string
	// serverEnv is added to the server's environment (sidecarOptions.serverEnv).
	serverEnv []string
}

// podSidecar starts the pod's sidecar: `pyexec serve` as hostileUID with --runner-socket, and
// `pyexec runner` as hostileRunnerUID in the server's group, which dials it.
func podSidecar(t *testing.T, o podOptions, args ...string) *sidecar {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("SKIPPED: needs root to start the sidecar as other uids; the hostile-code attacks did not run")
	}
	dir, bin := testutil.SharedTempDir(t, "pyexec")
	// A packages dir with a current tree, as an install leaves it: the attacks aim at it.
	tree := filepath.Join(dir, "packages", "trees", "1")
	if err := os.MkdirAll(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "good.py"), []byte("print('good')\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("trees/1", filepath.Join(dir, "packages", "current")); err != nil {
		t.Fatal(err)
	}
	if err := filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, hostileUID, hostileUID)
	}); err != nil {
		t.Fatal(err)
	}
	// A descriptor the server inherits, as from a shell: it must not reach the code.
	secret, err := os.Create(filepath.Join(dir, "inherited-secret"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { secret.Close() })
	so := sidecarOptions{bin: bin, dir: dir, uid: hostileUID, inherit: []*os.File{secret}, runnerUID: hostileRunnerUID, runnerCgroup: o.runnerCgroup, runnerShm: o.runnerShm, serverCgroup: o.serverCgroup, serverEnv: o.serverEnv}
	if o.oneUID {
		so.runnerUID = 0
	}
	return startSidecarWith(t, so, args...)
}

// layerServer stands for what the server does itself, whatever the kernel: it never hands the
// request's env and files to an unconfined process, and it puts back permissions.
const layerServer = "server"

// attack is hostile code and the check, from outside, that it failed.
type attack struct {
	name string
	// code runs as an execution; {{SOCKET}}, {{PACKAGES}}, {{WORK}}, {{REPORT}},
	// {{RUNNER_SOCKET}}, {{OTHER}} (another session's directory), {{OWNED}} (what the server
	// owns), {{SERVER}}, {{RUNNER}}, {{ZYGOTE}} and {{PORT}} are replaced first.
	code string
	// files and env go with the request.
	files []api.InputFile
	env   map[string]string
	// layers are the layers of confinement that stop it, each on its own.
	layers []string
	// runnerSocket: it aims at the runner socket, which a server that starts its runner
	// itself does not have.
	runnerSocket bool
	// noSession: it does not run again as a call in a session, where that would aim at
	// nothing else.
	noSession bool
	// check looks from outside; res is the attack's result.
	check func(t *testing.T, h *hostile, res *api.ExecuteResult)
	// open, where set, runs the attack also where none of its layers is in force, and checks
	// from outside that it got through (the check above can fail), says what is open, and
	// puts back what it changed. Without it such an attack is only logged as open.
	open func(t *testing.T, h *hostile, res *api.ExecuteResult)
}

// hostile is a pod sidecar under attack, with what the attacks aim at.
type hostile struct {
	s       *sidecar
	dir     string
	sockIno uint64
	// server, runner and zygote are pyexec's own processes: the server (another uid than the
	// code's, where the identity layer is in force), the runner (the code's uid) and the
	// runner's zygote (0 in spawn mode).
	server, runner, zygote int
	// other is another session's directory, which the attacks aim at as if the code had learnt
	// its name (attack 27 checks that it cannot); otherID is that session's id.
	other, otherID string
	// owned are what the server owns, as they were before the attacks.
	owned    []ownedPath
	tcp      net.Listener
	accepted chan net.Conn
	// inSession says the attack runs as a call in a session of its own.
	inSession bool
	// refusedRunners counts the connections to the runner socket that code made (attack 29):
	// the server must have refused as many.
	refusedRunners int
}

func (h *hostile) expand(code string) string {
	owned := make([]string, len(h.owned))
	for i, o := range h.owned {
		owned[i] = fmt.Sprintf("(%q, %q, %s)", o.key, o.path, map[bool]string{true: "True", false: "False"}[o.socket])
	}
	return strings.NewReplacer(
		"{{SOCKET}}", h.s.socket,
		"{{PACKAGES}}", filepath.Join(h.dir, "packages"),
		"{{WORK}}", filepath.Join(h.dir, "work"),
		"{{REPORT}}", filepath.Join(filepath.Dir(h.s.socket), "preflight.json"),
		"{{RUNNER_SOCKET}}", h.s.runnerSocket,
		"{{OTHER}}", h.other,
		"{{OWNED}}", "["+strings.Join(owned, ", ")+"]",
		"{{SERVER}}", strconv.Itoa(h.server),
		"{{RUNNER}}", strconv.Itoa(h.runner),
		"{{ZYGOTE}}", strconv.Itoa(h.zygote),
		"{{PORT}}", strconv.Itoa(h.tcp.Addr().(*net.TCPAddr).Port),
	).Replace(code)
}

// alive says whether the server, the runner and the zygote all live.
func (h *hostile) alive() bool {
	return syscall.Kill(h.server, 0) == nil && syscall.Kill(h.runner, 0) == nil && (h.zygote == 0 || syscall.Kill(h.zygote, 0) == nil)
}

// attempts is Python that tries each call and prints "OPEN name" or "blocked name".
const attempts = `
import os, signal, socket, sys, time
def attempt(name, f):
    try:
        f()
        print("OPEN", name, flush=True)
    except Exception as e:
        print("blocked", name, type(e).__name__, e, flush=True)
`

// noneOpen checks that every attempt ran and was refused for want of permission: an attempt
// that failed for another reason (a path that does not exist) proves nothing.
func noneOpen(t *testing.T, _ *hostile, res *api.ExecuteResult) {
	t.Helper()
	for _, line := range strings.Split(strings.TrimSpace(res.Stdout), "\n") {
		if strings.HasPrefix(line, "blocked ") && !strings.Contains(line, "PermissionError") {
			t.Errorf("an attempt failed, but not for want of permission: %s", line)
		}
	}
	if strings.Contains(res.Stdout, "OPEN") || !strings.Contains(res.Stdout, "blocked") {
		t.Errorf("the attack got through:\n%s%s", res.Stdout, res.Stderr)
	}
}

var attacks = []attack{
	{name: "19 write junk to the outputs file", layers: []string{layerServer},
		code: `
import os
def outputs(f):
    try:
        return os.readlink("/proc/self/fd/" + f).endswith("outputs.jsonl")
    except OSError:  # the listing's own descriptor
        return False
fd = [int(f) for f in os.listdir("/proc/self/fd") if outputs(f)][0]
os.write(fd, b"not json\n" + b'{"type": "stream", "data": {"text/plain": "x"}}\n' + b'{"type": "display_data", "data": {}}\n')
os.write(fd, b"x" * (9 << 20))  # one line of 9 MiB, no newline
print("done")
`, check: func(t *testing.T, h *hostile, res *api.ExecuteResult) {
			if res.Stdout != "done\n" || res.Reason != api.ReasonExit || len(res.Outputs) != 0 {
				t.Errorf("%+v", res)
			}
		}},
	{name: "18 leave a directory the server cannot remove", layers: []string{layerServer},
		code: `
import os
for i in range(20):  # deeper than PATH_MAX
    os.mkdir("d" * 250)
    os.chdir("d" * 250)
os.mkdir("locked")
open("locked/f", "w").write("x")
os.chmod("locked", 0)
os.chmod(".", 0o500)
print("done")
`, check: func(t *testing.T, h *hostile, res *api.ExecuteResult) {
			if res.Stdout != "done\n" {
				t.Fatalf("the tree was not made: %+v", res)
			}
			// The tree, wherever it was: an execution's or a session's directory (a session
			// started ahead of time has its own, which stays).
			h.noDirsLeft(t)
		}},
	{name: "17 use a descriptor the server or the supervisor holds", layers: []string{layerServer},
		code: `
import os
for fd in sorted(os.listdir("/proc/self/fd"), key=int):
    try:
        print(fd, os.readlink("/proc/self/fd/" + fd))
    except OSError:
        pass  # the listing's own descriptor
`, check: func(t *testing.T, h *hostile, res *api.ExecuteResult) {
			// The code holds its three streams (pipes), the socket on which it reports its end to
			// its supervisor, and the file of its own rich outputs. A session's interpreter holds
			// its socket to its own supervisor, and /dev/null for between calls.
			own := func(l string) bool {
				return strings.Contains(l, " pipe:[") || strings.Contains(l, " socket:[") || strings.HasSuffix(l, "/outputs.jsonl")
			}
			want := 5
			if h.inSession {
				want = 6
				own = func(l string) bool {
					return strings.Contains(l, " pipe:[") || strings.HasSuffix(l, "/outputs.jsonl") || strings.Contains(l, " socket:[") || strings.HasSuffix(l, " /dev/null")
				}
			}
			lines := strings.Split(strings.TrimSpace(res.Stdout), "\n")
			if len(lines) != want || strings.Contains(res.Stdout, "inherited-secret") {
				t.Fatalf("the code's descriptors:\n%s%s", res.Stdout, res.Stderr)
			}
			for _, l := range lines {
				if !own(l) {
					t.Errorf("a descriptor that is not one of the execution's own: %s", l)
				}
			}
		}},
	{name: "12 run code in the supervisor through the request's files and env", layers: []string{layerServer},
		code: "import os\nprint(os.environ['LD_PRELOAD'], os.environ['PYTHONPATH'].split(os.pathsep)[0])\n",
		env:  map[string]string{"LD_PRELOAD": "/nonexistent/pyexec-preload.so", "PYTHONPATH": "."},
		files: []api.InputFile{
			{Path: "json.py", ContentBase64: b64("open('{{PACKAGES}}/pwned-json', 'w')\n")},
			{Path: ".local/lib/python3.11/site-packages/evil.pth", ContentBase64: b64("import os; open('{{PACKAGES}}/pwned-pth', 'w')\n")},
		},
		check: func(t *testing.T, h *hostile, res *api.ExecuteResult) {
			if res.Stdout != "/nonexistent/pyexec-preload.so .\n" {
				t.Errorf("the code did not get the request's env: %+v", res)
			}
			if strings.Contains(res.Stderr, "LD_PRELOAD") {
				t.Errorf("the request's LD_PRELOAD reached a process before the code's: %s", res.Stderr)
			}
			for _, f := range []string{"pwned-json", "pwned-pth"} {
				if _, err := os.Stat(filepath.Join(h.dir, "packages", f)); err == nil {
					t.Errorf("a request file ran unconfined: packages/%s was written", f)
				}
			}
		}},
	{name: "14 signal the server through F_SETOWN and F_SETSIG", layers: []string{confine.LayerScopedSignals, confine.LayerSeccomp},
		code: attempts + `
import fcntl
def setown(pid):
    r, w = os.pipe()
    fcntl.fcntl(r, fcntl.F_SETOWN, pid)
    fcntl.fcntl(r, 10, signal.SIGKILL)  # F_SETSIG
    fcntl.fcntl(r, fcntl.F_SETFL, fcntl.fcntl(r, fcntl.F_GETFL) | os.O_ASYNC)
    os.write(w, b"x")
attempt("F_SETOWN the server", lambda: setown({{SERVER}}))
attempt("F_SETOWN the runner", lambda: setown({{RUNNER}}))
if {{ZYGOTE}}:
    attempt("F_SETOWN the zygote", lambda: setown({{ZYGOTE}}))
time.sleep(0.2)
`, check: func(t *testing.T, h *hostile, res *api.ExecuteResult) {
			// With scoped signals fcntl succeeds and the kernel drops the signal: the check
			// that counts is from outside.
			if !h.alive() {
				t.Errorf("the server, the runner or the zygote died:\n%s", res.Stdout)
			}
		}},
	{name: "15 leave something through IPC, extended attributes, inotify", layers: []string{confine.LayerSeccomp},
		code: attempts + `
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
def check(r):
    if r == -1:
        raise PermissionError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
attempt("shmget", lambda: check(libc.shmget(0, 1 << 20, 0o1600)))
attempt("msgget", lambda: check(libc.msgget(0x5059, 0o1600)))
attempt("semget", lambda: check(libc.semget(0x5059, 1, 0o1600)))
attempt("mq_open", lambda: check(ctypes.CDLL("librt.so.1", use_errno=True).mq_open(b"/pyexec-hostile", os.O_CREAT | os.O_RDWR, 0o600, None)))
attempt("setxattr on the work dir", lambda: os.setxattr(".", "user.left", b"x"))
attempt("inotify on the work root", lambda: check(libc.inotify_add_watch(libc.inotify_init(), b"{{WORK}}", 0xfff)))
`, check: noneOpen},
	// Landlock's scope keeps the code from connecting to a name outside its domain, not from
	// binding one, which the app (in the pod's network namespace) might then connect to:
	// seccomp alone stops the bind.
	{name: "16 an abstract socket through a socketpair", layers: []string{confine.LayerSeccomp},
		code: attempts + `
def abstract():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.bind("\0pyexec-hostile")
attempt("bind an abstract name", abstract)
`, check: noneOpen},
	{name: "1 replace the API socket", layers: []string{confine.LayerFilesystem, confine.LayerIdentity},
		code: attempts + `
attempt("unlink socket", lambda: os.unlink("{{SOCKET}}"))
attempt("rename socket", lambda: os.rename("{{SOCKET}}", "{{SOCKET}}.old"))
def listen():
    s = socket.socket(socket.AF_UNIX)
    s.bind("{{SOCKET}}.new")
attempt("listen beside it", listen)
`, check: func(t *testing.T, h *hostile, res *api.ExecuteResult) {
			noneOpen(t, h, res)
			var st syscall.Stat_t
			if err := syscall.Stat(h.s.socket, &st); err != nil || st.Ino != h.sockIno {
				t.Errorf("the socket was replaced: %v (inode %d, was %d)", err, st.Ino, h.sockIno)
			}
		}},
	{name: "2 plant code in the packages dir", layers: []string{confine.LayerFilesystem, confine.LayerIdentity},
		code: attempts + `
tree = os.path.realpath("{{PACKAGES}}/current")
attempt("sitecustomize in the tree", lambda: open(os.path.join(tree, "sitecustomize.py"), "w").write("print('pwned')"))
attempt("csv.py in the tree", lambda: open(os.path.join(tree, "csv.py"), "w").write("print('pwned')"))
attempt("new tree", lambda: os.mkdir("{{PACKAGES}}/trees/evil"))
attempt("re-point current", lambda: os.symlink("/tmp", "{{PACKAGES}}/current.evil"))
`, check: func(t *testing.T, h *hostile, res *api.ExecuteResult) {
			noneOpen(t, h, res)
			next := h.s.execute(t, api.ExecuteRequest{Code: "import csv\nprint('ok')"})
			if next.Stdout != "ok\n" {
				t.Errorf("the next execution ran planted code: %+v", next)
			}
		}},
	{name: "3 read the server's secrets", layers: []string{confine.LayerFilesystem, confine.LayerNonDumpable},
		code: attempts + `
for pid in ("{{SERVER}}", "{{RUNNER}}", "{{ZYGOTE}}", str(os.getppid())):
    for f in ("environ", "mem", "cmdline"):
        attempt("%s/%s" % (pid, f), lambda: print(open("/proc/%s/%s" % (pid, f), "rb").read(64)))
`, check: func(t *testing.T, h *hostile, res *api.ExecuteResult) {
			if strings.Contains(res.Stdout, "hunter2") {
				t.Errorf("the server's environment leaked:\n%s", res.Stdout)
			}
			for _, f := range []string{"environ", "mem"} {
				for _, pid := range []int{h.server, h.runner, h.zygote} {
					if strings.Contains(res.Stdout, "OPEN "+strconv.Itoa(pid)+"/"+f) {
						t.Errorf("/proc/%d/%s of the server, the runner or the zygote was readable:\n%s", pid, f, res.Stdout)
					}
				}
			}
		}},
	{name: "4 kill the server, the runner, the zygote, the supervisor, everyone", layers: []string{confine.LayerScopedSignals, confine.LayerSeccomp},
		code: attempts + `
attempt("kill server", lambda: os.kill({{SERVER}}, signal.SIGKILL))
attempt("kill runner", lambda: os.kill({{RUNNER}}, signal.SIGKILL))
if {{ZYGOTE}}:
    attempt("kill zygote", lambda: os.kill({{ZYGOTE}}, signal.SIGKILL))
attempt("kill supervisor", lambda: os.kill(os.getppid(), signal.SIGKILL))
attempt("killpg server", lambda: os.killpg(os.getpgid({{SERVER}}), signal.SIGKILL))
def join_and_kill(pid):
    # In a child: where it joins the group (no seccomp), kill(0) reaches the child itself, and
    # whom else is judged from outside.
    child = os.fork()
    if child == 0:
        try:
            os.setpgid(0, os.getpgid(pid))
        except OSError:
            os._exit(3)
        os.kill(0, signal.SIGKILL)
        os._exit(4)
    _, st = os.waitpid(child, 0)
    if os.WIFEXITED(st) and os.WEXITSTATUS(st) == 3:
        raise PermissionError("setpgid refused")
    # Joined: whether kill(0) reached anyone but the child is checked from outside.
    raise PermissionError("joined the group of %d; kill(0) ended the child (status %d)" % (pid, st))
attempt("killpg runner", lambda: os.killpg(os.getpgid({{RUNNER}}), signal.SIGKILL))
attempt("join the server's group and kill it", lambda: join_and_kill({{SERVER}}))
attempt("join the runner's group and kill it", lambda: join_and_kill({{RUNNER}}))
if {{ZYGOTE}}:
    attempt("join the zygote's group and kill it", lambda: join_and_kill({{ZYGOTE}}))
try:  # succeeds when every process it may not signal is skipped: checked from outside
    os.kill(-1, signal.SIGKILL)
except OSError as e:
    print("blocked kill -1", type(e).__name__, e)
print("still running")
`, check: func(t *testing.T, h *hostile, res *api.ExecuteResult) {
			noneOpen(t, h, res)
			if !strings.Contains(res.Stdout, "still running") {
				t.Errorf("the code's own process died: %+v", res)
			}
			if !h.alive() {
				t.Errorf("the server, the runner or the zygote died")
			}
			if res.Reason != api.ReasonExit || res.ExitCode != 0 {
				t.Errorf("the code's own execution was cut short: %+v", res)
			}
		}},
	{name: "22 set the limits and the priority of the server, the runner, the zygote", layers: []string{confine.LayerSeccomp},
		code: attempts + `
import resource
for what, pid in (("server", {{SERVER}}), ("runner", {{RUNNER}}), ("zygote", {{ZYGOTE}})):
    if pid:
        attempt("prlimit the " + what, lambda: resource.prlimit(pid, resource.RLIMIT_NOFILE, (4, 4)))
        attempt("renice the " + what, lambda: os.setpriority(os.PRIO_PROCESS, pid, 19))
`, check: func(t *testing.T, h *hostile, res *api.ExecuteResult) {
			noneOpen(t, h, res)
			for _, pid := range []int{h.server, h.runner, h.zygote} {
				if pid == 0 {
					continue
				}
				limits, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/limits")
				if err != nil || !strings.Contains(string(limits), "Max open files") || regexp.MustCompile(`Max open files +4 +4 `).Match(limits) {
					t.Errorf("the limits of %d changed (%v):\n%s", pid, err, limits)
				}
				// The test's own priority: the server's and the runner's, as they started.
				want, _ := syscall.Getpriority(syscall.PRIO_PROCESS, 0)
				if prio, err := syscall.Getpriority(syscall.PRIO_PROCESS, pid); err != nil || prio != want {
					t.Errorf("%d was reniced: priority %d, want %d (%v)", pid, prio, want, err)
				}
			}
		}},
	{name: "6 leave files for the next execution", layers: []string{confine.LayerFilesystem},
		code: attempts + `
for d in ("/tmp", "/var/tmp", "{{WORK}}"):
    attempt("write " + d, lambda: open(os.path.join(d, "pyexec-hostile-left"), "w").write("x"))
# /dev/shm holds multiprocessing's semaphores: a name may be used there, none listed.
attempt("list /dev/shm", lambda: os.listdir("/dev/shm"))
`, check: func(t *testing.T, h *hostile, res *api.ExecuteResult) {
			noneOpen(t, h, res)
			for _, d := range []string{"/tmp", "/var/tmp", filepath.Join(h.dir, "work")} {
				if _, err := os.Stat(filepath.Join(d, "pyexec-hostile-left")); err == nil {
					os.Remove(filepath.Join(d, "pyexec-hostile-left"))
					t.Errorf("a file was left in %s", d)
				}
			}
		}},
	{name: "8 call the API from inside", layers: []string{confine.LayerSeccomp},
		code: attempts + `
def connect():
    s = socket.socket(socket.AF_UNIX)
    s.connect("{{SOCKET}}")
attempt("connect to the socket", connect)
attempt("abstract socket", lambda: socket.socket(socket.AF_UNIX).bind("\0pyexec-hostile"))
`, check: noneOpen},
	{name: "9 forge the result", layers: []string{confine.LayerSeccomp},
		code: `
import os, sys
for fd in range(3, 64):
    try:
        os.write(fd, b'{"exit_code": 0, "memory_error": true}\n')
    except OSError:
        pass
sys.exit(3)
`, check: func(t *testing.T, h *hostile, res *api.ExecuteResult) {
			if res.Reason != api.ReasonExit || res.ExitCode != 3 {
				t.Errorf("sys.exit(3) came back as %s, exit %d", res.Reason, res.ExitCode)
			}
		}},
	{name: "10 reach the network", layers: []string{confine.LayerNetwork},
		code: attempts + `
attempt("tcp connect", lambda: socket.create_connection(("127.0.0.1", {{PORT}}), timeout=2))
attempt("udp send", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", {{PORT}})))
attempt("raw", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, 1))
`, check: func(t *testing.T, h *hostile, res *api.ExecuteResult) {
			noneOpen(t, h, res)
			select {
			case c := <-h.accepted:
				c.Close()
				t.Errorf("the code connected to a listener of the test")
			default:
			}
		}},
}

// TestHostileCode runs the attacks against a sidecar in the pod's configuration (the server
// and the runner as uids of their own), in both modes, and checks from outside that each
// failed and that the next genuine request gets a genuine result. Where a layer is missing —
// a Landlock ABI capped as on older kernels, no seccomp filter, or one uid for the server and
// the runner (a non-root server outside Kubernetes) — an attack whose layers are all missing
// is reported as open, not passed.
//
// Where sessions is set, every attack runs again as a call in a session of its own (deleted
// before the check), and a session attacks another.
func TestHostileCode(t *testing.T) {
	for _, tc := range []struct {
		mode     string
		abi      int
		sessions bool
		// noSeccomp runs code without the seccomp filter (--seccomp=false); oneUID starts the
		// runner as the server's child, as its uid.
		noSeccomp, oneUID bool
	}{
		{mode: "fork", abi: confine.NoCap, sessions: true}, {mode: "spawn", abi: confine.NoCap, sessions: true}, {mode: "fork", abi: 5, sessions: true},
		{mode: "spawn", abi: 3}, {mode: "fork", abi: 0},
		{mode: "fork", abi: confine.NoCap, noSeccomp: true}, {mode: "fork", abi: confine.NoCap, oneUID: true},
	} {
		name := fmt.Sprintf("%s/abi=%d", tc.mode, tc.abi)
		if tc.noSeccomp {
			name += ",seccomp=false"
		}
		if tc.oneUID {
			name += ",one-uid"
		}
		t.Run(name, func(t *testing.T) {
			args := []string{"--mode", tc.mode, "--max-landlock-abi", strconv.Itoa(tc.abi)}
			if tc.noSeccomp {
				args = append(args, "--seccomp=false")
			}
			h := newHostileWith(t, podOptions{oneUID: tc.oneUID}, args...)
			kernel := confine.Probe(tc.abi)
			kernel.Seccomp = kernel.Seccomp && !tc.noSeccomp
			active := map[string]bool{layerServer: true}
			for _, l := range append(kernel.Layers(), confine.IdentityLayer(!tc.oneUID)) {
				active[l.Name] = l.Active
			}
			h.sameLayers(t, active)
			// Only the pod on this kernel, with every layer, may have none missing.
			full := tc.abi == confine.NoCap && !tc.noSeccomp && !tc.oneUID
			for _, a := range slices.Concat(attacks, ownershipAttacks) {
				if a.runnerSocket && h.s.runnerSocket == "" {
					t.Logf("SKIPPED %q: the server starts its runner itself, on no socket", a.name)
					continue
				}
				open := !slices.ContainsFunc(a.layers, func(l string) bool { return active[l] })
				switch {
				case open && full:
					t.Errorf("this kernel lacks %v: attack %q is open", a.layers, a.name)
					continue
				case open && a.open == nil:
					t.Logf("OPEN in %s (no %v): %s", name, a.layers, a.name)
					continue
				}
				req := api.ExecuteRequest{Code: h.expand(a.code), TimeoutSeconds: seconds(20), Env: a.env}
				for _, f := range a.files {
					content, _ := base64.StdEncoding.DecodeString(f.ContentBase64)
					req.Files = append(req.Files, api.InputFile{Path: f.Path, ContentBase64: b64(h.expand(string(content)))})
				}
				check := a.check
				if open {
					check = a.open
				}
				t.Run(a.name, func(t *testing.T) {
					res := h.s.execute(t, req)
					check(t, h, res)
					h.genuine(t)
				})
				if tc.sessions && !a.noSession {
					t.Run("session/"+a.name, func(t *testing.T) {
						h.inSession = true
						defer func() { h.inSession = false }()
						res := h.inOwnSession(t, req)
						check(t, h, res)
						h.genuine(t)
					})
				}
			}
			t.Run("27 find another session's directory", func(t *testing.T) { h.findOtherDir(t, active) })
			// The identity stops it whatever the Landlock ABI: it runs on this kernel's.
			if tc.abi == confine.NoCap {
				t.Run("28 chmod what the server owns, every millisecond, from a session's thread", func(t *testing.T) { h.chmodLoop(t, active) })
			}
			if tc.sessions {
				t.Run("20 reach another session", func(t *testing.T) { h.otherSession(t, active) })
				t.Run("21 fill the uid's descriptors in flight", h.inflight)
			}
			// Landlock, scoped signals and the server stop these: the variants without seccomp
			// or with one uid add nothing to them.
			if !tc.noSeccomp && !tc.oneUID {
				t.Run("5 read another execution's files", func(t *testing.T) { h.otherExecution(t, active) })
				t.Run("13 find an earlier request's env in memory", h.envInMemory)
			}
			if tc.noSeccomp {
				t.Run("32 take the runner's place when it goes", func(t *testing.T) { h.runnerGoes(t, active) })
			}
			t.Run("network true is refused", func(t *testing.T) {
				yes := true
				_, err := h.s.client.Execute(context.Background(), api.ExecuteRequest{Code: "print(1)", Network: &yes})
				var apiErr *client.APIError
				if !errors.As(err, &apiErr) || apiErr.Code != api.ErrCodeForbidden {
					t.Fatalf("network: true on a --network deny server: %v", err)
				}
			})
		})
	}
	t.Run("30 run the runner out of memory", testRunnerOOM)
}

func newHostile(t *testing.T, args ...string) *hostile {
	t.Helper()
	return newHostileWith(t, podOptions{}, args...)
}

func newHostileWith(t *testing.T, o podOptions, args ...string) *hostile {
	t.Helper()
	s := podSidecar(t, o, args...)
	h := &hostile{s: s, dir: filepath.Dir(filepath.Dir(s.socket)), server: s.cmd.Process.Pid, accepted: make(chan net.Conn, 4)}
	var st syscall.Stat_t
	if err := syscall.Stat(s.socket, &st); err != nil {
		t.Fatal(err)
	}
	h.sockIno = st.Ino
	if s.runner != nil {
		h.runner = s.runner.cmd.Process.Pid
	} else if h.runner = runnerOf(h.server); h.runner == 0 {
		t.Fatal("no runner below the server")
	}
	h.zygote = zygoteOf(h.runner)
	if slices.Contains(args, "fork") && h.zygote == 0 {
		t.Fatal("fork mode, and no zygote below the runner: the attacks on it would not run")
	}
	h.startOther(t)
	h.owned = h.ownedPaths(t)
	var err error
	if h.tcp, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.tcp.Close() })
	go func() {
		for {
			c, err := h.tcp.Accept()
			if err != nil {
				return
			}
			h.accepted <- c
		}
	}()
	return h
}

// runnerOf returns the pid of the runner the server started as its child, 0 if there is none.
func runnerOf(server int) int {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, p := range readProcTable() {
			if p.ppid == server && isRunner(p.pid) {
				return p.pid
			}
		}
	}
	return 0
}

// genuine checks that the sidecar still serves genuine results, and says it is ready.
func (h *hostile) genuine(t *testing.T) {
	t.Helper()
	res := h.s.execute(t, api.ExecuteRequest{Code: "print(6 * 7)"})
	if res.Stdout != "42\n" || res.Reason != api.ReasonExit {
		t.Fatalf("the next genuine request: %+v", res)
	}
	resp, err := http.Get("http://" + h.s.probe + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz: %d", resp.StatusCode)
	}
}

// otherExecution runs a victim that keeps a secret in its work dir while an attacker looks
// for it through the work root and /proc, and signals it.
func (h *hostile) otherExecution(t *testing.T, active map[string]bool) {
	victim := "import os, time\nopen('secret.txt', 'w').write('s3cr3t-' + 'of-the-victim')\nprint(os.getpid(), flush=True)\ntime.sleep(4)\nprint('survived')"
	var wg sync.WaitGroup
	var vres *api.ExecuteResult
	var verr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		vres, verr = h.s.client.Execute(context.Background(), api.ExecuteRequest{Code: victim})
	}()
	time.Sleep(1500 * time.Millisecond) // the victim is running: its sleep lasts 4 s
	attacker := h.expand(attempts + `
import glob
for path in glob.glob("{{WORK}}/*/work/secret.txt") + glob.glob("/proc/[0-9]*/cwd/secret.txt"):
    attempt("read " + path, lambda: print(open(path).read()))
attempt("list the work root", lambda: print(os.listdir("{{WORK}}")))
# Every other process but the server, the runner, the zygote and the supervisor (attack 4):
# the victim's among them. Processes of other uids refuse anyway.
for pid in os.listdir("/proc"):
    if pid.isdigit() and int(pid) not in (os.getpid(), os.getppid(), {{SERVER}}, {{RUNNER}}, {{ZYGOTE}}):
        try:
            os.kill(int(pid), signal.SIGKILL)
            print("killed", pid)
        except OSError:
            pass
`)
	res := h.s.execute(t, api.ExecuteRequest{Code: attacker, TimeoutSeconds: seconds(10)})
	wg.Wait()
	if verr != nil {
		t.Fatalf("the victim's request: %v", verr)
	}
	read := strings.Contains(res.Stdout, "s3cr3t-of-the-victim") || strings.Contains(res.Stdout, "OPEN list the work root")
	switch {
	case !read:
	case active[confine.LayerFilesystem]:
		t.Errorf("the attacker read the victim's directory:\n%s", res.Stdout)
	default:
		t.Logf("OPEN without Landlock: the attacker read another execution's files")
	}
	switch {
	case strings.HasSuffix(vres.Stdout, "survived\n"):
	case active[confine.LayerScopedSignals]:
		t.Errorf("the attacker killed the victim: %+v\nattacker: %s", vres, res.Stdout)
	default:
		t.Logf("OPEN without scoped signals: the attacker killed another execution (%s)", vres.Reason)
	}
	h.genuine(t)
}

// inOwnSession runs req as the one call of a session made for it, and deletes the session
// (unless the call ended it) before returning the result: checks then look at what is left.
func (h *hostile) inOwnSession(t *testing.T, req api.ExecuteRequest) *api.ExecuteResult {
	t.Helper()
	ctx := context.Background()
	sess, err := h.s.client.CreateSession(ctx, api.SessionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := h.s.client.SessionExecute(ctx, sess.ID, req)
	if err != nil {
		t.Fatal(err)
	}
	var apiErr *client.APIError
	if err := h.s.client.DeleteSession(ctx, sess.ID); err != nil && !(errors.As(err, &apiErr) && apiErr.Code == api.ErrCodeSessionNotFound && res.SessionLost) {
		t.Fatalf("deleting the session: %v", err)
	}
	return res
}

// otherSession: a session keeps a secret in its globals and its files while another session
// looks for it through the work root, /proc and the victim's memory, and signals every
// process it can. The victim must answer afterwards with its secret intact.
func (h *hostile) otherSession(t *testing.T, active map[string]bool) {
	ctx := context.Background()
	victim, err := h.s.client.CreateSession(ctx, api.SessionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.s.client.DeleteSession(ctx, victim.ID)
	res, err := h.s.client.SessionExecute(ctx, victim.ID, api.ExecuteRequest{Code: "import os\nsecret = 's3cr3t-' + 'of-the-session'\nopen('secret.txt', 'w').write(secret)\nprint(os.getpid())"})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("the victim: %+v %v", res, err)
	}
	victimPID := strings.TrimSpace(res.Stdout)
	attacker := h.expand(attempts + `
import glob
for path in glob.glob("{{WORK}}/*/work/secret.txt") + glob.glob("/proc/[0-9]*/cwd/secret.txt"):
    attempt("read " + path, lambda: print(open(path).read()))
attempt("list the work root", lambda: print(os.listdir("{{WORK}}")))
attempt("read the victim's environ", lambda: print(open("/proc/` + victimPID + `/environ").read()))
def peek():
    with open("/proc/` + victimPID + `/mem", "rb") as f:
        print(f.read(16))
attempt("read the victim's memory", peek)
for pid in os.listdir("/proc"):
    if pid.isdigit() and int(pid) not in (os.getpid(), os.getppid(), {{SERVER}}, {{RUNNER}}, {{ZYGOTE}}):
        try:
            os.kill(int(pid), signal.SIGSTOP)
            os.kill(int(pid), signal.SIGKILL)
            print("killed", pid)
        except OSError:
            pass
`)
	res = h.inOwnSession(t, api.ExecuteRequest{Code: attacker, TimeoutSeconds: seconds(10)})
	read := strings.Contains(res.Stdout, "s3cr3t-of-the-session") || strings.Contains(res.Stdout, "OPEN list the work root")
	switch {
	case strings.Contains(res.Stdout, "OPEN read the victim"):
		t.Errorf("the attacker read the victim's /proc files:\n%s", res.Stdout)
	case !read:
	case active[confine.LayerFilesystem]:
		t.Errorf("the attacker read the victim's files:\n%s", res.Stdout)
	default:
		t.Logf("OPEN without Landlock: a session read another's files")
	}
	after, err := h.s.client.SessionExecute(ctx, victim.ID, api.ExecuteRequest{Code: "print(secret, open('secret.txt').read())"})
	switch {
	case err == nil && after.Stdout == "s3cr3t-of-the-session s3cr3t-of-the-session\n":
	case active[confine.LayerScopedSignals]:
		t.Errorf("the victim session did not survive the attacker: %+v %v\nattacker: %s", after, err, res.Stdout)
	default:
		t.Logf("OPEN without scoped signals: a session killed another (%v)", err)
	}
	h.genuine(t)
}

// inflight: a session puts descriptors in flight on socketpairs of its own until the kernel
// refuses, and keeps them there. The kernel counts them per uid, against the sender's limit of
// open files: were the code's as high as the server's, the server, the zygote and the
// supervisors (the same uid) could pass no descriptor any more, and every other session's call
// and every new session would fail. The code's limit is far lower (executor.codeOpenFiles).
func (h *hostile) inflight(t *testing.T) {
	ctx := context.Background()
	victim, err := h.s.client.CreateSession(ctx, api.SessionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.s.client.DeleteSession(ctx, victim.ID)
	if res, err := h.s.client.SessionExecute(ctx, victim.ID, api.ExecuteRequest{Code: "secret = 42"}); err != nil || res.ExitCode != 0 {
		t.Fatalf("the victim: %+v %v", res, err)
	}
	attacker, err := h.s.client.CreateSession(ctx, api.SessionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.s.client.DeleteSession(ctx, attacker.ID)
	res, err := h.s.client.SessionExecute(ctx, attacker.ID, api.ExecuteRequest{TimeoutSeconds: seconds(20), Code: `
import array, resource, socket
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
except (ValueError, OSError) as e:
    print("raise refused:", e)
KEEP, sent, fds = [], 0, array.array("i", [0] * 253)
try:
    while True:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        a.setblocking(False)
        KEEP.append((a, b))
        while True:
            try:
                a.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
                sent += len(fds)
            except BlockingIOError:
                break
except OSError as e:
    print("stopped:", sent, "in flight,", e)
`})
	if err != nil || !strings.Contains(res.Stdout, "stopped:") {
		t.Fatalf("the attack did not run to the kernel's refusal: %+v %v", res, err)
	}
	t.Logf("attacker: %s", strings.TrimSpace(res.Stdout))
	// From outside, while the descriptors stay in flight: the victim's next call, a new session
	// and a plain execution.
	if r, err := h.s.client.SessionExecute(ctx, victim.ID, api.ExecuteRequest{Code: "print(secret)"}); err != nil || r.Stdout != "42\n" {
		t.Errorf("the victim session's call: %+v %v", r, err)
	}
	fresh, err := h.s.client.CreateSession(ctx, api.SessionRequest{})
	if err != nil {
		t.Errorf("a new session: %v", err)
	} else {
		defer h.s.client.DeleteSession(ctx, fresh.ID)
		if r, err := h.s.client.SessionExecute(ctx, fresh.ID, api.ExecuteRequest{Code: "print(6 * 7)"}); err != nil || r.Stdout != "42\n" {
			t.Errorf("a new session's call: %+v %v", r, err)
		}
	}
	h.genuine(t)
}

// zygoteOf returns the pid of the zygote below root (the server, or its runner), 0 if there is
// none.
func zygoteOf(root int) int {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		procs := readProcTable()
		below := map[int]bool{root: true}
		for changed := true; changed; {
			changed = false
			for _, p := range procs {
				if below[p.ppid] && !below[p.pid] {
					below[p.pid], changed = true, true
				}
			}
		}
		for _, p := range procs {
			if below[p.pid] && comm(p.pid) == "pyexec-zygote" {
				return p.pid
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return 0
}

// On a kernel that lacks a layer (here: Landlock capped at ABI 5, no scoped signals), the
// sidecar says so everywhere and warns once; with --require-isolation it refuses to start and
// names the layer.
func TestServeSaysWhatIsolationIsMissing(t *testing.T) {
	s := startSidecar(t, nil, "--max-landlock-abi", "5", "--mode", "spawn")
	info, err := s.client.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	iso := info.Isolation
	if iso == nil || iso.LandlockABI != 5 || iso.Network != "deny" {
		t.Fatalf("/v1/info isolation: %+v", iso)
	}
	for _, l := range iso.Layers {
		if (l.Name == confine.LayerScopedSignals) == l.Active || (!l.Active && l.Missing == "") {
			t.Errorf("layer %+v", l)
		}
	}
	if warn := s.logs("WARNING: executions are not fully confined"); len(warn) != 1 || !strings.Contains(fmt.Sprint(warn[0]["missing"]), confine.LayerScopedSignals) {
		t.Errorf("want one warning naming %s: %v", confine.LayerScopedSignals, warn)
	}
	ready := s.logs("ready")
	if len(ready) != 1 || !strings.Contains(fmt.Sprint(ready[0]["isolation"]), "scoped_signals=false") {
		t.Errorf("ready line: %v", ready)
	}
	if v := metric(t, s, `pyexec_isolation_layer_active{layer="scoped_signals"}`); v != 0 {
		t.Errorf("scoped_signals metric %v", v)
	}
	if v := metric(t, s, `pyexec_isolation_layer_active{layer="landlock_filesystem"}`); v != 1 {
		t.Errorf("landlock_filesystem metric %v", v)
	}

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command(self, "serve", "--python", testutil.SystemPython, "--socket", filepath.Join(dir, "s.sock"), "--probe-addr", "",
		"--report", filepath.Join(dir, "r.json"), "--work-dir", filepath.Join(dir, "w"), "--max-landlock-abi", "5", "--require-isolation")
	cmd.Env = []string{"PYEXEC_TEST_AS_MAIN=1", "PYEXEC_CONTAINER=true", "PATH=/usr/bin:/bin"}
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || !strings.Contains(string(out), "--require-isolation: "+confine.LayerScopedSignals) || !strings.Contains(string(out), "To fix: run the pod on nodes") {
		t.Fatalf("--require-isolation on a kernel without scoped signals: %v\n%s", err, out)
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// envInMemory sends a request whose env holds a secret, then attackers that scan their own
// memory for it: in fork mode they are forked from the zygote and from the supervisors and
// spares that served earlier requests, so a value that passed through one of them would be
// found.
func (h *hostile) envInMemory(t *testing.T) {
	victim := h.s.execute(t, api.ExecuteRequest{Code: "import os\nprint(len(os.environ['PYEXEC_HOSTILE_SECRET']))",
		Env: map[string]string{"PYEXEC_HOSTILE_SECRET": "s3cr3t-env-VALUE-1"}})
	if victim.Stdout != "18\n" {
		t.Fatalf("the victim did not get its env: %+v", victim)
	}
	scan := `
import ctypes
pre, suf, found = b"s3cr3t-env-", b"VAL" + b"UE-1", 0
with open("/proc/self/maps") as maps:
    for line in maps:
        fields = line.split()
        lo, hi = (int(x, 16) for x in fields[0].split("-"))
        if not fields[1].startswith("r") or hi - lo > 1 << 30 or fields[-1].startswith("[v"):
            continue
        data = ctypes.string_at(lo, hi - lo)
        i = data.find(pre)
        while i >= 0:
            found += data[i + len(pre):i + len(pre) + len(suf)] == suf
            i = data.find(pre, i + 1)
print("found" if found else "clean")
`
	// The scanner finds the value where it is: in the memory of the execution it was sent to.
	if res := h.s.execute(t, api.ExecuteRequest{Code: scan, Env: map[string]string{"PYEXEC_HOSTILE_SECRET": "s3cr3t-env-VALUE-1"}}); res.Stdout != "found\n" {
		t.Fatalf("the scanner does not find the value in its own environment: %+v", res)
	}
	for i := range 3 {
		res := h.s.execute(t, api.ExecuteRequest{Code: scan, TimeoutSeconds: seconds(30)})
		if res.Stdout != "clean\n" {
			t.Fatalf("attacker %d: %+v", i, res)
		}
	}
}

// A sidecar in the pod's configuration cannot read the smaps of its non-dumpable zygote: its
// memory metric still counts the zygote's resident memory.
func TestPodSidecarCountsTheZygotesMemory(t *testing.T) {
	h := newHostile(t, "--mode", "fork")
	if h.zygote == 0 {
		t.Fatal("no zygote")
	}
	statm := func(pid int) float64 {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/statm")
		if err != nil {
			t.Fatal(err)
		}
		pages, _ := strconv.ParseFloat(strings.Fields(string(b))[1], 64)
		return pages * float64(os.Getpagesize())
	}
	want := 0.9 * (statm(h.server) + statm(h.zygote))
	if got := metric(t, h.s, "pyexec_sidecar_rss_bytes"); got < want {
		t.Fatalf("pyexec_sidecar_rss_bytes %.0f MiB, want at least %.0f MiB (serve and its zygote)", got/(1<<20), want/(1<<20))
	}
}
