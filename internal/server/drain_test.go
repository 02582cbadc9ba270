package server

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/pyexec/pyexec/internal/executor"
	"github.com/pyexec/pyexec/pkg/api"
)

// answer is the status of a response, or the error of a request that got none.
type answer struct {
	status int
	err    error
}

// executeAsync posts body to /v1/execute from another goroutine.
func executeAsync(h *harness, body string) <-chan answer {
	ch := make(chan answer, 1)
	go func() {
		resp, _, err := h.send(context.Background(), http.MethodPost, "/v1/execute", "application/json", body)
		if err != nil {
			ch <- answer{err: err}
			return
		}
		ch <- answer{status: resp.StatusCode}
	}()
	return ch
}

// readyzStatus returns the status of /readyz.
func readyzStatus(h *harness) int {
	rec := httptest.NewRecorder()
	h.srv.ProbeHandler(h.reg).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	return rec.Code
}

func TestShutdownWaitsForInFlight(t *testing.T) {
	exec := newBlockingExec(t)
	h := newHarness(t, testConfig(), exec, true)
	running := executeAsync(h, `{"code":"1"}`)
	recv(t, "the execution to start", exec.started)

	const drainTimeout = time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	start := time.Now()
	shutdown := make(chan error, 1)
	go func() { shutdown <- h.srv.Shutdown(ctx, h.hs) }()

	waitFor(t, "draining", func() bool { return readyzStatus(h) == http.StatusServiceUnavailable })
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned %v while an execution was running", err)
	default:
	}
	exec.releaseAll()

	if err := recv(t, "Shutdown", shutdown); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if elapsed := time.Since(start); elapsed >= drainTimeout {
		t.Errorf("Shutdown took %v, the whole drain timeout", elapsed)
	}
	if a := recv(t, "the in-flight answer", running); a.err != nil || a.status != http.StatusOK {
		t.Errorf("in-flight request: %+v, want 200", a)
	}
	if _, err := os.Lstat(h.sock); !os.IsNotExist(err) {
		t.Errorf("socket still there after Shutdown: %v", err)
	}
}

func TestShutdownAbortsStuckExecution(t *testing.T) {
	cancelled := make(chan error, 1)
	started := make(chan struct{})
	exec := fakeExec(func(ctx context.Context, _ executor.Request, _ executor.Output) (api.ExecuteResult, error) {
		close(started)
		<-ctx.Done() // stuck until aborted
		cancelled <- context.Cause(ctx)
		return api.ExecuteResult{Reason: api.ReasonSignal, Signal: "SIGKILL", ExitCode: -9}, nil
	})
	h := newHarness(t, testConfig(), exec, true)
	running := executeAsync(h, `{"code":"while True: pass"}`)
	recv(t, "the execution to start", started)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond) // the drain timeout
	defer cancel()
	err := h.srv.Shutdown(ctx, h.hs)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown error %v, want one wrapping context.DeadlineExceeded", err)
	}
	if cause := recv(t, "the execution's context to be cancelled", cancelled); !errors.Is(cause, errAborted) {
		t.Errorf("cancel cause %v, want errAborted", cause)
	}
	if a := recv(t, "the aborted answer", running); a.err != nil || a.status != http.StatusOK {
		t.Errorf("aborted request: %+v, want 200 with its result", a)
	}
	if _, err := os.Lstat(h.sock); !os.IsNotExist(err) {
		t.Errorf("socket still there after Shutdown: %v", err)
	}
}

func TestDrainStopsQueuedRequests(t *testing.T) {
	exec := newBlockingExec(t)
	cfg := testConfig()
	cfg.Limits.MaxConcurrent, cfg.Limits.Queue = 1, 2
	h := newHarness(t, cfg, exec, true)
	running := executeAsync(h, `{"code":"1"}`)
	recv(t, "the execution to start", exec.started)
	queued := executeAsync(h, `{"code":"2"}`)
	waitFor(t, "one queued", func() bool { return metricValue(t, h.reg, "pyexec_queue_depth", "", "") == 1 })

	h.srv.Drain()
	if a := recv(t, "the queued answer", queued); a.err != nil || a.status != http.StatusServiceUnavailable {
		t.Errorf("queued request: %+v, want 503", a)
	}
	waitCtx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := h.srv.Wait(waitCtx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait with an execution running: %v, want DeadlineExceeded", err)
	}
	exec.releaseAll()
	if err := h.srv.Wait(context.Background()); err != nil {
		t.Errorf("Wait: %v", err)
	}
	if a := recv(t, "the running answer", running); a.status != http.StatusOK {
		t.Errorf("running request: %+v, want 200", a)
	}
	if n := exec.calls.Load(); n != 1 {
		t.Errorf("executor ran %d times, want 1", n)
	}
}

func TestAbortCancelsLaterExecutions(t *testing.T) {
	cancelled := make(chan error, 1)
	exec := fakeExec(func(ctx context.Context, _ executor.Request, _ executor.Output) (api.ExecuteResult, error) {
		cancelled <- context.Cause(ctx)
		return exitResult(), nil
	})
	srv := New(testConfig(), exec, logr.Discard(), nil)
	srv.SetReady(api.Info{})
	if n := srv.Abort(); n != 0 {
		t.Errorf("Abort with nothing running: %d, want 0", n)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/v1/execute", strings.NewReader(`{"code":"1"}`))
	req.Header.Set("Content-Type", "application/json")
	srv.Handler().ServeHTTP(rec, req)
	if cause := recv(t, "the execution", cancelled); !errors.Is(cause, errAborted) {
		t.Errorf("context cause %v, want errAborted", cause)
	}
}

// closingExec records that it was closed, and whether an execution ran after.
type closingExec struct {
	fakeExec
	closed atomic.Bool
}

func (c *closingExec) Close() { c.closed.Store(true) }

// Shutdown closes the executor, once no execution runs any more: the zygote and its spares
// go with the server.
func TestShutdownClosesTheExecutor(t *testing.T) {
	ex := &closingExec{}
	ex.fakeExec = func(context.Context, executor.Request, executor.Output) (api.ExecuteResult, error) {
		if ex.closed.Load() {
			t.Error("an execution ran on a closed executor")
		}
		return exitResult(), nil
	}
	h := newHarness(t, testConfig(), ex, true)
	if resp, _ := h.execute(`{"code":"1"}`); resp.StatusCode != 200 {
		t.Fatalf("execute: %d", resp.StatusCode)
	}
	if ex.closed.Load() {
		t.Fatal("closed before the shutdown")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if !ex.closed.Load() {
		t.Fatal("Shutdown did not close the executor")
	}
}
