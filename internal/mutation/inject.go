// Package inject adds pyexec to a pod: the pyexec-init init container, which checks Python
// once and writes the preflight report; the pyexec sidecar (the server), which serves the API
// on a Unix socket in a volume that the app containers mount; and the pyexec-runner sidecar,
// which runs every execution and session for the server. The server and the runner have uids
// of their own (ServerUID, RunnerUID), drawn per pod or pinned by annotations, so that code
// owns nothing of the server's and its processes count against a uid no other pod has; the
// runner's container is the code's box (its memory and CPU limits, its /dev/shm).
//
// The mutation is a pure function of the pod and a Config parsed from the pod's pyexec.dev
// annotations (ParseConfig). Inject builds typed corev1 values in small functions and
// changes nothing else; InjectPod wraps it for callers: the mutating webhook (which diffs the
// result against the request's raw pod) and InjectManifests, the offline
// `pyexec-injector inject -f FILE`.
//
// Injection is idempotent: an injected pod carries AnnotationStatus and is left alone.
package mutation

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/pyexec/pyexec/internal/settings"
)

// Names and paths of what Inject adds to a pod.
const (
	// InitContainerName is the init container that runs `pyexec init`.
	InitContainerName = "pyexec-init"
	// SidecarName is the container that runs `pyexec serve`, the server.
	SidecarName = "pyexec"
	// RunnerName is the container that runs `pyexec runner`: every execution and session.
	RunnerName = "pyexec-runner"

	// VolumeRun is the in-memory emptyDir that holds the socket and the preflight report.
	VolumeRun = "pyexec-run"
	// VolumePackages is the emptyDir that packages are installed into.
	VolumePackages = "pyexec-packages"
	// VolumeTmp is the emptyDir mounted at /tmp of pyexec-init and the server, whose root
	// filesystem is read-only.
	VolumeTmp = "pyexec-tmp"
	// VolumeNoToken is an empty volume mounted over ServiceAccountDir in the pyexec
	// containers, so that no service account token reaches the code they run.
	VolumeNoToken = "pyexec-no-token"
	// VolumeWork is the emptyDir that the server shares with the runner: the work root
	// (WorkDir) and the runner socket's directory (RunnerSocketDir), which pyexec-init makes
	// in it.
	VolumeWork = "pyexec-work"
	// VolumeShm is the in-memory emptyDir mounted at ShmDir of the runner, with a size limit.
	VolumeShm = "pyexec-shm"

	// SocketDir is where pyexec-init and the server mount VolumeRun, and where app containers
	// mount it unless AnnotationSocketDir says otherwise. The runner does not mount it.
	SocketDir = "/var/run/pyexec"
	// SocketFile is the socket's file name in the socket directory.
	SocketFile = "pyexec.sock"
	// ReportPath is the preflight report that pyexec-init writes and the sidecar reads.
	ReportPath = SocketDir + "/preflight.json"
	// PackagesDir is where the pyexec containers mount VolumePackages (the runner read-only).
	PackagesDir = "/var/lib/pyexec/packages"
	// TmpDir is where pyexec-init and the server mount VolumeTmp.
	TmpDir = "/tmp"
	// DrainTimeout is the sidecar's PYEXEC_DRAIN_TIMEOUT.
	DrainTimeout = "20s"
	// RunnerDir is where pyexec-init and the server mount the root of VolumeWork. The runner
	// never sees that root, which the kubelet makes with mode 0777 (so that the runner could
	// rename what is in it): it mounts the two directories below it by subPath.
	RunnerDir = "/var/lib/pyexec/runner"
	// WorkDir is the work root (PYEXEC_WORK_DIR of pyexec-init and the server): the server
	// owns it (mode 0710) and makes each execution's and session's directory in it.
	WorkDir = RunnerDir + "/" + workSubPath
	// RunnerSocketDir is the server's directory (mode 0710) of the runner socket.
	RunnerSocketDir = RunnerDir + "/" + runnerSocketSubPath
	// RunnerSocket is where the server listens for the runner (PYEXEC_RUNNER_SOCKET of
	// pyexec-init and the server, PYEXEC_SERVER_SOCKET of the runner).
	RunnerSocket = RunnerSocketDir + "/runner.sock"
	// ShmDir is where the runner mounts VolumeShm.
	ShmDir = "/dev/shm"
	// ServiceAccountDir is where Kubernetes mounts a service account token.
	ServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

	// ProbePort is the sidecar's TCP port of /healthz, /readyz and /metrics.
	ProbePort = 9901
	// ProbePortName names ProbePort on the sidecar; the probes refer to it by this name.
	ProbePortName = "pyexec-probe"

	// EnvSocket is the variable that tells an app container (and the sidecar) the socket path.
	EnvSocket = "PYEXEC_SOCKET"
)

