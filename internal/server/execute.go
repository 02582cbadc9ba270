package server

import (
	"slices"

	"github.com/pyexec/pyexec/internal/unixsocket"

	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/go-logr/logr"

	"github.com/pyexec/pyexec/internal/executor"
	"github.com/pyexec/pyexec/pkg/api"
)

// handleExecute serves POST /v1/execute: check and map the request, wait for a slot, run.
func (s *Server) handleExecute(w http.ResponseWriter, r *http.Request) {
	begun := time.Now()
	req, stream, ok := s.readExecution(w, r, func(body api.ExecuteRequest) *requestError {
		if body.Checkpoint {
			return badRequest("checkpoint: only a session's call takes one (POST /v1/sessions/{id}/execute)")
		}
		return nil
	})
	if !ok || !s.beginOrRefuse(w, r) {
		return
	}
	read := time.Now()
	defer s.end()
	ctx, g, done, ok := s.admit(w, r)
	if !ok {
		return
	}
	defer done()
	req.Timings = serverStages(begun, read)
	if stream {
		s.runStreaming(ctx, w, r, req, s.executor().Execute, g.resultKnown)
	} else {
		s.runPlain(ctx, w, r, req, s.executor().Execute, g.resultKnown)
	}
}

// serverStages are the server's stages of an execution: parse, from when its handler began to
// when the request was read and checked; queue, from then until now, when it has a slot.
func serverStages(begun, read time.Time) map[string]float64 {
	return map[string]float64{api.StageParse: ms(read.Sub(begun)), api.StageQueue: ms(time.Since(read))}
}

// ms is d in milliseconds, to the microsecond.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// runFunc runs one execution: the executor's Execute, or a session's.
type runFunc func(ctx context.Context, req executor.Request, out executor.Output) (api.ExecuteResult, error)

// readExecution reads what every execute endpoint takes — ?stream, the body and the
// execution it asks for — refusing what check refuses; it answers the error itself.
func (s *Server) readExecution(w http.ResponseWriter, r *http.Request, check func(api.ExecuteRequest) *requestError) (req executor.Request, stream, ok bool) {
	stream, rerr := parseStream(r)
	if rerr != nil {
		s.writeRequestError(w, r, rerr)
		return req, false, false
	}
	body, rerr := readExecuteRequest(w, r, s.cfg.Limits.MaxRequestBytes)
	if rerr == nil && check != nil {
		rerr = check(body)
	}
	if rerr == nil {
		req, rerr = newExecutorRequest(requestID(r.Context()), body, s.cfg.Limits)
		req.Installs = s.cfg.MCPInstalls // for the result's hints
	}
	if rerr != nil {
		s.writeRequestError(w, r, rerr)
		return req, false, false
	}
	return req, stream, true
}

// admit waits for an execution slot and tracks the execution (Abort cancels ctx), or answers
// why no slot came. The caller calls g.resultKnown as soon as the execution is over, which
// frees its slot, and done once its response is written (or cut off).
func (s *Server) admit(w http.ResponseWriter, r *http.Request) (ctx context.Context, g *grant, done func(), ok bool) {
	g, err := s.adm.acquire(r.Context(), s.drainCh)
	if err != nil {
		s.admissionFailed(w, r, err)
		return nil, nil, nil, false
	}
	ctx, untrack := s.track(r.Context())
	return ctx, g, func() { untrack(); g.Release() }, true
}

// beginOrRefuse counts the request as work (see begin), or answers 503 while draining.
func (s *Server) beginOrRefuse(w http.ResponseWriter, r *http.Request) bool {
	if !s.begin() {
		s.writeError(w, r, http.StatusServiceUnavailable, api.ErrCodeUnavailable, drainingMessage)
		return false
	}
	return true
}

// writeRequestError answers with a requestError.
func (s *Server) writeRequestError(w http.ResponseWriter, r *http.Request, rerr *requestError) {
	s.writeError(w, r, rerr.status, rerr.code, rerr.msg)
}

