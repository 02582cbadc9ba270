package mutation

import (
	"errors"
	"path"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// appPod is an opted-in pod with the given app containers.
func appPod(names ...string) *corev1.Pod {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:   "bot",
			Labels: map[string]string{LabelInject: LabelInjectEnabled},
		},
	}
	for _, n := range names {
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: n, Image: "example.com/" + n})
	}
	return pod
}

func TestShouldInject(t *testing.T) {
	tests := []struct {
		name   string
		change func(p *corev1.Pod)
		force  bool
		want   bool
		reason string
	}{
		{name: "opted in", change: func(p *corev1.Pod) {}, want: true},
		{name: "no label", change: func(p *corev1.Pod) { p.Labels = nil },
			reason: `no label pyexec.dev/inject="true"`},
		{name: "no label, forced", change: func(p *corev1.Pod) { p.Labels = nil }, force: true, want: true},
		{name: "label false", change: func(p *corev1.Pod) { p.Labels[LabelInject] = "false" },
			reason: `label pyexec.dev/inject="false" is not "true"`},
		{name: "label false, forced", change: func(p *corev1.Pod) { p.Labels[LabelInject] = "false" }, force: true,
			reason: `label pyexec.dev/inject="false" is not "true"`},
		{name: "label True", change: func(p *corev1.Pod) { p.Labels[LabelInject] = "True" },
			reason: `label pyexec.dev/inject="True" is not "true"`},
		{name: "status annotation", change: func(p *corev1.Pod) {
			p.Annotations = map[string]string{AnnotationStatus: StatusInjected}
		}, force: true, reason: `already injected (annotation pyexec.dev/status="injected")`},
		{name: "status annotation, any value", change: func(p *corev1.Pod) {
			p.Annotations = map[string]string{AnnotationStatus: ""}
		}, reason: `already injected (annotation pyexec.dev/status="")`},
		{name: "injector's own pod", change: func(p *corev1.Pod) { p.Labels[LabelAppName] = InjectorAppName }, force: true,
			reason: "the injector's own pod (label app.kubernetes.io/name=pyexec-injector)"},
		{name: "other app name", change: func(p *corev1.Pod) { p.Labels[LabelAppName] = "bot" }, want: true},
		{name: "container pyexec", change: func(p *corev1.Pod) {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: SidecarName})
		}, reason: "already has a container named pyexec"},
		{name: "container pyexec-init", change: func(p *corev1.Pod) {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: InitContainerName})
		}, reason: "already has a container named pyexec-init"},
		{name: "init container pyexec-init", change: func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: InitContainerName}}
		}, reason: "already has an init container named pyexec-init"},
		{name: "native sidecar pyexec", change: func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "setup"}, {Name: SidecarName}}
		}, reason: "already has an init container named pyexec"},
		{name: "volume pyexec-run", change: func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "data"}, {Name: VolumeRun}}
		}, reason: "already has a volume named pyexec-run"},
		{name: "container pyexec-runner", change: func(p *corev1.Pod) {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: RunnerName})
		}, reason: "already has a container named pyexec-runner"},
		{name: "native sidecar pyexec-runner", change: func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: RunnerName}}
		}, force: true, reason: "already has an init container named pyexec-runner"},
		{name: "volume pyexec-work", change: func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: VolumeWork}}
		}, reason: "already has a volume named pyexec-work"},
		{name: "volume pyexec-shm", change: func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "data"}, {Name: VolumeShm}}
		}, force: true, reason: "already has a volume named pyexec-shm"},
		{name: "volumes of other names", change: func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "pyexec"}, {Name: "pyexec-runner"}, {Name: "shm"}, {Name: "work"}}
		}, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := appPod("bot")
			tt.change(pod)
			got, reason := shouldInject(pod, tt.force)
			if got != tt.want || reason != tt.reason {
				t.Errorf("shouldInject(force=%v) = %v, %q; want %v, %q", tt.force, got, reason, tt.want, tt.reason)
			}
			if !tt.force {
				if got2, reason2 := ShouldInject(pod); got2 != got || reason2 != reason {
					t.Errorf("ShouldInject() = %v, %q; shouldInject(false) = %v, %q", got2, reason2, got, reason)
				}
			}
		})
	}
}

