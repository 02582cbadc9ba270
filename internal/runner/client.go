package runner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"

	"github.com/pyexec/pyexec/internal/confine"
	"github.com/pyexec/pyexec/internal/executor"
	"github.com/pyexec/pyexec/pkg/api"
)

// ClientConfig configures the server's end of the protocol.
type ClientConfig struct {
	// Runner is what runners are told; Protocol, LandlockABI, Seccomp, Cleanup and MaxFrame
	// are filled in at each handshake.
	Runner Config
	// Kernel is the confinement the server wants (its probe, capped by its flags); a runner
	// applies at most this.
	Kernel confine.Kernel
	// GID is the group of the work root and of the directories the server makes for the
	// runner: the runner's (-1: the server's own).
	GID int
	// Accept decides whether a runner that said hello may serve; its error is sent to the
	// runner as the refusal. Nil accepts any runner of the protocol.
	Accept func(Hello, confine.Kernel) error
	// OnReady is called with each runner that is ready, with the confinement it applies.
	OnReady func(Hello, confine.Kernel)
	// MaxFrame is the largest frame either end sends after the handshake (MaxFrameFor).
	MaxFrame int64
	Log      logr.Logger
}

// MaxFrameFor is the largest frame a server of these caps needs: a result with each stream at
// its cap and every byte of it escaped in JSON (6 bytes at most), files and outputs at their
// cap in base64 and escaped, a session's file read, and a request's files.
func MaxFrameFor(maxOutputBytes int, maxFilesOutBytes, maxFileBytes, maxRequestBytes int64) int64 {
	return 12*int64(maxOutputBytes) + 6*maxFilesOutBytes + 2*maxFileBytes + 2*maxRequestBytes + 1<<20
}

// Errors of the client; both are executor.ErrUnavailable.
var (
	// ErrNoRunner: no runner is connected now (it has not come yet, or it went).
	ErrNoRunner = fmt.Errorf("%w: the runner is not connected (it is starting or restarting)", executor.ErrUnavailable)
	// ErrRunnerGone: the runner went while it had the request.
	ErrRunnerGone = fmt.Errorf("%w: the runner went away while it had the request", executor.ErrUnavailable)
)

// Timeouts of the client.
const (
	// helloTimeout bounds the wait for a runner's Hello, handshakeTimeout the whole handshake
	// (the runner starts its executor before it is ready).
	helloTimeout     = 10 * time.Second
	handshakeTimeout = 60 * time.Second
	// controlTimeout bounds a request that runs no code (stats, session status, files).
	controlTimeout = 10 * time.Second
	// maxIdleChannels are kept for the next requests; more are closed.
	maxIdleChannels = 64
)

// Client is the server's end: it speaks with one runner at a time, and implements
// executor.Executor and executor.SessionStarter through it. The directories of executions and
// sessions are the server's (executor.MakeDir), in the work root it owns.
type Client struct {
	cfg ClientConfig
	log logr.Logger

	mu       sync.Mutex
	ctl      ctlConn    // nil while no runner is connected
	attachMu sync.Mutex // one handshake at a time
	ctlMu    sync.Mutex // orders writes on ctl
	gen      int        // counts runners: a session of an earlier one has ended
	hello    Hello
	mode     string
	kernel   confine.Kernel
	maxFrame int64
	idle     []*clientChannel
	ready    chan struct{} // closed while a runner is ready; replaced when it goes
	inUse    map[string]bool
	spareDir string                   // the directory with the runner for its next session started ahead of time
	warm     *executor.SessionRequest // what WarmSession asked for: asked of every new runner
	closed   bool
	listener net.Listener // the runner socket, closed with the client
	sessions map[*remoteSession]bool
	watching bool
}

// NewClient returns a client with no runner yet: Attach gives it one.
func NewClient(cfg ClientConfig) (*Client, error) {
	if err := executor.PrepareWorkRoot(cfg.Runner.WorkDir, cfg.GID); err != nil {
		return nil, err
	}
	return &Client{cfg: cfg, log: cfg.Log, ready: make(chan struct{}), inUse: map[string]bool{}, sessions: map[*remoteSession]bool{}}, nil
}

// WaitReady waits until a runner is ready, or ctx ends.
func (c *Client) WaitReady(ctx context.Context) error {
	c.mu.Lock()
	ready := c.ready
	c.mu.Unlock()
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Ready says whether a runner is connected and ready, and why not.
func (c *Client) Ready() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctl == nil {
		return ErrNoRunner
	}
	return nil
}

// Runner is the Hello of the connected runner, and the confinement it applies.
func (c *Client) Runner() (Hello, confine.Kernel, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hello, c.kernel, c.ctl != nil
}

