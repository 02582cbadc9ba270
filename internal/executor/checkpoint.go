package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pyexec/pyexec/internal/proc"
	"github.com/pyexec/pyexec/pkg/api"
)

// Errors of checkpoints.
var (
	// ErrCheckpointNotFound: the session has no such checkpoint; wrapped with why, when the
	// session knows (deleted, expired, lost).
	ErrCheckpointNotFound = errors.New("no such checkpoint")
	// ErrTooManyCheckpoints: the session holds its SessionRequest.MaxCheckpoints.
	ErrTooManyCheckpoints = errors.New("the session holds as many checkpoints as it may")
	// ErrCheckpointTooLarge: the working directory holds more than a checkpoint may keep.
	ErrCheckpointTooLarge = errors.New("the session's files are larger than a checkpoint may keep")
)

// checkpointTimeout bounds how long a session's supervisor has to make a checkpoint or to
// restore one — a fork, milliseconds even of a large interpreter: past it the session is ended
// (its interpreter may be anywhere in between, and runs code of its own meanwhile, out of any
// call).
const checkpointTimeout = 10 * time.Second

// copyTimeout bounds the copy of a working directory into a checkpoint: past it the checkpoint
// is refused (ErrCheckpointTooLarge). restoreCopyTimeout bounds the copy back, of what a
// checkpoint holds: generous, so that a restore on a loaded machine is not left halfway.
const (
	copyTimeout        = 10 * time.Second
	restoreCopyTimeout = time.Minute
)

// entryBytes is what each file and directory of a copy counts against its bound at least: a
// block and an inode, so that many small files cannot take more disk than the bound says.
const entryBytes = 4096

// checkpointsDir, in a session's directory, holds the copies of its working directory that its
// checkpoints keep: out of the code's reach, which Landlock grants work/ and mpl/ alone.
const checkpointsDir = "checkpoints"

// maxGoneCheckpoints bounds what a session remembers of the checkpoints it let go, to say why.
const maxGoneCheckpoints = 64

// checkpoint is one checkpoint of a LocalSession: a frozen copy of its interpreter's process,
// which the supervisor holds (pyexec_runner's checkpoint.py), and a copy of its working
// directory.
type checkpoint struct {
	info  api.Checkpoint
	n     int // the supervisor's number for it
	pid   int
	pidfd int
	files string // the copy of the working directory
	timer *time.Timer
	// env is the env of a session taken from a spare, not yet applied when the checkpoint was
	// taken (LocalSession.pendingEnv): a restore applies it again with the next call.
	env map[string]string
}

// Checkpoint takes a checkpoint of the session between calls: a frozen copy of its interpreter
// (forked: its pages are shared with the session until either writes them) and a copy of the
// regular files and directories of its working directory. Its errors: ErrSessionBusy,
// ErrSessionEnded (the session ended meanwhile), ErrTooManyCheckpoints, ErrCheckpointTooLarge.
func (ss *LocalSession) Checkpoint(ctx context.Context) (api.Checkpoint, error) {
	if !ss.mu.TryLock() {
		return api.Checkpoint{}, ErrSessionBusy
	}
	defer ss.mu.Unlock()
	if ss.ended.Load() || !ss.alive() {
		return api.Checkpoint{}, ErrSessionEnded
	}
	return ss.checkpoint(ctx, false)
}

