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
// Blank lines are skipped.
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
	out := &lockedWriter{w: t.Out}
	in := &lineFilter{in: t.In, r: bufio.NewReader(t.In), out: out, max: max}
	// The filter bounds the lines already; the SDK's own bound must let every one through.
	return (&mcp.IOTransport{Reader: in, Writer: out, MaxLineLength: max + 2}).Connect(ctx)
}

// lockedWriter writes each message whole: the SDK's answers and the filter's errors share it.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

// Close leaves the output open: it is the process's standard output.
func (w *lockedWriter) Close() error { return nil }

// lineFilter hands the SDK only the lines that are JSON-RPC messages, each with its newline,
// and answers the others itself.
type lineFilter struct {
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
	if err := checkMessages(line); err != nil {
		return nil, f.answer(jsonrpc.CodeInvalidRequest, "Invalid Request: "+err.Error())
	}
	return append(line, '\n'), nil
}

// checkMessages checks that line, valid JSON, is a JSON-RPC message or a batch of them.
func checkMessages(line []byte) error {
	if line[0] != '[' {
		_, err := jsonrpc.DecodeMessage(line)
		return err
	}
	var batch []json.RawMessage
	if err := json.Unmarshal(line, &batch); err != nil {
		return err
	}
	if len(batch) == 0 {
		return errors.New("an empty batch")
	}
	for _, m := range batch {
		if _, err := jsonrpc.DecodeMessage(m); err != nil {
			return err
		}
	}
	return nil
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
