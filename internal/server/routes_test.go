package server

import (
	"context"
	"net/http"
	"net/url"
	"path"
	"strings"
	"testing"

	"github.com/pyexec/pyexec/internal/executor"
	"github.com/pyexec/pyexec/pkg/api"
)

// stubSession is an open session that runs nothing: its files list empty, and none can be
// opened, which the 404 of a file read says with the path the handler was given.
type stubSession struct{}

func (stubSession) Execute(context.Context, executor.Request, executor.Output) (api.ExecuteResult, error) {
	return api.ExecuteResult{}, executor.ErrSessionEnded
}
func (stubSession) Files() (api.SessionFiles, error) {
	return api.SessionFiles{Files: []api.SessionFile{}}, nil
}
func (stubSession) OpenFile(string, int64) (executor.Body, error) {
	return nil, executor.ErrFileNotFound
}
func (stubSession) Ended() bool   { return false }
func (stubSession) Memory() int64 { return 0 }
func (stubSession) Close()        {}
func (stubSession) Checkpoint(context.Context) (api.Checkpoint, error) {
	return api.Checkpoint{}, executor.ErrTooManyCheckpoints
}
func (stubSession) Checkpoints() ([]api.Checkpoint, error) { return []api.Checkpoint{}, nil }
func (stubSession) Restore(context.Context, string) error  { return executor.ErrCheckpointNotFound }
func (stubSession) DeleteCheckpoint(string) error          { return executor.ErrCheckpointNotFound }
func (stubSession) Fork(context.Context, []string) ([]executor.Session, error) {
	return nil, executor.ErrNotForkable
}

