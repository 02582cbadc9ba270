// Package app holds kubectl-pyexec's commands: status (the pods that asked for pyexec),
// report (a pod's preflight report), run (code in a pod's sidecar) and check (the install).
//
// Every command reads the user's kubeconfig with client-go's loading rules and the usual
// flags (--kubeconfig, --context, -n, -A). What reaches into a pod rather than the API's
// objects (the sidecar's metrics through the pod proxy, container logs, exec) goes through
// the small interfaces of Deps, which tests replace: a control plane without kubelets (envtest)
// cannot serve logs or exec.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/pyexec/pyexec/internal/cli"
	"github.com/pyexec/pyexec/internal/version"
)

// IO is what a command may touch of its process.
type IO struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// Deps are what reaches into pods; a nil field uses the real one (the API server's pod proxy,
// pods/log, pods/exec).
type Deps struct {
	Metrics MetricsGetter
	Logs    LogGetter
	Exec    Executor
	// Log is where -v logs go: stderr by default.
	Log io.Writer
}

// exitError ends the process with code; msg, when set, is printed first.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string {
	if e.msg != "" {
		return e.msg
	}
	return fmt.Sprintf("exit status %d", e.code)
}

// Main runs kubectl-pyexec and returns the exit code: 0, 1 on failure, 2 on usage errors;
// run exits with the code's status.
func Main(ctx context.Context, args []string, io IO, deps Deps) int {
	root := NewRootCommand(io, deps)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var exit *exitError
	if errors.As(err, &exit) {
		if exit.msg != "" {
			fmt.Fprintf(io.Stderr, "kubectl-pyexec: %s\n", exit.msg)
		}
		return exit.code
	}
	fmt.Fprintf(io.Stderr, "kubectl-pyexec: %v\n", err)
	var usage *cli.UsageError
	if errors.As(err, &usage) {
		return 2
	}
	return 1
}

// KubeOptions are the kubectl flags every command takes: --kubeconfig, client-go's overrides
// (clientcmd.RecommendedConfigOverrideFlags: --context, -n, --server, --token, --as,
// --as-group, --request-timeout, --insecure-skip-tls-verify and the rest, as kubectl takes
// them), -A, and -v.
type KubeOptions struct {
	Kubeconfig    string // --kubeconfig
	Overrides     clientcmd.ConfigOverrides
	AllNamespaces bool // -A
	Verbosity     int  // -v: 6 and above log each request to the API server on stderr
}

// Cluster is what a command works with: the clients and the namespace the flags chose.
type Cluster struct {
	Client        kubernetes.Interface
	Config        *rest.Config
	Namespace     string // -n, else the context's namespace, else "default"
	AllNamespaces bool
	Metrics       MetricsGetter
	Logs          LogGetter
	Exec          Executor
}

// connect loads the kubeconfig as kubectl does (--kubeconfig, else $KUBECONFIG, else
// ~/.kube/config; --context and -n override it) and builds the clients.
func (o *KubeOptions) connect(deps Deps) (*Cluster, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = o.Kubeconfig
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &o.Overrides)
	cfg, err := cc.ClientConfig()
	if clientcmd.IsEmptyConfig(err) {
		return nil, errors.New("no kubeconfig: none at --kubeconfig, $KUBECONFIG or ~/.kube/config, and not in a pod; " +
			"give one (--kubeconfig FILE), or the API server and a credential (--server URL --token TOKEN)")
	}
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	if o.Verbosity >= 6 {
		cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return &loggedTransport{rt: rt, w: deps.Log} })
	}
	ns, _, err := cc.Namespace()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.UserAgent = "kubectl-pyexec/" + version.Version
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	c := &Cluster{Client: client, Config: cfg, Namespace: ns, AllNamespaces: o.AllNamespaces,
		Metrics: deps.Metrics, Logs: deps.Logs, Exec: deps.Exec}
	if c.Metrics == nil {
		c.Metrics = proxyMetrics{client}
	}
	if c.Logs == nil {
		c.Logs = podLogs{client}
	}
	if c.Exec == nil {
		c.Exec = &podExec{client: client, config: cfg}
	}
	return c, nil
}

// NewRootCommand builds the command tree.
func NewRootCommand(io IO, deps Deps) *cobra.Command {
	kube := &KubeOptions{}
	root := &cobra.Command{
		Use:   "kubectl-pyexec",
		Short: "Inspect and use pyexec in Kubernetes: status, report, run, check",
		Long: "kubectl pyexec looks at the pods that asked for pyexec (label pyexec.dev/inject=true) and at\n" +
			"the injector's install, with your kubeconfig:\n\n" +
			"  status [-A]               every opted-in pod: injected, pyexec-init's result, the sidecar's readiness and metrics\n" +
			"  report POD                the pod's preflight report\n" +
			"  run POD -c CODE|-f FILE   run code in the pod's sidecar (exits with the code's status)\n" +
			"  check                     the injector's install, each problem with its fix",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.ArbitraryArgs,
		RunE:          cli.RequireCommand,
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl pyexec"},
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetOut(io.Stdout)
	root.SetErr(io.Stderr)
	root.SetFlagErrorFunc(cli.FlagError)
	pf := root.PersistentFlags()
	pf.StringVar(&kube.Kubeconfig, "kubeconfig", "", "path to the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)")
	clientcmd.BindOverrideFlags(&kube.Overrides, pf, clientcmd.RecommendedConfigOverrideFlags(""))
	// -v is kubectl's verbosity, as in every kubectl command; the version is --version.
	pf.IntVarP(&kube.Verbosity, "v", "v", 0, "log level: 6 and above log each request to the API server on stderr")
	if deps.Log == nil {
		deps.Log = io.Stderr
	}
	connect := func() (*Cluster, error) { return kube.connect(deps) }
	root.AddCommand(newStatusCommand(io, kube, connect))
	root.AddCommand(newReportCommand(io, connect))
	root.AddCommand(newRunCommand(io, connect))
	root.AddCommand(newCheckCommand(io, connect))
	return root
}

// exactlyOnePod is the Args of a command on one pod.
func exactlyOnePod(_ *cobra.Command, args []string) error {
	if len(args) != 1 {
		return cli.Usagef("give exactly one POD, got %d arguments", len(args))
	}
	return nil
}

// loggedTransport logs each request to the API server and its answer, as kubectl -v 6 does.
type loggedTransport struct {
	rt http.RoundTripper
	w  io.Writer
}

func (t *loggedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	began := time.Now()
	resp, err := t.rt.RoundTrip(req)
	ms := time.Since(began).Milliseconds()
	if err != nil {
		fmt.Fprintf(t.w, "%s %s: %v in %d ms\n", req.Method, req.URL, err, ms)
	} else {
		fmt.Fprintf(t.w, "%s %s %s in %d ms\n", req.Method, req.URL, resp.Status, ms)
	}
	return resp, err
}
