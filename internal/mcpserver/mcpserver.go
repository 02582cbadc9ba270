// Package mcpserver is pyexec as a Model Context Protocol server: the sidecar's capabilities —
// running Python, sessions, installing packages, a session's files — as MCP tools and
// resources that any agent framework can call. It holds no logic of its own beyond the
// translation: every call goes to a Backend, the sidecar's socket API, so MCP calls pass the
// same peer checks, admission queue, limits, confinement and logs as the HTTP API.
package mcpserver

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/url"
	"path"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/pyexec/pyexec/pkg/api"
	"github.com/pyexec/pyexec/pkg/client"
)

// Backend is the sidecar's API; *client.Client is one, over the socket or in process.
type Backend interface {
	ExecuteRaw(ctx context.Context, req api.ExecuteRequest) (*client.RawResult, error)
	SessionExecuteRaw(ctx context.Context, id string, req api.ExecuteRequest) (*client.RawResult, error)
	CreateSession(ctx context.Context, req api.SessionRequest) (*api.Session, error)
	DeleteSession(ctx context.Context, id string) error
	Sessions(ctx context.Context) (*api.SessionList, error)
	SessionFiles(ctx context.Context, id string) (*api.SessionFiles, error)
	SessionFile(ctx context.Context, id, path string) ([]byte, string, error)
	InstallPackages(ctx context.Context, req api.PackagesRequest) (*api.Packages, error)
}

// Options configure the MCP server.
type Options struct {
	// Version is the server's, reported to clients.
	Version string
	// Packages offers install_packages: the sidecar allows installs at run time
	// (--allow-packages is not empty).
	Packages bool
	// PassOn, when set, takes the large parts of run_python's answer — its structured content
	// (the API's result, files and all, one line of JSON) and each image's base64 — past the
	// SDK's encoder: it returns a JSON string of base64 characters that stands for the content
	// in the tool's result (as it is, or as an image's data), and the transport writes the
	// content in its place. The SDK then encodes a small answer; without PassOn it encodes the
	// contents itself, a copy at each of its steps.
	PassOn func(ctx context.Context, content json.RawMessage) json.RawMessage
}

// Tool names.
const (
	ToolRunPython       = "run_python"
	ToolCreateSession   = "create_session"
	ToolCloseSession    = "close_session"
	ToolListSessions    = "list_sessions"
	ToolInstallPackages = "install_packages"
)

// FileURITemplate names a file of a session's working directory as a resource.
const FileURITemplate = "pyexec://sessions/{session_id}/files/{+path}"

// instructions tell a model what the server is for.
const instructions = `pyexec runs Python code in a sandbox next to this application: the system's Python 3 with its installed packages (often numpy, pandas, matplotlib), no network unless the operator allows it, and limits on time, memory and output. Use run_python for a calculation, a data analysis or a plot. For several steps that build on each other, create_session first and pass its session_id to each run_python: variables, imports and files then persist between calls. Files a session writes are resources (pyexec://sessions/{id}/files/{path}).`

// New returns the MCP server of backend.
func New(backend Backend, opts Options) *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "pyexec", Title: "pyexec Python sandbox", Version: opts.Version},
		&mcp.ServerOptions{Instructions: instructions, HasResources: true})
	t := &tools{b: backend, passOn: opts.PassOn}
	// run_python's structured content is the API's result as the sidecar answered it (see
	// runPython): its output schema is set here, as the SDK would derive it from the type, so
	// that the SDK neither encodes the result again nor decodes it to check it.
	mcp.AddTool(s, &mcp.Tool{
		Name:  ToolRunPython,
		Title: "Run Python",
		Description: "Run Python 3 code and return what it printed, the value of its last expression (as in a notebook cell), " +
			"and each matplotlib figure as an image. Without session_id the code runs in a fresh interpreter and nothing persists; " +
			"with session_id it runs in that session, where earlier calls' variables, imports and files are still there. " +
			"The result is an error when the code raised, exited with a non-zero status or hit a limit (time, memory, output).",
		OutputSchema: resultSchema,
	}, t.runPython)
	mcp.AddTool(s, &mcp.Tool{
		Name:        ToolCreateSession,
		Title:       "Create a Python session",
		Description: "Start a Python session: an interpreter whose variables, imports and working directory persist from one run_python call to the next. Returns session_id; pass it to run_python. Close it with close_session when done; an idle session ends by itself after its idle timeout.",
	}, t.createSession)
	mcp.AddTool(s, &mcp.Tool{
		Name:        ToolCloseSession,
		Title:       "Close a Python session",
		Description: "End a session and free its memory. Its variables and files are gone afterwards.",
	}, t.closeSession)
	mcp.AddTool(s, &mcp.Tool{
		Name:        ToolListSessions,
		Title:       "List Python sessions",
		Description: "List the open sessions: id, when each was created and last used, when it expires, how many calls it ran, its memory.",
	}, t.listSessions)
	if opts.Packages {
		mcp.AddTool(s, &mcp.Tool{
			Name:        ToolInstallPackages,
			Title:       "Install Python packages",
			Description: "Install Python packages (PEP 508 requirements such as \"scipy\" or \"scikit-learn>=1.4\") for later run_python calls. Only packages the operator allows can be installed.",
		}, t.installPackages)
	}
	s.AddResourceTemplate(&mcp.ResourceTemplate{
		Name:        "session-file",
		Title:       "A file of a session",
		URITemplate: FileURITemplate,
		Description: "A file in a session's working directory, such as a CSV or a PNG the code wrote.",
	}, t.readFile)
	// resources/list names the files of every open session, read from the sidecar each time,
	// a session per page.
	s.AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			if method != "resources/list" {
				return next(ctx, method, req)
			}
			var cursor string
			if p, ok := req.GetParams().(*mcp.ListResourcesParams); ok && p != nil {
				cursor = p.Cursor
			}
			return t.listFiles(ctx, cursor)
		}
	})
	return s
}

