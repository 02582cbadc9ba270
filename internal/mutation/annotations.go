package mutation

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"

	"github.com/pyexec/pyexec/internal/settings"
)

// Labels and annotations that select pods and record what the injector did.
const (
	// LabelInject opts a pod into injection. Accepted value: "true". The webhook's
	// objectSelector matches it, so the API server only sends opted-in pods; the offline
	// `pyexec-injector inject` checks it itself. Any other value (such as "false") keeps the
	// pod out, even with Defaults.Force. Default: absent, no injection.
	LabelInject = "pyexec.dev/inject"

	// LabelInjectEnabled is the value of LabelInject that opts a pod in.
	LabelInjectEnabled = "true"

	// AnnotationStatus is set by the injector, never by users, to StatusInjected once a pod
	// has been injected. A pod that carries it (with any value) is never injected again, which
	// makes a second call of the webhook (reinvocationPolicy IfNeeded) and a second offline
	// run no-ops.
	AnnotationStatus = "pyexec.dev/status"

	// StatusInjected is the value of AnnotationStatus on an injected pod.
	StatusInjected = "injected"

	// LabelAppName is the well-known name label. A pod whose LabelAppName is InjectorAppName
	// is the injector itself and is never injected, so the webhook cannot depend on itself.
	LabelAppName = "app.kubernetes.io/name"

	// InjectorAppName is the LabelAppName value of the injector's own pods.
	InjectorAppName = "pyexec-injector"

	// AnnotationDefaultContainer is kubectl's annotation naming the container that kubectl
	// logs and kubectl exec pick without -c. The injector sets it to the first app container
	// when the pod does not have it, so the added containers do not become the default.
	AnnotationDefaultContainer = "kubectl.kubernetes.io/default-container"
)

