package server

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pyexec/pyexec/internal/executor"
	"github.com/pyexec/pyexec/pkg/api"
)

func TestBadRequests(t *testing.T) {
	var calls atomic.Int32
	exec := fakeExec(func(context.Context, executor.Request, executor.Output) (api.ExecuteResult, error) {
		calls.Add(1)
		return exitResult(), nil
	})
	h := newHarness(t, testConfig(), exec, true)
	const jsonCT = "application/json"
	tests := []struct {
		name        string
		contentType string
		query       string
		body        string
		want        string // part of the message, starting with the field it names
	}{
		{"no content type", "", "", `{"code":"1"}`, `Content-Type: "" is not supported`},
		{"text content type", "text/plain", "", `{"code":"1"}`, `Content-Type: "text/plain" is not supported`},
		{"bad stream", jsonCT, "?stream=maybe", `{"code":"1"}`, `stream: "maybe" is not a boolean`},
		{"empty body", jsonCT, "", ``, "request body: empty"},
		{"syntax error", jsonCT, "", `{"code": "1",}`, "request body: malformed JSON at byte offset 14"},
		{"truncated", jsonCT, "", `{"code": "1"`, "request body: malformed JSON: the body ends"},
		{"array body", jsonCT, "", `[]`, "request body: got JSON array, want an object"},
		{"code type", jsonCT, "", `{"code": 5}`, "code: got JSON number, want a string"},
		{"output budget too small", jsonCT, "", `{"code": "1", "output_budget_chars": 199}`, "output_budget_chars: 199; want at least 200"},
		{"timeout type", jsonCT, "", `{"code":"1","timeout_seconds":"5"}`, "timeout_seconds: got JSON string, want a number"},
		{"memory float", jsonCT, "", `{"code":"1","memory_limit_mb":1.5}`, "memory_limit_mb: got JSON number 1.5, want an integer"},
		{"env value type", jsonCT, "", `{"code":"1","env":{"A":1}}`, "env: got JSON number, want a string"},
		{"file path type", jsonCT, "", `{"code":"1","files":[{"path":1}]}`, "files.path: got JSON number, want a string"},
		{"unknown field", jsonCT, "", `{"code":"1","bogus":1}`, `request body: unknown field "bogus"`},
		{"unknown file field", jsonCT, "", `{"code":"1","files":[{"path":"a","content_base64":"","mode":1}]}`, `unknown field "mode"`},
		{"trailing object", jsonCT, "", `{"code":"1"}{"code":"2"}`, "request body: unexpected data after the JSON object"},
		{"trailing garbage", jsonCT, "", `{"code":"1"} xx`, "request body: unexpected data after the JSON object"},
		{"missing code", jsonCT, "", `{}`, "code: required and must not be empty"},
		{"null body", jsonCT, "", `null`, "code: required and must not be empty"},
		{"empty code", jsonCT, "", `{"code":""}`, "code: required and must not be empty"},
		{"timeout zero", jsonCT, "", `{"code":"1","timeout_seconds":0}`, "timeout_seconds: must be > 0, got 0"},
		{"timeout negative", jsonCT, "", `{"code":"1","timeout_seconds":-1}`, "timeout_seconds: must be > 0, got -1"},
		{"timeout tiny", jsonCT, "", `{"code":"1","timeout_seconds":0.0001}`, "timeout_seconds: must be at least 0.001"},
		{"timeout over max", jsonCT, "", `{"code":"1","timeout_seconds":61}`, "timeout_seconds: 61 is over the server's maximum of 60"},
		{"memory zero", jsonCT, "", `{"code":"1","memory_limit_mb":0}`, "memory_limit_mb: must be > 0, got 0"},
		{"memory small", jsonCT, "", `{"code":"1","memory_limit_mb":16}`, "memory_limit_mb: must be at least 32, got 16"},
		{"memory over max", jsonCT, "", `{"code":"1","memory_limit_mb":2048}`, "memory_limit_mb: 2048 is over the server's maximum of 1024"},
		{"env empty name", jsonCT, "", `{"code":"1","env":{"":"x"}}`, "env: a variable name is empty"},
		{"env name with =", jsonCT, "", `{"code":"1","env":{"A=B":"x"}}`, `env["A=B"]: name contains "="`},
		{"env name with NUL", jsonCT, "", `{"code":"1","env":{"A\u0000":"x"}}`, `env["A\x00"]: name contains "=" or a NUL byte`},
		{"env value with NUL", jsonCT, "", `{"code":"1","env":{"A":"x\u0000"}}`, `env["A"]: value contains a NUL byte`},
		{"file path empty", jsonCT, "", `{"code":"1","files":[{"path":"","content_base64":""}]}`, "files[0].path: required"},
		{"file path absolute", jsonCT, "", `{"code":"1","files":[{"path":"/etc/passwd","content_base64":""}]}`, `files[0].path: "/etc/passwd" is absolute`},
		{"file path dotdot", jsonCT, "", `{"code":"1","files":[{"path":"../x","content_base64":""}]}`, `files[0].path: "../x" has a ".." segment`},
		{"file path inner dotdot", jsonCT, "", `{"code":"1","files":[{"path":"a/../b","content_base64":""}]}`, `files[0].path: "a/../b" has a ".." segment`},
		{"file path NUL", jsonCT, "", `{"code":"1","files":[{"path":"a\u0000b","content_base64":""}]}`, `files[0].path: "a\x00b" contains a NUL byte`},
		{"file path dot", jsonCT, "", `{"code":"1","files":[{"path":"./","content_base64":""}]}`, `files[0].path: "./" names the working directory`},
		{"file path duplicate", jsonCT, "", `{"code":"1","files":[{"path":"a.txt","content_base64":""},{"path":"./a.txt","content_base64":""}]}`, `files[1].path: "./a.txt" is the same file as files[0].path "a.txt"`},
		{"file inside file", jsonCT, "", `{"code":"1","files":[{"path":"a","content_base64":""},{"path":"a/b","content_base64":""}]}`, `files[1].path: "a/b" is inside files[0].path "a"`},
		{"file base64", jsonCT, "", `{"code":"1","files":[{"path":"a","content_base64":"aGk"},{"path":"b","content_base64":"!!!!"}]}`, "files[0].content_base64: not valid base64"},
		{"second file base64", jsonCT, "", `{"code":"1","files":[{"path":"a","content_base64":"aGk="},{"path":"b","content_base64":"!!!!"}]}`, "files[1].content_base64: not valid base64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := h.do(context.Background(), http.MethodPost, "/v1/execute"+tt.query, tt.contentType, tt.body)
			wantError(t, resp, body, http.StatusBadRequest, api.ErrCodeBadRequest, tt.want)
		})
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("the executor ran %d times for bad requests", n)
	}
	if got, want := metricValue(t, h.reg, "pyexec_requests_rejected_total", "code", api.ErrCodeBadRequest), float64(len(tests)); got != want {
		t.Errorf("rejected{code=bad_request} = %v, want %v", got, want)
	}
}

