// Package preflight checks the Python setup once, at pod start: container detection, the
// interpreter (one inspection run), requirements, preload imports and locked paths, into one
// report that `pyexec serve` reads instead of checking again on every execution.
package preflight

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/go-logr/logr"

	"github.com/pyexec/pyexec/internal/confine"
	"github.com/pyexec/pyexec/internal/packages"
	"github.com/pyexec/pyexec/internal/pathcheck"
	"github.com/pyexec/pyexec/internal/pyreq"
	"github.com/pyexec/pyexec/internal/python"
	"github.com/pyexec/pyexec/internal/venv"
	"github.com/pyexec/pyexec/pkg/api"
)

// Hard failures: Run returns them (joined) and sets Report.OK to false.
var (
	ErrInterpreter = errors.New("no usable python interpreter")
	ErrRequirement = errors.New("a strict requirement is not met")
	ErrVenv        = errors.New("the venv cannot be used")
	ErrReportPath  = errors.New("the report cannot be written")
	ErrInstall     = errors.New("packages could not be installed")
	ErrServerDir   = errors.New("a directory of the server cannot be made")
)

// ServerDirMode is the mode of the server's directories that the runner only enters (the work
// root, the runner socket's directory): the runner, in the server's group, reaches what the
// server gives it there, and can neither list them nor make, rename or remove anything in
// them.
const ServerDirMode = 0o710

// ServerDir is a directory of the server that the runner only enters, with its role in
// Report.Paths (api.RoleWork, api.RoleRunnerSocket).
type ServerDir struct {
	Path, Role string
}

// Options are the inputs of one preflight.
type Options struct {
	// Container is the detection result; it decides the policy.
	Container api.Container
	// Python is the interpreter asked for (--python); empty means discover it.
	Python       string
	Requirements []pyreq.Requirement
	Preload      []string
	PackagesDir  string
	ReportPath   string
	// VenvDir asks for the venv policy on a host; it is ignored in a container.
	VenvDir string
	// Strict makes unmet requirements and failed preload imports hard failures.
	Strict bool
	// Install are packages to install into PackagesDir when the interpreter lacks them.
	Install []pyreq.Requirement
	// Index and InstallTimeout configure pip for Install.
	Index          packages.Index
	InstallTimeout time.Duration
	// Timeout bounds each interpreter run (inspection, venv creation).
	Timeout time.Duration
	// Kernel is what the kernel offers to confine executions (confine.Probe); nil leaves
	// the report's isolation out.
	Kernel *confine.Kernel
	// ServerDirs are made (with their parents) when missing and given ServerDirMode when not;
	// one that is locked or cannot be given the mode fails the preflight (ErrServerDir).
	ServerDirs []ServerDir
	// Identity is the server's and the runner's uid, for the report; nil leaves it out.
	Identity *api.Identity

	Finder    python.Finder
	MountInfo string   // pathcheck.DefaultMountInfo unless testing
	Env       []string // environment of interpreter runs, see python.Env
	Version   string   // pyexec's version, for the report
	Log       logr.Logger
	Now       func() time.Time
}

// Run performs the preflight. It always returns a report; the error joins the hard failures
// (ErrInterpreter, ErrRequirement, ErrVenv, ErrReportPath), each wrapping its cause.
func Run(ctx context.Context, opts Options) (*api.Report, error) {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	start := now()
	p := &run{opts: opts, log: opts.Log, report: &api.Report{
		Schema:        api.ReportSchema,
		PyexecVersion: opts.Version,
		CreatedAt:     start.UTC().Format(time.RFC3339),
		Container:     opts.Container,
		Policy:        api.PolicySystem,
		Requirements:  []api.Requirement{},
		Preload:       []api.Preload{},
		Paths:         []api.Path{},
		Identity:      opts.Identity,
		Problems:      []string{},
	}}
	p.do(ctx)
	p.report.OK = len(p.hard) == 0
	p.report.DurationMS = float64(now().Sub(start).Microseconds()) / 1000
	return p.report, errors.Join(p.hard...)
}

type run struct {
	opts   Options
	log    logr.Logger
	report *api.Report
	hard   []error
}

