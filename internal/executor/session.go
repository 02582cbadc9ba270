package executor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pyexec/pyexec/internal/packages"
	"github.com/pyexec/pyexec/internal/proc"
	"github.com/pyexec/pyexec/pkg/api"
)

// SessionRequest starts a session: an interpreter that keeps its globals, imports and working
// directory from one call to the next.
type SessionRequest struct {
	ID string // names the session in logs
	// Dir is the session's directory, made by the caller with MakeDir (see Request.Dir). When
	// the session is one started ahead of time, it keeps the directory it was started in, and
	// Dir goes to the next one started ahead of time: Session.Dir says which the session has.
	Dir string
	// Env is the environment the interpreter starts with; a call's Env adds to it.
	Env map[string]string
	// Files are written into the working directory before the interpreter starts.
	Files   []File
	Network bool
	// MaxCheckpoints bounds the checkpoints the session holds (0: it takes none);
	// CheckpointIdle lets one go that long after its creation or its last restore (0: never);
	// MaxCheckpointBytes bounds the files one keeps (0: no bound). See LocalSession.Checkpoint.
	MaxCheckpoints     int
	CheckpointIdle     time.Duration
	MaxCheckpointBytes int64
	// Limits: MemoryLimitMB, MaxProcesses and MaxFileBytes hold for the session's whole life;
	// the others are each call's (see Session.Execute).
	Limits
}

// Errors of Session.Execute that are not the code's: the call did not run.
var (
	ErrSessionBusy  = errors.New("a call already runs in this session; one at a time")
	ErrSessionEnded = errors.New("the session has ended")
)

// SessionStarter is an executor that starts sessions.
type SessionStarter interface {
	NewSession(ctx context.Context, req SessionRequest) (Session, error)
}

// LocalStarter is an executor of this process that starts sessions: Spawn and Fork.
type LocalStarter interface {
	Executor
	NewSession(ctx context.Context, req SessionRequest) (*LocalSession, error)
}

// InProcess is an executor of this process as a SessionStarter, for a server that runs code
// itself (tests; the runner runs it for pyexec serve).
type InProcess struct{ LocalStarter }

// NewSession implements SessionStarter.
func (p InProcess) NewSession(ctx context.Context, req SessionRequest) (Session, error) {
	ss, err := p.LocalStarter.NewSession(ctx, req)
	if err != nil {
		return nil, err
	}
	return ss, nil
}

// Session is a running session: an interpreter that keeps its state from one call to the next.
// A LocalSession runs in this process's executor; the server's sessions run in the runner
// (internal/runner).
type Session interface {
	// Execute runs one call in the session (see LocalSession.Execute).
	Execute(ctx context.Context, req Request, out Output) (api.ExecuteResult, error)
	// Files lists the regular files of the session's working directory, within bounds (see
	// LocalSession.Files).
	Files() (api.SessionFiles, error)
	// OpenFile opens one of them, of at most max bytes, to be read once and closed (see
	// LocalSession.OpenFile).
	OpenFile(p string, max int64) (Body, error)
	// Ended says the session can run no more calls.
	Ended() bool
	// Memory is the session's resident memory in bytes.
	Memory() int64
	// Checkpoint, Checkpoints, Restore and DeleteCheckpoint: see LocalSession's.
	Checkpoint(ctx context.Context) (api.Checkpoint, error)
	Checkpoints() ([]api.Checkpoint, error)
	Restore(ctx context.Context, id string) error
	DeleteCheckpoint(id string) error
	// Fork forks the session into one branch for each of ids (see LocalSession.Branch).
	Fork(ctx context.Context, ids []string) ([]Session, error)
	// Close ends the session.
	Close()
}

// interruptGrace is how long a call the time limit interrupted has to stop (as Jupyter's
// interrupt raises KeyboardInterrupt) before the session's processes are killed.
const interruptGrace = 2 * time.Second

// sessionStartTimeout bounds the start of a session's interpreter.
const sessionStartTimeout = 30 * time.Second