// The directories of VolumeWork, by their subPath.
const (
	workSubPath         = "work"
	runnerSocketSubPath = "run"
)

// containerNames and volumeNames are what Inject adds: a pod that has a container or a volume
// of one of these names already is not injected.
var (
	containerNames = []string{InitContainerName, RunnerName, SidecarName}
	volumeNames    = []string{VolumeNoToken, VolumePackages, VolumeRun, VolumeShm, VolumeTmp, VolumeWork}
)

// ShouldInject reports whether the pod is to be injected and, when not, why. It refuses pods
// that are already injected (AnnotationStatus, or a container, init container or volume with
// one of the names that Inject adds: a webhook called again with reinvocationPolicy
// IfNeeded must be a no-op), the injector's own pods, and pods without
// LabelInject="true".
func ShouldInject(pod *corev1.Pod) (bool, string) {
	return shouldInject(pod, false)
}

// shouldInject is ShouldInject that, with force, also accepts pods without LabelInject.
func shouldInject(pod *corev1.Pod, force bool) (bool, string) {
	if v, ok := pod.Annotations[AnnotationStatus]; ok {
		return false, fmt.Sprintf("already injected (annotation %s=%q)", AnnotationStatus, v)
	}
	if pod.Labels[LabelAppName] == InjectorAppName {
		return false, fmt.Sprintf("the injector's own pod (label %s=%s)", LabelAppName, InjectorAppName)
	}
	for _, c := range pod.Spec.Containers {
		if slices.Contains(containerNames, c.Name) {
			return false, fmt.Sprintf("already has a container named %s", c.Name)
		}
	}
	for _, c := range pod.Spec.InitContainers {
		if slices.Contains(containerNames, c.Name) {
			return false, fmt.Sprintf("already has an init container named %s", c.Name)
		}
	}
	for _, v := range pod.Spec.Volumes {
		if slices.Contains(volumeNames, v.Name) {
			return false, fmt.Sprintf("already has a volume named %s", v.Name)
		}
	}
	v, ok := pod.Labels[LabelInject]
	switch {
	case ok && v == LabelInjectEnabled:
		return true, ""
	case ok:
		return false, fmt.Sprintf("label %s=%q is not %q", LabelInject, v, LabelInjectEnabled)
	case force:
		return true, ""
	}
	return false, fmt.Sprintf("no label %s=%q", LabelInject, LabelInjectEnabled)
}

// InjectPod is the whole injection for one pod: it copies the pod, decides with ShouldInject
// (and d.Force), parses the annotations and injects the copy. out is the copy, injected or
// not, unless err is set; reason says why a pod was not injected. err is an *AnnotationError,
// or the error of reading d.Rand.
func InjectPod(pod *corev1.Pod, d Defaults) (out *corev1.Pod, injected bool, reason string, err error) {
	out = pod.DeepCopy()
	if ok, why := shouldInject(out, d.Force); !ok {
		return out, false, why, nil
	}
	cfg, err := ParseConfig(out, d)
	if err != nil {
		return nil, false, "", err
	}
	Inject(out, cfg)
	return out, true, "", nil
}

