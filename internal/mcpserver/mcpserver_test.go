package mcpserver

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/pyexec/pyexec/pkg/api"
	"github.com/pyexec/pyexec/pkg/client"
)

func textOf(r *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range r.Content {
		if t, ok := c.(*mcp.TextContent); ok {
			b.WriteString(t.Text)
		}
	}
	return b.String()
}

// What a model reads of a result: each part only when there is one, how it ended when that
// is not a normal exit, images beside the text.
func TestResultOf(t *testing.T) {
	png := base64.StdEncoding.EncodeToString([]byte("\x89PNG\r\n\x1a\nrest"))
	for _, tt := range []struct {
		name   string
		res    api.ExecuteResult
		text   string
		images int
		isErr  bool
	}{
		{"nothing", api.ExecuteResult{Reason: api.ReasonExit}, "(no output)\n", 0, false},
		{"output and value", api.ExecuteResult{Reason: api.ReasonExit, Stdout: "6\n", Outputs: []api.Output{{Type: api.OutputExecuteResult, Data: map[string]string{"text/plain": "'x'"}}}},
			"stdout:\n6\nresult:\n'x'\n", 0, false},
		{"figure", api.ExecuteResult{Reason: api.ReasonExit, Outputs: []api.Output{{Type: api.OutputDisplayData, Data: map[string]string{"text/plain": "<Figure>", "image/png": png}}}},
			"(no output)\n", 1, false},
		{"exception", api.ExecuteResult{Reason: api.ReasonExit, ExitCode: 1, Stderr: "ValueError: x"}, "stderr:\nValueError: x\nended: exit, exit code 1\n", 0, true},
		{"lost", api.ExecuteResult{Reason: api.ReasonTimeout, ExitCode: 137, Signal: "SIGKILL", SessionLost: true, StdoutTruncated: true, Stdout: "a"},
			"stdout:\na\n(stdout truncated)\nended: timeout, exit code 137, signal SIGKILL\nthe session was lost with this call: create a new one\n", 0, true},
		{"files", api.ExecuteResult{Reason: api.ReasonExit, Files: []api.OutputFile{{Path: "a.csv", Size: 3}}}, "files written: a.csv (3 bytes)\n", 0, false},
		{"hints", api.ExecuteResult{Reason: api.ReasonTimeout, ExitCode: 137, Hints: []string{"The code was stopped."}}, "ended: timeout, exit code 137\nhint: The code was stopped.\n", 0, true},
		{"a table", api.ExecuteResult{Reason: api.ReasonExit, Outputs: []api.Output{{Type: api.OutputExecuteResult, Data: map[string]string{"text/plain": "   a\n0  1", api.MIMELLMText: "pandas.DataFrame: 1 rows x 1 columns"}}}},
			"result:\npandas.DataFrame: 1 rows x 1 columns\n", 0, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := resultOf(&tt.res, nil)
			if got := textOf(r); got != tt.text {
				t.Errorf("text %q, want %q", got, tt.text)
			}
			if got := len(r.Content) - 1; got != tt.images || r.IsError != tt.isErr {
				t.Errorf("%d images, isError %v; want %d, %v", got, r.IsError, tt.images, tt.isErr)
			}
		})
	}
}

// With a pass, an image's canonical base64 is passed on, and the image's data is that of what
// stands for it, which the SDK writes as that base64; base64 that is not canonical (the SDK
// would write it otherwise) is decoded as without a pass, and what is not base64 is no image.
func TestResultOfPassesImagesOn(t *testing.T) {
	png := base64.StdEncoding.EncodeToString([]byte("\x89PNG\r\n\x1a\nrest"))
	const token = `"pyexecABCDEFGHIJKLMNOPQRSTUVWXYZ"`
	var passed []string
	pass := func(content json.RawMessage) json.RawMessage {
		passed = append(passed, string(content))
		return json.RawMessage(token)
	}
	notCanonical := png[:len(png)-4] + "\n" + png[len(png)-4:]
	res := api.ExecuteResult{Reason: api.ReasonExit, Outputs: []api.Output{
		{Type: api.OutputDisplayData, Data: map[string]string{"image/png": png}},
		{Type: api.OutputDisplayData, Data: map[string]string{"image/png": notCanonical}},
		{Type: api.OutputDisplayData, Data: map[string]string{"image/png": "not base64!"}},
	}}
	r := resultOf(&res, pass)
	if len(r.Content) != 3 {
		t.Fatalf("%d contents; want the text and two images", len(r.Content))
	}
	stood, _ := json.Marshal(r.Content[1].(*mcp.ImageContent).Data)
	if string(stood) != token || !slices.Equal(passed, []string{`"` + png + `"`}) {
		t.Errorf("the image's data is written as %s, passed on %q; want %s, and the image's base64 as a JSON string", stood, passed, token)
	}
	if got := string(r.Content[2].(*mcp.ImageContent).Data); got != "\x89PNG\r\n\x1a\nrest" {
		t.Errorf("base64 with a newline: %q", got)
	}
}

