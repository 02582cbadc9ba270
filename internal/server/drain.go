package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// abortGrace bounds the last phase of Shutdown: after Abort, aborted executions get this long
// to be killed and answered before the HTTP servers are closed hard. A pod's
// terminationGracePeriodSeconds should exceed the drain timeout plus abortGrace.
const abortGrace = 5 * time.Second

// errAborted is the cause of the context of an execution that Abort cancelled.
var errAborted = errors.New("server shutting down: execution aborted")

// begin counts an execute request as active work, unless the server is draining.
func (s *Server) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	if s.active == 0 {
		s.idle = make(chan struct{})
	}
	s.active++
	return true
}

// end ends what begin counted.
func (s *Server) end() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.active--
	if s.active == 0 {
		close(s.idle)
	}
}

// track returns the context of one running execution, which Abort cancels, and the func
// that forgets it when the execution is over.
func (s *Server) track(parent context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(parent)
	s.mu.Lock()
	key := s.nextRun
	s.nextRun++
	s.running[key] = cancel
	aborted := s.aborted
	s.mu.Unlock()
	if aborted {
		cancel(errAborted)
	}
	return ctx, func() {
		s.mu.Lock()
		delete(s.running, key)
		s.mu.Unlock()
		cancel(nil)
	}
}

// Drain stops taking work and returns at once: from now on every request, and /readyz, gets
// 503, and requests waiting in the queue get 503 too. Running executions go on.
func (s *Server) Drain() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return
	}
	s.draining = true
	close(s.drainCh)
	s.updateReadyGauge()
}

// Wait waits until no execution runs or waits in the queue, or until ctx ends, and then
// returns ctx's error. Call it after Drain, or new work may keep it waiting.
func (s *Server) Wait(ctx context.Context) error {
	s.mu.Lock()
	if s.active == 0 {
		s.mu.Unlock()
		return nil
	}
	idle := s.idle
	s.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Abort cancels the context of every running execution, and of any that starts later, so
// that the executor kills them. It returns how many were running.
func (s *Server) Abort() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.aborted = true
	for _, cancel := range s.running {
		cancel(errAborted)
	}
	return len(s.running)
}

// Shutdown stops the server on SIGTERM: Drain; Wait until running executions end or ctx (the
// drain timeout) expires; then Abort the rest and give them abortGrace to finish; end every
// session and close the executor; then shut down httpServers, which closes their listeners (the Unix socket of Listen is removed when
// its listener closes). The error wraps ctx's error when the drain timed out.
func (s *Server) Shutdown(ctx context.Context, httpServers ...*http.Server) error {
	s.Drain()
	var errs []error
	if err := s.Wait(ctx); err != nil {
		n := s.Abort()
		s.log.Info("drain timed out, aborting executions", "aborted", n)
		errs = append(errs, fmt.Errorf("drain: %w (aborted %d executions)", err, n))
	}
	graceCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortGrace)
	defer cancel()
	if err := s.Wait(graceCtx); err != nil {
		errs = append(errs, fmt.Errorf("aborted executions did not end: %w", err))
	}
	s.closeSessions(sessionDrain)
	if ex := s.executor(); ex != nil {
		ex.Close() // nothing runs any more: the zygote and its spares go
	}
	for _, hs := range httpServers {
		if err := hs.Shutdown(graceCtx); err != nil {
			errs = append(errs, fmt.Errorf("shut down HTTP server: %w", err))
			hs.Close()
		}
	}
	return errors.Join(errs...)
}
