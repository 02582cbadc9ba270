package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/pyexec/pyexec/internal/mcpserver"
	"github.com/pyexec/pyexec/internal/testutil"
	"github.com/pyexec/pyexec/pkg/api"
)

// mcpTransports are the two ways an agent reaches the sidecar over MCP: Streamable HTTP at
// /mcp on its socket, and `pyexec mcp` on stdio, forwarding to the socket. Neither names an
// owner: /mcp's caller is anonymous, and each `pyexec mcp` owns its sessions by a key of its
// own.
func mcpTransports(t testing.TB, s *sidecar) map[string]func() mcp.Transport {
	return mcpTransportsAs(t, s, "")
}

// mcpTransportsAs are mcpTransports for the sessions of owner: the api.OwnerHeader of every
// /mcp request, and `pyexec mcp --owner`. Extra arguments go to `pyexec mcp`.
func mcpTransportsAs(t testing.TB, s *sidecar, owner string, mcpArgs ...string) map[string]func() mcp.Transport {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var rt http.RoundTripper = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", s.socket)
	}}
	if owner != "" {
		rt = ownerTransport{owner: owner, next: rt}
	}
	socketClient := &http.Client{Transport: rt}
	args := append([]string{"mcp", "--socket", s.socket}, mcpArgs...)
	if owner != "" {
		args = append(args, "--owner", owner)
	}
	return map[string]func() mcp.Transport{
		"http": func() mcp.Transport {
			return &mcp.StreamableClientTransport{Endpoint: "http://pyexec/mcp", HTTPClient: socketClient}
		},
		"stdio": func() mcp.Transport {
			cmd := exec.Command(self, args...)
			cmd.Env = []string{"PYEXEC_TEST_AS_MAIN=1", "PATH=/usr/bin:/bin", "HOME=/"}
			return &mcp.CommandTransport{Command: cmd}
		},
	}
}

// ownerTransport sends every request with api.OwnerHeader, as an application that serves
// several users sets it on /mcp.
type ownerTransport struct {
	owner string
	next  http.RoundTripper
}

func (o ownerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(api.OwnerHeader, o.owner)
	return o.next.RoundTrip(r)
}

func connectMCP(t *testing.T, tr mcp.Transport) *mcp.ClientSession {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "pyexec-test", Version: "1"}, nil).Connect(ctx, tr, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// callTool calls a tool and returns its result, its text and its structured content.
func callTool(t *testing.T, cs *mcp.ClientSession, name string, args map[string]any) (*mcp.CallToolResult, string, map[string]any) {
	t.Helper()
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var text strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			text.WriteString(tc.Text)
		}
	}
	var structured map[string]any
	if res.StructuredContent != nil {
		b, _ := json.Marshal(res.StructuredContent)
		_ = json.Unmarshal(b, &structured)
	}
	return res, text.String(), structured
}

