package app

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/pyexec/pyexec/internal/cli"
	"github.com/pyexec/pyexec/internal/container"
)

// DetectConfig is the config of `pyexec detect`.
type DetectConfig struct {
	// Root is the directory all detection files are read under ("/" for this machine).
	Root string
	// Output is "json" or "text".
	Output string
}

// Validate checks the config.
func (c *DetectConfig) Validate() error {
	if c.Output != "json" && c.Output != "text" {
		return usageErrorf("-o %q: want json or text", c.Output)
	}
	if c.Root == "" {
		return usageErrorf("--root must not be empty")
	}
	return nil
}

func newDetectCommand(io IO, _ *globalConfig, run func(context.Context, *DetectConfig) error) *cobra.Command {
	cfg := &DetectConfig{}
	if run == nil {
		run = func(_ context.Context, c *DetectConfig) error { return runDetect(io, c) }
	}
	cmd := &cobra.Command{
		Use:   "detect",
		Short: "Print what container detection sees, with its evidence",
		Args:  cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.Validate(); err != nil {
				return err
			}
			return run(cmd.Context(), cfg)
		},
	}
	cmd.Flags().StringVar(&cfg.Root, "root", "/", "read /proc, /run and marker files under this directory; the environment then comes from ROOT/proc/self/environ")
	cmd.Flags().StringVarP(&cfg.Output, "output", "o", "json", "output format: json or text")
	return cmd
}

func runDetect(io IO, cfg *DetectConfig) error {
	c := detector(io, cfg.Root).Detect()
	if cfg.Output == "text" {
		_, err := fmt.Fprintln(io.Stdout, container.Text(c))
		return err
	}
	enc := json.NewEncoder(io.Stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(c)
}

// detector reads the real environment for the real root, and the root's environ file otherwise.
func detector(io IO, root string) container.Detector {
	if filepath.Clean(root) == "/" {
		return container.Detector{Root: "/", LookupEnv: io.LookupEnv}
	}
	return container.Detector{Root: root}
}
