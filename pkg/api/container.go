package api

// Runtime names reported in Container.Runtime.
const (
	RuntimeDocker     = "docker"
	RuntimePodman     = "podman"
	RuntimeContainerd = "containerd"
	RuntimeCRIO       = "cri-o"
	RuntimeLXC        = "lxc"
	RuntimeNspawn     = "systemd-nspawn"
	RuntimeOpenVZ     = "openvz"
	// RuntimeUnknown is a container whose kind no signal names.
	RuntimeUnknown = "unknown"
	// RuntimeNone is a host: no container.
	RuntimeNone = "none"
)

// OrchestratorKubernetes is the only orchestrator pyexec recognises.
const OrchestratorKubernetes = "kubernetes"

// Container is what container detection sees. It is printed by `pyexec detect`, embedded in the
// preflight report and served by GET /v1/info.
type Container struct {
	// InContainer is true when any signal says this process runs in a container.
	InContainer bool `json:"in_container"`
	// Runtime is one of the Runtime* constants.
	Runtime string `json:"runtime"`
	// Orchestrator is "kubernetes" or empty.
	Orchestrator string `json:"orchestrator"`
	// Evidence names each signal seen, strongest first, e.g. "file:/.dockerenv",
	// "env:KUBERNETES_SERVICE_HOST", "cgroup:/kubepods/burstable/pod.../...".
	Evidence []string `json:"evidence"`
	// Warnings are sentences for a person, e.g. when the answer rests on one weak signal.
	Warnings []string `json:"warnings,omitempty"`
}
