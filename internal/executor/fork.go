package executor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pyexec/pyexec/internal/packages"
	"github.com/pyexec/pyexec/internal/proc"
	"github.com/pyexec/pyexec/pkg/api"
)

// ModeFork runs executions in children forked from a warm interpreter (the zygote).
const ModeFork = "fork"

// Zygote restarts: after maxCrashes failures, each within crashWindow of the previous one, the
// executor stays in spawn mode instead of restarting in a tight loop.
const (
	maxCrashes  = 5
	crashWindow = time.Minute
)

// ForkConfig configures the fork executor.
type ForkConfig struct {
	SpawnConfig
	// Preload are imported once in the zygote, so executions find them imported.
	Preload []string
	// Warm is how many spares to keep: supervisors forked ahead of time whose code process has
	// run WarmupCode and waits for an execution. 0 forks every execution on demand.
	Warm int
	// WarmupCode is what a spare's code process runs before it waits; empty runs the built-in
	// warm-up of the preloaded numpy, pandas and matplotlib (pyexec_runner/zygote.py).
	WarmupCode string
	// Supervisors is how many supervisors of finished executions are kept for the next ones
	// (0: one per CPU). Forking the code's process from one saves forking a supervisor.
	Supervisors int
	// RestAfter is how long the executor waits, once no execution runs, before it rests (0:
	// never): the supervisors kept for the next executions go, and each warm spare is replaced
	// by a cold one, forked and rehearsed but not warmed up — with numpy, pandas and matplotlib
	// preloaded some 3 MiB of its own instead of some 22. The next execution takes a cold spare:
	// as fast for code that touches little (print), while code that uses the preloaded libraries
	// pays the page faults the warm-up would have taken; the spares that replace it are warm.
	RestAfter time.Duration
}

// Fork runs each execution in a supervisor forked from the zygote, which imported the preload
// modules once; every guarantee of Spawn holds (the supervisor is the same runner code). When
// the zygote is down it serves in spawn mode and restarts the zygote with backoff.
//
// The warm pool: an execution that finds a spare ready takes it and pays neither fork nor
// warm-up. Spares are replaced once an execution has finished and none is in flight, and a
// spare still warming up is paused while executions run: on a small node its forks and
// warm-up would compete with them for the CPU, and under load a request forks directly, which
// is the cheaper path per execution. So at low load executions find a spare, and under load
// throughput is that of plain forking.
type Fork struct {
	cfg   ForkConfig
	spawn *Spawn

	mu        sync.Mutex // guards the zygote and its control socket; taken before pool
	zygote    *exec.Cmd
	ctl       *os.File
	exited    chan struct{}
	crashes   int
	lastCrash time.Time
	retryAt   time.Time
	gen       int // zygote generation: a spare of an earlier one is not used
	closed    bool

	pool     sync.Mutex       // guards the spares and the count of executions
	spares   []*spare         // ready, oldest first
	idle     []*supervisor    // waiting for their next execution
	starting int              // spares asked for and not ready yet
	warming  map[int]struct{} // pids (and process groups) of the spares warming up
	inflight int              // executions running
	lastEnd  time.Time        // when the last execution ended, or the executor started
	restOff  *time.Timer      // rests the executor once idle for RestAfter (rest)
	resting  bool             // spares are started cold
	// like are the seccomp programs of the latest execution, which spares install ahead (see
	// spare.filters); nil until an execution wants some.
	like *filters

	fallbacks atomic.Int64
	warmHits  atomic.Int64
	reused    atomic.Int64

	sessions sessionSpare // a session started ahead of time (WarmSession)
}

// Fallbacks counts executions that ran in spawn mode because the zygote was down.
func (f *Fork) Fallbacks() int64 { return f.fallbacks.Load() }

// WarmHits counts executions that ran in a spare.
func (f *Fork) WarmHits() int64 { return f.warmHits.Load() }

