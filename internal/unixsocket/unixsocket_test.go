package unixsocket

import (
	"github.com/pyexec/pyexec/internal/testutil"

	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// acceptOne dials l, checks that a message gets through and returns both sides of the
// connection.
func acceptOne(t *testing.T, l net.Listener) (server, client net.Conn) {
	t.Helper()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			t.Errorf("accept: %v", err)
		}
		accepted <- c
	}()
	client, err := net.Dial("unix", l.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	select {
	case server = <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for accept")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	if _, err := client.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(server, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read %q, %v; want ping", buf, err)
	}
	return server, client
}

func TestListenPathTooLong(t *testing.T) {
	path := "/tmp/" + strings.Repeat("a", 103) // 108 bytes: no room for the NUL
	_, err := Listen(path, 0o660, -1)
	if !errors.Is(err, ErrPathTooLong) {
		t.Fatalf("err %v, want ErrPathTooLong", err)
	}
	for _, want := range []string{"108 bytes", "limit is 107"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if _, err := os.Lstat("/tmp/" + strings.Repeat("a", 103)); !os.IsNotExist(err) {
		t.Errorf("something was created at the long path: %v", err)
	}
}

func TestListenLongestPathFits(t *testing.T) {
	dir := testutil.ShortTempDir(t)
	path := filepath.Join(dir, strings.Repeat("s", 107-len(dir)-1)) // 107 bytes + NUL
	l, err := Listen(path, 0o660, -1)
	if err != nil {
		t.Fatalf("Listen a %d-byte path: %v", len(path), err)
	}
	l.Close()
}

func TestListenCreatesParentAndSetsMode(t *testing.T) {
	path := filepath.Join(testutil.ShortTempDir(t), "a", "b", "s.sock")
	l, err := Listen(path, 0o660, os.Getgid())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	parent, err := os.Stat(filepath.Dir(path))
	if err != nil || !parent.IsDir() {
		t.Fatalf("parent directory: %v, %v", parent, err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		t.Errorf("type %v, want a socket", fi.Mode().Type())
	}
	if perm := fi.Mode().Perm(); perm != 0o660 {
		t.Errorf("mode %v, want 0660", perm)
	}
}

func TestListenOtherMode(t *testing.T) {
	path := filepath.Join(testutil.ShortTempDir(t), "s.sock")
	l, err := Listen(path, 0o600, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("mode %v, want 0600", perm)
	}
}

func TestListenRemovesStaleSocket(t *testing.T) {
	path := filepath.Join(testutil.ShortTempDir(t), "s.sock")
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("the stale socket should still exist: %v", err)
	}

	l, err := Listen(path, 0o660, -1)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	defer l.Close()
	acceptOne(t, l) // the new listener serves
}

func TestListenRefusesLiveSocket(t *testing.T) {
	path := filepath.Join(testutil.ShortTempDir(t), "s.sock")
	first, err := Listen(path, 0o660, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	_, err = Listen(path, 0o660, -1)
	if !errors.Is(err, ErrSocketInUse) {
		t.Fatalf("err %v, want ErrSocketInUse", err)
	}
	if want := "another server is listening on " + path; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not contain %q", err, want)
	}
	// The first server still owns a working socket. Its first connection is the second
	// Listen's probe, already closed.
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("socket gone: %v", err)
	}
	probe, err := first.Accept()
	if err != nil {
		t.Fatal(err)
	}
	probe.Close()
	acceptOne(t, first)
}

func TestListenRefusesRegularFile(t *testing.T) {
	path := filepath.Join(testutil.ShortTempDir(t), "s.sock")
	if err := os.WriteFile(path, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Listen(path, 0o660, -1)
	if !errors.Is(err, ErrNotSocket) {
		t.Fatalf("err %v, want ErrNotSocket", err)
	}
	if !strings.Contains(err.Error(), "regular file") {
		t.Errorf("error %q does not say what is there", err)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != "precious" {
		t.Fatalf("the file was touched: %q, %v", b, err)
	}
}

func TestListenRefusesDirectory(t *testing.T) {
	path := filepath.Join(testutil.ShortTempDir(t), "s.sock")
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(path, 0o660, -1); !errors.Is(err, ErrNotSocket) {
		t.Fatalf("err %v, want ErrNotSocket", err)
	}
	if fi, err := os.Stat(path); err != nil || !fi.IsDir() {
		t.Fatalf("the directory was touched: %v", err)
	}
}

func TestCloseRemovesSocket(t *testing.T) {
	path := filepath.Join(testutil.ShortTempDir(t), "s.sock")
	l, err := Listen(path, 0o660, -1)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("socket still there after Close: %v", err)
	}
}

func TestPeerCredOfAcceptedConn(t *testing.T) {
	path := filepath.Join(testutil.ShortTempDir(t), "s.sock")
	l, err := Listen(path, 0o660, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	server, _ := acceptOne(t, l)

	uid, gid, pid, ok := PeerCred(ConnContext(context.Background(), server))
	got := fmt.Sprint(uid, gid, pid, ok)
	want := fmt.Sprint(os.Getuid(), os.Getgid(), os.Getpid(), true)
	if got != want {
		t.Errorf("PeerCred = %s, want %s (uid gid pid ok)", got, want)
	}
}

func TestPeerCredUnknown(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	uid, gid, pid, ok := PeerCred(ConnContext(context.Background(), a))
	if ok || uid != -1 || gid != -1 || pid != -1 {
		t.Errorf("PeerCred of a pipe = %d %d %d %v, want -1 -1 -1 false", uid, gid, pid, ok)
	}
}
