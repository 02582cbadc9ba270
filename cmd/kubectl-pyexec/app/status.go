package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pyexec/pyexec/internal/cli"
	"github.com/pyexec/pyexec/internal/mutation"
)

// Values of the INJECTED and INIT columns.
const (
	InjectedNative  = "native"  // the sidecar is an init container with restartPolicy Always
	InjectedRegular = "regular" // the sidecar is a regular container
	InjectedNo      = "no"

	InitOK      = "ok"
	InitFailed  = "FAILED"
	InitRunning = "running"
	InitWaiting = "waiting"

	// none fills a cell that has no value.
	none = "-"
	// defaultMode is pyexec serve's --mode default.
	defaultMode = "fork"
	// summaryPrefix starts the line that pyexec init prints (preflight.Summary).
	summaryPrefix = "pyexec preflight "
)

// Bounds of the calls that status makes per pod.
const (
	metricsTimeout = 5 * time.Second
	logsTimeout    = 5 * time.Second
	logTailLines   = 20
	parallelPods   = 8
)

// StatusConfig is the config of `kubectl pyexec status`.
type StatusConfig struct {
	Output        string // -o: "" (a table), wide or json
	AllNamespaces bool   // -A
}

// Validate checks the output format.
func (c *StatusConfig) Validate() error {
	switch c.Output {
	case "", "wide", "json":
		return nil
	}
	return cli.Usagef("-o %q: want wide or json (default: a table)", c.Output)
}

// PodStatus is one row of status.
type PodStatus struct {
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	Node      string `json:"node,omitempty"`
	Phase     string `json:"phase"`
	// Injected is native, regular or no.
	Injected string `json:"injected"`
	// Init is pyexec-init's result: ok or FAILED from its summary line, running, waiting,
	// "exit N" when it ended without a summary line that could be read, or - (not injected).
	Init string `json:"init"`
	// InitSummary is the summary line of pyexec init.
	InitSummary string `json:"init_summary,omitempty"`
	// Ready is the sidecar's readiness; nil without a container status.
	Ready    *bool `json:"ready"`
	Restarts int32 `json:"restarts"`
	// RunnerRestarts are the runner container's: an OOM in it, or a crash, restarts it alone.
	RunnerRestarts int32 `json:"runner_restarts"`
	// Mode is the sidecar's execution mode; ModeFrom says where it was read: "metrics", or
	// "spec" (the container's PYEXEC_MODE, else pyexec serve's default) when they could not be.
	Mode     string `json:"mode,omitempty"`
	ModeFrom string `json:"mode_from,omitempty"`
	// ServerUID and RunnerUID are the uids of the server (pyexec) and of the runner
	// (pyexec-runner, the code's); UIDsFrom says where they were read: "metrics"
	// (pyexec_identity_info), or "spec" (the containers' runAsUser) when they could not be.
	// nil when neither says.
	ServerUID *int64 `json:"server_uid,omitempty"`
	RunnerUID *int64 `json:"runner_uid,omitempty"`
	UIDsFrom  string `json:"uids_from,omitempty"`
	// Metrics are the sidecar's /metrics; nil when they could not be read (MetricsError says why).
	Metrics      *SidecarMetrics `json:"metrics"`
	MetricsError string          `json:"metrics_error,omitempty"`
	// Notes are what a person should know: why a value is missing, what is wrong.
	Notes []string `json:"notes,omitempty"`
}

