package mcpserver

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

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
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := resultOf(&tt.res)
			if got := textOf(r); got != tt.text {
				t.Errorf("text %q, want %q", got, tt.text)
			}
			if got := len(r.Content) - 1; got != tt.images || r.IsError != tt.isErr {
				t.Errorf("%d images, isError %v; want %d, %v", got, r.IsError, tt.images, tt.isErr)
			}
		})
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
