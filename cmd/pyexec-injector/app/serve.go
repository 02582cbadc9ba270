package app

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilversion "k8s.io/apimachinery/pkg/util/version"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/pyexec/pyexec/internal/certs"
	"github.com/pyexec/pyexec/internal/cli"
	"github.com/pyexec/pyexec/internal/logs"
	"github.com/pyexec/pyexec/internal/mutation"
	"github.com/pyexec/pyexec/internal/podwebhook"
	"github.com/pyexec/pyexec/internal/version"
	"github.com/pyexec/pyexec/internal/watchdog"
)

// Defaults of `pyexec-injector serve`.
const (
	DefaultSidecarImage = "pyexec:" + "0.1.0"
	DefaultCertDir      = "/tmp/k8s-webhook-server/serving-certs"
	CertModeSelf        = "self"
	CertModeExternal    = "external"
)

// nativeSidecarSince is the first Kubernetes version with native sidecars on by default.
var nativeSidecarSince = utilversion.MustParseGeneric("1.29.0")

// ServeConfig is the config of `pyexec-injector serve`.
type ServeConfig struct {
	WebhookPort   int
	MetricsAddr   string
	HealthAddr    string
	CertDir       string
	CertMode      string // self or external
	CertSecret    string
	WebhookConfig string
	Service       string
	Namespace     string
	CertHosts     []string // more DNS names or IPs for the certificate
	SidecarImage  string
	PullPolicy    string
	NativeSidecar string // auto, true or false
	// Network (deny or allow) and RequireIsolation are the injected sidecars' defaults of
	// pyexec.dev/network and pyexec.dev/require-isolation.
	Network          string
	RequireIsolation bool
	// MaxSessions (0 switches sessions off) and SessionIdleTimeout are the injected sidecars'
	// defaults of pyexec.dev/max-sessions and pyexec.dev/session-idle-timeout.
	MaxSessions        int
	SessionIdleTimeout time.Duration
	// MaxCheckpoints is the injected sidecars' default of pyexec.dev/max-checkpoints-per-session
	// (0 switches checkpoints off).
	MaxCheckpoints int
	// Pod holds the injected pods' uid range, resources and /dev/shm size.
	Pod PodConfig
	// Code holds the defaults of the code's annotations (--timeout, --preload, ...).
	Code CodeConfig
	// Kubeconfig is for running outside a cluster; empty uses in-cluster config or $KUBECONFIG.
	Kubeconfig string
	// Watchdog reports pods labeled pyexec.dev/inject=true that run without the sidecar;
	// WatchdogDelete also deletes those with a controller, at most
	// WatchdogMaxDeletionsPerMinute a minute. Pods younger than WatchdogGracePeriod wait.
	Watchdog                      bool
	WatchdogDelete                bool
	WatchdogMaxDeletionsPerMinute int
	WatchdogGracePeriod           time.Duration
}

// defaults are what the webhook injects where a pod's annotations say nothing; native is what
// pyexec.dev/native-sidecar "auto" means. c must be valid.
func (c *ServeConfig) defaults(native bool) mutation.Defaults {
	d := mutation.Defaults{Image: c.SidecarImage, PullPolicy: corev1.PullPolicy(c.PullPolicy), NativeSidecar: native,
		Network: c.Network, RequireIsolation: c.RequireIsolation, MaxSessions: &c.MaxSessions, SessionIdleTimeout: c.SessionIdleTimeout,
		MaxCheckpointsPerSession: &c.MaxCheckpoints}
	c.Pod.apply(&d)
	c.Code.apply(&d)
	return d
}

