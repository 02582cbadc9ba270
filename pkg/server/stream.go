package server

import (
	"encoding/json"
	"net/http"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/pyexec/pyexec/pkg/api"
)

// eventError is the type of the last event of a stream whose execution failed to run; see
// runStreaming.
const eventError = "error"

// streamError is the event that ends a stream when the executor fails.
type streamError struct {
	Type  string        `json:"type"`
	Error api.ErrorBody `json:"error"`
}

// streamWriter turns the executor's output into stream events, one JSON line each, flushed
// at once. It is the executor.Output of a streamed execution; a mutex orders the writes of
// the stdout and stderr goroutines.
type streamWriter struct {
	mu      sync.Mutex
	enc     *json.Encoder
	rc      *http.ResponseController
	pending map[string][]byte // per stream: the start of a UTF-8 sequence cut by a chunk
	err     error             // the first write error: the client is gone
	done    bool              // finish or stop was called; later output is dropped
}

// newStreamWriter returns a streamWriter on w.
func newStreamWriter(w http.ResponseWriter) *streamWriter {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return &streamWriter{enc: enc, rc: http.NewResponseController(w), pending: map[string][]byte{}}
}

// Write sends data of stream ("stdout" or "stderr") as one event. A UTF-8 sequence cut at
// the end of data waits for the rest in the next chunk, so that no character is mangled.
func (sw *streamWriter) Write(stream string, data []byte) {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if sw.done || sw.err != nil {
		return
	}
	buf := append(sw.pending[stream], data...)
	complete, rest := splitIncompleteUTF8(buf)
	sw.pending[stream] = append([]byte(nil), rest...)
	if len(complete) > 0 {
		sw.emit(api.StreamEvent{Type: stream, Data: string(complete)})
	}
}

// finish sends what is left of a cut UTF-8 sequence, then last, the final event. Output
// that comes after it is dropped.
func (sw *streamWriter) finish(last any) {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	for _, stream := range []string{api.EventStdout, api.EventStderr} {
		if p := sw.pending[stream]; len(p) > 0 {
			sw.emit(api.StreamEvent{Type: stream, Data: string(p)})
		}
	}
	sw.emit(last)
	sw.done = true
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
func (sw *streamWriter) emit(ev any) {
	if sw.err != nil {
		return
	}
	// A client that stops reading must not hold the execution (and its slot) forever.
	_ = sw.rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	if sw.err = sw.enc.Encode(ev); sw.err == nil {
		sw.err = sw.rc.Flush()
	}
}

// streamWriteTimeout bounds one write of a stream event to a client.
const streamWriteTimeout = 10 * time.Second

// splitIncompleteUTF8 splits b before a UTF-8 sequence that b ends in the middle of.
// Invalid bytes count as complete (JSON shows them as U+FFFD).
func splitIncompleteUTF8(b []byte) (complete, rest []byte) {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if !utf8.RuneStart(b[i]) {
			continue
		}
		if utf8.FullRune(b[i:]) {
			return b, nil
		}
		return b[:i], b[i:]
	}
	return b, nil
}
