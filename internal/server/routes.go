package server

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/pyexec/pyexec/pkg/api"
)

// route is one line of the route table: a ServeMux pattern ("METHOD /path/{wildcard}") and
// its handler.
type route struct {
	pattern string
	handler http.HandlerFunc
}

// routes is the socket API: every method and path it serves. A path that ends in a
// {name...} wildcard has a route of its own without it too (ServeMux would redirect it to
// the path with a trailing slash).
func (s *Server) routes() []route {
	rs := []route{
		{"POST /v1/execute", s.handleExecute},
		{"GET /v1/info", s.handleInfo},
		{"GET /v1/packages", s.handleListPackages},
		{"POST /v1/packages", s.handleInstallPackages},
		{"GET /v1/sessions", s.handleListSessions},
		{"POST /v1/sessions", s.handleCreateSession},
		{"GET /v1/sessions/{id}", s.handleGetSession},
		{"DELETE /v1/sessions/{id}", s.handleDeleteSession},
		{"POST /v1/sessions/{id}/execute", s.handleSessionExecute},
		{"GET /v1/sessions/{id}/files", s.handleSessionFiles},
		{"GET /v1/sessions/{id}/variables", s.handleSessionVariables},
		{"POST /v1/sessions/{id}/checkpoints", s.handleCheckpoint},
		{"GET /v1/sessions/{id}/checkpoints", s.handleListCheckpoints},
		{"DELETE /v1/sessions/{id}/checkpoints/{cid}", s.handleDeleteCheckpoint},
		{"POST /v1/sessions/{id}/restore", s.handleRestore},
		{"POST /v1/sessions/{id}/fork", s.handleFork},
		{"GET /v1/sessions/{id}/files/{path...}", s.handleSessionFile},
	}
	if s.cfg.MCP {
		mcp := s.mcpHandler().ServeHTTP
		rs = append(rs, route{"POST /mcp", mcp}, route{"GET /mcp", mcp}, route{"DELETE /mcp", mcp})
	}
	return rs
}

// router dispatches requests through a ServeMux of the route table, in the API's terms where
// ServeMux has its own:
//   - A path no route serves is 404 not_found, and a method that no route of the path takes is
//     405 method_not_allowed with Allow, both in the API's JSON error shape (ServeMux answers
//     them in plain text).
//   - HEAD is a method of its own, which no route takes (ServeMux serves it with GET's).
//   - A path is routed as it is written, never cleaned or redirected (ServeMux redirects a
//     path with a "." or ".." segment or a "//" to the clean one): a file's path reaches its
//     handler as the client wrote it, to be refused there.
type router struct {
	mux     *http.ServeMux
	methods []string // of the routes, sorted: what Allow may name
}

func newRouter(routes []route) *router {
	rt := &router{mux: http.NewServeMux()}
	for _, r := range routes {
		rt.mux.HandleFunc(r.pattern, r.handler)
		if m, _, ok := strings.Cut(r.pattern, " "); ok && !slices.Contains(rt.methods, m) {
			rt.methods = append(rt.methods, m)
		}
	}
	slices.Sort(rt.methods)
	return rt
}

// route answers r by its route, or with the API's 404 or 405.
func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	if mr, ok := s.router.match(r, r.Method); ok {
		s.router.mux.ServeHTTP(w, mr)
		return
	}
	allow := s.router.allowed(r)
	if len(allow) == 0 {
		s.writeError(w, r, http.StatusNotFound, api.ErrCodeNotFound, fmt.Sprintf("no route %s", r.URL.Path))
		return
	}
	list := strings.Join(allow, ", ")
	w.Header().Set("Allow", list)
	s.writeError(w, r, http.StatusMethodNotAllowed, api.ErrCodeMethodNotAllowed,
		fmt.Sprintf("method %s not allowed on %s; allowed: %s", r.Method, r.URL.Path, list))
}

// allowed are the methods whose routes take r's path, sorted.
func (rt *router) allowed(r *http.Request) []string {
	var allow []string
	for _, m := range rt.methods {
		if _, ok := rt.match(r, m); ok {
			allow = append(allow, m)
		}
	}
	return allow
}

// match says whether a route takes r's path with method, and returns the request to hand the
// mux: r itself, or, when the mux would clean r's path, a copy whose path it takes as written
// (see muxPath).
func (rt *router) match(r *http.Request, method string) (*http.Request, bool) {
	escaped := r.URL.EscapedPath()
	if method == http.MethodHead || !strings.HasPrefix(escaped, "/") {
		return nil, false
	}
	p, merged := muxPath(escaped)
	mr := r
	if p != escaped || method != r.Method {
		// RawPath p unescapes to r.URL.Path: the handlers see the same path.
		u := *r.URL
		u.RawPath = p
		mr = r.WithContext(r.Context()) // a shallow copy
		mr.URL, mr.Method = &u, method
	}
	_, pattern := rt.mux.Handler(mr)
	if pattern == "" {
		return nil, false
	}
	// No id or literal segment is empty: the rest of a path from a "//" on is only ever the
	// value of a {name...} wildcard.
	if t := tailAt(pattern); merged >= 0 && (t < 0 || t > merged) {
		return nil, false
	}
	return mr, true
}

// muxPath is an escaped path as ServeMux takes it as written: a "." or ".." segment escaped
// ("%2E"), and the rest of the path from the first empty segment on ("//", not a trailing
// slash) one segment, its slashes escaped ("%2F"); merged is the index of that segment, -1
// when there is none. Neither changes what the path unescapes to: no literal segment of a
// route is "." or "..", a {name} wildcard's value is its segment unescaped, and a {name...}
// wildcard's the rest of the path unescaped.
func muxPath(escaped string) (p string, merged int) {
	segs := strings.Split(escaped[1:], "/")
	for i, seg := range segs {
		switch {
		case seg == "" && i < len(segs)-1:
			segs = append(segs[:i], strings.Join(segs[i:], "%2F"))
			return "/" + strings.Join(segs, "/"), i
		case seg == ".":
			segs[i] = "%2E"
		case seg == "..":
			segs[i] = "%2E%2E"
		}
	}
	return "/" + strings.Join(segs, "/"), -1
}

// tailAt is the index of the path segment where a pattern's {name...} wildcard begins, -1
// when it has none.
func tailAt(pattern string) int {
	i := strings.Index(pattern, "...}")
	if i < 0 {
		return -1
	}
	path := pattern[strings.IndexByte(pattern, '/'):i]
	return strings.Count(path, "/") - 1
}