// Attach speaks with the runner at the other end of conn: the handshake, then requests until
// it goes. It returns once the runner is ready (then serves it in the background) or refused.
// A runner is refused while another one is connected.
func (c *Client) Attach(conn ctlConn) error {
	c.attachMu.Lock()
	defer c.attachMu.Unlock()
	c.mu.Lock()
	busy, closed := c.ctl != nil, c.closed
	c.mu.Unlock()
	if busy || closed {
		conn.Close()
		return errors.New("a runner is already connected")
	}
	if err := c.handshake(conn); err != nil {
		conn.Close()
		return err
	}
	go c.watch(conn)
	return nil
}

// handshake reads Hello, sends Config and reads Ready; the runner is then the client's.
func (c *Client) handshake(conn ctlConn) error {
	_ = conn.SetDeadline(time.Now().Add(helloTimeout))
	defer conn.SetDeadline(time.Time{})
	var hello Hello
	if err := readFrame(conn, handshakeFrame, &hello); err != nil {
		return fmt.Errorf("the runner's hello: %w", err)
	}
	_ = conn.SetDeadline(time.Now().Add(handshakeTimeout))
	cfg := c.cfg.Runner
	cfg.Protocol = Protocol
	refuse := func(msg string) error {
		cfg := Config{Protocol: Protocol, Refused: msg}
		_ = writeFrame(conn, &cfg)
		return fmt.Errorf("runner refused: %s", msg)
	}
	if hello.Protocol != Protocol {
		return refuse(fmt.Sprintf("the runner speaks protocol %d, the server %d: run the same pyexec in both containers (runner %s)", hello.Protocol, Protocol, hello.Version))
	}
	k := c.cfg.Kernel
	k.LandlockABI = min(k.LandlockABI, hello.LandlockABI)
	k.Seccomp = k.Seccomp && hello.Seccomp
	k.ProcessBudget = k.ProcessBudget && hello.ProcessBudget
	if c.cfg.Accept != nil {
		if err := c.cfg.Accept(hello, k); err != nil {
			return refuse(err.Error())
		}
	}
	cfg.LandlockABI, cfg.Seccomp, cfg.ProcessBudget = k.LandlockABI, k.Seccomp, k.ProcessBudget
	cfg.MaxFrame = c.cfg.MaxFrame
	cfg.Cleanup = c.leftovers()
	if err := writeFrame(conn, &cfg); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	var ready Ready
	if err := readFrame(conn, handshakeFrame, &ready); err != nil {
		return fmt.Errorf("waiting for the runner to be ready: %w", err)
	}
	if ready.Error != "" {
		return fmt.Errorf("the runner could not start: %s", ready.Error)
	}
	for _, d := range cfg.Cleanup {
		c.removeDir(filepath.Join(cfg.WorkDir, d))
	}
	c.mu.Lock()
	c.ctl, c.hello, c.kernel, c.mode, c.maxFrame = conn, hello, k, ready.Mode, cfg.MaxFrame
	c.gen++
	close(c.ready)
	warm := c.warm
	c.mu.Unlock()
	if warm != nil { // a runner that came back: it keeps a session ahead of time too
		go c.WarmSession(*warm)
	}
	c.log.Info("runner ready", "pid", hello.PID, "uid", hello.UID, "gid", hello.GID, "mode", ready.Mode, "version", hello.Version)
	if c.cfg.OnReady != nil {
		c.cfg.OnReady(hello, k)
	}
	return nil
}

// leftovers are the directories of the work root no request uses: an earlier runner's.
func (c *Client) leftovers() []string {
	entries, err := os.ReadDir(c.cfg.Runner.WorkDir)
	if err != nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, e := range entries {
		p := filepath.Join(c.cfg.Runner.WorkDir, e.Name())
		if executor.IsDirName(e.Name()) && !c.inUse[p] {
			out = append(out, e.Name())
		}
	}
	return out
}

// watch waits until the runner goes (its control connection ends), then forgets it: its
// sessions have ended, its channels are closed.
func (c *Client) watch(conn ctlConn) {
	var b [1]byte
	_, err := conn.Read(b[:]) // the runner never writes after Ready: any read is its end
	c.mu.Lock()
	idle := c.idle
	delete(c.inUse, c.spareDir) // the next runner empties it with the other leftovers
	c.ctl, c.idle, c.spareDir = nil, nil, ""
	c.ready = make(chan struct{})
	c.gen++
	closed := c.closed
	c.mu.Unlock()
	conn.Close()
	for _, ch := range idle {
		ch.conn.Close()
	}
	if !closed {
		c.log.Error(err, "runner gone")
	}
}

