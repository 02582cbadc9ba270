package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"

	"github.com/pyexec/pyexec/internal/cli"
	"github.com/pyexec/pyexec/internal/confine"
	"github.com/pyexec/pyexec/pkg/api"

	"github.com/pyexec/pyexec/internal/logs"
	"github.com/pyexec/pyexec/internal/packages"
	"github.com/pyexec/pyexec/internal/pathcheck"
	"github.com/pyexec/pyexec/internal/preflight"
	"github.com/pyexec/pyexec/internal/pyreq"
	"github.com/pyexec/pyexec/internal/python"
	"github.com/pyexec/pyexec/internal/settings"
	"github.com/pyexec/pyexec/internal/version"
)

// Defaults of `pyexec init`; `pyexec serve` shares them.
const (
	DefaultPackagesDir    = settings.DefaultPackagesDir
	DefaultReport         = settings.DefaultReport
	DefaultInspectTimeout = settings.DefaultInspectTimeout
	DefaultInstallTimeout = settings.DefaultInstallTimeout
)

// InitConfig is the config of `pyexec init`. Every field has a flag and a PYEXEC_* variable.
type InitConfig struct {
	Python           string        // --python: interpreter path or name on PATH; empty discovers it
	Require          []string      // --require: PEP 508 requirements, repeatable
	RequirementsFile string        // --requirements: a requirements.txt of names and specifiers
	Preload          []string      // --preload: modules to import once and keep imported
	PackagesDir      string        // --packages-dir: where runtime packages go
	Report           string        // --report: where the report is written
	VenvDir          string        // --venv-dir: host only; asks for the venv policy
	Strict           bool          // --strict: unmet requirements and failed preloads fail init
	InspectTimeout   time.Duration // --inspect-timeout: bound of each interpreter run
	Install          []string      // --install: packages to install when the interpreter lacks them
	InstallTimeout   time.Duration // --install-timeout: bound of one pip run
	IndexURL         string        // --index-url, passed to pip
	ExtraIndexURL    []string      // --extra-index-url, passed to pip
	FindLinks        []string      // --find-links, passed to pip
	NoIndex          bool          // --no-index, passed to pip
	TrustedHosts     []string      // --trusted-host, passed to pip

	// Of pyexec init alone (pyexec serve has flags of these names for itself): the server's
	// directories that the runner only enters, made with mode 0710, and the runner's uid for the
	// report's identity.
	WorkDir      string // --work-dir: the work root; empty: none is made
	RunnerSocket string // --runner-socket: the runner socket, whose directory is made; empty: none
	RunnerUID    int    // --runner-uid: the runner's uid; -1: not known

	// identity: the report records the identity (pyexec init's own flags are set).
	identity bool

	// Requirements is Require and RequirementsFile parsed; Validate fills it.
	Requirements []pyreq.Requirement
	// InstallRequirements is Install parsed; Validate fills it.
	InstallRequirements []pyreq.Requirement
}

// index returns the pip index settings.
func (c *InitConfig) index() packages.Index {
	return packages.Index{IndexURL: c.IndexURL, ExtraIndexURL: c.ExtraIndexURL, FindLinks: c.FindLinks, NoIndex: c.NoIndex, TrustedHosts: c.TrustedHosts}
}

