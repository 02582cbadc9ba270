package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/pyexec/pyexec/internal/executor"
	"github.com/pyexec/pyexec/pkg/api"
)

// startStream posts body to /v1/execute with query and returns the response once its
// headers have arrived.
func startStream(t *testing.T, h *harness, ctx context.Context, query, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://pyexec/v1/execute"+query, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return resp
}

// readLine reads one line of a stream.
func readLine(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("read a stream line: %q, %v", line, err)
	}
	return line
}

// readEvent reads one stream event.
func readEvent(t *testing.T, r *bufio.Reader) api.StreamEvent {
	t.Helper()
	line := readLine(t, r)
	var ev api.StreamEvent
	if err := json.Unmarshal([]byte(line), &ev); err != nil {
		t.Fatalf("event %q: %v", line, err)
	}
	return ev
}

// wantOutputEvent checks an output event.
func wantOutputEvent(t *testing.T, ev api.StreamEvent, typ, data string) {
	t.Helper()
	if ev.Type != typ || ev.Data != data || ev.ExecuteResult != nil {
		t.Errorf("event %+v, want type %q data %q and no result", ev, typ, data)
	}
}

// wantEOF checks that the stream has ended.
func wantEOF(t *testing.T, r *bufio.Reader) {
	t.Helper()
	if line, err := r.ReadString('\n'); !errors.Is(err, io.EOF) || line != "" {
		t.Errorf("after the last event: %q, %v; want the end of the stream", line, err)
	}
}

func TestStreamOrder(t *testing.T) {
	firstSeen := make(chan struct{})
	finished := make(chan struct{})
	exec := fakeExec(func(ctx context.Context, _ executor.Request, out executor.Output) (api.ExecuteResult, error) {
		defer close(finished)
		out.Write(api.EventStdout, []byte("one\n"))
		select {
		case <-firstSeen:
		case <-ctx.Done():
			return api.ExecuteResult{}, ctx.Err()
		}
		out.Write(api.EventStderr, []byte("two\n"))
		out.Write(api.EventStdout, []byte("three <&>\n"))
		return api.ExecuteResult{Stdout: "one\nthree <&>\n", Stderr: "two\n", Reason: api.ReasonExit, DurationMS: 5}, nil
	})
	h := newHarness(t, testConfig(), exec, true)
	resp := startStream(t, h, context.Background(), "?stream=true", `{"code":"1"}`)
	r := bufio.NewReader(resp.Body)

	wantOutputEvent(t, readEvent(t, r), api.EventStdout, "one\n")
	select {
	case <-finished:
		t.Fatal("the executor finished before the first event arrived")
	default:
	}
	close(firstSeen)
	wantOutputEvent(t, readEvent(t, r), api.EventStderr, "two\n")
	line := readLine(t, r)
	if want := `{"type":"stdout","data":"three <&>\n"}` + "\n"; line != want {
		t.Errorf("third line %q, want %q", line, want)
	}

	exit := readEvent(t, r)
	want := api.ExecuteResult{ID: resp.Header.Get(headerRequestID), Stdout: "one\nthree <&>\n", Stderr: "two\n",
		Reason: api.ReasonExit, DurationMS: 5, Files: []api.OutputFile{}}
	if exit.Type != api.EventExit || exit.Data != "" || exit.ExecuteResult == nil || !reflect.DeepEqual(*exit.ExecuteResult, want) {
		t.Errorf("exit event %+v (result %+v), want result %+v", exit, exit.ExecuteResult, want)
	}
	wantEOF(t, r)
	if n := len(h.logs.lines(t, "execution finished")); n != 1 {
		t.Errorf("%d 'execution finished' lines, want 1", n)
	}
}

