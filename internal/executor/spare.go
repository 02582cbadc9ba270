package executor

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pyexec/pyexec/internal/proc"
)

// zygoteConfigDir, in the work dir, is the zygote's MPLCONFIGDIR: matplotlib builds its font
// cache there once, and forked executions inherit it loaded.
const zygoteConfigDir = ".zygote"

var errNoZygote = errors.New("no zygote")

// A spare still warming up after this long is killed: its warm-up hangs.
const spareReadyTimeout = 2 * time.Minute

// spare is a supervisor the zygote forked ahead of time, with the status pipe of its execution
// to come. Its code process has run the warm-up and waits on conn for the execution.
type spare struct {
	pid    int
	conn   int      // our end of a SOCK_SEQPACKET socket to the code's process
	status *os.File // read end of the status pipe
	gen    int      // the zygote generation it was forked from
	// filters, when set, are the seccomp programs its code process installed ahead, off the
	// execution's path (installing them costs the kernel over a millisecond): it takes only an
	// execution that wants the same. Without, it confines itself with its execution, as a
	// process forked for one does.
	filters *filters
	cold    bool // rehearsed, not warmed up: started while the executor rests
}

// fits says the spare can take an execution that wants the seccomp programs want (nil: none).
func (s *spare) fits(want *filters) bool {
	if s.filters == nil {
		return true
	}
	return want != nil && s.filters.key() == want.key()
}

