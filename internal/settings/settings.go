// Package settings is the one definition of the sidecar's settings that more than one part of
// pyexec knows: the defaults and bounds of `pyexec serve` (cmd/pyexec/app) that the server
// (internal/server) checks, the injector (internal/mutation, cmd/pyexec-injector) turns annotations and its
// own flags into, and the chart (charts/pyexec) and README document; and the settings of the
// injected pod that no serve flag holds (its uids, resources and /dev/shm).
//
// The constants are what the code uses; Sidecar and Pod list the same settings with their names
// for the test (cmd/pyexec/app/settings_test.go) that checks the serve flags, the annotation
// parser, the injector's flags, the chart's values and the README against them.
package settings

import (
	"math"
	"time"
)

// Defaults of `pyexec serve`.
const (
	DefaultTimeout               = 30 * time.Second
	DefaultMaxTimeout            = 5 * time.Minute
	DefaultMemoryLimitMB         = 1024
	DefaultMaxMemoryLimitMB      = 4096
	DefaultNetwork               = NetworkDeny
	DefaultRequireIsolation      = false
	DefaultMaxSessions           = 8
	DefaultSessionIdleTimeout    = 10 * time.Minute
	DefaultMaxSessionIdleTimeout = time.Hour
	// DefaultRunnerMemoryHighWater is the percentage of the runner's memory limit past which
	// its memory watchdog ends the largest execution or session: a tenth of the limit is left
	// for the time between two readings (10 ms near the mark) and for the kill to free the
	// tree's memory.
	DefaultRunnerMemoryHighWater = 90
	// MaxRunnerMemoryHighWater is the largest: at 100 the kernel's OOM killer acts first.
	MaxRunnerMemoryHighWater = 99
)

// MinMemoryLimitMB is the smallest memory limit a Python interpreter starts under: no memory limit of serve, of an annotation or of a request may be below it (serve's
// 0, no limit, aside).
const MinMemoryLimitMB = 32

// Values of the network setting (serve's --network, pyexec.dev/network, sidecar.network).
const (
	// NetworkDeny keeps the code off the network.
	NetworkDeny = "deny"
	// NetworkAllow lets the code use the network.
	NetworkAllow = "allow"
)

// EnvPrefix prefixes the variable of each serve flag: --max-sessions is PYEXEC_MAX_SESSIONS.
const EnvPrefix = "PYEXEC_"

// Setting is one setting of `pyexec serve` that the injector sets or bounds.
type Setting struct {
	// Flag is the serve flag, without the dashes.
	Flag string
	// Default is the flag's default as the flag holds it (time.Duration, int, string or
	// bool); nil when it has none that is fixed (the number of CPUs, "every uid").
	Default any
	// Min and Max are the bounds of a value, nil when unbounded. They are the bounds that
	// serve and the annotation share; serve may take more (see Doc).
	Min, Max any
	// Annotation is the pod annotation that sets it; empty when none does.
	Annotation string
	// InjectorFlag is the pyexec-injector flag that gives the annotation's default; empty
	// when the injector has none (the sidecar's own default applies).
	InjectorFlag string
	// ChartValue is the key in charts/pyexec/values.yaml that sets InjectorFlag; empty when
	// the chart has none.
	ChartValue string
	// ChartDefault is the chart's default when it deliberately differs from Default; nil
	// when the chart uses Default.
	ChartDefault any
	// Doc says what the setting is, in a line.
	Doc string
}

// Env is the variable that sets the serve flag, and that the injector writes.
func (s Setting) Env() string {
	b := []byte(EnvPrefix)
	for _, r := range []byte(s.Flag) {
		switch {
		case r == '-':
			r = '_'
		case 'a' <= r && r <= 'z':
			r -= 'a' - 'A'
		}
		b = append(b, r)
	}
	return string(b)
}

