package executor

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/pyexec/pyexec/pkg/api"
)

// capture keeps the first max bytes of one stream, hands output to out as it arrives, and
// calls onLimit once when the stream passes max.
type capture struct {
	stream  string
	max     int
	out     Output
	onLimit func()

	mu        sync.Mutex
	buf       bytes.Buffer
	pending   []byte // an incomplete UTF-8 sequence held back from streaming
	truncated bool
}

func (c *capture) Write(p []byte) (int, error) {
	c.mu.Lock()
	n := len(p)
	hit := false
	if room := c.max - c.buf.Len(); len(p) > room {
		p = p[:max(room, 0)]
		hit = !c.truncated
		c.truncated = true
	}
	c.buf.Write(p)
	var send []byte
	if c.out != nil {
		data := append(c.pending, p...)
		cut := utf8Boundary(data)
		if hit {
			cut = len(data) // nothing more will come
		}
		c.pending = append([]byte(nil), data[cut:]...)
		send = data[:cut]
	}
	c.mu.Unlock()
	// Writes of one stream come from one goroutine (exec.Cmd's copier), so they stay in order;
	// a slow client must not hold the lock that the result needs.
	if len(send) > 0 {
		c.out.Write(c.stream, send)
	}
	if hit {
		c.onLimit()
	}
	return n, nil
}

func (c *capture) result() (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.out != nil && len(c.pending) > 0 {
		c.out.Write(c.stream, c.pending)
		c.pending = nil
	}
	return c.buf.String(), c.truncated
}

// utf8Boundary returns the length of b without a trailing incomplete UTF-8 sequence.
func utf8Boundary(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return i
			}
			break
		}
	}
	return len(b)
}

// DefaultMaxFilesOutBytes is the total size of the files returned from one execution when
// the caller sets no cap of its own (see collectFilesUpTo): there is always one.
const DefaultMaxFilesOutBytes = 32 << 20

// collectFilesUpTo returns the regular files under work that the code created or changed,
// sorted by path: at most maxFiles, none larger than maxBytes, and maxTotal bytes in all (a
// file that does not fit in what is left is skipped, a later smaller one may still fit).
// truncated says that a file was left out by one of the caps. maxBytes <= 0 caps nothing;
// maxTotal <= 0 is DefaultMaxFilesOutBytes, so that a caller that forgets it does not lift it.
//
// Files are read and encoded one at a time, each only after its size (fstat) showed that it
// fits, so the memory held is the result (maxTotal bytes, base64-encoded) plus one file. It
// reads through os.Root, so a symlink the code planted cannot lead outside work; an input
// file that the code left as it was is not returned.
//
// With open, the files are not read but kept open in it, and the result names them (path
// and size) without their contents: see OpenFiles.
func collectFilesUpTo(work string, inputs map[string][]byte, maxBytes int64, maxFiles int, maxTotal int64, open *OpenFiles) ([]api.OutputFile, bool) {
	return collectFiles(work, inputs, nil, maxBytes, maxFiles, maxTotal, open)
}

// collectFilesSince is collectFilesUpTo for a session's call: the files it created or changed
// are those before tells (see callStamps).
func collectFilesSince(work string, before *callStamps, maxBytes int64, maxFiles int, maxTotal int64, open *OpenFiles) ([]api.OutputFile, bool) {
	return collectFiles(work, nil, before, maxBytes, maxFiles, maxTotal, open)
}

// OpenFiles receives the files an execution returns, open, when its request asks so
// (Request.OpenFiles): the result then names them, path and size, without their contents,
// and its holder reads them as it sends the result (see File), so that the files of a result
// are never all in memory at once; it closes them then. A file is opened once the code is
// over, where the result's caps allowed it (its size from fstat), and it is never followed
// through a symlink: what is read later is that file, whatever the directory became since.
type OpenFiles struct {
	files map[string]*os.File
}

// File is the open file of a path of the result, nil when there is none (its content is in
// the result). Its content is the first Size bytes.
func (o *OpenFiles) File(path string) *os.File {
	if o == nil {
		return nil
	}
	return o.files[path]
}

// Close closes every file; o may be nil.
func (o *OpenFiles) Close() {
	if o == nil {
		return
	}
	for _, f := range o.files {
		f.Close()
	}
	o.files = nil
}

// Add keeps f, open, as the file of path: the collector of a result's files does, and so may
// whoever hands on a result's files open.
func (o *OpenFiles) Add(path string, f *os.File) {
	if o.files == nil {
		o.files = map[string]*os.File{}
	}
	o.files[path] = f
}

// collectSlack is how many more changed files than it may return collectFiles keeps in view,
// for those it then leaves out (too large, gone meanwhile).
const collectSlack = 64

