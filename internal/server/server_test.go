package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/go-logr/logr"

	"github.com/pyexec/pyexec/internal/confine"
	"github.com/pyexec/pyexec/internal/executor"
	"github.com/pyexec/pyexec/pkg/api"
)

func TestRoutes(t *testing.T) {
	h := newHarness(t, testConfig(), okExec, true)
	tests := []struct {
		method, path string
		status       int
		code, allow  string
	}{
		{http.MethodGet, "/v1/nope", http.StatusNotFound, api.ErrCodeNotFound, ""},
		{http.MethodGet, "/v1/packages", http.StatusServiceUnavailable, api.ErrCodeUnavailable, ""}, // no installer set
		{http.MethodPut, "/v1/packages", http.StatusMethodNotAllowed, api.ErrCodeMethodNotAllowed, "GET, POST"},
		{http.MethodPost, "/v1/execute/", http.StatusNotFound, api.ErrCodeNotFound, ""},
		{http.MethodGet, "/", http.StatusNotFound, api.ErrCodeNotFound, ""},
		{http.MethodGet, "/v1/execute", http.StatusMethodNotAllowed, api.ErrCodeMethodNotAllowed, "POST"},
		{http.MethodPut, "/v1/execute", http.StatusMethodNotAllowed, api.ErrCodeMethodNotAllowed, "POST"},
		{http.MethodPost, "/v1/info", http.StatusMethodNotAllowed, api.ErrCodeMethodNotAllowed, "GET"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			resp, body := h.do(context.Background(), tt.method, tt.path, "application/json", `{"code":"1"}`)
			wantError(t, resp, body, tt.status, tt.code, tt.path)
			if got := resp.Header.Get("Allow"); got != tt.allow {
				t.Errorf("Allow %q, want %q", got, tt.allow)
			}
		})
	}
}

func TestRequestIDs(t *testing.T) {
	h := newHarness(t, testConfig(), okExec, true)
	seen := map[string]bool{}
	for range 5 {
		resp, _ := h.execute(`{"code":"1"}`)
		id := resp.Header.Get(headerRequestID)
		if len(id) != 16 || strings.Trim(id, "0123456789abcdef") != "" {
			t.Errorf("request id %q: want 16 hex digits", id)
		}
		if seen[id] {
			t.Errorf("request id %q repeated", id)
		}
		seen[id] = true
	}
}

func TestNotReady(t *testing.T) {
	var calls atomic.Int32
	exec := fakeExec(func(context.Context, executor.Request, executor.Output) (api.ExecuteResult, error) {
		calls.Add(1)
		return exitResult(), nil
	})
	h := newHarness(t, testConfig(), exec, false)
	resp, body := h.do(context.Background(), http.MethodGet, "/v1/info", "", "")
	wantError(t, resp, body, http.StatusServiceUnavailable, api.ErrCodeUnavailable, "not ready: preflight has not confirmed the interpreter")
	resp, body = h.execute(`{"code":"1"}`)
	wantError(t, resp, body, http.StatusServiceUnavailable, api.ErrCodeUnavailable, "not ready")
	if n := calls.Load(); n != 0 {
		t.Errorf("executor ran %d times before ready", n)
	}

	h.srv.SetReady(api.Info{})
	if resp, body := h.execute(`{"code":"1"}`); resp.StatusCode != http.StatusOK {
		t.Fatalf("after SetReady: status %d: %s", resp.StatusCode, body)
	}
}

func TestSetInfoBeforeReady(t *testing.T) {
	h := newHarness(t, testConfig(), okExec, false)
	h.srv.SetInfo(api.Info{Preflight: api.Preflight{Problems: []string{"python3 not found", "site-packages read-only"}}})
	resp, body := h.do(context.Background(), http.MethodGet, "/v1/info", "", "")
	wantError(t, resp, body, http.StatusServiceUnavailable, api.ErrCodeUnavailable,
		notReadyMessage+": python3 not found; site-packages read-only")
}

func TestSetExecutorLater(t *testing.T) {
	h := newHarness(t, testConfig(), nil, true)
	resp, body := h.execute(`{"code":"1"}`)
	wantError(t, resp, body, http.StatusServiceUnavailable, api.ErrCodeUnavailable, noExecutorMessage)
	if got := metricValue(t, h.reg, "pyexec_ready", "", ""); got != 0 {
		t.Errorf("pyexec_ready %v without an executor, want 0", got)
	}
	h.srv.SetExecutor(okExec)
	if resp, body := h.execute(`{"code":"1"}`); resp.StatusCode != http.StatusOK {
		t.Fatalf("after SetExecutor: status %d: %s", resp.StatusCode, body)
	}
	if got := metricValue(t, h.reg, "pyexec_ready", "", ""); got != 1 {
		t.Errorf("pyexec_ready %v, want 1", got)
	}
}