// clientChannel is the server's end of one channel.
type clientChannel struct {
	conn net.Conn
	wmu  sync.Mutex
	gen  int
}

// channel returns an idle channel, or makes one and hands its other end to the runner.
func (c *Client) channel() (*clientChannel, int64, error) {
	c.mu.Lock()
	if c.ctl == nil {
		c.mu.Unlock()
		return nil, 0, ErrNoRunner
	}
	ctl, gen, limit := c.ctl, c.gen, c.maxFrame
	if n := len(c.idle); n > 0 {
		ch := c.idle[n-1]
		c.idle = c.idle[:n-1]
		c.mu.Unlock()
		return ch, limit, nil
	}
	c.mu.Unlock()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, 0, err
	}
	c.ctlMu.Lock()
	_, _, err = ctl.WriteMsgUnix([]byte{'c'}, unix.UnixRights(fds[1]), nil)
	c.ctlMu.Unlock()
	unix.Close(fds[1])
	if err != nil {
		unix.Close(fds[0])
		return nil, 0, fmt.Errorf("%w: %v", ErrRunnerGone, err)
	}
	f := os.NewFile(uintptr(fds[0]), "channel")
	conn, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, 0, err
	}
	return &clientChannel{conn: conn, gen: gen}, limit, nil
}

// release keeps a channel that is in step for the next request, and closes it otherwise.
func (c *Client) release(ch *clientChannel, reusable bool) {
	c.mu.Lock()
	keep := reusable && ch.gen == c.gen && c.ctl != nil && len(c.idle) < maxIdleChannels
	if keep {
		c.idle = append(c.idle, ch)
	}
	c.mu.Unlock()
	if !keep {
		ch.conn.Close()
	}
}

// roundTrip sends req on a channel and returns the last reply; Output replies go to output.
// With cancel, ctx ending sends Cancel and the last reply still comes (an execution killed);
// without, ctx ending abandons the request. An execution's last reply is followed by Done,
// once the runner has emptied its directory: then, in the background, done is called, with
// false if Done did not come (the runner went).
func (c *Client) roundTrip(ctx context.Context, req *Request, cancel bool, output func(*Output)) (*Reply, error) {
	return c.exchange(ctx, req, cancel, output, nil)
}

func (c *Client) exchange(ctx context.Context, req *Request, cancel bool, output func(*Output), done func(ok bool)) (*Reply, error) {
	ch, limit, err := c.channel()
	if err != nil {
		if done != nil {
			done(false)
		}
		return nil, err
	}
	ch.wmu.Lock()
	err = writeFrame(ch.conn, req)
	ch.wmu.Unlock()
	if err != nil {
		ch.conn.Close()
		if done != nil {
			done(false)
		}
		return nil, fmt.Errorf("%w: %v", ErrRunnerGone, err)
	}
	onDone := func() { ch.conn.Close() }
	if cancel {
		onDone = func() {
			ch.wmu.Lock()
			_ = writeFrame(ch.conn, &Request{Cancel: &Cancel{}})
			ch.wmu.Unlock()
		}
	}
	stop := context.AfterFunc(ctx, onDone)
	// An execution's result is passed on as the runner encoded it (see passResult).
	pass := req.Execute != nil || req.SessionExecute != nil
	for {
		var rep *Reply
		b, err := readFrameBytes(ch.conn, limit)
		if err == nil {
			rep, err = decodeReply(b, pass)
		}
		if err == nil {
			err = rep.Validate()
		}
		if err == nil && rep.ResultStream != nil && rep.ResultStream.Bytes > limit {
			err = fmt.Errorf("%w: a result of %d bytes, the limit is %d", errFrameTooLarge, rep.ResultStream.Bytes, limit)
		}
		switch {
		case err != nil:
		case rep.ResultStream != nil && !pass:
			err = errors.New("a result to a request that runs no code")
		case rep.FileStream != nil && req.SessionFile == nil:
			err = errors.New("a file to a request for no file")
		case rep.FileStream != nil && rep.FileStream.Bytes > req.SessionFile.Max:
			err = fmt.Errorf("a file of %d bytes, the most asked for %d", rep.FileStream.Bytes, req.SessionFile.Max)
		}
		if err != nil {
			stop()
			ch.conn.Close()
			if done != nil {
				done(false)
			}
			if ctx.Err() != nil && !cancel {
				return nil, ctx.Err()
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
				return nil, ErrRunnerGone
			}
			return nil, fmt.Errorf("%w: %v", ErrRunnerGone, err)
		}
		if rep.Output != nil {
			if output != nil {
				output(rep.Output)
			}
			continue
		}
		// A Cancel that was sent, or is being sent, must not reach the next request.
		reusable := stop()
		// after is what follows the last reply, once read whole (ok) or not.
		after := func(ok bool) {
			if done == nil {
				c.release(ch, reusable && ok)
				return
			}
			if !ok {
				ch.conn.Close()
				go done(false) // the directory may need the runner to empty it: not in the caller's time
				return
			}
			go func() {
				var d Reply
				err := readFrame(ch.conn, limit, &d)
				ok := err == nil && d.Done != nil
				done(ok)
				c.release(ch, reusable && ok)
			}()
		}
		// The channel is a body's until it is closed.
		switch {
		case rep.ResultStream != nil:
			rs := rep.ResultStream
			res := rs.Head
			res.Encoded = &streamedResult{streamedBody: newStreamedBody(ch.conn, rs.Bytes, after), stdout: rs.StdoutBytes, stderr: rs.StderrBytes}
			return &Reply{Result: &res}, nil
		case rep.FileStream != nil:
			rep.body = newStreamedBody(ch.conn, rep.FileStream.Bytes, after)
			return rep, nil
		}
		after(true)
		return rep, nil
	}
}