// collectFiles walks work once, within callWalkTimeout, and keeps in view the first, by path,
// of the files the code created or changed: as many as it may return, one per input file
// (which it may find unchanged) and collectSlack more; it says truncated when there were more,
// or when the walk was cut short. So a directory of many files costs a bounded memory.
func collectFiles(work string, inputs map[string][]byte, before *callStamps, maxBytes int64, maxFiles int, maxTotal int64, open *OpenFiles) ([]api.OutputFile, bool) {
	files := []api.OutputFile{}
	if maxBytes <= 0 {
		maxBytes = 1 << 62
	}
	if maxTotal <= 0 {
		maxTotal = DefaultMaxFilesOutBytes
	}
	root, err := os.OpenRoot(work)
	if err != nil {
		return files, false
	}
	defer root.Close()
	changed := newFirstSorted(maxFiles+len(inputs)+collectSlack, func(p string) string { return p })
	complete := walkFiles(root, time.Now().Add(callWalkTimeout), func(p string, stat func() (*unix.Stat_t, bool)) bool {
		if before.changed(p, stat) {
			changed.add(p)
		}
		return true
	})
	paths, dropped := changed.result()
	truncated := dropped || !complete
	left := maxTotal
	for _, p := range paths {
		limit := min(maxBytes, left)
		in, isInput := inputs[p]
		readLimit := limit
		if isInput {
			// Read an input file even past the caps, to tell whether the code changed it:
			// one left as it was is neither returned nor a reason to say files were left out.
			readLimit = max(limit, int64(len(in)))
		}
		var data []byte
		var f *os.File
		var size int64
		var tooBig bool
		if open != nil {
			f, size, tooBig = openCapped(root, p, readLimit)
			if f != nil && isInput && sameContent(f, size, in) {
				f.Close()
				continue
			}
			if f == nil && !tooBig {
				continue // gone, not a regular file, or unreadable
			}
		} else {
			data, tooBig = readCapped(root, p, readLimit)
			if data == nil && !tooBig {
				continue // gone, not a regular file, or unreadable
			}
			if !tooBig && isInput && bytes.Equal(data, in) {
				continue
			}
			size = int64(len(data))
		}
		if len(files) == maxFiles || tooBig || size > limit {
			if f != nil {
				f.Close()
			}
			truncated = true
			if len(files) == maxFiles {
				break
			}
			continue
		}
		file := api.OutputFile{Path: p, Size: size}
		if f != nil {
			open.Add(p, f)
		} else {
			file.ContentBase64 = encodeBase64(data)
		}
		files = append(files, file)
		left -= size
	}
	return files, truncated
}

// sameContent says whether the first size bytes of f, which has size bytes, are in.
func sameContent(f *os.File, size int64, in []byte) bool {
	if size != int64(len(in)) {
		return false
	}
	buf := make([]byte, min(len(in), 64<<10))
	for off := 0; off < len(in); {
		n, err := f.ReadAt(buf[:min(len(buf), len(in)-off)], int64(off))
		if n == 0 || !bytes.Equal(buf[:n], in[off:off+n]) {
			return false
		}
		off += n
		if err != nil && off < len(in) {
			return false
		}
	}
	return true
}

// encodeBase64 encodes data into a string without the second copy that
// base64.StdEncoding.EncodeToString makes.
func encodeBase64(data []byte) string {
	var b strings.Builder
	b.Grow(base64.StdEncoding.EncodedLen(len(data)))
	enc := base64.NewEncoder(base64.StdEncoding, &b)
	_, _ = enc.Write(data) // a strings.Builder does not fail
	_ = enc.Close()
	return b.String()
}

// readCapped reads a regular file of at most max bytes; tooBig says it was larger, or grew
// past its size while it was read (a file being written is left out rather than returned
// half-written). A file larger than max is not read at all: fstat tells its size, and the
// buffer is allocated once, of that size.
func readCapped(root *os.Root, p string, max int64) (data []byte, tooBig bool) {
	f, size, tooBig := openCapped(root, p, max)
	if f == nil {
		return nil, tooBig
	}
	defer f.Close()
	// One byte more than the size, to see the end of the file (or that it grew).
	buf := make([]byte, size+1)
	n, err := io.ReadFull(f, buf)
	switch {
	case err == nil:
		return nil, true // more than st.Size() bytes: it grew
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return buf[:n], false // at most st.Size() bytes (fewer when it shrank)
	default:
		return nil, false
	}
}

// openCapped opens a regular file of at most max bytes, and tells its size; tooBig says it
// was larger (it is then not open).
func openCapped(root *os.Root, p string, max int64) (f *os.File, size int64, tooBig bool) {
	// Non-blocking and without following a final symlink: a FIFO or link swapped in after the
	// walk must neither hang the reader nor lead it elsewhere.
	f, err := root.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, 0, false
	}
	st, err := f.Stat()
	switch {
	case err != nil || !st.Mode().IsRegular():
		f.Close()
		return nil, 0, false
	case st.Size() > max:
		f.Close()
		return nil, 0, true
	}
	return f, st.Size(), false
}

// ResultSize is about the size of res in JSON: its strings, each once, and room for the rest
// (escapes aside): what to make room for before encoding it, so that a buffer
// that grows by doubling does not hold up to twice the result.
func ResultSize(res api.ExecuteResult) int {
	n := 4096 + len(res.Stdout) + len(res.Stderr)
	for _, f := range res.Files {
		n += 96 + len(f.Path) + len(f.ContentBase64)
	}
	for _, o := range res.Outputs {
		n += 48
		for k, v := range o.Data {
			n += 8 + len(k) + len(v)
		}
	}
	if e := res.Exception; e != nil {
		n += int(exceptionSize(*e))
	}
	return n
}
