package server

import (
	"golang.org/x/sys/unix"

	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pyexec/pyexec/internal/logs"
	"github.com/pyexec/pyexec/internal/testutil"
	"github.com/pyexec/pyexec/pkg/api"
)

// socketHarness is a ready Server on a Socket of ListenSocket (served by Serve) with its
// probe handler on a real TCP port.
type socketHarness struct {
	t     *testing.T
	srv   *Server
	sock  *Socket
	reg   *prometheus.Registry
	path  string
	probe *httptest.Server
	logs  *syncBuffer
	done  chan error // Serve's return
}

// newSocketHarness starts a server with cfg (its executor okExec) on a socket that every
// user may connect to, in a directory every user may enter.
func newSocketHarness(t *testing.T, cfg Config) *socketHarness {
	t.Helper()
	dir := testutil.ShortTempDir(t)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	h := &socketHarness{t: t, reg: prometheus.NewRegistry(), logs: &syncBuffer{}, path: filepath.Join(dir, "pyexec.sock"), done: make(chan error, 1)}
	h.srv = New(cfg, okExec, logs.New(h.logs, logs.Options{Format: logs.FormatJSON}), h.reg)
	h.srv.SetReady(api.Info{Preflight: api.Preflight{OK: true}})
	sock, err := h.srv.ListenSocket(SocketConfig{Path: h.path, Mode: 0o666, GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	h.sock = sock
	go func() { h.done <- sock.Serve() }()
	h.probe = httptest.NewServer(h.srv.ProbeHandler(h.reg))
	t.Cleanup(func() {
		h.probe.Close()
		_ = h.srv.Shutdown(context.Background(), sock.HTTPServer())
	})
	return h
}

// readyz returns the status and body of GET /readyz on the probe port.
func (h *socketHarness) readyz() (int, string) {
	h.t.Helper()
	resp, err := http.Get(h.probe.URL + "/readyz")
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// execute sends one execution on a new connection to the socket path, as a new client would.
func (h *socketHarness) execute() error {
	c := newSocketClient(h.path)
	defer c.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPost, "http://pyexec/v1/execute", strings.NewReader(`{"code":"print(1)"}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"stdout":"hello\n"`) {
		return fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	return nil
}

// openFDs counts the open file descriptors of this process.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// floodScript opens argv[2] connections to the socket argv[1], says how many, and holds them
// idle until its stdin closes.
const floodScript = `import socket, sys
conns = []
for _ in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    conns.append(s)
print(len(conns), flush=True)
sys.stdin.read()
`

// TestSocketCapsConnections is attack (8): a local client opens many more idle connections
// than the caps. The server closes those over the cap at once, logs the burst once, holds at
// most the cap of descriptors for them, and serves a genuine client: during the flood when
// the flood comes from another uid (the test runs as root), and after it in any case.
func TestSocketCapsConnections(t *testing.T) {
	py := testutil.RequireSystemPython(t)
	const (
		perUID = 16
		flood  = 600
	)
	cfg := testConfig()
	cfg.Limits.MaxConnections, cfg.Limits.MaxConnectionsPerUID = 4*perUID, perUID
	h := newSocketHarness(t, cfg)
	if err := h.execute(); err != nil { // warm up: the HTTP client's and server's goroutines and fds
		t.Fatal(err)
	}
	before := openFDs(t)

	cmd := exec.Command(py, "-c", floodScript, h.path, strconv.Itoa(flood))
	otherUID := os.Geteuid() == 0
	if otherUID {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); _ = cmd.Wait() }()
	line := make([]byte, 16)
	n, _ := stdout.Read(line)
	if got := strings.TrimSpace(string(line[:n])); got != strconv.Itoa(flood) {
		t.Fatalf("the flooding client connected %q times, want %d", got, flood)
	}

	waitFor(t, "the connections over the cap to be refused", func() bool {
		return metricValue(t, h.reg, "pyexec_connections_refused_total", "reason", refusedMaxConnectionsPerUID) == flood-perUID
	})
	if open := metricValue(t, h.reg, "pyexec_connections_open", "", ""); open != perUID {
		t.Errorf("pyexec_connections_open %v, want %d", open, perUID)
	}
	// The server holds one descriptor per admitted connection; the refused ones are closed.
	waitFor(t, "the refused connections' descriptors to be closed", func() bool { return openFDs(t) <= before+perUID+4 })
	if got := len(h.logs.lines(t, "connections refused")); got != 1 {
		t.Errorf("%d log lines about refused connections, want 1 for the burst", got)
	}
	if otherUID {
		if err := h.execute(); err != nil {
			t.Errorf("a genuine client during the flood: %v", err)
		}
	} else {
		t.Log("not root: the flood comes from the test's own uid, so the genuine client is checked after it only")
	}

	stdin.Close() // the flooding client exits and its connections close
	_ = cmd.Wait()
	waitFor(t, "the flood's connections to be released", func() bool {
		return metricValue(t, h.reg, "pyexec_connections_open", "", "") == 0
	})
	if err := h.execute(); err != nil {
		t.Errorf("a genuine client after the flood: %v", err)
	}
	if fds := openFDs(t); fds > before+4 {
		t.Errorf("%d descriptors open after the flood, %d before", fds, before)
	}
	hs := h.sock.HTTPServer()
	if hs.ReadHeaderTimeout != SocketReadHeaderTimeout || hs.IdleTimeout != SocketIdleTimeout {
		t.Errorf("socket server timeouts: read header %v, idle %v", hs.ReadHeaderTimeout, hs.IdleTimeout)
	}
}

// TestConnLimiterCaps checks the two caps and their accounting: the total cap holds whatever
// the uids, the per-uid cap holds for each uid, a release frees one place, and a burst of
// refusals is logged once.
func TestConnLimiterCaps(t *testing.T) {
	buf := &syncBuffer{}
	reg := prometheus.NewRegistry()
	cl := newConnLimiter(5, 2, logs.New(buf, logs.Options{Format: logs.FormatJSON}), newMetrics(reg))
	var releases []func()
	admit := func(uid int) bool {
		release, ok := cl.admit(uidPeer(uid), "uid", uid, "pid", 1)
		if ok {
			releases = append(releases, release)
		}
		return ok
	}
	got := fmt.Sprint(admit(1), admit(1), admit(1), admit(2), admit(2), admit(3), admit(4), admit(-1))
	if want := "true true false true true true false false"; got != want {
		t.Fatalf("admitted %s, want %s", got, want)
	}
	if open, ofUID := cl.counts(uidPeer(1)); open != 5 || ofUID != 2 {
		t.Errorf("open %d, of uid 1 %d; want 5, 2", open, ofUID)
	}
	releases[0]() // one of uid 1
	if !admit(4) || admit(5) {
		t.Error("a released place should admit one connection, and only one")
	}
	if v := metricValue(t, reg, "pyexec_connections_refused_total", "reason", refusedMaxConnections); v != 3 {
		t.Errorf("refused by the total cap: %v, want 3", v)
	}
	if v := metricValue(t, reg, "pyexec_connections_refused_total", "reason", refusedMaxConnectionsPerUID); v != 1 {
		t.Errorf("refused by the per-uid cap: %v, want 1", v)
	}
	if n := len(buf.lines(t, "connections refused")); n != 1 {
		t.Errorf("%d log lines for one burst of refusals, want 1", n)
	}
}

// TestReadyRecreatesRemovedSocket is attack (11): the socket file is removed from outside.
// The next readiness check re-creates it, and a new client is served on it.
func TestReadyRecreatesRemovedSocket(t *testing.T) {
	h := newSocketHarness(t, testConfig())
	waitFor(t, "ready", func() bool { code, _ := h.readyz(); return code == http.StatusOK })
	old, err := fileIDOf(h.path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(h.path); err != nil {
		t.Fatal(err)
	}
	if err := h.execute(); err == nil {
		t.Fatal("precondition: a client reached the server through a removed socket file")
	}

	if code, body := h.readyz(); code != http.StatusOK {
		t.Fatalf("/readyz after the removal: %d %s; want 200 with a re-created socket", code, body)
	}
	id, err := fileIDOf(h.path)
	if err != nil || id == old {
		t.Fatalf("socket file after the check: %v %v; want a new socket", id, err)
	}
	if fi, err := os.Lstat(h.path); err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o666 {
		t.Fatalf("re-created socket: %v %v; want a socket of mode 0666", fi, err)
	}
	if err := h.execute(); err != nil {
		t.Fatalf("a client of the re-created socket: %v", err)
	}
	lines := h.logs.lines(t, "socket re-created")
	if len(lines) != 1 || !strings.Contains(fmt.Sprint(lines[0]["why"]), "was removed") {
		t.Errorf("log lines %v; want one saying the socket was removed", lines)
	}
	// It still serves after another removal, and Shutdown removes the socket it made.
	if err := os.Remove(h.path); err != nil {
		t.Fatal(err)
	}
	if code, body := h.readyz(); code != http.StatusOK {
		t.Fatalf("/readyz after a second removal: %d %s", code, body)
	}
	if err := h.execute(); err != nil {
		t.Fatal(err)
	}
	if err := h.srv.Shutdown(context.Background(), h.sock.HTTPServer()); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, "Serve to return", h.done); !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve returned %v, want http.ErrServerClosed", err)
	}
	if _, err := os.Lstat(h.path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after Shutdown: %v", err)
	}
}

// TestReadyNeverTakesOverAnotherServersSocket: the socket file is unlinked and another
// process binds its own socket at the path. The server must not remove it: /readyz is 503
// and says why without the path, and the log says why with it, once. When that socket goes stale, the next check takes the path back.
func TestReadyNeverTakesOverAnotherServersSocket(t *testing.T) {
	h := newSocketHarness(t, testConfig())
	other := listenInPlace(t, h.path)
	otherID, err := fileIDOf(h.path)
	if err != nil {
		t.Fatal(err)
	}

	for range 3 {
		code, body := h.readyz()
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "socket: replaced, and another server listens on its path") {
			t.Fatalf("/readyz with another server on the path: %d %q; want 503 saying why", code, body)
		}
		if strings.Contains(body, filepath.Dir(h.path)) {
			t.Fatalf("/readyz names the socket's path: %q", body)
		}
	}
	lines := h.logs.lines(t, "not ready")
	if len(lines) != 1 || lines[0]["check"] != "socket" || !strings.Contains(fmt.Sprint(lines[0]["error"]), "another server is listening on "+h.path) {
		t.Errorf("log lines %v; want one naming the check and the other server", lines)
	}
	if id, err := fileIDOf(h.path); err != nil || id != otherID {
		t.Fatalf("the other server's socket was touched: %v %v", id, err)
	}
	if metricValue(t, h.reg, "pyexec_ready", "", "") != 0 {
		t.Error("pyexec_ready is 1 while the socket is another server's")
	}

	// The other server dies and leaves its socket file: it is stale, and ours again.
	other.SetUnlinkOnClose(false)
	other.Close()
	if code, body := h.readyz(); code != http.StatusOK {
		t.Fatalf("/readyz after the other server died: %d %s", code, body)
	}
	if err := h.execute(); err != nil {
		t.Fatal(err)
	}
	if len(h.logs.lines(t, "ready again")) != 1 || len(h.logs.lines(t, "socket re-created")) != 1 {
		t.Errorf("want one ready again and one socket re-created line: %s", h.logs.buf.String())
	}
	if metricValue(t, h.reg, "pyexec_ready", "", "") != 1 {
		t.Error("pyexec_ready is 0 once the socket is back")
	}
}

// TestShutdownLeavesAnotherServersSocket: closing the listener removes the socket file only
// while it is the one it bound.
func TestShutdownLeavesAnotherServersSocket(t *testing.T) {
	h := newSocketHarness(t, testConfig())
	listenInPlace(t, h.path)
	if err := h.srv.Shutdown(context.Background(), h.sock.HTTPServer()); err != nil {
		t.Fatal(err)
	}
	recv(t, "Serve to return", h.done)
	c, err := net.Dial("unix", h.path)
	if err != nil {
		t.Fatalf("the other server's socket is gone after our Shutdown: %v", err)
	}
	c.Close()
}

// TestReadyNotWhileNotServing: once Serve has returned, the server is not ready, whatever
// its socket file says.
func TestReadyNotWhileNotServing(t *testing.T) {
	h := newSocketHarness(t, testConfig())
	waitFor(t, "ready", func() bool { code, _ := h.readyz(); return code == http.StatusOK })
	h.sock.HTTPServer().Close()
	recv(t, "Serve to return", h.done)
	if code, body := h.readyz(); code != http.StatusServiceUnavailable || !strings.Contains(body, errNotServing.Error()) {
		t.Fatalf("/readyz after Serve returned: %d %q", code, body)
	}
}

// TestReadyRecreatesWorkDir: a removed work dir is re-created by the readiness check; a file
// put in its place is left alone and the server is not ready: /readyz says why without the
// path (the probe port answers whoever reaches it), the log with it.
func TestReadyRecreatesWorkDir(t *testing.T) {
	cfg := testConfig()
	cfg.WorkDir = filepath.Join(testutil.ShortTempDir(t), "work")
	h := newSocketHarness(t, cfg)
	if code, body := h.readyz(); code != http.StatusOK {
		t.Fatalf("/readyz: %d %s", code, body)
	}
	if fi, err := os.Lstat(cfg.WorkDir); err != nil || !fi.IsDir() {
		t.Fatalf("work dir not created by the first check: %v", err)
	}
	if err := os.RemoveAll(cfg.WorkDir); err != nil {
		t.Fatal(err)
	}
	if code, body := h.readyz(); code != http.StatusOK {
		t.Fatalf("/readyz after the work dir was removed: %d %s", code, body)
	}
	if fi, err := os.Lstat(cfg.WorkDir); err != nil || !fi.IsDir() || fi.Mode().Perm() != workDirMode {
		t.Fatalf("work dir after the check: %v %v; want a directory of mode %o", fi, err, workDirMode)
	}
	if len(h.logs.lines(t, "work dir re-created")) != 2 {
		t.Errorf("want a log line each time the work dir was created: %s", h.logs.buf.String())
	}

	if err := os.RemoveAll(cfg.WorkDir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.WorkDir, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, body := h.readyz(); code != http.StatusServiceUnavailable || !strings.Contains(body, "work dir: it is a regular file, not a directory") ||
		strings.Contains(body, cfg.WorkDir) {
		t.Fatalf("/readyz with a file as the work dir: %d %q; want 503 saying why, without the path", code, body)
	}
	if lines := h.logs.lines(t, "not ready"); len(lines) != 1 || !strings.Contains(fmt.Sprint(lines[0]["error"]), cfg.WorkDir) {
		t.Errorf("log lines %v; want one naming the work dir's path", lines)
	}
	if b, err := os.ReadFile(cfg.WorkDir); err != nil || string(b) != "keep" {
		t.Fatalf("the file at the work dir was touched: %q %v", b, err)
	}
}

// listenInPlace removes the socket file at path and binds another socket there, as another
// server would; it is closed at the end of the test.
func listenInPlace(t *testing.T, path string) *net.UnixListener {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	other, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	return other
}

// TestReadyzNamesNoPath: a server whose preflight found problems that name paths is not ready;
// /readyz says so and counts them, without a path; the socket's API, for the app, lists them.
func TestReadyzNamesNoPath(t *testing.T) {
	h := newSocketHarness(t, testConfig())
	h.srv.mu.Lock()
	h.srv.ready = false
	h.srv.mu.Unlock()
	secret := filepath.Join(testutil.ShortTempDir(t), "packages")
	h.srv.SetInfo(api.Info{Preflight: api.Preflight{Problems: []string{"packages dir " + secret + " is read-only", "no interpreter at /opt/python"}}})
	code, body := h.readyz()
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "2 problems") || strings.Contains(body, "/") {
		t.Fatalf("/readyz of a server whose preflight failed: %d %q; want 503 counting the problems, naming no path", code, body)
	}
	if err := h.execute(); err == nil || !strings.Contains(err.Error(), secret) {
		t.Errorf("the socket's answer to the app: %v; want the problems listed", err)
	}
}

// fileIDOf is the device and inode of the file at path (not following a symlink).
func fileIDOf(path string) ([2]uint64, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return [2]uint64{}, err
	}
	return [2]uint64{uint64(st.Dev), st.Ino}, nil
}
