package runner

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/pyexec/pyexec/internal/executor"
	"github.com/pyexec/pyexec/pkg/api"
)

const dir = "x-0123456789abcdef01234567"

var limits = Limits{TimeoutMS: 1000, MaxOutputBytes: 1 << 20, MaxFileBytes: 1 << 20, MaxFilesOut: 8, MaxFilesOutBytes: 1 << 20}

// Each end refuses a message that is not well formed, whatever the other sent.
func TestRequestValidate(t *testing.T) {
	ok := &Execute{ID: "a", Dir: dir, Code: "print(1)", Limits: limits}
	cases := []struct {
		name string
		req  Request
		ok   bool
	}{
		{"an execution", Request{Execute: ok}, true},
		{"nothing", Request{}, false},
		{"two at once", Request{Execute: ok, Stats: &StatsRequest{}}, false},
		{"a directory outside the work root", Request{Execute: &Execute{Dir: "../etc", Code: "1", Limits: limits}}, false},
		{"a directory not made by MakeDir", Request{Execute: &Execute{Dir: "x-1", Code: "1", Limits: limits}}, false},
		{"no directory", Request{Execute: &Execute{Code: "1", Limits: limits}}, false},
		{"no code", Request{Execute: &Execute{Dir: dir, Limits: limits}}, false},
		{"no time limit", Request{Execute: &Execute{Dir: dir, Code: "1", Limits: Limits{MaxOutputBytes: 1}}}, false},
		{"a negative limit", Request{Execute: &Execute{Dir: dir, Code: "1", Limits: Limits{TimeoutMS: 1, MaxOutputBytes: 1, MaxProcesses: -1}}}, false},
		{"an absolute file", Request{Execute: &Execute{Dir: dir, Code: "1", Limits: limits, Files: []File{{Path: "/etc/passwd"}}}}, false},
		{"a file above", Request{Execute: &Execute{Dir: dir, Code: "1", Limits: limits, Files: []File{{Path: "a/../../b"}}}}, false},
		{"a session's call", Request{SessionExecute: &SessionExecute{Session: "s-1", Execute: Execute{Code: "1", Limits: limits}}}, true},
		{"a session's call with a directory", Request{SessionExecute: &SessionExecute{Session: "s-1", Execute: *ok}}, false},
		{"a session's call without a session", Request{SessionExecute: &SessionExecute{Execute: Execute{Code: "1", Limits: limits}}}, false},
		{"a session", Request{CreateSession: &CreateSession{ID: "s-1", Dir: dir, Limits: limits}}, true},
		{"a session elsewhere", Request{CreateSession: &CreateSession{ID: "s-1", Dir: "..", Limits: limits}}, false},
		{"a file of a session", Request{SessionFile: &SessionFile{Session: "s-1", Path: "a/b.txt", Max: 10}}, true},
		{"a file above a session", Request{SessionFile: &SessionFile{Session: "s-1", Path: "../b.txt", Max: 10}}, false},
		{"a file of no size", Request{SessionFile: &SessionFile{Session: "s-1", Path: "b.txt"}}, false},
		{"closing no session", Request{CloseSession: &SessionRef{}}, false},
		{"cleaning a directory", Request{Cleanup: &Cleanup{Dirs: []string{dir}}}, true},
		{"cleaning the zygote's", Request{Cleanup: &Cleanup{Dirs: []string{".zygote"}}}, false},
		{"a cancel", Request{Cancel: &Cancel{}}, true},
	}
	for _, c := range cases {
		err := c.req.Validate()
		if (err == nil) != c.ok {
			t.Errorf("%s: %v", c.name, err)
		}
		if err != nil && !errors.Is(err, errBadRequest) {
			t.Errorf("%s: %v is not a bad request", c.name, err)
		}
	}
}