// NewFork returns a fork executor; the zygote starts with the first execution or Start.
func NewFork(cfg ForkConfig) (*Fork, error) {
	// The zygote's matplotlib cache: executions read what the zygote loaded.
	cfg.Isolation.Read = append(slices.Clip(cfg.Isolation.Read), filepath.Join(cfg.WorkDir, zygoteConfigDir))
	sp, err := NewSpawn(cfg.SpawnConfig)
	if err != nil {
		return nil, err
	}
	if cfg.Supervisors <= 0 {
		cfg.Supervisors = runtime.NumCPU()
	}
	if cfg.Warm < 0 {
		return nil, fmt.Errorf("fork executor: warm %d: want 0 or more spares", cfg.Warm)
	}
	if err := os.MkdirAll(filepath.Join(cfg.WorkDir, zygoteConfigDir), 0o755); err != nil {
		return nil, fmt.Errorf("fork executor: %w", err)
	}
	return &Fork{cfg: cfg, spawn: sp, warming: map[int]struct{}{}}, nil
}

// Start starts the zygote now, so the first execution does not wait for it, and its spares.
func (f *Fork) Start() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.ensureZygote(); err != nil {
		return err
	}
	f.refill()
	f.pool.Lock()
	f.restLater()
	f.pool.Unlock()
	return nil
}

// Mode is the mode in use: fork while the zygote runs, spawn while it is down.
func (f *Fork) Mode() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.zygote != nil {
		return ModeFork
	}
	return ModeSpawn
}

// Close implements Executor: it stops the zygote, its spares and the session started ahead
// of time.
func (f *Fork) Close() {
	f.sessions.stop()
	f.pool.Lock()
	if f.restOff != nil {
		f.restOff.Stop()
	}
	f.pool.Unlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true // a session started ahead of time must not start it again
	f.stopZygote()
	f.spawn.Close()
}

func (f *Fork) ensureZygote() error {
	if f.zygote != nil {
		select {
		case <-f.exited:
			f.crashed(errors.New("the zygote exited"))
		default:
			return nil
		}
	}
	if f.closed {
		return errors.New("the fork executor is closed")
	}
	if time.Now().Before(f.retryAt) {
		return errors.New("zygote restart backing off")
	}
	if f.crashes >= maxCrashes {
		return fmt.Errorf("the zygote crashed %d times in a row; staying in spawn mode", f.crashes)
	}
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	ours, theirs := os.NewFile(uintptr(pair[0]), "zygote-control"), os.NewFile(uintptr(pair[1]), "zygote-control")
	defer theirs.Close()
	params, _ := json.Marshal(map[string]any{"preload": f.cfg.Preload, "warmup": f.cfg.WarmupCode})
	cmd, started, err := pythonCommand(f.cfg.Python, zygoteSource, []*os.File{theirs}, string(params))
	if err != nil {
		ours.Close()
		return err
	}
	cmd.Dir = f.cfg.WorkDir
	// matplotlib's font cache is built once, in the zygote, into a directory of its own, which
	// is its home too: the work root is the server's, and the runner can write nothing there.
	own := filepath.Join(f.cfg.WorkDir, zygoteConfigDir)
	cmd.Env = f.spawn.env(own, packages.Tree(f.cfg.PackagesDir), map[string]string{"MPLCONFIGDIR": own, "XDG_CACHE_HOME": own})
	cmd.Stdout, cmd.Stderr = &logWriter{f: f, stream: "stdout"}, &logWriter{f: f, stream: "stderr"}
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true, Pdeathsig: unix.SIGKILL}
	if f.cfg.Reaper != nil {
		err = f.cfg.Reaper.Start(cmd)
	} else {
		err = cmd.Start()
	}
	started(err)
	if err != nil {
		ours.Close()
		f.crashed(err)
		return err
	}
	exited := make(chan struct{})
	go func() {
		err := cmd.Wait()
		if f.cfg.Reaper != nil {
			f.cfg.Reaper.Done(cmd.Process.Pid)
		}
		f.cfg.Log.Info("zygote exited", "pid", cmd.Process.Pid, "err", fmt.Sprint(err))
		close(exited)
	}()
	f.zygote, f.ctl, f.exited = cmd, ours, exited
	f.gen++
	f.cfg.Log.Info("zygote started", "pid", cmd.Process.Pid, "preload", f.cfg.Preload)
	return nil
}

// crashed records a zygote failure and schedules the restart with backoff.
func (f *Fork) crashed(err error) {
	f.stopZygote()
	if time.Since(f.lastCrash) > crashWindow {
		f.crashes = 0
	}
	f.crashes++
	f.lastCrash = time.Now()
	backoff := time.Duration(1<<min(f.crashes-1, 5)) * time.Second
	f.retryAt = time.Now().Add(backoff)
	f.cfg.Log.Error(err, "zygote failed; serving in spawn mode meanwhile", "crashes", f.crashes, "retryIn", backoff.String())
}