// Validate checks the config.
func (c *ServeConfig) Validate() error {
	if c.WebhookPort < 1 || c.WebhookPort > 65535 {
		return cli.Usagef("--webhook-port %d: want 1-65535", c.WebhookPort)
	}
	if c.CertMode != CertModeSelf && c.CertMode != CertModeExternal {
		return cli.Usagef("--cert-mode %q: want self or external", c.CertMode)
	}
	if c.CertMode == CertModeSelf {
		for flag, v := range map[string]string{"--cert-secret": c.CertSecret, "--webhook-config": c.WebhookConfig, "--service": c.Service, "--namespace (or POD_NAMESPACE)": c.Namespace} {
			if v == "" {
				return cli.Usagef("%s is required with --cert-mode self", flag)
			}
		}
	}
	if c.SidecarImage == "" {
		return cli.Usagef("--sidecar-image must not be empty")
	}
	switch c.NativeSidecar {
	case "auto", "true", "false":
	default:
		return cli.Usagef("--native-sidecar %q: want auto, true or false", c.NativeSidecar)
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
	if err := c.validWatchdog(); err != nil {
		return err
	}
	return validPullPolicy(c.PullPolicy)
}

func (c *ServeConfig) validWatchdog() error {
	if !c.Watchdog {
		if c.WatchdogDelete {
			return cli.Usagef("--watchdog-delete needs --watchdog")
		}
		return nil
	}
	if c.Namespace == "" {
		return cli.Usagef("--namespace (or POD_NAMESPACE) is required with --watchdog: its leader election lease lives there")
	}
	if c.WebhookConfig == "" {
		return cli.Usagef("--webhook-config is required with --watchdog: its selectors say which pods the webhook injects")
	}
	if c.WatchdogMaxDeletionsPerMinute < 1 {
		return cli.Usagef("--watchdog-max-deletions-per-minute %d: want 1 or more", c.WatchdogMaxDeletionsPerMinute)
	}
	if c.WatchdogGracePeriod < 0 {
		return cli.Usagef("--watchdog-grace-period %v: want 0 or more", c.WatchdogGracePeriod)
	}
	return nil
}

func newServeCommand(io IO, logOpts *logs.Options, run func(context.Context, *ServeConfig) error) *cobra.Command {
	cfg := &ServeConfig{}
	if run == nil {
		run = func(ctx context.Context, c *ServeConfig) error { return runServe(ctx, io, *logOpts, c) }
	}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the mutating admission webhook",
		Args:  cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.Namespace == "" {
				cfg.Namespace, _ = io.LookupEnv("POD_NAMESPACE")
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			return run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.WebhookPort, "webhook-port", 9443, "HTTPS port of the webhook (path "+podwebhook.Path+")")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", ":8080", "address of /metrics; 0 disables")
	f.StringVar(&cfg.HealthAddr, "health-addr", ":8081", "address of /healthz and /readyz")
	f.StringVar(&cfg.CertDir, "cert-dir", DefaultCertDir, "directory of tls.crt and tls.key")
	f.StringVar(&cfg.CertMode, "cert-mode", CertModeSelf, "self: manage a CA and serving certificate in --cert-secret and patch the caBundle; external: cert-manager provides them")
	f.StringVar(&cfg.CertSecret, "cert-secret", "", "Secret of the serving certificate (self mode)")
	f.StringVar(&cfg.WebhookConfig, "webhook-config", "", "MutatingWebhookConfiguration whose caBundle is patched (self mode)")
	f.StringVar(&cfg.Service, "service", "", "Service of the webhook, for the certificate's DNS names (self mode)")
	f.StringSliceVar(&cfg.CertHosts, "cert-hosts", nil, "more DNS names or IP addresses for the self-managed certificate (a webhook reached by URL)")
	f.StringVar(&cfg.Namespace, "namespace", "", "namespace of the injector (default: $POD_NAMESPACE)")
	f.StringVar(&cfg.SidecarImage, "sidecar-image", DefaultSidecarImage, "image of pyexec-init, pyexec-runner and pyexec, unless a pod's pyexec.dev/image says otherwise")
	f.StringVar(&cfg.PullPolicy, "image-pull-policy", string(corev1.PullIfNotPresent), "pull policy of the injected containers")
	f.StringVar(&cfg.NativeSidecar, "native-sidecar", "auto", "auto (from the API server version: 1.29 or newer), true or false")
	addConfinementFlags(f, &cfg.Network, &cfg.RequireIsolation)
	addSessionFlags(f, &cfg.MaxSessions, &cfg.SessionIdleTimeout, &cfg.MaxCheckpoints)
	addPodFlags(f, &cfg.Pod)
	addCodeFlags(f, &cfg.Code)
	f.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig outside a cluster")
	f.BoolVar(&cfg.Watchdog, "watchdog", false, "report pods labeled "+mutation.LabelInject+"=true that run without the pyexec sidecar (a Warning Event "+watchdog.ReasonNotInjected+" and metrics); one replica at a time (leader election in --namespace)")
	f.BoolVar(&cfg.WatchdogDelete, "watchdog-delete", false, "with --watchdog, also delete such pods that have a controller, so that it re-creates them through the webhook")
	f.IntVar(&cfg.WatchdogMaxDeletionsPerMinute, "watchdog-max-deletions-per-minute", 5, "most pods --watchdog-delete deletes in any minute")
	f.DurationVar(&cfg.WatchdogGracePeriod, "watchdog-grace-period", 30*time.Second, "how old a pod must be before the watchdog looks at it")
	return cmd
}

func runServe(ctx context.Context, io IO, logOpts logs.Options, cfg *ServeConfig) error {
	log := logs.New(io.Stderr, logOpts)
	ctrl.SetLogger(log)
	restCfg, err := restConfig(cfg.Kubeconfig)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return err
	}
	native, serverVersion, err := nativeSidecar(cfg.NativeSidecar, client)
	if err != nil {
		return err
	}
	log.Info("starting", "version", version.Version, "apiServer", serverVersion, "nativeSidecar", native, "sidecarImage", cfg.SidecarImage,
		"network", cfg.Network, "requireIsolation", cfg.RequireIsolation,
		"maxSessions", cfg.MaxSessions, "sessionIdleTimeout", cfg.SessionIdleTimeout.String(), "uidRange", cfg.Pod.UIDRange.String(),
		"certMode", cfg.CertMode)

	var certMgr *certs.Manager
	if cfg.CertMode == CertModeSelf {
		certMgr = certs.New(certs.Config{Namespace: cfg.Namespace, SecretName: cfg.CertSecret, ServiceName: cfg.Service,
			WebhookConfig: cfg.WebhookConfig, CertDir: cfg.CertDir, ExtraHosts: cfg.CertHosts, Client: client, Log: log.WithName("certs")})
		if err := retry(ctx, log, func() error { return certMgr.Ensure(ctx) }); err != nil {
			return err
		}
	}

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	mgr, err := ctrl.NewManager(restCfg, managerOptions(cfg, scheme))
	if err != nil {
		return err
	}
	defaults := cfg.defaults(native) // Rand stays nil: crypto/rand, safe for concurrent admissions
	handler := podwebhook.NewHandler(scheme, defaults, log.WithName("webhook"), metrics.Registry, mgr.GetEventRecorder("pyexec-injector"))
	mgr.GetWebhookServer().Register(podwebhook.Path, &webhook.Admission{Handler: handler})
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker()); err != nil {
		return err
	}
	if certMgr != nil {
		if err := mgr.AddReadyzCheck("certificate", certMgr.Checker()); err != nil {
			return err
		}
		go certMgr.Run(ctx, time.Minute)
	} else if err := mgr.AddReadyzCheck("certificate", certFilesChecker(cfg.CertDir)); err != nil {
		return err
	}
	if cfg.Watchdog {
		log.Info("watchdog on", "delete", cfg.WatchdogDelete, "maxDeletionsPerMinute", cfg.WatchdogMaxDeletionsPerMinute,
			"gracePeriod", cfg.WatchdogGracePeriod.String(), "leaderElection", watchdogLease(cfg))
		webhookReady := mgr.GetWebhookServer().StartedChecker()
		certReady := certFilesChecker(cfg.CertDir)
		if certMgr != nil {
			certReady = certMgr.Checker()
		}
		_, err := watchdog.Setup(mgr, watchdog.Config{
			Delete: cfg.WatchdogDelete, MaxDeletionsPerMinute: cfg.WatchdogMaxDeletionsPerMinute, GracePeriod: cfg.WatchdogGracePeriod,
			Namespace: cfg.Namespace, WebhookConfig: cfg.WebhookConfig, Defaults: defaults,
			// Delete only while this replica's webhook serves with a valid certificate.
			Ready: func() error {
				if err := certReady(nil); err != nil {
					return err
				}
				return webhookReady(nil)
			},
		}, log.WithName("watchdog"), metrics.Registry)
		if err != nil {
			return err
		}
	}
	return mgr.Start(ctx)
}