// bodyReadTimeout is how long a streamed result's reader waits for the runner's next bytes:
// the runner holds them, and sends them as fast as the server takes them.
const bodyReadTimeout = 10 * time.Second

// streamedBody is the body that follows a ResultStream or a FileStream, read from the
// runner's channel as it is read; closing it gives the channel back, or closes it when the
// body was not read whole.
type streamedBody struct {
	conn       net.Conn
	size, left int64
	once       sync.Once
	after      func(ok bool)
}

func newStreamedBody(conn net.Conn, size int64, after func(ok bool)) *streamedBody {
	return &streamedBody{conn: conn, size: size, left: size, after: after}
}

// streamedResult is a large result's body. Its result has no stdout and stderr, only their
// sizes (OutputBytes): they are in the body.
type streamedResult struct {
	*streamedBody
	stdout, stderr int
}

// OutputBytes are the sizes of the result's stdout and stderr.
func (r *streamedResult) OutputBytes() (stdout, stderr int) { return r.stdout, r.stderr }

func (r *streamedBody) Size() int64 { return r.size }

func (r *streamedBody) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	_ = r.conn.SetReadDeadline(time.Now().Add(bodyReadTimeout))
	n, err := r.conn.Read(p)
	r.left -= int64(n)
	if err != nil {
		err = fmt.Errorf("%w: a body ended %d bytes short: %v", ErrRunnerGone, r.left, err)
	}
	return n, err
}

func (r *streamedBody) Close() error {
	r.once.Do(func() {
		_ = r.conn.SetReadDeadline(time.Time{})
		r.after(r.left == 0)
	})
	return nil
}

// passedResult is a small result's body, from its frame (see passResult).
type passedResult struct{ *bytes.Reader }

func (passedResult) Close() error { return nil }

// control is roundTrip for a request that runs no code, bounded by controlTimeout.
func (c *Client) control(req *Request) (*Reply, error) {
	ctx, cancel := context.WithTimeout(context.Background(), controlTimeout)
	defer cancel()
	return c.roundTrip(ctx, req, false, nil)
}

// makeDir makes a directory for the runner and marks it in use.
func (c *Client) makeDir() (string, error) {
	dir, err := executor.MakeDir(c.cfg.Runner.WorkDir, c.cfg.GID)
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	c.inUse[dir] = true
	c.mu.Unlock()
	return dir, nil
}

// removeDir removes a directory the runner has emptied. One it has not (it went meanwhile) is
// left for the next runner to empty.
func (c *Client) removeDir(dir string) {
	err := executor.RemoveDir(dir)
	if errors.Is(err, executor.ErrNotEmpty) {
		// The runner empties it now, if it is still there; else the next one does.
		if _, cerr := c.control(&Request{Cleanup: &Cleanup{Dirs: []string{filepath.Base(dir)}}}); cerr == nil {
			err = executor.RemoveDir(dir)
		}
	}
	if err != nil {
		c.log.Info("directory left for the next runner to empty", "dir", dir, "reason", err.Error())
	}
	c.mu.Lock()
	delete(c.inUse, dir)
	c.mu.Unlock()
}

// Execute implements executor.Executor: the runner runs req in a directory the server made.
// The directory goes once the runner has emptied it, after the result.
func (c *Client) Execute(ctx context.Context, req executor.Request, out executor.Output) (api.ExecuteResult, error) {
	dir, err := c.makeDir()
	if err != nil {
		return noResult(req), err
	}
	e := executeOf(req)
	e.Dir = filepath.Base(dir)
	return c.execute(ctx, &Request{Execute: e}, req, out, func(bool) { c.removeDir(dir) })
}

