package app

import (
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

	"github.com/pyexec/pyexec/pkg/api"
	"github.com/pyexec/pyexec/pkg/client"
	"github.com/pyexec/pyexec/pkg/confine"
	"github.com/pyexec/pyexec/pkg/executor"
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
// no permission to open), a POSIX ACL through setxattr, fchownat.
var ownershipAttacks = []attack{
	ownAttack("11 chmod what the server owns", "chmod", []string{confine.LayerIdentity}),
	ownAttack("23 fchmod what the server owns through a read-only descriptor", "fchmod", []string{confine.LayerIdentity}),
	ownAttack("24 fchmodat2 what the server owns through an O_PATH descriptor", "fchmodat2", []string{confine.LayerIdentity}),
	ownAttack("25 give itself a POSIX ACL on what the server owns", "acl", []string{confine.LayerIdentity, confine.LayerSeccomp}),
	ownAttack("26 chown what the server owns", "fchownat", []string{confine.LayerIdentity}),
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
			t.Logf("OPEN with one uid: chmod of %s (%s), not put back by the readiness check (/readyz %d)", o.key, changed[o.key], ready)
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
