package app

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
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

	"golang.org/x/sys/unix"

	"github.com/pyexec/pyexec/internal/confine"
	"github.com/pyexec/pyexec/internal/executor"
	"github.com/pyexec/pyexec/pkg/api"
	"github.com/pyexec/pyexec/pkg/client"
)

// The attacks on what the server owns (issue 21). The server and the runner run as uids of
// their own: the code, of the runner's uid and in the pod's group, may reach what the server
// owns (its directories are the group's to enter) but owns none of it, so the kernel refuses
// every change of permissions or owner (confine.LayerIdentity). Landlock does not govern
// permissions and seccomp cannot deny every way to change them; ownership is the one layer
// that covers all of them.

// ownedPath is a path the server owns, which code must not change the permissions or the owner
// of.
type ownedPath struct {
	key  string // a word that names it in the attacks' output
	path string
	// socket: it cannot be opened, so an attack through a read-only descriptor does not apply.
	socket bool
	// restored: the server's readiness check puts its mode back (the socket, its directory and
	// the work root), where code could change it (one uid).
	restored bool
	before   fileState
}

// fileState is what an attack on ownership would change.
type fileState struct {
	mode     uint32 // permissions, setuid, setgid and sticky bits
	uid, gid uint32
	ino      uint64 // another file put in its place has another
	acl      bool   // it has a POSIX access ACL
}

func (s fileState) String() string {
	return fmt.Sprintf("mode %#o, owner %d:%d, inode %d, ACL %t", s.mode, s.uid, s.gid, s.ino, s.acl)
}

// stateOf is the state of path, following symbolic links as chmod does.
func stateOf(path string) (fileState, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fileState{}, fmt.Errorf("%s: %w", path, err)
	}
	_, err := unix.Getxattr(path, "system.posix_acl_access", nil)
	return fileState{mode: st.Mode & 0o7777, uid: st.Uid, gid: st.Gid, ino: st.Ino, acl: err == nil}, nil
}

// ownedPaths are what the server owns and the attacks aim at, with their state now.
func (h *hostile) ownedPaths(t *testing.T) []ownedPath {
	t.Helper()
	pkgs, work := filepath.Join(h.dir, "packages"), filepath.Join(h.dir, "work")
	paths := []ownedPath{
		{key: "api-socket", path: h.s.socket, socket: true, restored: true},
		{key: "api-socket-dir", path: filepath.Dir(h.s.socket), restored: true},
		{key: "report", path: filepath.Join(filepath.Dir(h.s.socket), "preflight.json")},
		{key: "work-root", path: work, restored: true},
		{key: "zygote-dir", path: filepath.Join(work, ".zygote")},
		{key: "packages", path: pkgs},
		{key: "packages-current", path: filepath.Join(pkgs, "current")}, // the tree it points to
		{key: "packages-trees", path: filepath.Join(pkgs, "trees")},
		{key: "packages-file", path: filepath.Join(pkgs, "current", "good.py")},
		{key: "other-session", path: h.other},
	}
	if h.s.runnerSocket != "" {
		paths = append(paths, ownedPath{key: "runner-socket", path: h.s.runnerSocket, socket: true},
			ownedPath{key: "runner-socket-dir", path: filepath.Dir(h.s.runnerSocket)})
	}
	for i := range paths {
		st, err := stateOf(paths[i].path)
		if err != nil {
			t.Fatal(err)
		}
		if st.uid != hostileUID {
			t.Fatalf("%s: %v, want the server's", paths[i].path, st)
		}
		paths[i].before = st
	}
	return paths
}

// changedOwned describes, for each owned path, how it changed since the attacks began.
func (h *hostile) changedOwned() map[string]string {
	changed := map[string]string{}
	for _, o := range h.owned {
		st, err := stateOf(o.path)
		switch {
		case err != nil:
			changed[o.key] = err.Error()
		case st != o.before:
			changed[o.key] = fmt.Sprintf("%v, was %v", st, o.before)
		}
	}
	return changed
}

// ownedUnchanged checks from outside that nothing the server owns changed.
func (h *hostile) ownedUnchanged(t *testing.T) {
	t.Helper()
	changed := h.changedOwned()
	for _, o := range h.owned {
		if c := changed[o.key]; c != "" {
			t.Errorf("%s (%s) changed: %s", o.key, o.path, c)
		}
	}
}

// restoreOwned puts back, as root, what an attack that got through changed.
func (h *hostile) restoreOwned(t *testing.T) {
	t.Helper()
	for _, o := range h.owned {
		st, err := stateOf(o.path)
		if err != nil || st == o.before {
			continue
		}
		if st.acl && !o.before.acl {
			_ = unix.Removexattr(o.path, "system.posix_acl_access")
		}
		if err := errors.Join(os.Chown(o.path, int(o.before.uid), int(o.before.gid)), unix.Chmod(o.path, o.before.mode)); err != nil {
			t.Errorf("putting back %s: %v", o.path, err)
		}
	}
}

