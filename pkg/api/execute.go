package api

import "io"

// Reasons an execution ended, in ExecuteResult.Reason.
const (
	ReasonExit        = "exit"         // the code finished (any exit status)
	ReasonTimeout     = "timeout"      // the time limit killed the whole process tree
	ReasonOutputLimit = "output_limit" // stdout or stderr passed its cap; the tree was killed
	ReasonMemoryLimit = "memory_limit" // an allocation failed at the memory limit
	ReasonSignal      = "signal"       // a signal killed the interpreter (Signal names it)
	// ReasonProcessLimit: the code did not exit 0 after its process budget (max_processes)
	// refused it a process or a thread.
	ReasonProcessLimit = "process_limit"
)

// ExecuteRequest is the body of POST /v1/execute.
type ExecuteRequest struct {
	// Code is the Python source to run as __main__ (required).
	Code string `json:"code"`
	// TimeoutSeconds lowers (or raises up to the server's maximum) the time limit.
	TimeoutSeconds *float64 `json:"timeout_seconds,omitempty"`
	// Stdin is given to the code on standard input.
	Stdin string `json:"stdin,omitempty"`
	// Env adds to the execution's environment.
	Env map[string]string `json:"env,omitempty"`
	// Files are written into the execution's fresh working directory before the code runs.
	Files []InputFile `json:"files,omitempty"`
	// MemoryLimitMB lowers (or raises up to the server's maximum) the memory limit.
	MemoryLimitMB *int `json:"memory_limit_mb,omitempty"`
	// Network lets the code open network connections (true) or not (false); absent, the
	// server's --network decides. true on a server started with --network deny is refused
	// with 403.
	Network *bool `json:"network,omitempty"`
	// OutputBudgetChars bounds the characters of stdout and stderr the result carries,
	// together: over it, each stream keeps its first and last characters with one line in
	// their place that says how many were left out, and the whole text is kept as a file
	// (OutputBudget says which). At least MinOutputBudgetChars; absent, no budget.
	OutputBudgetChars *int `json:"output_budget_chars,omitempty"`
	// Checkpoint, on a session's call, takes a checkpoint of the session just before the call
	// runs (as POST /v1/sessions/{id}/checkpoints does): restoring it undoes the call. The
	// result's Checkpoint names it. At the session's cap of checkpoints the oldest one taken
	// this way is let go first. Refused (400) on POST /v1/execute.
	Checkpoint bool `json:"checkpoint,omitempty"`
}

// MinOutputBudgetChars is the smallest output_budget_chars.
const MinOutputBudgetChars = 200

// OutputBudget is what an output budget did to a result.
type OutputBudget struct {
	LimitChars int `json:"limit_chars"`
	// OmittedChars are the characters of stdout and stderr left out of the result.
	OmittedChars int `json:"omitted_chars"`
	// FullOutputFile is the path, in the working directory, of a file of the whole stdout and
	// stderr as captured: a file of the result (an execution's files, within
	// --max-files-out-bytes) and, in a session, of the session's working directory. Absent
	// when it could not be written or returned.
	FullOutputFile string `json:"full_output_file,omitempty"`
}

// InputFile is a file written into the working directory; Path is relative to it.
type InputFile struct {
	Path          string `json:"path"`
	ContentBase64 string `json:"content_base64"`
}

// OutputFile is a file the code created or changed in its working directory.
type OutputFile struct {
	Path          string `json:"path"`
	Size          int64  `json:"size"`
	ContentBase64 string `json:"content_base64"`
}

