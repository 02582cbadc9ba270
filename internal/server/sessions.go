package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/pyexec/pyexec/internal/executor"
	"github.com/pyexec/pyexec/internal/unixsocket"
	"github.com/pyexec/pyexec/pkg/api"
)

// Why a session ended, in pyexec_sessions_ended_total and in the 404 of a later call.
const (
	sessionDeleted = "deleted" // DELETE /v1/sessions/{id}
	sessionIdle    = "idle"    // no call for its idle timeout
	sessionLost    = "lost"    // a call's time limit killed it
	sessionExited  = "exited"  // its interpreter ended by itself
	sessionDrain   = "drain"   // the server shut down
	// sessionMemory: the runner's memory watchdog ended it, or a call passed its memory limit.
	sessionMemory = "memory_limit"
)

// endedWhy is why a session that ended by itself, between calls, ended: the runner's memory
// watchdog ended it, or its interpreter exited.
func endedWhy(ss executor.Session) string {
	if m, ok := ss.(interface{ EndedForMemory() bool }); ok && m.EndedForMemory() {
		return sessionMemory
	}
	return sessionExited
}

// endedKept is how many ended sessions are remembered, so that a call to one is told why it
// ended rather than only that it does not exist.
const endedKept = 256

// sweepEvery is how often idle and dead sessions are looked for.
const sweepEvery = time.Second

// session is one open session of the table.
type session struct {
	ss         executor.Session
	id         string
	created    time.Time
	lastUsed   time.Time
	idle       time.Duration
	memoryMB   int
	network    bool
	executions int
	busy       bool
	owner      string // api.OwnerHeader of its creation; "": none
	// parent is the session it was forked from; branches those forked from it (the table's
	// mu guards them).
	parent   string
	branches []string
}

// sessionTable holds the open sessions.
type sessionTable struct {
	mu       sync.Mutex
	open     map[string]*session
	starting int                     // sessions being created, counted against the maximum
	ended    map[string]endedSession // id → why it ended, the last endedKept
	order    []string                // ended ids, oldest first
	sweeping bool
	closed   bool // the server shut down: no new sessions
}

// endedSession is what is remembered of an ended session.
type endedSession struct {
	why   string
	owner string
}

func newSessionTable() *sessionTable {
	return &sessionTable{open: map[string]*session{}, ended: map[string]endedSession{}}
}

// describe is what the API says of session e, its memory read now (outside the table's lock:
// a remote session asks the runner).
func (t *sessionTable) describe(e *session) api.Session {
	t.mu.Lock()
	info := e.describe(false)
	t.mu.Unlock()
	info.MemoryBytes = e.ss.Memory()
	return info
}

// describe is what the API says of a session; the caller holds the table's lock.
func (e *session) describe(memory bool) api.Session {
	out := api.Session{
		ID: e.id, CreatedAt: e.created, LastUsedAt: e.lastUsed, ExpiresAt: e.lastUsed.Add(e.idle),
		IdleTimeoutSeconds: e.idle.Seconds(), Executions: e.executions, MemoryLimitMB: e.memoryMB,
		Network: e.network, Busy: e.busy, Owner: e.owner, Parent: e.parent, Branches: slices.Clone(e.branches),
	}
	if memory {
		out.MemoryBytes = e.ss.Memory()
	}
	return out
}

// sessionStarter is the executor's, when it runs sessions.
func (s *Server) sessionStarter() (executor.SessionStarter, bool) {
	st, ok := s.executor().(executor.SessionStarter)
	return st, ok && s.cfg.Limits.MaxSessions > 0
}

