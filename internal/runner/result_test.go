package runner

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/pyexec/pyexec/internal/executor"
	"github.com/pyexec/pyexec/pkg/api"
)

// TestResultBody: a result's body written field by field, its files read from disk as they
// go, is byte for byte the API's encoding of the whole result, of the size it said first —
// with contents in the result, or open, or both; with no files; with strings that look like
// its fields. A file that shrank after it was opened fails the body.
func TestResultBody(t *testing.T) {
	work := t.TempDir()
	contents := map[string][]byte{"a.bin": bytes.Repeat([]byte{0, 1, 2, 250}, 1000), "d/b.txt": []byte("<b> & \"c\""), "e": {}}
	for p, data := range contents {
		if err := os.MkdirAll(filepath.Join(work, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(work, p), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The executor opens them, as the runner asks it to.
	open := &executor.OpenFiles{}
	files := collectOpen(t, work, open)
	defer open.Close()
	whole := func(res api.ExecuteResult) []byte {
		for i, f := range res.Files {
			res.Files[i].ContentBase64 = base64.StdEncoding.EncodeToString(contents[f.Path])
		}
		b, err := encodeAPI(res, 0)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	base := api.ExecuteResult{ID: "r1", ExitCode: 3, Stdout: `"files":null, "files":[] <x>` + "\n\x00é", Reason: api.ReasonExit, DurationMS: 1.5,
		Outputs: []api.Output{{Type: "display_data", Data: map[string]string{`"files":null`: "x", "image/png": "iVBO"}}}, OutputsTruncated: true}
	eager := make([]api.OutputFile, len(files))
	for i, f := range files {
		eager[i] = f
		eager[i].ContentBase64 = base64.StdEncoding.EncodeToString(contents[f.Path])
	}
	mixed := append([]api.OutputFile{}, files...)
	mixed[1] = eager[1]
	for name, tc := range map[string]struct {
		files []api.OutputFile
		open  *executor.OpenFiles
	}{
		"open":     {files, open},
		"in it":    {eager, nil},
		"mixed":    {mixed, open},
		"no files": {[]api.OutputFile{}, nil},
	} {
		res := base
		res.Files = append([]api.OutputFile{}, tc.files...)
		body, err := newResultBody(&res, tc.open)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var got bytes.Buffer
		n, err := body.WriteTo(&got)
		want := whole(res)
		if err != nil || n != body.size || !bytes.Equal(got.Bytes(), want) {
			t.Fatalf("%s: %d bytes (%d said, %v):\n%s\nwant the API's encoding:\n%s", name, n, body.size, err, got.Bytes(), want)
		}
		var back api.ExecuteResult
		if err := json.Unmarshal(got.Bytes(), &back); err != nil || back.Stdout != base.Stdout || len(back.Files) != len(tc.files) {
			t.Fatalf("%s: decoded back: %+v %v", name, back, err)
		}
	}

	// A file that shrank since the executor opened it.
	if err := os.Truncate(filepath.Join(work, "a.bin"), 10); err != nil {
		t.Fatal(err)
	}
	res := base
	res.Files = files
	body, err := newResultBody(&res, open)
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if _, err := body.WriteTo(&got); err == nil {
		t.Fatalf("a body whose file shrank was written whole: %d bytes, %d said", got.Len(), body.size)
	}
}

// collectOpen opens the files under work, as the executor does for a result, sorted by path.
func collectOpen(t *testing.T, work string, open *executor.OpenFiles) []api.OutputFile {
	t.Helper()
	var files []api.OutputFile
	err := filepath.WalkDir(work, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		st, err := f.Stat()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(work, p)
		open.Add(rel, f)
		files = append(files, api.OutputFile{Path: rel, Size: st.Size()})
		return nil
	})
	if err != nil || len(files) != 3 {
		t.Fatalf("files %+v: %v", files, err)
	}
	return files
}

// TestSmallResultOfAShrunkFile: a small result's file that shrank after the executor opened it
// (a thread of a session's code truncated it) comes back shorter, in one frame, as a file read
// at the end of the call would: the reply does not fail, the channel stays in step.
func TestSmallResultOfAShrunkFile(t *testing.T) {
	work := t.TempDir()
	if err := os.WriteFile(filepath.Join(work, "f.txt"), []byte("0123456789"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(work, "f.txt"))
	if err != nil {
		t.Fatal(err)
	}
	open := &executor.OpenFiles{}
	open.Add("f.txt", f)
	if err := os.Truncate(filepath.Join(work, "f.txt"), 4); err != nil {
		t.Fatal(err)
	}
	a, b := socketPair(t)
	res := &api.ExecuteResult{ID: "r", Files: []api.OutputFile{{Path: "f.txt", Size: 10}}, Outputs: []api.Output{}}
	sent := make(chan error, 1)
	go func() {
		err := (&channel{conn: a}).sendReply(&Reply{Result: res, open: open}, nil)
		if err != nil {
			a.Close() // as the runner closes a channel it cannot go on with
		}
		sent <- err
	}()
	frame, err := readFrameBytes(b, 1<<20)
	if err := <-sent; err != nil {
		t.Fatalf("sendReply: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	got, ok := passResult(frame)
	if !ok {
		t.Fatalf("not a result's frame: %s", frame)
	}
	var whole api.ExecuteResult
	if err := json.Unmarshal(readEncoded(t, got), &whole); err != nil {
		t.Fatal(err)
	}
	data, _ := base64.StdEncoding.DecodeString(whole.Files[0].ContentBase64)
	if whole.Files[0].Size != 4 || string(data) != "0123" || got.Files[0].Size != 4 {
		t.Fatalf("the shrunk file came back as %+v (%q)", whole.Files[0], data)
	}
}
