// Package runner is the runner of a pod — the process that holds the zygote, the spares, the
// supervisors and every execution and session — and the protocol by which the server drives
// it. In a pod the runner is a container of its own (pyexec runner) with a uid of its own;
// outside Kubernetes pyexec serve starts it as a child process.
//
// # The protocol
//
// Every message is a frame: a 4-byte big-endian length, then one JSON object of the types
// below. Both ends check what they read (Validate) and refuse a frame larger than the limit
// the handshake set. Protocol is the version; the two ends must speak the same one.
//
// The control connection is the runner's: it dials the server's runner socket (in a pod), or
// holds one end of a socket pair on fd 3 (a child). It carries the handshake — the runner's
// Hello, the server's Config, the runner's Ready — and then, from the server, one byte and one
// file descriptor per channel: the runner's end of a socket pair the server made. The server
// closes the control connection to stop the runner; the runner closing it (or dying) ends
// every execution and session.
//
// A channel carries one request at a time: a Request from the server, then Replies from the
// runner until the last one (Result, ResultStream, Session, Files, FileStream, Status, Stats,
// Done or Error). A result is the API's JSON body of it: in a frame, {"result":R}, when it is
// small; else a ResultStream (its figures, and the body's length) followed by the body's bytes
// as they are, which the server writes to its client as it reads them. A session's file comes
// the same way, a FileStream followed by its bytes. While an execution runs the runner may
// send Output replies, and the server may send a Request with Cancel, which kills the
// execution and still gets its Result. An Execute's last reply is followed by Done once the
// runner has emptied its directory (the result goes first, the cleaning after): the server
// then removes the directory. Channels are kept for the next request.
package runner

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"time"

	"github.com/pyexec/pyexec/internal/executor"
	"github.com/pyexec/pyexec/pkg/api"
)

// Protocol is the version of the protocol between pyexec serve and pyexec runner. It changes
// when a message changes meaning; the server refuses a runner that speaks another. A field
// added to a message, which the other end's older code ignores and whose absence means what it
// did before, does not change it: Config.MemoryHighWater, Stats' figures of the trees and of
// the memory cgroup, SessionState.EndedForMemory, the Total and Partial of a Files reply (an
// older runner's listing counts as complete, its Total as the files it lists). Protocol 2
// streams large results (ResultStream). Execute's Timings and SentAt are such fields, and its
// MaxTimeoutMS and Installs.
const Protocol = 2

// Hello is the runner's first message on the control connection.
type Hello struct {
	Protocol int `json:"protocol"`
	// Version is the runner's pyexec version, for the logs.
	Version string `json:"version"`
	PID     int    `json:"pid"`
	UID     int    `json:"uid"`
	GID     int    `json:"gid"`
	// LandlockABI, Seccomp and ProcessBudget are what the runner's kernel offers
	// (confine.Probe, uncapped).
	LandlockABI   int  `json:"landlock_abi"`
	Seccomp       bool `json:"seccomp"`
	ProcessBudget bool `json:"process_budget,omitempty"`
}

// Config is the server's answer to Hello: how the runner runs code. A Config with Refused set
// says why the server refuses the runner, and the server then closes the connection.
type Config struct {
	Protocol int    `json:"protocol"`
	Refused  string `json:"refused,omitempty"`

	// Python is the interpreter from the preflight report.
	Python string `json:"python"`
	// Mode is executor.ModeFork or executor.ModeSpawn.
	Mode        string   `json:"mode"`
	Preload     []string `json:"preload"`
	Warm        int      `json:"warm"`
	WarmupCode  string   `json:"warmup_code"`
	Supervisors int      `json:"supervisors"`
	// RestAfter is how long fork mode waits without an execution before it rests (0: never;
	// see executor.ForkConfig).
	RestAfter time.Duration `json:"rest_after,omitempty"`
	// WorkDir is the work root, made by the server; PackagesDir holds the packages trees.
	WorkDir     string `json:"work_dir"`
	PackagesDir string `json:"packages_dir"`
	// Path is executions' PATH.
	Path string `json:"path"`
	// LandlockABI, Seccomp and ProcessBudget are the confinement to apply: at most what both
	// kernels offer (a runner of an older protocol says nothing of a budget: it has none).
	LandlockABI   int  `json:"landlock_abi"`
	Seccomp       bool `json:"seccomp"`
	ProcessBudget bool `json:"process_budget,omitempty"`
	// ProtectPIDs are processes code must not signal besides the runner's own: the server,
	// when it is in the runner's PID namespace.
	ProtectPIDs []int `json:"protect_pids,omitempty"`
	// Cleanup are directories of the work root left over from before (a runner that died):
	// the runner empties them before it is ready, and the server removes them.
	Cleanup []string `json:"cleanup,omitempty"`
	// MemoryHighWater is the percentage of the runner's memory limit (its container's) past
	// which its memory watchdog ends the largest execution or session; 0: none (what a server
	// that says nothing of it asks).
	MemoryHighWater int `json:"memory_high_water,omitempty"`
	// MaxFrame is the largest frame either end sends or reads after the handshake.
	MaxFrame int64 `json:"max_frame"`
}