// admissionFailed answers a request that got no execution slot.
func (s *Server) admissionFailed(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, errQueueFull):
		w.Header().Set("Retry-After", "1")
		l := s.cfg.Limits
		s.writeError(w, r, http.StatusTooManyRequests, api.ErrCodeQueueFull,
			fmt.Sprintf("queue full: %d executions running and %d waiting; retry later", max(l.MaxConcurrent, 1), max(l.Queue, 0)))
	case errors.Is(err, errDraining):
		s.writeError(w, r, http.StatusServiceUnavailable, api.ErrCodeUnavailable, drainingMessage)
	default:
		// The client went away while queued: nothing ran, and nobody reads an answer.
		logr.FromContextOrDiscard(r.Context()).Info("request abandoned while queued", "reason", err.Error())
	}
}

// runPlain runs req and answers with the whole result. It calls known when the result is
// known, before it is written: the execution's slot is free from then on.
func (s *Server) runPlain(ctx context.Context, w http.ResponseWriter, r *http.Request, req executor.Request, run runFunc, known func()) {
	start := time.Now()
	res, err := run(ctx, req, nil)
	if res.Encoded != nil {
		defer res.Encoded.Close()
	}
	known()
	s.recordExecution(ctx, req, res, err, time.Since(start))
	var fileErr *executor.FileError
	switch {
	case errors.As(err, &fileErr): // an input file that cannot be placed: the request's fault
		s.writeError(w, r, http.StatusBadRequest, api.ErrCodeBadRequest, fileErr.Error())
		return
	case errors.Is(err, executor.ErrSessionEnded):
		s.writeRequestError(w, r, s.sessions.notFound(r.PathValue("id"), "", false)) // it passed lookup
		return
	case checkpointError(err) != nil: // the checkpoint of a call's "checkpoint": true
		s.writeRequestError(w, r, checkpointError(err))
		return
	case errors.Is(err, executor.ErrUnavailable):
		s.unavailable(w, r, err)
		return
	case err != nil:
		s.writeError(w, r, http.StatusInternalServerError, api.ErrCodeInternal, "execution failed: "+err.Error())
		return
	}
	if enc := res.Encoded; enc != nil {
		// The runner's encoding, as it is: a large one streams from the runner as the client
		// reads it, so the server never holds it whole.
		s.writeBodyFrom(w, r, http.StatusOK, "application/json", enc, enc.Size())
		return
	}
	s.writeBody(w, r, http.StatusOK, "application/json", encodeJSON(finalResult(res, req.ID), executor.ResultSize(res)))
}

// runStreaming runs req and answers with newline-delimited JSON events: output as the
// executor hands it over, then one exit event with the whole result.
//
// The 200 and its headers are sent before the code runs, so a failure of the executor can
// no longer change the status, and an exit event cannot be made up. The stream then ends
// with one event {"type":"error","error":{"code":"internal","message":...,"request_id":...}}
// instead of the exit event; clients treat a stream without an exit event as failed.
//
// known is called when the result is known, before the last event is written: the
// execution's slot is free from then on. The last event has the write timeout (see
// writeBody); a client that does not take it in time is cut off.
func (s *Server) runStreaming(ctx context.Context, w http.ResponseWriter, r *http.Request, req executor.Request, run runFunc, known func()) {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	sw := newStreamWriter(w)
	defer sw.stop() // even on a panic: a late Write of the executor must not touch w
	sw.flush()

	start := time.Now()
	res, err := run(ctx, req, sw)
	if res.Encoded != nil {
		defer res.Encoded.Close()
	}
	known()
	s.recordExecution(ctx, req, res, err, time.Since(start))
	var last api.StreamEvent
	if err != nil {
		code := api.ErrCodeInternal
		if errors.Is(err, executor.ErrUnavailable) {
			code = api.ErrCodeUnavailable
		}
		last = api.StreamEvent{Type: api.EventError, Error: &api.ErrorBody{
			Code: code, Message: "execution failed: " + err.Error(), RequestID: req.ID,
		}}
		s.m.rejected.WithLabelValues(code).Inc()
	} else {
		res = finalResult(res, req.ID)
		last = api.StreamEvent{Type: api.EventExit, ExecuteResult: &res}
	}
	var event io.Reader
	var size int64
	if err == nil && res.Encoded != nil {
		// The runner's encoding of the result, as it is (streamed when large), after the
		// event's type: {"type":"exit",...}.
		event, size, err = exitEvent(res.Encoded)
		if err != nil {
			last = api.StreamEvent{Type: api.EventError, Error: &api.ErrorBody{
				Code: api.ErrCodeInternal, Message: "execution failed: " + err.Error(), RequestID: req.ID,
			}}
		}
	}
	if event == nil {
		b := encodeJSON(last, executor.ResultSize(res))
		event, size = bytes.NewReader(b), int64(len(b))
	}
	if err := sw.finish(event, size, s.writeTimeout()); err != nil {
		s.cutOff(r, size, err)
		// The connection is closed, not the stream ended: a cut exit event followed by the
		// stream's clean end could pass for a whole one.
		panic(http.ErrAbortHandler)
	}
}