func TestDrainRefusesRequests(t *testing.T) {
	h := newHarness(t, testConfig(), okExec, true)
	h.srv.Drain()
	resp, body := h.execute(`{"code":"1"}`)
	wantError(t, resp, body, http.StatusServiceUnavailable, api.ErrCodeUnavailable, "draining")
	resp, body = h.do(context.Background(), http.MethodGet, "/v1/info", "", "")
	wantError(t, resp, body, http.StatusServiceUnavailable, api.ErrCodeUnavailable, "draining")
	if got := metricValue(t, h.reg, "pyexec_requests_rejected_total", "code", api.ErrCodeUnavailable); got != 2 {
		t.Errorf("rejected{code=unavailable} = %v, want 2", got)
	}
}

func TestInfo(t *testing.T) {
	h := newHarness(t, testConfig(), okExec, false)
	h.srv.SetReady(api.Info{Version: "preflight's", Policy: "system-python",
		Preflight: api.Preflight{OK: true, Summary: "python 3.12 ok", Source: "/run/pyexec/preflight.json"}})
	resp, body := h.do(context.Background(), http.MethodGet, "/v1/info", "", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	var info api.Info
	if err := json.Unmarshal(body, &info); err != nil {
		t.Fatal(err)
	}
	// Without the process_budget layer, max_processes is RLIMIT_NPROC of the runner's uid.
	limits := testLimits()
	limits.MaxProcessesScope = api.ProcessesPerUID
	// A write timeout the limits leave unset is the default, and info says which.
	limits.WriteTimeoutSeconds = DefaultWriteTimeout.Seconds()
	want := api.Info{Version: "1.2.3", Policy: "system-python", Mode: "spawn", Ready: true, Limits: limits,
		Preflight: api.Preflight{OK: true, Summary: "python 3.12 ok", Source: "/run/pyexec/preflight.json"}}
	if !reflect.DeepEqual(info, want) {
		t.Errorf("info\n got %+v\nwant %+v", info, want)
	}
	// With it, each execution's own.
	iso := confine.Kernel{Seccomp: true, ProcessBudget: true}.Info("deny")
	h.srv.SetReady(api.Info{Isolation: iso})
	_, body = h.do(context.Background(), http.MethodGet, "/v1/info", "", "")
	info = api.Info{}
	if err := json.Unmarshal(body, &info); err != nil {
		t.Fatal(err)
	}
	if info.Limits.MaxProcessesScope != api.ProcessesPerExecution || !info.Isolation.Active(confine.LayerProcessBudget) {
		t.Errorf("with the process budget: %+v %+v", info.Limits, info.Isolation)
	}
}

func TestPeerUID(t *testing.T) {
	other := os.Getuid() + 4242
	t.Run("refused", func(t *testing.T) {
		cfg := testConfig()
		cfg.AllowUIDs = []int{other}
		h := newHarness(t, cfg, okExec, true)
		resp, body := h.execute(`{"code":"1"}`)
		wantError(t, resp, body, http.StatusForbidden, api.ErrCodeForbidden, fmt.Sprintf("peer uid %d is not allowed", os.Getuid()))
		lines := h.logs.lines(t, "peer refused")
		if len(lines) != 1 {
			t.Fatalf("%d 'peer refused' lines, want 1", len(lines))
		}
		if lines[0]["uid"] != float64(os.Getuid()) || lines[0]["pid"] != float64(os.Getpid()) {
			t.Errorf("peer refused line %v: want uid %d pid %d", lines[0], os.Getuid(), os.Getpid())
		}
	})
	t.Run("allowed", func(t *testing.T) {
		cfg := testConfig()
		cfg.AllowUIDs = []int{other, os.Getuid()}
		h := newHarness(t, cfg, okExec, true)
		if resp, body := h.execute(`{"code":"1"}`); resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
	})
	// The harness's client is of the server's own uid: pyexec's own commands in its container
	// (kubectl pyexec run) pass where code runs as another uid, and only there.
	t.Run("the server's own uid", func(t *testing.T) {
		cfg := testConfig()
		cfg.AllowUIDs, cfg.AllowOwnUID = []int{other}, true
		h := newHarness(t, cfg, okExec, true)
		if resp, body := h.execute(`{"code":"1"}`); resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
	})
	t.Run("unknown peer", func(t *testing.T) {
		cfg := testConfig()
		cfg.AllowUIDs = []int{os.Getuid()}
		srv := New(cfg, okExec, logr.Discard(), nil)
		srv.SetReady(api.Info{})
		rec := httptest.NewRecorder() // no connection, so no credentials
		req := httptest.NewRequest(http.MethodGet, "/v1/info", nil)
		srv.Handler().ServeHTTP(rec, req)
		if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "peer credentials unknown") {
			t.Errorf("status %d body %s, want 403 naming unknown credentials", rec.Code, rec.Body)
		}
	})
}

