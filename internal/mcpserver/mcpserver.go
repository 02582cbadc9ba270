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
	"strconv"
	"strings"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/pyexec/pyexec/pkg/api"
	"github.com/pyexec/pyexec/pkg/client"
)

// Backend is the sidecar's API; *client.Client is one, over the socket or in process. Each
// call's context carries its caller's owner (client.WithOwner) when it has one.
type Backend interface {
	ExecuteRaw(ctx context.Context, req api.ExecuteRequest) (*client.RawResult, error)
	SessionExecuteRaw(ctx context.Context, id string, req api.ExecuteRequest) (*client.RawResult, error)
	CreateSession(ctx context.Context, req api.SessionRequest) (*api.Session, error)
	DeleteSession(ctx context.Context, id string) error
	Sessions(ctx context.Context) (*api.SessionList, error)
	Session(ctx context.Context, id string) (*api.Session, error)
	SessionFiles(ctx context.Context, id string) (*api.SessionFiles, error)
	SessionVariables(ctx context.Context, id string) (*api.Variables, error)
	Checkpoint(ctx context.Context, id string) (*api.Checkpoint, error)
	Checkpoints(ctx context.Context, id string) (*api.Checkpoints, error)
	RestoreCheckpoint(ctx context.Context, id, checkpoint string) (*api.Session, error)
	ForkN(ctx context.Context, id string, n int) ([]api.Session, error)
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
	// Owner is the owner of this transport's callers' sessions when a request names none
	// (`pyexec mcp --owner`, or a key of the process); see ownerOf.
	Owner string
	// MaxTimeoutSeconds is the server's --max-timeout: run_python's timeout_seconds is at most
	// this in its schema. 0: no maximum in the schema (the server still has its own).
	MaxTimeoutSeconds float64
	// StructuredResult gives run_python, as before, an output schema (the API's result) and the
	// API's whole result as structured content. Deprecated: for clients that read it; to go in
	// a later release. Models are given the text and the images either way.
	StructuredResult bool
	// Python is the interpreter the sidecar runs code with (GET /v1/info's python): the
	// instructions name its version and packages. nil: they speak of it in general.
	Python *api.Python
	// ProgressEvery is how often a call with a progress token is told of (0: every 5 s).
	ProgressEvery time.Duration
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
	ToolRunPython      = "run_python"
	ToolCreateSession  = "create_session"
	ToolCloseSession   = "close_session"
	ToolListSessions   = "list_sessions"
	ToolInspectSession = "inspect_session"
	// ToolCheckpointSession and ToolRestoreSession: a session's checkpoints (an undo).
	ToolCheckpointSession = "checkpoint_session"
	ToolRestoreSession    = "restore_session"
	// ToolForkSession forks a session into branches that go their own ways.
	ToolForkSession     = "fork_session"
	ToolInstallPackages = "install_packages"
)

// OutputBudgetChars is run_python's output budget (api.ExecuteRequest.OutputBudgetChars): a
// model reads at most about this many characters of stdout and stderr, their first and last,
// and a session keeps the whole output as a file.
const OutputBudgetChars = 20000

// MetaOwner is the key in a request's _meta of the owner it is made for (see ownerOf).
const MetaOwner = "pyexec/owner"

// FileURITemplate names a file of a session's working directory as a resource.
const FileURITemplate = "pyexec://sessions/{session_id}/files/{+path}"

// Instructions tell a model what the server is for, and what Python it has: py is the
// interpreter the sidecar runs code with (GET /v1/info's python), nil when unknown.
func Instructions(py *api.Python) string {
	return "pyexec runs Python code in a sandbox next to this application: " + describePython(py) +
		", no network unless the operator allows it, and limits on time, memory and output. Use run_python for a calculation, a data analysis or a plot. For several steps that build on each other, create_session first and pass its session_id to each run_python: variables, imports and files then persist between calls. Files a session writes are resources (pyexec://sessions/{id}/files/{path}). Before a step that may spoil a session's state (dropping rows, overwriting a variable or a file), checkpoint_session; restore_session then undoes everything since, in milliseconds. To try several approaches from the same state, fork_session: each branch is a session of its own with that state, and the original stays as it was."
}

