package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
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
			"when the sidecar could not run it at all (unreachable, or an API error).",
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
	var res *api.ExecuteResult
	var err error
	if cfg.Stream {
		res, err = c.ExecuteStream(ctx, req, func(stream, data string) {
			if stream == api.EventStderr {
				io.WriteString(sio.Stderr, data)
			} else {
				io.WriteString(sio.Stdout, data)
			}
		})
	} else {
		res, err = c.Execute(ctx, req)
		if err == nil {
			io.WriteString(sio.Stdout, res.Stdout)
			io.WriteString(sio.Stderr, res.Stderr)
		}
	}
	if err != nil {
		fmt.Fprintf(sio.Stderr, "pyexec: %v\n", err)
		return &exitError{code: ExitRunFailed}
	}
	switch res.Reason {
	case api.ReasonTimeout:
		fmt.Fprintf(sio.Stderr, "pyexec: killed after the time limit\n")
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