func newStatusCommand(io IO, kube *KubeOptions, connect func() (*Cluster, error)) *cobra.Command {
	cfg := &StatusConfig{}
	cmd := &cobra.Command{
		Use:   "status [-A] [-o wide|json]",
		Short: "Every pod that asked for pyexec: injected, pyexec-init's result, the sidecar's state and metrics",
		Long: "status lists the pods labelled pyexec.dev/inject=true in the namespace (-A: in all) with:\n\n" +
			"  INJECTED    native (the sidecar is a native sidecar), regular (a regular container) or no\n" +
			"  INIT        pyexec-init's result: ok or FAILED (its summary line), running, waiting\n" +
			"  READY       the sidecar's readiness\n" +
			"  MODE        fork or spawn\n" +
			"  ISOLATION   active layers of confinement / all layers\n" +
			"  SESSIONS    sessions open now\n" +
			"  EXECUTIONS  executions since the sidecar started\n" +
			"  ERRORS      executions that did not end on their own (timeout, signal, memory or output limit, error)\n" +
			"  NOTE        why a value is missing (\"-\"), or what is wrong\n\n" +
			"The last five come from the sidecar's /metrics, read through the API server's pod proxy (the\n" +
			"pods/proxy permission); a pod whose metrics cannot be read shows \"-\" and the reason in NOTE.\n" +
			"-o wide adds the node, the sidecar's restarts, UIDS (the server's and the runner's uid, from\n" +
			"the metrics, else from the pod's spec) and pyexec-init's summary line; -o json prints all of it.",
		Args: cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.AllNamespaces = kube.AllNamespaces
			if err := cfg.Validate(); err != nil {
				return err
			}
			c, err := connect()
			if err != nil {
				return err
			}
			rows, err := Status(cmd.Context(), c, cfg.AllNamespaces)
			if err != nil {
				return err
			}
			if cfg.Output == "json" {
				return writeJSON(io.Stdout, rows)
			}
			if len(rows) == 0 {
				where := "namespace " + c.Namespace
				if cfg.AllNamespaces {
					where = "any namespace"
				}
				fmt.Fprintf(io.Stderr, "No pods labelled %s=%s in %s.\n", mutation.LabelInject, mutation.LabelInjectEnabled, where)
				return nil
			}
			return WriteStatusTable(io.Stdout, rows, cfg.AllNamespaces, cfg.Output == "wide")
		},
	}
	cmd.Flags().BoolVarP(&kube.AllNamespaces, "all-namespaces", "A", false, "list the pods of every namespace")
	cmd.Flags().StringVarP(&cfg.Output, "output", "o", "", "output format: wide or json (default: a table)")
	return cmd
}

// Status lists the opted-in pods of the cluster's namespace (or all) and reads each one's
// state. Only listing the pods can fail it: what cannot be read of one pod is a note in its row.
func Status(ctx context.Context, c *Cluster, allNamespaces bool) ([]PodStatus, error) {
	ns := c.Namespace
	if allNamespaces {
		ns = metav1.NamespaceAll
	}
	list, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: mutation.LabelInject + "=" + mutation.LabelInjectEnabled})
	if err != nil {
		return nil, fmt.Errorf("listing pods: %w", err)
	}
	pods := list.Items
	slices.SortFunc(pods, func(a, b corev1.Pod) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	rows := make([]PodStatus, len(pods))
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallelPods)
	for i := range pods {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			rows[i] = podStatus(ctx, c, &pods[i])
		})
	}
	wg.Wait()
	return rows, nil
}

