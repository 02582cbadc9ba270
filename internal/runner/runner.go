package runner

import (
	"maps"

	"github.com/pyexec/pyexec/internal/proc"
	"github.com/pyexec/pyexec/internal/reaper"

	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"

	"github.com/pyexec/pyexec/internal/confine"
	"github.com/pyexec/pyexec/internal/container"
	"github.com/pyexec/pyexec/internal/executor"
	"github.com/pyexec/pyexec/pkg/api"
)

// Options configure the runner (pyexec runner).
type Options struct {
	// Control is the control connection of a runner the server started (fd 3). Nil: the
	// runner dials Socket until the server answers, and again whenever the server goes.
	Control *net.UnixConn
	// Socket is the server's runner socket.
	Socket string
	// ServerUID is the uid the server must run as (checked with SO_PEERCRED); -1 takes any.
	ServerUID int
	// ShmDir is a shared-memory directory of the runner's own (executor.SpawnConfig.ShmDir).
	ShmDir string
	// Version is pyexec's, said in Hello.
	Version string
	Log     logr.Logger
}

// ErrRefused is the server's refusal of this runner (another protocol, a uid it does not
// expect): trying again does not help.
var ErrRefused = errors.New("the server refused the runner")

// dialBackoff bounds the wait between two dials of a server that does not answer yet.
const dialBackoff = time.Second

// Run runs the runner. It serves its server until the control connection ends; a runner the
// server started then returns, a runner that dials goes back to dialing, unless ctx has ended
// (SIGTERM: the pod stops, and the server drains first). Every execution and session ends with
// its control connection: nothing of it is left when the next server comes.
func Run(ctx context.Context, o Options) error {
	// The server's requests hold the code and env of other users: the code, of this uid, must
	// not read this process's memory or /proc files.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("making the runner non-dumpable: %w", err)
	}
	reaper, err := reaper.New(o.Log.WithName("reaper"))
	if err != nil {
		return err
	}
	reapCtx, stopReaping := context.WithCancel(context.Background())
	defer stopReaping()
	go reaper.Run(reapCtx)
	r := &runner{o: o, reaper: reaper}
	for {
		conn := o.Control
		if conn == nil {
			if conn, err = r.dial(ctx); err != nil {
				return nil // ctx ended while no server was there
			}
		}
		began := time.Now()
		err := r.serve(conn)
		r.killEverything()
		switch {
		case errors.Is(err, ErrRefused):
			return err
		case o.Control != nil:
			o.Log.Info("server gone; stopping", "reason", fmt.Sprint(err))
			return nil
		case ctx.Err() != nil:
			o.Log.Info("server gone after SIGTERM; stopping", "reason", fmt.Sprint(err))
			return nil
		}
		o.Log.Info("server gone; dialing again", "reason", fmt.Sprint(err))
		if time.Since(began) < dialBackoff { // refused at once: not in a tight loop
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(dialBackoff):
			}
		}
	}
}

// runner is one runner process; its executor and sessions live as long as one control
// connection.
type runner struct {
	o      Options
	reaper *reaper.Reaper
}

// dial dials the server's socket until it answers with the expected uid, or ctx ends.
func (r *runner) dial(ctx context.Context) (*net.UnixConn, error) {
	logged := ""
	for {
		c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: r.o.Socket, Net: "unix"})
		if err == nil {
			if uid, err2 := peerUID(c); err2 != nil {
				err = err2
			} else if r.o.ServerUID >= 0 && uid != r.o.ServerUID {
				err = fmt.Errorf("the process on %s runs as uid %d, not the server's %d", r.o.Socket, uid, r.o.ServerUID)
			}
			if err == nil {
				return c, nil
			}
			c.Close()
		}
		if err.Error() != logged { // each new reason once
			r.o.Log.Info("waiting for the server", "socket", r.o.Socket, "reason", err.Error())
			logged = err.Error()
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(dialBackoff / 5):
		}
	}
}

