package executor

import (
	"github.com/pyexec/pyexec/internal/proc"
	"github.com/pyexec/pyexec/internal/reaper"

	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"

	"github.com/pyexec/pyexec/internal/confine"
	"github.com/pyexec/pyexec/internal/container"
	"github.com/pyexec/pyexec/internal/python"
	"github.com/pyexec/pyexec/pkg/api"
)

// ModeSpawn starts a fresh interpreter for every execution.
const ModeSpawn = "spawn"

// SpawnConfig configures the spawn executor.
type SpawnConfig struct {
	// Python is the interpreter from preflight (its real executable, not a shim).
	Python string
	// PackagesDir holds the packages tree (see internal/packages); its current tree goes on
	// PYTHONPATH, ahead of system site-packages.
	PackagesDir string
	// WorkDir holds one directory per running execution; it must be writable.
	WorkDir string
	// Path is the PATH of executions.
	Path string
	// Reaper starts and tracks the supervisors; nil starts them directly (tests).
	Reaper *reaper.Reaper
	// Isolation confines every execution before its code runs.
	Isolation Isolation
	// ShmDir is a shared-memory directory of the runner's own (its container's /dev/shm),
	// where what an execution or a session leaves is removed once it ends (see shmJanitor);
	// empty: not watched (a /dev/shm that others share, as on a host).
	ShmDir string
	// CPUs are what the code may use together (the runner's CPU limit, container.CPULimit);
	// 0: as many as the machine has. Each execution's BLAS threads are its share (see share).
	CPUs float64
	// Memory is the runner's memory cgroup (its container's: container.FindMemoryCgroup); nil
	// when none was found. MemoryHighWater is the percentage of its limit past which the
	// memory watchdog ends the largest tree (see memoryWatchdog); 0, or no limit: no watchdog.
	Memory          *container.MemoryCgroup
	MemoryHighWater int
	Log             logr.Logger
}

// Spawn runs every execution in a fresh interpreter, under the embedded runner that
// supervises its process tree.
type Spawn struct {
	cfg SpawnConfig

	rulesMu sync.Mutex
	rules   *confine.Rules // see systemRules

	running atomic.Int32 // executions and session calls under way (see share)
	shm     *shmJanitor
	// trees are the executions' and sessions' process trees, which watchdog watches.
	trees    *trees
	watchdog *memoryWatchdog
	// listings holds a token per listing of session files that walks (see listing).
	listings chan struct{}
}

// NewSpawn checks the config and creates the work directory.
func NewSpawn(cfg SpawnConfig) (*Spawn, error) {
	if cfg.Python == "" {
		return nil, errors.New("spawn executor: no interpreter")
	}
	if fi, err := os.Stat(cfg.WorkDir); err != nil || !fi.IsDir() {
		if err := os.MkdirAll(cfg.WorkDir, WorkRootMode); err != nil {
			return nil, fmt.Errorf("spawn executor: work dir: %w", err)
		}
	}
	shm, err := newShmJanitor(cfg.ShmDir, cfg.Log)
	if err != nil {
		return nil, fmt.Errorf("spawn executor: watching %s: %w", cfg.ShmDir, err)
	}
	ts := newTrees()
	return &Spawn{cfg: cfg, shm: shm, trees: ts, watchdog: watchMemory(cfg.Memory, cfg.MemoryHighWater, ts, cfg.Log),
		listings: make(chan struct{}, maxConcurrentListings)}, nil
}

// Mode implements the server's mode report.
func (s *Spawn) Mode() string { return ModeSpawn }

// status is one line the runner writes on fd 3.
type status struct {
	ExitCode    *int `json:"exit_code"`
	Signal      int  `json:"signal"`
	MemoryError bool `json:"memory_error"`
	// ProcessLimit: the process budget refused the code a process or a thread.
	ProcessLimit bool `json:"process_limit"`
	// CodeNS is how long the code ran, as the code's process reported (see api.StageCode).
	CodeNS *int64 `json:"code_ns"`
}

// Execute implements Executor: the runner is a fresh interpreter, the supervisor of the code.
func (s *Spawn) Execute(ctx context.Context, req Request, out Output) (api.ExecuteResult, error) {
	res, finish, err := s.ExecuteDeferred(ctx, req, out)
	finish()
	return res, err
}

