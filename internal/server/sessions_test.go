package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/pyexec/pyexec/internal/confine"
	"github.com/pyexec/pyexec/internal/executor"
	"github.com/pyexec/pyexec/internal/testutil"
	"github.com/pyexec/pyexec/pkg/api"
)

// sessionHarness serves with a real spawn executor, confined as far as the kernel allows, and
// room for max sessions; edit changes the limits of testLimits.
func sessionHarness(t *testing.T, max int, edit ...func(*api.Limits)) (*harness, string) {
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
	for _, e := range edit {
		e(&cfg.Limits)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, cfg, executor.InProcess{LocalStarter: ex}, true)
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
	// The interpreter ends between calls — at rest, only from outside, as the OOM killer would.
	_, b := h.sessionCall(gone.ID, `{"code": "import os\nprint(os.getpid(), end='')"}`)
	var res api.ExecuteResult
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(res.Stdout)
	if err != nil {
		t.Fatalf("the interpreter's pid: %s", b)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
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

// A call that passes the session's memory limit loses the session, which ended for its memory:
// so its 404 and pyexec_sessions_ended_total say, not that its interpreter exited.
func TestSessionEndedForItsMemory(t *testing.T) {
	h, _ := sessionHarness(t, 4)
	sess := h.createSession(`{"memory_limit_mb": 64}`)
	_, b := h.sessionCall(sess.ID, `{"code": "import time\nx = b'x' * (256 << 20)\ntime.sleep(10)"}`)
	var res api.ExecuteResult
	if err := json.Unmarshal(b, &res); err != nil || res.Reason != api.ReasonMemoryLimit || !res.SessionLost {
		t.Fatalf("a call past its session's memory limit: %s", b)
	}
	resp, b := h.sessionCall(sess.ID, `{"code": "1"}`)
	wantError(t, resp, b, 404, api.ErrCodeSessionNotFound, "its memory")
	if metricValue(t, h.reg, "pyexec_sessions_ended_total", "reason", sessionMemory) != 1 || metricValue(t, h.reg, "pyexec_sessions_ended_total", "reason", sessionExited) != 0 {
		t.Error("the session's end is not counted as memory_limit")
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

// The files of a session's working directory: listed (regular files only, sorted, in
// subdirectories) and read back byte for byte; what is not a regular file of it is 404
// file_not_found, a path that leaves it 400, a file over max_file_bytes 413. A FIFO the code
// made answers 404 at once.
func TestSessionFiles(t *testing.T) {
	const maxFile = 4096
	h, _ := sessionHarness(t, 4, func(l *api.Limits) { l.MaxFileBytes = maxFile })
	// The code cannot write a file over max_file_bytes (RLIMIT_FSIZE); an input file can be
	// larger (it is capped by max_request_bytes only).
	big := bytes.Repeat([]byte("b"), maxFile+1)
	s := h.createSession(`{"files": [{"path": "big.bin", "content_base64": "` + base64.StdEncoding.EncodeToString(big) + `"}]}`)
	code := `import os
os.makedirs('out/sub')
open('out/data.csv', 'w').write('a,b\n1,2\n')
open('out/plot.png', 'wb').write(bytes(range(256)) * 3)
open('out/a b%.txt', 'w').write('spaced')
open('out/sub/raw', 'wb').write(b'\x00raw')
open('edge.bin', 'wb').write(b'e' * 4096)
os.makedirs('emptydir')
os.symlink('/etc/passwd', 'passwd')
os.symlink('out', 'outlink')
os.mkfifo('fifo')
try:
    open('over.bin', 'wb').write(b'o' * 4097)
except OSError as e:
    print(type(e).__name__)`
	body, _ := json.Marshal(api.ExecuteRequest{Code: code})
	resp, b := h.sessionCall(s.ID, string(body))
	if res := decodeResult(t, b); resp.StatusCode != 200 || res.ExitCode != 0 {
		t.Fatalf("the call: %d %s", resp.StatusCode, b)
	}

	resp, b = h.do(context.Background(), http.MethodGet, "/v1/sessions/"+s.ID+"/files", "", "")
	var list api.SessionFiles
	if err := json.Unmarshal(b, &list); err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("list: %d %s", resp.StatusCode, b)
	}
	// over.bin was cut at max_file_bytes by RLIMIT_FSIZE.
	want := []api.SessionFile{{Path: "big.bin", Size: maxFile + 1}, {Path: "edge.bin", Size: maxFile}, {Path: "out/a b%.txt", Size: 6},
		{Path: "out/data.csv", Size: 8}, {Path: "out/plot.png", Size: 768}, {Path: "out/sub/raw", Size: 4}, {Path: "over.bin", Size: maxFile}}
	if len(list.Files) != len(want) || list.Truncated {
		t.Fatalf("list: %s", b)
	}
	for i, f := range list.Files {
		if f.Path != want[i].Path || f.Size != want[i].Size || time.Since(f.ModifiedAt) > time.Minute || f.ModifiedAt.Location() != time.UTC {
			t.Errorf("files[%d] = %+v, want %+v modified now", i, f, want[i])
		}
	}

	get := func(p string) (*http.Response, []byte) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return h.do(ctx, http.MethodGet, "/v1/sessions/"+s.ID+"/files/"+p, "", "")
	}
	for _, tt := range []struct {
		path, ctype string
		want        []byte
	}{
		{"out/plot.png", "image/png", bytes.Repeat(func() []byte {
			b := make([]byte, 256)
			for i := range b {
				b[i] = byte(i)
			}
			return b
		}(), 3)},
		{"out/a%20b%25.txt", "text/plain; charset=utf-8", []byte("spaced")},
		{"out/sub/raw", "application/octet-stream", []byte("\x00raw")},
		{"out/./sub//raw", "application/octet-stream", []byte("\x00raw")},
		{"edge.bin", "", bytes.Repeat([]byte("e"), maxFile)}, // at the limit
	} {
		resp, b := get(tt.path)
		if resp.StatusCode != 200 || !bytes.Equal(b, tt.want) || resp.Header.Get("Content-Length") != strconv.Itoa(len(tt.want)) ||
			(tt.ctype != "" && resp.Header.Get("Content-Type") != tt.ctype) || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: %d %v %q", tt.path, resp.StatusCode, resp.Header, b)
		}
	}
	for _, p := range []string{"nope.txt", "out", "emptydir", "passwd", "outlink/plot.png", "out/sub/raw/x", "fifo", "out/nope/x"} {
		begun := time.Now()
		resp, b := get(p)
		wantError(t, resp, b, 404, api.ErrCodeFileNotFound, "is not a regular file")
		if d := time.Since(begun); d > 2*time.Second {
			t.Errorf("%s: answered after %v", p, d)
		}
	}
	for p, msg := range map[string]string{"../x": `".." segment`, "%2E%2E/x": `".." segment`, "out/../../x": `".." segment`,
		"": "must not be empty", "/etc/passwd": "is absolute", "out/%00": "NUL"} {
		resp, b := get(p)
		wantError(t, resp, b, 400, api.ErrCodeBadRequest, msg)
	}
	resp, b = get("big.bin")
	wantError(t, resp, b, http.StatusRequestEntityTooLarge, api.ErrCodeTooLarge, "larger than max_file_bytes (4096 bytes)")

	resp, b = h.do(context.Background(), http.MethodPost, "/v1/sessions/"+s.ID+"/files", "", "")
	wantError(t, resp, b, http.StatusMethodNotAllowed, api.ErrCodeMethodNotAllowed, "GET")
	resp, b = h.do(context.Background(), http.MethodDelete, "/v1/sessions/"+s.ID+"/files/edge.bin", "", "")
	wantError(t, resp, b, http.StatusMethodNotAllowed, api.ErrCodeMethodNotAllowed, "GET")
	for _, p := range []string{"/v1/sessions/s-unknown/files", "/v1/sessions/s-unknown/files/edge.bin"} {
		resp, b := h.do(context.Background(), http.MethodGet, p, "", "")
		wantError(t, resp, b, 404, api.ErrCodeSessionNotFound, "no such session")
	}
	h.do(context.Background(), http.MethodDelete, "/v1/sessions/"+s.ID, "", "")
	for _, p := range []string{"/files", "/files/edge.bin"} {
		resp, b := h.do(context.Background(), http.MethodGet, "/v1/sessions/"+s.ID+p, "", "")
		wantError(t, resp, b, 404, api.ErrCodeSessionNotFound, "deleted")
	}
}

// While a call runs, its code swaps a regular file, a symlink to /etc/passwd and a FIFO under
// one name, and a directory and a symlink to /etc on the way to another, as fast as it can:
// every read of them answers at once, the file's own bytes or 404, never what lies outside.
func TestSessionFilesSwappedUnderTheServer(t *testing.T) {
	h, _ := sessionHarness(t, 4)
	s := h.createSession(`{}`)
	code := `import os, shutil, time
def remove(p):
    if os.path.isdir(p) and not os.path.islink(p):
        shutil.rmtree(p)
    elif os.path.lexists(p):
        os.unlink(p)
def place(name, make):
    remove('tmp')
    make('tmp')
    try:
        os.replace('tmp', name)
    except OSError: # a directory for a symlink, or the other way round
        os.rename(name, 'old')
        os.rename('tmp', name)
        remove('old')
def regular(p):
    open(p, 'w').write('mine')
def fakedir(p):
    os.mkdir(p)
    open(p + '/passwd', 'w').write('mine')
makers = [regular, lambda p: os.symlink('/etc/passwd', p), os.mkfifo]
dirs = [fakedir, lambda p: os.symlink('/etc', p)]
end, n = time.time() + 3, 0
while time.time() < end:
    place('swap', makers[n % 3])
    place('d', dirs[n % 2])
    n += 1
print(n)`
	body, _ := json.Marshal(api.ExecuteRequest{Code: code})
	done := make(chan api.ExecuteResult, 1)
	go func() {
		_, b := h.sessionCall(s.ID, string(body))
		done <- decodeResult(t, b)
	}()
	waitFor(t, "the call to run", func() bool {
		_, b := h.do(context.Background(), http.MethodGet, "/v1/sessions/"+s.ID, "", "")
		return strings.Contains(string(b), `"busy":true`)
	})
	counts := map[string]int{}
	for running := true; running; {
		select {
		case res := <-done:
			if res.ExitCode != 0 || res.Stdout == "" {
				t.Fatalf("the swapping call: %+v", res)
			}
			t.Logf("%s swaps; answers: %v", strings.TrimSpace(res.Stdout), counts)
			running = false
			continue
		default:
		}
		for _, p := range []string{"/files/swap", "/files/d/passwd", "/files"} {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			resp, b := h.do(ctx, http.MethodGet, "/v1/sessions/"+s.ID+p, "", "")
			cancel()
			counts[p+" "+strconv.Itoa(resp.StatusCode)]++
			switch {
			case p == "/files" && resp.StatusCode == 200:
			case resp.StatusCode == 200 && string(b) == "mine":
			case resp.StatusCode == 404 && errorBody(t, b).Code == api.ErrCodeFileNotFound:
			default:
				t.Fatalf("%s: %d %q", p, resp.StatusCode, b)
			}
		}
	}
	if counts["/files/swap 200"] == 0 || counts["/files/swap 404"] == 0 {
		t.Logf("one kind of answer never came (timing): %v", counts)
	}
}

// With api.OwnerHeader a request sees only its owner's sessions: another owner's, or one of
// none, is not found by any endpoint, not listed, not called, not deleted, its files not read,
// and its end not told; without the header the application sees them all. Bad keys get 400.
func TestSessionOwners(t *testing.T) {
	h, _ := sessionHarness(t, 4)
	create := func(ctx context.Context) api.Session {
		t.Helper()
		resp, b := h.do(ctx, http.MethodPost, "/v1/sessions", "application/json",
			`{"files": [{"path": "secret.txt", "content_base64": "`+base64.StdEncoding.EncodeToString([]byte("alice's"))+`"}]}`)
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("create: %d %s", resp.StatusCode, b)
		}
		var s api.Session
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	alice, bob := as("alice"), as("bob")
	a, none := create(alice), create(context.Background())
	if a.Owner != "alice" || none.Owner != "" {
		t.Fatalf("owners as created: %q, %q", a.Owner, none.Owner)
	}
	list := func(ctx context.Context) []string {
		t.Helper()
		resp, b := h.do(ctx, http.MethodGet, "/v1/sessions", "", "")
		var l api.SessionList
		if err := json.Unmarshal(b, &l); err != nil || resp.StatusCode != 200 {
			t.Fatalf("list: %d %s", resp.StatusCode, b)
		}
		var ids []string
		for _, s := range l.Sessions {
			ids = append(ids, s.ID+"="+s.Owner)
		}
		return ids
	}
	if got := strings.Join(list(alice), ","); got != a.ID+"=alice" {
		t.Errorf("alice lists %s", got)
	}
	if got := list(bob); len(got) != 0 {
		t.Errorf("bob lists %v", got)
	}
	if got := list(context.Background()); len(got) != 2 {
		t.Errorf("the application lists %v; want both", got)
	}
	// Bob reaches neither alice's session nor the one of no owner, by any endpoint.
	for _, id := range []string{a.ID, none.ID} {
		for _, c := range []struct{ method, path, body string }{
			{http.MethodGet, "/v1/sessions/" + id, ""},
			{http.MethodPost, "/v1/sessions/" + id + "/execute", `{"code": "print(open('secret.txt').read())"}`},
			{http.MethodGet, "/v1/sessions/" + id + "/files", ""},
			{http.MethodGet, "/v1/sessions/" + id + "/files/secret.txt", ""},
			{http.MethodDelete, "/v1/sessions/" + id, ""},
		} {
			ct := ""
			if c.body != "" {
				ct = "application/json"
			}
			resp, b := h.do(bob, c.method, c.path, ct, c.body)
			wantError(t, resp, b, 404, api.ErrCodeSessionNotFound, "no such session")
		}
	}
	// Alice reaches hers, and the application everything.
	resp, b := h.do(alice, http.MethodPost, "/v1/sessions/"+a.ID+"/execute", "application/json", `{"code": "print(open('secret.txt').read())"}`)
	if res := decodeResult(t, b); resp.StatusCode != 200 || res.Stdout != "alice's\n" {
		t.Fatalf("alice's call: %d %s", resp.StatusCode, b)
	}
	resp, b = h.do(alice, http.MethodGet, "/v1/sessions/"+none.ID, "", "")
	wantError(t, resp, b, 404, api.ErrCodeSessionNotFound, "no such session")
	if resp, b := h.do(context.Background(), http.MethodGet, "/v1/sessions/"+a.ID+"/files/secret.txt", "", ""); resp.StatusCode != 200 || string(b) != "alice's" {
		t.Fatalf("the application reads alice's file: %d %q", resp.StatusCode, b)
	}
	// Once ended, the session's end is told to its owner only.
	if resp, _ := h.do(alice, http.MethodDelete, "/v1/sessions/"+a.ID, "", ""); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("alice's delete: %d", resp.StatusCode)
	}
	resp, b = h.do(alice, http.MethodGet, "/v1/sessions/"+a.ID, "", "")
	wantError(t, resp, b, 404, api.ErrCodeSessionNotFound, "has ended (deleted)")
	resp, b = h.do(bob, http.MethodGet, "/v1/sessions/"+a.ID, "", "")
	wantError(t, resp, b, 404, api.ErrCodeSessionNotFound, "no such session")
	// Bad keys.
	for _, bad := range []context.Context{as(""), as("caf\u00e9"), as(strings.Repeat("k", api.MaxOwnerBytes+1)), as("a", "b")} {
		resp, b := h.do(bad, http.MethodGet, "/v1/sessions", "", "")
		wantError(t, resp, b, 400, api.ErrCodeBadRequest, api.OwnerHeader)
		resp, b = h.do(bad, http.MethodPost, "/v1/sessions", "", "")
		wantError(t, resp, b, 400, api.ErrCodeBadRequest, api.OwnerHeader)
		resp, b = h.do(bad, http.MethodGet, "/v1/sessions/"+none.ID, "", "")
		wantError(t, resp, b, 400, api.ErrCodeBadRequest, api.OwnerHeader)
	}
}

