// Package testutil holds helpers for tests that use real components: the system Python and
// real mounts.
package testutil

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// SystemPython is Debian's interpreter, the one a container image would have. .ci/run installs
// it; a test that needs it fails without it rather than skipping.
const SystemPython = "/usr/bin/python3"

// RequireSystemPython fails the test when the system Python is missing.
func RequireSystemPython(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat(SystemPython); err != nil {
		t.Fatalf("these tests run the real system Python: %v (apt-get install python3 python3-venv python3-pip)", err)
	}
	return SystemPython
}

// MountTmpfs mounts a fresh tmpfs at dir with the given flags (e.g. unix.MS_RDONLY) and
// unmounts it when the test ends. It skips, saying why, only where mounting is denied.
func MountTmpfs(t testing.TB, dir string, flags uintptr) {
	t.Helper()
	mount(t, "tmpfs", dir, "tmpfs", flags)
}

// BindMount bind-mounts src at dst (the same filesystem: os.path.ismount does not see it).
func BindMount(t testing.TB, src, dst string) {
	t.Helper()
	mount(t, src, dst, "", unix.MS_BIND)
}

// Remount changes the flags of the mount at dir, e.g. to read-only.
func Remount(t testing.TB, dir string, flags uintptr) {
	t.Helper()
	if err := unix.Mount("", dir, "", unix.MS_REMOUNT|flags, ""); err != nil {
		t.Fatalf("remount %s: %v", dir, err)
	}
}

func mount(t testing.TB, src, dst, fstype string, flags uintptr) {
	t.Helper()
	err := unix.Mount(src, dst, fstype, flags, "")
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		t.Skipf("SKIPPED: this test needs real mounts and mount(2) is denied here (%v): run it as root with CAP_SYS_ADMIN", err)
	}
	if err != nil {
		t.Fatalf("mount %s at %s: %v", src, dst, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dst, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dst, err)
		}
	})
}

// SetsidEscaperCode is Python code that forks a child which leaves the process group and the
// session, then double-forks into a daemon that keeps stdout open and sleeps; it prints
// "pid:N" for that daemon. Append more code (e.g. "time.sleep(600)") as needed.
const SetsidEscaperCode = `import os, sys, time
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.write(w, b"pid:%d\n" % os.getpid())
        time.sleep(600)
    os._exit(0)
os.close(w)
sys.stdout.write(os.read(r, 100).decode())
sys.stdout.flush()
`

// Wheel writes a minimal pure-Python wheel NAME-VERSION-py3-none-any.whl into dir: a package
// named like the distribution (dashes as underscores) whose __init__ sets VERSION, and the
// given Requires-Dist lines. pip installs it offline with --no-index --find-links dir.
func Wheel(t testing.TB, dir, name, version string, requires ...string) string {
	t.Helper()
	mod := strings.ReplaceAll(name, "-", "_")
	info := mod + "-" + version + ".dist-info"
	meta := "Metadata-Version: 2.1\nName: " + name + "\nVersion: " + version + "\n"
	for _, r := range requires {
		meta += "Requires-Dist: " + r + "\n"
	}
	files := [][2]string{
		{mod + "/__init__.py", "VERSION = '" + version + "'\n"},
		{info + "/METADATA", meta},
		{info + "/WHEEL", "Wheel-Version: 1.0\nGenerator: pyexec-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"},
	}
	var record strings.Builder
	for _, f := range files {
		sum := sha256.Sum256([]byte(f[1]))
		fmt.Fprintf(&record, "%s,sha256=%s,%d\n", f[0], base64.RawURLEncoding.EncodeToString(sum[:]), len(f[1]))
	}
	record.WriteString(info + "/RECORD,,\n")
	files = append(files, [2]string{info + "/RECORD", record.String()})

	path := filepath.Join(dir, mod+"-"+version+"-py3-none-any.whl")
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range files {
		w, err := zw.Create(f[0])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte(f[1])); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// SharedTempDir returns a temporary directory that other users can traverse (t.TempDir's
// parents are private), holding a copy of the test binary that they can run; it returns the
// directory and the copy's path. For tests that run themselves as another uid.
func SharedTempDir(t testing.TB, binName string) (dir, bin string) {
	t.Helper()
	dir = t.TempDir()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin = filepath.Join(dir, binName)
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, bin
}

// ShareTestBinary lets every user run this test binary where it is, for a test that starts it
// as another uid (a server started as root starts its runner as nobody): it opens the
// directories on the way to it (go test's own temporary ones) to all.
func ShareTestBinary(t testing.TB) string {
	t.Helper()
	bin, err := filepath.Abs(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	for d := filepath.Dir(bin); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o005 != 0o005 {
			if err := os.Chmod(d, fi.Mode().Perm()|0o005); err != nil {
				t.Fatal(err)
			}
		}
	}
	return bin
}

// ProcessUID returns the real uid of a process, from /proc/PID/status: the owner of /proc/PID
// is root for a non-dumpable process, whatever its uid.
func ProcessUID(pid int) (int, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				uid, err := strconv.Atoi(f[0])
				return uid, err == nil
			}
		}
	}
	return 0, false
}

// NonLoopbackIPv4 returns an IPv4 address of this machine that is not loopback, "" when it has
// none: a second peer for tests of per-address caps.
func NonLoopbackIPv4() string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP.String()
		}
	}
	return ""
}

// HTTPGet asks c for url and returns the status and the body; status 0, and the error as the
// body, when no answer came.
func HTTPGet(c *http.Client, url string) (int, string) {
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	resp, err := c.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// ReadSized reads a body that tells its size (a session's file, opened) whole, closes it, and
// fails when it held another number of bytes than it said.
func ReadSized(body interface {
	io.ReadCloser
	Size() int64
}) ([]byte, error) {
	defer body.Close()
	data, err := io.ReadAll(body)
	if err == nil && int64(len(data)) != body.Size() {
		err = fmt.Errorf("%d bytes of %d", len(data), body.Size())
	}
	return data, err
}

// ShortTempDir returns a temporary directory whose paths fit in a Unix socket's sun_path
// (t.TempDir's, under a long test name, may not); it is removed when the test ends.
func ShortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "px")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
