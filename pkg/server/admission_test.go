package server

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/pyexec/pyexec/pkg/api"
	"github.com/pyexec/pyexec/pkg/executor"
)

// blockingExec is a fake executor whose executions start, report it, and wait for release
// (or for their context to end).
type blockingExec struct {
	calls       atomic.Int32
	started     chan string // request ids, as executions start
	release     chan struct{}
	releaseOnce sync.Once
}

// newBlockingExec returns a blockingExec that is released at the latest when t ends, so that
// a failing test leaves no execution behind.
func newBlockingExec(t *testing.T) *blockingExec {
	b := &blockingExec{started: make(chan string, 100), release: make(chan struct{})}
	t.Cleanup(b.releaseAll)
	return b
}

// releaseAll lets every execution, running or to come, finish.
func (b *blockingExec) releaseAll() {
	b.releaseOnce.Do(func() { close(b.release) })
}

// Close implements executor.Executor.
func (b *blockingExec) Close() {}

func (b *blockingExec) Execute(ctx context.Context, req executor.Request, _ executor.Output) (api.ExecuteResult, error) {
	b.calls.Add(1)
	b.started <- req.ID
	select {
	case <-b.release:
	case <-ctx.Done():
	}
	return exitResult(), nil
}

func TestQueueFlood(t *testing.T) {
	exec := newBlockingExec(t)
	cfg := testConfig()
	cfg.Limits.MaxConcurrent, cfg.Limits.Queue = 2, 3
	h := newHarness(t, cfg, exec, true)

	type answer struct {
		status     int
		code       string
		retryAfter string
	}
	answers := make(chan answer, 10)
	for range 10 {
		go func() {
			resp, body, err := h.send(context.Background(), http.MethodPost, "/v1/execute", "application/json", `{"code":"1"}`)
			if err != nil {
				answers <- answer{code: err.Error()}
				return
			}
			a := answer{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After")}
			var e api.ErrorResponse
			if json.Unmarshal(body, &e) == nil {
				a.code = e.Error.Code
			}
			answers <- a
		}()
	}

	// Nothing finishes before release, so the first five answers are the refusals, at once.
	for i := range 5 {
		a := recv(t, "a refusal", answers)
		if a != (answer{http.StatusTooManyRequests, api.ErrCodeQueueFull, "1"}) {
			t.Errorf("answer %d before release: %+v, want 429 queue_full with Retry-After 1", i, a)
		}
	}
	recv(t, "first execution", exec.started)
	recv(t, "second execution", exec.started)
	waitFor(t, "3 queued", func() bool { return metricValue(t, h.reg, "pyexec_queue_depth", "", "") == 3 })
	if got := metricValue(t, h.reg, "pyexec_executions_in_flight", "", ""); got != 2 {
		t.Errorf("in flight %v, want 2", got)
	}
	if got := metricValue(t, h.reg, "pyexec_requests_rejected_total", "code", api.ErrCodeQueueFull); got != 5 {
		t.Errorf("rejected{code=queue_full} = %v, want 5", got)
	}

	exec.releaseAll()
	for i := range 5 {
		if a := recv(t, "an answer after release", answers); a.status != http.StatusOK {
			t.Errorf("answer %d after release: %+v, want 200", i, a)
		}
	}
	if n := exec.calls.Load(); n != 5 {
		t.Errorf("executor ran %d times, want 5", n)
	}
	if got := metricValue(t, h.reg, "pyexec_executions_total", "reason", api.ReasonExit); got != 5 {
		t.Errorf("executions_total{reason=exit} = %v, want 5", got)
	}
}

func TestQueuedClientGoesAway(t *testing.T) {
	exec := newBlockingExec(t)
	cfg := testConfig()
	cfg.Limits.MaxConcurrent, cfg.Limits.Queue = 1, 1
	h := newHarness(t, cfg, exec, true)

	first := make(chan int, 1)
	go func() {
		resp, _, err := h.send(context.Background(), http.MethodPost, "/v1/execute", "application/json", `{"code":"first"}`)
		if err != nil {
			first <- -1
			return
		}
		first <- resp.StatusCode
	}()
	recv(t, "first execution", exec.started)

	ctx, cancel := context.WithCancel(context.Background())
	second := make(chan error, 1)
	go func() {
		_, _, err := h.send(ctx, http.MethodPost, "/v1/execute", "application/json", `{"code":"second"}`)
		second <- err
	}()
	waitFor(t, "the second request queued", func() bool { return metricValue(t, h.reg, "pyexec_queue_depth", "", "") == 1 })
	cancel()
	if err := recv(t, "the second client", second); err == nil {
		t.Fatal("the cancelled request got an answer")
	}
	waitFor(t, "the queue emptied", func() bool { return metricValue(t, h.reg, "pyexec_queue_depth", "", "") == 0 })
	waitFor(t, "the abandon logged", func() bool { return len(h.logs.lines(t, "request abandoned while queued")) == 1 })

	exec.releaseAll()
	if status := recv(t, "the first answer", first); status != http.StatusOK {
		t.Errorf("first request: status %d, want 200", status)
	}
	if n := exec.calls.Load(); n != 1 {
		t.Errorf("executor ran %d times, want 1: the abandoned request must not run", n)
	}
	// The abandoned request gave back its ticket: a new one runs.
	if resp, body := h.execute(`{"code":"third"}`); resp.StatusCode != http.StatusOK {
		t.Fatalf("third request: status %d: %s", resp.StatusCode, body)
	}
}
