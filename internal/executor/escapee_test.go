package executor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pyexec/pyexec/pkg/api"
)

// threadTicks sums the CPU ticks of every thread of pid and lists their states ("" when gone):
// the state of /proc/PID/stat is the main thread's alone.
func threadTicks(pid int) (states string, ticks int64) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return "", 0
	}
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndex(s, ")")+2:])
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		states += f[0]
		ticks += ut + st
	}
	return states, ticks
}

// escapee is code that leaves a process whose main thread has exited (SYS_exit of that thread
// alone, not exit_group) while another thread of it runs — /proc/PID/stat then says "Z" of the
// whole process — a double-forked orphan. Its thread spins and, once an 'armed' file is there,
// spoils data.csv whenever it is not spoiled. It prints the process's pid. (A second attacker's
// pass used it to run at rest, to undo restores and to hold memory counted nowhere.)
const escapee = `import os, ctypes, threading, time
r, w = os.pipe()
if os.fork() == 0:
    os.close(r)
    if os.fork() == 0:
        def spin():
            n = 0
            while True:
                n += 1
                if n % 20000 == 0 and os.path.exists('armed'):
                    try:
                        if open('data.csv').read() != 'spoiled':
                            open('data.csv', 'w').write('spoiled')
                    except OSError:
                        pass
        threading.Thread(target=spin, daemon=True).start()
        os.write(w, str(os.getpid()).encode())
        os.close(w)
        ctypes.CDLL(None).syscall(60, 0)  # SYS_exit: this thread alone
    os._exit(0)
os.close(w)
print(os.read(r, 32).decode())
os.wait()
time.sleep(0.2)
`

// A process whose main thread is gone is one of the session's like any other: killed at rest
// (it neither runs between calls nor spoils what a restore put back), and gone with its
// session.
func TestSessionEscapeeWithItsMainThreadGone(t *testing.T) {
	for mode, st := range sessionModes(t) {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ss, err := st.NewSession(context.Background(), checkpointed(SessionRequest{ID: "s", Limits: defaultLimits}))
			if err != nil {
				t.Fatal(err)
			}
			defer ss.Close()
			res := call(t, ss, escapee)
			pid, err := strconv.Atoi(strings.TrimSpace(res.Stdout))
			if res.ExitCode != 0 || err != nil {
				t.Fatalf("setup: %+v", res)
			}
			call(t, ss, "open('data.csv', 'w').write('precious')")
			cp, err := ss.Checkpoint(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond)
			_, before := threadTicks(pid)
			time.Sleep(time.Second)
			if states, after := threadTicks(pid); states != "" && after > before {
				t.Errorf("process %d of the session runs at rest: threads %q, %d ticks of CPU in 1 s", pid, states, after-before)
			}
			call(t, ss, "open('armed', 'w').write('1')\nopen('data.csv', 'w').write('spoiled')")
			if err := ss.Restore(context.Background(), cp.ID); err != nil {
				t.Fatal(err)
			}
			time.Sleep(300 * time.Millisecond)
			if b, _ := os.ReadFile(filepath.Join(ss.work, "data.csv")); string(b) != "precious" {
				t.Errorf("data.csv at rest after the restore: %q", b)
			}
			// Once more, and then the session's end: nothing of it is left.
			res = call(t, ss, escapee)
			pid, _ = strconv.Atoi(strings.TrimSpace(res.Stdout))
			ss.Close()
			time.Sleep(500 * time.Millisecond)
			if states, _ := threadTicks(pid); states != "" && strings.Trim(states, "Z") != "" {
				t.Errorf("process %d outlives its session: threads %q", pid, states)
			}
		})
	}
}

// Its memory counts against the session's limit, read through its live thread: 300 MiB in a
// session of memory_limit_mb 128 end the call (memory_limit) and the session.
func TestSessionEscapeeMemoryCounted(t *testing.T) {
	lim := defaultLimits
	lim.MemoryLimitMB = 128
	ss := newSession(t, sessionModes(t)["fork"], SessionRequest{ID: "s", Limits: lim})
	res := call(t, ss, `import os, ctypes, threading, time
if os.fork() == 0:
    if os.fork() == 0:
        def hold():
            time.sleep(0.5)  # once the main thread is gone
            blob = b'x' * (300 << 20)
            time.sleep(60)
        threading.Thread(target=hold, daemon=True).start()
        ctypes.CDLL(None).syscall(60, 0)
    os._exit(0)
os.wait()
time.sleep(5)
print('not stopped')
`)
	if res.Reason != api.ReasonMemoryLimit || !res.SessionLost {
		t.Fatalf("300 MiB in a process whose main thread is gone, under 128: %+v", res)
	}
}

// Code that kills the interpreter being replaced during a restore (from an at-fork handler of
// the copy) leaves the supervisor standing: the restore goes on by the interpreters' pidfds.
func TestRestoreWhenTheCodeKillsTheOldInterpreter(t *testing.T) {
	ss := newSession(t, sessionModes(t)["fork"], checkpointed(SessionRequest{ID: "s"}))
	setup := `import os, signal, time
OLD = os.getpid()
RAN = False
def hook():
    global RAN
    if os.path.exists('kill-old') and os.getpid() != OLD:
        if not RAN:  # the middle process of the restore's fork
            RAN = True
            try:
                os.kill(OLD, signal.SIGKILL)
            except OSError:
                pass
        else:  # the new interpreter: the supervisor reaps the old one meanwhile
            time.sleep(1.2)
os.register_at_fork(after_in_child=hook)
`
	if res := call(t, ss, setup); res.ExitCode != 0 {
		t.Fatalf("setup: %+v", res)
	}
	cp, err := ss.Checkpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	call(t, ss, "open('kill-old', 'w').write('1')")
	if err := ss.Restore(context.Background(), cp.ID); err != nil {
		t.Fatalf("the restore: %v", err)
	}
	if res := call(t, ss, "print('alive')"); res.Stdout != "alive\n" {
		t.Fatalf("the session after: %+v", res)
	}
}
