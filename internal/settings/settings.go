// Package settings is the one definition of the sidecar's settings that more than one part of
// pyexec knows: the defaults and bounds of `pyexec serve` (cmd/pyexec/app) that the server
// (internal/server) checks, the injector (internal/mutation, cmd/pyexec-injector) turns annotations and its
// own flags into, and the chart (charts/pyexec) and the docs (docs/cli.md, docs/kubernetes.md) document; and the settings of the
// injected pod that no serve flag holds (its uids, resources and /dev/shm).
//
// The constants are what the code uses; Sidecar and Pod list the same settings with their names
// for the test (cmd/pyexec/app/settings_test.go) that checks the serve flags, the annotation
// parser, the injector's flags, the chart's values and the docs' tables against them.
package settings

import (
	"math"
	"strings"
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
	// Checkpoints of a session: each holds a process and a copy of the files.
	DefaultMaxCheckpoints        = 4
	DefaultCheckpointIdleTimeout = 10 * time.Minute
	DefaultMaxCheckpointBytes    = 256 << 20
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

// Defaults of `pyexec serve` that only serve knows.
const (
	DefaultSocket    = "/var/run/pyexec/pyexec.sock"
	DefaultProbeAddr = ":9901"
	// DefaultRestAfter is --rest-after: an idle pod's spares go cold after it.
	DefaultRestAfter = 10 * time.Minute
	// DefaultProbeMaxConnections and DefaultProbeMaxConnectionsPerIP cap the probe port's
	// connections: the kubelet opens one per probe and Prometheus keeps one or two, each
	// from an address of its own; one address (code with --network allow, from loopback or
	// the pod's address) may not take more than an eighth.
	DefaultProbeMaxConnections      = 64
	DefaultProbeMaxConnectionsPerIP = 8
	// DefaultWriteTimeout is how long a client has to take a response that carries a result.
	DefaultWriteTimeout = 30 * time.Second

	DefaultPackagesDir    = "/var/lib/pyexec/packages"
	DefaultReport         = "/var/run/pyexec/preflight.json"
	DefaultInspectTimeout = 2 * time.Minute
	DefaultInstallTimeout = 5 * time.Minute
)

// Group is a group of settings, as `pyexec serve --help` and the reference list them.
type Group string

// The groups, in the order they are shown.
const (
	GroupSocket      Group = "Socket and callers"
	GroupLimits      Group = "Limits of an execution"
	GroupCapacity    Group = "Capacity"
	GroupConfinement Group = "Confinement"
	GroupRunner      Group = "Runner"
	GroupFork        Group = "Fork mode"
	GroupSessions    Group = "Sessions"
	GroupPackages    Group = "Python and packages"
	GroupProbes      Group = "Probes"
)

// Groups are the groups in the order they are shown.
var Groups = []Group{GroupSocket, GroupLimits, GroupCapacity, GroupConfinement, GroupRunner, GroupFork, GroupSessions, GroupPackages, GroupProbes}

// Positive is the Min of a duration that must be above zero.
const Positive = time.Duration(1)

// Setting is one setting of `pyexec serve`: its flag and variable, default, bounds, group and
// help, and, when the injector sets or bounds it, its annotation, injector flag and chart
// value. Flags are registered from it (AddFlags), bounds checked by it (Check), and the
// reference (docs/reference) generated from it.
type Setting struct {
	// Flag is the serve flag, without the dashes.
	Flag string
	// Group is where --help and the reference list it.
	Group Group
	// Default is the flag's default as the flag holds it (time.Duration, int, int64, string,
	// bool; nil for a list); nil when it is worked out at run time (DefaultDoc says how).
	Default any
	// DefaultDoc says what the default is when it is worked out at run time.
	DefaultDoc string
	// Min and Max bound a value (int, int64 or time.Duration), nil when unbounded; Positive is
	// a duration's "above zero".
	Min, Max any
	// ZeroMeans, when set, admits 0 below Min and says what it means ("no limit").
	ZeroMeans string
	// Repeatable marks a list given by repeating the flag (its variable takes one item per
	// line); other lists are comma-separated.
	Repeatable bool
	// Preflight marks the settings that pyexec init takes too.
	Preflight bool
	// Path marks a file system path, made absolute at start against the working directory
	// (MakeAbsolute): pyexec's processes work in other directories. With Command, a bare name
	// (no slash) is a command looked up on PATH, and left as it is.
	Path, Command bool
	// Annotation is the pod annotation that sets it; empty when none does.
	Annotation string
	// AnnotationMin and AnnotationMax bound the annotation where it is narrower than serve
	// (nil: Min and Max).
	AnnotationMin, AnnotationMax any
	// InjectorFlag is the pyexec-injector flag that gives the annotation's default; empty
	// when the injector has none (the sidecar's own default applies).
	InjectorFlag string
	// ChartValue is the key in charts/pyexec/values.yaml that sets InjectorFlag; empty when
	// the chart has none.
	ChartValue string
	// ChartDefault is the chart's default when it deliberately differs from Default; nil
	// when the chart uses Default. The injector's own flag defaults to it too.
	ChartDefault any
	// Doc is the flag's help.
	Doc string
}

// Env is the variable that sets the serve flag, and that the injector writes.
func (s Setting) Env() string { return EnvName(EnvPrefix, s.Flag) }

// EnvName is the variable of a flag: prefix, then the flag in capitals with _ for -.
func EnvName(prefix, flag string) string {
	return prefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// InjectorDefault is the default of the injector's flag: the chart's.
func (s Setting) InjectorDefault() any {
	if s.ChartDefault != nil {
		return s.ChartDefault
	}
	return s.Default
}

// AnnotationBounds are the bounds of the annotation.
func (s Setting) AnnotationBounds() (min, max any) {
	min, max = s.Min, s.Max
	if s.AnnotationMin != nil {
		min = s.AnnotationMin
	}
	if s.AnnotationMax != nil {
		max = s.AnnotationMax
	}
	return min, max
}

// Serve is every setting of `pyexec serve`, by group.
var Serve = []Setting{
	// Socket and callers.
	{Flag: "socket", Path: true, Group: GroupSocket, Default: DefaultSocket,
		Doc: "Unix socket to serve the API on; its directory is created"},
	{Flag: "socket-mode", Group: GroupSocket, Default: "0660",
		Doc: "permissions of the socket (octal)"},
	{Flag: "socket-group", Group: GroupSocket, Default: "",
		Doc: "group of the socket (name or gid); default: the server's"},
	{Flag: "allow-uids", Group: GroupSocket, Annotation: "pyexec.dev/allow-uids", DefaultDoc: "every uid",
		Doc: "comma-separated peer uids allowed to call (SO_PEERCRED); empty allows all"},
	{Flag: "max-connections", Group: GroupSocket, Default: 256, Min: 1,
		Doc: "connections open at once on the socket; more are closed at once"},
	{Flag: "max-connections-per-uid", Group: GroupSocket, Default: 64, Min: 1,
		Doc: "connections open at once on the socket from one peer uid; more are closed at once"},
	{Flag: "max-request-bytes", Group: GroupSocket, Default: int64(10 << 20), Min: int64(1),
		Doc: "largest request body; larger gets 413"},
	{Flag: "write-timeout", Group: GroupSocket, Default: DefaultWriteTimeout, Min: Positive,
		Doc: "how long a client has to read a response that carries a result or a file, from the moment it is known; past it the connection is closed and the body is cut short"},
	{Flag: "mcp", Group: GroupSocket, Default: true,
		Doc: "serve the Model Context Protocol (Streamable HTTP) at /mcp on the socket, with the same peer checks, limits and logs as the API"},
	{Flag: "mcp-structured-result", Group: GroupSocket, Default: false,
		Doc: "deprecated, for MCP clients that read it: run_python at /mcp declares an output schema and gives the API's whole result as structured content, as earlier versions did (models get the text and the images either way)"},
	{Flag: "log-code", Group: GroupSocket, Default: false,
		Doc: "include the code in each execution's log line"},

	// Limits of an execution.
	{Flag: "timeout", Group: GroupLimits, Default: DefaultTimeout, Min: Positive, Annotation: "pyexec.dev/timeout",
		InjectorFlag: "timeout", ChartValue: "sidecar.timeout",
		Doc: "default time limit of an execution"},
	{Flag: "max-timeout", Group: GroupLimits, Default: DefaultMaxTimeout, Min: Positive, Annotation: "pyexec.dev/max-timeout",
		InjectorFlag: "max-timeout", ChartValue: "sidecar.maxTimeout",
		Doc: "largest time limit a request may ask for"},
	{Flag: "memory-limit-mb", Group: GroupLimits, Default: DefaultMemoryLimitMB, Min: MinMemoryLimitMB, ZeroMeans: "no limit",
		Annotation: "pyexec.dev/memory-limit-mb", AnnotationMax: DefaultMaxMemoryLimitMB,
		InjectorFlag: "memory-limit-mb", ChartValue: "sidecar.memoryLimitMB",
		Doc: "default memory limit of an execution: the resident memory of its whole process tree, MiB (0: none)"},
	{Flag: "max-memory-limit-mb", Group: GroupLimits, Default: DefaultMaxMemoryLimitMB, Min: MinMemoryLimitMB, ZeroMeans: "no maximum",
		Doc: "largest memory limit a request may ask for, MiB (0: no limit); the annotation's upper bound"},
	{Flag: "max-output-bytes", Group: GroupLimits, Default: 1 << 20, Min: 1,
		Doc: "cap of stdout and of stderr, each; past it the execution is killed (reason output_limit)"},
	{Flag: "max-processes", Group: GroupLimits, Default: 128, Min: 0, ZeroMeans: "no limit",
		Doc: "RLIMIT_NPROC of executions: processes and threads of their user (0: no limit)"},
	{Flag: "max-file-bytes", Group: GroupLimits, Default: int64(10 << 20), Min: int64(1),
		Doc: "largest file an execution may write (RLIMIT_FSIZE) and the largest returned"},
	{Flag: "max-files-out", Group: GroupLimits, Default: 32, Min: 0,
		Doc: "most files returned from an execution"},
	{Flag: "max-files-out-bytes", Group: GroupLimits, Default: int64(32 << 20), Min: int64(1),
		Doc: "total size of the files returned from an execution; files past it are left out (files_truncated)"},

	// Capacity.
	{Flag: "max-concurrent", Group: GroupCapacity, Min: 1, Annotation: "pyexec.dev/max-concurrent",
		DefaultDoc: "the CPU limit of serve's cgroup rounded up, else the number of CPUs",
		Doc:        "executions that run at once; default: the CPU limit of serve's cgroup rounded up, else the number of CPUs (the injector passes the runner container's CPU limit)"},
	{Flag: "queue", Group: GroupCapacity, Default: 16, Min: 0,
		Doc: "executions that may wait for a slot; more get 429 at once"},
	{Flag: "drain-timeout", Group: GroupCapacity, Default: 30 * time.Second, Min: time.Duration(0),
		Doc: "on SIGTERM, how long running executions may finish before they are killed"},

	// Confinement.
	{Flag: "network", Group: GroupConfinement, Default: DefaultNetwork, Annotation: "pyexec.dev/network",
		InjectorFlag: "network", ChartValue: "sidecar.network",
		Doc: "network for code: deny (no sockets but socketpair) or allow; a request's \"network\" may turn it off, or on only when allowed"},
	{Flag: "require-isolation", Group: GroupConfinement, Default: DefaultRequireIsolation, Annotation: "pyexec.dev/require-isolation",
		InjectorFlag: "require-isolation", ChartValue: "sidecar.requireIsolation", ChartDefault: true,
		Doc: "refuse to start when the kernel lacks a layer of confinement (Landlock filesystem and scoped signals, seccomp); without it the sidecar warns once and starts"},
	{Flag: "max-landlock-abi", Group: GroupConfinement, Default: -1, Min: -1,
		Doc: "use at most this Landlock ABI version, as on an older kernel (-1: what the kernel has; 0: no Landlock)"},
	{Flag: "seccomp", Group: GroupConfinement, Default: true,
		Doc: "install the seccomp filter in executions; false leaves code able to open Unix sockets, ptrace, use the network and, without Landlock ABI 6, signal the server"},
	{Flag: "run-as", Group: GroupConfinement, Default: "",
		Doc: "UID[:GID] the runner started as a child (and so the code) runs as; default the server's user, or 65534:65534 when the server runs as root"},

	// Runner.
	{Flag: "work-dir", Path: true, Group: GroupRunner, DefaultDoc: "$TMPDIR/pyexec",
		Doc: "where executions get their working directories"},
	{Flag: "runner-socket", Path: true, Group: GroupRunner, Default: "",
		Doc: "Unix socket on which the runner container connects (pyexec runner --server-socket); empty: the server starts the runner as a child process"},
	{Flag: "runner-uid", Group: GroupRunner, Default: -1,
		Doc: "with --runner-socket: the uid the runner runs as; a process of another uid may not connect"},
	{Flag: "runner-memory-high-water", Group: GroupRunner, Default: DefaultRunnerMemoryHighWater, Min: 0, Max: MaxRunnerMemoryHighWater, ZeroMeans: "no watchdog",
		Annotation: "pyexec.dev/runner-memory-high-water",
		Doc:        "percentage of the runner's memory limit (its cgroup's: the runner container's limits.memory) past which the runner ends the execution or session that holds the most memory (reason memory_limit), before the kernel's OOM killer takes a process of any; 0: off. Without a limit there is no watchdog"},

	// Fork mode.
	{Flag: "mode", Group: GroupFork, Default: "fork",
		Doc: "fork: executions are forked from a warm interpreter that imported --preload once (spawn while it is down); spawn: a fresh interpreter per execution"},
	{Flag: "warm", Group: GroupFork, Default: 1, Min: 0,
		Doc: "fork mode: children forked ahead of time that have run --warmup-code and wait for an execution; replaced after an execution when none is in flight (0: fork each execution on demand); above 0, one session is also kept started ahead of time once sessions are used"},
	{Flag: "warmup-code", Group: GroupFork, Default: "",
		Doc: "fork mode: Python a spare runs before it waits, to fault in what executions touch; empty: a built-in warm-up of the preloaded numpy, pandas and matplotlib"},
	{Flag: "rest-after", Group: GroupFork, Default: DefaultRestAfter, Min: time.Duration(0),
		Doc: "fork mode: after this long without an execution the sidecar rests: the supervisors kept for the next executions go and the spares are replaced by cold ones, which skip --warmup-code (0: never)"},

	// Sessions.
	{Flag: "max-sessions", Group: GroupSessions, Default: DefaultMaxSessions, Min: 0, Annotation: "pyexec.dev/max-sessions",
		InjectorFlag: "max-sessions", ChartValue: "sidecar.maxSessions",
		Doc: "sessions open at once (POST /v1/sessions); more get 429 too_many_sessions (0: sessions off)"},
	{Flag: "session-idle-timeout", Group: GroupSessions, Default: DefaultSessionIdleTimeout, Min: Positive,
		Annotation: "pyexec.dev/session-idle-timeout", AnnotationMax: DefaultMaxSessionIdleTimeout,
		InjectorFlag: "session-idle-timeout", ChartValue: "sidecar.sessionIdleTimeout",
		Doc: "a session ends after this long without a call, unless it asks for another idle_timeout_seconds"},
	{Flag: "max-session-idle-timeout", Group: GroupSessions, Default: DefaultMaxSessionIdleTimeout, Min: Positive,
		Doc: "the longest idle timeout a session may ask for; the bound of the session idle timeout annotation"},
	{Flag: "max-checkpoints-per-session", Group: GroupSessions, Default: DefaultMaxCheckpoints, Min: 0, ZeroMeans: "checkpoints off",
		Annotation: "pyexec.dev/max-checkpoints-per-session", AnnotationMax: 64,
		InjectorFlag: "max-checkpoints-per-session", ChartValue: "sidecar.maxCheckpointsPerSession",
		Doc: "checkpoints a session holds at once (POST /v1/sessions/{id}/checkpoints); more get 429 too_many_checkpoints, and a call's \"checkpoint\": true lets the oldest such one go (0: checkpoints off)"},
	{Flag: "checkpoint-idle-timeout", Group: GroupSessions, Default: DefaultCheckpointIdleTimeout, Min: Positive,
		Doc: "a checkpoint is let go after this long without a restore (from its creation or its last restore)"},
	{Flag: "max-checkpoint-bytes", Group: GroupSessions, Default: int64(DefaultMaxCheckpointBytes), Min: int64(0), ZeroMeans: "no limit",
		Doc: "the most bytes of files one checkpoint copies from its session's working directory, and one branch of a fork; a larger directory gets 413 checkpoint_too_large, or fork_too_large (0: no limit)"},

	// Python and packages (pyexec init takes these too).
	{Flag: "python", Path: true, Command: true, Group: GroupPackages, Default: "", Preflight: true,
		Doc: "interpreter to use (path, or name on PATH); default: in a container /usr/local/bin/python3, /usr/bin/python3, then python3 on PATH; on a host python3 on PATH first"},
	{Flag: "require", Group: GroupPackages, Repeatable: true, Preflight: true,
		Annotation: "pyexec.dev/require", InjectorFlag: "require", ChartValue: "sidecar.require", ChartDefault: []string{},
		Doc: `required distribution with an optional PEP 440 specifier, e.g. "pandas>=2" (repeatable; PYEXEC_REQUIRE takes one per line)`},
	{Flag: "requirements", Path: true, Group: GroupPackages, Default: "", Preflight: true,
		Doc: "requirements.txt of names with specifiers (comments and blank lines allowed; options, markers and URLs are errors)"},
	{Flag: "preload", Group: GroupPackages, Preflight: true,
		Annotation: "pyexec.dev/preload", InjectorFlag: "preload", ChartValue: "sidecar.preload", ChartDefault: []string{},
		Doc: "comma-separated modules to import once and keep imported, e.g. numpy,pandas"},
	{Flag: "packages-dir", Path: true, Group: GroupPackages, Default: DefaultPackagesDir, Preflight: true,
		Doc: "writable directory for packages installed at run time; executions see it first on sys.path"},
	{Flag: "report", Path: true, Group: GroupPackages, Default: DefaultReport, Preflight: true,
		Doc: "where the preflight report (JSON) is written"},
	{Flag: "venv-dir", Path: true, Group: GroupPackages, Default: "", Preflight: true,
		Doc: "host only: use a venv that pyexec creates and owns at this path (ignored in a container)"},
	{Flag: "strict", Group: GroupPackages, Default: false, Preflight: true,
		Doc: "fail (exit 1) when a requirement is not met or a preload module does not import"},
	{Flag: "install", Group: GroupPackages, Repeatable: true, Preflight: true,
		Annotation: "pyexec.dev/install", InjectorFlag: "install", ChartValue: "sidecar.install", ChartDefault: []string{},
		Doc: `package to install into --packages-dir at start when the interpreter lacks it, e.g. "requests>=2" (repeatable; PYEXEC_INSTALL takes one per line)`},
	{Flag: "install-timeout", Group: GroupPackages, Default: DefaultInstallTimeout, Min: Positive, Preflight: true,
		Doc: "bound of one pip run"},
	{Flag: "index-url", Group: GroupPackages, Default: "", Preflight: true,
		Doc: "pip --index-url (default: pip's own configuration)"},
	{Flag: "extra-index-url", Group: GroupPackages, Repeatable: true, Preflight: true,
		Doc: "pip --extra-index-url (repeatable)"},
	{Flag: "find-links", Group: GroupPackages, Repeatable: true, Preflight: true,
		Doc: "pip --find-links: a directory or page of wheels (repeatable)"},
	{Flag: "no-index", Group: GroupPackages, Default: false, Preflight: true,
		Doc: "pip --no-index: use --find-links only"},
	{Flag: "trusted-host", Group: GroupPackages, Repeatable: true, Preflight: true,
		Doc: "pip --trusted-host (repeatable)"},
	{Flag: "inspect-timeout", Group: GroupPackages, Default: DefaultInspectTimeout, Min: Positive, Preflight: true,
		Doc: "bound of each interpreter run of the preflight (inspection, venv creation)"},
	{Flag: "allow-packages", Group: GroupPackages, Annotation: "pyexec.dev/allow-packages", DefaultDoc: "none",
		InjectorFlag: "allow-packages", ChartValue: "sidecar.allowPackages", ChartDefault: []string{},
		Doc: `comma-separated patterns of packages code may install at run time (POST /v1/packages), e.g. "numpy,scikit-*" or "*"; empty allows none`},

	// Probes.
	{Flag: "probe-addr", Group: GroupProbes, Default: DefaultProbeAddr,
		Doc: "TCP address of /healthz, /readyz and /metrics; empty disables"},
	{Flag: "probe-max-connections", Group: GroupProbes, Default: DefaultProbeMaxConnections, Min: 1,
		Doc: "connections open at once on the probe port; more are closed at once"},
	{Flag: "probe-max-connections-per-ip", Group: GroupProbes, Default: DefaultProbeMaxConnectionsPerIP, Min: 1,
		Doc: "connections open at once on the probe port from one remote address (every loopback address counts as one); more are closed at once"},
}

// Lookup is the setting of a serve flag; it panics on a name that is not one (a programming
// error, which every test that builds the commands meets).
func Lookup(flag string) Setting {
	for _, s := range Serve {
		if s.Flag == flag {
			return s
		}
	}
	panic("settings: no serve setting " + flag)
}

// Shared are the settings the injector sets or bounds: those with an annotation or an
// injector flag.
func Shared() []Setting {
	var out []Setting
	for _, s := range Serve {
		if s.Annotation != "" || s.InjectorFlag != "" {
			out = append(out, s)
		}
	}
	return out
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
	// Default is the default as the flag, the chart and the docs write it; empty when there
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
