package container

import (
	"bytes"
	"errors"
	"io/fs"
	"path"
	"slices"
	"strings"

	"github.com/pyexec/pyexec/pkg/api"
)

// initialPIDNS is the link target of /proc/self/ns/pid in the kernel's initial PID
// namespace (PROC_PID_INIT_INO).
const initialPIDNS = "pid:[4026531836]"

// serviceAccountDir is where the kubelet mounts a pod's service account token.
const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// staleDockerenvWarning is added when /.dockerenv alone says "container" in the host's
// PID namespace.
const staleDockerenvWarning = "only /.dockerenv says container and the PID namespace is the host's: " +
	"if this is a host with a stale marker, set PYEXEC_CONTAINER=false"

// Detector reads every file relative to Root, so tests point it at fixture roots.
type Detector struct {
	Root string // "" means "/"
	// LookupEnv reads the process environment. nil means: read Root/proc/self/environ
	// (NUL-separated). The command passes os.LookupEnv when Root is "/", and nil with
	// --root DIR.
	LookupEnv func(key string) (string, bool)
}

// Detect runs every step of the package documentation and returns what it found.
func (d Detector) Detect() api.Container {
	root := fsRoot(d.Root)
	if root == "" {
		root = "/"
	}
	env := d.env(root)
	s := &scan{evidence: []string{}}

	checkOverride(env, s)
	checkEnvManager(env, s)
	checkProc1Manager(root, s)
	checkFileManager(root, "/run/systemd/container", s)
	checkFileManager(root, "/run/host/container-manager", s)
	checkContainerenv(root, s)
	checkDockerenv(root, s)
	checkKubeEnv(env, s)
	checkServiceAccount(root, s)
	checkCgroup(root, "/proc/1/cgroup", s)
	checkCgroup(root, "/proc/self/cgroup", s)
	checkMountinfo(root, s)
	checkOpenVZ(root, s)
	checkWSL(root, s)
	pidns, _ := root.readlink("/proc/self/ns/pid")
	if !s.wsl {
		checkPIDNS(pidns, s)
	}
	return s.result(pidns)
}

