package app

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/pyexec/pyexec/internal/mutation"
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
		// The chart's defaults: network denied, isolation required.
		{name: "defaults", network: "deny", requireIsolation: true},
		{name: "flags", args: []string{"--network=allow", "--require-isolation"}, network: "allow", requireIsolation: true},
		{name: "flags false", args: []string{"--network=deny", "--require-isolation=false"}, network: "deny"},
		{name: "env", env: map[string]string{"PYEXEC_INJECTOR_NETWORK": "allow", "PYEXEC_INJECTOR_REQUIRE_ISOLATION": "false"},
			network: "allow"},
		{name: "flags over env", args: []string{"--require-isolation=false"},
			env: map[string]string{"PYEXEC_INJECTOR_REQUIRE_ISOLATION": "true"}, network: "deny"},
		{name: "flags over env, on", args: []string{"--require-isolation=true"},
			env: map[string]string{"PYEXEC_INJECTOR_REQUIRE_ISOLATION": "false"}, network: "deny", requireIsolation: true},
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
		wantUsageError(t, nil, args...)
	}
	wantUsageError(t, map[string]string{"PYEXEC_INJECTOR_NETWORK": "open"}, "serve", "--cert-mode=external")
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
		{name: "defaults", network: "deny", require: "true"},
		{name: "isolation off", args: []string{"--require-isolation=false"}, network: "deny", require: "false"},
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

// TestSessionFlags: --max-sessions, --session-idle-timeout and --max-checkpoints-per-session,
// or their variables, reach the config of serve and of inject; their defaults are the
// sidecar's own.
func TestSessionFlags(t *testing.T) {
	tests := []struct {
		name        string
		args        []string
		env         map[string]string
		maxSessions int
		idle        time.Duration
		checkpoints int
	}{
		{name: "defaults", maxSessions: 8, idle: 10 * time.Minute, checkpoints: 4},
		{name: "flags", args: []string{"--max-sessions=2", "--session-idle-timeout=90s", "--max-checkpoints-per-session=9"}, maxSessions: 2, idle: 90 * time.Second, checkpoints: 9},
		{name: "sessions off", args: []string{"--max-sessions=0"}, maxSessions: 0, idle: 10 * time.Minute, checkpoints: 4},
		{name: "env", env: map[string]string{"PYEXEC_INJECTOR_MAX_SESSIONS": "16", "PYEXEC_INJECTOR_SESSION_IDLE_TIMEOUT": "30m", "PYEXEC_INJECTOR_MAX_CHECKPOINTS_PER_SESSION": "0"},
			maxSessions: 16, idle: 30 * time.Minute, checkpoints: 0},
		{name: "flags over env", args: []string{"--max-sessions=1"},
			env: map[string]string{"PYEXEC_INJECTOR_MAX_SESSIONS": "16"}, maxSessions: 1, idle: 10 * time.Minute, checkpoints: 4},
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
			if serve == nil || serve.MaxSessions != tt.maxSessions || serve.SessionIdleTimeout != tt.idle || serve.MaxCheckpoints != tt.checkpoints || inj.MaxCheckpoints != tt.checkpoints {
				t.Errorf("serve config %+v, want maxSessions %d, sessionIdleTimeout %v", serve, tt.maxSessions, tt.idle)
			}
			if inj == nil || inj.MaxSessions != tt.maxSessions || inj.SessionIdleTimeout != tt.idle {
				t.Errorf("inject config %+v, want maxSessions %d, sessionIdleTimeout %v", inj, tt.maxSessions, tt.idle)
			}
		})
	}
}

// TestSessionFlagsInvalid: a negative --max-sessions, or a --session-idle-timeout that is not
// a duration above zero, is a usage error (exit code 2) of both commands, before anything
// starts.
func TestSessionFlagsInvalid(t *testing.T) {
	for _, args := range [][]string{
		{"serve", "--cert-mode=external", "--max-sessions=-1"},
		{"inject", "-f", "-", "--max-sessions=-1"},
		{"inject", "-f", "-", "--max-sessions=many"},
		{"serve", "--cert-mode=external", "--session-idle-timeout=0s"},
		{"inject", "-f", "-", "--session-idle-timeout=-1m"},
		{"inject", "-f", "-", "--session-idle-timeout=10"},
	} {
		wantUsageError(t, nil, args...)
	}
	wantUsageError(t, map[string]string{"PYEXEC_INJECTOR_SESSION_IDLE_TIMEOUT": "0"}, "serve", "--cert-mode=external")
}