func executeOf(req executor.Request) *Execute {
	return &Execute{ID: req.ID, Code: req.Code, Stdin: req.Stdin, Env: req.Env, Files: toFiles(req.Files), Network: req.Network, Limits: toLimits(req.Limits),
		Timings: req.Timings, SentAt: monotonicNow(), MaxTimeoutMS: req.MaxTimeout.Milliseconds(), Installs: req.Installs, Inspect: req.Inspect,
		OutputBudgetChars: req.OutputBudgetChars, Checkpoint: req.Checkpoint}
}

// execute sends an Execute or SessionExecute and returns its result, streaming to out; done
// (an Execute's) is called once the runner says it is done with it.
func (c *Client) execute(ctx context.Context, r *Request, req executor.Request, out executor.Output, done func(bool)) (api.ExecuteResult, error) {
	var output func(*Output)
	if out != nil {
		if r.Execute != nil {
			r.Execute.Stream = true
		} else {
			r.SessionExecute.Execute.Stream = true
		}
		output = func(o *Output) { out.Write(o.Stream, o.Data) }
	}
	rep, err := c.exchange(ctx, r, true, output, done)
	switch {
	case err != nil:
		return noResult(req), err
	case rep.Error != nil:
		return noResult(req), rep.Error.Err()
	case rep.Result == nil:
		return noResult(req), fmt.Errorf("%w: it answered an execution with %s", ErrRunnerGone, describe(rep))
	}
	res := *rep.Result
	res.ID = req.ID
	return res, nil
}

// noResult is what Execute returns with an error: the execution did not run.
func noResult(req executor.Request) api.ExecuteResult {
	return api.ExecuteResult{ID: req.ID, Files: []api.OutputFile{}, Outputs: []api.Output{}}
}

// describe names the kind of a reply, for errors.
func describe(rep *Reply) string {
	switch {
	case rep.Result != nil:
		return "a result"
	case rep.Session != nil:
		return "a session"
	case rep.Files != nil:
		return "files"
	case rep.FileStream != nil:
		return "a file"
	case rep.Status != nil:
		return "a status"
	case rep.Stats != nil:
		return "stats"
	case rep.Done != nil:
		return "done"
	case rep.Error != nil:
		return "an error: " + rep.Error.Message
	}
	return "nothing"
}