// handleCreateSession serves POST /v1/sessions.
func (s *Server) handleCreateSession(w http.ResponseWriter, r *http.Request) {
	st, ok := s.sessionStarter()
	if !ok {
		s.writeError(w, r, http.StatusForbidden, api.ErrCodeForbidden, "sessions are switched off on this server (pyexec serve --max-sessions 0)")
		return
	}
	owner, _, rerr := parseOwner(r)
	if rerr != nil {
		s.writeRequestError(w, r, rerr)
		return
	}
	var body api.SessionRequest
	if r.ContentLength != 0 || r.Header.Get("Content-Type") != "" {
		var rerr *requestError
		if body, rerr = readJSON[api.SessionRequest](w, r, s.cfg.Limits.MaxRequestBytes); rerr != nil {
			s.writeRequestError(w, r, rerr)
			return
		}
	}
	req, idle, rerr := newSessionRequest(newSessionID(), body, s.cfg.Limits)
	if rerr != nil {
		s.writeRequestError(w, r, rerr)
		return
	}
	if !s.beginOrRefuse(w, r) {
		return
	}
	defer s.end()
	if rerr := s.sessions.reserve(s.cfg.Limits.MaxSessions); rerr != nil {
		s.writeRequestError(w, r, rerr)
		return
	}
	created := false
	defer func() {
		if !created {
			s.sessions.unreserve()
		}
	}()
	// Starting an interpreter costs what an execution does: it takes a slot.
	g, err := s.adm.acquire(r.Context(), s.drainCh)
	if err != nil {
		s.admissionFailed(w, r, err)
		return
	}
	ss, err := st.NewSession(r.Context(), req)
	g.Release()
	var fileErr *executor.FileError
	switch {
	case errors.As(err, &fileErr):
		s.writeError(w, r, http.StatusBadRequest, api.ErrCodeBadRequest, fileErr.Error())
		return
	case errors.Is(err, executor.ErrUnavailable):
		s.unavailable(w, r, err)
		return
	case err != nil:
		logr.FromContextOrDiscard(r.Context()).Error(err, "session not started")
		s.writeError(w, r, http.StatusInternalServerError, api.ErrCodeInternal, "starting the session: "+err.Error())
		return
	}
	now := time.Now()
	e := &session{ss: ss, id: req.ID, created: now, lastUsed: now, idle: idle, memoryMB: req.MemoryLimitMB, network: req.Network, owner: owner}
	if !s.sessions.add(e) { // the server shut down meanwhile
		ss.Close()
		s.writeError(w, r, http.StatusServiceUnavailable, api.ErrCodeUnavailable, drainingMessage)
		return
	}
	created = true
	s.m.sessionsCreated.Inc()
	s.m.sessionsOpen.Inc()
	s.startSweeper()
	uid, _, _, _ := unixsocket.PeerCred(r.Context())
	logr.FromContextOrDiscard(r.Context()).Info("session created", "session", e.id, "uid", uid,
		"idleTimeout", idle.String(), "memoryLimitMb", e.memoryMB, "network", e.network, "owned", owner != "")
	writeJSON(w, http.StatusCreated, s.sessions.describe(e))
}

// newSessionRequest checks a session's body against the server's limits.
func newSessionRequest(id string, body api.SessionRequest, lim api.Limits) (executor.SessionRequest, time.Duration, *requestError) {
	idle := seconds(lim.SessionIdleTimeoutSeconds)
	if t := body.IdleTimeoutSeconds; t != nil {
		switch {
		case !(*t > 0):
			return executor.SessionRequest{}, 0, badRequest("idle_timeout_seconds: must be > 0, got %v", *t)
		case *t > lim.MaxSessionIdleTimeoutSeconds:
			return executor.SessionRequest{}, 0, badRequest("idle_timeout_seconds: %v is over the server's maximum of %v", *t, lim.MaxSessionIdleTimeoutSeconds)
		}
		idle = seconds(*t)
	}
	// The rest is checked as an execution's would be.
	ex, rerr := newExecutorRequest(id, api.ExecuteRequest{Code: "-", Env: body.Env, Files: body.Files, MemoryLimitMB: body.MemoryLimitMB, Network: body.Network}, lim)
	if rerr != nil {
		return executor.SessionRequest{}, 0, rerr
	}
	return executor.SessionRequest{ID: id, Env: ex.Env, Files: ex.Files, Network: ex.Network, Limits: ex.Limits,
		MaxCheckpoints: lim.MaxCheckpointsPerSession, CheckpointIdle: seconds(lim.CheckpointIdleTimeoutSeconds), MaxCheckpointBytes: lim.MaxCheckpointBytes}, idle, nil
}