// serve speaks with one server over conn: the handshake, then every channel it hands over,
// until conn ends.
func (r *runner) serve(conn *net.UnixConn) error {
	defer conn.Close()
	k := confine.Probe(confine.NoCap)
	hello := Hello{Protocol: Protocol, Version: r.o.Version, PID: os.Getpid(), UID: os.Getuid(), GID: os.Getgid(), LandlockABI: k.LandlockABI, Seccomp: k.Seccomp, ProcessBudget: k.ProcessBudget}
	if err := writeFrame(conn, &hello); err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	var cfg Config
	if err := readFrame(conn, handshakeFrame, &cfg); err != nil {
		return fmt.Errorf("waiting for the server's config: %w", err)
	}
	if cfg.Refused != "" {
		return fmt.Errorf("%w: %s", ErrRefused, cfg.Refused)
	}
	if cfg.Protocol != Protocol {
		return fmt.Errorf("%w: the server speaks protocol %d, this runner %d: run the same pyexec in both containers", ErrRefused, cfg.Protocol, Protocol)
	}
	s, err := r.start(cfg)
	ready := Ready{}
	if err != nil {
		ready.Error = err.Error()
	} else {
		defer s.stop()
		ready.Mode = s.mode()
	}
	if err := writeFrame(conn, &ready); err != nil {
		return fmt.Errorf("ready: %w", err)
	}
	if err != nil {
		return err
	}
	r.o.Log.Info("serving", "mode", ready.Mode, "python", cfg.Python, "uid", hello.UID, "gid", hello.GID, "landlockABI", cfg.LandlockABI, "seccomp", cfg.Seccomp, "processBudget", cfg.ProcessBudget)
	// The rest of the connection: one byte and one descriptor per channel.
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	for {
		fd, err := recvChannel(raw)
		if err != nil {
			return err
		}
		go s.serveChannel(fd)
	}
}

// recvChannel reads one byte and the descriptor of a channel that came with it. The descriptor
// is close-on-exec from the start (MSG_CMSG_CLOEXEC): a process the runner starts meanwhile
// (a supervisor) must never hold a channel to the server.
func recvChannel(raw syscall.RawConn) (int, error) {
	b, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(4))
	var n, oobn int
	var recvErr error
	err := raw.Read(func(fd uintptr) bool {
		n, oobn, _, _, recvErr = unix.Recvmsg(int(fd), b, oob, unix.MSG_CMSG_CLOEXEC)
		return !errors.Is(recvErr, unix.EAGAIN)
	})
	switch {
	case err != nil:
		return -1, err
	case recvErr != nil:
		return -1, recvErr
	case n == 0:
		return -1, io.EOF
	}
	return oneFD(oob[:oobn])
}

// oneFD is the one descriptor of a control message.
func oneFD(oob []byte) (int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return -1, err
	}
	var fds []int
	for _, m := range msgs {
		if r, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, r...)
		}
	}
	if len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return -1, fmt.Errorf("a channel comes with one descriptor, got %d", len(fds))
	}
	return fds[0], nil
}

// killEverything ends what is left of the last server's work: a runner that is PID 1 of its
// container (the pod's runner) kills every other process in it, escaped or not, before another
// server may connect.
func (r *runner) killEverything() {
	if os.Getpid() == 1 {
		_ = unix.Kill(-1, unix.SIGKILL)
	}
	r.reaper.Sweep()
}

// served is what one server gets: an executor, its sessions, the channels in use.
type served struct {
	r   *runner
	cfg Config
	ex  executor.LocalStarter
	log logr.Logger
	// ctx ends with the control connection: every execution on a channel is killed.
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	sessions map[string]*executor.LocalSession
	channels sync.WaitGroup
}

