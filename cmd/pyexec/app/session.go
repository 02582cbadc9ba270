package app

import (
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pyexec/pyexec/internal/cli"
	"github.com/pyexec/pyexec/pkg/api"
	"github.com/pyexec/pyexec/pkg/client"
)

// sessionFlags are the flags every `pyexec session` command takes.
type sessionFlags struct {
	socket string
	owner  string
	json   bool
}

func (f *sessionFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.socket, "socket", DefaultSocket, "the sidecar's socket")
	cmd.Flags().StringVar(&f.owner, "owner", "", "act as this owner ("+api.OwnerHeader+"): create the owner's sessions, see only those")
	cmd.Flags().BoolVar(&f.json, "json", false, "print the API's JSON")
}

// context is ctx scoped to the owner, when one is given, checked as the sidecar checks it.
func (f *sessionFlags) context(ctx context.Context) (context.Context, error) {
	if f.owner == "" {
		return ctx, nil
	}
	if err := api.CheckOwner(f.owner); err != nil {
		return nil, usageErrorf("--owner: %v", err)
	}
	return client.WithOwner(ctx, f.owner), nil
}

// newSessionCommand is `pyexec session create|list|delete|checkpoint|checkpoints|restore|fork`:
// the sessions of a running sidecar, their checkpoints and branches.
func newSessionCommand(sio IO) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "session",
		Short: "Create, list and delete the sessions of a running sidecar; checkpoint, restore and fork them",
		Long: "session manages the sessions of the sidecar on --socket: create prints the new session's id\n" +
			"(then `pyexec run --session ID`), list prints the open ones, delete ends one; checkpoint takes\n" +
			"a checkpoint of one and prints its name, checkpoints lists them, restore puts the session back\n" +
			"to one (and checkpoint --delete lets one go), fork forks one into branches and prints their ids.\nWith --owner\n" +
			"they act as that owner (the " + api.OwnerHeader + " header): see only its sessions. --json prints\n" +
			"the API's answers. A request the sidecar refuses exits 125 with its error.",
		Args: cli.NoArgs,
		RunE: cli.RequireCommand,
	}
	cmd.AddCommand(newSessionCreateCommand(sio), newSessionListCommand(sio), newSessionDeleteCommand(sio),
		newSessionCheckpointCommand(sio), newSessionCheckpointsCommand(sio), newSessionRestoreCommand(sio), newSessionForkCommand(sio))
	return cmd
}

func newSessionCreateCommand(sio IO) *cobra.Command {
	var f sessionFlags
	var idle time.Duration
	var memoryMB int
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a session and print its id",
		Args:  cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, err := f.context(cmd.Context())
			if err != nil {
				return err
			}
			var req api.SessionRequest
			if idle < 0 || memoryMB < 0 {
				return usageErrorf("--idle-timeout and --memory-limit-mb must not be negative")
			}
			if idle > 0 {
				s := idle.Seconds()
				req.IdleTimeoutSeconds = &s
			}
			if memoryMB > 0 {
				req.MemoryLimitMB = &memoryMB
			}
			s, err := client.New(f.socket).CreateSession(ctx, req)
			if err != nil {
				return sessionFailed(sio, err)
			}
			if f.json {
				return printJSON(sio, s)
			}
			fmt.Fprintln(sio.Stdout, s.ID)
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().DurationVar(&idle, "idle-timeout", 0, "end the session after this long without a call (default: the sidecar's)")
	cmd.Flags().IntVar(&memoryMB, "memory-limit-mb", 0, "memory limit of the session's interpreter, MiB (default: the sidecar's)")
	return cmd
}

func newSessionListCommand(sio IO) *cobra.Command {
	var f sessionFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the open sessions, oldest first",
		Args:  cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, err := f.context(cmd.Context())
			if err != nil {
				return err
			}
			list, err := client.New(f.socket).Sessions(ctx)
			if err != nil {
				return sessionFailed(sio, err)
			}
			if f.json {
				return printJSON(sio, list)
			}
			w := tabwriter.NewWriter(sio.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tCALLS\tBUSY\tMEMORY\tLAST USED\tEXPIRES\tOWNER")
			for _, s := range list.Sessions {
				fmt.Fprintf(w, "%s\t%d\t%v\t%dMi\t%s\t%s\t%s\n", s.ID, s.Executions, s.Busy, s.MemoryBytes>>20,
					s.LastUsedAt.UTC().Format(time.RFC3339), s.ExpiresAt.UTC().Format(time.RFC3339), s.Owner)
			}
			return w.Flush()
		},
	}
	f.add(cmd)
	return cmd
}

func newSessionDeleteCommand(sio IO) *cobra.Command {
	var f sessionFlags
	cmd := &cobra.Command{
		Use:   "delete ID...",
		Short: "End sessions: their interpreters, variables and files are gone",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageErrorf("give the id of each session to delete")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, err := f.context(cmd.Context())
			if err != nil {
				return err
			}
			c := client.New(f.socket)
			var failed error
			for _, id := range args {
				if err := c.DeleteSession(ctx, id); err != nil {
					failed = sessionFailed(sio, err)
					continue
				}
				if !f.json {
					fmt.Fprintf(sio.Stdout, "%s deleted\n", id)
				}
			}
			return failed
		},
	}
	f.add(cmd)
	return cmd
}

