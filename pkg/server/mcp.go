package server

import (
	"context"
	"errors"
	"net/http"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/pyexec/pyexec/pkg/client"
	"github.com/pyexec/pyexec/pkg/mcpserver"
)

// errMCPHangUp is the cause of the context of a tool's call whose MCP client hung up.
var errMCPHangUp = errors.New("the MCP client hung up")

// mcpRequestKey is the context key of the /mcp request that a tool's call serves.
type mcpRequestKey struct{}

// mcpHandler serves MCP over Streamable HTTP. Its tools call this server's own API in process,
// with the context of the MCP request (and so its peer's credentials): an MCP call is checked,
// queued, limited, confined and logged as the same call on the socket would be. Stateless: no
// MCP session to keep between requests, plain JSON answers.
//
// A client that hangs up interrupts its call, as on the API. The SDK hands its tool handlers a
// context that carries the HTTP request's values but never ends (for every protocol version
// before 2026-07-28), so the request's own context travels as a value to the API calls, which
// end with it (mcpCall).
func (s *Server) mcpHandler() http.Handler {
	backend := client.NewInProcess(http.HandlerFunc(s.mcpCall))
	srv := mcpserver.New(backend, mcpserver.Options{Version: s.cfg.Version, Packages: s.cfg.MCPInstalls})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv },
		&mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true, PropagateRequestCancellation: true})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), mcpRequestKey{}, r.Context())))
	})
}

// mcpCall serves an API call of an MCP tool: it ends when the /mcp request it serves ends
// (its client hung up), and so does the execution it runs.
func (s *Server) mcpCall(w http.ResponseWriter, r *http.Request) {
	if outer, ok := r.Context().Value(mcpRequestKey{}).(context.Context); ok {
		ctx, cancel := context.WithCancelCause(r.Context())
		defer cancel(nil)
		stop := context.AfterFunc(outer, func() { cancel(errMCPHangUp) })
		defer stop()
		r = r.WithContext(ctx)
	}
	s.ServeHTTP(w, r)
}
