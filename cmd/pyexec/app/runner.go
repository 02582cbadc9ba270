package app

import (
	"context"
	"fmt"
	"net"
	"os"

	"github.com/spf13/cobra"

	"github.com/pyexec/pyexec/internal/cli"
	"github.com/pyexec/pyexec/internal/logs"
	"github.com/pyexec/pyexec/internal/runner"
	"github.com/pyexec/pyexec/internal/version"
)

// RunnerConfig is the config of `pyexec runner`. Every field has a flag and a PYEXEC_*
// variable.
type RunnerConfig struct {
	// ServerSocket is the server's runner socket (pyexec serve --runner-socket).
	ServerSocket string
	// ServerUID is the uid the server must run as.
	ServerUID int
	// ControlFD is the control connection of a runner that pyexec serve started itself.
	ControlFD int
	// ShmDir is a shared-memory directory of the runner's own (its container's /dev/shm):
	// what an execution or session leaves there is removed once it ends.
	ShmDir string
}

// Validate checks that the runner knows its server: a socket and its uid, or a control fd.
func (c *RunnerConfig) Validate() error {
	switch {
	case c.ControlFD > 0 && c.ServerSocket != "":
		return usageErrorf("--control-fd and --server-socket: give one")
	case c.ControlFD > 0:
		return nil
	case c.ServerSocket == "":
		return usageErrorf("--server-socket is required: the socket pyexec serve --runner-socket listens on")
	case c.ServerUID < 0:
		return usageErrorf("--server-uid is required: the uid pyexec serve runs as")
	}
	return nil
}

func newRunnerCommand(io IO, g *globalConfig, run func(context.Context, *RunnerConfig) error) *cobra.Command {
	cfg := &RunnerConfig{}
	if run == nil {
		run = func(ctx context.Context, c *RunnerConfig) error { return runRunner(ctx, io, g, c) }
	}
	cmd := &cobra.Command{
		Use:   "runner",
		Short: "Run code for a pyexec serve (the runner container)",
		Long: "runner holds the zygote, the spares, the supervisors and every execution and session of one\n" +
			"pyexec serve, as a uid of its own: it dials the server's --runner-socket, says hello, and runs\n" +
			"what the server asks until the server goes; then it ends every execution and dials again.",
		Args: cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.Validate(); err != nil {
				return err
			}
			return run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.ServerSocket, "server-socket", "", "the server's runner socket (pyexec serve --runner-socket), dialed until it answers")
	f.IntVar(&cfg.ServerUID, "server-uid", -1, "the uid pyexec serve runs as; a socket of another uid is not the server")
	f.IntVar(&cfg.ControlFD, "control-fd", 0, "the control connection of a runner pyexec serve started itself (set by pyexec serve)")
	_ = f.MarkHidden("control-fd")
	f.StringVar(&cfg.ShmDir, "shm-dir", "", "a shared-memory directory that is the runner's alone (its container's /dev/shm, as the injector mounts it): what an execution or session leaves there is removed once it ends, and all of it whenever none runs; empty: not watched. Never a /dev/shm that other programs share")
	return cmd
}

func runRunner(ctx context.Context, io IO, g *globalConfig, cfg *RunnerConfig) error {
	log := logs.New(io.Stderr, g.Log).WithName("runner")
	// Descriptors the runner inherited (from a shell, a wrapper) must not reach the code; the
	// control connection is taken over below, close-on-exec too.
	if err := closeOnExec(); err != nil {
		log.Info("WARNING: descriptors the runner inherited may reach executions", "err", err.Error())
	}
	o := runner.Options{Socket: cfg.ServerSocket, ServerUID: cfg.ServerUID, ShmDir: cfg.ShmDir, Version: version.Version, Log: log}
	if cfg.ControlFD > 0 {
		f := os.NewFile(uintptr(cfg.ControlFD), "control")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("--control-fd %d: %w", cfg.ControlFD, err)
		}
		uc, ok := c.(*net.UnixConn)
		if !ok {
			return fmt.Errorf("--control-fd %d: not a Unix socket", cfg.ControlFD)
		}
		o.Control = uc
		// Started by pyexec serve: it stops when its server goes, not on a signal of its own.
		ctx = context.WithoutCancel(ctx)
	}
	return runner.Run(ctx, o)
}