// start starts the executor cfg asks for, once the directories left from before are empty.
func (r *runner) start(cfg Config) (*served, error) {
	if err := unix.Access(cfg.WorkDir, unix.X_OK); err != nil {
		return nil, fmt.Errorf("the runner (uid %d, gid %d) cannot enter the work dir %s: %w: every directory on the way must let it through, the last one by its group", os.Getuid(), os.Getgid(), cfg.WorkDir, err)
	}
	for _, d := range cfg.Cleanup {
		if executor.IsDirName(d) {
			executor.EmptyDir(filepath.Join(cfg.WorkDir, d))
		}
	}
	sc := executor.SpawnConfig{
		Python:      cfg.Python,
		PackagesDir: cfg.PackagesDir,
		WorkDir:     cfg.WorkDir,
		Path:        cfg.Path,
		Reaper:      r.reaper,
		Isolation:   executor.Isolation{Kernel: confine.Kernel{LandlockABI: cfg.LandlockABI, Seccomp: cfg.Seccomp, ProcessBudget: cfg.ProcessBudget}, Protect: cfg.ProtectPIDs},
		// The runner's container's CPU limit: the code's, shared by its executions.
		CPUs:   container.CPULimit(),
		ShmDir: r.o.ShmDir,
		// The runner's container's memory: its watchdog's, and its metrics'.
		Memory:          container.FindMemoryCgroup(),
		MemoryHighWater: cfg.MemoryHighWater,
		Log:             r.o.Log.WithName("executor"),
	}
	var ex executor.LocalStarter
	switch cfg.Mode {
	case executor.ModeSpawn:
		sp, err := executor.NewSpawn(sc)
		if err != nil {
			return nil, err
		}
		ex = sp
	case executor.ModeFork:
		fk, err := executor.NewFork(executor.ForkConfig{SpawnConfig: sc, Preload: cfg.Preload, Warm: cfg.Warm, WarmupCode: cfg.WarmupCode, Supervisors: cfg.Supervisors,
			RestAfter: cfg.RestAfter})
		if err != nil {
			return nil, err
		}
		if err := fk.Start(); err != nil {
			r.o.Log.Error(err, "zygote did not start; serving in spawn mode and retrying")
		}
		ex = fk
	default:
		return nil, fmt.Errorf("mode %q: want fork or spawn", cfg.Mode)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &served{r: r, cfg: cfg, ex: ex, log: r.o.Log, ctx: ctx, cancel: cancel, sessions: map[string]*executor.LocalSession{}}, nil
}

// mode is the executor's: fork, or spawn while the zygote is down.
func (s *served) mode() string {
	if m, ok := s.ex.(interface{ Mode() string }); ok {
		return m.Mode()
	}
	return s.cfg.Mode
}

// stop kills every execution, ends every session and stops the executor.
func (s *served) stop() {
	s.cancel()
	s.closeSessions()
	s.ex.Close()
	done := make(chan struct{})
	go func() { s.channels.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		s.log.Info("channels still busy after the server went")
	}
}

func (s *served) closeSessions() {
	s.mu.Lock()
	open := s.sessions
	s.sessions = map[string]*executor.LocalSession{}
	s.mu.Unlock()
	for _, ss := range open {
		ss.Close()
	}
}

// channel is the runner's end of one channel.
type channel struct {
	conn net.Conn
	wmu  sync.Mutex
}

func (c *channel) send(rep *Reply) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return writeFrame(c.conn, rep)
}

// serveChannel serves the requests of one channel, one at a time, until it closes. A reader
// takes every frame: a Cancel kills the request in progress, anything else is the next request.
func (s *served) serveChannel(fd int) {
	s.channels.Add(1)
	defer s.channels.Done()
	f := os.NewFile(uintptr(fd), "channel")
	conn, err := net.FileConn(f)
	f.Close()
	if err != nil {
		s.log.Error(err, "a channel that is not a socket")
		return
	}
	ch := &channel{conn: conn}
	defer conn.Close()
	stop := context.AfterFunc(s.ctx, func() { conn.Close() })
	defer stop()

	var mu sync.Mutex
	var cancelCurrent context.CancelFunc
	cancel := func() {
		mu.Lock()
		if cancelCurrent != nil {
			cancelCurrent()
		}
		mu.Unlock()
	}
	requests := make(chan *Request)
	done := make(chan struct{})
	defer close(done)
	go func() {
		defer close(requests)
		for {
			req := &Request{}
			err := readFrame(conn, s.cfg.MaxFrame, req)
			if err == nil {
				err = req.Validate()
			}
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
					s.log.Error(err, "channel closed on a bad frame")
				}
				cancel() // the server is gone: so is the request's reason to run
				return
			}
			if req.Cancel != nil {
				cancel()
				continue
			}
			select {
			case requests <- req:
			case <-done:
				return
			}
		}
	}()
	for req := range requests {
		ctx, c := context.WithCancel(s.ctx)
		mu.Lock()
		cancelCurrent = c
		mu.Unlock()
		rep, finish := s.handle(ctx, req, ch)
		mu.Lock()
		cancelCurrent = nil
		mu.Unlock()
		c()
		// The result goes first; the execution's directory is emptied (and its spare
		// replaced) after, or while a large result's body goes, and Done says so: the server
		// removes the directory then.
		err := ch.sendReply(rep, finish)
		if req.Execute != nil && err == nil {
			err = ch.send(&Reply{Done: &Done{}})
		}
		if err != nil {
			return
		}
	}
}

