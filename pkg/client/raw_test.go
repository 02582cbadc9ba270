package client

import (
	"context"
	"net/http"
	"strconv"
	"testing"

	"github.com/pyexec/pyexec/pkg/api"
)

// ExecuteRaw in process: the body comes back as the handler wrote it, in pieces, held in one
// buffer of its Content-Length (not one that doubled as it grew), and the result is decoded
// from it without the files' contents.
func TestExecuteRawInProcess(t *testing.T) {
	body := []byte(`{"id":"r1","exit_code":3,"stdout":"out","stderr":"","reason":"exit","timed_out":false,"stdout_truncated":false,"stderr_truncated":false,"duration_ms":1,` +
		`"files":[{"path":"a.bin","size":3,"content_base64":"AAEC"}],"files_truncated":false,"outputs":[{"type":"display_data","data":{"image/png":"iVBO"}}],"outputs_truncated":false}` + "\n")
	c := NewInProcess(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/sessions/s1/execute" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		for i := 0; i < len(body); i += 7 {
			_, _ = w.Write(body[i:min(i+7, len(body))])
		}
	}))
	raw, err := c.SessionExecuteRaw(context.Background(), "s1", api.ExecuteRequest{Code: "pass"})
	if err != nil {
		t.Fatal(err)
	}
	if string(raw.Body) != string(body) || cap(raw.Body) != len(body) {
		t.Errorf("body %q (capacity %d); want %q in a buffer of its length", raw.Body, cap(raw.Body), body)
	}
	res := raw.Result
	if res.ID != "r1" || res.ExitCode != 3 || res.Stdout != "out" || len(res.Files) != 1 || res.Files[0] != (api.OutputFile{Path: "a.bin", Size: 3}) ||
		len(res.Outputs) != 1 || res.Outputs[0].Data["image/png"] != "iVBO" {
		t.Errorf("result %+v", res)
	}
	if _, err := c.ExecuteRaw(context.Background(), api.ExecuteRequest{Code: "pass"}); err == nil {
		t.Error("a 404 was taken for a result")
	}
}

// TestInProcessCutBodies: in process, a body that ends short of its Content-Length (its runner
// went in the middle) and a response the handler aborted are errors, as a closed connection is
// on the socket, not results cut short.
func TestInProcessCutBodies(t *testing.T) {
	body := []byte(`{"id":"r1","exit_code":0,"files":[],"outputs":[]}` + "\n")
	for name, h := range map[string]http.HandlerFunc{
		"short": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", strconv.Itoa(len(body)+10))
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(body)
		},
		"aborted": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(body[:10])
			panic(http.ErrAbortHandler)
		},
	} {
		if raw, err := NewInProcess(h).ExecuteRaw(context.Background(), api.ExecuteRequest{Code: "pass"}); err == nil {
			t.Errorf("%s: taken for a result: %+v", name, raw.Result)
		}
	}
}
