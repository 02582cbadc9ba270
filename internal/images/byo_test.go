package images

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pyexec/pyexec/internal/testutil"
)

// TestBringYourOwnPython builds the image a user would with the documented recipe — their
// image, whose Python is not Debian's (a CPython built from source in /usr/local, Debian's
// python3 commands removed), with the static pyexec copied in — and runs pyexec in it as the
// sidecar does: init finds that Python, serve runs code with it. It takes the oldest and the
// newest CPython 3.8+ that pyenv built on this machine (3.8.18 and 3.13.0 here; the machine's
// python3, 3.11, at the least); PYEXEC_BYO_PYTHON names another prefix.
func TestBringYourOwnPython(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: chroot, mounts and a user switch need root")
	}
	var prefixes []string
	if p := os.Getenv("PYEXEC_BYO_PYTHON"); p != "" {
		prefixes = []string{p}
	} else {
		var supported []testutil.SourcePython
		for _, p := range testutil.SourcePythons() {
			if p.Version[0] == 3 && p.Version[1] >= 8 {
				supported = append(supported, p)
			}
		}
		if len(supported) == 0 {
			t.Fatal("this test needs a CPython 3.8 or later built from source (pyenv's); none found")
		}
		prefixes = []string{supported[0].Prefix}
		if last := supported[len(supported)-1]; last.Prefix != prefixes[0] {
			prefixes = append(prefixes, last.Prefix)
		}
	}
	t.Logf("CPythons built from source: %v", prefixes)
	for _, py := range prefixes {
		t.Run(filepath.Base(py), func(t *testing.T) { bringYourOwnPython(t, py) })
	}
}

func bringYourOwnPython(t *testing.T, byoPython string) {
	if _, err := os.Stat(byoPython + "/bin/python3"); err != nil {
		t.Fatalf("this test needs a CPython of another origin than Debian's: %v", err)
	}
	repo, _ := filepath.Abs("../..")
	cache, _ := os.UserCacheDir()
	pkgs, err := ReadPackages(filepath.Join(repo, SidecarPackagesFile))
	if err != nil {
		t.Fatal(err)
	}
	base, err := PythonRoot(context.Background(), pkgs, filepath.Join(cache, "pyexec-tools"), t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	sh := func(script string) {
		t.Helper()
		if out, err := exec.Command("sh", "-ec", script).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", script, err, out)
		}
	}
	// FROM a Debian root; the user's Python in /usr/local (as COPY --from=python:3.12 would put
	// it), Debian's gone; RUN ldconfig; COPY --from=pyexec /usr/local/bin/pyexec.
	sh("tar --numeric-owner -xf " + base + " -C " + root)
	sh("rm -f " + root + "/usr/bin/python3*; cp -a " + byoPython + "/. " + root + "/usr/local/")
	if err := BuildBinaries(context.Background(), repo, filepath.Join(root, "usr/local/bin"), "", "./cmd/pyexec"); err != nil {
		t.Fatal(err)
	}
	for _, m := range [][2]string{{"proc", "proc"}, {"/dev", "dev"}} {
		target := filepath.Join(root, m[1])
		var err error
		if m[0] == "proc" {
			err = syscall.Mount("proc", target, "proc", 0, "")
		} else {
			err = syscall.Mount(m[0], target, "", syscall.MS_BIND|syscall.MS_REC, "")
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Unmount(target, syscall.MNT_DETACH) })
	}
	if out, err := exec.Command("chroot", root, "ldconfig").CombinedOutput(); err != nil {
		t.Fatalf("ldconfig: %v %s", err, out)
	}
	sh("install -d -o 65532 -g 65532 " + root + "/run/px")

	out, err := inRoot(root, "/usr/local/bin/pyexec", "init", "--report", "/run/px/preflight.json", "--packages-dir", "/run/px/packages", "--preload", "json")
	version := strings.TrimPrefix(filepath.Base(byoPython), "python")
	if err != nil || !strings.Contains(out, "python=/usr/local/bin/python3 ("+version+")") || !strings.Contains(out, "preflight ok") {
		t.Fatalf("pyexec init with the image's own Python: %v\n%s", err, out)
	}
	serve := exec.Command("/usr/local/bin/pyexec", "serve", "--socket", "/run/px/pyexec.sock", "--report", "/run/px/preflight.json",
		"--packages-dir", "/run/px/packages", "--work-dir", "/run/px/work", "--probe-addr", "")
	serve.SysProcAttr = &syscall.SysProcAttr{Chroot: root, Credential: &syscall.Credential{Uid: 65532, Gid: 65532}, Setpgid: true}
	serve.Dir = "/"
	serve.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "PYEXEC_CONTAINER=true", "HOME=/tmp"}
	log, err := os.Create(filepath.Join(t.TempDir(), "serve.log"))
	if err != nil {
		t.Fatal(err)
	}
	serve.Stdout, serve.Stderr = log, log
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-serve.Process.Pid, syscall.SIGKILL)
		serve.Wait()
	})
	logText := func() string { b, _ := os.ReadFile(log.Name()); return string(b) }
	for i := 0; ; i++ {
		if _, err := os.Stat(filepath.Join(root, "run/px/pyexec.sock")); err == nil {
			break
		}
		if i == 100 {
			t.Fatalf("pyexec serve made no socket in 10 s:\n%s", logText())
		}
		time.Sleep(100 * time.Millisecond)
	}
	code := "import sys, sysconfig; print(sys.version_info[:3], sys.prefix, sysconfig.get_paths()['purelib'])"
	for i := 0; ; i++ {
		out, err = inRoot(root, "/usr/local/bin/pyexec", "run", "--socket", "/run/px/pyexec.sock", "-c", code)
		if err == nil || i == 50 {
			break
		}
		time.Sleep(100 * time.Millisecond) // not ready yet
	}
	v := strings.Split(version, ".")
	want := "(" + strings.Join(v, ", ") + ") /usr/local /usr/local/lib/python" + v[0] + "." + v[1] + "/site-packages"
	if err != nil || !strings.Contains(out, want) {
		t.Fatalf("an execution with the image's own Python: %v\n%s\nserve:\n%s", err, out, logText())
	}
}
