package app

import (
	"reflect"

	"github.com/pyexec/pyexec/internal/unixsocket"

	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/pyexec/pyexec/internal/boot"
	"github.com/pyexec/pyexec/internal/cli"
	"github.com/pyexec/pyexec/internal/confine"
	"github.com/pyexec/pyexec/internal/container"
	"github.com/pyexec/pyexec/internal/executor"
	"github.com/pyexec/pyexec/internal/logs"
	"github.com/pyexec/pyexec/internal/packages"
	"github.com/pyexec/pyexec/internal/preflight"
	"github.com/pyexec/pyexec/internal/python"
	"github.com/pyexec/pyexec/internal/reaper"
	"github.com/pyexec/pyexec/internal/runner"
	"github.com/pyexec/pyexec/internal/server"
	"github.com/pyexec/pyexec/internal/settings"
	"github.com/pyexec/pyexec/internal/version"
	"github.com/pyexec/pyexec/pkg/api"
)

// Defaults of `pyexec serve`, from its settings (internal/settings).
const (
	DefaultSocket                   = settings.DefaultSocket
	DefaultProbeAddr                = settings.DefaultProbeAddr
	DefaultRestAfter                = settings.DefaultRestAfter
	DefaultProbeMaxConnections      = settings.DefaultProbeMaxConnections
	DefaultProbeMaxConnectionsPerIP = settings.DefaultProbeMaxConnectionsPerIP
	// nobody: the user executions run as when pyexec serve itself runs as root.
	defaultRootRunAs = "65534:65534"
)

// ServeConfig is the config of `pyexec serve`. Every field has a flag and a PYEXEC_* variable.
type ServeConfig struct {
	// Init holds the preflight flags, used when there is no report to read.
	Init InitConfig

	Socket      string // --socket
	SocketMode  string // --socket-mode, octal
	SocketGroup string // --socket-group, name or gid
	AllowUIDs   []int  // --allow-uids; empty allows every peer
	ProbeAddr   string // --probe-addr; empty disables
	WorkDir     string // --work-dir
	RunAs       string // --run-as UID[:GID]: the uid of a runner started as a child
	// RunnerSocket is where the runner container connects (--runner-socket); empty: the
	// server starts the runner as a child process.
	RunnerSocket string
	// RunnerUID is the runner container's uid (--runner-uid): only it may connect.
	RunnerUID  int
	Mode       string // --mode fork|spawn
	Warm       int    // --warm: spares of fork mode
	WarmupCode string // --warmup-code: what a spare runs before it waits
	// RestAfter is how long fork mode waits without an execution before it rests (--rest-after).
	RestAfter time.Duration
	// AllowPackages are the patterns of packages code may install at run time.
	AllowPackages []string
	// Network is the network policy of code: deny or allow (--network).
	Network string
	// RequireIsolation refuses to start when a layer of confinement is missing.
	RequireIsolation bool
	// MaxLandlockABI caps the Landlock ABI used (-1: what the kernel has; 0: none).
	MaxLandlockABI int
	// Seccomp installs the seccomp filter in executions (--seccomp).
	Seccomp bool
	// RunnerMemoryHighWater is the percentage of the runner's memory limit past which its
	// memory watchdog ends the largest execution or session (--runner-memory-high-water); 0:
	// no watchdog.
	RunnerMemoryHighWater int

	MaxConcurrent   int
	Queue           int
	DrainTimeout    time.Duration
	MaxRequestBytes int64
	LogCode         bool

	Timeout          time.Duration
	MaxTimeout       time.Duration
	MemoryLimitMB    int
	MaxMemoryLimitMB int
	MaxOutputBytes   int
	MaxProcesses     int
	MaxFileBytes     int64
	MaxFilesOut      int
	MaxFilesOutBytes int64

	MaxConnections int // --max-connections: open at once on the socket
	// WriteTimeout is how long a client has to take a response that carries a result or a
	// file (--write-timeout).
	WriteTimeout         time.Duration
	MaxConnectionsPerUID int // --max-connections-per-uid: of one peer uid

	ProbeMaxConnections      int // --probe-max-connections: open at once on the probe port
	ProbeMaxConnectionsPerIP int // --probe-max-connections-per-ip: of one remote address

	MCP bool // --mcp: serve the Model Context Protocol at /mcp on the socket
	// MCPStructuredResult is --mcp-structured-result (deprecated): run_python's structured
	// content is the API's result.
	MCPStructuredResult bool

	MaxSessions           int           // --max-sessions: open at once (0: none)
	SessionIdleTimeout    time.Duration // --session-idle-timeout: a session's default
	MaxSessionIdleTimeout time.Duration // --max-session-idle-timeout: the most one may ask for
	MaxCheckpoints        int           // --max-checkpoints-per-session (0: none)
	CheckpointIdleTimeout time.Duration // --checkpoint-idle-timeout
	MaxCheckpointBytes    int64         // --max-checkpoint-bytes (0: no limit)

	// Filled by Validate.
	mode       os.FileMode
	gid        int
	credential *syscall.Credential
	policy     packages.Policy
}

