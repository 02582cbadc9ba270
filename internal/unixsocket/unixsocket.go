// Package unixsocket listens on a Unix socket safely: it never deletes what is not a stale
// socket, removes only the file it bound, notices when that file is removed or replaced, and
// hands each connection's peer credentials (SO_PEERCRED) to the HTTP handlers.
package unixsocket

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Errors of Listen, for errors.Is.
var (
	// ErrSocketInUse means another server answers on the socket path; Listen leaves it alone.
	ErrSocketInUse = errors.New("socket in use")
	// ErrPathTooLong means the path does not fit in sockaddr_un.sun_path.
	ErrPathTooLong = errors.New("socket path too long")
	// ErrNotSocket means something other than a socket exists at the path; Listen never
	// deletes it.
	ErrNotSocket = errors.New("not a socket")
	// ErrSocketLost means the socket file the server bound was removed or replaced.
	ErrSocketLost = errors.New("socket lost")
)

// maxSocketPath is the size of sockaddr_un.sun_path (108 bytes on Linux), which must also
// hold the terminating NUL.
const maxSocketPath = len(unix.RawSockaddrUnix{}.Path)

// staleDialTimeout bounds the dial that asks whether an existing socket is still served.
const staleDialTimeout = time.Second

// Listen listens on the Unix socket at path and returns a listener whose connections carry
// the peer's credentials (see ConnContext and PeerCred).
//
// It creates the parent directory (0755) when missing. When something already exists at
// path it must be a socket: Listen dials it and returns ErrSocketInUse when a server answers,
// removes it only when the dial is refused (a stale socket left by a process that died), and
// returns ErrNotSocket, touching nothing, for anything else. The socket gets mode, and the
// group gid when gid >= 0 (-1 leaves the group). Closing the listener removes the socket, if
// the file at path is still the one it bound.
func Listen(path string, mode os.FileMode, gid int) (*Listener, error) {
	if err := checkSocketPath(path); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	// A race remains between removeStaleSocket and the bind below: two servers started at
	// the same moment on the same path can both find the stale socket, and the second one's
	// remove then unlinks the first one's fresh socket. Closing it would take a lock file
	// next to the socket; in a pod exactly one sidecar owns the path, so we accept the race.
	// The bind itself fails with EADDRINUSE if another server created the path in between.
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	// Closing the listener unlinks path only while path is still this socket (see Close):
	// net.UnixListener would unlink whatever is there then, even another server's socket.
	l.SetUnlinkOnClose(false)
	// The identity of the file that bind made, to tell later whether path is still ours.
	// Nobody can have replaced it since bind without unlinking it first; if it is gone
	// already, we would serve on nothing.
	id, err := fileIDOf(path)
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("stat socket after bind: %w", err)
	}
	cl := &Listener{l: l, path: path, id: id}
	// Between bind and chmod the socket has the umask's mode (0755 with the usual 022: only
	// the owner may connect), so the window never grants more than the owner has.
	if err := setOwnership(path, mode, gid); err != nil {
		cl.Close() // unlinks the socket
		return nil, err
	}
	return cl, nil
}

// fileID identifies a file: its device and inode.
type fileID struct {
	dev, ino uint64
}

// fileIDOf returns the identity of the file at path, without following a symlink.
func fileIDOf(path string) (fileID, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return fileID{}, &fs.PathError{Op: "lstat", Path: path, Err: err}
	}
	return fileID{dev: uint64(st.Dev), ino: st.Ino}, nil
}

// checkSocketPath refuses a path that cannot be bound.
func checkSocketPath(path string) error {
	if path == "" {
		return errors.New("socket path is empty")
	}
	if len(path)+1 > maxSocketPath {
		return fmt.Errorf("%w: %s is %d bytes, the limit is %d (sun_path holds %d bytes including the NUL)",
			ErrPathTooLong, path, len(path), maxSocketPath-1, maxSocketPath)
	}
	return nil
}

