// Package executor runs Python code: one execution in a fresh working directory, with a
// scrubbed environment and every limit held, its whole process tree killed and reaped.
package executor

import (
	"context"
	"errors"
	"time"

	"github.com/pyexec/pyexec/pkg/api"
)

// Request is one execution, already validated by the caller.
type Request struct {
	ID string
	// Dir is the execution's directory, made by the caller with MakeDir: the executor fills it
	// and empties it when the execution is over, and the caller removes it. Empty, the executor
	// makes one of its own and removes it.
	Dir   string
	Code  string
	Stdin []byte
	// Env is added to the scrubbed base environment.
	Env   map[string]string
	Files []File
	// Network lets the code open network sockets; the server allows it or refuses the request.
	Network bool
	Limits
	// OpenFiles, when set, receives the files the result returns, open, instead of their
	// contents in the result: the caller reads them as it sends the result, and closes them.
	OpenFiles *OpenFiles
	// Timings are the stages the execution went through before the executor (the server's
	// parse, queue and hop), in milliseconds by name: the result's timings_ms start with them.
	Timings map[string]float64
	// MaxTimeout (the largest time limit a request may ask for) and Installs (packages may be
	// installed at run time) are the server's, for the result's hints.
	MaxTimeout time.Duration
	Installs   bool
	// OutputBudgetChars, above 0, bounds the characters of stdout and stderr in the result
	// (api.ExecuteRequest.OutputBudgetChars).
	OutputBudgetChars int
	// Inspect, in a session's call, runs no code: the call lists the session's variables, as
	// JSON on its stdout (api.Variables), and returns no files, outputs or hints.
	Inspect bool
	// Checkpoint, in a session's call, takes a checkpoint just before the call (see
	// LocalSession.Checkpoint): at the session's most, the oldest such one is let go first.
	Checkpoint bool
	// session: this is a session's start, whose directory and first Landlock layer hold the
	// reserve of its branches (see branchesDir).
	session bool
}

// Limits of one execution.
type Limits struct {
	Timeout        time.Duration
	MemoryLimitMB  int   // resident memory of the execution's whole tree (RLIMIT_AS: a backstop far above)
	MaxOutputBytes int   // per stream; more kills the tree with reason output_limit
	MaxProcesses   int   // RLIMIT_NPROC of the execution's processes
	MaxFileBytes   int64 // largest file the code may write (RLIMIT_FSIZE), and largest returned
	MaxFilesOut    int   // most files returned
	// MaxFilesOutBytes is the total size of the files returned; 0 is DefaultMaxFilesOutBytes.
	MaxFilesOutBytes int64
}

// File is an input file; Path is relative to the working directory and already checked.
type File struct {
	Path string
	Data []byte
}

// Output receives output as it arrives, for streaming. Calls come from one goroutine per
// stream; implementations must be safe for concurrent use by both. data never ends in the
// middle of a UTF-8 sequence, unless the stream was cut there by its cap: the executor holds
// back a sequence a chunk cut until the rest comes (or the stream ends).
type Output interface {
	Write(stream string, data []byte)
}

// ErrUnavailable is an executor that cannot run code now, for a while: the runner is starting
// or restarting. The request may be sent again.
var ErrUnavailable = errors.New("no runner to run code now")

// Executor runs executions.
type Executor interface {
	// Execute runs req. The code's own failure (exception, exit status, timeout, a limit) is
	// a result; the error is for failures to run it at all. Cancelling ctx kills the
	// execution and returns what it produced so far. out may be nil.
	Execute(ctx context.Context, req Request, out Output) (api.ExecuteResult, error)
	// Close releases what the executor keeps between executions (the zygote and its spares, the
	// descriptors of the system's paths); no execution may run or start meanwhile.
	Close()
}

// Deferred is an executor that can hand over a result before what is left to do once it is
// known — emptying the execution's directory, replacing the spare it took — so that a caller
// delivers the result first. ExecuteDeferred is Execute without that work, which finish does;
// the caller calls finish once, whatever the error.
type Deferred interface {
	ExecuteDeferred(ctx context.Context, req Request, out Output) (res api.ExecuteResult, finish func(), err error)
}

// afterwards is the work an execution leaves for after its result, done in reverse order.
type afterwards []func()

func (a *afterwards) add(f func()) { *a = append(*a, f) }

func (a *afterwards) run() {
	for i := len(*a) - 1; i >= 0; i-- {
		(*a)[i]()
	}
	*a = nil
}