// Mode is the runner's executor mode: fork, or spawn while its zygote is down.
func (c *Client) Mode() string {
	if st, err := c.Stats(); err == nil {
		return st.Mode
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mode != "" {
		return c.mode
	}
	return c.cfg.Runner.Mode
}

// Stats are the runner's figures.
func (c *Client) Stats() (*Stats, error) {
	rep, err := c.control(&Request{Stats: &StatsRequest{}})
	if err != nil {
		return nil, err
	}
	if rep.Stats == nil {
		return nil, fmt.Errorf("%w: it answered stats with %s", ErrRunnerGone, describe(rep))
	}
	return rep.Stats, nil
}

// NewSession implements executor.SessionStarter: the runner starts a session in a directory
// the server made (or takes one started ahead of time, which keeps its own).
func (c *Client) NewSession(ctx context.Context, req executor.SessionRequest) (executor.Session, error) {
	dir, err := c.makeDir()
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	gen := c.gen
	c.mu.Unlock()
	rep, err := c.roundTrip(ctx, &Request{CreateSession: &CreateSession{ID: req.ID, Dir: filepath.Base(dir), Env: req.Env, Files: toFiles(req.Files),
		Network: req.Network, Limits: toLimits(req.Limits), MaxCheckpoints: req.MaxCheckpoints, CheckpointIdleMS: req.CheckpointIdle.Milliseconds(),
		MaxCheckpointBytes: req.MaxCheckpointBytes}}, false, nil)
	switch {
	case err == nil && rep.Error != nil:
		err = rep.Error.Err()
	case err == nil && rep.Session == nil:
		err = fmt.Errorf("%w: it answered a session with %s", ErrRunnerGone, describe(rep))
	}
	if err != nil {
		c.removeDir(dir)
		return nil, err
	}
	used := filepath.Join(c.cfg.Runner.WorkDir, rep.Session.Dir)
	if used != dir {
		// The session started ahead of time, in the directory given for it; ours is the next
		// one's.
		c.mu.Lock()
		ok := used == c.spareDir && gen == c.gen
		if ok {
			c.spareDir = dir
		}
		c.mu.Unlock()
		if !ok {
			c.removeDir(dir)
			return nil, fmt.Errorf("%w: it started the session in %s, not a directory it was given", ErrRunnerGone, rep.Session.Dir)
		}
	}
	ss := &remoteSession{c: c, id: req.ID, gen: gen, memory: rep.Session.MemoryBytes, fam: &remoteFamily{members: 1, dir: used}}
	c.mu.Lock()
	c.sessions[ss] = true
	watch := !c.watching
	c.watching = true
	c.mu.Unlock()
	if watch {
		go c.watchSessions()
	}
	return ss, nil
}

// WarmSession asks the runner for a session started ahead of time like req, in a directory
// the server makes for it.
func (c *Client) WarmSession(req executor.SessionRequest) {
	dir, err := c.makeDir()
	if err != nil {
		c.log.Error(err, "no session started ahead of time")
		return
	}
	c.mu.Lock()
	c.spareDir, c.warm = dir, &req
	c.mu.Unlock()
	if _, err := c.control(&Request{WarmSession: &CreateSession{Dir: filepath.Base(dir), Network: req.Network, Limits: toLimits(req.Limits)}}); err != nil {
		c.log.Error(err, "no session started ahead of time")
	}
}

// sessionsEvery is how often the client asks the runner which sessions still run.
const sessionsEvery = time.Second

// watchSessions asks the runner, while sessions are open, which of them have ended (their
// interpreter died between calls), so that Ended says so without asking.
func (c *Client) watchSessions() {
	for {
		time.Sleep(sessionsEvery)
		c.mu.Lock()
		var open []*remoteSession
		for ss := range c.sessions {
			open = append(open, ss)
		}
		if len(open) == 0 || c.closed {
			c.watching = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		states, err := c.status(open)
		if err != nil {
			continue
		}
		for _, ss := range open {
			if st, ok := states[ss.id]; ok {
				ss.update(st)
			}
		}
	}
}

// status asks the runner about sessions.
func (c *Client) status(sessions []*remoteSession) (map[string]SessionState, error) {
	ids := make([]string, len(sessions))
	for i, ss := range sessions {
		ids[i] = ss.id
	}
	rep, err := c.control(&Request{SessionStatus: &SessionStatus{Sessions: ids}})
	if err != nil {
		return nil, err
	}
	if rep.Status == nil {
		return nil, fmt.Errorf("%w: it answered a status with %s", ErrRunnerGone, describe(rep))
	}
	return rep.Status.Sessions, nil
}

// Close implements executor.Executor: the runner stops its executor, and the server stops
// talking to it; the directories the runner had are removed.
func (c *Client) Close() {
	if _, err := c.control(&Request{Shutdown: &Shutdown{}}); err != nil && !errors.Is(err, ErrNoRunner) {
		c.log.Error(err, "the runner did not shut down its executor")
	}
	c.mu.Lock()
	c.closed = true
	ctl, idle, spare, l := c.ctl, c.idle, c.spareDir, c.listener
	c.idle, c.spareDir = nil, ""
	c.mu.Unlock()
	if l != nil {
		l.Close()
	}
	for _, ch := range idle {
		ch.conn.Close()
	}
	if spare != "" {
		c.removeDir(spare)
	}
	if ctl != nil {
		ctl.Close()
	}
}

// remoteSession is a session in the runner.
type remoteSession struct {
	c   *Client
	id  string
	gen int
	// fam is what the session shares with its branches and theirs: the directory of the first
	// session, which holds every member's and goes with the last.
	fam *remoteFamily

	mu          sync.Mutex
	ended       bool
	endedMemory bool // the runner's memory watchdog ended it
	memory      int64
	once        sync.Once
}

// remoteFamily is a session and its branches (see executor.LocalSession.Branch).
type remoteFamily struct {
	mu      sync.Mutex
	members int
	dir     string
}

// leave counts a member out: true when it was the last.
func (f *remoteFamily) leave() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.members--
	return f.members == 0
}

func (ss *remoteSession) update(st SessionState) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.ended = ss.ended || st.Ended
	ss.endedMemory = ss.endedMemory || st.EndedForMemory
	ss.memory = st.MemoryBytes
}

// EndedForMemory says the runner's memory watchdog ended the session (as the runner last said).
func (ss *remoteSession) EndedForMemory() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.endedMemory
}

func (ss *remoteSession) end() {
	ss.mu.Lock()
	ss.ended = true
	ss.mu.Unlock()
}

// Execute implements executor.Session.
func (ss *remoteSession) Execute(ctx context.Context, req executor.Request, out executor.Output) (api.ExecuteResult, error) {
	if ss.Ended() {
		return noResult(req), executor.ErrSessionEnded
	}
	res, err := ss.c.execute(ctx, &Request{SessionExecute: &SessionExecute{Session: ss.id, Execute: *executeOf(req)}}, req, out, nil)
	if errors.Is(err, executor.ErrSessionEnded) {
		// It ended since the last status: the runner says why (EndedForMemory).
		if states, err := ss.c.status([]*remoteSession{ss}); err == nil {
			if st, ok := states[ss.id]; ok {
				ss.update(st)
			}
		}
	}
	if errors.Is(err, executor.ErrSessionEnded) || errors.Is(err, ErrRunnerGone) || (err == nil && res.SessionLost) {
		ss.end()
	}
	return res, err
}