func TestInjectPod(t *testing.T) {
	pod := appPod("bot")
	orig := pod.DeepCopy()
	out, injected, reason, err := InjectPod(pod, testDefaults)
	if err != nil || !injected || reason != "" {
		t.Fatalf("InjectPod() = %v, %q, %v; want injected", injected, reason, err)
	}
	if !equality.Semantic.DeepEqual(pod, orig) {
		t.Error("InjectPod changed its argument")
	}
	if out.Annotations[AnnotationStatus] != StatusInjected {
		t.Errorf("status annotation = %q", out.Annotations[AnnotationStatus])
	}

	// Idempotent: an injected pod is left as it is.
	again, injected, reason, err := InjectPod(out, testDefaults)
	if err != nil || injected || reason != `already injected (annotation pyexec.dev/status="injected")` {
		t.Fatalf("InjectPod(injected) = %v, %q, %v", injected, reason, err)
	}
	if !equality.Semantic.DeepEqual(again, out) {
		t.Error("InjectPod changed an injected pod")
	}
	if again == out {
		t.Error("InjectPod returned its argument, want a copy")
	}
}

func TestInjectPodNotOptedIn(t *testing.T) {
	pod := appPod("bot")
	pod.Labels = nil
	out, injected, reason, err := InjectPod(pod, testDefaults)
	if err != nil || injected || reason != `no label pyexec.dev/inject="true"` {
		t.Fatalf("InjectPod() = %v, %q, %v", injected, reason, err)
	}
	if !equality.Semantic.DeepEqual(out, pod) {
		t.Error("a pod that was not injected changed")
	}

	d := testDefaults
	d.Force = true
	out, injected, _, err = InjectPod(pod, d)
	if err != nil || !injected || len(out.Spec.InitContainers) != 3 {
		t.Fatalf("InjectPod(Force) = %v, %v, %d init containers", injected, err, len(out.Spec.InitContainers))
	}
}

func TestInjectPodAnnotationError(t *testing.T) {
	pod := appPod("bot")
	pod.Annotations = map[string]string{AnnotationMaxConcurrent: "many"}
	out, injected, _, err := InjectPod(pod, testDefaults)
	var ae *AnnotationError
	if !errors.As(err, &ae) || ae.Annotation != AnnotationMaxConcurrent || out != nil || injected {
		t.Fatalf("InjectPod() = %v, %v, %v; want an *AnnotationError for %s", out, injected, err, AnnotationMaxConcurrent)
	}
}

func TestInjectLayout(t *testing.T) {
	for _, native := range []bool{true, false} {
		pod := appPod("proxy", "bot")
		pod.Spec.InitContainers = []corev1.Container{{Name: "migrate"}}
		pod.Spec.Volumes = []corev1.Volume{{Name: "data"}}
		cfg := &Config{Image: "img", ServerUID: 1000, RunnerUID: 2000, Containers: []string{"bot"}, SocketDir: "/run/px", NativeSidecar: native}
		Inject(pod, cfg)

		var inits, apps []string
		for _, c := range pod.Spec.InitContainers {
			inits = append(inits, c.Name)
		}
		for _, c := range pod.Spec.Containers {
			apps = append(apps, c.Name)
		}
		wantInits, wantApps := []string{"pyexec-init", "pyexec-runner", "pyexec", "migrate"}, []string{"proxy", "bot"}
		if !native {
			wantInits, wantApps = []string{"pyexec-init", "migrate"}, []string{"proxy", "bot", "pyexec-runner", "pyexec"}
		}
		if !equality.Semantic.DeepEqual(inits, wantInits) || !equality.Semantic.DeepEqual(apps, wantApps) {
			t.Errorf("native=%v: init containers %v, containers %v; want %v, %v", native, inits, apps, wantInits, wantApps)
		}
		var vols []string
		for _, v := range pod.Spec.Volumes {
			vols = append(vols, v.Name)
		}
		if want := []string{"data", VolumeNoToken, VolumePackages, VolumeRun, VolumeShm, VolumeTmp, VolumeWork}; !equality.Semantic.DeepEqual(vols, want) {
			t.Errorf("volumes %v, want %v", vols, want)
		}
		if len(pod.Spec.Containers[0].VolumeMounts) != 0 || len(pod.Spec.Containers[0].Env) != 0 {
			t.Errorf("proxy got the socket: %+v", pod.Spec.Containers[0])
		}
		bot := pod.Spec.Containers[1]
		wantMount := corev1.VolumeMount{Name: VolumeRun, MountPath: "/run/px", ReadOnly: true}
		if len(bot.VolumeMounts) != 1 || !equality.Semantic.DeepEqual(bot.VolumeMounts[0], wantMount) {
			t.Errorf("bot mounts %+v, want %+v", bot.VolumeMounts, wantMount)
		}
		if wantEnv := []corev1.EnvVar{{Name: EnvSocket, Value: "/run/px/pyexec.sock"}}; !equality.Semantic.DeepEqual(bot.Env, wantEnv) {
			t.Errorf("bot env %+v, want %+v", bot.Env, wantEnv)
		}
		if got := pod.Annotations[AnnotationDefaultContainer]; got != "proxy" {
			t.Errorf("default container %q, want proxy", got)
		}
	}
}

