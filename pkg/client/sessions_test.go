package client

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pyexec/pyexec/pkg/api"
)

func TestSessionPathEscapesTheID(t *testing.T) {
	for id, want := range map[string]string{
		"3f2a9c":      "/v1/sessions/3f2a9c/execute",
		"a/b":         "/v1/sessions/a%2Fb/execute",
		"x y?z#w%":    "/v1/sessions/x%20y%3Fz%23w%25/execute",
		"../info":     "/v1/sessions/..%2Finfo/execute",
		"sess-ü.v1_2": "/v1/sessions/sess-%C3%BC.v1_2/execute",
	} {
		got, err := sessionPath(id, "/execute")
		if err != nil || got != want {
			t.Errorf("sessionPath(%q) = %q, %v; want %q", id, got, err, want)
			continue
		}
		// The request line keeps the escaping: the id stays one segment.
		hreq, err := http.NewRequest(http.MethodPost, "http://pyexec"+got, nil)
		if err != nil {
			t.Fatal(err)
		}
		if hreq.URL.EscapedPath() != want || hreq.URL.RequestURI() != want {
			t.Errorf("id %q: the request goes to %q", id, hreq.URL.RequestURI())
		}
	}
	stream, _ := sessionPath("a/b", "/execute")
	if hreq, _ := http.NewRequest(http.MethodPost, "http://pyexec"+stream+"?stream=true", nil); hreq.URL.RequestURI() != "/v1/sessions/a%2Fb/execute?stream=true" {
		t.Errorf("streaming request goes to %q", hreq.URL.RequestURI())
	}
}

// An id that cannot name a session is refused before anything is sent: the client's socket
// does not exist, and the error is not ErrUnreachable.
func TestSessionIDsRefusedWithoutARequest(t *testing.T) {
	c := New(filepath.Join(t.TempDir(), "none.sock"))
	ctx := context.Background()
	for _, id := range []string{"", ".", ".."} {
		errs := map[string]error{}
		_, errs["Session"] = c.Session(ctx, id)
		errs["DeleteSession"] = c.DeleteSession(ctx, id)
		_, errs["SessionExecute"] = c.SessionExecute(ctx, id, api.ExecuteRequest{Code: "pass"})
		_, errs["SessionExecuteStream"] = c.SessionExecuteStream(ctx, id, api.ExecuteRequest{Code: "pass"}, nil)
		for name, err := range errs {
			if err == nil || errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "is not a session id") {
				t.Errorf("%s(%q): %v", name, id, err)
			}
		}
	}
	if _, err := c.SessionExecute(ctx, "abc", api.ExecuteRequest{Code: "pass"}); !errors.Is(err, ErrUnreachable) {
		t.Errorf("a valid id is sent: %v", err)
	}
}

// A file path is escaped segment by segment: its "/" separate segments, every other byte
// stays in its segment.
func TestSessionFilePath(t *testing.T) {
	for file, want := range map[string]string{
		"plot.png":          "/v1/sessions/a%2Fb/files/plot.png",
		"out/data v1%.csv":  "/v1/sessions/a%2Fb/files/out/data%20v1%25.csv",
		"d/e?f#g;h/..x/ü.y": "/v1/sessions/a%2Fb/files/d/e%3Ff%23g%3Bh/..x/%C3%BC.y",
	} {
		got, err := sessionFilePath("a/b", file)
		if err != nil || got != want {
			t.Errorf("sessionFilePath(%q) = %q, %v; want %q", file, got, err, want)
			continue
		}
		if hreq, err := http.NewRequest(http.MethodGet, "http://pyexec"+got, nil); err != nil || hreq.URL.RequestURI() != want {
			t.Errorf("file %q: the request goes to %v, %v", file, hreq.URL.RequestURI(), err)
		}
	}
	c := New(filepath.Join(t.TempDir(), "none.sock"))
	for _, file := range []string{"", ".", "..", "../x", "a/../b", "./a", "/etc/passwd", "a//b", "a/"} {
		if _, _, err := c.SessionFile(context.Background(), "s-1", file); err == nil || errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "is not a file path") {
			t.Errorf("SessionFile(%q): %v", file, err)
		}
	}
	if _, _, err := c.SessionFile(context.Background(), "..", "a"); err == nil || !strings.Contains(err.Error(), "is not a session id") {
		t.Errorf("SessionFile with id \"..\": %v", err)
	}
	if _, err := c.SessionFiles(context.Background(), "."); err == nil || !strings.Contains(err.Error(), "is not a session id") {
		t.Errorf("SessionFiles with id \".\": %v", err)
	}
	if _, _, err := c.SessionFile(context.Background(), "s-1", "a b"); !errors.Is(err, ErrUnreachable) {
		t.Errorf("a valid path is sent: %v", err)
	}
}

