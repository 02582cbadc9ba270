// Package cli holds what pyexec's commands share: usage errors (exit 2), flags set from
// environment variables, and argument checks.
package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/pyexec/pyexec/internal/settings"
)

// UsageError is a mistake in how a command was called; it exits 2.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Usagef returns a UsageError.
func Usagef(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// BindEnv sets every flag that the command line left alone from its environment variable.
// Flags given on the command line win. A repeatable string flag takes one value per line.
func BindEnv(fs *pflag.FlagSet, prefix string, lookup func(string) (string, bool)) error {
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || f.Name == "help" || f.Name == "version" {
			return
		}
		name := settings.EnvName(prefix, f.Name)
		v, ok := lookup(name)
		if !ok {
			return
		}
		values := []string{v}
		switch f.Value.Type() {
		case "stringArray":
			values = nonEmptyLines(v)
		case "stringSlice": // its items comma-separated, or one per line as a stringArray's
			values = []string{strings.Join(nonEmptyLines(v), ",")}
		}
		for _, val := range values {
			if err := f.Value.Set(val); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %v", name, v, err))
				return
			}
		}
		f.Changed = true
	})
	if len(errs) > 0 {
		return &UsageError{Err: errors.Join(errs...)}
	}
	return nil
}

func nonEmptyLines(s string) []string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return out
}

// NoArgs refuses positional arguments as a usage error.
func NoArgs(cmd *cobra.Command, args []string) error {
	if err := cobra.NoArgs(cmd, args); err != nil {
		return &UsageError{Err: err}
	}
	return nil
}

// FlagError turns cobra's flag parsing errors into usage errors.
func FlagError(_ *cobra.Command, err error) error { return &UsageError{Err: err} }

// RequireCommand is the RunE of a root command that has only subcommands: without one, or with
// an unknown one, it is a usage error.
func RequireCommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		_ = cmd.Usage()
		return Usagef("a command is required")
	}
	return Usagef("unknown command %q", args[0])
}

// GroupedUsage is a cobra usage function that lists a command's flags by settings group
// (`pyexec serve --help`), then the global flags.
func GroupedUsage(c *cobra.Command) error {
	w := c.OutOrStderr()
	fmt.Fprintf(w, "Usage:\n  %s\n\n", c.UseLine())
	settings.Usage(w, c.LocalFlags())
	if c.HasAvailableInheritedFlags() {
		fmt.Fprintf(w, "\nGlobal flags:\n%s", c.InheritedFlags().FlagUsagesWrapped(100))
	}
	return nil
}