func TestInitContainer(t *testing.T) {
	cfg := defaultConfig()
	cfg.Require = []string{"pandas>=2", "numpy"}
	cfg.Preload = []string{"numpy", "os.path"}
	cfg.Install = []string{"requests"}
	cfg.Timeout = time.Minute // a sidecar setting: not on the init container
	c := initContainer(&cfg)

	wantEnv := []corev1.EnvVar{
		{Name: "PYEXEC_INSTALL", Value: "requests"},
		{Name: "PYEXEC_PACKAGES_DIR", Value: "/var/lib/pyexec/packages"},
		{Name: "PYEXEC_PRELOAD", Value: "numpy,os.path"},
		{Name: "PYEXEC_REPORT", Value: "/var/run/pyexec/preflight.json"},
		{Name: "PYEXEC_REQUIRE", Value: "pandas>=2\nnumpy"},
		{Name: "PYEXEC_RUNNER_SOCKET", Value: "/var/lib/pyexec/runner/run/runner.sock"},
		{Name: "PYEXEC_RUNNER_UID", Value: "582750489"},
		{Name: "PYEXEC_WORK_DIR", Value: "/var/lib/pyexec/runner/work"},
	}
	if !equality.Semantic.DeepEqual(c.Env, wantEnv) {
		t.Errorf("env\n got %+v\nwant %+v", c.Env, wantEnv)
	}
	if c.Name != "pyexec-init" || c.Image != cfg.Image || c.ImagePullPolicy != cfg.PullPolicy ||
		!equality.Semantic.DeepEqual(c.Args, []string{"init"}) {
		t.Errorf("container %s image %s policy %s args %v", c.Name, c.Image, c.ImagePullPolicy, c.Args)
	}
	if c.RestartPolicy != nil || c.StartupProbe != nil || len(c.Ports) != 0 {
		t.Errorf("init container has sidecar fields: %+v", c)
	}
	if !equality.Semantic.DeepEqual(c.Resources, cfg.Resources) {
		t.Errorf("resources %+v, want %+v", c.Resources, cfg.Resources)
	}
	if !equality.Semantic.DeepEqual(c.VolumeMounts, serverMounts()) {
		t.Errorf("mounts %+v", c.VolumeMounts)
	}
	if u, g := c.SecurityContext.RunAsUser, c.SecurityContext.RunAsGroup; *u != cfg.ServerUID || *g != cfg.ServerUID {
		t.Errorf("runs as %d:%d, want the server's %d:%d", *u, *g, cfg.ServerUID, cfg.ServerUID)
	}
}