// startOther starts the session whose directory the attacks aim at (h.other), as if they had
// learnt its name.
func (h *hostile) startOther(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	sess, err := h.s.client.CreateSession(ctx, api.SessionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.s.client.DeleteSession(ctx, sess.ID) })
	res, err := h.s.client.SessionExecute(ctx, sess.ID, api.ExecuteRequest{Code: "import os\nprint(os.getcwd())"})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("the other session: %+v %v", res, err)
	}
	h.other, h.otherID = filepath.Dir(strings.TrimSpace(res.Stdout)), sess.ID
	if filepath.Dir(h.other) != filepath.Join(h.dir, "work") || !executor.IsDirName(filepath.Base(h.other)) {
		t.Fatalf("the other session works in %s, not in a directory of the work root", res.Stdout)
	}
}

// sameLayers checks that /v1/info says of each layer what the test expects, and who runs as
// whom.
func (h *hostile) sameLayers(t *testing.T, active map[string]bool) {
	t.Helper()
	info, err := h.s.client.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range info.Isolation.Layers {
		if want, ok := active[l.Name]; !ok || want != l.Active {
			t.Errorf("/v1/info: layer %s active %t, want %t", l.Name, l.Active, want)
		}
	}
	runnerUID := hostileRunnerUID
	if !active[confine.LayerIdentity] {
		runnerUID = hostileUID
	}
	if id := info.Identity; id == nil || id.ServerUID != hostileUID || id.RunnerUID != runnerUID || id.Separate != active[confine.LayerIdentity] {
		t.Errorf("/v1/info identity %+v, want server %d, runner %d", id, hostileUID, runnerUID)
	}
}

// workDirs are the directories of executions and sessions in the work root, but the other
// session's.
func (h *hostile) workDirs(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(h.dir, "work"))
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, e := range entries {
		if executor.IsDirName(e.Name()) && e.Name() != filepath.Base(h.other) {
			dirs = append(dirs, e.Name())
		}
	}
	return dirs
}

// noDirsLeft checks that no directory of a finished execution or session is left in the work
// root: besides the other session's, only a session started ahead of time (fork mode) has one.
// The server removes a directory once the runner has emptied it, after the result: it is given
// a few seconds for that.
func (h *hostile) noDirsLeft(t *testing.T) {
	t.Helper()
	spares := 0
	if h.zygote > 0 {
		spares = 1
	}
	var dirs []string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if dirs = h.workDirs(t); len(dirs) <= spares || time.Now().After(deadline) {
			break
		}
	}
	if len(dirs) > spares {
		t.Errorf("directories in the work root, want %d (a spare session's) at most: %v", spares, dirs)
	}
}

// owning is Python that changes what the server owns, every path of it ({{OWNED}}) and its
// own directory, in the ways of WAYS: permissions to 0, an ACL that grants the code's uid
// everything, the code's uid as the owner. own() returns "OPEN" or the errno's name.
const owning = `
import ctypes, errno, os, struct
libc = ctypes.CDLL(None, use_errno=True)
def check(r):
    if r != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
def fchmod(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fchmod(fd, 0)
    finally:
        os.close(fd)
def fchmodat2(path):
    fd = os.open(path, os.O_PATH)
    try:  # fchmodat2(fd, "", 0, AT_EMPTY_PATH): 452 on x86_64 and arm64
        check(libc.syscall(452, fd, b"", 0, 0x1000))
    finally:
        os.close(fd)
# user::rwx, user:<the code's uid>:rwx, group::rwx, mask::rwx, other::rwx
ACL = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, 7, who) for tag, who in
    ((0x01, 0xffffffff), (0x02, os.getuid()), (0x04, 0xffffffff), (0x10, 0xffffffff), (0x20, 0xffffffff)))
WAYS = {
    "chmod": lambda path: os.chmod(path, 0),
    "fchmod": fchmod,
    "fchmodat2": fchmodat2,
    "acl": lambda path: os.setxattr(path, "system.posix_acl_access", ACL),
    "fchownat": lambda path: check(libc.fchownat(-100, path.encode(), os.getuid(), os.getgid(), 0)),  # AT_FDCWD
}
# Deepest first: where a change gets through (one uid), a directory at mode 0 would keep what
# is below it out of reach.
OWNED = sorted({{OWNED}} + [("own-dir", os.path.dirname(os.getcwd()), False)], key=lambda o: -o[1].count("/"))
def own(way, path):
    try:
        WAYS[way](path)
        return "OPEN"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
`

// ownAttack is the attack that changes what the server owns in one way of owning's WAYS.
func ownAttack(name, way string, layers []string) attack {
	// From a session it aims at the same paths, and its own directory is the session's: chmod
	// shows that once for every way.
	a := attack{name: name, layers: layers, check: ownershipHolds(way), noSession: way != "chmod",
		code: owning + fmt.Sprintf(`
for key, path, socket in OWNED:
    if not (socket and %[1]q == "fchmod"):  # a socket cannot be opened
        r = own(%[1]q, path)
        print("OPEN" if r == "OPEN" else "blocked", %[1]q, key, r, flush=True)
`, way)}
	if way == "chmod" {
		a.open = ownershipOpen
	}
	return a
}

