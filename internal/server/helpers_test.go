package server

import (
	"github.com/pyexec/pyexec/internal/testutil"
	"github.com/pyexec/pyexec/internal/unixsocket"

	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/pyexec/pyexec/internal/executor"
	"github.com/pyexec/pyexec/internal/logs"
	"github.com/pyexec/pyexec/pkg/api"
)

// waitLimit bounds every wait of these tests; it is generous because nothing is timed.
const waitLimit = 20 * time.Second

// fakeExec is an executor.Executor made of a func.
type fakeExec func(ctx context.Context, req executor.Request, out executor.Output) (api.ExecuteResult, error)

// Execute calls f.
func (f fakeExec) Execute(ctx context.Context, req executor.Request, out executor.Output) (api.ExecuteResult, error) {
	return f(ctx, req, out)
}

// Close implements executor.Executor.
func (fakeExec) Close() {}

// exitResult is what a fake returns for code that ran and exited 0.
func exitResult() api.ExecuteResult {
	return api.ExecuteResult{ExitCode: 0, Stdout: "hello\n", Reason: api.ReasonExit, DurationMS: 1}
}

// okExec runs every request successfully.
var okExec = fakeExec(func(context.Context, executor.Request, executor.Output) (api.ExecuteResult, error) {
	return exitResult(), nil
})

// testLimits are the limits of most tests.
func testLimits() api.Limits {
	return api.Limits{
		TimeoutSeconds: 10, MaxTimeoutSeconds: 60,
		MemoryLimitMB: 256, MaxMemoryLimitMB: 1024,
		MaxOutputBytes: 1 << 20, MaxProcesses: 32, MaxFileBytes: 1 << 20, MaxFilesOut: 10, MaxFilesOutBytes: 4 << 20,
		MaxRequestBytes: 64 << 10, MaxConcurrent: 2, Queue: 3,
		MaxConnections: 64, MaxConnectionsPerUID: 16,
	}
}

// testConfig is the config of most tests.
func testConfig() Config {
	return Config{Limits: testLimits(), Version: "1.2.3", Mode: "spawn"}
}

// syncBuffer is a bytes.Buffer safe for concurrent use, for the logger.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the JSON log lines whose msg is msg.
func (b *syncBuffer) lines(t *testing.T, msg string) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %q: %v", line, err)
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// harness is a Server on a real Unix socket with a client for it.
type harness struct {
	t      *testing.T
	srv    *Server
	hs     *http.Server
	reg    *prometheus.Registry
	sock   string
	client *http.Client
	logs   *syncBuffer
}

// newHarness starts a Server with cfg and exec; ready calls SetReady.
func newHarness(t *testing.T, cfg Config, exec executor.Executor, ready bool) *harness {
	t.Helper()
	h := &harness{t: t, reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	h.sock = filepath.Join(testutil.ShortTempDir(t), "pyexec.sock")
	l, err := unixsocket.Listen(h.sock, 0o660, -1)
	if err != nil {
		t.Fatal(err)
	}
	log := logs.New(h.logs, logs.Options{Format: logs.FormatJSON})
	h.srv = New(cfg, exec, log, h.reg)
	if ready {
		h.srv.SetReady(api.Info{Preflight: api.Preflight{OK: true, Summary: "python 3.12 ok"}})
	}
	h.hs = &http.Server{Handler: h.srv.Handler(), ConnContext: unixsocket.ConnContext}
	go h.hs.Serve(l)
	h.client = newSocketClient(h.sock)
	t.Cleanup(func() {
		h.client.CloseIdleConnections()
		h.hs.Close()
	})
	return h
}

// newSocketClient returns an HTTP client that dials the Unix socket at sock.
func newSocketClient(sock string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
}

// send sends a request and returns the response with its body read. It is safe to call
// from any goroutine.
func (h *harness) send(ctx context.Context, method, path, contentType, body string) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://pyexec"+path, strings.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if owners, ok := ctx.Value(ownerHeaders{}).([]string); ok {
		req.Header[api.OwnerHeader] = owners
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// ownerHeaders is the context key of the api.OwnerHeader values send gives a request.
type ownerHeaders struct{}

// as is a context whose requests send carries with api.OwnerHeader set to owners.
func as(owners ...string) context.Context {
	return context.WithValue(context.Background(), ownerHeaders{}, owners)
}

// do sends a request and returns the response with its body read.
func (h *harness) do(ctx context.Context, method, path, contentType, body string) (*http.Response, []byte) {
	h.t.Helper()
	resp, b, err := h.send(ctx, method, path, contentType, body)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp, b
}

// execute posts body as JSON to /v1/execute.
func (h *harness) execute(body string) (*http.Response, []byte) {
	h.t.Helper()
	return h.do(context.Background(), http.MethodPost, "/v1/execute", "application/json", body)
}

// errorBody decodes an error response.
func errorBody(t *testing.T, b []byte) api.ErrorBody {
	t.Helper()
	var e api.ErrorResponse
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("error body %q: %v", b, err)
	}
	return e.Error
}

// wantError checks the status, error code and a part of the message of an error response.
func wantError(t *testing.T, resp *http.Response, body []byte, status int, code, inMessage string) api.ErrorBody {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d; body %s", resp.StatusCode, status, body)
	}
	e := errorBody(t, body)
	if e.Code != code {
		t.Errorf("error code %q, want %q (message %q)", e.Code, code, e.Message)
	}
	if !strings.Contains(e.Message, inMessage) {
		t.Errorf("message %q does not contain %q", e.Message, inMessage)
	}
	if e.RequestID == "" || e.RequestID != resp.Header.Get(headerRequestID) {
		t.Errorf("request_id %q, header %q: want the same, not empty", e.RequestID, resp.Header.Get(headerRequestID))
	}
	return e
}

// metricValue returns the value of a gauge or counter in reg: the series whose labels
// include label=value, or the first series when label is "".
func metricValue(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" && !hasLabel(m, label, value) {
				continue
			}
			if g := m.GetGauge(); g != nil {
				return g.GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s{%s=%q} not found", name, label, value)
	return 0
}

// hasLabel says whether m has the label name=value.
func hasLabel(m *dto.Metric, name, value string) bool {
	for _, p := range m.GetLabel() {
		if p.GetName() == name && p.GetValue() == value {
			return true
		}
	}
	return false
}

// waitFor polls cond until it holds, failing the test after waitLimit.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// recv receives from ch, failing the test after waitLimit.
func recv[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("timed out waiting for %s", what)
	}
	var zero T
	return zero
}