// notablePackages are the distributions a model most often reaches for, named in the
// instructions when the interpreter has them (PEP 503 names, in the order they are named).
var notablePackages = []string{"numpy", "pandas", "matplotlib", "scipy", "scikit-learn", "statsmodels", "seaborn",
	"sympy", "networkx", "polars", "pyarrow", "pillow", "openpyxl", "requests"}

// describePython says which Python runs the code and which of the notable packages it has, so
// that a model neither imports what is not there nor installs what is.
func describePython(py *api.Python) string {
	if py == nil || py.Version == "" {
		return "the system's Python 3 with the packages installed in it"
	}
	have := map[string]string{}
	for _, d := range py.Distributions {
		have[d.Name] = d.Version
	}
	var named []string
	for _, name := range notablePackages {
		if v, ok := have[name]; ok {
			named = append(named, name+" "+v)
		}
	}
	out := "Python " + py.Version
	switch {
	case len(have) == 0:
		return out + " with its standard library alone (numpy, pandas and matplotlib are not installed)"
	case len(named) == 0:
		return out + " with its standard library and " + plural(len(have), "package") + " (numpy, pandas and matplotlib are not installed)"
	}
	out += " with " + strings.Join(named[:len(named)-1], ", ")
	if len(named) > 1 {
		out += " and "
	}
	out += named[len(named)-1]
	if others := len(have) - len(named); others > 0 {
		out += " (and " + plural(others, "other package") + ")"
	}
	return out
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}

