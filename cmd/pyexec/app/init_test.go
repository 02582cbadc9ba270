package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pyexec/pyexec/internal/preflight"
	"github.com/pyexec/pyexec/internal/testutil"
	"github.com/pyexec/pyexec/pkg/api"
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

// pyexec init's own flags (--work-dir, --runner-socket, --runner-uid) and their variables;
// pyexec serve has flags of these names for itself, and its preflight records no identity.
func TestInitRunnerFlags(t *testing.T) {
	got, err := parseInit(t, map[string]string{"PYEXEC_WORK_DIR": "/var/lib/pyexec/runner/work", "PYEXEC_RUNNER_UID": "2000"},
		"--runner-socket", "/var/lib/pyexec/runner/run/runner.sock")
	if err != nil {
		t.Fatal(err)
	}
	if got.WorkDir != "/var/lib/pyexec/runner/work" || got.RunnerSocket != "/var/lib/pyexec/runner/run/runner.sock" || got.RunnerUID != 2000 {
		t.Errorf("config %+v", got)
	}
	wantDirs := []preflight.ServerDir{{Path: "/var/lib/pyexec/runner/work", Role: api.RoleWork}, {Path: "/var/lib/pyexec/runner/run", Role: api.RoleRunnerSocket}}
	if dirs := got.serverDirs(); !slices.Equal(dirs, wantDirs) {
		t.Errorf("server dirs %+v, want %+v", dirs, wantDirs)
	}
	if id := got.identityOf(1000, 1000); *id != (api.Identity{ServerUID: 1000, RunnerUID: 2000, GID: 1000, Separate: true}) {
		t.Errorf("identity %+v", *id)
	}
	if id := got.identityOf(2000, 3000); *id != (api.Identity{ServerUID: 2000, RunnerUID: 2000, GID: 3000, Separate: false}) {
		t.Errorf("identity as the runner's uid %+v, want not separate", *id)
	}

	got, err = parseInit(t, nil, "--work-dir", "rel/work")
	if err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(got.WorkDir) || got.RunnerUID != -1 || len(got.serverDirs()) != 1 {
		t.Errorf("config %+v", got)
	}
	if id := got.identityOf(1000, 1000); *id != (api.Identity{ServerUID: 1000, RunnerUID: -1, GID: 1000}) {
		t.Errorf("identity without --runner-uid %+v", *id)
	}

	var serve *ServeConfig
	var out bytes.Buffer
	root := NewRootCommand(IO{Stdout: &out, Stderr: &out, LookupEnv: env(nil)}, Runners{Serve: func(_ context.Context, c *ServeConfig) error { serve = c; return nil }})
	root.SetArgs([]string{"serve", "--runner-socket", "/r/runner.sock", "--runner-uid", "2000", "--work-dir", "/w"})
	if err := root.Execute(); err != nil {
		t.Fatalf("serve: %v %s", err, out.String())
	}
	if serve.Init.identityOf(1000, 1000) != nil || len(serve.Init.serverDirs()) != 0 {
		t.Errorf("serve's preflight would record %+v and make %v", serve.Init.identityOf(1000, 1000), serve.Init.serverDirs())
	}

	for args, want := range map[string]string{
		"--runner-uid=0":   "--runner-uid 0: pyexec never runs code as root",
		"--runner-uid=-2":  "--runner-uid -2: want a uid, or -1 when not known",
		"--runner-uid=bob": `invalid argument "bob"`,
	} {
		if _, err := parseInit(t, nil, args); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("init %s: %v, want %q", args, err, want)
		}
	}
}