// Stages of an execution, the keys of ExecuteResult.TimingsMS, in the order they happen. The
// names are stable; a stage that was not measured is left out.
const (
	// StageParse is the server reading and checking the request, from the moment its handler
	// has it.
	StageParse = "parse"
	// StageQueue is the wait for an execution slot (--max-concurrent, --queue).
	StageQueue = "queue"
	// StageHop is the request's way from the server to the runner (another container in a
	// pod), on the kernel's monotonic clock that both read; left out when they do not share it.
	StageHop = "hop"
	// StageStart is the runner handing the code over: to a warm spare's process, to an idle
	// supervisor or one the zygote forks (fork mode), to a new interpreter (spawn mode), or to
	// a session's interpreter.
	StageStart = "start"
	// StageRun is from the hand-over until the runner knows how the code ended: the code's
	// process forked (fork mode without a warm spare) or the interpreter starting (spawn
	// mode), confinement, the code, its exit.
	StageRun = "run"
	// StageCode is part of run: the code itself, and its figures shown, as the code's
	// process timed it (from just before the code to just after; the interpreter's end,
	// the report and the wake-ups around it are the rest of run). It is that process's word:
	// left out when it says none, or more than run.
	StageCode = "code"
	// StageCollect is the runner draining the output streams and reading the outputs and the
	// files into the result.
	StageCollect = "collect"
)

// Stages are the Stage constants in the order they happen (code within run).
var Stages = []string{StageParse, StageQueue, StageHop, StageStart, StageRun, StageCode, StageCollect}

// ExecuteResult is the 200 response of POST /v1/execute, and the exit event of a stream.
type ExecuteResult struct {
	ID       string `json:"id"`
	ExitCode int    `json:"exit_code"`
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	Reason   string `json:"reason"`
	// Signal names the signal that killed the interpreter (e.g. "SIGKILL"), when one did.
	Signal          string  `json:"signal,omitempty"`
	TimedOut        bool    `json:"timed_out"`
	StdoutTruncated bool    `json:"stdout_truncated"`
	StderrTruncated bool    `json:"stderr_truncated"`
	DurationMS      float64 `json:"duration_ms"`
	// TimingsMS is where the execution's time went: milliseconds by stage (the Stage
	// constants; api.Stages has their order); a stage not measured is left out.
	TimingsMS map[string]float64 `json:"timings_ms,omitempty"`
	Files     []OutputFile       `json:"files"`
	// FilesTruncated is true when files were left out by the count or size caps.
	FilesTruncated bool `json:"files_truncated"`
	// Outputs are the rich outputs, in order: the value of a final expression, display(),
	// matplotlib figures.
	Outputs []Output `json:"outputs"`
	// OutputsTruncated is true when outputs were left out: past --max-files-out-bytes,
	// which outputs and files share.
	OutputsTruncated bool `json:"outputs_truncated"`
	// Hints are short sentences for a model when the cause of a failure lies in the sandbox:
	// the network is off, the time limit, the memory limit, the output cap, the process
	// limit, a module that is not installed (and how to install it, when installs are allowed).
	Hints []string `json:"hints,omitempty"`
	// OutputBudget is set when the request's output_budget_chars left characters out.
	OutputBudget *OutputBudget `json:"output_budget,omitempty"`
	// Exception is the exception that ended the code, when one did (the code raised it and
	// did not catch it; not SystemExit), as Jupyter names its parts.
	Exception *Exception `json:"exception,omitempty"`
	// SessionLost is true when a session's call ended its session: its interpreter was killed
	// (a timeout the code did not stop for) or exited. Later calls get 404.
	SessionLost bool `json:"session_lost,omitempty"`
	// Checkpoint names the checkpoint a call's "checkpoint": true took before it ran.
	Checkpoint string `json:"checkpoint,omitempty"`

	// Encoded, when set, is this result as the JSON body of a response, newline included, as
	// pyexec's runner encoded it: the server writes it as it is instead of encoding the result
	// again, and the contents of Files and Outputs are then not decoded (Files hold their paths
	// and sizes, Outputs are only counted). Never part of the JSON: it is the JSON. Whoever
	// holds a result with Encoded set must close it, read or not.
	Encoded EncodedResult `json:"-"`
}

// EncodedResult is a result's JSON body, Size bytes, read once: a large one streams from
// pyexec's runner as it is read, and holds the runner's channel until it is closed. The
// result of a large one has its stdout and stderr only in the body: its Encoded then has a
// method OutputBytes() (stdout, stderr int) that tells their sizes.
type EncodedResult interface {
	io.ReadCloser
	Size() int64
}

