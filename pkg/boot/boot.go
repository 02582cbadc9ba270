// Package boot brings pyexec serve to ready: from the preflight report it confirms the
// interpreter, starts reaping, the executor (fork or spawn) and the packages installer, and
// marks the server ready. The command (cmd/pyexec/app) only gathers the configuration.
package boot

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pyexec/pyexec/pkg/api"
	"github.com/pyexec/pyexec/pkg/executor"
	"github.com/pyexec/pyexec/pkg/packages"
	"github.com/pyexec/pyexec/pkg/preflight"
	"github.com/pyexec/pyexec/pkg/server"
)

// Config is what becoming ready needs besides the report.
type Config struct {
	Server   *server.Server
	Reaper   *executor.Reaper
	Registry prometheus.Registerer
	// Info is what /v1/info says before the report fills in the rest (version, mode, limits,
	// isolation).
	Info api.Info
	// Spawn configures executions; Python and Reaper are filled in here.
	Spawn executor.SpawnConfig
	// Mode is executor.ModeFork or executor.ModeSpawn; Warm, WarmupCode and Supervisors
	// configure fork mode.
	Mode        string
	Warm        int
	WarmupCode  string
	Supervisors int
	// Packages configures the installer; Python, Start and Done are filled in here.
	Packages packages.Config
	Policy   packages.Policy
	Log      logr.Logger
}

// Ready makes the server ready to run code with the report's interpreter (source says where
// the report came from). Until it returns nil the server answers 503, and /v1/info says why.
// Reaping goes on until reapCtx ends, also while the server drains.
func Ready(reapCtx context.Context, report *api.Report, source string, cfg Config) error {
	info := WithReport(cfg.Info, report, source)
	cfg.Server.SetInfo(info)
	switch {
	case report == nil:
		return fmt.Errorf("no preflight report")
	case !report.OK || report.Python == nil:
		return fmt.Errorf("preflight failed: %s", strings.Join(report.Problems, "; "))
	}
	// The interpreter is confirmed: it exists and is executable.
	if st, err := os.Stat(report.Python.Executable); err != nil || st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("interpreter %s from the report is not usable: %v", report.Python.Executable, err)
	}
	// From here every child is started through the reaper.
	go cfg.Reaper.Run(reapCtx)
	ex, err := startExecutor(report, cfg)
	if err != nil {
		return err
	}
	cfg.Server.SetExecutor(ex)
	pc := cfg.Packages
	pc.Python, pc.Start, pc.Done = report.Python.Executable, cfg.Reaper.Start, cfg.Reaper.Done
	installer := packages.New(pc)
	cfg.Server.SetPackages(installer, cfg.Policy)
	if st, err := installer.State(); err == nil {
		st.Allowed = cfg.Policy.Patterns()
		info.Packages = &st
	}
	info.Ready = true
	cfg.Server.SetReady(info)
	if cfg.Mode == executor.ModeFork && cfg.Warm > 0 {
		cfg.Server.WarmSessions()
	}
	return nil
}

// WithReport is info with what the report says: the container, the interpreter, the policy and
// the preflight's outcome (source says where the report came from).
func WithReport(info api.Info, report *api.Report, source string) api.Info {
	if report != nil {
		info.Container, info.Python, info.Policy = report.Container, report.Python, report.Policy
		info.Preflight = api.Preflight{OK: report.OK, Summary: preflight.Summary(report), Problems: report.Problems, Source: source}
	}
	return info
}

// startExecutor starts the executor of cfg.Mode with the report's interpreter.
func startExecutor(report *api.Report, cfg Config) (executor.Executor, error) {
	sc := cfg.Spawn
	sc.Python, sc.Reaper = report.Python.Executable, cfg.Reaper
	if cfg.Mode != executor.ModeFork {
		return executor.NewSpawn(sc)
	}
	fk, err := executor.NewFork(executor.ForkConfig{SpawnConfig: sc, Preload: Preloaded(report), Warm: cfg.Warm, WarmupCode: cfg.WarmupCode, Supervisors: cfg.Supervisors})
	if err != nil {
		return nil, err
	}
	cfg.Registry.MustRegister(fk.Collectors()...)
	if err := fk.Start(); err != nil {
		cfg.Log.Error(err, "zygote did not start; serving in spawn mode and retrying")
	}
	return fk, nil
}

// Preloaded are the modules the zygote imports: those of the report that imported in
// preflight (init's --preload, or serve's own when it ran the preflight). One that failed there
// would only fail again in every zygote start.
func Preloaded(report *api.Report) []string {
	var mods []string
	for _, p := range report.Preload {
		if p.OK {
			mods = append(mods, p.Module)
		}
	}
	return mods
}