// Ready is the runner's answer to Config: it runs code now, or Error says why it cannot.
type Ready struct {
	// Mode is the executor's mode: fork, or spawn while the zygote is down.
	Mode  string `json:"mode"`
	Error string `json:"error,omitempty"`
}

// Request is one message of the server on a channel: exactly one field is set.
type Request struct {
	Execute        *Execute        `json:"execute,omitempty"`
	CreateSession  *CreateSession  `json:"create_session,omitempty"`
	WarmSession    *CreateSession  `json:"warm_session,omitempty"`
	SessionExecute *SessionExecute `json:"session_execute,omitempty"`
	SessionFiles   *SessionRef     `json:"session_files,omitempty"`
	SessionFile    *SessionFile    `json:"session_file,omitempty"`
	CloseSession   *SessionRef     `json:"close_session,omitempty"`
	SessionStatus  *SessionStatus  `json:"session_status,omitempty"`
	// Checkpoint takes a checkpoint of a session (Reply.Checkpoint); Checkpoints lists them
	// (Reply.Checkpoints); Restore and DeleteCheckpoint answer Done.
	Checkpoint       *SessionRef        `json:"checkpoint,omitempty"`
	Checkpoints      *SessionRef        `json:"checkpoints,omitempty"`
	Restore          *SessionCheckpoint `json:"restore,omitempty"`
	DeleteCheckpoint *SessionCheckpoint `json:"delete_checkpoint,omitempty"`
	// Fork forks a session into branches (Reply.Forked).
	Fork    *Fork         `json:"fork,omitempty"`
	Stats   *StatsRequest `json:"stats,omitempty"`
	Cleanup *Cleanup      `json:"cleanup,omitempty"`
	// Shutdown stops the executor (the zygote, its spares, the session started ahead of time)
	// and empties their directories; Done answers once it has.
	Shutdown *Shutdown `json:"shutdown,omitempty"`
	// Cancel kills the execution that runs on the channel; its Result still comes.
	Cancel *Cancel `json:"cancel,omitempty"`
}

// Reply is one message of the runner on a channel: exactly one field is set.
type Reply struct {
	Output *Output            `json:"output,omitempty"`
	Result *api.ExecuteResult `json:"result,omitempty"`
	// ResultStream is a large result: the body follows the frame.
	ResultStream *ResultStream       `json:"result_stream,omitempty"`
	Session      *SessionInfo        `json:"session,omitempty"`
	Files        *api.SessionFiles   `json:"files,omitempty"`
	FileStream   *FileStream         `json:"file_stream,omitempty"`
	Status       *SessionStatusReply `json:"status,omitempty"`
	Checkpoint   *api.Checkpoint     `json:"checkpoint,omitempty"`
	Checkpoints  *api.Checkpoints    `json:"checkpoints,omitempty"`
	Forked       *Forked             `json:"forked,omitempty"`
	Stats        *Stats              `json:"stats,omitempty"`
	Done         *Done               `json:"done,omitempty"`
	Error        *Error              `json:"error,omitempty"`

	// open are a Result's files, open, whose contents the runner sends with it; file is the
	// open file a FileStream sends.
	open *executor.OpenFiles
	file executor.Body
	// body is, in the server, the body that follows a ResultStream or a FileStream.
	body *streamedBody
}

