package mcpserver

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// StdioTransport is MCP over standard input and output (`pyexec mcp`): one JSON-RPC message a
// line each way, as the SDK's IOTransport, which it wraps. A line that is not a message does
// not end the connection, as it would there: it is answered with a JSON-RPC error of id null —
// -32700 (parse error) for a line that is not JSON, -32600 (invalid request) for JSON that is
// not a JSON-RPC message and for a line longer than MaxLineLength — and the next line is read.
// Blank lines are skipped. When the input ends, the calls still running are answered before
// the connection closes: a client that writes its last request and closes its end gets its
// answer.
type StdioTransport struct {
	In  io.Reader // closed with the connection when it is an io.Closer
	Out io.Writer // never closed
	// MaxLineLength bounds a line, and so what one message may hold in memory; 0 is the SDK's
	// mcp.DefaultMaxLineLength.
	MaxLineLength int
}

// Connect implements mcp.Transport.
func (t *StdioTransport) Connect(ctx context.Context) (mcp.Connection, error) {
	max := t.MaxLineLength
	if max <= 0 {
		max = mcp.DefaultMaxLineLength
	}
	calls := newInflight()
	out := &lockedWriter{w: t.Out, calls: calls}
	in := &lineFilter{ctx: ctx, in: t.In, r: bufio.NewReader(t.In), out: out, max: max, calls: calls}
	// The filter bounds the lines already; the SDK's own bound must let every one through.
	return (&mcp.IOTransport{Reader: in, Writer: out, MaxLineLength: max + 2}).Connect(ctx)
}

// lockedWriter writes each message whole: the SDK's answers and the filter's errors share it.
// An answer ends its call in calls, written or not.
type lockedWriter struct {
	mu    sync.Mutex
	w     io.Writer
	calls *inflight
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	n, err := w.w.Write(p)
	w.mu.Unlock()
	if w.calls != nil && w.calls.running() {
		if line := bytes.TrimSpace(p); len(line) > 0 {
			if msgs, derr := decodeMessages(line); derr == nil { // a batch's answers are one array
				for _, msg := range msgs {
					if resp, ok := msg.(*jsonrpc.Response); ok {
						w.calls.end(resp.ID)
					}
				}
			}
		}
	}
	return n, err
}

// inflight are the calls read and not yet answered, by id.
type inflight struct {
	mu   sync.Mutex
	ids  map[jsonrpc.ID]int
	idle chan struct{} // closed while ids is empty
}

func newInflight() *inflight {
	idle := make(chan struct{})
	close(idle)
	return &inflight{ids: map[jsonrpc.ID]int{}, idle: idle}
}

// start counts a call.
func (c *inflight) start(id jsonrpc.ID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.ids) == 0 {
		c.idle = make(chan struct{})
	}
	c.ids[id]++
}

// end counts a call answered, or cancelled by its client (no answer is due then).
func (c *inflight) end(id jsonrpc.ID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ids[id] == 0 {
		return
	}
	if c.ids[id]--; c.ids[id] == 0 {
		delete(c.ids, id)
	}
	if len(c.ids) == 0 {
		close(c.idle)
	}
}

// has says a call of id is counted and not yet answered.
func (c *inflight) has(id jsonrpc.ID) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ids[id] > 0
}

func (c *inflight) running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.ids) > 0
}

// wait returns once no call runs, or when ctx ends.
func (c *inflight) wait(ctx context.Context) {
	c.mu.Lock()
	idle := c.idle
	c.mu.Unlock()
	select {
	case <-idle:
	case <-ctx.Done():
	}
}

// Close leaves the output open: it is the process's standard output.
func (w *lockedWriter) Close() error { return nil }

// lineFilter hands the SDK only the lines that are JSON-RPC messages, each with its newline,
// and answers the others itself.
type lineFilter struct {
	ctx     context.Context // the connection's: waiting for calls at the end stops with it
	calls   *inflight
	in      io.Reader
	r       *bufio.Reader
	out     io.Writer
	max     int
	pending []byte // what is left of the line being handed over
	err     error  // the input's end or failure, once every line before it is handed over
}

