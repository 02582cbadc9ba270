package api

import (
	"fmt"
	"strconv"
	"strings"
)

// ReportSchema names the format of the preflight report. It changes only when a field changes
// meaning; new fields are added without changing it.
const ReportSchema = "pyexec.dev/preflight/v1"

// Policies: where executions get their interpreter.
const (
	// PolicySystem uses the system (or given) interpreter as it is. Always the policy in a container.
	PolicySystem = "system"
	// PolicyVenv uses a virtualenv that pyexec created itself (host only, with --venv-dir).
	PolicyVenv = "venv"
)

// Path roles in Report.Paths.
const (
	RolePackages = "packages"
	RoleReport   = "report"
	RoleVenv     = "venv"
	// RoleWork is the work root, RoleRunnerSocket the runner socket's directory: the server's,
	// which the runner only enters.
	RoleWork         = "work"
	RoleRunnerSocket = "runner_socket"
)

// Report is the preflight report that `pyexec init` writes as JSON and `pyexec serve` reads.
type Report struct {
	Schema string `json:"schema"`
	// OK is false when a hard requirement failed (see Problems); init then exits 1.
	OK            bool          `json:"ok"`
	PyexecVersion string        `json:"pyexec_version"`
	CreatedAt     string        `json:"created_at"` // RFC 3339, UTC
	Container     Container     `json:"container"`
	Python        *Python       `json:"python"` // nil when no interpreter was found
	Policy        string        `json:"policy"`
	Requirements  []Requirement `json:"requirements"`
	Preload       []Preload     `json:"preload"`
	Paths         []Path        `json:"paths"`
	// Packages is the packages dir after init's installs (--install); nil without a packages dir.
	Packages *Packages `json:"packages,omitempty"`
	// Isolation is what the kernel offers to confine executions; a missing layer is also a
	// warning in Problems.
	Isolation *Isolation `json:"isolation,omitempty"`
	// Identity is the uid init ran as (the server's), its group and the runner's uid (-1 when
	// not given); nil when the report was written by pyexec serve, which reports its identity
	// in /v1/info.
	Identity *Identity `json:"identity,omitempty"`
	// Problems are sentences for a person, hard failures and warnings alike.
	Problems   []string `json:"problems"`
	DurationMS float64  `json:"duration_ms"`
}

// Python is what one inspection run of the interpreter found.
type Python struct {
	// Executable is the interpreter executions run: sys.executable, so shims such as pyenv's
	// are resolved to the real interpreter once, here.
	Executable string `json:"executable"`
	// RealPath is Executable with every symlink resolved.
	RealPath          string            `json:"real_path"`
	Version           string            `json:"version"`      // "3.11.2"
	VersionFull       string            `json:"version_full"` // as sys.version prints it, e.g. "3.13.0rc1"
	Implementation    string            `json:"implementation"`
	Prefix            string            `json:"prefix"`
	BasePrefix        string            `json:"base_prefix"`
	InVenv            bool              `json:"in_venv"`
	SitePackages      []SitePackages    `json:"site_packages"`
	ExternallyManaged ExternallyManaged `json:"externally_managed"`
	Pip               Pip               `json:"pip"`
	Ensurepip         bool              `json:"ensurepip"`
	VenvModule        bool              `json:"venv_module"`
	// Ctypes: ctypes imports and reaches prctl, which confining an execution needs.
	Ctypes        bool           `json:"ctypes"`
	Distributions []Distribution `json:"distributions"`
	// InspectMS is the wall time of the inspection run, preload imports included.
	InspectMS float64 `json:"inspect_ms"`
}

// SitePackages is one site-packages directory and whether a file could really be created in it.
type SitePackages struct {
	Path     string `json:"path"`
	Exists   bool   `json:"exists"`
	Writable bool   `json:"writable"`
	Error    string `json:"error,omitempty"`
}