// Sidecar are the settings of the sidecar that the injector sets or checks against.
var Sidecar = []Setting{
	{Flag: "timeout", Default: DefaultTimeout, Annotation: "pyexec.dev/timeout",
		Doc: "default time limit of an execution"},
	{Flag: "max-timeout", Default: DefaultMaxTimeout, Annotation: "pyexec.dev/max-timeout",
		Doc: "largest time limit a request may ask for"},
	{Flag: "memory-limit-mb", Default: DefaultMemoryLimitMB, Min: MinMemoryLimitMB, Max: DefaultMaxMemoryLimitMB,
		Annotation: "pyexec.dev/memory-limit-mb",
		Doc:        "default memory limit of an execution (the resident memory of its whole process tree), MiB; serve also takes 0 (no limit) and, with a larger --max-memory-limit-mb, more"},
	{Flag: "max-memory-limit-mb", Default: DefaultMaxMemoryLimitMB,
		Doc: "largest memory limit a request may ask for, MiB: 0 (no maximum) or at least MinMemoryLimitMB; the annotation's upper bound"},
	{Flag: "max-concurrent", Min: 1, Annotation: "pyexec.dev/max-concurrent",
		Doc: "executions that run at once; default: the runner's CPU limit rounded up, else the number of CPUs"},
	{Flag: "allow-uids", Annotation: "pyexec.dev/allow-uids",
		Doc: "peer uids allowed to call; default: every uid"},
	{Flag: "allow-packages", Annotation: "pyexec.dev/allow-packages",
		Doc: "patterns of packages code may install at run time; default: none"},
	{Flag: "network", Default: DefaultNetwork, Annotation: "pyexec.dev/network",
		InjectorFlag: "network", ChartValue: "sidecar.network",
		Doc: "network for code: deny or allow"},
	{Flag: "require-isolation", Default: DefaultRequireIsolation, Annotation: "pyexec.dev/require-isolation",
		InjectorFlag: "require-isolation", ChartValue: "sidecar.requireIsolation", ChartDefault: true,
		Doc: "refuse to start on a kernel that lacks a layer of confinement (the chart turns it on)"},
	{Flag: "max-sessions", Default: DefaultMaxSessions, Min: 0, Annotation: "pyexec.dev/max-sessions",
		InjectorFlag: "max-sessions", ChartValue: "sidecar.maxSessions",
		Doc: "sessions open at once; 0 switches sessions off"},
	{Flag: "session-idle-timeout", Default: DefaultSessionIdleTimeout, Max: DefaultMaxSessionIdleTimeout,
		Annotation: "pyexec.dev/session-idle-timeout", InjectorFlag: "session-idle-timeout", ChartValue: "sidecar.sessionIdleTimeout",
		Doc: "how long a session lives without a call; the annotation's bound is serve's default --max-session-idle-timeout"},
	{Flag: "max-session-idle-timeout", Default: DefaultMaxSessionIdleTimeout,
		Doc: "the longest idle timeout a session may ask for; the bound of the session idle timeout annotation"},
	{Flag: "runner-memory-high-water", Default: DefaultRunnerMemoryHighWater, Min: 0, Max: MaxRunnerMemoryHighWater,
		Annotation: "pyexec.dev/runner-memory-high-water",
		Doc:        "percentage of the runner's memory limit past which its memory watchdog ends the execution or session that holds the most memory; 0 turns it off"},
}

// Defaults of the injected pod that no flag of `pyexec serve` holds: the injector's flags
// default to them, the chart repeats them, and pod annotations override them.
const (
	// DefaultUIDRange is the range the injector draws the server's and the runner's uid from.
	DefaultUIDRange = "100000-999999999"

	// The server's resources (pyexec and pyexec-init: the API, packages, pip).
	DefaultSidecarCPURequest    = "50m"
	DefaultSidecarMemoryRequest = "64Mi"
	DefaultSidecarMemoryLimit   = "512Mi"

	// The runner's resources (pyexec-runner: every execution and session).
	DefaultRunnerCPURequest    = "100m"
	DefaultRunnerMemoryRequest = "128Mi"
	DefaultRunnerMemoryLimit   = "1Gi"

	// DefaultShmSize is the size of the runner's /dev/shm.
	DefaultShmSize = "64Mi"
)