func TestPanicIsRecovered(t *testing.T) {
	exec := fakeExec(func(_ context.Context, req executor.Request, _ executor.Output) (api.ExecuteResult, error) {
		if req.Code == "panic" {
			panic("executor bug")
		}
		return exitResult(), nil
	})
	h := newHarness(t, testConfig(), exec, true)
	resp, body := h.execute(`{"code":"panic"}`)
	e := wantError(t, resp, body, http.StatusInternalServerError, api.ErrCodeInternal, "internal error")
	lines := h.logs.lines(t, "panic serving request")
	if len(lines) != 1 {
		t.Fatalf("%d panic log lines, want 1", len(lines))
	}
	if lines[0]["id"] != e.RequestID || lines[0]["error"] != "panic: executor bug" || !strings.Contains(fmt.Sprint(lines[0]["stack"]), "runtime/debug.Stack") {
		t.Errorf("panic line %v: want id %s, the error and the stack", lines[0], e.RequestID)
	}

	// The server goes on serving, and the panicked execution gave back its slot.
	for range testLimits().MaxConcurrent + testLimits().Queue + 1 {
		if resp, body := h.execute(`{"code":"1"}`); resp.StatusCode != http.StatusOK {
			t.Fatalf("after the panic: status %d: %s", resp.StatusCode, body)
		}
	}
	if got := metricValue(t, h.reg, "pyexec_executions_in_flight", "", ""); got != 0 {
		t.Errorf("in flight %v after all requests, want 0", got)
	}
}

func TestExecutorError(t *testing.T) {
	exec := fakeExec(func(context.Context, executor.Request, executor.Output) (api.ExecuteResult, error) {
		return api.ExecuteResult{}, errors.New("fork server died")
	})
	h := newHarness(t, testConfig(), exec, true)
	resp, body := h.execute(`{"code":"1"}`)
	e := wantError(t, resp, body, http.StatusInternalServerError, api.ErrCodeInternal, "execution failed: fork server died")
	lines := h.logs.lines(t, "execution failed")
	if len(lines) != 1 || lines[0]["id"] != e.RequestID || lines[0]["error"] != "fork server died" {
		t.Errorf("execution failed lines %v: want one with id %s", lines, e.RequestID)
	}
	if n := len(h.logs.lines(t, "execution finished")); n != 0 {
		t.Errorf("%d 'execution finished' lines for a failed execution, want 0", n)
	}
	if got := metricValue(t, h.reg, "pyexec_executions_total", "reason", reasonError); got != 1 {
		t.Errorf("executions_total{reason=error} = %v, want 1", got)
	}
}