// LocalSession is one running session: a supervisor (pyexec_runner's session.supervise), which
// pyexec talks to over ctl, and under it the interpreter, confined for its whole life as an
// execution's code process is. One call runs at a time.
type LocalSession struct {
	spawn *Spawn
	req   SessionRequest
	// Its hold on shared memory (see shmJanitor), taken by its first call (holdsShm): active
	// from shmBegin to shmEnd, during each call; unshm ends it.
	shmBegin, shmEnd, unshm func()
	holdsShm                bool
	dir                     string // the session's directory: work/, mpl/, env.json, outputs.jsonl
	own                     bool   // the executor made dir and removes it
	work                    string
	sup                     int // the supervisor's pid
	supFD                   int // a pidfd of the supervisor: readable once it has ended
	// interp is a pidfd of the interpreter, through which a call is interrupted (-1 before
	// the interpreter is ready); interpPID its pid.
	interp    int
	interpPID int
	ctl       int    // our end of the supervisor's socket
	exited    func() // waits until the supervisor has ended and been reaped

	mu    sync.Mutex // held by a call, and by Close
	ended atomic.Bool
	once  sync.Once
	// pendingEnv is the env of a session taken from a spare, applied with its first call.
	pendingEnv map[string]string
	// tree is the packages tree the interpreter has on sys.path and may read.
	tree string
	fdMu sync.Mutex // orders interrupt and endForMemory against Close
	// untrack takes its tree from the memory watchdog (see track); memoryNote is what the
	// watchdog said when it ended the session.
	untrack    func()
	memoryNote atomic.Pointer[string]
	// cps are the session's checkpoints, oldest first (see Checkpoint); cpGone says why those
	// let go went; cpSeq numbers them. cpMu guards them, and is taken after mu.
	cpMu   sync.Mutex
	cps    []*checkpoint
	cpGone map[string]string
	cpSeq  int
	// fam is what the session shares with its branches and theirs (see Fork); reserve is the
	// directory where its next branches go, within its Landlock layers and out of its
	// branches'. root is the family's first session, whose directory holds every member's.
	fam     *family
	reserve string
	root    *LocalSession
}

// sessionReply is what the supervisor answers: first the interpreter's pid (with its pidfd)
// or an error; then, for each call, how it ended.
type sessionReply struct {
	PID         int    `json:"pid"`
	Error       string `json:"error"`
	ExitCode    *int   `json:"exit_code"`
	Signal      int    `json:"signal"`
	MemoryError bool   `json:"memory_error"`
	// ProcessLimit: the call's budget refused a process or a thread.
	ProcessLimit bool `json:"process_limit"`
	Lost         bool `json:"lost"`
	// CodeNS is how long the call's code ran, as the interpreter said (see api.StageCode).
	CodeNS *int64 `json:"code_ns"`
	// Checkpoint numbers a checkpoint the supervisor took (its PID the copy's); Gone says
	// the checkpoint to restore is no more.
	Checkpoint int  `json:"checkpoint"`
	Gone       bool `json:"gone"`
	// Forked are the pids of the branches a fork made; Threads and Shared say a fork was
	// refused for the threads the interpreter runs or the memory it maps shared, Layers for the
	// Landlock layers it has.
	Forked  []int `json:"forked"`
	Threads int   `json:"threads"`
	Shared  int   `json:"shared"`
	Layers  bool  `json:"layers"`
	// Busy: another session of the family held the supervisor's ops past their time.
	Busy bool `json:"busy"`
}

// beginSession makes the session's directory, input files and confinement. The caller
// starts the supervisor, then closes the returned execution's ruleset.
func (s *Spawn) beginSession(req SessionRequest, zygote int) (*LocalSession, *execution, error) {
	e, err := s.begin(Request{ID: req.ID, Dir: req.Dir, Env: req.Env, Files: req.Files, Network: req.Network, Limits: req.Limits, session: true}, nil, zygote)
	if err != nil {
		return nil, nil, err
	}
	// A session's start is no execution: each call takes its share of the CPUs, and its first
	// call takes its hold on shared memory, for the session's life (its code runs in calls
	// alone: at rest between them, and none in a session started ahead of time).
	e.release()
	e.unshm()
	e.ss = &LocalSession{spawn: s, req: req, dir: e.dir, own: e.own, work: e.work, tree: e.tree, sup: -1, supFD: -1, interp: -1, ctl: -1, exited: func() {}, unshm: func() {},
		untrack: func() {}, fam: &family{members: 1, dir: e.dir, own: e.own}, reserve: filepath.Join(e.dir, branchesDir)}
	return e.ss, e, nil
}

