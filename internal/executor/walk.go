package executor

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// walkBatch is how many entries walkFiles reads from a directory at a time: a directory of
// 150,000 files is never held whole.
const walkBatch = 256

// maxWalkDepth bounds the directories walkFiles descends into.
const maxWalkDepth = 256

// walkFiles calls fn for each regular file below root, in no set order, until fn returns false
// or the deadline passes (a zero deadline never does); complete says it saw every file. fn
// gets the file's path and a stat function: a caller that needs a file's lstat calls it, and
// one that does not (the file cannot make its listing) saves the system call. stat goes
// through the directory the file was read from (fstatat, AT_SYMLINK_NOFOLLOW), so no path is
// resolved again, and says false when the file went or is no longer a regular file.
//
// It reads each directory walkBatch entries at a time and keeps open only the directories on
// the way to the one it reads, so it holds at most maxWalkDepth batches however many files
// there are; its callers keep only a bounded part of what it finds. The code of a session may
// swap a directory for a FIFO or a symlink while the server walks: a directory is opened
// O_DIRECTORY|O_NOFOLLOW|O_NONBLOCK, so such a swap ends that branch of the walk instead of
// blocking the server or leading it away (fs.WalkDir would open the FIFO and wait for a writer).
func walkFiles(root *os.Root, deadline time.Time, fn func(p string, stat func() (*unix.Stat_t, bool)) bool) (complete bool) {
	w := &walker{root: root, deadline: deadline, fn: fn}
	w.walk(".", 0)
	return !w.cut && !w.missed && !w.stopped
}

type walker struct {
	root     *os.Root
	deadline time.Time
	fn       func(p string, stat func() (*unix.Stat_t, bool)) bool
	// dir, when set, is called for each directory before the walk goes into it.
	dir func(p string)
	// strict: a directory the walk cannot open (but for one gone or swapped for something
	// else meanwhile) or deeper than maxWalkDepth ends the walk, with err saying which.
	strict  bool
	err     error
	entries int
	// cut says the deadline passed, stopped that fn asked to stop: the walk is over. missed
	// says a directory was left out for want of file descriptors; the walk goes on.
	cut, stopped, missed bool
}

// walk walks dir, at depth, until the walk is over (see over).
func (w *walker) walk(dir string, depth int) {
	if w.over() {
		return
	}
	if depth > maxWalkDepth {
		if w.strict {
			w.err, w.stopped = fmt.Errorf("%s: deeper than %d directories", dir, maxWalkDepth), true
		}
		return
	}
	f, err := w.root.OpenFile(dir, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
			w.missed = true
		} else if w.strict && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ELOOP) && !errors.Is(err, syscall.ENOTDIR) {
			w.err, w.stopped = err, true
		}
		return // gone, or swapped for something else than a directory
	}
	defer f.Close()
	raw, err := f.SyscallConn()
	if err != nil {
		return
	}
	for !w.over() {
		entries, err := f.ReadDir(walkBatch)
		// Within a batch, in lexical order: a small directory is walked as ls shows it.
		slices.SortFunc(entries, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
		for _, e := range entries {
			if w.over() {
				return
			}
			w.visit(raw, dir, e, depth)
		}
		if err != nil { // io.EOF at the end; an error (the directory went meanwhile) ends it too
			return
		}
	}
}

// visit goes on with one entry of dir, by its type as the directory lists it: a directory
// is walked, a regular file handed to fn.
func (w *walker) visit(raw syscall.RawConn, dir string, e fs.DirEntry, depth int) {
	w.entries++
	p := e.Name()
	if dir != "." {
		p = dir + "/" + p
	}
	switch {
	case e.IsDir():
		if w.dir != nil && depth < maxWalkDepth {
			w.dir(p)
		}
		w.walk(p, depth+1)
	case e.Type().IsRegular():
		stat := func() (*unix.Stat_t, bool) {
			var st unix.Stat_t
			var err error
			if cerr := raw.Control(func(fd uintptr) {
				err = unix.Fstatat(int(fd), e.Name(), &st, unix.AT_SYMLINK_NOFOLLOW)
			}); cerr != nil || err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
				return nil, false // gone meanwhile, or swapped
			}
			return &st, true
		}
		if !w.fn(p, stat) {
			w.stopped = true
		}
	}
}

// over says the walk must stop: fn asked it to, or the deadline passed (checked every
// walkBatch entries, a few microseconds' work each).
func (w *walker) over() bool {
	if w.stopped || w.cut {
		return true
	}
	if w.entries%walkBatch == 0 && !w.deadline.IsZero() && time.Now().After(w.deadline) {
		w.cut = true
	}
	return w.cut
}

// firstSorted keeps the first max items, by key, of those it is given one at a time, holding
// at most 2*max of them: sorting and cutting once per max items held costs O(n log max) in
// all, and once it has cut, most items are dropped as they come.
type firstSorted[T any] struct {
	max     int
	key     func(T) string
	items   []T
	dropped bool
	// bound is the last key kept by the last cut that dropped some: an item past it cannot be
	// among the first max, and is dropped as it comes, without being held or sorted.
	bound   string
	bounded bool
}

func newFirstSorted[T any](max int, key func(T) string) *firstSorted[T] {
	return &firstSorted[T]{max: max, key: key}
}

// wants says whether an item of this key may be among the first max: one that is not need
// not even be made.
func (f *firstSorted[T]) wants(key string) bool {
	return f.max > 0 && (!f.bounded || key <= f.bound)
}

func (f *firstSorted[T]) add(x T) {
	if !f.wants(f.key(x)) {
		f.dropped = true
		return
	}
	f.items = append(f.items, x)
	if len(f.items) > 2*f.max {
		f.cut()
	}
}

// cut sorts the items and keeps the first max.
func (f *firstSorted[T]) cut() {
	slices.SortFunc(f.items, func(a, b T) int { return strings.Compare(f.key(a), f.key(b)) })
	if len(f.items) > f.max {
		clear(f.items[f.max:]) // let what was cut go
		f.items, f.dropped = f.items[:f.max], true
		f.bound, f.bounded = f.key(f.items[f.max-1]), true
	}
}

// result returns the first max items, sorted; dropped says there were more.
func (f *firstSorted[T]) result() (items []T, dropped bool) {
	f.cut()
	return f.items, f.dropped
}
