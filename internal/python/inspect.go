package python

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/pyexec/pyexec/pkg/api"
)

//go:embed inspect.py
var inspectScript []byte

// maxInspectOutput caps what the inspection may print; a report of every distribution of a
// large image is well under 1 MiB.
const maxInspectOutput = 16 << 20

// InspectOptions are the inputs of one inspection run.
type InspectOptions struct {
	// Preload lists modules to import, timing each.
	Preload []string
	// PackagesDir is put first on sys.path, as executions will have it, when it exists.
	PackagesDir string
	// Env is the whole environment of the run (see Env); nothing else is inherited.
	Env []string
}

// Inspection is the result of one inspection run.
type Inspection struct {
	Python  api.Python
	Preload []api.Preload
}

// InspectError is an inspection run that did not produce a result.
type InspectError struct {
	Python string
	Err    error  // how the run ended
	Stderr string // the tail of what the interpreter printed on stderr
}

func (e *InspectError) Error() string {
	msg := fmt.Sprintf("inspecting %s: %v", e.Python, e.Err)
	if s := strings.TrimSpace(e.Stderr); s != "" {
		msg += ": " + s
	}
	return msg
}

func (e *InspectError) Unwrap() error { return e.Err }

// Env returns the environment of interpreter runs: a short allowlist, so that nothing of pyexec's
// own environment (it may hold secrets) reaches Python code. path and home come from the caller.
func Env(path, home string) []string {
	env := []string{
		"PATH=" + path,
		"HOME=" + home,
		"LANG=C.UTF-8",
		"MPLBACKEND=Agg",
		"PYTHONDONTWRITEBYTECODE=1",
	}
	// BLAS and OpenMP pools start threads at import; one thread each keeps forks safe and
	// stops a 2-core pod from running 2×N threads.
	for _, k := range []string{"OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"} {
		env = append(env, k+"=1")
	}
	return env
}

// Inspect runs the interpreter once with the embedded inspection script on stdin (python -I -)
// and returns what it found. ctx bounds the run; on cancel the whole process group is killed.
func Inspect(ctx context.Context, python string, opts InspectOptions) (*Inspection, error) {
	params, err := json.Marshal(map[string]any{"preload": opts.Preload, "packages_dir": opts.PackagesDir})
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, python, "-I", "-", string(params))
	cmd.Env = opts.Env
	cmd.Stdin = bytes.NewReader(inspectScript)
	var stdout, stderr limitedBuffer
	stdout.max, stderr.max = maxInspectOutput, 8<<10
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second

	start := time.Now()
	runErr := cmd.Run()
	elapsed := time.Since(start)
	if ctx.Err() != nil {
		return nil, &InspectError{Python: python, Err: fmt.Errorf("no answer in time: %w", ctx.Err()), Stderr: stderr.String()}
	}
	if runErr != nil {
		return nil, &InspectError{Python: python, Err: runErr, Stderr: stderr.String()}
	}
	if stdout.truncated {
		return nil, &InspectError{Python: python, Err: fmt.Errorf("result larger than %d bytes", maxInspectOutput)}
	}
	var out struct {
		api.Python
		Preload []api.Preload `json:"preload"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		return nil, &InspectError{Python: python, Err: fmt.Errorf("unreadable result: %w", err), Stderr: stderr.String()}
	}
	if out.Executable == "" {
		// A Python without sys.executable (embedded) cannot be run by path later.
		return nil, &InspectError{Python: python, Err: errors.New("interpreter reports no sys.executable")}
	}
	out.Python.InspectMS = float64(elapsed.Microseconds()) / 1000
	if out.Preload == nil {
		out.Preload = []api.Preload{}
	}
	return &Inspection{Python: out.Python, Preload: out.Preload}, nil
}

// limitedBuffer keeps the first max bytes written and remembers whether more came.
type limitedBuffer struct {
	bytes.Buffer
	max       int
	truncated bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); len(p) > room {
		b.truncated = true
		if room > 0 {
			b.Buffer.Write(p[:room])
		}
		return len(p), nil
	}
	return b.Buffer.Write(p)
}
