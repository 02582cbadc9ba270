package executor

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pyexec/pyexec/internal/confine"
	"github.com/pyexec/pyexec/pkg/api"
)

// Code that kills its own supervisor must not leave its processes behind, in either mode
// (in fork mode the zygote, a subreaper, kills them). Confinement stops the kill; this is the
// second line, for a kernel without it.
func TestCodeKillingItsSupervisor(t *testing.T) {
	escape := "import os, signal, time\nr, w = os.pipe()\nif os.fork() == 0:\n    os.write(w, b'pid:%d\\n' % os.getpid())\n    time.sleep(600)\nprint(os.read(r, 100).decode(), end='', flush=True)\nprint('pid:%d' % os.getpid(), flush=True)\nos.kill(os.getppid(), signal.SIGKILL)\ntime.sleep(600)"
	for mode, ex := range modesWith(t, Isolation{}) {
		if mode == ModeSpawn {
			continue // in spawn mode the server's reaper is what kills them (see the PID 1 test)
		}
		t.Run(mode, func(t *testing.T) {
			start := time.Now()
			r := run1(t, ex, escape)
			if d := time.Since(start); d > 15*time.Second {
				t.Fatalf("took %v", d)
			}
			assertGone(t, pidsFrom(t, r.Stdout))
		})
	}
}

// shadowBase64 is an input file base64.py: the standard module, except that b64decode puts an
// "allow everything" instruction first in what it decodes. Imported by the runner while it
// confines the code's process (the seccomp programs come base64-encoded), it would install
// filters that let every system call through: no network, namespace or process-budget rules.
const shadowBase64 = `import os, sys, importlib.util
_spec = importlib.util.spec_from_file_location("base64", os.path.join(os.path.dirname(os.__file__), "base64.py"))
_real = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_real)
globals().update({k: v for k, v in vars(_real).items() if not k.startswith("__")})
def b64decode(s, *args, **kwargs):
    prog = _real.b64decode(s, *args, **kwargs)
    os.write(2, b"shadowed\n")
    return b"\x06\x00\x00\x00\x00\x00\xff\x7f" + prog[8:]  # BPF_RET|BPF_K SECCOMP_RET_ALLOW
`

// unconfinedProbe prints what the seccomp program (network off) must refuse: a UDP socket and a
// new user namespace.
const unconfinedProbe = "import ctypes, socket\ntry:\n    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()\n    print('udp socket')\nexcept OSError as e:\n    print('udp refused', e.errno)\n" +
	"libc = ctypes.CDLL(None, use_errno=True)\nprint('unshare', libc.unshare(0x10000000), ctypes.get_errno())\n"

// The code's input files are in its working directory, which is first on the code's sys.path:
// a file named after a module the runner imports while it confines the process (base64, struct)
// must not be what the runner imports, or the code chooses its own seccomp programs. Spawn mode
// imports them there; fork mode's zygote imported them ahead. The same for a session's files.
func TestInputFilesDoNotShadowTheConfinement(t *testing.T) {
	iso := Isolation{Kernel: confine.Probe(confine.NoCap)}
	if !iso.Kernel.Seccomp {
		t.Skip("no seccomp in this kernel")
	}
	files := []File{{Path: "base64.py", Data: []byte(shadowBase64)}, {Path: "struct.py", Data: []byte("raise SystemExit('struct shadowed')\n")}}
	check := func(t *testing.T, res api.ExecuteResult) {
		t.Helper()
		if strings.Contains(res.Stderr, "shadowed") || res.ExitCode != 0 || !strings.Contains(res.Stdout, "udp refused") || strings.Contains(res.Stdout, "unshare 0 ") {
			t.Errorf("input files replaced the runner's modules while it confined the code: exit %d\nstdout %s\nstderr %s", res.ExitCode, res.Stdout, res.Stderr)
		}
	}
	for mode, ex := range modesWith(t, iso) {
		t.Run(mode, func(t *testing.T) {
			res, err := ex.Execute(context.Background(), Request{ID: "shadow", Code: unconfinedProbe, Files: files, Limits: defaultLimits}, nil)
			if err != nil {
				t.Fatal(err)
			}
			check(t, res)
			if mode == modeForkWarm {
				return
			}
			ss := newSession(t, ex.(LocalStarter), SessionRequest{ID: "shadow", Files: files})
			check(t, call(t, ss, unconfinedProbe))
		})
	}
}