// Inject adds pyexec to the pod in place (the caller passes a copy): the volumes, pyexec-init
// as the first init container, the runner and the server (right after pyexec-init, in this
// order, as native sidecars, else as the last containers), the socket mount and PYEXEC_SOCKET
// in each of cfg.Containers, and the annotations AnnotationStatus and, when absent,
// AnnotationDefaultContainer. It does not check ShouldInject.
//
// Native sidecars start in order, each once the one before has started: the runner, which
// dials the server until it listens, starts first, and the server's startup probe holds back
// the app containers until the server is ready, which it is once the runner has come.
func Inject(pod *corev1.Pod, cfg *Config) {
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	if _, ok := pod.Annotations[AnnotationDefaultContainer]; !ok && len(pod.Spec.Containers) > 0 {
		pod.Annotations[AnnotationDefaultContainer] = pod.Spec.Containers[0].Name
	}
	pod.Annotations[AnnotationStatus] = StatusInjected

	for i := range pod.Spec.Containers {
		if slices.Contains(cfg.Containers, pod.Spec.Containers[i].Name) {
			connectApp(&pod.Spec.Containers[i], cfg.SocketDir)
		}
	}
	pod.Spec.Volumes = append(pod.Spec.Volumes, volumes(cfg)...)
	first := []corev1.Container{initContainer(cfg)}
	if cfg.NativeSidecar {
		first = append(first, runner(cfg), sidecar(cfg))
	} else {
		pod.Spec.Containers = append(pod.Spec.Containers, runner(cfg), sidecar(cfg))
	}
	pod.Spec.InitContainers = append(first, pod.Spec.InitContainers...)
}

// volumes are the pod volumes that Inject adds, sorted by name.
func volumes(cfg *Config) []corev1.Volume {
	emptyDir := func(name string, medium corev1.StorageMedium) corev1.Volume {
		return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{
			EmptyDir: &corev1.EmptyDirVolumeSource{Medium: medium},
		}}
	}
	shm := emptyDir(VolumeShm, corev1.StorageMediumMemory)
	if !cfg.ShmSize.IsZero() {
		shm.EmptyDir.SizeLimit = ptr.To(cfg.ShmSize.DeepCopy())
	}
	return []corev1.Volume{
		emptyDir(VolumeNoToken, corev1.StorageMediumDefault),
		emptyDir(VolumePackages, corev1.StorageMediumDefault),
		emptyDir(VolumeRun, corev1.StorageMediumMemory),
		shm,
		emptyDir(VolumeTmp, corev1.StorageMediumDefault),
		emptyDir(VolumeWork, corev1.StorageMediumDefault),
	}
}

// noTokenMount is the empty, read-only VolumeNoToken over ServiceAccountDir, in every pyexec
// container. It keeps a service account token out: the ServiceAccount admission plugin (which
// the API server runs again when a webhook is reinvoked) skips containers that already mount
// something there, and the pod runs untrusted code.
func noTokenMount() corev1.VolumeMount {
	return corev1.VolumeMount{Name: VolumeNoToken, MountPath: ServiceAccountDir, ReadOnly: true}
}

// serverMounts are the volume mounts of pyexec-init and the server, sorted by name: VolumeWork
// by its root, where they make the work root and the runner socket's directory.
func serverMounts() []corev1.VolumeMount {
	return []corev1.VolumeMount{
		noTokenMount(),
		{Name: VolumePackages, MountPath: PackagesDir},
		{Name: VolumeRun, MountPath: SocketDir},
		{Name: VolumeTmp, MountPath: TmpDir},
		{Name: VolumeWork, MountPath: RunnerDir},
	}
}

