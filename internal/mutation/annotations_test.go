package mutation

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/pyexec/pyexec/internal/testutil"
)

// configPod is the pod of the ParseConfig table: two app containers, proxy first, and bot
// mounting /data.
func configPod(annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "bot", Annotations: annotations},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "migrate"}},
			Containers: []corev1.Container{
				{Name: "proxy"},
				{Name: "bot", VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}},
			},
		},
	}
}

// The server's resources by default: requests cpu 50m, memory 64Mi, limits memory 512Mi.
func defaultResources() corev1.ResourceRequirements {
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("50m"),
			corev1.ResourceMemory: resource.MustParse("64Mi"),
		},
		Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")},
	}
}

// The runner's resources by default: requests cpu 100m, memory 128Mi, limits memory 1Gi.
func defaultRunnerResources() corev1.ResourceRequirements {
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("100m"),
			corev1.ResourceMemory: resource.MustParse("128Mi"),
		},
		Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")},
	}
}

// The uids that testutil.SameBytes draws: from DefaultUIDRange, and from UserNamespaceUIDRange
// (a pod with hostUsers: false).
const (
	drawnServerUID, drawnRunnerUID             = 60386333, 582750489
	drawnUsernsServerUID, drawnUsernsRunnerUID = 60967, 62475
)

// defaultConfig is what ParseConfig makes of configPod without annotations and testDefaults.
func defaultConfig() Config {
	return Config{
		Image:           testDefaults.Image,
		PullPolicy:      testDefaults.PullPolicy,
		ServerUID:       drawnServerUID,
		RunnerUID:       drawnRunnerUID,
		Resources:       defaultResources(),
		RunnerResources: defaultRunnerResources(),
		ShmSize:         resource.MustParse("64Mi"),
		Containers:      []string{"proxy", "bot"},
		SocketDir:       SocketDir,
		NativeSidecar:   true,
		Network:         NetworkDeny,

		MaxSessions:        ptr.To(8),
		SessionIdleTimeout: 10 * time.Minute,
	}
}

// withDefaults is testDefaults changed by edit.
func withDefaults(edit func(d *Defaults)) *Defaults {
	d := testDefaults
	edit(&d)
	return &d
}

