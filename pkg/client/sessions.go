package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/pyexec/pyexec/pkg/api"
)

// A session keeps one interpreter between calls: globals, imports, os.environ changes and the
// work dir persist. Errors of the session endpoints are *APIError with Code
// api.ErrCodeSessionNotFound (404), api.ErrCodeSessionBusy (409: a call already runs in it) or
// api.ErrCodeTooManySessions (429: the server's --max-sessions are open).

// CreateSession opens a session (POST /v1/sessions, 201).
func (c *Client) CreateSession(ctx context.Context, req api.SessionRequest) (*api.Session, error) {
	var s api.Session
	if err := c.postJSON(ctx, "/v1/sessions", req, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Sessions lists the open sessions, oldest first (GET /v1/sessions).
func (c *Client) Sessions(ctx context.Context) (*api.SessionList, error) {
	var l api.SessionList
	if err := c.get(ctx, "/v1/sessions", &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// Session describes one session (GET /v1/sessions/{id}).
func (c *Client) Session(ctx context.Context, id string) (*api.Session, error) {
	path, err := sessionPath(id, "")
	if err != nil {
		return nil, err
	}
	var s api.Session
	if err := c.get(ctx, path, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// DeleteSession ends a session and kills its processes (DELETE /v1/sessions/{id}, 204).
func (c *Client) DeleteSession(ctx context.Context, id string) error {
	path, err := sessionPath(id, "")
	if err != nil {
		return err
	}
	return c.delete(ctx, path)
}

// SessionExecute runs code in a session, as Execute does in a fresh execution. req's
// MemoryLimitMB and Network are refused (400): they are set when the session is created. A
// result with SessionLost ended the session.
func (c *Client) SessionExecute(ctx context.Context, id string, req api.ExecuteRequest) (*api.ExecuteResult, error) {
	path, err := sessionPath(id, "/execute")
	if err != nil {
		return nil, err
	}
	return c.execute(ctx, path, req)
}

// SessionExecuteStream runs code in a session with ?stream=true, as ExecuteStream does.
func (c *Client) SessionExecuteStream(ctx context.Context, id string, req api.ExecuteRequest, onOutput func(stream, data string)) (*api.ExecuteResult, error) {
	path, err := sessionPath(id, "/execute")
	if err != nil {
		return nil, err
	}
	return c.executeStream(ctx, path, req, onOutput)
}

// SessionVariables lists a session's variables (GET /v1/sessions/{id}/variables): its user's
// globals, sorted by name, each with its type, a short repr, and its len, shape, dtype and
// bytes when it has them. A call running in the session makes it an *APIError of
// api.ErrCodeSessionBusy.
func (c *Client) SessionVariables(ctx context.Context, id string) (*api.Variables, error) {
	path, err := sessionPath(id, "/variables")
	if err != nil {
		return nil, err
	}
	var v api.Variables
	if err := c.get(ctx, path, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// SessionFiles lists the regular files of a session's working directory, sorted by path, at
// most api.MaxSessionFiles (then Truncated), and counts them (Total); a walk that took longer
// than api.SessionFilesWalkTimeout stops there (Partial). Symlinks are neither followed nor
// listed (GET /v1/sessions/{id}/files). It works while a call runs in the session.
func (c *Client) SessionFiles(ctx context.Context, id string) (*api.SessionFiles, error) {
	path, err := sessionPath(id, "/files")
	if err != nil {
		return nil, err
	}
	var l api.SessionFiles
	if err := c.get(ctx, path, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// SessionFile reads one file of a session's working directory (GET
// /v1/sessions/{id}/files/{path}) and returns its bytes and Content-Type (from its
// extension; application/octet-stream when unknown). file is "/"-separated and relative to
// the working directory, as SessionFiles lists it; a path with an empty, "." or ".." segment
// is refused before any request. Errors are *APIError with Code api.ErrCodeFileNotFound (404:
// no regular file there: missing, a directory, a symlink...), api.ErrCodeTooLarge (413: over
// the server's max_file_bytes), api.ErrCodeBadRequest or api.ErrCodeSessionNotFound.
func (c *Client) SessionFile(ctx context.Context, id, file string) ([]byte, string, error) {
	path, err := sessionFilePath(id, file)
	if err != nil {
		return nil, "", err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://pyexec"+path, nil)
	if err != nil {
		return nil, "", err
	}
	resp, err := c.do(hreq)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	data, err := readBody(resp)
	if err != nil {
		return nil, "", fmt.Errorf("pyexec: reading the answer of %s: %w", path, err)
	}
	return data, resp.Header.Get("Content-Type"), nil
}

// sessionPath is /v1/sessions/{id}{rest} with id escaped as one path segment. An id that
// cannot name a session ("", ".", "..": the server's router would clean the path) is refused
// before any request.
// Checkpoint takes a checkpoint of session id (POST /v1/sessions/{id}/checkpoints): a frozen
// copy of its interpreter and files that RestoreCheckpoint puts the session back to. A call's
// ExecuteRequest.Checkpoint takes one just before the call (an undo).
func (c *Client) Checkpoint(ctx context.Context, id string) (*api.Checkpoint, error) {
	path, err := sessionPath(id, "/checkpoints")
	if err != nil {
		return nil, err
	}
	var cp api.Checkpoint
	if err := c.postJSON(ctx, path, struct{}{}, &cp); err != nil {
		return nil, err
	}
	return &cp, nil
}

// Checkpoints lists the checkpoints of session id, oldest first.
func (c *Client) Checkpoints(ctx context.Context, id string) (*api.Checkpoints, error) {
	path, err := sessionPath(id, "/checkpoints")
	if err != nil {
		return nil, err
	}
	var l api.Checkpoints
	if err := c.get(ctx, path, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// RestoreCheckpoint puts session id back to its checkpoint (POST /v1/sessions/{id}/restore):
// the calls after see exactly the checkpoint's state. The checkpoint stays.
func (c *Client) RestoreCheckpoint(ctx context.Context, id, checkpoint string) (*api.Session, error) {
	path, err := sessionPath(id, "/restore")
	if err != nil {
		return nil, err
	}
	var s api.Session
	if err := c.postJSON(ctx, path, api.RestoreRequest{Checkpoint: checkpoint}, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Fork forks session id between calls into a branch: a new session with its globals,
// modules, environment, limits and a copy of its files, from then on a session of its own.
func (c *Client) Fork(ctx context.Context, id string) (*api.Session, error) {
	path, err := sessionPath(id, "/fork")
	if err != nil {
		return nil, err
	}
	var s api.Session
	if err := c.postJSON(ctx, path, api.ForkRequest{}, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// ForkN forks session id into n branches at once (see Fork).
func (c *Client) ForkN(ctx context.Context, id string, n int) ([]api.Session, error) {
	path, err := sessionPath(id, "/fork")
	if err != nil {
		return nil, err
	}
	var l api.SessionList
	if err := c.postJSON(ctx, path, api.ForkRequest{Count: n}, &l); err != nil {
		return nil, err
	}
	return l.Sessions, nil
}

// DeleteCheckpoint lets a checkpoint of session id go.
func (c *Client) DeleteCheckpoint(ctx context.Context, id, checkpoint string) error {
	if checkpoint == "" || checkpoint == "." || checkpoint == ".." {
		return fmt.Errorf("pyexec: %q is not a checkpoint", checkpoint)
	}
	path, err := sessionPath(id, "/checkpoints/"+url.PathEscape(checkpoint))
	if err != nil {
		return err
	}
	return c.delete(ctx, path)
}

func sessionPath(id, rest string) (string, error) {
	if id == "" || id == "." || id == ".." {
		return "", fmt.Errorf("pyexec: %q is not a session id", id)
	}
	return "/v1/sessions/" + url.PathEscape(id) + rest, nil
}

// sessionFilePath is /v1/sessions/{id}/files/{file} with each segment of file escaped. A file
// path with an empty, "." or ".." segment (absolute, or leaving the working directory) is
// refused before any request.
func sessionFilePath(id, file string) (string, error) {
	segs := strings.Split(file, "/")
	for i, seg := range segs {
		if seg == "" || seg == "." || seg == ".." {
			return "", fmt.Errorf("pyexec: %q is not a file path relative to the session's working directory", file)
		}
		segs[i] = url.PathEscape(seg)
	}
	return sessionPath(id, "/files/"+strings.Join(segs, "/"))
}
