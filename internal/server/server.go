// Package server is pyexec's socket HTTP API: routes, request checks and limits, the
// admission queue, peer credentials, logging, metrics, the probe endpoints and draining.
package server

import (
	"github.com/pyexec/pyexec/internal/unixsocket"

	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pyexec/pyexec/internal/confine"
	"github.com/pyexec/pyexec/internal/executor"
	"github.com/pyexec/pyexec/internal/packages"
	"github.com/pyexec/pyexec/internal/settings"
	"github.com/pyexec/pyexec/pkg/api"
)

// headerRequestID carries the request id in every response.
const headerRequestID = "X-Request-Id"

// notReadyMessage answers every request before SetReady.
const notReadyMessage = "not ready: preflight has not confirmed the interpreter"

// noExecutorMessage answers every request of a server made ready without an executor.
const noExecutorMessage = "not ready: no executor"

// drainingMessage answers every request after Drain.
const drainingMessage = "draining: the server is shutting down"

// Config configures a Server.
type Config struct {
	// Limits are the defaults of every execution and the maxima a request may raise them
	// to, plus the request size cap and the admission queue's sizes.
	Limits api.Limits
	// AllowUIDs are the peer uids allowed to use the socket; empty allows any peer.
	AllowUIDs []int
	// AllowOwnUID lets a peer of the server's own uid call whatever AllowUIDs says: pyexec's
	// own commands in the server's container (`kubectl pyexec run` execs `pyexec run` there).
	// Set it only where code runs as another uid.
	AllowOwnUID bool
	// LogCode adds each execution's code to its log line.
	LogCode bool
	// Version is reported by GET /v1/info.
	Version string
	// Mode is the executor mode in use ("spawn" or "fork"), reported by GET /v1/info.
	Mode string
	// WorkDir is the executor's work directory. When set, /readyz checks that it exists and
	// re-creates it when it was removed.
	WorkDir string
	// WorkDirGID is the work dir's group, the runner's (0: the server's own).
	WorkDirGID int
	// MCP serves the Model Context Protocol at /mcp (see internal/mcpserver); MCPInstalls offers
	// its install_packages tool (run-time installs are allowed).
	MCP, MCPInstalls bool
	// MCPStructuredResult gives run_python the API's result as structured content
	// (mcpserver.Options.StructuredResult, deprecated).
	MCPStructuredResult bool
}

// Validate checks the limits with the rules of `pyexec serve`, which are its settings'
// (internal/settings; the errors name serve's flags): a config serve accepts passes, and
// runServe calls Validate before New. New assumes a valid Config. A memory limit of 0 is no
// limit, a maximum of 0 no maximum, max processes 0 no limit, a write timeout of 0 the default.
// The session idle timeouts are only checked when sessions are on (MaxSessions > 0).
func (c Config) Validate() error {
	l := c.Limits
	values := map[string]any{
		"timeout": seconds(l.TimeoutSeconds), "max-timeout": seconds(l.MaxTimeoutSeconds),
		"memory-limit-mb": l.MemoryLimitMB, "max-memory-limit-mb": l.MaxMemoryLimitMB,
		"max-output-bytes": l.MaxOutputBytes, "max-processes": l.MaxProcesses, "max-file-bytes": l.MaxFileBytes,
		"max-files-out": l.MaxFilesOut, "max-files-out-bytes": l.MaxFilesOutBytes, "max-request-bytes": l.MaxRequestBytes,
		"max-concurrent": l.MaxConcurrent, "queue": l.Queue,
		"max-connections": l.MaxConnections, "max-connections-per-uid": l.MaxConnectionsPerUID,
		"max-sessions": l.MaxSessions,
	}
	if l.WriteTimeoutSeconds != 0 {
		values["write-timeout"] = seconds(l.WriteTimeoutSeconds)
	}
	if l.MaxSessions > 0 {
		values["session-idle-timeout"] = seconds(l.SessionIdleTimeoutSeconds)
		values["max-session-idle-timeout"] = seconds(l.MaxSessionIdleTimeoutSeconds)
		values["max-checkpoints-per-session"] = l.MaxCheckpointsPerSession
		values["max-checkpoint-bytes"] = l.MaxCheckpointBytes
		if l.MaxCheckpointsPerSession > 0 {
			values["checkpoint-idle-timeout"] = seconds(l.CheckpointIdleTimeoutSeconds)
		}
	}
	errs := settings.Validate(values)
	for _, uid := range c.AllowUIDs {
		if uid < 0 {
			errs = append(errs, fmt.Errorf("--allow-uids: %d is not a uid", uid))
		}
	}
	return errors.Join(errs...)
}

