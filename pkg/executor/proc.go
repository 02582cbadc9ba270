package executor

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// procEntry is what /proc/PID/stat says of one process.
type procEntry struct {
	pid, ppid int
	zombie    bool
	// exiting is set from the start of exit(2) (PF_EXITING): a process killed a moment ago
	// still tears its memory down before it is a zombie.
	exiting bool
	// threads is its number of threads; rss its resident memory in pages.
	threads int
	rss     int64
}

// pfExiting is PF_EXITING of the kernel's task flags (/proc/PID/stat field 9).
const pfExiting = 0x4

// readProc reads /proc/PID/stat of every process.
func readProc() []procEntry {
	dir, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	out := make([]procEntry, 0, len(dir))
	for _, e := range dir {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := readStat(pid); ok {
			out = append(out, p)
		}
	}
	return out
}

func readStat(pid int) (procEntry, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procEntry{}, false
	}
	return parseStat(pid, b)
}

// parseStat reads "pid (comm) state ppid pgrp session tty tpgid flags ..."; comm may hold
// spaces and parentheses.
func parseStat(pid int, b []byte) (procEntry, bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return procEntry{}, false
	}
	fields := strings.Fields(string(b[i+2:]))
	if len(fields) < 2 {
		return procEntry{}, false
	}
	ppid, err := strconv.Atoi(fields[1])
	if err != nil {
		return procEntry{}, false
	}
	p := procEntry{pid: pid, ppid: ppid, zombie: fields[0] == "Z"}
	if len(fields) > 6 {
		if flags, err := strconv.ParseUint(fields[6], 10, 64); err == nil {
			p.exiting = flags&pfExiting != 0
		}
	}
	if len(fields) > 21 { // num_threads (field 20) and rss (field 24)
		p.threads, _ = strconv.Atoi(fields[17])
		p.rss, _ = strconv.ParseInt(fields[21], 10, 64)
	}
	return p, true
}

// descendants returns the live (non-zombie) descendants of root.
func descendants(root int) []int {
	kids := map[int][]int{}
	for _, p := range readProc() {
		if !p.zombie {
			kids[p.ppid] = append(kids[p.ppid], p.pid)
		}
	}
	var out []int
	queue := []int{root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		for _, k := range kids[pid] {
			out = append(out, k)
			queue = append(queue, k)
		}
	}
	return out
}

// killTree kills root and every process below it. Descendants go first while root, a child
// subreaper, is alive: an orphan then moves to root, stays in the tree and is found by the
// next pass. Root goes last.
func killTree(root int) {
	for pass := 0; pass < 1000; pass++ {
		desc := descendants(root)
		if len(desc) == 0 {
			break
		}
		for _, pid := range desc {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	}
	_ = unix.Kill(root, unix.SIGKILL)
}

// children returns the direct children of this process, from every thread's children list
// (an orphan handed to a subreaper may be parented to any of its threads).
func children() []int {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil
	}
	var out []int
	for _, t := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + t.Name() + "/children")
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				out = append(out, pid)
			}
		}
	}
	return out
}

// TreeMemory sums the resident (RSS) and proportional (PSS: shared pages divided among the
// processes that share them) memory of root and its descendants, in bytes, from
// /proc/PID/smaps_rollup. Processes that end while it reads are left out. smaps_rollup of a
// non-dumpable process (the zygote, the supervisors) is closed to a server without
// CAP_SYS_PTRACE, as in a pod: their RSS then comes from /proc/PID/statm, which anyone may
// read, and they add nothing to PSS.
func TreeMemory(root int) (rss, pss int64) {
	for _, pid := range append([]int{root}, descendants(root)...) {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
		if err != nil {
			rss += statmRSS(pid)
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			name, rest, ok := strings.Cut(line, ":")
			if !ok || (name != "Rss" && name != "Pss") {
				continue
			}
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				continue
			}
			if name == "Rss" {
				rss += kb << 10
			} else {
				pss += kb << 10
			}
		}
	}
	return rss, pss
}

// statmRSS is the resident memory of pid from /proc/PID/statm, in bytes; 0 if it ended.
func statmRSS(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0
	}
	return pages * int64(os.Getpagesize())
}

// pythonCommand is python running source, handed over on a pipe with params (JSON, which has
// no newline), which the source finds as sys.argv[1]. Neither is on the command line: ps and
// /proc/PID/cmdline, which every process may read, show a short bootstrap instead of pyexec's
// 30 KB of Python and of the paths of the execution's directory. The pipe is the last of extra,
// so the descriptors of extra keep their numbers (3, 4, ...); the bootstrap reads it, closes it
// and runs what it read. Start the command, then call started with Start's error: it writes
// the pipe (in the background: it fits the pipe's buffer, but a child that dies first must not
// block the caller) and closes the caller's ends.
func pythonCommand(python, source string, extra []*os.File, params string) (*exec.Cmd, func(startErr error), error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	fd := 3 + len(extra)
	bootstrap := fmt.Sprintf("import os, sys\nwith os.fdopen(%d) as f:\n    a, s = f.read().split('\\n', 1)\nsys.argv[1:] = [a]\nexec(compile(s, '<pyexec>', 'exec'))\n", fd)
	cmd := exec.Command(python, "-s", "-u", "-c", bootstrap)
	cmd.ExtraFiles = append(append([]*os.File(nil), extra...), r)
	started := func(startErr error) {
		r.Close()
		if startErr != nil {
			w.Close()
			return
		}
		go func() {
			_, _ = w.WriteString(params + "\n" + source)
			w.Close()
		}()
	}
	return cmd, started, nil
}
