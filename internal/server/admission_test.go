package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/pyexec/pyexec/internal/executor"
	"github.com/pyexec/pyexec/pkg/api"
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

// TestAdmissionCountsResultsWaiting checks the admission rule: at most maxConcurrent run, and
// running executions plus results known but not yet written are at most maxConcurrent +
// resultsWaiting(maxConcurrent); a result known gives back its slot at once.
func TestAdmissionCountsResultsWaiting(t *testing.T) {
	const maxConcurrent = 2
	m := newMetrics(nil)
	a := newAdmission(maxConcurrent, 8, m)
	ctx := context.Background()
	acquire := func() *grant {
		t.Helper()
		g, err := a.acquire(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	// blocked starts an acquire and checks that it waits: a buggy admission that lets it
	// through does so at once, well within the pause.
	blocked := func(why string) <-chan *grant {
		t.Helper()
		got := make(chan *grant, 1)
		depth := gaugeValue(m.queueDepth)
		go func() {
			g, _ := a.acquire(ctx, nil)
			got <- g
		}()
		waitFor(t, "the acquire to wait", func() bool { return gaugeValue(m.queueDepth) == depth+1 })
		select {
		case <-got:
			t.Fatalf("an execution was admitted %s", why)
		case <-time.After(100 * time.Millisecond):
		}
		return got
	}

	running := []*grant{acquire(), acquire()}
	third := blocked("while maxConcurrent run")
	running[0].resultKnown() // its slot goes to the third at once
	waiting := []*grant{running[0]}
	running = []*grant{running[1], recv(t, "the third admitted", third)}

	// Results fill their own room first: resultsWaiting of them beside two running.
	for len(waiting) < resultsWaiting(maxConcurrent) {
		running[0].resultKnown()
		waiting = append(waiting, running[0])
		running = append(running[1:], acquire())
	}
	if got, want := gaugeValue(m.resultsWaiting), float64(resultsWaiting(maxConcurrent)); got != want {
		t.Fatalf("pyexec_results_waiting %v, want %v", got, want)
	}
	// Past it, a result known frees its slot but takes the room of a new execution.
	running[0].resultKnown()
	waiting = append(waiting, running[0])
	running = running[1:]
	next := blocked(fmt.Sprintf("while %d run and %d results wait to be written", len(running), len(waiting)))
	if got := gaugeValue(m.inFlight); got != float64(len(running)) {
		t.Errorf("pyexec_executions_in_flight %v, want %d", got, len(running))
	}
	// A result written (or cut off) lets it in.
	waiting[0].Release()
	g := recv(t, "an execution admitted once a result was written", next)
	for _, w := range append(append(waiting[1:], running...), g) {
		w.Release()
		w.Release() // a second call changes nothing
	}
	if r, w, q := gaugeValue(m.inFlight), gaugeValue(m.resultsWaiting), gaugeValue(m.queueDepth); r != 0 || w != 0 || q != 0 {
		t.Errorf("after every release: in flight %v, results waiting %v, queue %v; want 0", r, w, q)
	}
	if len(a.slots) != 0 || len(a.held) != 0 || len(a.tickets) != 0 {
		t.Errorf("after every release: %d slots, %d held, %d tickets taken", len(a.slots), len(a.held), len(a.tickets))
	}
}

// TestCarrierHoldsResults: a result that a carrier (an /mcp answer) carries keeps its room
// among the results waiting until the carrier's response is written, not until its own
// response is: a further execution waits meanwhile. A request of a carrier that already holds
// a result is refused rather than wait for room only its own answer would free. A grant that
// knew no result (a session's start) and one released after the carrier's response was
// written give back their room at once.
func TestCarrierHoldsResults(t *testing.T) {
	const maxConcurrent = 1
	m := newMetrics(nil)
	a := newAdmission(maxConcurrent, 8, m)
	acquire := func(ctx context.Context) *grant {
		t.Helper()
		g, err := a.acquire(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	c := newCarrier()
	cctx := withCarrier(context.Background(), c)

	start := acquire(cctx) // a session's start: no result
	start.Release()
	if len(a.held) != 0 {
		t.Fatalf("a grant without a result kept its room: %d held", len(a.held))
	}

	g := acquire(cctx)
	g.resultKnown()
	g.Release() // the API call's response is made; the carrier's is not written yet
	if got := gaugeValue(m.resultsWaiting); got != 1 || len(a.held) != 1 {
		t.Fatalf("after the API call's response: results waiting %v, %d held; want 1 and 1", got, len(a.held))
	}
	other := acquire(context.Background()) // room for maxConcurrent running beside it
	other.resultKnown()                    // and a result waiting: none left
	next := make(chan *grant, 1)
	go func() {
		g, _ := a.acquire(context.Background(), nil)
		next <- g
	}()
	waitFor(t, "the next to wait", func() bool { return gaugeValue(m.queueDepth) == 1 })
	// The carrier's own next request does not wait for room its answer holds.
	if _, err := a.acquire(cctx, nil); !errors.Is(err, errQueueFull) {
		t.Fatalf("a request of a carrier that holds a result, with no room: %v; want errQueueFull", err)
	}
	select {
	case <-next:
		t.Fatal("an execution was admitted while the carrier's result waits")
	case <-time.After(100 * time.Millisecond):
	}
	c.written()
	n := recv(t, "an execution admitted once the carrier's response was written", next)
	if got := gaugeValue(m.resultsWaiting); got != 1 {
		t.Errorf("results waiting %v after the carrier's response was written; want 1 (the other's)", got)
	}
	// Released after the carrier's response was written: at once.
	n.Release()
	other.Release()
	late := acquire(cctx)
	late.resultKnown()
	late.Release()
	if r, w, q := gaugeValue(m.inFlight), gaugeValue(m.resultsWaiting), gaugeValue(m.queueDepth); r != 0 || w != 0 || q != 0 || len(a.held) != 0 {
		t.Errorf("after every release: in flight %v, results waiting %v, queue %v, %d held; want 0", r, w, q, len(a.held))
	}
}

// gaugeValue reads a gauge.
func gaugeValue(g prometheus.Gauge) float64 {
	var m dto.Metric
	_ = g.Write(&m)
	return m.GetGauge().GetValue()
}

// bigExec answers code "big" with 4 MiB of stdout, and anything else with exitResult.
var bigExec = fakeExec(func(_ context.Context, req executor.Request, out executor.Output) (api.ExecuteResult, error) {
	res := exitResult()
	if req.Code == "big" {
		res.Stdout = strings.Repeat("x", 4<<20)
	}
	return res, nil
})

// TestResultsNotReadFreeTheirSlots: a client that asks for a large result and never reads it
// holds no execution slot, only a place of the results waiting, and is cut off after the
// write timeout: its body ends short of its Content-Length (a stream: without its exit event).
func TestResultsNotReadFreeTheirSlots(t *testing.T) {
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprintf("stream=%v", stream), func(t *testing.T) {
			cfg := testConfig()
			// The write timeout leaves time for the checks made while the result waits.
			cfg.Limits.MaxConcurrent, cfg.Limits.WriteTimeoutSeconds = 1, 3
			h := newHarness(t, cfg, bigExec, true)
			path := "/v1/execute"
			if stream {
				path += "?stream=true"
			}
			// As many non-readers as results may wait: the slot stays free for the others.
			var conns []net.Conn
			for i := range resultsWaiting(cfg.Limits.MaxConcurrent) {
				conns = append(conns, sendRaw(t, h.sock, path, `{"code":"big"}`))
				waitFor(t, "the result to wait", func() bool {
					return metricValue(t, h.reg, "pyexec_results_waiting", "", "") == float64(i+1)
				})
			}
			if got := metricValue(t, h.reg, "pyexec_executions_in_flight", "", ""); got != 0 {
				t.Errorf("%v executions in flight while only results wait; want 0", got)
			}
			if resp, body := h.execute(`{"code":"small"}`); resp.StatusCode != http.StatusOK {
				t.Fatalf("a genuine request beside the non-readers: %d %s", resp.StatusCode, body)
			}
			waitFor(t, "the non-readers cut off", func() bool { return len(h.logs.lines(t, "response cut off")) == len(conns) })
			for _, c := range conns {
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					t.Fatalf("no status line: %v", err)
				}
				n, err := io.Copy(io.Discard, resp.Body)
				if resp.StatusCode != http.StatusOK || err == nil {
					t.Errorf("a cut-off response: %d, %d bytes of body (Content-Length %d), error %v; want a 200 cut short",
						resp.StatusCode, n, resp.ContentLength, err)
				}
			}
			if got := metricValue(t, h.reg, "pyexec_results_waiting", "", ""); got != 0 {
				t.Errorf("pyexec_results_waiting %v after the cut; want 0", got)
			}
		})
	}
}

// sendRaw sends a POST of body to path on a connection of its own, and reads nothing.
func sendRaw(t *testing.T, sock, path, body string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetReadDeadline(time.Now().Add(waitLimit))
	fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: pyexec\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", path, len(body), body)
	return c
}