// handle carries out one request and returns its last reply, and for an execution what is
// left to do once the reply is sent.
func (s *served) handle(ctx context.Context, req *Request, ch *channel) (*Reply, func()) {
	if req.Execute != nil {
		return s.execute(ctx, req.Execute, ch, s.ex)
	}
	return s.handleOther(ctx, req, ch), nil
}

// handleOther carries out a request other than an execution.
func (s *served) handleOther(ctx context.Context, req *Request, ch *channel) *Reply {
	var err error
	switch {
	case req.CreateSession != nil:
		info, err2 := s.createSession(ctx, req.CreateSession)
		if err = err2; err == nil {
			return &Reply{Session: info}
		}
	case req.WarmSession != nil:
		s.warmSession(req.WarmSession)
		return &Reply{Done: &Done{}}
	case req.SessionExecute != nil:
		ss := s.session(req.SessionExecute.Session)
		if ss == nil {
			err = executor.ErrSessionEnded
			break
		}
		rep, finish := s.execute(ctx, &req.SessionExecute.Execute, ch, ss)
		finish()
		return rep
	case req.SessionFiles != nil:
		if ss := s.session(req.SessionFiles.Session); ss != nil {
			l, err2 := ss.Files()
			if err = err2; err == nil {
				return &Reply{Files: &l}
			}
		} else {
			err = executor.ErrSessionEnded
		}
	case req.SessionFile != nil:
		if ss := s.session(req.SessionFile.Session); ss != nil {
			body, err2 := ss.OpenFile(req.SessionFile.Path, req.SessionFile.Max)
			if err = err2; err == nil {
				return &Reply{FileStream: &FileStream{Bytes: body.Size()}, file: body}
			}
		} else {
			err = executor.ErrSessionEnded
		}
	case req.Checkpoint != nil, req.Checkpoints != nil, req.Restore != nil, req.DeleteCheckpoint != nil:
		return s.checkpoints(ctx, req)
	case req.Fork != nil:
		forked, err2 := s.fork(ctx, req.Fork)
		if err = err2; err == nil {
			return &Reply{Forked: forked}
		}
	case req.CloseSession != nil:
		s.mu.Lock()
		ss := s.sessions[req.CloseSession.Session]
		delete(s.sessions, req.CloseSession.Session)
		s.mu.Unlock()
		if ss != nil {
			ss.Close()
		}
		return &Reply{Done: &Done{}}
	case req.SessionStatus != nil:
		st := &SessionStatusReply{Sessions: map[string]SessionState{}}
		for _, id := range req.SessionStatus.Sessions {
			state := SessionState{Ended: true}
			if ss := s.session(id); ss != nil && !ss.Ended() {
				state = SessionState{MemoryBytes: ss.Memory()}
			} else if ss != nil {
				state.EndedForMemory = ss.EndedForMemory()
			}
			st.Sessions[id] = state
		}
		return &Reply{Status: st}
	case req.Stats != nil:
		return &Reply{Stats: s.stats()}
	case req.Cleanup != nil:
		for _, d := range req.Cleanup.Dirs {
			executor.EmptyDir(filepath.Join(s.cfg.WorkDir, d))
		}
		return &Reply{Done: &Done{}}
	case req.Shutdown != nil:
		s.closeSessions()
		s.ex.Close()
		return &Reply{Done: &Done{}}
	}
	return &Reply{Error: errorOf(err)}
}