func TestReplyValidate(t *testing.T) {
	cases := []struct {
		name string
		rep  Reply
		ok   bool
	}{
		{"a result", Reply{Result: &api.ExecuteResult{Files: []api.OutputFile{{Path: "a/b.png"}}}}, true},
		{"nothing", Reply{}, false},
		{"two at once", Reply{Done: &Done{}, Stats: &Stats{}}, false},
		{"a file above the work dir", Reply{Result: &api.ExecuteResult{Files: []api.OutputFile{{Path: "../../etc/passwd"}}}}, false},
		{"output on stdin", Reply{Output: &Output{Stream: "stdin"}}, false},
		{"output on stderr", Reply{Output: &Output{Stream: api.EventStderr, Data: []byte("x")}}, true},
		{"a session elsewhere", Reply{Session: &SessionInfo{Dir: "../x"}}, false},
		{"an error without a code", Reply{Error: &Error{Message: "?"}}, false},
	}
	for _, c := range cases {
		if err := c.rep.Validate(); (err == nil) != c.ok {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

// The errors callers tell apart cross the wire as themselves.
func TestErrorsCrossTheWire(t *testing.T) {
	for _, want := range []error{executor.ErrSessionBusy, executor.ErrSessionEnded, executor.ErrFileNotFound, executor.ErrFileTooLarge} {
		if got := errorOf(want).Err(); !errors.Is(got, want) {
			t.Errorf("%v came back as %v", want, got)
		}
	}
	fe := &executor.FileError{Path: "a/b", Err: errors.New("not a directory")}
	var got *executor.FileError
	if err := errorOf(fe).Err(); !errors.As(err, &got) || got.Path != "a/b" || got.Err.Error() != "not a directory" {
		t.Errorf("a file error came back as %v", err)
	}
	if err := errorOf(errors.New("boom")).Err(); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("an internal error came back as %v", err)
	}
}

func TestFrames(t *testing.T) {
	var b bytes.Buffer
	in := Request{Execute: &Execute{ID: "a", Dir: dir, Code: "print('é')", Stdin: []byte{0, 1, 2}, Limits: limits}}
	if err := writeFrame(&b, &in); err != nil {
		t.Fatal(err)
	}
	var out Request
	if err := readFrame(bytes.NewReader(b.Bytes()), 1<<20, &out); err != nil || out.Execute.Code != in.Execute.Code || !bytes.Equal(out.Execute.Stdin, in.Execute.Stdin) {
		t.Fatalf("%+v %v", out.Execute, err)
	}
	// Over the limit: refused from the length alone, before anything is read or allocated.
	if err := readFrame(bytes.NewReader(b.Bytes()), 10, &out); !errors.Is(err, errFrameTooLarge) {
		t.Errorf("a frame over the limit: %v", err)
	}
	if err := readFrame(bytes.NewReader([]byte{0xff, 0xff, 0xff, 0xff}), 1<<20, &out); !errors.Is(err, errFrameTooLarge) {
		t.Errorf("a 4 GiB length: %v", err)
	}
	if err := readFrame(bytes.NewReader(b.Bytes()[:b.Len()-1]), 1<<20, &out); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("a cut frame: %v", err)
	}
}

// TestPassResult: a result's frame, as writeFrame writes it, is passed on as it is: its
// Encoded is the API's body byte for byte (what the server would write encoding the result
// itself), with the figures decoded beside and the files' paths and sizes, not their contents.
// Frames that are not a result of the API's shape are decoded whole instead.
func TestPassResult(t *testing.T) {
	res := api.ExecuteResult{ID: "r1", ExitCode: 3, Stdout: "a <b> & \"c\"\n", Stderr: "é\x00", Reason: api.ReasonExit, DurationMS: 1.5,
		Files:   []api.OutputFile{{Path: "d/f.png", Size: 3, ContentBase64: "AAAA"}},
		Outputs: []api.Output{{Type: "display_data", Data: map[string]string{"text/plain": "x", "image/png": "iVBO"}}}, OutputsTruncated: true}
	frame := func(rep *Reply) []byte {
		var b bytes.Buffer
		if err := writeFrame(&b, rep); err != nil {
			t.Fatal(err)
		}
		got, err := readFrameBytes(&b, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	got, ok := passResult(frame(&Reply{Result: &res}))
	if !ok {
		t.Fatal("a result's frame was not passed on")
	}
	var want bytes.Buffer
	enc := json.NewEncoder(&want)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(res); err != nil {
		t.Fatal(err)
	}
	encoded := readEncoded(t, got)
	if !bytes.Equal(encoded, want.Bytes()) || got.Encoded.Size() != int64(len(encoded)) {
		t.Fatalf("Encoded (%d bytes):\n%s\nwant the API's body:\n%s", got.Encoded.Size(), encoded, want.Bytes())
	}
	if got.ID != "r1" || got.ExitCode != 3 || got.Stdout != res.Stdout || got.Stderr != res.Stderr || !got.OutputsTruncated ||
		len(got.Files) != 1 || got.Files[0].Path != "d/f.png" || got.Files[0].Size != 3 || got.Files[0].ContentBase64 != "" || len(got.Outputs) != 1 {
		t.Fatalf("the figures decoded beside: %+v", got)
	}
	if err := (&Reply{Result: got}).Validate(); err != nil {
		t.Fatalf("Validate of a passed result: %v", err)
	}

	for name, b := range map[string][]byte{
		"no id":             frame(&Reply{Result: &api.ExecuteResult{Files: []api.OutputFile{}}}),
		"files null":        frame(&Reply{Result: &api.ExecuteResult{ID: "r1"}}),
		"another reply":     frame(&Reply{Done: &Done{}}),
		"more than a value": []byte(`{"result":{"id":"r1","files":[]},"done":{}}` + "\n"),
		"not a frame":       []byte(`{"result":{"id":"r1","files":[]}`),
	} {
		if r, ok := passResult(b); ok {
			t.Errorf("%s: passed on as %q", name, readEncoded(t, r))
		}
	}
	// A frame with two replies in it is refused, as before, once decoded whole.
	if rep, err := decodeReply([]byte(`{"result":{"id":"r1","files":[]},"done":{}}`+"\n"), true); err == nil && rep.Validate() == nil {
		t.Error("a frame with a result and a done was accepted")
	}
}

// readEncoded reads a result's Encoded whole, and closes it.
func readEncoded(t *testing.T, res *api.ExecuteResult) []byte {
	t.Helper()
	defer res.Encoded.Close()
	b, err := io.ReadAll(res.Encoded)
	if err != nil {
		t.Fatalf("reading a result's body: %v", err)
	}
	return b
}
