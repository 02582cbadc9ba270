package app

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/pyexec/pyexec/internal/mcpserver"
	"github.com/pyexec/pyexec/pkg/api"
)

// resultsWriteTimeout is the --write-timeout of the results attacks: shorter than the default,
// so that the test sees the connections cut soon, and long enough for the checks made while the
// results wait (a metric read, a print(1)) on a loaded machine.
const resultsWriteTimeout = "5s"

// bigResultCode writes three files of 9 MiB of random bytes: a result of 27 MiB, 36 MiB in
// base64, within the default --max-files-out-bytes (32 MiB) and --max-file-bytes (10 MiB).
const bigResultCode = "import os\nfor i in range(3):\n    open(f'big{i}.bin', 'wb').write(os.urandom(9 << 20))\n"

// TestHostileResultsNotRead: as many clients as --max-concurrent ask for results of tens of
// MiB and never read them — a plain execution and a session's call — and a third asks for a
// file of the session and never reads it. Judged from outside: their slots are free once their
// results are known (0 in flight, 2 results waiting), a genuine client's print(1) is answered
// promptly, /readyz says 200, the session takes its next call, and each non-reader's connection
// is closed after --write-timeout with its body cut short. The server's memory (VmRSS, VmHWM)
// is logged, for the figures of docs/api.md (Results in memory).
//
// In fork mode both ask for the plain JSON result, in spawn mode for streams (?stream=true).
func TestHostileResultsNotRead(t *testing.T) {
	for _, tc := range []struct {
		mode   string
		stream bool
	}{
		{mode: "fork"},
		{mode: "spawn", stream: true},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			s := podSidecar(t, podOptions{}, "--mode", tc.mode, "--max-concurrent", "2", "--queue", "4", "--write-timeout", resultsWriteTimeout)
			server := s.cmd.Process.Pid
			ctx := context.Background()
			before := procStatusKB(t, server, "VmRSS")
			sess, err := s.client.CreateSession(ctx, api.SessionRequest{})
			if err != nil {
				t.Fatal(err)
			}

			body, _ := json.Marshal(api.ExecuteRequest{Code: bigResultCode, TimeoutSeconds: seconds(60)})
			readers := []*unread{
				sendUnread(t, s.socket, http.MethodPost, "/v1/execute"+streamQuery(tc.stream), body),
				sendUnread(t, s.socket, http.MethodPost, "/v1/sessions/"+sess.ID+"/execute"+streamQuery(tc.stream), body),
			}
			// Both results are known (and built) once both executions have logged their end.
			waitFor(t, 120*time.Second, "both executions to finish", func() bool { return len(s.logs("execution finished")) >= 2 })
			// Their slots were given back before the results were written.
			if running, waiting := metric(t, s, "pyexec_executions_in_flight"), metric(t, s, "pyexec_results_waiting"); running != 0 || waiting != 2 {
				t.Errorf("with two results unread: %v executions in flight, %v results waiting; want 0 and 2", running, waiting)
			}
			readers = append(readers, sendUnread(t, s.socket, http.MethodGet, "/v1/sessions/"+sess.ID+"/files/big0.bin", nil))

			// A genuine client: a generous bound, so that only a server that keeps it waiting
			// for the non-readers (65 s and more before) fails it.
			start := time.Now()
			gctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			res, err := s.client.Execute(gctx, api.ExecuteRequest{Code: "print(1)"})
			cancel()
			genuine := time.Since(start)
			t.Logf("%s: server VmRSS %d KiB before; with the non-readers' results held: VmRSS %d KiB, VmHWM %d KiB; genuine print(1) answered in %v",
				tc.mode, before, procStatusKB(t, server, "VmRSS"), procStatusKB(t, server, "VmHWM"), genuine.Round(time.Millisecond))
			if err != nil || res.Stdout != "1\n" {
				t.Fatalf("a genuine print(1) while two clients do not read their results: %v %+v", err, res)
			}
			if code := readyzOf(t, s); code != http.StatusOK {
				t.Fatalf("/readyz: %d while the server answers", code)
			}
			// The session's call ended when its result was known: it is not busy.
			gctx, cancel = context.WithTimeout(ctx, 20*time.Second)
			res, err = s.client.SessionExecute(gctx, sess.ID, api.ExecuteRequest{Code: "print(2)"})
			cancel()
			if err != nil || res.Stdout != "2\n" {
				t.Fatalf("the session's next call while its previous result is not read: %v %+v", err, res)
			}

			// Each non-reader is cut off after the write timeout: the server logs it, closes
			// the connection, and what the client then reads is a body cut short.
			waitFor(t, 120*time.Second, "the three responses to be cut off", func() bool { return len(s.logs("response cut off")) >= 3 })
			for _, u := range readers {
				u.cutShort(t)
			}
			t.Logf("%s: after the cut: server VmRSS %d KiB, VmHWM %d KiB", tc.mode, procStatusKB(t, server, "VmRSS"), procStatusKB(t, server, "VmHWM"))
			if v := metric(t, s, "pyexec_results_waiting"); v != 0 {
				t.Errorf("pyexec_results_waiting %v after every response was cut; want 0", v)
			}
			// And the server serves as before.
			res = s.execute(t, api.ExecuteRequest{Code: "print(3)"})
			if res.Stdout != "3\n" {
				t.Fatalf("after the cut: %+v", res)
			}
		})
	}
}

