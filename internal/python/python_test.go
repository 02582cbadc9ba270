package python

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

	"github.com/pyexec/pyexec/internal/testutil"
)

func writeExecutable(t *testing.T, path, body string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestFind(t *testing.T) {
	dir := t.TempDir()
	local := writeExecutable(t, filepath.Join(dir, "usr/local/bin/python3"), "#!/bin/sh\n")
	system := writeExecutable(t, filepath.Join(dir, "usr/bin/python3"), "#!/bin/sh\n")
	onPath := writeExecutable(t, filepath.Join(dir, "path/python3"), "#!/bin/sh\n")
	notExec := filepath.Join(dir, "noexec/python3")
	writeExecutable(t, notExec, "")
	if err := os.Chmod(notExec, 0o644); err != nil {
		t.Fatal(err)
	}
	pathLookup := func(name string) (string, error) {
		if name == "python3" || name == "python3.11" {
			return filepath.Join(dir, "path", name), nil
		}
		return "", exec.ErrNotFound
	}
	noPath := func(string) (string, error) { return "", exec.ErrNotFound }

	tests := []struct {
		name        string
		finder      Finder
		explicit    string
		inContainer bool
		want        string
		wantErr     string
	}{
		{"container prefers /usr/local", Finder{[]string{local, system}, pathLookup}, "", true, local, ""},
		{"container falls back to /usr/bin", Finder{[]string{filepath.Join(dir, "none"), system}, pathLookup}, "", true, system, ""},
		{"container falls back to PATH", Finder{[]string{filepath.Join(dir, "none")}, pathLookup}, "", true, onPath, ""},
		{"host prefers PATH", Finder{[]string{local, system}, pathLookup}, "", false, onPath, ""},
		{"host falls back to system", Finder{[]string{system}, noPath}, "", false, system, ""},
		{"explicit path wins", Finder{[]string{local}, pathLookup}, system, true, system, ""},
		{"explicit name is looked up", Finder{[]string{local}, pathLookup}, "python3.11", true, filepath.Join(dir, "path/python3.11"), ""},
		{"explicit name not on PATH", Finder{[]string{local}, pathLookup}, "python9", true, "", `--python "python9" is not on PATH`},
		{"explicit path missing", Finder{[]string{local}, pathLookup}, filepath.Join(dir, "missing"), true, "", "no such file or directory"},
		{"explicit path not executable", Finder{[]string{local}, pathLookup}, notExec, true, "", "not executable"},
		{"explicit directory", Finder{[]string{local}, pathLookup}, dir, true, "", "not a regular file"},
		{"nothing anywhere", Finder{[]string{notExec}, noPath}, "", true, "", "tried " + notExec + ", python3 on PATH"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.finder.Find(tt.explicit, tt.inContainer)
			if tt.wantErr != "" {
				if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want ErrNotFound mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Find = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func inspect(t *testing.T, py string, opts InspectOptions) *Inspection {
	t.Helper()
	if opts.Env == nil {
		opts.Env = Env("/usr/bin:/bin", t.TempDir())
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	in, err := Inspect(ctx, py, opts)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func TestInspectSystemPython(t *testing.T) {
	py := testutil.RequireSystemPython(t)
	pkgs := t.TempDir()
	// A module that prints while imported must not spoil the result.
	if err := os.WriteFile(filepath.Join(pkgs, "noisy.py"), []byte("print('hello from noisy')\nimport os\nos.write(1, b'raw fd 1\\n')\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	in := inspect(t, py, InspectOptions{Preload: []string{"json", "noisy", "no_such_module_xyz"}, PackagesDir: pkgs})

	p := in.Python
	want, err := exec.Command(py, "-c", "import sys; print(sys.version.split()[0])").Output()
	if err != nil {
		t.Fatal(err)
	}
	if p.Executable != py || p.VersionFull != strings.TrimSpace(string(want)) || p.Implementation != "cpython" {
		t.Errorf("executable %q version %q implementation %q; want %s %s cpython", p.Executable, p.VersionFull, p.Implementation, py, want)
	}
	if real, _ := filepath.EvalSymlinks(py); p.RealPath != real {
		t.Errorf("real_path = %q, want %q", p.RealPath, real)
	}
	if p.InVenv || p.Prefix != "/usr" || p.BasePrefix != "/usr" {
		t.Errorf("prefix %q base %q in_venv %v; want /usr, /usr, false", p.Prefix, p.BasePrefix, p.InVenv)
	}
	// Debian's Python is externally managed (PEP 668); ask the interpreter where its marker is.
	marker, err := exec.Command(py, "-c", "import sysconfig,os; print(os.path.join(sysconfig.get_path('stdlib', sysconfig.get_default_scheme()), 'EXTERNALLY-MANAGED'))").Output()
	if err != nil {
		t.Fatal(err)
	}
	_, statErr := os.Stat(strings.TrimSpace(string(marker)))
	em := p.ExternallyManaged
	if em.Marker != strings.TrimSpace(string(marker)) || em.Present != (statErr == nil) || em.Applies != em.Present {
		t.Errorf("externally_managed = %+v; marker at %s exists=%v", em, marker, statErr == nil)
	}
	if !p.Pip.Available || p.Pip.Version == "" {
		t.Errorf("pip = %+v; want available with a version (python3-pip is installed)", p.Pip)
	}
	if !p.Ctypes {
		t.Error("ctypes: false; the system Python has it")
	}
	if !p.Ensurepip || !p.VenvModule {
		t.Errorf("ensurepip %v venv %v; want both (python3-venv is installed)", p.Ensurepip, p.VenvModule)
	}
	pipFound := false
	for _, d := range p.Distributions {
		if d.Name == "pip" && d.Version == p.Pip.Version {
			pipFound = true
		}
	}
	if !pipFound {
		t.Errorf("distributions lack pip %s: %+v", p.Pip.Version, p.Distributions)
	}
	if len(p.SitePackages) == 0 {
		t.Error("no site-packages reported")
	}

	if len(in.Preload) != 3 {
		t.Fatalf("preload = %+v, want 3 entries", in.Preload)
	}
	if m := in.Preload[0]; m.Module != "json" || !m.OK || m.ImportMS < 0 {
		t.Errorf("json preload = %+v", m)
	}
	if m := in.Preload[1]; m.Module != "noisy" || !m.OK {
		t.Errorf("noisy preload (from the packages dir) = %+v", m)
	}
	if m := in.Preload[2]; m.OK || !strings.HasPrefix(m.Error, "ModuleNotFoundError: ") {
		t.Errorf("missing module preload = %+v, want ModuleNotFoundError", m)
	}
}

// A venv ignores the PEP 668 marker, and a read-only site-packages is seen as not writable.
func TestInspectVenvWithReadOnlySitePackages(t *testing.T) {
	py := testutil.RequireSystemPython(t)
	dir := filepath.Join(t.TempDir(), "venv")
	if out, err := exec.Command(py, "-m", "venv", "--without-pip", dir).CombinedOutput(); err != nil {
		t.Fatalf("venv: %v: %s", err, out)
	}
	site, err := filepath.Glob(filepath.Join(dir, "lib/python3*/site-packages"))
	if err != nil || len(site) != 1 {
		t.Fatalf("site-packages: %v %v", site, err)
	}
	testutil.BindMount(t, site[0], site[0])
	testutil.Remount(t, site[0], unix.MS_BIND|unix.MS_RDONLY)

	p := inspect(t, filepath.Join(dir, "bin/python3"), InspectOptions{}).Python
	if !p.InVenv || p.Prefix != dir || p.BasePrefix != "/usr" {
		t.Errorf("in_venv %v prefix %q base %q; want true, %s, /usr", p.InVenv, p.Prefix, p.BasePrefix, dir)
	}
	if p.ExternallyManaged.Applies {
		t.Errorf("externally_managed = %+v; a venv is never externally managed", p.ExternallyManaged)
	}
	found := false
	for _, sp := range p.SitePackages {
		if sp.Path == site[0] {
			found = true
			if !sp.Exists || sp.Writable || !strings.Contains(sp.Error, "Read-only file system") {
				t.Errorf("site-packages %+v; want existing, not writable, read-only error", sp)
			}
		}
	}
	if !found {
		t.Errorf("site-packages %+v lack %s", p.SitePackages, site[0])
	}
}

// A shim (pyenv, asdf) is a script that execs the real interpreter: inspection reports the
// interpreter itself, so executions skip the shim.
func TestInspectResolvesShim(t *testing.T) {
	py := testutil.RequireSystemPython(t)
	shim := writeExecutable(t, filepath.Join(t.TempDir(), "shims/python3"), "#!/bin/sh\nexec "+py+" \"$@\"\n")
	p := inspect(t, shim, InspectOptions{}).Python
	if p.Executable != py {
		t.Fatalf("executable = %q, want %q behind the shim", p.Executable, py)
	}
}

func TestInspectOnlyGivenEnvironment(t *testing.T) {
	py := testutil.RequireSystemPython(t)
	pkgs := t.TempDir()
	code := "import os, json\nenv = dict(os.environ)\nassert 'PYEXEC_SECRET' not in env, env\nassert env['OPENBLAS_NUM_THREADS'] == '1', env\n"
	if err := os.WriteFile(filepath.Join(pkgs, "envcheck.py"), []byte(code), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PYEXEC_SECRET", "hunter2")
	in := inspect(t, py, InspectOptions{Preload: []string{"envcheck"}, PackagesDir: pkgs})
	if !in.Preload[0].OK {
		t.Fatalf("environment check in the interpreter failed: %s", in.Preload[0].Error)
	}
}

func TestInspectFailures(t *testing.T) {
	py := testutil.RequireSystemPython(t)
	dir := t.TempDir()
	t.Run("interpreter exits non-zero", func(t *testing.T) {
		bad := writeExecutable(t, filepath.Join(dir, "bad"), "#!/bin/sh\necho 'boom: broken interpreter' >&2\nexit 3\n")
		_, err := Inspect(context.Background(), bad, InspectOptions{})
		var ie *InspectError
		if !errors.As(err, &ie) || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "boom: broken interpreter") {
			t.Fatalf("err = %v, want InspectError with exit status and stderr", err)
		}
	})
	t.Run("a Python older than 3.8", func(t *testing.T) {
		// A real CPython 3.4 to 3.7 where pyenv built one (3.6.15 and 3.7.16 here), else the
		// system Python told it is 3.7.16 before the script runs: said in one line, not a
		// traceback.
		old, version := "", "3.7.16"
		for _, p := range testutil.SourcePythons() {
			if p.Version[0] == 3 && p.Version[1] >= 4 && p.Version[1] < 8 {
				old, version = filepath.Join(p.Prefix, "bin", "python3"), p.String()
			}
		}
		if old == "" {
			old = writeExecutable(t, filepath.Join(dir, "python3.7"), "#!/bin/sh\nexec "+py+
				` -c "import sys; sys.version_info = (3, 7, 16, 'final', 0); exec(compile(sys.stdin.read(), '<stdin>', 'exec'))" "$@"`+"\n")
		}
		t.Logf("a Python %s: %s", version, old)
		_, err := Inspect(context.Background(), old, InspectOptions{Env: Env("/usr/bin:/bin", "")})
		if err == nil || !strings.Contains(err.Error(), "Python "+version+" is older than 3.8, the oldest pyexec runs code with") || strings.Contains(err.Error(), "Traceback") {
			t.Fatalf("err = %v, want the version named", err)
		}
	})
	t.Run("garbage on stdout", func(t *testing.T) {
		bad := writeExecutable(t, filepath.Join(dir, "garbage"), "#!/bin/sh\ncat >/dev/null\necho not json\n")
		_, err := Inspect(context.Background(), bad, InspectOptions{})
		if err == nil || !strings.Contains(err.Error(), "unreadable result") {
			t.Fatalf("err = %v, want unreadable result", err)
		}
	})
	t.Run("hang is killed with its children", func(t *testing.T) {
		pkgs := t.TempDir()
		pidFile := filepath.Join(pkgs, "child.pid")
		code := "import subprocess, time\np = subprocess.Popen(['sleep', '60'])\nopen(" + "'" + pidFile + "'" + ", 'w').write(str(p.pid))\ntime.sleep(60)\n"
		if err := os.WriteFile(filepath.Join(pkgs, "sleepy.py"), []byte(code), 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		start := time.Now()
		_, err := Inspect(ctx, py, InspectOptions{Preload: []string{"sleepy"}, PackagesDir: pkgs, Env: Env("/usr/bin:/bin", pkgs)})
		if err == nil || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want deadline exceeded", err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("Inspect returned after %v; the hang was not cut", d)
		}
		pid, err := os.ReadFile(pidFile)
		if err != nil {
			t.Fatal(err)
		}
		// The grandchild was in the killed process group: it is gone (or a zombie of init).
		deadline := time.Now().Add(5 * time.Second)
		for {
			stat, err := os.ReadFile("/proc/" + string(pid) + "/stat")
			if err != nil || strings.Contains(string(stat), ") Z ") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("grandchild %s still running after the inspection was cancelled", pid)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}