// fail records a hard failure: the error for the caller, its sentence for the person.
func (p *run) fail(err error) {
	p.hard = append(p.hard, err)
	p.report.Problems = append(p.report.Problems, err.Error())
}

func (p *run) warn(format string, args ...any) {
	p.report.Problems = append(p.report.Problems, fmt.Sprintf(format, args...))
}

func (p *run) do(ctx context.Context) {
	for _, w := range p.opts.Container.Warnings {
		p.warn("container detection: %s", w)
	}
	if k := p.opts.Kernel; k != nil {
		p.report.Isolation = k.Info("")
		for _, l := range k.Missing() {
			p.warn("isolation: the kernel lacks %s: %s", l.Name, l.Without)
		}
	}
	checker, err := pathcheck.NewChecker(p.opts.MountInfo)
	if err != nil {
		// Without the mount table no path can be judged safe to write.
		p.fail(fmt.Errorf("%w: %v", ErrReportPath, err))
		return
	}
	p.checkPaths(checker)

	interp, err := p.opts.Finder.Find(p.opts.Python, p.opts.Container.InContainer)
	if err != nil {
		p.fail(fmt.Errorf("%w: %w", ErrInterpreter, err))
		return
	}
	p.log.V(1).Info("interpreter found", "python", interp)

	if p.opts.VenvDir != "" {
		if p.opts.Container.InContainer {
			p.warn("--venv-dir %s is ignored in a container: the policy is system, and pyexec never creates, checks or deletes a venv there", p.opts.VenvDir)
		} else if interp, err = p.venv(ctx, checker, interp); err != nil {
			p.fail(fmt.Errorf("%w: %w", ErrVenv, err))
			return
		}
	}

	in, err := p.inspect(ctx, interp)
	if err != nil {
		p.fail(fmt.Errorf("%w: %w", ErrInterpreter, err))
		return
	}
	if installed, err := p.install(ctx, interp, in.Python.Distributions); err != nil {
		p.fail(fmt.Errorf("%w: %w", ErrInstall, err))
	} else if installed {
		// Look again, so that requirements and preloads see the new packages.
		if in, err = p.inspect(ctx, interp); err != nil {
			p.fail(fmt.Errorf("%w: %w", ErrInterpreter, err))
			return
		}
	}
	p.report.Python = &in.Python
	if !in.Python.Ctypes {
		p.fail(fmt.Errorf("%w: %s has no working ctypes, which pyexec needs to confine every execution (prctl, Landlock, seccomp)", ErrInterpreter, in.Python.Executable))
	}
	p.log.V(1).Info("interpreter inspected", "python", in.Python.Executable, "version", in.Python.Version, "inspectMs", in.Python.InspectMS)
	p.checkRequirements(in.Python.Distributions)
	p.checkPreload(in.Preload)
}

func (p *run) inspect(ctx context.Context, interp string) (*python.Inspection, error) {
	ictx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
	defer cancel()
	return python.Inspect(ictx, interp, python.InspectOptions{Preload: p.opts.Preload, PackagesDir: packages.Tree(p.opts.PackagesDir), Env: p.opts.Env})
}

// install installs the --install requirements that the interpreter lacks into the packages
// dir, and records the dir's state in the report. It reports whether it installed anything.
func (p *run) install(ctx context.Context, interp string, dists []api.Distribution) (bool, error) {
	if p.opts.PackagesDir == "" {
		return false, nil
	}
	installer := packages.New(packages.Config{
		Dir: p.opts.PackagesDir, Python: interp, Index: p.opts.Index, Timeout: p.opts.InstallTimeout,
		Grace: time.Hour, Env: p.opts.Env,
	})
	defer func() {
		if st, err := installer.State(); err == nil {
			p.report.Packages = &st
		}
	}()
	installed := make(map[string]string, len(dists))
	for _, d := range dists {
		installed[d.Name] = d.Version
	}
	var missing []pyreq.Requirement
	for _, r := range p.opts.Install {
		if !CheckRequirement(r, installed).OK {
			missing = append(missing, r)
		}
	}
	if len(missing) == 0 {
		return false, nil
	}
	start := time.Now()
	if _, err := installer.Install(ctx, missing, false); err != nil {
		return false, err
	}
	p.log.Info("packages installed", "packages", fmt.Sprint(missing), "durationMs", float64(time.Since(start).Microseconds())/1000)
	return true, nil
}

