package executor

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"strconv"
	"sync"

	"github.com/pyexec/pyexec/internal/proc"
)

// Kinds of tree.
const (
	treeExecution = "execution"
	treeSession   = "session"
)

// tree is the process tree of one execution while it runs, or of one session while it is open
// (the session started ahead of time is not one until it is taken): its supervisor, root, and
// every process below it. Its memory and tasks are those of the processes below the
// supervisor, as its own memory limit and process budget count them.
type tree struct {
	kind string // treeExecution or treeSession
	id   string
	root int
	// roots, when it gives any, are the tree's top processes instead of root's children: a
	// session that forked is its interpreter and checkpoints, below a supervisor it shares with
	// its branches (see family).
	roots func() []int
	// end ends the tree for the memory watchdog: its result says reason memory_limit, and note
	// is added to its stderr.
	end func(note string)
	// ended: the watchdog ended it (it is not chosen again).
	ended bool
}

// trees are the trees of the executions running and the sessions open. Code runs in them only
// while an execution runs or a session is in a call (at rest a session is stopped): active
// counts those, and the watchdog sleeps while it is 0.
type trees struct {
	mu     sync.Mutex
	next   uint64
	all    map[uint64]*tree
	active int
	wake   chan struct{} // active went above 0: wakes the watchdog
}

func newTrees() *trees {
	return &trees{all: map[uint64]*tree{}, wake: make(chan struct{}, 1)}
}

// add registers t, active (an execution) or not (a session, active in its calls: run); the
// returned func removes it, once.
func (ts *trees) add(t *tree, active bool) func() {
	ts.mu.Lock()
	ts.next++
	id := ts.next
	ts.all[id] = t
	ts.mu.Unlock()
	var inactive func()
	if active {
		inactive = ts.run()
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			ts.mu.Lock()
			delete(ts.all, id)
			ts.mu.Unlock()
			if inactive != nil {
				inactive()
			}
		})
	}
}

// run counts code running (a session's call) until the returned func, once.
func (ts *trees) run() func() {
	ts.mu.Lock()
	ts.active++
	ts.mu.Unlock()
	select {
	case ts.wake <- struct{}{}:
	default:
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			ts.mu.Lock()
			ts.active--
			ts.mu.Unlock()
		})
	}
}

// idle says no code runs in any tree.
func (ts *trees) idle() bool {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.active == 0
}

// list returns the trees registered now.
func (ts *trees) list() []*tree {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	out := make([]*tree, 0, len(ts.all))
	for _, t := range ts.all {
		out = append(out, t)
	}
	return out
}

// procTable is one reading of /proc/PID/stat of every process: ppid, threads, resident pages.
type procTable struct {
	byPID map[int]proc.Stat
	kids  map[int][]int
}

func readProcTable() procTable {
	t := procTable{byPID: map[int]proc.Stat{}, kids: map[int][]int{}}
	for _, p := range proc.ReadAll() {
		t.byPID[p.PID] = p
		t.kids[p.PPID] = append(t.kids[p.PPID], p.PID)
	}
	return t
}

// processes are t's processes (see tree), zombies included.
func (t procTable) processes(tr *tree) []int {
	if tr.roots != nil {
		if roots := tr.roots(); roots != nil {
			out := append([]int(nil), roots...)
			for _, r := range roots {
				out = append(out, t.below(r)...)
			}
			return out
		}
	}
	return t.below(tr.root)
}

// below returns the processes below root, zombies included.
func (t procTable) below(root int) []int {
	var out []int
	queue := []int{root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		for _, k := range t.kids[pid] {
			out = append(out, k)
			queue = append(queue, k)
		}
	}
	return out
}

// tasks counts the processes and threads of pids, zombies included (as RLIMIT_NPROC and the
// process budget count them).
func (t procTable) tasks(pids []int) int {
	n := 0
	for _, pid := range pids {
		n += max(1, t.byPID[pid].Threads)
	}
	return n
}

// memory is the memory of pids, in bytes, as the supervisor holds a tree to its limit: the
// proportional set (Pss of smaps_rollup: a page n processes share counts 1/n in each, as pages
// forked processes share with each other and the zygote) of each process the runner may read
// (the code's, dumpable where Landlock confines it), else its resident set. A process that is
// gone, or whose memory is (exiting: no Pss line), counts nothing.
func (t procTable) memory(pids []int) int64 {
	var total int64
	for _, pid := range pids {
		p := t.byPID[pid]
		if p.Zombie {
			continue
		}
		total += pss(pid, p.RSSPages*int64(os.Getpagesize()))
	}
	return total
}

// pss is the Pss of pid, rss when its smaps_rollup is closed to the runner, 0 when it is gone.
func pss(pid int, rss int64) int64 {
	b, err := os.ReadFile(proc.MemPath(pid) + "/smaps_rollup")
	switch {
	case errors.Is(err, fs.ErrPermission):
		return max(rss, proc.StatmRSS(pid)) // rss of a process whose main thread exited is 0
	case err != nil:
		return 0
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("Pss:")); ok {
			kb, err := strconv.ParseInt(string(bytes.TrimSuffix(bytes.TrimSpace(v), []byte(" kB"))), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

// TreeStats are the figures of the executions' and sessions' trees, and of the runner's
// memory cgroup, for the runner's metrics.
type TreeStats struct {
	// Trees are the executions running and the sessions open; Tasks their processes and
	// threads; Memory their memory in bytes (see procTable.memory).
	Trees  int
	Tasks  int
	Memory int64
	// Usage and WorkingSet are the runner's memory cgroup's (container.MemoryCgroup), Limit its
	// limit (0: none, or no cgroup found), HighWater the watchdog's mark (0: no watchdog).
	Usage, WorkingSet, Limit, HighWater int64
	// WatchdogEnded counts the trees the memory watchdog ended.
	WatchdogEnded int64
}

// TreeStats reads the figures of the trees and of the memory cgroup now.
func (s *Spawn) TreeStats() TreeStats {
	var st TreeStats
	list := s.trees.list()
	if len(list) > 0 {
		tab := readProcTable()
		for _, t := range list {
			pids := tab.processes(t)
			st.Trees++
			st.Tasks += tab.tasks(pids)
			st.Memory += tab.memory(pids)
		}
	}
	if cg := s.cfg.Memory; cg != nil {
		if usage, err := cg.Usage(); err == nil {
			st.Usage, st.WorkingSet = usage, cg.WorkingSet(usage)
		}
		st.Limit = cg.Limit
	}
	if w := s.watchdog; w != nil {
		st.HighWater, st.WatchdogEnded = w.mark, w.ended.Load()
	}
	return st
}

// TreeStats of the fork executor: its spawn executor holds the trees.
func (f *Fork) TreeStats() TreeStats { return f.spawn.TreeStats() }