func newSessionCheckpointCommand(sio IO) *cobra.Command {
	var f sessionFlags
	var del string
	cmd := &cobra.Command{
		Use:   "checkpoint ID",
		Short: "Take a checkpoint of a session and print its name (--delete NAME lets one go)",
		Args:  exactlyOne("give the id of the session"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, err := f.context(cmd.Context())
			if err != nil {
				return err
			}
			c := client.New(f.socket)
			if del != "" {
				if err := c.DeleteCheckpoint(ctx, args[0], del); err != nil {
					return sessionFailed(sio, err)
				}
				if !f.json {
					fmt.Fprintf(sio.Stdout, "%s deleted\n", del)
				}
				return nil
			}
			cp, err := c.Checkpoint(ctx, args[0])
			if err != nil {
				return sessionFailed(sio, err)
			}
			if f.json {
				return printJSON(sio, cp)
			}
			fmt.Fprintln(sio.Stdout, cp.ID)
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().StringVar(&del, "delete", "", "let this checkpoint go instead of taking one")
	return cmd
}

func newSessionCheckpointsCommand(sio IO) *cobra.Command {
	var f sessionFlags
	cmd := &cobra.Command{
		Use:   "checkpoints ID",
		Short: "List the checkpoints of a session, oldest first",
		Args:  exactlyOne("give the id of the session"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, err := f.context(cmd.Context())
			if err != nil {
				return err
			}
			l, err := client.New(f.socket).Checkpoints(ctx, args[0])
			if err != nil {
				return sessionFailed(sio, err)
			}
			if f.json {
				return printJSON(sio, l)
			}
			w := tabwriter.NewWriter(sio.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "CHECKPOINT\tCREATED\tEXPIRES\tMEMORY\tFILES\tAUTO")
			for _, c := range l.Checkpoints {
				fmt.Fprintf(w, "%s\t%s\t%s\t%dKi\t%d (%dKi)\t%v\n", c.ID, c.CreatedAt.UTC().Format(time.RFC3339), c.ExpiresAt.UTC().Format(time.RFC3339),
					c.MemoryBytes>>10, c.Files, c.FilesBytes>>10, c.Auto)
			}
			return w.Flush()
		},
	}
	f.add(cmd)
	return cmd
}

func newSessionRestoreCommand(sio IO) *cobra.Command {
	var f sessionFlags
	cmd := &cobra.Command{
		Use:   "restore ID CHECKPOINT",
		Short: "Put a session back to one of its checkpoints",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 2 {
				return usageErrorf("give the id of the session and the checkpoint")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, err := f.context(cmd.Context())
			if err != nil {
				return err
			}
			s, err := client.New(f.socket).RestoreCheckpoint(ctx, args[0], args[1])
			if err != nil {
				return sessionFailed(sio, err)
			}
			if f.json {
				return printJSON(sio, s)
			}
			fmt.Fprintf(sio.Stdout, "%s restored to %s\n", args[0], args[1])
			return nil
		},
	}
	f.add(cmd)
	return cmd
}

// exactlyOne takes one argument, else a usage error saying want.
func exactlyOne(want string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != 1 {
			return usageErrorf("%s", want)
		}
		return nil
	}
}

// sessionFailed says why a request failed, and exits 125 as `pyexec run` does.
func sessionFailed(sio IO, err error) error {
	fmt.Fprintln(sio.Stderr, runError(err))
	return &exitError{code: ExitRunFailed}
}

func printJSON(sio IO, v any) error {
	enc := json.NewEncoder(sio.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newSessionForkCommand(sio IO) *cobra.Command {
	var f sessionFlags
	var count int
	cmd := &cobra.Command{
		Use:   "fork ID",
		Short: "Fork a session into a branch (--count N: N of them) and print the new ids, one a line",
		Args:  exactlyOne("give the id of the session"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if count < 1 {
				return usageErrorf("--count must be at least 1")
			}
			ctx, err := f.context(cmd.Context())
			if err != nil {
				return err
			}
			c := client.New(f.socket)
			var out []api.Session
			if count == 1 {
				s, err := c.Fork(ctx, args[0])
				if err != nil {
					return sessionFailed(sio, err)
				}
				out = []api.Session{*s}
			} else if out, err = c.ForkN(ctx, args[0], count); err != nil {
				return sessionFailed(sio, err)
			}
			if f.json {
				if count == 1 {
					return printJSON(sio, out[0])
				}
				return printJSON(sio, api.SessionList{Sessions: out})
			}
			for _, s := range out {
				fmt.Fprintln(sio.Stdout, s.ID)
			}
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().IntVar(&count, "count", 1, "how many branches to fork at once")
	return cmd
}