// Annotations that configure the injected containers. Every one is optional; an empty or
// all-blank value counts as absent, so its default applies.
const (
	// AnnotationImage is the image of the pyexec containers (pyexec-init, pyexec-runner and the
	// pyexec sidecar). Accepted: an image reference without blanks. Default: Defaults.Image.
	AnnotationImage = "pyexec.dev/image"

	// AnnotationImagePullPolicy is the imagePullPolicy of the pyexec containers. Accepted:
	// Always, IfNotPresent or Never. Default: Defaults.PullPolicy; when that is empty too the
	// field is left out and the API server's defaulting applies.
	AnnotationImagePullPolicy = "pyexec.dev/image-pull-policy"

	// AnnotationRequire lists required Python distributions, one per line, each with an
	// optional PEP 440 specifier (pandas>=2). Blank lines and lines starting with # are
	// dropped. It becomes PYEXEC_REQUIRE of pyexec-init, which checks the requirements against
	// the interpreter and reports them. Default: the injector's --require (the chart's
	// sidecar.require), else none; the value "none" says none over the injector's default. Lines are checked lightly here (no NUL, no pip options);
	// pyexec init parses PEP 508 fully.
	AnnotationRequire = "pyexec.dev/require"

	// AnnotationPreload lists modules to import once and keep imported, comma-separated, each
	// a dotted identifier (numpy,os.path). It becomes PYEXEC_PRELOAD of pyexec-init and the
	// sidecar: pyexec-init times each import, the sidecar has its runner keep them imported.
	// Default: the injector's --preload (the chart's sidecar.preload), else none; the value
	// "none" says none over the injector's default.
	AnnotationPreload = "pyexec.dev/preload"

	// AnnotationInstall lists packages that pyexec-init installs into the packages volume at
	// pod start when the interpreter lacks them, one per line with the syntax of
	// AnnotationRequire. It becomes PYEXEC_INSTALL. A failed install fails pyexec-init, so
	// the pod does not start. Default: the injector's --install (the chart's sidecar.install),
	// else none; the value "none" says none over the injector's default.
	AnnotationInstall = "pyexec.dev/install"

	// AnnotationAllowPackages lists the packages that code may install at run time through
	// POST /v1/packages, as comma-separated shell patterns over PEP 503 names (numpy,
	// scikit-*, *). It becomes PYEXEC_ALLOW_PACKAGES of the sidecar. Default: the injector's
	// --allow-packages (the chart's sidecar.allowPackages), else none, so code installs nothing
	// at run time; the value "none" says none over the injector's default.
	AnnotationAllowPackages = "pyexec.dev/allow-packages"

	// AnnotationTimeout is the default time limit of one execution, a Go duration above zero
	// (30s, 2m). It becomes PYEXEC_TIMEOUT of the sidecar and must not exceed the max timeout.
	// Default: the injector's --timeout (the chart's sidecar.timeout), else the sidecar's, 30s.
	AnnotationTimeout = "pyexec.dev/timeout"

	// AnnotationMaxTimeout is the longest time limit a request may ask for, a Go duration
	// above zero, not below the timeout. It becomes PYEXEC_MAX_TIMEOUT of the sidecar.
	// Default: the injector's --max-timeout (the chart's sidecar.maxTimeout), else the
	// sidecar's, 5m.
	AnnotationMaxTimeout = "pyexec.dev/max-timeout"

	// AnnotationMemoryLimitMB is the default memory limit of an execution (the resident memory
	// of its whole process tree) in MiB, a whole number from 32 to 4096 (the sidecar's largest). It
	// becomes PYEXEC_MEMORY_LIMIT_MB of the sidecar. Default: the injector's --memory-limit-mb
	// (the chart's sidecar.memoryLimitMB), else the sidecar's, 1024.
	AnnotationMemoryLimitMB = "pyexec.dev/memory-limit-mb"

	// AnnotationMaxConcurrent is how many executions run at once, a whole number above zero.
	// It becomes PYEXEC_MAX_CONCURRENT of the sidecar. Default: the runner's CPU limit rounded
	// up (pyexec.dev/runner-cpu-limit), else the sidecar's: the number of CPUs it sees.
	AnnotationMaxConcurrent = "pyexec.dev/max-concurrent"

	// AnnotationAllowUIDs lists the uids that may call the sidecar, comma-separated whole
	// numbers (e.g. "65532" for an app container that runs as 65532). The sidecar reads each
	// caller's uid from the socket (SO_PEERCRED) and answers any other uid 403 Forbidden. It
	// becomes PYEXEC_ALLOW_UIDS of the sidecar. Default: every uid in the pod may call.
	AnnotationAllowUIDs = "pyexec.dev/allow-uids"

	// AnnotationNetwork is whether the code that the sidecar runs may use the network.
	// Accepted: deny (no socket at all but socketpair) or allow (network sockets; Unix sockets
	// stay denied). It becomes PYEXEC_NETWORK of the sidecar; a request may turn the network
	// off, and on only under allow. Default: Defaults.Network (the injector's --network), deny
	// when that is empty.
	AnnotationNetwork = "pyexec.dev/network"

	// AnnotationRequireIsolation is whether the sidecar refuses to start on a node whose kernel
	// lacks a layer of confinement: Landlock (filesystem rules, and scoped signals, Landlock
	// ABI 6: Linux 6.12 or later with Landlock enabled) and seccomp. Accepted: true or false.
	// true: the sidecar exits at start on such a node, so no code runs less confined than
	// expected (the pod does not become ready; with a native sidecar its app containers do
	// not start). false: it logs a warning, reports the missing layers (GET /v1/info, the
	// pyexec_isolation_layer_active metric) and serves. It becomes PYEXEC_REQUIRE_ISOLATION of
	// the sidecar. Default: Defaults.RequireIsolation (the injector's --require-isolation;
	// true in the chart).
	AnnotationRequireIsolation = "pyexec.dev/require-isolation"

	// AnnotationMaxSessions is how many sessions (POST /v1/sessions: an interpreter whose
	// state persists between calls) may be open at once, a whole number from 0; 0 switches
	// sessions off. It becomes PYEXEC_MAX_SESSIONS of the sidecar. Default:
	// Defaults.MaxSessions (the injector's --max-sessions; 8 in the chart), else the
	// sidecar's, 8.
	AnnotationMaxSessions = "pyexec.dev/max-sessions"

	// AnnotationMaxCheckpointsPerSession is how many checkpoints (a frozen copy of a session, to
	// restore it: an undo) a session may hold at once, a whole number from 0 to 64; 0 switches
	// checkpoints off. It becomes PYEXEC_MAX_CHECKPOINTS_PER_SESSION of the sidecar. Default:
	// the sidecar's, 4.
	AnnotationMaxCheckpointsPerSession = "pyexec.dev/max-checkpoints-per-session"

	// AnnotationRunnerMemoryHighWater is the percentage of the runner's memory limit
	// (pyexec.dev/runner-memory-limit) past which the runner's memory watchdog ends the
	// execution or session that holds the most memory, before the kernel's OOM killer would take
	// a process of any; a whole number from 0 to 99, 0 turning the watchdog off. It becomes
	// PYEXEC_RUNNER_MEMORY_HIGH_WATER of the sidecar. Default: the sidecar's, 90.
	AnnotationRunnerMemoryHighWater = "pyexec.dev/runner-memory-high-water"

	// AnnotationSessionIdleTimeout is how long a session lives without a call unless it asks
	// for another time, a Go duration above zero (90s, 30m), no longer than the sidecar's
	// max session idle timeout (1h). It becomes PYEXEC_SESSION_IDLE_TIMEOUT of the sidecar.
	// Default: Defaults.SessionIdleTimeout (the injector's --session-idle-timeout; 10m in the
	// chart), else the sidecar's, 10m.
	AnnotationSessionIdleTimeout = "pyexec.dev/session-idle-timeout"

	// AnnotationCPURequest is the CPU request of the server's containers, the pyexec sidecar
	// and pyexec-init (the API, packages, pip), a quantity above zero (50m, 1). It must not
	// exceed the CPU limit. Default: Defaults.SidecarResources (the injector's
	// --sidecar-cpu-request), else DefaultCPURequest.
	AnnotationCPURequest = "pyexec.dev/cpu-request"

	// AnnotationCPULimit is the CPU limit of the pyexec sidecar and pyexec-init, a quantity
	// above zero, not below the CPU request. Default: Defaults.SidecarResources (the
	// injector's --sidecar-cpu-limit), else none (no CPU limit).
	AnnotationCPULimit = "pyexec.dev/cpu-limit"

	// AnnotationMemoryRequest is the memory request of the pyexec sidecar and pyexec-init, a
	// quantity above zero (64Mi). It must not exceed the memory limit. Default:
	// Defaults.SidecarResources (the injector's --sidecar-memory-request), else
	// DefaultMemoryRequest.
	AnnotationMemoryRequest = "pyexec.dev/memory-request"

	// AnnotationMemoryLimit is the memory limit of the pyexec sidecar and pyexec-init, a
	// quantity above zero, not below the memory request. pip runs in them, code never does.
	// Default: Defaults.SidecarResources (the injector's --sidecar-memory-limit), else
	// DefaultMemoryLimit.
	AnnotationMemoryLimit = "pyexec.dev/memory-limit"

	// AnnotationRunnerCPURequest is the CPU request of pyexec-runner, the container of every
	// execution and session, a quantity above zero (100m, 1). It must not exceed the runner's
	// CPU limit. Default: Defaults.RunnerResources (the injector's --runner-cpu-request), else
	// DefaultRunnerCPURequest.
	AnnotationRunnerCPURequest = "pyexec.dev/runner-cpu-request"

	// AnnotationRunnerCPULimit is the CPU limit of pyexec-runner, a quantity above zero, not
	// below its CPU request: the kernel's CPU quota then throttles code and never the server.
	// Default: Defaults.RunnerResources (the injector's --runner-cpu-limit), else none.
	AnnotationRunnerCPULimit = "pyexec.dev/runner-cpu-limit"

	// AnnotationRunnerMemoryRequest is the memory request of pyexec-runner, a quantity above
	// zero (128Mi). It must not exceed the runner's memory limit. Default:
	// Defaults.RunnerResources (the injector's --runner-memory-request), else
	// DefaultRunnerMemoryRequest.
	AnnotationRunnerMemoryRequest = "pyexec.dev/runner-memory-request"

	// AnnotationRunnerMemoryLimit is the memory limit of pyexec-runner, a quantity above zero,
	// not below its memory request: the memory of every execution and session, and what code
	// writes to /dev/shm (pyexec-shm is in memory), count against it, and the kernel's OOM
	// killer acts inside the runner's container, never on the server. Default:
	// Defaults.RunnerResources (the injector's --runner-memory-limit), else
	// DefaultRunnerMemoryLimit.
	AnnotationRunnerMemoryLimit = "pyexec.dev/runner-memory-limit"

	// AnnotationShmSize is the size of the runner's /dev/shm (the sizeLimit of the in-memory
	// emptyDir pyexec-shm, the app containers' /dev/shm being another), a quantity above zero
	// (64Mi, 1Gi). Default: Defaults.ShmSize (the injector's --runner-shm-size), else
	// DefaultShmSize.
	AnnotationShmSize = "pyexec.dev/shm-size"

	// AnnotationServerUID pins the uid of the server: pyexec-init and the pyexec sidecar run as
	// it, and it is the group of every pyexec container, through which the runner reaches the
	// directories the server gives it. Accepted: a whole number from 1 to MaxUID (to
	// MaxUserNamespaceUID in a pod with hostUsers: false), other than the runner's uid.
	// Default: drawn per pod from Defaults.UIDRange (the injector's --uid-range), or from
	// UserNamespaceUIDRange in a pod with hostUsers: false. Pin the uids where each namespace
	// has a range of its own (OpenShift's restricted SCC).
	AnnotationServerUID = "pyexec.dev/server-uid"

	// AnnotationRunnerUID pins the uid of the runner: pyexec-runner, and every execution and
	// session in it, run as it. Accepted and default as for AnnotationServerUID; it must differ
	// from the server's uid, pinned or drawn.
	AnnotationRunnerUID = "pyexec.dev/runner-uid"

	// AnnotationContainers names the app containers that get the socket (the pyexec-run
	// volume, read-only, and PYEXEC_SOCKET), comma-separated. Each name must be one of the
	// pod's containers (not an init container). Default: every app container.
	AnnotationContainers = "pyexec.dev/containers"

	// AnnotationSocketDir is where the app containers see the socket's directory: an
	// absolute, clean path other than /, at most 95 bytes long so that the socket path
	// (DIR/pyexec.sock) fits a Unix socket address, and not already mounted in a chosen
	// container. The app containers get PYEXEC_SOCKET=DIR/pyexec.sock. The pyexec
	// containers always use SocketDir. Default: SocketDir (/var/run/pyexec).
	AnnotationSocketDir = "pyexec.dev/socket-dir"

	// AnnotationNativeSidecar chooses how the sidecars (the runner and the server) run.
	// Accepted: auto, true or false. true: as native sidecars (init containers with
	// restartPolicy Always, Kubernetes 1.29 or later; the server's startup probe holds back
	// the app containers), so app containers start only once the server serves and Jobs
	// complete. false: as regular containers next to the app containers. auto:
	// Defaults.NativeSidecar, which the webhook sets from the API server's version. A pod
	// with restartPolicy Never or OnFailure (a Job's pod) needs a native sidecar: a regular
	// one would keep it from ever completing. Default: auto.
	AnnotationNativeSidecar = "pyexec.dev/native-sidecar"
)