func TestParseConfigDefaults(t *testing.T) {
	cfg, err := ParseConfig(configPod(nil), testDefaults)
	if err != nil {
		t.Fatal(err)
	}
	if want := defaultConfig(); !equality.Semantic.DeepEqual(*cfg, want) {
		t.Errorf("ParseConfig() = %+v, want %+v", *cfg, want)
	}
}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name        string
		annotations map[string]string
		defaults    *Defaults            // nil: testDefaults; a nil Rand: testutil.SameBytes
		restart     corev1.RestartPolicy // of the pod
		hostUsers   *bool                // of the pod
		want        func(c *Config)      // changes to defaultConfig(); nil when an error is expected
		wantErr     string
	}{
		// image
		{name: "image", annotations: map[string]string{AnnotationImage: " registry.example/pyexec:2 "},
			want: func(c *Config) { c.Image = "registry.example/pyexec:2" }},
		{name: "image with a blank", annotations: map[string]string{AnnotationImage: "pyexec: 2"},
			wantErr: `annotation pyexec.dev/image="pyexec: 2": want an image reference without blanks, such as ghcr.io/pyexec/pyexec:1.0`},
		{name: "no image at all", defaults: &Defaults{},
			wantErr: `annotation pyexec.dev/image="": want an image reference: the injector has no default image`},
		{name: "blank image means the default", annotations: map[string]string{AnnotationImage: "  "},
			want: func(c *Config) {}},

		// image-pull-policy
		{name: "pull policy", annotations: map[string]string{AnnotationImagePullPolicy: "Never"},
			want: func(c *Config) { c.PullPolicy = corev1.PullNever }},
		{name: "pull policy case", annotations: map[string]string{AnnotationImagePullPolicy: "always"},
			wantErr: `annotation pyexec.dev/image-pull-policy="always": want Always, IfNotPresent or Never`},
		{name: "pull policy left to the API server", defaults: &Defaults{Image: "i", NativeSidecar: true},
			want: func(c *Config) { c.Image, c.PullPolicy = "i", "" }},

		// require
		{name: "require", annotations: map[string]string{AnnotationRequire: "# needed\npandas>=2\n\n  numpy==1.26.* \n"},
			want: func(c *Config) { c.Require = []string{"pandas>=2", "numpy==1.26.*"} }},
		{name: "require option", annotations: map[string]string{AnnotationRequire: "pandas\n-r more.txt"},
			wantErr: `annotation pyexec.dev/require="pandas\n-r more.txt": want one requirement per line, such as pandas>=2; "-r more.txt" is a pip option, not a requirement`},
		{name: "require NUL", annotations: map[string]string{AnnotationRequire: "pan\x00das"},
			wantErr: `annotation pyexec.dev/require="pan\x00das": want one requirement per line, such as pandas>=2; a line holds a NUL byte`},

		// preload
		{name: "preload", annotations: map[string]string{AnnotationPreload: "numpy, os.path,,_x"},
			want: func(c *Config) { c.Preload = []string{"numpy", "os.path", "_x"} }},
		{name: "preload not a module", annotations: map[string]string{AnnotationPreload: "numpy,9lives"},
			wantErr: `annotation pyexec.dev/preload="numpy,9lives": want comma-separated module names such as numpy,os.path; "9lives" is not one`},
		{name: "preload path", annotations: map[string]string{AnnotationPreload: "numpy/linalg"},
			wantErr: `annotation pyexec.dev/preload="numpy/linalg": want comma-separated module names such as numpy,os.path; "numpy/linalg" is not one`},

		// install
		{name: "install", annotations: map[string]string{AnnotationInstall: "requests>=2\nmatplotlib"},
			want: func(c *Config) { c.Install = []string{"requests>=2", "matplotlib"} }},
		{name: "install option", annotations: map[string]string{AnnotationInstall: "--index-url=http://x"},
			wantErr: `annotation pyexec.dev/install="--index-url=http://x": want one requirement per line, such as pandas>=2; "--index-url=http://x" is a pip option, not a requirement`},

		// allow-packages
		{name: "allow packages", annotations: map[string]string{AnnotationAllowPackages: "numpy, scikit-*,*"},
			want: func(c *Config) { c.AllowPackages = []string{"numpy", "scikit-*", "*"} }},
		{name: "allow packages bad pattern", annotations: map[string]string{AnnotationAllowPackages: "numpy,[a-"},
			wantErr: `annotation pyexec.dev/allow-packages="numpy,[a-": want comma-separated package patterns such as numpy,scikit-*; "[a-" is not one`},
		{name: "allow packages blank inside", annotations: map[string]string{AnnotationAllowPackages: "num py"},
			wantErr: `annotation pyexec.dev/allow-packages="num py": want comma-separated package patterns such as numpy,scikit-*; "num py" is not one`},

		// timeout and max-timeout
		{name: "timeout", annotations: map[string]string{AnnotationTimeout: "1m30s"},
			want: func(c *Config) { c.Timeout = 90 * time.Second }},
		{name: "timeout words", annotations: map[string]string{AnnotationTimeout: "ten"},
			wantErr: `annotation pyexec.dev/timeout="ten": want a Go duration such as 30s`},
		{name: "timeout without unit", annotations: map[string]string{AnnotationTimeout: "30"},
			wantErr: `annotation pyexec.dev/timeout="30": want a Go duration such as 30s`},
		{name: "timeout zero", annotations: map[string]string{AnnotationTimeout: "0s"},
			wantErr: `annotation pyexec.dev/timeout="0s": want a Go duration above zero, such as 30s`},
		{name: "timeout over the default max", annotations: map[string]string{AnnotationTimeout: "6m"},
			wantErr: `annotation pyexec.dev/timeout="6m": want a Go duration no longer than the max timeout 5m0s (pyexec.dev/max-timeout)`},
		{name: "timeout over max", annotations: map[string]string{AnnotationTimeout: "2m", AnnotationMaxTimeout: "1m"},
			wantErr: `annotation pyexec.dev/timeout="2m": want a Go duration no longer than the max timeout 1m0s (pyexec.dev/max-timeout)`},
		{name: "max timeout", annotations: map[string]string{AnnotationMaxTimeout: "10m"},
			want: func(c *Config) { c.MaxTimeout = 10 * time.Minute }},
		{name: "timeout equal to max", annotations: map[string]string{AnnotationTimeout: "6m", AnnotationMaxTimeout: "6m"},
			want: func(c *Config) { c.Timeout, c.MaxTimeout = 6*time.Minute, 6*time.Minute }},
		{name: "max timeout negative", annotations: map[string]string{AnnotationMaxTimeout: "-1m"},
			wantErr: `annotation pyexec.dev/max-timeout="-1m": want a Go duration above zero, such as 30s`},
		{name: "max timeout under the default timeout", annotations: map[string]string{AnnotationMaxTimeout: "10s"},
			wantErr: `annotation pyexec.dev/max-timeout="10s": want a Go duration no shorter than the timeout 30s (pyexec.dev/timeout)`},

		// memory-limit-mb
		{name: "memory limit mb", annotations: map[string]string{AnnotationMemoryLimitMB: "512"},
			want: func(c *Config) { c.MemoryLimitMB = 512 }},
		{name: "memory limit mb zero", annotations: map[string]string{AnnotationMemoryLimitMB: "0"},
			wantErr: `annotation pyexec.dev/memory-limit-mb="0": want a whole number of MiB from 32 to 4096, such as 1024`},
		{name: "memory limit mb below what python starts under", annotations: map[string]string{AnnotationMemoryLimitMB: "16"},
			wantErr: `annotation pyexec.dev/memory-limit-mb="16": want a whole number of MiB from 32 to 4096, such as 1024`},
		{name: "memory limit mb unit", annotations: map[string]string{AnnotationMemoryLimitMB: "512Mi"},
			wantErr: `annotation pyexec.dev/memory-limit-mb="512Mi": want a whole number of MiB from 32 to 4096, such as 1024`},
		{name: "memory limit mb over the sidecar's max", annotations: map[string]string{AnnotationMemoryLimitMB: "8192"},
			wantErr: `annotation pyexec.dev/memory-limit-mb="8192": want a whole number of MiB from 32 to 4096, such as 1024`},

		// allow-uids
		{name: "allow uids", annotations: map[string]string{AnnotationAllowUIDs: " 65532, 1000,65532 ,0"},
			want: func(c *Config) { c.AllowUIDs = []uint32{65532, 1000, 0} }},
		{name: "allow uids negative", annotations: map[string]string{AnnotationAllowUIDs: "1000,-1"},
			wantErr: `annotation pyexec.dev/allow-uids="1000,-1": want comma-separated uids (whole numbers from 0 to 2147483647), such as 1000,65532`},
		{name: "allow uids too large", annotations: map[string]string{AnnotationAllowUIDs: "4294967295"},
			wantErr: `annotation pyexec.dev/allow-uids="4294967295": want comma-separated uids (whole numbers from 0 to 2147483647), such as 1000,65532`},
		{name: "allow uids empty item", annotations: map[string]string{AnnotationAllowUIDs: "1000,,2000"},
			wantErr: `annotation pyexec.dev/allow-uids="1000,,2000": want comma-separated uids (whole numbers from 0 to 2147483647), such as 1000,65532`},

		// network
		{name: "network allow", annotations: map[string]string{AnnotationNetwork: " allow "},
			want: func(c *Config) { c.Network = NetworkAllow }},
		{name: "network deny over the default", annotations: map[string]string{AnnotationNetwork: "deny"},
			defaults: &Defaults{Image: testDefaults.Image, PullPolicy: testDefaults.PullPolicy, NativeSidecar: true, Network: NetworkAllow},
			want:     func(c *Config) {}},
		{name: "network default allow", annotations: map[string]string{AnnotationNetwork: " "},
			defaults: &Defaults{Image: testDefaults.Image, PullPolicy: testDefaults.PullPolicy, NativeSidecar: true, Network: NetworkAllow},
			want:     func(c *Config) { c.Network = NetworkAllow }},
		{name: "network case", annotations: map[string]string{AnnotationNetwork: "Allow"},
			wantErr: `annotation pyexec.dev/network="Allow": want deny or allow`},
		{name: "network boolean", annotations: map[string]string{AnnotationNetwork: "false"},
			wantErr: `annotation pyexec.dev/network="false": want deny or allow`},
		{name: "network default neither", defaults: &Defaults{Image: testDefaults.Image, NativeSidecar: true, Network: "none"},
			wantErr: `annotation pyexec.dev/network="none": want deny or allow: the injector's default is neither`},

		// require-isolation
		{name: "require isolation", annotations: map[string]string{AnnotationRequireIsolation: "true"},
			want: func(c *Config) { c.RequireIsolation = true }},
		{name: "require isolation default", defaults: &Defaults{Image: testDefaults.Image, PullPolicy: testDefaults.PullPolicy, NativeSidecar: true, RequireIsolation: true},
			want: func(c *Config) { c.RequireIsolation = true }},
		{name: "require isolation false over the default", annotations: map[string]string{AnnotationRequireIsolation: "false"},
			defaults: &Defaults{Image: testDefaults.Image, PullPolicy: testDefaults.PullPolicy, NativeSidecar: true, RequireIsolation: true},
			want:     func(c *Config) {}},
		{name: "require isolation yes", annotations: map[string]string{AnnotationRequireIsolation: "yes"},
			wantErr: `annotation pyexec.dev/require-isolation="yes": want true or false`},
		{name: "require isolation 1", annotations: map[string]string{AnnotationRequireIsolation: "1"},
			wantErr: `annotation pyexec.dev/require-isolation="1": want true or false`},
		{name: "require isolation True", annotations: map[string]string{AnnotationRequireIsolation: "True"},
			wantErr: `annotation pyexec.dev/require-isolation="True": want true or false`},

		// max-sessions
		{name: "max sessions", annotations: map[string]string{AnnotationMaxSessions: " 32 "},
			want: func(c *Config) { c.MaxSessions = ptr.To(32) }},
		{name: "max sessions 0 switches sessions off", annotations: map[string]string{AnnotationMaxSessions: "0"},
			want: func(c *Config) { c.MaxSessions = ptr.To(0) }},
		{name: "max sessions default", defaults: &Defaults{Image: testDefaults.Image, PullPolicy: testDefaults.PullPolicy, NativeSidecar: true, MaxSessions: ptr.To(2)},
			want: func(c *Config) { c.MaxSessions = ptr.To(2) }},
		{name: "max sessions default 0", defaults: &Defaults{Image: testDefaults.Image, PullPolicy: testDefaults.PullPolicy, NativeSidecar: true, MaxSessions: ptr.To(0)},
			want: func(c *Config) { c.MaxSessions = ptr.To(0) }},
		{name: "max sessions over the default", annotations: map[string]string{AnnotationMaxSessions: "5"},
			defaults: &Defaults{Image: testDefaults.Image, PullPolicy: testDefaults.PullPolicy, NativeSidecar: true, MaxSessions: ptr.To(0)},
			want:     func(c *Config) { c.MaxSessions = ptr.To(5) }},
		{name: "max sessions blank means the default", annotations: map[string]string{AnnotationMaxSessions: " "},
			want: func(c *Config) {}},
		{name: "max sessions negative", annotations: map[string]string{AnnotationMaxSessions: "-1"},
			wantErr: `annotation pyexec.dev/max-sessions="-1": want a whole number of sessions from 0 (0 switches sessions off), such as 8`},
		{name: "max sessions not a number", annotations: map[string]string{AnnotationMaxSessions: "eight"},
			wantErr: `annotation pyexec.dev/max-sessions="eight": want a whole number of sessions from 0 (0 switches sessions off), such as 8`},
		{name: "max sessions fraction", annotations: map[string]string{AnnotationMaxSessions: "2.5"},
			wantErr: `annotation pyexec.dev/max-sessions="2.5": want a whole number of sessions from 0 (0 switches sessions off), such as 8`},
		{name: "max sessions too large", annotations: map[string]string{AnnotationMaxSessions: "99999999999999999999"},
			wantErr: `annotation pyexec.dev/max-sessions="99999999999999999999": want a whole number of sessions from 0 (0 switches sessions off), such as 8`},
		{name: "max sessions default negative", defaults: &Defaults{Image: testDefaults.Image, NativeSidecar: true, MaxSessions: ptr.To(-3)},
			wantErr: `annotation pyexec.dev/max-sessions="-3": want a whole number of sessions from 0 (0 switches sessions off), such as 8: the injector's default is negative`},

		// max-checkpoints-per-session
		{name: "max checkpoints", annotations: map[string]string{AnnotationMaxCheckpointsPerSession: "8"},
			want: func(c *Config) { c.MaxCheckpointsPerSession = ptr.To(8) }},
		{name: "max checkpoints 0 turns them off", annotations: map[string]string{AnnotationMaxCheckpointsPerSession: "0"},
			want: func(c *Config) { c.MaxCheckpointsPerSession = ptr.To(0) }},
		{name: "max checkpoints default", defaults: &Defaults{Image: testDefaults.Image, PullPolicy: testDefaults.PullPolicy, NativeSidecar: true, MaxCheckpointsPerSession: ptr.To(2)},
			want: func(c *Config) { c.MaxCheckpointsPerSession = ptr.To(2) }},
		{name: "max checkpoints over the default", annotations: map[string]string{AnnotationMaxCheckpointsPerSession: "6"},
			defaults: &Defaults{Image: testDefaults.Image, PullPolicy: testDefaults.PullPolicy, NativeSidecar: true, MaxCheckpointsPerSession: ptr.To(0)},
			want:     func(c *Config) { c.MaxCheckpointsPerSession = ptr.To(6) }},
		{name: "max checkpoints default out of range", defaults: &Defaults{Image: testDefaults.Image, NativeSidecar: true, MaxCheckpointsPerSession: ptr.To(65)},
			wantErr: `annotation pyexec.dev/max-checkpoints-per-session="65": want a whole number from 0 to 64: the injector's default is out of range`},
		{name: "max checkpoints over 64", annotations: map[string]string{AnnotationMaxCheckpointsPerSession: "65"},
			wantErr: `annotation pyexec.dev/max-checkpoints-per-session="65": want a whole number of checkpoints from 0 (checkpoints off) to 64, such as 4`},
		{name: "max checkpoints negative", annotations: map[string]string{AnnotationMaxCheckpointsPerSession: "-1"},
			wantErr: `annotation pyexec.dev/max-checkpoints-per-session="-1": want a whole number of checkpoints from 0 (checkpoints off) to 64, such as 4`},

		// runner-memory-high-water
		{name: "runner memory high water", annotations: map[string]string{AnnotationRunnerMemoryHighWater: "80"},
			want: func(c *Config) { c.RunnerMemoryHighWater = ptr.To(80) }},
		{name: "runner memory high water 0 turns the watchdog off", annotations: map[string]string{AnnotationRunnerMemoryHighWater: "0"},
			want: func(c *Config) { c.RunnerMemoryHighWater = ptr.To(0) }},
		{name: "runner memory high water 100", annotations: map[string]string{AnnotationRunnerMemoryHighWater: "100"},
			wantErr: `annotation pyexec.dev/runner-memory-high-water="100": want a whole percentage from 0 (no watchdog) to 99, such as 90`},
		{name: "runner memory high water with a percent sign", annotations: map[string]string{AnnotationRunnerMemoryHighWater: "90%"},
			wantErr: `annotation pyexec.dev/runner-memory-high-water="90%": want a whole percentage from 0 (no watchdog) to 99, such as 90`},

		// session-idle-timeout
		{name: "session idle timeout", annotations: map[string]string{AnnotationSessionIdleTimeout: "90s"},
			want: func(c *Config) { c.SessionIdleTimeout = 90 * time.Second }},
		{name: "session idle timeout at the max", annotations: map[string]string{AnnotationSessionIdleTimeout: "60m"},
			want: func(c *Config) { c.SessionIdleTimeout = time.Hour }},
		{name: "session idle timeout default", defaults: &Defaults{Image: testDefaults.Image, PullPolicy: testDefaults.PullPolicy, NativeSidecar: true, SessionIdleTimeout: 30 * time.Minute},
			want: func(c *Config) { c.SessionIdleTimeout = 30 * time.Minute }},
		{name: "session idle timeout over the default", annotations: map[string]string{AnnotationSessionIdleTimeout: "2m"},
			defaults: &Defaults{Image: testDefaults.Image, PullPolicy: testDefaults.PullPolicy, NativeSidecar: true, SessionIdleTimeout: 30 * time.Minute},
			want:     func(c *Config) { c.SessionIdleTimeout = 2 * time.Minute }},
		{name: "session idle timeout not a duration", annotations: map[string]string{AnnotationSessionIdleTimeout: "10"},
			wantErr: `annotation pyexec.dev/session-idle-timeout="10": want a Go duration such as 30s`},
		{name: "session idle timeout words", annotations: map[string]string{AnnotationSessionIdleTimeout: "ten minutes"},
			wantErr: `annotation pyexec.dev/session-idle-timeout="ten minutes": want a Go duration such as 30s`},
		{name: "session idle timeout zero", annotations: map[string]string{AnnotationSessionIdleTimeout: "0s"},
			wantErr: `annotation pyexec.dev/session-idle-timeout="0s": want a Go duration above zero, such as 30s`},
		{name: "session idle timeout negative", annotations: map[string]string{AnnotationSessionIdleTimeout: "-5m"},
			wantErr: `annotation pyexec.dev/session-idle-timeout="-5m": want a Go duration above zero, such as 30s`},
		{name: "session idle timeout over the max", annotations: map[string]string{AnnotationSessionIdleTimeout: "61m"},
			wantErr: `annotation pyexec.dev/session-idle-timeout="61m": want a Go duration no longer than the sidecar's max session idle timeout 1h0m0s, such as 10m`},
		{name: "session idle timeout default negative", defaults: &Defaults{Image: testDefaults.Image, NativeSidecar: true, SessionIdleTimeout: -time.Second},
			wantErr: `annotation pyexec.dev/session-idle-timeout="-1s": want a Go duration above zero, such as 10m: the injector's default is not`},
		{name: "session idle timeout default over the max", defaults: &Defaults{Image: testDefaults.Image, NativeSidecar: true, SessionIdleTimeout: 2 * time.Hour},
			wantErr: `annotation pyexec.dev/session-idle-timeout="2h0m0s": want a Go duration no longer than the sidecar's max session idle timeout 1h0m0s, such as 10m: the injector's default is longer`},
		{name: "session idle timeout annotation within the max over a default beyond it", annotations: map[string]string{AnnotationSessionIdleTimeout: "5m"},
			defaults: &Defaults{Image: testDefaults.Image, PullPolicy: testDefaults.PullPolicy, NativeSidecar: true, SessionIdleTimeout: 2 * time.Hour},
			want:     func(c *Config) { c.SessionIdleTimeout = 5 * time.Minute }},

		// max-concurrent
		{name: "max concurrent", annotations: map[string]string{AnnotationMaxConcurrent: "8"},
			want: func(c *Config) { c.MaxConcurrent = 8 }},
		{name: "max concurrent negative", annotations: map[string]string{AnnotationMaxConcurrent: "-2"},
			wantErr: `annotation pyexec.dev/max-concurrent="-2": want a whole number above zero, such as 4`},
		{name: "max concurrent fraction", annotations: map[string]string{AnnotationMaxConcurrent: "1.5"},
			wantErr: `annotation pyexec.dev/max-concurrent="1.5": want a whole number above zero, such as 4`},

		// cpu-request and cpu-limit
		{name: "cpu request", annotations: map[string]string{AnnotationCPURequest: "500m"},
			want: func(c *Config) { c.Resources.Requests[corev1.ResourceCPU] = resource.MustParse("500m") }},
		{name: "cpu request not a quantity", annotations: map[string]string{AnnotationCPURequest: "half"},
			wantErr: `annotation pyexec.dev/cpu-request="half": want a CPU quantity above zero, such as 100m`},
		{name: "cpu request zero", annotations: map[string]string{AnnotationCPURequest: "0"},
			wantErr: `annotation pyexec.dev/cpu-request="0": want a CPU quantity above zero, such as 100m`},
		{name: "cpu limit", annotations: map[string]string{AnnotationCPULimit: "2"},
			want: func(c *Config) { c.Resources.Limits[corev1.ResourceCPU] = resource.MustParse("2") }},
		{name: "cpu limit negative", annotations: map[string]string{AnnotationCPULimit: "-1"},
			wantErr: `annotation pyexec.dev/cpu-limit="-1": want a CPU quantity above zero, such as 100m`},
		{name: "cpu request over limit", annotations: map[string]string{AnnotationCPURequest: "2", AnnotationCPULimit: "1"},
			wantErr: `annotation pyexec.dev/cpu-request="2": want a CPU quantity no larger than the CPU limit 1 (pyexec.dev/cpu-limit)`},
		{name: "cpu limit under the default request", annotations: map[string]string{AnnotationCPULimit: "20m"},
			wantErr: `annotation pyexec.dev/cpu-limit="20m": want a CPU quantity no smaller than the CPU request 50m (pyexec.dev/cpu-request)`},

		// memory-request and memory-limit
		{name: "memory request", annotations: map[string]string{AnnotationMemoryRequest: "256Mi"},
			want: func(c *Config) { c.Resources.Requests[corev1.ResourceMemory] = resource.MustParse("256Mi") }},
		{name: "memory request not a quantity", annotations: map[string]string{AnnotationMemoryRequest: "lots"},
			wantErr: `annotation pyexec.dev/memory-request="lots": want a memory quantity above zero, such as 128Mi`},
		{name: "memory request over the default limit", annotations: map[string]string{AnnotationMemoryRequest: "1Gi"},
			wantErr: `annotation pyexec.dev/memory-request="1Gi": want a memory quantity no larger than the memory limit 512Mi (pyexec.dev/memory-limit)`},
		{name: "memory limit", annotations: map[string]string{AnnotationMemoryLimit: "4Gi", AnnotationMemoryRequest: "2Gi"},
			want: func(c *Config) {
				c.Resources.Requests[corev1.ResourceMemory] = resource.MustParse("2Gi")
				c.Resources.Limits[corev1.ResourceMemory] = resource.MustParse("4Gi")
			}},
		{name: "memory limit not a quantity", annotations: map[string]string{AnnotationMemoryLimit: "1 GB"},
			wantErr: `annotation pyexec.dev/memory-limit="1 GB": want a memory quantity above zero, such as 128Mi`},
		{name: "memory limit under the default request", annotations: map[string]string{AnnotationMemoryLimit: "32Mi"},
			wantErr: `annotation pyexec.dev/memory-limit="32Mi": want a memory quantity no smaller than the memory request 64Mi (pyexec.dev/memory-request)`},
		{name: "memory request over limit", annotations: map[string]string{AnnotationMemoryRequest: "512Mi", AnnotationMemoryLimit: "256Mi"},
			wantErr: `annotation pyexec.dev/memory-request="512Mi": want a memory quantity no larger than the memory limit 256Mi (pyexec.dev/memory-limit)`},
		{name: "resources default of the injector", defaults: withDefaults(func(d *Defaults) {
			d.SidecarResources = &corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("200m")},
				Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")},
			}
		}), want: func(c *Config) {
			c.Resources = corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("200m")},
				Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")},
			}
		}},
		{name: "resources of the injector without any", defaults: withDefaults(func(d *Defaults) { d.SidecarResources = &corev1.ResourceRequirements{} }),
			want: func(c *Config) { c.Resources = corev1.ResourceRequirements{Requests: corev1.ResourceList{}} }},
		{name: "memory request over the injector's default limit", annotations: map[string]string{AnnotationMemoryRequest: "300Mi"},
			defaults: withDefaults(func(d *Defaults) { d.SidecarResources = ptr.To(resources("", "", "", "256Mi")) }),
			wantErr:  `annotation pyexec.dev/memory-request="300Mi": want a memory quantity no larger than the memory limit 256Mi (pyexec.dev/memory-limit)`},
		{name: "defaults of the injector that do not fit", defaults: withDefaults(func(d *Defaults) { d.SidecarResources = ptr.To(resources("2", "1", "", "")) }),
			wantErr: `annotation pyexec.dev/cpu-request="2": want a CPU quantity no larger than the CPU limit 1 (pyexec.dev/cpu-limit): the injector's defaults are not`},

		// runner-cpu-request, runner-cpu-limit, runner-memory-request, runner-memory-limit
		{name: "runner resources", annotations: map[string]string{AnnotationRunnerCPURequest: "250m", AnnotationRunnerCPULimit: "2",
			AnnotationRunnerMemoryRequest: "512Mi", AnnotationRunnerMemoryLimit: "4Gi"},
			want: func(c *Config) { c.RunnerResources = resources("250m", "2", "512Mi", "4Gi") }},
		{name: "runner resources leave the server's alone", annotations: map[string]string{AnnotationRunnerMemoryLimit: "8Gi"},
			want: func(c *Config) { c.RunnerResources.Limits[corev1.ResourceMemory] = resource.MustParse("8Gi") }},
		{name: "server resources leave the runner's alone", annotations: map[string]string{AnnotationCPULimit: "500m"},
			want: func(c *Config) { c.Resources.Limits[corev1.ResourceCPU] = resource.MustParse("500m") }},
		{name: "runner resources default of the injector", defaults: withDefaults(func(d *Defaults) { d.RunnerResources = ptr.To(resources("1", "", "2Gi", "2Gi")) }),
			want: func(c *Config) { c.RunnerResources = resources("1", "", "2Gi", "2Gi") }},
		{name: "runner cpu request not a quantity", annotations: map[string]string{AnnotationRunnerCPURequest: "a lot"},
			wantErr: `annotation pyexec.dev/runner-cpu-request="a lot": want a CPU quantity above zero, such as 100m`},
		{name: "runner cpu limit zero", annotations: map[string]string{AnnotationRunnerCPULimit: "0"},
			wantErr: `annotation pyexec.dev/runner-cpu-limit="0": want a CPU quantity above zero, such as 100m`},
		{name: "runner cpu limit under the default request", annotations: map[string]string{AnnotationRunnerCPULimit: "50m"},
			wantErr: `annotation pyexec.dev/runner-cpu-limit="50m": want a CPU quantity no smaller than the CPU request 100m (pyexec.dev/runner-cpu-request)`},
		{name: "runner memory request negative", annotations: map[string]string{AnnotationRunnerMemoryRequest: "-1Gi"},
			wantErr: `annotation pyexec.dev/runner-memory-request="-1Gi": want a memory quantity above zero, such as 128Mi`},
		{name: "runner memory request over the default limit", annotations: map[string]string{AnnotationRunnerMemoryRequest: "2Gi"},
			wantErr: `annotation pyexec.dev/runner-memory-request="2Gi": want a memory quantity no larger than the memory limit 1Gi (pyexec.dev/runner-memory-limit)`},
		{name: "runner memory limit not a quantity", annotations: map[string]string{AnnotationRunnerMemoryLimit: "1 GB"},
			wantErr: `annotation pyexec.dev/runner-memory-limit="1 GB": want a memory quantity above zero, such as 128Mi`},
		{name: "runner memory request over limit", annotations: map[string]string{AnnotationRunnerMemoryRequest: "3Gi", AnnotationRunnerMemoryLimit: "2Gi"},
			wantErr: `annotation pyexec.dev/runner-memory-request="3Gi": want a memory quantity no larger than the memory limit 2Gi (pyexec.dev/runner-memory-limit)`},

		// shm-size
		{name: "shm size", annotations: map[string]string{AnnotationShmSize: "1Gi"},
			want: func(c *Config) { c.ShmSize = resource.MustParse("1Gi") }},
		{name: "shm size default of the injector", defaults: withDefaults(func(d *Defaults) { d.ShmSize = resource.MustParse("256Mi") }),
			want: func(c *Config) { c.ShmSize = resource.MustParse("256Mi") }},
		{name: "shm size over the injector's default", annotations: map[string]string{AnnotationShmSize: "16Mi"},
			defaults: withDefaults(func(d *Defaults) { d.ShmSize = resource.MustParse("256Mi") }),
			want:     func(c *Config) { c.ShmSize = resource.MustParse("16Mi") }},
		{name: "shm size zero", annotations: map[string]string{AnnotationShmSize: "0"},
			wantErr: `annotation pyexec.dev/shm-size="0": want a memory quantity above zero, such as 64Mi`},
		{name: "shm size not a quantity", annotations: map[string]string{AnnotationShmSize: "64 MB"},
			wantErr: `annotation pyexec.dev/shm-size="64 MB": want a memory quantity above zero, such as 64Mi`},
		{name: "shm size default of the injector negative", defaults: withDefaults(func(d *Defaults) { d.ShmSize = resource.MustParse("-1") }),
			wantErr: `annotation pyexec.dev/shm-size="-1": want a memory quantity above zero, such as 64Mi: the injector's default is not`},

		// server-uid and runner-uid
		{name: "server uid pinned", annotations: map[string]string{AnnotationServerUID: "1000"},
			want: func(c *Config) { c.ServerUID, c.RunnerUID = 1000, drawnServerUID }},
		{name: "runner uid pinned", annotations: map[string]string{AnnotationRunnerUID: "2000"},
			want: func(c *Config) { c.RunnerUID = 2000 }},
		{name: "both uids pinned", annotations: map[string]string{AnnotationServerUID: " 1000 ", AnnotationRunnerUID: "2000"},
			want: func(c *Config) { c.ServerUID, c.RunnerUID = 1000, 2000 }},
		{name: "runner uid pinned to what the server draws", annotations: map[string]string{AnnotationRunnerUID: "60386333"},
			want: func(c *Config) { c.ServerUID, c.RunnerUID = drawnRunnerUID, drawnServerUID }},
		{name: "server uid pinned to what the runner draws", annotations: map[string]string{AnnotationServerUID: "582750489"},
			want: func(c *Config) { c.ServerUID, c.RunnerUID = drawnRunnerUID, drawnRunnerUID-1 }},
		{name: "uids pinned at the bounds", annotations: map[string]string{AnnotationServerUID: "1", AnnotationRunnerUID: "2147483647"},
			want: func(c *Config) { c.ServerUID, c.RunnerUID = 1, 2147483647 }},
		{name: "uids pinned outside the range", annotations: map[string]string{AnnotationServerUID: "1000", AnnotationRunnerUID: "1001"},
			defaults: withDefaults(func(d *Defaults) { d.UIDRange = UIDRange{Min: 5000, Max: 5001} }),
			want:     func(c *Config) { c.ServerUID, c.RunnerUID = 1000, 1001 }},
		{name: "uids equal", annotations: map[string]string{AnnotationServerUID: "1000", AnnotationRunnerUID: "1000"},
			wantErr: `annotation pyexec.dev/runner-uid="1000": want a uid other than the server's (pyexec.dev/server-uid): the runner must not own what the server owns`},
		{name: "server uid 0", annotations: map[string]string{AnnotationServerUID: "0"},
			wantErr: `annotation pyexec.dev/server-uid="0": want a whole number from 1 to 2147483647, such as 100000`},
		{name: "runner uid 0", annotations: map[string]string{AnnotationRunnerUID: "0"},
			wantErr: `annotation pyexec.dev/runner-uid="0": want a whole number from 1 to 2147483647, such as 100000`},
		{name: "server uid negative", annotations: map[string]string{AnnotationServerUID: "-5"},
			wantErr: `annotation pyexec.dev/server-uid="-5": want a whole number from 1 to 2147483647, such as 100000`},
		{name: "server uid a name", annotations: map[string]string{AnnotationServerUID: "pyexec"},
			wantErr: `annotation pyexec.dev/server-uid="pyexec": want a whole number from 1 to 2147483647, such as 100000`},
		{name: "runner uid with a group", annotations: map[string]string{AnnotationRunnerUID: "1000:1000"},
			wantErr: `annotation pyexec.dev/runner-uid="1000:1000": want a whole number from 1 to 2147483647, such as 100000`},
		{name: "runner uid a fraction", annotations: map[string]string{AnnotationRunnerUID: "10.5"},
			wantErr: `annotation pyexec.dev/runner-uid="10.5": want a whole number from 1 to 2147483647, such as 100000`},
		{name: "runner uid signed", annotations: map[string]string{AnnotationRunnerUID: "+1000"},
			wantErr: `annotation pyexec.dev/runner-uid="+1000": want a whole number from 1 to 2147483647, such as 100000`},
		{name: "server uid over the API's bound", annotations: map[string]string{AnnotationServerUID: "2147483648"},
			wantErr: `annotation pyexec.dev/server-uid="2147483648": want a whole number from 1 to 2147483647, such as 100000`},
		{name: "runner uid -1, 32 bits", annotations: map[string]string{AnnotationRunnerUID: "4294967295"},
			wantErr: `annotation pyexec.dev/runner-uid="4294967295": want a whole number from 1 to 2147483647, such as 100000`},

		// the uid range (the injector's --uid-range)
		{name: "uid range of the injector", defaults: withDefaults(func(d *Defaults) { d.UIDRange = UIDRange{Min: 5000, Max: 5001} }),
			want: func(c *Config) { c.ServerUID, c.RunnerUID = 5001, 5000 }},
		{name: "uid range of one uid", defaults: withDefaults(func(d *Defaults) { d.UIDRange = UIDRange{Min: 5000, Max: 5000} }),
			wantErr: `annotation pyexec.dev/server-uid="5000-5000": want a uid, or a range MIN-MAX with 1 <= MIN < MAX <= 2147483647 to draw it from: the injector's --uid-range is not one`},
		{name: "uid range from root", defaults: withDefaults(func(d *Defaults) { d.UIDRange = UIDRange{Min: 0, Max: 100} }),
			wantErr: `annotation pyexec.dev/server-uid="0-100": want a uid, or a range MIN-MAX with 1 <= MIN < MAX <= 2147483647 to draw it from: the injector's --uid-range is not one`},
		{name: "uid range upside down", defaults: withDefaults(func(d *Defaults) { d.UIDRange = UIDRange{Min: 9000, Max: 8000} }),
			wantErr: `annotation pyexec.dev/server-uid="9000-8000": want a uid, or a range MIN-MAX with 1 <= MIN < MAX <= 2147483647 to draw it from: the injector's --uid-range is not one`},
		{name: "uid range past the API's bound", defaults: withDefaults(func(d *Defaults) { d.UIDRange = UIDRange{Min: 100000, Max: 1 << 32} }),
			wantErr: `annotation pyexec.dev/server-uid="100000-4294967296": want a uid, or a range MIN-MAX with 1 <= MIN < MAX <= 2147483647 to draw it from: the injector's --uid-range is not one`},
		{name: "a bad uid range is not used when both uids are pinned", annotations: map[string]string{AnnotationServerUID: "1000", AnnotationRunnerUID: "2000"},
			defaults: withDefaults(func(d *Defaults) { d.UIDRange = UIDRange{Min: 9000, Max: 8000} }),
			want:     func(c *Config) { c.ServerUID, c.RunnerUID = 1000, 2000 }},

		// hostUsers: false (a user namespace)
		{name: "user namespace draws below 65536", hostUsers: ptr.To(false),
			want: func(c *Config) { c.ServerUID, c.RunnerUID = drawnUsernsServerUID, drawnUsernsRunnerUID }},
		{name: "user namespace ignores the injector's range", hostUsers: ptr.To(false),
			defaults: withDefaults(func(d *Defaults) { d.UIDRange = UIDRange{Min: 9000, Max: 8000} }),
			want:     func(c *Config) { c.ServerUID, c.RunnerUID = drawnUsernsServerUID, drawnUsernsRunnerUID }},
		{name: "hostUsers true draws from the range", hostUsers: ptr.To(true),
			want: func(c *Config) {}},
		{name: "user namespace, uids pinned", hostUsers: ptr.To(false), annotations: map[string]string{AnnotationServerUID: "1000", AnnotationRunnerUID: "65535"},
			want: func(c *Config) { c.ServerUID, c.RunnerUID = 1000, 65535 }},
		{name: "user namespace, server uid pinned past 65535", hostUsers: ptr.To(false), annotations: map[string]string{AnnotationServerUID: "65536"},
			wantErr: `annotation pyexec.dev/server-uid="65536": want a whole number from 1 to 65535 in a pod with hostUsers: false (its uids are those of its user namespace), such as 10000`},
		{name: "user namespace, runner uid pinned past 65535", hostUsers: ptr.To(false), annotations: map[string]string{AnnotationRunnerUID: "100000"},
			wantErr: `annotation pyexec.dev/runner-uid="100000": want a whole number from 1 to 65535 in a pod with hostUsers: false (its uids are those of its user namespace), such as 10000`},
		{name: "host users, uid past 65535", hostUsers: ptr.To(true), annotations: map[string]string{AnnotationServerUID: "100000"},
			want: func(c *Config) { c.ServerUID, c.RunnerUID = 100000, drawnRunnerUID }},

		// containers
		{name: "containers", annotations: map[string]string{AnnotationContainers: "bot"},
			want: func(c *Config) { c.Containers = []string{"bot"} }},
		{name: "containers keep the pod's order", annotations: map[string]string{AnnotationContainers: "bot, proxy,bot"},
			want: func(c *Config) { c.Containers = []string{"proxy", "bot"} }},
		{name: "containers unknown", annotations: map[string]string{AnnotationContainers: "bot,api"},
			wantErr: `annotation pyexec.dev/containers="bot,api": want comma-separated names of the pod's containers (proxy, bot); "api" is not one`},
		{name: "containers init container", annotations: map[string]string{AnnotationContainers: "migrate"},
			wantErr: `annotation pyexec.dev/containers="migrate": want comma-separated names of the pod's containers (proxy, bot); "migrate" is not one`},
		{name: "containers only commas", annotations: map[string]string{AnnotationContainers: ",,"},
			wantErr: `annotation pyexec.dev/containers=",,": want comma-separated names of the pod's containers (proxy, bot)`},

		// socket-dir
		{name: "socket dir", annotations: map[string]string{AnnotationSocketDir: "/run/pyexec"},
			want: func(c *Config) { c.SocketDir = "/run/pyexec" }},
		{name: "socket dir relative", annotations: map[string]string{AnnotationSocketDir: "run/pyexec"},
			wantErr: `annotation pyexec.dev/socket-dir="run/pyexec": want an absolute, clean directory other than /, such as /var/run/pyexec`},
		{name: "socket dir unclean", annotations: map[string]string{AnnotationSocketDir: "/run/../pyexec/"},
			wantErr: `annotation pyexec.dev/socket-dir="/run/../pyexec/": want an absolute, clean directory other than /, such as /var/run/pyexec`},
		{name: "socket dir root", annotations: map[string]string{AnnotationSocketDir: "/"},
			wantErr: `annotation pyexec.dev/socket-dir="/": want an absolute, clean directory other than /, such as /var/run/pyexec`},
		{name: "socket dir too long", annotations: map[string]string{AnnotationSocketDir: "/" + strings.Repeat("d", 95)},
			wantErr: `annotation pyexec.dev/socket-dir="/` + strings.Repeat("d", 95) + `": want a directory of at most 95 bytes, so that the socket path fits in 107`},
		{name: "socket dir longest", annotations: map[string]string{AnnotationSocketDir: "/" + strings.Repeat("d", 94)},
			want: func(c *Config) { c.SocketDir = "/" + strings.Repeat("d", 94) }},
		{name: "socket dir mounted already", annotations: map[string]string{AnnotationSocketDir: "/data"},
			wantErr: `annotation pyexec.dev/socket-dir="/data": want a directory that container "bot" does not mount already`},
		{name: "socket dir mounted in a container without the socket", annotations: map[string]string{AnnotationSocketDir: "/data", AnnotationContainers: "proxy"},
			want: func(c *Config) { c.SocketDir, c.Containers = "/data", []string{"proxy"} }},

		// native-sidecar
		{name: "native sidecar false", annotations: map[string]string{AnnotationNativeSidecar: "false"},
			want: func(c *Config) { c.NativeSidecar = false }},
		{name: "native sidecar true over the default", annotations: map[string]string{AnnotationNativeSidecar: "true"},
			defaults: &Defaults{Image: testDefaults.Image, PullPolicy: testDefaults.PullPolicy},
			want:     func(c *Config) {}},
		{name: "native sidecar auto", annotations: map[string]string{AnnotationNativeSidecar: "auto"},
			defaults: &Defaults{Image: testDefaults.Image, PullPolicy: testDefaults.PullPolicy},
			want:     func(c *Config) { c.NativeSidecar = false }},
		{name: "native sidecar yes", annotations: map[string]string{AnnotationNativeSidecar: "yes"},
			wantErr: `annotation pyexec.dev/native-sidecar="yes": want auto, true or false`},
		{name: "native sidecar false in a Job's pod", annotations: map[string]string{AnnotationNativeSidecar: "false"},
			restart: corev1.RestartPolicyNever,
			wantErr: `annotation pyexec.dev/native-sidecar="false": want true (Kubernetes 1.29 or later) in a pod with restartPolicy Never: a regular sidecar container would keep it from completing`},
		{name: "native sidecar auto means false in a Job's pod", restart: corev1.RestartPolicyOnFailure,
			defaults: &Defaults{Image: testDefaults.Image},
			wantErr:  `annotation pyexec.dev/native-sidecar="auto": want true (Kubernetes 1.29 or later) in a pod with restartPolicy OnFailure: a regular sidecar container would keep it from completing`},

		// the injector's defaults of annotations (Defaults.Annotations)
		{name: "annotation defaults", defaults: withAnnotationDefaults(map[string]string{AnnotationPreload: "numpy,pandas", AnnotationRequire: "pandas>=2\nnumpy", AnnotationTimeout: "1m"}),
			want: func(c *Config) {
				c.Preload, c.Require, c.Timeout = []string{"numpy", "pandas"}, []string{"pandas>=2", "numpy"}, time.Minute
			}},
		{name: "a pod's annotation over its default, a blank one takes it", annotations: map[string]string{AnnotationPreload: "json", AnnotationRequire: "  "},
			defaults: withAnnotationDefaults(map[string]string{AnnotationPreload: "numpy", AnnotationRequire: "numpy"}),
			want:     func(c *Config) { c.Preload, c.Require = []string{"json"}, []string{"numpy"} }},
		{name: "none empties a list over its default", annotations: map[string]string{AnnotationPreload: "none", AnnotationRequire: "none", AnnotationInstall: " none", AnnotationAllowPackages: "none"},
			defaults: withAnnotationDefaults(map[string]string{AnnotationPreload: "numpy", AnnotationRequire: "numpy", AnnotationInstall: "requests", AnnotationAllowPackages: "*"}),
			want:     func(c *Config) {}},
		{name: "a default that clashes with the pod's annotation is named as the default", annotations: map[string]string{AnnotationMaxTimeout: "30s"},
			defaults: withAnnotationDefaults(map[string]string{AnnotationTimeout: "1m"}),
			wantErr:  `annotation pyexec.dev/timeout="1m": want a Go duration no longer than the max timeout 30s (pyexec.dev/max-timeout)` + DefaultedNote},
		{name: "a bad pod annotation is the pod's, with defaults around", annotations: map[string]string{AnnotationTimeout: "soon"},
			defaults: withAnnotationDefaults(map[string]string{AnnotationTimeout: "1m"}),
			wantErr:  `annotation pyexec.dev/timeout="soon": want a Go duration such as 30s`},

		// every bad annotation is reported, in declaration order
		{name: "every error", annotations: map[string]string{AnnotationNativeSidecar: "maybe", AnnotationTimeout: "soon", AnnotationShmSize: "big"},
			wantErr: `annotation pyexec.dev/timeout="soon": want a Go duration such as 30s; ` +
				`annotation pyexec.dev/shm-size="big": want a memory quantity above zero, such as 64Mi; ` +
				`annotation pyexec.dev/native-sidecar="maybe": want auto, true or false`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := testDefaults
			if tt.defaults != nil {
				d = *tt.defaults
			}
			if d.Rand == nil {
				d.Rand = testutil.SameBytes{}
			}
			pod := configPod(tt.annotations)
			pod.Spec.RestartPolicy = tt.restart
			pod.Spec.HostUsers = tt.hostUsers
			got, err := ParseConfig(pod, d)
			if tt.wantErr != "" {
				var ae *AnnotationError
				if !errors.As(err, &ae) {
					t.Fatalf("ParseConfig() error = %v, want an *AnnotationError", err)
				}
				if err.Error() != tt.wantErr {
					t.Errorf("ParseConfig() error:\n got %s\nwant %s", err, tt.wantErr)
				}
				if got != nil {
					t.Errorf("ParseConfig() = %+v with an error, want nil", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseConfig() error = %v", err)
			}
			want := defaultConfig()
			tt.want(&want)
			if !equality.Semantic.DeepEqual(*got, want) {
				t.Errorf("ParseConfig()\n got %+v\nwant %+v", *got, want)
			}
		})
	}
}

