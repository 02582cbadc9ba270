package packages

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pyexec/pyexec/internal/pyreq"
	"github.com/pyexec/pyexec/internal/python"
	"github.com/pyexec/pyexec/internal/testutil"
	"github.com/pyexec/pyexec/pkg/api"
)

// wheels builds the test's package index: alpha needs beta>=1; beta in two versions; delta
// needs a beta that does not exist; broken is not a zip at all.
func wheels(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	testutil.Wheel(t, dir, "alpha", "1.0", "beta>=1")
	testutil.Wheel(t, dir, "beta", "1.0")
	testutil.Wheel(t, dir, "beta", "2.0")
	testutil.Wheel(t, dir, "gamma", "0.5")
	testutil.Wheel(t, dir, "delta", "1.0", "beta<1")
	if err := os.WriteFile(filepath.Join(dir, "broken-1.0-py3-none-any.whl"), []byte("not a zip"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func newInstaller(t testing.TB, dir, index string) *Installer {
	t.Helper()
	return New(Config{
		Dir:     dir,
		Python:  testutil.RequireSystemPython(t),
		Index:   Index{NoIndex: true, FindLinks: []string{index}},
		Timeout: 2 * time.Minute,
		Grace:   time.Hour,
		Env:     python.Env("/usr/bin:/bin", "/"),
	})
}

func reqs(t testing.TB, specs ...string) []pyreq.Requirement {
	t.Helper()
	var out []pyreq.Requirement
	for _, s := range specs {
		r, err := pyreq.ParseRequirement(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func names(in []api.Installed) string {
	var s []string
	for _, i := range in {
		s = append(s, i.Name+"=="+i.Version)
	}
	return strings.Join(s, " ")
}

// importFrom runs the system Python with the tree on sys.path, as an execution would.
func importFrom(t *testing.T, tree, code string) string {
	t.Helper()
	cmd := exec.Command(testutil.SystemPython, "-c", code)
	cmd.Env = []string{"PYTHONPATH=" + tree, "PATH=/usr/bin:/bin"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", code, err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestInstallWithDependencyThenMore(t *testing.T) {
	dir, index := t.TempDir(), wheels(t)
	in := newInstaller(t, dir, index)
	if in.Tree() != "" {
		t.Fatal("a tree before the first install")
	}
	st, err := in.Install(context.Background(), reqs(t, "alpha"), false)
	if err != nil {
		t.Fatal(err)
	}
	first := st.Tree
	if names(st.Installed) != "alpha==1.0 beta==2.0" || strings.Join(st.Requirements, ",") != "alpha" || first == "" || st.Locked {
		t.Fatalf("state %+v", st)
	}
	if got := importFrom(t, first, "import alpha, beta; print(alpha.VERSION, beta.VERSION)"); got != "1.0 2.0" {
		t.Fatalf("import: %q", got)
	}

	// The same requirement again changes nothing: no new tree.
	again, err := in.Install(context.Background(), reqs(t, "alpha"), false)
	if err != nil || again.Tree != first {
		t.Fatalf("second install: tree %s (first %s), %v", again.Tree, first, err)
	}

	// A new requirement builds a new tree with everything; beta pinned down replaces 2.0.
	more, err := in.Install(context.Background(), reqs(t, "gamma", "beta==1.0"), false)
	if err != nil {
		t.Fatal(err)
	}
	if more.Tree == first || names(more.Installed) != "alpha==1.0 beta==1.0 gamma==0.5" || strings.Join(more.Requirements, ",") != "alpha,gamma,beta==1.0" {
		t.Fatalf("state %+v", more)
	}
	// The replaced tree stays for executions that still run on it (grace period).
	if got := importFrom(t, first, "import beta; print(beta.VERSION)"); got != "2.0" {
		t.Fatalf("old tree: %q", got)
	}
}

func TestFailedInstallsKeepTheTree(t *testing.T) {
	dir, index := t.TempDir(), wheels(t)
	in := newInstaller(t, dir, index)
	before, err := in.Install(context.Background(), reqs(t, "alpha"), false)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ spec, want string }{
		{"delta", "beta<1"},                       // a version conflict: pip names what it could not find
		{"broken", "broken-1.0-py3-none-any.whl"}, // not a wheel
		{"no-such-package", "no-such-package"},    // not in the index
	} {
		_, err := in.Install(context.Background(), reqs(t, tt.spec), false)
		var ie *InstallError
		if !errors.As(err, &ie) || !strings.Contains(ie.Output, tt.want) {
			t.Errorf("%s: err = %v, want an InstallError with pip's output naming %q", tt.spec, err, tt.want)
		}
		after, err := in.State()
		if err != nil || after.Tree != before.Tree || strings.Join(after.Requirements, ",") != "alpha" {
			t.Errorf("%s: the tree or manifest changed: %+v %v", tt.spec, after, err)
		}
	}
	staging, _ := filepath.Glob(filepath.Join(dir, "trees", ".staging-*"))
	if len(staging) != 0 {
		t.Errorf("staging trees left: %v", staging)
	}
}

func TestReadOnlyPackagesDir(t *testing.T) {
	dir, index := t.TempDir(), wheels(t)
	testutil.MountTmpfs(t, dir, unix.MS_RDONLY)
	in := newInstaller(t, dir, index)
	_, err := in.Install(context.Background(), reqs(t, "alpha"), false)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), dir+" is on a read-only filesystem") {
		t.Fatalf("err = %v, want ErrLocked naming the read-only dir", err)
	}
	st, _ := in.State()
	if !st.Locked || st.Tree != "" {
		t.Fatalf("state %+v", st)
	}
}

func TestInstallTimeout(t *testing.T) {
	dir, index := t.TempDir(), wheels(t)
	in := newInstaller(t, dir, index)
	in.cfg.Timeout = 50 * time.Millisecond
	_, err := in.Install(context.Background(), reqs(t, "alpha"), false)
	var ie *InstallError
	if !errors.As(err, &ie) || !strings.Contains(err.Error(), "no result within 50ms") {
		t.Fatalf("err = %v", err)
	}
}

func TestOldTreesAreCollectedAfterTheGrace(t *testing.T) {
	dir, index := t.TempDir(), wheels(t)
	in := newInstaller(t, dir, index)
	in.cfg.Grace = 0
	for _, spec := range []string{"beta==1.0", "beta==2.0", "gamma"} {
		if _, err := in.Install(context.Background(), reqs(t, spec), false); err != nil {
			t.Fatal(err)
		}
	}
	trees, _ := os.ReadDir(filepath.Join(dir, "trees"))
	if len(trees) != 1 || filepath.Join(dir, "trees", trees[0].Name()) != in.Tree() {
		t.Fatalf("trees %v, want only the current one %s", trees, in.Tree())
	}
}

// Two processes install at once into one directory (two sidecars sharing a volume): the lock
// serialises them, and the tree ends with both packages.
func TestConcurrentInstallsFromTwoProcesses(t *testing.T) {
	dir, index := t.TempDir(), wheels(t)
	var wg sync.WaitGroup
	outs := make([]string, 2)
	errs := make([]error, 2)
	for i, spec := range []string{"alpha", "gamma"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "PACKAGES_CHILD="+dir, "PACKAGES_CHILD_INDEX="+index, "PACKAGES_CHILD_SPEC="+spec)
			out, err := cmd.CombinedOutput()
			outs[i], errs[i] = string(out), err
		}()
	}
	wg.Wait()
	for i := range errs {
		if errs[i] != nil {
			t.Fatalf("child %d: %v: %s", i, errs[i], outs[i])
		}
	}
	st, err := newInstaller(t, dir, index).State()
	if err != nil {
		t.Fatal(err)
	}
	if names(st.Installed) != "alpha==1.0 beta==2.0 gamma==0.5" || len(st.Requirements) != 2 {
		t.Fatalf("final state %+v (children: %q)", st, outs)
	}
}

// TestMain doubles as the child of TestConcurrentInstallsFromTwoProcesses.
func TestMain(m *testing.M) {
	if dir := os.Getenv("PACKAGES_CHILD"); dir != "" {
		in := newInstaller(&testing.T{}, dir, os.Getenv("PACKAGES_CHILD_INDEX"))
		r, err := pyreq.ParseRequirement(os.Getenv("PACKAGES_CHILD_SPEC"))
		if err == nil {
			var st api.Packages
			st, err = in.Install(context.Background(), []pyreq.Requirement{r}, false)
			_ = json.NewEncoder(os.Stdout).Encode(st)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestPolicy(t *testing.T) {
	p, err := NewPolicy([]string{"numpy", "Scikit_*", " "})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"numpy": true, "NumPy": true, "scikit-learn": true, "scikit.image": true, "pandas": false, "numpy2": false} {
		if p.Allows(name) != want {
			t.Errorf("Allows(%s) = %v", name, !want)
		}
	}
	err = p.Check(reqs(t, "numpy>=1", "pandas"))
	var denied *DeniedError
	if !errors.As(err, &denied) || denied.Name != "pandas" || err.Error() != "package pandas may not be installed at run time: it matches none of --allow-packages numpy,scikit-*" {
		t.Fatalf("err = %v", err)
	}
	if err := (Policy{}).Check(reqs(t, "numpy")); err == nil || !strings.Contains(err.Error(), "no package is allowed") {
		t.Fatalf("empty policy: %v", err)
	}
	if _, err := NewPolicy([]string{"[bad"}); err == nil {
		t.Fatal("a malformed pattern was accepted")
	}
}