// newSessionID returns a session id: unguessable, so that knowing one is needed to use it.
func newSessionID() string {
	var b [12]byte
	rand.Read(b[:])
	return "s-" + hex.EncodeToString(b[:])
}

// reserve counts a session being created, or says there is no room for it.
func (t *sessionTable) reserve(max int) *requestError {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return &requestError{status: http.StatusServiceUnavailable, code: api.ErrCodeUnavailable, msg: drainingMessage}
	}
	if len(t.open)+t.starting >= max {
		return &requestError{status: http.StatusTooManyRequests, code: api.ErrCodeTooManySessions,
			msg: fmt.Sprintf("too many sessions: %d open (--max-sessions %d); delete one or let one expire", len(t.open)+t.starting, max)}
	}
	t.starting++
	return nil
}

func (t *sessionTable) unreserve() {
	t.mu.Lock()
	t.starting--
	t.mu.Unlock()
}

// add turns a reservation into an open session; false once the server has shut down.
func (t *sessionTable) add(e *session) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.starting--
	t.open[e.id] = e
	return true
}

// notFound is the 404 of an id that is not open, saying why when the session ended lately
// (to a request scoped to an owner, only when the session was that owner's).
func (t *sessionTable) notFound(id string, owner string, scoped bool) *requestError {
	t.mu.Lock()
	ended, ok := t.ended[id]
	t.mu.Unlock()
	msg := fmt.Sprintf("session %q: no such session", id)
	if ok && (!scoped || ended.owner == owner) {
		msg = fmt.Sprintf("session %q has ended (%s)", id, endedMessage(ended.why))
	}
	return &requestError{status: http.StatusNotFound, code: api.ErrCodeSessionNotFound, msg: msg}
}

func endedMessage(why string) string {
	switch why {
	case sessionDeleted:
		return "deleted"
	case sessionIdle:
		return "idle for longer than its idle timeout"
	case sessionLost:
		return "a call did not stop when interrupted and was killed with its session"
	case sessionExited:
		return "its interpreter exited"
	case sessionMemory:
		return "its memory: it passed its memory limit in a call, or held the most memory when the runner's neared its limit (the runner's memory watchdog)"
	case sessionDrain:
		return "the server shut down"
	}
	return why
}

// remove takes a session out of the table, remembering why it ended; false if it was not
// open. The caller closes it.
func (t *sessionTable) remove(e *session, why string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.open[e.id] != e {
		return false
	}
	delete(t.open, e.id)
	if p := t.open[e.parent]; p != nil {
		p.branches = slices.DeleteFunc(p.branches, func(id string) bool { return id == e.id })
	}
	t.ended[e.id] = endedSession{why: why, owner: e.owner}
	t.order = append(t.order, e.id)
	if len(t.order) > endedKept {
		delete(t.ended, t.order[0])
		t.order = t.order[1:]
	}
	return true
}

// endSession ends an open session for why: out of the table, its processes killed, counted
// and logged.
func (s *Server) endSession(e *session, why string) {
	if !s.sessions.remove(e, why) {
		return
	}
	e.ss.Close()
	s.m.sessionsOpen.Dec()
	s.m.sessionsEnded.WithLabelValues(why).Inc()
	s.sessions.mu.Lock()
	executions, lifetime := e.executions, time.Since(e.created)
	s.sessions.mu.Unlock()
	s.log.Info("session ended", "session", e.id, "reason", why, "executions", executions, "lifetimeSeconds", lifetime.Seconds())
}

// lookup returns the open session named by the request's path: to a request scoped to an
// owner, only one of that owner's (another's is not found, as if it did not exist).
func (s *Server) lookup(r *http.Request) (*session, *requestError) {
	owner, scoped, rerr := parseOwner(r)
	if rerr != nil {
		return nil, rerr
	}
	id := r.PathValue("id")
	s.sessions.mu.Lock()
	e, ok := s.sessions.open[id]
	s.sessions.mu.Unlock()
	if !ok || (scoped && e.owner != owner) {
		return nil, s.sessions.notFound(id, owner, scoped)
	}
	return e, nil
}