// ExecuteDeferred implements Deferred.
func (s *Spawn) ExecuteDeferred(ctx context.Context, req Request, out Output) (api.ExecuteResult, func(), error) {
	var later afterwards
	e, err := s.begin(req, out, 0)
	if err != nil {
		return noResult(req), later.run, err
	}
	later.add(e.close)
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return noResult(req), later.run, err
	}
	later.add(func() { statusR.Close() })

	// -s: no user site-packages, which would be in the code's HOME (its working directory).
	// The supervisor starts in the execution's directory, with the server's environment only:
	// the request's env and files reach the code's process alone (env.json, work/).
	extra := []*os.File{statusW} // fd 3
	if e.ruleset != nil {
		extra = append(extra, e.ruleset) // fd 4
	}
	cmd, started, err := pythonCommand(s.cfg.Python, spawnSource, extra, s.paramsOf(e))
	if err != nil {
		statusW.Close()
		return noResult(req), later.run, err
	}
	cmd.Dir = e.dir
	cmd.Env = s.env(e.work, e.tree, e.baseEnv())
	cmd.Stdin = bytes.NewReader(req.Stdin)
	cmd.Stdout, cmd.Stderr = e.stdout, e.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// Output pipes held by a process that escaped every kill must not hold the result.
	cmd.WaitDelay = 2 * time.Second
	if s.cfg.Reaper != nil {
		err = s.cfg.Reaper.Start(cmd)
	} else {
		err = cmd.Start()
	}
	started(err)
	statusW.Close()
	if err != nil {
		return noResult(req), later.run, fmt.Errorf("starting %s: %w", s.cfg.Python, err)
	}
	e.handed = time.Now() // the interpreter is started; its source and params are on their way
	pid := cmd.Process.Pid
	e.watch(ctx, pid)

	statusDone := make(chan status, 1)
	go func() { statusDone <- readStatus(statusR) }()
	waitErr := cmd.Wait()
	e.answered = time.Now()
	if s.cfg.Reaper != nil {
		s.cfg.Reaper.Done(pid)
	}
	var st status
	select {
	case st = <-statusDone:
	case <-time.After(2 * time.Second):
	}
	res, _ := s.end(e, st, cmd.ProcessState, waitErr)
	return res, later.run, nil
}

// finish fills the exit fields: a kill by pyexec first, then the runner's status line, then
// what became of the runner itself.
func (s *Spawn) finish(res *api.ExecuteResult, killedFor string, st status, ps *os.ProcessState, waitErr error) {
	switch {
	case killedFor != "":
		res.Reason = killedFor
		res.ExitCode = 128 + int(unix.SIGKILL)
		res.Signal = unix.SignalName(unix.SIGKILL)
		res.TimedOut = killedFor == api.ReasonTimeout
	case st.ExitCode != nil:
		res.ExitCode = *st.ExitCode
		res.Reason = api.ReasonExit
		if st.Signal != 0 {
			res.Reason = api.ReasonSignal
			res.Signal = unix.SignalName(syscall.Signal(st.Signal))
		}
		res.Reason = limitReason(res.Reason, res.ExitCode, st.MemoryError, st.ProcessLimit)
	default:
		// The runner itself did not report: it was killed, or crashed before the code ran.
		res.Reason = api.ReasonExit
		res.ExitCode = 1
		if ps != nil {
			if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				res.Reason = api.ReasonSignal
				res.ExitCode = 128 + int(ws.Signal())
				res.Signal = unix.SignalName(ws.Signal())
			} else if ps.ExitCode() > 0 {
				res.ExitCode = ps.ExitCode()
			}
		}
		if st.MemoryError {
			res.Reason = api.ReasonMemoryLimit
		}
		s.cfg.Log.V(1).Info("runner ended without status", "id", res.ID, "err", fmt.Sprint(waitErr))
	}
}

// limitReason is the reason of an execution that ended by itself (reason: exit or signal):
// memory_limit when a MemoryError ended the code, process_limit when the code failed after its
// budget refused it a process or a thread (code that coped with it and exited 0 just exited).
func limitReason(reason string, exitCode int, memoryError, processLimit bool) string {
	switch {
	case memoryError:
		return api.ReasonMemoryLimit
	case processLimit && exitCode != 0:
		return api.ReasonProcessLimit
	}
	return reason
}

