package app

import (
	"bytes"
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// testIO is an IO with the given environment and standard input.
func testIO(env map[string]string, stdin string) (IO, *bytes.Buffer, *bytes.Buffer) {
	var stdout, stderr bytes.Buffer
	return IO{
		Stdin:  strings.NewReader(stdin),
		Stdout: &stdout,
		Stderr: &stderr,
		LookupEnv: func(k string) (string, bool) {
			v, ok := env[k]
			return v, ok
		},
	}, &stdout, &stderr
}

// TestConfinementFlags: --network and --require-isolation, or their variables, reach the
// config of serve and of inject.
func TestConfinementFlags(t *testing.T) {
	tests := []struct {
		name             string
		args             []string
		env              map[string]string
		network          string
		requireIsolation bool
	}{
		{name: "defaults", network: "deny"},
		{name: "flags", args: []string{"--network=allow", "--require-isolation"}, network: "allow", requireIsolation: true},
		{name: "flags false", args: []string{"--network=deny", "--require-isolation=false"}, network: "deny"},
		{name: "env", env: map[string]string{"PYEXEC_INJECTOR_NETWORK": "allow", "PYEXEC_INJECTOR_REQUIRE_ISOLATION": "true"},
			network: "allow", requireIsolation: true},
		{name: "flags over env", args: []string{"--require-isolation=false"},
			env: map[string]string{"PYEXEC_INJECTOR_REQUIRE_ISOLATION": "true"}, network: "deny"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var serve *ServeConfig
			var inj *InjectConfig
			sio, _, _ := testIO(tt.env, "")
			runners := Runners{
				Serve:  func(_ context.Context, c *ServeConfig) error { serve = c; return nil },
				Inject: func(_ context.Context, c *InjectConfig) error { inj = c; return nil },
			}
			for _, cmd := range [][]string{{"serve", "--cert-mode=external"}, {"inject", "-f", "-"}} {
				root := NewRootCommand(sio, runners)
				root.SetArgs(append(cmd, tt.args...))
				if err := root.ExecuteContext(context.Background()); err != nil {
					t.Fatalf("%s: %v", cmd[0], err)
				}
			}
			if serve == nil || serve.Network != tt.network || serve.RequireIsolation != tt.requireIsolation {
				t.Errorf("serve config %+v, want network %s, requireIsolation %v", serve, tt.network, tt.requireIsolation)
			}
			if inj == nil || inj.Network != tt.network || inj.RequireIsolation != tt.requireIsolation {
				t.Errorf("inject config %+v, want network %s, requireIsolation %v", inj, tt.network, tt.requireIsolation)
			}
		})
	}
}

// TestConfinementFlagsInvalid: a bad --network is a usage error (exit code 2) of both
// commands, before anything starts.
func TestConfinementFlagsInvalid(t *testing.T) {
	for _, args := range [][]string{
		{"serve", "--cert-mode=external", "--network=none"},
		{"inject", "-f", "-", "--network=Allow"},
		{"serve", "--cert-mode=external", "--require-isolation=yes"},
	} {
		sio, stdout, stderr := testIO(nil, "")
		if code := Main(context.Background(), args, sio); code != 2 {
			t.Errorf("%v: exit code %d, want 2; stderr %s", args, code, stderr)
		}
		if stdout.Len() != 0 {
			t.Errorf("%v: wrote %q", args, stdout)
		}
	}
	sio, _, stderr := testIO(map[string]string{"PYEXEC_INJECTOR_NETWORK": "open"}, "")
	if code := Main(context.Background(), []string{"serve", "--cert-mode=external"}, sio); code != 2 {
		t.Errorf("PYEXEC_INJECTOR_NETWORK=open: exit code %d, want 2; stderr %s", code, stderr)
	}
}

// TestInjectConfinement runs `inject` for real: the flags become the sidecar's variables,
// and a pod's annotations win over them.
func TestInjectConfinement(t *testing.T) {
	const pod = `apiVersion: v1
kind: Pod
metadata:
  name: bot
  labels: {pyexec.dev/inject: "true"}
  annotations: {ANNOTATIONS}
spec:
  containers: [{name: bot, image: example.com/bot}]
`
	tests := []struct {
		name, annotations string
		args              []string
		network, require  string
	}{
		{name: "defaults", network: "deny", require: "false"},
		{name: "flags", args: []string{"--network=allow", "--require-isolation"}, network: "allow", require: "true"},
		{name: "annotations over flags", args: []string{"--network=allow", "--require-isolation"},
			annotations: `pyexec.dev/network: deny, pyexec.dev/require-isolation: "false"`, network: "deny", require: "false"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sio, stdout, stderr := testIO(nil, strings.Replace(pod, "ANNOTATIONS", tt.annotations, 1))
			if code := Main(context.Background(), append([]string{"inject", "-f", "-"}, tt.args...), sio); code != 0 {
				t.Fatalf("exit code %d: %s", code, stderr)
			}
			var out corev1.Pod
			if err := yaml.UnmarshalStrict(stdout.Bytes(), &out); err != nil {
				t.Fatal(err)
			}
			env := map[string]string{}
			for _, c := range out.Spec.InitContainers {
				if c.Name == "pyexec" {
					for _, e := range c.Env {
						env[e.Name] = e.Value
					}
				}
			}
			if env["PYEXEC_NETWORK"] != tt.network || env["PYEXEC_REQUIRE_ISOLATION"] != tt.require {
				t.Errorf("PYEXEC_NETWORK=%q PYEXEC_REQUIRE_ISOLATION=%q, want %q, %q\n%s",
					env["PYEXEC_NETWORK"], env["PYEXEC_REQUIRE_ISOLATION"], tt.network, tt.require, stdout)
			}
		})
	}
}
