package app

import (
	"context"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"

	"github.com/pyexec/pyexec/internal/mutation"
)

// parsePodFlags runs serve and inject with args and env (neither is started) and returns the
// mutation.Defaults each builds from its PodConfig.
func parsePodFlags(t *testing.T, env map[string]string, args ...string) (serve, inj mutation.Defaults) {
	t.Helper()
	var sc *ServeConfig
	var ic *InjectConfig
	sio, _, stderr := testIO(env, "")
	runners := Runners{
		Serve:  func(_ context.Context, c *ServeConfig) error { sc = c; return nil },
		Inject: func(_ context.Context, c *InjectConfig) error { ic = c; return nil },
	}
	for _, cmd := range [][]string{{"serve", "--cert-mode=external"}, {"inject", "-f", "-"}} {
		root := NewRootCommand(sio, runners)
		root.SetArgs(append(cmd, args...))
		if err := root.ExecuteContext(context.Background()); err != nil {
			t.Fatalf("%s %v: %v %s", cmd[0], args, err, stderr)
		}
	}
	sc.Pod.apply(&serve)
	ic.Pod.apply(&inj)
	return serve, inj
}

func res(cpuRequest, cpuLimit, memoryRequest, memoryLimit string) *corev1.ResourceRequirements {
	r := &corev1.ResourceRequirements{Requests: corev1.ResourceList{}, Limits: corev1.ResourceList{}}
	for _, q := range []struct {
		list  corev1.ResourceList
		name  corev1.ResourceName
		value string
	}{
		{r.Requests, corev1.ResourceCPU, cpuRequest}, {r.Limits, corev1.ResourceCPU, cpuLimit},
		{r.Requests, corev1.ResourceMemory, memoryRequest}, {r.Limits, corev1.ResourceMemory, memoryLimit},
	} {
		if q.value != "" {
			q.list[q.name] = resource.MustParse(q.value)
		}
	}
	return r
}

// TestPodFlags: --uid-range, the resources of both containers and --runner-shm-size, or their
// variables, reach the Defaults of serve and of inject.
func TestPodFlags(t *testing.T) {
	defaults := mutation.Defaults{
		UIDRange:         mutation.UIDRange{Min: 100000, Max: 999999999},
		SidecarResources: res("50m", "", "64Mi", "512Mi"),
		RunnerResources:  res("100m", "", "128Mi", "1Gi"),
		ShmSize:          resource.MustParse("64Mi"),
	}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want func(d *mutation.Defaults)
	}{
		{name: "defaults", want: func(d *mutation.Defaults) {}},
		{name: "flags", args: []string{"--uid-range=5000-5999",
			"--sidecar-cpu-request=100m", "--sidecar-cpu-limit=1", "--sidecar-memory-request=128Mi", "--sidecar-memory-limit=1Gi",
			"--runner-cpu-request=1", "--runner-cpu-limit=4", "--runner-memory-request=2Gi", "--runner-memory-limit=8Gi",
			"--runner-shm-size=1Gi"},
			want: func(d *mutation.Defaults) {
				d.UIDRange = mutation.UIDRange{Min: 5000, Max: 5999}
				d.SidecarResources = res("100m", "1", "128Mi", "1Gi")
				d.RunnerResources = res("1", "4", "2Gi", "8Gi")
				d.ShmSize = resource.MustParse("1Gi")
			}},
		{name: "empty: none", args: []string{"--sidecar-memory-limit=", "--runner-cpu-request=", "--runner-memory-request=", "--runner-memory-limit="},
			want: func(d *mutation.Defaults) {
				d.SidecarResources = res("50m", "", "64Mi", "")
				d.RunnerResources = res("", "", "", "")
			}},
		{name: "env", env: map[string]string{"PYEXEC_INJECTOR_UID_RANGE": "10-20", "PYEXEC_INJECTOR_RUNNER_MEMORY_LIMIT": "2Gi",
			"PYEXEC_INJECTOR_SIDECAR_CPU_LIMIT": "500m", "PYEXEC_INJECTOR_RUNNER_SHM_SIZE": "128Mi"},
			want: func(d *mutation.Defaults) {
				d.UIDRange = mutation.UIDRange{Min: 10, Max: 20}
				d.RunnerResources = res("100m", "", "128Mi", "2Gi")
				d.SidecarResources = res("50m", "500m", "64Mi", "512Mi")
				d.ShmSize = resource.MustParse("128Mi")
			}},
		{name: "flags over env", args: []string{"--uid-range=30-40"}, env: map[string]string{"PYEXEC_INJECTOR_UID_RANGE": "10-20"},
			want: func(d *mutation.Defaults) { d.UIDRange = mutation.UIDRange{Min: 30, Max: 40} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := defaults
			want.SidecarResources, want.RunnerResources = defaults.SidecarResources.DeepCopy(), defaults.RunnerResources.DeepCopy()
			tt.want(&want)
			serve, inj := parsePodFlags(t, tt.env, tt.args...)
			for name, got := range map[string]mutation.Defaults{"serve": serve, "inject": inj} {
				if !equality.Semantic.DeepEqual(got, want) {
					t.Errorf("%s: defaults\n got %+v\nwant %+v", name, got, want)
				}
			}
		})
	}
}