// envFile, in an execution's directory, holds the request's env as a JSON object.
const envFile = "env.json"

// prepare fills the execution's directory — req.Dir, or one it makes when req.Dir is empty
// (own says so) — with code.py and env.json beside work/, mpl/ and the outputs file, and the
// input files in work/.
func (s *Spawn) prepare(req Request) (dir string, own bool, err error) {
	if req.Dir == "" {
		if dir, err = MakeDir(s.cfg.WorkDir, -1); err != nil {
			return "", false, err
		}
		own = true
	} else {
		if err := checkGivenDir(s.cfg.WorkDir, req.Dir); err != nil {
			return "", false, err
		}
		dir = req.Dir
	}
	work := filepath.Join(dir, "work")
	dirs := []string{work, filepath.Join(dir, mplDir)}
	if req.session {
		dirs = append(dirs, filepath.Join(dir, branchesDir))
	}
	for _, d := range dirs {
		if err := os.Mkdir(d, 0o700); err != nil {
			return dir, own, err
		}
	}
	if req.Code != "" { // a session's code comes with each of its calls
		if err := writeNewFile(filepath.Join(dir, "code.py"), []byte(req.Code)); err != nil {
			return dir, own, err
		}
	}
	// The request's env goes to the code's process through a file, never through the
	// supervisor's environment or the zygote: a value (an API key) must not stay in the memory
	// of a process that later executions are forked from.
	env, err := json.Marshal(req.Env)
	if err != nil {
		return dir, own, err
	}
	if err := writeNewFile(filepath.Join(dir, envFile), env); err != nil {
		return dir, own, err
	}
	if err := writeNewFile(filepath.Join(dir, outputsFile), nil); err != nil {
		return dir, own, err
	}
	return dir, own, writeFiles(work, req.Files)
}

// writeNewFile writes one of the files the runner gives an execution (mode 0600) with three
// system calls: os.WriteFile's file would first try Go's poller (a regular file is refused)
// and switch its mode back, five calls more, for each of them in each execution.
func writeNewFile(path string, data []byte) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	for len(data) > 0 {
		n, werr := unix.Write(fd, data)
		if werr == unix.EINTR {
			continue
		}
		if werr != nil {
			err = werr
			break
		}
		data = data[n:]
	}
	if cerr := unix.Close(fd); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return &os.PathError{Op: "write", Path: path, Err: err}
	}
	return nil
}

// writeFiles writes the input files, confined to work by os.Root.
func writeFiles(work string, files []File) error {
	if len(files) == 0 {
		return nil
	}
	root, err := os.OpenRoot(work)
	if err != nil {
		return err
	}
	defer root.Close()
	for _, f := range files {
		if d := filepath.Dir(f.Path); d != "." {
			if err := root.MkdirAll(d, 0o755); err != nil {
				return &FileError{Path: f.Path, Err: err}
			}
		}
		if err := writeFile(root, f); err != nil {
			return &FileError{Path: f.Path, Err: err}
		}
	}
	return nil
}

// writeFile writes one input file, or replaces a regular file's content. In a session the
// code had the directory before: what it left at the path may be a FIFO, which would block an
// open for writing (O_NONBLOCK: it fails, or opens and is refused unwritten), or a symlink,
// which is not followed.
func writeFile(root *os.Root, f File) error {
	file, err := root.OpenFile(f.Path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0o644)
	if errors.Is(err, syscall.ENXIO) { // a FIFO nobody reads
		return errors.New("something other than a regular file is in the way")
	}
	if err != nil {
		return err
	}
	defer file.Close()
	if st, err := file.Stat(); err != nil || !st.Mode().IsRegular() {
		return errors.New("something other than a regular file is in the way")
	}
	_, err = file.Write(f.Data)
	return err
}

// FileError is an input file that cannot be written where it asks to be (e.g. "a/b" after a
// file "a"): the request's fault, a 400.
type FileError struct {
	Path string
	Err  error
}

