package client

import (
	"net/http"
	"net/http/httptest"
)

// NewInProcess returns a client whose requests h serves in this process, with the caller's
// context: the sidecar's own MCP endpoint calls the API this way, so that its calls pass the
// same checks, queue, limits and logs as a request on the socket. Streaming arrives whole.
func NewInProcess(h http.Handler) *Client {
	return &Client{socket: "in-process", http: &http.Client{Transport: handlerTransport{h}}}
}

// handlerTransport serves a request with a handler and returns its whole response.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	resp := rec.Result()
	resp.Request = r
	return resp, nil
}