// NewSession starts a session: a fresh interpreter supervises the session.
func (s *Spawn) NewSession(ctx context.Context, req SessionRequest) (*LocalSession, error) {
	ss, e, err := s.beginSession(req, 0)
	if err != nil {
		return nil, err
	}
	defer e.closeRuleset()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		ss.Close()
		return nil, err
	}
	ss.ctl = pair[0]
	theirs := os.NewFile(uintptr(pair[1]), "session-control")
	defer theirs.Close()
	extra := []*os.File{theirs} // fd 3
	if e.ruleset != nil {
		extra = append(extra, e.ruleset) // fd 4
	}
	cmd, started, err := pythonCommand(s.cfg.Python, spawnSource, extra, s.paramsOf(e))
	if err != nil {
		ss.Close()
		return nil, err
	}
	cmd.Dir = e.dir
	cmd.Env = s.env(e.work, e.tree, e.baseEnv())
	// The supervisor's own failures (a traceback) explain a session that did not start; the
	// interpreter's output goes nowhere between calls.
	stderr := &headBuffer{max: 4096}
	cmd.Stdout, cmd.Stderr = io.Discard, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if s.cfg.Reaper != nil {
		err = s.cfg.Reaper.Start(cmd)
	} else {
		err = cmd.Start()
	}
	started(err)
	if err != nil {
		ss.Close()
		return nil, fmt.Errorf("starting %s: %w", s.cfg.Python, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		if s.cfg.Reaper != nil {
			s.cfg.Reaper.Done(cmd.Process.Pid)
		}
		close(done)
	}()
	ss.exited = func() { <-done }
	if err := ss.started(ctx, cmd.Process.Pid); err != nil {
		ss.Close()
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			err = fmt.Errorf("%w: %s", err, msg)
		}
		return nil, err
	}
	ss.track()
	return ss, nil
}

// NewSession starts a session: a supervisor forked from the zygote runs the session,
// whose interpreter finds the preloaded modules imported. The session started ahead of time
// (WarmSession) is taken when it is like req; then another is started. While the zygote is
// down, the session starts in spawn mode.
func (f *Fork) NewSession(ctx context.Context, req SessionRequest) (*LocalSession, error) {
	defer f.sessions.refill()
	if ss := f.sessions.take(req, packages.Tree(f.cfg.PackagesDir)); ss != nil {
		f.sessions.give(req.Dir) // for the next one started ahead of time
		if err := ss.adopt(req); err != nil {
			ss.Close()
			return nil, err
		}
		ss.track()
		return ss, nil
	}
	ss, err := f.forkSession(ctx, req)
	if errors.Is(err, errZygoteDown) {
		f.fallbacks.Add(1)
		return f.spawn.NewSession(ctx, req) // tracked there
	}
	if err != nil {
		return nil, err
	}
	ss.track()
	return ss, nil
}

// WarmSession keeps one session like req (its network and limits; its env and files come
// when it is taken) started ahead of time, so that creating one costs no fork. A session is
// taken from it in well under a millisecond, against some 20 ms to fork and confine one with
// pandas preloaded; it costs the memory of an idle session, so the first one is started when
// the first session is created (NewSession), not before: a pod that never opens a session
// never holds one.
func (f *Fork) WarmSession(req SessionRequest) {
	f.sessions.want(req, f.forkSession)
}

// errZygoteDown: a session cannot be forked now.
var errZygoteDown = errors.New("the zygote is down")

// forkSession starts a session in a supervisor the zygote forks.
func (f *Fork) forkSession(ctx context.Context, req SessionRequest) (*LocalSession, error) {
	zygote := f.zygotePID()
	if zygote == 0 {
		return nil, errZygoteDown
	}
	ss, e, err := f.spawn.beginSession(req, zygote)
	if err != nil {
		return nil, err
	}
	defer e.closeRuleset()
	msg := forkRequest{Op: "session", Params: json.RawMessage(f.spawn.paramsOf(e)), Cwd: e.work, Env: envMap(f.spawn.env(e.work, e.tree, e.baseEnv())), Tree: e.tree}
	data, err := json.Marshal(msg)
	if err != nil {
		ss.Close()
		return nil, err
	}
	var rights []byte
	if e.ruleset != nil {
		rights = unix.UnixRights(int(e.ruleset.Fd()))
	}
	f.mu.Lock()
	pid, conn, err := 0, -1, f.ensureZygote()
	if err == nil {
		pid, conn, err = f.ask(data, rights)
	}
	f.mu.Unlock()
	if err != nil {
		ss.Close()
		return nil, fmt.Errorf("%w: %v", errZygoteDown, err)
	}
	ss.ctl = conn
	if err := ss.started(ctx, pid); err != nil {
		ss.Close()
		return nil, err
	}
	return ss, nil
}