func (e *FileError) Error() string { return fmt.Sprintf("files: %s: %v", e.Path, e.Err) }
func (e *FileError) Unwrap() error { return e.Err }

// params are the runner's: the code's file, its limits, and its confinement, whose Landlock
// ruleset comes as a file descriptor when landlock is set. The process limit is the tree's own
// budget ("tasks") where the kernel lets the supervisor count it, else RLIMIT_NPROC ("nproc").
func (s *Spawn) params(req Request, dir string, spec *confineSpec, landlock, session bool, threads int) string {
	limits := map[string]any{"nproc": req.MaxProcesses, "nofile": codeOpenFiles()}
	if req.MemoryLimitMB > 0 {
		limits["memory_bytes"] = int64(req.MemoryLimitMB) << 20
		limits["as_bytes"] = AddressSpaceLimit(req.MemoryLimitMB)
	}
	if req.MaxFileBytes > 0 {
		limits["fsize_bytes"] = req.MaxFileBytes
	}
	switch {
	case req.MaxProcesses <= 0:
		delete(limits, "nproc")
	case spec != nil && spec.Budget != "":
		// The supervisor counts the tree's processes and threads (pyexec_runner's tree.Tree): the uid's
		// count, which every execution shares, must not stop one before its own budget does.
		delete(limits, "nproc")
		limits["tasks"] = req.MaxProcesses
	}
	p := map[string]any{"code": filepath.Join(dir, "code.py"), "env": filepath.Join(dir, envFile), "outputs": filepath.Join(dir, outputsFile), "cwd": filepath.Join(dir, "work"),
		"limits": limits, "confine": spec, "landlock": landlock, "threads": threads}
	if session {
		p["session"] = true
		delete(p, "code")
	}
	b, _ := json.Marshal(p)
	return string(b)
}

// AddressSpaceLimit is RLIMIT_AS of each of the code's processes under a memory limit of mb: a
// backstop 16 GiB above it. The supervisor holds the tree to the limit by its resident memory;
// address space that is reserved and never touched must not fail first — each thread reserves
// its stack (8 MiB) and a malloc arena (64 MiB), and OpenBLAS its buffers: 32 threads of numpy
// reserve about 4 GiB. An allocation larger than the backstop still fails at once
// (MemoryError).
func AddressSpaceLimit(mb int) int64 { return int64(mb)<<20 + 16<<30 }

// codeOpenFiles is the code's limit of open files, soft and hard. The kernel counts the
// descriptors in flight on Unix sockets per uid and refuses to pass more once the count is over
// the sender's soft limit: code of the server's uid that filled it would keep the server, the
// zygote and the supervisors (whose soft limits are their hard ones) from passing any execution
// its descriptors. Under this limit it cannot: the count stops at the code's limit, a quarter of
// theirs at most.
func codeOpenFiles() uint64 {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil || lim.Max == unix.RLIM_INFINITY {
		return maxCodeOpenFiles
	}
	return max(min(maxCodeOpenFiles, lim.Max/4), 64)
}

// maxCodeOpenFiles is the most files code may have open.
const maxCodeOpenFiles = 4096

// CodeUser is the user name code sees in USER and LOGNAME.
const CodeUser = "pyexec"

// env is the scrubbed environment of an execution: an allowlist, then the request's env.
func (s *Spawn) env(work, tree string, extra map[string]string) []string {
	// USER and LOGNAME: the runner's uid, picked per pod, has no entry in /etc/passwd, and
	// getpass.getuser() (and what calls it) looks at them first.
	env := append(python.Env(s.cfg.Path, work), "TMPDIR="+work, "PYTHONUNBUFFERED=1", "USER="+CodeUser, "LOGNAME="+CodeUser)
	if tree != "" {
		env = append(env, "PYTHONPATH="+tree)
	}
	keys := make([]string, 0, len(extra))
	for k := range extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+extra[k]) // exec.Cmd keeps the last of duplicate keys
	}
	return env
}

func readStatus(r io.Reader) status {
	var st status
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var line status
		if json.Unmarshal(sc.Bytes(), &line) != nil {
			continue
		}
		st.MemoryError = st.MemoryError || line.MemoryError
		st.ProcessLimit = st.ProcessLimit || line.ProcessLimit
		if line.ExitCode != nil {
			st.ExitCode, st.Signal, st.CodeNS = line.ExitCode, line.Signal, line.CodeNS
		}
	}
	return st
}

