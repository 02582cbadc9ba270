package app

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/pyexec/pyexec/internal/cli"
	"github.com/pyexec/pyexec/internal/mcpserver"
	"github.com/pyexec/pyexec/internal/version"
	"github.com/pyexec/pyexec/pkg/api"
	"github.com/pyexec/pyexec/pkg/client"
)

// newMCPCommand is `pyexec mcp`: an MCP server on standard input and output that forwards every
// call to a running sidecar, for agent frameworks that start MCP servers as a command.
func newMCPCommand(sio IO) *cobra.Command {
	var socket, owner string
	var structured bool
	cmd := &cobra.Command{
		Use:   "mcp",
		Short: "Serve the Model Context Protocol on stdin/stdout, forwarding to a running sidecar",
		Long: "mcp is an MCP server over stdio (one JSON-RPC message a line) for agent frameworks that start\n" +
			"their MCP servers as a command: in the app container, or `kubectl exec -i POD -c pyexec --\n" +
			"pyexec mcp`. Its tools (run_python, create_session, close_session, list_sessions, and\n" +
			"install_packages when the sidecar allows installs) and its resources (the files of sessions)\n" +
			"call the sidecar on --socket, whose checks, limits and logs apply. The sidecar serves the same\n" +
			"at /mcp on its socket (Streamable HTTP).\n\n" +
			"The sessions a caller creates are its own: they belong to --owner, or without it to a key\n" +
			"this process makes at start, and no other owner lists, calls, reads or closes them.",
		Args: cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runMCP(cmd.Context(), sio, mcpConfig{socket: socket, owner: owner, structured: structured}, cmd.InOrStdin())
		},
	}
	cmd.Flags().StringVar(&socket, "socket", DefaultSocket, "the sidecar's socket")
	cmd.Flags().StringVar(&owner, "owner", "", "the owner of the sessions this caller creates and sees (the sidecar's "+api.OwnerHeader+"); default: a random key of this process, so that its sessions are its alone")
	cmd.Flags().BoolVar(&structured, "structured-result", false, "deprecated: run_python declares an output schema and gives the API's whole result as structured content, as earlier versions did")
	return cmd
}

// mcpConfig is what `pyexec mcp` is told by its flags.
type mcpConfig struct {
	socket     string
	owner      string
	structured bool
}

func runMCP(ctx context.Context, sio IO, cfg mcpConfig, stdin io.Reader) error {
	socket := cfg.socket
	owner := cfg.owner
	if owner == "" {
		owner = "mcp-" + rand.Text() // this process's: the MCP session over stdio
	} else if err := api.CheckOwner(owner); err != nil {
		return fmt.Errorf("--owner: %w", err)
	}
	c := client.New(socket)
	// The sidecar says whether installs are allowed; it must answer before any tool is listed.
	info, err := c.Info(ctx)
	if err != nil {
		if errors.Is(err, client.ErrUnreachable) {
			return fmt.Errorf("no pyexec sidecar on %s: %w", socket, err)
		}
		return err
	}
	installs := info.Packages != nil && len(info.Packages.Allowed) > 0
	srv := mcpserver.New(c, mcpserver.Options{Version: version.Version, Packages: installs, Owner: owner,
		MaxTimeoutSeconds: info.Limits.MaxTimeoutSeconds, StructuredResult: cfg.structured, Python: info.Python})
	// A line that is not a JSON-RPC message is answered with an error, and the next one read.
	err = srv.Run(ctx, &mcpserver.StdioTransport{In: stdin, Out: sio.Stdout})
	if errors.Is(err, io.EOF) || errors.Is(err, context.Canceled) {
		return nil // the client closed stdin, or a signal
	}
	return err
}