// New returns the MCP server of backend.
func New(backend Backend, opts Options) *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "pyexec", Title: "pyexec Python sandbox", Version: opts.Version},
		&mcp.ServerOptions{Instructions: Instructions(opts.Python), HasResources: true})
	every := opts.ProgressEvery
	if every <= 0 {
		every = 5 * time.Second
	}
	t := &tools{b: backend, passOn: opts.PassOn, owner: opts.Owner, structuredResult: opts.StructuredResult, progressEvery: every}
	run := &mcp.Tool{
		Name:  ToolRunPython,
		Title: "Run Python",
		Description: "Run Python 3 code and return what it printed, the value of its last expression (as in a notebook cell), " +
			"and each matplotlib figure as an image. Without session_id the code runs in a fresh interpreter and nothing persists; " +
			"with session_id it runs in that session, where earlier calls' variables, imports and files are still there. " +
			"The result is an error when the code raised, exited with a non-zero status or hit a limit (time, memory, output).",
		InputSchema: runSchema(opts.MaxTimeoutSeconds),
	}
	if opts.StructuredResult {
		run.OutputSchema = schemaOf[api.ExecuteResult]()
	}
	addTool(s, run, upgradeMaps("path", "content", "files"), t.runPython)
	addTool(s, &mcp.Tool{
		Name:         ToolCreateSession,
		Title:        "Create a Python session",
		Description:  "Start a Python session: an interpreter whose variables, imports and working directory persist from one run_python call to the next. Returns session_id; pass it to run_python. Close it with close_session when done; an idle session ends by itself after its idle timeout.",
		OutputSchema: schemaOf[SessionOutput](),
	}, func(args map[string]any) {
		upgradeMaps("path", "content", "files")(args)
		upgradeMaps("name", "value", "env")(args)
	}, t.createSession)
	addTool(s, &mcp.Tool{
		Name:         ToolCloseSession,
		Title:        "Close a Python session",
		Description:  "End a session and free its memory. Its variables and files are gone afterwards.",
		OutputSchema: schemaOf[CloseOutput](),
	}, nil, t.closeSession)
	addTool(s, &mcp.Tool{
		Name:         ToolInspectSession,
		Title:        "Inspect a Python session",
		Description:  "List the variables of a session: each one's name, type, a short repr, and its length, shape, dtype and size when it has them. Use it to recall what a session holds (after the conversation was cut, for example) without running code.",
		OutputSchema: schemaOf[api.Variables](),
	}, nil, t.inspectSession)
	addTool(s, &mcp.Tool{
		Name:  ToolCheckpointSession,
		Title: "Checkpoint a Python session",
		Description: "Take a checkpoint of a session: a frozen copy of its variables, imports and files, in milliseconds. " +
			"restore_session with the checkpoint's name puts the session back to it, as often as needed (an undo). " +
			"A session holds a few checkpoints at most; each is let go after a while without a restore.",
		OutputSchema: schemaOf[api.Checkpoint](),
	}, nil, t.checkpointSession)
	addTool(s, &mcp.Tool{
		Name:  ToolRestoreSession,
		Title: "Restore a Python session",
		Description: "Put a session back to one of its checkpoints (checkpoint_session): its variables, imports and files are exactly as they were then; " +
			"what ran since is undone. The checkpoint stays, to be restored again.",
		OutputSchema: schemaOf[RestoreOutput](),
	}, nil, t.restoreSession)
	addTool(s, &mcp.Tool{
		Name:  ToolForkSession,
		Title: "Fork a Python session",
		Description: "Fork a session into new sessions (branches), in milliseconds: each starts with the session's variables, imports and a copy of its files, " +
			"and from then on goes its own way; the session itself is left as it was. Use it to try several approaches from one state. " +
			"Returns the branches' session_ids; close_session each when done. A session whose code left threads running cannot be forked.",
		OutputSchema: schemaOf[ForkOutput](),
	}, nil, t.forkSession)
	addTool(s, &mcp.Tool{
		Name:         ToolListSessions,
		Title:        "List Python sessions",
		Description:  "List your open sessions: id, when each was created and last used, when it expires, how many calls it ran, its memory.",
		OutputSchema: schemaOf[ListOutput](),
	}, nil, t.listSessions)
	if opts.Packages {
		addTool(s, &mcp.Tool{
			Name:         ToolInstallPackages,
			Title:        "Install Python packages",
			Description:  "Install Python packages (PEP 508 requirements such as \"scipy\" or \"scikit-learn>=1.4\") for later run_python calls. Only packages the operator allows can be installed.",
			OutputSchema: schemaOf[api.Packages](),
		}, nil, t.installPackages)
	}
	s.AddResourceTemplate(&mcp.ResourceTemplate{
		Name:        "session-file",
		Title:       "A file of a session",
		URITemplate: FileURITemplate,
		Description: "A file in a session's working directory, such as a CSV or a PNG the code wrote.",
	}, t.readFile)
	// resources/list names the files of the caller's open sessions, read from the sidecar each
	// time, a session per page.
	s.AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			if method != "resources/list" {
				return next(ctx, method, req)
			}
			var cursor string
			if p, ok := req.GetParams().(*mcp.ListResourcesParams); ok && p != nil {
				cursor = p.Cursor
			}
			owner, err := t.ownerOf(req)
			if err != nil {
				return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: err.Error()}
			}
			if owner == "" { // an anonymous caller: see ownerOf
				return listed(&mcp.ListResourcesResult{Resources: []*mcp.Resource{}}), nil
			}
			res, err := t.listFiles(client.WithOwner(ctx, owner), cursor)
			if err != nil {
				return nil, err
			}
			return listed(res), nil
		}
	})
	// A handler's panic is the request's error, not the process's end: the SDK runs handlers
	// on goroutines of its own, where nothing else recovers it, and the sidecar serves /mcp
	// in process. Added last, it is outermost: it covers the middleware above too.
	s.AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (res mcp.Result, err error) {
			defer func() {
				if p := recover(); p != nil {
					res, err = nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: fmt.Sprintf("internal error in %s: %v", method, p)}
				}
			}()
			return next(ctx, method, req)
		}
	})
	return s
}