func TestSidecar(t *testing.T) {
	cfg := defaultConfig()
	cfg.Timeout, cfg.MaxTimeout = 45*time.Second, 10*time.Minute
	cfg.MemoryLimitMB, cfg.MaxConcurrent = 2048, 3
	cfg.AllowPackages = []string{"numpy", "scikit-*"}
	cfg.AllowUIDs = []uint32{65532, 1000}
	cfg.Preload = []string{"numpy"}
	cfg.Network, cfg.RequireIsolation = NetworkAllow, true
	cfg.MaxSessions, cfg.SessionIdleTimeout = ptr.To(3), 90*time.Second
	cfg.Require = []string{"pandas"} // an init setting: not on the sidecar
	c := sidecar(&cfg)

	wantEnv := []corev1.EnvVar{
		{Name: "PYEXEC_ALLOW_PACKAGES", Value: "numpy,scikit-*"},
		{Name: "PYEXEC_ALLOW_UIDS", Value: "65532,1000"},
		{Name: "PYEXEC_DRAIN_TIMEOUT", Value: "20s"},
		{Name: "PYEXEC_MAX_CONCURRENT", Value: "3"},
		{Name: "PYEXEC_MAX_SESSIONS", Value: "3"},
		{Name: "PYEXEC_MAX_TIMEOUT", Value: "10m0s"},
		{Name: "PYEXEC_MEMORY_LIMIT_MB", Value: "2048"},
		{Name: "PYEXEC_NETWORK", Value: "allow"},
		{Name: "PYEXEC_PACKAGES_DIR", Value: "/var/lib/pyexec/packages"},
		{Name: "PYEXEC_PRELOAD", Value: "numpy"},
		{Name: "PYEXEC_PROBE_ADDR", Value: ":9901"},
		{Name: "PYEXEC_REPORT", Value: "/var/run/pyexec/preflight.json"},
		{Name: "PYEXEC_REQUIRE_ISOLATION", Value: "true"},
		{Name: "PYEXEC_RUNNER_SOCKET", Value: "/var/lib/pyexec/runner/run/runner.sock"},
		{Name: "PYEXEC_RUNNER_UID", Value: "582750489"},
		{Name: "PYEXEC_SESSION_IDLE_TIMEOUT", Value: "1m30s"},
		{Name: "PYEXEC_SOCKET", Value: "/var/run/pyexec/pyexec.sock"},
		{Name: "PYEXEC_SOCKET_MODE", Value: "0666"},
		{Name: "PYEXEC_TIMEOUT", Value: "45s"},
		{Name: "PYEXEC_WORK_DIR", Value: "/var/lib/pyexec/runner/work"},
	}
	if !equality.Semantic.DeepEqual(c.Env, wantEnv) {
		t.Errorf("env\n got %+v\nwant %+v", c.Env, wantEnv)
	}
	wantPorts := []corev1.ContainerPort{{Name: "pyexec-probe", ContainerPort: 9901, Protocol: corev1.ProtocolTCP}}
	if !equality.Semantic.DeepEqual(c.Ports, wantPorts) {
		t.Errorf("ports %+v", c.Ports)
	}
	get := func(p *corev1.Probe) string {
		if p == nil || p.HTTPGet == nil {
			return "none"
		}
		return p.HTTPGet.Path + " on " + p.HTTPGet.Port.String()
	}
	if get(c.ReadinessProbe) != "/readyz on pyexec-probe" || get(c.LivenessProbe) != "/healthz on pyexec-probe" {
		t.Errorf("readiness %s, liveness %s", get(c.ReadinessProbe), get(c.LivenessProbe))
	}
	if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("native sidecar restartPolicy %v, want Always", c.RestartPolicy)
	}
	wantStartup := &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("pyexec-probe")}},
		PeriodSeconds: 1, FailureThreshold: 120,
	}
	if !equality.Semantic.DeepEqual(c.StartupProbe, wantStartup) {
		t.Errorf("startup probe %+v, want %+v", c.StartupProbe, wantStartup)
	}

	cfg.NativeSidecar = false
	c = sidecar(&cfg)
	if c.RestartPolicy != nil || c.StartupProbe != nil {
		t.Errorf("regular sidecar has restartPolicy %v, startupProbe %v", c.RestartPolicy, c.StartupProbe)
	}
}

// TestSidecarConfinementEnv: the confinement variables are always on the sidecar, never on
// pyexec-init, and a Config without a network (built by hand) denies it.
func TestSidecarConfinementEnv(t *testing.T) {
	tests := []struct {
		name             string
		network          string
		requireIsolation bool
		want             []corev1.EnvVar
	}{
		{name: "defaults", network: NetworkDeny,
			want: []corev1.EnvVar{{Name: "PYEXEC_NETWORK", Value: "deny"}, {Name: "PYEXEC_REQUIRE_ISOLATION", Value: "false"}}},
		{name: "allow, required", network: NetworkAllow, requireIsolation: true,
			want: []corev1.EnvVar{{Name: "PYEXEC_NETWORK", Value: "allow"}, {Name: "PYEXEC_REQUIRE_ISOLATION", Value: "true"}}},
		{name: "empty network", network: "", requireIsolation: true,
			want: []corev1.EnvVar{{Name: "PYEXEC_NETWORK", Value: "deny"}, {Name: "PYEXEC_REQUIRE_ISOLATION", Value: "true"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := defaultConfig()
			cfg.Network, cfg.RequireIsolation = tt.network, tt.requireIsolation
			var got []corev1.EnvVar
			for _, e := range sidecar(&cfg).Env {
				if e.Name == "PYEXEC_NETWORK" || e.Name == "PYEXEC_REQUIRE_ISOLATION" {
					got = append(got, e)
				}
			}
			if !equality.Semantic.DeepEqual(got, tt.want) {
				t.Errorf("sidecar env %+v, want %+v", got, tt.want)
			}
			for _, e := range initContainer(&cfg).Env {
				if e.Name == "PYEXEC_NETWORK" || e.Name == "PYEXEC_REQUIRE_ISOLATION" {
					t.Errorf("pyexec-init has %s", e.Name)
				}
			}
		})
	}
}

// TestInjectPodConfinementAnnotations runs the whole injection: the annotations over the
// injector's defaults reach the sidecar's env.
func TestInjectPodConfinementAnnotations(t *testing.T) {
	d := testDefaults
	d.Network, d.RequireIsolation = NetworkDeny, true
	tests := []struct {
		name        string
		annotations map[string]string
		network     string
		require     string
	}{
		{name: "the injector's defaults", network: "deny", require: "true"},
		{name: "overridden", annotations: map[string]string{AnnotationNetwork: "allow", AnnotationRequireIsolation: "false"},
			network: "allow", require: "false"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := appPod("bot")
			pod.Annotations = tt.annotations
			out, injected, _, err := InjectPod(pod, d)
			if err != nil || !injected {
				t.Fatalf("InjectPod() = %v, %v", injected, err)
			}
			var sc *corev1.Container
			for i := range out.Spec.InitContainers {
				if out.Spec.InitContainers[i].Name == SidecarName {
					sc = &out.Spec.InitContainers[i]
				}
			}
			if sc == nil {
				t.Fatal("no sidecar")
			}
			env := map[string]string{}
			for _, e := range sc.Env {
				env[e.Name] = e.Value
			}
			if env["PYEXEC_NETWORK"] != tt.network || env["PYEXEC_REQUIRE_ISOLATION"] != tt.require {
				t.Errorf("PYEXEC_NETWORK=%q PYEXEC_REQUIRE_ISOLATION=%q, want %q, %q",
					env["PYEXEC_NETWORK"], env["PYEXEC_REQUIRE_ISOLATION"], tt.network, tt.require)
			}
		})
	}

	pod := appPod("bot")
	pod.Annotations = map[string]string{AnnotationNetwork: "on"}
	out, injected, _, err := InjectPod(pod, d)
	var ae *AnnotationError
	if !errors.As(err, &ae) || ae.Annotation != AnnotationNetwork || out != nil || injected {
		t.Errorf("InjectPod(network=on) = %v, %v, %v; want an *AnnotationError for %s", out, injected, err, AnnotationNetwork)
	}
}