// handleListSessions serves GET /v1/sessions.
func (s *Server) handleListSessions(w http.ResponseWriter, r *http.Request) {
	owner, scoped, rerr := parseOwner(r)
	if rerr != nil {
		s.writeRequestError(w, r, rerr)
		return
	}
	s.sessions.mu.Lock()
	open := make([]*session, 0, len(s.sessions.open))
	for _, e := range s.sessions.open {
		if !scoped || e.owner == owner {
			open = append(open, e)
		}
	}
	list := api.SessionList{Sessions: make([]api.Session, 0, len(open))}
	for _, e := range open {
		list.Sessions = append(list.Sessions, e.describe(false))
	}
	s.sessions.mu.Unlock()
	sort.Slice(list.Sessions, func(i, j int) bool {
		a, b := list.Sessions[i], list.Sessions[j]
		return a.CreatedAt.Before(b.CreatedAt) || (a.CreatedAt.Equal(b.CreatedAt) && a.ID < b.ID)
	})
	byID := map[string]*session{}
	for _, e := range open {
		byID[e.id] = e
	}
	for i := range list.Sessions { // outside the lock: it reads /proc
		list.Sessions[i].MemoryBytes = byID[list.Sessions[i].ID].ss.Memory()
	}
	writeJSON(w, http.StatusOK, list)
}

// handleGetSession serves GET /v1/sessions/{id}.
func (s *Server) handleGetSession(w http.ResponseWriter, r *http.Request) {
	e, rerr := s.lookup(r)
	if rerr != nil {
		s.writeRequestError(w, r, rerr)
		return
	}
	writeJSON(w, http.StatusOK, s.sessions.describe(e))
}

// handleDeleteSession serves DELETE /v1/sessions/{id}: a call running in it ends with it.
func (s *Server) handleDeleteSession(w http.ResponseWriter, r *http.Request) {
	e, rerr := s.lookup(r)
	if rerr != nil {
		s.writeRequestError(w, r, rerr)
		return
	}
	s.endSession(e, sessionDeleted)
	w.WriteHeader(http.StatusNoContent)
}

// claimSession starts a request that runs in the session of its path — a call, or a listing of
// its variables: the session (its owner's, see lookup), the server not draining, and the
// session claimed (409 session_busy, saying busy, while another runs) and not ended. finish
// gives back all it took (defer it); unclaim ends busy earlier, once: when the result is known,
// before it is written (as the execution slot is given back then). The result is the server's
// from then on, apart from the session, so the session takes its next request — on another
// connection — while a client that does not read this result is still being waited for (at
// most the write timeout). ok false: the request was answered.
func (s *Server) claimSession(w http.ResponseWriter, r *http.Request, busy string) (e *session, unclaim, finish func(), ok bool) {
	e, rerr := s.lookup(r)
	if rerr != nil {
		s.writeRequestError(w, r, rerr)
		return nil, nil, nil, false
	}
	if !s.beginOrRefuse(w, r) {
		return nil, nil, nil, false
	}
	if !s.sessions.claim(e) {
		s.writeError(w, r, http.StatusConflict, api.ErrCodeSessionBusy, fmt.Sprintf("session %q is running a call; %s", e.id, busy))
		s.end()
		return nil, nil, nil, false
	}
	unclaim = sync.OnceFunc(func() { s.sessions.unclaim(e) })
	finish = func() {
		unclaim()
		s.end()
	}
	if e.ss.Ended() {
		s.endSession(e, endedWhy(e.ss))
		s.writeRequestError(w, r, s.sessions.notFound(e.id, "", false)) // it passed lookup
		finish()
		return nil, nil, nil, false
	}
	return e, unclaim, finish, true
}

