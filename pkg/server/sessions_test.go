package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/pyexec/pyexec/pkg/api"
	"github.com/pyexec/pyexec/pkg/confine"
	"github.com/pyexec/pyexec/pkg/executor"
	"github.com/pyexec/pyexec/pkg/testutil"
)

// sessionHarness serves with a real spawn executor, confined as far as the kernel allows, and
// room for max sessions.
func sessionHarness(t *testing.T, max int) (*harness, string) {
	t.Helper()
	py := testutil.RequireSystemPython(t)
	work := t.TempDir()
	ex, err := executor.NewSpawn(executor.SpawnConfig{Python: py, WorkDir: work, Path: "/usr/bin:/bin", Log: logr.Discard(),
		Isolation: executor.Isolation{Kernel: confine.Probe(confine.NoCap)}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.Limits.MaxSessions = max
	cfg.Limits.SessionIdleTimeoutSeconds, cfg.Limits.MaxSessionIdleTimeoutSeconds = 60, 120
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, cfg, ex, true)
	t.Cleanup(func() { h.srv.closeSessions(sessionDrain) })
	return h, work
}

func (h *harness) createSession(body string) api.Session {
	h.t.Helper()
	ct := ""
	if body != "" {
		ct = "application/json"
	}
	resp, b := h.do(context.Background(), http.MethodPost, "/v1/sessions", ct, body)
	if resp.StatusCode != http.StatusCreated {
		h.t.Fatalf("create: %d %s", resp.StatusCode, b)
	}
	var s api.Session
	if err := json.Unmarshal(b, &s); err != nil {
		h.t.Fatal(err)
	}
	return s
}

func (h *harness) sessionCall(id, body string) (*http.Response, []byte) {
	h.t.Helper()
	return h.do(context.Background(), http.MethodPost, "/v1/sessions/"+id+"/execute", "application/json", body)
}

func decodeResult(t *testing.T, b []byte) api.ExecuteResult {
	t.Helper()
	var res api.ExecuteResult
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return res
}

// The whole life of a session through the API: created with an empty body, listed, called
// with state kept, described, deleted; then a call gets 404 saying why; metrics count it all.
func TestSessionLifecycle(t *testing.T) {
	h, work := sessionHarness(t, 4)
	s := h.createSession("")
	if !strings.HasPrefix(s.ID, "s-") || s.IdleTimeoutSeconds != 60 || !s.ExpiresAt.After(s.CreatedAt) || s.MemoryLimitMB != 256 || s.MemoryBytes <= 0 {
		t.Fatalf("created: %+v", s)
	}
	for i, tt := range []struct{ body, stdout string }{
		{`{"code": "x = 1"}`, ""},
		{`{"code": "x += 1\nprint(x)", "env": {"A": "b"}}`, "2\n"},
	} {
		resp, b := h.sessionCall(s.ID, tt.body)
		if res := decodeResult(t, b); resp.StatusCode != 200 || res.Stdout != tt.stdout || res.ExitCode != 0 {
			t.Fatalf("call %d: %d %+v", i, resp.StatusCode, res)
		}
	}
	resp, b := h.sessionCall(s.ID, `{"code": "1", "memory_limit_mb": 64}`)
	wantError(t, resp, b, 400, api.ErrCodeBadRequest, "memory_limit_mb: a session's is set when it is created")
	resp, b = h.sessionCall(s.ID, `{"code": "1", "network": false}`)
	wantError(t, resp, b, 400, api.ErrCodeBadRequest, "network:")

	resp, b = h.do(context.Background(), http.MethodGet, "/v1/sessions", "", "")
	var list api.SessionList
	if err := json.Unmarshal(b, &list); err != nil || resp.StatusCode != 200 || len(list.Sessions) != 1 || list.Sessions[0].Executions != 2 || list.Sessions[0].Busy {
		t.Fatalf("list: %d %s", resp.StatusCode, b)
	}
	resp, b = h.do(context.Background(), http.MethodGet, "/v1/sessions/"+s.ID, "", "")
	var got api.Session
	if err := json.Unmarshal(b, &got); err != nil || resp.StatusCode != 200 || got.ID != s.ID || !got.LastUsedAt.After(s.LastUsedAt) {
		t.Fatalf("get: %d %s", resp.StatusCode, b)
	}
	resp, b = h.do(context.Background(), http.MethodPut, "/v1/sessions/"+s.ID, "", "")
	wantError(t, resp, b, http.StatusMethodNotAllowed, api.ErrCodeMethodNotAllowed, "DELETE, GET")

	resp, _ = h.do(context.Background(), http.MethodDelete, "/v1/sessions/"+s.ID, "", "")
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	resp, b = h.sessionCall(s.ID, `{"code": "x"}`)
	wantError(t, resp, b, 404, api.ErrCodeSessionNotFound, "has ended (deleted)")
	resp, b = h.do(context.Background(), http.MethodDelete, "/v1/sessions/"+s.ID, "", "")
	wantError(t, resp, b, 404, api.ErrCodeSessionNotFound, "deleted")
	resp, b = h.do(context.Background(), http.MethodGet, "/v1/sessions/s-unknown", "", "")
	wantError(t, resp, b, 404, api.ErrCodeSessionNotFound, "no such session")
	if entries, _ := os.ReadDir(work); len(entries) != 0 {
		t.Errorf("the session's directory is left in the work dir: %v", entries)
	}
	for _, m := range []struct {
		name, label, value string
		want               float64
	}{
		{"pyexec_sessions_created_total", "", "", 1},
		{"pyexec_sessions_open", "", "", 0},
		{"pyexec_sessions_ended_total", "reason", sessionDeleted, 1},
		{"pyexec_sessions_ended_total", "reason", sessionIdle, 0},
	} {
		if got := metricValue(t, h.reg, m.name, m.label, m.value); got != m.want {
			t.Errorf("%s{%s} = %v, want %v", m.name, m.value, got, m.want)
		}
	}
	if lines := h.logs.lines(t, "session ended"); len(lines) != 1 || lines[0]["reason"] != sessionDeleted {
		t.Errorf("log lines of the end: %v", lines)
	}
}

// --max-sessions holds, sessions may be switched off, and bad bodies get 400.
func TestSessionLimits(t *testing.T) {
	h, _ := sessionHarness(t, 2)
	h.createSession(`{}`)
	h.createSession(`{"idle_timeout_seconds": 5, "memory_limit_mb": 128, "env": {"K": "v"}}`)
	resp, b := h.do(context.Background(), http.MethodPost, "/v1/sessions", "application/json", `{}`)
	wantError(t, resp, b, http.StatusTooManyRequests, api.ErrCodeTooManySessions, "--max-sessions 2")
	for body, msg := range map[string]string{
		`{"idle_timeout_seconds": 0}`:     "idle_timeout_seconds: must be > 0",
		`{"idle_timeout_seconds": 121}`:   "over the server's maximum of 120",
		`{"memory_limit_mb": 4096}`:       "memory_limit_mb: 4096 is over",
		`{"network": true}`:               "network:",
		`{"files": [{"path": "/etc/x"}]}`: "files[0].path",
		`{"code": "1"}`:                   "unknown field",
	} {
		resp, b := h.do(context.Background(), http.MethodPost, "/v1/sessions", "application/json", body)
		if resp.StatusCode/100 != 4 || !strings.Contains(string(b), msg) {
			t.Errorf("%s: %d %s; want a 4xx with %q", body, resp.StatusCode, b, msg)
		}
	}

	off, _ := sessionHarness(t, 0)
	resp, b = off.do(context.Background(), http.MethodPost, "/v1/sessions", "", "")
	wantError(t, resp, b, http.StatusForbidden, api.ErrCodeForbidden, "--max-sessions 0")
}

// A session idle past its timeout ends; so does one whose interpreter ended between calls.
func TestSessionsEndWhenIdleOrGone(t *testing.T) {
	h, _ := sessionHarness(t, 4)
	idle := h.createSession(`{"idle_timeout_seconds": 0.3}`)
	gone := h.createSession(`{}`)
	// A thread outlives the call and ends the interpreter after it.
	h.sessionCall(gone.ID, `{"code": "import os, threading, time\nthreading.Thread(target=lambda: (time.sleep(0.3), os._exit(0)), daemon=True).start()"}`)
	waitFor(t, "both sessions to end", func() bool {
		return metricValue(t, h.reg, "pyexec_sessions_open", "", "") == 0
	})
	resp, b := h.sessionCall(idle.ID, `{"code": "1"}`)
	wantError(t, resp, b, 404, api.ErrCodeSessionNotFound, "idle for longer than its idle timeout")
	resp, b = h.sessionCall(gone.ID, `{"code": "1"}`)
	wantError(t, resp, b, 404, api.ErrCodeSessionNotFound, "its interpreter exited")
	if metricValue(t, h.reg, "pyexec_sessions_ended_total", "reason", sessionIdle) != 1 || metricValue(t, h.reg, "pyexec_sessions_ended_total", "reason", sessionExited) != 1 {
		t.Error("the ends are not counted by reason")
	}
}

// A call that does not stop when interrupted loses its session, and says so; streaming works
// in a session; shutting down ends the sessions.
func TestSessionLostStreamedAndDrained(t *testing.T) {
	h, work := sessionHarness(t, 4)
	s := h.createSession(`{}`)
	resp, b := h.do(context.Background(), http.MethodPost, "/v1/sessions/"+s.ID+"/execute?stream=true", "application/json", `{"code": "import sys\nprint('out')\nprint('err', file=sys.stderr)\n6*7"}`)
	var events []api.StreamEvent
	for sc := bufio.NewScanner(bytes.NewReader(b)); sc.Scan(); {
		var ev api.StreamEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatal(err)
		}
		events = append(events, ev)
	}
	streamed := map[string]string{}
	for _, ev := range events[:len(events)-1] {
		streamed[ev.Type] += ev.Data
	}
	last := events[len(events)-1]
	if resp.StatusCode != 200 || streamed[api.EventStdout] != "out\n" || streamed[api.EventStderr] != "err\n" || last.Type != api.EventExit || last.Outputs[0].Data["text/plain"] != "42" {
		t.Fatalf("stream: %d %s", resp.StatusCode, b)
	}
	resp, b = h.sessionCall(s.ID, `{"code": "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(30)", "timeout_seconds": 0.2}`)
	if res := decodeResult(t, b); !res.SessionLost || res.Reason != api.ReasonTimeout {
		t.Fatalf("stubborn call: %d %+v", resp.StatusCode, res)
	}
	resp, b = h.sessionCall(s.ID, `{"code": "1"}`)
	wantError(t, resp, b, 404, api.ErrCodeSessionNotFound, "killed with its session")

	h.createSession(`{}`)
	h.createSession(`{}`)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if got := metricValue(t, h.reg, "pyexec_sessions_ended_total", "reason", sessionDrain); got != 2 {
		t.Errorf("sessions ended by the drain: %v, want 2", got)
	}
	if entries, _ := os.ReadDir(work); len(entries) != 0 {
		t.Errorf("sessions' directories left after the drain: %v", entries)
	}
}

// Deleting a session while a call runs in it ends the call: killed with its session.
func TestSessionDeletedDuringACall(t *testing.T) {
	h, _ := sessionHarness(t, 4)
	s := h.createSession(`{}`)
	done := make(chan api.ExecuteResult, 1)
	go func() {
		_, b := h.sessionCall(s.ID, `{"code": "import time\ntime.sleep(30)"}`)
		done <- decodeResult(t, b)
	}()
	waitFor(t, "the call to run", func() bool {
		_, b := h.do(context.Background(), http.MethodGet, "/v1/sessions/"+s.ID, "", "")
		return strings.Contains(string(b), `"busy":true`)
	})
	resp, _ := h.do(context.Background(), http.MethodDelete, "/v1/sessions/"+s.ID, "", "")
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	res := recv(t, "the call's result", done)
	if !res.SessionLost || res.Reason != api.ReasonSignal || res.Signal != "SIGKILL" {
		t.Fatalf("the call in a deleted session: %+v", res)
	}
	if got := metricValue(t, h.reg, "pyexec_sessions_ended_total", "reason", sessionDeleted); got != 1 {
		t.Errorf("ended as deleted: %v", got)
	}
}