// A file's URI names its session and path, escaped, and parses back.
func TestFileURI(t *testing.T) {
	for _, tt := range []struct{ id, path, uri string }{
		{"s-1", "out.csv", "pyexec://sessions/s-1/files/out.csv"},
		{"s-1", "a dir/my plot#1.png", "pyexec://sessions/s-1/files/a%20dir/my%20plot%231.png"},
	} {
		if got := fileURI(tt.id, tt.path); got != tt.uri {
			t.Errorf("fileURI(%q, %q) = %q, want %q", tt.id, tt.path, got, tt.uri)
		}
		if id, p, ok := parseFileURI(tt.uri); !ok || id != tt.id || p != tt.path {
			t.Errorf("parseFileURI(%q) = %q, %q, %v", tt.uri, id, p, ok)
		}
	}
	for _, bad := range []string{"file:///etc/passwd", "pyexec://sessions/s-1/out.csv", "pyexec://sessions//files/x", "pyexec://sessions/s-1/files/", "pyexec://sessions/s-1/files/%zz"} {
		if _, _, ok := parseFileURI(bad); ok {
			t.Errorf("parseFileURI(%q) accepted it", bad)
		}
	}
}

// API errors become advice a model can act on.
func TestDescribe(t *testing.T) {
	for code, want := range map[string]string{
		api.ErrCodeSessionNotFound: "create_session",
		api.ErrCodeSessionBusy:     "Wait",
		api.ErrCodeTooManySessions: "close_session",
		api.ErrCodeQueueFull:       "queue_full: m",
	} {
		if got := describe(&client.APIError{Status: 400, Code: code, Message: "m"}); !strings.Contains(got, want) {
			t.Errorf("%s: %q does not say %q", code, got, want)
		}
	}
	if got := describe(errors.New("plain")); got != "plain" {
		t.Errorf("a plain error: %q", got)
	}
}

// fakeFiles is a backend of sessions and their files; nothing else of it is called.
type fakeFiles struct {
	Backend
	sessions []api.Session
	files    map[string]api.SessionFiles
	listed   int
}

func (f *fakeFiles) Sessions(context.Context) (*api.SessionList, error) {
	return &api.SessionList{Sessions: f.sessions}, nil
}

func (f *fakeFiles) SessionFiles(_ context.Context, id string) (*api.SessionFiles, error) {
	f.listed++
	l, ok := f.files[id]
	if !ok {
		return nil, &client.APIError{Status: 404, Code: api.ErrCodeSessionNotFound}
	}
	return &l, nil
}

