package app

import (
	"context"
	"errors"
	"fmt"
	"net"
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

	"github.com/pyexec/pyexec/pkg/api"
	"github.com/pyexec/pyexec/pkg/client"
	"github.com/pyexec/pyexec/pkg/confine"
	"github.com/pyexec/pyexec/pkg/testutil"
)

// hostileUID is the uid of the server and of its code in the hostile-code tests: the pod's
// configuration (one uid for both, no capability), with a uid no other test or pod uses, since
// the attacks signal every process they can.
const hostileUID = 61077

// podSidecar starts `pyexec serve` as hostileUID with executions as the same uid, as in a pod.
func podSidecar(t *testing.T, args ...string) *sidecar {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("SKIPPED: needs root to start the sidecar as another uid; the hostile-code attacks did not run")
	}
	dir, bin := testutil.SharedTempDir(t, "pyexec")
	if err := os.Chown(dir, hostileUID, hostileUID); err != nil {
		t.Fatal(err)
	}
	return startSidecarWith(t, sidecarOptions{bin: bin, dir: dir, uid: hostileUID}, args...)
}

// attack is hostile code and the check, from outside, that it failed.
type attack struct {
	name string
	// code runs as an execution; {{SOCKET}}, {{PACKAGES}}, {{WORK}}, {{SERVER}}, {{ZYGOTE}}
	// and {{PORT}} are replaced first.
	code string
	// layers are the layers of confinement that stop it, each on its own.
	layers []string
	// check looks from outside; res is the attack's result.
	check func(t *testing.T, h *hostile, res *api.ExecuteResult)
}

// hostile is a pod sidecar under attack, with what the attacks aim at.
type hostile struct {
	s        *sidecar
	dir      string
	sockIno  uint64
	zygote   int
	tcp      net.Listener
	accepted chan net.Conn
}