func (f *Fork) stopZygote() {
	if f.zygote == nil {
		return
	}
	// The tree first: with its control socket closed the zygote exits at once, and what it
	// forked would be left to pyexec serve's reaper as escapees.
	proc.KillTree(f.zygote.Process.Pid)
	f.ctl.Close()
	f.zygote, f.ctl = nil, nil
	f.pool.Lock()
	for _, s := range f.spares {
		s.discard()
	}
	f.spares = nil
	for _, s := range f.idle {
		s.close()
	}
	f.idle = nil
	f.pool.Unlock()
}

// forkRequest is the control message of one execution.
type forkRequest struct {
	Op     string            `json:"op"`
	Cold   bool              `json:"cold,omitempty"` // a spare that skips the warm-up
	Params json.RawMessage   `json:"params"`
	Cwd    string            `json:"cwd"`
	Env    map[string]string `json:"env"`
	Tree   string            `json:"tree"`
	// Confine, in a spare's request, are the seccomp programs its code process installs before
	// it waits for an execution.
	Confine *filters `json:"confine,omitempty"`
}

// Execute implements Executor: a spare, an idle supervisor or one the zygote forks runs the
// code.
func (f *Fork) Execute(ctx context.Context, req Request, out Output) (api.ExecuteResult, error) {
	res, finish, err := f.ExecuteDeferred(ctx, req, out)
	finish()
	return res, err
}

// ExecuteDeferred implements Deferred.
func (f *Fork) ExecuteDeferred(ctx context.Context, req Request, out Output) (api.ExecuteResult, func(), error) {
	var later afterwards
	e, err := f.spawn.begin(req, out, f.zygotePID())
	if err != nil {
		return noResult(req), later.run, err
	}
	later.add(e.close)
	p, err := newPipes()
	if err != nil {
		return noResult(req), later.run, err
	}
	later.add(p.closeAll)

	f.begin()
	later.add(f.end)
	pid, sup, err := f.send(e, p)
	if err != nil {
		// The zygote is down or failed this request: run it in spawn mode instead.
		f.fallbacks.Add(1)
		e.close()
		res, finish, err := f.spawn.ExecuteDeferred(ctx, req, out)
		later.add(finish)
		return res, later.run, err
	}
	e.handed = time.Now()
	p.closeChildEnds()
	e.watch(ctx, pid)
	// The status pipe ends once the supervisor and every process of the code are gone.
	st, ok := await(e, p, func() status { return readStatus(p.statusR) })
	if !ok {
		f.cfg.Log.Info("status pipe still open after the kill", "id", req.ID)
	}

	res, killed := f.spawn.end(e, st, nil, nil)
	f.release(sup, !killed && st.ExitCode != nil)
	return res, later.run, nil
}

// zygotePID is the pid of the zygote that will fork the execution: one is started first
// when it is down (as send would), so that the pid the code must not signal is that one's. 0
// while it cannot be started (the execution then runs in spawn mode).
func (f *Fork) zygotePID() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ensureZygote() != nil {
		return 0
	}
	return f.zygote.Process.Pid
}