// The SDK's own client against both transports: initialize, the tools and their schemas, code
// that prints, raises, draws; a session's state across calls and its files as resources; the
// end of a session. Every call is one more execution line in the sidecar's log.
func TestMCP(t *testing.T) {
	py := testutil.RequireSystemPython(t)
	if out, err := exec.Command(py, "-c", "import matplotlib").CombinedOutput(); err != nil {
		t.Fatalf("the system Python lacks matplotlib (apt-get install python3-matplotlib): %s", out)
	}
	// The instructions name the interpreter and what it has, as the interpreter says.
	versions, err := exec.Command(py, "-c", "import sys, importlib.metadata as m; print('%d.%d.%d' % sys.version_info[:3], m.version('numpy'), m.version('matplotlib'))").Output()
	if err != nil {
		t.Fatal(err)
	}
	v := strings.Fields(string(versions))
	s := startSidecar(t, nil, "--allow-packages", "pyexec-test-nothing")
	for name, tr := range mcpTransportsAs(t, s, "test-owner") {
		t.Run(name, func(t *testing.T) {
			before := len(s.logs("execution finished"))
			cs := connectMCP(t, tr())
			init := cs.InitializeResult()
			if init.ServerInfo.Name != "pyexec" || init.Capabilities.Tools == nil || init.Capabilities.Resources == nil {
				t.Fatalf("initialize: %+v", init)
			}
			for _, want := range []string{"Python " + v[0] + " with numpy " + v[1] + ", ", "matplotlib " + v[2]} {
				if !strings.Contains(init.Instructions, want) {
					t.Errorf("the instructions do not say %q: %s", want, init.Instructions)
				}
			}
			t.Logf("%s: protocol version %s", name, init.ProtocolVersion)

			var names []string
			for tool, err := range cs.Tools(context.Background(), nil) {
				if err != nil {
					t.Fatal(err)
				}
				names = append(names, tool.Name)
				if tool.Description == "" || tool.InputSchema == nil {
					t.Errorf("tool %s has no description or input schema", tool.Name)
				}
				if tool.Name == mcpserver.ToolRunPython {
					schema, _ := json.Marshal(tool.InputSchema)
					if !strings.Contains(string(schema), `"required":["code"]`) || !strings.Contains(string(schema), "session_id") {
						t.Errorf("run_python's schema: %s", schema)
					}
				}
			}
			slices.Sort(names)
			if want := []string{"checkpoint_session", "close_session", "create_session", "fork_session", "inspect_session", "install_packages", "list_sessions", "restore_session", "run_python"}; !slices.Equal(names, want) {
				t.Fatalf("tools %v, want %v", names, want)
			}

			// A package outside --allow-packages is refused by the sidecar's policy, as over the API.
			if res, text, _ := callTool(t, cs, mcpserver.ToolInstallPackages, map[string]any{"packages": []string{"requests"}}); !res.IsError || !strings.Contains(text, "requests") {
				t.Fatalf("install_packages of a package not allowed: %v %q", res.IsError, text)
			}
			res, text, structured := callTool(t, cs, mcpserver.ToolRunPython, map[string]any{"code": "print(2 * 3)\n'done'"})
			if res.IsError || !strings.Contains(text, "stdout:\n6\n") || !strings.Contains(text, "result:\n'done'") || structured != nil {
				t.Fatalf("print: %v %q %v", res.IsError, text, structured)
			}
			res, text, structured = callTool(t, cs, mcpserver.ToolRunPython, map[string]any{"code": "raise ValueError('boom')"})
			if !res.IsError || !strings.Contains(text, "ValueError: boom") || !strings.Contains(text, "exit code 1") || structured != nil {
				t.Fatalf("an exception: %v %q", res.IsError, text)
			}
			res, _, _ = callTool(t, cs, mcpserver.ToolRunPython, map[string]any{"code": "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()"})
			var png []byte
			for _, c := range res.Content {
				if img, ok := c.(*mcp.ImageContent); ok && img.MIMEType == "image/png" {
					png = img.Data
				}
			}
			if res.IsError || !bytes.HasPrefix(png, []byte("\x89PNG\r\n")) {
				t.Fatalf("a figure: %v, %d bytes of image", res.IsError, len(png))
			}

			_, _, created := callTool(t, cs, mcpserver.ToolCreateSession, map[string]any{"idle_timeout_seconds": 60})
			id, _ := created["session_id"].(string)
			if id == "" {
				t.Fatalf("create_session: %v", created)
			}
			callTool(t, cs, mcpserver.ToolRunPython, map[string]any{"session_id": id, "code": "x = 41\nopen('out.csv', 'w').write('a,b\\n1,2\\n')",
				"files": []any{map[string]any{"path": "in.txt", "content": "from the agent"}}})
			res, text, _ = callTool(t, cs, mcpserver.ToolRunPython, map[string]any{"session_id": id, "code": "print(open('in.txt').read())\nx + 1"})
			if res.IsError || !strings.Contains(text, "from the agent") || !strings.Contains(text, "result:\n42") {
				t.Fatalf("state across calls: %q", text)
			}
			res, text, inspected := callTool(t, cs, mcpserver.ToolInspectSession, map[string]any{"session_id": id})
			if vars, _ := inspected["variables"].([]any); res.IsError || len(vars) != 1 || !strings.Contains(text, "x: int = 41") {
				t.Fatalf("inspect_session: %v %q %v", res.IsError, text, inspected)
			}
			// An undo: a checkpoint, a call that spoils x, the restore.
			res, text, cp := callTool(t, cs, mcpserver.ToolCheckpointSession, map[string]any{"session_id": id})
			if res.IsError || cp["checkpoint"] != "c1" || !strings.Contains(text, `restore_session with checkpoint "c1"`) || !strings.Contains(text, "checkpoints held: c1") {
				t.Fatalf("checkpoint_session: %v %q %v", res.IsError, text, cp)
			}
			callTool(t, cs, mcpserver.ToolRunPython, map[string]any{"session_id": id, "code": "x = None"})
			if res, text, restored := callTool(t, cs, mcpserver.ToolRestoreSession, map[string]any{"session_id": id, "checkpoint": "c1"}); res.IsError || restored["restored"] != true {
				t.Fatalf("restore_session: %v %q", res.IsError, text)
			}
			if res, text, _ := callTool(t, cs, mcpserver.ToolRunPython, map[string]any{"session_id": id, "code": "x"}); res.IsError || !strings.Contains(text, "result:\n41") {
				t.Fatalf("after restore_session: %q", text)
			}
			if res, text, _ := callTool(t, cs, mcpserver.ToolRunPython, map[string]any{"session_id": id, "code": "x = 0", "checkpoint": true}); res.IsError || !strings.Contains(text, `checkpoint c2 taken before this call: restore_session with checkpoint "c2" undoes it`) {
				t.Fatalf("run_python with a checkpoint: %v %q", res.IsError, text)
			}
			if res, text, _ := callTool(t, cs, mcpserver.ToolRunPython, map[string]any{"code": "1", "checkpoint": true}); !res.IsError || !strings.Contains(text, "checkpoint needs session_id") {
				t.Fatalf("run_python with a checkpoint and no session: %v %q", res.IsError, text)
			}
			if res, text, _ := callTool(t, cs, mcpserver.ToolRestoreSession, map[string]any{"session_id": id, "checkpoint": "c7"}); !res.IsError || !strings.Contains(text, "checkpoint_not_found") && !strings.Contains(text, "no checkpoint") || !strings.Contains(text, "checkpoints held: c1") {
				t.Fatalf("restore_session of no checkpoint: %v %q", res.IsError, text)
			}
			// A fork: two branches with x, each its own from then on.
			res, text, forked := callTool(t, cs, mcpserver.ToolForkSession, map[string]any{"session_id": id, "count": 2})
			branches, _ := forked["branches"].([]any)
			if res.IsError || len(branches) != 2 || !strings.Contains(text, "goes its own way") {
				t.Fatalf("fork_session: %v %q %v", res.IsError, text, forked)
			}
			b1, _ := branches[0].(string)
			if res, text, _ := callTool(t, cs, mcpserver.ToolRunPython, map[string]any{"session_id": b1, "code": "x = 5\nx"}); res.IsError || !strings.Contains(text, "result:\n5") {
				t.Fatalf("run_python in a branch: %q", text)
			}
			if res, text, _ := callTool(t, cs, mcpserver.ToolRunPython, map[string]any{"session_id": id, "code": "x"}); res.IsError || !strings.Contains(text, "result:\n0") {
				t.Fatalf("the session after its branch's call: %q", text)
			}
			for _, b := range branches {
				callTool(t, cs, mcpserver.ToolCloseSession, map[string]any{"session_id": b})
			}
			_, text, listed := callTool(t, cs, mcpserver.ToolListSessions, map[string]any{})
			if !strings.Contains(text, id) || listed["sessions"] == nil {
				t.Fatalf("list_sessions: %q %v", text, listed)
			}

			uri := "pyexec://sessions/" + id + "/files/out.csv"
			var found bool
			for r, err := range cs.Resources(context.Background(), nil) {
				if err != nil {
					t.Fatal(err)
				}
				found = found || (r.URI == uri && r.MIMEType == "text/csv; charset=utf-8" || r.URI == uri && strings.HasPrefix(r.MIMEType, "text/csv"))
			}
			if !found {
				t.Fatalf("resources/list does not name %s", uri)
			}
			read, err := cs.ReadResource(context.Background(), &mcp.ReadResourceParams{URI: uri})
			if err != nil || len(read.Contents) != 1 || read.Contents[0].Text != "a,b\n1,2\n" {
				t.Fatalf("resources/read %s: %+v %v", uri, read, err)
			}
			if _, err := cs.ReadResource(context.Background(), &mcp.ReadResourceParams{URI: "pyexec://sessions/" + id + "/files/missing.csv"}); err == nil {
				t.Fatal("reading a missing file did not fail")
			}

			if res, _, closed := callTool(t, cs, mcpserver.ToolCloseSession, map[string]any{"session_id": id}); res.IsError || closed["closed"] != true {
				t.Fatalf("close_session: %v", closed)
			}
			res, text, _ = callTool(t, cs, mcpserver.ToolRunPython, map[string]any{"session_id": id, "code": "x"})
			if !res.IsError || !strings.Contains(text, "create_session") {
				t.Fatalf("a call in a closed session: %v %q", res.IsError, text)
			}
			// Ten executions ran: three stateless, six in the session (two before the
			// checkpoint, the one undone, the one after, one with a checkpoint, one after the
			// fork) and one in a branch; the call in the closed session and the one refused ran
			// none.
			waitForLog(t, s, func() bool { return len(s.logs("execution finished")) >= before+10 })
			if got := len(s.logs("execution finished")) - before; got != 10 {
				t.Errorf("%d execution lines in the sidecar's log, want 10", got)
			}
		})
	}
}

