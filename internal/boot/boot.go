// Package boot brings pyexec serve to ready: from the preflight report it confirms the
// interpreter, starts reaping, the client of the runner (which it starts as a child, or waits
// for on the runner socket) and the packages installer, and marks the server ready once the
// runner is. The command (cmd/pyexec/app) only gathers the configuration.
package boot

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pyexec/pyexec/internal/confine"
	"github.com/pyexec/pyexec/internal/executor"
	"github.com/pyexec/pyexec/internal/packages"
	"github.com/pyexec/pyexec/internal/reaper"
	"github.com/pyexec/pyexec/internal/runner"
	"github.com/pyexec/pyexec/internal/server"
	"github.com/pyexec/pyexec/pkg/api"
)

// Config is what becoming ready needs besides the report.
type Config struct {
	Server *server.Server
	// Reaper is the server's: it reaps pip's orphans, and starts a runner that is a child.
	Reaper   *reaper.Reaper
	Registry prometheus.Registerer
	// Info is what /v1/info says before the report fills in the rest (version, mode, limits,
	// isolation).
	Info api.Info
	// Runner configures the client of the runner; the interpreter and the preload modules are
	// filled in here from the report.
	Runner runner.ClientConfig
	// Listener, when set, is the runner socket: the runner comes to it as RunnerUID (a pod).
	// Otherwise Child is the command of a runner the server starts itself.
	Listener  net.Listener
	RunnerUID int
	Child     func() *exec.Cmd
	// Packages configures the installer; Python, Start and Done are filled in here.
	Packages packages.Config
	Policy   packages.Policy
	Log      logr.Logger
}

// Ready makes the server ready to run code with the report's interpreter (source says where
// the report came from). Until it returns nil the server answers 503, and /v1/info says why;
// it waits for the runner until ctx ends. Reaping goes on until reapCtx ends, also while the
// server drains.
func Ready(ctx, reapCtx context.Context, report *api.Report, source string, cfg Config) error {
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
	rc := cfg.Runner
	rc.Runner.Python, rc.Runner.Preload = report.Python.Executable, Preloaded(report)
	client, err := runner.NewClient(rc)
	if err != nil {
		return err
	}
	cfg.Server.SetExecutor(client)
	cfg.Registry.MustRegister(client.Collector(cfg.Reaper, cfg.Listener == nil))
	if cfg.Listener != nil {
		go func() {
			if err := client.Serve(cfg.Listener, cfg.RunnerUID); err != nil {
				cfg.Log.Error(err, "runner socket closed")
			}
		}()
	} else {
		go client.RunChild(reapCtx, runner.Child{Command: cfg.Child, Start: cfg.Reaper.Start, Done: cfg.Reaper.Done})
	}
	pc := cfg.Packages
	pc.Python, pc.Start, pc.Done = report.Python.Executable, cfg.Reaper.Start, cfg.Reaper.Done
	installer := packages.New(pc)
	cfg.Server.SetPackages(installer, cfg.Policy)
	if st, err := installer.State(); err == nil {
		st.Allowed = cfg.Policy.Patterns()
		info.Packages = &st
	}
	cfg.Log.Info("waiting for the runner")
	if err := client.WaitReady(ctx); err != nil {
		return fmt.Errorf("no runner came: %w", err)
	}
	// From now on a runner that goes (and until the next comes) makes the server unready.
	cfg.Server.AddReadyCheck("runner", client.Ready)
	hello, k, _ := client.Runner()
	info.Isolation, info.Identity = Isolation(k, info.Isolation, hello)
	info.Ready = true
	cfg.Server.SetReady(info)
	if rc.Runner.Mode == executor.ModeFork && rc.Runner.Warm > 0 {
		cfg.Server.WarmSessions()
	}
	return nil
}

// Isolation is what confines the executions of a runner that said hello and applies the
// kernel's k: the layers of k and the identity layer, with the policy of iso (the server's
// network), and who runs as whom.
func Isolation(k confine.Kernel, iso *api.Isolation, hello runner.Hello) (*api.Isolation, *api.Identity) {
	network := ""
	if iso != nil {
		network = iso.Network
	}
	id := &api.Identity{ServerUID: os.Geteuid(), RunnerUID: hello.UID, GID: hello.GID, Separate: hello.UID != os.Geteuid()}
	return k.Info(network, confine.IdentityLayer(id.Separate)), id
}

// WithReport is info with what the report says: the container, the interpreter, the policy and
// the preflight's outcome (source says where the report came from).
func WithReport(info api.Info, report *api.Report, source string) api.Info {
	if report != nil {
		info.Container, info.Python, info.Policy = report.Container, report.Python, report.Policy
		info.Preflight = api.Preflight{OK: report.OK, Summary: report.Summary(), Problems: report.Problems, Source: source}
	}
	return info
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