// runnerMounts are the volume mounts of the runner, sorted by name and subPath: the packages
// read-only, its own /dev/shm, and of VolumeWork only the two directories that the server
// owns, at the paths where the server sees them. Neither the app's socket nor the report.
func runnerMounts() []corev1.VolumeMount {
	return []corev1.VolumeMount{
		noTokenMount(),
		{Name: VolumePackages, MountPath: PackagesDir, ReadOnly: true},
		{Name: VolumeShm, MountPath: ShmDir},
		{Name: VolumeWork, MountPath: RunnerSocketDir, SubPath: runnerSocketSubPath},
		{Name: VolumeWork, MountPath: WorkDir, SubPath: workSubPath},
	}
}

// appMount is the socket's volume in an app container: read-only, since connect(2) on a
// socket needs no write access to its file system.
func appMount(socketDir string) corev1.VolumeMount {
	return corev1.VolumeMount{Name: VolumeRun, MountPath: socketDir, ReadOnly: true}
}

// connectApp gives an app container the socket: appMount and PYEXEC_SOCKET. A variable of
// that name that the container already has is replaced where it stands (so that variables
// after it that refer to it with $(PYEXEC_SOCKET) still see it), and any repeat is dropped.
func connectApp(c *corev1.Container, socketDir string) {
	c.VolumeMounts = append(c.VolumeMounts, appMount(socketDir))
	socket := corev1.EnvVar{Name: EnvSocket, Value: path.Join(socketDir, SocketFile)}
	env := make([]corev1.EnvVar, 0, len(c.Env)+1)
	placed := false
	for _, e := range c.Env {
		switch {
		case e.Name != EnvSocket:
			env = append(env, e)
		case !placed:
			env = append(env, socket)
			placed = true
		}
	}
	if !placed {
		env = append(env, socket)
	}
	c.Env = env
}