// TestSidecarSessionEnv: the session variables are always on the sidecar, never on
// pyexec-init; 0 sessions is written as such, and a Config without them (built by hand) gets
// the sidecar's defaults.
func TestSidecarSessionEnv(t *testing.T) {
	tests := []struct {
		name        string
		maxSessions *int
		idle        time.Duration
		want        []corev1.EnvVar
	}{
		{name: "set", maxSessions: ptr.To(16), idle: 30 * time.Minute,
			want: []corev1.EnvVar{{Name: "PYEXEC_MAX_SESSIONS", Value: "16"}, {Name: "PYEXEC_SESSION_IDLE_TIMEOUT", Value: "30m0s"}}},
		{name: "sessions off", maxSessions: ptr.To(0), idle: time.Minute,
			want: []corev1.EnvVar{{Name: "PYEXEC_MAX_SESSIONS", Value: "0"}, {Name: "PYEXEC_SESSION_IDLE_TIMEOUT", Value: "1m0s"}}},
		{name: "built by hand", maxSessions: nil, idle: 0,
			want: []corev1.EnvVar{{Name: "PYEXEC_MAX_SESSIONS", Value: "8"}, {Name: "PYEXEC_SESSION_IDLE_TIMEOUT", Value: "10m0s"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := defaultConfig()
			cfg.MaxSessions, cfg.SessionIdleTimeout = tt.maxSessions, tt.idle
			var got []corev1.EnvVar
			for _, e := range sidecar(&cfg).Env {
				if e.Name == "PYEXEC_MAX_SESSIONS" || e.Name == "PYEXEC_SESSION_IDLE_TIMEOUT" {
					got = append(got, e)
				}
			}
			if !equality.Semantic.DeepEqual(got, tt.want) {
				t.Errorf("sidecar env %+v, want %+v", got, tt.want)
			}
			for _, e := range initContainer(&cfg).Env {
				if e.Name == "PYEXEC_MAX_SESSIONS" || e.Name == "PYEXEC_SESSION_IDLE_TIMEOUT" {
					t.Errorf("pyexec-init has %s", e.Name)
				}
			}
		})
	}
}

// TestInjectPodSessionAnnotations runs the whole injection: the session annotations over the
// injector's defaults, and those over the sidecar's, reach the sidecar's env.
func TestInjectPodSessionAnnotations(t *testing.T) {
	injector := testDefaults
	injector.MaxSessions, injector.SessionIdleTimeout = ptr.To(0), 20*time.Minute
	tests := []struct {
		name        string
		defaults    Defaults
		annotations map[string]string
		maxSessions string
		idle        string
	}{
		{name: "the sidecar's defaults", defaults: testDefaults, maxSessions: "8", idle: "10m0s"},
		{name: "the injector's defaults", defaults: injector, maxSessions: "0", idle: "20m0s"},
		{name: "overridden", defaults: injector,
			annotations: map[string]string{AnnotationMaxSessions: "4", AnnotationSessionIdleTimeout: "45s"},
			maxSessions: "4", idle: "45s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := appPod("bot")
			pod.Annotations = tt.annotations
			out, injected, _, err := InjectPod(pod, tt.defaults)
			if err != nil || !injected {
				t.Fatalf("InjectPod() = %v, %v", injected, err)
			}
			env := map[string]string{}
			for _, c := range out.Spec.InitContainers {
				if c.Name == SidecarName {
					for _, e := range c.Env {
						env[e.Name] = e.Value
					}
				}
			}
			if env["PYEXEC_MAX_SESSIONS"] != tt.maxSessions || env["PYEXEC_SESSION_IDLE_TIMEOUT"] != tt.idle {
				t.Errorf("PYEXEC_MAX_SESSIONS=%q PYEXEC_SESSION_IDLE_TIMEOUT=%q, want %q, %q",
					env["PYEXEC_MAX_SESSIONS"], env["PYEXEC_SESSION_IDLE_TIMEOUT"], tt.maxSessions, tt.idle)
			}
		})
	}

	for key, value := range map[string]string{AnnotationMaxSessions: "-1", AnnotationSessionIdleTimeout: "0"} {
		pod := appPod("bot")
		pod.Annotations = map[string]string{key: value}
		out, injected, _, err := InjectPod(pod, injector)
		var ae *AnnotationError
		if !errors.As(err, &ae) || ae.Annotation != key || out != nil || injected {
			t.Errorf("InjectPod(%s=%s) = %v, %v, %v; want an *AnnotationError for %s", key, value, out, injected, err, key)
		}
	}
}