func TestBodyTooLarge(t *testing.T) {
	h := newHarness(t, testConfig(), okExec, true)
	code := strings.Repeat("x", int(testLimits().MaxRequestBytes))
	resp, body := h.execute(`{"code":"` + code + `"}`)
	wantError(t, resp, body, http.StatusRequestEntityTooLarge, api.ErrCodeTooLarge, "max_request_bytes (65536 bytes)")

	// Trailing data past the limit is too large as well.
	resp, body = h.execute(`{"code":"1"}` + strings.Repeat(" ", int(testLimits().MaxRequestBytes)))
	wantError(t, resp, body, http.StatusRequestEntityTooLarge, api.ErrCodeTooLarge, "max_request_bytes")
}

func TestContentTypeWithCharset(t *testing.T) {
	h := newHarness(t, testConfig(), okExec, true)
	resp, body := h.do(context.Background(), http.MethodPost, "/v1/execute", "application/json; charset=utf-8", `{"code":"print(1)"}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
}

func TestRequestMapping(t *testing.T) {
	var mu sync.Mutex
	var got []executor.Request
	exec := fakeExec(func(_ context.Context, req executor.Request, _ executor.Output) (api.ExecuteResult, error) {
		mu.Lock()
		got = append(got, req)
		mu.Unlock()
		return exitResult(), nil
	})
	h := newHarness(t, testConfig(), exec, true)
	defaults := executor.Limits{
		Timeout: 10 * time.Second, MemoryLimitMB: 256,
		MaxOutputBytes: 1 << 20, MaxProcesses: 32, MaxFileBytes: 1 << 20, MaxFilesOut: 10, MaxFilesOutBytes: 4 << 20,
	}
	with := func(timeout time.Duration, memMB int) executor.Limits {
		l := defaults
		l.Timeout, l.MemoryLimitMB = timeout, memMB
		return l
	}
	tests := []struct {
		name string
		body string
		want executor.Request // ID is filled in from the response
	}{
		{"defaults", `{"code":"print(1)"}`,
			executor.Request{Code: "print(1)", Limits: defaults}},
		{"lowered", `{"code":"1","timeout_seconds":2.5,"memory_limit_mb":128}`,
			executor.Request{Code: "1", Limits: with(2500*time.Millisecond, 128)}},
		{"raised to the maxima", `{"code":"1","timeout_seconds":60,"memory_limit_mb":1024}`,
			executor.Request{Code: "1", Limits: with(60*time.Second, 1024)}},
		{"smallest", `{"code":"1","timeout_seconds":0.001,"memory_limit_mb":32}`,
			executor.Request{Code: "1", Limits: with(time.Millisecond, 32)}},
		{"output budget", `{"code":"1","output_budget_chars":200}`,
			executor.Request{Code: "1", Limits: defaults, OutputBudgetChars: 200}},
		{"stdin env files", `{"code":"1","stdin":"in","env":{"A":"b","EMPTY":""},"files":[
			{"path":"./dir//a.txt","content_base64":"aGk="},{"path":"b","content_base64":""}]}`,
			executor.Request{Code: "1", Stdin: []byte("in"), Env: map[string]string{"A": "b", "EMPTY": ""},
				Files:  []executor.File{{Path: "dir/a.txt", Data: []byte("hi")}, {Path: "b", Data: []byte{}}},
				Limits: defaults}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			got = nil
			mu.Unlock()
			resp, body := h.execute(tt.body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(got) != 1 {
				t.Fatalf("executor called %d times, want 1", len(got))
			}
			want := tt.want
			want.ID = resp.Header.Get(headerRequestID)
			want.MaxTimeout = time.Duration(testLimits().MaxTimeoutSeconds * float64(time.Second)) // for the hints
			// The server's stages come with the request; their figures vary.
			if tm := got[0].Timings; len(tm) != 2 || tm[api.StageParse] < 0 || tm[api.StageQueue] < 0 {
				t.Errorf("the request's timings %v; want parse and queue", tm)
			}
			got[0].Timings = nil
			if !reflect.DeepEqual(got[0], want) {
				t.Errorf("executor request\n got %+v\nwant %+v", got[0], want)
			}
		})
	}
}

func TestPlainResult(t *testing.T) {
	exec := fakeExec(func(context.Context, executor.Request, executor.Output) (api.ExecuteResult, error) {
		return api.ExecuteResult{ID: "executor-id", ExitCode: 3, Stdout: "a<b\n", Stderr: "boom\n", Reason: api.ReasonExit, DurationMS: 12.5}, nil
	})
	h := newHarness(t, testConfig(), exec, true)
	resp, body := h.execute(`{"code":"raise SystemExit(3)"}`)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, content type %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	var res api.ExecuteResult
	if err := json.Unmarshal(body, &res); err != nil {
		t.Fatal(err)
	}
	want := api.ExecuteResult{ID: resp.Header.Get(headerRequestID), ExitCode: 3, Stdout: "a<b\n", Stderr: "boom\n",
		Reason: api.ReasonExit, DurationMS: 12.5, Files: []api.OutputFile{}}
	if !reflect.DeepEqual(res, want) {
		t.Errorf("result\n got %+v\nwant %+v", res, want)
	}
	if !strings.Contains(string(body), `"files":[]`) {
		t.Errorf("files should be an empty list, not null: %s", body)
	}
}

func TestDecodeFilesTotal(t *testing.T) {
	files := []api.InputFile{{Path: "a", ContentBase64: "aGk="}, {Path: "b", ContentBase64: "aGk="}} // 2 + 2 bytes
	if _, rerr := decodeFiles(files, 4); rerr != nil {
		t.Fatalf("4 bytes within a limit of 4: %s", rerr.msg)
	}
	_, rerr := decodeFiles(files, 3)
	if rerr == nil || rerr.status != http.StatusBadRequest || !strings.HasPrefix(rerr.msg, "files: decoded contents exceed max_request_bytes (3 bytes) at files[1]") {
		t.Fatalf("got %+v, want a 400 naming files", rerr)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := testConfig().Validate(); err != nil {
		t.Fatalf("test config: %v", err)
	}
	// What pyexec serve accepts: 0 is no memory limit, no maximum, no process limit.
	for name, edit := range map[string]func(*api.Limits){
		"no memory limit":  func(l *api.Limits) { l.MemoryLimitMB, l.MaxMemoryLimitMB = 0, 0 },
		"no maximum":       func(l *api.Limits) { l.MaxMemoryLimitMB = 0 },
		"no process limit": func(l *api.Limits) { l.MaxProcesses = 0 },
	} {
		cfg := testConfig()
		edit(&cfg.Limits)
		if err := cfg.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	cfg := testConfig()
	cfg.Limits.MaxTimeoutSeconds = 5
	cfg.Limits.MemoryLimitMB = 8
	cfg.Limits.MaxConcurrent = 0
	cfg.Limits.MaxFilesOutBytes = 0
	cfg.Limits.MaxConnectionsPerUID = cfg.Limits.MaxConnections + 1
	cfg.AllowUIDs = []int{-2}
	err := cfg.Validate()
	if err == nil {
		t.Fatal("no error for a bad config")
	}
	// The errors are those of pyexec serve's settings, which name the flags.
	for _, want := range []string{"--max-timeout 5s", "--memory-limit-mb 8", "--max-concurrent must be positive", "--allow-uids: -2",
		"--max-files-out-bytes must be positive", "--max-connections-per-uid 65"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
}