// Every method and path, as a client writes it (never cleaned, never redirected), gets the
// route's answer or the API's JSON error: 404 not_found for a path no route serves, 405
// method_not_allowed with Allow for a method its routes do not take (HEAD included), and the
// handler's own errors for a session's id and a file's path, which a route takes as written:
// an escaped "/" is part of an id, a file path's "..", empty and absolute forms reach the
// handler, which refuses them.
func TestRouteTable(t *testing.T) {
	cfg := testConfig()
	cfg.MCP = true
	h := newHarness(t, cfg, okExec, true)
	h.client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	const open = "s-open"
	h.srv.sessions.open[open] = &session{ss: stubSession{}, id: open}
	file := "/v1/sessions/" + open + "/files/"
	notFile := func(p string) string { return `session "s-open": "` + p + `" is not a regular file` }
	tests := []struct {
		method, path string
		status       int
		code         string // "": a success
		allow        string
		msg          string // in the error's message
	}{
		{"GET", "/v1/info", 200, "", "", ""},
		{"GET", "/v1/%69nfo", 200, "", "", ""},
		{"HEAD", "/v1/info", 405, api.ErrCodeMethodNotAllowed, "GET", ""},
		{"POST", "/v1/info", 405, api.ErrCodeMethodNotAllowed, "GET", "method POST not allowed on /v1/info; allowed: GET"},
		{"GET", "/v1/info/", 404, api.ErrCodeNotFound, "", "no route /v1/info/"},
		{"GET", "/v1//info", 404, api.ErrCodeNotFound, "", "no route /v1//info"},
		{"GET", "//v1/info", 404, api.ErrCodeNotFound, "", "no route //v1/info"},
		{"GET", "/v1/./info", 404, api.ErrCodeNotFound, "", "no route /v1/./info"},
		{"GET", "/v1/x/../info", 404, api.ErrCodeNotFound, "", "no route /v1/x/../info"},
		{"GET", "/v1/execute", 405, api.ErrCodeMethodNotAllowed, "POST", ""},
		{"DELETE", "/v1/packages", 405, api.ErrCodeMethodNotAllowed, "GET, POST", ""},
		{"PUT", "/mcp", 405, api.ErrCodeMethodNotAllowed, "DELETE, GET, POST", "method PUT not allowed on /mcp; allowed: DELETE, GET, POST"},
		{"GET", "/mcp/", 404, api.ErrCodeNotFound, "", "no route /mcp/"},
		{"get", "/v1/info", 405, api.ErrCodeMethodNotAllowed, "GET", ""},
		// An escaped "/" separates no segments, here as in a session's id.
		{"GET", "/v1%2Finfo", 404, api.ErrCodeNotFound, "", "no route /v1/info"},

		{"GET", "/v1/sessions", 200, "", "", ""},
		{"PUT", "/v1/sessions", 405, api.ErrCodeMethodNotAllowed, "GET, POST", ""},
		{"HEAD", "/v1/sessions", 405, api.ErrCodeMethodNotAllowed, "GET, POST", ""},
		{"GET", "/v1/sessions/", 404, api.ErrCodeNotFound, "", "no route /v1/sessions/"},
		{"GET", "/v1/sessions/" + open, 200, "", "", ""},
		{"GET", "/v1/sessions/s-unknown", 404, api.ErrCodeSessionNotFound, "", `session "s-unknown": no such session`},
		{"DELETE", "/v1/sessions/s-unknown", 404, api.ErrCodeSessionNotFound, "", `"s-unknown"`},
		{"POST", "/v1/sessions/s-unknown", 405, api.ErrCodeMethodNotAllowed, "DELETE, GET", "method POST not allowed on /v1/sessions/s-unknown; allowed: DELETE, GET"},
		{"PATCH", "/v1/sessions/s-unknown", 405, api.ErrCodeMethodNotAllowed, "DELETE, GET", ""},
		{"HEAD", "/v1/sessions/s-unknown", 405, api.ErrCodeMethodNotAllowed, "DELETE, GET", ""},
		{"POST", "/v1/sessions/s-unknown/execute", 404, api.ErrCodeSessionNotFound, "", `"s-unknown"`},
		{"GET", "/v1/sessions/s-unknown/execute", 405, api.ErrCodeMethodNotAllowed, "POST", ""},
		{"GET", "/v1/sessions/s-unknown/files", 404, api.ErrCodeSessionNotFound, "", `"s-unknown"`},
		{"POST", "/v1/sessions/s-unknown/files", 405, api.ErrCodeMethodNotAllowed, "GET", ""},
		{"GET", "/v1/sessions/s-unknown/files/a", 404, api.ErrCodeSessionNotFound, "", `"s-unknown"`},
		{"DELETE", "/v1/sessions/s-unknown/files/a", 405, api.ErrCodeMethodNotAllowed, "GET", ""},
		{"GET", "/v1/sessions/s-unknown/checkpoints", 404, api.ErrCodeSessionNotFound, "", `"s-unknown"`},
		{"PUT", "/v1/sessions/s-unknown/checkpoints", 405, api.ErrCodeMethodNotAllowed, "GET, POST", ""},
		{"GET", "/v1/sessions/s-unknown/restore", 405, api.ErrCodeMethodNotAllowed, "POST", ""},
		{"GET", "/v1/sessions/s-unknown/checkpoints/c1", 405, api.ErrCodeMethodNotAllowed, "DELETE", ""},
		{"DELETE", "/v1/sessions/s-unknown/checkpoints/c1", 404, api.ErrCodeSessionNotFound, "", `"s-unknown"`},
		{"POST", "/v1/sessions/" + open + "/checkpoints", 429, api.ErrCodeTooManyCheckpoints, "", "as many checkpoints as it may"},
		{"DELETE", "/v1/sessions/" + open + "/checkpoints/c1", 404, api.ErrCodeCheckpointNotFound, "", "no such checkpoint"},
		{"POST", "/v1/sessions/" + open + "/restore", 400, api.ErrCodeBadRequest, "", `unknown field "code"`},
		{"GET", "/v1/sessions/s-unknown/fork", 405, api.ErrCodeMethodNotAllowed, "POST", ""},
		{"POST", "/v1/sessions/" + open + "/fork", 400, api.ErrCodeBadRequest, "", `unknown field "code"`},
		{"GET", "/v1/sessions/s-unknown/nope", 404, api.ErrCodeNotFound, "", "no route /v1/sessions/s-unknown/nope"},
		{"POST", "/v1/sessions/s-unknown/execute/x", 404, api.ErrCodeNotFound, "", ""},
		{"GET", "/v1/sessions/s-unknown/", 404, api.ErrCodeNotFound, "", ""},
		{"GET", "/v1/sessions/s-unknown/files%2Fa", 404, api.ErrCodeNotFound, "", ""},
		{"GET", "/v1/sessions//files", 404, api.ErrCodeNotFound, "", "no route /v1/sessions//files"},
		{"GET", "/v1/sessions/s-unknown//files", 404, api.ErrCodeNotFound, "", ""},
		{"POST", "/v1/sessions/s-unknown/./execute", 404, api.ErrCodeNotFound, "", ""},
		{"GET", "/v1/sessions/../v1/info", 404, api.ErrCodeNotFound, "", "no route /v1/sessions/../v1/info"},
		// Ids as written: an escaped "/" is part of one, "." and ".." are ids like any other.
		{"GET", "/v1/sessions/a%2Fb", 404, api.ErrCodeSessionNotFound, "", `session "a/b": no such session`},
		{"POST", "/v1/sessions/a%2Fb/execute", 404, api.ErrCodeSessionNotFound, "", `session "a/b"`},
		{"GET", "/v1/sessions/a%2Fb%2Fexecute", 404, api.ErrCodeSessionNotFound, "", `session "a/b/execute"`},
		{"POST", "/v1/sessions/a%2Fb%2Fexecute", 405, api.ErrCodeMethodNotAllowed, "DELETE, GET", ""},
		{"GET", "/v1/sessions/%20x", 404, api.ErrCodeSessionNotFound, "", `session " x"`},
		{"GET", "/v1/sessions/./files", 404, api.ErrCodeSessionNotFound, "", `session "."`},
		{"GET", "/v1/sessions/..", 404, api.ErrCodeSessionNotFound, "", `session ".."`},
		{"GET", "/v1/sessions/%2E%2E/files/a", 404, api.ErrCodeSessionNotFound, "", `session ".."`},

		// A file's path as written, escapes undone, to the handler.
		{"GET", "/v1/sessions/" + open + "/files", 200, "", "", ""},
		{"GET", file + "out/plot.png", 404, api.ErrCodeFileNotFound, "", notFile("out/plot.png")},
		{"GET", file + "a%20b%25.txt", 404, api.ErrCodeFileNotFound, "", notFile("a b%.txt")},
		{"GET", file + "out/./sub//raw", 404, api.ErrCodeFileNotFound, "", notFile("out/sub/raw")},
		{"GET", file + "out/", 404, api.ErrCodeFileNotFound, "", notFile("out")},
		{"GET", file + "out//", 404, api.ErrCodeFileNotFound, "", notFile("out")},
		{"GET", file + "../x", 400, api.ErrCodeBadRequest, "", `path: "../x" has a ".." segment`},
		{"GET", file + "out/../../x", 400, api.ErrCodeBadRequest, "", `"out/../../x" has a ".." segment`},
		{"GET", file + "%2E%2E/x", 400, api.ErrCodeBadRequest, "", `"../x" has a ".." segment`},
		{"GET", file + "a%2F..%2Fb", 400, api.ErrCodeBadRequest, "", `"a/../b" has a ".." segment`},
		{"GET", file + "a//../b", 400, api.ErrCodeBadRequest, "", `"a//../b" has a ".." segment`},
		{"GET", file + "..", 400, api.ErrCodeBadRequest, "", `".." has a ".." segment`},
		{"GET", file + "/etc/passwd", 400, api.ErrCodeBadRequest, "", `"/etc/passwd" is absolute`},
		{"GET", file + "%2Fetc%2Fpasswd", 400, api.ErrCodeBadRequest, "", `"/etc/passwd" is absolute`},
		{"GET", file + "//x", 400, api.ErrCodeBadRequest, "", `"//x" is absolute`},
		{"GET", file, 400, api.ErrCodeBadRequest, "", "path: required and must not be empty"},
		{"GET", file + ".", 400, api.ErrCodeBadRequest, "", "names the working directory itself"},
		{"GET", file + "a/%00", 400, api.ErrCodeBadRequest, "", "NUL"},
		{"HEAD", file + "x", 405, api.ErrCodeMethodNotAllowed, "GET", ""},
		{"DELETE", file + "../x", 405, api.ErrCodeMethodNotAllowed, "GET", ""},
		{"DELETE", file + "/etc/passwd", 405, api.ErrCodeMethodNotAllowed, "GET", ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			body := ""
			if tt.method == http.MethodPost {
				body = `{"code":"1"}`
			}
			resp, b := h.do(context.Background(), tt.method, tt.path, "application/json", body)
			if got := resp.Header.Get("Allow"); got != tt.allow {
				t.Errorf("Allow %q, want %q", got, tt.allow)
			}
			switch {
			case tt.code == "":
				if resp.StatusCode != tt.status {
					t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tt.status, b)
				}
			case tt.method == http.MethodHead: // no body
				if resp.StatusCode != tt.status || resp.Header.Get("Content-Type") != "application/json" {
					t.Fatalf("status %d, want %d; Content-Type %q", resp.StatusCode, tt.status, resp.Header.Get("Content-Type"))
				}
			default:
				wantError(t, resp, b, tt.status, tt.code, tt.msg)
				if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type %q", ct)
				}
			}
			if loc := resp.Header.Get("Location"); loc != "" {
				t.Errorf("redirected to %s", loc)
			}
			if tt.code == api.ErrCodeNotFound && !strings.Contains(string(b), `"no route `) {
				t.Errorf("a 404 that is not the route table's: %s", b)
			}
		})
	}
}

