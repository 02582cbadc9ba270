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
	// landlock_truncate, non_dumpable.
	Name   string `json:"name"`
	Active bool   `json:"active"`
	// Missing says, for a layer that is not active, which attacks are then open.
	Missing string `json:"missing,omitempty"`
}
