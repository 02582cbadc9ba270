package server

import (
	"net/http"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/pyexec/pyexec/pkg/client"
	"github.com/pyexec/pyexec/pkg/mcpserver"
)

// mcpHandler serves MCP over Streamable HTTP. Its tools call this server's own API in process,
// with the context of the MCP request (and so its peer's credentials): an MCP call is checked,
// queued, limited, confined and logged as the same call on the socket would be. Stateless: no
// MCP session to keep between requests, plain JSON answers.
func (s *Server) mcpHandler() http.Handler {
	backend := client.NewInProcess(s)
	srv := mcpserver.New(backend, mcpserver.Options{Version: s.cfg.Version, Packages: s.cfg.MCPInstalls})
	return mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv },
		&mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true})
}