// securityContext runs a container as uid and gid, and meets the restricted Pod Security
// Standard on its own, whatever the pod's securityContext says.
func securityContext(uid, gid int64) *corev1.SecurityContext {
	return &corev1.SecurityContext{
		RunAsNonRoot:             ptr.To(true),
		RunAsUser:                ptr.To(uid),
		RunAsGroup:               ptr.To(gid),
		AllowPrivilegeEscalation: ptr.To(false),
		ReadOnlyRootFilesystem:   ptr.To(true),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

// initContainer runs `pyexec init` as the server: it checks the interpreter and the
// requirements, installs cfg.Install into the packages volume, makes the work root and the
// runner socket's directory, and writes the report, with both uids in it.
func initContainer(cfg *Config) corev1.Container {
	env := []corev1.EnvVar{
		{Name: "PYEXEC_PACKAGES_DIR", Value: PackagesDir},
		{Name: "PYEXEC_REPORT", Value: ReportPath},
		{Name: "PYEXEC_RUNNER_SOCKET", Value: RunnerSocket},
		{Name: "PYEXEC_RUNNER_UID", Value: strconv.FormatInt(cfg.RunnerUID, 10)},
		{Name: "PYEXEC_WORK_DIR", Value: WorkDir},
	}
	env = appendList(env, "PYEXEC_REQUIRE", cfg.Require, "\n")
	env = appendList(env, "PYEXEC_PRELOAD", cfg.Preload, ",")
	env = appendList(env, "PYEXEC_INSTALL", cfg.Install, "\n")
	return corev1.Container{
		Name:            InitContainerName,
		Image:           cfg.Image,
		ImagePullPolicy: cfg.PullPolicy,
		Args:            []string{"init"},
		Env:             sortEnv(env),
		Resources:       *cfg.Resources.DeepCopy(),
		VolumeMounts:    serverMounts(),
		SecurityContext: securityContext(cfg.ServerUID, cfg.ServerUID),
	}
}

// runner runs `pyexec runner` as cfg.RunnerUID in the server's group: it dials the server's
// runner socket (checking that the server is cfg.ServerUID) and runs every execution and
// session there. It has no probe: the server reports on it. As a native sidecar
// (cfg.NativeSidecar) it is an init container with restartPolicy Always and no startup probe,
// so the server starts right after it; else a regular container.
func runner(cfg *Config) corev1.Container {
	c := corev1.Container{
		Name:            RunnerName,
		Image:           cfg.Image,
		ImagePullPolicy: cfg.PullPolicy,
		Args:            []string{"runner"},
		Env: []corev1.EnvVar{
			{Name: "PYEXEC_SERVER_SOCKET", Value: RunnerSocket},
			{Name: "PYEXEC_SERVER_UID", Value: strconv.FormatInt(cfg.ServerUID, 10)},
			// Its /dev/shm is an emptyDir of its own: what code leaves there goes.
			{Name: "PYEXEC_SHM_DIR", Value: ShmDir},
		},
		Resources:       *cfg.RunnerResources.DeepCopy(),
		VolumeMounts:    runnerMounts(),
		SecurityContext: securityContext(cfg.RunnerUID, cfg.ServerUID),
	}
	if cfg.NativeSidecar {
		c.RestartPolicy = ptr.To(corev1.ContainerRestartPolicyAlways)
	}
	return c
}

// sidecar runs `pyexec serve` as cfg.ServerUID: it listens on the runner socket for
// cfg.RunnerUID, and serves the app's socket once the runner has come. As a native sidecar
// (cfg.NativeSidecar) it is an init container with restartPolicy Always whose startup probe
// holds back the app containers until the socket serves (up to two minutes); else a regular
// container.
func sidecar(cfg *Config) corev1.Container {
	env := []corev1.EnvVar{
		// The drain, plus the server's 5 s abort grace, ends within the pod's default
		// terminationGracePeriodSeconds (30 s), so SIGKILL never cuts it short.
		{Name: "PYEXEC_DRAIN_TIMEOUT", Value: DrainTimeout},
		{Name: "PYEXEC_PACKAGES_DIR", Value: PackagesDir},
		{Name: "PYEXEC_PROBE_ADDR", Value: fmt.Sprintf(":%d", ProbePort)},
		{Name: "PYEXEC_REPORT", Value: ReportPath},
		{Name: "PYEXEC_RUNNER_SOCKET", Value: RunnerSocket},
		{Name: "PYEXEC_RUNNER_UID", Value: strconv.FormatInt(cfg.RunnerUID, 10)},
		{Name: EnvSocket, Value: path.Join(SocketDir, SocketFile)},
		// The socket's directory is private to the pod, and app containers may run as
		// other users than the sidecar.
		{Name: "PYEXEC_SOCKET_MODE", Value: "0666"},
		{Name: "PYEXEC_WORK_DIR", Value: WorkDir},
	}
	if cfg.Timeout > 0 {
		env = append(env, corev1.EnvVar{Name: "PYEXEC_TIMEOUT", Value: cfg.Timeout.String()})
	}
	if cfg.MaxTimeout > 0 {
		env = append(env, corev1.EnvVar{Name: "PYEXEC_MAX_TIMEOUT", Value: cfg.MaxTimeout.String()})
	}
	if cfg.MemoryLimitMB > 0 {
		env = append(env, corev1.EnvVar{Name: "PYEXEC_MEMORY_LIMIT_MB", Value: fmt.Sprint(cfg.MemoryLimitMB)})
	}
	if n := maxConcurrent(cfg); n > 0 {
		env = append(env, corev1.EnvVar{Name: "PYEXEC_MAX_CONCURRENT", Value: fmt.Sprint(n)})
	}
	if cfg.MaxCheckpointsPerSession != nil {
		env = append(env, corev1.EnvVar{Name: "PYEXEC_MAX_CHECKPOINTS_PER_SESSION", Value: strconv.Itoa(*cfg.MaxCheckpointsPerSession)})
	}
	if cfg.RunnerMemoryHighWater != nil {
		env = append(env, corev1.EnvVar{Name: "PYEXEC_RUNNER_MEMORY_HIGH_WATER", Value: strconv.Itoa(*cfg.RunnerMemoryHighWater)})
	}
	if len(cfg.AllowUIDs) > 0 {
		uids := make([]string, len(cfg.AllowUIDs))
		for i, uid := range cfg.AllowUIDs {
			uids[i] = strconv.FormatUint(uint64(uid), 10)
		}
		env = append(env, corev1.EnvVar{Name: "PYEXEC_ALLOW_UIDS", Value: strings.Join(uids, ",")})
	}
	env = appendList(env, "PYEXEC_ALLOW_PACKAGES", cfg.AllowPackages, ",")
	env = appendList(env, "PYEXEC_PRELOAD", cfg.Preload, ",")
	// Always set, whatever the sidecar's own defaults: the pod's spec says how code is confined.
	network := cfg.Network
	if network == "" {
		network = NetworkDeny
	}
	env = append(env,
		corev1.EnvVar{Name: "PYEXEC_NETWORK", Value: network},
		corev1.EnvVar{Name: "PYEXEC_REQUIRE_ISOLATION", Value: strconv.FormatBool(cfg.RequireIsolation)},
	)
	// Always set too: the injector has defaults for them (the chart's sidecar.maxSessions and
	// sidecar.sessionIdleTimeout).
	maxSessions := settings.DefaultMaxSessions
	if cfg.MaxSessions != nil {
		maxSessions = *cfg.MaxSessions
	}
	env = append(env,
		corev1.EnvVar{Name: "PYEXEC_MAX_SESSIONS", Value: strconv.Itoa(maxSessions)},
		corev1.EnvVar{Name: "PYEXEC_SESSION_IDLE_TIMEOUT", Value: orDefault(cfg.SessionIdleTimeout, settings.DefaultSessionIdleTimeout).String()},
	)

	c := corev1.Container{
		Name:            SidecarName,
		Image:           cfg.Image,
		ImagePullPolicy: cfg.PullPolicy,
		Args:            []string{"serve"},
		Ports: []corev1.ContainerPort{
			{Name: ProbePortName, ContainerPort: ProbePort, Protocol: corev1.ProtocolTCP},
		},
		Env:             sortEnv(env),
		Resources:       *cfg.Resources.DeepCopy(),
		VolumeMounts:    serverMounts(),
		ReadinessProbe:  probe("/readyz", 5, 3),
		LivenessProbe:   probe("/healthz", 10, 3),
		SecurityContext: securityContext(cfg.ServerUID, cfg.ServerUID),
	}
	if cfg.NativeSidecar {
		c.RestartPolicy = ptr.To(corev1.ContainerRestartPolicyAlways)
		c.StartupProbe = probe("/readyz", 1, 120)
	}
	return c
}

// probe is an HTTP GET of path on the probe port.
func probe(path string, periodSeconds, failureThreshold int32) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: path,
			Port: intstr.FromString(ProbePortName),
		}},
		PeriodSeconds:    periodSeconds,
		FailureThreshold: failureThreshold,
	}
}

// appendList adds the variable name with the items joined by sep, unless there are none.
// maxConcurrent is the sidecar's --max-concurrent: the annotation's, else as many executions as
// the runner's CPU limit gives whole CPUs (serve sees its own container's limit, not the
// runner's), else 0: the sidecar's default.
func maxConcurrent(cfg *Config) int {
	if cfg.MaxConcurrent > 0 {
		return cfg.MaxConcurrent
	}
	if q, ok := cfg.RunnerResources.Limits[corev1.ResourceCPU]; ok {
		return settings.WholeCPUs(q.AsApproximateFloat64())
	}
	return 0
}

func appendList(env []corev1.EnvVar, name string, items []string, sep string) []corev1.EnvVar {
	if len(items) == 0 {
		return env
	}
	return append(env, corev1.EnvVar{Name: name, Value: strings.Join(items, sep)})
}

// sortEnv orders variables by name: none of them refers to another, so the order is free.
func sortEnv(env []corev1.EnvVar) []corev1.EnvVar {
	slices.SortFunc(env, func(a, b corev1.EnvVar) int { return strings.Compare(a.Name, b.Name) })
	return env
}