// --mcp=false switches /mcp off; without --allow-packages, install_packages is not offered;
// --allow-uids holds for /mcp and for the calls its tools make.
func TestMCPSwitches(t *testing.T) {
	s := startSidecar(t, nil)
	cs := connectMCP(t, mcpTransports(t, s)["http"]())
	for tool, err := range cs.Tools(context.Background(), nil) {
		if err != nil {
			t.Fatal(err)
		}
		if tool.Name == mcpserver.ToolInstallPackages {
			t.Fatal("install_packages is offered by a sidecar that allows no installs")
		}
	}
	// The tools' calls carry the MCP request's peer: with --allow-uids they pass as the peer's
	// own calls would, and the execution's log line names the peer's uid.
	uid := os.Getuid()
	only := startSidecar(t, nil, "--allow-uids", strconv.Itoa(uid))
	res, text, _ := callTool(t, connectMCP(t, mcpTransports(t, only)["http"]()), mcpserver.ToolRunPython, map[string]any{"code": "print('in')"})
	if res.IsError || !strings.Contains(text, "in\n") {
		t.Fatalf("run_python on a sidecar that allows uid %d: %q", uid, text)
	}
	waitForLog(t, only, func() bool { return len(only.logs("execution finished")) >= 1 })
	if lines := only.logs("execution finished"); len(lines) != 1 || lines[0]["uid"] != float64(uid) {
		t.Fatalf("the execution's log line: %v", lines)
	}
	other := startSidecar(t, nil, "--allow-uids", strconv.Itoa(uid+4242))
	ctx0, cancel0 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel0()
	if _, err := mcp.NewClient(&mcp.Implementation{Name: "t", Version: "1"}, nil).Connect(ctx0, mcpTransports(t, other)["http"](), nil); err == nil {
		t.Fatal("a peer outside --allow-uids reached /mcp")
	}
	off := startSidecar(t, nil, "--mcp=false")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := mcp.NewClient(&mcp.Implementation{Name: "t", Version: "1"}, nil).Connect(ctx, mcpTransports(t, off)["http"](), nil); err == nil {
		t.Fatal("MCP answered on a sidecar started with --mcp=false")
	}
}