func TestDecodeError(t *testing.T) {
	tests := []struct {
		status int
		header http.Header
		body   string
		want   APIError
	}{
		{404, nil, `{"error":{"code":"session_not_found","message":"session abc ended: idle for 10m0s","request_id":"r1"}}`,
			APIError{Status: 404, Code: api.ErrCodeSessionNotFound, Message: "session abc ended: idle for 10m0s", RequestID: "r1"}},
		{409, nil, `{"error":{"code":"session_busy","message":"a call runs in session abc"}}`,
			APIError{Status: 409, Code: api.ErrCodeSessionBusy, Message: "a call runs in session abc"}},
		{429, nil, `{"error":{"code":"too_many_sessions","message":"8 sessions are open"}}`,
			APIError{Status: 429, Code: api.ErrCodeTooManySessions, Message: "8 sessions are open"}},
		{429, http.Header{"Retry-After": {"2"}}, `{"error":{"code":"queue_full","message":"queue full"}}`,
			APIError{Status: 429, Code: api.ErrCodeQueueFull, Message: "queue full", RetryAfter: 2 * time.Second}},
		{502, nil, "bad gateway\n", APIError{Status: 502, Code: api.ErrCodeInternal, Message: "bad gateway\n"}},
		{500, nil, `{"error":{}}`, APIError{Status: 500, Code: api.ErrCodeInternal, Message: `{"error":{}}`}},
	}
	for _, tt := range tests {
		if tt.header == nil {
			tt.header = http.Header{}
		}
		if got := decodeError(tt.status, tt.header, []byte(tt.body)); *got != tt.want {
			t.Errorf("%d %s: got %+v, want %+v", tt.status, tt.body, *got, tt.want)
		}
	}
}

func latencies(ms ...int) *BenchResult {
	r := &BenchResult{Elapsed: time.Second}
	for _, m := range ms {
		r.Latencies = append(r.Latencies, time.Duration(m)*time.Millisecond)
	}
	return r
}

func TestSessionBenchReport(t *testing.T) {
	stateless := latencies(10, 10, 12, 20)
	s := &SessionBenchResult{Calls: latencies(2, 3, 4, 9), Creates: latencies(30, 31, 40, 45, 50), Deletes: latencies(5, 6, 7, 8, 9)}
	s.Calls.Failed, s.Calls.FirstErr = 1, errors.New("boom")
	var b strings.Builder
	stateless.ReportAs(&b, "stateless ")
	s.Report(&b, stateless)
	want := "stateless executions: 4 ok, 0 failed in 1s\n" +
		"stateless latency: p50 10ms  p95 20ms  p99 20ms  max 20ms\n" +
		"stateless throughput: 4.0 executions/s\n" +
		"session executions: 4 ok, 1 failed in 1s\n" +
		"session latency: p50 3ms  p95 9ms  p99 9ms  max 9ms\n" +
		"session throughput: 4.0 executions/s\n" +
		"session first failure: boom\n" +
		"session create: p50 40ms  max 50ms  (delete p50 7ms; 5 created and deleted)\n" +
		"session p50 / stateless p50: 0.30\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	// Without a stateless run, or with no successful one, there is no ratio.
	for _, base := range []*BenchResult{nil, {}} {
		b.Reset()
		s.Report(&b, base)
		if strings.Contains(b.String(), "stateless") {
			t.Errorf("ratio against %+v:\n%s", base, b.String())
		}
	}
	// Without a label, Report is unchanged.
	b.Reset()
	stateless.Report(&b)
	if !strings.HasPrefix(b.String(), "executions: 4 ok, 0 failed in 1s\nlatency: p50 10ms") {
		t.Errorf("unlabelled report:\n%s", b.String())
	}
}

func TestExitedZero(t *testing.T) {
	reqErr := errors.New("request failed")
	for _, tt := range []struct {
		res  *api.ExecuteResult
		err  error
		want string // "" for nil
	}{
		{&api.ExecuteResult{Reason: api.ReasonExit}, nil, ""},
		{nil, reqErr, "request failed"},
		{&api.ExecuteResult{Reason: api.ReasonExit, ExitCode: 2, Stderr: "SystemExit"}, nil, "execution ended with reason exit, exit code 2: SystemExit"},
		{&api.ExecuteResult{Reason: api.ReasonTimeout, ExitCode: -1, SessionLost: true}, nil, "execution ended with reason timeout, exit code -1:  (the session was lost)"},
	} {
		err := exitedZero(tt.res, tt.err)
		if (err == nil) != (tt.want == "") || (err != nil && err.Error() != tt.want) {
			t.Errorf("exitedZero(%+v, %v) = %v, want %q", tt.res, tt.err, err, tt.want)
		}
	}
}

