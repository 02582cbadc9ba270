package preflight

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"

	"github.com/pyexec/pyexec/internal/confine"
	"github.com/pyexec/pyexec/internal/pathcheck"
	"github.com/pyexec/pyexec/internal/pyreq"
	"github.com/pyexec/pyexec/internal/python"
	"github.com/pyexec/pyexec/internal/testutil"
	"github.com/pyexec/pyexec/internal/venv"
	"github.com/pyexec/pyexec/pkg/api"
)

var inContainer = api.Container{InContainer: true, Runtime: api.RuntimeContainerd, Orchestrator: api.OrchestratorKubernetes, Evidence: []string{"env:KUBERNETES_SERVICE_HOST"}}
var onHost = api.Container{Runtime: api.RuntimeNone, Evidence: []string{"override:PYEXEC_CONTAINER=false"}}

func mustReqs(t testing.TB, specs ...string) []pyreq.Requirement {
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

// options returns preflight options against the real system Python, with every path in a
// temporary directory.
func options(t testing.TB, c api.Container) Options {
	t.Helper()
	py := testutil.RequireSystemPython(t)
	dir := t.TempDir()
	return Options{
		Container:   c,
		Python:      py,
		PackagesDir: filepath.Join(dir, "packages"),
		ReportPath:  filepath.Join(dir, "run", "preflight.json"),
		Timeout:     time.Minute,
		Finder:      python.NewFinder(),
		MountInfo:   pathcheck.DefaultMountInfo,
		Env:         python.Env("/usr/bin:/bin", dir),
		Version:     "test",
		Log:         logr.Discard(),
	}
}

func TestRunInContainer(t *testing.T) {
	opts := options(t, inContainer)
	opts.Requirements = mustReqs(t, "pip>=1", "PIP<1", "no-such-dist-xyz==1.*")
	opts.Preload = []string{"json", "no_such_module_xyz"}
	r, err := Run(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK || r.Policy != api.PolicySystem || r.Schema != api.ReportSchema || r.Python == nil || r.Python.Executable != opts.Python {
		t.Fatalf("report: ok=%v policy=%s schema=%s python=%+v", r.OK, r.Policy, r.Schema, r.Python)
	}
	pip := r.Requirements[0].Installed
	if pip == "" {
		t.Fatalf("pip not seen as installed: %+v", r.Requirements)
	}
	wantReqs := []api.Requirement{
		{Name: "pip", Specifier: ">=1", Installed: pip, OK: true},
		{Name: "pip", Specifier: "<1", Installed: pip, Problem: "requirement PIP<1 is not met: " + pip + " is installed"},
		{Name: "no-such-dist-xyz", Specifier: "==1.*", Problem: "requirement no-such-dist-xyz==1.* is not installed"},
	}
	for i, want := range wantReqs {
		if r.Requirements[i] != want {
			t.Errorf("requirement %d = %+v, want %+v", i, r.Requirements[i], want)
		}
	}
	if len(r.Preload) != 2 || !r.Preload[0].OK || r.Preload[1].OK {
		t.Errorf("preload = %+v", r.Preload)
	}
	wantProblems := []string{wantReqs[1].Problem, wantReqs[2].Problem, "preload module no_such_module_xyz does not import: ModuleNotFoundError: No module named 'no_such_module_xyz'"}
	if strings.Join(r.Problems, "\n") != strings.Join(wantProblems, "\n") {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(r.Problems, "\n"), strings.Join(wantProblems, "\n"))
	}
	if len(r.Paths) != 2 || r.Paths[0].Role != api.RolePackages || r.Paths[0].Locked || r.Paths[1].Role != api.RoleReport || r.Paths[1].Locked {
		t.Errorf("paths = %+v", r.Paths)
	}
	if _, err := os.Stat(opts.PackagesDir); err != nil {
		t.Errorf("packages dir not created: %v", err)
	}
	if r.DurationMS <= 0 {
		t.Errorf("duration_ms = %v", r.DurationMS)
	}
	sum := r.Summary()
	want := fmt.Sprintf("pyexec preflight ok: runtime=containerd/kubernetes python=%s (%s) policy=system requirements=1/3 preload=json,no_such_module_xyz(failed) (", opts.Python, r.Python.Version)
	if !strings.HasPrefix(sum, want) || !strings.HasSuffix(sum, "problems=3: "+strings.Join(wantProblems, "; ")) || strings.Contains(sum, "\n") {
		t.Errorf("summary:\n%s\nwant prefix:\n%s", sum, want)
	}
}

func TestRunCarriesDetectionWarnings(t *testing.T) {
	c := api.Container{InContainer: true, Runtime: api.RuntimeDocker, Evidence: []string{"file:/.dockerenv"}, Warnings: []string{"stale marker?"}}
	r, err := Run(context.Background(), options(t, c))
	if err != nil || !r.OK || len(r.Problems) != 1 || r.Problems[0] != "container detection: stale marker?" {
		t.Fatalf("ok=%v err=%v problems=%q", r.OK, err, r.Problems)
	}
}

func TestRunStrict(t *testing.T) {
	opts := options(t, inContainer)
	opts.Requirements = mustReqs(t, "no-such-dist-xyz")
	opts.Preload = []string{"no_such_module_xyz"}
	opts.Strict = true
	r, err := Run(context.Background(), opts)
	if !errors.Is(err, ErrRequirement) || r.OK {
		t.Fatalf("ok=%v err=%v, want ErrRequirement", r.OK, err)
	}
	if len(r.Problems) != 2 || !strings.HasPrefix(r.Summary(), "pyexec preflight FAILED: ") {
		t.Errorf("problems %q summary %q", r.Problems, r.Summary())
	}
}

func TestRunNoInterpreter(t *testing.T) {
	opts := options(t, inContainer)
	opts.Python = filepath.Join(t.TempDir(), "python3")
	r, err := Run(context.Background(), opts)
	if !errors.Is(err, ErrInterpreter) || !errors.Is(err, python.ErrNotFound) || r.OK || r.Python != nil {
		t.Fatalf("ok=%v python=%v err=%v, want ErrInterpreter wrapping ErrNotFound", r.OK, r.Python, err)
	}
	if !strings.Contains(r.Summary(), " python=none ") {
		t.Errorf("summary %q", r.Summary())
	}
}

func TestRunVenvIgnoredInContainer(t *testing.T) {
	opts := options(t, inContainer)
	opts.VenvDir = filepath.Join(t.TempDir(), "venv")
	r, err := Run(context.Background(), opts)
	if err != nil || r.Policy != api.PolicySystem || r.Python.InVenv {
		t.Fatalf("err=%v policy=%s, want system", err, r.Policy)
	}
	if _, err := os.Stat(opts.VenvDir); !os.IsNotExist(err) {
		t.Fatalf("a venv path was touched in a container: %v", err)
	}
	if len(r.Problems) != 1 || !strings.Contains(r.Problems[0], "is ignored in a container") {
		t.Errorf("problems = %q", r.Problems)
	}
	for _, p := range r.Paths {
		if p.Role == api.RoleVenv {
			t.Errorf("venv path checked in a container: %+v", p)
		}
	}
}

func TestRunVenvOnHost(t *testing.T) {
	opts := options(t, onHost)
	opts.VenvDir = filepath.Join(t.TempDir(), "venv")
	r, err := Run(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if r.Policy != api.PolicyVenv || !r.Python.InVenv || r.Python.Executable != filepath.Join(opts.VenvDir, "bin/python3") {
		t.Fatalf("policy %s python %+v, want the venv", r.Policy, r.Python)
	}
	if last := r.Paths[len(r.Paths)-1]; last.Role != api.RoleVenv || last.Locked {
		t.Errorf("venv path = %+v", last)
	}
}

func TestRunVenvAtMountPoint(t *testing.T) {
	opts := options(t, onHost)
	opts.VenvDir = t.TempDir()
	testutil.MountTmpfs(t, opts.VenvDir, 0)
	if err := os.WriteFile(filepath.Join(opts.VenvDir, "keep"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := Run(context.Background(), opts)
	if !errors.Is(err, ErrVenv) || !errors.Is(err, venv.ErrLocked) || r.OK {
		t.Fatalf("ok=%v err=%v, want ErrVenv wrapping venv.ErrLocked", r.OK, err)
	}
	if data, err := os.ReadFile(filepath.Join(opts.VenvDir, "keep")); err != nil || string(data) != "data" {
		t.Fatalf("file on the mount: %q, %v", data, err)
	}
}

func TestRunReadOnlyReportDir(t *testing.T) {
	opts := options(t, inContainer)
	dir := t.TempDir()
	testutil.MountTmpfs(t, dir, unix.MS_RDONLY)
	opts.ReportPath = filepath.Join(dir, "preflight.json")
	r, err := Run(context.Background(), opts)
	if !errors.Is(err, ErrReportPath) || r.OK || !strings.Contains(err.Error(), "read-only filesystem") {
		t.Fatalf("ok=%v err=%v, want ErrReportPath: read-only", r.OK, err)
	}
}

func TestWriteAndReadReport(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "preflight.json")
	in := &api.Report{Schema: api.ReportSchema, OK: true, Policy: api.PolicySystem, Problems: []string{"x"},
		Requirements: []api.Requirement{{Name: "pandas", Specifier: ">=2,<3"}}}
	if err := WriteReport(path, in); err != nil {
		t.Fatal(err)
	}
	if err := WriteReport(path, in); err != nil { // over an existing one
		t.Fatal(err)
	}
	out, err := ReadReport(path)
	if err != nil || !out.OK || out.Policy != api.PolicySystem || len(out.Problems) != 1 {
		t.Fatalf("ReadReport = %+v, %v", out, err)
	}
	if raw, _ := os.ReadFile(path); !strings.Contains(string(raw), `"specifier": ">=2,<3"`) {
		t.Errorf("specifier not written as is:\n%s", raw)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode().Perm())
	}
	if err := WriteReport(filepath.Join(dir, "missing", "r.json"), in); err == nil {
		t.Error("writing into a missing directory succeeded")
	}
	if err := os.WriteFile(path, []byte(`{"schema":"other/v9"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadReport(path); err == nil || !strings.Contains(err.Error(), `schema "other/v9"`) {
		t.Errorf("ReadReport of another schema: %v", err)
	}
}

func TestCheckRequirement(t *testing.T) {
	installed := map[string]string{"pandas": "2.1.4", "numpy": "1.26.4", "weird": "not-a-version"}
	tests := []struct {
		req  string
		ok   bool
		prob string
	}{
		{"pandas>=2", true, ""},
		{"Pandas<2", false, "requirement Pandas<2 is not met: 2.1.4 is installed"},
		{"numpy==1.26.*", true, ""},
		{"numpy", true, ""},
		{"scipy", false, "requirement scipy is not installed"},
		{"weird>=1", false, `requirement weird>=1: installed version "not-a-version" is not a PEP 440 version`},
	}
	for _, tt := range tests {
		got := CheckRequirement(mustReqs(t, tt.req)[0], installed)
		if got.OK != tt.ok || got.Problem != tt.prob {
			t.Errorf("%s: %+v, want ok=%v problem=%q", tt.req, got, tt.ok, tt.prob)
		}
	}
}

// BenchmarkPreflight is a whole preflight on the real system Python: 50 requirements (the
// installed distributions first, then missing ones) and 3 preload modules. Target: < 0.5 s.
func BenchmarkPreflight(b *testing.B) {
	opts := options(b, inContainer)
	opts.Preload = []string{"json", "decimal", "sqlite3"}
	probe, err := Run(context.Background(), opts)
	if err != nil {
		b.Fatal(err)
	}
	var specs []string
	for _, d := range probe.Python.Distributions {
		if len(specs) < 40 {
			specs = append(specs, d.Name+">=0")
		}
	}
	for i := len(specs); i < 50; i++ {
		specs = append(specs, fmt.Sprintf("missing-dist-%d~=1.0", i))
	}
	opts.Requirements = mustReqs(b, specs...)
	b.ResetTimer()
	for b.Loop() {
		r, err := Run(context.Background(), opts)
		if err != nil || len(r.Requirements) != 50 {
			b.Fatalf("err=%v requirements=%d", err, len(r.Requirements))
		}
	}
}

// The report says what the kernel offers to confine executions, and each missing layer is a
// warning that names the attacks it leaves open; the summary line lists the active ones.
func TestRunReportsIsolation(t *testing.T) {
	for _, tc := range []struct {
		kernel      confine.Kernel
		wantSummary string
		wantMissing []string
	}{
		{confine.Kernel{LandlockABI: 7, Seccomp: true, ProcessBudget: true}, " isolation=landlock7:landlock_filesystem,scoped_signals,seccomp,network_control,landlock_truncate,non_dumpable,process_budget ", nil},
		{confine.Kernel{LandlockABI: 3, Seccomp: true, ProcessBudget: true}, " isolation=landlock3:landlock_filesystem,seccomp,network_control,landlock_truncate,non_dumpable,process_budget ", []string{confine.LayerScopedSignals}},
		{confine.Kernel{LandlockABI: 3, Seccomp: true}, " isolation=landlock3:landlock_filesystem,seccomp,network_control,landlock_truncate,non_dumpable ", []string{confine.LayerScopedSignals, confine.LayerProcessBudget}},
		{confine.Kernel{}, " isolation=landlock0:non_dumpable ", []string{confine.LayerFilesystem, confine.LayerScopedSignals, confine.LayerSeccomp, confine.LayerNetwork, confine.LayerTruncate, confine.LayerProcessBudget}},
	} {
		opts := options(t, inContainer)
		opts.Kernel = &tc.kernel
		r, err := Run(context.Background(), opts)
		if err != nil {
			t.Fatal(err)
		}
		if r.Isolation == nil || r.Isolation.LandlockABI != tc.kernel.LandlockABI || len(r.Isolation.Layers) != 7 {
			t.Fatalf("isolation = %+v", r.Isolation)
		}
		var missing []string
		for _, p := range r.Problems {
			if rest, ok := strings.CutPrefix(p, "isolation: the kernel lacks "); ok {
				name, why, _ := strings.Cut(rest, ": ")
				if why == "" {
					t.Errorf("problem %q does not say what is open", p)
				}
				missing = append(missing, name)
			}
		}
		if strings.Join(missing, ",") != strings.Join(tc.wantMissing, ",") || !r.OK {
			t.Errorf("kernel %+v: missing %v, want %v (ok=%v)", tc.kernel, missing, tc.wantMissing, r.OK)
		}
		if sum := r.Summary(); !strings.Contains(sum, tc.wantSummary) {
			t.Errorf("summary %q lacks %q", sum, tc.wantSummary)
		}
	}
}

// ServerDirs are made with their parents and mode ServerDirMode, one that exists gets the mode,
// a locked one fails the preflight with ErrServerDir; the identity goes into the report and
// the summary line.
func TestRunServerDirs(t *testing.T) {
	opts := options(t, inContainer)
	dir := t.TempDir()
	made, existing := filepath.Join(dir, "a", "b", "work"), filepath.Join(dir, "run")
	if err := os.Mkdir(existing, 0o777); err != nil {
		t.Fatal(err)
	}
	opts.ServerDirs = []ServerDir{{made, api.RoleWork}, {existing, api.RoleRunnerSocket}}
	opts.Identity = &api.Identity{ServerUID: 1000, RunnerUID: 2000, GID: 1000, Separate: true}
	r, err := Run(context.Background(), opts)
	if err != nil || !r.OK {
		t.Fatalf("ok=%v err=%v problems=%q", r.OK, err, r.Problems)
	}
	for _, d := range []string{made, existing} {
		if st, err := os.Stat(d); err != nil || st.Mode().Perm() != ServerDirMode {
			t.Errorf("%s: %v, %v; want mode %#o", d, st.Mode(), err, ServerDirMode)
		}
	}
	if r.Identity == nil || *r.Identity != *opts.Identity {
		t.Errorf("report identity %+v, want %+v", r.Identity, opts.Identity)
	}
	if sum := r.Summary(); !strings.Contains(sum, " uids=server:1000,runner:2000 problems=") {
		t.Errorf("summary %q lacks the uids", sum)
	}
	r.Identity.RunnerUID = -1
	if sum := r.Summary(); !strings.Contains(sum, " uids=server:1000,runner:unknown ") {
		t.Errorf("summary %q: want runner:unknown", sum)
	}
	r.Identity = nil
	if sum := r.Summary(); strings.Contains(sum, "uids=") {
		t.Errorf("summary %q names uids without an identity", sum)
	}

	ro := t.TempDir()
	testutil.MountTmpfs(t, ro, unix.MS_RDONLY)
	opts.ServerDirs = []ServerDir{{filepath.Join(ro, "work"), api.RoleWork}}
	r, err = Run(context.Background(), opts)
	if !errors.Is(err, ErrServerDir) || r.OK || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("ok=%v err=%v, want ErrServerDir: read-only", r.OK, err)
	}
}