// Values of AnnotationNetwork and Defaults.Network, as `pyexec serve --network` takes them.
const (
	// NetworkDeny keeps the code off the network.
	NetworkDeny = settings.NetworkDeny
	// NetworkAllow lets the code use the network.
	NetworkAllow = settings.NetworkAllow
)

// Defaults of the containers' resources and of the runner's /dev/shm, used when neither the
// annotations nor Defaults give them.
const (
	// DefaultCPURequest is the CPU request of pyexec and pyexec-init (AnnotationCPURequest).
	DefaultCPURequest = settings.DefaultSidecarCPURequest
	// DefaultMemoryRequest is the memory request of pyexec and pyexec-init
	// (AnnotationMemoryRequest).
	DefaultMemoryRequest = settings.DefaultSidecarMemoryRequest
	// DefaultMemoryLimit is the memory limit of pyexec and pyexec-init (AnnotationMemoryLimit).
	DefaultMemoryLimit = settings.DefaultSidecarMemoryLimit

	// DefaultRunnerCPURequest is the CPU request of pyexec-runner (AnnotationRunnerCPURequest).
	DefaultRunnerCPURequest = settings.DefaultRunnerCPURequest
	// DefaultRunnerMemoryRequest is the memory request of pyexec-runner
	// (AnnotationRunnerMemoryRequest).
	DefaultRunnerMemoryRequest = settings.DefaultRunnerMemoryRequest
	// DefaultRunnerMemoryLimit is the memory limit of pyexec-runner
	// (AnnotationRunnerMemoryLimit).
	DefaultRunnerMemoryLimit = settings.DefaultRunnerMemoryLimit

	// DefaultShmSize is the size of pyexec-runner's /dev/shm (AnnotationShmSize).
	DefaultShmSize = settings.DefaultShmSize
)

// DefaultSidecarResources are the requests and limits of pyexec and pyexec-init when
// Defaults.SidecarResources is nil.
func DefaultSidecarResources() corev1.ResourceRequirements {
	return resources(DefaultCPURequest, "", DefaultMemoryRequest, DefaultMemoryLimit)
}

// DefaultRunnerResources are the requests and limits of pyexec-runner when
// Defaults.RunnerResources is nil.
func DefaultRunnerResources() corev1.ResourceRequirements {
	return resources(DefaultRunnerCPURequest, "", DefaultRunnerMemoryRequest, DefaultRunnerMemoryLimit)
}

// resources builds requests and limits of valid quantities; "" leaves one out.
func resources(cpuRequest, cpuLimit, memoryRequest, memoryLimit string) corev1.ResourceRequirements {
	res := corev1.ResourceRequirements{Requests: corev1.ResourceList{}, Limits: corev1.ResourceList{}}
	for _, q := range []struct {
		list  corev1.ResourceList
		name  corev1.ResourceName
		value string
	}{
		{res.Requests, corev1.ResourceCPU, cpuRequest},
		{res.Limits, corev1.ResourceCPU, cpuLimit},
		{res.Requests, corev1.ResourceMemory, memoryRequest},
		{res.Limits, corev1.ResourceMemory, memoryLimit},
	} {
		if q.value != "" {
			q.list[q.name] = resource.MustParse(q.value)
		}
	}
	return res
}

// Bounds of the socket path. The sidecar's own defaults and bounds, which ParseConfig checks
// the annotations against so that a pod is refused at admission rather than left with a
// sidecar that exits on a usage error, are in internal/settings.
const (
	maxSocketPathLen = 107 // sun_path is 108 bytes with the terminating NUL
	maxSocketDirLen  = maxSocketPathLen - len("/"+SocketFile)
)