// ownershipAttacks change the permissions or the owner of what the server owns, each in one
// way: chmod, fchmod on a read-only descriptor, fchmodat2 on an O_PATH descriptor (which needs
// no permission to open), a POSIX ACL through setxattr, fchownat. Then the runner socket:
// connected to as the runner, and replaced.
var ownershipAttacks = []attack{
	ownAttack("11 chmod what the server owns", "chmod", []string{confine.LayerIdentity}),
	ownAttack("23 fchmod what the server owns through a read-only descriptor", "fchmod", []string{confine.LayerIdentity}),
	ownAttack("24 fchmodat2 what the server owns through an O_PATH descriptor", "fchmodat2", []string{confine.LayerIdentity}),
	ownAttack("25 give itself a POSIX ACL on what the server owns", "acl", []string{confine.LayerIdentity, confine.LayerSeccomp}),
	ownAttack("26 chown what the server owns", "fchownat", []string{confine.LayerIdentity}),
	{name: "29 take the runner's place on the runner socket", layers: []string{confine.LayerSeccomp, layerServer}, runnerSocket: true, noSession: true,
		code: `
import json, os, socket, struct
def frame(v):
    b = json.dumps(v).encode()
    return struct.pack(">I", len(b)) + b
try:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect("{{RUNNER_SOCKET}}")
except OSError as e:
    print("blocked connect", type(e).__name__, e)
else:
    print("connected", flush=True)
    # A runner's hello and its ready at once: a server that took the connection for its
    # runner's would send its config, then other users' code and env.
    hello = {"protocol": 1, "version": "hostile", "pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid(), "landlock_abi": 6, "seccomp": True}
    got = b""
    try:
        s.sendall(frame(hello) + frame({"mode": "fork"}))
        while True:
            b = s.recv(65536)
            if not b:
                break
            got += b
    except OSError as e:
        print("connection ended:", type(e).__name__, e)
    print("answer", len(got), "bytes", got[:200])
`, check: func(t *testing.T, h *hostile, res *api.ExecuteResult) {
			switch {
			case strings.HasPrefix(res.Stdout, "blocked connect PermissionError"):
				// seccomp: no Unix socket but socketpair.
			case strings.HasPrefix(res.Stdout, "connected\n"):
				// Without seccomp the connection is made: the socket is the pod's group's, and
				// the code is of the runner's uid. The server has its runner: it must close the
				// connection unanswered, and say so.
				if !strings.Contains(res.Stdout, "answer 0 bytes") {
					t.Errorf("the server answered the code as its runner:\n%s", res.Stdout)
				}
				h.refusedRunners++
				waitForLog(t, h.s, func() bool { return len(h.runnerRefusals()) >= h.refusedRunners })
				t.Logf("without seccomp the code connected; the server, which has its runner, closed the connection unanswered: %v", h.runnerRefusals()[h.refusedRunners-1])
			default:
				t.Fatalf("the attack did not run: %+v", res)
			}
			if ready := h.s.logs("runner ready"); len(ready) != 1 || !h.alive() {
				t.Errorf("the runner was replaced: %d runners were ready; the server, the runner and the zygote alive: %t", len(ready), h.alive())
			}
		}},
	{name: "31 replace the runner socket", layers: []string{confine.LayerIdentity, confine.LayerFilesystem}, runnerSocket: true, noSession: true,
		code: attempts + `
sock = "{{RUNNER_SOCKET}}"
attempt("unlink the runner socket", lambda: os.unlink(sock))
attempt("rename the runner socket", lambda: os.rename(sock, sock + ".old"))
attempt("rename its directory", lambda: os.rename(os.path.dirname(sock), os.path.dirname(sock) + ".old"))
def listen():
    s = socket.socket(socket.AF_UNIX)
    s.bind(sock + ".new")
attempt("listen beside it", listen)
`, check: func(t *testing.T, h *hostile, res *api.ExecuteResult) {
			noneOpen(t, h, res)
			h.ownedUnchanged(t)
		}},
}

// runnerRefusals are the server's log lines of connections to the runner socket of the
// runner's uid, refused while it has its runner.
func (h *hostile) runnerRefusals() []map[string]any {
	var out []map[string]any
	for _, l := range h.s.logs("runner not attached") {
		if strings.Contains(fmt.Sprint(l["error"]), "already connected") {
			out = append(out, l)
		}
	}
	return out
}

// owningResults are the results of owning's attempts, by key; every attempt said how it
// ended.
func owningResults(t *testing.T, way string, res *api.ExecuteResult) map[string]string {
	t.Helper()
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(res.Stdout), "\n") {
		f := strings.Fields(line)
		if len(f) != 4 || f[1] != way {
			t.Fatalf("the attack did not run to its end: %+v", res)
		}
		got[f[2]] = f[3]
	}
	return got
}

// ownershipHolds checks the attack on what the server owns made in one way: every attempt
// refused, and from outside, nothing changed.
func ownershipHolds(way string) func(t *testing.T, h *hostile, res *api.ExecuteResult) {
	return func(t *testing.T, h *hostile, res *api.ExecuteResult) {
		got := owningResults(t, way, res)
		counts := map[string]int{}
		for _, r := range got {
			counts[r]++
		}
		t.Logf("%s on %d paths the server owns: %v", way, len(got), counts)
		for _, o := range append(slices.Clone(h.owned), ownedPath{key: "own-dir"}) {
			r, ok := got[o.key]
			switch {
			case o.socket && way == "fchmod":
				if ok {
					t.Errorf("%s: a socket was opened: %s", o.key, r)
				}
			case r == "EPERM":
				// Reached, and refused: not the code's (or, for the ACL, seccomp's refusal).
			case r == "EACCES" && way == "fchmod":
				// Unreachable rather than refused: the read-only open fails first (a
				// directory of mode 0710 gives the group no read; Landlock gives no read
				// outside the code's own trees). fchmodat2 reaches the same inode through
				// O_PATH, and must get EPERM.
			default:
				t.Errorf("%s %s: %q, want EPERM (reached, and not the code's)", way, o.key, r)
			}
		}
		h.ownedUnchanged(t)
		h.noDirsLeft(t)
	}
}

