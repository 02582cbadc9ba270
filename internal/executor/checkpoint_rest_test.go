package executor

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pyexec/pyexec/internal/proc"
)

// A session at rest runs nothing, whatever the code started on the way there: processes forked
// by a replaced checkpoint.take or checkpoint._hold (plain children and double-forked orphans),
// by the interpreter restored from a checkpoint, and by a thread at the very end of a call are
// killed before the call or the op is answered (the attacker's pass found each running at
// rest). Checked from outside: the process is gone, a zombie, or stopped, and takes no CPU.
func TestSessionAtRestRunsNothing(t *testing.T) {
	spin := func(name string) string {
		return "open('" + name + "', 'w').write(str(os.getpid()))\n            while True: pass\n"
	}
	cases := []struct {
		name, setup string
		restore     bool // the spinner comes at a restore, else at a checkpoint (or the call)
		none        bool // no checkpoint: the call itself
	}{
		{name: "orphan of the checkpoint op", setup: `import sys, os
m = sys.modules['pyexec_runner.checkpoint']
orig = m.take
def take(fd, call):
    if os.fork() == 0:
        if os.fork() == 0:
            ` + spin("spinner.pid") + `
        os._exit(0)
    os.wait()
    return orig(fd, call)
m.take = take
`},
		{name: "child of the checkpoint op", setup: `import sys, os
m = sys.modules['pyexec_runner.checkpoint']
orig = m.take
def take(fd, call):
    if os.fork() == 0:
        if True:
            ` + spin("spinner.pid") + `
    return orig(fd, call)
m.take = take
`},
		{name: "orphan of the checkpoint's process", setup: `import sys, os
m = sys.modules['pyexec_runner.checkpoint']
orig = m._hold
def hold(sock, state, *rest):
    if os.fork() == 0:
        if os.fork() == 0:
            ` + spin("spinner.pid") + `
        os._exit(0)
    os.wait()
    return orig(sock, state, *rest)
m._hold = hold
`},
		{name: "child of the restored interpreter", restore: true, setup: `import sys, os
m = sys.modules['pyexec_runner.checkpoint']
orig = m.take
def take(fd, call):
    r = orig(fd, call)
    if r[1] is not None and os.fork() == 0:
        if True:
            ` + spin("spinner.pid") + `
    return r
m.take = take
`},
		{name: "child of a thread at the end of a call", none: true, setup: `import os, threading, time
def keep():
    pid = None
    while True:
        if pid is not None:
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == 0:
                    time.sleep(0.0005)
                    continue
            except ChildProcessError:
                pass
        pid = os.fork()
        if pid == 0:
            open('spinner.tmp%d' % os.getpid(), 'w').write(str(os.getpid()))
            os.rename('spinner.tmp%d' % os.getpid(), 'spinner.pid')
            while True: pass
threading.Thread(target=keep, daemon=True).start()
time.sleep(0.2)
`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ss := newSession(t, sessionModes(t)["fork"], checkpointed(SessionRequest{ID: "s"}))
			if res := call(t, ss, c.setup); res.ExitCode != 0 {
				t.Fatalf("setup: %+v", res)
			}
			if !c.none {
				cp, err := ss.Checkpoint(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				if c.restore {
					if err := ss.Restore(context.Background(), cp.ID); err != nil {
						t.Fatal(err)
					}
				}
			}
			// Every process of the session — the interpreter, the checkpoints, what is left —
			// is stopped or a zombie, and none takes CPU.
			time.Sleep(200 * time.Millisecond)
			before := map[int]int64{}
			for _, pid := range proc.Descendants(ss.sup) {
				_, before[pid] = threadTicks(pid)
			}
			time.Sleep(time.Second)
			for pid, cpu := range before {
				if st, now := threadTicks(pid); strings.Trim(st, "TZ") != "" || now > cpu {
					t.Errorf("process %d of the session at rest: threads %q, %d ticks of CPU in 1 s", pid, st, now-cpu)
				}
			}
			if res := call(t, ss, "print('alive')"); res.Stdout != "alive\n" {
				t.Errorf("the session after: %+v", res)
			}
		})
	}
}

