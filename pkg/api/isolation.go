package api

// Isolation is how executions are confined on the running kernel: GET /v1/info, the preflight
// report and the sidecar's ready log line say it.
type Isolation struct {
	// LandlockABI is the Landlock ABI in use (0: none).
	LandlockABI int `json:"landlock_abi"`
	// Network is the server's policy for code: "deny" or "allow" (absent in the preflight
	// report: the sidecar's flags decide it).
	Network string `json:"network,omitempty"`
	// Layers are the layers of confinement, each active or not.
	Layers []IsolationLayer `json:"layers"`
}

// IsolationLayer is one layer of confinement.
type IsolationLayer struct {
	// Name is one of landlock_filesystem, scoped_signals, seccomp, network_control,
	// landlock_truncate, non_dumpable, process_budget, identity.
	Name   string `json:"name"`
	Active bool   `json:"active"`
	// Missing says, for a layer that is not active, which attacks are then open.
	Missing string `json:"missing,omitempty"`
}

// Identity is who runs what in the pod: the server (the app's socket, the API, packages,
// probes) and the runner (the zygote, the supervisors, every execution and session), each as a
// uid of its own, and the group through which the runner writes in the directories the server
// makes for it.
type Identity struct {
	ServerUID int `json:"server_uid"`
	// RunnerUID is the uid of the runner and of the code; -1 when not known (a preflight
	// report of a server that starts the runner itself).
	RunnerUID int `json:"runner_uid"`
	// GID is the runner's group; the work directories have it.
	GID int `json:"gid"`
	// Separate says the runner's uid is not the server's: code can change nothing the server
	// owns, and its processes count against a uid of its own.
	Separate bool `json:"separate"`
}

// Active says the layer named is there and active (false for a nil Isolation).
func (iso *Isolation) Active(name string) bool {
	if iso == nil {
		return false
	}
	for _, l := range iso.Layers {
		if l.Name == name {
			return l.Active
		}
	}
	return false
}

// What Limits.MaxProcessesScope says MaxProcesses counts.
const (
	ProcessesPerExecution = "execution" // each execution and each session: its own budget
	ProcessesPerUID       = "uid"       // RLIMIT_NPROC: every execution of the runner's uid together
)