// claimAndAdmit is claimSession, then an execution slot (admit), for work that continues the
// session's interpreter between calls without being a call: a listing of its variables, a
// checkpoint, a restore (the interpreter and every thread the code left run while it lasts).
// over gives back the slot and the session as soon as the work is done, before the answer is
// written; finish (deferred) gives back the rest. ok false: the request was answered.
func (s *Server) claimAndAdmit(w http.ResponseWriter, r *http.Request, busy string) (e *session, ctx context.Context, over, finish func(), ok bool) {
	e, unclaim, finishClaim, ok := s.claimSession(w, r, busy)
	if !ok {
		return nil, nil, nil, nil, false
	}
	ctx, g, done, ok := s.admit(w, r)
	if !ok {
		finishClaim()
		return nil, nil, nil, nil, false
	}
	over = func() {
		g.resultKnown()
		unclaim()
	}
	return e, ctx, over, func() { done(); finishClaim() }, true
}

// handleSessionExecute serves POST /v1/sessions/{id}/execute: as /v1/execute, in the session.
func (s *Server) handleSessionExecute(w http.ResponseWriter, r *http.Request) {
	begun := time.Now()
	req, stream, ok := s.readExecution(w, r, func(body api.ExecuteRequest) *requestError {
		switch {
		case body.MemoryLimitMB != nil:
			return badRequest("memory_limit_mb: a session's is set when it is created (POST /v1/sessions)")
		case body.Network != nil:
			return badRequest("network: a session's is set when it is created (POST /v1/sessions)")
		}
		return nil
	})
	if !ok {
		return
	}
	read := time.Now()
	e, unclaim, finish, ok := s.claimSession(w, r, "one call at a time")
	if !ok {
		return
	}
	defer finish()
	ctx, g, done, ok := s.admit(w, r)
	if !ok {
		return
	}
	defer done()
	req.Timings = serverStages(begun, read)
	ctx = logr.NewContext(ctx, logr.FromContextOrDiscard(ctx).WithValues("session", e.id))
	run := func(ctx context.Context, req executor.Request, out executor.Output) (api.ExecuteResult, error) {
		res, err := e.ss.Execute(ctx, req, out)
		s.sessions.used(e)
		unclaim()
		if errors.Is(err, executor.ErrSessionEnded) || (err == nil && res.SessionLost) {
			why := endedWhy(e.ss)
			switch {
			case err == nil && res.Reason == api.ReasonMemoryLimit:
				why = sessionMemory
			case res.TimedOut || res.Reason == api.ReasonOutputLimit || res.Reason == api.ReasonSignal && res.Signal == "SIGKILL":
				why = sessionLost
			}
			s.endSession(e, why)
		}
		return res, err
	}
	if stream {
		s.runStreaming(ctx, w, r, req, run, g.resultKnown)
	} else {
		s.runPlain(ctx, w, r, req, run, g.resultKnown)
	}
}

// claim marks a session busy for one call; false if it already is.
func (t *sessionTable) claim(e *session) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e.busy {
		return false
	}
	e.busy = true
	return true
}

func (t *sessionTable) unclaim(e *session) {
	t.mu.Lock()
	e.busy = false
	e.lastUsed = time.Now()
	t.mu.Unlock()
}

// used counts a call of the session.
func (t *sessionTable) used(e *session) {
	t.mu.Lock()
	e.executions++
	e.lastUsed = time.Now()
	t.mu.Unlock()
}

// startSweeper starts, once, the loop that ends idle sessions and those whose interpreter
// ended between calls.
func (s *Server) startSweeper() {
	s.sessions.mu.Lock()
	defer s.sessions.mu.Unlock()
	if s.sessions.sweeping {
		return
	}
	s.sessions.sweeping = true
	go func() {
		tick := time.NewTicker(sweepEvery)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				s.sweep(time.Now())
			case <-s.drainCh:
				return
			}
		}
	}()
}

// sweep ends the sessions idle since before now minus their timeout, and those whose
// processes are gone.
func (s *Server) sweep(now time.Time) {
	type ending struct {
		e   *session
		why string
	}
	var end []ending
	s.sessions.mu.Lock()
	for _, e := range s.sessions.open {
		switch {
		case e.busy:
		case now.Sub(e.lastUsed) >= e.idle:
			end = append(end, ending{e, sessionIdle})
		case e.ss.Ended():
			end = append(end, ending{e, endedWhy(e.ss)})
		}
	}
	s.sessions.mu.Unlock()
	for _, x := range end {
		s.endSession(x.e, x.why)
	}
}