// BenchmarkMCP compares, in one run against one sidecar, print(1) as a direct API call and as
// run_python over MCP on both transports (p50 and p95 of b.N calls each, one at a time).
//
//	go test ./cmd/pyexec/app -run '^$' -bench MCP -benchtime 200x
func BenchmarkMCP(b *testing.B) {
	s := startSidecar(b, nil)
	transports := mcpTransports(b, s)
	measure := func(b *testing.B, call func() error) {
		for range 3 { // warm-up
			if err := call(); err != nil {
				b.Fatal(err)
			}
		}
		took := make([]time.Duration, 0, b.N)
		for range b.N {
			start := time.Now()
			if err := call(); err != nil {
				b.Fatal(err)
			}
			took = append(took, time.Since(start))
		}
		slices.Sort(took)
		b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(took[len(took)*95/100].Microseconds())/1000, "p95-ms")
		b.ReportMetric(0, "ns/op")
	}
	b.Run("api", func(b *testing.B) {
		measure(b, func() error {
			_, err := s.client.Execute(context.Background(), api.ExecuteRequest{Code: "print(1)"})
			return err
		})
	})
	for _, name := range []string{"http", "stdio"} {
		b.Run("mcp-"+name, func(b *testing.B) {
			ctx := context.Background()
			cs, err := mcp.NewClient(&mcp.Implementation{Name: "bench", Version: "1"}, nil).Connect(ctx, transports[name](), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer cs.Close()
			measure(b, func() error {
				res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: mcpserver.ToolRunPython, Arguments: map[string]any{"code": "print(1)"}})
				if err == nil && res.IsError {
					err = fmt.Errorf("run_python failed: %+v", res.Content)
				}
				return err
			})
		})
	}
}