// resources/list pages a session at a time, skips sessions without files, says when a
// session's listing was truncated, and goes on from its cursor when the session it names was
// closed meanwhile.
func TestListFilesPagesASessionAtATime(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	files := func(total int, paths ...string) api.SessionFiles {
		l := api.SessionFiles{Total: total, Truncated: total > len(paths)}
		for _, p := range paths {
			l.Files = append(l.Files, api.SessionFile{Path: p, Size: 1})
		}
		return l
	}
	f := &fakeFiles{
		sessions: []api.Session{{ID: "s1", CreatedAt: t0}, {ID: "s2", CreatedAt: t0.Add(time.Second)}, {ID: "s3", CreatedAt: t0.Add(2 * time.Second)}, {ID: "s4", CreatedAt: t0.Add(3 * time.Second)}},
		files:    map[string]api.SessionFiles{"s1": files(2, "a", "b"), "s2": files(0), "s3": files(5000, "x", "y", "z"), "s4": files(1, "only")},
	}
	tl := &tools{b: f}
	page := func(cursor string) *mcp.ListResourcesResult {
		t.Helper()
		r, err := tl.listFiles(context.Background(), cursor)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	names := func(r *mcp.ListResourcesResult) string {
		var n []string
		for _, res := range r.Resources {
			n = append(n, res.Name)
		}
		return strings.Join(n, ",")
	}
	p1 := page("")
	if names(p1) != "a,b" || p1.NextCursor == "" || p1.Meta != nil || f.listed != 1 {
		t.Fatalf("page 1: %q, next %q, meta %v, %d listings", names(p1), p1.NextCursor, p1.Meta, f.listed)
	}
	p2 := page(p1.NextCursor)
	if names(p2) != "x,y,z" || p2.NextCursor == "" || p2.Meta["truncated"] != true || p2.Meta["total_files"] != 5000 {
		t.Fatalf("page 2: %q, next %q, meta %v", names(p2), p2.NextCursor, p2.Meta)
	}
	p3 := page(p2.NextCursor)
	if names(p3) != "only" || p3.NextCursor != "" {
		t.Fatalf("page 3: %q, next %q", names(p3), p3.NextCursor)
	}
	// s2, which page 2 was to start from, is closed: page 2 starts at s3 all the same.
	f.sessions = slices.Delete(f.sessions, 1, 2)
	if p := page(p1.NextCursor); names(p) != "x,y,z" {
		t.Errorf("page 2 after its session closed: %q", names(p))
	}
	for _, bad := range []string{"nope", base64.RawURLEncoding.EncodeToString([]byte("yesterday s1"))} {
		var wire *jsonrpc.Error
		if _, err := tl.listFiles(context.Background(), bad); !errors.As(err, &wire) || wire.Code != jsonrpc.CodeInvalidParams {
			t.Errorf("cursor %q: %v; want invalid params", bad, err)
		}
	}
}

// rawBackend answers run_python's calls with a result as the sidecar's API would, and keeps
// the last request; with err, it fails every call with it.
type rawBackend struct {
	Backend
	body []byte
	err  error
	last *api.ExecuteRequest
}

func (b *rawBackend) ExecuteRaw(_ context.Context, req api.ExecuteRequest) (*client.RawResult, error) {
	b.last = &req
	if b.err != nil {
		return nil, b.err
	}
	var res api.ExecuteResult
	if err := json.Unmarshal(b.body, &res); err != nil {
		return nil, err
	}
	return &client.RawResult{Result: &res, Body: b.body}, nil
}

func (b *rawBackend) SessionExecuteRaw(ctx context.Context, _ string, req api.ExecuteRequest) (*client.RawResult, error) {
	return b.ExecuteRaw(ctx, req)
}

func (b *rawBackend) CreateSession(context.Context, api.SessionRequest) (*api.Session, error) {
	return nil, b.err
}

func (b *rawBackend) DeleteSession(context.Context, string) error { return b.err }

func (b *rawBackend) Sessions(context.Context) (*api.SessionList, error) { return nil, b.err }

// connect starts the MCP server of b and a client of it, in memory.
func connect(t *testing.T, b Backend) *mcp.ClientSession {
	t.Helper()
	return connectWith(t, b, Options{Version: "test"})
}

// connectWith starts the MCP server of b with opts and a client of it, in memory.
func connectWith(t *testing.T, b Backend, opts Options) *mcp.ClientSession {
	t.Helper()
	ct, st := mcp.NewInMemoryTransports()
	ctx := context.Background()
	ss, err := New(b, opts).Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ss.Close() })
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "test"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// toolOf is the tool named name as a client lists it.
func toolOf(t *testing.T, cs *mcp.ClientSession, name string) *mcp.Tool {
	t.Helper()
	for tool, err := range cs.Tools(context.Background(), nil) {
		if err != nil {
			t.Fatal(err)
		}
		if tool.Name == name {
			return tool
		}
	}
	t.Fatalf("no tool %s", name)
	return nil
}