func (p *run) checkPaths(checker *pathcheck.Checker) {
	if p.opts.PackagesDir != "" {
		pkgs := checker.Check(p.opts.PackagesDir, api.RolePackages, true)
		p.report.Paths = append(p.report.Paths, pkgs)
		if pkgs.Locked {
			p.warn("packages dir is locked, so packages cannot be installed at run time: %s", pkgs.Reason)
		}
	}
	rep := checker.Check(filepath.Dir(p.opts.ReportPath), api.RoleReport, true)
	p.report.Paths = append(p.report.Paths, rep)
	if rep.Locked {
		p.fail(fmt.Errorf("%w: %s", ErrReportPath, rep.Reason))
	}
	for _, d := range p.opts.ServerDirs {
		res := checker.Check(d.Path, d.Role, true)
		p.report.Paths = append(p.report.Paths, res)
		if res.Locked {
			p.fail(fmt.Errorf("%w: %s", ErrServerDir, res.Reason))
			continue
		}
		// MkdirAll's mode went through the umask, and a directory that was there has its own.
		if err := os.Chmod(d.Path, ServerDirMode); err != nil {
			p.fail(fmt.Errorf("%w: %s: %w", ErrServerDir, d.Path, err))
			continue
		}
		p.log.V(1).Info("server directory ready", "path", d.Path, "role", d.Role, "mode", fmt.Sprintf("%#o", ServerDirMode))
	}
}

func (p *run) venv(ctx context.Context, checker *pathcheck.Checker, base string) (string, error) {
	vctx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
	defer cancel()
	res, err := venv.Ensure(vctx, venv.Options{Dir: p.opts.VenvDir, Base: base, Env: p.opts.Env, Checker: checker})
	p.report.Paths = append(p.report.Paths, res.Path)
	if err != nil {
		return "", err
	}
	p.report.Policy = api.PolicyVenv
	p.log.Info("venv ready", "path", p.opts.VenvDir, "created", res.Created)
	return res.Python, nil
}

func (p *run) checkRequirements(dists []api.Distribution) {
	installed := make(map[string]string, len(dists))
	for _, d := range dists {
		installed[d.Name] = d.Version
	}
	for _, r := range p.opts.Requirements {
		res := CheckRequirement(r, installed)
		p.report.Requirements = append(p.report.Requirements, res)
		if res.OK {
			continue
		}
		if p.opts.Strict {
			p.fail(fmt.Errorf("%w: %s", ErrRequirement, res.Problem))
		} else {
			p.warn("%s", res.Problem)
		}
	}
}

// CheckRequirement checks one requirement against the installed versions (by normalized name).
func CheckRequirement(r pyreq.Requirement, installed map[string]string) api.Requirement {
	res := api.Requirement{Name: r.Key(), Specifier: r.Specifier.String()}
	v, ok := installed[r.Key()]
	if !ok {
		res.Problem = fmt.Sprintf("requirement %s is not installed", r)
		return res
	}
	res.Installed = v
	ver, err := pyreq.ParseVersion(v)
	if err != nil {
		res.Problem = fmt.Sprintf("requirement %s: installed version %q is not a PEP 440 version", r, v)
		return res
	}
	if !r.Specifier.Contains(ver) {
		res.Problem = fmt.Sprintf("requirement %s is not met: %s is installed", r, v)
		return res
	}
	res.OK = true
	return res
}

func (p *run) checkPreload(results []api.Preload) {
	p.report.Preload = results
	for _, m := range results {
		if m.OK {
			continue
		}
		err := fmt.Errorf("preload module %s does not import: %s", m.Module, m.Error)
		if p.opts.Strict {
			p.fail(fmt.Errorf("%w: %w", ErrRequirement, err))
		} else {
			p.warn("%v", err)
		}
	}
}