// closeSessions ends every session, for why, and takes no new ones.
func (s *Server) closeSessions(why string) {
	s.sessions.mu.Lock()
	s.sessions.closed = true
	open := make([]*session, 0, len(s.sessions.open))
	for _, e := range s.sessions.open {
		open = append(open, e)
	}
	s.sessions.mu.Unlock()
	for _, e := range open {
		s.endSession(e, why)
	}
}

// variablesTimeout bounds a listing of a session's variables: each variable's methods have 50
// ms in the interpreter (variables.py); code that ignores that is interrupted at this, as a
// call at its time limit, and killed with its session if it does not stop then.
const variablesTimeout = 2 * time.Second

// maxVariablesOutput is what a listing may write: api.MaxVariables of a name, a type and a
// repr of 200 characters each, 4 bytes a character in UTF-8 (the interpreter writes it so),
// 6 for a control character escaped, and the rest.
const maxVariablesOutput = 4 << 20

// handleSessionVariables serves GET /v1/sessions/{id}/variables: the session's globals, listed
// by its interpreter in a call that runs no code of the caller's (executor.Request.Inspect).
// It is one call: 409 session_busy while another runs. It takes an execution slot (it runs for
// milliseconds, at most variablesTimeout, but the threads the code left run while it does) and
// is no call of the session's count.
func (s *Server) handleSessionVariables(w http.ResponseWriter, r *http.Request) {
	limits, rerr := executionLimits(api.ExecuteRequest{}, s.cfg.Limits)
	if rerr != nil {
		s.writeRequestError(w, r, rerr)
		return
	}
	limits.Timeout, limits.MaxOutputBytes = variablesTimeout, maxVariablesOutput
	e, ctx, over, finish, ok := s.claimAndAdmit(w, r, "its variables can be listed once it is over")
	if !ok {
		return
	}
	defer finish()
	res, err := e.ss.Execute(ctx, executor.Request{ID: requestID(r.Context()), Code: "-", Inspect: true, Limits: limits}, nil)
	over()
	if err == nil && res.Encoded != nil {
		// A large result comes from the runner as its body, stdout in it: read it whole (it
		// is at most a listing's size and a little JSON).
		res, err = decodeEncoded(res)
	}
	if errors.Is(err, executor.ErrSessionEnded) {
		s.endSession(e, endedWhy(e.ss))
		s.writeRequestError(w, r, s.sessions.notFound(e.id, "", false)) // the caller passed lookup
		return
	}
	if err == nil && res.SessionLost {
		s.endSession(e, sessionLost)
		s.writeError(w, r, http.StatusInternalServerError, api.ErrCodeInternal,
			fmt.Sprintf("session %q: listing its variables, the code's methods (__repr__, __len__, ...) did not stop at %s: the session was lost", e.id, variablesTimeout))
		return
	}
	if errors.Is(err, executor.ErrUnavailable) {
		s.unavailable(w, r, err)
		return
	}
	if err != nil {
		s.writeError(w, r, http.StatusInternalServerError, api.ErrCodeInternal, "listing the variables: "+err.Error())
		return
	}
	vars, err := parseVariables(res)
	if err != nil {
		logr.FromContextOrDiscard(r.Context()).Info("session variables not listed", "session", e.id, "err", err.Error())
		s.writeError(w, r, http.StatusInternalServerError, api.ErrCodeInternal, fmt.Sprintf("session %q: its variables were not listed: %v", e.id, err))
		return
	}
	writeJSON(w, http.StatusOK, vars)
}

// decodeEncoded is res with its body decoded: its stdout, stderr and exit fields.
func decodeEncoded(res api.ExecuteResult) (api.ExecuteResult, error) {
	defer res.Encoded.Close()
	var full api.ExecuteResult
	if err := json.NewDecoder(io.LimitReader(res.Encoded, 3*maxVariablesOutput)).Decode(&full); err != nil {
		return res, fmt.Errorf("reading the listing's result: %w", err)
	}
	return full, nil
}