// killer kills an execution's tree once, remembering why.
type killer struct {
	mu       sync.Mutex
	pid      int
	why      string
	queued   string        // a kill asked for before the pid was known
	killed   chan struct{} // closed by the kill
	disarmed bool          // the execution is over: no kill any more
	// interrupt, when set, comes first: the tree is killed only if the execution is still not
	// over grace later (a session's call: the code may stop and keep its session).
	interrupt func()
	grace     time.Duration
	graceKill *time.Timer
	// hardKill, when set, kills the tree instead of killing pid's (a session's processes).
	hardKill func()
	hard     bool // the tree was killed
}

// disarm ends the killer's watch over an execution that is over: a timer or an output cap
// that fires later kills nothing (in fork mode the supervisor may already run the next
// execution). It reports whether a kill happened.
func (k *killer) disarm() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.disarmed = true
	if k.graceKill != nil {
		k.graceKill.Stop()
	}
	return k.why != ""
}

// killedTree says the tree was killed, not only interrupted.
func (k *killer) killedTree() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.hard
}

// done is closed once the tree has been killed.
func (k *killer) done() <-chan struct{} {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.killed == nil {
		k.killed = make(chan struct{})
	}
	return k.killed
}

func (k *killer) setPID(pid int) {
	k.mu.Lock()
	k.pid = pid
	queued := k.queued
	k.mu.Unlock()
	if queued != "" {
		k.kill(queued)
	}
}

func (k *killer) kill(why string) {
	k.mu.Lock()
	if k.why != "" || k.disarmed {
		k.mu.Unlock()
		return
	}
	if k.pid == 0 {
		k.queued = why
		k.mu.Unlock()
		return
	}
	k.why = why
	if k.interrupt != nil {
		k.graceKill = time.AfterFunc(k.grace, k.killTree)
		k.mu.Unlock()
		k.interrupt()
		return
	}
	k.mu.Unlock()
	k.killTree()
}

// killTree kills the tree, unless the execution is over by now.
func (k *killer) killTree() {
	k.mu.Lock()
	if k.hard || (k.disarmed && k.interrupt != nil) {
		k.mu.Unlock()
		return
	}
	k.hard = true
	pid := k.pid
	if k.killed == nil {
		k.killed = make(chan struct{})
	}
	killed, hardKill := k.killed, k.hardKill
	k.mu.Unlock()
	if hardKill != nil {
		hardKill()
	} else {
		proc.KillTree(pid)
	}
	close(killed)
}

func (k *killer) reason() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.why
}

// removeAll removes an execution's directory even where the code took away the permissions of
// its own directories, in a tree of any depth.
func removeAll(dir string) {
	if os.RemoveAll(dir) == nil {
		return
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EACCES) {
		// The code took its permissions from dir itself: given back through a descriptor of
		// dir (O_PATH needs none), so that no path is looked up again between the two.
		if p, perr := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); perr == nil {
			if unix.Chmod("/proc/self/fd/"+strconv.Itoa(p), 0o700) == nil {
				fd, err = unix.Openat(p, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			}
			unix.Close(p)
		}
	}
	if err == nil {
		unlockTree(fd, 0)
		unix.Close(fd)
	}
	_ = os.RemoveAll(dir) // by descriptors too: deeper than PATH_MAX is no obstacle
}

// unlockTree gives the owner back every permission on the directories below the directory open
// as fd. It goes by descriptors, not paths: a tree deeper than PATH_MAX has no path to them.
func unlockTree(fd, depth int) {
	if depth > 10000 {
		return
	}
	dup, err := unix.Dup(fd)
	if err != nil {
		return
	}
	d := os.NewFile(uintptr(dup), "dir")
	entries, _ := d.ReadDir(-1)
	d.Close()
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		_ = unix.Fchmodat(fd, e.Name(), 0o700, 0)
		child, err := unix.Openat(fd, e.Name(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		unlockTree(child, depth+1)
		unix.Close(child)
	}
}
