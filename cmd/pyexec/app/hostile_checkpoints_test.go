package app

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pyexec/pyexec/pkg/api"
	"github.com/pyexec/pyexec/pkg/client"
)

// findCheckpoints is Python that sets cps to the pids of the session's checkpoints, as hostile
// code finds them: the other children of its interpreter's parent, the supervisor.
const findCheckpoints = `import os, ctypes, signal
def _ppid(p):
    try:
        return int(open('/proc/%s/stat' % p).read().rsplit(')', 1)[1].split()[1])
    except Exception:
        return None
cps = [int(p) for p in os.listdir('/proc') if p.isdigit() and int(p) != os.getpid() and _ppid(p) == os.getppid()]
`

// A session's code against its own checkpoints, through a pod's server and runner. A
// checkpoint is in the code's Landlock domain, as its uid: what stops the code is checked from
// outside, and what is open (it can kill or stop one) is shown to end as pyexec says.
func TestHostileCheckpoints(t *testing.T) {
	s := podSidecar(t, podOptions{}, "--max-checkpoints-per-session=3", "--max-checkpoint-bytes=1048576")
	ctx := context.Background()
	newSession := func(t *testing.T) string {
		t.Helper()
		sess, err := s.client.CreateSession(ctx, api.SessionRequest{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.client.DeleteSession(ctx, sess.ID) })
		return sess.ID
	}
	run := func(t *testing.T, id, code string) *api.ExecuteResult {
		t.Helper()
		res, err := s.client.SessionExecute(ctx, id, api.ExecuteRequest{Code: code})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	checkpoint := func(t *testing.T, id string) string {
		t.Helper()
		cp, err := s.client.Checkpoint(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return cp.ID
	}
	restore := func(t *testing.T, id, cp string) {
		t.Helper()
		if _, err := s.client.RestoreCheckpoint(ctx, id, cp); err != nil {
			t.Fatal(err)
		}
	}

	// Its memory, its descriptors and its signals: /proc/PID/mem for writing (Landlock keeps
	// /proc read-only), process_vm_writev, ptrace and pidfd_getfd (seccomp), every signal but
	// SIGKILL and SIGSTOP (blocked: they wait, and a restored interpreter does not inherit them).
	t.Run("tamper", func(t *testing.T) {
		id := newSession(t)
		run(t, id, "secret = 'before'")
		cp := checkpoint(t, id)
		res := run(t, id, findCheckpoints+`secret = 'after'
cp = cps[0]
out = []
try:
    open('/proc/%d/mem' % cp, 'r+b')
    out.append('mem:open')
except OSError as e:
    out.append('mem:%d' % e.errno)
libc = ctypes.CDLL(None, use_errno=True)
class iovec(ctypes.Structure):
    _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]
buf = ctypes.create_string_buffer(b'x' * 64)
local, remote = iovec(ctypes.addressof(buf), 64), iovec(ctypes.addressof(buf), 64)
r = libc.process_vm_writev(cp, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
out.append('vm:%d:%d' % (r, ctypes.get_errno()))
r = libc.ptrace(16, cp, 0, 0)
out.append('ptrace:%d:%d' % (r, ctypes.get_errno()))
fd = os.pidfd_open(cp)
r = libc.syscall(438, fd, 3, 0)
out.append('getfd:%d:%d' % (r, ctypes.get_errno()))
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP, signal.SIGSTOP):
    os.kill(cp, sig)
print(len(cps), ' '.join(out))
`)
		if res.ExitCode != 0 || res.Stdout != "1 mem:13 vm:-1:1 ptrace:-1:1 getfd:-1:1\n" {
			t.Fatalf("the attacks: stdout %q stderr %s", res.Stdout, res.Stderr)
		}
		restore(t, id, cp)
		if res := run(t, id, "print(secret)"); res.Stdout != "before\n" {
			t.Fatalf("after the restore: %+v", res)
		}
	})

	// SIGKILL is open: the checkpoint is lost, restore says so, and the session goes on.
	t.Run("kill", func(t *testing.T) {
		id := newSession(t)
		run(t, id, "x = 1")
		cp := checkpoint(t, id)
		if res := run(t, id, findCheckpoints+"os.kill(cps[0], signal.SIGKILL)\nprint('killed')"); res.Stdout != "killed\n" {
			t.Fatalf("the kill: %+v", res)
		}
		_, err := s.client.RestoreCheckpoint(ctx, id, cp)
		var apiErr *client.APIError
		if !errors.As(err, &apiErr) || apiErr.Code != api.ErrCodeCheckpointNotFound || !strings.Contains(apiErr.Message, "lost") {
			t.Fatalf("restore of a killed checkpoint: %v", err)
		}
		if res := run(t, id, "print(x)"); res.Stdout != "1\n" {
			t.Fatalf("the session after: %+v", res)
		}
	})

	// Code that replaced the checkpoint's own functions before the copy: a copy that spins and
	// forks is stopped, and what it forked killed, once it said it was there; one that never
	// says so is killed, and the checkpoint refused; one that names another process (its
	// supervisor, pid 1) as the checkpoint is refused, and that process lives on.
	t.Run("its own code", func(t *testing.T) {
		id := newSession(t)
		res := run(t, id, `import sys, os, json
m = sys.modules['pyexec_runner.checkpoint']
def spin(sock, state, *rest):
    sock.send(json.dumps({'held': os.getpid()}).encode())
    if os.fork() == 0:
        while True: pass
    while True: pass
m._hold = spin
`)
		if res.ExitCode != 0 {
			t.Fatalf("setup: %+v", res)
		}
		checkpoint(t, id)
		res = run(t, id, findCheckpoints+"print(cps[0])")
		pid, err := strconv.Atoi(strings.TrimSpace(res.Stdout))
		if err != nil {
			t.Fatalf("the checkpoint's pid: %+v", res)
		}
		time.Sleep(300 * time.Millisecond) // at rest
		if state := procState(t, pid); state != "T" {
			t.Errorf("the spinning checkpoint at rest: state %s, want T (stopped)", state)
		}
		for _, kid := range childrenOf(pid) { // killed: a zombie until the stopped checkpoint goes
			if n, _ := strconv.Atoi(kid); procState(t, n) != "Z" {
				t.Errorf("what it forked still runs: %s is %s", kid, procState(t, n))
			}
		}
		run(t, id, "m._hold = lambda sock, state, *rest: __import__('time').sleep(3600)")
		start := time.Now()
		_, err = s.client.Checkpoint(ctx, id)
		if err == nil || time.Since(start) > 20*time.Second {
			t.Errorf("a checkpoint that never says it is there: %v after %v", err, time.Since(start))
		}
		run(t, id, "m.take = lambda fd, call: (os.close(fd), (os.getppid(), None))[1]")
		if _, err := s.client.Checkpoint(ctx, id); err == nil {
			t.Error("a checkpoint named after the supervisor was taken")
		}
		run(t, id, "m.take = lambda fd, call: (os.close(fd), (1, None))[1]")
		if _, err := s.client.Checkpoint(ctx, id); err == nil {
			t.Error("a checkpoint named after pid 1 was taken")
		}
		if res := run(t, id, "print('alive')"); res.Stdout != "alive\n" {
			t.Fatalf("the session after: %+v", res)
		}
		l, err := s.client.Checkpoints(ctx, id)
		if err != nil || len(l.Checkpoints) != 1 {
			t.Errorf("checkpoints after: %+v %v", l, err)
		}
	})

	// Files: a symlink out of the working directory, a FIFO and a file without permissions are
	// neither followed, nor opened, nor lost; the copies are out of the code's reach; the
	// caps hold.
	t.Run("files", func(t *testing.T) {
		id := newSession(t)
		res := run(t, id, `import os
os.symlink('/etc/passwd', 'link')
os.mkfifo('fifo')
open('locked', 'w').write('mine')
os.chmod('locked', 0)
os.makedirs('sealed/in')
open('sealed/in/deep.txt', 'w').write('kept')
os.chmod('sealed/in', 0)
os.chmod('sealed', 0)
open('big', 'wb').write(b'x' * 800000)
`)
		if res.ExitCode != 0 {
			t.Fatalf("setup: %+v", res)
		}
		cp := checkpoint(t, id)
		res = run(t, id, `import os
print(oct(os.stat('locked').st_mode & 0o777))
for p in ('../checkpoints', '../checkpoints/`+cp+`/big'):
    try:
        os.listdir(p) if p.endswith('checkpoints') else open(p).read()
        print('reached', p)
    except OSError as e:
        print(e.errno)
open('big2', 'wb').write(b'x' * 900000)
os.remove('locked')
`)
		if res.Stdout != "0o0\n13\n13\n" {
			t.Fatalf("the copies from inside: %q %s", res.Stdout, res.Stderr)
		}
		var apiErr *client.APIError
		if _, err := s.client.Checkpoint(ctx, id); !errors.As(err, &apiErr) || apiErr.Code != api.ErrCodeCheckpointTooLarge {
			t.Errorf("a checkpoint of 1.8 MB over a cap of 1 MiB: %v", err)
		}
		restore(t, id, cp)
		res = run(t, id, `import os, stat
print(oct(stat.S_IMODE(os.stat('sealed').st_mode)))
os.chmod('locked', 0o600)
os.chmod('sealed', 0o700)
os.chmod('sealed/in', 0o700)
print(sorted(os.listdir('.')), open('locked').read(), os.path.getsize('big'), open('sealed/in/deep.txt').read())
`)
		if res.Stdout != "0o0\n['big', 'locked', 'sealed'] mine 800000 kept\n" {
			t.Fatalf("restored files: %q %s", res.Stdout, res.Stderr)
		}
	})

	// The cap, and a call's checkpoints rotating under it.
	t.Run("cap", func(t *testing.T) {
		id := newSession(t)
		for i := range 3 {
			if _, err := s.client.Checkpoint(ctx, id); err != nil {
				t.Fatalf("checkpoint %d: %v", i, err)
			}
		}
		var apiErr *client.APIError
		if _, err := s.client.Checkpoint(ctx, id); !errors.As(err, &apiErr) || apiErr.Code != api.ErrCodeTooManyCheckpoints {
			t.Errorf("a fourth: %v", err)
		}
		if _, err := s.client.SessionExecute(ctx, id, api.ExecuteRequest{Code: "1", Checkpoint: true}); !errors.As(err, &apiErr) || apiErr.Code != api.ErrCodeTooManyCheckpoints {
			t.Errorf("a call's checkpoint with no call's checkpoint to let go: %v", err)
		}
	})
	if res, err := s.client.Execute(ctx, api.ExecuteRequest{Code: "print('served')"}); err != nil || res.Stdout != "served\n" {
		t.Fatalf("the sidecar after the attacks: %+v %v", res, err)
	}
}

// procState is the state letter of pid in /proc/PID/stat.
func procState(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	return strings.Fields(s[strings.LastIndex(s, ")")+1:])[0]
}

// childrenOf are the children of pid, from /proc/PID/task/*/children.
func childrenOf(pid int) []string {
	var out []string
	tasks, _ := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	for _, task := range tasks {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + task.Name() + "/children")
		out = append(out, strings.Fields(string(b))...)
	}
	return out
}
