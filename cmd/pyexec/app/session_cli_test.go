package app

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pyexec/pyexec/pkg/api"
	"github.com/pyexec/pyexec/pkg/client"
)

// parseRun parses a run command line without running it.
func parseRun(t *testing.T, vars map[string]string, args ...string) *RunConfig {
	t.Helper()
	var got *RunConfig
	var out strings.Builder
	root := NewRootCommand(IO{Stdout: &out, Stderr: &out, LookupEnv: env(vars)}, Runners{
		Run: func(_ context.Context, c *RunConfig) error { got = c; return nil },
	})
	root.SetArgs(append([]string{"run"}, args...))
	if err := root.Execute(); err != nil {
		t.Fatalf("run %v: %v: %s", args, err, out.String())
	}
	return got
}

func TestRunSessionFlag(t *testing.T) {
	if got := parseRun(t, nil, "--session", "a/b 1", "--stream", "-c", "x"); got.Session != "a/b 1" || !got.Stream || got.Code != "x" {
		t.Errorf("--session: %+v", got)
	}
	if got := parseRun(t, map[string]string{"PYEXEC_SESSION": "s1"}, "-c", "x"); got.Session != "s1" {
		t.Errorf("PYEXEC_SESSION: %+v", got)
	}
	if got := parseRun(t, nil, "-c", "x"); got.Session != "" {
		t.Errorf("no --session: %+v", got)
	}
	for _, cmd := range []string{"run", "bench"} {
		if r := run(t, nil, cmd, "--help"); r.code != ExitOK || !strings.Contains(r.stdout, "--session") || !strings.Contains(r.stdout, "With --session") {
			t.Errorf("%s --help does not document --session: %q", cmd, r.stdout)
		}
	}
}

