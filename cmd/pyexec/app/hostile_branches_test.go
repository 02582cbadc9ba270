package app

import (
	"context"
	"strings"
	"testing"

	"github.com/pyexec/pyexec/pkg/api"
)

// siblingAttack is Python that attacks every other process its supervisor holds — the
// session's interpreter, its branches', their checkpoints — as hostile code finds them (the
// other children of its interpreter's parent): signals, their memory, their environment, their
// descriptors (what /proc/PID/fd/0 is: the numbers of a dumpable process of the same uid are
// listed, as between any two sessions), ptrace, their working directories (through
// /proc/PID/cwd and by the paths they give), and prints what got through, one item a line,
// then "done".
const siblingAttack = `import os, ctypes, signal, errno
def _ppid(p):
    try:
        return int(open('/proc/%s/stat' % p).read().rsplit(')', 1)[1].split()[1])
    except Exception:
        return None
others = [int(p) for p in os.listdir('/proc') if p.isdigit() and int(p) != os.getpid() and _ppid(p) == os.getppid()]
libc = ctypes.CDLL(None, use_errno=True)
got = []
def attempt(what, f):
    try:
        f()
        got.append(what)
    except (OSError, ValueError):
        pass
for p in others:
    for sig in (signal.SIGKILL, signal.SIGSTOP, signal.SIGTERM, 0):
        attempt('signal %d %d' % (sig, p), lambda: os.kill(p, sig))
    attempt('mem %d' % p, lambda: open('/proc/%d/mem' % p, 'rb').read(1))
    attempt('environ %d' % p, lambda: open('/proc/%d/environ' % p, 'rb').read())
    attempt('cwd %d' % p, lambda: os.listdir('/proc/%d/cwd' % p))
    attempt('fd %d' % p, lambda: os.readlink('/proc/%d/fd/0' % p))
    if libc.syscall(101, 16, p, 0, 0) == 0:  # ptrace(PTRACE_ATTACH)
        got.append('ptrace %d' % p)
for d in TARGETS:
    attempt('read ' + d, lambda: open(d + '/mine.txt').read())
    attempt('write ' + d, lambda: open(d + '/mine.txt', 'w').write('x'))
    attempt('list ' + d, lambda: os.listdir(d))
print('\n'.join(got + ['done']))
`

// A session and its branches, through a pod's server and runner, attack each other after the
// fork: none gets through, checked from outside too (every member alive, its file its own).
func TestHostileBranches(t *testing.T) {
	s := podSidecar(t, podOptions{}, "--max-sessions=8", "--max-checkpoints-per-session=2")
	ctx := context.Background()
	sess, err := s.client.CreateSession(ctx, api.SessionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	run := func(id, code string) *api.ExecuteResult {
		t.Helper()
		res, err := s.client.SessionExecute(ctx, id, api.ExecuteRequest{Code: code})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	run(sess.ID, "import os\nopen('mine.txt', 'w').write('session')")
	if _, err := s.client.Checkpoint(ctx, sess.ID); err != nil {
		t.Fatal(err)
	}
	bs, err := s.client.ForkN(ctx, sess.ID, 2)
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{sess.ID, bs[0].ID, bs[1].ID}
	for _, id := range ids {
		t.Cleanup(func() { s.client.DeleteSession(ctx, id) })
	}
	cwd := map[string]string{}
	for i, id := range ids {
		run(id, "open('mine.txt', 'w').write('"+id+"')")
		cwd[id] = strings.TrimSpace(run(id, "print(os.getcwd())").Stdout)
		if i > 0 && (cwd[id] == cwd[ids[0]] || cwd[id] == "") {
			t.Fatalf("branch %s works in %q", id, cwd[id])
		}
	}
	for _, id := range ids {
		var targets []string
		for _, o := range ids {
			if o != id {
				targets = append(targets, `"`+cwd[o]+`"`)
			}
		}
		res := run(id, "TARGETS = ["+strings.Join(targets, ", ")+"]\n"+siblingAttack)
		if res.ExitCode != 0 || res.Stdout != "done\n" {
			t.Errorf("%s got through to the others: %q (stderr %s)", id, res.Stdout, res.Stderr)
		}
	}
	for _, id := range ids {
		if res := run(id, "print(open('mine.txt').read())"); res.Stdout != id+"\n" {
			t.Errorf("%s after the attacks: %+v", id, res)
		}
		if info, err := s.client.Session(ctx, id); err != nil || info.Busy {
			t.Errorf("%s after the attacks: %+v %v", id, info, err)
		}
	}
}