func callTool(t *testing.T, cs *mcp.ClientSession, name string, args any) *mcp.CallToolResult {
	t.Helper()
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// run_python is lean for a model: no output schema, and a result of the text and the images
// alone, no structured content; a call that runs nothing is an error with no structured
// content either. Its input schema has no map (strict modes refuse them): files are a list of
// {path, content}, and the map of earlier versions is still taken; timeout_seconds is bounded
// by the server's maximum.
func TestRunPythonIsLean(t *testing.T) {
	png := base64.StdEncoding.EncodeToString([]byte("\x89PNG\r\n\x1a\nrest"))
	body := []byte(`{"id":"r1","exit_code":0,"stdout":"<6>\n","stderr":"","reason":"exit","timed_out":false,"stdout_truncated":false,"stderr_truncated":false,"duration_ms":12.5,` +
		`"files":[{"path":"a.bin","size":3,"content_base64":"AAEC"}],"files_truncated":false,"outputs":[{"type":"display_data","data":{"image/png":"` + png + `"}}],"outputs_truncated":false}` + "\n")
	b := &rawBackend{body: body}
	cs := connectWith(t, b, Options{Version: "test", MaxTimeoutSeconds: 300})
	tool := toolOf(t, cs, ToolRunPython)
	if tool.OutputSchema != nil {
		t.Errorf("run_python has an output schema: %v", tool.OutputSchema)
	}
	schema, _ := json.Marshal(tool.InputSchema)
	for _, want := range []string{`"maximum":300`, `"exclusiveMinimum":0`, `"required":["path","content"]`} {
		if !strings.Contains(string(schema), want) {
			t.Errorf("input schema lacks %s: %s", want, schema)
		}
	}
	if strings.Contains(string(schema), `"additionalProperties":{`) || strings.Contains(string(schema), `"additionalProperties":true`) {
		t.Errorf("input schema has a map: %s", schema)
	}

	res := callTool(t, cs, ToolRunPython, map[string]any{"code": "print(6)", "files": []any{map[string]any{"path": "in.txt", "content": "hi"}}})
	if res.IsError || res.StructuredContent != nil || len(res.Content) != 2 || textOf(res) != "stdout:\n<6>\nfiles written: a.bin (3 bytes)\n" {
		t.Errorf("result: isError %v, structured %v, %d contents, text %q", res.IsError, res.StructuredContent, len(res.Content), textOf(res))
	} else if img, ok := res.Content[1].(*mcp.ImageContent); !ok || img.MIMEType != "image/png" || string(img.Data) != "\x89PNG\r\n\x1a\nrest" {
		t.Errorf("image: %+v", res.Content[1])
	}
	if got := b.last.Files; len(got) != 1 || got[0].Path != "in.txt" || got[0].ContentBase64 != base64.StdEncoding.EncodeToString([]byte("hi")) {
		t.Errorf("files sent: %+v", got)
	}
	// The map of earlier versions, sorted by path.
	callTool(t, cs, ToolRunPython, map[string]any{"code": "1", "files": map[string]any{"b.txt": "2", "a.txt": "1"}})
	if got := b.last.Files; len(got) != 2 || got[0].Path != "a.txt" || got[1].Path != "b.txt" {
		t.Errorf("files of the old form sent as %+v", got)
	}
	for _, bad := range []map[string]any{
		{"code": " "},
		{"code": 1},
		{"code": "1", "timeout_seconds": 301},
		{"code": "1", "timeout_seconds": 0},
		{"code": "1", "files": map[string]any{"a": 1}},
		{"code": "1", "files": []any{map[string]any{"path": "a"}}},
		{"code": "1", "surprise": true},
	} {
		b.last = nil
		res := callTool(t, cs, ToolRunPython, bad)
		if !res.IsError || res.StructuredContent != nil || b.last != nil {
			t.Errorf("%v: isError %v, structured content %v, ran %v", bad, res.IsError, res.StructuredContent, b.last != nil)
		}
	}
	// A failing call of every tool has no structured content, though they have output schemas.
	fail := &rawBackend{err: &client.APIError{Status: 404, Code: api.ErrCodeSessionNotFound, Message: "no such session"}}
	cs = connectWith(t, fail, Options{Version: "test", Owner: "o"})
	for name, args := range map[string]map[string]any{
		ToolRunPython:     {"code": "1", "session_id": "s-x"},
		ToolCreateSession: {},
		ToolCloseSession:  {"session_id": "s-x"},
		ToolListSessions:  {},
	} {
		res := callTool(t, cs, name, args)
		if !res.IsError || res.StructuredContent != nil {
			t.Errorf("%s failing: isError %v, structured content %v", name, res.IsError, res.StructuredContent)
		}
	}
}

// With StructuredResult (deprecated), run_python declares the output schema mcp.AddTool
// derives from api.ExecuteResult, and a call's structured content is the API's JSON, files
// and all, beside the text a model reads.
func TestRunPythonStructuredResult(t *testing.T) {
	typed := mcp.NewServer(&mcp.Implementation{Name: "typed"}, nil)
	mcp.AddTool(typed, &mcp.Tool{Name: ToolRunPython}, func(context.Context, *mcp.CallToolRequest, RunInput) (*mcp.CallToolResult, *api.ExecuteResult, error) {
		return nil, nil, nil
	})
	want := listedTool(t, typed, ToolRunPython)

	body := []byte(`{"id":"r1","exit_code":0,"stdout":"<6>\n","stderr":"","reason":"exit","timed_out":false,"stdout_truncated":false,"stderr_truncated":false,"duration_ms":12.5,` +
		`"files":[{"path":"a.bin","size":3,"content_base64":"AAEC"}],"files_truncated":false,"outputs":[{"type":"execute_result","data":{"text/plain":"'x'"}}],"outputs_truncated":false}` + "\n")
	cs := connectWith(t, &rawBackend{body: body}, Options{Version: "test", StructuredResult: true})
	got := toolOf(t, cs, ToolRunPython)
	g, _ := json.Marshal(got.OutputSchema)
	w, _ := json.Marshal(want.OutputSchema)
	if string(g) != string(w) {
		t.Errorf("run_python's output schema:\n%s\nwant (mcp.AddTool's):\n%s", g, w)
	}
	res := callTool(t, cs, ToolRunPython, map[string]any{"code": "print(6)"})
	var structured, sent map[string]any
	b, _ := json.Marshal(res.StructuredContent)
	_ = json.Unmarshal(b, &structured)
	_ = json.Unmarshal(body, &sent)
	if !reflect.DeepEqual(structured, sent) {
		t.Errorf("structured content %s; want the API's result %s", b, body)
	}
	if text := textOf(res); text != "stdout:\n<6>\nresult:\n'x'\nfiles written: a.bin (3 bytes)\n" || res.IsError {
		t.Errorf("text %q, isError %v", text, res.IsError)
	}
}

// listedTool is the tool named name as tools/list lists it.
func listedTool(t *testing.T, s *mcp.Server, name string) *mcp.Tool {
	t.Helper()
	ct, st := mcp.NewInMemoryTransports()
	ctx := context.Background()
	ss, err := s.Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "test"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	for tool, err := range cs.Tools(ctx, nil) {
		if err != nil {
			t.Fatal(err)
		}
		if tool.Name == name {
			return tool
		}
	}
	t.Fatalf("no tool %s", name)
	return nil
}

// A request's owner: the transport's (the /mcp request's header, else the stdio server's),
// else the request's _meta; a _meta owner that differs from the transport's is refused, and
// one that is not a non-empty string too; none of them: no owner.
func TestOwnerOf(t *testing.T) {
	req := func(header string, meta any) *mcp.CallToolRequest {
		r := &mcp.CallToolRequest{Params: &mcp.CallToolParamsRaw{Name: ToolRunPython}}
		if header != "" {
			r.Extra = &mcp.RequestExtra{Header: http.Header{api.OwnerHeader: {header}}}
		}
		if meta != nil {
			r.Params.Meta = mcp.Meta{MetaOwner: meta}
		}
		return r
	}
	for _, tt := range []struct {
		server, header string
		meta           any
		want, err      string
	}{
		{"", "", nil, "", ""},
		{"", "", "m", "m", ""},
		{"", "h", nil, "h", ""},
		{"s", "", nil, "s", ""},
		{"s", "h", nil, "h", ""},
		{"", "h", "h", "h", ""},
		{"", "h", "m", "", "differs"},
		{"s", "", "m", "", "differs"},
		{"", "", "", "", "non-empty string"},
		{"", "", 7.0, "", "non-empty string"},
	} {
		got, err := (&tools{owner: tt.server}).ownerOf(req(tt.header, tt.meta))
		if got != tt.want || (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("server %q, header %q, meta %v: %q, %v; want %q, error %q", tt.server, tt.header, tt.meta, got, err, tt.want, tt.err)
		}
	}
	// A request sent without params (resources/list of the 2025 protocol) has none to read.
	if got, err := (&tools{owner: "s"}).ownerOf(&mcp.ListResourcesRequest{}); got != "s" || err != nil {
		t.Errorf("a request without params: %q, %v", got, err)
	}
}

// A Pyexec-Owner header the API would refuse — empty (or blank: net/http trims it), given
// twice — makes no anonymous caller of the request, whose _meta could then claim any owner:
// it is refused, as the API refuses it.
func TestOwnerOfRefusesAHeaderTheAPIRefuses(t *testing.T) {
	for _, values := range [][]string{{""}, {"al", "ice"}, {"alice", "alice"}, {strings.Repeat("a", api.MaxOwnerBytes+1)}} {
		for _, meta := range []mcp.Meta{nil, {MetaOwner: "alice"}} {
			r := &mcp.CallToolRequest{Params: &mcp.CallToolParamsRaw{Name: ToolRunPython, Meta: meta},
				Extra: &mcp.RequestExtra{Header: http.Header{api.OwnerHeader: values}}}
			if got, err := (&tools{}).ownerOf(r); err == nil {
				t.Errorf("header %q, _meta %v: owner %q; want an error", values, meta, got)
			}
		}
	}
}

// resources/list answers with cacheScope "private" (clients on the TypeScript SDK 2.x reject a
// result whose cacheScope is empty), and lists nothing to a caller of no owner.
func TestResourcesListIsPrivate(t *testing.T) {
	f := &fakeFiles{sessions: []api.Session{{ID: "s1"}}, files: map[string]api.SessionFiles{"s1": {Files: []api.SessionFile{{Path: "a.csv", Size: 1}}, Total: 1}}}
	for owner, want := range map[string]int{"o": 1, "": 0} {
		cs := connectWith(t, f, Options{Version: "test", Owner: owner})
		res, err := cs.ListResources(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.CacheScope != "private" || len(res.Resources) != want {
			t.Errorf("owner %q: cacheScope %q, %d resources; want private, %d", owner, res.CacheScope, len(res.Resources), want)
		}
	}
}

// panicky panics in every call.
type panicky struct{ Backend }

func (panicky) ExecuteRaw(context.Context, api.ExecuteRequest) (*client.RawResult, error) {
	panic("boom")
}

func (panicky) Sessions(context.Context) (*api.SessionList, error) { panic("boom") }

// A handler's panic is its request's error, a tool's or resources/list's; the server goes on.
func TestPanicIsTheRequestsError(t *testing.T) {
	cs := connectWith(t, panicky{}, Options{Version: "test", Owner: "o"})
	for range 2 {
		_, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: ToolRunPython, Arguments: map[string]any{"code": "1"}})
		if err == nil || !strings.Contains(err.Error(), "boom") {
			t.Fatalf("a call whose handler panics: %v", err)
		}
		if _, err := cs.ListResources(context.Background(), nil); err == nil || !strings.Contains(err.Error(), "boom") {
			t.Fatalf("resources/list whose handler panics: %v", err)
		}
	}
}

