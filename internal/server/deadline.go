package server

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// The request body's deadline, on the socket and on the probe port alike. ReadHeaderTimeout
// covers only the headers: without more, a client that trickles its body (a byte now and
// then) holds its connection, and the handler reading it, for as long as it likes.
const (
	// BodyTimeout is how long a request's body may take from the end of its headers, beyond
	// the time its size needs at BodyMinRate: a body that stops arriving is cut off after it.
	BodyTimeout = 10 * time.Second
	// BodyMinRate is the pace, in bytes per second, at which a body earns more time: each
	// byte received moves the deadline on by 1/BodyMinRate s. A body sent at this pace or
	// faster is never cut off, whatever its size (--max-request-bytes bounds that); the 10 MiB
	// of the default --max-request-bytes may take 20 s.
	BodyMinRate = 1 << 20
)

// errBodyTimeout is what reading a body that did not arrive in time returns.
var errBodyTimeout = errors.New("not received in time")

// withBodyDeadline gives the body of each request to h a read deadline: timeout from the end
// of its headers, moved on by each byte received at rate bytes per second (the socket and the
// probe port: BodyTimeout and BodyMinRate). Once the body has been read to its end, net/http
// takes the deadline away itself as it starts its read in the background (which tells a
// handler that its client hung up): a handler may work as long as it needs. A handler that
// does not read the body leaves the deadline in place: net/http's own reading of what is left
// after the handler (to reuse the connection) then ends at it, and the connection is closed.
func withBodyDeadline(h http.Handler, timeout time.Duration, rate float64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			h.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		start := time.Now()
		if rc.SetReadDeadline(start.Add(timeout)) == nil {
			r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc, start: start, timeout: timeout, rate: rate}
		}
		h.ServeHTTP(w, r)
	})
}

// deadlineBody moves its connection's read deadline on as the body arrives.
type deadlineBody struct {
	io.ReadCloser
	rc       *http.ResponseController
	start    time.Time
	timeout  time.Duration
	rate     float64
	received int64
}

// Read reads the body; a read cut off by the deadline fails with errBodyTimeout.
func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.received += int64(n)
	switch {
	case err == io.EOF:
		// The whole body is in; net/http has taken the deadline away.
	case errors.Is(err, os.ErrDeadlineExceeded):
		err = fmt.Errorf("%w: a request body must arrive within %v of its headers, plus 1 s per %.0f KiB of it; send it faster",
			errBodyTimeout, b.timeout, b.rate/1024)
	case n > 0:
		earned := time.Duration(float64(b.received) / b.rate * float64(time.Second))
		_ = b.rc.SetReadDeadline(b.start.Add(b.timeout + earned))
	}
	return n, err
}