// Server serves the socket API. Create it with New.
type Server struct {
	cfg    Config
	log    logr.Logger
	m      *metrics
	adm    *admission
	router *router // dispatches by the route table (routes)
	// sessions are the open sessions.
	sessions *sessionTable

	checkMu sync.Mutex // held while a readiness check runs

	mu       sync.Mutex
	exec     executor.Executor                  // nil until New or SetExecutor gives one
	pkgs     PackageManager                     // nil until SetPackages
	policy   packages.Policy                    // run-time install policy
	info     *api.Info                          // nil until SetInfo or SetReady
	ready    bool                               // SetReady was called
	draining bool                               // Drain was called
	drainCh  chan struct{}                      // closed by Drain
	checks   []*readyCheck                      // run by each readiness check (/readyz)
	failing  bool                               // the last readiness check failed
	active   int                                // execute requests admitted or waiting
	idle     chan struct{}                      // closed when active drops to 0
	aborted  bool                               // Abort was called
	nextRun  uint64                             // key of the next entry of running
	running  map[uint64]context.CancelCauseFunc // cancels the running executions
}

// New returns a Server that runs code with exec, logs to log and registers its metrics on
// reg (nil registers nothing). It serves 503 until SetReady. exec may be nil when the
// command sets it later with SetExecutor.
func New(cfg Config, exec executor.Executor, log logr.Logger, reg prometheus.Registerer) *Server {
	m := newMetrics(reg)
	s := &Server{
		cfg:      cfg,
		exec:     exec,
		log:      log,
		m:        m,
		adm:      newAdmission(cfg.Limits.MaxConcurrent, cfg.Limits.Queue, m),
		drainCh:  make(chan struct{}),
		running:  map[uint64]context.CancelCauseFunc{},
		sessions: newSessionTable(),
	}
	if cfg.WorkDir != "" {
		s.addReadyCheck("work dir", s.checkWorkDir)
	}
	s.router = newRouter(s.routes())
	return s
}

// SetExecutor sets the executor, for a command that creates the Server (to listen and serve
// probes early) before preflight tells it how to run Python. Call it before SetReady.
func (s *Server) SetExecutor(exec executor.Executor) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.exec = exec
	s.updateReadyGauge()
}

// SetInfo records what preflight found without making the server ready. Until SetReady,
// requests still get 503, and the message adds info's preflight problems: it says why.
func (s *Server) SetInfo(info api.Info) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.info = &info
}

// python is the interpreter the preflight found, nil before it has.
func (s *Server) python() *api.Python {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.info == nil {
		return nil
	}
	return s.info.Python
}

// SetReady marks the server ready: preflight confirmed the interpreter. info is served by
// GET /v1/info, with the server's limits, mode and readiness filled in.
func (s *Server) SetReady(info api.Info) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.info = &info
	s.ready = true
	s.updateReadyGauge()
}

// updateReadyGauge sets pyexec_ready from the state; the caller holds mu.
func (s *Server) updateReadyGauge() {
	if s.ready && s.exec != nil && !s.draining && !s.failing {
		s.m.ready.Set(1)
	} else {
		s.m.ready.Set(0)
	}
}

// state says whether the server takes requests, and why not.
func (s *Server) state() (ok bool, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.draining:
		return false, drainingMessage
	case !s.ready:
		if s.info != nil && len(s.info.Preflight.Problems) > 0 {
			return false, notReadyMessage + ": " + strings.Join(s.info.Preflight.Problems, "; ")
		}
		return false, notReadyMessage
	case s.exec == nil:
		return false, noExecutorMessage
	}
	return true, ""
}