// The runner's memory watchdog: the sidecar's default unless the annotation says otherwise,
// 0 included.
func TestRunnerMemoryHighWaterEnv(t *testing.T) {
	for value, want := range map[string]string{"": "", "0": "0", "75": "75"} {
		pod := appPod("bot")
		if value != "" {
			pod.Annotations = map[string]string{AnnotationRunnerMemoryHighWater: value}
		}
		out, injected, _, err := InjectPod(pod, testDefaults)
		if err != nil || !injected {
			t.Fatalf("InjectPod() = %v, %v", injected, err)
		}
		got, set := "", false
		for _, c := range append(out.Spec.InitContainers, out.Spec.Containers...) {
			for _, e := range c.Env {
				if e.Name == "PYEXEC_RUNNER_MEMORY_HIGH_WATER" {
					if c.Name != SidecarName {
						t.Errorf("PYEXEC_RUNNER_MEMORY_HIGH_WATER in %s: the server passes it to the runner", c.Name)
					}
					got, set = e.Value, true
				}
			}
		}
		if got != want || set != (want != "") {
			t.Errorf("%s=%q: PYEXEC_RUNNER_MEMORY_HIGH_WATER=%q (set %t), want %q", AnnotationRunnerMemoryHighWater, value, got, set, want)
		}
	}
}

func TestSecurityContextIsRestricted(t *testing.T) {
	sc := securityContext(1000, 2000)
	switch {
	case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot,
		sc.RunAsUser == nil || *sc.RunAsUser != 1000,
		sc.RunAsGroup == nil || *sc.RunAsGroup != 2000,
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation,
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem,
		sc.Capabilities == nil || !equality.Semantic.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}),
		sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault,
		sc.Privileged != nil:
		t.Errorf("securityContext() = %+v", sc)
	}
	if securityContext(1000, 2000) == sc {
		t.Error("securityContext() shares its value")
	}
}

func TestVolumesAndMounts(t *testing.T) {
	cfg := defaultConfig()
	for _, v := range volumes(&cfg) {
		if v.EmptyDir == nil {
			t.Errorf("volume %s is not an emptyDir", v.Name)
		}
		if want := v.Name == VolumeRun || v.Name == VolumeShm; (v.EmptyDir.Medium == corev1.StorageMediumMemory) != want {
			t.Errorf("volume %s medium %q", v.Name, v.EmptyDir.Medium)
		}
		if want := v.Name == VolumeShm; (v.EmptyDir.SizeLimit != nil) != want {
			t.Errorf("volume %s sizeLimit %v", v.Name, v.EmptyDir.SizeLimit)
		}
	}
	cfg.ShmSize = resource.MustParse("1Gi")
	shm := volumes(&cfg)[3]
	if want := resource.MustParse("1Gi"); shm.Name != VolumeShm || shm.EmptyDir.SizeLimit.Cmp(want) != 0 {
		t.Errorf("volume %s sizeLimit %v, want %s 1Gi", shm.Name, shm.EmptyDir.SizeLimit, VolumeShm)
	}
	cfg.ShmSize = resource.Quantity{}
	if shm := volumes(&cfg)[3]; shm.EmptyDir.SizeLimit != nil {
		t.Errorf("a Config without a shm size: sizeLimit %v, want none", shm.EmptyDir.SizeLimit)
	}

	for _, m := range serverMounts() {
		if (m.Name == VolumeNoToken) != m.ReadOnly {
			t.Errorf("server mount %s readOnly %v", m.Name, m.ReadOnly)
		}
		if m.Name == VolumeNoToken && m.MountPath != "/var/run/secrets/kubernetes.io/serviceaccount" {
			t.Errorf("no-token mount at %s", m.MountPath)
		}
		if m.SubPath != "" {
			t.Errorf("server mount %s has subPath %s: the server mounts whole volumes", m.Name, m.SubPath)
		}
	}
	if m := serverMounts()[4]; m.Name != VolumeWork || m.MountPath != "/var/lib/pyexec/runner" {
		t.Errorf("server mounts %s at %s, want pyexec-work's root at /var/lib/pyexec/runner", m.Name, m.MountPath)
	}
}