// podStatus reads one pod's row.
func podStatus(ctx context.Context, c *Cluster, pod *corev1.Pod) PodStatus {
	row := PodStatus{Namespace: pod.Namespace, Pod: pod.Name, Node: pod.Spec.NodeName, Phase: string(pod.Status.Phase),
		Injected: InjectedNo, Init: none}
	sidecar, native := sidecarContainer(pod, mutation.SidecarName)
	if sidecar == nil {
		why := "the webhook did not inject it: created before the injector was installed, or excluded (kubectl pyexec check)"
		if pod.Annotations[mutation.AnnotationStatus] == mutation.StatusInjected {
			why = "annotated " + mutation.AnnotationStatus + "=" + mutation.StatusInjected + " but has no " + mutation.SidecarName + " container"
		}
		row.Notes = append(row.Notes, "not injected: "+why)
		return row
	}
	row.Injected = InjectedRegular
	if native {
		row.Injected = InjectedNative
	}
	initStatus(ctx, c, pod, &row)

	st := containerStatus(pod, mutation.SidecarName)
	if st != nil {
		ready := st.Ready
		row.Ready = &ready
		row.Restarts = st.RestartCount
	}
	if rst := containerStatus(pod, mutation.RunnerName); rst != nil {
		row.RunnerRestarts = rst.RestartCount
	}
	switch {
	case pod.Status.PodIP == "":
		row.MetricsError = "the pod has no IP yet"
	case st == nil || st.State.Running == nil:
		row.MetricsError = "the sidecar is not running"
		if st != nil && st.State.Waiting != nil && st.State.Waiting.Reason != "" {
			row.MetricsError += " (" + st.State.Waiting.Reason + ")"
		}
	default:
		mctx, cancel := context.WithTimeout(ctx, metricsTimeout)
		text, err := c.Metrics.Metrics(mctx, pod.Namespace, pod.Name, probePort(sidecar))
		cancel()
		if err == nil {
			row.Metrics, err = ParseMetrics(text)
		}
		if err != nil {
			row.MetricsError = firstLine(err.Error())
		}
	}
	row.ServerUID, row.RunnerUID, row.UIDsFrom = specUIDs(pod, sidecar)
	if m := row.Metrics; m != nil && m.ServerUID != nil {
		row.ServerUID, row.RunnerUID, row.UIDsFrom = m.ServerUID, m.RunnerUID, "metrics"
	}
	if row.Metrics != nil {
		row.Mode, row.ModeFrom = row.Metrics.Mode, "metrics"
		if _, missing := row.Metrics.ActiveLayers(); len(missing) > 0 {
			row.Notes = append(row.Notes, "isolation missing: "+strings.Join(missing, ","))
		}
	} else {
		row.Mode, row.ModeFrom = envValue(sidecar, "PYEXEC_MODE", defaultMode), "spec"
		row.Notes = append(row.Notes, "metrics: "+row.MetricsError)
	}
	return row
}

// specUIDs are the uids that the pod's spec gives the server and the runner (their
// containers' runAsUser, else the pod's), and "spec"; "" when it gives neither.
func specUIDs(pod *corev1.Pod, sidecar *corev1.Container) (server, runner *int64, from string) {
	uid := func(c *corev1.Container) *int64 {
		if c != nil && c.SecurityContext != nil && c.SecurityContext.RunAsUser != nil {
			return c.SecurityContext.RunAsUser
		}
		if c != nil && pod.Spec.SecurityContext != nil {
			return pod.Spec.SecurityContext.RunAsUser
		}
		return nil
	}
	r, _ := sidecarContainer(pod, mutation.RunnerName)
	server, runner = uid(sidecar), uid(r)
	if server == nil && runner == nil {
		return nil, nil, ""
	}
	return server, runner, "spec"
}

// initStatus fills Init and InitSummary from pyexec-init's container status: its summary
// line from the termination message when there is one, else from the last lines of its log.
func initStatus(ctx context.Context, c *Cluster, pod *corev1.Pod, row *PodStatus) {
	st := containerStatus(pod, mutation.InitContainerName)
	if st == nil {
		row.Init = InitWaiting
		return
	}
	term := st.State.Terminated
	if term == nil && st.State.Waiting != nil && st.LastTerminationState.Terminated != nil {
		term = st.LastTerminationState.Terminated // failed, and waiting to be restarted
	}
	switch {
	case term != nil:
	case st.State.Running != nil:
		row.Init = InitRunning
		return
	default:
		row.Init = InitWaiting
		if st.State.Waiting != nil && st.State.Waiting.Reason != "" && st.State.Waiting.Reason != "PodInitializing" {
			row.Notes = append(row.Notes, "init: "+st.State.Waiting.Reason)
		}
		return
	}
	summary := summaryLine(term.Message)
	if summary == "" {
		lctx, cancel := context.WithTimeout(ctx, logsTimeout)
		log, err := c.Logs.Logs(lctx, pod.Namespace, pod.Name, mutation.InitContainerName, logTailLines)
		cancel()
		if err != nil {
			row.Notes = append(row.Notes, "init log: "+firstLine(err.Error()))
		}
		summary = summaryLine(log)
	}
	row.InitSummary = summary
	switch {
	case strings.HasPrefix(summary, summaryPrefix+"ok"):
		row.Init = InitOK
	case strings.HasPrefix(summary, summaryPrefix+"FAILED"):
		row.Init = InitFailed
		row.Notes = append(row.Notes, "init failed: kubectl pyexec report "+pod.Name)
	default:
		row.Init = "exit " + strconv.Itoa(int(term.ExitCode))
		row.Notes = append(row.Notes, "init: no summary line in its termination message or log")
	}
}

