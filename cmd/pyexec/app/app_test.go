package app

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pyexec/pyexec/pkg/api"
)

// env returns a LookupEnv over a fixed map: tests never see the machine's environment.
func env(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
}

type result struct {
	code           int
	stdout, stderr string
}

func run(t *testing.T, vars map[string]string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(context.Background(), args, IO{Stdout: &out, Stderr: &errb, LookupEnv: env(vars)})
	return result{code, out.String(), errb.String()}
}

// parseInit parses an init command line without running it.
func parseInit(t *testing.T, vars map[string]string, args ...string) (*InitConfig, error) {
	t.Helper()
	var got *InitConfig
	var out bytes.Buffer
	root := NewRootCommand(IO{Stdout: &out, Stderr: &out, LookupEnv: env(vars)}, Runners{
		Init: func(_ context.Context, c *InitConfig) error { got = c; return nil },
	})
	root.SetArgs(append([]string{"init"}, args...))
	err := root.Execute()
	return got, err
}

func TestInitDefaults(t *testing.T) {
	got, err := parseInit(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := &InitConfig{PackagesDir: DefaultPackagesDir, Report: DefaultReport, InspectTimeout: DefaultInspectTimeout, InstallTimeout: DefaultInstallTimeout,
		RunnerUID: -1, identity: true}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func TestInitFlagsAndEnvironment(t *testing.T) {
	dir := t.TempDir()
	reqFile := filepath.Join(dir, "requirements.txt")
	if err := os.WriteFile(reqFile, []byte("# app\nnumpy==1.26.*\n\nrequests ~= 2.31  # http\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{
		"PYEXEC_PYTHON":          "/opt/py/bin/python3",
		"PYEXEC_REQUIRE":         "pandas>=2\na!=1,<3\n",
		"PYEXEC_REQUIREMENTS":    reqFile,
		"PYEXEC_PRELOAD":         "numpy,pandas",
		"PYEXEC_PACKAGES_DIR":    "/data/pkgs",
		"PYEXEC_REPORT":          "/run/x/report.json",
		"PYEXEC_STRICT":          "true",
		"PYEXEC_INSPECT_TIMEOUT": "30s",
	}
	got, err := parseInit(t, vars, "--report", "/flag/wins.json", "--venv-dir", "/home/u/venv")
	if err != nil {
		t.Fatal(err)
	}
	var reqs []string
	for _, r := range got.Requirements {
		reqs = append(reqs, r.String())
	}
	if got.Python != "/opt/py/bin/python3" || got.PackagesDir != "/data/pkgs" || got.Report != "/flag/wins.json" ||
		got.VenvDir != "/home/u/venv" || !got.Strict || got.InspectTimeout != 30*time.Second ||
		strings.Join(got.Preload, ",") != "numpy,pandas" ||
		strings.Join(reqs, " ") != "pandas>=2 a!=1,<3 numpy==1.26.* requests~=2.31" {
		t.Fatalf("config %+v requirements %v", got, reqs)
	}
}

func TestInitUsageErrors(t *testing.T) {
	dir := t.TempDir()
	badFile := filepath.Join(dir, "requirements.txt")
	if err := os.WriteFile(badFile, []byte("numpy\n-r other.txt\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dupFile := filepath.Join(dir, "dup.txt")
	if err := os.WriteFile(dupFile, []byte("Pandas>=1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		vars map[string]string
		args []string
		want string
	}{
		{"unknown flag", nil, []string{"init", "--nope"}, "unknown flag: --nope"},
		{"bad requirement", nil, []string{"init", "--require", "pandas>>2"}, `--require: "pandas>>2"`},
		{"requirements file syntax", nil, []string{"init", "--requirements", badFile}, badFile + ":2:"},
		{"missing requirements file", nil, []string{"init", "--requirements", filepath.Join(dir, "none.txt")}, "no such file"},
		{"duplicate requirement", nil, []string{"init", "--require", "pandas", "--requirements", dupFile}, "requirement pandas is given twice"},
		{"bad preload", nil, []string{"init", "--preload", "numpy,os path"}, `--preload "os path": not a module name`},
		{"bad timeout", nil, []string{"init", "--inspect-timeout", "0s"}, "--inspect-timeout 0s: must be positive"},
		{"bad env value", map[string]string{"PYEXEC_STRICT": "maybe"}, []string{"init"}, `PYEXEC_STRICT="maybe"`},
		{"bad log format", nil, []string{"init", "--log-format", "xml"}, `--log-format "xml"`},
		{"stray argument", nil, []string{"init", "extra"}, `unknown command "extra"`},
		{"bad detect output", nil, []string{"detect", "-o", "yaml"}, `-o "yaml": want json or text`},
		{"serve memory limit too small", nil, []string{"serve", "--memory-limit-mb", "16"}, "--memory-limit-mb 16: want 0 (no limit) or at least 32"},
		{"serve default over maximum", nil, []string{"serve", "--memory-limit-mb", "2048", "--max-memory-limit-mb", "1024"}, "--memory-limit-mb 2048 is over --max-memory-limit-mb 1024"},
		{"serve runs code as root", nil, []string{"serve", "--run-as", "0"}, "pyexec never runs code as root"},
		{"serve bad socket mode", nil, []string{"serve", "--socket-mode", "rw"}, `--socket-mode "rw"`},
		{"serve bad package pattern", nil, []string{"serve", "--allow-packages", "[x"}, `--allow-packages "[x"`},
		{"serve negative warm", map[string]string{"PYEXEC_WARM": "-1"}, []string{"serve"}, "--warm must not be negative"},
		{"serve bad mode", nil, []string{"serve", "--mode", "thread"}, `--mode "thread": want fork or spawn`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, tt.vars, tt.args...)
			if r.code != ExitUsage || !strings.Contains(r.stderr, tt.want) {
				t.Fatalf("exit %d stderr %q; want exit 2 mentioning %q", r.code, r.stderr, tt.want)
			}
		})
	}
}

func TestDetectFixtureRoot(t *testing.T) {
	root := "../../../internal/container/testdata/k8s-containerd-cgroupv2"
	r := run(t, map[string]string{"KUBERNETES_SERVICE_HOST": "must not be read with --root"}, "detect", "--root", root)
	if r.code != ExitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var c api.Container
	if err := json.Unmarshal([]byte(r.stdout), &c); err != nil {
		t.Fatalf("output %q: %v", r.stdout, err)
	}
	if !c.InContainer || c.Runtime != api.RuntimeContainerd || c.Orchestrator != api.OrchestratorKubernetes {
		t.Fatalf("detect = %+v", c)
	}
	text := run(t, nil, "detect", "--root", root, "-o", "text")
	if text.code != ExitOK || strings.Count(text.stdout, "\n") != 1 || !strings.Contains(text.stdout, "containerd") {
		t.Fatalf("text output %q", text.stdout)
	}
}

func TestDetectOverride(t *testing.T) {
	for value, want := range map[string]bool{"true": true, "false": false} {
		r := run(t, map[string]string{"PYEXEC_CONTAINER": value}, "detect")
		var c api.Container
		if err := json.Unmarshal([]byte(r.stdout), &c); err != nil || r.code != ExitOK {
			t.Fatalf("exit %d output %q: %v", r.code, r.stdout, err)
		}
		if c.InContainer != want {
			t.Errorf("PYEXEC_CONTAINER=%s: in_container=%v", value, c.InContainer)
		}
	}
}