// Files implements executor.Session. A runner of an older pyexec sends no Total: it is then
// the files listed, as many as it knows of.
func (ss *remoteSession) Files() (api.SessionFiles, error) {
	if ss.Ended() {
		return api.SessionFiles{}, executor.ErrSessionEnded
	}
	rep, err := ss.c.control(&Request{SessionFiles: &SessionRef{Session: ss.id}})
	switch {
	case err != nil:
		return api.SessionFiles{}, err
	case rep.Error != nil:
		return api.SessionFiles{}, rep.Error.Err()
	case rep.Files == nil:
		return api.SessionFiles{}, fmt.Errorf("%w: it answered files with %s", ErrRunnerGone, describe(rep))
	}
	l := *rep.Files
	if l.Files == nil {
		l.Files = []api.SessionFile{}
	}
	l.Total = max(l.Total, len(l.Files))
	return l, nil
}

// OpenFile implements executor.Session: the file streams from the runner as it is read, and
// its channel is the body's until it is closed.
func (ss *remoteSession) OpenFile(p string, max int64) (executor.Body, error) {
	if ss.Ended() {
		return nil, executor.ErrSessionEnded
	}
	rep, err := ss.c.control(&Request{SessionFile: &SessionFile{Session: ss.id, Path: p, Max: max}})
	switch {
	case err != nil:
		return nil, err
	case rep.Error != nil:
		return nil, rep.Error.Err()
	case rep.body == nil:
		return nil, fmt.Errorf("%w: it answered a file with %s", ErrRunnerGone, describe(rep))
	}
	return rep.body, nil
}

// Checkpoint implements executor.Session.
func (ss *remoteSession) Checkpoint(ctx context.Context) (api.Checkpoint, error) {
	rep, err := ss.ask(ctx, &Request{Checkpoint: &SessionRef{Session: ss.id}}, "a checkpoint", func(r *Reply) bool { return r.Checkpoint != nil })
	if err != nil {
		return api.Checkpoint{}, err
	}
	return *rep.Checkpoint, nil
}

// Checkpoints implements executor.Session.
func (ss *remoteSession) Checkpoints() ([]api.Checkpoint, error) {
	rep, err := ss.ask(context.Background(), &Request{Checkpoints: &SessionRef{Session: ss.id}}, "checkpoints", func(r *Reply) bool { return r.Checkpoints != nil })
	if err != nil {
		return nil, err
	}
	if rep.Checkpoints.Checkpoints == nil {
		return []api.Checkpoint{}, nil
	}
	return rep.Checkpoints.Checkpoints, nil
}

// Restore implements executor.Session.
func (ss *remoteSession) Restore(ctx context.Context, id string) error {
	_, err := ss.ask(ctx, &Request{Restore: &SessionCheckpoint{Session: ss.id, Checkpoint: id}}, "a restore", func(r *Reply) bool { return r.Done != nil })
	return err
}

// DeleteCheckpoint implements executor.Session.
func (ss *remoteSession) DeleteCheckpoint(id string) error {
	_, err := ss.ask(context.Background(), &Request{DeleteCheckpoint: &SessionCheckpoint{Session: ss.id, Checkpoint: id}}, "a deletion", func(r *Reply) bool { return r.Done != nil })
	return err
}

// ask sends req, about the session, and returns the runner's reply when ok says it is the one
// wanted (what names it, for the error). A session the runner says has ended is ended here.
func (ss *remoteSession) ask(ctx context.Context, req *Request, what string, ok func(*Reply) bool) (*Reply, error) {
	if ss.Ended() {
		return nil, executor.ErrSessionEnded
	}
	rep, err := ss.c.roundTrip(ctx, req, false, nil)
	switch {
	case err != nil:
	case rep.Error != nil:
		err = rep.Error.Err()
	case !ok(rep):
		err = fmt.Errorf("%w: it answered %s with %s", ErrRunnerGone, what, describe(rep))
	}
	if errors.Is(err, executor.ErrSessionEnded) || errors.Is(err, ErrRunnerGone) {
		ss.end()
	}
	return rep, err
}

// Ended implements executor.Session: it was closed, a call ended it, the runner said so, or
// the runner it ran in is gone. It asks nothing of the runner.
func (ss *remoteSession) Ended() bool {
	ss.c.mu.Lock()
	gone := ss.c.gen != ss.gen
	ss.c.mu.Unlock()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.ended || gone
}