// summaryLine is the last line of text that is pyexec init's summary line.
func summaryLine(text string) string {
	lines := strings.Split(text, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); strings.HasPrefix(l, summaryPrefix) {
			return l
		}
	}
	return ""
}

// probePort is the sidecar's port named mutation.ProbePortName, else mutation.ProbePort.
func probePort(c *corev1.Container) int {
	for _, p := range c.Ports {
		if p.Name == mutation.ProbePortName {
			return int(p.ContainerPort)
		}
	}
	return mutation.ProbePort
}

// envValue is a container's literal variable, or def.
func envValue(c *corev1.Container, name, def string) string {
	for _, e := range c.Env {
		if e.Name == name && e.ValueFrom == nil && e.Value != "" {
			return e.Value
		}
	}
	return def
}

// WriteStatusTable prints the rows as an aligned table; with allNamespaces a NAMESPACE column
// leads, wide adds NODE, RESTARTS, UIDS (the server's/the runner's) and the init summary line,
// and NOTE comes last.
func WriteStatusTable(w io.Writer, rows []PodStatus, allNamespaces, wide bool) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	var header []string
	if allNamespaces {
		header = append(header, "NAMESPACE")
	}
	header = append(header, "POD")
	if wide {
		header = append(header, "NODE")
	}
	header = append(header, "INJECTED", "INIT", "READY")
	if wide {
		header = append(header, "RESTARTS", "UIDS")
	}
	header = append(header, "MODE", "ISOLATION", "SESSIONS", "EXECUTIONS", "ERRORS")
	if wide {
		header = append(header, "INIT-SUMMARY")
	}
	header = append(header, "NOTE")
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		var cells []string
		if allNamespaces {
			cells = append(cells, r.Namespace)
		}
		cells = append(cells, r.Pod)
		if wide {
			cells = append(cells, orNone(r.Node))
		}
		ready := none
		if r.Ready != nil {
			ready = strconv.FormatBool(*r.Ready)
		}
		cells = append(cells, r.Injected, r.Init, ready)
		if wide {
			restarts := none
			if r.Ready != nil {
				restarts = fmt.Sprintf("%d/%d", r.Restarts, r.RunnerRestarts)
			}
			cells = append(cells, restarts, uids(r.ServerUID, r.RunnerUID))
		}
		isolation, sessions, executions, errs := none, none, none, none
		if m := r.Metrics; m != nil {
			active, missing := m.ActiveLayers()
			isolation = fmt.Sprintf("%d/%d", active, active+len(missing))
			sessions = strconv.FormatInt(m.SessionsOpen, 10)
			executions = strconv.FormatInt(m.Executions, 10)
			errs = strconv.FormatInt(m.Errors, 10)
		}
		cells = append(cells, orNone(r.Mode), isolation, sessions, executions, errs)
		if wide {
			cells = append(cells, orNone(r.InitSummary))
		}
		cells = append(cells, orNone(strings.Join(r.Notes, "; ")))
		// A tab or newline in a cell would break the alignment.
		for i := range cells {
			cells[i] = strings.NewReplacer("\t", " ", "\n", " ").Replace(cells[i])
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// uids is SERVER/RUNNER, - for one not known, and - for neither.
func uids(server, runner *int64) string {
	if server == nil && runner == nil {
		return none
	}
	s := func(uid *int64) string {
		if uid == nil {
			return none
		}
		return strconv.FormatInt(*uid, 10)
	}
	return s(server) + "/" + s(runner)
}

func orNone(s string) string {
	if s == "" {
		return none
	}
	return s
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
