package app

import (
	"context"
	"maps"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/pyexec/pyexec/internal/mutation"
)

// parseDefaults runs serve and inject with args and env (neither starts) and returns the
// Defaults each would inject with.
func parseDefaults(t *testing.T, env map[string]string, args ...string) (serve, inject mutation.Defaults) {
	t.Helper()
	sio, _, stderr := testIO(env, "")
	runners := Runners{
		Serve:  func(_ context.Context, c *ServeConfig) error { serve = c.defaults(true); return nil },
		Inject: func(_ context.Context, c *InjectConfig) error { inject = c.defaults(); return nil },
	}
	for _, cmd := range [][]string{{"serve", "--cert-mode=external"}, {"inject", "-f", "-"}} {
		root := NewRootCommand(sio, runners)
		root.SetArgs(append(cmd, args...))
		if err := root.ExecuteContext(context.Background()); err != nil {
			t.Fatalf("%s %v: %v %s", cmd[0], args, err, stderr)
		}
	}
	return serve, inject
}

// injectEnv runs pyexec-injector inject with args and env on a pod with annotations and returns
// the variables of each injected container by name.
func injectEnv(t *testing.T, env map[string]string, annotations string, args ...string) map[string]map[string]string {
	t.Helper()
	pod := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bot\n  labels: {pyexec.dev/inject: \"true\"}\n  annotations: {" + annotations +
		"}\nspec:\n  containers: [{name: bot, image: example.com/bot}]\n"
	sio, stdout, stderr := testIO(env, pod)
	if code := Main(context.Background(), append([]string{"inject", "-f", "-"}, args...), sio); code != 0 {
		t.Fatalf("inject %v: exit code %d: %s", args, code, stderr)
	}
	var out corev1.Pod
	if err := yaml.UnmarshalStrict(stdout.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	vars := map[string]map[string]string{}
	for _, c := range append(out.Spec.InitContainers, out.Spec.Containers...) {
		vars[c.Name] = map[string]string{}
		for _, e := range c.Env {
			vars[c.Name][e.Name] = e.Value
		}
	}
	return vars
}

// TestCodeFlags: the injector's defaults of the code's annotations (--timeout, --max-timeout,
// --memory-limit-mb, --preload, --require, --install, --allow-packages), from flags or
// variables, reach the injected containers as the annotations would; a pod's annotation wins;
// a default equal to the sidecar's own writes nothing.
func TestCodeFlags(t *testing.T) {
	all := []string{"PYEXEC_TIMEOUT", "PYEXEC_MAX_TIMEOUT", "PYEXEC_MEMORY_LIMIT_MB", "PYEXEC_PRELOAD", "PYEXEC_REQUIRE", "PYEXEC_INSTALL", "PYEXEC_ALLOW_PACKAGES"}
	tests := []struct {
		name, annotations string
		args              []string
		env               map[string]string
		init, sidecar     map[string]string // the variables of pyexec-init and pyexec that are set
	}{
		{name: "defaults", init: map[string]string{}, sidecar: map[string]string{}},
		{name: "the sidecar's own defaults", args: []string{"--timeout=30s", "--max-timeout=5m", "--memory-limit-mb=1024", "--preload=", "--allow-packages="},
			init: map[string]string{}, sidecar: map[string]string{}},
		{name: "flags", args: []string{"--timeout=1m", "--max-timeout=10m", "--memory-limit-mb=2048", "--preload=numpy,pandas",
			"--require=pandas>=2,<3", "--require=numpy", "--install=requests>=2", "--allow-packages=scikit-*,numpy"},
			init: map[string]string{"PYEXEC_PRELOAD": "numpy,pandas", "PYEXEC_REQUIRE": "pandas>=2,<3\nnumpy", "PYEXEC_INSTALL": "requests>=2"},
			sidecar: map[string]string{"PYEXEC_TIMEOUT": "1m0s", "PYEXEC_MAX_TIMEOUT": "10m0s", "PYEXEC_MEMORY_LIMIT_MB": "2048",
				"PYEXEC_PRELOAD": "numpy,pandas", "PYEXEC_ALLOW_PACKAGES": "scikit-*,numpy"}},
		{name: "variables", env: map[string]string{"PYEXEC_INJECTOR_TIMEOUT": "45s", "PYEXEC_INJECTOR_PRELOAD": "json,sqlite3",
			"PYEXEC_INJECTOR_REQUIRE": "pandas>=2\nnumpy", "PYEXEC_INJECTOR_MEMORY_LIMIT_MB": "256"},
			init:    map[string]string{"PYEXEC_PRELOAD": "json,sqlite3", "PYEXEC_REQUIRE": "pandas>=2\nnumpy"},
			sidecar: map[string]string{"PYEXEC_TIMEOUT": "45s", "PYEXEC_PRELOAD": "json,sqlite3", "PYEXEC_MEMORY_LIMIT_MB": "256"}},
		{name: "variables one per line", env: map[string]string{"PYEXEC_INJECTOR_PRELOAD": "numpy\npandas\n", "PYEXEC_INJECTOR_ALLOW_PACKAGES": "numpy\n scikit-*"},
			init:    map[string]string{"PYEXEC_PRELOAD": "numpy,pandas"},
			sidecar: map[string]string{"PYEXEC_PRELOAD": "numpy,pandas", "PYEXEC_ALLOW_PACKAGES": "numpy,scikit-*"}},
		{name: "none over the defaults", args: []string{"--preload=numpy", "--require=numpy", "--install=requests", "--allow-packages=*"},
			annotations: `pyexec.dev/preload: none, pyexec.dev/require: none, pyexec.dev/install: " none ", pyexec.dev/allow-packages: none`,
			init:        map[string]string{}, sidecar: map[string]string{}},
		{name: "annotations over flags", args: []string{"--timeout=1m", "--preload=numpy", "--require=numpy"},
			annotations: `pyexec.dev/timeout: 2m, pyexec.dev/preload: json, pyexec.dev/require: "", pyexec.dev/memory-limit-mb: "64"`,
			init:        map[string]string{"PYEXEC_PRELOAD": "json", "PYEXEC_REQUIRE": "numpy"},
			sidecar:     map[string]string{"PYEXEC_TIMEOUT": "2m0s", "PYEXEC_PRELOAD": "json", "PYEXEC_MEMORY_LIMIT_MB": "64"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vars := injectEnv(t, tt.env, tt.annotations, tt.args...)
			// The webhook (serve) takes the same defaults as inject.
			if serve, inject := parseDefaults(t, tt.env, tt.args...); !maps.Equal(serve.Annotations, inject.Annotations) {
				t.Errorf("serve's defaults %v, inject's %v", serve.Annotations, inject.Annotations)
			}
			for container, want := range map[string]map[string]string{"pyexec-init": tt.init, "pyexec": tt.sidecar} {
				for _, name := range all {
					got, set := vars[container][name]
					if w, ok := want[name]; set != ok || got != w {
						t.Errorf("%s: %s=%q (set %t), want %q (set %t)", container, name, got, set, w, ok)
					}
				}
			}
		})
	}
}

// TestCodeFlagsInvalid: a default that its annotation would refuse is a usage error of both
// commands, naming the flag, before anything starts; a pod whose annotation clashes with a
// default is refused with the default named as such.
func TestCodeFlagsInvalid(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--timeout=10m"}, `--timeout "10m0s": want a Go duration no longer than the max timeout 5m0s`},
		{[]string{"--max-timeout=10s"}, `--max-timeout "10s": want a Go duration no shorter than the timeout 30s`},
		{[]string{"--memory-limit-mb=8192"}, `--memory-limit-mb "8192": want a whole number of MiB from 32 to 4096`},
		{[]string{"--preload=numpy,1bad"}, `--preload "numpy,1bad": want`},
		{[]string{"--require=--index-url=http://x"}, `--require: "--index-url=http://x": options such as`},
		{[]string{"--allow-packages=num py"}, `--allow-packages "num py": want`},
		{[]string{"--allow-packages=a[b"}, `--allow-packages "a[b": want`},
		{[]string{`--require=pandas; python_version<"3.9"`}, `--require: "pandas; python_version<\"3.9\""`},
		{[]string{"--require=a @ https://x/y.whl"}, `--require: "a @ https://x/y.whl"`},
		{[]string{"--require=numpy", "--require=NumPy>=1"}, `--require: numpy is given twice ("numpy" and "NumPy>=1")`},
		{[]string{"--install=x.whl"}, `--install: "x.whl"`},
	} {
		for _, cmd := range [][]string{{"serve", "--cert-mode=external"}, {"inject", "-f", "-"}} {
			args := append(cmd, tc.args...)
			sio, stdout, stderr := testIO(nil, "")
			if code := Main(context.Background(), args, sio); code != 2 || stdout.Len() != 0 || !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("%v: exit code %d, stderr %q; want 2 and %q", args, code, stderr, tc.want)
			}
		}
	}

	pod := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bot\n  labels: {pyexec.dev/inject: \"true\"}\n  annotations: {pyexec.dev/max-timeout: 30s}\n" +
		"spec:\n  containers: [{name: bot, image: example.com/bot}]\n"
	sio, stdout, stderr := testIO(nil, pod)
	if code := Main(context.Background(), []string{"inject", "-f", "-", "--timeout=1m"}, sio); code == 0 || stdout.Len() != 0 ||
		!strings.Contains(stderr.String(), `annotation pyexec.dev/timeout="1m0s": want a Go duration no longer than the max timeout 30s (pyexec.dev/max-timeout) (the value is the injector's default`) {
		t.Errorf("a pod's max-timeout below the injector's timeout: exit code %d, stdout %q, stderr %s", code, stdout, stderr)
	}
}
