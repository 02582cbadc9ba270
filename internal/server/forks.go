package server

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-logr/logr"

	"github.com/pyexec/pyexec/internal/executor"
	"github.com/pyexec/pyexec/pkg/api"
)

// handleFork serves POST /v1/sessions/{id}/fork: the session forked between calls into new
// sessions (branches) with its globals, modules, environment, limits and a copy of its files,
// each from then on a session of its own: 201 with the branch (api.Session), or, with a body
// {"count": N} (N > 0), with N of them ({"sessions": [...]}). The branches count against
// --max-sessions, have the session's owner and idle timeout, and name it as their parent. It
// takes an execution slot, as a call does.
func (s *Server) handleFork(w http.ResponseWriter, r *http.Request) {
	count, list := 1, false
	if r.ContentLength != 0 || r.Header.Get("Content-Type") != "" {
		body, rerr := readJSON[api.ForkRequest](w, r, s.cfg.Limits.MaxRequestBytes)
		if rerr == nil && (body.Count < 0 || body.Count > s.cfg.Limits.MaxSessions) {
			rerr = badRequest("count: between 1 and %d (--max-sessions), got %d", s.cfg.Limits.MaxSessions, body.Count)
		}
		if rerr != nil {
			s.writeRequestError(w, r, rerr)
			return
		}
		if body.Count > 0 {
			count, list = body.Count, true
		}
	}
	e, ctx, over, finish, ok := s.claimAndAdmit(w, r, "it can be forked once it is over")
	if !ok {
		return
	}
	defer finish()
	reserved := 0
	defer func() {
		for ; reserved > 0; reserved-- {
			s.sessions.unreserve()
		}
	}()
	for range count {
		if rerr := s.sessions.reserve(s.cfg.Limits.MaxSessions); rerr != nil {
			over()
			s.m.fork(rerr.code)
			if rerr.code == api.ErrCodeTooManySessions {
				rerr.msg = fmt.Sprintf("%s (a fork of %d asks for %d more)", rerr.msg, count, count)
			}
			s.writeRequestError(w, r, rerr)
			return
		}
		reserved++
	}
	ids := make([]string, count)
	for i := range ids {
		ids[i] = newSessionID()
	}
	began := time.Now()
	bs, err := e.ss.Fork(ctx, ids)
	over()
	if err != nil {
		s.forkFailed(w, r, e, err)
		return
	}
	now := time.Now()
	out := make([]api.Session, 0, count)
	for i, b := range bs {
		child := &session{ss: b, id: ids[i], created: now, lastUsed: now, idle: e.idle, memoryMB: e.memoryMB, network: e.network,
			owner: e.owner, parent: e.id}
		if !s.sessions.add(child) { // the server shut down meanwhile
			for _, b := range bs[i:] {
				b.Close()
			}
			s.writeError(w, r, http.StatusServiceUnavailable, api.ErrCodeUnavailable, drainingMessage)
			return
		}
		reserved--
		s.m.sessionsCreated.Inc()
		s.m.sessionsOpen.Inc()
		s.sessions.mu.Lock()
		e.branches = append(e.branches, child.id)
		s.sessions.mu.Unlock()
		out = append(out, s.sessions.describe(child))
	}
	s.m.fork("ok")
	logr.FromContextOrDiscard(r.Context()).Info("forked", "session", e.id, "branches", ids, "ms", float64(time.Since(began).Microseconds())/1000)
	if list {
		writeJSON(w, http.StatusCreated, api.SessionList{Sessions: out})
		return
	}
	writeJSON(w, http.StatusCreated, out[0])
}

// forkFailed answers a fork of session e that failed with err.
func (s *Server) forkFailed(w http.ResponseWriter, r *http.Request, e *session, err error) {
	rerr := forkError(err)
	if rerr != nil {
		s.m.fork(rerr.code)
		s.writeRequestError(w, r, rerr)
		return
	}
	s.m.fork("error")
	s.checkpointFailed(w, r, e, "forking", err)
}

// forkError is the API's error for an executor's error of a fork; nil for any other.
func forkError(err error) *requestError {
	switch {
	case errors.Is(err, executor.ErrNotForkable):
		return &requestError{status: http.StatusConflict, code: api.ErrCodeNotForkable, msg: err.Error()}
	case errors.Is(err, executor.ErrForkTooLarge):
		return &requestError{status: http.StatusRequestEntityTooLarge, code: api.ErrCodeForkTooLarge, msg: err.Error()}
	case errors.Is(err, executor.ErrTooManyForks):
		return &requestError{status: http.StatusConflict, code: api.ErrCodeTooManyForks, msg: err.Error()}
	}
	return checkpointError(err) // session_busy
}