// Validate checks the config and parses the socket mode, group and run-as user.
func (c *ServeConfig) Validate() error {
	if err := c.Init.Validate(); err != nil {
		return err
	}
	if err := settings.MakeAbsolute(settings.Serve, c.vars()); err != nil {
		return usageErrorf("%w", err)
	}
	if c.Socket == "" {
		return usageErrorf("--socket must not be empty")
	}
	if c.Mode != executor.ModeFork && c.Mode != executor.ModeSpawn {
		return usageErrorf("--mode %q: want fork or spawn", c.Mode)
	}
	mode, err := strconv.ParseUint(c.SocketMode, 8, 32)
	if err != nil || mode > 0o777 {
		return usageErrorf("--socket-mode %q: want octal permissions such as 0660", c.SocketMode)
	}
	c.mode = os.FileMode(mode)
	c.gid = -1
	if c.SocketGroup != "" {
		if c.gid, err = lookupGroup(c.SocketGroup); err != nil {
			return usageErrorf("--socket-group %q: %w", c.SocketGroup, err)
		}
	}
	for _, uid := range c.AllowUIDs {
		if uid < 0 {
			return usageErrorf("--allow-uids: %d is not a uid", uid)
		}
	}
	if c.RunnerSocket != "" {
		switch {
		case c.RunnerUID < 0:
			return usageErrorf("--runner-socket needs --runner-uid: the uid of the runner that may connect")
		case c.RunnerUID == 0:
			return usageErrorf("--runner-uid 0: pyexec never runs code as root")
		case c.RunAs != "":
			return usageErrorf("--run-as is the uid of a runner started as a child; with --runner-socket the runner is started by its container")
		}
	} else if c.credential, err = runAs(c.RunAs, os.Geteuid()); err != nil {
		return err
	}
	if c.policy, err = packages.NewPolicy(c.AllowPackages); err != nil {
		return &UsageError{Err: err}
	}
	if c.Network != networkDeny && c.Network != networkAllow {
		return usageErrorf("--network %q: want deny or allow", c.Network)
	}
	values := map[string]any{}
	for name, v := range c.vars() {
		values[name] = reflect.ValueOf(v).Elem().Interface()
	}
	if errs := settings.Validate(values); len(errs) > 0 {
		return &UsageError{Err: errors.Join(errs...)}
	}
	return nil
}

