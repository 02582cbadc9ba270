package runner

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/pyexec/pyexec/internal/executor"
	"github.com/pyexec/pyexec/pkg/api"
)

// maxInlineResult is the largest result (its JSON body) sent in a frame; a larger one streams.
const maxInlineResult = 64 << 10

// sendReply sends rep, and runs finish (if any) once its frame is sent. A result goes as the
// API's body of it: in a frame when it is small (see passResult), else as a ResultStream
// followed by the body, written as the server takes it, its files read from disk as they go
// (see executor.OpenFiles); finish runs meanwhile. Either way the runner holds no more of a
// result than its figures, outputs and a buffer.
func (c *channel) sendReply(rep *Reply, finish func()) error {
	if finish == nil {
		finish = func() {}
	}
	if rep.FileStream != nil {
		err := c.sendFile(rep)
		finish()
		return err
	}
	if rep.Result == nil {
		err := c.send(rep)
		finish()
		return err
	}
	open := rep.open
	defer open.Close()
	body, err := newResultBody(rep.Result, open)
	if err == nil && body.size <= maxInlineResult && len(rep.Result.Files) > 0 {
		// Small: its files are read now, as they are — one that a thread of a session's code
		// shrank since it was opened comes back shorter, as a file read at the end of the
		// call would — and the body is made of what was read.
		readOpenFiles(rep.Result, open)
		body, err = newResultBody(rep.Result, nil)
	}
	if err != nil {
		finish()
		return err
	}
	rep.Result = nil // from here the body holds what is left of it
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if body.size <= maxInlineResult {
		// {"result":R}\n, R\n the body.
		var buf bytes.Buffer
		buf.Grow(int(4 + int64(len(`{"result":`)) + body.size + 1))
		buf.Write(make([]byte, 4)) // the frame's length, once known
		buf.WriteString(`{"result":`)
		if _, err := body.WriteTo(&buf); err != nil {
			finish()
			return err
		}
		b := buf.Bytes()
		b[len(b)-1] = '}'
		b = append(b, '\n')
		binary.BigEndian.PutUint32(b, uint32(len(b)-4))
		_, err := c.conn.Write(b)
		finish()
		return err
	}
	if err := writeFrame(c.conn, &Reply{ResultStream: &body.stream}); err != nil {
		finish()
		return err
	}
	finished := make(chan struct{})
	go func() { // the files are open: emptying the directory does not take them
		defer close(finished)
		finish()
	}()
	w := bufio.NewWriterSize(c.conn, 64<<10)
	_, err = body.WriteTo(w) // as fast as the server takes it
	if err == nil {
		err = w.Flush()
	}
	<-finished
	return err
}

// readOpenFiles puts the contents of res's open files into res, each its first Size bytes or
// fewer when it shrank.
func readOpenFiles(res *api.ExecuteResult, open *executor.OpenFiles) {
	for i, f := range res.Files {
		file := open.File(f.Path)
		if file == nil {
			continue
		}
		data := make([]byte, f.Size)
		n, _ := io.ReadFull(io.NewSectionReader(file, 0, f.Size), data)
		res.Files[i].Size = int64(n)
		res.Files[i].ContentBase64 = base64.StdEncoding.EncodeToString(data[:n])
	}
}

// sendFile sends a FileStream and the bytes of its open file, as the server takes them. A file
// that shrank since it was opened fails it.
func (c *channel) sendFile(rep *Reply) error {
	defer rep.file.Close()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := writeFrame(c.conn, rep); err != nil {
		return err
	}
	w := bufio.NewWriterSize(c.conn, 64<<10)
	n, err := io.Copy(w, rep.file)
	if err == nil && n < rep.FileStream.Bytes {
		err = fmt.Errorf("the file shrank from %d bytes to %d while it was sent", rep.FileStream.Bytes, n)
	}
	if err == nil {
		err = w.Flush()
	}
	return err
}

// resultBody is a result as the API's JSON body, written field by field: the result's JSON
// around its files (before and after), and each file, its content from the open file where it
// has one. Its size is known before it is written. It holds the result's JSON (without the
// files) and its figures, not the result.
type resultBody struct {
	before, after []byte
	files         []api.OutputFile
	open          *executor.OpenFiles
	size          int64
	stream        ResultStream // the body's size and the result's figures
}

// filesNull is the files field of a result without files, in its JSON: the one place where
// the encoding has it, as a string's quotes are escaped.
var filesNull = []byte(`"files":null`)