// slowBackend answers run_python after a while.
type slowBackend struct {
	rawBackend
	wait time.Duration
}

func (b *slowBackend) ExecuteRaw(ctx context.Context, req api.ExecuteRequest) (*client.RawResult, error) {
	time.Sleep(b.wait)
	return b.rawBackend.ExecuteRaw(ctx, req)
}

// A call with a progress token is told of every ProgressEvery while it runs, with the seconds
// it has run, rising; a call without one is told nothing; nothing comes after the answer.
func TestRunPythonProgress(t *testing.T) {
	b := &slowBackend{rawBackend: rawBackend{body: []byte(`{"exit_code":0,"reason":"exit","stdout":"done\n"}`)}, wait: 350 * time.Millisecond}
	ct, st := mcp.NewInMemoryTransports()
	ctx := context.Background()
	ss, err := New(b, Options{Version: "test", ProgressEvery: 100 * time.Millisecond}).Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	var mu sync.Mutex
	var got []*mcp.ProgressNotificationParams
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "test"}, &mcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, r *mcp.ProgressNotificationClientRequest) {
			mu.Lock()
			got = append(got, r.Params)
			mu.Unlock()
		}}).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(got)
	}
	params := &mcp.CallToolParams{Name: ToolRunPython, Arguments: map[string]any{"code": "1"}}
	if _, err := cs.CallTool(ctx, params); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 0 {
		t.Fatalf("%d progress notifications for a call without a progress token", n)
	}
	params.SetProgressToken("tok-1")
	if res, err := cs.CallTool(ctx, params); err != nil || res.IsError {
		t.Fatalf("call: %v %v", res, err)
	}
	atAnswer := count()
	time.Sleep(250 * time.Millisecond) // any late one would come now
	mu.Lock()
	defer mu.Unlock()
	if len(got) != atAnswer {
		t.Errorf("%d progress notifications after the answer", len(got)-atAnswer)
	}
	if len(got) < 2 || len(got) > 4 {
		t.Fatalf("%d progress notifications in a call of 350 ms, one each 100 ms", len(got))
	}
	for i, p := range got {
		if p.ProgressToken != "tok-1" || p.Progress <= 0 || (i > 0 && p.Progress <= got[i-1].Progress) || !strings.HasPrefix(p.Message, "running for") {
			t.Errorf("notification %d: %+v", i, p)
		}
	}
}