// parseVariables reads a listing from the last line of the stdout of the call that made it.
func parseVariables(res api.ExecuteResult) (*api.Variables, error) {
	if res.Reason == api.ReasonTimeout {
		return nil, fmt.Errorf("the code's methods (__repr__, __len__, ...) did not stop within %s; the session is kept", variablesTimeout)
	}
	out := strings.TrimRight(res.Stdout, "\n")
	line := out[strings.LastIndexByte(out, '\n')+1:]
	var v api.Variables
	if res.StdoutTruncated || res.Reason == api.ReasonOutputLimit {
		return nil, fmt.Errorf("the listing passed %d bytes", maxVariablesOutput)
	}
	if res.ExitCode != 0 || json.Unmarshal([]byte(line), &v) != nil || v.Variables == nil {
		return nil, fmt.Errorf("the interpreter gave no listing (exit %d, reason %s): the runner may be older than the server, or the code wrote over it", res.ExitCode, res.Reason)
	}
	return &v, nil
}

// handleSessionFiles serves GET /v1/sessions/{id}/files: the regular files of the session's
// working directory. It takes no execution slot and works while a call runs.
func (s *Server) handleSessionFiles(w http.ResponseWriter, r *http.Request) {
	e, rerr := s.lookup(r)
	if rerr != nil {
		s.writeRequestError(w, r, rerr)
		return
	}
	l, err := e.ss.Files()
	if err != nil { // ErrSessionEnded: closed since the lookup
		s.writeRequestError(w, r, s.sessions.notFound(e.id, "", false)) // the caller passed lookup
		return
	}
	writeJSON(w, http.StatusOK, l)
}

// handleSessionFile serves GET /v1/sessions/{id}/files/{path...}: the bytes of one regular
// file of the session's working directory, of at most max_file_bytes.
func (s *Server) handleSessionFile(w http.ResponseWriter, r *http.Request) {
	p, problem := cleanFilePath(r.PathValue("path"))
	if problem != "" {
		s.writeRequestError(w, r, badRequest("path: %s", problem))
		return
	}
	e, rerr := s.lookup(r)
	if rerr != nil {
		s.writeRequestError(w, r, rerr)
		return
	}
	maxBytes := s.cfg.Limits.MaxFileBytes
	body, err := e.ss.OpenFile(p, maxBytes)
	switch {
	case errors.Is(err, executor.ErrSessionEnded):
		s.writeRequestError(w, r, s.sessions.notFound(e.id, "", false)) // the caller passed lookup
		return
	case errors.Is(err, executor.ErrFileNotFound):
		s.writeError(w, r, http.StatusNotFound, api.ErrCodeFileNotFound,
			fmt.Sprintf("session %q: %q is not a regular file of its working directory (missing, a directory, a symlink or another special file)", e.id, p))
		return
	case errors.Is(err, executor.ErrFileTooLarge):
		s.writeError(w, r, http.StatusRequestEntityTooLarge, api.ErrCodeTooLarge,
			fmt.Sprintf("session %q: %q is larger than max_file_bytes (%d bytes)", e.id, p, maxBytes))
		return
	case errors.Is(err, executor.ErrUnavailable):
		s.unavailable(w, r, err)
		return
	case err != nil:
		s.writeError(w, r, http.StatusInternalServerError, api.ErrCodeInternal, "reading the file: "+err.Error())
		return
	}
	ctype := mime.TypeByExtension(path.Ext(p))
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	// As it comes from the runner: the server holds a buffer of it, not the file.
	defer body.Close()
	s.writeBodyFrom(w, r, http.StatusOK, ctype, body, body.Size())
}

// WarmSessions asks the executor, when it keeps sessions started ahead of time, for one like a
// session created with an empty body, so that creating one costs no fork.
func (s *Server) WarmSessions() {
	w, ok := s.executor().(interface{ WarmSession(executor.SessionRequest) })
	if !ok || s.cfg.Limits.MaxSessions == 0 {
		return
	}
	if req, _, rerr := newSessionRequest("spare", api.SessionRequest{}, s.cfg.Limits); rerr == nil {
		w.WarmSession(req)
	}
}
