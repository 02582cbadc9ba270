package server

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// deadlineServer serves h behind withBodyDeadline(timeout, rate) on a real TCP connection and
// returns its address.
func deadlineServer(t *testing.T, h http.HandlerFunc, timeout time.Duration, rate float64) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: withBodyDeadline(h, timeout, rate), ReadHeaderTimeout: SocketReadHeaderTimeout}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { hs.Close() })
	return ln.Addr().String()
}

// readAllBody answers 200 with the size of the body it read, or 400 with the reading's error.
func readAllBody(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	fmt.Fprint(w, len(b))
}

// TestBodyDeadlineCutsATrickle: a body that trickles in (a byte every 50 ms of 1000 announced)
// is cut off at the deadline: the client gets 400 saying why, and its connection is closed.
func TestBodyDeadlineCutsATrickle(t *testing.T) {
	const timeout = 300 * time.Millisecond
	addr := deadlineServer(t, readAllBody, timeout, 1<<20)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_, _ = io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				if _, err := c.Write([]byte("a")); err != nil {
					return
				}
			}
		}
	}()
	_ = c.SetReadDeadline(time.Now().Add(waitLimit))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer to a trickled body within %v: %v", waitLimit, err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), errBodyTimeout.Error()) {
		t.Fatalf("a trickled body: %d %q; want 400 saying it was not received in time", resp.StatusCode, body)
	}
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("the connection stays open after the body's deadline")
	}
	t.Logf("a trickled body was cut off and its connection closed after %v (deadline %v)", time.Since(start).Round(time.Millisecond), timeout)
}

// TestBodyDeadlineKeepsASteadyBody: a body that takes longer than the timeout, sent at twice
// the rate, arrives whole.
func TestBodyDeadlineKeepsASteadyBody(t *testing.T) {
	const (
		timeout = 300 * time.Millisecond
		rate    = 1 << 20
		size    = 2 << 20 // 2 MiB at 2 MiB/s: 1 s, over the timeout
		chunk   = 64 << 10
	)
	addr := deadlineServer(t, readAllBody, timeout, rate)
	pr, pw := io.Pipe()
	go func() {
		for sent := 0; sent < size; sent += chunk {
			if _, err := pw.Write(bytes.Repeat([]byte("a"), chunk)); err != nil {
				return
			}
			time.Sleep(time.Second * chunk / (2 * rate))
		}
		pw.Close()
	}()
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/", pr)
	req.ContentLength = size
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	took := time.Since(start)
	if resp.StatusCode != http.StatusOK || string(body) != fmt.Sprint(size) {
		t.Fatalf("a %d-byte body sent at %d B/s over %v: %d %q; want it whole", size, 2*rate, took, resp.StatusCode, body)
	}
	t.Logf("a %d-byte body took %v, over the %v timeout, and arrived whole", size, took.Round(time.Millisecond), timeout)
}

// TestBodyDeadlineGoesWithTheBody: once the body is read, the deadline goes: a handler that
// works longer than it is not told that its client went away. net/http takes the deadline
// away as it starts its read in the background, which withBodyDeadline relies on: a deadline
// left in place would time that read out and cancel the request's context.
func TestBodyDeadlineGoesWithTheBody(t *testing.T) {
	const timeout = 200 * time.Millisecond
	addr := deadlineServer(t, func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		select {
		case <-r.Context().Done():
			http.Error(w, "cancelled while working", http.StatusInternalServerError)
		case <-time.After(5 * timeout):
			fmt.Fprint(w, "worked")
		}
	}, timeout, 1<<20)
	resp, err := http.Post("http://"+addr+"/", "application/json", strings.NewReader(`{"code":"print(1)"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(body) != "worked" {
		t.Fatalf("a handler working past the body's deadline: %d %q", resp.StatusCode, body)
	}
}