// listed is a resources/list answer with its cache scope: private, as the files listed are
// the caller's (the SDK fills the field only in the answers it makes itself, and clients
// reject an empty one).
func listed(r *mcp.ListResourcesResult) *mcp.ListResourcesResult {
	r.CacheScope = "private"
	return r
}

// tools are the handlers, over the backend.
type tools struct {
	b                Backend
	passOn           func(ctx context.Context, content json.RawMessage) json.RawMessage
	owner            string
	structuredResult bool
	progressEvery    time.Duration
}

// ownerOf is the owner a request is made for, whose sessions alone it may see and use:
//   - the transport's: on /mcp the request's api.OwnerHeader, set by the application; on
//     stdio Options.Owner (`pyexec mcp --owner`, else a random key of the process, which is
//     the MCP session there);
//   - else the request's _meta[MetaOwner], for clients that set _meta per call;
//   - else none (""): on /mcp without either, which is stateless and has no MCP session to
//     tell callers apart by. Such a caller is listed no sessions and no files, and reaches only
//     sessions of no owner, by the id create_session gave it (ids are unguessable).
//
// A _meta owner that differs from the transport's is refused: the application's wins, and a
// caller that sends another one is told so rather than given the application's sessions.
func (t *tools) ownerOf(req mcp.Request) (string, error) {
	transport := t.owner
	if extra := req.GetExtra(); extra != nil && extra.Header != nil {
		// A header given is the owner, or the request is refused as the API refuses it: an
		// empty (or blank) or repeated one must not make an anonymous caller, free to claim
		// any owner in _meta.
		switch v := extra.Header.Values(api.OwnerHeader); {
		case len(v) > 1:
			return "", fmt.Errorf("%s: given %d times; give it once", api.OwnerHeader, len(v))
		case len(v) == 1:
			if err := api.CheckOwner(v[0]); err != nil {
				return "", fmt.Errorf("%s: %v", api.OwnerHeader, err)
			}
			transport = v[0]
		}
	}
	var meta string
	if p := req.GetParams(); p != nil && !reflect.ValueOf(p).IsNil() { // a request without params has a nil *XParams
		if v, ok := p.GetMeta()[MetaOwner]; ok {
			s, isString := v.(string)
			if !isString || s == "" {
				return "", fmt.Errorf("_meta[%q]: want a non-empty string, the owner key", MetaOwner)
			}
			meta = s
		}
	}
	switch {
	case transport != "" && meta != "" && meta != transport:
		return "", fmt.Errorf("_meta[%q] differs from the owner this connection is for; leave it out", MetaOwner)
	case transport != "":
		return transport, nil
	}
	return meta, nil
}

// scoped is ctx for the backend calls of req: its owner's, when it has one.
func (t *tools) scoped(ctx context.Context, req mcp.Request) (context.Context, string, error) {
	owner, err := t.ownerOf(req)
	if err != nil || owner == "" {
		return ctx, "", err
	}
	return client.WithOwner(ctx, owner), owner, nil
}

// scopedTo is scoped for a call to session id: a caller of no owner may reach only a session
// of no owner (the API, which has one client, does not tell them apart: this asks it first;
// a session's owner never changes).
func (t *tools) scopedTo(ctx context.Context, req mcp.Request, id string) (context.Context, error) {
	ctx, owner, err := t.scoped(ctx, req)
	if err != nil || owner != "" {
		return ctx, err
	}
	s, err := t.b.Session(ctx, id)
	var apiErr *client.APIError
	if errors.As(err, &apiErr) && apiErr.Code == api.ErrCodeSessionNotFound {
		// The API, unscoped, says why any session ended; another owner's is not this caller's
		// to know of.
		return ctx, &client.APIError{Status: 404, Code: api.ErrCodeSessionNotFound, Message: fmt.Sprintf("session %q: no such session", id)}
	}
	if err != nil {
		return ctx, err
	}
	if s.Owner != "" {
		return ctx, &client.APIError{Status: 404, Code: api.ErrCodeSessionNotFound, Message: fmt.Sprintf("session %q: no such session", id)}
	}
	return ctx, nil
}

