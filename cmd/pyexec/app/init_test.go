package app

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/pyexec/pyexec/pkg/api"
	"github.com/pyexec/pyexec/pkg/preflight"
	"github.com/pyexec/pyexec/pkg/testutil"
)

// TestMain lets the test binary act as pyexec itself (PYEXEC_TEST_AS_MAIN=1), so tests can run
// it as another user without building a second binary.
func TestMain(m *testing.M) {
	if os.Getenv("PYEXEC_TEST_AS_MAIN") == "1" { // as cmd/pyexec/main.go does
		runnerEnv = append(runnerEnv, "PYEXEC_TEST_AS_MAIN=1") // a runner started as a child is this binary too
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := Main(ctx, os.Args[1:], IO{Stdout: os.Stdout, Stderr: os.Stderr, LookupEnv: os.LookupEnv})
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

func initArgs(dir string, extra ...string) []string {
	return append([]string{"init", "--python", testutil.SystemPython,
		"--packages-dir", filepath.Join(dir, "packages"), "--report", filepath.Join(dir, "run", "preflight.json")}, extra...)
}

func readReport(t *testing.T, dir string) *api.Report {
	t.Helper()
	r, err := preflight.ReadReport(filepath.Join(dir, "run", "preflight.json"))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestInitWritesReport(t *testing.T) {
	testutil.RequireSystemPython(t)
	dir := t.TempDir()
	r := run(t, map[string]string{"PYEXEC_CONTAINER": "true", "PYEXEC_PRELOAD": "json"}, initArgs(dir, "--require", "pip>=1")...)
	if r.code != ExitOK {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", r.code, r.stdout, r.stderr)
	}
	if strings.Count(r.stdout, "\n") != 1 || !strings.HasPrefix(r.stdout, "pyexec preflight ok: runtime=") ||
		!strings.Contains(r.stdout, " python="+testutil.SystemPython+" (") || !strings.Contains(r.stdout, " requirements=1/1 preload=json (") {
		t.Errorf("stdout is not the one summary line: %q", r.stdout)
	}
	// The summary is the only line at the default verbosity (kubectl logs -c pyexec-init).
	if r.stderr != "" {
		t.Errorf("stderr of a successful init: %q, want nothing", r.stderr)
	}
	rep := readReport(t, dir)
	if !rep.OK || !rep.Container.InContainer || rep.Policy != api.PolicySystem || rep.Python.Executable != testutil.SystemPython ||
		len(rep.Requirements) != 1 || !rep.Requirements[0].OK || len(rep.Preload) != 1 || !rep.Preload[0].OK {
		t.Errorf("report: %+v", rep)
	}
}

func TestInitDebugLinesAreStructured(t *testing.T) {
	testutil.RequireSystemPython(t)
	dir := t.TempDir()
	r := run(t, map[string]string{"PYEXEC_CONTAINER": "true"}, append([]string{"-v", "1"}, initArgs(dir)...)...)
	if r.code != ExitOK {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", r.code, r.stdout, r.stderr)
	}
	var msgs []any
	for _, line := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
		var entry map[string]any
		if err := json.Unmarshal([]byte(line), &entry); err != nil || entry["msg"] == nil || entry["level"] == nil {
			t.Errorf("stderr line is not a structured log entry: %q", line)
		}
		msgs = append(msgs, entry["msg"])
	}
	if !slices.Contains(msgs, "container detected") || !slices.Contains(msgs, "preflight finished") {
		t.Errorf("debug lines of init -v 1: %v", msgs)
	}
}

func TestInitStrictFailureStillWritesReport(t *testing.T) {
	testutil.RequireSystemPython(t)
	dir := t.TempDir()
	r := run(t, map[string]string{"PYEXEC_CONTAINER": "true"}, initArgs(dir, "--strict", "--require", "no-such-dist-xyz>=1")...)
	if r.code != ExitFailed || !strings.HasPrefix(r.stdout, "pyexec preflight FAILED: ") ||
		!strings.Contains(r.stdout, "requirement no-such-dist-xyz>=1 is not installed") {
		t.Fatalf("exit %d stdout %q", r.code, r.stdout)
	}
	if rep := readReport(t, dir); rep.OK || len(rep.Problems) != 1 {
		t.Errorf("report ok=%v problems=%q", rep.OK, rep.Problems)
	}
}

func TestInitMissingInterpreter(t *testing.T) {
	dir := t.TempDir()
	r := run(t, map[string]string{"PYEXEC_CONTAINER": "true"}, "init", "--python", filepath.Join(dir, "nope", "python3"),
		"--packages-dir", filepath.Join(dir, "p"), "--report", filepath.Join(dir, "r.json"))
	if r.code != ExitFailed || !strings.Contains(r.stdout, "python=none") || !strings.Contains(r.stderr, "python interpreter not found") {
		t.Fatalf("exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
}

// The seed's bug: a venv path that is a mounted volume. pyexec init in host mode refuses it,
// names the mount, and every file on the volume is still there afterwards.
func TestInitRefusesVenvAtMountedVolume(t *testing.T) {
	testutil.RequireSystemPython(t)
	dir := t.TempDir()
	venvDir := filepath.Join(dir, "bot_code_interpreter", "venv")
	files := mountedVenvWithFiles(t, venvDir)

	r := run(t, map[string]string{"PYEXEC_CONTAINER": "false"}, initArgs(dir, "--venv-dir", venvDir)...)
	if r.code != ExitFailed {
		t.Fatalf("exit %d, want 1\nstdout %s\nstderr %s", r.code, r.stdout, r.stderr)
	}
	want := venvDir + " is a mount point (tmpfs from tmpfs)"
	if !strings.HasPrefix(r.stdout, "pyexec preflight FAILED: runtime=none ") || !strings.Contains(r.stdout, want) {
		t.Errorf("summary %q does not name the mount (%q)", r.stdout, want)
	}
	assertFiles(t, venvDir, files)
}

// The seed's approach on the same volume: shutil.rmtree deletes every file, then fails on the
// mount point itself with EBUSY. This is the data loss pyexec prevents.
func TestSeedApproachLosesFilesWithEBUSY(t *testing.T) {
	py := testutil.RequireSystemPython(t)
	venvDir := filepath.Join(t.TempDir(), "venv")
	mountedVenvWithFiles(t, venvDir)

	seed := `import shutil, sys, venv
path = sys.argv[1]
shutil.rmtree(path)   # the seed: delete the broken venv, then recreate it
venv.create(path)
`
	out, err := exec.Command(py, "-c", seed, venvDir).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "OSError: [Errno 16] Device or resource busy: '"+venvDir+"'") {
		t.Fatalf("seed approach: %v: %s; want EBUSY", err, out)
	}
	entries, err := os.ReadDir(venvDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Fatalf("files survived rmtree: %v", entries)
	}
}

// mountedVenvWithFiles mounts a tmpfs at dir holding a venv-like tree and returns its files.
func mountedVenvWithFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	testutil.MountTmpfs(t, dir, 0)
	files := map[string]string{
		"pyvenv.cfg":                 "home = /usr/bin\n",
		"bin/activate":               "# activate\n",
		"lib/site-packages/mylib.py": "X = 1\n",
		"user-results.csv":           "a,b\n1,2\n",
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return files
}

func assertFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(got) != content {
			t.Errorf("%s: %q, %v; want %q", name, got, err, content)
		}
	}
}

// A pod runs as a non-root user: a report path that user cannot write fails init with exit 1.
func TestInitAsNonRootWithUnwritableReportDir(t *testing.T) {
	testutil.RequireSystemPython(t)
	if os.Getuid() != 0 {
		t.Skip("SKIPPED: needs root to start a child as another uid")
	}
	base, bin := testutil.SharedTempDir(t, "pyexec")
	reportDir := filepath.Join(base, "run") // root-owned, 0755
	if err := os.Mkdir(reportDir, 0o755); err != nil {
		t.Fatal(err)
	}
	pkgs := filepath.Join(base, "pkgs")
	if err := os.Mkdir(pkgs, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(pkgs, 0o777); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "init", "--python", testutil.SystemPython, "--packages-dir", pkgs, "--report", filepath.Join(reportDir, "preflight.json"))
	cmd.Env = []string{"PYEXEC_TEST_AS_MAIN=1", "PYEXEC_CONTAINER=true", "PATH=/usr/bin:/bin", "HOME=/"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != ExitFailed {
		t.Fatalf("run: %v, want exit 1\nstdout %s\nstderr %s", err, stdout.String(), stderr.String())
	}
	want := reportDir + " is not writable by uid 65534: permission denied"
	if !strings.HasPrefix(stdout.String(), "pyexec preflight FAILED: ") || !strings.Contains(stdout.String(), want) {
		t.Errorf("summary %q does not say %q", stdout.String(), want)
	}
	if _, err := os.Stat(filepath.Join(reportDir, "preflight.json")); !os.IsNotExist(err) {
		t.Errorf("a report appeared: %v", err)
	}
}

// pyexec init --install installs what the interpreter lacks into the packages dir, so that
// executions never wait for pip, and skips what it already has.
func TestInitInstall(t *testing.T) {
	testutil.RequireSystemPython(t)
	index := t.TempDir()
	testutil.Wheel(t, index, "alpha", "1.0", "beta>=1")
	testutil.Wheel(t, index, "beta", "1.5")
	dir := t.TempDir()
	vars := map[string]string{"PYEXEC_CONTAINER": "true", "PYEXEC_INSTALL": "alpha\npip>=1\n", "PYEXEC_NO_INDEX": "true"}
	r := run(t, vars, initArgs(dir, "--find-links", index, "--require", "alpha==1.0", "--preload", "alpha")...)
	if r.code != ExitOK {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", r.code, r.stdout, r.stderr)
	}
	rep := readReport(t, dir)
	if rep.Packages == nil || names(rep.Packages.Installed) != "alpha==1.0,beta==1.5" {
		t.Fatalf("report packages %+v", rep.Packages)
	}
	// pip came with the interpreter: only alpha was installed, and the report's checks saw it.
	if strings.Join(rep.Packages.Requirements, ",") != "alpha" || !rep.Requirements[0].OK || !rep.Preload[0].OK {
		t.Fatalf("requirements %+v preload %+v manifest %v", rep.Requirements, rep.Preload, rep.Packages.Requirements)
	}

	failed := run(t, map[string]string{"PYEXEC_CONTAINER": "true"}, initArgs(t.TempDir(), "--install", "no-such-dist", "--no-index", "--find-links", index)...)
	if failed.code != ExitFailed || !strings.Contains(failed.stdout, "packages could not be installed: pip install failed") {
		t.Fatalf("failed install: exit %d stdout %q", failed.code, failed.stdout)
	}
}

func names(in []api.Installed) string {
	var s []string
	for _, i := range in {
		s = append(s, i.Name+"=="+i.Version)
	}
	return strings.Join(s, ",")
}