// sessionSpare keeps one session started ahead of time.
//
// Its directory: when the caller gives directories (Request.Dir), one is always with the spare
// machinery — the spare's, or dir waiting for the next spare — and it never makes one of its
// own. A spare that is taken keeps its directory, and the taker's goes to the next spare; a
// spare let go gives its (emptied) directory to the next.
type sessionSpare struct {
	mu       sync.Mutex
	like     *SessionRequest // what the spare is made like; nil: no spare wanted
	start    func(context.Context, SessionRequest) (*LocalSession, error)
	spare    *LocalSession
	starting bool
	dir      string // the next spare's directory, when the caller gives them
	given    bool   // the caller gives directories: a spare waits for one
	// busy counts the spares starting and those being let go: stop waits for them, so that
	// nothing of the spares runs, or holds a directory, once it returns.
	busy sync.WaitGroup
}

// want asks for a spare like req (in req.Dir, when given) from now on, started with start.
func (sp *sessionSpare) want(req SessionRequest, start func(context.Context, SessionRequest) (*LocalSession, error)) {
	dir := req.Dir
	req.ID, req.Env, req.Files, req.Dir = "spare", nil, nil, ""
	sp.mu.Lock()
	defer sp.mu.Unlock()
	sp.like, sp.start = &req, start
	sp.giveLocked(dir)
	if sp.spare != nil && !sp.spare.like(req) {
		sp.letGo(sp.spare)
		sp.spare = nil
	}
}

// give hands dir, the directory of a session that took the spare, to the next spare.
func (sp *sessionSpare) give(dir string) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	sp.giveLocked(dir)
}

func (sp *sessionSpare) giveLocked(dir string) {
	if dir == "" {
		return
	}
	sp.given = true
	if sp.dir != "" { // never so: one directory at a time is the spares'
		EmptyDir(dir)
		return
	}
	sp.dir = dir
}

// letGo closes a spare in the background; its directory then goes to the next. sp.mu is held.
func (sp *sessionSpare) letGo(ss *LocalSession) {
	sp.busy.Add(1)
	go func() {
		defer sp.busy.Done()
		ss.Close()
		if !ss.own {
			sp.give(ss.dir)
		}
		sp.refill()
	}()
}

// take returns the spare when it is like req, sees the current packages tree and is still
// alive.
func (sp *sessionSpare) take(req SessionRequest, tree string) *LocalSession {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	ss := sp.spare
	if ss == nil || !ss.like(req) {
		return nil
	}
	sp.spare = nil
	if ss.tree != tree || ss.Ended() { // an install since, or the zygote restarted
		sp.letGo(ss)
		return nil
	}
	return ss
}

// refill starts a spare in the background, unless there is one, none is wanted, or the
// directory for it is not back yet.
func (sp *sessionSpare) refill() {
	sp.mu.Lock()
	if sp.like == nil || sp.spare != nil || sp.starting || (sp.given && sp.dir == "") {
		sp.mu.Unlock()
		return
	}
	sp.starting = true
	like, start := *sp.like, sp.start
	like.Dir, sp.dir = sp.dir, ""
	sp.busy.Add(1)
	sp.mu.Unlock()
	go func() {
		defer sp.busy.Done()
		ss, err := start(context.Background(), like)
		sp.mu.Lock()
		defer sp.mu.Unlock()
		sp.starting = false
		switch {
		case err != nil: // the directory was emptied: it is the next one's
			sp.giveLocked(like.Dir)
		case sp.like == nil: // stopped meanwhile
			ss.Close()
		case !ss.like(*sp.like): // wanted otherwise meanwhile
			sp.letGo(ss)
		default:
			sp.spare = ss
		}
	}()
}

// stop closes the spare and wants no more; it returns once nothing of the spares runs.
func (sp *sessionSpare) stop() {
	sp.mu.Lock()
	ss := sp.spare
	sp.like, sp.spare = nil, nil
	sp.mu.Unlock()
	if ss != nil {
		ss.Close()
	}
	sp.busy.Wait()
}

// like says whether the session was started as req asks: the same network and lifelong limits.
func (ss *LocalSession) like(req SessionRequest) bool {
	a, b := ss.req, req
	return a.Network == b.Network && a.MemoryLimitMB == b.MemoryLimitMB && a.MaxProcesses == b.MaxProcesses && a.MaxFileBytes == b.MaxFileBytes
}

// adopt makes a spare session req's: its files written now, its env applied with the first
// call (the interpreter, confined, could not read it now).
func (ss *LocalSession) adopt(req SessionRequest) error {
	ss.req.ID = req.ID
	ss.req.MaxCheckpoints, ss.req.CheckpointIdle, ss.req.MaxCheckpointBytes = req.MaxCheckpoints, req.CheckpointIdle, req.MaxCheckpointBytes
	if err := ss.writeFiles(req.Files); err != nil {
		return err
	}
	if len(req.Env) > 0 {
		ss.pendingEnv = req.Env
	}
	return nil
}