// TestInjectSessions runs `inject` for real: the flags become the sidecar's variables, a
// pod's annotations win over them, and a bad annotation fails the command.
func TestInjectSessions(t *testing.T) {
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
		maxSessions, idle string
	}{
		{name: "defaults", maxSessions: "8", idle: "10m0s"},
		{name: "flags", args: []string{"--max-sessions=0", "--session-idle-timeout=1h"}, maxSessions: "0", idle: "1h0m0s"},
		{name: "annotations over flags", args: []string{"--max-sessions=0", "--session-idle-timeout=1h"},
			annotations: `pyexec.dev/max-sessions: "3", pyexec.dev/session-idle-timeout: 2m`, maxSessions: "3", idle: "2m0s"},
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
			if env["PYEXEC_MAX_SESSIONS"] != tt.maxSessions || env["PYEXEC_SESSION_IDLE_TIMEOUT"] != tt.idle {
				t.Errorf("PYEXEC_MAX_SESSIONS=%q PYEXEC_SESSION_IDLE_TIMEOUT=%q, want %q, %q\n%s",
					env["PYEXEC_MAX_SESSIONS"], env["PYEXEC_SESSION_IDLE_TIMEOUT"], tt.maxSessions, tt.idle, stdout)
			}
		})
	}

	sio, stdout, stderr := testIO(nil, strings.Replace(pod, "ANNOTATIONS", `pyexec.dev/session-idle-timeout: "0"`, 1))
	if code := Main(context.Background(), []string{"inject", "-f", "-"}, sio); code == 0 || stdout.Len() != 0 ||
		!strings.Contains(stderr.String(), `annotation pyexec.dev/session-idle-timeout="0": want a Go duration above zero`) {
		t.Errorf("session-idle-timeout 0: exit code %d, stdout %q, stderr %s", code, stdout, stderr)
	}
}

// wantUsageError runs the injector with args and env and wants a usage error: exit 2, nothing
// on stdout.
func wantUsageError(t *testing.T, env map[string]string, args ...string) {
	t.Helper()
	sio, stdout, stderr := testIO(env, "")
	if code := Main(context.Background(), args, sio); code != 2 {
		t.Errorf("%v %v: exit code %d, want 2; stderr %s", env, args, code, stderr)
	}
	if stdout.Len() != 0 {
		t.Errorf("%v %v: wrote %q", env, args, stdout)
	}
}

// inject warns on stderr of each pyexec.dev/ annotation it does not know, naming the document,
// and writes the manifests on stdout as without it.
func TestInjectWarnsOfUnknownAnnotations(t *testing.T) {
	pod := `apiVersion: v1
kind: Pod
metadata:
  name: bot
  labels: {pyexec.dev/inject: "true"}
  annotations: {pyexec.dev/timout: 1m, pyexec.dev/max-sesions: "2"}
spec:
  containers: [{name: bot, image: example.com/bot}]
`
	sio, stdout, stderr := testIO(nil, pod)
	if code := Main(context.Background(), []string{"inject", "-f", "-"}, sio); code != 0 {
		t.Fatalf("exit code %d: %s", code, stderr)
	}
	for _, want := range []string{
		"Warning: document 1 (Pod/bot, line 1): annotation pyexec.dev/max-sesions is not one of pyexec's and changes nothing; did you mean pyexec.dev/max-sessions?\n",
		"Warning: document 1 (Pod/bot, line 1): annotation pyexec.dev/timout is not one of pyexec's and changes nothing; did you mean pyexec.dev/timeout?\n",
	} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr %q; want %q", stderr, want)
		}
	}
	var out corev1.Pod
	if err := yaml.UnmarshalStrict(stdout.Bytes(), &out); err != nil || out.Annotations[mutation.AnnotationStatus] != mutation.StatusInjected {
		t.Errorf("stdout is not the injected pod (%v):\n%s", err, stdout)
	}
}