func (h *hostile) expand(code string) string {
	return strings.NewReplacer(
		"{{SOCKET}}", h.s.socket,
		"{{PACKAGES}}", filepath.Join(h.dir, "packages"),
		"{{WORK}}", filepath.Join(h.dir, "work"),
		"{{SERVER}}", strconv.Itoa(h.s.cmd.Process.Pid),
		"{{ZYGOTE}}", strconv.Itoa(h.zygote),
		"{{PORT}}", strconv.Itoa(h.tcp.Addr().(*net.TCPAddr).Port),
	).Replace(code)
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

func noneOpen(t *testing.T, _ *hostile, res *api.ExecuteResult) {
	t.Helper()
	if strings.Contains(res.Stdout, "OPEN") || !strings.Contains(res.Stdout, "blocked") {
		t.Errorf("the attack got through:\n%s%s", res.Stdout, res.Stderr)
	}
}

var attacks = []attack{
	{name: "1 replace the API socket", layers: []string{confine.LayerFilesystem},
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
	{name: "2 plant code in the packages dir", layers: []string{confine.LayerFilesystem},
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
for pid in ("{{SERVER}}", "{{ZYGOTE}}", str(os.getppid())):
    for f in ("environ", "mem", "cmdline"):
        attempt("%s/%s" % (pid, f), lambda: print(open("/proc/%s/%s" % (pid, f), "rb").read(64)))
`, check: func(t *testing.T, h *hostile, res *api.ExecuteResult) {
			if strings.Contains(res.Stdout, "hunter2") {
				t.Errorf("the server's environment leaked:\n%s", res.Stdout)
			}
			for _, f := range []string{"environ", "mem"} {
				if strings.Contains(res.Stdout, "OPEN "+strconv.Itoa(h.s.cmd.Process.Pid)+"/"+f) || strings.Contains(res.Stdout, "OPEN "+strconv.Itoa(h.zygote)+"/"+f) {
					t.Errorf("/proc/PID/%s of the server or the zygote was readable:\n%s", f, res.Stdout)
				}
			}
		}},
	{name: "4 kill the server, the zygote, the supervisor, everyone", layers: []string{confine.LayerScopedSignals, confine.LayerSeccomp},
		code: attempts + `
attempt("kill server", lambda: os.kill({{SERVER}}, signal.SIGKILL))
if {{ZYGOTE}}:
    attempt("kill zygote", lambda: os.kill({{ZYGOTE}}, signal.SIGKILL))
attempt("kill supervisor", lambda: os.kill(os.getppid(), signal.SIGKILL))
attempt("killpg server", lambda: os.killpg(os.getpgid({{SERVER}}), signal.SIGKILL))
try:  # succeeds when every process it may not signal is skipped: checked from outside
    os.kill(-1, signal.SIGKILL)
except OSError as e:
    print("blocked kill -1", e)
print("still running")
`, check: func(t *testing.T, h *hostile, res *api.ExecuteResult) {
			noneOpen(t, h, res)
			if !strings.Contains(res.Stdout, "still running") {
				t.Errorf("the code's own process died: %+v", res)
			}
			if syscall.Kill(h.s.cmd.Process.Pid, 0) != nil || (h.zygote > 0 && syscall.Kill(h.zygote, 0) != nil) {
				t.Errorf("the server or the zygote died")
			}
			if res.Reason != api.ReasonExit || res.ExitCode != 0 {
				t.Errorf("the code's own execution was cut short: %+v", res)
			}
		}},
	{name: "6 leave files for the next execution", layers: []string{confine.LayerFilesystem},
		code: attempts + `
for d in ("/tmp", "/dev/shm", "/var/tmp", "{{WORK}}"):
    attempt("write " + d, lambda: open(os.path.join(d, "pyexec-hostile-left"), "w").write("x"))
`, check: func(t *testing.T, h *hostile, res *api.ExecuteResult) {
			noneOpen(t, h, res)
			for _, d := range []string{"/tmp", "/dev/shm", "/var/tmp", filepath.Join(h.dir, "work")} {
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

// TestHostileCode runs the attacks against a sidecar in the pod's configuration, in both modes,
// and checks from outside that each failed and that the next genuine request gets a genuine
// result. With a Landlock ABI capped as on older kernels, an attack whose layer is then
// missing is reported as open, not passed.
func TestHostileCode(t *testing.T) {
	for _, tc := range []struct {
		mode string
		abi  int
	}{{"fork", confine.NoCap}, {"spawn", confine.NoCap}, {"fork", 5}, {"spawn", 3}, {"fork", 0}} {
		t.Run(fmt.Sprintf("%s/abi=%d", tc.mode, tc.abi), func(t *testing.T) {
			args := []string{"--mode", tc.mode, "--max-landlock-abi", strconv.Itoa(tc.abi)}
			h := newHostile(t, args...)
			active := map[string]bool{}
			for _, l := range confine.Probe(tc.abi).Layers() {
				active[l.Name] = l.Active
			}
			for _, a := range attacks {
				if !slices.ContainsFunc(a.layers, func(l string) bool { return active[l] }) {
					if tc.abi == confine.NoCap {
						t.Errorf("this kernel lacks %v: attack %q is open", a.layers, a.name)
					} else {
						t.Logf("OPEN at Landlock ABI %d (no %v): %s", tc.abi, a.layers, a.name)
					}
					continue
				}
				t.Run(a.name, func(t *testing.T) {
					res := h.s.execute(t, api.ExecuteRequest{Code: h.expand(a.code), TimeoutSeconds: seconds(20)})
					a.check(t, h, res)
					h.genuine(t)
				})
			}
			t.Run("5 read another execution's files", func(t *testing.T) { h.otherExecution(t, active) })
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
}

func newHostile(t *testing.T, args ...string) *hostile {
	t.Helper()
	s := podSidecar(t, args...)
	h := &hostile{s: s, dir: filepath.Dir(filepath.Dir(s.socket)), accepted: make(chan net.Conn, 4)}
	var st syscall.Stat_t
	if err := syscall.Stat(s.socket, &st); err != nil {
		t.Fatal(err)
	}
	h.sockIno = st.Ino
	h.zygote = zygoteOf(s.cmd.Process.Pid)
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
# Every other process but the server, the zygote and the supervisor (attack 4): the victim's
# among them. Processes of other uids refuse anyway.
for pid in os.listdir("/proc"):
    if pid.isdigit() and int(pid) not in (os.getpid(), os.getppid(), {{SERVER}}, {{ZYGOTE}}):
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

// zygoteOf returns the pid of the zygote below server, 0 if there is none.
func zygoteOf(server int) int {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, p := range readProcTable() {
			if p.ppid == server && isZygote(p.pid) {
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
	if warn := s.logs("WARNING: executions are not fully confined on this kernel"); len(warn) != 1 || !strings.Contains(fmt.Sprint(warn[0]["missing"]), confine.LayerScopedSignals) {
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
	if !errors.As(err, &exit) || !strings.Contains(string(out), "--require-isolation: the kernel lacks "+confine.LayerScopedSignals) {
		t.Fatalf("--require-isolation on a kernel without scoped signals: %v\n%s", err, out)
	}
}