func TestBenchSessionRefusesNonPositive(t *testing.T) {
	c := New(filepath.Join(t.TempDir(), "none.sock"))
	for _, o := range []struct {
		opts    BenchOptions
		creates int
	}{{BenchOptions{Requests: 0, Concurrency: 1}, 5}, {BenchOptions{Requests: 1, Concurrency: 0}, 5}, {BenchOptions{Requests: 1, Concurrency: 1}, 0}} {
		if _, err := c.BenchSession(context.Background(), api.ExecuteRequest{Code: "pass"}, o.opts, o.creates); err == nil || errors.Is(err, ErrUnreachable) {
			t.Errorf("%+v creates %d: %v", o.opts, o.creates, err)
		}
	}
}

// WithOwner's owner goes with every request made with its context, and only with those.
func TestWithOwnerScopesEveryRequest(t *testing.T) {
	seen := map[string]string{}
	c := NewInProcess(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen[r.Method+" "+r.URL.EscapedPath()] = r.Header.Get(api.OwnerHeader)
		switch {
		case r.Method == http.MethodDelete:
			w.WriteHeader(http.StatusNoContent)
		case strings.HasSuffix(r.URL.Path, "/files/f.txt"):
			w.Write([]byte("x"))
		case r.URL.Path == "/v1/sessions" && r.Method == http.MethodGet:
			w.Write([]byte(`{"sessions": []}`))
		case strings.HasSuffix(r.URL.Path, "/variables"):
			w.Write([]byte(`{"variables": [], "total": 0, "truncated": false}`))
		case strings.HasSuffix(r.URL.Path, "/checkpoints") && r.Method == http.MethodGet:
			w.Write([]byte(`{"checkpoints": [{"checkpoint": "c1"}]}`))
		case strings.HasSuffix(r.URL.Path, "/checkpoints"):
			w.Write([]byte(`{"checkpoint": "c1"}`))
		default:
			w.Write([]byte(`{"id": "s-1", "files": []}`))
		}
	}))
	calls := func(ctx context.Context) {
		t.Helper()
		_, err1 := c.CreateSession(ctx, api.SessionRequest{})
		_, err2 := c.Sessions(ctx)
		_, err3 := c.Session(ctx, "s-1")
		_, err4 := c.SessionExecuteRaw(ctx, "s-1", api.ExecuteRequest{Code: "1"})
		_, err5 := c.SessionFiles(ctx, "s-1")
		_, _, err6 := c.SessionFile(ctx, "s-1", "f.txt")
		err7 := c.DeleteSession(ctx, "s-1")
		_, err8 := c.SessionVariables(ctx, "s-1")
		cp, err9 := c.Checkpoint(ctx, "s-1")
		l, err10 := c.Checkpoints(ctx, "s-1")
		_, err11 := c.RestoreCheckpoint(ctx, "s-1", "c1")
		err12 := c.DeleteCheckpoint(ctx, "s-1", "c/1")
		_, err13 := c.Fork(ctx, "s-1")
		if err := errors.Join(err1, err2, err3, err4, err5, err6, err7, err8, err9, err10, err11, err12, err13); err != nil {
			t.Fatal(err)
		}
		if cp.ID != "c1" || len(l.Checkpoints) != 1 {
			t.Fatalf("checkpoint %+v, list %+v", cp, l)
		}
	}
	calls(WithOwner(context.Background(), "user-42"))
	for _, req := range []string{"POST /v1/sessions/s-1/checkpoints", "GET /v1/sessions/s-1/checkpoints", "POST /v1/sessions/s-1/restore", "DELETE /v1/sessions/s-1/checkpoints/c%2F1", "POST /v1/sessions/s-1/fork"} {
		if _, ok := seen[req]; !ok {
			t.Errorf("no %s among %v", req, seen)
		}
	}
	if len(seen) != 13 {
		t.Fatalf("requests: %v", seen)
	}
	for req, owner := range seen {
		if owner != "user-42" {
			t.Errorf("%s: owner %q", req, owner)
		}
	}
	calls(context.Background())
	for req, owner := range seen {
		if owner != "" {
			t.Errorf("%s without an owner: sent %q", req, owner)
		}
	}
}

// New("") is the socket of $PYEXEC_SOCKET, else the default one.
func TestNewReadsTheSocketFromTheEnvironment(t *testing.T) {
	t.Setenv(SocketEnv, "/run/app/pyexec.sock")
	if got := New("").Socket(); got != "/run/app/pyexec.sock" {
		t.Errorf("with %s set: %q", SocketEnv, got)
	}
	if got := New("/given.sock").Socket(); got != "/given.sock" {
		t.Errorf("a path given: %q", got)
	}
	t.Setenv(SocketEnv, "")
	if got := New("").Socket(); got != DefaultSocket {
		t.Errorf("without %s: %q", SocketEnv, got)
	}
}