func newResultBody(res *api.ExecuteResult, open *executor.OpenFiles) (*resultBody, error) {
	rest := *res
	rest.Files = nil
	enc, err := encodeAPI(rest, executor.ResultSize(rest))
	if err != nil {
		return nil, err
	}
	i := bytes.Index(enc, filesNull)
	if i < 0 {
		return nil, errors.New("a result's JSON has no files")
	}
	b := &resultBody{before: enc[:i], after: enc[i+len(filesNull):], files: res.Files, open: open}
	b.size = int64(len(b.before) + len(`"files":[]`) + len(b.after))
	for i, f := range res.Files {
		if i > 0 {
			b.size++ // ,
		}
		head, err := fileHead(f)
		if err != nil {
			return nil, err
		}
		b.size += int64(len(head)+len(`"}`)) + b.contentSize(f)
	}
	b.stream = ResultStream{Bytes: b.size, Head: headOf(res), StdoutBytes: len(res.Stdout), StderrBytes: len(res.Stderr)}
	return b, nil
}

// contentSize is the length of a file's content in base64.
func (b *resultBody) contentSize(f api.OutputFile) int64 {
	if b.open.File(f.Path) != nil {
		return int64(base64.StdEncoding.EncodedLen(int(f.Size)))
	}
	return int64(len(f.ContentBase64))
}

// fileHead is a file's JSON up to its content: {"path":P,"size":N,"content_base64":"
func fileHead(f api.OutputFile) ([]byte, error) {
	path, err := encodeAPI(f.Path, len(f.Path)+3)
	if err != nil {
		return nil, err
	}
	head := append([]byte(`{"path":`), path[:len(path)-1]...) // without the encoder's newline
	head = append(head, `,"size":`...)
	head = strconv.AppendInt(head, f.Size, 10)
	return append(head, `,"content_base64":"`...), nil
}

// WriteTo writes the body. A file that no longer has its size fails it: the body would not
// be what its size said.
func (b *resultBody) WriteTo(w io.Writer) (int64, error) {
	cw := &countingWriter{w: w}
	write := func(p []byte) error {
		_, err := cw.Write(p)
		return err
	}
	if err := write(b.before); err != nil {
		return cw.n, err
	}
	if err := write([]byte(`"files":[`)); err != nil {
		return cw.n, err
	}
	for i, f := range b.files {
		if i > 0 {
			if err := write([]byte(",")); err != nil {
				return cw.n, err
			}
		}
		head, err := fileHead(f)
		if err == nil {
			err = write(head)
		}
		if err == nil {
			err = b.writeContent(cw, f)
		}
		if err == nil {
			err = write([]byte(`"}`))
		}
		if err != nil {
			return cw.n, err
		}
	}
	if err := write([]byte("]")); err != nil {
		return cw.n, err
	}
	err := write(b.after)
	if err == nil && cw.n != b.size {
		err = fmt.Errorf("a result's body of %d bytes, %d said", cw.n, b.size)
	}
	return cw.n, err
}

// writeContent writes a file's content in base64: from its open file, or from the result.
func (b *resultBody) writeContent(w io.Writer, f api.OutputFile) error {
	file := b.open.File(f.Path)
	if file == nil {
		_, err := io.WriteString(w, f.ContentBase64)
		return err
	}
	enc := base64.NewEncoder(base64.StdEncoding, w)
	n, err := io.Copy(enc, io.NewSectionReader(file, 0, f.Size))
	if err == nil && n < f.Size {
		err = fmt.Errorf("the file %q shrank from %d bytes to %d after the code ended", f.Path, f.Size, n)
	}
	if err != nil {
		return err
	}
	return enc.Close()
}

// headOf is res without its stdout and stderr, and the contents of its files and outputs.
func headOf(res *api.ExecuteResult) api.ExecuteResult {
	head := *res
	head.Stdout, head.Stderr = "", ""
	head.Files = make([]api.OutputFile, len(res.Files))
	for i, f := range res.Files {
		head.Files[i] = api.OutputFile{Path: f.Path, Size: f.Size}
	}
	head.Outputs = make([]api.Output, len(res.Outputs))
	for i, o := range res.Outputs {
		head.Outputs[i] = api.Output{Type: o.Type}
	}
	return head
}

// encodeAPI encodes v as the API does: no HTML escapes, a newline after; sizeHint is about
// the size it takes (see executor.ResultSize).
func encodeAPI(v any, sizeHint int) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(sizeHint)
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	err := enc.Encode(v)
	return buf.Bytes(), err
}

// countingWriter counts what it writes.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