// executor returns the executor to run with.
func (s *Server) executor() executor.Executor {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.exec
}

// Handler returns the handler of the socket API.
func (s *Server) Handler() http.Handler { return s }

// ServeHTTP does the checks every request needs once, then dispatches by route: it assigns
// the request id, checks the peer uid, answers 503 before SetReady and while draining, and
// turns a panic into a 500.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := newRequestID()
	w.Header().Set(headerRequestID, id)
	log := s.log.WithValues("id", id)
	ctx := logr.NewContext(context.WithValue(r.Context(), requestIDKey{}, id), log)
	r = r.WithContext(ctx)
	rw := &responseWriter{ResponseWriter: w}
	defer s.recoverPanic(rw, r, log)

	if !s.peerAllowed(rw, r, log) {
		return
	}
	if ok, reason := s.state(); !ok {
		s.writeError(rw, r, http.StatusServiceUnavailable, api.ErrCodeUnavailable, reason)
		return
	}
	s.route(rw, r)
}

// peerAllowed checks the peer uid against AllowUIDs and answers 403 when refused.
func (s *Server) peerAllowed(w http.ResponseWriter, r *http.Request, log logr.Logger) bool {
	if len(s.cfg.AllowUIDs) == 0 {
		return true
	}
	uid, _, pid, ok := unixsocket.PeerCred(r.Context())
	if ok && (slices.Contains(s.cfg.AllowUIDs, uid) || (s.cfg.AllowOwnUID && uid == os.Geteuid())) {
		return true
	}
	log.Info("peer refused", "uid", uid, "pid", pid, "allowedUids", s.cfg.AllowUIDs)
	msg := fmt.Sprintf("peer uid %d is not allowed to use this socket", uid)
	if !ok {
		msg = "peer credentials unknown: only allowed uids may use this socket"
	}
	s.writeError(w, r, http.StatusForbidden, api.ErrCodeForbidden, msg)
	return false
}

// recoverPanic turns a panic of a handler into a 500 with the request id, and logs it with
// its stack. When the response has already begun (a stream), the connection is aborted
// instead: a cut stream without an exit event tells the client that the execution failed.
func (s *Server) recoverPanic(w *responseWriter, r *http.Request, log logr.Logger) {
	v := recover()
	if v == nil {
		return
	}
	if v == http.ErrAbortHandler {
		panic(v)
	}
	log.Error(fmt.Errorf("panic: %v", v), "panic serving request",
		"method", r.Method, "path", r.URL.Path, "stack", string(debug.Stack()))
	if w.started() {
		panic(http.ErrAbortHandler)
	}
	s.writeError(w, r, http.StatusInternalServerError, api.ErrCodeInternal, "internal error; see the server log for this request id")
}

// mode is the executor mode in use now: the executor's own answer when it has one (the fork
// executor serves in spawn mode while its zygote is down), else the configured one.
func (s *Server) mode() string {
	if m, ok := s.executor().(interface{ Mode() string }); ok {
		return m.Mode()
	}
	return s.cfg.Mode
}

// handleInfo serves GET /v1/info.
// Info is what SetInfo or SetReady last set (the zero Info before).
func (s *Server) Info() api.Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.info == nil {
		return api.Info{}
	}
	return *s.info
}

func (s *Server) handleInfo(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	info := *s.info
	s.mu.Unlock()
	if s.cfg.Version != "" {
		info.Version = s.cfg.Version
	}
	info.Mode = s.mode()
	info.Limits = s.cfg.Limits
	info.Limits.WriteTimeoutSeconds = s.writeTimeout().Seconds() // the default where none was set
	if info.Limits.MaxProcesses > 0 {
		info.Limits.MaxProcessesScope = api.ProcessesPerUID
		if info.Isolation.Active(confine.LayerProcessBudget) {
			info.Limits.MaxProcessesScope = api.ProcessesPerExecution
		}
	}
	info.Ready = true // only a ready server gets here
	writeJSON(w, http.StatusOK, info)
}

// requestIDKey is the context key of the request id.
type requestIDKey struct{}