// tools are the handlers, over the backend.
type tools struct {
	b      Backend
	passOn func(ctx context.Context, content json.RawMessage) json.RawMessage
}

// RunInput is run_python's input.
type RunInput struct {
	Code           string            `json:"code" jsonschema:"the Python 3 source to run"`
	SessionID      string            `json:"session_id,omitempty" jsonschema:"run in this session (from create_session) so that state persists; omit for a fresh interpreter"`
	TimeoutSeconds float64           `json:"timeout_seconds,omitempty" jsonschema:"time limit in seconds; omit for the server's default"`
	Files          map[string]string `json:"files,omitempty" jsonschema:"text files to write into the working directory before the code runs: relative path to content"`
}

// resultSchema is run_python's output schema: the API's result, as mcp.AddTool derives a
// schema from a type.
var resultSchema = func() *jsonschema.Schema {
	s, err := jsonschema.ForType(reflect.TypeFor[api.ExecuteResult](), &jsonschema.ForOptions{})
	if err != nil {
		panic(fmt.Sprintf("the schema of api.ExecuteResult: %v", err))
	}
	return s
}()

// noResult is run_python's structured content when no code ran: the zero result, as the
// output schema asks for one.
var noResult = func() json.RawMessage {
	b, err := json.Marshal(api.ExecuteResult{})
	if err != nil {
		panic(err)
	}
	return b
}()

// runPython runs the code and answers with what a model reads of the result (resultOf) and,
// as structured content, the result as the API answered it. That JSON is passed on as it is
// (the files' contents in it are never decoded, nor encoded again): a call holds its result
// about once while its answer is built, not once per step of decoding and encoding.
func (t *tools) runPython(ctx context.Context, _ *mcp.CallToolRequest, in RunInput) (*mcp.CallToolResult, any, error) {
	if strings.TrimSpace(in.Code) == "" {
		return withNoResult(failed("code is empty: pass the Python source to run")), nil, nil
	}
	req := api.ExecuteRequest{Code: in.Code, Files: textFiles(in.Files)}
	if in.TimeoutSeconds > 0 {
		req.TimeoutSeconds = &in.TimeoutSeconds
	}
	var raw *client.RawResult
	var err error
	if in.SessionID != "" {
		raw, err = t.b.SessionExecuteRaw(ctx, in.SessionID, req)
	} else {
		raw, err = t.b.ExecuteRaw(ctx, req)
	}
	if err != nil {
		return withNoResult(failed(describe(err))), nil, nil
	}
	var pass func(json.RawMessage) json.RawMessage
	if t.passOn != nil {
		pass = func(content json.RawMessage) json.RawMessage { return t.passOn(ctx, content) }
	}
	res := resultOf(raw.Result, pass)
	content := json.RawMessage(bytes.TrimSuffix(raw.Body, []byte("\n")))
	if pass != nil {
		content = pass(content)
	}
	res.StructuredContent = content
	return res, nil, nil
}

func withNoResult(r *mcp.CallToolResult) *mcp.CallToolResult {
	r.StructuredContent = noResult
	return r
}

