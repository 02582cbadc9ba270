package executor

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"io/fs"
	"os"
	"sort"
	"sync"
	"syscall"
	"unicode/utf8"

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

// collectFiles returns the regular files under work that the code created or changed, sorted
// by path: at most maxFiles, none larger than maxBytes. It reads through os.Root, so a
// symlink the code planted cannot lead outside work.
func collectFiles(work string, inputs map[string][]byte, maxBytes int64, maxFiles int) ([]api.OutputFile, bool) {
	files := []api.OutputFile{}
	if maxBytes <= 0 {
		maxBytes = 1 << 62
	}
	root, err := os.OpenRoot(work)
	if err != nil {
		return files, false
	}
	defer root.Close()
	var paths []string
	_ = fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			paths = append(paths, p)
		}
		return nil
	})
	sort.Strings(paths)
	truncated := false
	for _, p := range paths {
		data, tooBig := readCapped(root, p, maxBytes)
		if tooBig {
			truncated = true
			continue
		}
		if data == nil {
			continue
		}
		if in, ok := inputs[p]; ok && sha256.Sum256(in) == sha256.Sum256(data) {
			continue // an input file the code left as it was
		}
		if len(files) == maxFiles {
			truncated = true
			break
		}
		files = append(files, api.OutputFile{Path: p, Size: int64(len(data)), ContentBase64: base64.StdEncoding.EncodeToString(data)})
	}
	return files, truncated
}

// readCapped reads a regular file of at most max bytes; tooBig says it was larger.
func readCapped(root *os.Root, p string, max int64) (data []byte, tooBig bool) {
	// Non-blocking and without following a final symlink: a FIFO or link swapped in after the
	// walk must neither hang the server nor lead it elsewhere.
	f, err := root.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, false
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return nil, false
	}
	data, err = io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, false
	}
	if int64(len(data)) > max {
		return nil, true
	}
	return data, false
}
