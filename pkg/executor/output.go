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
func collectFilesUpTo(work string, inputs map[string][]byte, maxBytes int64, maxFiles int, maxTotal int64) ([]api.OutputFile, bool) {
	return collectFiles(work, inputs, nil, maxBytes, maxFiles, maxTotal)
}

// collectFilesSince is collectFilesUpTo for a session's call: the files it created or changed
// are those before tells (see callStamps).
func collectFilesSince(work string, before *callStamps, maxBytes int64, maxFiles int, maxTotal int64) ([]api.OutputFile, bool) {
	return collectFiles(work, nil, before, maxBytes, maxFiles, maxTotal)
}

// collectSlack is how many more changed files than it may return collectFiles keeps in view,
// for those it then leaves out (too large, gone meanwhile).
const collectSlack = 64

// collectFiles walks work once, within callWalkTimeout, and keeps in view the first, by path,
// of the files the code created or changed: as many as it may return, one per input file
// (which it may find unchanged) and collectSlack more; it says truncated when there were more,
// or when the walk was cut short. So a directory of many files costs a bounded memory.
func collectFiles(work string, inputs map[string][]byte, before *callStamps, maxBytes int64, maxFiles int, maxTotal int64) ([]api.OutputFile, bool) {
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
		data, tooBig := readCapped(root, p, readLimit)
		if data == nil && !tooBig {
			continue // gone, not a regular file, or unreadable
		}
		if !tooBig && isInput && bytes.Equal(data, in) {
			continue
		}
		if len(files) == maxFiles {
			truncated = true
			break
		}
		if tooBig || int64(len(data)) > limit {
			truncated = true
			continue
		}
		files = append(files, api.OutputFile{Path: p, Size: int64(len(data)), ContentBase64: encodeBase64(data)})
		left -= int64(len(data))
	}
	return files, truncated
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
	// Non-blocking and without following a final symlink: a FIFO or link swapped in after the
	// walk must neither hang the server nor lead it elsewhere.
	f, err := root.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, false
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return nil, false
	}
	if st.Size() > max {
		return nil, true
	}
	// One byte more than the size, to see the end of the file (or that it grew).
	buf := make([]byte, st.Size()+1)
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