// ownershipOpen checks chmod where the code owns what the server owns (one uid): every chmod
// got through, and the check from outside sees it, which shows that ownershipHolds can fail.
// It says what stays open — whether the server's readiness check puts back the socket's, its
// directory's and the work root's modes, what is left on disk — then puts everything back as
// root.
func ownershipOpen(t *testing.T, h *hostile, res *api.ExecuteResult) {
	got := owningResults(t, "chmod", res)
	changed := h.changedOwned()
	ready := h.readyz(t)
	after := h.changedOwned()
	for _, o := range append(slices.Clone(h.owned), ownedPath{key: "own-dir"}) {
		switch {
		case got[o.key] != "OPEN":
			t.Errorf("chmod %s: %q, want OPEN: the code runs as the server's uid", o.key, got[o.key])
		case o.key == "own-dir":
		case changed[o.key] == "":
			t.Errorf("chmod %s got through, and the check from outside saw no change: it cannot fail", o.key)
		case o.restored && after[o.key] == "":
			t.Logf("OPEN with one uid, until the next readiness probe puts it back: chmod of %s (%s)", o.key, changed[o.key])
		case o.restored:
			t.Errorf("chmod of %s (%s) was not put back by the readiness check (/readyz %d), which docs/security.md promises where code has the server's uid", o.key, changed[o.key], ready)
		default:
			t.Logf("OPEN with one uid: chmod of %s (%s)", o.key, changed[o.key])
		}
	}
	h.restoreOwned(t)
	h.removeLeftDirs(t)
	h.readyz(t)
}

// removeLeftDirs removes, as root, what is left of finished executions where the code owned
// what the server owns (one uid), and says so: a directory the code set to mode 0, which
// neither the runner nor the server can empty, or one the server could not remove while the
// work root was at mode 0. A directory a process works in (the session started ahead of time)
// stays.
func (h *hostile) removeLeftDirs(t *testing.T) {
	t.Helper()
	time.Sleep(time.Second) // the server removes what it can after the result
	for _, d := range h.workDirs(t) {
		p := filepath.Join(h.dir, "work", d)
		if dirInUse(p) {
			continue
		}
		st, _ := stateOf(p)
		t.Logf("OPEN with one uid: the directory of a finished execution is left on disk (%s, %v)", d, st)
		if err := os.RemoveAll(p); err != nil {
			t.Error(err)
		}
	}
}

// dirInUse says whether a process works in dir or below it.
func dirInUse(dir string) bool { return len(processesIn(dir)) > 0 }

// processesIn are the processes that work in dir or below it.
func processesIn(dir string) []int {
	var pids []int
	for _, p := range readProcTable() {
		if cwd, err := os.Readlink("/proc/" + strconv.Itoa(p.pid) + "/cwd"); err == nil && (cwd == dir || strings.HasPrefix(cwd, dir+"/")) {
			pids = append(pids, p.pid)
		}
	}
	return pids
}