// Exception is an exception the code raised and did not catch.
type Exception struct {
	// Ename is the exception's class name, such as "ValueError".
	Ename string `json:"ename"`
	// Evalue is its message: str() of it (at most 4096 characters, then a note of how many
	// were left out).
	Evalue string `json:"evalue"`
	// Traceback is the traceback as Python prints it, a line each, last the exception's own
	// line, without pyexec's own frames; at most the first 20 and the last 80 lines, a line in
	// their place saying how many were left out, each at most 2000 characters.
	Traceback []string `json:"traceback"`
}

// Kinds of rich output, in Jupyter's vocabulary.
const (
	OutputExecuteResult = "execute_result" // the value of the code's final expression
	OutputDisplayData   = "display_data"   // display(obj), or a matplotlib figure
)

// MIMELLMText is the MIME type of an output's summary for a model: of a pandas DataFrame or
// Series, or a numpy array (shape, dtypes, nulls, first and last rows, bounded).
const MIMELLMText = "text/llm+plain"

// Output is one rich output: a MIME bundle such as {"text/plain": "...", "text/html": "...",
// "image/png": "<base64>"}.
type Output struct {
	Type string            `json:"type"`
	Data map[string]string `json:"data"`
}

// Stream event types of POST /v1/execute?stream=true.
const (
	EventStdout = "stdout"
	EventStderr = "stderr"
	EventExit   = "exit"
	// EventError ends a stream whose execution failed to run after the 200 was sent; clients
	// treat a stream without an exit event as failed.
	EventError = "error"
)

// StreamEvent is one line of a streamed execution: output as it arrives, then one exit event
// that carries every field of ExecuteResult — or an error event.
type StreamEvent struct {
	Type string `json:"type"`
	Data string `json:"data,omitempty"`
	*ExecuteResult
	// Error is set on an error event.
	Error *ErrorBody `json:"error,omitempty"`
}

// Error codes in ErrorBody.
const (
	ErrCodeBadRequest       = "bad_request"
	ErrCodeForbidden        = "forbidden"
	ErrCodeNotFound         = "not_found"
	ErrCodeMethodNotAllowed = "method_not_allowed"
	ErrCodeTooLarge         = "too_large"
	ErrCodeQueueFull        = "queue_full"
	ErrCodeUnavailable      = "unavailable"
	ErrCodeInternal         = "internal"
	// ErrCodePackagesLocked (409): the packages dir cannot be written.
	ErrCodePackagesLocked = "packages_locked"
	// ErrCodeInstallFailed (422): pip could not install the packages; the message has its output.
	ErrCodeInstallFailed = "install_failed"
)

// ErrorResponse is the body of every HTTP error: {"error":{"code":"...","message":"..."}}.
type ErrorResponse struct {
	Error ErrorBody `json:"error"`
}

// ErrorBody says what was wrong with the request.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// RequestID identifies the request in the server's logs.
	RequestID string `json:"request_id,omitempty"`
}

// Info is the response of GET /v1/info.
type Info struct {
	Version   string    `json:"version"`
	Container Container `json:"container"`
	Python    *Python   `json:"python"`
	Policy    string    `json:"policy"`
	Mode      string    `json:"mode"` // executor mode in use: "spawn" (or "fork")
	Ready     bool      `json:"ready"`
	Preflight Preflight `json:"preflight"`
	Limits    Limits    `json:"limits"`
	// Packages is the packages dir: where it is, whether it is locked and why, what is installed.
	Packages *Packages `json:"packages,omitempty"`
	// Isolation says how executions are confined on this kernel.
	Isolation *Isolation `json:"isolation,omitempty"`
	// Identity says which uids the server and the runner run as (absent before the runner
	// has come).
	Identity *Identity `json:"identity,omitempty"`
}

// Preflight summarises the report the server runs with.
type Preflight struct {
	OK       bool     `json:"ok"`
	Summary  string   `json:"summary"`
	Problems []string `json:"problems"`
	Source   string   `json:"source"` // the report file, or "serve" when serve ran preflight itself
}

