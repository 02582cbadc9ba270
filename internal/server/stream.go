package server

import (
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/pyexec/pyexec/pkg/api"
)

// streamWriter turns the executor's output into stream events, one JSON line each, flushed
// at once. It is the executor.Output of a streamed execution (which never cuts a UTF-8
// sequence); a mutex orders the writes of the stdout and stderr goroutines.
type streamWriter struct {
	mu   sync.Mutex
	w    http.ResponseWriter
	enc  *json.Encoder
	rc   *http.ResponseController
	err  error // the first write error: the client is gone
	done bool  // finish or stop was called; later output is dropped
}

// newStreamWriter returns a streamWriter on w.
func newStreamWriter(w http.ResponseWriter) *streamWriter {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return &streamWriter{w: w, enc: enc, rc: http.NewResponseController(w)}
}

// Write sends data of stream ("stdout" or "stderr") as one event.
func (sw *streamWriter) Write(stream string, data []byte) {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if sw.done || sw.err != nil || len(data) == 0 {
		return
	}
	sw.emit(api.StreamEvent{Type: stream, Data: string(data)})
}

// finish sends last, the final event already encoded (one JSON line of size bytes, read as it
// is written), within timeout, and returns the error that kept it from the client, if any:
// the client is gone or took longer than timeout, or last failed (the runner went). Output
// that comes after it is dropped.
func (sw *streamWriter) finish(last io.Reader, size int64, timeout time.Duration) error {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	sw.done = true
	if sw.err != nil {
		return sw.err
	}
	_ = sw.rc.SetWriteDeadline(time.Now().Add(timeout))
	n, err := io.Copy(sw.w, last)
	if err == nil && n < size {
		err = io.ErrUnexpectedEOF
	}
	if sw.err = err; err != nil {
		return err
	}
	sw.err = sw.rc.Flush()
	return sw.err
}

// stop drops all output from now on: the handler is about to return, after which nothing
// may write to the response.
func (sw *streamWriter) stop() {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	sw.done = true
}

// flush sends what is buffered (at the start: the status line and headers).
func (sw *streamWriter) flush() {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if sw.err == nil {
		sw.err = sw.rc.Flush()
	}
}

// emit writes one event and flushes it; the caller holds mu.
func (sw *streamWriter) emit(ev api.StreamEvent) {
	if sw.err != nil {
		return
	}
	// A client that stops reading must not hold the execution (and its slot) forever.
	_ = sw.rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	if sw.err = sw.enc.Encode(ev); sw.err == nil {
		sw.err = sw.rc.Flush()
	}
}

// streamWriteTimeout bounds one write of an output event to a client; the last event, which
// carries the result, has the server's write timeout (Server.writeTimeout).
const streamWriteTimeout = 10 * time.Second