// send hands the execution to a spare, an idle supervisor or else the zygote, and returns the
// pid of the supervisor that runs it, and that supervisor unless it is a spare's. The Landlock
// ruleset, when there is one, goes with the streams as the last descriptor.
func (f *Fork) send(e *execution, p *pipes) (int, *supervisor, error) {
	params := f.spawn.paramsOf(e)
	msg := forkRequest{Op: "exec", Params: json.RawMessage(params), Cwd: e.work, Env: envMap(f.spawn.env(e.work, e.tree, e.baseEnv())), Tree: e.tree}
	data, err := json.Marshal(msg)
	if err != nil {
		return 0, nil, err
	}
	rights := func(fds []int) []byte {
		if e.ruleset != nil {
			fds = append(fds, int(e.ruleset.Fd()))
		}
		return unix.UnixRights(fds...)
	}
	var want *filters
	if e.spec != nil && e.spec.key() != "|" {
		want = &e.spec.filters
	}
	if s := f.takeSpare(want); s != nil {
		err := s.handOff(data, rights(p.theirs()))
		s.close()
		if err == nil {
			f.warmHits.Add(1)
			p.useStatus(s.status)
			return s.pid, nil, nil
		}
		s.status.Close()
		f.cfg.Log.Error(err, "a spare failed to take an execution; forking one", "spare", s.pid)
	}
	if err := p.wantStatus(); err != nil {
		return 0, nil, err
	}
	withStatus := rights(p.theirs())
	for {
		sup := f.takeSupervisor()
		if sup == nil {
			break
		}
		// Code of an earlier execution may have stopped it (below Landlock ABI 6 code can
		// signal the processes of its uid): a stopped supervisor would hold this one.
		_ = unix.Kill(sup.pid, unix.SIGCONT)
		err := ignoringEINTR(func() error { return unix.Sendmsg(sup.conn, data, withStatus, nil, 0) })
		if err == nil {
			f.reused.Add(1)
			return sup.pid, sup, nil
		}
		sup.close() // it died with its last execution's code
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.ensureZygote(); err != nil {
		return 0, nil, err
	}
	pid, conn, err := f.ask(data, withStatus)
	if err != nil {
		return 0, nil, err
	}
	return pid, &supervisor{pid: pid, conn: conn, gen: f.gen, sent: 1}, nil
}

// ask sends the zygote a request and returns the pid of the supervisor it forked and our end
// of the socket to it. f.mu is held.
func (f *Fork) ask(data, rights []byte) (pid, conn int, err error) {
	fd := int(f.ctl.Fd())
	if err := ignoringEINTR(func() error { return unix.Sendmsg(fd, data, rights, nil, 0) }); err != nil {
		f.crashed(fmt.Errorf("sending to the zygote: %w", err))
		return 0, 0, err
	}
	buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4))
	var oobn int
	n, err := ignoringEINTR2(func() (n int, err error) {
		n, oobn, _, _, err = unix.Recvmsg(fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		return n, err
	})
	if err != nil || n == 0 {
		f.crashed(fmt.Errorf("no answer from the zygote: %v", err))
		return 0, 0, errors.New("zygote gone")
	}
	var fds []int
	if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
		for _, m := range msgs {
			if r, err := unix.ParseUnixRights(&m); err == nil {
				fds = append(fds, r...)
			}
		}
	}
	var reply struct {
		PID   int    `json:"pid"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(buf[:n], &reply); err != nil || reply.PID <= 0 || len(fds) != 1 {
		for _, fd := range fds {
			_ = unix.Close(fd)
		}
		f.cfg.Log.Error(err, "zygote refused a request", "reply", reply.Error)
		return 0, 0, fmt.Errorf("zygote: %s", reply.Error)
	}
	return reply.PID, fds[0], nil
}

// supervisor is one forked on demand. After its execution it waits on conn for the next: the
// code's process is then forked from it, not a new supervisor from the zygote.
type supervisor struct {
	pid, conn, gen int
	sent, readies  int // executions sent to it, and "r" (done with one) it answered
}

// close lets the supervisor go: it ends after its execution.
func (s *supervisor) close() { _ = unix.Close(s.conn) }

// takeSupervisor returns an idle supervisor, the oldest ready one first. After an execution's
// result a supervisor still waits for the code's process to end and kills what is left (a few
// ms), then says "r"; an execution sent to it before waits for that, which costs less than
// forking a new supervisor. Supervisors that ended are dropped.
func (f *Fork) takeSupervisor() *supervisor {
	f.pool.Lock()
	defer f.pool.Unlock()
	busy := -1
	for i := 0; i < len(f.idle); {
		s := f.idle[i]
		if !s.poll() {
			f.idle = slices.Delete(f.idle, i, i+1)
			s.close()
			continue
		}
		if s.readies >= s.sent {
			busy = i
			break
		}
		if busy < 0 {
			busy = i
		}
		i++
	}
	if busy < 0 {
		return nil
	}
	s := f.idle[busy]
	f.idle = slices.Delete(f.idle, busy, busy+1)
	s.sent++
	return s
}

// poll counts the "r" the supervisor sent since, without waiting; false if it ended.
func (s *supervisor) poll() bool {
	var b [16]byte
	for {
		n, _, err := unix.Recvfrom(s.conn, b[:], unix.MSG_DONTWAIT)
		switch {
		case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
			return true
		case err != nil || n == 0:
			return false
		}
		s.readies++
	}
}

// release keeps the supervisor of an execution that ended normally for the next one, up to
// Supervisors of them; lets it go otherwise (killed with its execution, or the zygote
// restarted since).
func (f *Fork) release(s *supervisor, reusable bool) {
	if s == nil {
		return
	}
	f.mu.Lock()
	f.pool.Lock()
	keep := reusable && s.gen == f.gen && f.zygote != nil && len(f.idle) < f.cfg.Supervisors
	if keep {
		f.idle = append(f.idle, s)
	}
	f.pool.Unlock()
	f.mu.Unlock()
	if !keep {
		s.close()
	}
}

// pipes are the standard streams and the status pipe of one execution.
// pipes are an execution's (or a call's) standard streams and status: our ends as files in
// Go's poller, the supervisor's ends as bare descriptors that are only sent to it and closed
// (-1 once closed). A bare descriptor costs neither the poller's registration nor a switch back
// to blocking mode to be sent: a dozen system calls less for each execution.
type pipes struct {
	stdinW, stdoutR, stderrR, statusR *os.File
	stdinR, stdoutW, stderrW, statusW int
}

// newPipes makes the standard streams' pipes; the status pipe comes from wantStatus, or from
// a spare (useStatus).
func newPipes() (*pipes, error) {
	p := &pipes{stdinR: -1, stdoutW: -1, stderrW: -1, statusW: -1}
	var err error
	if p.stdinW, p.stdinR, err = pipeEnds(false); err == nil {
		if p.stdoutR, p.stdoutW, err = pipeEnds(true); err == nil {
			p.stderrR, p.stderrW, err = pipeEnds(true)
		}
	}
	if err != nil {
		p.closeAll()
		return nil, err
	}
	return p, nil
}

// pipeEnds makes a pipe and returns our end (the read end when read) as a file in the
// poller, and the other end as a bare blocking descriptor, both close-on-exec.
func pipeEnds(read bool) (ours *os.File, theirs int, err error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		return nil, -1, os.NewSyscallError("pipe2", err)
	}
	mine, other := fds[1], fds[0]
	if read {
		mine, other = fds[0], fds[1]
	}
	if err := unix.SetNonblock(mine, true); err != nil {
		unix.Close(mine)
		unix.Close(other)
		return nil, -1, os.NewSyscallError("fcntl", err)
	}
	return os.NewFile(uintptr(mine), "|pipe"), other, nil
}

// wantStatus makes the status pipe, for a supervisor that is not a spare's.
func (p *pipes) wantStatus() error {
	r, w, err := pipeEnds(true)
	if err != nil {
		return err
	}
	p.statusR, p.statusW = r, w
	return nil
}

// useStatus takes a spare's status pipe, made when the spare was.
func (p *pipes) useStatus(r *os.File) {
	p.statusR = r
}

// theirs are the supervisor's ends, for SCM_RIGHTS: stdin, stdout, stderr, then the status
// pipe's when there is one.
func (p *pipes) theirs() []int {
	fds := []int{p.stdinR, p.stdoutW, p.stderrW}
	if p.statusW >= 0 {
		fds = append(fds, p.statusW)
	}
	return fds
}

// closeChildEnds closes what the supervisor got a copy of, so EOF comes when it is gone.
func (p *pipes) closeChildEnds() {
	for _, fd := range []*int{&p.stdinR, &p.stdoutW, &p.stderrW, &p.statusW} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
}

func (p *pipes) closeAll() {
	p.closeChildEnds()
	for _, f := range []*os.File{p.stdinW, p.stdoutR, p.stderrR, p.statusR} {
		if f != nil {
			f.Close()
		}
	}
}

func waitBounded(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}

// logWriter passes what the zygote itself prints (preload failures) to the log, line by line.
type logWriter struct {
	f      *Fork
	stream string
}

func (w *logWriter) Write(b []byte) (int, error) {
	for _, line := range bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n")) {
		w.f.cfg.Log.Info("zygote output", "stream", w.stream, "line", string(line))
	}
	return len(b), nil
}
