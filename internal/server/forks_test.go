package server

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"testing"

	"github.com/pyexec/pyexec/pkg/api"
)

// POST /v1/sessions/{id}/fork: one branch, or {"count": N}; branches are sessions of their own
// with the session's state, owner and parent; they count against --max-sessions; every error
// has its code, and the metric counts the outcomes.
func TestSessionFork(t *testing.T) {
	h, _ := sessionHarness(t, 4, func(l *api.Limits) { l.MaxCheckpointBytes = 1 << 20 })
	alice := as("alice")
	resp, b := h.do(alice, http.MethodPost, "/v1/sessions", "application/json", "{}")
	var s api.Session
	if err := json.Unmarshal(b, &s); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("create: %d %s", resp.StatusCode, b)
	}
	post := func(ctx context.Context, path, body string) reply {
		t.Helper()
		ct := ""
		if body != "" {
			ct = "application/json"
		}
		return replyOf(h.do(ctx, http.MethodPost, path, ct, body))
	}
	stdout := func(id, code string) string {
		t.Helper()
		body, _ := json.Marshal(api.ExecuteRequest{Code: code})
		r := post(alice, "/v1/sessions/"+id+"/execute", string(body))
		var res api.ExecuteResult
		if err := json.Unmarshal(r.body, &res); err != nil || r.resp.StatusCode != 200 {
			t.Fatalf("call in %s: %d %s", id, r.resp.StatusCode, r.body)
		}
		return res.Stdout
	}
	stdout(s.ID, "x = 1\nopen('f.txt', 'w').write('one')")
	r := post(alice, "/v1/sessions/"+s.ID+"/fork", "")
	var one api.Session
	if err := json.Unmarshal(r.body, &one); err != nil || r.resp.StatusCode != http.StatusCreated || one.ID == s.ID || one.Parent != s.ID || one.Owner != "alice" || one.Executions != 0 {
		t.Fatalf("fork: %d %s", r.resp.StatusCode, r.body)
	}
	r = post(alice, "/v1/sessions/"+s.ID+"/fork", `{"count": 2}`)
	var two api.SessionList
	if err := json.Unmarshal(r.body, &two); err != nil || r.resp.StatusCode != http.StatusCreated || len(two.Sessions) != 2 {
		t.Fatalf("fork of 2: %d %s", r.resp.StatusCode, r.body)
	}
	for i, b := range append([]api.Session{one}, two.Sessions...) {
		if got := stdout(b.ID, "x += 1\nprint(x, open('f.txt').read())"); got != "2 one\n" {
			t.Fatalf("branch %d: %q", i, got)
		}
	}
	if got := stdout(s.ID, "print(x)"); got != "1\n" {
		t.Fatalf("the session after its branches' calls: %q", got)
	}
	_, b = h.do(alice, http.MethodGet, "/v1/sessions/"+s.ID, "", "")
	var parent api.Session
	if err := json.Unmarshal(b, &parent); err != nil || len(parent.Branches) != 3 || !slices.Contains(parent.Branches, one.ID) {
		t.Fatalf("the session's branches: %s", b)
	}
	// Errors: the session cap (4 open), another owner, a bad count, threads, a busy session.
	r = post(alice, "/v1/sessions/"+s.ID+"/fork", "")
	wantError(t, r.resp, r.body, http.StatusTooManyRequests, api.ErrCodeTooManySessions, "fork")
	if r := replyOf(h.do(alice, http.MethodDelete, "/v1/sessions/"+one.ID, "", "")); r.resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete a branch: %d %s", r.resp.StatusCode, r.body)
	}
	_, b = h.do(alice, http.MethodGet, "/v1/sessions/"+s.ID, "", "")
	if err := json.Unmarshal(b, &parent); err != nil || len(parent.Branches) != 2 || slices.Contains(parent.Branches, one.ID) {
		t.Fatalf("the session's branches after one ended: %s", b)
	}
	r = post(alice, "/v1/sessions/"+s.ID+"/fork", `{"count": 2}`)
	wantError(t, r.resp, r.body, http.StatusTooManyRequests, api.ErrCodeTooManySessions, "asks for 2")
	r = post(as("bob"), "/v1/sessions/"+s.ID+"/fork", "")
	wantError(t, r.resp, r.body, http.StatusNotFound, api.ErrCodeSessionNotFound, "")
	r = post(alice, "/v1/sessions/"+s.ID+"/fork", `{"count": -1}`)
	wantError(t, r.resp, r.body, http.StatusBadRequest, api.ErrCodeBadRequest, "count")
	stdout(two.Sessions[0].ID, "import threading, time\nth = threading.Thread(target=time.sleep, args=(30,), daemon=True)\nth.start()")
	r = post(alice, "/v1/sessions/"+two.Sessions[0].ID+"/fork", "")
	wantError(t, r.resp, r.body, http.StatusConflict, api.ErrCodeNotForkable, "1 thread")
	running := make(chan struct{})
	go func() {
		defer close(running)
		post(alice, "/v1/sessions/"+s.ID+"/execute", `{"code": "import time; time.sleep(1)"}`)
	}()
	waitBusy(t, h, alice, s.ID)
	r = post(alice, "/v1/sessions/"+s.ID+"/fork", "")
	wantError(t, r.resp, r.body, http.StatusConflict, api.ErrCodeSessionBusy, "")
	<-running
	// The session's end leaves its branches.
	if r := replyOf(h.do(alice, http.MethodDelete, "/v1/sessions/"+s.ID, "", "")); r.resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete the session: %d", r.resp.StatusCode)
	}
	if got := stdout(two.Sessions[1].ID, "print(x)"); got != "2\n" {
		t.Fatalf("a branch after its session's end: %q", got)
	}
	for outcome, want := range map[string]float64{"ok": 2, api.ErrCodeTooManySessions: 2, api.ErrCodeNotForkable: 1} {
		if v := metricValue(t, h.reg, "pyexec_session_forks_total", "outcome", outcome); v != want {
			t.Errorf("forks with outcome %s: %v, want %v", outcome, v, want)
		}
	}
}
