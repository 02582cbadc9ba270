package app

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pyexec/pyexec/internal/testutil"
	"github.com/pyexec/pyexec/pkg/api"
)

// BenchmarkFootprint measures the memory of an idle pod: a real pyexec serve (the pyexec
// binary, built for the run) with numpy, pandas and matplotlib preloaded and the default
// flags, its runner, zygote, spares and sessions. It reports the proportional set size (PSS,
// from /proc/PID/smaps_rollup: a page shared by n processes counts 1/n in each) in MiB of each
// role and of the whole pod, in these states:
//
//   - at rest: idle for --rest-after, the spare cold (metrics <role>-MiB, total-MiB, and
//     anon-MiB and file-MiB: the pages of the heap and of mapped files; and alone-MiB, the
//     pages the pod's processes map, each counted once: its PSS were nothing else on the
//     machine mapping the same files); then after bursts of stateless executions, at rest
//     again (after-traffic-MiB);
//   - warm: started, its spare warmed up, nothing run yet, as a pod is for --rest-after after
//     its start and after each execution (warm-total-MiB, warm-anon-MiB, warm-alone-MiB);
//     right after bursts of stateless executions, with the supervisors kept for the next ones
//     (burst-MiB);
//   - sessions: what one more idle pandas session adds (MiB/session): after one session, then
//     sessionsN more, each having run a pandas call, all idle.
//
// File pages shared with processes outside the pod (the system's Python and libraries, used
// by other programs on the machine) count in part only, so file-MiB and total-MiB vary with
// what else runs; anon-MiB and alone-MiB do not. Needs root (the runner's processes are
// another uid's and not dumpable) and numpy, pandas and matplotlib in the system Python. It
// starts two sidecars, one after the other (-v logs each process):
//
//	go test ./cmd/pyexec/app -run '^$' -bench Footprint -benchtime 1x -v
func BenchmarkFootprint(b *testing.B) {
	requireDataStack(b)
	if os.Getuid() != 0 {
		b.Fatal("reading the PSS of the runner's processes needs root")
	}
	bin := buildPyexec(b)
	ctx := context.Background()
	pss := func(p procMem) float64 { return p.pss }
	anon := func(p procMem) float64 { return p.anon }

	// At rest.
	const restAfter = 5 * time.Second
	s := startSidecarWith(b, sidecarOptions{bin: bin}, "--preload", "numpy,pandas,matplotlib", "--rest-after", restAfter.String())
	server := s.cmd.Process.Pid
	time.Sleep(restAfter) // counted from the runner's start, a little later
	rest := waitIdle(b, server)
	logFootprint(b, "at rest", rest)
	byRole := map[string]float64{}
	for _, p := range rest {
		byRole[p.role] += p.pss
	}
	for _, role := range footprintRoles {
		b.ReportMetric(byRole[role], role+"-MiB")
	}
	b.ReportMetric(sumOf(rest, pss), "total-MiB")
	b.ReportMetric(sumOf(rest, anon), "anon-MiB")
	b.ReportMetric(sumOf(rest, func(p procMem) float64 { return p.file }), "file-MiB")
	b.ReportMetric(alone(b, rest), "alone-MiB")
	bursts(b, s)
	time.Sleep(restAfter)
	rest = waitIdle(b, server)
	logFootprint(b, "at rest after traffic", rest)
	b.ReportMetric(sumOf(rest, pss), "after-traffic-MiB")
	s.stop()

	// Warm.
	s = startSidecarWith(b, sidecarOptions{bin: bin}, "--preload", "numpy,pandas,matplotlib", "--rest-after", "0")
	server = s.cmd.Process.Pid
	warm := waitIdle(b, server)
	logFootprint(b, "warm", warm)
	b.ReportMetric(sumOf(warm, pss), "warm-total-MiB")
	b.ReportMetric(sumOf(warm, anon), "warm-anon-MiB")
	b.ReportMetric(alone(b, warm), "warm-alone-MiB")
	bursts(b, s)
	warm = waitIdle(b, server)
	logFootprint(b, "right after traffic", warm)
	b.ReportMetric(sumOf(warm, pss), "burst-MiB")

	// Idle pandas sessions: what one more adds, the first one (and whatever it starts) aside.
	const sessionsN = 4
	pandas := api.ExecuteRequest{Code: "import pandas as pd\ndf = pd.DataFrame({'a': range(1000)})\ndf.describe()"}
	session := func() {
		sess, err := s.client.CreateSession(ctx, api.SessionRequest{})
		if err != nil {
			b.Fatal(err)
		}
		if res, err := s.client.SessionExecute(ctx, sess.ID, pandas); err != nil || res.ExitCode != 0 {
			b.Fatalf("pandas call: %+v %v", res, err)
		}
	}
	session()
	one := waitIdle(b, server)
	for range sessionsN {
		session()
	}
	more := waitIdle(b, server)
	logFootprint(b, fmt.Sprintf("%d idle pandas sessions", 1+sessionsN), more)
	b.ReportMetric((sumOf(more, pss)-sumOf(one, pss))/sessionsN, "MiB/session")
	b.ReportMetric(0, "ns/op")
}

