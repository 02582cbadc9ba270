package client

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"strconv"
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
	rec := &recorder{header: http.Header{}}
	if aborted := serve(t.h, rec, r); aborted {
		return nil, errors.New("in process: the response was aborted")
	}
	if rec.status == 0 {
		rec.WriteHeader(http.StatusOK)
	}
	// A body that failed in the middle (its runner went) ends short, as on a connection.
	if n, err := strconv.ParseInt(rec.sent.Get("Content-Length"), 10, 64); err == nil && int64(len(rec.body)) < n {
		return nil, fmt.Errorf("in process: the response ended %d bytes short of its Content-Length", n-int64(len(rec.body)))
	}
	return &http.Response{
		Status:     strconv.Itoa(rec.status) + " " + http.StatusText(rec.status),
		StatusCode: rec.status,
		Proto:      "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        rec.sent,
		Body:          &recordedBody{Reader: bytes.NewReader(rec.body), body: rec.body},
		ContentLength: int64(len(rec.body)),
		Request:       r,
	}, nil
}

// serve serves r with h; aborted says h aborted the response (http.ErrAbortHandler), as
// net/http would close its connection.
func serve(h http.Handler, w http.ResponseWriter, r *http.Request) (aborted bool) {
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				panic(v)
			}
			aborted = true
		}
	}()
	h.ServeHTTP(w, r)
	return false
}

// recorder is a response served in process: status, headers as sent, body. A body of a
// Content-Length the handler set is grown once to it: a result of tens of MiB written in
// pieces is then held once, not in a buffer that doubled as it grew.
type recorder struct {
	header http.Header
	sent   http.Header
	status int
	body   []byte
}

// Header is the response's header, until WriteHeader sends it.
func (r *recorder) Header() http.Header { return r.header }

// WriteHeader records the status and the headers as they are now.
func (r *recorder) WriteHeader(status int) {
	if r.status != 0 {
		return
	}
	r.status = status
	r.sent = r.header.Clone()
	if n, err := strconv.ParseInt(r.sent.Get("Content-Length"), 10, 64); err == nil && n > 0 && n <= maxPreallocBytes {
		r.body = make([]byte, 0, n)
	}
}

// Write appends to the body.
func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.WriteHeader(http.StatusOK)
	}
	r.body = append(r.body, p...)
	return len(p), nil
}

// Flush does nothing: the response is read once it is whole.
func (r *recorder) Flush() {}

// recordedBody is the body of a response served in process; readBody takes its bytes as they
// are instead of copying them.
type recordedBody struct {
	*bytes.Reader
	body []byte
}

// Close does nothing.
func (*recordedBody) Close() error { return nil }