func lookupGroup(name string) (int, error) {
	if gid, err := strconv.Atoi(name); err == nil && gid >= 0 {
		return gid, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(g.Gid)
}

// runAs parses --run-as. Empty means the server's own user, except that a server running as
// root runs code as nobody: code never runs as root.
func runAs(spec string, euid int) (*syscall.Credential, error) {
	if spec == "" {
		if euid != 0 {
			return nil, nil
		}
		spec = defaultRootRunAs
	}
	uidS, gidS, hasGID := strings.Cut(spec, ":")
	uid, err := strconv.ParseUint(uidS, 10, 32)
	if err != nil {
		return nil, usageErrorf("--run-as %q: want UID or UID:GID", spec)
	}
	gid := uid
	if hasGID {
		if gid, err = strconv.ParseUint(gidS, 10, 32); err != nil {
			return nil, usageErrorf("--run-as %q: want UID or UID:GID", spec)
		}
	}
	if uid == 0 {
		return nil, usageErrorf("--run-as %q: pyexec never runs code as root", spec)
	}
	if euid != 0 {
		if int(uid) != euid {
			return nil, usageErrorf("--run-as %q: only a server running as root can run code as another user", spec)
		}
		return nil, nil
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: false}, nil
}

func newServeCommand(io IO, g *globalConfig, run func(context.Context, *ServeConfig) error) *cobra.Command {
	cfg := &ServeConfig{}
	if run == nil {
		run = func(ctx context.Context, c *ServeConfig) error { return runServe(ctx, io, g, c) }
	}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve executions on a Unix socket (the sidecar)",
		Long: "serve reads the preflight report (or runs the preflight once when there is none), serves the\n" +
			"socket API v1, health and metrics on the probe port, and drains on SIGTERM.",
		Args: cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.Validate(); err != nil {
				return err
			}
			return run(cmd.Context(), cfg)
		},
	}
	AddInitFlags(cmd, &cfg.Init)
	// The defaults worked out at run time; every other default is the setting's.
	cfg.MaxConcurrent, cfg.WorkDir = defaultMaxConcurrent(), filepath.Join(os.TempDir(), "pyexec")
	settings.AddFlags(cmd.Flags(), settings.Filter(settings.Serve, func(s settings.Setting) bool { return !s.Preflight }), cfg.vars())
	cmd.SetUsageFunc(cli.GroupedUsage)
	return cmd
}

// vars are the variables of serve's own flags (the preflight's are Init's), by flag.
func (c *ServeConfig) vars() map[string]any {
	return map[string]any{
		"socket": &c.Socket, "socket-mode": &c.SocketMode, "socket-group": &c.SocketGroup, "allow-uids": &c.AllowUIDs,
		"max-connections": &c.MaxConnections, "max-connections-per-uid": &c.MaxConnectionsPerUID,
		"max-request-bytes": &c.MaxRequestBytes, "write-timeout": &c.WriteTimeout, "mcp": &c.MCP, "mcp-structured-result": &c.MCPStructuredResult, "log-code": &c.LogCode,

		"timeout": &c.Timeout, "max-timeout": &c.MaxTimeout, "memory-limit-mb": &c.MemoryLimitMB,
		"max-memory-limit-mb": &c.MaxMemoryLimitMB, "max-output-bytes": &c.MaxOutputBytes, "max-processes": &c.MaxProcesses,
		"max-file-bytes": &c.MaxFileBytes, "max-files-out": &c.MaxFilesOut, "max-files-out-bytes": &c.MaxFilesOutBytes,

		"max-concurrent": &c.MaxConcurrent, "queue": &c.Queue, "drain-timeout": &c.DrainTimeout,

		"network": &c.Network, "require-isolation": &c.RequireIsolation, "max-landlock-abi": &c.MaxLandlockABI,
		"seccomp": &c.Seccomp, "run-as": &c.RunAs,

		"work-dir": &c.WorkDir, "runner-socket": &c.RunnerSocket, "runner-uid": &c.RunnerUID,
		"runner-memory-high-water": &c.RunnerMemoryHighWater,

		"mode": &c.Mode, "warm": &c.Warm, "warmup-code": &c.WarmupCode, "rest-after": &c.RestAfter,

		"max-sessions": &c.MaxSessions, "session-idle-timeout": &c.SessionIdleTimeout,
		"max-session-idle-timeout":    &c.MaxSessionIdleTimeout,
		"max-checkpoints-per-session": &c.MaxCheckpoints, "checkpoint-idle-timeout": &c.CheckpointIdleTimeout,
		"max-checkpoint-bytes": &c.MaxCheckpointBytes,

		"allow-packages": &c.AllowPackages,

		"probe-addr": &c.ProbeAddr, "probe-max-connections": &c.ProbeMaxConnections,
		"probe-max-connections-per-ip": &c.ProbeMaxConnectionsPerIP,
	}
}

