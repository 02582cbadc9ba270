package executor

import (
	"testing"
	"time"
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