// bursts sends three bursts of four stateless executions at once, which leave supervisors
// kept for the next executions.
func bursts(b *testing.B, s *sidecar) {
	for range 3 {
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if res, err := s.client.Execute(context.Background(), api.ExecuteRequest{Code: "print(1)"}); err != nil || res.ExitCode != 0 {
					b.Errorf("print(1): %+v %v", res, err)
				}
			}()
		}
		wg.Wait()
		time.Sleep(200 * time.Millisecond)
	}
}

// footprintRoles are the processes of a pod, as classifyPod names them.
var footprintRoles = []string{"server", "runner", "zygote", "spare-super", "spare-code", "session-super", "session", "idle-super", "other"}

// requireDataStack returns the system Python; it skips the benchmark when that lacks numpy,
// pandas or matplotlib.
func requireDataStack(b *testing.B) string {
	py := testutil.RequireSystemPython(b)
	if out, err := exec.Command(py, "-c", "import numpy, pandas, matplotlib").CombinedOutput(); err != nil {
		b.Skipf("SKIPPED: needs numpy, pandas and matplotlib in %s (apt-get install python3-pandas python3-matplotlib): %s", py, out)
	}
	return py
}

// buildPyexec builds this tree's pyexec binary as buildPyexecIn does.
func buildPyexec(b *testing.B) string {
	root, err := filepath.Abs("../../..")
	if err != nil {
		b.Fatal(err)
	}
	return buildPyexecIn(b, root)
}

// buildPyexecIn builds the pyexec binary of the source tree src into a directory every user may
// enter (the runner runs it as nobody): the pod's processes are those of the image's binary, not
// of this test binary. It is built as the Dockerfile builds it (static, without symbols) and
// laid down as an image's layer lays it down, written with write(2): the linker writes its
// output through mmap, and on the VM this was measured on such a file's text sat in the page
// cache in large folios mapped with 2 MiB pages, which made the same server 2-3x slower in every
// stage at rest — a difference of files, not of code.
func buildPyexecIn(b *testing.B, src string) string {
	b.Helper()
	dir, err := os.MkdirTemp("", "pxbin")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	linked := filepath.Join(dir, "pyexec.linked")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", linked, "./cmd/pyexec")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("building pyexec in %s: %v: %s", src, err, out)
	}
	data, err := os.ReadFile(linked)
	if err != nil {
		b.Fatal(err)
	}
	bin := filepath.Join(dir, "pyexec")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.Remove(linked); err != nil {
		b.Fatal(err)
	}
	return bin
}

// procMem is the memory of one process of the pod, in MiB.
type procMem struct {
	pid             int
	role, comm      string
	pss, anon, file float64
}

// waitIdle waits until the pod's memory holds still (two readings a second apart within
// 0.25 MiB, for at most a minute: spares and sessions started ahead of time have warmed up)
// and returns it.
func waitIdle(b *testing.B, server int) []procMem {
	b.Helper()
	prev := math.Inf(1)
	for deadline := time.Now().Add(time.Minute); ; {
		time.Sleep(time.Second)
		procs := podMemory(b, server)
		total := sumOf(procs, func(p procMem) float64 { return p.pss })
		if math.Abs(total-prev) < 0.25 || time.Now().After(deadline) {
			return procs
		}
		prev = total
	}
}

