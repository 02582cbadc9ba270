package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/pyexec/pyexec/internal/mcpserver"
	"github.com/pyexec/pyexec/pkg/api"
	"github.com/pyexec/pyexec/pkg/client"
)

// errMCPHangUp is the cause of the context of a tool's call whose MCP client hung up.
var errMCPHangUp = errors.New("the MCP client hung up")

// mcpRequestKey is the context key of the /mcp request that a tool's call serves.
type mcpRequestKey struct{}

// mcpHandler serves MCP over Streamable HTTP. Its tools call this server's own API in process,
// with the context of the MCP request (and so its peer's credentials): an MCP call is checked,
// queued, limited, confined and logged as the same call on the socket would be. Stateless: no
// MCP session to keep between requests; plain JSON answers, but for a tool's call that asks
// for progress (a progress token), answered as server-sent events. A body is at most
// --max-request-bytes.
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
	// One MCP server for the interpreter the preflight found (its instructions name the
	// Python and its packages), made anew when that changes: before the preflight, and after.
	var (
		mu    sync.Mutex
		srv   *mcp.Server
		forPy *api.Python
	)
	server := func(*http.Request) *mcp.Server {
		py := s.python()
		mu.Lock()
		defer mu.Unlock()
		if srv == nil || py != forPy {
			srv, forPy = mcpserver.New(backend, mcpserver.Options{Version: s.cfg.Version, Packages: s.cfg.MCPInstalls, PassOn: passOn,
				MaxTimeoutSeconds: s.cfg.Limits.MaxTimeoutSeconds, StructuredResult: s.cfg.MCPStructuredResult, Python: py}), py
		}
		return srv
	}
	handler := func(jsonResponse bool) http.Handler {
		return mcp.NewStreamableHTTPHandler(server,
			&mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: jsonResponse, PropagateRequestCancellation: true,
				MaxRequestBodyBytes: s.cfg.Limits.MaxRequestBytes})
	}
	plain, events := handler(true), handler(false)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A call that asks for progress is answered as a stream of events: the notifications,
		// then the answer (a JSON answer has nowhere to put them). Any other, as one JSON.
		h := plain
		if r.Method == http.MethodPost {
			body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.Limits.MaxRequestBytes))
			if isMaxBytes(err) {
				http.Error(w, fmt.Sprintf("request body exceeds %d bytes (--max-request-bytes)", s.cfg.Limits.MaxRequestBytes), http.StatusRequestEntityTooLarge)
				return
			}
			if err != nil {
				return // the client went away
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			if asksProgress(body) {
				h = events
			}
		}
		c := newCarrier()
		dw := &deadlineWriter{ResponseWriter: w, rc: http.NewResponseController(w), timeout: s.writeTimeout(), c: c}
		defer c.written()
		ctx := withCarrier(context.WithValue(r.Context(), mcpRequestKey{}, r.Context()), c)
		h.ServeHTTP(dw, r.WithContext(ctx))
		if dw.err != nil {
			s.cutOff(r, int64(dw.written), dw.err)
		}
	})
}

// asksProgress says body is a tools/call with a progress token.
func asksProgress(body []byte) bool {
	// Most calls have none: no second parse of their body (a key written with escapes is
	// missed, and that call gets no progress, which is advice only).
	if !bytes.Contains(body, []byte(`"progressToken"`)) {
		return false
	}
	var call struct {
		Method string `json:"method"`
		Params struct {
			Meta struct {
				ProgressToken json.RawMessage `json:"progressToken"`
			} `json:"_meta"`
		} `json:"params"`
	}
	if json.Unmarshal(body, &call) != nil || call.Method != "tools/call" {
		return false
	}
	token := call.Params.Meta.ProgressToken
	return len(token) > 0 && string(token) != "null"
}

// deadlineWriter gives a response the write timeout from its first byte on: the MCP SDK writes
// its answer — a tool's whole result, tens of MiB with files — itself, after the call, and a
// client that does not read it must not hold it longer than one of the API (see writeBody).
type deadlineWriter struct {
	http.ResponseWriter
	c       *carrier // writes what it passed on in place of what stands for it
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

// Write writes body bytes, within the deadline, with the contents the carrier passed on in
// place of what stands for them (the SDK writes each message in one Write).
func (d *deadlineWriter) Write(b []byte) (int, error) {
	d.arm()
	for _, piece := range d.c.expand(b) {
		n, err := d.ResponseWriter.Write(piece)
		d.written += n
		if err != nil {
			if d.err == nil {
				d.err = err
			}
			return 0, err
		}
	}
	return len(b), nil
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

// passOn keeps a tool's structured content in the carrier of the /mcp request being served,
// and returns what stands for it (see carrier.pass); without a carrier, the content itself.
func passOn(ctx context.Context, content json.RawMessage) json.RawMessage {
	if c := carrierOf(ctx); c != nil {
		return c.pass(content)
	}
	return content
}

// passed is a content passed on past the MCP SDK's encoder, and the JSON string that stands
// for it in the SDK's answer: random, made after the code ran, so that nothing the code
// printed can name it, and of base64 characters, four to a group without padding, so that it
// may stand for an image's data too (the SDK writes the data's base64: that same string).
type passed struct {
	token   []byte
	content []byte
}

// pass keeps content until the carrier's response is written, and returns the JSON string
// that stands for it there.
func (c *carrier) pass(content json.RawMessage) json.RawMessage {
	p := passed{token: []byte(`"pyexec` + rand.Text() + `"`), content: content} // 6 + 26 characters
	c.mu.Lock()
	c.passed = append(c.passed, p)
	c.mu.Unlock()
	return p.token
}

// expand is b in pieces, with each content passed on in place of its token, wherever in b
// that is.
func (c *carrier) expand(b []byte) [][]byte {
	type at struct {
		i int
		p passed
	}
	var found []at
	c.mu.Lock()
	for _, p := range c.passed {
		if i := bytes.Index(b, p.token); i >= 0 {
			found = append(found, at{i, p})
		}
	}
	c.mu.Unlock()
	slices.SortFunc(found, func(x, y at) int { return x.i - y.i })
	pieces := make([][]byte, 0, 2*len(found)+1)
	from := 0
	for _, f := range found {
		pieces = append(pieces, b[from:f.i], f.p.content)
		from = f.i + len(f.p.token)
	}
	return append(pieces, b[from:])
}