// PodSetting is a setting of the injected pod that no flag of `pyexec serve` holds: the
// injector writes it into the pod's spec (a securityContext, resources, a volume).
type PodSetting struct {
	// Annotation is the pod annotation that sets it; empty when none does.
	Annotation string
	// InjectorFlag is the pyexec-injector flag (of serve and inject) that gives its default;
	// empty when the injector has none.
	InjectorFlag string
	// ChartValue is the key in charts/pyexec/values.yaml that sets InjectorFlag; empty when
	// the chart has none.
	ChartValue string
	// Default is the default as the flag, the chart and the README write it; empty when there
	// is none (no CPU limit, a uid drawn per pod).
	Default string
	// Doc says what the setting is, in a line.
	Doc string
}

// Pod are the settings of the injected pod.
var Pod = []PodSetting{
	{InjectorFlag: "uid-range", ChartValue: "identity.uidRange", Default: DefaultUIDRange,
		Doc: "range of the uids drawn per pod for the server and the runner"},
	{Annotation: "pyexec.dev/server-uid",
		Doc: "the server's uid, pinned; default: drawn from the range"},
	{Annotation: "pyexec.dev/runner-uid",
		Doc: "the runner's uid, pinned; default: drawn from the range"},
	{Annotation: "pyexec.dev/cpu-request", InjectorFlag: "sidecar-cpu-request", ChartValue: "sidecar.resources.requests.cpu",
		Default: DefaultSidecarCPURequest, Doc: "CPU request of pyexec and pyexec-init"},
	{Annotation: "pyexec.dev/cpu-limit", InjectorFlag: "sidecar-cpu-limit", ChartValue: "sidecar.resources.limits.cpu",
		Doc: "CPU limit of pyexec and pyexec-init"},
	{Annotation: "pyexec.dev/memory-request", InjectorFlag: "sidecar-memory-request", ChartValue: "sidecar.resources.requests.memory",
		Default: DefaultSidecarMemoryRequest, Doc: "memory request of pyexec and pyexec-init"},
	{Annotation: "pyexec.dev/memory-limit", InjectorFlag: "sidecar-memory-limit", ChartValue: "sidecar.resources.limits.memory",
		Default: DefaultSidecarMemoryLimit, Doc: "memory limit of pyexec and pyexec-init"},
	{Annotation: "pyexec.dev/runner-cpu-request", InjectorFlag: "runner-cpu-request", ChartValue: "runner.resources.requests.cpu",
		Default: DefaultRunnerCPURequest, Doc: "CPU request of pyexec-runner"},
	{Annotation: "pyexec.dev/runner-cpu-limit", InjectorFlag: "runner-cpu-limit", ChartValue: "runner.resources.limits.cpu",
		Doc: "CPU limit of pyexec-runner"},
	{Annotation: "pyexec.dev/runner-memory-request", InjectorFlag: "runner-memory-request", ChartValue: "runner.resources.requests.memory",
		Default: DefaultRunnerMemoryRequest, Doc: "memory request of pyexec-runner"},
	{Annotation: "pyexec.dev/runner-memory-limit", InjectorFlag: "runner-memory-limit", ChartValue: "runner.resources.limits.memory",
		Default: DefaultRunnerMemoryLimit, Doc: "memory limit of pyexec-runner"},
	{Annotation: "pyexec.dev/shm-size", InjectorFlag: "runner-shm-size", ChartValue: "runner.shmSize",
		Default: DefaultShmSize, Doc: "size of pyexec-runner's /dev/shm"},
}

// WholeCPUs rounds a CPU limit up to whole CPUs, at least 1; 0 (no limit) stays 0: the
// default of --max-concurrent from a CPU limit, which serve reads from its cgroup and the
// injector from the runner container's resources.
func WholeCPUs(limit float64) int {
	if limit <= 0 {
		return 0
	}
	return max(1, int(math.Ceil(limit-1e-9)))
}
