package executor

import (
	"fmt"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/pyexec/pyexec/pkg/api"
)

// budgetOutput applies the request's output budget (OutputBudgetChars) to res's stdout and
// stderr, together: the streams share it — the shorter keeps all of itself when that is at
// most half of it, the other takes the rest — and a stream over its share keeps its first and
// last characters, half and half, with one line in their place that says how many were left
// out and where the whole text is. That whole text, both streams as captured, is written to a
// new file of the working directory (fullOutputName): the execution returns it with its files,
// a session keeps it. It returns the file's path relative to the working directory, "" when
// no budget applied or the file could not be written (res.OutputBudget then has none).
func (e *execution) budgetOutput(res *api.ExecuteResult) string {
	limit := e.req.OutputBudgetChars
	if limit <= 0 {
		return ""
	}
	nOut, nErr := utf8.RuneCountInString(res.Stdout), utf8.RuneCountInString(res.Stderr)
	if nOut+nErr <= limit {
		return ""
	}
	shareErr := min(nErr, limit/2)
	shareOut := limit - shareErr
	if nOut < shareOut {
		shareOut, shareErr = nOut, limit-nOut
	}
	name := fullOutputName(e.req.ID)
	full := "=== stdout ===\n" + res.Stdout + "\n=== stderr ===\n" + res.Stderr
	written := writeOutputFile(filepath.Join(e.work, name), []byte(full)) == nil
	where := fullOutputIn(name)
	if !written {
		name, where = "", fullOutputLost
	}
	var omitted int
	res.Stdout, omitted = keepEnds(res.Stdout, nOut, shareOut, where)
	var omittedErr int
	res.Stderr, omittedErr = keepEnds(res.Stderr, nErr, shareErr, where)
	res.OutputBudget = &api.OutputBudget{LimitChars: limit, OmittedChars: omitted + omittedErr, FullOutputFile: name}
	return name
}

// fullOutputIn and fullOutputLost say, in the line that stands for what an output budget left
// out, where the whole output is.
func fullOutputIn(name string) string { return "the whole output is in the file " + name }

const fullOutputLost = "the whole output could not be kept"

// lostFullOutput says, in res's streams, that the file of the whole output, name, is not
// there after all (the caps on files left it out of the result).
func lostFullOutput(res *api.ExecuteResult, name string) {
	res.Stdout = strings.Replace(res.Stdout, fullOutputIn(name), fullOutputLost, 1)
	res.Stderr = strings.Replace(res.Stderr, fullOutputIn(name), fullOutputLost, 1)
	res.OutputBudget.FullOutputFile = ""
}

// keepEnds is s, of n characters, cut to its first and last share/2 characters with a line
// between them that says how many were left out and where; omitted is how many.
func keepEnds(s string, n, share int, where string) (out string, omitted int) {
	if n <= share {
		return s, 0
	}
	head, tail := share/2, share-share/2
	omitted = n - head - tail
	return prefixRunes(s, head) + fmt.Sprintf("\n... [%d characters left out: %s] ...\n", omitted, where) + suffixRunes(s, tail), omitted
}

func prefixRunes(s string, n int) string {
	for i := range s {
		if n == 0 {
			return s[:i]
		}
		n--
	}
	return s
}

func suffixRunes(s string, n int) string {
	i := len(s)
	for ; n > 0 && i > 0; n-- {
		_, size := utf8.DecodeLastRuneInString(s[:i])
		i -= size
	}
	return s[i:]
}

// fullOutputName is the name of the file of an execution's whole output: of its request id,
// kept to letters, digits, "-" and "_".
func fullOutputName(id string) string {
	clean := strings.Map(func(r rune) rune {
		if r == '-' || r == '_' || r < utf8.RuneSelf && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return r
		}
		return -1
	}, id)
	if len(clean) > 40 {
		clean = clean[:40]
	}
	return "pyexec-output-" + clean + ".txt"
}

// writeOutputFile writes a new file at path, readable by the code: never over what is there (a
// file, a symlink or a FIFO the code made there makes it fail), never blocking.
func writeOutputFile(path string, data []byte) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return err
	}
	for len(data) > 0 && err == nil {
		var n int
		n, err = unix.Write(fd, data)
		if err == unix.EINTR {
			err = nil
		}
		data = data[max(n, 0):]
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	return err
}