// `pyexec run --session` against a real server: state persists between calls, streamed or
// not; errors of the session endpoints exit 125 with their code; a timeout the code stops for
// keeps the session, one it does not stop for loses it.
func TestPyexecRunSession(t *testing.T) {
	s := startSidecar(t, nil)
	ctx := context.Background()
	sess, err := s.client.CreateSession(ctx, api.SessionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	runIn := func(args ...string) result {
		t.Helper()
		return run(t, nil, append([]string{"run", "--socket", s.socket, "--session", sess.ID}, args...)...)
	}
	steps := []struct {
		args           []string
		code           int
		stdout, stderr string
	}{
		{[]string{"-c", "x = 41\nimport json"}, 0, "", ""},
		{[]string{"-c", "print(x + 1, json.dumps([1]))"}, 0, "42 [1]\n", ""},
		{[]string{"--stream", "-c", "x += 1\nprint(x)"}, 0, "42\n", ""},
		{[]string{"-c", "import sys\nprint('bad', file=sys.stderr)\nsys.exit(3)"}, 3, "", "bad\n"},
	}
	for _, tt := range steps {
		if r := runIn(tt.args...); r.code != tt.code || r.stdout != tt.stdout || r.stderr != tt.stderr {
			t.Fatalf("run --session %q: exit %d stdout %q stderr %q; want %d %q %q", tt.args, r.code, r.stdout, r.stderr, tt.code, tt.stdout, tt.stderr)
		}
	}
	if got, err := s.client.Session(ctx, sess.ID); err != nil || got.Executions != len(steps) {
		t.Fatalf("after %d calls: %+v, %v", len(steps), got, err)
	}

	// A second call while one runs: session_busy.
	done := make(chan result, 1)
	go func() { done <- runIn("-c", "import time\ntime.sleep(2)\nprint('slept')") }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := s.client.Session(ctx, sess.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Busy {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the session never got busy")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r := runIn("-c", "pass"); r.code != ExitRunFailed || !strings.Contains(r.stderr, api.ErrCodeSessionBusy) {
		t.Errorf("busy: exit %d stderr %q", r.code, r.stderr)
	}
	if r := <-done; r.code != 0 || r.stdout != "slept\n" {
		t.Errorf("the call that ran: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}

	// A timeout the code stops for: the session stays.
	if r := runIn("--timeout", "1s", "-c", "import time\ntime.sleep(60)"); r.code != ExitRunTimeout || !strings.Contains(r.stderr, "pyexec: interrupted after the time limit\n") || strings.Contains(r.stderr, "ended with this call") {
		t.Errorf("interrupted: exit %d stderr %q", r.code, r.stderr)
	}
	if r := runIn("-c", "print(x)"); r.code != 0 || r.stdout != "42\n" {
		t.Errorf("after the interrupt: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}

	// One it does not stop for: the session is lost, and later calls get session_not_found.
	stubborn := "import time\nwhile True:\n    try:\n        time.sleep(60)\n    except KeyboardInterrupt:\n        pass"
	if r := runIn("--timeout", "1s", "-c", stubborn); r.code != ExitRunTimeout || !strings.Contains(r.stderr, "pyexec: session "+sess.ID+" ended with this call\n") || !strings.Contains(r.stderr, "killed after the time limit") {
		t.Errorf("lost: exit %d stderr %q", r.code, r.stderr)
	}
	for _, args := range [][]string{{"-c", "pass"}, {"--stream", "-c", "pass"}} {
		if r := runIn(args...); r.code != ExitRunFailed || !strings.Contains(r.stderr, "404 "+api.ErrCodeSessionNotFound) {
			t.Errorf("%q after the loss: exit %d stderr %q", args, r.code, r.stderr)
		}
	}
	unknown := run(t, nil, "run", "--socket", s.socket, "--session", "no/such session", "-c", "pass")
	if unknown.code != ExitRunFailed || !strings.Contains(unknown.stderr, "404 "+api.ErrCodeSessionNotFound) {
		t.Errorf("unknown session: exit %d stderr %q", unknown.code, unknown.stderr)
	}
}

// `pyexec bench --session` prints the stateless and the session figures of one run, each line
// labelled, and deletes its sessions.
func TestPyexecBenchSession(t *testing.T) {
	s := startSidecar(t, nil)
	r := run(t, nil, "bench", "--socket", s.socket, "--session", "-n", "10", "-c", "2", "--warmup", "1")
	for _, want := range []string{"stateless executions: 10 ok, 0 failed", "stateless latency: p50 ", "stateless throughput: ",
		"session executions: 10 ok, 0 failed", "session latency: p50 ", "session throughput: ",
		"session create: p50 ", "5 created and deleted)", "session p50 / stateless p50: "} {
		if r.code != ExitOK || !strings.Contains(r.stdout, want) {
			t.Fatalf("no %q: exit %d stdout %q stderr %q", want, r.code, r.stdout, r.stderr)
		}
	}
	if strings.Contains(r.stdout, "\nexecutions:") || strings.HasPrefix(r.stdout, "executions:") {
		t.Errorf("an unlabelled line: %q", r.stdout)
	}
	if l, err := s.client.Sessions(context.Background()); err != nil || len(l.Sessions) != 0 {
		t.Errorf("sessions left open: %+v, %v", l, err)
	}
}

// The client's SessionFiles and SessionFile against a real sidecar: the files a call wrote,
// names with spaces and "%" included, are listed and read back; a symlink is file_not_found,
// a file over --max-file-bytes too_large, a path that leaves the work dir refused unsent.
func TestPyexecSessionFiles(t *testing.T) {
	s := startSidecar(t, nil, "--max-file-bytes", "4096")
	ctx := context.Background()
	big := bytes.Repeat([]byte("b"), 4097) // an input file; the code cannot write one this large
	sess, err := s.client.CreateSession(ctx, api.SessionRequest{Files: []api.InputFile{{Path: "big.bin", ContentBase64: base64.StdEncoding.EncodeToString(big)}}})
	if err != nil {
		t.Fatal(err)
	}
	code := "import os\nos.makedirs('out/x y')\nopen('out/x y/data 100%.csv', 'w').write('a,b\\n1,2\\n')\n" +
		"open('out/plot.png', 'wb').write(b'\\x89PNG\\r\\n')\nos.symlink('/etc/passwd', 'passwd')"
	if res, err := s.client.SessionExecute(ctx, sess.ID, api.ExecuteRequest{Code: code}); err != nil || res.ExitCode != 0 {
		t.Fatalf("the call: %+v, %v", res, err)
	}
	list, err := s.client.SessionFiles(ctx, sess.ID)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, f := range list.Files {
		paths = append(paths, f.Path)
	}
	if strings.Join(paths, "|") != "big.bin|out/plot.png|out/x y/data 100%.csv" || list.Truncated || list.Files[2].Size != 8 {
		t.Fatalf("files: %+v", list)
	}
	for _, tt := range []struct{ path, want, ctype string }{
		{"out/x y/data 100%.csv", "a,b\n1,2\n", ""},
		{"out/plot.png", "\x89PNG\r\n", "image/png"},
	} {
		data, ctype, err := s.client.SessionFile(ctx, sess.ID, tt.path)
		if err != nil || string(data) != tt.want || ctype == "" || (tt.ctype != "" && ctype != tt.ctype) {
			t.Errorf("%s: %q %q %v", tt.path, data, ctype, err)
		}
	}
	for _, tt := range []struct{ id, path, code string }{
		{sess.ID, "passwd", api.ErrCodeFileNotFound},
		{sess.ID, "out/x y", api.ErrCodeFileNotFound},
		{sess.ID, "big.bin", api.ErrCodeTooLarge},
		{"s-unknown", "out/plot.png", api.ErrCodeSessionNotFound},
	} {
		var apiErr *client.APIError
		if _, _, err := s.client.SessionFile(ctx, tt.id, tt.path); !errors.As(err, &apiErr) || apiErr.Code != tt.code {
			t.Errorf("%s %s: %v; want %s", tt.id, tt.path, err, tt.code)
		}
	}
	if _, _, err := s.client.SessionFile(ctx, sess.ID, "../passwd"); err == nil || !strings.Contains(err.Error(), "is not a file path") {
		t.Errorf("../passwd: %v", err)
	}
	if _, err := s.client.SessionFiles(ctx, "s-unknown"); err == nil || !strings.Contains(err.Error(), api.ErrCodeSessionNotFound) {
		t.Errorf("the files of an unknown session: %v", err)
	}
}

// `pyexec session create|list|delete` against a real sidecar, as an owner and as the
// application; `pyexec run` prints the last expression's value and, with --outputs, writes
// each figure as figure-N.png without writing over a file that is there.
func TestPyexecSessionCommandsAndRunOutputs(t *testing.T) {
	s := startSidecar(t, nil)
	sock := []string{"--socket", s.socket}
	r := run(t, nil, append([]string{"session", "create", "--owner", "alice", "--idle-timeout", "90s"}, sock...)...)
	id := strings.TrimSpace(r.stdout)
	if r.code != ExitOK || !strings.HasPrefix(id, "s-") {
		t.Fatalf("session create: %+v", r)
	}
	if r := run(t, nil, append([]string{"run", "--session", id, "-c", "x = 20\nx * 2 + 2"}, sock...)...); r.code != ExitOK || r.stdout != "42\n" {
		t.Errorf("run in the session, its last expression: %+v", r)
	}
	if r := run(t, nil, append([]string{"session", "list", "--owner", "alice"}, sock...)...); r.code != ExitOK ||
		!strings.Contains(r.stdout, id) || !strings.Contains(r.stdout, "alice") || !strings.HasPrefix(r.stdout, "ID ") {
		t.Errorf("session list as alice: %+v", r)
	}
	if r := run(t, nil, append([]string{"session", "list", "--owner", "bob", "--json"}, sock...)...); r.code != ExitOK || strings.TrimSpace(r.stdout) != "{\n  \"sessions\": []\n}" {
		t.Errorf("session list as bob: %+v", r)
	}
	// Checkpoint, spoil, restore, list, let go.
	if r := run(t, nil, append([]string{"session", "checkpoint", "--owner", "alice", id}, sock...)...); r.code != ExitOK || r.stdout != "c1\n" {
		t.Errorf("session checkpoint: %+v", r)
	}
	run(t, nil, append([]string{"run", "--session", id, "-c", "x = 0"}, sock...)...)
	if r := run(t, nil, append([]string{"session", "restore", "--owner", "alice", id, "c1"}, sock...)...); r.code != ExitOK || r.stdout != id+" restored to c1\n" {
		t.Errorf("session restore: %+v", r)
	}
	if r := run(t, nil, append([]string{"run", "--session", id, "-c", "x"}, sock...)...); r.stdout != "20\n" {
		t.Errorf("x after the restore: %+v", r)
	}
	if r := run(t, nil, append([]string{"session", "checkpoints", id}, sock...)...); r.code != ExitOK || !strings.HasPrefix(r.stdout, "CHECKPOINT ") || !strings.Contains(r.stdout, "\nc1 ") {
		t.Errorf("session checkpoints: %+v", r)
	}
	if r := run(t, nil, append([]string{"session", "restore", "--owner", "bob", id, "c1"}, sock...)...); r.code != ExitRunFailed || !strings.Contains(r.stderr, "session_not_found") {
		t.Errorf("session restore as bob: %+v", r)
	}
	if r := run(t, nil, append([]string{"session", "checkpoint", "--delete", "c1", id}, sock...)...); r.code != ExitOK || r.stdout != "c1 deleted\n" {
		t.Errorf("session checkpoint --delete: %+v", r)
	}
	if r := run(t, nil, append([]string{"session", "restore", id, "c1"}, sock...)...); r.code != ExitRunFailed || !strings.Contains(r.stderr, "checkpoint_not_found") {
		t.Errorf("restore of a deleted checkpoint: %+v", r)
	}
	if r := run(t, nil, append([]string{"session", "restore", id}, sock...)...); r.code != ExitUsage {
		t.Errorf("restore without a checkpoint: %+v", r)
	}
	// Fork: one branch, then two; each has the session's x, as alice's.
	r = run(t, nil, append([]string{"session", "fork", "--owner", "alice", id}, sock...)...)
	branch := strings.TrimSpace(r.stdout)
	if r.code != ExitOK || !strings.HasPrefix(branch, "s-") || branch == id {
		t.Fatalf("session fork: %+v", r)
	}
	r = run(t, nil, append([]string{"session", "fork", "--owner", "alice", "--count", "2", id}, sock...)...)
	if ids := strings.Fields(r.stdout); r.code != ExitOK || len(ids) != 2 {
		t.Errorf("session fork --count 2: %+v", r)
	}
	if r := run(t, nil, append([]string{"run", "--session", branch, "-c", "x"}, sock...)...); r.stdout != "20\n" {
		t.Errorf("x in the branch: %+v", r)
	}
	if r := run(t, nil, append([]string{"session", "list", "--owner", "alice", "--json"}, sock...)...); strings.Count(r.stdout, `"parent": "`+id+`"`) != 3 {
		t.Errorf("the branches, listed: %+v", r)
	}
	if r := run(t, nil, append([]string{"session", "fork", "--count", "0", id}, sock...)...); r.code != ExitUsage {
		t.Errorf("fork --count 0: %+v", r)
	}
	if r := run(t, nil, append([]string{"session", "delete", "--owner", "bob", id}, sock...)...); r.code != ExitRunFailed || !strings.Contains(r.stderr, "session_not_found") {
		t.Errorf("session delete as bob: %+v", r)
	}
	if r := run(t, nil, append([]string{"session", "delete", id}, sock...)...); r.code != ExitOK || r.stdout != id+" deleted\n" {
		t.Errorf("session delete as the application: %+v", r)
	}
	if r := run(t, nil, append([]string{"session", "create", "--owner", "caf\u00e9"}, sock...)...); r.code != ExitUsage {
		t.Errorf("a bad --owner: %+v", r)
	}

	script := filepath.Join(t.TempDir(), "script.py")
	if err := os.WriteFile(script, []byte("6 * 7\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := run(t, nil, append([]string{"run", script}, sock...)...); r.code != ExitOK || r.stdout != "" {
		t.Errorf("run FILE printed its last expression, which python3 does not: %+v", r)
	}
	dir := filepath.Join(t.TempDir(), "figs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "figure-1.png"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	code := "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()\nplt.plot([2, 1])\nplt.show()\n'done'"
	r = run(t, nil, append([]string{"run", "--outputs", dir, "-c", code}, sock...)...)
	if r.code != ExitOK || r.stdout != "'done'\n" || strings.Count(r.stderr, "figure written to") != 2 {
		t.Fatalf("run --outputs: %+v", r)
	}
	for name, want := range map[string]string{"figure-1.png": "mine", "figure-2.png": "\x89PNG", "figure-3.png": "\x89PNG"} {
		if b, err := os.ReadFile(filepath.Join(dir, name)); err != nil || !strings.HasPrefix(string(b), want) {
			t.Errorf("%s: %.8q, %v; want %q", name, b, err, want)
		}
	}
}