func (c *ServeConfig) limits() api.Limits {
	return api.Limits{
		TimeoutSeconds:    c.Timeout.Seconds(),
		MaxTimeoutSeconds: c.MaxTimeout.Seconds(),
		MemoryLimitMB:     c.MemoryLimitMB,
		MaxMemoryLimitMB:  c.MaxMemoryLimitMB,
		MaxOutputBytes:    c.MaxOutputBytes,
		MaxProcesses:      c.MaxProcesses,
		MaxFileBytes:      c.MaxFileBytes,
		MaxFilesOut:       c.MaxFilesOut,
		MaxFilesOutBytes:  c.MaxFilesOutBytes,
		MaxRequestBytes:   c.MaxRequestBytes,
		MaxConcurrent:     c.MaxConcurrent,
		Queue:             c.Queue,

		MaxConnections:       c.MaxConnections,
		MaxConnectionsPerUID: c.MaxConnectionsPerUID,
		WriteTimeoutSeconds:  c.WriteTimeout.Seconds(),
		AllowNetwork:         c.Network == networkAllow,

		MaxSessions:                  c.MaxSessions,
		SessionIdleTimeoutSeconds:    c.SessionIdleTimeout.Seconds(),
		MaxSessionIdleTimeoutSeconds: c.MaxSessionIdleTimeout.Seconds(),
		MaxCheckpointsPerSession:     c.MaxCheckpoints,
		CheckpointIdleTimeoutSeconds: c.CheckpointIdleTimeout.Seconds(),
		MaxCheckpointBytes:           c.MaxCheckpointBytes,
	}
}

// serverConfig is the config of the server that serves cfg.
func (c *ServeConfig) serverConfig() server.Config {
	return server.Config{
		Limits:    c.limits(),
		AllowUIDs: c.AllowUIDs,
		// In a pod the server's uid is pyexec's own (kubectl pyexec run execs pyexec run in its
		// container), and the code's is the runner's.
		AllowOwnUID: c.RunnerSocket != "" && c.RunnerUID != os.Geteuid(),
		LogCode:     c.LogCode,
		Version:     version.Version,
		Mode:        c.Mode,
		WorkDir:     c.WorkDir,
		WorkDirGID: func() int {
			if c.credential != nil {
				return int(c.credential.Gid)
			}
			return 0
		}(),
		MCP:                 c.MCP,
		MCPStructuredResult: c.MCPStructuredResult,
		// install_packages is offered when some package may be installed at run time.
		MCPInstalls: len(c.AllowPackages) > 0,
	}
}

// Values of --network.
const (
	networkDeny  = settings.NetworkDeny
	networkAllow = settings.NetworkAllow
)

// separateRunner says whether the runner runs as another uid than the server: one on the
// runner socket of another uid, or one started as a child as --run-as by a server that is root.
func (c *ServeConfig) separateRunner() bool {
	if c.RunnerSocket != "" {
		return c.RunnerUID != os.Geteuid()
	}
	return c.credential != nil
}

