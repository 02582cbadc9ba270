package api

import (
	"fmt"
	"time"
)

// OwnerHeader scopes a request to the sessions of one owner: an opaque key of at most
// MaxOwnerBytes printable ASCII characters that an application gives each of its users or
// conversations. POST /v1/sessions with it creates a session of that owner; GET /v1/sessions
// lists only that owner's sessions; every /v1/sessions/{id} endpoint answers 404
// session_not_found for a session of another owner, or of none. Without it a request sees
// every session: the socket's one client is the application, which owns them all.
const OwnerHeader = "Pyexec-Owner"

// MaxOwnerBytes bounds an owner key.
const MaxOwnerBytes = 200

// CheckOwner says what is wrong with an owner key, if anything: it is 1 to MaxOwnerBytes
// printable ASCII characters.
func CheckOwner(owner string) error {
	if owner == "" || len(owner) > MaxOwnerBytes {
		return fmt.Errorf("%d bytes; want 1 to %d printable ASCII characters", len(owner), MaxOwnerBytes)
	}
	for i := 0; i < len(owner); i++ {
		if c := owner[i]; c < 0x20 || c > 0x7e {
			return fmt.Errorf("byte %d is %#02x; want printable ASCII characters", i, c)
		}
	}
	return nil
}

// SessionRequest is the body of POST /v1/sessions. Every field is optional; an empty body is
// an empty object.
type SessionRequest struct {
	// IdleTimeoutSeconds ends the session after this long without a call; absent, the
	// server's --session-idle-timeout. At most --max-session-idle-timeout.
	IdleTimeoutSeconds *float64 `json:"idle_timeout_seconds,omitempty"`
	// MemoryLimitMB is the memory limit of the session's processes for its whole life, as an
	// execution's memory_limit_mb.
	MemoryLimitMB *int `json:"memory_limit_mb,omitempty"`
	// Env is the environment the session's interpreter starts with; a call's env adds to it.
	Env map[string]string `json:"env,omitempty"`
	// Files are written into the session's working directory before its interpreter starts.
	Files []InputFile `json:"files,omitempty"`
	// Network lets the session's code open network connections, as an execution's network.
	Network *bool `json:"network,omitempty"`
}

// Session describes one session: the answer of POST /v1/sessions (201) and of
// GET /v1/sessions/{id}, and an entry of GET /v1/sessions.
type Session struct {
	ID         string    `json:"id"`
	CreatedAt  time.Time `json:"created_at"`
	LastUsedAt time.Time `json:"last_used_at"`
	// ExpiresAt is when the session ends unless a call comes first (last use + idle timeout).
	ExpiresAt          time.Time `json:"expires_at"`
	IdleTimeoutSeconds float64   `json:"idle_timeout_seconds"`
	// Executions counts the calls the session has run.
	Executions int `json:"executions"`
	// MemoryBytes is the resident memory of the session's processes now.
	MemoryBytes   int64 `json:"memory_bytes"`
	MemoryLimitMB int   `json:"memory_limit_mb"`
	Network       bool  `json:"network"`
	// Busy says a call runs in the session now; another call gets 409 session_busy.
	Busy bool `json:"busy"`
	// Owner is the OwnerHeader of the request that created the session; empty: none. A
	// branch has its session's.
	Owner string `json:"owner,omitempty"`
	// Parent is the session this one was forked from (POST /v1/sessions/{id}/fork); empty: it
	// was created. Branches are the open sessions forked from this one.
	Parent   string   `json:"parent,omitempty"`
	Branches []string `json:"branches,omitempty"`
}

// ForkRequest is the optional body of POST /v1/sessions/{id}/fork. Without it, or with no
// Count, the answer is one Session (201); with Count, {"sessions": [...]} of Count branches
// (SessionList).
type ForkRequest struct {
	// Count is how many branches to fork at once; together they count against --max-sessions.
	Count int `json:"count,omitempty"`
}

// Checkpoint is a frozen copy of a session's state — its interpreter (globals, imports,
// everything in memory) and the regular files and directories of its working directory — to
// which POST /v1/sessions/{id}/restore puts the session back. The answer of POST
// /v1/sessions/{id}/checkpoints (201), and an entry of GET /v1/sessions/{id}/checkpoints.
type Checkpoint struct {
	// ID names the checkpoint within its session ("c1", "c2"...).
	ID        string    `json:"checkpoint"`
	CreatedAt time.Time `json:"created_at"`
	// ExpiresAt is when the checkpoint is let go unless a restore comes first (its creation,
	// or its last restore, plus --checkpoint-idle-timeout).
	ExpiresAt time.Time `json:"expires_at"`
	// MemoryBytes is the memory that only the checkpoint holds: the pages of the interpreter
	// that the session changed since (copy-on-write; at first none), which deleting the
	// checkpoint frees. Where the kernel does not let pyexec read it (no Landlock), the
	// checkpoint's whole resident memory.
	MemoryBytes int64 `json:"memory_bytes"`
	// FilesBytes and Files are the size and number of the files it keeps.
	FilesBytes int64 `json:"files_bytes"`
	Files      int   `json:"files"`
	// Auto says a call's "checkpoint": true took it.
	Auto bool `json:"auto,omitempty"`
}

// Checkpoints is the answer of GET /v1/sessions/{id}/checkpoints, oldest first.
type Checkpoints struct {
	Checkpoints []Checkpoint `json:"checkpoints"`
}