// started takes the supervisor's first answer: the interpreter is confined and ready.
func (ss *LocalSession) started(ctx context.Context, sup int) error {
	ss.sup = sup
	fd, err := unix.PidfdOpen(sup, 0)
	if err != nil {
		return fmt.Errorf("session supervisor %d: %w", sup, err)
	}
	ss.supFD = fd
	if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > sessionStartTimeout {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, sessionStartTimeout)
		defer cancel()
	}
	if err := waitReadable(ctx, ss.ctl); err != nil {
		return fmt.Errorf("starting the session: %w", err)
	}
	reply, fds, err := recvReply(ss.ctl)
	switch {
	case err != nil:
		return fmt.Errorf("starting the session: %w", err)
	case reply.Error != "":
		closeFDs(fds)
		return fmt.Errorf("starting the session: %s", reply.Error)
	case reply.PID <= 0 || len(fds) != 1:
		closeFDs(fds)
		return errors.New("starting the session: the supervisor did not say which process is the interpreter")
	}
	ss.interp, ss.interpPID = fds[0], reply.PID
	return nil
}

// Execute runs one call in the session: req's code, stdin, env and files (written into the
// session's working directory first), timeout and output caps. The result has the files the
// call created or changed. The time limit and ctx interrupt the code first (KeyboardInterrupt);
// if it is still running interruptGrace later, the session's processes are killed and the
// result says SessionLost, as it does when the interpreter ends by itself. The error is
// ErrSessionBusy, ErrSessionEnded, a *FileError, or a failure to run the call at all.
func (ss *LocalSession) Execute(ctx context.Context, req Request, out Output) (api.ExecuteResult, error) {
	if !ss.mu.TryLock() {
		return noResult(req), ErrSessionBusy
	}
	defer ss.mu.Unlock()
	if ss.ended.Load() || !ss.alive() {
		return noResult(req), ErrSessionEnded
	}
	var taken string
	if req.Checkpoint && !req.Inspect {
		cp, err := ss.checkpoint(ctx, true)
		if err != nil {
			return noResult(req), err
		}
		taken = cp.ID
	}
	e, err := ss.beginCall(req, out)
	if err != nil {
		return noResult(req), err
	}
	defer e.close()
	p, err := newPipes()
	if err != nil {
		return noResult(req), err
	}
	defer p.closeAll()
	callW, err := ss.send(e, p)
	if err != nil {
		return noResult(req), err
	}
	defer callW.Close() // stops a write the interpreter never read
	e.handed = time.Now()
	e.watch(ctx, ss.sup)
	a, ok := await(e, p, ss.answer)
	if !ok {
		a.err = errors.New("no answer after the kill")
	}
	e.codeNS = a.reply.CodeNS
	res, _ := e.end(func(res *api.ExecuteResult) {
		ss.finish(res, e.killer, a.reply, a.err)
		if res.SessionLost {
			ss.end()
		}
	})
	res.Checkpoint = taken
	return res, nil
}

// beginCall is the lifecycle of one call, in the session's directory: its input files written
// and the session's env from a spare applied, the files there stamped (see callStamps), and the
// outputs of the last call taken away. Its killer interrupts the code before it kills the
// session. The caller holds ss.mu, and closes the call.
func (ss *LocalSession) beginCall(req Request, out Output) (*execution, error) {
	e := ss.spawn.newExecution(req, out, &killer{grace: interruptGrace, interrupt: ss.interrupt, hardKill: ss.kill})
	e.ss, e.dir, e.work, e.tree = ss, ss.dir, ss.work, ss.tree
	// The session's, for the result's hints: its network and lifelong limits.
	e.req.Network, e.req.MaxProcesses, e.req.MemoryLimitMB = ss.req.Network, ss.req.MaxProcesses, ss.req.MemoryLimitMB
	if err := ss.writeFiles(req.Files); err != nil {
		e.close()
		return nil, err
	}
	if ss.pendingEnv != nil {
		env := maps.Clone(ss.pendingEnv)
		maps.Copy(env, req.Env)
		e.req.Env, ss.pendingEnv = env, nil
	}
	if req.Inspect { // no code runs: nothing to stamp, nothing to return
		e.unshm = ss.holdShm()
		return e, nil
	}
	e.before = stampFiles(ss.work)
	outputs := filepath.Join(ss.dir, outputsFile)
	if st, err := os.Stat(outputs); err != nil || st.Size() > 0 { // the interpreter appends to it
		if err := os.Truncate(outputs, 0); err != nil {
			e.close()
			return nil, err
		}
	}
	e.unshm = ss.holdShm()
	return e, nil
}