// checkpoint takes a checkpoint; auto: for a call's Request.Checkpoint, which lets the oldest
// such checkpoint go when the session holds its most. The caller holds ss.mu.
func (ss *LocalSession) checkpoint(ctx context.Context, auto bool) (api.Checkpoint, error) {
	ss.cpMu.Lock()
	if ss.req.MaxCheckpoints <= 0 {
		ss.cpMu.Unlock()
		return api.Checkpoint{}, fmt.Errorf("%w: checkpoints are off (--max-checkpoints-per-session 0)", ErrTooManyCheckpoints)
	}
	if len(ss.cps) >= ss.req.MaxCheckpoints {
		var oldest *checkpoint
		for _, cp := range ss.cps {
			if cp.info.Auto {
				oldest = cp
				break
			}
		}
		if !auto || oldest == nil {
			ss.cpMu.Unlock()
			return api.Checkpoint{}, fmt.Errorf("%w (%d): delete one first", ErrTooManyCheckpoints, ss.req.MaxCheckpoints)
		}
		ss.letGoLocked(oldest, "let go for a newer checkpoint of a call (the session holds its most)")
	}
	ss.cpSeq++
	id := fmt.Sprintf("c%d", ss.cpSeq)
	ss.cpMu.Unlock()

	files := filepath.Join(ss.dir, checkpointsDir, id)
	n, size, err := copyFiles(ss.work, files, ss.req.MaxCheckpointBytes, copyTimeout)
	if err != nil {
		removeAll(files)
		return api.Checkpoint{}, err
	}
	reply, fds, err := ss.ask(ctx, map[string]any{"op": "checkpoint"})
	if err == nil && (reply.Checkpoint <= 0 || reply.PID <= 0 || len(fds) != 1) {
		closeFDs(fds)
		if reply.Error == "" {
			reply.Error = "the supervisor did not say which process holds it"
		}
		err = fmt.Errorf("taking a checkpoint: %s", reply.Error)
	}
	if err != nil {
		removeAll(files)
		return api.Checkpoint{}, err
	}
	now := time.Now().UTC()
	cp := &checkpoint{n: reply.Checkpoint, pid: reply.PID, pidfd: fds[0], files: files, env: ss.pendingEnv,
		info: api.Checkpoint{ID: id, CreatedAt: now, FilesBytes: size, Files: n, Auto: auto}}
	ss.cpMu.Lock()
	ss.cps = append(ss.cps, cp)
	ss.touchLocked(cp, now)
	ss.cpMu.Unlock()
	ss.spawn.cfg.Log.V(1).Info("checkpoint", "session", ss.req.ID, "checkpoint", id, "files", n, "filesBytes", size, "auto", auto)
	return cp.info, nil
}

// Restore puts the session back to checkpoint id: the interpreter is replaced by one forked
// from the checkpoint's copy (the checkpoint stays, to be restored again), and the working
// directory's files by the checkpoint's. Its errors: ErrSessionBusy, ErrSessionEnded,
// ErrCheckpointNotFound.
func (ss *LocalSession) Restore(ctx context.Context, id string) error {
	if !ss.mu.TryLock() {
		return ErrSessionBusy
	}
	defer ss.mu.Unlock()
	if ss.ended.Load() || !ss.alive() {
		return ErrSessionEnded
	}
	cp, err := ss.findCheckpoint(id)
	if err != nil {
		return err
	}
	reply, fds, err := ss.ask(ctx, map[string]any{"op": "restore", "checkpoint": cp.n})
	if err != nil {
		return err
	}
	if reply.Error != "" || reply.PID <= 0 || len(fds) != 1 {
		closeFDs(fds)
		if reply.Gone {
			ss.letGo(cp, "lost: its process ended (the session's code can kill it)")
			return fmt.Errorf("%w: %s was lost: its process ended", ErrCheckpointNotFound, id)
		}
		return fmt.Errorf("restoring %s: %s", id, reply.Error)
	}
	ss.fdMu.Lock()
	closeFDs([]int{ss.interp})
	ss.interp, ss.interpPID = fds[0], reply.PID
	ss.fdMu.Unlock()
	ss.pendingEnv = cp.env
	EmptyDir(ss.work)
	if left, err := dirEntries(ss.work); err != nil || left > 0 {
		return fmt.Errorf("restoring the files of %s: the working directory could not be emptied (%d entries left, %v)", id, left, err)
	}
	if _, _, err := copyFiles(cp.files, ss.work, 0, restoreCopyTimeout); err != nil {
		return fmt.Errorf("restoring the files of %s: %v", id, err) // not the 413 of a checkpoint
	}
	ss.cpMu.Lock()
	ss.touchLocked(cp, time.Now().UTC())
	ss.cpMu.Unlock()
	ss.spawn.cfg.Log.V(1).Info("restored", "session", ss.req.ID, "checkpoint", id)
	return nil
}

