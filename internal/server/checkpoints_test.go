package server

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/pyexec/pyexec/pkg/api"
)

// The checkpoint endpoints: take, list, call, restore (the call's work undone), "checkpoint":
// true on a call, the cap, delete, and every error with its code — busy, not found, another
// owner's session, a checkpoint on /v1/execute, a body without a checkpoint.
func TestSessionCheckpoints(t *testing.T) {
	h, _ := sessionHarness(t, 2, func(l *api.Limits) {
		l.MaxCheckpointsPerSession, l.CheckpointIdleTimeoutSeconds, l.MaxCheckpointBytes = 2, 60, 1<<20
	})
	alice := as("alice")
	resp, b := h.do(alice, http.MethodPost, "/v1/sessions", "application/json", "{}")
	var s api.Session
	if err := json.Unmarshal(b, &s); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("create: %d %s", resp.StatusCode, b)
	}
	want := func(r reply, status int, code, msg string) {
		t.Helper()
		wantError(t, r.resp, r.body, status, code, msg)
	}
	base := "/v1/sessions/" + s.ID
	post := func(ctx context.Context, path, body string) (*http.Response, []byte) {
		t.Helper()
		return h.do(ctx, http.MethodPost, base+path, "application/json", body)
	}
	result := func(b []byte) api.ExecuteResult {
		t.Helper()
		var res api.ExecuteResult
		if err := json.Unmarshal(b, &res); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		return res
	}
	if resp, b := post(alice, "/execute", `{"code": "x = [1, 2]\nopen('f.txt', 'w').write('one')"}`); resp.StatusCode != 200 || result(b).ExitCode != 0 {
		t.Fatalf("call: %d %s", resp.StatusCode, b)
	}
	resp, b = post(alice, "/checkpoints", "")
	var cp api.Checkpoint
	if err := json.Unmarshal(b, &cp); err != nil || resp.StatusCode != http.StatusCreated || cp.ID != "c1" || cp.Files != 1 || cp.ExpiresAt.IsZero() {
		t.Fatalf("checkpoint: %d %s", resp.StatusCode, b)
	}
	// A call with "checkpoint": true, whose work is then undone.
	resp, b = post(alice, "/execute", `{"code": "x.append(3)\nopen('f.txt', 'w').write('two')", "checkpoint": true}`)
	if res := result(b); resp.StatusCode != 200 || res.Checkpoint != "c2" {
		t.Fatalf("call with a checkpoint: %d %s", resp.StatusCode, b)
	}
	resp, b = h.do(alice, http.MethodGet, base+"/checkpoints", "", "")
	var list api.Checkpoints
	if err := json.Unmarshal(b, &list); err != nil || resp.StatusCode != 200 || len(list.Checkpoints) != 2 || list.Checkpoints[1].ID != "c2" || !list.Checkpoints[1].Auto {
		t.Fatalf("list: %d %s", resp.StatusCode, b)
	}
	want(replyOf(post(alice, "/checkpoints", "")), http.StatusTooManyRequests, api.ErrCodeTooManyCheckpoints, "2")
	resp, b = post(alice, "/restore", `{"checkpoint": "c2"}`)
	var info api.Session
	// A restore is no call: the session's executions stay the two calls it ran.
	if err := json.Unmarshal(b, &info); err != nil || resp.StatusCode != 200 || info.ID != s.ID || info.Executions != 2 {
		t.Fatalf("restore: %d %s", resp.StatusCode, b)
	}
	if resp, b := post(alice, "/execute", `{"code": "print(x, open('f.txt').read())"}`); result(b).Stdout != "[1, 2] one\n" {
		t.Fatalf("after the undo: %d %s", resp.StatusCode, b)
	}
	// Errors.
	want(replyOf(post(alice, "/restore", `{"checkpoint": "c9"}`)), http.StatusNotFound, api.ErrCodeCheckpointNotFound, `no checkpoint "c9"`)
	want(replyOf(post(alice, "/restore", `{}`)), http.StatusBadRequest, api.ErrCodeBadRequest, "checkpoint: required")
	want(replyOf(post(as("bob"), "/restore", `{"checkpoint": "c1"}`)), http.StatusNotFound, api.ErrCodeSessionNotFound, "")
	want(replyOf(post(as("bob"), "/checkpoints", "")), http.StatusNotFound, api.ErrCodeSessionNotFound, "")
	want(replyOf(h.do(as("bob"), http.MethodGet, base+"/checkpoints", "", "")), http.StatusNotFound, api.ErrCodeSessionNotFound, "")
	want(replyOf(h.do(as("bob"), http.MethodDelete, base+"/checkpoints/c1", "", "")), http.StatusNotFound, api.ErrCodeSessionNotFound, "")
	want(replyOf(h.execute(`{"code": "1", "checkpoint": true}`)), http.StatusBadRequest, api.ErrCodeBadRequest, "only a session's call")
	// Busy: while a call runs, no checkpoint, restore or deletion; the list still answers.
	running := make(chan struct{})
	go func() {
		defer close(running)
		post(alice, "/execute", `{"code": "import time; time.sleep(1.5)"}`)
	}()
	waitBusy(t, h, alice, s.ID)
	want(replyOf(post(alice, "/checkpoints", "")), http.StatusConflict, api.ErrCodeSessionBusy, "")
	want(replyOf(post(alice, "/restore", `{"checkpoint": "c1"}`)), http.StatusConflict, api.ErrCodeSessionBusy, "")
	want(replyOf(h.do(alice, http.MethodDelete, base+"/checkpoints/c1", "", "")), http.StatusConflict, api.ErrCodeSessionBusy, "")
	if resp, _ := h.do(alice, http.MethodGet, base+"/checkpoints", "", ""); resp.StatusCode != 200 {
		t.Fatalf("list during a call: %d", resp.StatusCode)
	}
	<-running
	if resp, b := h.do(alice, http.MethodDelete, base+"/checkpoints/c1", "", ""); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete: %d %s", resp.StatusCode, b)
	}
	want(replyOf(h.do(alice, http.MethodDelete, base+"/checkpoints/c1", "", "")), http.StatusNotFound, api.ErrCodeCheckpointNotFound, "deleted")
	if v := metricValue(t, h.reg, "pyexec_session_checkpoints_total", "outcome", api.ErrCodeTooManyCheckpoints); v != 1 {
		t.Errorf("too_many_checkpoints counted %v times, want 1", v)
	}
}

// reply is a response and its body.
type reply struct {
	resp *http.Response
	body []byte
}

func replyOf(resp *http.Response, body []byte) reply { return reply{resp, body} }

// waitBusy waits until session id says it runs a call.
func waitBusy(t *testing.T, h *harness, ctx context.Context, id string) {
	t.Helper()
	for range 200 {
		_, b := h.do(ctx, http.MethodGet, "/v1/sessions/"+id, "", "")
		var s api.Session
		if json.Unmarshal(b, &s) == nil && s.Busy {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the session never ran its call")
}