// ExternallyManaged is the interpreter's PEP 668 state.
type ExternallyManaged struct {
	Marker  string `json:"marker"`  // where the interpreter's EXTERNALLY-MANAGED file would be
	Present bool   `json:"present"` // the file exists
	Applies bool   `json:"applies"` // present and not in a venv: pip refuses to install into system site-packages
}

// Pip says whether `python -m pip` can run.
type Pip struct {
	Available bool   `json:"available"`
	Version   string `json:"version"`
}

// Distribution is one installed distribution, as import sees it (first on sys.path wins).
type Distribution struct {
	Name     string `json:"name"` // PEP 503 normalized
	Version  string `json:"version"`
	Location string `json:"location"`
}

// Requirement is one required distribution checked against the installed version.
type Requirement struct {
	Name      string `json:"name"`      // PEP 503 normalized
	Specifier string `json:"specifier"` // e.g. ">=2,<3"; empty means any version
	Installed string `json:"installed"` // empty when not installed
	OK        bool   `json:"ok"`
	Problem   string `json:"problem,omitempty"`
}

// Preload is the import check of one module that executions will find already imported.
type Preload struct {
	Module   string  `json:"module"`
	OK       bool    `json:"ok"`
	ImportMS float64 `json:"import_ms"`
	Error    string  `json:"error,omitempty"`
}

// Path is one directory pyexec may write, and whether it is locked.
type Path struct {
	Path       string `json:"path"`
	Role       string `json:"role"`
	Exists     bool   `json:"exists"`
	MountPoint bool   `json:"mount_point"`
	ReadOnly   bool   `json:"read_only"`
	Writable   bool   `json:"writable"`
	// Locked is true when pyexec must not use the path for its role; Reason says why and what to do.
	Locked bool   `json:"locked"`
	Reason string `json:"reason,omitempty"`
}

// Summary is the report in the one line a person reads in `kubectl logs`: ok or FAILED, runtime,
// interpreter and version, policy, requirements met/total, preload, isolation, the server's
// and the runner's uids, problems.
func (r *Report) Summary() string {
	var b strings.Builder
	b.WriteString("pyexec preflight ")
	if r.OK {
		b.WriteString("ok")
	} else {
		b.WriteString("FAILED")
	}
	runtime := r.Container.Runtime
	if r.Container.Orchestrator != "" {
		runtime += "/" + r.Container.Orchestrator
	}
	fmt.Fprintf(&b, ": runtime=%s", runtime)
	if r.Python != nil {
		fmt.Fprintf(&b, " python=%s (%s)", r.Python.Executable, r.Python.Version)
	} else {
		b.WriteString(" python=none")
	}
	fmt.Fprintf(&b, " policy=%s", r.Policy)
	met := 0
	for _, q := range r.Requirements {
		if q.OK {
			met++
		}
	}
	fmt.Fprintf(&b, " requirements=%d/%d", met, len(r.Requirements))
	if len(r.Preload) == 0 {
		b.WriteString(" preload=none")
	} else {
		var mods []string
		var total float64
		for _, m := range r.Preload {
			name := m.Module
			if !m.OK {
				name += "(failed)"
			}
			mods = append(mods, name)
			total += m.ImportMS
		}
		fmt.Fprintf(&b, " preload=%s (%.0f ms)", strings.Join(mods, ","), total)
	}
	if iso := r.Isolation; iso != nil {
		var active []string
		for _, l := range iso.Layers {
			if l.Active {
				active = append(active, l.Name)
			}
		}
		fmt.Fprintf(&b, " isolation=landlock%d:%s", iso.LandlockABI, strings.Join(active, ","))
	}
	if id := r.Identity; id != nil {
		runner := "unknown"
		if id.RunnerUID >= 0 {
			runner = strconv.Itoa(id.RunnerUID)
		}
		fmt.Fprintf(&b, " uids=server:%d,runner:%s", id.ServerUID, runner)
	}
	if len(r.Problems) == 0 {
		b.WriteString(" problems=none")
	} else {
		fmt.Fprintf(&b, " problems=%d: %s", len(r.Problems), strings.Join(r.Problems, "; "))
	}
	return b.String()
}