func runServe(ctx context.Context, io IO, g *globalConfig, cfg *ServeConfig) error {
	log := logs.New(io.Stderr, g.Log).WithName("serve")
	// Its memory holds other users' code and env: non-dumpable, its /proc files (environ, mem,
	// fd) and ptrace are out of reach of a process of its uid.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("making the server non-dumpable: %w", err)
	}
	setGoMemoryLimit(log)
	// Descriptors the server inherited (from a shell, a wrapper) must not reach the code.
	if err := closeOnExec(); err != nil {
		log.Info("WARNING: descriptors the server inherited may reach executions", "err", err.Error())
	}
	kernel := confine.Probe(cfg.MaxLandlockABI)
	kernel.Seccomp = kernel.Seccomp && cfg.Seccomp
	identity := confine.IdentityLayer(cfg.separateRunner())
	isolation := kernel.Info(cfg.Network, identity)
	if missing := kernel.Missing(identity); len(missing) > 0 {
		if cfg.RequireIsolation {
			return fmt.Errorf("--require-isolation: %s. %s", describeMissing(missing), isolationFix)
		}
		log.Info("WARNING: executions are not fully confined", "missing", describeMissing(missing))
	}
	reaper, err := reaper.New(log.WithName("reaper"))
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	isoGauge := server.IsolationGauge(isolation)
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), isoGauge)
	srvCfg := cfg.serverConfig()
	// Validate accepted cfg, and the server's rules are the same (a test keeps them so): an
	// error here is a bug, not a usage error.
	if err := srvCfg.Validate(); err != nil {
		return fmt.Errorf("server config: %w", err)
	}
	srv := server.New(srvCfg, nil, log, reg)

	sock, err := srv.ListenSocket(server.SocketConfig{Path: cfg.Socket, Mode: cfg.mode, GID: cfg.gid})
	if err != nil {
		return err
	}
	api := sock.HTTPServer()
	servers := []*http.Server{api}
	serveErr := make(chan error, 2)
	go func() { serveErr <- sock.Serve() }()
	log.Info("listening", "socket", cfg.Socket)
	var runnerListener net.Listener
	if cfg.RunnerSocket != "" {
		if runnerListener, err = listenForRunner(cfg.RunnerSocket); err != nil {
			_ = srv.Shutdown(context.Background(), api)
			return err
		}
		log.Info("waiting for the runner", "socket", cfg.RunnerSocket, "runnerUid", cfg.RunnerUID)
	}
	if cfg.ProbeAddr != "" {
		probe, err := srv.ListenProbe(server.ProbeConfig{Addr: cfg.ProbeAddr, MaxConnections: cfg.ProbeMaxConnections, MaxConnectionsPerIP: cfg.ProbeMaxConnectionsPerIP}, reg)
		if err != nil {
			_ = srv.Shutdown(context.Background(), api)
			return fmt.Errorf("--probe-addr %s: %w", cfg.ProbeAddr, err)
		}
		servers = append(servers, probe.HTTPServer())
		go func() { serveErr <- probe.Serve() }()
		log.Info("serving probes", "addr", probe.Addr().String(), "maxConnections", cfg.ProbeMaxConnections, "maxConnectionsPerIp", cfg.ProbeMaxConnectionsPerIP)
	}

	// The reaper outlives the signal: during the drain, orphans must still be reaped.
	reapCtx, stopReaping := context.WithCancel(context.Background())
	defer stopReaping()
	if err := becomeReady(ctx, reapCtx, io, g, log, cfg, srv, reaper, reg, kernel, isolation, isoGauge, runnerListener); err != nil {
		var cannot *cannotStart
		if errors.As(err, &cannot) && ctx.Err() == nil {
			// The same flags would fail again: the kubelet's restarts and `kubectl logs` say so,
			// where a sidecar that stayed up not ready would only fail its probe.
			log.Error(err, "cannot start: the preflight failed, and would fail again with the same flags and report; fix them and restart")
			_ = srv.Shutdown(context.Background(), servers...)
			if runnerListener != nil {
				runnerListener.Close()
			}
			return err
		}
		log.Error(err, "not ready")
	}

	select {
	case <-ctx.Done():
		log.Info("draining", "drainTimeout", cfg.DrainTimeout.String())
	case err := <-serveErr:
		log.Error(err, "server stopped")
	}
	dctx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout)
	defer cancel()
	if err := srv.Shutdown(dctx, servers...); err != nil {
		// Executions still running at the drain timeout were killed: that is the contract of
		// --drain-timeout, not a failure of the shutdown.
		log.Error(err, "drain incomplete")
	}
	if runnerListener != nil {
		runnerListener.Close()
	}
	log.Info("stopped")
	return nil
}

// runnerSocketDirMode is the mode of the runner socket's directory: the runner (in the
// server's group) reaches the socket and can neither list the directory nor make anything
// there.
const runnerSocketDirMode = 0o710

