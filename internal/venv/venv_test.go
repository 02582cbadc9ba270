package venv

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pyexec/pyexec/internal/pathcheck"
	"github.com/pyexec/pyexec/internal/python"
	"github.com/pyexec/pyexec/internal/testutil"
)

func ensure(t *testing.T, dir, base string) (Result, error) {
	t.Helper()
	checker, err := pathcheck.NewChecker(pathcheck.DefaultMountInfo)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return Ensure(ctx, Options{Dir: dir, Base: base, Env: python.Env("/usr/bin:/bin", t.TempDir()), Checker: checker})
}

// assertOnly fails unless dir holds exactly the names given: no temporary directories left.
func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Fatalf("%s holds %v, want %v", dir, got, names)
	}
}

func TestCreateReuseAndRebuild(t *testing.T) {
	py := testutil.RequireSystemPython(t)
	parent := t.TempDir()
	dir := filepath.Join(parent, "venv")

	res, err := ensure(t, dir, py)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Created || res.Python != filepath.Join(dir, "bin/python3") || res.Path.Locked {
		t.Fatalf("first Ensure = %+v", res)
	}
	assertOnly(t, parent, "venv")
	if _, err := os.Stat(filepath.Join(dir, MarkerName)); err != nil {
		t.Fatalf("marker: %v", err)
	}
	// The venv was built elsewhere and renamed: its scripts must name the final path.
	out, err := exec.Command(filepath.Join(dir, "bin/pip"), "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), dir) {
		t.Fatalf("bin/pip after the rename: %v: %s", err, out)
	}
	cfg, err := os.ReadFile(filepath.Join(dir, "pyvenv.cfg"))
	if err != nil || strings.Contains(string(cfg), ".pyexec-tmp-") {
		t.Fatalf("pyvenv.cfg still names the build directory (%v):\n%s", err, cfg)
	}
	prefix, err := exec.Command(res.Python, "-c", "import sys; print(sys.prefix)").Output()
	if err != nil || strings.TrimSpace(string(prefix)) != dir {
		t.Fatalf("sys.prefix = %q (%v), want %s", prefix, err, dir)
	}

	again, err := ensure(t, dir, py)
	if err != nil || again.Created {
		t.Fatalf("second Ensure = %+v, %v; want the venv reused", again, err)
	}

	// pyexec's own venv that lost its interpreter is rebuilt in place.
	if err := os.Remove(filepath.Join(dir, "bin/python3")); err != nil {
		t.Fatal(err)
	}
	rebuilt, err := ensure(t, dir, py)
	if err != nil || !rebuilt.Created {
		t.Fatalf("Ensure of a broken venv = %+v, %v; want rebuilt", rebuilt, err)
	}
	if _, err := os.Stat(rebuilt.Python); err != nil {
		t.Fatalf("rebuilt venv has no interpreter: %v", err)
	}
	assertOnly(t, parent, "venv")
}

func TestRefusesDirectoryItDidNotCreate(t *testing.T) {
	py := testutil.RequireSystemPython(t)
	dir := filepath.Join(t.TempDir(), "venv")
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "user-data.txt"), []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := ensure(t, dir, py)
	if !errors.Is(err, ErrNotOwned) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("err = %v, want ErrNotOwned naming %s", err, dir)
	}
	assertOnly(t, dir, "bin", "user-data.txt")
}

func TestRefusesMountPointAndKeepsItsFiles(t *testing.T) {
	py := testutil.RequireSystemPython(t)
	dir := filepath.Join(t.TempDir(), "venv")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	testutil.MountTmpfs(t, dir, 0)
	if err := os.WriteFile(filepath.Join(dir, MarkerName), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Even a marker does not make a mount point replaceable.
	_, err := ensure(t, dir, py)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), dir+" is a mount point (tmpfs from tmpfs)") {
		t.Fatalf("err = %v, want ErrLocked naming the mount", err)
	}
	assertOnly(t, dir, MarkerName)
}

func TestRefusesReadOnlyParent(t *testing.T) {
	py := testutil.RequireSystemPython(t)
	parent := t.TempDir()
	testutil.MountTmpfs(t, parent, unix.MS_RDONLY)
	_, err := ensure(t, filepath.Join(parent, "venv"), py)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "read-only filesystem") {
		t.Fatalf("err = %v, want ErrLocked: read-only", err)
	}
}

func TestFailedCreationLeavesNothing(t *testing.T) {
	parent := t.TempDir()
	bad := filepath.Join(t.TempDir(), "python3")
	if err := os.WriteFile(bad, []byte("#!/bin/sh\necho 'Error: ensurepip is not available' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := ensure(t, filepath.Join(parent, "venv"), bad)
	if !errors.Is(err, ErrCreate) || !strings.Contains(err.Error(), "ensurepip is not available") {
		t.Fatalf("err = %v, want ErrCreate with the interpreter's message", err)
	}
	assertOnly(t, parent)
}
