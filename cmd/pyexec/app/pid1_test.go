package app

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pyexec/pyexec/pkg/api"
)

// TestServeAsPID1ReapsEverything runs pyexec serve as PID 1 of a new PID namespace, as in a
// container, and sends a thousand executions whose code forks and abandons children; one in
// ten also kills its supervisor, so its processes are orphaned to PID 1. Afterwards the
// namespace holds pyexec serve alone: no zombies, no leftovers.
func TestServeAsPID1ReapsEverything(t *testing.T) {
	for _, mode := range []string{"spawn", "fork"} {
		t.Run(mode, func(t *testing.T) { testPID1(t, mode) })
	}
}

// testPID1 is one run: in spawn mode pyexec serve kills the escaped processes itself; in fork
// mode the zygote (a subreaper too) does, and stays, with its supervisors and one spare.
func testPID1(t *testing.T, mode string) {
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Fatalf("unshare (util-linux) is needed: %v", err)
	}
	if os.Getuid() != 0 {
		t.Skip("SKIPPED: a PID namespace needs root")
	}
	// Confinement keeps code from killing its supervisor: off here, as on a kernel without
	// Landlock and seccomp, where the reaper is the last line.
	s := startSidecar(t, []string{unshare, "--pid", "--fork", "--mount-proc", "--kill-child"}, "--max-concurrent", "2", "--queue", "64", "--mode", mode,
		"--max-landlock-abi", "0", "--seccomp=false")
	serve := namespacePID1(t, s.cmd.Process.Pid)
	ns, err := os.Readlink("/proc/" + strconv.Itoa(serve) + "/ns/pid")
	if err != nil {
		t.Fatal(err)
	}

	abandon := "import os, time\nif os.fork() == 0:\n    time.sleep(600)\nprint('ok')"
	escape := "import os, signal, time\nif os.fork() == 0:\n    time.sleep(600)\nprint('ok', flush=True)\nos.kill(os.getppid(), signal.SIGKILL)\ntime.sleep(600)"
	const n = 1000
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > n {
					return
				}
				code := abandon
				if i%10 == 0 {
					code = escape
				}
				res, err := s.client.Execute(context.Background(), api.ExecuteRequest{Code: code})
				if err != nil || res.Stdout != "ok\n" {
					if failed.Add(1) <= 5 {
						t.Errorf("execution %d: %+v %v", i, res, err)
					}
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d executions in %v", n, time.Since(start).Round(time.Millisecond))
	if failed.Load() > 0 {
		t.Fatalf("%d executions failed", failed.Load())
	}

	// In spawn mode every escape left its code's process to PID 1, which killed it.
	if killed := metric(t, s, "pyexec_escaped_processes_killed_total"); mode == "spawn" && killed < n/10 {
		t.Errorf("pyexec_escaped_processes_killed_total = %v, want at least %d", killed, n/10)
	}
	var left []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		left = leftovers(ns, serve, 2) // --warm 1: one execution's spare, and one session's
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes left in the namespace besides pyexec serve: %v", left)
		}
	}
	// unshare does not pass SIGTERM on: stop pyexec serve itself.
	if err := syscall.Kill(serve, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Wait(); err != nil {
		t.Errorf("pyexec serve as PID 1 did not exit cleanly: %v", err)
	}
}

// metric reads one value from the probe port's /metrics.
func metric(t testing.TB, s *sidecar, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + s.probe + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// namespacePID1 finds the child of unshare: pyexec serve, PID 1 of the new namespace.
func namespacePID1(t *testing.T, unsharePID int) int {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, p := range readProcTable() {
			if p.ppid == unsharePID {
				return p.pid
			}
		}
	}
	t.Fatal("no child of unshare")
	return 0
}

type procInfo struct {
	pid, ppid int
	state     string
}

func readProcTable() []procInfo {
	entries, _ := os.ReadDir("/proc")
	var out []procInfo
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(b), ')')
		f := strings.Fields(string(b[i+2:]))
		ppid, _ := strconv.Atoi(f[1])
		out = append(out, procInfo{pid: pid, ppid: ppid, state: f[0]})
	}
	return out
}

// leftovers lists the processes of the namespace other than pyexec serve and what runs code
// for it (see runnerTree) as "pid:state".
func leftovers(ns string, serve, warm int) []string {
	var procs []procInfo
	for _, p := range readProcTable() {
		if link, err := os.Readlink("/proc/" + strconv.Itoa(p.pid) + "/ns/pid"); err == nil && link == ns && p.pid != serve {
			procs = append(procs, p)
		}
	}
	allowed := runnerTree(procs, warm)
	var out []string
	for _, p := range procs {
		if !allowed[p.pid] {
			out = append(out, strconv.Itoa(p.pid)+":"+p.state)
		}
	}
	return out
}

// runnerTree is what of procs stays between executions: the runner (pyexec runner), its
// zygote, the zygote's supervisors (idle ones and spares, named pyexec-super) and up to warm
// spares' code processes or sessions' interpreters (the one, childless child of a supervisor).
// Code cannot pass for one of them: the tests' code does not rename itself.
func runnerTree(procs []procInfo, warm int) map[int]bool {
	kids := map[int][]int{}
	for _, p := range procs {
		kids[p.ppid] = append(kids[p.ppid], p.pid)
	}
	allowed := map[int]bool{}
	for _, p := range procs {
		if isRunner(p.pid) {
			allowed[p.pid] = true
		}
	}
	for _, p := range procs {
		if allowed[p.ppid] && comm(p.pid) == "pyexec-zygote" {
			allowed[p.pid] = true
		}
	}
	spares := 0
	for _, p := range procs {
		if !allowed[p.ppid] || comm(p.pid) != "pyexec-super" || isRunner(p.ppid) {
			continue
		}
		allowed[p.pid] = true
		if c := kids[p.pid]; len(c) == 1 && len(kids[c[0]]) == 0 && spares < warm {
			allowed[c[0]] = true
			spares++
		}
	}
	return allowed
}

// isRunner reports whether pid is pyexec runner.
func isRunner(pid int) bool {
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return err == nil && strings.Contains(string(cmdline), "\x00runner\x00")
}

// comm is the name of pid (/proc/PID/comm).
func comm(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