// DeleteCheckpoint lets checkpoint id go: its process is killed and its files removed. Its
// errors: ErrSessionBusy (a call or another checkpoint's work runs), ErrCheckpointNotFound.
func (ss *LocalSession) DeleteCheckpoint(id string) error {
	if !ss.mu.TryLock() {
		return ErrSessionBusy
	}
	defer ss.mu.Unlock()
	cp, err := ss.findCheckpoint(id)
	if err != nil {
		return err
	}
	ss.letGo(cp, "deleted")
	return nil
}

// Checkpoints lists the session's checkpoints, oldest first, with the memory each holds now.
// A checkpoint whose process the code killed is let go here.
func (ss *LocalSession) Checkpoints() ([]api.Checkpoint, error) {
	ss.cpMu.Lock()
	defer ss.cpMu.Unlock()
	out := []api.Checkpoint{}
	for _, cp := range append([]*checkpoint(nil), ss.cps...) {
		if !pidfdAlive(cp.pidfd) {
			ss.letGoLocked(cp, "lost: its process ended (the session's code can kill it)")
			continue
		}
		info := cp.info
		info.MemoryBytes = proc.PrivateMemory(cp.pid)
		out = append(out, info)
	}
	return out, nil
}

// findCheckpoint is the session's checkpoint id, alive; else ErrCheckpointNotFound, with
// why the session let it go when it remembers.
func (ss *LocalSession) findCheckpoint(id string) (*checkpoint, error) {
	ss.cpMu.Lock()
	defer ss.cpMu.Unlock()
	for _, cp := range ss.cps {
		if cp.info.ID != id {
			continue
		}
		if !pidfdAlive(cp.pidfd) {
			ss.letGoLocked(cp, "lost: its process ended (the session's code can kill it)")
			break
		}
		return cp, nil
	}
	if why, ok := ss.cpGone[id]; ok {
		return nil, fmt.Errorf("%w: %s was %s", ErrCheckpointNotFound, id, why)
	}
	return nil, fmt.Errorf("%w: the session has no checkpoint %q", ErrCheckpointNotFound, id)
}

// touchLocked sets when cp expires: idle for the session's CheckpointIdle from now.
func (ss *LocalSession) touchLocked(cp *checkpoint, now time.Time) {
	if ss.req.CheckpointIdle <= 0 {
		return
	}
	cp.info.ExpiresAt = now.Add(ss.req.CheckpointIdle)
	if cp.timer != nil {
		cp.timer.Stop()
	}
	cp.timer = time.AfterFunc(ss.req.CheckpointIdle, func() {
		// After a call or a restore that runs now: a restore of cp touches it again.
		ss.mu.Lock()
		defer ss.mu.Unlock()
		ss.cpMu.Lock()
		defer ss.cpMu.Unlock()
		if time.Now().Before(cp.info.ExpiresAt) {
			return
		}
		ss.letGoLocked(cp, "expired: not restored for its idle timeout")
	})
}

// letGo lets cp go (see letGoLocked).
func (ss *LocalSession) letGo(cp *checkpoint, why string) {
	ss.cpMu.Lock()
	defer ss.cpMu.Unlock()
	ss.letGoLocked(cp, why)
}