// While the runner is not there (it starts, or restarts) a request is told to come back: 503 with
// Retry-After, also in a stream (an error event of code unavailable).
func TestExecutorUnavailable(t *testing.T) {
	exec := fakeExec(func(context.Context, executor.Request, executor.Output) (api.ExecuteResult, error) {
		return api.ExecuteResult{}, fmt.Errorf("%w: the runner is not connected", executor.ErrUnavailable)
	})
	h := newHarness(t, testConfig(), exec, true)
	resp, body := h.execute(`{"code":"1"}`)
	wantError(t, resp, body, http.StatusServiceUnavailable, api.ErrCodeUnavailable, "the runner is not connected")
	if resp.Header.Get("Retry-After") != "1" {
		t.Errorf("Retry-After %q", resp.Header.Get("Retry-After"))
	}
	resp, body = h.do(context.Background(), http.MethodPost, "/v1/execute?stream=true", "application/json", `{"code":"1"}`)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"type":"error","error":{"code":"unavailable"`) {
		t.Errorf("streamed: %d %s", resp.StatusCode, body)
	}
}

func TestExecutionLogLine(t *testing.T) {
	result := api.ExecuteResult{ExitCode: 1, Stdout: "12345", Stderr: "ab", Reason: api.ReasonSignal, Signal: "SIGKILL",
		StdoutTruncated: true, Files: []api.OutputFile{{Path: "plot.png", Size: 3}}}
	exec := fakeExec(func(context.Context, executor.Request, executor.Output) (api.ExecuteResult, error) {
		return result, nil
	})
	for _, logCode := range []bool{false, true} {
		t.Run(fmt.Sprint("LogCode=", logCode), func(t *testing.T) {
			cfg := testConfig()
			cfg.LogCode = logCode
			h := newHarness(t, cfg, exec, true)
			resp, body := h.execute(`{"code":"secret = 1"}`)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			lines := h.logs.lines(t, "execution finished")
			if len(lines) != 1 {
				t.Fatalf("%d 'execution finished' lines, want 1", len(lines))
			}
			line := lines[0]
			if _, ok := line["durationMs"].(float64); !ok {
				t.Errorf("durationMs %v: want a number", line["durationMs"])
			}
			delete(line, "durationMs")
			delete(line, "ts")
			want := map[string]any{
				"level": "info", "msg": "execution finished",
				"id": resp.Header.Get(headerRequestID), "uid": float64(os.Getuid()),
				"exitCode": float64(1), "reason": "signal", "signal": "SIGKILL",
				"stdoutBytes": float64(5), "stderrBytes": float64(2),
				"stdoutTruncated": true, "stderrTruncated": false, "files": float64(1), "outputs": float64(0),
			}
			if logCode {
				want["code"] = "secret = 1"
			}
			if !reflect.DeepEqual(line, want) {
				t.Errorf("log line\n got %v\nwant %v", line, want)
			}
		})
	}
}

func TestMetrics(t *testing.T) {
	exec := fakeExec(func(_ context.Context, req executor.Request, _ executor.Output) (api.ExecuteResult, error) {
		return api.ExecuteResult{Reason: req.Code}, nil // the code names the reason
	})
	h := newHarness(t, testConfig(), exec, true)
	for _, reason := range []string{"exit", "exit", "timeout", "exit"} {
		if resp, body := h.execute(`{"code":"` + reason + `"}`); resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
	}
	h.execute(`{}`) // rejected: bad_request

	rec := httptest.NewRecorder()
	h.srv.ProbeHandler(h.reg).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics status %d", rec.Code)
	}
	text := rec.Body.String()
	for _, want := range []string{
		`pyexec_executions_total{reason="exit"} 3` + "\n",
		`pyexec_executions_total{reason="timeout"} 1` + "\n",
		`pyexec_executions_total{reason="memory_limit"} 0` + "\n",
		"pyexec_execution_duration_seconds_count 4\n",
		`pyexec_execution_duration_seconds_bucket{le="0.001"}`,
		`pyexec_execution_duration_seconds_bucket{le="60"} 4` + "\n",
		`pyexec_requests_rejected_total{code="bad_request"} 1` + "\n",
		`pyexec_requests_rejected_total{code="queue_full"} 0` + "\n",
		"pyexec_queue_depth 0\n",
		"pyexec_executions_in_flight 0\n",
		"pyexec_ready 1\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestProbes(t *testing.T) {
	h := newHarness(t, testConfig(), okExec, false)
	probe := h.srv.ProbeHandler(h.reg)
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		probe.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		b, _ := io.ReadAll(rec.Body)
		return rec.Code, strings.TrimSpace(string(b))
	}
	type probeState struct {
		healthz, readyz int
		reason          string
		ready           float64
	}
	check := func(stage string, want probeState) {
		t.Helper()
		hc, _ := get("/healthz")
		rc, reason := get("/readyz")
		got := probeState{hc, rc, reason, metricValue(t, h.reg, "pyexec_ready", "", "")}
		if got != want {
			t.Errorf("%s: got %+v, want %+v", stage, got, want)
		}
	}
	check("before SetReady", probeState{200, 503, notReadyMessage, 0})
	h.srv.SetReady(api.Info{})
	check("ready", probeState{200, 200, "ok (mode spawn)", 1})
	h.srv.Drain()
	check("draining", probeState{200, 503, drainingMessage, 0})
	h.srv.SetReady(api.Info{}) // a late SetReady does not undo Drain
	check("draining after SetReady", probeState{200, 503, drainingMessage, 0})
}

func TestProbeUnknownPath(t *testing.T) {
	srv := New(testConfig(), okExec, logr.Discard(), nil)
	rec := httptest.NewRecorder()
	srv.ProbeHandler(nil).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/info", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("status %d, want 404", rec.Code)
	}
}
