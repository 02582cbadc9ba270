// Package client is the Go client of pyexec's socket API v1.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/pyexec/pyexec/pkg/api"
)

// DefaultSocket is where the sidecar listens in a pod.
const DefaultSocket = "/var/run/pyexec/pyexec.sock"

// ErrUnreachable is returned when nothing answers on the socket.
var ErrUnreachable = errors.New("pyexec sidecar unreachable")

// APIError is an HTTP error answered by the sidecar.
type APIError struct {
	Status    int
	Code      string // api.ErrCode*
	Message   string
	RequestID string
	// RetryAfter is set on 429 (queue full).
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	return fmt.Sprintf("pyexec: %d %s: %s", e.Status, e.Code, e.Message)
}

// ownerKey is the context key of WithOwner's owner.
type ownerKey struct{}

// WithOwner returns a context whose requests are scoped to owner's sessions (api.OwnerHeader):
// the sessions they create are owner's, and they see no other session. An application that
// serves several users gives each its own owner.
func WithOwner(ctx context.Context, owner string) context.Context {
	return context.WithValue(ctx, ownerKey{}, owner)
}

// Client talks to one sidecar socket. It is safe for concurrent use.
type Client struct {
	socket string
	http   *http.Client
}

// SocketEnv names the environment variable that holds the socket's path: the injector sets it
// in every app container of an injected pod.
const SocketEnv = "PYEXEC_SOCKET"

// New returns a client for the socket at path; "" means $PYEXEC_SOCKET, else DefaultSocket.
func New(path string) *Client {
	if path == "" {
		path = os.Getenv(SocketEnv)
	}
	if path == "" {
		path = DefaultSocket
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	transport := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", path)
		},
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     30 * time.Second,
	}
	return &Client{socket: path, http: &http.Client{Transport: transport}}
}

// Socket returns the socket path.
func (c *Client) Socket() string { return c.socket }

// Execute runs code and returns its result. The code's own failure is a result; err is for
// the request (an *APIError) or the connection (ErrUnreachable).
func (c *Client) Execute(ctx context.Context, req api.ExecuteRequest) (*api.ExecuteResult, error) {
	return c.execute(ctx, "/v1/execute", req)
}

// ExecuteStream runs code with ?stream=true, calling onOutput for each chunk of output as it
// arrives (stream is api.EventStdout or api.EventStderr), and returns the final result.
func (c *Client) ExecuteStream(ctx context.Context, req api.ExecuteRequest, onOutput func(stream, data string)) (*api.ExecuteResult, error) {
	return c.executeStream(ctx, "/v1/execute", req, onOutput)
}

// execute posts req to an execute endpoint (/v1/execute or a session's) and reads the result.
func (c *Client) execute(ctx context.Context, path string, req api.ExecuteRequest) (*api.ExecuteResult, error) {
	var res api.ExecuteResult
	if err := c.postJSON(ctx, path, req, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// executeStream posts req to path?stream=true and reads the NDJSON events up to the exit event.
func (c *Client) executeStream(ctx context.Context, path string, req api.ExecuteRequest, onOutput func(stream, data string)) (*api.ExecuteResult, error) {
	resp, err := c.post(ctx, path+"?stream=true", req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var ev api.StreamEvent
		if err := dec.Decode(&ev); err == io.EOF {
			return nil, errors.New("pyexec: the stream ended without an exit event")
		} else if err != nil {
			return nil, fmt.Errorf("pyexec: reading the stream: %w", err)
		}
		switch {
		case ev.Type == api.EventError && ev.Error != nil:
			return nil, &APIError{Status: http.StatusInternalServerError, Code: ev.Error.Code, Message: ev.Error.Message, RequestID: ev.Error.RequestID}
		case ev.Type == api.EventExit && ev.ExecuteResult != nil:
			return ev.ExecuteResult, nil
		case ev.Type == api.EventStdout || ev.Type == api.EventStderr:
			if onOutput != nil {
				onOutput(ev.Type, ev.Data)
			}
		}
	}
}

// Info returns GET /v1/info.
func (c *Client) Info(ctx context.Context) (*api.Info, error) {
	var info api.Info
	return &info, c.get(ctx, "/v1/info", &info)
}

// Packages returns GET /v1/packages: what is installed in the packages dir.
func (c *Client) Packages(ctx context.Context) (*api.Packages, error) {
	var st api.Packages
	return &st, c.get(ctx, "/v1/packages", &st)
}

// InstallPackages installs packages (POST /v1/packages) and returns the new state.
func (c *Client) InstallPackages(ctx context.Context, req api.PackagesRequest) (*api.Packages, error) {
	var st api.Packages
	if err := c.postJSON(ctx, "/v1/packages", req, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

func (c *Client) get(ctx context.Context, path string, out any) error {
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://pyexec"+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.do(hreq)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return decode(resp.Body, path, out)
}

func (c *Client) post(ctx context.Context, path string, body any) (*http.Response, error) {
	data, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://pyexec"+path, bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	return c.do(hreq)
}

// postJSON posts body to path and decodes the answer into out.
func (c *Client) postJSON(ctx context.Context, path string, body, out any) error {
	resp, err := c.post(ctx, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return decode(resp.Body, path, out)
}

// delete sends DELETE path; the answer (204) has no body.
func (c *Client) delete(ctx context.Context, path string) error {
	hreq, err := http.NewRequestWithContext(ctx, http.MethodDelete, "http://pyexec"+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.do(hreq)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	return resp.Body.Close()
}

func decode(r io.Reader, path string, out any) error {
	if err := json.NewDecoder(r).Decode(out); err != nil {
		return fmt.Errorf("pyexec: reading the answer of %s: %w", path, err)
	}
	return nil
}

// do sends the request and turns answers other than 2xx into *APIError.
func (c *Client) do(hreq *http.Request) (*http.Response, error) {
	if owner, ok := hreq.Context().Value(ownerKey{}).(string); ok {
		hreq.Header.Set(api.OwnerHeader, owner)
	}
	resp, err := c.http.Do(hreq)
	if err != nil {
		if hreq.Context().Err() != nil {
			return nil, hreq.Context().Err()
		}
		var opErr *net.OpError
		if errors.As(err, &opErr) && opErr.Op == "dial" {
			return nil, fmt.Errorf("%w at %s: %v (is the pyexec sidecar running?)", ErrUnreachable, c.socket, opErr.Err)
		}
		return nil, fmt.Errorf("pyexec: %w", err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 { // 200; 201 and 204 of the session endpoints
		return resp, nil
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return nil, decodeError(resp.StatusCode, resp.Header, raw)
}

// decodeError turns an error answer into an *APIError: its code, message and request id when
// the body is {"error":{...}}, else code internal with the body as the message.
func decodeError(status int, header http.Header, raw []byte) *APIError {
	apiErr := &APIError{Status: status, Code: api.ErrCodeInternal, Message: string(raw)}
	var body api.ErrorResponse
	if json.Unmarshal(raw, &body) == nil && body.Error.Code != "" {
		apiErr.Code, apiErr.Message, apiErr.RequestID = body.Error.Code, body.Error.Message, body.Error.RequestID
	}
	if s, err := strconv.Atoi(header.Get("Retry-After")); err == nil {
		apiErr.RetryAfter = time.Duration(s) * time.Second
	}
	return apiErr
}