// TestRunnerMounts: the runner sees the packages read-only, a /dev/shm of its own, and of
// pyexec-work only the two directories the server owns (by subPath, never the volume's root,
// which the kubelet makes with mode 0777), at the paths where the server sees them; neither
// the app's socket nor /tmp of the server.
func TestRunnerMounts(t *testing.T) {
	want := []corev1.VolumeMount{
		{Name: "pyexec-no-token", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true},
		{Name: "pyexec-packages", MountPath: "/var/lib/pyexec/packages", ReadOnly: true},
		{Name: "pyexec-shm", MountPath: "/dev/shm"},
		{Name: "pyexec-work", MountPath: "/var/lib/pyexec/runner/run", SubPath: "run"},
		{Name: "pyexec-work", MountPath: "/var/lib/pyexec/runner/work", SubPath: "work"},
	}
	if got := runnerMounts(); !equality.Semantic.DeepEqual(got, want) {
		t.Errorf("runner mounts\n got %+v\nwant %+v", got, want)
	}
	// What the server sees through the root of pyexec-work is where the runner sees it.
	for _, m := range runnerMounts() {
		if m.Name == VolumeWork && path.Join(RunnerDir, m.SubPath) != m.MountPath {
			t.Errorf("runner mounts subPath %s at %s; the server sees it at %s", m.SubPath, m.MountPath, path.Join(RunnerDir, m.SubPath))
		}
	}
	if path.Dir(RunnerSocket) != RunnerSocketDir || path.Dir(WorkDir) != RunnerDir || path.Dir(RunnerSocketDir) != RunnerDir {
		t.Errorf("paths: socket %s, work %s, runner dir %s", RunnerSocket, WorkDir, RunnerDir)
	}
}

func TestRunner(t *testing.T) {
	cfg := defaultConfig()
	cfg.ServerUID, cfg.RunnerUID = 1000, 2000
	cfg.RunnerResources = resources("250m", "2", "256Mi", "2Gi")
	cfg.Preload, cfg.Timeout = []string{"numpy"}, time.Minute // the server's: not on the runner
	c := runner(&cfg)

	if c.Name != "pyexec-runner" || c.Image != cfg.Image || c.ImagePullPolicy != cfg.PullPolicy ||
		!equality.Semantic.DeepEqual(c.Args, []string{"runner"}) {
		t.Errorf("container %s image %s policy %s args %v", c.Name, c.Image, c.ImagePullPolicy, c.Args)
	}
	wantEnv := []corev1.EnvVar{
		{Name: "PYEXEC_SERVER_SOCKET", Value: "/var/lib/pyexec/runner/run/runner.sock"},
		{Name: "PYEXEC_SERVER_UID", Value: "1000"},
		{Name: "PYEXEC_SHM_DIR", Value: "/dev/shm"},
	}
	if !equality.Semantic.DeepEqual(c.Env, wantEnv) {
		t.Errorf("env\n got %+v\nwant %+v", c.Env, wantEnv)
	}
	if !equality.Semantic.DeepEqual(c.Resources, cfg.RunnerResources) {
		t.Errorf("resources %+v, want the runner's %+v", c.Resources, cfg.RunnerResources)
	}
	if u, g := c.SecurityContext.RunAsUser, c.SecurityContext.RunAsGroup; *u != 2000 || *g != 1000 {
		t.Errorf("runs as %d:%d, want the runner's uid in the server's group, 2000:1000", *u, *g)
	}
	if !equality.Semantic.DeepEqual(c.VolumeMounts, runnerMounts()) {
		t.Errorf("mounts %+v", c.VolumeMounts)
	}
	if c.StartupProbe != nil || c.ReadinessProbe != nil || c.LivenessProbe != nil || len(c.Ports) != 0 {
		t.Errorf("the runner has probes or ports: %+v", c)
	}
	if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("native runner restartPolicy %v, want Always", c.RestartPolicy)
	}
	cfg.NativeSidecar = false
	if c := runner(&cfg); c.RestartPolicy != nil {
		t.Errorf("regular runner restartPolicy %v, want none", c.RestartPolicy)
	}
}