// TestPodFlagsInvalid: a bad range, a bad quantity or a request above its limit is a usage
// error (exit code 2) of both commands, before anything starts.
func TestPodFlagsInvalid(t *testing.T) {
	for _, args := range [][]string{
		{"--uid-range=0-1000"},
		{"--uid-range=1000"},
		{"--uid-range=2000-1000"},
		{"--uid-range=1000-1000"},
		{"--uid-range=100000-4294967295"},
		{"--uid-range=a-b"},
		{"--sidecar-cpu-request=lots"},
		{"--sidecar-memory-limit=0"},
		{"--runner-memory-limit=-1Gi"},
		{"--runner-cpu-limit=1 core"},
		{"--runner-shm-size="},
		{"--runner-shm-size=0"},
		{"--runner-shm-size=big"},
		{"--sidecar-memory-request=1Gi"},                                // over the default limit, 512Mi
		{"--runner-cpu-request=2", "--runner-cpu-limit=1"},              // request over limit
		{"--runner-memory-limit=64Mi"},                                  // under the default request, 128Mi
		{"--runner-memory-request=2Gi", "--runner-memory-limit=1Gi"},    // request over limit
		{"--sidecar-cpu-request=200m", "--sidecar-cpu-limit=100m"},      // request over limit
		{"--runner-memory-request=1Gi", "--runner-memory-limit=1000Mi"}, // 1Gi is 1024Mi
	} {
		wantUsageError(t, nil, append([]string{"serve", "--cert-mode=external"}, args...)...)
		wantUsageError(t, nil, append([]string{"inject", "-f", "-"}, args...)...)
	}
	wantUsageError(t, map[string]string{"PYEXEC_INJECTOR_UID_RANGE": "0-5"}, "serve", "--cert-mode=external")
	wantUsageError(t, map[string]string{"PYEXEC_INJECTOR_RUNNER_SHM_SIZE": "none"}, "inject", "-f", "-")
}

// TestInjectPodFlags runs `inject` for real: the uids come from --uid-range and differ, the
// resources and the shm size from the flags, and a pod's annotations win over them.
func TestInjectPodFlags(t *testing.T) {
	const pod = `apiVersion: v1
kind: Pod
metadata:
  name: bot
  labels: {pyexec.dev/inject: "true"}
  annotations: {ANNOTATIONS}
spec:
  containers: [{name: bot, image: example.com/bot}]
`
	args := []string{"inject", "-f", "-", "--uid-range=7000-7001", "--sidecar-cpu-limit=1", "--runner-memory-limit=2Gi", "--runner-shm-size=256Mi"}
	run := func(t *testing.T, annotations string) (corev1.Pod, map[string]corev1.Container) {
		t.Helper()
		sio, stdout, stderr := testIO(nil, strings.Replace(pod, "ANNOTATIONS", annotations, 1))
		if code := Main(context.Background(), args, sio); code != 0 {
			t.Fatalf("exit code %d: %s", code, stderr)
		}
		var out corev1.Pod
		if err := yaml.UnmarshalStrict(stdout.Bytes(), &out); err != nil {
			t.Fatal(err)
		}
		containers := map[string]corev1.Container{}
		for _, c := range out.Spec.InitContainers {
			containers[c.Name] = c
		}
		return out, containers
	}

	out, c := run(t, "")
	server, runner := *c[mutation.SidecarName].SecurityContext.RunAsUser, *c[mutation.RunnerName].SecurityContext.RunAsUser
	if server == runner || min(server, runner) != 7000 || max(server, runner) != 7001 {
		t.Errorf("uids %d and %d, want 7000 and 7001 in some order", server, runner)
	}
	if *c[mutation.InitContainerName].SecurityContext.RunAsUser != server || *c[mutation.RunnerName].SecurityContext.RunAsGroup != server {
		t.Errorf("pyexec-init runs as %d, the runner in group %d; want the server's %d",
			*c[mutation.InitContainerName].SecurityContext.RunAsUser, *c[mutation.RunnerName].SecurityContext.RunAsGroup, server)
	}
	if got := quantityOf(c[mutation.SidecarName].Resources.Limits, corev1.ResourceCPU); got != "1" {
		t.Errorf("server CPU limit %s, want 1", got)
	}
	if got := quantityOf(c[mutation.RunnerName].Resources.Limits, corev1.ResourceMemory); got != "2Gi" {
		t.Errorf("runner memory limit %s, want 2Gi", got)
	}
	for _, v := range out.Spec.Volumes {
		if v.Name == mutation.VolumeShm && v.EmptyDir.SizeLimit.String() != "256Mi" {
			t.Errorf("pyexec-shm sizeLimit %s, want 256Mi", v.EmptyDir.SizeLimit)
		}
	}

	_, c = run(t, `pyexec.dev/server-uid: "1234", pyexec.dev/runner-uid: "5678", pyexec.dev/cpu-limit: "2", pyexec.dev/runner-memory-limit: 4Gi`)
	if s, r := *c[mutation.SidecarName].SecurityContext.RunAsUser, *c[mutation.RunnerName].SecurityContext.RunAsUser; s != 1234 || r != 5678 {
		t.Errorf("pinned uids: server %d, runner %d; want 1234, 5678", s, r)
	}
	if env := envOf(c[mutation.SidecarName]); env["PYEXEC_RUNNER_UID"] != strconv.Itoa(5678) {
		t.Errorf("server's PYEXEC_RUNNER_UID %q, want 5678", env["PYEXEC_RUNNER_UID"])
	}
	if got := quantityOf(c[mutation.SidecarName].Resources.Limits, corev1.ResourceCPU); got != "2" {
		t.Errorf("server CPU limit %s, want the annotation's 2", got)
	}
	if got := quantityOf(c[mutation.RunnerName].Resources.Limits, corev1.ResourceMemory); got != "4Gi" {
		t.Errorf("runner memory limit %s, want the annotation's 4Gi", got)
	}
}

// quantityOf is list[name] as a string, "none" when absent.
func quantityOf(list corev1.ResourceList, name corev1.ResourceName) string {
	q, ok := list[name]
	if !ok {
		return "none"
	}
	return q.String()
}

func envOf(c corev1.Container) map[string]string {
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	return env
}
