package executor

import (
	"errors"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/pyexec/pyexec/pkg/api"
)

// Errors of Session.ReadFile.
var (
	ErrFileNotFound = errors.New("no regular file at this path of the session's working directory")
	ErrFileTooLarge = errors.New("the file is larger than the limit, or grew while it was read")
)

// Files lists the regular files below the session's working directory, sorted by path, at
// most api.MaxSessionFiles of them; truncated says there were more. Symlinks are neither
// followed nor listed. It takes no lock: it works while a call runs, whose code may change
// the files meanwhile. The error is ErrSessionEnded once the session has ended.
func (ss *LocalSession) Files() (files []api.SessionFile, truncated bool, err error) {
	if ss.ended.Load() {
		return nil, false, ErrSessionEnded
	}
	files, truncated = listFiles(ss.work, api.MaxSessionFiles)
	if ss.ended.Load() { // closed meanwhile: its directory is being removed
		return nil, false, ErrSessionEnded
	}
	return files, truncated, nil
}

// ReadFile reads the regular file at p ("/"-separated, relative to the session's working
// directory, as Files lists it) of at most max bytes. A symlink is not followed, neither as
// the last component nor on the way (the path of a file Files does not list), and a FIFO is
// opened without blocking and not read. It takes no lock, as Files. The error is
// ErrFileNotFound (nothing there, or not a regular file), ErrFileTooLarge or ErrSessionEnded.
func (ss *LocalSession) ReadFile(p string, max int64) ([]byte, error) {
	if ss.ended.Load() {
		return nil, ErrSessionEnded
	}
	if !fs.ValidPath(p) {
		return nil, ErrFileNotFound
	}
	var data []byte
	tooBig := false
	// os.Root keeps every step inside the working directory, whatever the code swaps in;
	// readCapped opens the file with O_NOFOLLOW|O_NONBLOCK and checks it on the descriptor.
	if root, err := os.OpenRoot(ss.work); err == nil {
		if dirsOnTheWay(root, p) {
			data, tooBig = readCapped(root, p, max)
		}
		root.Close()
	}
	switch {
	case ss.ended.Load():
		return nil, ErrSessionEnded
	case tooBig:
		return nil, ErrFileTooLarge
	case data == nil:
		return nil, ErrFileNotFound
	}
	return data, nil
}

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

// listFiles returns the regular files below work, sorted by path, at most max of them;
// truncated says there were more. The walk goes through os.Root and does not follow
// symlinks; it holds at most 2*max entries however many files there are.
func listFiles(work string, max int) (files []api.SessionFile, truncated bool) {
	files = []api.SessionFile{}
	root, err := os.OpenRoot(work)
	if err != nil {
		return files, false
	}
	defer root.Close()
	keepFirst := func() {
		slices.SortFunc(files, func(a, b api.SessionFile) int { return strings.Compare(a.Path, b.Path) })
		if len(files) > max {
			files, truncated = files[:max], true
		}
	}
	walkFiles(root, func(p string, d fs.DirEntry) {
		fi, err := d.Info() // lstat: the file may have changed since it was listed
		if err != nil || !fi.Mode().IsRegular() {
			return
		}
		files = append(files, api.SessionFile{Path: p, Size: fi.Size(), ModifiedAt: fi.ModTime().UTC()})
		if len(files) > 2*max {
			keepFirst()
		}
	})
	keepFirst()
	return files, truncated
}