// Many small files count against MaxCheckpointBytes as the disk holds them (a block and an
// inode each, as do directories): 20,000 one-byte files are over a cap of 1 MiB, which their
// contents are not.
func TestCheckpointCountsEveryFile(t *testing.T) {
	ss := newSession(t, sessionModes(t)["fork"], checkpointed(SessionRequest{ID: "s"}))
	if res := call(t, ss, "import os\nos.mkdir('s')\nfor i in range(20000):\n    open('s/%d' % i, 'wb').write(b'x')"); res.ExitCode != 0 {
		t.Fatalf("setup: %+v", res)
	}
	_, err := ss.Checkpoint(context.Background())
	if !errors.Is(err, ErrCheckpointTooLarge) {
		t.Fatalf("20,000 files against a cap of 1 MiB: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(ss.dir, checkpointsDir)); len(entries) != 0 {
		t.Errorf("what the refused checkpoint copied is still there: %v", entries)
	}
}

// A directory the code took its permissions from is copied, and given them back, in the
// session and in the restored copy; a tree deeper than the walk goes is refused, never
// silently left out.
func TestCheckpointLockedAndDeepTrees(t *testing.T) {
	ss := newSession(t, sessionModes(t)["fork"], checkpointed(SessionRequest{ID: "s"}))
	if res := call(t, ss, "import os\nos.makedirs('locked/inner')\nopen('locked/inner/data.csv', 'w').write('precious')\nos.chmod('locked/inner', 0)\nos.chmod('locked', 0o500)"); res.ExitCode != 0 {
		t.Fatalf("setup: %+v", res)
	}
	cp, err := ss.Checkpoint(context.Background())
	if err != nil || cp.Files != 1 {
		t.Fatalf("checkpoint of a locked tree: %+v %v", cp, err)
	}
	modes := "import os, stat\nprint(oct(stat.S_IMODE(os.stat('locked').st_mode)), oct(stat.S_IMODE(os.stat('locked/inner').st_mode)))"
	if res := call(t, ss, modes); res.Stdout != "0o500 0o0\n" {
		t.Fatalf("the session's modes after the checkpoint: %q %s", res.Stdout, res.Stderr)
	}
	call(t, ss, "os.chmod('locked', 0o700)\nos.chmod('locked/inner', 0o700)\nopen('locked/inner/data.csv', 'w').write('spoiled')\nos.chmod('locked/inner', 0)")
	if err := ss.Restore(context.Background(), cp.ID); err != nil {
		t.Fatal(err)
	}
	if res := call(t, ss, modes+"\nos.chmod('locked', 0o700)\nos.chmod('locked/inner', 0o700)\nprint(open('locked/inner/data.csv').read())"); res.Stdout != "0o500 0o0\nprecious\n" {
		t.Fatalf("after the restore: %q %s", res.Stdout, res.Stderr)
	}
	if res := call(t, ss, "import os\np = 'deep' + '/d' * 300\nos.makedirs(p)\nopen(p + '/f.txt', 'w').write('deep')"); res.ExitCode != 0 {
		t.Fatalf("a deep tree: %+v", res)
	}
	if _, err := ss.Checkpoint(context.Background()); err == nil || !strings.Contains(err.Error(), "deeper than") {
		t.Fatalf("a checkpoint of a tree deeper than the walk: %v", err)
	}
}

// diskUsage sums the blocks of everything below dir, in bytes.
func diskUsage(dir string) int64 {
	var total int64
	_ = filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				total += st.Blocks * 512
			}
		}
		return nil
	})
	return total
}

// A checkpoint within its cap holds at most the cap on disk, however small its files.
func TestCheckpointDiskWithinTheCap(t *testing.T) {
	ss := newSession(t, sessionModes(t)["fork"], checkpointed(SessionRequest{ID: "s"}))
	if res := call(t, ss, "import os\nos.mkdir('s')\nfor i in range(200):\n    open('s/%d' % i, 'wb').write(b'x')"); res.ExitCode != 0 {
		t.Fatalf("setup: %+v", res)
	}
	cp, err := ss.Checkpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if du := diskUsage(filepath.Join(ss.dir, checkpointsDir, cp.ID)); du > ss.req.MaxCheckpointBytes {
		t.Errorf("a checkpoint of %d files takes %d bytes of disk, over its cap of %d", cp.Files, du, ss.req.MaxCheckpointBytes)
	}
}