func TestAnnotationErrorFields(t *testing.T) {
	_, err := ParseConfig(configPod(map[string]string{AnnotationTimeout: "ten"}), testDefaults)
	var ae *AnnotationError
	if !errors.As(err, &ae) {
		t.Fatalf("error = %v, want an *AnnotationError", err)
	}
	want := AnnotationError{Annotation: AnnotationTimeout, Value: "ten", Accepted: "a Go duration such as 30s"}
	if *ae != want {
		t.Errorf("error = %+v, want %+v", *ae, want)
	}
}

// Several bad annotations come as AnnotationErrors, in which errors.As finds the first.
func TestAnnotationErrors(t *testing.T) {
	d := testDefaults
	d.Rand = testutil.SameBytes{}
	testDefaults := d
	_, err := ParseConfig(configPod(map[string]string{AnnotationTimeout: "soon", AnnotationMaxSessions: "-1"}), testDefaults)
	var all AnnotationErrors
	var first *AnnotationError
	if !errors.As(err, &all) || len(all) != 2 || !errors.As(err, &first) || first.Annotation != AnnotationTimeout {
		t.Fatalf("err %v (%T); want AnnotationErrors of pyexec.dev/timeout and pyexec.dev/max-sessions", err, err)
	}
	_, err = ParseConfig(configPod(map[string]string{AnnotationTimeout: "soon"}), testDefaults)
	if _, ok := err.(*AnnotationError); !ok {
		t.Errorf("one bad annotation: %T; want *AnnotationError", err)
	}
}

func TestUnknownAnnotations(t *testing.T) {
	got := UnknownAnnotations(map[string]string{
		"pyexec.dev/timout": "1m", "pyexec.dev/timeout": "1m", "pyexec.dev/whatever": "x", "example.com/timout": "1m",
		"pyexec.dev/runner-memory-limt": "2Gi",
	})
	want := []string{
		"annotation pyexec.dev/runner-memory-limt is not one of pyexec's and changes nothing; did you mean pyexec.dev/runner-memory-limit?",
		"annotation pyexec.dev/timout is not one of pyexec's and changes nothing; did you mean pyexec.dev/timeout?",
		"annotation pyexec.dev/whatever is not one of pyexec's and changes nothing",
	}
	if !slices.Equal(got, want) {
		t.Errorf("UnknownAnnotations:\n got %q\nwant %q", got, want)
	}
	for _, known := range Annotations {
		if w := UnknownAnnotations(map[string]string{known: "x"}); len(w) != 0 {
			t.Errorf("%s: %q", known, w)
		}
	}
}

// withAnnotationDefaults is testDefaults with the given defaults of annotations.
func withAnnotationDefaults(ann map[string]string) *Defaults {
	d := testDefaults
	d.Annotations = ann
	return &d
}