func TestStreamExecutorError(t *testing.T) {
	exec := fakeExec(func(_ context.Context, _ executor.Request, out executor.Output) (api.ExecuteResult, error) {
		out.Write(api.EventStdout, []byte("partial"))
		return api.ExecuteResult{}, errors.New("fork server died")
	})
	h := newHarness(t, testConfig(), exec, true)
	resp := startStream(t, h, context.Background(), "?stream=1", `{"code":"1"}`)
	r := bufio.NewReader(resp.Body)
	wantOutputEvent(t, readEvent(t, r), api.EventStdout, "partial")

	line := readLine(t, r)
	var last api.StreamEvent
	if err := json.Unmarshal([]byte(line), &last); err != nil {
		t.Fatal(err)
	}
	want := api.ErrorBody{Code: api.ErrCodeInternal, Message: "execution failed: fork server died", RequestID: resp.Header.Get(headerRequestID)}
	if last.Type != api.EventError || last.Error == nil || *last.Error != want || last.ExecuteResult != nil {
		t.Errorf("last event %s, want an error event with %+v", line, want)
	}
	wantEOF(t, r)
}

func TestClientHangupCancelsExecution(t *testing.T) {
	for _, query := range []string{"", "?stream=true"} {
		t.Run("query="+query, func(t *testing.T) {
			started := make(chan struct{})
			cancelled := make(chan error, 1)
			exec := fakeExec(func(ctx context.Context, _ executor.Request, out executor.Output) (api.ExecuteResult, error) {
				if out != nil {
					out.Write(api.EventStdout, []byte("working\n"))
				}
				close(started)
				<-ctx.Done()
				cancelled <- ctx.Err()
				return api.ExecuteResult{Reason: api.ReasonSignal, Signal: "SIGKILL"}, nil
			})
			h := newHarness(t, testConfig(), exec, true)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				_, _, err := h.send(ctx, http.MethodPost, "/v1/execute"+query, "application/json", `{"code":"1"}`)
				done <- err
			}()
			recv(t, "the execution to start", started)
			cancel()
			if err := recv(t, "the client", done); err == nil {
				t.Error("the client got a whole answer after hanging up")
			}
			if err := recv(t, "the execution's context to end", cancelled); !errors.Is(err, context.Canceled) {
				t.Errorf("execution context error %v, want context.Canceled", err)
			}
		})
	}
}

// failingBody is a result's body whose source fails after its first bytes, as a streamed
// result does when the runner goes in the middle of it.
type failingBody struct {
	*strings.Reader
	size int64
}

func (b *failingBody) Read(p []byte) (int, error) {
	if b.Reader.Len() == 0 {
		return 0, errors.New("the runner went")
	}
	return b.Reader.Read(p)
}
func (b *failingBody) Size() int64  { return b.size }
func (b *failingBody) Close() error { return nil }

// TestBodyCutInTheMiddle: a result's body that fails in the middle, after the status and
// headers went, ends the response with the connection closed — the plain body short of its
// Content-Length, the stream without a clean end of its chunked body (a cut exit event followed
// by the stream's end could pass for a whole one) — and is logged as cut off.
func TestBodyCutInTheMiddle(t *testing.T) {
	const head = `{"id":"x","exit_code":0,"stdout":"AAAA`
	exec := fakeExec(func(_ context.Context, req executor.Request, _ executor.Output) (api.ExecuteResult, error) {
		res := exitResult()
		res.ID = req.ID
		res.Encoded = &failingBody{Reader: strings.NewReader(head), size: 1000}
		return res, nil
	})
	h := newHarness(t, testConfig(), exec, true)
	for _, query := range []string{"", "?stream=1"} {
		resp, body, err := h.send(context.Background(), http.MethodPost, "/v1/execute"+query, "application/json", `{"code":"1"}`)
		if err == nil {
			t.Errorf("%q: the body %q of a result cut in the middle was read whole", query, body)
		} else if resp.StatusCode != http.StatusOK {
			t.Errorf("%q: status %d", query, resp.StatusCode)
		}
	}
	waitFor(t, "both cuts in the log", func() bool { return len(h.logs.lines(t, "response cut off")) == 2 })
}