// send hands the call to the supervisor: its standard streams, and a pipe of its own that
// carries its code, env and share of the CPUs, written while the interpreter reads. The caller
// closes the returned end of that pipe once the call is over.
func (ss *LocalSession) send(e *execution, p *pipes) (*os.File, error) {
	msg := map[string]any{"code": e.req.Code, "env": e.req.Env, "threads": e.threads}
	if e.req.Inspect {
		msg = map[string]any{"inspect": true}
	}
	callData, err := json.Marshal(msg)
	if err != nil {
		return nil, err
	}
	callW, call, err := pipeEnds(false)
	if err != nil {
		return nil, err
	}
	defer unix.Close(call)
	rights := unix.UnixRights(append([]int{call}, p.theirs()...)...)
	if err := ignoringEINTR(func() error { return unix.Sendmsg(ss.ctl, []byte(`{"op":"exec"}`), rights, nil, 0) }); err != nil {
		callW.Close()
		if !ss.alive() {
			ss.end()
			return nil, ErrSessionEnded
		}
		// The session is there; the call did not reach it (ETOOMANYREFS: too many descriptors
		// in flight for the uid). It may be tried again.
		return nil, fmt.Errorf("handing the call to the session: %w", err)
	}
	p.closeChildEnds()
	go func() { _, _ = callW.Write(callData); callW.Close() }()
	return callW, nil
}

// callAnswer is how a call ended, as the supervisor says; err when it said nothing.
type callAnswer struct {
	reply sessionReply
	err   error
}

// answer waits for the supervisor's answer to a call.
func (ss *LocalSession) answer() callAnswer {
	reply, fds, err := recvReply(ss.ctl)
	closeFDs(fds)
	return callAnswer{reply, err}
}

// finish fills the exit fields of a call from the killer and the supervisor's answer.
func (ss *LocalSession) finish(res *api.ExecuteResult, k *killer, reply sessionReply, err error) {
	why := k.reason()
	res.TimedOut = why == api.ReasonTimeout
	switch {
	case k.killedTree():
		res.Reason, res.ExitCode, res.Signal, res.SessionLost = why, 128+int(unix.SIGKILL), unix.SignalName(unix.SIGKILL), true
		return
	case ss.ended.Load() && why == "": // closed (deleted, drained) or ended by the memory watchdog while the call ran
		res.Reason, res.ExitCode, res.Signal, res.SessionLost = api.ReasonSignal, 128+int(unix.SIGKILL), unix.SignalName(unix.SIGKILL), true
		if ss.memoryNote.Load() != nil {
			res.Reason = api.ReasonMemoryLimit
		}
		return
	case err != nil || reply.ExitCode == nil:
		// The supervisor is gone without an answer: the code found a way to end it.
		res.Reason, res.ExitCode, res.SessionLost = api.ReasonExit, 1, true
		ss.spawn.cfg.Log.Info("session supervisor ended without an answer", "session", ss.req.ID, "err", fmt.Sprint(err))
	default:
		res.ExitCode, res.Reason, res.SessionLost = *reply.ExitCode, api.ReasonExit, reply.Lost
		if reply.Signal != 0 {
			res.Reason, res.Signal = api.ReasonSignal, unix.SignalName(syscall.Signal(reply.Signal))
		}
		res.Reason = limitReason(res.Reason, res.ExitCode, reply.MemoryError, reply.ProcessLimit)
	}
	if why != "" {
		res.Reason = why
	}
}

// writeFiles writes a call's input files into the working directory. os.Root keeps them inside
// it whatever the code made of its directories.
func (ss *LocalSession) writeFiles(files []File) error {
	return writeFiles(ss.work, files)
}

// interrupt sends the interpreter SIGINT, unless the session is closed: its pidfd's number
// may be another's by then.
func (ss *LocalSession) interrupt() {
	ss.fdMu.Lock()
	defer ss.fdMu.Unlock()
	if ss.interp >= 0 {
		_ = unix.PidfdSendSignal(ss.interp, unix.SIGINT, nil, 0)
	}
}

// alive says whether the supervisor still runs and holds the session: it closes the session's
// socket once the session has ended, and ends once no session of its family is left.
func (ss *LocalSession) alive() bool {
	return pidfdAlive(ss.supFD) && !hungUp(ss.ctl)
}