// The path the mux sees is one it neither cleans nor redirects, and it unescapes to the path
// as written; the rest from a "//" on is one segment.
func TestMuxPath(t *testing.T) {
	for _, tt := range []struct {
		escaped, want string
		merged        int
	}{
		{"/v1/info", "/v1/info", -1},
		{"/v1/sessions/a%2Fb/", "/v1/sessions/a%2Fb/", -1},
		{"/a/./b/..", "/a/%2E/b/%2E%2E", -1},
		{"/a//b/../c", "/a/%2Fb%2F..%2Fc", 1},
		{"/a/.//", "/a/%2E/%2F", 2},
		{"//", "/%2F", 0},
		{"/", "/", -1},
	} {
		p, merged := muxPath(tt.escaped)
		if p != tt.want || merged != tt.merged {
			t.Errorf("muxPath(%q) = %q, %d; want %q, %d", tt.escaped, p, merged, tt.want, tt.merged)
		}
		was, _ := url.PathUnescape(tt.escaped)
		if now, err := url.PathUnescape(p); err != nil || now != was {
			t.Errorf("muxPath(%q) = %q unescapes to %q, not %q (%v)", tt.escaped, p, now, was, err)
		}
		if clean := path.Clean(p); clean != strings.TrimSuffix(p, "/") && clean != p {
			t.Errorf("muxPath(%q) = %q, which ServeMux would clean to %q", tt.escaped, p, clean)
		}
	}
	for pattern, want := range map[string]int{"GET /v1/sessions/{id}/files/{path...}": 4, "GET /v1/sessions/{id}": -1, "/{all...}": 0} {
		if got := tailAt(pattern); got != want {
			t.Errorf("tailAt(%q) = %d, want %d", pattern, got, want)
		}
	}
}