// moduleName is a dotted Python identifier, as pyexec init accepts for --preload.
var moduleName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$`)

// Defaults are the injector's settings that annotations may override.
type Defaults struct {
	// Image is the pyexec image used when AnnotationImage is absent.
	Image string
	// PullPolicy is used when AnnotationImagePullPolicy is absent; empty leaves the field out.
	PullPolicy corev1.PullPolicy
	// NativeSidecar is what AnnotationNativeSidecar "auto" means: the webhook sets it when the
	// API server is 1.29 or later.
	NativeSidecar bool
	// Network is what an absent AnnotationNetwork means: NetworkDeny or NetworkAllow; empty
	// means NetworkDeny.
	Network string
	// RequireIsolation is what an absent AnnotationRequireIsolation means.
	RequireIsolation bool
	// MaxSessions is what an absent AnnotationMaxSessions means (0 switches sessions off);
	// nil means the sidecar's default, 8.
	MaxSessions *int
	// SessionIdleTimeout is what an absent AnnotationSessionIdleTimeout means; 0 means the
	// sidecar's default, 10m.
	SessionIdleTimeout time.Duration
	// MaxCheckpointsPerSession is what an absent AnnotationMaxCheckpointsPerSession means (0
	// switches checkpoints off); nil means the sidecar's default, 4.
	MaxCheckpointsPerSession *int
	// SidecarResources are the requests and limits of pyexec and pyexec-init that
	// AnnotationCPURequest, AnnotationCPULimit, AnnotationMemoryRequest and
	// AnnotationMemoryLimit override; nil means DefaultSidecarResources().
	SidecarResources *corev1.ResourceRequirements
	// RunnerResources are the requests and limits of pyexec-runner that the runner's resource
	// annotations override; nil means DefaultRunnerResources().
	RunnerResources *corev1.ResourceRequirements
	// ShmSize is what an absent AnnotationShmSize means; zero means DefaultShmSize.
	ShmSize resource.Quantity
	// UIDRange is the range the uids that the annotations do not pin are drawn from (a pod
	// with hostUsers: false draws from UserNamespaceUIDRange instead); zero means
	// DefaultUIDRange.
	UIDRange UIDRange
	// Rand is where the uids are drawn from; nil means crypto/rand. The webhook shares its
	// Defaults between concurrent admissions, so there it must be safe for concurrent use.
	Rand io.Reader
	// Annotations are the defaults of the annotations that a pod leaves out (or leaves blank),
	// by name: the injector's flags of the code's settings (--timeout, --preload, ...), parsed
	// and checked as the pod's own annotations are. A value equal to the sidecar's own default
	// may be left out: it makes no difference.
	Annotations map[string]string
	// Force injects pods that do not carry LabelInject at all (offline use: inject every pod
	// template of a file). A pod whose LabelInject has another value than "true", an injected
	// pod and the injector's own pods are still left alone.
	Force bool
}

// Config is everything the injection needs, parsed from a pod's annotations and the Defaults
// by ParseConfig. Zero values of the sidecar settings mean "not set": the sidecar's own
// default applies and no variable is added. The confinement settings (Network,
// RequireIsolation) are the exception: the injector has defaults for them and always sets
// their variables, so that the pod's spec says how its sidecar confines code. So are the
// session settings (MaxSessions, SessionIdleTimeout), which the injector has defaults for
// too; ParseConfig always fills them, and a Config built by hand without them gets the
// sidecar's defaults written out.
type Config struct {
	Image      string            // image of both pyexec containers
	PullPolicy corev1.PullPolicy // empty: left to the API server

	Require       []string // PYEXEC_REQUIRE of pyexec-init, one requirement each
	Preload       []string // PYEXEC_PRELOAD of both containers, in import order
	Install       []string // PYEXEC_INSTALL of pyexec-init
	AllowPackages []string // PYEXEC_ALLOW_PACKAGES of the sidecar

	Timeout       time.Duration // PYEXEC_TIMEOUT; 0: not set
	MaxTimeout    time.Duration // PYEXEC_MAX_TIMEOUT; 0: not set
	MemoryLimitMB int           // PYEXEC_MEMORY_LIMIT_MB; 0: not set
	MaxConcurrent int           // PYEXEC_MAX_CONCURRENT; 0: not set
	AllowUIDs     []uint32      // PYEXEC_ALLOW_UIDS; empty: every uid

	Network          string // PYEXEC_NETWORK: NetworkDeny or NetworkAllow; empty: NetworkDeny
	RequireIsolation bool   // PYEXEC_REQUIRE_ISOLATION

	MaxSessions *int // PYEXEC_MAX_SESSIONS, 0 switches sessions off; nil: the sidecar's default, 8
	// MaxCheckpointsPerSession is PYEXEC_MAX_CHECKPOINTS_PER_SESSION, 0 switches checkpoints
	// off; nil: the sidecar's default, 4.
	MaxCheckpointsPerSession *int
	SessionIdleTimeout       time.Duration // PYEXEC_SESSION_IDLE_TIMEOUT; 0: the sidecar's default, 10m

	// RunnerMemoryHighWater is PYEXEC_RUNNER_MEMORY_HIGH_WATER, 0 turns the runner's memory
	// watchdog off; nil: the sidecar's default, 90.
	RunnerMemoryHighWater *int

	// ServerUID is the uid of pyexec-init and the pyexec sidecar, and the group of every pyexec
	// container; RunnerUID is the uid of pyexec-runner. ParseConfig sets both, distinct and
	// above zero; a Config built by hand must too.
	ServerUID, RunnerUID int64

	// Resources of pyexec and pyexec-init.
	Resources corev1.ResourceRequirements
	// RunnerResources of pyexec-runner.
	RunnerResources corev1.ResourceRequirements
	// ShmSize is the sizeLimit of pyexec-shm, the runner's /dev/shm; zero sets none.
	ShmSize resource.Quantity

	// Containers are the app containers that get the socket, in the pod's order.
	Containers []string
	// SocketDir is where the chosen app containers mount pyexec-run.
	SocketDir string
	// NativeSidecar runs the sidecar as an init container with restartPolicy Always.
	NativeSidecar bool
}

// AnnotationError is an annotation value that ParseConfig refuses. The webhook denies the pod
// with its message, and the offline command prints it with the document's name.
type AnnotationError struct {
	Annotation string // the annotation's key, e.g. pyexec.dev/timeout
	Value      string // the value found (or, for a default that does not fit the pod, that default)
	Accepted   string // what would be accepted, completing "want ..."
}

// Error reads e.g. `annotation pyexec.dev/timeout="ten": want a Go duration such as 30s`.
func (e *AnnotationError) Error() string {
	return fmt.Sprintf("annotation %s=%q: want %s", e.Annotation, e.Value, e.Accepted)
}

// ParseConfig reads and validates the pod's pyexec.dev annotations with d for what they leave
// out, and draws the uids that they do not pin. Every annotation is checked, in the order of
// their declaration: one bad annotation is returned as an *AnnotationError, several as
// AnnotationErrors; an error reading d.Rand is returned as it is. pod only needs its metadata, containers, restartPolicy and
// hostUsers.
func ParseConfig(pod *corev1.Pod, d Defaults) (*Config, error) {
	p := parser{ann: pod.Annotations}
	if len(d.Annotations) > 0 {
		p = parser{ann: maps.Clone(d.Annotations), defaulted: map[string]bool{}}
		for k := range d.Annotations {
			p.defaulted[k] = true
		}
		for k, v := range pod.Annotations {
			if strings.TrimSpace(v) != "" {
				p.ann[k] = v
				delete(p.defaulted, k)
			}
		}
	}
	cfg := &Config{}
	var err error
	var errs []error

	cfg.Image, err = p.image(d.Image)
	errs = append(errs, err)
	cfg.PullPolicy, err = p.pullPolicy(d.PullPolicy)
	errs = append(errs, err)
	cfg.Require, err = p.lines(AnnotationRequire)
	errs = append(errs, err)
	cfg.Preload, err = p.modules()
	errs = append(errs, err)
	cfg.Install, err = p.lines(AnnotationInstall)
	errs = append(errs, err)
	cfg.AllowPackages, err = p.patterns()
	errs = append(errs, err)
	cfg.Timeout, cfg.MaxTimeout, err = p.timeouts()
	errs = append(errs, err)
	minMB, maxMB := intBounds("memory-limit-mb")
	cfg.MemoryLimitMB, err = p.intInRange(AnnotationMemoryLimitMB, minMB, maxMB,
		fmt.Sprintf("a whole number of MiB from %d to %d, such as 1024", minMB, maxMB))
	errs = append(errs, err)
	minConcurrent, _ := intBounds("max-concurrent")
	cfg.MaxConcurrent, err = p.intInRange(AnnotationMaxConcurrent, minConcurrent, 0, "a whole number above zero, such as 4")
	errs = append(errs, err)
	cfg.AllowUIDs, err = p.uids(AnnotationAllowUIDs)
	errs = append(errs, err)
	cfg.Network, err = p.network(d.Network)
	errs = append(errs, err)
	cfg.RequireIsolation, err = p.boolean(AnnotationRequireIsolation, d.RequireIsolation)
	errs = append(errs, err)
	cfg.MaxSessions, err = p.maxSessions(d.MaxSessions)
	errs = append(errs, err)
	cfg.SessionIdleTimeout, err = p.sessionIdleTimeout(d.SessionIdleTimeout)
	errs = append(errs, err)
	minCP, maxCP := intBounds("max-checkpoints-per-session")
	cfg.MaxCheckpointsPerSession, err = p.optionalInt(AnnotationMaxCheckpointsPerSession, minCP, maxCP,
		fmt.Sprintf("a whole number of checkpoints from %d (checkpoints off) to %d, such as %d", minCP, maxCP, settings.DefaultMaxCheckpoints))
	if err == nil && cfg.MaxCheckpointsPerSession == nil && d.MaxCheckpointsPerSession != nil {
		if n := *d.MaxCheckpointsPerSession; n < minCP || n > maxCP {
			err = &AnnotationError{AnnotationMaxCheckpointsPerSession, strconv.Itoa(n), fmt.Sprintf("a whole number from %d to %d: the injector's default is out of range", minCP, maxCP)}
		} else {
			cfg.MaxCheckpointsPerSession = ptr.To(n)
		}
	}
	errs = append(errs, err)
	minHW, maxHW := intBounds("runner-memory-high-water")
	cfg.RunnerMemoryHighWater, err = p.optionalInt(AnnotationRunnerMemoryHighWater, minHW, maxHW,
		fmt.Sprintf("a whole percentage from %d (no watchdog) to %d, such as %d", minHW, maxHW, settings.DefaultRunnerMemoryHighWater))
	errs = append(errs, err)
	cfg.Resources, err = p.resources(sidecarResourceKeys, orDefaultResources(d.SidecarResources, DefaultSidecarResources))
	errs = append(errs, err)
	cfg.RunnerResources, err = p.resources(runnerResourceKeys, orDefaultResources(d.RunnerResources, DefaultRunnerResources))
	errs = append(errs, err)
	cfg.ShmSize, err = p.shmSize(d.ShmSize)
	errs = append(errs, err)
	cfg.ServerUID, cfg.RunnerUID, err = p.identity(d, pod.Spec.HostUsers)
	errs = append(errs, err)
	cfg.Containers, err = p.containers(pod.Spec.Containers)
	errs = append(errs, err)
	if err == nil { // the socket directory must suit the chosen containers
		cfg.SocketDir, err = p.socketDir(pod.Spec.Containers, cfg.Containers)
		errs = append(errs, err)
	}
	cfg.NativeSidecar, err = p.nativeSidecar(d.NativeSidecar, pod.Spec.RestartPolicy)
	errs = append(errs, err)
	var bad AnnotationErrors
	for _, err := range errs {
		var ae *AnnotationError
		switch {
		case err == nil:
		case errors.As(err, &ae):
			if p.defaulted[ae.Annotation] {
				ae.Accepted += DefaultedNote
			}
			bad = append(bad, ae)
		default:
			return nil, err // reading d.Rand
		}
	}
	switch len(bad) {
	case 0:
		return cfg, nil
	case 1:
		return nil, bad[0]
	}
	return nil, bad
}

// None is the value of a list annotation (AnnotationRequire, AnnotationPreload,
// AnnotationInstall, AnnotationAllowPackages) that says the list is empty, over the injector's
// default; a blank value takes that default.
const None = "none"

// DefaultedNote ends the error of an annotation whose value is the injector's default
// (Defaults.Annotations), not the pod's.
const DefaultedNote = " (the value is the injector's default: set the annotation on the pod, or change that default)"

// AnnotationErrors are the annotations of one pod that ParseConfig refuses, more than one, in
// the order of their declaration; errors.As finds the first.
type AnnotationErrors []*AnnotationError

// Error reads each annotation's error, "; " between them.
func (e AnnotationErrors) Error() string {
	msgs := make([]string, len(e))
	for i, ae := range e {
		msgs[i] = ae.Error()
	}
	return strings.Join(msgs, "; ")
}

// Unwrap returns each *AnnotationError.
func (e AnnotationErrors) Unwrap() []error {
	out := make([]error, len(e))
	for i, ae := range e {
		out[i] = ae
	}
	return out
}

// parser reads one pod's annotations. Each method parses one annotation (or a pair that is
// checked together) and returns its zero value when the annotation is absent or blank.
type parser struct {
	ann       map[string]string
	defaulted map[string]bool // the annotations whose value is the injector's default
}

// get returns the trimmed value of an annotation and whether it is set and not blank.
func (p parser) get(key string) (string, bool) {
	v := strings.TrimSpace(p.ann[key])
	return v, v != ""
}

func (p parser) image(def string) (string, error) {
	v, ok := p.get(AnnotationImage)
	if !ok {
		if def == "" {
			return "", &AnnotationError{AnnotationImage, "", "an image reference: the injector has no default image"}
		}
		return def, nil
	}
	if strings.ContainsFunc(v, isBlankOrControl) {
		return "", &AnnotationError{AnnotationImage, v, "an image reference without blanks, such as ghcr.io/pyexec/pyexec:1.0"}
	}
	return v, nil
}

func (p parser) pullPolicy(def corev1.PullPolicy) (corev1.PullPolicy, error) {
	v, ok := p.get(AnnotationImagePullPolicy)
	if !ok {
		return def, nil
	}
	switch pp := corev1.PullPolicy(v); pp {
	case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
		return pp, nil
	}
	return "", &AnnotationError{AnnotationImagePullPolicy, v, "Always, IfNotPresent or Never"}
}

// uids parses a comma-separated list of uids; a repeat is dropped.
func (p parser) uids(key string) ([]uint32, error) {
	v, ok := p.get(key)
	if !ok {
		return nil, nil
	}
	var out []uint32
	for _, f := range strings.Split(v, ",") {
		uid, err := strconv.ParseUint(strings.TrimSpace(f), 10, 32)
		if err != nil || uid > math.MaxInt32 {
			return nil, &AnnotationError{key, v, "comma-separated uids (whole numbers from 0 to 2147483647), such as 1000,65532"}
		}
		if !slices.Contains(out, uint32(uid)) {
			out = append(out, uint32(uid))
		}
	}
	return out, nil
}

// network reads AnnotationNetwork, else the default def (NetworkDeny when empty).
func (p parser) network(def string) (string, error) {
	v, ok := p.get(AnnotationNetwork)
	if !ok {
		if def == "" {
			return NetworkDeny, nil
		}
		if def != NetworkDeny && def != NetworkAllow {
			return "", &AnnotationError{AnnotationNetwork, def, "deny or allow: the injector's default is neither"}
		}
		return def, nil
	}
	if v != NetworkDeny && v != NetworkAllow {
		return "", &AnnotationError{AnnotationNetwork, v, "deny or allow"}
	}
	return v, nil
}

// boolean reads an annotation that is exactly true or false, else the default def.
func (p parser) boolean(key string, def bool) (bool, error) {
	switch v, ok := p.get(key); {
	case !ok:
		return def, nil
	case v == "true":
		return true, nil
	case v == "false":
		return false, nil
	default:
		return false, &AnnotationError{key, v, "true or false"}
	}
}

// lines parses a one-requirement-per-line annotation (require, install).
func (p parser) lines(key string) ([]string, error) {
	v, ok := p.get(key)
	if !ok || v == None {
		return nil, nil
	}
	const want = "one requirement per line, such as pandas>=2"
	var out []string
	for _, line := range strings.Split(v, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
			continue
		case strings.ContainsRune(line, 0):
			return nil, &AnnotationError{key, v, want + "; a line holds a NUL byte"}
		case strings.HasPrefix(line, "-"):
			return nil, &AnnotationError{key, v, fmt.Sprintf("%s; %q is a pip option, not a requirement", want, line)}
		}
		out = append(out, line)
	}
	return out, nil
}

// commaList splits a comma-separated value into its trimmed, non-empty items.
func commaList(v string) []string {
	var out []string
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

func (p parser) modules() ([]string, error) {
	v, ok := p.get(AnnotationPreload)
	if !ok || v == None {
		return nil, nil
	}
	mods := commaList(v)
	for _, m := range mods {
		if !moduleName.MatchString(m) {
			return nil, &AnnotationError{AnnotationPreload, v,
				fmt.Sprintf("comma-separated module names such as numpy,os.path; %q is not one", m)}
		}
	}
	return mods, nil
}

func (p parser) patterns() ([]string, error) {
	v, ok := p.get(AnnotationAllowPackages)
	if !ok || v == None {
		return nil, nil
	}
	pats := commaList(v)
	for _, pat := range pats {
		_, err := path.Match(strings.ToLower(pat), "")
		if err != nil || strings.ContainsFunc(pat, isBlankOrControl) {
			return nil, &AnnotationError{AnnotationAllowPackages, v,
				fmt.Sprintf("comma-separated package patterns such as numpy,scikit-*; %q is not one", pat)}
		}
	}
	return pats, nil
}

func (p parser) duration(key string) (time.Duration, error) {
	v, ok := p.get(key)
	if !ok {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, &AnnotationError{key, v, "a Go duration such as 30s"}
	}
	if d <= 0 {
		return 0, &AnnotationError{key, v, "a Go duration above zero, such as 30s"}
	}
	return d, nil
}

// timeouts parses the timeout and the max timeout, and checks them together with the
// sidecar's defaults standing in for the one that is not set.
func (p parser) timeouts() (timeout, maxTimeout time.Duration, err error) {
	if timeout, err = p.duration(AnnotationTimeout); err != nil {
		return 0, 0, err
	}
	if maxTimeout, err = p.duration(AnnotationMaxTimeout); err != nil {
		return 0, 0, err
	}
	effTimeout, effMax := orDefault(timeout, settings.DefaultTimeout), orDefault(maxTimeout, settings.DefaultMaxTimeout)
	if effTimeout <= effMax {
		return timeout, maxTimeout, nil
	}
	if timeout != 0 {
		v, _ := p.get(AnnotationTimeout)
		return 0, 0, &AnnotationError{AnnotationTimeout, v,
			fmt.Sprintf("a Go duration no longer than the max timeout %v (%s)", effMax, AnnotationMaxTimeout)}
	}
	v, _ := p.get(AnnotationMaxTimeout)
	return 0, 0, &AnnotationError{AnnotationMaxTimeout, v,
		fmt.Sprintf("a Go duration no shorter than the timeout %v (%s)", effTimeout, AnnotationTimeout)}
}

// maxSessions reads AnnotationMaxSessions, else the default def, else the sidecar's default.
func (p parser) maxSessions(def *int) (*int, error) {
	const want = "a whole number of sessions from 0 (0 switches sessions off), such as 8"
	v, ok := p.get(AnnotationMaxSessions)
	if !ok {
		switch {
		case def == nil:
			return ptr.To(settings.DefaultMaxSessions), nil
		case *def < 0:
			return nil, &AnnotationError{AnnotationMaxSessions, strconv.Itoa(*def), want + ": the injector's default is negative"}
		}
		return ptr.To(*def), nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return nil, &AnnotationError{AnnotationMaxSessions, v, want}
	}
	return &n, nil
}

// sessionIdleTimeout reads AnnotationSessionIdleTimeout, else the default def (the sidecar's
// when 0). Either must be above zero and within the sidecar's max session idle timeout, which
// no annotation changes.
func (p parser) sessionIdleTimeout(def time.Duration) (time.Duration, error) {
	_, bound := settings.Lookup("session-idle-timeout").AnnotationBounds()
	maxIdle := bound.(time.Duration)
	within := fmt.Sprintf("a Go duration no longer than the sidecar's max session idle timeout %v, such as 10m",
		maxIdle)
	d, err := p.duration(AnnotationSessionIdleTimeout)
	switch {
	case err != nil:
		return 0, err
	case d > maxIdle:
		v, _ := p.get(AnnotationSessionIdleTimeout)
		return 0, &AnnotationError{AnnotationSessionIdleTimeout, v, within}
	case d > 0:
		return d, nil
	case def == 0:
		return settings.DefaultSessionIdleTimeout, nil
	case def < 0:
		return 0, &AnnotationError{AnnotationSessionIdleTimeout, def.String(),
			"a Go duration above zero, such as 10m: the injector's default is not"}
	case def > maxIdle:
		return 0, &AnnotationError{AnnotationSessionIdleTimeout, def.String(), within + ": the injector's default is longer"}
	}
	return def, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// intBounds are the bounds of the annotation of an int setting of the sidecar
// (internal/settings), max 0 when it has none.
func intBounds(flag string) (min, max int) {
	lo, hi := settings.Lookup(flag).AnnotationBounds()
	min, _ = lo.(int)
	max, _ = hi.(int)
	return min, max
}

// intInRange reads a whole number from min to max (max 0: no upper bound); 0 when unset.
func (p parser) intInRange(key string, min, max int, want string) (int, error) {
	v, ok := p.get(key)
	if !ok {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < min || (max > 0 && n > max) {
		return 0, &AnnotationError{key, v, want}
	}
	return n, nil
}

// optionalInt reads the integer annotation key, from min to max; nil when it is absent.
func (p parser) optionalInt(key string, min, max int, want string) (*int, error) {
	v, ok := p.get(key)
	if !ok {
		return nil, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < min || n > max {
		return nil, &AnnotationError{key, v, want}
	}
	return &n, nil
}

// resourceKeys are the annotations of one container's resources.
type resourceKeys struct {
	cpuRequest, cpuLimit, memoryRequest, memoryLimit string
}

var (
	sidecarResourceKeys = resourceKeys{AnnotationCPURequest, AnnotationCPULimit, AnnotationMemoryRequest, AnnotationMemoryLimit}
	runnerResourceKeys  = resourceKeys{AnnotationRunnerCPURequest, AnnotationRunnerCPULimit, AnnotationRunnerMemoryRequest, AnnotationRunnerMemoryLimit}
)

// orDefaultResources is a copy of *res, or def() when res is nil.
func orDefaultResources(res *corev1.ResourceRequirements, def func() corev1.ResourceRequirements) corev1.ResourceRequirements {
	if res == nil {
		return def()
	}
	return *res.DeepCopy()
}

// resources builds a container's requests and limits: the annotations keys over the defaults
// def, each above zero, and no request above its limit. When a request exceeds its limit, the
// annotation that was set is blamed (the request when both were); when neither was, the
// defaults are.
func (p parser) resources(keys resourceKeys, def corev1.ResourceRequirements) (corev1.ResourceRequirements, error) {
	pairs := []struct {
		name           corev1.ResourceName
		what, example  string
		reqKey, limKey string
	}{
		{corev1.ResourceCPU, "CPU", "100m", keys.cpuRequest, keys.cpuLimit},
		{corev1.ResourceMemory, "memory", "128Mi", keys.memoryRequest, keys.memoryLimit},
	}
	res := corev1.ResourceRequirements{Requests: corev1.ResourceList{}, Limits: corev1.ResourceList{}}
	for _, pr := range pairs {
		req, reqSet, err := p.quantity(pr.reqKey, def.Requests, pr.name, pr.what, pr.example)
		if err != nil {
			return res, err
		}
		lim, limSet, err := p.quantity(pr.limKey, def.Limits, pr.name, pr.what, pr.example)
		if err != nil {
			return res, err
		}
		if req != nil {
			res.Requests[pr.name] = *req
		}
		if lim == nil {
			continue
		}
		res.Limits[pr.name] = *lim
		if req == nil || req.Cmp(*lim) <= 0 {
			continue
		}
		switch {
		case !reqSet && !limSet:
			return res, &AnnotationError{pr.reqKey, req.String(),
				fmt.Sprintf("a %s quantity no larger than the %s limit %s (%s): the injector's defaults are not", pr.what, pr.what, lim, pr.limKey)}
		case reqSet:
			v, _ := p.get(pr.reqKey)
			return res, &AnnotationError{pr.reqKey, v,
				fmt.Sprintf("a %s quantity no larger than the %s limit %s (%s)", pr.what, pr.what, lim, pr.limKey)}
		}
		v, _ := p.get(pr.limKey)
		return res, &AnnotationError{pr.limKey, v,
			fmt.Sprintf("a %s quantity no smaller than the %s request %s (%s)", pr.what, pr.what, req, pr.reqKey)}
	}
	if len(res.Limits) == 0 {
		res.Limits = nil
	}
	return res, nil
}

// quantity parses a resource annotation above zero, or takes name from the defaults def (nil
// when def has none). set tells whether the annotation was given.
func (p parser) quantity(key string, def corev1.ResourceList, name corev1.ResourceName, what, example string) (q *resource.Quantity, set bool, err error) {
	v, ok := p.get(key)
	if !ok {
		d, has := def[name]
		if !has {
			return nil, false, nil
		}
		return &d, false, nil
	}
	parsed, err := resource.ParseQuantity(v)
	if err != nil || parsed.Sign() <= 0 {
		return nil, true, &AnnotationError{key, v, fmt.Sprintf("a %s quantity above zero, such as %s", what, example)}
	}
	return &parsed, true, nil
}

// shmSize reads AnnotationShmSize, else the default def, else DefaultShmSize.
func (p parser) shmSize(def resource.Quantity) (resource.Quantity, error) {
	v, ok := p.get(AnnotationShmSize)
	if !ok {
		if def.IsZero() {
			return resource.MustParse(DefaultShmSize), nil
		}
		if def.Sign() < 0 {
			return resource.Quantity{}, &AnnotationError{AnnotationShmSize, def.String(), "a memory quantity above zero, such as 64Mi: the injector's default is not"}
		}
		return def.DeepCopy(), nil
	}
	q, err := resource.ParseQuantity(v)
	if err != nil || q.Sign() <= 0 {
		return resource.Quantity{}, &AnnotationError{AnnotationShmSize, v, "a memory quantity above zero, such as 64Mi"}
	}
	return q, nil
}

// identity reads the pinned uids and draws the others: from d.UIDRange, or, in a pod with
// hostUsers false (a user namespace of its own), from UserNamespaceUIDRange, where a pinned
// uid must be too.
func (p parser) identity(d Defaults, hostUsers *bool) (server, runner int64, err error) {
	userns := hostUsers != nil && !*hostUsers
	maxUID, want := int64(MaxUID), fmt.Sprintf("a whole number from 1 to %d, such as %d", MaxUID, DefaultUIDRange.Min)
	rng := d.UIDRange
	switch {
	case userns:
		maxUID, rng = MaxUserNamespaceUID, UserNamespaceUIDRange
		want = fmt.Sprintf("a whole number from 1 to %d in a pod with hostUsers: false (its uids are those of its user namespace), such as %d",
			MaxUserNamespaceUID, UserNamespaceUIDRange.Min)
	case rng == UIDRange{}:
		rng = DefaultUIDRange
	}
	if server, err = p.uid(AnnotationServerUID, maxUID, want); err != nil {
		return 0, 0, err
	}
	if runner, err = p.uid(AnnotationRunnerUID, maxUID, want); err != nil {
		return 0, 0, err
	}
	if server != 0 && server == runner {
		v, _ := p.get(AnnotationRunnerUID)
		return 0, 0, &AnnotationError{AnnotationRunnerUID, v, fmt.Sprintf("a uid other than the server's (%s): the runner must not own what the server owns", AnnotationServerUID)}
	}
	if server != 0 && runner != 0 {
		return server, runner, nil
	}
	if err := rng.Validate(); err != nil {
		return 0, 0, &AnnotationError{AnnotationServerUID, rng.String(),
			fmt.Sprintf("a uid, or a range MIN-MAX with 1 <= MIN < MAX <= %d to draw it from: the injector's --uid-range is not one", MaxUID)}
	}
	src := d.Rand
	if src == nil {
		src = rand.Reader
	}
	return drawUIDs(src, rng, server, runner)
}

// uid reads a pinned uid from 1 to maxUID; 0 when unset.
func (p parser) uid(key string, maxUID int64, want string) (int64, error) {
	v, ok := p.get(key)
	if !ok {
		return 0, nil
	}
	uid, err := strconv.ParseUint(v, 10, 32)
	if err != nil || uid < 1 || int64(uid) > maxUID {
		return 0, &AnnotationError{key, v, want}
	}
	return int64(uid), nil
}

// containers resolves the app containers that get the socket, in the pod's order.
func (p parser) containers(app []corev1.Container) ([]string, error) {
	names := make([]string, 0, len(app))
	for _, c := range app {
		names = append(names, c.Name)
	}
	v, ok := p.get(AnnotationContainers)
	if !ok {
		return names, nil
	}
	chosen := commaList(v)
	for _, name := range chosen {
		if !slices.Contains(names, name) {
			return nil, &AnnotationError{AnnotationContainers, v,
				fmt.Sprintf("comma-separated names of the pod's containers (%s); %q is not one", strings.Join(names, ", "), name)}
		}
	}
	if len(chosen) == 0 {
		return nil, &AnnotationError{AnnotationContainers, v,
			fmt.Sprintf("comma-separated names of the pod's containers (%s)", strings.Join(names, ", "))}
	}
	var out []string
	for _, name := range names {
		if slices.Contains(chosen, name) {
			out = append(out, name)
		}
	}
	return out, nil
}

func (p parser) socketDir(app []corev1.Container, chosen []string) (string, error) {
	v, ok := p.get(AnnotationSocketDir)
	if !ok {
		v = SocketDir
	}
	switch {
	case !path.IsAbs(v) || path.Clean(v) != v || v == "/" || strings.ContainsFunc(v, isBlankOrControl):
		return "", &AnnotationError{AnnotationSocketDir, v, "an absolute, clean directory other than /, such as /var/run/pyexec"}
	case len(v) > maxSocketDirLen:
		return "", &AnnotationError{AnnotationSocketDir, v,
			fmt.Sprintf("a directory of at most %d bytes, so that the socket path fits in %d", maxSocketDirLen, maxSocketPathLen)}
	}
	for _, c := range app {
		if !slices.Contains(chosen, c.Name) {
			continue
		}
		for _, m := range c.VolumeMounts {
			if path.Clean(m.MountPath) == v {
				return "", &AnnotationError{AnnotationSocketDir, v,
					fmt.Sprintf("a directory that container %q does not mount already", c.Name)}
			}
		}
	}
	return v, nil
}

func (p parser) nativeSidecar(def bool, restart corev1.RestartPolicy) (bool, error) {
	v, ok := p.get(AnnotationNativeSidecar)
	native := def
	switch {
	case !ok || v == "auto":
		v = "auto"
	case v == "true":
		native = true
	case v == "false":
		native = false
	default:
		return false, &AnnotationError{AnnotationNativeSidecar, v, "auto, true or false"}
	}
	if !native && (restart == corev1.RestartPolicyNever || restart == corev1.RestartPolicyOnFailure) {
		return false, &AnnotationError{AnnotationNativeSidecar, v, fmt.Sprintf(
			"true (Kubernetes 1.29 or later) in a pod with restartPolicy %s: a regular sidecar container would keep it from completing", restart)}
	}
	return native, nil
}

func isBlankOrControl(r rune) bool {
	return r <= ' ' || r == 0x7f
}

// Annotations are every pod annotation of pyexec's (and its label, and the status it writes).
var Annotations = []string{
	LabelInject, AnnotationStatus, AnnotationImage, AnnotationImagePullPolicy, AnnotationRequire, AnnotationPreload,
	AnnotationInstall, AnnotationAllowPackages, AnnotationTimeout, AnnotationMaxTimeout, AnnotationMemoryLimitMB,
	AnnotationMaxConcurrent, AnnotationAllowUIDs, AnnotationNetwork, AnnotationRequireIsolation, AnnotationMaxSessions,
	AnnotationMaxCheckpointsPerSession,
	AnnotationRunnerMemoryHighWater, AnnotationSessionIdleTimeout, AnnotationCPURequest, AnnotationCPULimit,
	AnnotationMemoryRequest, AnnotationMemoryLimit, AnnotationRunnerCPURequest, AnnotationRunnerCPULimit,
	AnnotationRunnerMemoryRequest, AnnotationRunnerMemoryLimit, AnnotationShmSize, AnnotationServerUID,
	AnnotationRunnerUID, AnnotationContainers, AnnotationSocketDir, AnnotationNativeSidecar,
}

// annotationPrefix is the prefix of pyexec's annotations.
const annotationPrefix = "pyexec.dev/"

// UnknownAnnotations are warnings, one per annotation of the pyexec.dev/ prefix that pyexec
// does not know (a typo such as pyexec.dev/timout would otherwise change nothing and say
// nothing), in key order, each with the known annotation it is closest to, if any is close.
func UnknownAnnotations(ann map[string]string) []string {
	var out []string
	for _, key := range slices.Sorted(maps.Keys(ann)) {
		if !strings.HasPrefix(key, annotationPrefix) || slices.Contains(Annotations, key) {
			continue
		}
		msg := fmt.Sprintf("annotation %s is not one of pyexec's and changes nothing", key)
		if near := closest(key, Annotations); near != "" {
			msg += "; did you mean " + near + "?"
		}
		out = append(out, msg)
	}
	return out
}

// closest is the candidate nearest to s by edit distance, when it is at most 3 edits away.
func closest(s string, candidates []string) string {
	best, bestD := "", 4
	for _, c := range candidates {
		if d := editDistance(s, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
