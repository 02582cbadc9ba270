package proc

import (
	"bytes"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/pyexec/pyexec/internal/testutil"
)

// /proc/PID/stat: a comm with spaces and parentheses, the state, the parent, and PF_EXITING in
// the flags (field 9), which the reaper reads to tell a process already exiting from an escapee.
func TestParseStat(t *testing.T) {
	for _, tt := range []struct {
		line            string
		ppid            int
		zombie, exiting bool
		threads         int
		rss             int64
	}{
		{"12 (python3) S 7 12 12 0 -1 4194560 100 0", 7, false, false, 0, 0},
		{"12 (a (b) c) R 7 12 12 0 -1 4194564 100 0", 7, false, true, 0, 0},
		{"12 (x) Z 9 12 12 0 -1 4227076 0 0", 9, true, true, 0, 0},
		{"12 (python3) S 7 12 12 0 -1 4194560 2311 0 0 0 5 1 0 0 20 0 3 0 9077 31916032 2562 18446744073709551615 1 1 0 0 0 0 0 16781312 2 0 0 0 17 1 0 0 0 0 0",
			7, false, false, 3, 2562},
		// The main thread exited, another runs: no zombie.
		{"12 (python3) Z 7 12 12 0 -1 4194564 2311 0 0 0 5 1 0 0 20 0 2 0 9077 0 0 18446744073709551615 1 1 0 0 0 0 0 16781312 2 0 0 0 17 1 0 0 0 0 0",
			7, false, true, 2, 0},
		{"12 (python3) Z 7 12 12 0 -1 4194564 2311 0 0 0 5 1 0 0 20 0 1 0 9077 0 0 18446744073709551615 1 1 0 0 0 0 0 16781312 2 0 0 0 17 1 0 0 0 0 0",
			7, true, true, 1, 0},
	} {
		p, ok := parseStat(12, []byte(tt.line))
		if !ok || p.PPID != tt.ppid || p.Zombie != tt.zombie || p.Exiting != tt.exiting || p.Threads != tt.threads || p.RSSPages != tt.rss {
			t.Errorf("parseStat(%q) = %+v, %v", tt.line, p, ok)
		}
	}
	if p, ok := ReadStat(os.Getpid()); !ok || p.Exiting || p.Zombie || p.Threads < 2 || p.RSSPages <= 0 {
		t.Errorf("this process: %+v, %v", p, ok)
	}
}

// A process whose main thread exited while another runs (SYS_exit, not exit_group) is in the
// tree, not a zombie, and its memory is read through its live thread: code must not hide a
// process from the kills and the memory limits this way (an attacker's pass did).
func TestMainThreadGone(t *testing.T) {
	py := testutil.RequireSystemPython(t)
	cmd := exec.Command(py, "-c", `import ctypes, threading, time
b = b"x" * (64 << 20)
threading.Thread(target=time.sleep, args=(60,)).start()
time.sleep(0.1)
ctypes.CDLL(None).syscall(60, 0)`)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	pid := cmd.Process.Pid
	var p Stat
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if bytes.Contains(b, []byte(") Z ")) {
			p, _ = parseStat(pid, b)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the main thread never exited")
		}
	}
	if p.Zombie || p.Threads != 2 {
		t.Fatalf("the process with a live thread: %+v", p)
	}
	if !slices.Contains(Descendants(os.Getpid()), pid) {
		t.Error("Descendants leaves it out")
	}
	if rss := StatmRSS(pid); rss < 64<<20 {
		t.Errorf("its resident memory: %d MiB, want at least 64", rss>>20)
	}
	if rss, _ := TreeMemory(pid); rss < 64<<20 {
		t.Errorf("TreeMemory: %d MiB", rss>>20)
	}
}