var moduleName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$`)

// Validate checks the config and parses the requirements.
func (c *InitConfig) Validate() error {
	if err := settings.MakeAbsolute(settings.Serve, c.vars()); err != nil {
		return usageErrorf("%w", err)
	}
	c.Requirements = nil
	seen := map[string]string{}
	add := func(r pyreq.Requirement, where string) error {
		if prev, dup := seen[r.Key()]; dup {
			return usageErrorf("requirement %s is given twice (%s and %s)", r.Key(), prev, where)
		}
		seen[r.Key()] = where
		c.Requirements = append(c.Requirements, r)
		return nil
	}
	for _, s := range c.Require {
		r, err := pyreq.ParseRequirement(s)
		if err != nil {
			return usageErrorf("--require: %w", err)
		}
		if err := add(r, fmt.Sprintf("--require %q", s)); err != nil {
			return err
		}
	}
	if c.RequirementsFile != "" {
		f, err := os.Open(c.RequirementsFile)
		if err != nil {
			return usageErrorf("--requirements: %w", err)
		}
		reqs, err := pyreq.ParseRequirementsFile(f, c.RequirementsFile)
		f.Close()
		if err != nil {
			return usageErrorf("--requirements: %w", err)
		}
		for _, r := range reqs {
			if err := add(r, c.RequirementsFile); err != nil {
				return err
			}
		}
	}
	c.InstallRequirements = nil
	for _, spec := range c.Install {
		r, err := pyreq.ParseRequirement(spec)
		if err != nil {
			return usageErrorf("--install: %w", err)
		}
		c.InstallRequirements = append(c.InstallRequirements, r)
	}
	if c.InstallTimeout <= 0 {
		return usageErrorf("--install-timeout %v: must be positive", c.InstallTimeout)
	}
	for _, m := range c.Preload {
		if !moduleName.MatchString(m) {
			return usageErrorf("--preload %q: not a module name (want e.g. numpy or os.path)", m)
		}
	}
	if c.Report == "" {
		return usageErrorf("--report must not be empty")
	}
	if c.InspectTimeout <= 0 {
		return usageErrorf("--inspect-timeout %v: must be positive", c.InspectTimeout)
	}
	switch {
	case !c.identity: // pyexec serve's preflight: the flags are serve's
	case c.RunnerUID == 0:
		return usageErrorf("--runner-uid 0: pyexec never runs code as root")
	case c.RunnerUID < -1:
		return usageErrorf("--runner-uid %d: want a uid, or -1 when not known", c.RunnerUID)
	}
	for _, p := range []*string{&c.WorkDir, &c.RunnerSocket} { // init's own; the settings' above
		if *p == "" {
			continue
		}
		abs, err := filepath.Abs(*p)
		if err != nil {
			return usageErrorf("%s: %w", *p, err)
		}
		*p = abs
	}
	return nil
}

func newInitCommand(io IO, g *globalConfig, run func(context.Context, *InitConfig) error) *cobra.Command {
	cfg := &InitConfig{identity: true}
	if run == nil {
		run = func(ctx context.Context, c *InitConfig) error { return runInit(ctx, io, g, c) }
	}
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Check the Python setup once and write the preflight report",
		Long: "init detects the container runtime, finds and inspects the interpreter in one run, checks\n" +
			"requirements, preload imports and locked paths, writes the report atomically, prints one\n" +
			"summary line on stdout and exits 0 (ok), 1 (a hard requirement failed) or 2 (usage).",
		Args: cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.Validate(); err != nil {
				return err
			}
			return run(cmd.Context(), cfg)
		},
	}
	AddInitFlags(cmd, cfg)
	f := cmd.Flags()
	f.StringVar(&cfg.WorkDir, "work-dir", "", "the server's work root (pyexec serve --work-dir) to make, or set, with mode 0710: the runner, in the server's group, may only enter it")
	f.StringVar(&cfg.RunnerSocket, "runner-socket", "", "the server's runner socket (pyexec serve --runner-socket): its directory is made, or set, with mode 0710")
	f.IntVar(&cfg.RunnerUID, "runner-uid", -1, "the runner's uid (pyexec serve --runner-uid), recorded in the report's identity; -1: not known")
	return cmd
}

// AddInitFlags registers the preflight flags (the settings marked Preflight); `pyexec serve`
// accepts them too.
func AddInitFlags(cmd *cobra.Command, cfg *InitConfig) {
	settings.AddFlags(cmd.Flags(), settings.Filter(settings.Serve, func(s settings.Setting) bool { return s.Preflight }), cfg.vars())
}

// vars are the variables of the preflight flags, by flag.
func (c *InitConfig) vars() map[string]any {
	return map[string]any{
		"python": &c.Python, "require": &c.Require, "requirements": &c.RequirementsFile, "preload": &c.Preload,
		"packages-dir": &c.PackagesDir, "report": &c.Report, "venv-dir": &c.VenvDir, "strict": &c.Strict,
		"install": &c.Install, "install-timeout": &c.InstallTimeout, "index-url": &c.IndexURL,
		"extra-index-url": &c.ExtraIndexURL, "find-links": &c.FindLinks, "no-index": &c.NoIndex,
		"trusted-host": &c.TrustedHosts, "inspect-timeout": &c.InspectTimeout,
	}
}

func runInit(ctx context.Context, io IO, g *globalConfig, cfg *InitConfig) error {
	log := logs.New(io.Stderr, g.Log).WithName("init")
	report, err := runPreflight(ctx, io, log, cfg)
	// The summary is the one line that `kubectl logs -c pyexec-init` shows; the steps behind it
	// are debug lines (-v 1), and the report holds the details.
	fmt.Fprintln(io.Stdout, report.Summary())
	log.V(1).Info("preflight finished", "ok", report.OK, "durationMs", report.DurationMS, "problems", len(report.Problems))
	if err != nil {
		log.Error(err, "preflight failed")
		return err
	}
	return nil
}

// serverDirs are the directories --work-dir and --runner-socket ask for.
func (c *InitConfig) serverDirs() []preflight.ServerDir {
	var dirs []preflight.ServerDir
	if c.WorkDir != "" {
		dirs = append(dirs, preflight.ServerDir{Path: c.WorkDir, Role: api.RoleWork})
	}
	if c.RunnerSocket != "" {
		dirs = append(dirs, preflight.ServerDir{Path: filepath.Dir(c.RunnerSocket), Role: api.RoleRunnerSocket})
	}
	return dirs
}

// identityOf is the identity of a server running as uid and gid with --runner-uid, for the
// report of pyexec init; nil for pyexec serve's own preflight.
func (c *InitConfig) identityOf(uid, gid int) *api.Identity {
	if !c.identity {
		return nil
	}
	return &api.Identity{ServerUID: uid, RunnerUID: c.RunnerUID, GID: gid, Separate: c.RunnerUID >= 0 && c.RunnerUID != uid}
}

// runPreflight detects the container, runs the preflight and writes the report; `pyexec
// serve` calls it when it finds no report.
func runPreflight(ctx context.Context, io IO, log logr.Logger, cfg *InitConfig) (*api.Report, error) {
	c := detector(io, "/").Detect()
	log.V(1).Info("container detected", "inContainer", c.InContainer, "runtime", c.Runtime, "orchestrator", c.Orchestrator, "evidence", c.Evidence)

	path := lookupOr(io.LookupEnv, "PATH", defaultPath)
	home := lookupOr(io.LookupEnv, "HOME", "/")
	kernel := confine.Probe(confine.NoCap)
	report, err := preflight.Run(ctx, preflight.Options{
		Container:      c,
		Python:         cfg.Python,
		Requirements:   cfg.Requirements,
		Preload:        cfg.Preload,
		PackagesDir:    cfg.PackagesDir,
		ReportPath:     cfg.Report,
		VenvDir:        cfg.VenvDir,
		Strict:         cfg.Strict,
		Install:        cfg.InstallRequirements,
		Index:          cfg.index(),
		InstallTimeout: cfg.InstallTimeout,
		Timeout:        cfg.InspectTimeout,
		Finder:         python.NewFinder(),
		MountInfo:      pathcheck.DefaultMountInfo,
		Env:            python.Env(path, home),
		Version:        version.Version,
		Kernel:         &kernel,
		ServerDirs:     cfg.serverDirs(),
		Identity:       cfg.identityOf(os.Geteuid(), os.Getegid()),
		Log:            log,
	})
	if !errors.Is(err, preflight.ErrReportPath) {
		if werr := preflight.WriteReport(cfg.Report, report); werr != nil {
			werr = fmt.Errorf("%w: %w", preflight.ErrReportPath, werr)
			report.OK = false
			report.Problems = append(report.Problems, werr.Error())
			err = errors.Join(err, werr)
		} else {
			log.V(1).Info("report written", "path", cfg.Report)
		}
	}
	return report, err
}
