package app

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pyexec/pyexec/pkg/api"
	"github.com/pyexec/pyexec/pkg/client"
)

// Exit codes of `pyexec run` besides the code's own.
const (
	// ExitRunTimeout is what timeout(1) returns when the time limit killed the command.
	ExitRunTimeout = 124
	// ExitRunFailed is for a request that did not run: the sidecar unreachable or an API error.
	ExitRunFailed = 125
)

// RunConfig is the config of `pyexec run`.
type RunConfig struct {
	Code    string        // -c
	File    string        // positional FILE, or "-" for stdin
	Socket  string        // --socket
	Timeout time.Duration // --timeout; 0 uses the server's default
	Stream  bool          // --stream
	Session string        // --session: run in this session instead of a fresh execution
	Outputs string        // --outputs: the directory the figures are written to
}

// Validate checks that exactly one source of code is given.
func (c *RunConfig) Validate() error {
	if (c.Code == "") == (c.File == "") {
		return usageErrorf("give the code with -c CODE, a FILE, or - for standard input (exactly one)")
	}
	if c.Timeout < 0 {
		return usageErrorf("--timeout %v: must not be negative", c.Timeout)
	}
	return nil
}

// exitError carries the exit status of the code to Main.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func newRunCommand(io IO, _ *globalConfig, run func(context.Context, *RunConfig) error) *cobra.Command {
	cfg := &RunConfig{}
	if run == nil {
		run = func(ctx context.Context, c *RunConfig) error { return runRun(ctx, io, c) }
	}
	cmd := &cobra.Command{
		Use:   "run [-c CODE | FILE | -]",
		Short: "Run code through the sidecar and behave like python3",
		Long: "run sends the code to the sidecar, prints its stdout and stderr, and exits with the code's exit\n" +
			"status: 124 when the time limit killed it (as timeout(1) does), 128+N when signal N did, and 125\n" +
			"when the sidecar could not run it at all (unreachable, or an API error).\n\n" +
			"With --session ID the code runs in that session (created with POST /v1/sessions) instead of a\n" +
			"fresh execution: what earlier calls defined, imported or wrote is still there. A session runs\n" +
			"one call at a time (a second gets session_busy, exit 125), and an unknown or ended session\n" +
			"gets session_not_found (exit 125). A timeout interrupts the code; if it does not stop, the\n" +
			"session is lost, and run says so.\n\n" +
			"With -c or --session, the value of the code's last expression is printed after its output, as a\n" +
			"notebook shows it (its text/plain); a FILE or standard input runs as python3 runs a script. With --outputs DIR each figure (every image/png output) is written to\n" +
			"DIR/figure-N.png, N from 1, skipping the names that exist; DIR is made when missing.",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usageErrorf("one FILE at most, got %d", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				cfg.File = args[0]
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			return run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&cfg.Code, "code", "c", "", "the code to run")
	f.StringVar(&cfg.Socket, "socket", DefaultSocket, "the sidecar's socket")
	f.DurationVar(&cfg.Timeout, "timeout", 0, "time limit of the execution (default: the server's)")
	f.BoolVar(&cfg.Stream, "stream", false, "print output as it arrives")
	f.StringVar(&cfg.Session, "session", "", "run the code in this session (its id) instead of a fresh execution")
	f.StringVar(&cfg.Outputs, "outputs", "", "write each figure (image/png output) into this directory as figure-N.png")
	return cmd
}