// GET /v1/sessions/{id}/variables lists the user's globals with their types and sizes,
// without modules and "_" names, as no call of the session's; a method that takes too long is
// cut off and said so, the rest listed; a call running makes it 409; another owner gets 404.
func TestSessionVariables(t *testing.T) {
	h, _ := sessionHarness(t, 4)
	s := h.createSession("")
	resp, b := h.sessionCall(s.ID, `{"code": "import os, json\nx = 42\nname = 'ab'\nitems = list(range(100000))\n_hidden = 1\nclass Slow:\n    def __repr__(self):\n        import time\n        time.sleep(1)\n        return 'slow'\nslow = Slow()\nclass Fake:\n    __class__ = int\nfake = Fake()"}`)
	if resp.StatusCode != 200 || decodeResult(t, b).ExitCode != 0 {
		t.Fatalf("setup: %d %s", resp.StatusCode, b)
	}
	start := time.Now()
	resp, b = h.do(context.Background(), http.MethodGet, "/v1/sessions/"+s.ID+"/variables", "", "")
	took := time.Since(start)
	var v api.Variables
	if err := json.Unmarshal(b, &v); err != nil || resp.StatusCode != 200 {
		t.Fatalf("variables: %d %s", resp.StatusCode, b)
	}
	byName := map[string]api.Variable{}
	var names []string
	for _, x := range v.Variables {
		byName[x.Name] = x
		names = append(names, x.Name)
	}
	if got := strings.Join(names, ","); got != "Fake,Slow,fake,items,name,slow,x" || v.Total != 7 || v.Truncated {
		t.Fatalf("listed %s (total %d, truncated %v); want the globals without modules and _ names", got, v.Total, v.Truncated)
	}
	if x := byName["x"]; x.Type != "int" || x.Repr != "42" || x.Bytes == nil {
		t.Errorf("x: %+v", x)
	}
	if items := byName["items"]; items.Type != "list" || items.Len == nil || *items.Len != 100000 || len(items.Repr) > 200 || !strings.HasSuffix(items.Repr, "...]") {
		t.Errorf("items: %+v", items)
	}
	if slow := byName["slow"]; !slow.TimedOut || !strings.Contains(slow.Repr, "longer than") {
		t.Errorf("slow: %+v", slow)
	}
	if fake := byName["fake"]; fake.Type != "__main__.Fake" {
		t.Errorf("fake (its __class__ says int): %+v", fake)
	}
	if took > time.Second {
		t.Errorf("the listing took %v: the slow repr was not cut off", took)
	}
	if got, _ := h.do(context.Background(), http.MethodGet, "/v1/sessions/"+s.ID, "", ""); got.StatusCode != 200 {
		t.Fatal("the session is gone")
	}
	var info api.Session
	_, b = h.do(context.Background(), http.MethodGet, "/v1/sessions/"+s.ID, "", "")
	if err := json.Unmarshal(b, &info); err != nil || info.Executions != 1 {
		t.Errorf("the listing counted as a call: %s", b)
	}
	// Busy while a call runs.
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.sessionCall(s.ID, `{"code": "import time\ntime.sleep(1)"}`)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for info.Busy = false; !info.Busy && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		_, b = h.do(context.Background(), http.MethodGet, "/v1/sessions/"+s.ID, "", "")
		_ = json.Unmarshal(b, &info)
	}
	resp, b = h.do(context.Background(), http.MethodGet, "/v1/sessions/"+s.ID+"/variables", "", "")
	wantError(t, resp, b, http.StatusConflict, api.ErrCodeSessionBusy, "running a call")
	<-done
	resp, b = h.do(as("bob"), http.MethodGet, "/v1/sessions/"+s.ID+"/variables", "", "")
	wantError(t, resp, b, 404, api.ErrCodeSessionNotFound, "no such session")
}