// The instructions name the Python that runs the code and the notable packages it has — or
// that it has none of them — so that a model neither imports what is not there nor installs
// what is.
func TestInstructionsNameThePython(t *testing.T) {
	dist := func(nv ...string) []api.Distribution {
		var ds []api.Distribution
		for i := 0; i < len(nv); i += 2 {
			ds = append(ds, api.Distribution{Name: nv[i], Version: nv[i+1]})
		}
		return ds
	}
	for _, tc := range []struct {
		py   *api.Python
		want string
	}{
		{nil, "the system's Python 3 with the packages installed in it, no network"},
		{&api.Python{Version: "3.11.2", Distributions: dist("pip", "23.0.1", "pandas", "1.5.3", "numpy", "1.24.2", "setuptools", "66.1.1")},
			"Python 3.11.2 with numpy 1.24.2 and pandas 1.5.3 (and 2 other packages), no network"},
		{&api.Python{Version: "3.13.0", Distributions: dist("matplotlib", "3.9.0")}, "Python 3.13.0 with matplotlib 3.9.0, no network"},
		{&api.Python{Version: "3.12.1", Distributions: dist("numpy", "2.0.0", "scipy", "1.14.0", "requests", "2.32.0", "idna", "3.7")},
			"Python 3.12.1 with numpy 2.0.0, scipy 1.14.0 and requests 2.32.0 (and 1 other package), no network"},
		{&api.Python{Version: "3.11.2", Distributions: dist("pip", "23.0.1")},
			"Python 3.11.2 with its standard library and 1 package (numpy, pandas and matplotlib are not installed), no network"},
		{&api.Python{Version: "3.8.18"}, "Python 3.8.18 with its standard library alone (numpy, pandas and matplotlib are not installed)"},
	} {
		if got := Instructions(tc.py); !strings.Contains(got, tc.want) {
			t.Errorf("Instructions(%+v) = %q, want it to contain %q", tc.py, got, tc.want)
		}
	}
}
