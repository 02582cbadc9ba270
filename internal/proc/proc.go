// Package proc reads the process table from /proc and kills process trees: what the
// executor's accounting and the PID-1 reaper share.
package proc

import (
	"bytes"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Stat is what /proc/PID/stat says of one process.
type Stat struct {
	PID, PPID int
	// Zombie: the process has ended, every thread of it. A process whose main thread exited
	// (SYS_exit) while others run shows "Z" too, and is no zombie: its threads run, and its
	// memory is read through one of them (MemPath).
	Zombie bool
	// Exiting is set from the start of exit(2) (PF_EXITING): a process killed a moment ago
	// still tears its memory down before it is a zombie.
	Exiting bool
	// Threads is its number of threads; RSSPages its resident memory in pages.
	Threads  int
	RSSPages int64
}

// pfExiting is PF_EXITING of the kernel's task flags (/proc/PID/stat field 9).
const pfExiting = 0x4

// ReadAll reads /proc/PID/stat of every process.
func ReadAll() []Stat {
	dir, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	out := make([]Stat, 0, len(dir))
	for _, e := range dir {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := ReadStat(pid); ok {
			out = append(out, p)
		}
	}
	return out
}

// ReadStat reads /proc/PID/stat of pid; false when it is gone.
func ReadStat(pid int) (Stat, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, false
	}
	return parseStat(pid, b)
}

// parseStat reads "pid (comm) state ppid pgrp session tty tpgid flags ..."; comm may hold
// spaces and parentheses.
func parseStat(pid int, b []byte) (Stat, bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return Stat{}, false
	}
	fields := strings.Fields(string(b[i+2:]))
	if len(fields) < 2 {
		return Stat{}, false
	}
	ppid, err := strconv.Atoi(fields[1])
	if err != nil {
		return Stat{}, false
	}
	p := Stat{PID: pid, PPID: ppid}
	if len(fields) > 6 {
		if flags, err := strconv.ParseUint(fields[6], 10, 64); err == nil {
			p.Exiting = flags&pfExiting != 0
		}
	}
	if len(fields) > 21 { // num_threads (field 20) and rss (field 24)
		p.Threads, _ = strconv.Atoi(fields[17])
		p.RSSPages, _ = strconv.ParseInt(fields[21], 10, 64)
	}
	// num_threads counts the exited main thread with the live ones: a real zombie has 1 (0:
	// not said).
	p.Zombie = fields[0] == "Z" && p.Threads <= 1
	return p, true
}

// MemPath is the /proc directory through which pid's memory is read: /proc/PID, or, when its
// main thread has exited while other threads run (its own files then say nothing of the
// memory), /proc/PID/task/TID of a live thread.
func MemPath(pid int) string {
	dir := "/proc/" + strconv.Itoa(pid)
	b, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return dir
	}
	if i := bytes.LastIndexByte(b, ')'); i < 0 || i+2 >= len(b) || b[i+2] != 'Z' {
		return dir
	}
	tasks, err := os.ReadDir(dir + "/task")
	if err != nil {
		return dir
	}
	for _, t := range tasks {
		if t.Name() == strconv.Itoa(pid) {
			continue
		}
		if st, err := os.ReadFile(dir + "/task/" + t.Name() + "/stat"); err == nil {
			if i := bytes.LastIndexByte(st, ')'); i >= 0 && i+2 < len(st) && st[i+2] != 'Z' {
				return dir + "/task/" + t.Name()
			}
		}
	}
	return dir
}

// Descendants returns the live (non-zombie) descendants of root.
func Descendants(root int) []int {
	kids := map[int][]int{}
	for _, p := range ReadAll() {
		if !p.Zombie {
			kids[p.PPID] = append(kids[p.PPID], p.PID)
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

// KillTree kills root and every process below it. Descendants go first while root, a child
// subreaper, is alive: an orphan then moves to root, stays in the tree and is found by the
// next pass. Root goes last.
func KillTree(root int) {
	for pass := 0; pass < 1000; pass++ {
		desc := Descendants(root)
		if len(desc) == 0 {
			break
		}
		for _, pid := range desc {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	}
	_ = unix.Kill(root, unix.SIGKILL)
}

// Children returns the direct children of this process, from every thread's children list
// (an orphan handed to a subreaper may be parented to any of its threads).
func Children() []int {
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
	for _, pid := range append([]int{root}, Descendants(root)...) {
		b, err := os.ReadFile(MemPath(pid) + "/smaps_rollup")
		if err != nil {
			rss += StatmRSS(pid)
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

// StatmRSS is the resident memory of pid from /proc/PID/statm, in bytes; 0 if it ended.
func StatmRSS(pid int) int64 {
	b, err := os.ReadFile(MemPath(pid) + "/statm")
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

// PrivateMemory is the memory only pid maps, in bytes: Private_Clean and Private_Dirty of
// /proc/PID/smaps_rollup, what its end would free. Where smaps_rollup is closed (a non-dumpable
// process), its resident memory from statm; 0 if it ended.
func PrivateMemory(pid int) int64 {
	b, err := os.ReadFile(MemPath(pid) + "/smaps_rollup")
	if err != nil {
		return StatmRSS(pid)
	}
	var private int64
	for _, line := range strings.Split(string(b), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || (name != "Private_Clean" && name != "Private_Dirty") {
			continue
		}
		if kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64); err == nil {
			private += kb << 10
		}
	}
	return private
}