// ready waits until the spare's code process has warmed up. Time the spare spends paused
// (while executions run) does not count against spareReadyTimeout.
func (f *Fork) ready(s *spare) error {
	tv := unix.NsecToTimeval((time.Second).Nanoseconds())
	if err := unix.SetsockoptTimeval(s.conn, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	for waited := time.Duration(0); ; {
		n, err := ignoringEINTR2(func() (int, error) { return unix.Read(s.conn, buf) })
		switch {
		case errors.Is(err, unix.EAGAIN):
			if !f.busy() {
				waited += time.Second
			}
			if waited >= spareReadyTimeout {
				return fmt.Errorf("spare %d: not warmed up after %v", s.pid, spareReadyTimeout)
			}
			continue
		case err != nil:
			return fmt.Errorf("spare %d: %w", s.pid, err)
		case n == 0:
			return fmt.Errorf("spare %d ended while warming up", s.pid)
		}
		var reply struct {
			Ready bool `json:"ready"`
		}
		if err := json.Unmarshal(buf[:n], &reply); err != nil || !reply.Ready {
			return fmt.Errorf("spare %d: unexpected %q", s.pid, buf[:n])
		}
		return nil
	}
}

// handOff gives the spare's code process an execution: the control message and its three
// standard streams. A process that ended while idle fails the send; one killed after the send
// and before it read the message would end its execution with that signal (a window of
// microseconds, traded for not waiting for an acknowledgement).
func (s *spare) handOff(data, rights []byte) error {
	if err := ignoringEINTR(func() error { return unix.Sendmsg(s.conn, data, rights, nil, 0) }); err != nil {
		return fmt.Errorf("spare %d: %w", s.pid, err)
	}
	return nil
}

// close lets the spare go: an idle one ends itself and its code process. The status pipe
// stays with whoever took the spare.
func (s *spare) close() { _ = unix.Close(s.conn) }

// discard lets an unused spare go, with its status pipe.
func (s *spare) discard() {
	s.close()
	s.status.Close()
}

// begin and end bracket an execution. The first execution in flight pauses the spares that
// are warming up (SIGSTOP to their process group) and ends the executor's rest; when none is in
// flight any more they go on, used spares are replaced, and the executor rests after RestAfter.
func (f *Fork) begin() {
	f.pool.Lock()
	defer f.pool.Unlock()
	f.inflight++
	f.resting = false
	if f.inflight == 1 {
		f.signalWarming(unix.SIGSTOP)
	}
}

func (f *Fork) end() {
	f.pool.Lock()
	f.inflight--
	if f.inflight == 0 {
		f.signalWarming(unix.SIGCONT)
		f.restLater()
	}
	f.pool.Unlock()
	f.refill()
}

func (f *Fork) busy() bool {
	f.pool.Lock()
	defer f.pool.Unlock()
	return f.inflight > 0
}

// signalWarming signals the process group of every spare warming up; f.pool is held.
func (f *Fork) signalWarming(sig unix.Signal) {
	for pid := range f.warming {
		_ = unix.Kill(-pid, sig)
	}
}

// refill starts the spares missing from the pool, unless an execution is in flight: cold
// ones while the executor rests.
func (f *Fork) refill() {
	f.pool.Lock()
	n := 0
	if f.inflight == 0 {
		n = max(f.cfg.Warm-len(f.spares)-f.starting, 0)
	}
	f.starting += n
	cold := f.resting
	f.pool.Unlock()
	for range n {
		go f.startSpare(cold)
	}
}

// restLater arms the timer that rests the executor once no execution has run for RestAfter;
// f.pool is held, and the last execution has just ended (or the executor started).
func (f *Fork) restLater() {
	f.lastEnd = time.Now()
	if f.cfg.RestAfter <= 0 {
		return
	}
	if f.restOff == nil {
		f.restOff = time.AfterFunc(f.cfg.RestAfter, f.rest)
		return
	}
	f.restOff.Reset(f.cfg.RestAfter)
}

// rest, when no execution has run for RestAfter, lets the kept supervisors go and replaces
// the warm spares with cold ones, until the next execution.
func (f *Fork) rest() {
	f.pool.Lock()
	if f.inflight > 0 || f.resting || time.Since(f.lastEnd) < f.cfg.RestAfter {
		f.pool.Unlock()
		return
	}
	f.resting = true
	kept := f.idle
	f.idle = nil
	var warm, cold []*spare
	for _, s := range f.spares {
		if s.cold {
			cold = append(cold, s)
		} else {
			warm = append(warm, s)
		}
	}
	f.spares = cold
	f.pool.Unlock()
	for _, s := range kept {
		s.close()
	}
	for _, s := range warm {
		s.discard()
	}
	f.refill()
	f.cfg.Log.V(1).Info("resting", "supervisorsLetGo", len(kept), "sparesCooled", len(warm))
}

// takeSpare returns the oldest ready spare that can take an execution that wants the seccomp
// programs want, a warm one before a cold one, or nil; spares made for other programs are let
// go, and the next ones are made for want.
func (f *Fork) takeSpare(want *filters) *spare {
	f.pool.Lock()
	f.like = want
	if i := slices.IndexFunc(f.spares, func(s *spare) bool { return !s.cold && s.fits(want) }); i > 0 {
		warm := f.spares[i]
		f.spares = slices.Insert(slices.Delete(f.spares, i, i+1), 0, warm)
	}
	var taken *spare
	var unfit []*spare
	for len(f.spares) > 0 && taken == nil {
		s := f.spares[0]
		f.spares = f.spares[1:]
		if s.fits(want) {
			taken = s
		} else {
			unfit = append(unfit, s)
		}
	}
	if taken != nil {
		// Paused as it sent "ready", it would not run its execution.
		_ = unix.Kill(-taken.pid, unix.SIGCONT)
	}
	f.pool.Unlock()
	for _, s := range unfit {
		s.discard()
	}
	return taken
}

// startSpare has the zygote fork a spare, waits until it has warmed up (unless cold) and adds
// it to the pool.
func (f *Fork) startSpare(cold bool) {
	start := time.Now()
	s, err := f.forkSpare(cold)
	if err == nil {
		f.pool.Lock()
		f.warming[s.pid] = struct{}{}
		if f.inflight > 0 {
			_ = unix.Kill(-s.pid, unix.SIGSTOP)
		}
		f.pool.Unlock()
		if err = f.ready(s); err != nil {
			proc.KillTree(s.pid)
		} else {
			f.cfg.Log.V(1).Info("spare ready", "pid", s.pid, "cold", cold, "ms", time.Since(start).Milliseconds())
		}
	}
	f.mu.Lock()
	f.pool.Lock()
	f.starting--
	if s != nil {
		delete(f.warming, s.pid)
	}
	// Its zygote stopped meanwhile (closed, or restarted): the spare went with it.
	stopped := s != nil && (s.gen != f.gen || f.zygote == nil)
	// The executor rested while it warmed up: a cold one replaces it.
	cooled := err == nil && !stopped && !cold && f.resting
	if err == nil && !stopped && !cooled {
		f.spares = append(f.spares, s)
		s = nil
	}
	if cooled {
		f.starting++
	}
	f.pool.Unlock()
	f.mu.Unlock()
	if s != nil {
		s.discard()
	}
	if cooled {
		go f.startSpare(true)
	}
	switch {
	case errors.Is(err, errNoZygote):
		f.cfg.Log.V(1).Info("no spare while the zygote is down")
	case err != nil && stopped:
		f.cfg.Log.V(1).Info("a spare went with its zygote", "reason", err.Error())
	case err != nil:
		f.cfg.Log.Error(err, "a spare did not start")
	}
}

// forkSpare asks the zygote for a spare; it answers the spare's pid and socket.
func (f *Fork) forkSpare(cold bool) (*spare, error) {
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer statusW.Close()
	s, err := f.requestSpare(statusW, cold)
	if err != nil {
		statusR.Close()
		return nil, err
	}
	s.status = statusR
	return s, nil
}

// requestSpare asks the zygote for a spare confined ahead like the latest execution, cold or
// warm.
func (f *Fork) requestSpare(statusW *os.File, cold bool) (*spare, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.zygote == nil {
		return nil, errNoZygote
	}
	f.pool.Lock()
	like := f.like
	f.pool.Unlock()
	req := forkRequest{Op: "spare", Cold: cold}
	if like != nil {
		// Made for this zygote: the programs protect its pid.
		network, budget := like.network, like.Budget != ""
		fl, err := f.spawn.filtersFor(network, budget, f.zygote.Process.Pid)
		if err != nil {
			return nil, err
		}
		req.Confine = &fl
	}
	data, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	pid, conn, err := f.ask(data, unix.UnixRights(int(statusW.Fd())))
	if err != nil {
		return nil, err
	}
	return &spare{pid: pid, conn: conn, gen: f.gen, filters: req.Confine, cold: cold}, nil
}

// The control sockets are blocking: a signal to the thread (the Go runtime preempts with
// SIGURG) interrupts a call, which is then made again.
func ignoringEINTR(f func() error) error {
	_, err := ignoringEINTR2(func() (int, error) { return 0, f() })
	return err
}

func ignoringEINTR2(f func() (int, error)) (int, error) {
	for {
		n, err := f()
		if !errors.Is(err, unix.EINTR) {
			return n, err
		}
	}
}