// Ended says the session can run no more calls: it was closed, or its processes are gone.
func (ss *LocalSession) Ended() bool { return ss.ended.Load() || !ss.alive() }

// Memory is the resident memory (RSS) of the session's supervisor and interpreter: between
// calls no other process of the session runs but what a thread of the code started. Pages
// shared with the zygote count in full.
func (ss *LocalSession) Memory() int64 {
	if !ss.alive() {
		return 0
	}
	return proc.StatmRSS(ss.sup) + proc.StatmRSS(ss.interpPID)
}

// end kills the session's processes; Close releases the rest.
func (ss *LocalSession) end() {
	ss.ended.Store(true)
	ss.kill()
}

// kill kills the session's processes: its supervisor's tree; in a session that forked, the
// interpreter's alone (the supervisor holds its branches too, then ends the session and kills
// what its processes leave).
func (ss *LocalSession) kill() {
	ss.fdMu.Lock()
	defer ss.fdMu.Unlock()
	ss.killLocked()
}

// killLocked is kill with fdMu held.
func (ss *LocalSession) killLocked() {
	if !ss.alive() { // once it has ended, its pid may be another process's
		return
	}
	if ss.fam.forked.Load() {
		if pidfdAlive(ss.interp) {
			proc.KillTree(ss.interpPID)
			_ = unix.PidfdSendSignal(ss.interp, unix.SIGKILL, nil, 0)
		}
		return
	}
	proc.KillTree(ss.sup)
}

// track hands the session's tree to the memory watchdog, until Close.
func (ss *LocalSession) track() {
	ss.untrack = ss.spawn.trees.add(&tree{kind: treeSession, id: ss.req.ID, root: ss.sup, roots: ss.roots, end: ss.endForMemory}, false)
}

// endForMemory ends the session for the memory watchdog: a running call answers memory_limit
// and SessionLost, with note on its stderr; between calls the session just ends.
func (ss *LocalSession) endForMemory(note string) {
	ss.fdMu.Lock()
	defer ss.fdMu.Unlock()
	if ss.supFD < 0 { // closed meanwhile
		return
	}
	ss.memoryNote.Store(&note)
	ss.ended.Store(true)
	ss.killLocked()
}

// EndedForMemory says the memory watchdog ended the session.
func (ss *LocalSession) EndedForMemory() bool { return ss.memoryNote.Load() != nil }

// Close ends the session: its processes are killed (a running call ends with SessionLost) and
// its directory removed.
func (ss *LocalSession) Close() {
	ss.once.Do(func() {
		ss.untrack()
		ss.end()
		ss.mu.Lock()
		defer ss.mu.Unlock()
		ss.dropCheckpoints()
		last := ss.fam.leave()
		switch {
		case !last:
			// The supervisor closes the session's socket once it has killed what the session
			// left; its branches go on.
			ss.waitHungUp()
		case ss.sup > 0:
			if ss.fam.forked.Load() && pidfdAlive(ss.supFD) {
				proc.KillTree(ss.sup)
			}
			ss.waitExited()
		}
		ss.fdMu.Lock()
		closeFDs([]int{ss.ctl, ss.interp, ss.supFD})
		ss.ctl, ss.interp, ss.supFD = -1, -1, -1
		ss.fdMu.Unlock()
		if last {
			releaseDir(ss.fam.dir, ss.fam.own)
		} else {
			releaseOwn(ss.dir)
		}
		ss.unshm()
	})
}

// holdShm takes the session's hold on shared memory at its first call, and makes it active
// until the returned func; the call holds ss.mu.
func (ss *LocalSession) holdShm() func() {
	if !ss.holdsShm {
		ss.holdsShm = true
		ss.shmBegin, ss.shmEnd, ss.unshm = ss.spawn.shm.holdSession()
	}
	ss.shmBegin()
	return ss.shmEnd
}

// Dir is the session's directory (see SessionRequest.Dir).
func (ss *LocalSession) Dir() string { return ss.dir }