// TestInjectPodIdentity runs the whole injection: the two uids reach the containers, the
// server's uid is every pyexec container's group, and each side is told the other's uid.
func TestInjectPodIdentity(t *testing.T) {
	pod := appPod("bot")
	pod.Annotations = map[string]string{AnnotationServerUID: "1234", AnnotationRunnerUID: "5678"}
	out, injected, _, err := InjectPod(pod, testDefaults)
	if err != nil || !injected {
		t.Fatalf("InjectPod() = %v, %v", injected, err)
	}
	want := map[string]struct {
		uid, gid int64
		env      map[string]string
	}{
		InitContainerName: {1234, 1234, map[string]string{"PYEXEC_RUNNER_UID": "5678"}},
		RunnerName:        {5678, 1234, map[string]string{"PYEXEC_SERVER_UID": "1234"}},
		SidecarName:       {1234, 1234, map[string]string{"PYEXEC_RUNNER_UID": "5678"}},
	}
	seen := 0
	for _, c := range out.Spec.InitContainers {
		w, ok := want[c.Name]
		if !ok {
			continue
		}
		seen++
		if *c.SecurityContext.RunAsUser != w.uid || *c.SecurityContext.RunAsGroup != w.gid {
			t.Errorf("%s runs as %d:%d, want %d:%d", c.Name, *c.SecurityContext.RunAsUser, *c.SecurityContext.RunAsGroup, w.uid, w.gid)
		}
		for name, value := range w.env {
			found := false
			for _, e := range c.Env {
				found = found || e.Name == name && e.Value == value
			}
			if !found {
				t.Errorf("%s lacks %s=%s: %+v", c.Name, name, value, c.Env)
			}
		}
	}
	if seen != 3 {
		t.Errorf("found %d pyexec containers, want 3", seen)
	}
}

// TestInjectPodRandError: a reader of randomness that fails fails the injection with its
// error, not an *AnnotationError (the webhook answers 500, not 403).
func TestInjectPodRandError(t *testing.T) {
	d := testDefaults
	d.Rand = iotest.ErrReader(errors.New("no entropy"))
	out, injected, _, err := InjectPod(appPod("bot"), d)
	var ae *AnnotationError
	if err == nil || errors.As(err, &ae) || !strings.Contains(err.Error(), "no entropy") || out != nil || injected {
		t.Errorf("InjectPod() = %v, %v, %v; want the reader's error", out, injected, err)
	}
	// Both uids pinned: nothing is drawn.
	pod := appPod("bot")
	pod.Annotations = map[string]string{AnnotationServerUID: "1000", AnnotationRunnerUID: "2000"}
	if _, injected, _, err := InjectPod(pod, d); err != nil || !injected {
		t.Errorf("InjectPod(pinned uids) = %v, %v; want injected without a draw", injected, err)
	}
}

func TestConnectApp(t *testing.T) {
	c := corev1.Container{
		Name: "bot",
		Env: []corev1.EnvVar{
			{Name: EnvSocket, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "A", Value: "a"},
			{Name: EnvSocket, Value: "/x"},
		},
	}
	connectApp(&c, "/s")
	want := []corev1.EnvVar{{Name: EnvSocket, Value: "/s/pyexec.sock"}, {Name: "A", Value: "a"}}
	if !equality.Semantic.DeepEqual(c.Env, want) {
		t.Errorf("env %+v, want %+v", c.Env, want)
	}
}

// The sidecar's --max-concurrent follows the runner's CPU limit, not the server container's
// (which is all serve itself can see); an annotation says otherwise.
func TestMaxConcurrentFromTheRunnersCPULimit(t *testing.T) {
	for _, tc := range []struct {
		limit      string
		annotation int
		want       string // "" : not set, the sidecar's default
	}{
		{"", 0, ""},
		{"500m", 0, "1"},
		{"1500m", 0, "2"},
		{"4", 0, "4"},
		{"4", 8, "8"},
	} {
		cfg := defaultConfig()
		cfg.RunnerResources = resources("100m", tc.limit, "128Mi", "1Gi")
		cfg.MaxConcurrent = tc.annotation
		got := ""
		for _, e := range sidecar(&cfg).Env {
			if e.Name == "PYEXEC_MAX_CONCURRENT" {
				got = e.Value
			}
		}
		if got != tc.want {
			t.Errorf("runner CPU limit %q, annotation %d: PYEXEC_MAX_CONCURRENT %q, want %q", tc.limit, tc.annotation, got, tc.want)
		}
	}
}
