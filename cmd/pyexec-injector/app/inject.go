package app

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"

	"github.com/pyexec/pyexec/internal/cli"
	"github.com/pyexec/pyexec/internal/mutation"
	"github.com/pyexec/pyexec/internal/settings"
)

// InjectConfig is the config of `pyexec-injector inject`.
type InjectConfig struct {
	File          string // -f: a file, or - for standard input
	Output        string // -o: yaml or json
	SidecarImage  string // --sidecar-image
	PullPolicy    string // --image-pull-policy
	NativeSidecar bool   // --native-sidecar
	Force         bool   // --force: inject pod templates without the opt-in label too

	Network          string // --network: deny or allow
	RequireIsolation bool   // --require-isolation

	MaxSessions        int           // --max-sessions: 0 switches sessions off
	SessionIdleTimeout time.Duration // --session-idle-timeout
	MaxCheckpoints     int           // --max-checkpoints-per-session: 0 switches checkpoints off

	Pod  PodConfig  // --uid-range, the containers' resources, --runner-shm-size
	Code CodeConfig // --timeout, --preload, ...: the defaults of the code's annotations
}

// defaults are what inject writes where a pod's annotations say nothing. c must be valid.
func (c *InjectConfig) defaults() mutation.Defaults {
	d := mutation.Defaults{
		Image: c.SidecarImage, PullPolicy: corev1.PullPolicy(c.PullPolicy), NativeSidecar: c.NativeSidecar, Force: c.Force,
		Network: c.Network, RequireIsolation: c.RequireIsolation,
		MaxSessions: &c.MaxSessions, SessionIdleTimeout: c.SessionIdleTimeout, MaxCheckpointsPerSession: &c.MaxCheckpoints,
	}
	c.Pod.apply(&d)
	c.Code.apply(&d)
	return d
}

// Validate checks the config.
func (c *InjectConfig) Validate() error {
	if c.File == "" {
		return cli.Usagef("-f FILE is required (- reads standard input)")
	}
	if c.Output != "yaml" && c.Output != "json" {
		return cli.Usagef("-o %q: want yaml or json", c.Output)
	}
	if c.SidecarImage == "" {
		return cli.Usagef("--sidecar-image must not be empty")
	}
	if err := validNetwork(c.Network); err != nil {
		return err
	}
	if err := validSessions(c.MaxSessions, c.SessionIdleTimeout); err != nil {
		return err
	}
	if err := c.Pod.Validate(); err != nil {
		return err
	}
	if err := c.Code.Validate(); err != nil {
		return err
	}
	return validPullPolicy(c.PullPolicy)
}

func validNetwork(n string) error {
	if n != mutation.NetworkDeny && n != mutation.NetworkAllow {
		return cli.Usagef("--network %q: want %s or %s", n, mutation.NetworkDeny, mutation.NetworkAllow)
	}
	return nil
}

func validSessions(maxSessions int, idle time.Duration) error {
	if maxSessions < 0 {
		return cli.Usagef("--max-sessions %d: want 0 (sessions off) or more", maxSessions)
	}
	if idle <= 0 {
		return cli.Usagef("--session-idle-timeout %v: want a duration above zero", idle)
	}
	return nil
}

func validPullPolicy(p string) error {
	switch corev1.PullPolicy(p) {
	case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
		return nil
	}
	return cli.Usagef("--image-pull-policy %q: want Always, IfNotPresent or Never", p)
}