// pyexec init --work-dir --runner-socket --runner-uid makes the two directories (and their
// parents) with mode 0710, sets the mode of one that was there, and records the identity in
// the report and its summary line.
func TestInitServerDirs(t *testing.T) {
	testutil.RequireSystemPython(t)
	dir := t.TempDir()
	work := filepath.Join(dir, "runner", "work")
	sockDir := filepath.Join(dir, "runner", "run")
	if err := os.MkdirAll(sockDir, 0o777); err != nil { // there already, with another mode
		t.Fatal(err)
	}
	if err := os.Chmod(sockDir, 0o777); err != nil {
		t.Fatal(err)
	}
	r := run(t, map[string]string{"PYEXEC_CONTAINER": "true", "PYEXEC_RUNNER_UID": "4242"},
		initArgs(dir, "--work-dir", work, "--runner-socket", filepath.Join(sockDir, "runner.sock"))...)
	if r.code != ExitOK {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", r.code, r.stdout, r.stderr)
	}
	for _, d := range []string{work, sockDir} {
		st, err := os.Stat(d)
		if err != nil || !st.IsDir() || st.Mode().Perm() != 0o710 {
			t.Errorf("%s: %v, %v; want a directory of mode 0710", d, st.Mode(), err)
		}
	}
	if _, err := os.Stat(filepath.Join(sockDir, "runner.sock")); !os.IsNotExist(err) {
		t.Errorf("init made the socket itself: %v", err)
	}
	rep := readReport(t, dir)
	want := api.Identity{ServerUID: os.Geteuid(), RunnerUID: 4242, GID: os.Getegid(), Separate: os.Geteuid() != 4242}
	if rep.Identity == nil || *rep.Identity != want {
		t.Errorf("report identity %+v, want %+v", rep.Identity, want)
	}
	roles := map[string]string{}
	for _, p := range rep.Paths {
		roles[p.Role] = p.Path
	}
	if roles[api.RoleWork] != work || roles[api.RoleRunnerSocket] != sockDir {
		t.Errorf("report paths %+v, want %s and %s", rep.Paths, work, sockDir)
	}
	if wantUIDs := fmt.Sprintf(" uids=server:%d,runner:4242 ", os.Geteuid()); !strings.Contains(r.stdout, wantUIDs) {
		t.Errorf("summary %q lacks %q", r.stdout, wantUIDs)
	}

	// Without --runner-uid the runner is not known; without the directories none are made.
	dir = t.TempDir()
	if r := run(t, map[string]string{"PYEXEC_CONTAINER": "true"}, initArgs(dir)...); r.code != ExitOK || !strings.Contains(r.stdout, ",runner:unknown ") {
		t.Fatalf("exit %d, summary %q", r.code, r.stdout)
	}
	if rep := readReport(t, dir); rep.Identity == nil || rep.Identity.RunnerUID != -1 || rep.Identity.Separate {
		t.Errorf("report identity %+v, want runner -1, not separate", rep.Identity)
	}
}

// A work root that cannot be made fails init (exit 1), says why, and still writes the report.
func TestInitServerDirLocked(t *testing.T) {
	testutil.RequireSystemPython(t)
	dir := t.TempDir()
	ro := filepath.Join(dir, "ro")
	if err := os.Mkdir(ro, 0o755); err != nil {
		t.Fatal(err)
	}
	testutil.MountTmpfs(t, ro, unix.MS_RDONLY)
	r := run(t, map[string]string{"PYEXEC_CONTAINER": "true"}, initArgs(dir, "--work-dir", filepath.Join(ro, "work"))...)
	if r.code != ExitFailed || !strings.HasPrefix(r.stdout, "pyexec preflight FAILED: ") || !strings.Contains(r.stdout, "a directory of the server cannot be made") {
		t.Fatalf("exit %d, summary %q", r.code, r.stdout)
	}
	if rep := readReport(t, dir); rep.OK {
		t.Errorf("report ok with a locked work dir: %+v", rep.Problems)
	}
}