// TestResultCutInTheMiddle: a result's body fails in the middle — a file of the result shrinks
// while the body is on its way: the session's next call, from another client, truncates it
// while the first client reads slowly. Its status and headers are gone already: that client
// sees a 200 whose body ends short of its Content-Length, long before the write timeout; the
// server logs the cut; the session and the server go on.
func TestResultCutInTheMiddle(t *testing.T) {
	s := podSidecar(t, podOptions{}, "--mode", "fork", "--write-timeout", "120s")
	ctx := context.Background()
	sess, err := s.client.CreateSession(ctx, api.SessionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(api.ExecuteRequest{Code: "import os\nopen('big.bin', 'wb').write(os.urandom(9 << 20))"})
	start := time.Now()
	u := sendUnread(t, s.socket, http.MethodPost, "/v1/sessions/"+sess.ID+"/execute", body)
	waitFor(t, 30*time.Second, "the result to wait for its client", func() bool { return metric(t, s, "pyexec_results_waiting") == 1 })
	res, err := s.client.SessionExecute(ctx, sess.ID, api.ExecuteRequest{Code: "import os\nos.truncate('big.bin', 10)\nprint(os.path.getsize('big.bin'))"})
	if err != nil || res.Stdout != "10\n" {
		t.Fatalf("the session's next call: %+v %v", res, err)
	}
	u.cutShort(t)
	if took := time.Since(start); took > 60*time.Second {
		t.Errorf("the body was cut after %v: by the write timeout, not by the file that shrank", took)
	}
	waitFor(t, 10*time.Second, "the cut in the server's log", func() bool { return len(s.logs("response cut off")) == 1 })
	if res, err := s.client.SessionExecute(ctx, sess.ID, api.ExecuteRequest{Code: "print(os.path.getsize('big.bin'))"}); err != nil || res.Stdout != "10\n" {
		t.Fatalf("the session after: %+v %v", res, err)
	}
	if res, err := s.client.Execute(ctx, api.ExecuteRequest{Code: "print(1)"}); err != nil || res.Stdout != "1\n" {
		t.Fatalf("an execution after: %+v %v", res, err)
	}
}

// unread is a request whose response the client never reads (until cutShort).
type unread struct {
	what string
	conn net.Conn
	resp *http.Response // once its status line and headers are read (head)
}

// sendMCPUnread calls run_python with args over /mcp (stateless, as a client of protocol
// 2025-06-18 does) on a connection of its own and reads nothing back.
func sendMCPUnread(t *testing.T, socket string, args map[string]any) *unread {
	t.Helper()
	call, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": "tools/call",
		"params": map[string]any{"name": "run_python", "arguments": args}})
	c, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	head := fmt.Sprintf("POST /mcp HTTP/1.1\r\nHost: pyexec\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"+
		"Mcp-Protocol-Version: 2025-06-18\r\nContent-Length: %d\r\n\r\n", len(call))
	if _, err := c.Write(append([]byte(head), call...)); err != nil {
		t.Fatal(err)
	}
	return &unread{what: "POST /mcp tools/call run_python", conn: c}
}