// managerOptions are the manager's options. The cache holds only labeled pods (the
// watchdog's; the webhook reads none). With the watchdog, one replica at a time runs it
// (leader election); the webhook serves on every replica.
func managerOptions(cfg *ServeConfig, scheme *runtime.Scheme) manager.Options {
	opts := manager.Options{
		Scheme:                 scheme,
		Cache:                  watchdog.CacheOptions(),
		Metrics:                metricsserver.Options{BindAddress: cfg.MetricsAddr},
		HealthProbeBindAddress: cfg.HealthAddr,
		WebhookServer:          webhook.NewServer(webhook.Options{Port: cfg.WebhookPort, CertDir: cfg.CertDir}),
	}
	if cfg.Watchdog {
		opts.LeaderElection = true
		opts.LeaderElectionID = watchdogLease(cfg)
		opts.LeaderElectionNamespace = cfg.Namespace
		opts.LeaderElectionReleaseOnCancel = true
	}
	return opts
}

// watchdogLease names the Lease of the watchdog's leader election, one per installation.
func watchdogLease(cfg *ServeConfig) string {
	return cfg.WebhookConfig + "-watchdog"
}

// retry runs f until it succeeds or ctx ends, with a short backoff: the API server may not be
// reachable yet when the pod starts.
func retry(ctx context.Context, log logr.Logger, f func() error) error {
	delay := 500 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return nil
		}
		log.Error(err, "certificate setup failed; retrying", "in", delay.String())
		select {
		case <-ctx.Done():
			return fmt.Errorf("certificate setup: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(delay):
		}
		delay = min(2*delay, 10*time.Second)
	}
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		return clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	return ctrl.GetConfig() // in-cluster, or $KUBECONFIG / ~/.kube/config
}

// nativeSidecar resolves --native-sidecar; auto asks the API server its version.
func nativeSidecar(mode string, client kubernetes.Interface) (bool, string, error) {
	info, err := client.Discovery().ServerVersion()
	if err != nil {
		if mode == "auto" {
			return false, "", fmt.Errorf("reading the API server version for --native-sidecar=auto: %w", err)
		}
		return mode == "true", "unknown", nil
	}
	switch mode {
	case "true":
		return true, info.GitVersion, nil
	case "false":
		return false, info.GitVersion, nil
	}
	v, err := utilversion.ParseGeneric(info.GitVersion)
	if err != nil {
		return false, info.GitVersion, fmt.Errorf("API server version %q: %w", info.GitVersion, err)
	}
	return v.AtLeast(nativeSidecarSince), info.GitVersion, nil
}

// certFilesChecker is ready once cert-manager's certificate is mounted.
func certFilesChecker(dir string) healthz.Checker {
	return func(*http.Request) error {
		for _, f := range []string{certs.KeyCert, certs.KeyKey} {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				return err
			}
		}
		return nil
	}
}