// `pyexec mcp` (the real binary) answers a line that is not JSON with a JSON-RPC parse error of
// id null and goes on: the genuine initialize and tools/list after it are answered; when its
// input ends it answers the call still running, then exits 0.
func TestMCPStdioAnswersParseErrors(t *testing.T) {
	s := startSidecar(t, nil)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "mcp", "--socket", s.socket)
	cmd.Env = []string{"PYEXEC_TEST_AS_MAIN=1", "PATH=/usr/bin:/bin", "HOME=/"}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	for _, line := range []string{
		"print('this is Python, not JSON')",
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`{"jsonrpc":"2.0","id":2,"method":"tools/list"}`,
	} {
		if _, err := fmt.Fprintln(in, line); err != nil {
			t.Fatalf("pyexec mcp stopped reading: %v; stderr %s", err, stderr.String())
		}
	}
	type answer struct {
		ID     json.RawMessage `json:"id"`
		Result json.RawMessage `json:"result"`
		Error  *struct {
			Code int `json:"code"`
		} `json:"error"`
	}
	byID := map[string]answer{}
	timer := time.AfterFunc(30*time.Second, func() { _ = cmd.Process.Kill() })
	defer timer.Stop()
	dec := json.NewDecoder(out)
	for len(byID) < 3 {
		var a answer
		if err := dec.Decode(&a); err != nil {
			t.Fatalf("after %d answers: %v; stderr %s", len(byID), err, stderr.String())
		}
		byID[string(a.ID)] = a
	}
	if a := byID["null"]; a.Error == nil || a.Error.Code != -32700 {
		t.Errorf("the line that is not JSON: %+v; want error -32700 of id null", a)
	}
	if a := byID["2"]; a.Error != nil || !strings.Contains(string(a.Result), mcpserver.ToolRunPython) {
		t.Errorf("tools/list after it: %s %+v", a.Result, a.Error)
	}
	// The last request, then the end of the input: its call is answered before pyexec mcp exits.
	if _, err := fmt.Fprintln(in, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"run_python","arguments":{"code":"import time\ntime.sleep(1)\nprint('late')"}}}`); err != nil {
		t.Fatal(err)
	}
	in.Close()
	var last answer
	if err := dec.Decode(&last); err != nil || string(last.ID) != "3" || !strings.Contains(string(last.Result), `stdout:\nlate`) {
		t.Errorf("the call in flight when the input ended: %s %s, %v; stderr %s", last.ID, last.Result, err, stderr.String())
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("pyexec mcp after its input ended: %v; stderr %s", err, stderr.String())
	}
}

// A run_python that asks for progress is told every 5 s that it still runs, on both transports
// (over /mcp its answer is then a stream of events), so that clients that reset their time-out
// on progress wait for it; its answer comes after.
func TestMCPProgress(t *testing.T) {
	s := startSidecar(t, nil)
	for name, tr := range mcpTransportsAs(t, s, "progress") {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			var got []float64
			ctx := context.Background()
			cs, err := mcp.NewClient(&mcp.Implementation{Name: "t", Version: "1"}, &mcp.ClientOptions{
				ProgressNotificationHandler: func(_ context.Context, r *mcp.ProgressNotificationClientRequest) {
					mu.Lock()
					got = append(got, r.Params.Progress)
					mu.Unlock()
				}}).Connect(ctx, tr(), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer cs.Close()
			params := &mcp.CallToolParams{Name: mcpserver.ToolRunPython, Arguments: map[string]any{"code": "import time\ntime.sleep(5.8)\nprint('done')"}}
			params.SetProgressToken(name)
			res, err := cs.CallTool(ctx, params)
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if res.IsError || len(res.Content) == 0 || res.Content[0].(*mcp.TextContent).Text != "stdout:\ndone\n" || len(got) != 1 || got[0] < 4.9 {
				t.Errorf("result %v; progress %v: want one notification at 5 s", res.Content, got)
			}
		})
	}
}