// requestID returns the request id that ServeHTTP put into ctx.
func requestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// newRequestID returns a short random hex id.
func newRequestID() string {
	var b [8]byte
	rand.Read(b[:]) // never fails (crypto/rand panics rather than return an error)
	return hex.EncodeToString(b[:])
}

// writeError answers with the API's error shape and counts the rejection.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	s.m.rejected.WithLabelValues(code).Inc()
	writeJSON(w, status, api.ErrorResponse{Error: api.ErrorBody{
		Code: code, Message: msg, RequestID: requestID(r.Context()),
	}})
}

// DefaultWriteTimeout is the write timeout of a server whose Limits set none (see writeBody).
const DefaultWriteTimeout = 30 * time.Second

// writeTimeout is how long a client has to take a response body that carries a result or a
// file: Limits.WriteTimeoutSeconds, else DefaultWriteTimeout.
func (s *Server) writeTimeout() time.Duration {
	if t := s.cfg.Limits.WriteTimeoutSeconds; t > 0 {
		return seconds(t)
	}
	return DefaultWriteTimeout
}

// writeBody answers with body, of a result or a file, which the client must take within the
// write timeout. Status and headers go first, with the body's Content-Length; a client that
// does not read (or reads too slowly) is cut off: the write fails, the connection is closed,
// and the client sees the body end short of its Content-Length. Whatever the response held
// (its slot of results waiting, the body) is freed as the handler returns.
func (s *Server) writeBody(w http.ResponseWriter, r *http.Request, status int, contentType string, body []byte) {
	s.writeBodyFrom(w, r, status, contentType, bytes.NewReader(body), int64(len(body)))
}

// writeBodyFrom is writeBody of a body of size bytes that body yields as it is read (a result
// streamed from the runner): the status and headers go first, so a body that fails in the
// middle — its client gone or too slow, the runner gone — ends short of its Content-Length,
// and the connection is closed.
func (s *Server) writeBodyFrom(w http.ResponseWriter, r *http.Request, status int, contentType string, body io.Reader, size int64) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Now().Add(s.writeTimeout())) // not supported in process (MCP): nothing to cut off
	w.WriteHeader(status)
	n, err := io.Copy(w, body)
	if err == nil && n < size {
		err = io.ErrUnexpectedEOF
	}
	if err == nil {
		err = rc.Flush()
		if errors.Is(err, http.ErrNotSupported) {
			err = nil
		}
	}
	if err != nil {
		s.cutOff(r, size, err)
	}
}

// cutOff logs a response that did not reach its client: it went away, or did not take the
// body within the write timeout.
func (s *Server) cutOff(r *http.Request, size int64, err error) {
	logr.FromContextOrDiscard(r.Context()).Info("response cut off", "method", r.Method, "path", r.URL.Path,
		"bytes", size, "writeTimeout", s.writeTimeout().String(), "reason", err.Error())
}

// encodeJSON encodes v as writeJSON would, into a buffer of sizeHint bytes to start with (the
// size v is expected to take: a buffer that grows by doubling would hold up to twice the body
// while it waits for its client).
func encodeJSON(v any, sizeHint int) []byte {
	var b bytes.Buffer
	b.Grow(sizeHint)
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(fmt.Sprintf("encode %T: %v", v, err)) // the API's types always encode
	}
	return b.Bytes()
}

// writeJSON answers with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	// An error here means the client went away; there is nobody left to tell.
	_ = enc.Encode(v)
}

// responseWriter remembers whether the response has begun.
type responseWriter struct {
	http.ResponseWriter
	wrote atomic.Bool
}

// WriteHeader sends the status line and headers.
func (w *responseWriter) WriteHeader(status int) {
	w.wrote.Store(true)
	w.ResponseWriter.WriteHeader(status)
}

// Write writes body bytes.
func (w *responseWriter) Write(b []byte) (int, error) {
	w.wrote.Store(true)
	return w.ResponseWriter.Write(b)
}

// Unwrap gives http.ResponseController the underlying writer (for Flush).
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// started says whether the status line has been sent.
func (w *responseWriter) started() bool { return w.wrote.Load() }