// Memory implements executor.Session: the runner is asked.
func (ss *remoteSession) Memory() int64 {
	if ss.Ended() {
		return 0
	}
	states, err := ss.c.status([]*remoteSession{ss})
	if err == nil {
		if st, ok := states[ss.id]; ok {
			ss.update(st)
		}
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.memory
}

// Close implements executor.Session: the runner ends the session and empties its directory,
// which the server then removes.
func (ss *remoteSession) Close() {
	ss.once.Do(func() {
		ss.c.mu.Lock()
		delete(ss.c.sessions, ss)
		same := ss.c.gen == ss.gen
		ss.c.mu.Unlock()
		ss.end()
		if same {
			if _, err := ss.c.control(&Request{CloseSession: &SessionRef{Session: ss.id}}); err != nil {
				ss.c.log.Error(err, "the runner did not close the session", "session", ss.id)
			}
		}
		if ss.fam.leave() {
			ss.c.removeDir(ss.fam.dir)
		}
	})
}

// Fork implements executor.Session: the runner forks the session; the branches are sessions
// of the same runner, whose directories are within the session's.
func (ss *remoteSession) Fork(ctx context.Context, ids []string) ([]executor.Session, error) {
	rep, err := ss.ask(ctx, &Request{Fork: &Fork{Session: ss.id, IDs: ids}}, "a fork", func(r *Reply) bool { return r.Forked != nil && len(r.Forked.Sessions) == len(ids) })
	if err != nil {
		return nil, err
	}
	ss.fam.mu.Lock()
	ss.fam.members += len(ids)
	ss.fam.mu.Unlock()
	out := make([]executor.Session, len(ids))
	ss.c.mu.Lock()
	for i, id := range ids {
		b := &remoteSession{c: ss.c, id: id, gen: ss.gen, memory: rep.Forked.Sessions[i].MemoryBytes, fam: ss.fam}
		ss.c.sessions[b] = true
		out[i] = b
	}
	ss.c.mu.Unlock()
	return out, nil
}

// compile-time checks.
var (
	_ executor.Executor       = (*Client)(nil)
	_ executor.SessionStarter = (*Client)(nil)
	_ executor.Session        = (*remoteSession)(nil)
)

// decodeReply decodes a frame of the runner; with pass, a result is kept as its JSON (see
// passResult) when it can be.
func decodeReply(b []byte, pass bool) (*Reply, error) {
	if pass {
		if res, ok := passResult(b); ok {
			return &Reply{Result: res}, nil
		}
	}
	rep := &Reply{}
	return rep, json.Unmarshal(b, rep)
}

// resultPrefix and resultSuffix are how a result's frame begins and ends: {"result":R}\n
// (writeFrame), R an object.
var resultPrefix, resultSuffix = []byte(`{"result":{`), []byte("}\n")

// passResult reads a result's frame, {"result":R}\n, without decoding its files and outputs,
// and keeps R and a newline — the body of the API's response, made in place in b — as the
// result's Encoded, which the server writes as it is: the server never holds a large result
// twice, decoded and encoded again. What it needs of the result (its figures, stdout and
// stderr for the log, the paths of its files for Validate) is decoded beside. ok is false
// for a frame that is not such a result, or whose result lacks what the API's body must have
// (the request's id, files as a list: what the server's finalResult would fill in); it is then
// decoded whole.
func passResult(b []byte) (res *api.ExecuteResult, ok bool) {
	if !bytes.HasPrefix(b, resultPrefix) || !bytes.HasSuffix(b, resultSuffix) {
		return nil, false
	}
	body := b[len(`{"result":`) : len(b)-len("\n")] // R}
	r := body[:len(body)-1]
	if !json.Valid(r) {
		return nil, false // not one value: {"result":...} had more in it
	}
	var head struct {
		api.ExecuteResult
		Files []struct {
			Path string `json:"path"`
			Size int64  `json:"size"`
		} `json:"files"` // paths and sizes, not contents
		Outputs []struct{} `json:"outputs"` // counted, not read
	}
	if err := json.Unmarshal(r, &head); err != nil || head.ID == "" || head.Files == nil {
		return nil, false
	}
	res = &head.ExecuteResult
	res.Files = make([]api.OutputFile, len(head.Files))
	for i, f := range head.Files {
		res.Files[i] = api.OutputFile{Path: f.Path, Size: f.Size}
	}
	res.Outputs = make([]api.Output, len(head.Outputs))
	body[len(body)-1] = '\n' // R} becomes R\n
	res.Encoded = passedResult{bytes.NewReader(body)}
	return res, true
}