// removeStaleSocket makes path free to bind: nothing there, or a socket nobody serves.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check socket path: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%w: %s exists and is a %s; remove it yourself if it is not needed",
			ErrNotSocket, path, DescribeType(fi.Mode()))
	}
	c, err := net.DialTimeout("unix", path, staleDialTimeout)
	if err == nil {
		c.Close()
		return fmt.Errorf("%w: another server is listening on %s", ErrSocketInUse, path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		// EACCES, a timeout (a server too busy to accept), ...: we cannot tell that the
		// socket is stale, so we must not take it over.
		return fmt.Errorf("check existing socket %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}

// DescribeType names a file type for an error message.
func DescribeType(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m.IsRegular():
		return "regular file"
	case m&fs.ModeSymlink != 0:
		return "symlink"
	default:
		return "file of mode " + m.Type().String()
	}
}

// setOwnership gives the socket its mode and group.
func setOwnership(path string, mode os.FileMode, gid int) error {
	if err := os.Chmod(path, mode); err != nil {
		return fmt.Errorf("chmod socket: %w", err)
	}
	if gid >= 0 {
		if err := os.Chown(path, -1, gid); err != nil {
			return fmt.Errorf("chown socket to group %d: %w", gid, err)
		}
	}
	return nil
}

// peerCred is what SO_PEERCRED says about the process that connected.
type peerCred struct {
	uid, gid, pid int
}

// Listener reads each connection's peer credentials once, at Accept, and admits it
// through Admit, when set.
type Listener struct {
	// Admit, when set (before the first Accept), decides whether a new connection from the
	// peer uid and pid may stay open; release gives its place back when it closes. A
	// connection of unknown credentials comes as uid and pid -1.
	Admit func(uid, pid int) (release func(), ok bool)

	l    *net.UnixListener
	path string
	id   fileID // the socket file that bind created at path
}

// credConn is an accepted connection with its peer's credentials.
type credConn struct {
	*net.UnixConn
	cred    peerCred
	ok      bool   // false when SO_PEERCRED could not be read
	release func() // gives the connection's place back to the limiter; nil without one
	closed  sync.Once
}

// Close closes the connection and gives its place back to the limiter, once.
func (c *credConn) Close() error {
	err := c.UnixConn.Close()
	c.closed.Do(func() {
		if c.release != nil {
			c.release()
		}
	})
	return err
}

// Accept waits for the next connection that the limiter admits, and reads its peer
// credentials. A connection over a cap is closed at once and Accept goes on waiting: an error
// would make http.Server.Serve back off (or stop). A failure to read the credentials does not
// fail Accept either; the connection then has no credentials, counts under uid -1, and is
// refused by a server that checks uids.
func (cl *Listener) Accept() (net.Conn, error) {
	for {
		c, err := cl.l.AcceptUnix()
		if err != nil {
			return nil, err
		}
		cred, err := readPeerCred(c)
		cc := &credConn{UnixConn: c, cred: cred, ok: err == nil}
		if !cc.ok {
			cc.cred = peerCred{uid: -1, gid: -1, pid: -1}
		}
		if cl.Admit != nil {
			release, admitted := cl.Admit(cc.cred.uid, cc.cred.pid)
			if !admitted {
				c.Close()
				continue
			}
			cc.release = release
		}
		return cc, nil
	}
}

// Close closes the listener, and removes the socket file when path is still the file this
// listener bound: never a file that replaced it, such as another server's socket.
func (cl *Listener) Close() error {
	err := cl.l.Close()
	// A race remains between this check and the remove: a file put at path in between is
	// removed. Only a process of our own uid (or root) can replace the file in our socket
	// directory, and such a process can remove it as well.
	if id, serr := fileIDOf(cl.path); serr == nil && id == cl.id {
		if rerr := os.Remove(cl.path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) && err == nil {
			err = rerr
		}
	}
	return err
}

// Abandon closes the listener without touching path: the file there is no longer ours.
func (cl *Listener) Abandon() { cl.l.Close() }

// Owned says whether path is still the socket file this listener bound; the error says what
// is there instead.
func (cl *Listener) Owned() error {
	id, err := fileIDOf(cl.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: %s was removed", ErrSocketLost, cl.path)
	case err != nil:
		return fmt.Errorf("%w: %w", ErrSocketLost, err)
	case id != cl.id:
		return fmt.Errorf("%w: %s was replaced by another file", ErrSocketLost, cl.path)
	}
	return nil
}

// Addr returns the socket's address.
func (cl *Listener) Addr() net.Addr { return cl.l.Addr() }

// readPeerCred reads SO_PEERCRED of c.
func readPeerCred(c *net.UnixConn) (peerCred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return peerCred{}, err
	}
	var ucred *unix.Ucred
	var credErr error
	err = raw.Control(func(fd uintptr) {
		ucred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err != nil {
		return peerCred{}, err
	}
	if credErr != nil {
		return peerCred{}, credErr
	}
	return peerCred{uid: int(ucred.Uid), gid: int(ucred.Gid), pid: int(ucred.Pid)}, nil
}

// peerCredKey is the context key of a connection's peerCred.
type peerCredKey struct{}

// ConnContext puts the peer credentials of a connection accepted by Listen into ctx. Plug it
// into http.Server.ConnContext; handlers then read them with PeerCred.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	cc, ok := c.(*credConn)
	if !ok || !cc.ok {
		return ctx
	}
	return context.WithValue(ctx, peerCredKey{}, cc.cred)
}

// PeerCred returns the uid, gid and pid of the process at the other end of the request's
// connection, as the kernel reported them when it connected. ok is false when they are not
// known (a listener not made by Listen, or http.Server.ConnContext not set to ConnContext).
func PeerCred(ctx context.Context) (uid, gid, pid int, ok bool) {
	c, ok := ctx.Value(peerCredKey{}).(peerCred)
	if !ok {
		return -1, -1, -1, false
	}
	return c.uid, c.gid, c.pid, true
}