// ResultStream is a result whose body, Bytes of the API's JSON, newline included, follows its
// frame on the channel as raw bytes. Head is the result without the contents of its stdout,
// stderr, files and outputs: their sizes (StdoutBytes, StderrBytes, the files'), paths and
// count.
type ResultStream struct {
	Bytes       int64             `json:"bytes"`
	Head        api.ExecuteResult `json:"head"`
	StdoutBytes int               `json:"stdout_bytes"`
	StderrBytes int               `json:"stderr_bytes"`
}

// Execute runs code once, in the directory Dir of the work root that the server made.
type Execute struct {
	ID      string            `json:"id"`
	Dir     string            `json:"dir,omitempty"` // empty in a session's call
	Code    string            `json:"code"`
	Stdin   []byte            `json:"stdin,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	Files   []File            `json:"files,omitempty"`
	Network bool              `json:"network,omitempty"`
	Limits  Limits            `json:"limits"`
	// Stream asks for Output replies as the code writes.
	Stream bool `json:"stream,omitempty"`
	// Timings are the server's stages of the execution so far (parse, queue), in
	// milliseconds, which the result's timings_ms starts with; SentAt is when the server sent
	// it, on CLOCK_MONOTONIC in nanoseconds, from which the runner tells the hop.
	Timings map[string]float64 `json:"timings,omitempty"`
	SentAt  int64              `json:"sent_at,omitempty"`
	// MaxTimeoutMS and Installs are the server's, for the result's hints
	// (executor.Request's MaxTimeout and Installs).
	MaxTimeoutMS int64 `json:"max_timeout_ms,omitempty"`
	Installs     bool  `json:"installs,omitempty"`
	// Inspect, in a session's call, lists the session's variables (executor.Request.Inspect).
	// A runner older than it runs the call's code instead ("-", a SyntaxError that changes
	// nothing), whose output is no listing: the server then says the runner cannot list them.
	Inspect bool `json:"inspect,omitempty"`
	// OutputBudgetChars is executor.Request's: 0, none.
	OutputBudgetChars int `json:"output_budget_chars,omitempty"`
	// Checkpoint, in a session's call, is executor.Request's.
	Checkpoint bool `json:"checkpoint,omitempty"`
}

// File is an input file.
type File struct {
	Path string `json:"path"`
	Data []byte `json:"data"`
}

// Limits are executor.Limits on the wire.
type Limits struct {
	TimeoutMS        int64 `json:"timeout_ms"`
	MemoryLimitMB    int   `json:"memory_limit_mb"`
	MaxOutputBytes   int   `json:"max_output_bytes"`
	MaxProcesses     int   `json:"max_processes"`
	MaxFileBytes     int64 `json:"max_file_bytes"`
	MaxFilesOut      int   `json:"max_files_out"`
	MaxFilesOutBytes int64 `json:"max_files_out_bytes"`
}

// Output is what the code wrote on one stream, as it came.
type Output struct {
	Stream string `json:"stream"` // api.EventStdout or api.EventStderr
	Data   []byte `json:"data"`
}

// CreateSession starts a session in Dir. As WarmSession it asks for a session started ahead
// of time like it (its ID, Env and Files are ignored).
type CreateSession struct {
	ID      string            `json:"id"`
	Dir     string            `json:"dir"`
	Env     map[string]string `json:"env,omitempty"`
	Files   []File            `json:"files,omitempty"`
	Network bool              `json:"network,omitempty"`
	Limits  Limits            `json:"limits"`
	// The session's checkpoints (executor.SessionRequest's): at most MaxCheckpoints, each let
	// go CheckpointIdleMS after its creation or last restore (0: never), each keeping at most
	// MaxCheckpointBytes of files (0: no bound).
	MaxCheckpoints     int   `json:"max_checkpoints,omitempty"`
	CheckpointIdleMS   int64 `json:"checkpoint_idle_ms,omitempty"`
	MaxCheckpointBytes int64 `json:"max_checkpoint_bytes,omitempty"`
}

// SessionInfo answers CreateSession: the session runs in Dir, which is the request's, or a
// session's started ahead of time (the request's Dir then went to the next one of those).
type SessionInfo struct {
	Dir         string `json:"dir"`
	MemoryBytes int64  `json:"memory_bytes"`
}

// SessionExecute runs a call in a session; Execute.Dir is empty.
type SessionExecute struct {
	Session string  `json:"session"`
	Execute Execute `json:"execute"`
}

// SessionRef names a session.
type SessionRef struct {
	Session string `json:"session"`
}

// Fork forks Session into one branch for each of IDs, the new sessions' ids
// (executor.LocalSession.Branch).
type Fork struct {
	Session string   `json:"session"`
	IDs     []string `json:"ids"`
}

// Forked answers a Fork: each branch, in the order of its IDs.
type Forked struct {
	Sessions []SessionInfo `json:"sessions"`
}

// SessionCheckpoint names a checkpoint of a session.
type SessionCheckpoint struct {
	Session    string `json:"session"`
	Checkpoint string `json:"checkpoint"`
}

// SessionFile reads one file of a session's working directory, of at most Max bytes.
type SessionFile struct {
	Session string `json:"session"`
	Path    string `json:"path"`
	Max     int64  `json:"max"`
}

// FileStream answers SessionFile: the file's Bytes follow its frame on the channel as raw
// bytes, read from the open file as the server takes them.
type FileStream struct {
	Bytes int64 `json:"bytes"`
}

// SessionStatus asks whether sessions still run, and their memory.
type SessionStatus struct {
	Sessions []string `json:"sessions"`
}

// SessionStatusReply answers SessionStatus, by session; a session the runner does not know has
// ended.
type SessionStatusReply struct {
	Sessions map[string]SessionState `json:"sessions"`
}

// SessionState is what SessionStatus says of one session.
type SessionState struct {
	Ended       bool  `json:"ended"`
	MemoryBytes int64 `json:"memory_bytes"`
	// EndedForMemory: the runner's memory watchdog ended it.
	EndedForMemory bool `json:"ended_for_memory,omitempty"`
}

// StatsRequest asks for the runner's figures.
type StatsRequest struct{}

// Stats are the runner's figures, for the server's metrics.
type Stats struct {
	Mode      string `json:"mode"`
	Fallbacks int64  `json:"fallbacks"`
	WarmHits  int64  `json:"warm_hits"`
	// Reaped and Killed are the orphans the runner reaped and the escaped processes it killed.
	Reaped int64 `json:"reaped"`
	Killed int64 `json:"killed"`
	// RSS and PSS are the memory of the runner and every process below it, in bytes.
	RSS int64 `json:"rss"`
	PSS int64 `json:"pss"`
	// Trees are the executions running and the sessions open; TreeTasks their processes and
	// threads, TreeMemory their memory in bytes (executor.TreeStats). A runner that says
	// nothing of them (an older one) reads as 0.
	Trees      int   `json:"trees,omitempty"`
	TreeTasks  int   `json:"tree_tasks,omitempty"`
	TreeMemory int64 `json:"tree_memory,omitempty"`
	// The runner's memory cgroup, in bytes: its usage, working set and limit (0: none), the
	// memory watchdog's mark (0: no watchdog) and the trees the watchdog ended.
	MemoryUsage      int64 `json:"memory_usage,omitempty"`
	MemoryWorkingSet int64 `json:"memory_working_set,omitempty"`
	MemoryLimit      int64 `json:"memory_limit,omitempty"`
	MemoryHighWater  int64 `json:"memory_high_water,omitempty"`
	WatchdogEnded    int64 `json:"watchdog_ended,omitempty"`
}

// Cleanup empties directories of the work root that the server is done with.
type Cleanup struct {
	Dirs []string `json:"dirs"`
}

// Shutdown stops the executor.
type Shutdown struct{}

// Cancel kills the running execution.
type Cancel struct{}

// Done answers a request that has nothing else to say.
type Done struct{}

// Error is a request the runner did not carry out.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Path is the input file of an ErrFile.
	Path string `json:"path,omitempty"`
}

// Error codes, each the wire form of an error of internal/executor that callers tell apart.
const (
	ErrSessionBusy  = "session_busy"   // executor.ErrSessionBusy
	ErrSessionEnded = "session_ended"  // executor.ErrSessionEnded
	ErrFile         = "file"           // *executor.FileError
	ErrFileNotFound = "file_not_found" // executor.ErrFileNotFound
	ErrFileTooLarge = "file_too_large" // executor.ErrFileTooLarge
	ErrBadRequest   = "bad_request"    // a request the runner refuses to read

	ErrCheckpointNotFound = "checkpoint_not_found" // executor.ErrCheckpointNotFound
	ErrTooManyCheckpoints = "too_many_checkpoints" // executor.ErrTooManyCheckpoints
	ErrCheckpointTooLarge = "checkpoint_too_large" // executor.ErrCheckpointTooLarge
	ErrNotForkable        = "not_forkable"         // executor.ErrNotForkable
	ErrForkTooLarge       = "fork_too_large"       // executor.ErrForkTooLarge
	ErrTooManyForks       = "too_many_forks"       // executor.ErrTooManyForks
	ErrInternal           = "internal"             // anything else
)

// errorOf turns an executor error into its wire form.
func errorOf(err error) *Error {
	var fe *executor.FileError
	switch {
	case errors.As(err, &fe):
		return &Error{Code: ErrFile, Message: fe.Err.Error(), Path: fe.Path}
	case errors.Is(err, executor.ErrSessionBusy):
		return &Error{Code: ErrSessionBusy, Message: err.Error()}
	case errors.Is(err, executor.ErrSessionEnded):
		return &Error{Code: ErrSessionEnded, Message: err.Error()}
	case errors.Is(err, executor.ErrFileNotFound):
		return &Error{Code: ErrFileNotFound, Message: err.Error()}
	case errors.Is(err, executor.ErrFileTooLarge):
		return &Error{Code: ErrFileTooLarge, Message: err.Error()}
	case errors.Is(err, errBadRequest):
		return &Error{Code: ErrBadRequest, Message: err.Error()}
	case errors.Is(err, executor.ErrCheckpointNotFound):
		return &Error{Code: ErrCheckpointNotFound, Message: err.Error()}
	case errors.Is(err, executor.ErrTooManyCheckpoints):
		return &Error{Code: ErrTooManyCheckpoints, Message: err.Error()}
	case errors.Is(err, executor.ErrCheckpointTooLarge):
		return &Error{Code: ErrCheckpointTooLarge, Message: err.Error()}
	case errors.Is(err, executor.ErrNotForkable):
		return &Error{Code: ErrNotForkable, Message: err.Error()}
	case errors.Is(err, executor.ErrForkTooLarge):
		return &Error{Code: ErrForkTooLarge, Message: err.Error()}
	case errors.Is(err, executor.ErrTooManyForks):
		return &Error{Code: ErrTooManyForks, Message: err.Error()}
	}
	return &Error{Code: ErrInternal, Message: err.Error()}
}

// Err turns the wire form back into the executor's error, for errors.Is and errors.As.
func (e *Error) Err() error {
	switch e.Code {
	case ErrFile:
		return &executor.FileError{Path: e.Path, Err: errors.New(e.Message)}
	case ErrSessionBusy:
		return executor.ErrSessionBusy
	case ErrSessionEnded:
		return executor.ErrSessionEnded
	case ErrFileNotFound:
		return executor.ErrFileNotFound
	case ErrFileTooLarge:
		return executor.ErrFileTooLarge
	case ErrCheckpointNotFound:
		return wireError{executor.ErrCheckpointNotFound, e.Message}
	case ErrTooManyCheckpoints:
		return wireError{executor.ErrTooManyCheckpoints, e.Message}
	case ErrCheckpointTooLarge:
		return wireError{executor.ErrCheckpointTooLarge, e.Message}
	case ErrNotForkable:
		return wireError{executor.ErrNotForkable, e.Message}
	case ErrForkTooLarge:
		return wireError{executor.ErrForkTooLarge, e.Message}
	case ErrTooManyForks:
		return wireError{executor.ErrTooManyForks, e.Message}
	}
	return fmt.Errorf("runner: %s: %s", e.Code, e.Message)
}

// wireError is an executor error as the runner said it: errors.Is finds the error, and its
// message is the runner's (which says more, as which checkpoint and why).
type wireError struct {
	err error
	msg string
}

func (e wireError) Error() string { return e.msg }
func (e wireError) Unwrap() error { return e.err }

// errBadRequest is a request that does not follow the protocol.
var errBadRequest = errors.New("bad request")

func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errBadRequest, fmt.Sprintf(format, args...))
}

// Validate checks a request: exactly one field, each well formed.
func (r *Request) Validate() error {
	n := 0
	for _, set := range []bool{r.Execute != nil, r.CreateSession != nil, r.WarmSession != nil, r.SessionExecute != nil,
		r.SessionFiles != nil, r.SessionFile != nil, r.CloseSession != nil, r.SessionStatus != nil, r.Stats != nil,
		r.Cleanup != nil, r.Shutdown != nil, r.Cancel != nil,
		r.Checkpoint != nil, r.Checkpoints != nil, r.Restore != nil, r.DeleteCheckpoint != nil, r.Fork != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return badRequest("a request has exactly one field, this one has %d", n)
	}
	switch {
	case r.Execute != nil:
		return r.Execute.validate(true)
	case r.CreateSession != nil:
		return r.CreateSession.validate()
	case r.WarmSession != nil:
		return r.WarmSession.validate()
	case r.SessionExecute != nil:
		if r.SessionExecute.Session == "" {
			return badRequest("session_execute: no session")
		}
		return r.SessionExecute.Execute.validate(false)
	case r.SessionFiles != nil && r.SessionFiles.Session == "", r.CloseSession != nil && r.CloseSession.Session == "",
		r.Checkpoint != nil && r.Checkpoint.Session == "", r.Checkpoints != nil && r.Checkpoints.Session == "":
		return badRequest("no session")
	case r.Restore != nil && (r.Restore.Session == "" || r.Restore.Checkpoint == ""),
		r.DeleteCheckpoint != nil && (r.DeleteCheckpoint.Session == "" || r.DeleteCheckpoint.Checkpoint == ""):
		return badRequest("want a session and a checkpoint")
	case r.SessionFile != nil:
		if r.SessionFile.Session == "" || !fs.ValidPath(r.SessionFile.Path) || r.SessionFile.Max <= 0 {
			return badRequest("session_file: want a session, a relative path and a positive max")
		}
	case r.Cleanup != nil:
		for _, d := range r.Cleanup.Dirs {
			if !executor.IsDirName(d) {
				return badRequest("cleanup: %q is not a directory of the work root", d)
			}
		}
	}
	return nil
}

func (e *Execute) validate(ownDir bool) error {
	switch {
	case ownDir && !executor.IsDirName(e.Dir):
		return badRequest("execute: dir %q is not a directory of the work root", e.Dir)
	case !ownDir && e.Dir != "":
		return badRequest("execute: a session's call has the session's directory")
	case e.Code == "":
		return badRequest("execute: no code")
	}
	if err := validateFiles(e.Files); err != nil {
		return err
	}
	return e.Limits.validate()
}

func (c *CreateSession) validate() error {
	if !executor.IsDirName(c.Dir) {
		return badRequest("session: dir %q is not a directory of the work root", c.Dir)
	}
	if c.MaxCheckpoints < 0 || c.CheckpointIdleMS < 0 || c.MaxCheckpointBytes < 0 {
		return badRequest("session: checkpoints %d, idle %d ms, %d bytes", c.MaxCheckpoints, c.CheckpointIdleMS, c.MaxCheckpointBytes)
	}
	if err := validateFiles(c.Files); err != nil {
		return err
	}
	return c.Limits.validate()
}

func validateFiles(files []File) error {
	for _, f := range files {
		if !fs.ValidPath(f.Path) || f.Path == "." {
			return badRequest("files: %q is not a relative path", f.Path)
		}
	}
	return nil
}

func (l Limits) validate() error {
	if l.TimeoutMS <= 0 || l.MaxOutputBytes <= 0 || l.MemoryLimitMB < 0 || l.MaxProcesses < 0 || l.MaxFileBytes < 0 || l.MaxFilesOut < 0 || l.MaxFilesOutBytes < 0 {
		return badRequest("limits: %+v", l)
	}
	return nil
}

// Validate checks a reply: exactly one field, each well formed.
func (r *Reply) Validate() error {
	n := 0
	for _, set := range []bool{r.Output != nil, r.Result != nil, r.ResultStream != nil, r.Session != nil, r.Files != nil, r.FileStream != nil,
		r.Status != nil, r.Stats != nil, r.Done != nil, r.Error != nil, r.Checkpoint != nil, r.Checkpoints != nil, r.Forked != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("a reply has exactly one field, this one has %d", n)
	}
	switch {
	case r.Output != nil && r.Output.Stream != api.EventStdout && r.Output.Stream != api.EventStderr:
		return fmt.Errorf("output on stream %q", r.Output.Stream)
	case r.Result != nil:
		return validFiles(r.Result.Files)
	case r.ResultStream != nil && r.ResultStream.Bytes < int64(len("{}\n")):
		return fmt.Errorf("result stream of %d bytes", r.ResultStream.Bytes)
	case r.ResultStream != nil:
		return validFiles(r.ResultStream.Head.Files)
	case r.FileStream != nil && r.FileStream.Bytes < 0:
		return fmt.Errorf("file stream of %d bytes", r.FileStream.Bytes)
	case r.Files != nil && len(r.Files.Files) > api.MaxSessionFiles:
		return fmt.Errorf("files: %d listed, more than %d", len(r.Files.Files), api.MaxSessionFiles)
	case r.Session != nil && !executor.IsDirName(r.Session.Dir):
		return fmt.Errorf("session: dir %q is not a directory of the work root", r.Session.Dir)
	case r.Error != nil && r.Error.Code == "":
		return errors.New("an error without a code")
	}
	return nil
}

// validFiles checks the paths of a result's files.
func validFiles(files []api.OutputFile) error {
	for _, f := range files {
		if !fs.ValidPath(f.Path) || f.Path == "." {
			return fmt.Errorf("result: file %q is not a relative path", f.Path)
		}
	}
	return nil
}

// toLimits and fromLimits convert limits between the executor and the wire.
func toLimits(l executor.Limits) Limits {
	return Limits{TimeoutMS: l.Timeout.Milliseconds(), MemoryLimitMB: l.MemoryLimitMB, MaxOutputBytes: l.MaxOutputBytes, MaxProcesses: l.MaxProcesses,
		MaxFileBytes: l.MaxFileBytes, MaxFilesOut: l.MaxFilesOut, MaxFilesOutBytes: l.MaxFilesOutBytes}
}

func fromLimits(l Limits) executor.Limits {
	return executor.Limits{Timeout: time.Duration(l.TimeoutMS) * time.Millisecond, MemoryLimitMB: l.MemoryLimitMB, MaxOutputBytes: l.MaxOutputBytes,
		MaxProcesses: l.MaxProcesses, MaxFileBytes: l.MaxFileBytes, MaxFilesOut: l.MaxFilesOut, MaxFilesOutBytes: l.MaxFilesOutBytes}
}

func toFiles(files []executor.File) []File {
	out := make([]File, len(files))
	for i, f := range files {
		out[i] = File{Path: f.Path, Data: f.Data}
	}
	return out
}

func fromFiles(files []File) []executor.File {
	out := make([]executor.File, len(files))
	for i, f := range files {
		out[i] = executor.File{Path: f.Path, Data: f.Data}
	}
	return out
}

// Frames.

// handshakeFrame is the largest frame of the handshake (a Config carries the warm-up code).
const handshakeFrame = 1 << 20

// errFrameTooLarge is a frame over the limit: the connection cannot go on.
var errFrameTooLarge = errors.New("frame too large")

// writeFrame writes v as one frame: JSON as the API writes it (no HTML escapes), and a newline
// (a result's frame is then {"result":R}\n, whose R is the API's body: see resultBody).
func writeFrame(w io.Writer, v any) error {
	var buf bytes.Buffer
	buf.Write(make([]byte, 4)) // the length, once known
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return err
	}
	b := buf.Bytes()
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	_, err := w.Write(b)
	return err
}

// readFrame reads one frame of at most max bytes into v.
func readFrame(r io.Reader, max int64, v any) error {
	b, err := readFrameBytes(r, max)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// readFrameBytes reads one frame of at most max bytes.
func readFrameBytes(r io.Reader, max int64) ([]byte, error) {
	var head [4]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return nil, err
	}
	n := int64(binary.BigEndian.Uint32(head[:]))
	if n > max {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", errFrameTooLarge, n, max)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return b, nil
}