// textFiles turns run_python's files into the API's, sorted by path.
func textFiles(files map[string]string) []api.InputFile {
	out := make([]api.InputFile, 0, len(files))
	for p, content := range files {
		out = append(out, api.InputFile{Path: p, ContentBase64: base64.StdEncoding.EncodeToString([]byte(content))})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// resultOf is the content a model reads of an execution: its output, the value of its last
// expression, how it ended when that is not a normal exit, the files it wrote, and each image.
// pass, when not nil, passes each image's base64 on (see imageData).
func resultOf(res *api.ExecuteResult, pass func(json.RawMessage) json.RawMessage) *mcp.CallToolResult {
	var b strings.Builder
	section := func(name, text string) {
		if text == "" {
			return
		}
		fmt.Fprintf(&b, "%s:\n%s", name, text)
		if !strings.HasSuffix(text, "\n") {
			b.WriteByte('\n')
		}
	}
	section("stdout", res.Stdout)
	if res.StdoutTruncated {
		b.WriteString("(stdout truncated)\n")
	}
	section("stderr", res.Stderr)
	if res.StderrTruncated {
		b.WriteString("(stderr truncated)\n")
	}
	var images []mcp.Content
	for _, o := range res.Outputs {
		if o.Type == api.OutputExecuteResult {
			section("result", o.Data["text/plain"])
		}
		if png, ok := imageData(o.Data["image/png"], pass); ok {
			images = append(images, &mcp.ImageContent{Data: png, MIMEType: "image/png"})
		}
	}
	failed := res.Reason != api.ReasonExit || res.ExitCode != 0
	if failed {
		fmt.Fprintf(&b, "ended: %s, exit code %d", res.Reason, res.ExitCode)
		if res.Signal != "" {
			fmt.Fprintf(&b, ", signal %s", res.Signal)
		}
		b.WriteByte('\n')
	}
	if res.SessionLost {
		b.WriteString("the session was lost with this call: create a new one\n")
	}
	if len(res.Files) > 0 {
		names := make([]string, len(res.Files))
		for i, f := range res.Files {
			names[i] = fmt.Sprintf("%s (%d bytes)", f.Path, f.Size)
		}
		fmt.Fprintf(&b, "files written: %s\n", strings.Join(names, ", "))
	}
	if b.Len() == 0 {
		b.WriteString("(no output)\n")
	}
	content := append([]mcp.Content{&mcp.TextContent{Text: b.String()}}, images...)
	return &mcp.CallToolResult{Content: content, IsError: failed}
}

// imageData is the data of an image for an ImageContent, of its base64 b64: ok is false when
// b64 is not base64 or is empty. With pass, a b64 that is canonical — what
// base64.StdEncoding makes of its bytes, as the SDK would write them — is passed on as a JSON
// string, and the data returned is that of what stands for it: the SDK writes it as that
// string, and the transport writes b64 in its place.
func imageData(b64 string, pass func(json.RawMessage) json.RawMessage) ([]byte, bool) {
	if pass != nil && canonicalBase64(b64) {
		quoted := make([]byte, 0, len(b64)+2)
		quoted = append(append(append(quoted, '"'), b64...), '"')
		stand := pass(quoted)
		if data, err := base64.StdEncoding.DecodeString(strings.Trim(string(stand), `"`)); err == nil {
			return data, true
		}
	}
	data, err := base64.StdEncoding.DecodeString(b64)
	return data, err == nil && len(data) > 0
}

// canonicalBase64 says b64 is base64.StdEncoding's encoding of some bytes, at least one.
func canonicalBase64(b64 string) bool {
	if b64 == "" || strings.ContainsAny(b64, "\r\n") { // the decoder skips them; the encoder writes none
		return false
	}
	_, err := io.Copy(io.Discard, base64.NewDecoder(base64.StdEncoding.Strict(), strings.NewReader(b64)))
	return err == nil
}

// SessionInput is create_session's input.
type SessionInput struct {
	IdleTimeoutSeconds float64           `json:"idle_timeout_seconds,omitempty" jsonschema:"end the session after this many seconds without a call; omit for the server's default"`
	MemoryLimitMB      int               `json:"memory_limit_mb,omitempty" jsonschema:"memory limit of the session's interpreter in MiB; omit for the server's default"`
	Env                map[string]string `json:"env,omitempty" jsonschema:"environment variables of the session's interpreter"`
	Files              map[string]string `json:"files,omitempty" jsonschema:"text files to write into the session's working directory: relative path to content"`
}

// SessionOutput is create_session's structured result.
type SessionOutput struct {
	SessionID          string  `json:"session_id" jsonschema:"pass it to run_python"`
	ExpiresAt          string  `json:"expires_at" jsonschema:"when the session ends unless it is used first (RFC 3339)"`
	IdleTimeoutSeconds float64 `json:"idle_timeout_seconds"`
}

func (t *tools) createSession(ctx context.Context, _ *mcp.CallToolRequest, in SessionInput) (*mcp.CallToolResult, *SessionOutput, error) {
	req := api.SessionRequest{Env: in.Env, Files: textFiles(in.Files)}
	if in.IdleTimeoutSeconds > 0 {
		req.IdleTimeoutSeconds = &in.IdleTimeoutSeconds
	}
	if in.MemoryLimitMB > 0 {
		req.MemoryLimitMB = &in.MemoryLimitMB
	}
	s, err := t.b.CreateSession(ctx, req)
	if err != nil {
		return failed(describe(err)), nil, nil
	}
	out := &SessionOutput{SessionID: s.ID, ExpiresAt: s.ExpiresAt.UTC().Format("2006-01-02T15:04:05Z07:00"), IdleTimeoutSeconds: s.IdleTimeoutSeconds}
	return text(fmt.Sprintf("session %s created; it ends after %gs without a call", s.ID, s.IdleTimeoutSeconds)), out, nil
}

// CloseInput is close_session's input.
type CloseInput struct {
	SessionID string `json:"session_id" jsonschema:"the session to end"`
}

// CloseOutput is close_session's structured result.
type CloseOutput struct {
	Closed bool `json:"closed"`
}

func (t *tools) closeSession(ctx context.Context, _ *mcp.CallToolRequest, in CloseInput) (*mcp.CallToolResult, *CloseOutput, error) {
	if err := t.b.DeleteSession(ctx, in.SessionID); err != nil {
		return failed(describe(err)), nil, nil
	}
	return text("session " + in.SessionID + " closed"), &CloseOutput{Closed: true}, nil
}

// ListOutput is list_sessions' structured result.
type ListOutput struct {
	Sessions []api.Session `json:"sessions"`
}

func (t *tools) listSessions(ctx context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, *ListOutput, error) {
	list, err := t.b.Sessions(ctx)
	if err != nil {
		return failed(describe(err)), nil, nil
	}
	var b strings.Builder
	for _, s := range list.Sessions {
		fmt.Fprintf(&b, "%s: %d calls, last used %s, expires %s, %d MiB\n", s.ID, s.Executions,
			s.LastUsedAt.UTC().Format("15:04:05"), s.ExpiresAt.UTC().Format("15:04:05"), s.MemoryBytes>>20)
	}
	if len(list.Sessions) == 0 {
		b.WriteString("no open sessions\n")
	}
	return text(b.String()), &ListOutput{Sessions: list.Sessions}, nil
}

// PackagesInput is install_packages' input.
type PackagesInput struct {
	Packages []string `json:"packages" jsonschema:"PEP 508 requirements, such as scipy or scikit-learn>=1.4"`
}

func (t *tools) installPackages(ctx context.Context, _ *mcp.CallToolRequest, in PackagesInput) (*mcp.CallToolResult, *api.Packages, error) {
	p, err := t.b.InstallPackages(ctx, api.PackagesRequest{Packages: in.Packages})
	if err != nil {
		return failed(describe(err)), nil, nil
	}
	var names []string
	for _, i := range p.Installed {
		names = append(names, i.Name+"=="+i.Version)
	}
	return text("installed; the packages tree now has: " + strings.Join(names, ", ")), p, nil
}

// fileURI names a session's file.
func fileURI(id, p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return "pyexec://sessions/" + url.PathEscape(id) + "/files/" + strings.Join(segs, "/")
}

// parseFileURI is fileURI's inverse.
func parseFileURI(uri string) (id, p string, ok bool) {
	rest, ok := strings.CutPrefix(uri, "pyexec://sessions/")
	if !ok {
		return "", "", false
	}
	id, p, ok = strings.Cut(rest, "/files/")
	if !ok {
		return "", "", false
	}
	var err error
	if id, err = url.PathUnescape(id); err != nil {
		return "", "", false
	}
	if p, err = url.PathUnescape(p); err != nil || id == "" || p == "" {
		return "", "", false
	}
	return id, p, true
}

// listFiles answers resources/list, one page per session that has files: the files of the
// first such session from cursor on, as GET /v1/sessions/{id}/files lists them (at most
// api.MaxSessionFiles, within its time bound), and nextCursor names the session after it. So a
// page costs one bounded listing however many sessions and files there are. A page whose
// listing left files out says so in its _meta (truncated, total_files); those files are still
// read by their URI.
func (t *tools) listFiles(ctx context.Context, cursor string) (*mcp.ListResourcesResult, error) {
	list, err := t.b.Sessions(ctx)
	if err != nil {
		return nil, err
	}
	out := &mcp.ListResourcesResult{Resources: []*mcp.Resource{}}
	from, err := parseCursor(cursor)
	if err != nil {
		return nil, err
	}
	sessions := list.Sessions
	for len(sessions) > 0 && before(sessions[0], from) {
		sessions = sessions[1:]
	}
	for i, s := range sessions {
		files, err := t.b.SessionFiles(ctx, s.ID)
		if err != nil || len(files.Files) == 0 {
			continue // it ended meanwhile, or has no files
		}
		for _, f := range files.Files {
			out.Resources = append(out.Resources, &mcp.Resource{
				URI: fileURI(s.ID, f.Path), Name: f.Path, Title: f.Path + " (session " + s.ID + ")",
				MIMEType: mimeType(f.Path), Size: f.Size,
			})
		}
		if files.Truncated {
			out.Meta = mcp.Meta{"truncated": true, "total_files": files.Total, "session_id": s.ID}
		}
		if i+1 < len(sessions) {
			out.NextCursor = cursorOf(sessions[i+1])
		}
		break
	}
	return out, nil
}

// A cursor of resources/list names the session a page starts from by its creation time and
// id: GET /v1/sessions lists sessions oldest first, so a page goes on from where the last one
// stopped even when sessions were closed or created meanwhile.
type pageCursor struct {
	created time.Time
	id      string
}

func cursorOf(s api.Session) string {
	return base64.RawURLEncoding.EncodeToString([]byte(s.CreatedAt.UTC().Format(time.RFC3339Nano) + " " + s.ID))
}

// parseCursor reads a cursor of cursorOf; the empty cursor starts from the first session.
func parseCursor(cursor string) (pageCursor, error) {
	if cursor == "" {
		return pageCursor{}, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(cursor)
	created, id, ok := strings.Cut(string(b), " ")
	var c pageCursor
	if err == nil && ok {
		c.created, err = time.Parse(time.RFC3339Nano, created)
		c.id = id
	}
	if err != nil || !ok || c.id == "" {
		return pageCursor{}, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "invalid cursor: pass the nextCursor of the last resources/list, or none to start over"}
	}
	return c, nil
}

// before says s comes before the session the cursor names, in the order of GET /v1/sessions.
func before(s api.Session, c pageCursor) bool {
	if c.id == "" {
		return false
	}
	if !s.CreatedAt.Equal(c.created) {
		return s.CreatedAt.Before(c.created)
	}
	return s.ID < c.id
}

func (t *tools) readFile(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
	uri := req.Params.URI
	id, p, ok := parseFileURI(uri)
	if !ok {
		return nil, mcp.ResourceNotFoundError(uri)
	}
	data, contentType, err := t.b.SessionFile(ctx, id, p)
	var apiErr *client.APIError
	if errors.As(err, &apiErr) && apiErr.Status == 404 {
		return nil, mcp.ResourceNotFoundError(uri)
	}
	if err != nil {
		return nil, err
	}
	c := &mcp.ResourceContents{URI: uri, MIMEType: contentType}
	if strings.HasPrefix(contentType, "text/") || contentType == "application/json" {
		c.Text = string(data)
	} else {
		c.Blob = data
	}
	return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{c}}, nil
}

func mimeType(p string) string {
	if t := mime.TypeByExtension(path.Ext(p)); t != "" {
		return t
	}
	return "application/octet-stream"
}

// describe says what went wrong with a call, for a model to act on.
func describe(err error) string {
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) {
		return err.Error()
	}
	switch apiErr.Code {
	case api.ErrCodeSessionNotFound:
		return apiErr.Message + ". Create a new session with create_session."
	case api.ErrCodeSessionBusy:
		return apiErr.Message + ". Wait for the running call to finish."
	case api.ErrCodeTooManySessions:
		return apiErr.Message + ". Close a session you no longer need with close_session."
	}
	return fmt.Sprintf("%s: %s", apiErr.Code, apiErr.Message)
}

func text(s string) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
}

func failed(s string) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}, IsError: true}
}