// In a pod: pyexec init runs as the server's uid S and makes the directories; the runner, a
// real second uid R in S's group, can reach what the server gives it in the work root, but can
// neither list the work root nor make, rename or chmod anything there. Judged from outside,
// by a Python run as R.
func TestInitServerDirsAsTwoUIDs(t *testing.T) {
	py := testutil.RequireSystemPython(t)
	if os.Getuid() != 0 {
		t.Skip("SKIPPED: needs root to start processes as two other uids")
	}
	const server, runner = 61001, 61002
	base, bin := testutil.SharedTempDir(t, "pyexec")
	volume := filepath.Join(base, "volume") // the emptyDir, as the kubelet makes it
	for _, d := range []string{volume, filepath.Join(base, "run"), filepath.Join(base, "pkgs")} {
		if err := os.Mkdir(d, 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	work, sock := filepath.Join(volume, "work"), filepath.Join(volume, "run", "runner.sock")
	cmd := exec.Command(bin, "init", "--python", py, "--packages-dir", filepath.Join(base, "pkgs"), "--report", filepath.Join(base, "run", "preflight.json"),
		"--work-dir", work, "--runner-socket", sock, "--runner-uid", strconv.Itoa(runner))
	cmd.Env = []string{"PYEXEC_TEST_AS_MAIN=1", "PYEXEC_CONTAINER=true", "PATH=/usr/bin:/bin", "HOME=/"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: server, Gid: server}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("init as %d: %v\n%s", server, err, out)
	}
	for _, d := range []string{work, filepath.Dir(sock)} {
		var st syscall.Stat_t
		if err := syscall.Stat(d, &st); err != nil || st.Uid != server || st.Gid != server || st.Mode&0o7777 != 0o710 {
			t.Errorf("%s: uid %d gid %d mode %#o, %v; want %d:%d 0710", d, st.Uid, st.Gid, st.Mode&0o7777, err, server, server)
		}
	}
	rep, err := preflight.ReadReport(filepath.Join(base, "run", "preflight.json"))
	if err != nil {
		t.Fatal(err)
	}
	if want := (api.Identity{ServerUID: server, RunnerUID: runner, GID: server, Separate: true}); rep.Identity == nil || *rep.Identity != want {
		t.Errorf("report identity %+v, want %+v", rep.Identity, want)
	}

	// The server gives an execution its directory (mode 0770, its group), as executor.MakeDir.
	given := filepath.Join(work, "x-0123456789abcdef01234567")
	if err := os.Mkdir(given, 0o770); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(given, server, server); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(given, 0o770); err != nil {
		t.Fatal(err)
	}
	probe := `
import errno, os, sys
work, given, sockdir = sys.argv[1:4]
def attempt(what, f):
    try:
        f()
        print(what, "ok")
    except OSError as e:
        print(what, errno.errorcode[e.errno])
attempt("write in the given dir", lambda: open(os.path.join(given, "code.py"), "w").close())
attempt("list the work root", lambda: os.listdir(work))
attempt("make in the work root", lambda: os.mkdir(os.path.join(work, "mine")))
attempt("rename the given dir", lambda: os.rename(given, given + "-x"))
attempt("chmod the work root", lambda: os.chmod(work, 0o777))
attempt("chmod the socket dir", lambda: os.chmod(sockdir, 0o777))
attempt("list the socket dir", lambda: os.listdir(sockdir))
attempt("make in the socket dir", lambda: open(os.path.join(sockdir, "runner.sock"), "w").close())
`
	rc := exec.Command(py, "-c", probe, work, given, filepath.Dir(sock))
	rc.Env = []string{"PATH=/usr/bin:/bin"}
	rc.Dir = "/"
	rc.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: runner, Gid: server}}
	got, err := rc.CombinedOutput()
	if err != nil {
		t.Fatalf("the runner's probe: %v\n%s", err, got)
	}
	want := "write in the given dir ok\n" +
		"list the work root EACCES\n" +
		"make in the work root EACCES\n" +
		"rename the given dir EACCES\n" +
		"chmod the work root EPERM\n" +
		"chmod the socket dir EPERM\n" +
		"list the socket dir EACCES\n" +
		"make in the socket dir EACCES\n"
	if string(got) != want {
		t.Errorf("as the runner (uid %d, group %d):\n%s\nwant:\n%s", runner, server, got, want)
	}
}