func runRun(ctx context.Context, sio IO, cfg *RunConfig) error {
	code := cfg.Code
	if cfg.File != "" {
		var data []byte
		var err error
		if cfg.File == "-" {
			data, err = io.ReadAll(os.Stdin)
		} else {
			data, err = os.ReadFile(cfg.File)
		}
		if err != nil {
			return usageErrorf("%w", err)
		}
		code = string(data)
	}
	req := api.ExecuteRequest{Code: code}
	if cfg.Timeout > 0 {
		s := cfg.Timeout.Seconds()
		req.TimeoutSeconds = &s
	}
	c := client.New(cfg.Socket)
	execute, executeStream := c.Execute, c.ExecuteStream
	if cfg.Session != "" {
		execute = func(ctx context.Context, req api.ExecuteRequest) (*api.ExecuteResult, error) {
			return c.SessionExecute(ctx, cfg.Session, req)
		}
		executeStream = func(ctx context.Context, req api.ExecuteRequest, onOutput func(stream, data string)) (*api.ExecuteResult, error) {
			return c.SessionExecuteStream(ctx, cfg.Session, req, onOutput)
		}
	}
	var res *api.ExecuteResult
	var err error
	if cfg.Stream {
		res, err = executeStream(ctx, req, func(stream, data string) {
			if stream == api.EventStderr {
				io.WriteString(sio.Stderr, data)
			} else {
				io.WriteString(sio.Stdout, data)
			}
		})
	} else {
		res, err = execute(ctx, req)
		if err == nil {
			io.WriteString(sio.Stdout, res.Stdout)
			io.WriteString(sio.Stderr, res.Stderr)
		}
	}
	if err != nil {
		fmt.Fprintln(sio.Stderr, runError(err))
		return &exitError{code: ExitRunFailed}
	}
	// The value of the last expression, as a notebook shows a cell's: for -c and a session's
	// call, not for a FILE or standard input, which run as python3 runs a script.
	for _, o := range res.Outputs {
		if text, ok := o.Data["text/plain"]; ok && o.Type == api.OutputExecuteResult && (cfg.Code != "" || cfg.Session != "") {
			io.WriteString(sio.Stdout, strings.TrimSuffix(text, "\n")+"\n")
		}
	}
	if cfg.Outputs != "" {
		if err := writeFigures(sio, cfg.Outputs, res.Outputs); err != nil {
			fmt.Fprintf(sio.Stderr, "pyexec: --outputs: %v\n", err)
			return &exitError{code: ExitRunFailed}
		}
	}
	if res.SessionLost {
		fmt.Fprintf(sio.Stderr, "pyexec: session %s ended with this call\n", cfg.Session)
	}
	switch res.Reason {
	case api.ReasonTimeout:
		if cfg.Session != "" && !res.SessionLost {
			fmt.Fprintf(sio.Stderr, "pyexec: interrupted after the time limit\n")
		} else {
			fmt.Fprintf(sio.Stderr, "pyexec: killed after the time limit\n")
		}
		return &exitError{code: ExitRunTimeout}
	case api.ReasonOutputLimit, api.ReasonMemoryLimit:
		fmt.Fprintf(sio.Stderr, "pyexec: stopped: %s\n", res.Reason)
	}
	if res.StdoutTruncated || res.StderrTruncated {
		fmt.Fprintf(sio.Stderr, "pyexec: output truncated at the server's cap\n")
	}
	if res.ExitCode != 0 {
		return &exitError{code: res.ExitCode}
	}
	return nil
}

// errorsAsExit reports the exit code an exitError carries.
func errorsAsExit(err error) (int, bool) {
	var e *exitError
	if errors.As(err, &e) {
		return e.code, true
	}
	return 0, false
}

// writeFigures writes each image/png of outputs into dir as figure-N.png, N from 1, never over
// a file that is there (the next free N), and says each on stderr.
func writeFigures(sio IO, dir string, outputs []api.Output) error {
	var pngs [][]byte
	for i, o := range outputs {
		b64, ok := o.Data["image/png"]
		if !ok {
			continue
		}
		png, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return fmt.Errorf("output %d: its image/png is not base64: %w", i, err)
		}
		pngs = append(pngs, png)
	}
	if len(pngs) == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	n := 1
	for _, png := range pngs {
		for ; ; n++ {
			path := filepath.Join(dir, fmt.Sprintf("figure-%d.png", n))
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
			if errors.Is(err, fs.ErrExist) {
				continue
			}
			if err != nil {
				return err
			}
			_, err = f.Write(png)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			fmt.Fprintf(sio.Stderr, "pyexec: figure written to %s\n", path)
			break
		}
	}
	return nil
}

// runError is the line that says why a request failed.
func runError(err error) string {
	msg := err.Error()
	if !strings.HasPrefix(msg, "pyexec: ") { // a client.APIError says it already
		msg = "pyexec: " + msg
	}
	return msg
}