// Limits are a server's defaults and maxima.
type Limits struct {
	TimeoutSeconds    float64 `json:"timeout_seconds"`
	MaxTimeoutSeconds float64 `json:"max_timeout_seconds"`
	MemoryLimitMB     int     `json:"memory_limit_mb"`
	MaxMemoryLimitMB  int     `json:"max_memory_limit_mb"`
	MaxOutputBytes    int     `json:"max_output_bytes"`
	MaxProcesses      int     `json:"max_processes"`
	// MaxProcessesScope says what MaxProcesses counts: "execution" (each execution and each
	// session has a budget of its own: the process_budget layer) or "uid" (RLIMIT_NPROC: the
	// processes and threads of the runner's uid, all executions together); absent without a
	// limit.
	MaxProcessesScope string `json:"max_processes_scope,omitempty"`
	MaxFileBytes      int64  `json:"max_file_bytes"`
	MaxFilesOut       int    `json:"max_files_out"`
	MaxFilesOutBytes  int64  `json:"max_files_out_bytes"` // total size of the files returned from one execution
	MaxRequestBytes   int64  `json:"max_request_bytes"`
	MaxConcurrent     int    `json:"max_concurrent"`
	Queue             int    `json:"queue"`
	// Connections open at once on the socket: in all, and of one peer uid.
	MaxConnections       int `json:"max_connections"`
	MaxConnectionsPerUID int `json:"max_connections_per_uid"`
	// WriteTimeoutSeconds is how long a client has to take a response that carries a result
	// or a file, from the moment it is known; past it the connection is closed (pyexec serve
	// --write-timeout).
	WriteTimeoutSeconds float64 `json:"write_timeout_seconds"`
	// AllowNetwork: code may open network connections (pyexec serve --network allow).
	AllowNetwork bool `json:"allow_network"`
	// Sessions open at once, and how long one lives without a call: the default and the most
	// a session may ask for.
	MaxSessions                  int     `json:"max_sessions"`
	SessionIdleTimeoutSeconds    float64 `json:"session_idle_timeout_seconds"`
	MaxSessionIdleTimeoutSeconds float64 `json:"max_session_idle_timeout_seconds"`
	// Checkpoints of a session: how many it holds at once (0: none), how long one lives
	// without a restore, and the most bytes of files one keeps (0: no limit).
	MaxCheckpointsPerSession     int     `json:"max_checkpoints_per_session"`
	CheckpointIdleTimeoutSeconds float64 `json:"checkpoint_idle_timeout_seconds"`
	MaxCheckpointBytes           int64   `json:"max_checkpoint_bytes"`
}

// PackagesRequest is the body of POST /v1/packages.
type PackagesRequest struct {
	// Packages are PEP 508 requirements: "name[extras] specifier", e.g. "pandas>=2".
	Packages []string `json:"packages"`
	// Upgrade reinstalls even when every requirement is already installed, taking the newest
	// versions the index offers.
	Upgrade bool `json:"upgrade,omitempty"`
}

// Packages is the answer of GET and POST /v1/packages: what executions see in the packages dir.
type Packages struct {
	Dir string `json:"dir"`
	// Tree is the directory executions put on sys.path (the current tree in Dir); empty before
	// the first install.
	Tree string `json:"tree"`
	// Requirements are every requirement installed so far, the tree's recipe.
	Requirements []string    `json:"requirements"`
	Installed    []Installed `json:"installed"`
	// Locked says the packages dir cannot be written, and Reason why.
	Locked bool   `json:"locked"`
	Reason string `json:"reason,omitempty"`
	// Allowed are the --allow-packages patterns of run-time installs; empty allows none.
	Allowed []string `json:"allowed"`
	// DurationMS is the time an install took (POST only).
	DurationMS float64 `json:"duration_ms,omitempty"`
}

// Installed is one distribution in the packages tree.
type Installed struct {
	Name    string `json:"name"` // PEP 503 normalized
	Version string `json:"version"`
}
