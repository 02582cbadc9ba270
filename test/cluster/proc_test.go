package cluster

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// A component is running from the moment cmd.Start returns: its /proc/PID/cmdline may still
// read empty then (execve has closed the exec pipe but not yet set up the arguments), which
// made the cluster take a starting kubelet for a dead one, and its teardown skip it.
func TestProcRunningFromStart(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip(err)
	}
	// A command name with ") (" in it, as /proc/PID/stat shows it in the comm field.
	bin := filepath.Join(t.TempDir(), "x) (y")
	if err := os.Symlink(sleep, bin); err != nil {
		t.Fatal(err)
	}
	c := &Cluster{Dir: t.TempDir()}
	if err := os.MkdirAll(c.path("run"), 0o755); err != nil {
		t.Fatal(err)
	}
	emptyCmdlines := 0
	for i := 0; i < 100; i++ {
		cmd := exec.Command(bin, "60")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", cmd.Process.Pid)); len(b) == 0 {
			emptyCmdlines++
		}
		p, err := procOf(cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.writePidFile("sleep", p); err != nil {
			t.Fatal(err)
		}
		if got, ok := c.proc("sleep"); !ok || got != p {
			t.Fatalf("start %d: proc(sleep) = %v, %v right after Start; want %v, true", i, got, ok, p)
		}
		cmd.Process.Kill()
		cmd.Wait()
		if p.running() {
			t.Fatalf("start %d: %v still running after it was killed and reaped", i, p)
		}
		if _, ok := c.proc("sleep"); ok {
			t.Fatalf("start %d: proc(sleep) running after it was killed and reaped", i)
		}
	}
	t.Logf("%d of 100 starts read an empty /proc/PID/cmdline right after Start", emptyCmdlines)
}

// A pid file that names a pid now used by another process (a reboot, a kept cluster) does not
// name a running component.
func TestProcOtherProcess(t *testing.T) {
	c := &Cluster{Dir: t.TempDir()}
	if err := os.MkdirAll(c.path("run"), 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := procOf(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !self.running() {
		t.Fatalf("%v: this process is not running", self)
	}
	other := proc{pid: self.pid, start: self.start + 1}
	if err := c.writePidFile("x", other); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.proc("x"); ok {
		t.Fatal("a pid file with another start time names this process")
	}
	// A pid file of an older checkout: the pid alone, and this process does not name the
	// cluster's directory in its arguments.
	if err := os.WriteFile(c.path("run", "x.pid"), []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.proc("x"); ok {
		t.Fatal("an old pid file names a process that does not name the cluster's directory")
	}
}