// letGoLocked kills cp's process (the supervisor reaps it and forgets it) and removes its
// files, remembering why; nothing when cp is no longer the session's. ss.cpMu is held.
func (ss *LocalSession) letGoLocked(cp *checkpoint, why string) {
	i := -1
	for j, c := range ss.cps {
		if c == cp {
			i = j
		}
	}
	if i < 0 {
		return
	}
	ss.cps = append(ss.cps[:i], ss.cps[i+1:]...)
	if cp.timer != nil {
		cp.timer.Stop()
	}
	_ = unix.PidfdSendSignal(cp.pidfd, unix.SIGKILL, nil, 0)
	closeFDs([]int{cp.pidfd})
	cp.pidfd = -1
	removeAll(cp.files)
	if ss.cpGone == nil {
		ss.cpGone = map[string]string{}
	}
	if len(ss.cpGone) >= maxGoneCheckpoints {
		clear(ss.cpGone)
	}
	ss.cpGone[cp.info.ID] = why
	ss.spawn.cfg.Log.V(1).Info("checkpoint let go", "session", ss.req.ID, "checkpoint", cp.info.ID, "why", why)
}

// dropCheckpoints lets every checkpoint go, with the session.
func (ss *LocalSession) dropCheckpoints() {
	ss.cpMu.Lock()
	defer ss.cpMu.Unlock()
	for len(ss.cps) > 0 {
		ss.letGoLocked(ss.cps[0], "ended with its session")
	}
}

// ask sends msg to the supervisor between calls and waits, checkpointTimeout at most, for its
// answer and the descriptors with it. A session whose supervisor ends, says its interpreter
// ended, or does not answer in time is ended: ErrSessionEnded. The caller holds ss.mu.
func (ss *LocalSession) ask(ctx context.Context, msg map[string]any) (sessionReply, []int, error) {
	return ss.askWith(ctx, msg, nil)
}

// askWith is ask with descriptors that go with msg.
func (ss *LocalSession) askWith(ctx context.Context, msg map[string]any, fds []int) (sessionReply, []int, error) {
	data, err := json.Marshal(msg)
	if err != nil {
		return sessionReply{}, nil, err
	}
	var rights []byte
	if len(fds) > 0 {
		rights = unix.UnixRights(fds...)
	}
	if err := ignoringEINTR(func() error { return unix.Sendmsg(ss.ctl, data, rights, nil, 0) }); err != nil {
		ss.end()
		return sessionReply{}, nil, fmt.Errorf("%w: %v", ErrSessionEnded, err)
	}
	// Not the caller's cancellation: a client that hangs up must not end the session halfway.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), checkpointTimeout)
	defer cancel()
	if err := waitReadable(ctx, ss.ctl); err != nil {
		ss.end()
		return sessionReply{}, nil, fmt.Errorf("%w: its supervisor did not answer %s in %v", ErrSessionEnded, msg["op"], checkpointTimeout)
	}
	reply, fds, err := recvReply(ss.ctl)
	if err != nil || reply.Lost {
		closeFDs(fds)
		ss.end()
		return reply, nil, fmt.Errorf("%w: its interpreter ended during %s", ErrSessionEnded, msg["op"])
	}
	if reply.Busy {
		closeFDs(fds)
		return reply, nil, fmt.Errorf("%w: %s", ErrSessionBusy, reply.Error)
	}
	return reply, fds, nil
}

// pidfdAlive says whether the process of pidfd still runs.
func pidfdAlive(fd int) bool {
	if fd < 0 {
		return false
	}
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	// The Go runtime's own signals (preemption) interrupt poll(2) even with no timeout: an
	// EINTR says nothing of the process.
	n, err := ignoringEINTR2(func() (int, error) { return unix.Poll(fds, 0) })
	return err == nil && n == 0
}

