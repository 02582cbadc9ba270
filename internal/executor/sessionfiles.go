package executor

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pyexec/pyexec/pkg/api"
)

// Errors of Session.ReadFile.
var (
	ErrFileNotFound = errors.New("no regular file at this path of the session's working directory")
	ErrFileTooLarge = errors.New("the file is larger than the limit")
)

// Files lists the regular files below the session's working directory, sorted by path, at
// most api.MaxSessionFiles of them, within api.SessionFilesWalkTimeout (see listFiles).
// Symlinks are neither followed nor listed. It takes no lock of the session: it works while a
// call runs, whose code may change the files meanwhile. Listings of the executor's sessions
// walk maxConcurrentListings at a time; the others wait, within the same time bound. The error
// is ErrSessionEnded once the session has ended.
func (ss *LocalSession) Files() (api.SessionFiles, error) {
	if ss.ended.Load() {
		return api.SessionFiles{}, ErrSessionEnded
	}
	deadline := time.Now().Add(api.SessionFilesWalkTimeout)
	var l api.SessionFiles
	if release, ok := ss.spawn.listing(deadline); ok {
		l = listFiles(ss.work, api.MaxSessionFiles, deadline)
		release()
	} else {
		l = api.SessionFiles{Files: []api.SessionFile{}, Truncated: true, Partial: true}
	}
	if ss.ended.Load() { // closed meanwhile: its directory is being removed
		return api.SessionFiles{}, ErrSessionEnded
	}
	return l, nil
}

// Body is bytes to read once, Size of them, and close: a file of a session, opened.
type Body interface {
	io.ReadCloser
	Size() int64
}

// OpenFile opens the regular file at p ("/"-separated, relative to the session's working
// directory, as Files lists it) of at most max bytes. A symlink is not followed, neither as
// the last component nor on the way (the path of a file Files does not list), and a FIFO is
// opened without blocking and never read. It takes no lock, as Files. The Body reads the file
// as it is read, Size bytes (its size when it was opened): one that shrank since ends early.
// The error is ErrFileNotFound (nothing there, or not a regular file), ErrFileTooLarge or
// ErrSessionEnded.
func (ss *LocalSession) OpenFile(p string, max int64) (Body, error) {
	if ss.ended.Load() {
		return nil, ErrSessionEnded
	}
	if !fs.ValidPath(p) {
		return nil, ErrFileNotFound
	}
	var f *os.File
	var size int64
	tooBig := false
	// os.Root keeps every step inside the working directory, whatever the code swaps in;
	// openCapped opens the file with O_NOFOLLOW|O_NONBLOCK and checks it on the descriptor.
	if root, err := os.OpenRoot(ss.work); err == nil {
		if dirsOnTheWay(root, p) {
			f, size, tooBig = openCapped(root, p, max)
		}
		root.Close()
	}
	switch {
	case ss.ended.Load():
		if f != nil {
			f.Close()
		}
		return nil, ErrSessionEnded
	case tooBig:
		return nil, ErrFileTooLarge
	case f == nil:
		return nil, ErrFileNotFound
	}
	return &fileBody{SectionReader: io.NewSectionReader(f, 0, size), f: f}, nil
}

// fileBody is an open file's first Size bytes.
type fileBody struct {
	*io.SectionReader
	f *os.File
}

func (b *fileBody) Close() error { return b.f.Close() }

// dirsOnTheWay says whether each parent of p is a directory, not a symlink. os.Root would
// follow a symlink that stays inside the root; the code may swap one in after this check, and
// then a file of the working directory is read under another of its paths, no more.
func dirsOnTheWay(root *os.Root, p string) bool {
	for d := path.Dir(p); d != "."; d = path.Dir(d) {
		if fi, err := root.Lstat(d); err != nil || !fi.IsDir() {
			return false
		}
	}
	return true
}

// listFiles returns the regular files below work, sorted by path, at most max of them, and
// how many there are; it stops walking at deadline (Partial). It holds at most 2*max entries
// however many files there are (see walkFiles and firstSorted).
func listFiles(work string, max int, deadline time.Time) api.SessionFiles {
	l := api.SessionFiles{Files: []api.SessionFile{}}
	root, err := os.OpenRoot(work)
	if err != nil {
		return l
	}
	defer root.Close()
	first := newFirstSorted(max, func(f api.SessionFile) string { return f.Path })
	complete := walkFiles(root, deadline, func(p string, stat func() (*unix.Stat_t, bool)) bool {
		l.Total++
		if !first.wants(p) {
			first.add(api.SessionFile{Path: p}) // dropped: said in truncated
			return true
		}
		if st, ok := stat(); ok {
			first.add(api.SessionFile{Path: p, Size: st.Size, ModifiedAt: time.Unix(st.Mtim.Unix()).UTC()})
		}
		return true
	})
	files, dropped := first.result()
	kept := fitPaths(files, maxListingPathBytes)
	l.Files = append(l.Files, files[:kept]...)
	l.Truncated, l.Partial = dropped || kept < len(files) || !complete, !complete
	return l
}

// maxListingPathBytes bounds the paths of one listing, so that its frame from the runner stays
// within the slack runner.MaxFrameFor leaves (each byte escaped in JSON at most 6 bytes): a
// thousand paths of 128 bytes on average fit.
const maxListingPathBytes = 128 << 10

// fitPaths returns how many of files, from the first, have paths of at most max bytes in all.
func fitPaths(files []api.SessionFile, max int) int {
	for i, f := range files {
		if max -= len(f.Path); max < 0 {
			return i
		}
	}
	return len(files)
}

// maxConcurrentListings is how many listings of session files walk at once in one executor:
// each holds a bounded part of what it finds, and so they all do together.
const maxConcurrentListings = 2

// listing waits until fewer than maxConcurrentListings listings walk, or until deadline: ok
// says it may walk, and then release ends its turn.
func (s *Spawn) listing(deadline time.Time) (release func(), ok bool) {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case s.listings <- struct{}{}:
		return func() { <-s.listings }, true
	case <-t.C:
		return nil, false
	}
}