// head reads the response's status line and headers, and no more of the body than one
// buffer of 4 KiB: the client still does not read its answer.
func (u *unread) head(t *testing.T, limit time.Duration) {
	t.Helper()
	_ = u.conn.SetReadDeadline(time.Now().Add(limit))
	resp, err := http.ReadResponse(bufio.NewReader(u.conn), nil)
	if err != nil {
		t.Fatalf("%s: no status line within %v: %v", u.what, limit, err)
	}
	u.resp = resp
}

// sendUnread sends one request on a connection of its own and reads nothing back.
func sendUnread(t *testing.T, socket, method, path string, body []byte) *unread {
	t.Helper()
	c, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	req := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: pyexec\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", method, path, len(body))
	if _, err := c.Write(append([]byte(req), body...)); err != nil {
		t.Fatal(err)
	}
	return &unread{what: method + " " + path, conn: c}
}

// cutShort reads the response, now, and checks that it is a 200 whose body was cut short: the
// server closed the connection before its end.
func (u *unread) cutShort(t *testing.T) {
	t.Helper()
	_ = u.conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	resp := u.resp
	if resp == nil {
		var err error
		if resp, err = http.ReadResponse(bufio.NewReader(u.conn), nil); err != nil {
			t.Errorf("%s: no status line before the cut: %v", u.what, err)
			return
		}
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || err == nil {
		t.Errorf("%s: %d, %d bytes of body, read error %v; want a 200 whose body ends early", u.what, resp.StatusCode, n, err)
		return
	}
	t.Logf("%s: 200, %d bytes of body (Content-Length %d), then: %v", u.what, n, resp.ContentLength, err)
}

func streamQuery(stream bool) string {
	if stream {
		return "?stream=true"
	}
	return ""
}

// readyzOf asks the probe port whether s is ready, as the kubelet does.
func readyzOf(t *testing.T, s *sidecar) int {
	t.Helper()
	resp, err := http.Get("http://" + s.probe + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitFor waits up to limit for cond, and fails saying what it waited for.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("waited %v for %s", limit, what)
}

// procStatusKB reads a field in kB (VmRSS, VmHWM) of /proc/PID/status.
func procStatusKB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("/proc/%d/status has no %s", pid, field)
	return 0
}

// outputsAttacks write rich outputs themselves, on the outputs file the runner opened for the
// code (display's module holds it): eight of a MIME type of 1 MB with an empty value (8 MB of
// JSON), or 200,000 with an empty type and value (7.8 MB). The file stays under
// --max-file-bytes. Before every byte of an output counted, both counted 0 bytes.
var outputsAttacks = map[string]string{
	"huge MIME types": `import json
f = display.__globals__["_outputs"]
for i in range(8):
    f.write(json.dumps({"type": "display_data", "data": {str(i) * 1000000: ""}}) + "\n")
f.flush()
`,
	"many empty outputs": `f = display.__globals__["_outputs"]
for i in range(200000):
    f.write('{"type":"display_data","data":{"":""}}\n')
f.flush()
`,
}

// TestHostileOutputsHugeKeys: outputs whose MIME types are huge, or very many empty ones
// (outputsAttacks), come back within --max-files-out-bytes (outputs and files share it) and
// say outputs_truncated — as an execution and as a session's call, in both modes.
func TestHostileOutputsHugeKeys(t *testing.T) {
	const budget = 1 << 20
	for _, mode := range []string{"fork", "spawn"} {
		t.Run(mode, func(t *testing.T) {
			s := podSidecar(t, podOptions{}, "--mode", mode, "--max-files-out-bytes", strconv.Itoa(budget))
			ctx := context.Background()
			sess, err := s.client.CreateSession(ctx, api.SessionRequest{})
			if err != nil {
				t.Fatal(err)
			}
			for attack, code := range outputsAttacks {
				for as, run := range map[string]func(api.ExecuteRequest) (*api.ExecuteResult, error){
					"execution": func(req api.ExecuteRequest) (*api.ExecuteResult, error) { return s.client.Execute(ctx, req) },
					"session's call": func(req api.ExecuteRequest) (*api.ExecuteResult, error) {
						return s.client.SessionExecute(ctx, sess.ID, req)
					},
				} {
					what := attack + " as " + as
					res, err := run(api.ExecuteRequest{Code: code, TimeoutSeconds: seconds(60)})
					if err != nil {
						t.Fatalf("%s: %v", what, err)
					}
					encoded, _ := json.Marshal(res.Outputs)
					var strs int
					for _, o := range res.Outputs {
						for k, v := range o.Data {
							strs += len(k) + len(v)
						}
					}
					t.Logf("%s: %d outputs, %d bytes of MIME types and values, %d bytes of JSON, truncated %v", what, len(res.Outputs), strs, len(encoded), res.OutputsTruncated)
					if res.ExitCode != 0 || len(res.Outputs) == 0 || !res.OutputsTruncated || len(encoded) > budget {
						t.Errorf("%s: exit %d (%s), %d outputs, %d bytes of JSON, outputs_truncated %v; want some outputs, at most %d bytes, truncated",
							what, res.ExitCode, res.Stderr, len(res.Outputs), len(encoded), res.OutputsTruncated, budget)
					}
				}
			}
		})
	}
}

// TestServeWriteTimeoutFlag: --write-timeout (PYEXEC_WRITE_TIMEOUT) defaults to 30 s, reaches
// /v1/info's limits, and must be positive.
func TestServeWriteTimeoutFlag(t *testing.T) {
	if d := parseServe(t, nil).WriteTimeout; d != 30*time.Second {
		t.Errorf("default --write-timeout %v; want 30s", d)
	}
	c := parseServe(t, map[string]string{"PYEXEC_WRITE_TIMEOUT": "5s"})
	if got := c.limits().WriteTimeoutSeconds; got != 5 {
		t.Errorf("PYEXEC_WRITE_TIMEOUT=5s: limits.write_timeout_seconds %v; want 5", got)
	}
	for _, v := range []string{"0", "-1s"} {
		// A serve that never starts: a value let through returns at once, without serving.
		var out strings.Builder
		root := NewRootCommand(IO{Stdout: &out, Stderr: &out, LookupEnv: env(nil)}, Runners{
			Serve: func(context.Context, *ServeConfig) error { return nil },
		})
		root.SetArgs([]string{"serve", "--write-timeout", v})
		var usage *UsageError
		if err := root.Execute(); !errors.As(err, &usage) || !strings.Contains(err.Error(), "--write-timeout must be positive") {
			t.Errorf("serve --write-timeout %s: %v; want a usage error saying it must be positive", v, err)
		}
	}
}

// TestServerGoMemoryLimit: pyexec serve in a memory cgroup of its own, as its container's
// limits.memory, sets the Go runtime's soft memory limit to a share of it (goMemoryLimitShare),
// read back from outside through the runtime's own figure (go_gc_gomemlimit_bytes on /metrics);
// a GOMEMLIMIT the operator set is left as it is. Then the attack it is for: two clients ask for
// results of 27 MiB (36 MiB in JSON) and do not read them (while the server decoded and encoded
// each result again, this took a server without the soft limit past the 320 MiB limit: the
// kernel's OOM killer took it). Judged from outside: the OOM killer never acts in the server's
// cgroup, and a genuine print(1) is answered with both results held.
func TestServerGoMemoryLimit(t *testing.T) {
	const limit = 320 << 20
	untested := "the server's Go memory limit was not tried against a real cgroup: a server that holds large results may pass its container's limit"
	t.Run("from the container's limit", func(t *testing.T) {
		cg := memoryCgroup(t, limit, untested)
		s := podSidecar(t, podOptions{serverCgroup: cg}, "--mode", "fork", "--max-concurrent", "2", "--queue", "4", "--write-timeout", "60s")
		server := s.cmd.Process.Pid
		kills := oomKills(t, cg)
		want := float64(int64(float64(limit) * goMemoryLimitShare))
		if got := metric(t, s, "go_gc_gomemlimit_bytes"); got != want {
			t.Fatalf("go_gc_gomemlimit_bytes %.0f, want %.0f (%.0f%% of the cgroup's %d)\n%s", got, want, 100*goMemoryLimitShare, limit, s.allLogs())
		}

		body, _ := json.Marshal(api.ExecuteRequest{Code: bigResultCode, TimeoutSeconds: seconds(60)})
		for range 2 {
			sendUnread(t, s.socket, http.MethodPost, "/v1/execute", body)
		}
		waitFor(t, 120*time.Second, "both executions to finish", func() bool { return len(s.logs("execution finished")) >= 2 })
		waitFor(t, 60*time.Second, "both results to wait for their clients", func() bool { return metric(t, s, "pyexec_results_waiting") == 2 })
		gctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		res, err := s.client.Execute(gctx, api.ExecuteRequest{Code: "print(1)"})
		cancel()
		t.Logf("the server with two unread results in a %d MiB cgroup: VmRSS %d KiB, VmHWM %d KiB", limit>>20,
			procStatusKB(t, server, "VmRSS"), procStatusKB(t, server, "VmHWM"))
		if err != nil || res.Stdout != "1\n" {
			t.Fatalf("a genuine print(1) while two results wait: %v %+v\n%s", err, res, s.allLogs())
		}
		if n := oomKills(t, cg); n != kills {
			t.Fatalf("the kernel's OOM killer acted in the server's cgroup (%d kills, were %d)", n, kills)
		}
	})
	t.Run("GOMEMLIMIT", func(t *testing.T) {
		cg := memoryCgroup(t, limit, untested)
		s := podSidecar(t, podOptions{serverCgroup: cg, serverEnv: []string{"GOMEMLIMIT=100MiB"}}, "--mode", "fork")
		if got := metric(t, s, "go_gc_gomemlimit_bytes"); got != 100<<20 {
			t.Fatalf("go_gc_gomemlimit_bytes %.0f with GOMEMLIMIT=100MiB, want %d", got, 100<<20)
		}
	})
}

// TestHostileMCPResultNotRead: an MCP client asks run_python over /mcp for a result of 27 MiB
// (36 MiB of base64 in the tool's structured content, with --mcp-structured-result: without it
// the files stay out of the answer) and never reads the answer, which the MCP SDK writes itself
// after the call. Judged from outside: the server cuts it off after --write-timeout as it does
// an API client (logged 'response cut off', the body short), and a genuine call is answered
// meanwhile and after.
func TestHostileMCPResultNotRead(t *testing.T) {
	s := podSidecar(t, podOptions{}, "--mode", "fork", "--write-timeout", resultsWriteTimeout, "--mcp-structured-result")
	server := s.cmd.Process.Pid
	u := sendMCPUnread(t, s.socket, map[string]any{"code": bigResultCode})
	waitFor(t, 120*time.Second, "the execution to finish", func() bool { return len(s.logs("execution finished")) >= 1 })
	res := s.execute(t, api.ExecuteRequest{Code: "print(1)"})
	if res.Stdout != "1\n" {
		t.Fatalf("a genuine print(1) while an MCP client does not read its result: %+v", res)
	}
	waitFor(t, 120*time.Second, "the MCP response to be cut off", func() bool {
		for _, l := range s.logs("response cut off") {
			if l["path"] == "/mcp" {
				return true
			}
		}
		return false
	})
	u.cutShort(t)
	t.Logf("server VmHWM %d KiB", procStatusKB(t, server, "VmHWM"))
	if res := s.execute(t, api.ExecuteRequest{Code: "print(2)"}); res.Stdout != "2\n" {
		t.Fatalf("after the cut: %+v", res)
	}
}

// maxResultCode makes a result as large as the default caps allow: 1,000 KiB of stdout and as
// much of stderr (under --max-output-bytes, 1 MiB) and four files of 8 MiB of random bytes,
// --max-files-out-bytes (32 MiB) in all, under --max-file-bytes (10 MiB) each.
const maxResultCode = "import os, sys\nsys.stdout.write('x' * (1000 << 10))\nsys.stderr.write('y' * (1000 << 10))\n" +
	"for i in range(4):\n    open(f'max{i}.bin', 'wb').write(os.urandom(8 << 20))\n"

// TestServerMemoryAtItsMaximum drives the server to the most results it may hold — 2 x
// --max-concurrent (2) of them, each as large as the caps allow, none read — and checks the
// bounds of docs/api.md (Results in memory) from outside. A large result streams from the runner, its files read from
// disk as they go: the server's RSS stays within its RSS at rest plus 2 x max-concurrent x
// 1.5 x 256 KiB and 16 MiB of room for the runtime and the test's own requests (its collector
// lets the heap reach 4 MiB before it first collects; connections, /metrics reads, the fifth
// execution), and the runner's within its RSS at rest plus 2 x max-concurrent x 6 x J, J the
// JSON of a result's stdout, stderr and outputs (not its files). Holding the results, the
// server would be about 190 MiB above its rest (as it was before results streamed). A fifth
// execution waits in the queue meanwhile (results waiting hold its room) and runs once
// --write-timeout has cut a non-reader off.
func TestServerMemoryAtItsMaximum(t *testing.T) {
	const maxConcurrent = 2
	s := podSidecar(t, podOptions{}, "--mode", "fork", "--max-concurrent", strconv.Itoa(maxConcurrent), "--queue", "4", "--write-timeout", "15s")
	server, runner := s.cmd.Process.Pid, s.runner.cmd.Process.Pid
	rest, runnerRest := procStatusKB(t, server, "VmRSS")<<10, procStatusKB(t, runner, "VmRSS")<<10
	r := 4*float64(32<<20)/3 + 2*float64(1<<20) // the largest result in JSON
	j := 2 * float64(1000<<10)                  // maxResultCode's stdout and stderr, which need no escapes
	bound := float64(rest) + 2*maxConcurrent*1.5*(256<<10) + 16<<20
	runnerBound := float64(runnerRest) + 2*maxConcurrent*6*j

	body, _ := json.Marshal(api.ExecuteRequest{Code: maxResultCode, TimeoutSeconds: seconds(120)})
	var readers []*unread
	for range 2 * maxConcurrent {
		readers = append(readers, sendUnread(t, s.socket, http.MethodPost, "/v1/execute", body))
	}
	waitFor(t, 180*time.Second, "4 results to wait for their clients", func() bool { return metric(t, s, "pyexec_results_waiting") == 2*maxConcurrent })
	// A fifth: no room for its result while four wait.
	fifth := printFiveLater(s)
	waitFor(t, 30*time.Second, "the fifth to wait in the queue", func() bool { return metric(t, s, "pyexec_queue_depth") == 1 })
	hwm, runnerHWM := procStatusKB(t, server, "VmHWM")<<10, procStatusKB(t, runner, "VmHWM")<<10
	t.Logf("4 results of %.1f MiB in JSON held: server VmRSS %d KiB, VmHWM %d KiB (%d KiB at rest); the bound %.0f KiB",
		r/(1<<20), procStatusKB(t, server, "VmRSS"), hwm>>10, rest>>10, bound/1024)
	t.Logf("the runner: VmRSS %d KiB, VmHWM %d KiB (%d KiB at rest); the bound %.0f KiB; per byte of J %.2f",
		procStatusKB(t, runner, "VmRSS"), runnerHWM>>10, runnerRest>>10, runnerBound/1024, float64(runnerHWM-runnerRest)/(2*maxConcurrent*j))
	if float64(hwm) > bound {
		t.Errorf("the server's peak RSS %d KiB is over the bound of docs/api.md of %.0f KiB", hwm>>10, bound/1024)
	}
	if float64(runnerHWM) > runnerBound {
		t.Errorf("the runner's peak RSS %d KiB is over the bound of docs/api.md of %.0f KiB", runnerHWM>>10, runnerBound/1024)
	}
	select {
	case err := <-fifth:
		t.Fatalf("the fifth execution ran while four results waited (%v)", err)
	default:
	}
	if err := <-fifth; err != nil { // once the write timeout has cut a non-reader off
		t.Fatalf("the fifth execution: %v\n%s", err, s.allLogs())
	}
	waitFor(t, 60*time.Second, "every non-reader to be cut off", func() bool { return len(s.logs("response cut off")) >= 2*maxConcurrent })
	for _, u := range readers {
		u.cutShort(t)
	}
}

// printFiveLater runs print(5) on s's API in the background; what came of it (nil: it printed
// 5) comes on the channel.
func printFiveLater(s *sidecar) <-chan error {
	done := make(chan error, 1)
	go func() {
		res, err := s.client.Execute(context.Background(), api.ExecuteRequest{Code: "print(5)"})
		if err == nil && res.Stdout != "5\n" {
			err = fmt.Errorf("%+v", res)
		}
		done <- err
	}()
	return done
}

// mcpF is what the server holds at its peak per byte of an /mcp answer's result (the F of
// MCP calls in docs/mcp.md).
const mcpF = 2.0

// TestMCPMemoryAtItsMaximum drives /mcp to the most results the server may hold: 2 x
// --max-concurrent (2) run_python calls, each of a result as large as the default caps allow
// — of files (maxResultCode), or of images and files (maxFiguresCode) — none of whose answers
// is read. Judged from outside: each answer is built (its status line arrives), the four wait
// as results to be written (pyexec_results_waiting, until --write-timeout cuts them off), a
// fifth execution on the API waits in the queue meanwhile and runs once a non-reader is cut
// off, the server's peak RSS stays within the bound for MCP of docs/mcp.md — its RSS at rest plus
// 2 x max-concurrent x mcpF x R, R = 4/3 x --max-files-out-bytes + 2 x --max-output-bytes —
// and a client that reads gets the whole answer.
func TestMCPMemoryAtItsMaximum(t *testing.T) {
	for _, tc := range []struct {
		name          string
		code          string
		files, images int
	}{
		{"files", maxResultCode, 4, 0},
		{"figures", maxFiguresCode, 3, 3},
	} {
		t.Run(tc.name, func(t *testing.T) { mcpAtItsMaximum(t, tc.code, tc.files, tc.images) })
	}
}

// maxFiguresCode makes a result of figures as large as the caps allow: 1,000 KiB of stdout,
// three PNG images (random bytes: the server does not read them as images) of nearly 2.5 MiB
// each, 10 MiB of base64 (the outputs file the code writes them to is under --max-file-bytes,
// 10 MiB), and three files of 7 MiB, which --max-files-out-bytes (32 MiB), shared by outputs and
// files, leaves room for. An /mcp answer carries each image twice: as an image for the model,
// and in the structured content.
const maxFiguresCode = `import base64, json, os, sys
sys.stdout.write('x' * (1000 << 10))
f = display.__globals__["_outputs"]
for i in range(3):
    f.write(json.dumps({"type": "display_data", "data": {"image/png": base64.b64encode(os.urandom((5 << 19) - 1000)).decode()}}) + "\n")
f.flush()
for i in range(3):
    open(f'max{i}.bin', 'wb').write(os.urandom(7 << 20))
`

// mcpAtItsMaximum is TestMCPMemoryAtItsMaximum with the results of code, which writes files
// files and draws images figures.
func mcpAtItsMaximum(t *testing.T, code string, files, images int) {
	const maxConcurrent = 2
	// The result as structured content too (deprecated, but the largest answer /mcp makes).
	s := podSidecar(t, podOptions{}, "--mode", "fork", "--max-concurrent", strconv.Itoa(maxConcurrent), "--queue", "4", "--write-timeout", "30s",
		"--mcp-structured-result")
	server := s.cmd.Process.Pid
	rest := procStatusKB(t, server, "VmRSS") << 10
	r := 4*float64(32<<20)/3 + 2*float64(1<<20)
	bound := float64(rest) + 2*maxConcurrent*mcpF*r

	var readers []*unread
	for range 2 * maxConcurrent {
		readers = append(readers, sendMCPUnread(t, s.socket, map[string]any{"code": code, "timeout_seconds": 120}))
	}
	// The SDK writes an answer once it is whole: its status line says it is built.
	for _, u := range readers {
		u.head(t, 180*time.Second)
	}
	if v := metric(t, s, "pyexec_results_waiting"); v != 2*maxConcurrent {
		t.Errorf("pyexec_results_waiting %v with %d /mcp answers unread; want %d", v, 2*maxConcurrent, 2*maxConcurrent)
	}
	// A fifth: no room for its result while four answers wait.
	fifth := printFiveLater(s)
	waitFor(t, 20*time.Second, "the fifth to wait in the queue", func() bool {
		select {
		case err := <-fifth:
			t.Fatalf("the fifth execution ran while four /mcp answers waited (%v)\n%s", err, s.allLogs())
		default:
		}
		return metric(t, s, "pyexec_queue_depth") == 1
	})
	hwm := procStatusKB(t, server, "VmHWM") << 10
	t.Logf("4 /mcp answers of results of %.1f MiB in JSON held: server VmRSS %d KiB, VmHWM %d KiB (%d KiB at rest); the bound %.0f KiB; F as measured %.2f",
		r/(1<<20), procStatusKB(t, server, "VmRSS"), hwm>>10, rest>>10, bound/1024, float64(hwm-rest)/(2*maxConcurrent*r))
	if float64(hwm) > bound {
		t.Errorf("the server's peak RSS %d KiB is over the bound for MCP of docs/mcp.md of %.0f KiB", hwm>>10, bound/1024)
	}
	if err := <-fifth; err != nil { // once the write timeout has cut a non-reader off
		t.Fatalf("the fifth execution: %v\n%s", err, s.allLogs())
	}
	waitFor(t, 90*time.Second, "every /mcp answer to be cut off", func() bool { return len(s.logs("response cut off")) >= 2*maxConcurrent })
	for _, u := range readers {
		u.cutShort(t)
	}
	if v := metric(t, s, "pyexec_results_waiting"); v != 0 {
		t.Errorf("pyexec_results_waiting %v after every answer was cut off; want 0", v)
	}
	// A client that reads gets the whole answer: the text, each image, and the result with
	// every file and output as structured content.
	res, text, structured := callTool(t, connectMCP(t, mcpTransports(t, s)["http"]()), mcpserver.ToolRunPython,
		map[string]any{"code": code, "timeout_seconds": 120})
	var got int
	for _, c := range res.Content {
		if img, ok := c.(*mcp.ImageContent); ok && len(img.Data) > 2<<20 {
			got++
		}
	}
	var gotFiles []any // the code's: run_python's output budget may add the file of the whole output
	all, _ := structured["files"].([]any)
	for _, f := range all {
		if p, _ := f.(map[string]any)["path"].(string); !strings.HasPrefix(p, "pyexec-output-") {
			gotFiles = append(gotFiles, f)
		}
	}
	outputs, _ := structured["outputs"].([]any)
	if res.IsError || got != images || len(gotFiles) != files || len(outputs) != images || !strings.HasPrefix(text, "stdout:\nxxx") {
		t.Errorf("a call read whole: isError %v, %d images, %d files, %d outputs, text %.40q; want %d images, %d files, %d outputs",
			res.IsError, got, len(gotFiles), len(outputs), text, images, files, images)
	}
}