// A __repr__ that ignores every interrupt (it ignores SIGALRM and SIGINT, then spins) is
// killed with its session after the listing's time bound: the listing says so, and the
// session is gone.
func TestSessionVariablesOfCodeThatWillNotStop(t *testing.T) {
	h, _ := sessionHarness(t, 4)
	s := h.createSession("")
	resp, b := h.sessionCall(s.ID, `{"code": "import signal\nclass Stubborn:\n    def __repr__(self):\n        signal.signal(signal.SIGALRM, signal.SIG_IGN)\n        signal.signal(signal.SIGINT, signal.SIG_IGN)\n        while True:\n            pass\nstubborn = Stubborn()"}`)
	if resp.StatusCode != 200 {
		t.Fatalf("setup: %d %s", resp.StatusCode, b)
	}
	start := time.Now()
	resp, b = h.do(context.Background(), http.MethodGet, "/v1/sessions/"+s.ID+"/variables", "", "")
	took := time.Since(start)
	wantError(t, resp, b, http.StatusInternalServerError, api.ErrCodeInternal, "the session was lost")
	if took > variablesTimeout+5*time.Second {
		t.Errorf("the listing took %v", took)
	}
	resp, b = h.sessionCall(s.ID, `{"code": "1"}`)
	wantError(t, resp, b, 404, api.ErrCodeSessionNotFound, "has ended")
}

