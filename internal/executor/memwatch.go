package executor

import (
	"cmp"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"

	"github.com/pyexec/pyexec/internal/container"
	"github.com/pyexec/pyexec/internal/proc"
)

// memoryWatchdog holds the runner's container below its memory limit, so that the kernel's
// OOM killer, which would take a process of any execution (oom_score_adj makes every code
// process its first choice alike), has nothing to do: when the container's memory passes a
// high-water mark below the limit, the watchdog ends the execution or session whose tree holds
// the most memory, and only that one.
//
// The design, kept simple:
//   - The figure it watches is the memory cgroup's working set (container.MemoryCgroup: usage
//     less the inactive page cache, as the kubelet counts it), against mark, a share of the
//     cgroup's limit (SpawnConfig.MemoryHighWater, 90% by default).
//   - It reads the usage alone (one small cgroup file, kept open: one pread) while it is below
//     the mark, and the working set only above. It reads it as often as the distance to the
//     mark asks: the time code filling memory at pollRate (1 GiB/s) would take to reach it,
//     between minPoll and maxPoll (every 500 ms at 500 MiB or more below the mark, every 10 ms
//     within 10 MiB of it). It sleeps while no code runs — no execution, no session in a call:
//     a session at rest is stopped, and memory grows only where code runs — so an idle pod pays
//     nothing.
//   - Past the mark it reads every tree's memory from /proc as the supervisors measure it for
//     their own limit (procTable.memory: Pss where readable, else RSS; the supervisor itself
//     aside; Pss only of the trees whose RSS could make them the largest) and ends the largest: an execution is killed as a timeout kills it (its result
//     says reason memory_limit, exit 137, SIGKILL), a session is ended (a running call answers
//     memory_limit and session_lost); a note on its stderr says why.
//   - Then it waits until every process of that tree has gone (its memory is freed when it is
//     a zombie), at most victimWait, before it may end another: the memory of one tree being
//     torn down must not cost a second tree its life.
//
// Memory that no tree holds — the runner, the zygote and spares, files in /dev/shm no process
// maps, active page cache — is not in any tree's figure: the watchdog may then end the largest
// tree and still be above the mark (and, after victimWait, end the next).
type memoryWatchdog struct {
	cg    memoryReader
	limit int64
	mark  int64 // bytes
	pct   int
	trees *trees
	log   logr.Logger
	ended atomic.Int64
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once
}

// The watchdog's timing.
const (
	minPoll = 10 * time.Millisecond
	maxPoll = 500 * time.Millisecond
	// pollRate is how fast code is taken to fill memory (bytes per second): the next reading
	// comes before code at this rate could pass the mark.
	pollRate = 1 << 30
	// victimWait bounds the wait for the tree it ended to be gone.
	victimWait = 5 * time.Second
)

// memoryReader reads a memory cgroup: container.MemoryCgroup.
type memoryReader interface {
	Usage() (int64, error)
	WorkingSet(usage int64) int64
}

// watchMemory starts a watchdog of cg at pct percent of its limit; nil without a cgroup, a
// limit or pct.
func watchMemory(cg *container.MemoryCgroup, pct int, ts *trees, log logr.Logger) *memoryWatchdog {
	if cg == nil || cg.Limit <= 0 || pct <= 0 {
		return nil
	}
	log.Info("memory watchdog on", "cgroup", cg.Dir, "limitBytes", cg.Limit, "highWaterPercent", pct)
	return newMemoryWatchdog(cg, cg.Limit, pct, ts, log)
}