// readyz asks the probe port whether the server is ready, as the kubelet does.
func (h *hostile) readyz(t *testing.T) int {
	t.Helper()
	resp, err := http.Get("http://" + h.s.probe + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// findOtherDir (27): the other session runs a call with a child process (a program, which the
// kernel makes dumpable again when it executes it) in its directory, while an execution looks
// for that directory's name wherever a process of the code's uid might read it: the /proc
// files and links of every process, /proc/net/unix, the work root, /dev/shm and /tmp.
// Landlock keeps the processes of another domain out of ptrace's reach, and with it their
// /proc links and files; pyexec's own processes and the interpreters are non-dumpable besides.
func (h *hostile) findOtherDir(t *testing.T, active map[string]bool) {
	ctx := context.Background()
	var wg sync.WaitGroup
	var vres *api.ExecuteResult
	var verr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		vres, verr = h.s.client.SessionExecute(ctx, h.otherID, api.ExecuteRequest{Code: "import subprocess\nsubprocess.run(['/bin/sleep', '30'])\nprint('done')"})
	}()
	for deadline := time.Now().Add(10 * time.Second); len(processesIn(h.other)) < 2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the other session's child did not start")
		}
	}
	res := h.s.execute(t, api.ExecuteRequest{TimeoutSeconds: seconds(20), Code: h.expand(`
import os, re
own = os.path.basename(os.path.dirname(os.getcwd()))
name = re.compile(rb"x-[0-9a-f]{24}")
seen = {}
def look(where, data):
    for m in name.findall(data):
        if m.decode() != own:
            seen.setdefault(m.decode(), where)
def read(path):
    try:
        with open(path, "rb") as f:
            look(path, f.read(1 << 20))
    except OSError:
        pass
def link(path):
    try:
        look(path, os.readlink(path).encode())
    except OSError:
        pass
def listdir(path):
    try:
        names = os.listdir(path)
    except OSError:
        return []
    look(path, " ".join(names).encode())
    return names
for pid in listdir("/proc"):
    if pid.isdigit():
        for f in ("cmdline", "environ", "maps", "mountinfo", "status", "stat", "comm", "cgroup", "io"):
            read("/proc/%s/%s" % (pid, f))
        for l in ("cwd", "root", "exe"):
            link("/proc/%s/%s" % (pid, l))
        for fd in listdir("/proc/%s/fd" % pid):
            link("/proc/%s/fd/%s" % (pid, fd))
for f in ("/proc/net/unix", "/proc/locks"):
    read(f)
for d in ("{{WORK}}", "/dev/shm", "/tmp"):
    listdir(d)
for n, where in sorted(seen.items()):
    print("found", n, "in", where)
print("scanned")
`)})
	// The child lived through the scan: else the scan proved nothing. It ends now, and with it
	// the other session's call.
	child := 0
	for _, pid := range processesIn(h.other) {
		if comm(pid) == "sleep" {
			child = pid
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	wg.Wait()
	if child == 0 || verr != nil || vres.Stdout != "done\n" {
		t.Fatalf("the other session's call, whose child (%d) was to live through the scan: %+v %v", child, vres, verr)
	}
	if !strings.HasSuffix(res.Stdout, "scanned\n") {
		t.Fatalf("the scan did not run to its end: %+v", res)
	}
	found := strings.Contains(res.Stdout, filepath.Base(h.other))
	switch {
	case !found:
	case active[confine.LayerFilesystem]:
		t.Errorf("the code found the other session's directory:\n%s", res.Stdout)
	default:
		t.Logf("OPEN without Landlock: the code found the other session's directory:\n%s", res.Stdout)
	}
	h.genuine(t)
}

// appPy is the app: the stdlib Python client, of another uid, in the pod's group. It creates a
// session and runs the attack's code in it (a thread that goes on), then for a while runs
// executions and lists the sessions, then deletes the session and runs one more execution. It
// prints one JSON line of what it saw, with the time of each failure.
const appPy = `
import json, sys, time
sys.path.insert(0, sys.argv[1])
import pyexec_client
socket_path, code, seconds = sys.argv[2], open(sys.argv[3]).read(), float(sys.argv[4])
c = pyexec_client.Client(socket_path, timeout=30)
out = {"session": None, "started": None, "ok": 0, "listed": False, "deleted": False, "after": None, "failures": []}
def fail(what, e):
    out["failures"].append({"at": time.time(), "what": what, "error": "%s: %s" % (type(e).__name__, e)})
try:
    s = c.create_session()
    out["session"] = s.id
    out["started"] = s.run(code).stdout
except Exception as e:
    fail("start", e)
    print(json.dumps(out))
    sys.exit(0)
deadline = time.time() + seconds
while time.time() < deadline:
    try:
        r = c.execute("print(6 * 7)")
        if r.stdout == "42\n":
            out["ok"] += 1
        else:
            fail("execute", Exception(repr(r)))
    except Exception as e:
        fail("execute", e)
    try:
        out["listed"] |= any(x.get("id") == out["session"] for x in c.list_sessions())
    except Exception as e:
        fail("list", e)
try:
    c.delete_session(out["session"])
    out["deleted"] = True
except Exception as e:
    fail("delete", e)
try:
    out["after"] = c.execute("print(6 * 7)").stdout
except Exception as e:
    fail("after", e)
print(json.dumps(out))
`

// appResult is what appPy saw.
type appResult struct {
	Session  string  `json:"session"`
	Started  *string `json:"started"`
	OK       int     `json:"ok"`
	Listed   bool    `json:"listed"`
	Deleted  bool    `json:"deleted"`
	After    *string `json:"after"`
	Failures []struct {
		At    float64 `json:"at"`
		What  string  `json:"what"`
		Error string  `json:"error"`
	} `json:"failures"`
}

// runApp runs appPy as hostileAppUID with code for the session, for seconds.
func (h *hostile) runApp(t *testing.T, code string, seconds float64) *appResult {
	t.Helper()
	dir := filepath.Join(h.dir, "app")
	src, err := os.ReadFile("../../../clients/python/pyexec_client.py")
	if err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(os.MkdirAll(dir, 0o755), os.WriteFile(filepath.Join(dir, "pyexec_client.py"), src, 0o644),
		os.WriteFile(filepath.Join(dir, "app.py"), []byte(appPy), 0o644), os.WriteFile(filepath.Join(dir, "code.py"), []byte(code), 0o644)); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/usr/bin/python3", "-B", filepath.Join(dir, "app.py"), dir, h.s.socket, filepath.Join(dir, "code.py"), strconv.FormatFloat(seconds, 'f', -1, 64))
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + dir}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: hostileAppUID, Gid: hostileAppUID, Groups: []uint32{hostileUID}}}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var r appResult
	if err != nil || json.Unmarshal(out, &r) != nil {
		t.Fatalf("the app: %v\n%s%s", err, out, stderr.String())
	}
	return &r
}