// A large listing (1,000 variables of 200 characters, half of them of four bytes each, and a
// name with a lone surrogate) comes whole: UTF-8 within its cap, the surrogate escaped.
func TestSessionVariablesLargeListing(t *testing.T) {
	h, _ := sessionHarness(t, 4)
	s := h.createSession("")
	resp, b := h.sessionCall(s.ID, `{"code": "for i in range(1000):\n    globals()['v%04d' % i] = '\\U0001F600' * 300 if i % 2 else 'x' * 300\nglobals()['odd\\udcff'] = 1\ndel i"}`)
	if resp.StatusCode != 200 || decodeResult(t, b).ExitCode != 0 {
		t.Fatalf("setup: %d %s", resp.StatusCode, b)
	}
	resp, b = h.do(context.Background(), http.MethodGet, "/v1/sessions/"+s.ID+"/variables", "", "")
	var v api.Variables
	if err := json.Unmarshal(b, &v); err != nil || resp.StatusCode != 200 {
		t.Fatalf("variables: %d %.300s", resp.StatusCode, b)
	}
	if len(v.Variables) != 1000 || v.Total != 1001 || !v.Truncated || v.Variables[2].Name != "v0001" || !strings.HasPrefix(v.Variables[2].Repr, "'\U0001F600") ||
		!strings.HasPrefix(v.Variables[0].Name, "odd") {
		t.Errorf("%d listed of %d (truncated %v); the first: %+v; the third: %.40q", len(v.Variables), v.Total, v.Truncated, v.Variables[0], v.Variables[2].Repr)
	}
	t.Logf("a listing of %d bytes", len(b))
}