// RunInput is run_python's input.
type RunInput struct {
	Code           string      `json:"code" jsonschema:"the Python 3 source to run"`
	SessionID      string      `json:"session_id,omitempty" jsonschema:"run in this session (from create_session) so that state persists; omit for a fresh interpreter"`
	TimeoutSeconds float64     `json:"timeout_seconds,omitempty" jsonschema:"time limit in seconds; omit for the server's default"`
	Files          []FileInput `json:"files,omitempty" jsonschema:"text files to write into the working directory before the code runs"`
	Checkpoint     bool        `json:"checkpoint,omitempty" jsonschema:"with session_id: take a checkpoint of the session just before the code runs, so that restore_session can undo this call"`
}

// runSchema is run_python's input schema: RunInput's, timeout_seconds above 0 and at most max.
func runSchema(max float64) *jsonschema.Schema {
	s := schemaOf[RunInput]()
	timeout := s.Properties["timeout_seconds"]
	zero := 0.0
	timeout.ExclusiveMinimum = &zero
	if max > 0 {
		timeout.Maximum = &max
		timeout.Description = fmt.Sprintf("time limit in seconds, at most %g; omit for the server's default", max)
	}
	return s
}

// runPython runs the code and answers with what a model reads of the result (resultOf): the
// text and each figure as an image. With StructuredResult, the result as the API answered it
// is the structured content too, that JSON passed on as it is (the files' contents in it are
// never decoded, nor encoded again): a call holds its result about once while its answer is
// built, not once per step of decoding and encoding.
func (t *tools) runPython(ctx context.Context, req *mcp.CallToolRequest, in RunInput) *mcp.CallToolResult {
	if strings.TrimSpace(in.Code) == "" {
		return failed("code is empty: pass the Python source to run")
	}
	if in.Checkpoint && in.SessionID == "" {
		return failed("checkpoint needs session_id: a fresh interpreter keeps nothing to undo")
	}
	var err error
	if in.SessionID != "" {
		ctx, err = t.scopedTo(ctx, req, in.SessionID)
	} else {
		ctx, _, err = t.scoped(ctx, req)
	}
	if err != nil {
		return failed(describe(err))
	}
	budget := OutputBudgetChars
	ereq := api.ExecuteRequest{Code: in.Code, Files: textFiles(in.Files), OutputBudgetChars: &budget, Checkpoint: in.Checkpoint}
	if in.TimeoutSeconds > 0 {
		ereq.TimeoutSeconds = &in.TimeoutSeconds
	}
	defer t.progress(ctx, req)()
	var raw *client.RawResult
	if in.SessionID != "" {
		raw, err = t.b.SessionExecuteRaw(ctx, in.SessionID, ereq)
	} else {
		raw, err = t.b.ExecuteRaw(ctx, ereq)
	}
	if err != nil {
		return failed(describe(err))
	}
	var pass func(json.RawMessage) json.RawMessage
	if t.passOn != nil {
		pass = func(content json.RawMessage) json.RawMessage { return t.passOn(ctx, content) }
	}
	res := resultOf(raw.Result, pass)
	if t.structuredResult {
		content := json.RawMessage(bytes.TrimSuffix(raw.Body, []byte("\n")))
		if pass != nil {
			content = pass(content)
		}
		res.StructuredContent = content
	}
	return res
}

// progress tells the client how long a call has run, every progressEvery, when the call asked
// for progress (a progress token): clients that reset their time-out on progress then wait
// for a call as long as it runs. The returned func stops it.
func (t *tools) progress(ctx context.Context, req *mcp.CallToolRequest) (stop func()) {
	token := req.Params.GetProgressToken()
	if token == nil || req.Session == nil {
		return func() {}
	}
	done := make(chan struct{})
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		start := time.Now()
		tick := time.NewTicker(t.progressEvery)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case now := <-tick.C:
				elapsed := now.Sub(start).Seconds()
				_ = req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: token, Progress: elapsed,
					Message: fmt.Sprintf("running for %.0f s", elapsed)})
			}
		}
	}()
	return func() {
		close(done)
		<-ended // no notification after the answer
	}
}

