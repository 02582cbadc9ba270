package server

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/pyexec/pyexec/internal/unixsocket"
)

// Timeouts of the socket's HTTP server.
const (
	// SocketReadHeaderTimeout is how long a client has to send a request's headers, from the
	// connection (or the end of the previous response) on: a client that connects and sends
	// nothing, or trickles its headers, is cut off after it.
	SocketReadHeaderTimeout = 10 * time.Second
	// SocketIdleTimeout closes a kept-alive connection idle this long. It is longer than the
	// 30 s after which pkg/client closes its own idle connections, so the client closes first
	// and never sends a request on a connection that the server is closing.
	SocketIdleTimeout = 60 * time.Second
	// SocketMaxHeaderBytes bounds a request's headers (net/http adds 4 KiB of slack): more
	// gets 431. An app sends a few hundred bytes; an MCP client's token fits many times over.
	SocketMaxHeaderBytes = 64 << 10
)

// errNotServing fails readiness while the socket's Serve is not running.
var errNotServing = errors.New("the socket is not served")

// SocketConfig is where the API socket is, and who may connect to it (see Listen).
type SocketConfig struct {
	Path string
	Mode os.FileMode
	GID  int // -1 leaves the group
}

// Socket serves a Server's API on its Unix socket and keeps that socket the server's own:
//   - connections open at once are capped, in all (Limits.MaxConnections) and per peer uid
//     (Limits.MaxConnectionsPerUID); one over a cap is closed at once and logged once per
//     burst;
//   - a client that sends its headers too slowly, or a connection left idle, is closed
//     (SocketReadHeaderTimeout, SocketIdleTimeout), and so is one whose body does not arrive
//     in time (BodyTimeout, then BodyMinRate); headers are capped (SocketMaxHeaderBytes);
//   - each readiness check (Server.Ready, /readyz) compares the file at the path with the one
//     bind created: a socket file removed, or replaced by a stale socket, is re-created with
//     Listen's checks, so the server serves again; one that another server listens on is
//     never taken over, and the server is not ready while it is there.
//
// Create it with Server.ListenSocket, run Serve, and stop it by passing HTTPServer to
// Server.Shutdown.
type Socket struct {
	srv   *Server
	cfg   SocketConfig
	hs    *http.Server
	conns *connLimiter

	dirMode os.FileMode // the socket directory's permissions at Listen

	mu      sync.Mutex
	ln      *unixsocket.Listener // the listener on the path now
	serving bool                 // Serve runs
}

// ListenSocket listens on cfg.Path with Listen and returns the Socket that serves the API
// there; nothing is served until Serve. Its check is added to the server's readiness.
func (s *Server) ListenSocket(cfg SocketConfig) (*Socket, error) {
	ln, err := unixsocket.Listen(cfg.Path, cfg.Mode, cfg.GID)
	if err != nil {
		return nil, err
	}
	k := &Socket{
		srv:   s,
		cfg:   cfg,
		conns: newConnLimiter(s.cfg.Limits.MaxConnections, s.cfg.Limits.MaxConnectionsPerUID, s.log, s.m),
	}
	k.ln = ln
	k.ln.Admit = k.admit
	if fi, err := os.Stat(filepath.Dir(cfg.Path)); err == nil {
		k.dirMode = fi.Mode().Perm()
	}
	k.hs = &http.Server{
		Handler:           withBodyDeadline(s.Handler(), BodyTimeout, BodyMinRate),
		ConnContext:       unixsocket.ConnContext,
		ReadHeaderTimeout: SocketReadHeaderTimeout,
		IdleTimeout:       SocketIdleTimeout,
		MaxHeaderBytes:    SocketMaxHeaderBytes,
	}
	s.addReadyCheck("socket", k.check)
	return k, nil
}