// newMemoryWatchdog starts a watchdog of cg, whose limit is limit bytes, at pct percent of it.
func newMemoryWatchdog(cg memoryReader, limit int64, pct int, ts *trees, log logr.Logger) *memoryWatchdog {
	w := &memoryWatchdog{cg: cg, limit: limit, mark: limit / 100 * int64(pct), pct: pct, trees: ts, log: log, stop: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	return w
}

// pollAfter is the time to the next reading, at headroom bytes below the mark.
func pollAfter(headroom int64) time.Duration {
	d := time.Duration(float64(max(headroom, 0)) / pollRate * float64(time.Second))
	return min(max(d, minPoll), maxPoll)
}

func (w *memoryWatchdog) run() {
	defer close(w.done)
	var victim []int // the processes of the tree ended last, until they are gone
	var victimAt time.Time
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		if victim == nil && w.trees.idle() {
			select {
			case <-w.trees.wake:
			case <-w.stop:
				return
			}
		}
		usage, err := w.cg.Usage()
		if err != nil {
			w.log.Error(err, "memory watchdog: the cgroup's usage cannot be read; stopping")
			return
		}
		if victim != nil {
			switch gone := allGone(victim); {
			case gone:
				w.log.Info("memory watchdog: the tree it ended is gone", "goneAfterMs", ms(time.Since(victimAt)), "usageBytes", usage)
				victim = nil
			case time.Since(victimAt) > victimWait:
				w.log.Info("memory watchdog: the tree it ended is not gone yet; it may end another", "waitedMs", ms(time.Since(victimAt)))
				victim = nil
			}
		}
		ws, read := usage, time.Now() // the working set is at most the usage: read only past the mark
		if usage >= w.mark {
			ws = w.cg.WorkingSet(usage)
		}
		if victim == nil && ws >= w.mark {
			if victim = w.endLargest(ws, read); victim != nil {
				victimAt = time.Now()
			}
		}
		timer.Reset(pollAfter(w.mark - ws))
		select {
		case <-timer.C:
		case <-w.stop:
			return
		}
	}
}

// endLargest ends the tree that holds the most memory, at a working set of ws read at read,
// and returns its processes (its supervisor included); nil when no tree holds any. A tree's
// Pss is at most its RSS, which the process table already has: trees are measured largest RSS
// first, and those whose RSS is below the largest Pss found are not read at all.
func (w *memoryWatchdog) endLargest(ws int64, read time.Time) []int {
	tab := readProcTable()
	type candidate struct {
		t    *tree
		pids []int
		rss  int64
	}
	var cands []candidate
	for _, t := range w.trees.list() {
		if t.ended {
			continue
		}
		below := tab.processes(t)
		var rss int64
		for _, pid := range below {
			rss += tab.byPID[pid].RSSPages * int64(os.Getpagesize())
		}
		cands = append(cands, candidate{t, below, rss})
	}
	slices.SortFunc(cands, func(a, b candidate) int { return cmp.Compare(b.rss, a.rss) })
	var largest *candidate
	var most int64
	for i := range cands {
		if cands[i].rss <= most {
			break
		}
		if m := tab.memory(cands[i].pids); m > most {
			largest, most = &cands[i], m
		}
	}
	if largest == nil {
		return nil
	}
	largest.t.ended = true
	w.ended.Add(1)
	chosen := time.Since(read)
	largest.t.end(fmt.Sprintf("pyexec: ended by the runner's memory watchdog: the runner's memory reached %d%% of its limit (%d of %d MiB; the mark is %d%%), and this %s's processes held the most of it (%d MiB)\n",
		ws*100/w.limit, ws>>20, w.limit>>20, w.pct, largest.t.kind, most>>20))
	w.log.Info("memory watchdog: ended the largest tree", "kind", largest.t.kind, "id", largest.t.id, "treeBytes", most,
		"workingSetBytes", ws, "limitBytes", w.limit, "highWaterBytes", w.mark, "trees", len(cands),
		"chosenAfterMs", ms(chosen), "endedAfterMs", ms(time.Since(read)))
	if largest.t.roots != nil && largest.t.roots() != nil {
		return largest.pids
	}
	return append(largest.pids, largest.t.root)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// allGone says whether every one of pids has ended (a zombie's memory is freed).
func allGone(pids []int) bool {
	for _, pid := range pids {
		if p, ok := proc.ReadStat(pid); ok && !p.Zombie {
			return false
		}
	}
	return true
}

// close stops the watchdog.
func (w *memoryWatchdog) close() {
	if w == nil {
		return
	}
	w.once.Do(func() { close(w.stop) })
	<-w.done
}
