// Package app holds pyexec's commands. Each command parses flags and PYEXEC_* environment
// variables into one config struct with a Validate method, then calls a run function, so tests
// can check the parsed config without running anything.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/pyexec/pyexec/internal/cli"
	"github.com/pyexec/pyexec/internal/logs"
	"github.com/pyexec/pyexec/internal/settings"
	"github.com/pyexec/pyexec/internal/version"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitFailed  = 1 // a hard requirement failed
	ExitUsage   = 2 // bad flags, environment or input files
	EnvPrefix   = "PYEXEC_"
	defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// IO is what a command may touch of its process.
type IO struct {
	Stdout, Stderr io.Writer
	LookupEnv      func(key string) (string, bool)
}

// UsageError is a mistake in how pyexec was called; it exits 2.
type UsageError = cli.UsageError

func usageErrorf(format string, args ...any) error { return cli.Usagef(format, args...) }

// Main runs pyexec with args (without the program name) and returns the exit code.
func Main(ctx context.Context, args []string, io IO) int {
	root := NewRootCommand(io, Runners{})
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	if code, ok := errorsAsExit(err); ok {
		return code // the code's own exit status, already reported by `pyexec run`
	}
	fmt.Fprintf(io.Stderr, "pyexec: %v\n", err)
	var usage *UsageError
	if errors.As(err, &usage) {
		return ExitUsage
	}
	return ExitFailed
}

// Runners are the functions commands call once their config is valid; nil means the real one.
// Tests replace them to inspect the config.
type Runners struct {
	Detect func(context.Context, *DetectConfig) error
	Init   func(context.Context, *InitConfig) error
	Serve  func(context.Context, *ServeConfig) error
	Run    func(context.Context, *RunConfig) error
	Runner func(context.Context, *RunnerConfig) error
}

// globalConfig holds the flags every command has.
type globalConfig struct {
	Log logs.Options
}

// NewRootCommand builds the pyexec command tree.
func NewRootCommand(io IO, run Runners) *cobra.Command {
	g := &globalConfig{}
	root := &cobra.Command{
		Use:           "pyexec",
		Short:         "Run Python code for applications in Kubernetes",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := cli.BindEnv(cmd.Flags(), EnvPrefix, io.LookupEnv); err != nil {
				return err
			}
			if err := g.Log.Validate(); err != nil {
				return &UsageError{Err: err}
			}
			return nil
		},
		Args: cobra.ArbitraryArgs,
		RunE: cli.RequireCommand,
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetOut(io.Stdout)
	root.SetErr(io.Stderr)
	root.SetFlagErrorFunc(cli.FlagError)
	pf := root.PersistentFlags()
	pf.StringVar(&g.Log.Format, "log-format", logs.FormatJSON, "log format on stderr: json or console")
	pf.IntVarP(&g.Log.Verbosity, "verbosity", "v", 0, "log verbosity: 0 logs info and errors, 1 adds debug lines")

	root.AddCommand(newDetectCommand(io, g, run.Detect))
	root.AddCommand(newInitCommand(io, g, run.Init))
	root.AddCommand(newServeCommand(io, g, run.Serve))
	root.AddCommand(newRunCommand(io, g, run.Run))
	root.AddCommand(newRunnerCommand(io, g, run.Runner))
	root.AddCommand(newBenchCommand(io))
	root.AddCommand(newMCPCommand(io))
	root.AddCommand(newSessionCommand(io))
	return root
}

// EnvName is the environment variable that sets a flag: PYEXEC_ and the flag name in upper
// case with dashes as underscores (--packages-dir → PYEXEC_PACKAGES_DIR).
func EnvName(flag string) string { return settings.EnvName(EnvPrefix, flag) }

func lookupOr(lookup func(string) (string, bool), key, def string) string {
	if v, ok := lookup(key); ok && v != "" {
		return v
	}
	return def
}
