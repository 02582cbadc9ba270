package executor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pyexec/pyexec/internal/confine"
)

// Errors of forks.
var (
	// ErrNotForkable: the session's interpreter holds what a fork cannot part between the
	// session and its branches — threads besides its own (a branch would not have them, and
	// they would keep the branches' files within reach) or memory mapped shared (both would
	// write into it) — and is not forked.
	ErrNotForkable = errors.New("the session cannot be forked now")
	// ErrForkTooLarge: the working directory holds more than a branch may copy (the bound of a
	// checkpoint's files, SessionRequest.MaxCheckpointBytes).
	ErrForkTooLarge = errors.New("the session's files are larger than a fork may copy")
	// ErrTooManyForks: the session comes from as many forks in a row as Landlock allows (its
	// layers stack, at most 16).
	ErrTooManyForks = errors.New("the session comes from as many forks in a row as Landlock allows")
)

// maxBranches is the most branches one fork makes: each takes two descriptors in the message to
// the supervisor, which carries 253 at most.
const maxBranches = 126

// branchesDir, in a session's directory, is the reserve its branches' directories are made in:
// the session's first Landlock layer grants it (as work/ and mpl/), and a fork takes from it
// what the branch gets and a new reserve for the session, to which the session's new layer
// grants what the branch's does not (see Fork).
const branchesDir = "branches"

// Fork is Branch for a Session's caller.
func (ss *LocalSession) Fork(ctx context.Context, ids []string) ([]Session, error) {
	bs, err := ss.Branch(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make([]Session, len(bs))
	for i, b := range bs {
		out[i] = b
	}
	return out, nil
}

// family is what a session and its branches share: the supervisor that holds them all
// (pyexec_runner's session._Family), and the directory of the first session, which holds
// every member's.
type family struct {
	// forked: a session of the family forked; from then on each member's processes are its
	// interpreter's and checkpoints', not the supervisor's whole tree.
	forked  atomic.Bool
	mu      sync.Mutex
	members int // the family's open sessions
	dir     string
	own     bool
}

// leave counts a member out: true when it was the last.
func (f *family) leave() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.members--
	return f.members == 0
}

// Branch forks the session between calls into one branch for each of ids (named so in logs): a
// session of its own with the session's globals, modules, environment, limits and checkpoint
// settings — its interpreter a fork of the session's (pages shared until either writes them) —
// and a copy of the session's working directory in a directory of its own. From then on the
// session and its branches are independent: their calls run side by side, each ends alone, and
// what the code of one does after the fork cannot reach another's files or processes (see
// pyexec_runner's branch.py). A branch has no checkpoints; the session keeps its own.
//
// Its errors: ErrSessionBusy, ErrSessionEnded, ErrNotForkable, ErrForkTooLarge,
// ErrTooManyForks.
func (ss *LocalSession) Branch(ctx context.Context, ids []string) ([]*LocalSession, error) {
	if len(ids) == 0 || len(ids) > maxBranches {
		return nil, fmt.Errorf("forking the session: %d branches asked for, 1 to %d at a time", len(ids), maxBranches)
	}
	if !ss.mu.TryLock() {
		return nil, ErrSessionBusy
	}
	defer ss.mu.Unlock()
	if ss.ended.Load() || !ss.alive() {
		return nil, ErrSessionEnded
	}
	began := time.Now()
	f, err := ss.prepareFork(len(ids))
	if err != nil {
		return nil, err
	}
	defer f.close()
	// From now on the session's processes are its own, not its supervisor's whole tree: a
	// session ended while this runs must not take its branches with it.
	ss.fam.forked.Store(true)
	reply, fds, err := ss.askWith(ctx, map[string]any{"op": "fork", "branches": f.specs}, f.rights())
	closeFDs(fds)
	f.closeTheirs()
	if err != nil {
		return nil, err
	}
	if reply.Error != "" || len(reply.Forked) != len(ids) {
		switch {
		case reply.Threads > 0 || reply.Shared > 0:
			return nil, fmt.Errorf("%w: %s", ErrNotForkable, reply.Error)
		case reply.Layers:
			return nil, fmt.Errorf("%w: %s", ErrTooManyForks, reply.Error)
		case reply.Error == "":
			reply.Error = "the supervisor did not say which processes are the branches"
		}
		return nil, fmt.Errorf("forking the session: %s", reply.Error)
	}
	ss.fam.mu.Lock()
	ss.fam.members += len(ids)
	ss.fam.mu.Unlock()
	ss.reserve = f.reserve
	f.kept = true
	out := make([]*LocalSession, 0, len(ids))
	var failed error
	for i, id := range ids {
		req := ss.req
		req.ID = id
		b := &LocalSession{spawn: ss.spawn, req: req, dir: f.dirs[i], work: filepath.Join(f.dirs[i], "work"), tree: ss.tree,
			sup: -1, supFD: -1, interp: -1, ctl: f.mine[i], exited: func() {}, unshm: func() {}, untrack: func() {},
			fam: ss.fam, reserve: filepath.Join(f.dirs[i], branchesDir), pendingEnv: ss.pendingEnv}
		f.mine[i] = -1
		if err := b.started(ctx, ss.sup); err != nil {
			b.Close()
			failed = err
			continue
		}
		b.track()
		out = append(out, b)
	}
	if failed != nil {
		for _, b := range out {
			b.Close()
		}
		return nil, fmt.Errorf("forking the session: %w", failed)
	}
	ss.spawn.cfg.Log.V(1).Info("forked", "session", ss.req.ID, "branches", ids, "files", f.files, "filesBytes", f.size,
		"ms", float64(time.Since(began).Microseconds())/1000)
	return out, nil
}

