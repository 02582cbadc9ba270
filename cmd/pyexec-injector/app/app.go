// Package app holds pyexec-injector's commands: serve (the webhook) and inject (offline).
// Each parses flags and PYEXEC_INJECTOR_* variables into one config struct with Validate.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/pyexec/pyexec/internal/cli"
	"github.com/pyexec/pyexec/internal/logs"
	"github.com/pyexec/pyexec/internal/version"
)

// EnvPrefix prefixes the environment variable of every flag.
const EnvPrefix = "PYEXEC_INJECTOR_"

// IO is what a command may touch of its process.
type IO struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	LookupEnv      func(string) (string, bool)
}

// Runners replace the commands' work in tests; nil means the real one.
type Runners struct {
	Serve  func(context.Context, *ServeConfig) error
	Inject func(context.Context, *InjectConfig) error
}

// Main runs pyexec-injector and returns the exit code: 0, 1 on failure, 2 on usage errors.
func Main(ctx context.Context, args []string, io IO) int {
	root := NewRootCommand(io, Runners{})
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintf(io.Stderr, "pyexec-injector: %v\n", err)
	var usage *cli.UsageError
	if errors.As(err, &usage) {
		return 2
	}
	return 1
}

// NewRootCommand builds the command tree.
func NewRootCommand(io IO, run Runners) *cobra.Command {
	logOpts := &logs.Options{}
	root := &cobra.Command{
		Use:           "pyexec-injector",
		Short:         "Inject pyexec's init container and sidecar into pods",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.ArbitraryArgs,
		RunE:          cli.RequireCommand,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := cli.BindEnv(cmd.Flags(), EnvPrefix, io.LookupEnv); err != nil {
				return err
			}
			if err := logOpts.Validate(); err != nil {
				return &cli.UsageError{Err: err}
			}
			return nil
		},
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetOut(io.Stdout)
	root.SetErr(io.Stderr)
	root.SetFlagErrorFunc(cli.FlagError)
	pf := root.PersistentFlags()
	pf.StringVar(&logOpts.Format, "log-format", logs.FormatJSON, "log format on stderr: json or console")
	pf.IntVarP(&logOpts.Verbosity, "verbosity", "v", 0, "log verbosity: 0 logs info and errors, 1 adds debug lines")
	root.AddCommand(newServeCommand(io, logOpts, run.Serve))
	root.AddCommand(newInjectCommand(io, run.Inject))
	return root
}