// copyFiles copies the regular files and the directories below src into dst, which it makes:
// their contents and permission bits (symlinks, FIFOs, sockets and devices are left out).
// Neither side is left through a symlink (os.Root), and a FIFO swapped in for a file is not
// opened for reading (O_NONBLOCK). A directory or file the code took its owner's permissions
// from is opened for the copy and given its mode back. Past bound bytes (0: no limit), each file
// and directory counting entryBytes at least, it stops with
// ErrCheckpointTooLarge (past timeout as well); a directory it cannot read or deeper than maxWalkDepth is an error,
// never a file silently left out. Returns how many files and bytes (their contents) it copied.
func copyFiles(src, dst string, bound int64, timeout time.Duration) (files int, size int64, err error) {
	from, err := os.OpenRoot(src)
	if err != nil {
		return 0, 0, err
	}
	defer from.Close()
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return 0, 0, err
	}
	to, err := os.OpenRoot(dst)
	if err != nil {
		return 0, 0, err
	}
	defer to.Close()
	var counted int64 // against max
	count := func(n int64) bool {
		counted += max(n, entryBytes)
		if bound > 0 && counted > bound {
			err = fmt.Errorf("%w: its files and directories take more than %d bytes", ErrCheckpointTooLarge, bound)
			return false
		}
		return true
	}
	type locked struct {
		path string
		mode os.FileMode
	}
	var modes []locked // the directories' modes, given back (and to their copies) at the end
	w := &walker{root: from, deadline: time.Now().Add(timeout), strict: true}
	w.dir = func(p string) {
		if err != nil || !count(0) {
			w.stopped = true
			return
		}
		fi, lerr := from.Lstat(p)
		if lerr != nil || !fi.IsDir() {
			return // gone or swapped meanwhile: the walk does not go in either
		}
		mode := fi.Mode().Perm()
		if mode&0o700 != 0o700 { // the runner's uid owns it: it may open it for the copy
			_ = from.Chmod(p, mode|0o700)
		}
		modes = append(modes, locked{p, mode})
		if merr := to.Mkdir(p, 0o700); merr != nil && !errors.Is(merr, os.ErrExist) {
			err = merr
			w.stopped = true
		}
	}
	w.fn = func(p string, _ func() (*unix.Stat_t, bool)) bool {
		n, cerr := copyFile(from, to, p, bound-counted, bound > 0)
		size += n
		if cerr != nil {
			err = cerr
			return false
		}
		files++
		return count(n)
	}
	w.walk(".", 0)
	for i := len(modes) - 1; i >= 0; i-- { // deepest first
		_ = from.Chmod(modes[i].path, modes[i].mode)
		_ = to.Chmod(modes[i].path, modes[i].mode)
	}
	switch {
	case err != nil:
	case w.cut:
		err = fmt.Errorf("%w: its files took more than %v to copy", ErrCheckpointTooLarge, timeout)
	case w.err != nil:
		err = fmt.Errorf("copying the files: %w", w.err)
	case w.missed:
		err = errors.New("copying the files: out of file descriptors")
	}
	return files, size, err
}

// dirEntries counts the entries of dir (at most a few: it stops at the first batch).
func dirEntries(dir string) (int, error) {
	f, err := os.Open(dir)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	names, err := f.Readdirnames(walkBatch)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return len(names), err
}

// copyFile copies the regular file p of from into to, within left bytes when bounded.
func copyFile(from, to *os.Root, p string, left int64, bounded bool) (int64, error) {
	in, err := from.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, os.ErrPermission) {
		// The code took its permissions away: the runner's uid is its owner, which may read it
		// for a moment and give it its mode back.
		if fi, serr := from.Lstat(p); serr == nil && fi.Mode().IsRegular() && from.Chmod(p, 0o400) == nil {
			in, err = from.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
			_ = from.Chmod(p, fi.Mode().Perm())
		}
	}
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ELOOP) {
			return 0, nil // gone, or a symlink now
		}
		return 0, fmt.Errorf("copying %s: %w", p, err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return 0, nil
	}
	if bounded && fi.Size() > left {
		return 0, fmt.Errorf("%w: past %s", ErrCheckpointTooLarge, p)
	}
	out, err := to.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fi.Mode().Perm())
	if err != nil {
		return 0, fmt.Errorf("copying %s: %w", p, err)
	}
	n, err := io.CopyN(out, in, fi.Size())
	if errors.Is(err, io.EOF) { // it shrank meanwhile: what there was
		err = nil
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, fmt.Errorf("copying %s: %w", p, err)
	}
	return n, nil
}
