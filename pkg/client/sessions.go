package client

import (
	"context"
	"fmt"
	"net/url"

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

// sessionPath is /v1/sessions/{id}{rest} with id escaped as one path segment. An id that
// cannot name a session ("", ".", "..": the server's router would clean the path) is refused
// before any request.
func sessionPath(id, rest string) (string, error) {
	if id == "" || id == "." || id == ".." {
		return "", fmt.Errorf("pyexec: %q is not a session id", id)
	}
	return "/v1/sessions/" + url.PathEscape(id) + rest, nil
}