// waitExited waits, a few seconds at most, until the supervisor has ended.
func (ss *LocalSession) waitExited() {
	done := make(chan struct{})
	go func() { ss.exited(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		ss.spawn.cfg.Log.Info("session supervisor still there after the kill", "session", ss.req.ID, "pid", ss.sup)
		return
	}
	if ss.supFD >= 0 {
		_ = waitReadable(context.Background(), ss.supFD)
	}
}

// waitHungUp waits, a few seconds at most, until the supervisor has closed the session's socket.
func (ss *LocalSession) waitHungUp() {
	for deadline := time.Now().Add(5 * time.Second); !hungUp(ss.ctl); {
		if time.Now().After(deadline) {
			ss.spawn.cfg.Log.Info("session still held by its supervisor after the kill", "session", ss.req.ID, "pid", ss.sup)
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// waitReadable waits until fd is readable (or hung up), or ctx ends.
func waitReadable(ctx context.Context, fd int) error {
	for {
		timeout := 100
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, timeout)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return err
		}
		if n > 0 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// recvReply reads one message of the supervisor and the descriptors that came with it.
func recvReply(fd int) (sessionReply, []int, error) {
	var reply sessionReply
	buf, oob := make([]byte, 8192), make([]byte, unix.CmsgSpace(4))
	var n, oobn int
	n, err := ignoringEINTR2(func() (int, error) {
		var err error
		n, oobn, _, _, err = unix.Recvmsg(fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		return n, err
	})
	if err != nil {
		return reply, nil, err
	}
	var fds []int
	if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
		for _, m := range msgs {
			if r, err := unix.ParseUnixRights(&m); err == nil {
				fds = append(fds, r...)
			}
		}
	}
	if n == 0 {
		closeFDs(fds)
		return reply, nil, io.EOF
	}
	if err := json.Unmarshal(buf[:n], &reply); err != nil {
		closeFDs(fds)
		return reply, nil, fmt.Errorf("a malformed answer from the session's supervisor: %w", err)
	}
	return reply, fds, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		if fd >= 0 {
			_ = unix.Close(fd)
		}
	}
}

// envMap turns KEY=VALUE pairs into a map; the last of duplicate keys wins, as in exec.Cmd.
func envMap(env []string) map[string]string {
	m := make(map[string]string, len(env))
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

// headBuffer keeps the first max bytes written to it.
type headBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (b *headBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if left := b.max - b.buf.Len(); left > 0 {
		b.buf.Write(p[:min(len(p), left)])
	}
	return len(p), nil
}

func (b *headBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// fileStamp tells whether a file changed: a write changes its size, times or inode.
type fileStamp struct {
	ino, size, mtime, ctime int64
}

func stampOf(st *unix.Stat_t) fileStamp {
	return fileStamp{ino: int64(st.Ino), size: st.Size, mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}
}

// callStamps tell which files a session's call created or changed, in memory that does not
// grow with the files of the session. Whatever changes a file or puts it at a path (a write, a
// chmod, utime, a rename, a link) sets its ctime to the kernel's clock, and no call can set it
// back: a file whose ctime is older than the call is one the call left as it was. Only the
// files changed just before the call (since) are stamped, at most maxStamps of them, to tell
// the call's changes from theirs.
type callStamps struct {
	since int64                // ns: a file with an older ctime is unchanged
	files map[string]fileStamp // the files whose ctime is since or later
}

// stampWindow is how long before a call a file's ctime must be for the file to count as
// unchanged without a stamp: more than a filesystem's timestamp granularity (a second on some)
// and the lag of the kernel's coarse clock behind time.Now.
const stampWindow = 2 * time.Second

// maxStamps bounds the files stamped before a call; past it, a file changed in the last
// stampWindow before the call and again unchanged by it may be returned as changed.
const maxStamps = 10_000

// callWalkTimeout bounds each walk of a session's working directory around a call: the stamps
// before it and the files collected after it.
const callWalkTimeout = 5 * time.Second

// stampFiles stamps the files below work changed in the last stampWindow (see callStamps).
func stampFiles(work string) *callStamps {
	s := &callStamps{since: time.Now().Add(-stampWindow).UnixNano(), files: map[string]fileStamp{}}
	root, err := os.OpenRoot(work)
	if err != nil {
		return s
	}
	defer root.Close()
	walkFiles(root, time.Now().Add(callWalkTimeout), func(p string, stat func() (*unix.Stat_t, bool)) bool {
		st, ok := stat()
		if !ok || st.Ctim.Nano() < s.since {
			return true
		}
		s.files[p] = stampOf(st)
		return len(s.files) < maxStamps
	})
	return s
}

// changed says whether the file at p, as stat shows it now, was created or changed by the
// call. Without stamps (an execution's fresh directory) every file was.
func (s *callStamps) changed(p string, stat func() (*unix.Stat_t, bool)) bool {
	if s == nil {
		return true
	}
	st, ok := stat()
	if !ok || st.Ctim.Nano() < s.since {
		return false
	}
	was, ok := s.files[p]
	return !ok || was != stampOf(st)
}