func newInjectCommand(io IO, run func(context.Context, *InjectConfig) error) *cobra.Command {
	cfg := &InjectConfig{}
	if run == nil {
		run = func(_ context.Context, c *InjectConfig) error { return runInject(io, c) }
	}
	cmd := &cobra.Command{
		Use:   "inject -f FILE|- [-o yaml|json]",
		Short: "Inject offline into manifests (Pods and the pod templates of workloads)",
		Long: "inject reads multi-document YAML, injects every Pod and workload pod template labeled\n" +
			"pyexec.dev/inject: \"true\" with the same code as the webhook, passes other objects through\n" +
			"unchanged and writes the result to standard output. Injecting twice gives the same output.",
		Args: cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.Validate(); err != nil {
				return err
			}
			return run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&cfg.File, "file", "f", "", "manifests to read, or - for standard input")
	f.StringVarP(&cfg.Output, "output", "o", "yaml", "output format: yaml or json")
	f.StringVar(&cfg.SidecarImage, "sidecar-image", DefaultSidecarImage, "image of pyexec-init, pyexec-runner and pyexec, unless a pod's pyexec.dev/image says otherwise")
	f.StringVar(&cfg.PullPolicy, "image-pull-policy", string(corev1.PullIfNotPresent), "pull policy of the injected containers")
	f.BoolVar(&cfg.NativeSidecar, "native-sidecar", true, "inject the sidecar as a native sidecar (Kubernetes 1.29 or newer)")
	f.BoolVar(&cfg.Force, "force", false, "inject pod templates that lack the pyexec.dev/inject label too")
	addConfinementFlags(f, &cfg.Network, &cfg.RequireIsolation)
	addSessionFlags(f, &cfg.MaxSessions, &cfg.SessionIdleTimeout, &cfg.MaxCheckpoints)
	addPodFlags(f, &cfg.Pod)
	addCodeFlags(f, &cfg.Code)
	return cmd
}

func runInject(sio IO, cfg *InjectConfig) error {
	in := sio.Stdin
	if cfg.File != "-" {
		f, err := os.Open(cfg.File)
		if err != nil {
			return cli.Usagef("%w", err)
		}
		defer f.Close()
		in = f
	}
	var r io.Reader = in
	d := cfg.defaults()
	// Warnings go to stderr, as kubectl prints an API server's: the manifests on stdout stay whole.
	return mutation.InjectManifests(r, sio.Stdout, d, cfg.Output, func(msg string) { fmt.Fprintln(sio.Stderr, "Warning: "+msg) })
}

// addConfinementFlags adds the flags of serve and inject that set the injected sidecars'
// PYEXEC_NETWORK and PYEXEC_REQUIRE_ISOLATION, the defaults of pyexec.dev/network and
// pyexec.dev/require-isolation. Their defaults are the chart's (settings.Setting.InjectorDefault):
// the offline inject writes what an installed webhook would.
func addConfinementFlags(f *pflag.FlagSet, network *string, requireIsolation *bool) {
	f.StringVar(network, "network", injectorDefault[string]("network"),
		"whether the code that injected sidecars run may use the network: deny or allow, unless a pod's pyexec.dev/network says otherwise")
	f.BoolVar(requireIsolation, "require-isolation", injectorDefault[bool]("require-isolation"),
		"injected sidecars refuse to start on a kernel that lacks a layer of confinement (Landlock ABI 6, seccomp), unless a pod's pyexec.dev/require-isolation says otherwise")
}

// addSessionFlags adds the flags of serve and inject that set the injected sidecars'
// PYEXEC_MAX_SESSIONS, PYEXEC_SESSION_IDLE_TIMEOUT and PYEXEC_MAX_CHECKPOINTS_PER_SESSION, the
// defaults of pyexec.dev/max-sessions, pyexec.dev/session-idle-timeout and
// pyexec.dev/max-checkpoints-per-session. Their defaults are the chart's.
func addSessionFlags(f *pflag.FlagSet, maxSessions *int, idle *time.Duration, checkpoints *int) {
	f.IntVar(maxSessions, "max-sessions", injectorDefault[int]("max-sessions"),
		"sessions that injected sidecars keep open at once (0 switches sessions off), unless a pod's pyexec.dev/max-sessions says otherwise")
	f.DurationVar(idle, "session-idle-timeout", injectorDefault[time.Duration]("session-idle-timeout"),
		"how long a session of an injected sidecar lives without a call (at most the sidecar's max session idle timeout, 1h), unless a pod's pyexec.dev/session-idle-timeout says otherwise")
	f.IntVar(checkpoints, "max-checkpoints-per-session", injectorDefault[int]("max-checkpoints-per-session"),
		"checkpoints a session of an injected sidecar holds at once (0 switches checkpoints off, at most 64), unless a pod's pyexec.dev/max-checkpoints-per-session says otherwise")
}

// injectorDefault is the default of the injector's flag for the sidecar setting of that flag.
func injectorDefault[T any](flag string) T { return settings.Lookup(flag).InjectorDefault().(T) }