// listenForRunner listens on the runner socket, in a directory of the server's that the
// runner may only enter, with mode 0660: the runner connects through the group.
func listenForRunner(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, runnerSocketDirMode); err != nil {
		return nil, fmt.Errorf("--runner-socket: %w", err)
	}
	if err := os.Chmod(dir, runnerSocketDirMode); err != nil {
		return nil, fmt.Errorf("--runner-socket: %w", err)
	}
	l, err := unixsocket.Listen(path, 0o660, -1)
	if err != nil {
		return nil, fmt.Errorf("--runner-socket: %w", err)
	}
	return l, nil
}

// becomeReady loads the preflight report (or runs the preflight once) and hands it to
// boot.Ready with the configuration of the flags. On failure the server stays up and not
// ready, so /v1/info and the logs say why.
func becomeReady(ctx, reapCtx context.Context, io IO, g *globalConfig, log logr.Logger, cfg *ServeConfig, srv *server.Server, reaper *reaper.Reaper, reg prometheus.Registerer,
	kernel confine.Kernel, isolation *api.Isolation, isoGauge *server.IsolationMetric, runnerListener net.Listener) error {
	info := api.Info{Version: version.Version, Mode: cfg.Mode, Limits: cfg.limits(), Isolation: isolation}
	report, source, err := loadReport(ctx, io, log, &cfg.Init)
	if err != nil {
		srv.SetInfo(boot.WithReport(info, report, source))
		return &cannotStart{err}
	}
	path := lookupOr(io.LookupEnv, "PATH", defaultPath)
	bc := boot.Config{
		Server: srv, Reaper: reaper, Registry: reg, Info: info,
		Runner: runner.ClientConfig{
			Runner: runner.Config{
				Mode: cfg.Mode, Warm: cfg.Warm, WarmupCode: cfg.WarmupCode, Supervisors: cfg.MaxConcurrent, RestAfter: cfg.RestAfter,
				WorkDir: cfg.WorkDir, PackagesDir: cfg.Init.PackagesDir, Path: path,
				MemoryHighWater: cfg.RunnerMemoryHighWater,
			},
			Kernel:   kernel,
			GID:      -1,
			MaxFrame: runner.MaxFrameFor(cfg.MaxOutputBytes, cfg.MaxFilesOutBytes, cfg.MaxFileBytes, cfg.MaxRequestBytes),
			Accept:   cfg.acceptRunner,
			OnReady: func(h runner.Hello, k confine.Kernel) {
				iso, id := boot.Isolation(k, isolation, h)
				isoGauge.Set(iso)
				isoGauge.SetIdentity(id)
			},
			Log: log.WithName("runner"),
		},
		Listener: runnerListener, RunnerUID: cfg.RunnerUID,
		Packages: packages.Config{
			Dir:     cfg.Init.PackagesDir,
			Index:   cfg.Init.index(),
			Timeout: cfg.Init.InstallTimeout,
			Grace:   2 * cfg.MaxTimeout, // longer than any execution that may still use a replaced tree
			Env:     python.Env(path, "/"),
		},
		Policy: cfg.policy,
		Log:    log,
	}
	if runnerListener == nil {
		// The runner shares the server's PID namespace: code must not signal the server.
		bc.Runner.Runner.ProtectPIDs = []int{os.Getpid()}
		if c := cfg.credential; c != nil {
			bc.Runner.GID = int(c.Gid)
		}
		child, err := childRunner(io, g, cfg.credential, path)
		if err != nil {
			return err
		}
		bc.Child = child
	}
	if err := boot.Ready(ctx, reapCtx, report, source, bc); err != nil {
		return err
	}
	ready := srv.Info()
	log.Info("ready", "python", report.Python.Executable, "mode", cfg.Mode, "workDir", cfg.WorkDir, "serverUid", ready.Identity.ServerUID, "runnerUid", ready.Identity.RunnerUID,
		"landlockABI", ready.Isolation.LandlockABI, "network", ready.Isolation.Network, "isolation", activeLayers(ready.Isolation))
	return nil
}

// cannotStart is a failure of serve's start that no wait heals: a preflight report that cannot
// be read, or a preflight that failed (an interpreter that is not there, say).
type cannotStart struct{ err error }

func (e *cannotStart) Error() string { return "preflight: " + e.err.Error() }
func (e *cannotStart) Unwrap() error { return e.err }