// RestoreRequest is the body of POST /v1/sessions/{id}/restore, which answers 200 with the
// Session.
type RestoreRequest struct {
	Checkpoint string `json:"checkpoint"`
}

// SessionList is the answer of GET /v1/sessions, oldest first.
type SessionList struct {
	Sessions []Session `json:"sessions"`
}

// SessionFile is one regular file of a session's working directory, an entry of
// GET /v1/sessions/{id}/files.
type SessionFile struct {
	// Path is relative to the working directory, "/"-separated; GET
	// /v1/sessions/{id}/files/{path} reads the file (each segment escaped).
	Path       string    `json:"path"`
	Size       int64     `json:"size"`
	ModifiedAt time.Time `json:"modified_at"`
}

// SessionFiles is the answer of GET /v1/sessions/{id}/files: the regular files below the
// session's working directory, sorted by path, at most MaxSessionFiles of them. Symlinks are
// neither followed nor listed. A listing is bounded in time (SessionFilesWalkTimeout) as well
// as in entries, so that a directory of many files costs the sidecar little.
type SessionFiles struct {
	Files []SessionFile `json:"files"`
	// Truncated says files were left out: there were more than MaxSessionFiles (those left out
	// sort last), or the walk was cut short (Partial).
	Truncated bool `json:"truncated"`
	// Total is how many regular files the walk found: all of them, unless Partial.
	Total int `json:"total"`
	// Partial says the walk stopped at SessionFilesWalkTimeout before it had seen every file:
	// Files are then the first, by path, of the Total files it saw, not of all.
	Partial bool `json:"partial,omitempty"`
}

// MaxSessionFiles is the most files GET /v1/sessions/{id}/files lists.
const MaxSessionFiles = 1000

// SessionFilesWalkTimeout bounds the walk of one listing of a session's files (waiting for
// another listing to finish included): past it, the listing answers what it found (Partial).
const SessionFilesWalkTimeout = 3 * time.Second

// Error codes of the session endpoints.
const (
	// ErrCodeSessionNotFound (404): no such session, or it ended (the message says why).
	ErrCodeSessionNotFound = "session_not_found"
	// ErrCodeSessionBusy (409): a call already runs in the session.
	ErrCodeSessionBusy = "session_busy"
	// ErrCodeTooManySessions (429): --max-sessions are open.
	ErrCodeTooManySessions = "too_many_sessions"
	// ErrCodeCheckpointNotFound (404): the session has no checkpoint of that name (never had,
	// deleted, expired, or lost: the message says which when it knows).
	ErrCodeCheckpointNotFound = "checkpoint_not_found"
	// ErrCodeTooManyCheckpoints (429): the session holds --max-checkpoints-per-session.
	ErrCodeTooManyCheckpoints = "too_many_checkpoints"
	// ErrCodeCheckpointTooLarge (413): the session's working directory holds more than
	// --max-checkpoint-bytes of files.
	ErrCodeCheckpointTooLarge = "checkpoint_too_large"
	// ErrCodeNotForkable (409): the session holds what a fork cannot part between its branches:
	// threads its code left running (a fork copies one thread), or memory it maps shared (a
	// file mmap'ed shared, multiprocessing's shared values); the message says which. End or
	// close them, then fork.
	ErrCodeNotForkable = "not_forkable"
	// ErrCodeForkTooLarge (413): the session's working directory holds more than a branch may
	// copy (--max-checkpoint-bytes).
	ErrCodeForkTooLarge = "fork_too_large"
	// ErrCodeTooManyForks (409): the session comes from as many forks in a row as Landlock
	// allows (15): fork an earlier session of the line.
	ErrCodeTooManyForks = "too_many_forks"
	// ErrCodeFileNotFound (404): GET /v1/sessions/{id}/files/{path} names no regular file of
	// the session's working directory (nothing, a directory, a symlink, a FIFO...).
	ErrCodeFileNotFound = "file_not_found"
)

// Variables is the answer of GET /v1/sessions/{id}/variables: the user's globals of the
// session's interpreter, sorted by name, at most MaxVariables; modules and names that start
// with "_" are left out.
type Variables struct {
	Variables []Variable `json:"variables"`
	// Total is how many there are; Truncated says some were left out (past MaxVariables).
	Total     int  `json:"total"`
	Truncated bool `json:"truncated"`
}

// MaxVariables is the most variables GET /v1/sessions/{id}/variables lists.
const MaxVariables = 1000

// Variable is one global of a session's interpreter.
type Variable struct {
	Name string `json:"name"`
	// Type is its class: "int", "pandas.core.frame.DataFrame" (never what the object says its
	// __class__ is).
	Type string `json:"type"`
	// Repr is its repr(), at most 200 characters (the first items of a builtin container).
	Repr string `json:"repr"`
	// Len, Shape, Dtype and Bytes, when it has them: len(); a numpy or pandas object's shape
	// and dtype; its size (numpy's nbytes, pandas' memory_usage, else sys.getsizeof).
	Len   *int64  `json:"len,omitempty"`
	Shape []int64 `json:"shape,omitempty"`
	Dtype string  `json:"dtype,omitempty"`
	Bytes *int64  `json:"bytes,omitempty"`
	// TimedOut says its methods took longer than 50 ms and were cut off: what was not known
	// by then is missing.
	TimedOut bool `json:"timed_out,omitempty"`
}
