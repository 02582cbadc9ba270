package app

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/pyexec/pyexec/internal/cli"
	"github.com/pyexec/pyexec/internal/mcpserver"
	"github.com/pyexec/pyexec/internal/version"
	"github.com/pyexec/pyexec/pkg/client"
)

// newMCPCommand is `pyexec mcp`: an MCP server on standard input and output that forwards every
// call to a running sidecar, for agent frameworks that start MCP servers as a command.
func newMCPCommand(sio IO) *cobra.Command {
	var socket string
	cmd := &cobra.Command{
		Use:   "mcp",
		Short: "Serve the Model Context Protocol on stdin/stdout, forwarding to a running sidecar",
		Long: "mcp is an MCP server over stdio (one JSON-RPC message a line) for agent frameworks that start\n" +
			"their MCP servers as a command: in the app container, or `kubectl exec -i POD -c pyexec --\n" +
			"pyexec mcp`. Its tools (run_python, create_session, close_session, list_sessions, and\n" +
			"install_packages when the sidecar allows installs) and its resources (the files of sessions)\n" +
			"call the sidecar on --socket, whose checks, limits and logs apply. The sidecar serves the same\n" +
			"at /mcp on its socket (Streamable HTTP).",
		Args: cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runMCP(cmd.Context(), sio, socket, cmd.InOrStdin())
		},
	}
	cmd.Flags().StringVar(&socket, "socket", DefaultSocket, "the sidecar's socket")
	return cmd
}

func runMCP(ctx context.Context, sio IO, socket string, stdin io.Reader) error {
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
	srv := mcpserver.New(c, mcpserver.Options{Version: version.Version, Packages: installs})
	// A line that is not a JSON-RPC message is answered with an error, and the next one read.
	err = srv.Run(ctx, &mcpserver.StdioTransport{In: stdin, Out: sio.Stdout})
	if errors.Is(err, io.EOF) || errors.Is(err, context.Canceled) {
		return nil // the client closed stdin, or a signal
	}
	return err
}
