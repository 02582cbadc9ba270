package runner

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ctlConn is a control connection: a Unix socket that carries descriptors.
type ctlConn interface {
	net.Conn
	syscall.Conn
	ReadMsgUnix(b, oob []byte) (n, oobn, flags int, addr *net.UnixAddr, err error)
	WriteMsgUnix(b, oob []byte, addr *net.UnixAddr) (n, oobn int, err error)
}

// peerUID returns the uid of the process at the other end of c (SO_PEERCRED).
func peerUID(c syscall.Conn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if credErr != nil {
		return 0, fmt.Errorf("SO_PEERCRED: %w", credErr)
	}
	return int(cred.Uid), nil
}

// Serve accepts runners on l, a Unix socket of the server's: a connection of a process of uid
// runnerUID (-1: any) is attached while no runner is; every other connection is closed at once
// and logged. It returns when l is closed.
func (c *Client) Serve(l net.Listener, runnerUID int) error {
	c.mu.Lock()
	c.listener = l
	c.mu.Unlock()
	for {
		conn, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		cc, ok := conn.(ctlConn)
		if !ok {
			conn.Close()
			continue
		}
		uid, err := peerUID(cc)
		if err == nil && runnerUID >= 0 && uid != runnerUID {
			err = fmt.Errorf("uid %d is not the runner's %d", uid, runnerUID)
		}
		if err != nil {
			c.log.Info("connection to the runner socket refused", "reason", err.Error())
			conn.Close()
			continue
		}
		go func() {
			if err := c.Attach(cc); err != nil {
				c.log.Error(err, "runner not attached", "uid", uid)
			}
		}()
	}
}

// Child is how the server starts the runner as a child process.
type Child struct {
	// Command returns the runner's command; its control connection is added as fd 3.
	Command func() *exec.Cmd
	// Start starts it (the reaper's Start), and Done is called with its pid once it was waited
	// for (the reaper's Done).
	Start func(*exec.Cmd) error
	Done  func(pid int)
}

// Backoff of a runner that keeps ending: doubled from childBackoff up to maxChildBackoff, and
// back to the start once one ran for childStable.
const (
	childBackoff    = 500 * time.Millisecond
	maxChildBackoff = 30 * time.Second
	childStable     = time.Minute
)

// RunChild keeps a runner running as a child process, until ctx ends or the client is closed:
// one that ends is started again.
func (c *Client) RunChild(ctx context.Context, ch Child) {
	backoff := childBackoff
	for {
		began := time.Now()
		err := c.runChild(ch)
		c.mu.Lock()
		closed := c.closed
		c.mu.Unlock()
		if closed || ctx.Err() != nil {
			return
		}
		if time.Since(began) > childStable {
			backoff = childBackoff
		}
		c.log.Error(err, "runner ended; starting it again", "in", backoff.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxChildBackoff)
	}
}

// runChild starts one runner, serves it and waits until it ends.
func (c *Client) runChild(ch Child) error {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "runner-control"), os.NewFile(uintptr(fds[1]), "runner-control")
	cmd := ch.Command()
	cmd.ExtraFiles = []*os.File{theirs}
	err = ch.Start(cmd)
	theirs.Close()
	if err != nil {
		ours.Close()
		if errors.Is(err, os.ErrPermission) && cmd.SysProcAttr != nil && cmd.SysProcAttr.Credential != nil {
			return fmt.Errorf("starting the runner as uid %d: %w: that user must be able to run %s", cmd.SysProcAttr.Credential.Uid, err, cmd.Path)
		}
		return fmt.Errorf("starting the runner: %w", err)
	}
	conn, err := net.FileConn(ours)
	ours.Close()
	if err == nil {
		err = c.Attach(conn.(*net.UnixConn))
	}
	if err != nil {
		_ = cmd.Process.Kill()
	}
	werr := cmd.Wait()
	ch.Done(cmd.Process.Pid)
	if err == nil {
		err = fmt.Errorf("the runner exited: %v", werr)
	}
	return err
}
