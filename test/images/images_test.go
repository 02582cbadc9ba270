// Package images tests what can be tested of the Dockerfile's images without a container
// engine: the binaries, built with the Dockerfile's flags, are static and run on an empty
// read-only root (the injector's scratch image) as an arbitrary non-root user.
package images

import (
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pyexec/pyexec/internal/images"
	"github.com/pyexec/pyexec/internal/testutil"
)

// build compiles a command as the Dockerfile does.
func build(t *testing.T, pkg, out string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, pkg)
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
}

func TestBinariesRunOnAReadOnlyScratchRootAsAnyUser(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("SKIPPED: chroot and a user switch need root")
	}
	root := t.TempDir()
	testutil.MountTmpfs(t, root, 0)
	build(t, "./cmd/pyexec-injector", filepath.Join(root, "pyexec-injector"))
	build(t, "./cmd/pyexec", filepath.Join(root, "pyexec"))
	for _, bin := range []string{"pyexec-injector", "pyexec"} {
		f, err := elf.Open(filepath.Join(root, bin))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s is dynamically linked: it would not run on a scratch image", bin)
			}
		}
		f.Close()
	}
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	testutil.Remount(t, root, unix.MS_RDONLY)

	run := func(stdin string, args ...string) (string, error) {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root, Credential: &syscall.Credential{Uid: 54321, Gid: 54321}}
		cmd.Dir = "/"
		cmd.Env = []string{"PYEXEC_CONTAINER=true"}
		cmd.Stdin = strings.NewReader(stdin)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}
	pod := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bot\n  labels:\n    pyexec.dev/inject: \"true\"\nspec:\n  containers:\n  - name: bot\n    image: bot:1\n"
	out, err := run(pod, "/pyexec-injector", "inject", "-f", "-")
	if err != nil || !strings.Contains(out, "name: pyexec-init") || !strings.Contains(out, "pyexec.dev/status: injected") {
		t.Fatalf("pyexec-injector inject on a read-only scratch root as uid 54321: %v\n%s", err, out)
	}
	out, err = run("", "/pyexec", "detect", "-o", "text")
	if err != nil || !strings.HasPrefix(out, "container: yes") {
		t.Fatalf("pyexec detect: %v\n%s", err, out)
	}
}

// TestSidecarPackagesAreShared keeps the Dockerfile's sidecar stages, make images and the test
// cluster's Python root (internal/images) on the same package lists.
func TestSidecarPackagesAreShared(t *testing.T) {
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	stage := func(name string) string {
		_, s, ok := strings.Cut(string(b), "AS "+name+"\n")
		if !ok {
			t.Fatalf("the Dockerfile has no stage %s", name)
		}
		s, _, _ = strings.Cut(s, "\nFROM ")
		return s
	}
	if s := stage("sidecar"); !strings.Contains(s, "COPY "+images.SidecarPackagesFile+" ") || !strings.Contains(s, "/tmp/sidecar-packages | xargs apt-get install") {
		t.Errorf("the Dockerfile's sidecar stage does not install %s:\n%s", images.SidecarPackagesFile, s)
	}
	if s := stage("datascience"); !strings.Contains(s, "COPY "+images.SidecarPackagesFile+" "+images.DataSciencePackagesFile+" ") ||
		!strings.Contains(s, "/tmp/sidecar-packages /tmp/datascience-packages | xargs apt-get install") {
		t.Errorf("the Dockerfile's datascience stage does not install %s and %s:\n%s", images.SidecarPackagesFile, images.DataSciencePackagesFile, s)
	}
}

// `make build` builds every command of cmd/ into bin/ (it once built two of the three).
func TestMakeBuildBuildsEveryCommand(t *testing.T) {
	makefile, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	_, recipe, ok := strings.Cut(string(makefile), "\nbuild:\n")
	if !ok {
		t.Fatal("the Makefile has no build target")
	}
	recipe, _, _ = strings.Cut(recipe, "\n\n")
	recipe += "\n"
	cmds, err := filepath.Glob("../../cmd/*/main.go")
	if err != nil || len(cmds) < 3 {
		t.Fatalf("commands: %v %v", cmds, err)
	}
	for _, m := range cmds {
		name := filepath.Base(filepath.Dir(m))
		if !strings.Contains(recipe, "-o bin/"+name+" ./cmd/"+name+"\n") {
			t.Errorf("make build does not build cmd/%s into bin/%s:\n%s", name, name, recipe)
		}
	}
}