// checkpoints carries out a request about a session's checkpoints.
func (s *served) checkpoints(ctx context.Context, req *Request) *Reply {
	var id string
	switch {
	case req.Checkpoint != nil:
		id = req.Checkpoint.Session
	case req.Checkpoints != nil:
		id = req.Checkpoints.Session
	case req.Restore != nil:
		id = req.Restore.Session
	default:
		id = req.DeleteCheckpoint.Session
	}
	ss := s.session(id)
	if ss == nil {
		return &Reply{Error: errorOf(executor.ErrSessionEnded)}
	}
	var err error
	switch {
	case req.Checkpoint != nil:
		cp, err2 := ss.Checkpoint(ctx)
		if err = err2; err == nil {
			return &Reply{Checkpoint: &cp}
		}
	case req.Checkpoints != nil:
		l, err2 := ss.Checkpoints()
		if err = err2; err == nil {
			return &Reply{Checkpoints: &api.Checkpoints{Checkpoints: l}}
		}
	case req.Restore != nil:
		err = ss.Restore(ctx, req.Restore.Checkpoint)
	default:
		err = ss.DeleteCheckpoint(req.DeleteCheckpoint.Checkpoint)
	}
	if err != nil {
		return &Reply{Error: errorOf(err)}
	}
	return &Reply{Done: &Done{}}
}

// withHop is the server's stages of an execution and the hop from the server's send at sentAt
// (CLOCK_MONOTONIC, ns) to now. The hop is left out when the server sent no time, or one that
// is not before now or more than a minute before: its clock is not this one (another time
// namespace).
func withHop(timings map[string]float64, sentAt int64) map[string]float64 {
	hop := time.Duration(monotonicNow() - sentAt)
	if sentAt == 0 || hop < 0 || hop > time.Minute {
		return timings
	}
	t := maps.Clone(timings)
	if t == nil {
		t = map[string]float64{}
	}
	t[api.StageHop] = float64(hop.Microseconds()) / 1000
	return t
}

// monotonicNow is CLOCK_MONOTONIC in nanoseconds, which the server and the runner of a pod
// read alike (Go's monotonic readings are of this process alone).
func monotonicNow() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano()
}

// execer is what runs an execution: the executor, or a session.
type execer interface {
	Execute(ctx context.Context, req executor.Request, out executor.Output) (api.ExecuteResult, error)
}

// execute runs e with ex, streaming its output on ch when asked, and returns its result or
// error as a reply; the result's files are open, to be read as it is sent (see sendReply).
// finish is what is left to do once the result is sent (see executor.Deferred).
func (s *served) execute(ctx context.Context, e *Execute, ch *channel, ex execer) (*Reply, func()) {
	open := &executor.OpenFiles{}
	req := executor.Request{ID: e.ID, Code: e.Code, Stdin: e.Stdin, Env: e.Env, Files: fromFiles(e.Files), Network: e.Network, Limits: fromLimits(e.Limits),
		OpenFiles: open, Timings: withHop(e.Timings, e.SentAt), MaxTimeout: time.Duration(e.MaxTimeoutMS) * time.Millisecond, Installs: e.Installs, Inspect: e.Inspect,
		OutputBudgetChars: e.OutputBudgetChars, Checkpoint: e.Checkpoint}
	if e.Dir != "" {
		req.Dir = filepath.Join(s.cfg.WorkDir, e.Dir)
	}
	var out executor.Output
	var sink *outputSink
	if e.Stream {
		sink = &outputSink{ch: ch}
		out = sink
	}
	var res api.ExecuteResult
	var err error
	finish := func() {}
	if d, ok := ex.(executor.Deferred); ok {
		res, finish, err = d.ExecuteDeferred(ctx, req, out)
	} else {
		res, err = ex.Execute(ctx, req, out)
	}
	if sink != nil {
		sink.close()
	}
	// As the API's body has it, so that the server can pass the result on as it is (see the
	// client's passResult).
	res.ID = e.ID
	if res.Files == nil {
		res.Files = []api.OutputFile{}
	}
	if err != nil {
		open.Close()
		return &Reply{Error: errorOf(err)}, finish
	}
	return &Reply{Result: &res, open: open}, finish
}