// podMemory reads the PSS of server and every process below it, each with its role: the
// server, its runner, the zygote and the supervisors the zygote forked — a spare's (in a
// process group of its own, with the spare's code process), a session's (with the session's
// interpreter), or one kept idle after an execution (no child).
func podMemory(b *testing.B, server int) []procMem {
	b.Helper()
	kids := map[int][]int{}
	for _, p := range readProcTable() {
		kids[p.ppid] = append(kids[p.ppid], p.pid)
	}
	var out []procMem
	add := func(pid int, role string) {
		m, err := smapsRollup(pid)
		if err != nil {
			return // it ended meanwhile
		}
		m.role = role
		out = append(out, m)
	}
	var walk func(pid int, role string)
	walk = func(pid int, role string) {
		add(pid, role)
		for _, k := range kids[pid] {
			walk(k, role)
		}
	}
	add(server, "server")
	for _, runner := range kids[server] {
		add(runner, "runner")
		for _, z := range kids[runner] {
			if comm(z) != "pyexec-zygote" {
				walk(z, "other")
				continue
			}
			add(z, "zygote")
			for _, sup := range kids[z] {
				switch {
				case comm(sup) != "pyexec-super":
					walk(sup, "other")
				case len(kids[sup]) == 0:
					add(sup, "idle-super")
				case pgid(sup) == sup:
					add(sup, "spare-super")
					for _, k := range kids[sup] {
						walk(k, "spare-code")
					}
				default:
					add(sup, "session-super")
					for _, k := range kids[sup] {
						walk(k, "session")
					}
				}
			}
		}
	}
	return out
}

// smapsRollup reads /proc/PID/smaps_rollup.
func smapsRollup(pid int) (procMem, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		return procMem{}, err
	}
	m := procMem{pid: pid, comm: comm(pid)}
	for _, line := range strings.Split(string(data), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
		if err != nil {
			continue
		}
		switch name {
		case "Pss":
			m.pss = kb / 1024
		case "Pss_Anon":
			m.anon = kb / 1024
		case "Pss_File":
			m.file = kb / 1024
		}
	}
	return m, nil
}

// pgid is the process group of pid, from /proc/PID/stat; -1 if it ended.
func pgid(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return -1
	}
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+2:]))
	if len(f) < 3 {
		return -1
	}
	g, err := strconv.Atoi(f[2])
	if err != nil {
		return -1
	}
	return g
}

func sumOf(procs []procMem, f func(procMem) float64) float64 {
	var sum float64
	for _, p := range procs {
		sum += f(p)
	}
	return sum
}

// logFootprint logs the processes of the pod in state, by role, then the totals.
func logFootprint(b *testing.B, state string, procs []procMem) {
	procs = slices.Clone(procs)
	slices.SortStableFunc(procs, func(x, y procMem) int {
		return slices.Index(footprintRoles, x.role) - slices.Index(footprintRoles, y.role)
	})
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s: PSS MiB (anon + file)\n", state)
	for _, p := range procs {
		fmt.Fprintf(&sb, "  %-13s %7d %-14s %6.1f (%5.1f + %5.1f)\n", p.role, p.pid, p.comm, p.pss, p.anon, p.file)
	}
	fmt.Fprintf(&sb, "  %-36s %6.1f (%5.1f + %5.1f)", "total", sumOf(procs, func(p procMem) float64 { return p.pss }),
		sumOf(procs, func(p procMem) float64 { return p.anon }), sumOf(procs, func(p procMem) float64 { return p.file }))
	b.Log(sb.String())
}

// alone is the memory of procs in MiB were they alone on the machine: the physical pages they
// map (from /proc/PID/pagemap, which shows frame numbers to root), each counted once.
func alone(b *testing.B, procs []procMem) float64 {
	b.Helper()
	frames := map[uint64]struct{}{}
	for _, p := range procs {
		if err := mappedFrames(p.pid, frames); err != nil {
			b.Logf("pagemap of %d: %v", p.pid, err)
		}
	}
	return float64(len(frames)*os.Getpagesize()) / (1 << 20)
}

// mappedFrames adds the frame numbers of the resident pages pid maps to frames.
func mappedFrames(pid int, frames map[uint64]struct{}) error {
	maps, err := os.Open("/proc/" + strconv.Itoa(pid) + "/maps")
	if err != nil {
		return err
	}
	defer maps.Close()
	pagemap, err := os.Open("/proc/" + strconv.Itoa(pid) + "/pagemap")
	if err != nil {
		return err
	}
	defer pagemap.Close()
	page := uint64(os.Getpagesize())
	sc := bufio.NewScanner(maps)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || strings.HasPrefix(f[1], "---") || (len(f) > 5 && f[5] == "[vsyscall]") {
			continue // reserved address space, or no pagemap
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		buf := make([]byte, (end-start)/page*8)
		n, _ := pagemap.ReadAt(buf, int64(start/page*8))
		for i := 0; i+8 <= n; i += 8 {
			e := binary.LittleEndian.Uint64(buf[i:])
			if e&(1<<63) != 0 { // present
				frames[e&(1<<55-1)] = struct{}{}
			}
		}
	}
	return sc.Err()
}
