package executor

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"unsafe"

	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"
)

// shmJanitor removes what executions and sessions leave in a shared-memory directory that is
// the runner's own (the /dev/shm of its container: SpawnConfig.ShmDir), where
// multiprocessing's semaphores and shared memory live, and where code may write files of any
// name: Landlock lets it create, use and remove names it knows there, never list them.
//
// Nothing there carries its maker's name, so the janitor watches the directory (inotify) and
// gives each new file the holders active when it appeared as the ones it may belong to: the
// executions running, and the sessions in a call (between calls a session is stopped and makes
// nothing). Before a holder stops being active, the events already queued are read: a file its
// code made is its. A file goes when the last holder it may belong to has ended (an execution
// at its end, a session when it is closed): never while one who may use it is left. A file
// that appears while no holder is active goes at once; when no holder is left at all,
// everything in the directory goes (also what the watch missed, if its queue overflowed).
type shmJanitor struct {
	dir  string
	log  logr.Logger
	fd   int      // inotify, non-blocking
	stop *os.File // closed by close: ends the watch
	wake *os.File

	mu      sync.Mutex
	next    uint64
	holders map[uint64]bool                // holder → active
	files   map[string]map[uint64]struct{} // name → the holders it may belong to
	buf     []byte
	closed  bool
}

// newShmJanitor watches dir; nil when dir is empty.
func newShmJanitor(dir string, log logr.Logger) (*shmJanitor, error) {
	if dir == "" {
		return nil, nil
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, err
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_MOVED_TO|unix.IN_DELETE|unix.IN_MOVED_FROM); err != nil {
		unix.Close(fd)
		return nil, err
	}
	wake, stop, err := os.Pipe()
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	j := &shmJanitor{dir: dir, log: log, fd: fd, stop: stop, wake: wake, holders: map[uint64]bool{},
		files: map[string]map[uint64]struct{}{}, buf: make([]byte, 64<<10)}
	j.mu.Lock()
	j.sweepLocked() // left by a runner before this one
	j.mu.Unlock()
	go j.watch()
	log.Info("watching shared memory", "dir", dir)
	return j, nil
}

// hold registers an active holder (an execution); the returned func ends it, once.
func (j *shmJanitor) hold() func() {
	if j == nil {
		return func() {}
	}
	id := j.add(true)
	var once sync.Once
	return func() { once.Do(func() { j.release(id) }) }
}

// holdSession registers a session, active only between the calls of begin and end (its
// calls); the returned release ends it, once.
func (j *shmJanitor) holdSession() (begin, end, release func()) {
	if j == nil {
		nop := func() {}
		return nop, nop, nop
	}
	id := j.add(false)
	set := func(active bool) func() {
		return func() {
			j.mu.Lock()
			defer j.mu.Unlock()
			j.drainLocked() // what appeared before is not, or is, its own
			if _, ok := j.holders[id]; ok {
				j.holders[id] = active
			}
		}
	}
	var once sync.Once
	return set(true), set(false), func() { once.Do(func() { j.release(id) }) }
}

func (j *shmJanitor) add(active bool) uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.drainLocked()
	j.next++
	j.holders[j.next] = active
	return j.next
}

func (j *shmJanitor) release(id uint64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.drainLocked() // what its code made is its
	delete(j.holders, id)
	if len(j.holders) == 0 {
		j.sweepLocked()
		return
	}
	for name, may := range j.files {
		if _, ok := may[id]; !ok {
			continue
		}
		delete(may, id)
		if len(may) == 0 {
			j.removeLocked(name)
		}
	}
}

// watch reads the directory's events as they come, until the janitor is closed.
func (j *shmJanitor) watch() {
	fds := []unix.PollFd{{Fd: int32(j.fd), Events: unix.POLLIN}, {Fd: int32(j.wake.Fd()), Events: unix.POLLIN}}
	for {
		if _, err := unix.Poll(fds, -1); err != nil && !errors.Is(err, unix.EINTR) {
			return
		}
		if fds[1].Revents != 0 {
			j.wake.Close()
			return
		}
		j.mu.Lock()
		j.drainLocked()
		j.mu.Unlock()
	}
}

// drainLocked reads every queued event.
func (j *shmJanitor) drainLocked() {
	for !j.closed {
		n, err := unix.Read(j.fd, j.buf)
		if err != nil || n <= 0 {
			return
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&j.buf[off]))
			name := unix.ByteSliceToString(j.buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)])
			off += unix.SizeofInotifyEvent + int(ev.Len)
			switch {
			case ev.Mask&unix.IN_Q_OVERFLOW != 0:
				j.log.Info("the watch of shared memory overflowed: what it missed goes when no holder is left")
			case name == "":
			case ev.Mask&(unix.IN_CREATE|unix.IN_MOVED_TO) != 0:
				may := map[uint64]struct{}{}
				for id, active := range j.holders {
					if active {
						may[id] = struct{}{}
					}
				}
				if len(may) == 0 {
					j.removeLocked(name) // no code that could have made it is running
					continue
				}
				j.files[name] = may
			default: // removed or moved away
				delete(j.files, name)
			}
		}
	}
}

func (j *shmJanitor) removeLocked(name string) {
	delete(j.files, name)
	if err := os.RemoveAll(filepath.Join(j.dir, name)); err != nil {
		j.log.Info("could not remove a file left in shared memory", "name", name, "err", err.Error())
	}
}

func (j *shmJanitor) sweepLocked() {
	entries, _ := os.ReadDir(j.dir)
	for _, e := range entries {
		j.removeLocked(e.Name())
	}
	clear(j.files)
}

// close ends the watch.
func (j *shmJanitor) close() {
	if j == nil {
		return
	}
	j.mu.Lock()
	j.closed = true
	unix.Close(j.fd)
	j.mu.Unlock()
	j.stop.Close() // wakes the watch, which then ends
}