// env returns the environment lookup: LookupEnv, or Root/proc/self/environ.
func (d Detector) env(root fsRoot) func(string) (string, bool) {
	if d.LookupEnv != nil {
		return d.LookupEnv
	}
	b, _ := root.read("/proc/self/environ")
	m := parseEnviron(b)
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// scan gathers the signals of one Detect call.
type scan struct {
	evidence  []string
	warnings  []string
	override  *bool
	signals   int    // distinct evidence strings that say "container"
	named     string // the runtime named by the strongest signal that names one
	ambiguous bool   // podman-or-CRI-O seen before any runtime was named
	kube      bool
	wsl       bool
	dockerenv bool
}

// note records one piece of evidence (once) and what it says.
func (s *scan) note(evidence string, h hint) {
	if !slices.Contains(s.evidence, evidence) {
		s.evidence = append(s.evidence, evidence)
		if h.container {
			s.signals++
		}
	}
	if h.kube {
		s.kube = true
	}
	s.name(h.runtime)
}

// name keeps the first runtime named; podman-or-CRI-O is refined only by podman or CRI-O.
func (s *scan) name(runtime string) {
	switch {
	case runtime == "" || runtime == api.RuntimeUnknown || s.named != "":
	case runtime == runtimePodmanOrCRIO:
		s.ambiguous = true
	case s.ambiguous && runtime != api.RuntimePodman && runtime != api.RuntimeCRIO:
	default:
		s.named = runtime
	}
}

func (s *scan) runtime() string {
	switch {
	case s.named != "":
		return s.named
	case s.ambiguous && s.kube:
		return api.RuntimeCRIO
	case s.ambiguous:
		return api.RuntimePodman
	}
	return api.RuntimeUnknown
}

func (s *scan) result(pidns string) api.Container {
	c := api.Container{Runtime: api.RuntimeNone, Evidence: s.evidence}
	in := s.signals > 0
	if s.override != nil {
		in = *s.override
	}
	if in {
		c.InContainer = true
		c.Runtime = s.runtime()
		if s.kube {
			c.Orchestrator = api.OrchestratorKubernetes
		}
		if s.override == nil && s.dockerenv && s.signals == 1 && pidns == initialPIDNS {
			s.warnings = append(s.warnings, staleDockerenvWarning)
		}
	}
	c.Warnings = s.warnings
	return c
}

// Step 1: PYEXEC_CONTAINER.
func checkOverride(env func(string) (string, bool), s *scan) {
	v, ok := env("PYEXEC_CONTAINER")
	if !ok || strings.TrimSpace(v) == "" {
		return
	}
	val, valid := parseOverride(v)
	if !valid {
		s.warnings = append(s.warnings, "PYEXEC_CONTAINER="+quote(v)+
			" is not one of true, false, 1, 0, yes, no: it was ignored")
		return
	}
	s.override = &val
	word := "false"
	if val {
		word = "true"
	}
	s.note("override:PYEXEC_CONTAINER="+word, hint{})
}

func quote(v string) string {
	return `"` + short(v) + `"`
}

// Step 2: container= in the process environment.
func checkEnvManager(env func(string) (string, bool), s *scan) {
	if v, ok := env("container"); ok {
		noteManager("env:container=", v, s)
	}
}

// Step 2: container= in PID 1's environment; unreadable says nothing.
func checkProc1Manager(root fsRoot, s *scan) {
	b, err := root.read("/proc/1/environ")
	if err != nil {
		return
	}
	if v, ok := parseEnviron(b)["container"]; ok {
		noteManager("proc1-environ:container=", v, s)
	}
}

// Step 2: a manager name written to a file (first line).
func checkFileManager(root fsRoot, name string, s *scan) {
	b, err := root.read(name)
	if err != nil {
		return
	}
	line, _, _ := strings.Cut(string(b), "\n")
	noteManager("file:"+name+"=", line, s)
}

func noteManager(label, value string, s *scan) {
	value = strings.TrimSpace(value)
	if value == "" {
		return
	}
	runtime, wsl := managerRuntime(value)
	if wsl {
		s.wsl = true
		s.note(label+short(value), hint{})
		return
	}
	s.note(label+short(value), hint{container: true, runtime: runtime})
}

// Step 3: /run/.containerenv, made by podman and by CRI-O.
func checkContainerenv(root fsRoot, s *scan) {
	if !root.exists("/run/.containerenv") {
		return
	}
	runtime := runtimePodmanOrCRIO
	if b, err := root.read("/run/.containerenv"); err == nil && bytes.Contains(b, []byte(`engine="podman-`)) {
		runtime = api.RuntimePodman
	}
	s.note("file:/run/.containerenv", hint{container: true, runtime: runtime})
}

// Step 3: /.dockerenv, made by docker.
func checkDockerenv(root fsRoot, s *scan) {
	if !root.exists("/.dockerenv") {
		return
	}
	s.dockerenv = true
	s.note("file:/.dockerenv", hint{container: true, runtime: api.RuntimeDocker})
}

// Step 4: the variable the kubelet puts in every container.
func checkKubeEnv(env func(string) (string, bool), s *scan) {
	if v, ok := env("KUBERNETES_SERVICE_HOST"); ok && strings.TrimSpace(v) != "" {
		s.note("env:KUBERNETES_SERVICE_HOST", hint{container: true, kube: true})
	}
}

// Step 4: the service account mount (absent with automountServiceAccountToken: false).
func checkServiceAccount(root fsRoot, s *scan) {
	if fi, err := root.stat(serviceAccountDir); err == nil && fi.IsDir() {
		s.note("dir:"+serviceAccountDir, hint{container: true, kube: true})
	}
}

// Step 5: cgroup paths.
func checkCgroup(root fsRoot, name string, s *scan) {
	b, err := root.read(name)
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		p, ok := cgroupPath(line)
		if !ok {
			continue
		}
		if h, ok := cgroupHint(p); ok {
			s.note("cgroup:"+short(p), h)
		}
	}
}

// Step 5: the sources of /etc/hostname, /etc/hosts and /etc/resolv.conf; a runtime
// keeps them in one directory, which is reported once.
func checkMountinfo(root fsRoot, s *scan) {
	b, err := root.read("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var dirs []string
	for _, line := range strings.Split(string(b), "\n") {
		m, ok := parseMountinfoLine(line)
		if !ok {
			continue
		}
		h, ok := mountHint(m)
		if !ok {
			continue
		}
		if dir := path.Dir(m.root); !slices.Contains(dirs, dir) {
			dirs = append(dirs, dir)
			s.note("mountinfo:"+short(m.root), h)
		}
	}
}

// Step 5: /proc/vz exists in an OpenVZ container and on its host; /proc/bc only on the host.
func checkOpenVZ(root fsRoot, s *scan) {
	if !root.exists("/proc/vz") {
		return
	}
	if _, err := root.stat("/proc/bc"); errors.Is(err, fs.ErrNotExist) {
		s.note("file:/proc/vz", hint{container: true, runtime: api.RuntimeOpenVZ})
	}
}

// Step 6: WSL's kernel names itself in osrelease.
func checkWSL(root fsRoot, s *scan) {
	b, err := root.read("/proc/sys/kernel/osrelease")
	if err != nil {
		return
	}
	rel := strings.ToLower(string(b))
	if strings.Contains(rel, "microsoft") || strings.Contains(rel, "wsl") {
		s.wsl = true
		s.note("wsl:osrelease", hint{})
	}
}

// Step 7: a PID namespace other than the kernel's initial one.
func checkPIDNS(target string, s *scan) {
	if strings.HasPrefix(target, "pid:[") && target != initialPIDNS {
		s.note("pidns:"+short(target), hint{container: true, runtime: api.RuntimeUnknown})
	}
}