// chmodLoop (28): a thread of a session's interpreter changes everything the server owns, in
// every way, every millisecond, for the whole test, while the app (another uid, from outside)
// runs executions, lists the sessions and deletes that session, and the kubelet asks /readyz.
// Each answer of /readyz must be honest: the app is served, the modes on disk stay, the
// session goes when deleted, and no directory of a finished execution is left.
func (h *hostile) chmodLoop(t *testing.T, active map[string]bool) {
	code := h.expand(owning + `
import threading, time
tries = [0, 0]
def loop():
    while True:
        for way in WAYS:
            for key, path, socket in OWNED:
                tries[0] += 1
                tries[1] += own(way, path) == "OPEN"
        time.sleep(0.001)
threading.Thread(target=loop, daemon=True).start()
time.sleep(0.1)
print("started", tries[0], tries[1])
`)
	type probe struct {
		at     time.Time
		status int
	}
	var probes []probe
	stop := make(chan struct{})
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if resp, err := http.Get("http://" + h.s.probe + "/readyz"); err == nil {
				resp.Body.Close()
				probes = append(probes, probe{time.Now(), resp.StatusCode})
			}
		}
	}()
	app := h.runApp(t, code, 1)
	close(stop)
	<-polled
	if app.Session != "" && !app.Deleted {
		// Stop the loop however it went: the test, as root, reaches the socket whatever its mode.
		_ = h.s.client.DeleteSession(context.Background(), app.Session)
	}
	var started []string
	if app.Started != nil {
		started = strings.Fields(*app.Started)
	}
	if len(started) != 3 || started[0] != "started" || started[1] == "0" {
		t.Fatalf("the loop did not start: %+v", app)
	}
	notReady := 0
	for _, p := range probes {
		if p.status != http.StatusOK {
			notReady++
		}
	}
	// Honest: each failure of the app while /readyz said 200 within 100 ms is a lie.
	lies := 0
	for _, f := range app.Failures {
		at := time.Unix(0, int64(f.At*1e9))
		for _, p := range probes {
			if p.status == http.StatusOK && p.at.Sub(at).Abs() < 100*time.Millisecond {
				lies++
				break
			}
		}
	}
	summary := fmt.Sprintf("the app: %d executions served, %d failures (%d while /readyz said 200), session listed %t, deleted %t, an execution after %v; /readyz: %d of %d not ready; the thread's chmods: %s of %s got through at start",
		app.OK, len(app.Failures), lies, app.Listed, app.Deleted, app.After != nil && *app.After == "42\n", notReady, len(probes), started[2], started[1])
	if !active[confine.LayerIdentity] {
		t.Logf("OPEN with one uid: %s", summary)
		h.restoreOwned(t)
		h.removeLeftDirs(t)
		h.readyz(t)
		return
	}
	t.Log(summary)
	if started[2] != "0" || len(app.Failures) > 0 || app.OK == 0 || !app.Listed || !app.Deleted || app.After == nil || *app.After != "42\n" || notReady > 0 {
		t.Errorf("%s\n%+v", summary, app)
	}
	h.ownedUnchanged(t)
	_, err := h.s.client.Session(context.Background(), app.Session)
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) || apiErr.Code != api.ErrCodeSessionNotFound {
		t.Errorf("the deleted session: %v, want session_not_found", err)
	}
	h.noDirsLeft(t)
	h.genuine(t)
}

