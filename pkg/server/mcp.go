package server

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/pyexec/pyexec/pkg/client"
	"github.com/pyexec/pyexec/pkg/mcpserver"
)

// errMCPHangUp is the cause of the context of a tool's call whose MCP client hung up.
var errMCPHangUp = errors.New("the MCP client hung up")

// mcpRequestKey is the context key of the /mcp request that a tool's call serves.
type mcpRequestKey struct{}

// mcpHandler serves MCP over Streamable HTTP. Its tools call this server's own API in process,
// with the context of the MCP request (and so its peer's credentials): an MCP call is checked,
// queued, limited, confined and logged as the same call on the socket would be. Stateless: no
// MCP session to keep between requests, plain JSON answers.
//
// A client that hangs up interrupts its call, as on the API. The SDK hands its tool handlers a
// context that carries the HTTP request's values but never ends (for every protocol version
// before 2026-07-28), so the request's own context travels as a value to the API calls, which
// end with it (mcpCall).
//
// A tool's result waits in the /mcp answer, not in the API call's response, which is made at
// once, in memory: the answer carries it (carrier), and admission counts it among the results
// waiting to be written until the answer is written or cut off.
func (s *Server) mcpHandler() http.Handler {
	backend := client.NewInProcess(http.HandlerFunc(s.mcpCall))
	srv := mcpserver.New(backend, mcpserver.Options{Version: s.cfg.Version, Packages: s.cfg.MCPInstalls})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv },
		&mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true, PropagateRequestCancellation: true})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dw := &deadlineWriter{ResponseWriter: w, rc: http.NewResponseController(w), timeout: s.writeTimeout()}
		c := newCarrier()
		defer c.written()
		ctx := withCarrier(context.WithValue(r.Context(), mcpRequestKey{}, r.Context()), c)
		h.ServeHTTP(dw, r.WithContext(ctx))
		if dw.err != nil {
			s.cutOff(r, dw.written, dw.err)
		}
	})
}

// deadlineWriter gives a response the write timeout from its first byte on: the MCP SDK writes
// its answer — a tool's whole result, tens of MiB with files — itself, after the call, and a
// client that does not read it must not hold it longer than one of the API (see writeBody).
type deadlineWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	armed   bool
	written int
	err     error // the first write error: the client went away, or did not read in time
}

func (d *deadlineWriter) arm() {
	if !d.armed {
		d.armed = true
		_ = d.rc.SetWriteDeadline(time.Now().Add(d.timeout))
	}
}

// WriteHeader sends the status line and headers, and arms the deadline.
func (d *deadlineWriter) WriteHeader(status int) {
	d.arm()
	d.ResponseWriter.WriteHeader(status)
}

// Write writes body bytes, within the deadline.
func (d *deadlineWriter) Write(b []byte) (int, error) {
	d.arm()
	n, err := d.ResponseWriter.Write(b)
	d.written += n
	if err != nil && d.err == nil {
		d.err = err
	}
	return n, err
}

// Flush sends what is buffered, within the deadline.
func (d *deadlineWriter) Flush() {
	d.arm()
	_ = d.rc.Flush()
}

// Unwrap gives http.ResponseController the underlying writer.
func (d *deadlineWriter) Unwrap() http.ResponseWriter { return d.ResponseWriter }

// mcpCall serves an API call of an MCP tool: it ends when the /mcp request it serves ends
// (its client hung up), and so does the execution it runs.
func (s *Server) mcpCall(w http.ResponseWriter, r *http.Request) {
	if outer, ok := r.Context().Value(mcpRequestKey{}).(context.Context); ok {
		ctx, cancel := context.WithCancelCause(r.Context())
		defer cancel(nil)
		stop := context.AfterFunc(outer, func() { cancel(errMCPHangUp) })
		defer stop()
		r = r.WithContext(ctx)
	}
	s.ServeHTTP(w, r)
}