// fork is what Fork prepares before it asks the supervisor: the branches' directories (each
// with a copy of the working directory) and sockets, the Landlock rulesets, and the session's
// next reserve. close removes what was not kept.
type fork struct {
	dirs    []string
	specs   []map[string]any // what the interpreter gets of each branch (pyexec_runner's branch.fork)
	mine    []int            // our ends of the branches' sockets
	theirs  []int            // the supervisor's
	rules   []*os.File       // each branch's ruleset, then the session's new one (none without Landlock)
	reserve string
	files   int
	size    int64
	kept    bool
}

func (ss *LocalSession) prepareFork(n int) (*fork, error) {
	f := &fork{}
	ok := false
	defer func() {
		if !ok {
			f.closeTheirs()
			f.close()
		}
	}()
	s := ss.spawn
	here := envMap(s.env(ss.work, ss.tree, dirEnv(ss.dir)))
	for range n {
		dir, err := os.MkdirTemp(ss.reserve, "b-")
		if err != nil {
			return nil, fmt.Errorf("forking the session: %w", err)
		}
		f.dirs = append(f.dirs, dir)
		work := filepath.Join(dir, "work")
		files, size, err := copyFiles(ss.work, work, ss.req.MaxCheckpointBytes, copyTimeout)
		if errors.Is(err, ErrCheckpointTooLarge) {
			return nil, fmt.Errorf("%w: %v", ErrForkTooLarge, err)
		}
		if err != nil {
			return nil, err
		}
		f.files, f.size = files, size
		for _, d := range []string{mplDir, branchesDir} {
			if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
				return nil, err
			}
		}
		if err := writeNewFile(filepath.Join(dir, outputsFile), nil); err != nil {
			return nil, err
		}
		// What names the session's directory in its environment names the branch's.
		env := map[string]string{}
		for k, v := range envMap(s.env(work, ss.tree, dirEnv(dir))) {
			if here[k] != v {
				env[k] = v
			}
		}
		f.specs = append(f.specs, map[string]any{"cwd": work, "outputs": filepath.Join(dir, outputsFile), "env": env})
		pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		f.mine, f.theirs = append(f.mine, pair[0]), append(f.theirs, pair[1])
	}
	reserve, err := os.MkdirTemp(ss.reserve, "r-")
	if err != nil {
		return nil, fmt.Errorf("forking the session: %w", err)
	}
	f.reserve = reserve
	if s.cfg.Isolation.Kernel.LandlockABI > 0 {
		rules, err := s.systemRules()
		if err != nil {
			return nil, fmt.Errorf("forking the session: %w", err)
		}
		write := make([][]string, 0, n+1)
		for _, dir := range f.dirs {
			write = append(write, []string{filepath.Join(dir, "work"), filepath.Join(dir, mplDir), filepath.Join(dir, branchesDir)})
		}
		write = append(write, []string{ss.work, filepath.Join(ss.dir, mplDir), reserve})
		for _, w := range write {
			rs, err := rules.Ruleset(confine.Policy{Read: []string{ss.tree}, Write: w, Network: ss.req.Network})
			if err != nil {
				return nil, fmt.Errorf("forking the session: %w", err)
			}
			if rs != nil {
				f.rules = append(f.rules, rs)
			}
		}
	}
	ok = true
	return f, nil
}

// rights are the descriptors that go with the fork: the supervisor's ends of the branches'
// sockets, then the rulesets.
func (f *fork) rights() []int {
	fds := append([]int(nil), f.theirs...)
	for _, r := range f.rules {
		fds = append(fds, int(r.Fd()))
	}
	return fds
}

// closeTheirs closes what went to the supervisor (it has its own copies).
func (f *fork) closeTheirs() {
	closeFDs(f.theirs)
	f.theirs = nil
	for _, r := range f.rules {
		r.Close()
	}
	f.rules = nil
}

// close closes our ends of the sockets not handed to a branch and, unless the fork was kept,
// removes the directories it made.
func (f *fork) close() {
	closeFDs(f.mine)
	f.mine = nil
	if f.kept {
		return
	}
	for _, dir := range f.dirs {
		removeAll(dir)
	}
	if f.reserve != "" {
		removeAll(f.reserve)
	}
}

// dirEnv is what an execution in dir adds to the base environment (execution.baseEnv): its
// MPLCONFIGDIR, and fontconfig's cache too (HOME is the working directory, whose files are
// returned).
func dirEnv(dir string) map[string]string {
	mpl := filepath.Join(dir, mplDir)
	return map[string]string{"MPLCONFIGDIR": mpl, "XDG_CACHE_HOME": mpl}
}

// roots are the session's top processes once its family forked (see tree.roots): its
// interpreter and its checkpoints; nil before.
func (ss *LocalSession) roots() []int {
	if !ss.fam.forked.Load() {
		return nil
	}
	ss.fdMu.Lock()
	pids := []int{ss.interpPID}
	ss.fdMu.Unlock()
	ss.cpMu.Lock()
	for _, cp := range ss.cps {
		pids = append(pids, cp.pid)
	}
	ss.cpMu.Unlock()
	return pids
}

// hungUp says whether the peer of the socket fd closed its end.
func hungUp(fd int) bool {
	if fd < 0 {
		return false
	}
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
	n, err := ignoringEINTR2(func() (int, error) { return unix.Poll(fds, 0) })
	return err == nil && n > 0 && fds[0].Revents&(unix.POLLHUP|unix.POLLRDHUP) != 0
}

// releaseOwn removes what is the session's own in dir, a branch's directory or its family's
// first, but the reserve, which may hold its branches'.
func releaseOwn(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.Name() != branchesDir {
			removeAll(filepath.Join(dir, e.Name()))
		}
	}
}