// memoryCgroup makes a cgroup v1 memory cgroup with limit bytes below the test's own, and
// removes it at the end. Without one the test is skipped, saying what stays untested.
func memoryCgroup(t *testing.T, limit int64, untested string) string {
	t.Helper()
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	parent := ""
	for sc := bufio.NewScanner(f); sc.Scan(); {
		if p := strings.SplitN(sc.Text(), ":", 3); len(p) == 3 && p[1] == "memory" {
			parent = p[2]
		}
	}
	root := "/sys/fs/cgroup/memory"
	if _, err := os.Stat(filepath.Join(root, parent, "memory.limit_in_bytes")); parent == "" || err != nil {
		t.Skipf("SKIPPED: no cgroup v1 memory controller for this test (%q: %v); %s", parent, err, untested)
	}
	dir := filepath.Join(root, parent, fmt.Sprintf("pyexec-hostile-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The sidecar stopped first (its cleanup was registered later); what is left of the
		// runner's tree goes as the container's would.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			if err := os.Remove(dir); err == nil || time.Now().After(deadline) {
				if err != nil {
					t.Errorf("removing the cgroup: %v", err)
				}
				return
			}
			procs, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
			for _, p := range strings.Fields(string(procs)) {
				if pid, err := strconv.Atoi(p); err == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
	})
	if err := os.WriteFile(filepath.Join(dir, "memory.limit_in_bytes"), []byte(strconv.FormatInt(limit, 10)), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// inCgroup says whether pid is in the memory cgroup dir.
func inCgroup(pid int, dir string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p := strings.SplitN(line, ":", 3); len(p) == 3 && p[1] == "memory" {
			return strings.HasSuffix(dir, p[2])
		}
	}
	return false
}

// oomKills is how many processes the kernel's OOM killer took in the memory cgroup dir.
func oomKills(t *testing.T, dir string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "memory.oom_control"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	t.Fatalf("memory.oom_control has no oom_kill count:\n%s", b)
	return 0
}

// testRunnerOOM (30): the runner, and all it starts, not the server, is in a memory cgroup of
// its own, as the runner container's limit; code with no address-space limit of its own
// allocates past it. The kernel's OOM killer acts inside the cgroup: the server lives, the
// app's socket answers, the execution gets a result or a clean error, and the server is ready
// again, with the runner restarted if the OOM killer took it (as the kubelet restarts the
// container). Then the runner itself goes as the OOM killer would take it (runnerGoes).
func testRunnerOOM(t *testing.T) {
	const limit = 384 << 20
	cg := memoryCgroup(t, limit, "the OOM in the runner did not run")
	// The runner's memory watchdog off: what is tested here is the kernel's OOM killer, which
	// code that allocates faster than the watchdog reads still meets.
	h := newHostileWith(t, podOptions{runnerCgroup: cg}, "--mode", "fork", "--memory-limit-mb", "0", "--max-memory-limit-mb", "0", "--runner-memory-high-water", "0")
	if !inCgroup(h.runner, cg) || !inCgroup(h.zygote, cg) || inCgroup(h.server, cg) {
		t.Fatalf("the runner (%t) and its zygote (%t) must be in the cgroup, the server (%t) not", inCgroup(h.runner, cg), inCgroup(h.zygote, cg), inCgroup(h.server, cg))
	}
	ctx := context.Background()
	hog := "chunks = []\nfor i in range(32):\n    chunks.append(b'x' * (32 << 20))  # written: resident\n    print(i, flush=True)\nprint('allocated', flush=True)"
	res, err := h.s.client.Execute(ctx, api.ExecuteRequest{Code: hog, TimeoutSeconds: seconds(60)})
	kills := oomKills(t, cg)
	if kills == 0 {
		t.Fatalf("the OOM killer did not act: %+v %v", res, err)
	}
	var apiErr *client.APIError
	switch {
	case err == nil && !strings.Contains(res.Stdout, "allocated") && res.ExitCode != 0:
		t.Logf("the execution's result: reason %s, signal %q, exit %d, after %d chunks of 32 MiB", res.Reason, res.Signal, res.ExitCode, strings.Count(res.Stdout, "\n"))
	case errors.As(err, &apiErr):
		t.Logf("the execution's error: %d %s %s", apiErr.Status, apiErr.Code, apiErr.Message)
	default:
		t.Fatalf("the execution past the limit: %+v %v", res, err)
	}
	h.afterRunnerLoss(t, "the OOM killer", kills)

	active := map[string]bool{}
	for _, l := range confine.Probe(confine.NoCap).Layers() {
		active[l.Name] = l.Active
	}
	h.runnerGoes(t, active)
}

// takeRunnerPlace is a session's call in which a thread dials the runner socket every 10 ms and
// says hello and ready as a runner would; a server that takes it for its runner gets, for each
// execution, a forged result that shows the request's env. The call itself waits, and its
// supervisor with it, which then watches neither the runner nor the time.
const takeRunnerPlace = `
import json, os, socket, struct, threading, time
def frame(v):
    b = json.dumps(v).encode()
    return struct.pack(">I", len(b)) + b
def recvall(s, n):
    b = b""
    while len(b) < n:
        more = s.recv(n - len(b))
        if not more:
            raise EOFError
        b += more
    return b
def channel(ch):
    try:
        while True:
            req = json.loads(recvall(ch, struct.unpack(">I", recvall(ch, 4))[0]))
            if "execute" in req:
                out = "forged; the request's env: %s\n" % json.dumps(req["execute"].get("env"))
                ch.sendall(frame({"result": {"exit_code": 0, "stdout": out, "stderr": "", "reason": "exit", "duration_ms": 1, "files": [], "outputs": []}}) + frame({"done": {}}))
            else:
                ch.sendall(frame({"done": {}}))
    except (OSError, EOFError):
        ch.close()
def serve(s):
    while True:
        msg, anc, _, _ = s.recvmsg(1, socket.CMSG_SPACE(4))
        if not msg:
            return
        for _, _, data in anc:
            ch = socket.socket(fileno=struct.unpack("i", data[:4])[0])
            threading.Thread(target=channel, args=(ch,), daemon=True).start()
def take():
    hello = frame({"protocol": 1, "version": "hostile", "pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid(), "landlock_abi": 6, "seccomp": True})
    while True:
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect("{{RUNNER_SOCKET}}")
            s.sendall(hello)
            recvall(s, struct.unpack(">I", recvall(s, 4))[0])  # the server's config
            s.sendall(frame({"mode": "fork"}))
            serve(s)
        except (OSError, EOFError):
            pass
        time.sleep(0.01)
threading.Thread(target=take, daemon=True).start()
print(os.getpid(), flush=True)
time.sleep(60)
`

// runnerGoes (32): the runner goes, as the OOM killer takes it (SIGKILL), while an execution
// and a session's call run, and the session's code dials the runner socket to take the
// runner's place (takeRunnerPlace). The calls get clean errors; /readyz says not ready until a
// runner comes; the kubelet's restart brings the genuine runner back, and what the server then
// calls its runner is that runner: the app's next execution gets a genuine result, and its
// env reaches no code but its own.
func (h *hostile) runnerGoes(t *testing.T, active map[string]bool) {
	ctx := context.Background()
	sess, err := h.s.client.CreateSession(ctx, api.SessionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	errs, pids := make(chan error, 2), make(chan string, 2)
	// The first output of each call is its pid.
	firstOnly := func() func(string, string) {
		var once sync.Once
		return func(_, data string) { once.Do(func() { pids <- strings.TrimSpace(data) }) }
	}
	go func() {
		_, err := h.s.client.ExecuteStream(ctx, api.ExecuteRequest{Code: "import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(30)", TimeoutSeconds: seconds(60)}, firstOnly())
		errs <- err
	}()
	go func() {
		_, err := h.s.client.SessionExecuteStream(ctx, sess.ID, api.ExecuteRequest{Code: h.expand(takeRunnerPlace), TimeoutSeconds: seconds(120)}, firstOnly())
		errs <- err
	}()
	// The code's processes and their supervisors outlive the runner here, where the runner is
	// not the first process of a PID namespace of its own: they go at the end, as the end of
	// the runner's container would take them.
	var orphans []int
	for range 2 {
		pid, err := strconv.Atoi(<-pids)
		if err != nil {
			t.Fatal(err)
		}
		orphans = append(orphans, pid, parentOf(pid))
	}
	defer func() {
		for _, pid := range orphans {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}()
	if err := h.s.runner.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-h.s.runner.exited
	var apiErr *client.APIError
	for range 2 {
		if err := <-errs; !errors.As(err, &apiErr) {
			t.Errorf("a call when the runner went: %v, want an error of the API", err)
		} else {
			t.Logf("a call when the runner went: %d %s %s", apiErr.Status, apiErr.Code, apiErr.Message)
		}
	}
	if code := h.readyz(t); code == http.StatusOK && active[confine.LayerSeccomp] {
		t.Errorf("/readyz: 200 with no runner")
	}
	if syscall.Kill(h.server, 0) != nil {
		t.Fatal("the server died with the runner")
	}
	time.Sleep(time.Second) // the kubelet's restart comes later than the code's next dial
	h.s.startRunner()
	h.runner = h.s.runner.cmd.Process.Pid
	for deadline := time.Now().Add(30 * time.Second); h.readyz(t) != http.StatusOK; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not ready 30 s after the runner went: %s", h.s.allLogs())
		}
	}
	res, err := h.s.client.Execute(ctx, api.ExecuteRequest{Code: "print(6 * 7)", Env: map[string]string{"API_KEY": "s3cr3t-of-the-app"}})
	ready := h.s.logs("runner ready")
	last := ready[len(ready)-1]
	summary := fmt.Sprintf("the app's execution: %+v %v; the runners the server took: %v", res, err, ready)
	switch {
	case err == nil && res.Stdout == "42\n" && last["pid"] == float64(h.runner) && last["version"] != "hostile":
		h.zygote = zygoteOf(h.runner)
		h.genuine(t)
	case active[confine.LayerSeccomp]:
		t.Errorf("the code took the runner's place: %s", summary)
	default:
		t.Logf("OPEN without seccomp: a session's code that outlived the runner took its place on the runner socket: %s", summary)
		for _, pid := range orphans {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		// The genuine runner, refused while the code held its place, is taken once the code
		// is gone.
		waitForLog(t, h.s, func() bool {
			ready := h.s.logs("runner ready")
			return ready[len(ready)-1]["pid"] == float64(h.runner) && h.readyz(t) == http.StatusOK
		})
		h.zygote = zygoteOf(h.runner)
		h.genuine(t)
	}
	if _, err := h.s.client.SessionExecute(ctx, sess.ID, api.ExecuteRequest{Code: "print(1)"}); !errors.As(err, &apiErr) || apiErr.Code != api.ErrCodeSessionNotFound {
		t.Errorf("the session of the runner that went: %v, want session_not_found", err)
	}
}

// parentOf is the parent of pid, 0 if it is gone.
func parentOf(pid int) int {
	for _, p := range readProcTable() {
		if p.pid == pid {
			return p.ppid
		}
	}
	return 0
}

// afterRunnerLoss checks that the server lived through what took the runner's code or the
// runner (what): its socket answers, and it is ready again, with the runner restarted if it
// went; then the next genuine execution works. kills are the OOM killer's.
func (h *hostile) afterRunnerLoss(t *testing.T, what string, kills int) {
	t.Helper()
	if syscall.Kill(h.server, 0) != nil {
		t.Fatalf("the server died after %s", what)
	}
	if _, err := h.s.client.Info(context.Background()); err != nil {
		t.Fatalf("/v1/info after %s: %v", what, err)
	}
	select {
	case <-h.s.runner.exited:
		t.Logf("%s took the runner (%d OOM kills in the cgroup): starting it again, as the kubelet would", what, kills)
		h.s.startRunner()
		h.runner = h.s.runner.cmd.Process.Pid
	default:
		t.Logf("%s took the code, not the runner (%d OOM kills in the cgroup)", what, kills)
	}
	for deadline := time.Now().Add(30 * time.Second); h.readyz(t) != http.StatusOK; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not ready 30 s after %s: %s", what, h.s.allLogs())
		}
	}
	h.zygote = zygoteOf(h.runner)
	h.genuine(t)
}