// Read implements io.Reader.
func (f *lineFilter) Read(p []byte) (int, error) {
	for len(f.pending) == 0 {
		if f.err != nil {
			if errors.Is(f.err, io.EOF) {
				f.calls.wait(f.ctx) // the SDK closes the connection, and drops its calls, at EOF
			}
			return 0, f.err
		}
		line, tooLong, err := f.readLine()
		f.err = err
		msg, werr := f.check(line, tooLong)
		if werr != nil {
			return 0, werr
		}
		f.pending = msg
	}
	n := copy(p, f.pending)
	f.pending = f.pending[n:]
	return n, nil
}

// Close closes the input, when it can be closed.
func (f *lineFilter) Close() error {
	if c, ok := f.in.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// readLine reads the next line without its newline, keeping at most max bytes of it: tooLong
// says that more were dropped. err is the input's end or failure after the line.
func (f *lineFilter) readLine() (line []byte, tooLong bool, err error) {
	for {
		chunk, err := f.r.ReadSlice('\n')
		if !tooLong {
			if len(line)+len(chunk) > f.max+1 { // +1: the newline
				tooLong, line = true, nil
			} else {
				line = append(line, chunk...)
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		return bytes.TrimRight(line, "\r\n"), tooLong, err
	}
}

// check returns the message of line with its newline, or nil when there is none to hand over:
// a blank line, or one it answered with an error (werr: the answer could not be written).
func (f *lineFilter) check(line []byte, tooLong bool) (msg []byte, werr error) {
	line = bytes.TrimSpace(line)
	switch {
	case tooLong:
		return nil, f.answer(jsonrpc.CodeInvalidRequest, fmt.Sprintf("Invalid Request: a message longer than %d bytes; send less", f.max))
	case len(line) == 0:
		return nil, nil
	case !json.Valid(line):
		return nil, f.answer(jsonrpc.CodeParseError, "Parse error: the line is not JSON; send one JSON-RPC message a line")
	}
	msgs, err := decodeMessages(line)
	if err != nil {
		return nil, f.answer(jsonrpc.CodeInvalidRequest, "Invalid Request: "+err.Error())
	}
	// A call whose id is that of a call not yet answered (or of another in its batch) is
	// refused here, as the SDK would refuse it, but with an answer of id null that would
	// leave the call counted for ever (or by ending the connection, for a batch).
	seen := map[jsonrpc.ID]bool{}
	for _, m := range msgs {
		if req, ok := m.(*jsonrpc.Request); ok && req.IsCall() {
			if seen[req.ID] || f.calls.has(req.ID) {
				return nil, f.answer(jsonrpc.CodeInvalidRequest, fmt.Sprintf("Invalid Request: request id %v is in use by a call not yet answered", req.ID.Raw()))
			}
			seen[req.ID] = true
		}
	}
	for _, m := range msgs {
		req, ok := m.(*jsonrpc.Request)
		switch {
		case !ok:
		case req.IsCall():
			f.calls.start(req.ID)
		case req.Method == "notifications/cancelled":
			var p struct {
				RequestID any `json:"requestId"`
			}
			if json.Unmarshal(req.Params, &p) == nil {
				if id, err := jsonrpc.MakeID(p.RequestID); err == nil {
					f.calls.end(id)
				}
			}
		}
	}
	return append(line, '\n'), nil
}

// decodeMessages decodes line, valid JSON: a JSON-RPC message or a batch of them.
func decodeMessages(line []byte) ([]jsonrpc.Message, error) {
	if line[0] != '[' {
		m, err := jsonrpc.DecodeMessage(line)
		return []jsonrpc.Message{m}, err
	}
	var batch []json.RawMessage
	if err := json.Unmarshal(line, &batch); err != nil {
		return nil, err
	}
	if len(batch) == 0 {
		return nil, errors.New("an empty batch")
	}
	msgs := make([]jsonrpc.Message, len(batch))
	for i, m := range batch {
		var err error
		if msgs[i], err = jsonrpc.DecodeMessage(m); err != nil {
			return nil, err
		}
	}
	return msgs, nil
}

// errorAnswer is a JSON-RPC error answer whose request's id is not known: id null.
type errorAnswer struct {
	JSONRPC string    `json:"jsonrpc"`
	ID      *struct{} `json:"id"`
	Error   struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// answer writes a JSON-RPC error of id null, on a line of its own.
func (f *lineFilter) answer(code int, message string) error {
	a := errorAnswer{JSONRPC: "2.0"}
	a.Error.Code, a.Error.Message = code, message
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	_, err = f.out.Write(append(b, '\n'))
	return err
}