// acceptRunner refuses a runner that would run code as root, or, with --require-isolation, one
// that lacks a layer of confinement.
func (c *ServeConfig) acceptRunner(h runner.Hello, k confine.Kernel) error {
	if h.UID == 0 {
		return errors.New("the runner runs as root: pyexec never runs code as root")
	}
	if cred := c.credential; cred != nil && h.UID != int(cred.Uid) {
		return fmt.Errorf("the runner runs as uid %d, not --run-as %d", h.UID, cred.Uid)
	}
	if missing := k.Missing(confine.IdentityLayer(h.UID != os.Geteuid())); c.RequireIsolation && len(missing) > 0 {
		return fmt.Errorf("--require-isolation: %s. %s", describeMissing(missing), isolationFix)
	}
	return nil
}

// runnerEnv is the environment of a runner started as a child, besides PATH: nothing of the
// server's, which may hold what the runner has no use for.
var runnerEnv []string

// childRunner is the command of the runner that the server starts as its child: this binary's
// `pyexec runner` on a control connection (fd 3), as cred when the server is root.
func childRunner(io IO, g *globalConfig, cred *syscall.Credential, path string) (func() *exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding pyexec to start the runner: %w", err)
	}
	return func() *exec.Cmd {
		cmd := exec.Command(self, "runner", "--control-fd", "3", "--log-format", g.Log.Format, "--verbosity", strconv.Itoa(g.Log.Verbosity))
		cmd.Dir = "/"
		cmd.Env = append([]string{"PATH=" + path}, runnerEnv...)
		cmd.Stderr = io.Stderr
		// Its own process group: a terminal's ^C is the server's, which stops the runner.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: cred}
		return cmd
	}, nil
}

// loadReport reads the report pyexec init wrote, or runs the preflight itself when there is none.
func loadReport(ctx context.Context, io IO, log logr.Logger, cfg *InitConfig) (*api.Report, string, error) {
	report, err := preflight.ReadReport(cfg.Report)
	if err == nil {
		log.Info("preflight report read", "path", cfg.Report, "ok", report.OK)
		return report, cfg.Report, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, cfg.Report, err
	}
	log.Info("no preflight report: running the preflight", "path", cfg.Report)
	report, err = runPreflight(ctx, io, log.WithName("preflight"), cfg)
	log.Info("preflight finished", "summary", report.Summary())
	return report, "serve", err
}

// activeLayers lists the layers in force, "name=true|false", for the ready line.
func activeLayers(iso *api.Isolation) string {
	parts := make([]string, 0, len(iso.Layers))
	for _, l := range iso.Layers {
		parts = append(parts, fmt.Sprintf("%s=%t", l.Name, l.Active))
	}
	return strings.Join(parts, ",")
}

// isolationFix ends a --require-isolation error: what to do about it.
const isolationFix = "To fix: run the pod on nodes whose kernel has every layer (Linux 6.12 or later with landlock in its LSM list: " +
	"uname -r and /sys/kernel/security/lsm on the node), or accept what is missing: --require-isolation=false " +
	"(the annotation pyexec.dev/require-isolation: \"false\", or the chart's sidecar.requireIsolation: false)"

// describeMissing names the missing layers and what each leaves open.
func describeMissing(missing []confine.Layer) string {
	parts := make([]string, 0, len(missing))
	for _, l := range missing {
		parts = append(parts, fmt.Sprintf("%s (%s)", l.Name, l.Without))
	}
	return strings.Join(parts, "; ")
}

// closeOnExec marks every descriptor above 2 close-on-exec: close_range(2) where the kernel has
// it (5.11), else each one /proc/self/fd lists.
func closeOnExec() error {
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err == nil {
		return nil
	}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			unix.CloseOnExec(fd)
		}
	}
	return nil
}

// defaultMaxConcurrent is --max-concurrent's default: as many executions as whole CPUs the
// cgroup's CPU limit gives (the runner that serve starts by hand shares it), else as the
// machine has.
func defaultMaxConcurrent() int {
	if n := settings.WholeCPUs(container.CPULimit()); n > 0 {
		return n
	}
	return runtime.NumCPU()
}
