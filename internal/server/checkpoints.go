package server

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/go-logr/logr"

	"github.com/pyexec/pyexec/internal/executor"
	"github.com/pyexec/pyexec/pkg/api"
)

// handleCheckpoint serves POST /v1/sessions/{id}/checkpoints: a checkpoint of the session,
// taken between calls (201 with the api.Checkpoint). It takes an execution slot, as a call
// does: the interpreter and the threads the code left run while it forks.
func (s *Server) handleCheckpoint(w http.ResponseWriter, r *http.Request) {
	e, ctx, over, finish, ok := s.claimAndAdmit(w, r, "a checkpoint is taken between calls")
	if !ok {
		return
	}
	defer finish()
	cp, err := e.ss.Checkpoint(ctx)
	over()
	s.m.checkpointOp("checkpoint", err)
	if err != nil {
		s.checkpointFailed(w, r, e, "taking a checkpoint", err)
		return
	}
	logr.FromContextOrDiscard(r.Context()).Info("checkpoint", "session", e.id, "checkpoint", cp.ID, "filesBytes", cp.FilesBytes)
	writeJSON(w, http.StatusCreated, cp)
}

// handleListCheckpoints serves GET /v1/sessions/{id}/checkpoints, also while a call runs.
func (s *Server) handleListCheckpoints(w http.ResponseWriter, r *http.Request) {
	e, rerr := s.lookup(r)
	if rerr != nil {
		s.writeRequestError(w, r, rerr)
		return
	}
	list, err := e.ss.Checkpoints()
	if err != nil {
		s.checkpointFailed(w, r, e, "listing the checkpoints", err)
		return
	}
	writeJSON(w, http.StatusOK, api.Checkpoints{Checkpoints: list})
}

// handleDeleteCheckpoint serves DELETE /v1/sessions/{id}/checkpoints/{cid} (204).
func (s *Server) handleDeleteCheckpoint(w http.ResponseWriter, r *http.Request) {
	e, unclaim, finish, ok := s.claimSession(w, r, "its checkpoints can be deleted once it is over")
	if !ok {
		return
	}
	defer finish()
	err := e.ss.DeleteCheckpoint(r.PathValue("cid"))
	unclaim()
	s.m.checkpointOp("delete", err)
	if err != nil {
		s.checkpointFailed(w, r, e, "deleting the checkpoint", err)
		return
	}
	logr.FromContextOrDiscard(r.Context()).Info("checkpoint deleted", "session", e.id, "checkpoint", r.PathValue("cid"))
	w.WriteHeader(http.StatusNoContent)
}

// handleRestore serves POST /v1/sessions/{id}/restore {"checkpoint": ID}: the session put back
// to the checkpoint (200 with the api.Session). It takes an execution slot, as a call does.
func (s *Server) handleRestore(w http.ResponseWriter, r *http.Request) {
	body, rerr := readJSON[api.RestoreRequest](w, r, s.cfg.Limits.MaxRequestBytes)
	if rerr == nil && body.Checkpoint == "" {
		rerr = badRequest("checkpoint: required (GET /v1/sessions/{id}/checkpoints lists them)")
	}
	if rerr != nil {
		s.writeRequestError(w, r, rerr)
		return
	}
	e, ctx, over, finish, ok := s.claimAndAdmit(w, r, "it can be restored once it is over")
	if !ok {
		return
	}
	defer finish()
	err := e.ss.Restore(ctx, body.Checkpoint) // no call: the session's executions stay as they were
	over()
	s.m.checkpointOp("restore", err)
	if err != nil {
		s.checkpointFailed(w, r, e, "restoring "+body.Checkpoint, err)
		return
	}
	logr.FromContextOrDiscard(r.Context()).Info("restored", "session", e.id, "checkpoint", body.Checkpoint)
	writeJSON(w, http.StatusOK, s.sessions.describe(e))
}

// checkpointFailed answers a failure of a checkpoint's request on session e.
func (s *Server) checkpointFailed(w http.ResponseWriter, r *http.Request, e *session, doing string, err error) {
	if rerr := checkpointError(err); rerr != nil {
		s.writeRequestError(w, r, rerr)
		return
	}
	switch {
	case errors.Is(err, executor.ErrSessionEnded):
		s.endSession(e, endedWhy(e.ss))
		s.writeRequestError(w, r, s.sessions.notFound(e.id, "", false)) // the caller passed lookup
	case errors.Is(err, executor.ErrUnavailable):
		s.unavailable(w, r, err)
	default:
		s.writeError(w, r, http.StatusInternalServerError, api.ErrCodeInternal, fmt.Sprintf("session %q: %s: %v", e.id, doing, err))
	}
}

// checkpointError is the API's error for an executor's error about checkpoints, or a busy
// session; nil for any other.
func checkpointError(err error) *requestError {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, executor.ErrCheckpointNotFound):
		return &requestError{status: http.StatusNotFound, code: api.ErrCodeCheckpointNotFound, msg: err.Error()}
	case errors.Is(err, executor.ErrTooManyCheckpoints):
		return &requestError{status: http.StatusTooManyRequests, code: api.ErrCodeTooManyCheckpoints, msg: err.Error()}
	case errors.Is(err, executor.ErrCheckpointTooLarge):
		return &requestError{status: http.StatusRequestEntityTooLarge, code: api.ErrCodeCheckpointTooLarge, msg: err.Error()}
	case errors.Is(err, executor.ErrSessionBusy):
		return &requestError{status: http.StatusConflict, code: api.ErrCodeSessionBusy, msg: err.Error()}
	}
	return nil
}