// textFiles turns text files into the API's.
func textFiles(files []FileInput) []api.InputFile {
	out := make([]api.InputFile, 0, len(files))
	for _, f := range files {
		out = append(out, api.InputFile{Path: f.Path, ContentBase64: base64.StdEncoding.EncodeToString([]byte(f.Content))})
	}
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
			text, ok := o.Data[api.MIMELLMText] // a table or an array, summarized for a model
			if !ok {
				text = o.Data["text/plain"]
			}
			section("result", text)
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
	for _, h := range res.Hints {
		fmt.Fprintf(&b, "hint: %s\n", h)
	}
	if res.SessionLost {
		b.WriteString("the session was lost with this call: create a new one\n")
	}
	if res.Checkpoint != "" {
		fmt.Fprintf(&b, "checkpoint %s taken before this call: restore_session with checkpoint %q undoes it\n", res.Checkpoint, res.Checkpoint)
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
	IdleTimeoutSeconds float64     `json:"idle_timeout_seconds,omitempty" jsonschema:"end the session after this many seconds without a call; omit for the server's default"`
	MemoryLimitMB      int         `json:"memory_limit_mb,omitempty" jsonschema:"memory limit of the session's interpreter in MiB; omit for the server's default"`
	Env                []EnvVar    `json:"env,omitempty" jsonschema:"environment variables of the session's interpreter"`
	Files              []FileInput `json:"files,omitempty" jsonschema:"text files to write into the session's working directory"`
}

// SessionOutput is create_session's structured result.
type SessionOutput struct {
	SessionID          string  `json:"session_id" jsonschema:"pass it to run_python"`
	ExpiresAt          string  `json:"expires_at" jsonschema:"when the session ends unless it is used first (RFC 3339)"`
	IdleTimeoutSeconds float64 `json:"idle_timeout_seconds"`
}

func (t *tools) createSession(ctx context.Context, req *mcp.CallToolRequest, in SessionInput) *mcp.CallToolResult {
	ctx, _, err := t.scoped(ctx, req)
	if err != nil {
		return failed(err.Error())
	}
	sreq := api.SessionRequest{Files: textFiles(in.Files)}
	for _, e := range in.Env {
		if sreq.Env == nil {
			sreq.Env = map[string]string{}
		}
		sreq.Env[e.Name] = e.Value
	}
	if in.IdleTimeoutSeconds > 0 {
		sreq.IdleTimeoutSeconds = &in.IdleTimeoutSeconds
	}
	if in.MemoryLimitMB > 0 {
		sreq.MemoryLimitMB = &in.MemoryLimitMB
	}
	s, err := t.b.CreateSession(ctx, sreq)
	if err != nil {
		return failed(describe(err))
	}
	out := &SessionOutput{SessionID: s.ID, ExpiresAt: s.ExpiresAt.UTC().Format(time.RFC3339), IdleTimeoutSeconds: s.IdleTimeoutSeconds}
	return structured(text(fmt.Sprintf("session %s created; it ends after %gs without a call", s.ID, s.IdleTimeoutSeconds)), out)
}

// CloseInput is close_session's input.
type CloseInput struct {
	SessionID string `json:"session_id" jsonschema:"the session to end"`
}

// CloseOutput is close_session's structured result.
type CloseOutput struct {
	Closed bool `json:"closed"`
}

func (t *tools) closeSession(ctx context.Context, req *mcp.CallToolRequest, in CloseInput) *mcp.CallToolResult {
	ctx, err := t.scopedTo(ctx, req, in.SessionID)
	if err != nil {
		return failed(describe(err))
	}
	if err := t.b.DeleteSession(ctx, in.SessionID); err != nil {
		return failed(describe(err))
	}
	return structured(text("session "+in.SessionID+" closed"), &CloseOutput{Closed: true})
}

// InspectInput is inspect_session's input.
type InspectInput struct {
	SessionID string `json:"session_id" jsonschema:"the session whose variables to list"`
}

func (t *tools) inspectSession(ctx context.Context, req *mcp.CallToolRequest, in InspectInput) *mcp.CallToolResult {
	ctx, err := t.scopedTo(ctx, req, in.SessionID)
	if err != nil {
		return failed(describe(err))
	}
	v, err := t.b.SessionVariables(ctx, in.SessionID)
	if err != nil {
		return failed(describe(err))
	}
	var b strings.Builder
	for _, x := range v.Variables {
		fmt.Fprintf(&b, "%s: %s", x.Name, x.Type)
		if len(x.Shape) > 0 {
			fmt.Fprintf(&b, ", shape %v", x.Shape)
		} else if x.Len != nil {
			fmt.Fprintf(&b, ", len %d", *x.Len)
		}
		if x.Dtype != "" {
			fmt.Fprintf(&b, ", dtype %s", x.Dtype)
		}
		fmt.Fprintf(&b, " = %s\n", strings.ReplaceAll(x.Repr, "\n", " "))
	}
	if v.Truncated {
		fmt.Fprintf(&b, "(%d of %d listed)\n", len(v.Variables), v.Total)
	}
	if len(v.Variables) == 0 {
		b.WriteString("no variables\n")
	}
	return structured(text(b.String()), v)
}

// CheckpointInput is checkpoint_session's input.
type CheckpointInput struct {
	SessionID string `json:"session_id" jsonschema:"the session to checkpoint"`
}

func (t *tools) checkpointSession(ctx context.Context, req *mcp.CallToolRequest, in CheckpointInput) *mcp.CallToolResult {
	ctx, err := t.scopedTo(ctx, req, in.SessionID)
	if err != nil {
		return failed(describe(err))
	}
	cp, err := t.b.Checkpoint(ctx, in.SessionID)
	if err != nil {
		return failed(describe(err) + t.held(ctx, in.SessionID))
	}
	msg := fmt.Sprintf("checkpoint %s of session %s taken (%d files, %d KiB). restore_session with checkpoint %q puts the session back to this state.",
		cp.ID, in.SessionID, cp.Files, (cp.FilesBytes+1023)>>10, cp.ID)
	return structured(text(msg+t.held(ctx, in.SessionID)), cp)
}

// RestoreInput is restore_session's input.
type RestoreInput struct {
	SessionID  string `json:"session_id" jsonschema:"the session to put back"`
	Checkpoint string `json:"checkpoint" jsonschema:"the checkpoint's name, as checkpoint_session returned it (c1, c2...)"`
}

// RestoreOutput is restore_session's structured result.
type RestoreOutput struct {
	Restored   bool   `json:"restored"`
	Checkpoint string `json:"checkpoint"`
}

func (t *tools) restoreSession(ctx context.Context, req *mcp.CallToolRequest, in RestoreInput) *mcp.CallToolResult {
	ctx, err := t.scopedTo(ctx, req, in.SessionID)
	if err != nil {
		return failed(describe(err))
	}
	if _, err := t.b.RestoreCheckpoint(ctx, in.SessionID, in.Checkpoint); err != nil {
		return failed(describe(err) + t.held(ctx, in.SessionID))
	}
	msg := fmt.Sprintf("session %s is back to checkpoint %s: its variables, imports and files are as they were then.", in.SessionID, in.Checkpoint)
	return structured(text(msg), &RestoreOutput{Restored: true, Checkpoint: in.Checkpoint})
}

// ForkInput is fork_session's input.
type ForkInput struct {
	SessionID string `json:"session_id" jsonschema:"the session to fork"`
	Count     int    `json:"count,omitempty" jsonschema:"how many branches, 1 by default"`
}

// ForkOutput is fork_session's structured result.
type ForkOutput struct {
	Parent   string   `json:"parent"`
	Branches []string `json:"branches"`
}

func (t *tools) forkSession(ctx context.Context, req *mcp.CallToolRequest, in ForkInput) *mcp.CallToolResult {
	ctx, err := t.scopedTo(ctx, req, in.SessionID)
	if err != nil {
		return failed(describe(err))
	}
	n := max(in.Count, 1)
	if in.Count < 0 {
		return failed(fmt.Sprintf("count: at least 1, got %d", in.Count))
	}
	list, err := t.b.ForkN(ctx, in.SessionID, n)
	if err != nil {
		return failed(describe(err))
	}
	out := &ForkOutput{Parent: in.SessionID, Branches: make([]string, len(list))}
	for i, s := range list {
		out.Branches[i] = s.ID
	}
	msg := fmt.Sprintf("session %s forked into %s: each has its variables, imports and files as they are now, and goes its own way from here (pass its session_id to run_python); %s is left as it was. close_session each branch when done.",
		in.SessionID, strings.Join(out.Branches, ", "), in.SessionID)
	return structured(text(msg), out)
}

// held says which checkpoints session id holds, for a model: "" when it cannot say.
func (t *tools) held(ctx context.Context, id string) string {
	l, err := t.b.Checkpoints(ctx, id)
	if err != nil {
		return ""
	}
	if len(l.Checkpoints) == 0 {
		return "\nthe session holds no checkpoint"
	}
	names := make([]string, len(l.Checkpoints))
	for i, c := range l.Checkpoints {
		names[i] = fmt.Sprintf("%s (taken %s)", c.ID, c.CreatedAt.UTC().Format("15:04:05"))
	}
	return "\ncheckpoints held: " + strings.Join(names, ", ")
}

// ListOutput is list_sessions' structured result.
type ListOutput struct {
	Sessions []api.Session `json:"sessions"`
}

// ListInput is list_sessions' input: none.
type ListInput struct{}

func (t *tools) listSessions(ctx context.Context, req *mcp.CallToolRequest, _ ListInput) *mcp.CallToolResult {
	ctx, owner, err := t.scoped(ctx, req)
	if err != nil {
		return failed(err.Error())
	}
	if owner == "" { // see ownerOf
		return structured(text("no sessions listed: this connection names no owner (the application sets one per user); use the session_id that create_session returned\n"),
			&ListOutput{Sessions: []api.Session{}})
	}
	list, err := t.b.Sessions(ctx)
	if err != nil {
		return failed(describe(err))
	}
	var b strings.Builder
	for i, s := range list.Sessions {
		fmt.Fprintf(&b, "%s: %d calls, last used %s, expires %s, %d MiB\n", s.ID, s.Executions,
			s.LastUsedAt.UTC().Format("15:04:05"), s.ExpiresAt.UTC().Format("15:04:05"), s.MemoryBytes>>20)
		list.Sessions[i].Owner = "" // the caller's own: no need to repeat it to a model
	}
	if len(list.Sessions) == 0 {
		b.WriteString("no open sessions\n")
	}
	return structured(text(b.String()), &ListOutput{Sessions: list.Sessions})
}

// PackagesInput is install_packages' input.
type PackagesInput struct {
	Packages []string `json:"packages" jsonschema:"PEP 508 requirements, such as scipy or scikit-learn>=1.4"`
}

func (t *tools) installPackages(ctx context.Context, _ *mcp.CallToolRequest, in PackagesInput) *mcp.CallToolResult {
	p, err := t.b.InstallPackages(ctx, api.PackagesRequest{Packages: in.Packages})
	if err != nil {
		return failed(describe(err))
	}
	var names []string
	for _, i := range p.Installed {
		names = append(names, i.Name+"=="+i.Version)
	}
	return structured(text("installed; the packages tree now has: "+strings.Join(names, ", ")), p)
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
	ctx, err := t.scopedTo(ctx, req, id)
	var apiErr *client.APIError
	if errors.As(err, &apiErr) && apiErr.Status == 404 {
		return nil, mcp.ResourceNotFoundError(uri)
	}
	if err != nil {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: err.Error()}
	}
	data, contentType, err := t.b.SessionFile(ctx, id, p)
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