// exitEvent is a stream's exit event of a result the runner encoded: {"type":"exit", and the
// body after its opening brace.
func exitEvent(enc api.EncodedResult) (io.Reader, int64, error) {
	var brace [1]byte
	if _, err := io.ReadFull(enc, brace[:]); err != nil {
		return nil, 0, err
	}
	if brace[0] != '{' {
		return nil, 0, errors.New("the runner's result is not a JSON object")
	}
	const head = `{"type":"exit",`
	return io.MultiReader(strings.NewReader(head), enc), int64(len(head)) + enc.Size() - 1, nil
}

// unavailable answers 503 with Retry-After: nothing can run code now (the runner is starting or
// restarting), and the request may be sent again.
func (s *Server) unavailable(w http.ResponseWriter, r *http.Request, err error) {
	w.Header().Set("Retry-After", "1")
	s.writeError(w, r, http.StatusServiceUnavailable, api.ErrCodeUnavailable, err.Error())
}

// finalResult fills in what the response must carry whatever the executor left out: the
// request id, and files as a list (never null).
func finalResult(res api.ExecuteResult, id string) api.ExecuteResult {
	res.ID = id
	if res.Files == nil {
		res.Files = []api.OutputFile{}
	}
	return res
}

// recordExecution writes the one log line of an execution and updates the metrics.
func (s *Server) recordExecution(ctx context.Context, req executor.Request, res api.ExecuteResult, err error, elapsed time.Duration) {
	log := logr.FromContextOrDiscard(ctx)    // carries the request id
	uid, _, _, _ := unixsocket.PeerCred(ctx) // -1 when unknown
	s.m.duration.Observe(elapsed.Seconds())
	for stage, v := range res.TimingsMS {
		if slices.Contains(api.Stages, stage) { // a label per known stage, never more
			s.m.stages.WithLabelValues(stage).Observe(v / 1000)
		}
	}
	kv := []any{"uid", uid, "durationMs", ms(elapsed)}
	if s.cfg.LogCode {
		kv = append(kv, "code", req.Code)
	}
	if err != nil {
		s.m.executions.WithLabelValues(reasonError).Inc()
		log.Error(err, "execution failed", kv...)
		return
	}
	s.m.executions.WithLabelValues(res.Reason).Inc()
	stdoutBytes, stderrBytes := len(res.Stdout), len(res.Stderr)
	if o, ok := res.Encoded.(interface{ OutputBytes() (int, int) }); ok { // they are in the body
		stdoutBytes, stderrBytes = o.OutputBytes()
	}
	kv = append(kv,
		"exitCode", res.ExitCode,
		"reason", res.Reason,
		"signal", res.Signal,
		"stdoutBytes", stdoutBytes,
		"stderrBytes", stderrBytes,
		"stdoutTruncated", res.StdoutTruncated,
		"stderrTruncated", res.StderrTruncated,
		"files", len(res.Files),
		"outputs", len(res.Outputs),
	)
	log.Info("execution finished", kv...)
}