// restoreMode puts back the permissions of the socket or of its directory (mode; 0 leaves it
// as it is) when they changed: code running as the server's uid owns both and may chmod them
// (Landlock does not govern permissions), which would shut every client out.
func (k *Socket) restoreMode(path string, mode os.FileMode) error {
	const reason = "its permissions or its directory's changed and cannot be put back"
	fi, err := os.Lstat(path)
	if err != nil {
		return notReady(reason, fmt.Errorf("socket: %w", err))
	}
	if mode == 0 || fi.Mode().Perm() == mode {
		return nil
	}
	if err := os.Chmod(path, mode); err != nil {
		return notReady(reason, fmt.Errorf("socket: %s has mode %#o, and it cannot be put back to %#o: %w", path, fi.Mode().Perm(), mode, err))
	}
	k.srv.log.Info("permissions restored", "path", path, "was", fmt.Sprintf("%#o", fi.Mode().Perm()), "mode", fmt.Sprintf("%#o", mode))
	return nil
}

// HTTPServer is the socket's HTTP server, for Server.Shutdown.
func (k *Socket) HTTPServer() *http.Server { return k.hs }

// Serve serves the API until the HTTP server is shut down (http.ErrServerClosed) or its
// listener fails. When a readiness check re-creates the socket, Serve goes on with the new
// listener.
func (k *Socket) Serve() error {
	k.mu.Lock()
	k.serving = true
	k.mu.Unlock()
	defer func() {
		k.mu.Lock()
		k.serving = false
		k.mu.Unlock()
	}()
	for {
		k.mu.Lock()
		ln := k.ln
		k.mu.Unlock()
		err := k.hs.Serve(ln)
		k.mu.Lock()
		replaced := k.ln != ln
		k.mu.Unlock()
		if !replaced || errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
}

// check is the socket's readiness check: the file at the path is still the socket this
// server bound and serves. When it is not, it listens anew with Listen — which refuses to
// take over a socket another server answers on, and anything that is not a socket — and
// hands the new listener to Serve. Server.Ready runs it with checkMu held.
func (k *Socket) check() error {
	k.mu.Lock()
	ln, serving := k.ln, k.serving
	k.mu.Unlock()
	if !serving {
		return errNotServing
	}
	// The directory first: at mode 0 even its owner cannot look at the socket in it.
	if err := k.restoreMode(filepath.Dir(k.cfg.Path), k.dirMode); err != nil {
		return err
	}
	lost := ln.Owned()
	if lost == nil {
		return k.restoreMode(k.cfg.Path, k.cfg.Mode)
	}
	k.srv.mu.Lock()
	draining := k.srv.draining
	k.srv.mu.Unlock()
	if draining {
		return notReady("removed or replaced while draining", lost) // shutting down: no new socket
	}
	nl, err := unixsocket.Listen(k.cfg.Path, k.cfg.Mode, k.cfg.GID)
	if err != nil {
		reason := "removed or replaced, and it cannot be re-created"
		if errors.Is(err, unixsocket.ErrSocketInUse) {
			reason = "replaced, and another server listens on its path"
		}
		return notReady(reason, fmt.Errorf("%w; not re-created: %w", lost, err))
	}
	cl := nl
	cl.Admit = k.admit // connections of the old listener still hold their places
	k.mu.Lock()
	if !k.serving { // shut down meanwhile: nobody would serve it
		k.mu.Unlock()
		cl.Close()
		return errNotServing
	}
	k.ln = cl
	k.mu.Unlock()
	// The old listener's file is gone or is not ours: close it without touching the path.
	// Serve's http.Server.Serve on it returns, and Serve goes on with the new one.
	ln.Abandon()
	k.srv.log.Info("socket re-created", "socket", k.cfg.Path, "why", lost.Error())
	return nil
}

// admit takes a place for a new connection of the socket's peer uid (see Limits).
func (k *Socket) admit(uid, pid int) (release func(), ok bool) {
	return k.conns.admit(uidPeer(uid), "uid", uid, "pid", pid)
}