// outputSink sends an execution's output on its channel as it comes, until the execution is
// over: a write that comes after (a stream's copier that a leftover process held) would be
// taken for the reply to the next request.
type outputSink struct {
	ch     *channel
	mu     sync.Mutex
	closed bool
}

func (o *outputSink) Write(stream string, data []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.closed {
		_ = o.ch.send(&Reply{Output: &Output{Stream: stream, Data: data}})
	}
}

func (o *outputSink) close() {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
}

func (s *served) createSession(ctx context.Context, c *CreateSession) (*SessionInfo, error) {
	ss, err := s.ex.NewSession(ctx, executor.SessionRequest{ID: c.ID, Dir: filepath.Join(s.cfg.WorkDir, c.Dir), Env: c.Env, Files: fromFiles(c.Files),
		Network: c.Network, Limits: fromLimits(c.Limits), MaxCheckpoints: c.MaxCheckpoints, CheckpointIdle: time.Duration(c.CheckpointIdleMS) * time.Millisecond,
		MaxCheckpointBytes: c.MaxCheckpointBytes})
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	old := s.sessions[c.ID]
	s.sessions[c.ID] = ss
	s.mu.Unlock()
	if old != nil { // never so: the server's ids are unique
		old.Close()
	}
	return &SessionInfo{Dir: filepath.Base(ss.Dir()), MemoryBytes: ss.Memory()}, nil
}

// fork forks a session into branches, each then a session of the runner's.
func (s *served) fork(ctx context.Context, f *Fork) (*Forked, error) {
	ss := s.session(f.Session)
	if ss == nil {
		return nil, executor.ErrSessionEnded
	}
	s.mu.Lock()
	for _, id := range f.IDs {
		if _, taken := s.sessions[id]; taken || id == "" {
			s.mu.Unlock()
			return nil, fmt.Errorf("%w: a branch's id %q is taken", errBadRequest, id)
		}
	}
	s.mu.Unlock()
	bs, err := ss.Branch(ctx, f.IDs)
	if err != nil {
		return nil, err
	}
	out := &Forked{}
	s.mu.Lock()
	for i, b := range bs {
		s.sessions[f.IDs[i]] = b
	}
	s.mu.Unlock()
	for _, b := range bs {
		dir, _ := filepath.Rel(s.cfg.WorkDir, b.Dir())
		out.Sessions = append(out.Sessions, SessionInfo{Dir: dir, MemoryBytes: b.Memory()})
	}
	return out, nil
}

// warmSession asks the executor for a session started ahead of time like c, in fork mode.
func (s *served) warmSession(c *CreateSession) {
	fk, ok := s.ex.(*executor.Fork)
	if !ok {
		return
	}
	fk.WarmSession(executor.SessionRequest{Dir: filepath.Join(s.cfg.WorkDir, c.Dir), Network: c.Network, Limits: fromLimits(c.Limits)})
}

func (s *served) session(id string) *executor.LocalSession {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[id]
}

func (s *served) stats() *Stats {
	st := &Stats{Mode: s.mode()}
	if fk, ok := s.ex.(*executor.Fork); ok {
		st.Fallbacks, st.WarmHits = fk.Fallbacks(), fk.WarmHits()
	}
	reaped, killed := s.r.reaper.Stats()
	st.Reaped, st.Killed = int64(reaped), int64(killed)
	st.RSS, st.PSS = proc.TreeMemory(os.Getpid())
	if ts, ok := s.ex.(interface{ TreeStats() executor.TreeStats }); ok {
		t := ts.TreeStats()
		st.Trees, st.TreeTasks, st.TreeMemory = t.Trees, t.Tasks, t.Memory
		st.MemoryUsage, st.MemoryWorkingSet, st.MemoryLimit, st.MemoryHighWater, st.WatchdogEnded = t.Usage, t.WorkingSet, t.Limit, t.HighWater, t.WatchdogEnded
	}
	return st
}
