package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"

	"github.com/pyexec/pyexec/internal/mutation"
)

// MetricsGetter reads the Prometheus text of a pod's port (path /metrics).
type MetricsGetter interface {
	Metrics(ctx context.Context, namespace, pod string, port int) ([]byte, error)
}

// LogGetter reads the last lines of a container's log.
type LogGetter interface {
	Logs(ctx context.Context, namespace, pod, container string, tailLines int64) (string, error)
}

// Executor runs a command in a container, streaming its standard streams. A command that ran
// and exited non-zero returns an *ExitCodeError.
type Executor interface {
	Exec(ctx context.Context, namespace, pod, container string, command []string, stdin io.Reader, stdout, stderr io.Writer) error
}

// ExitCodeError is the non-zero exit status of a command run by an Executor.
type ExitCodeError struct{ Code int }

func (e *ExitCodeError) Error() string { return fmt.Sprintf("command exited with status %d", e.Code) }

// proxyMetrics reads /metrics through the API server's pod proxy
// (/api/v1/namespaces/NS/pods/NAME:PORT/proxy/metrics): it needs the pods/proxy permission and
// a pod IP that the API server can reach.
type proxyMetrics struct{ client kubernetes.Interface }

func (p proxyMetrics) Metrics(ctx context.Context, namespace, pod string, port int) ([]byte, error) {
	path := fmt.Sprintf("/api/v1/namespaces/%s/pods/%s:%d/proxy/metrics", namespace, pod, port)
	// The text format: the API server passes Accept on, and the sidecar would otherwise be free
	// to answer in protobuf or OpenMetrics.
	b, err := p.client.CoreV1().RESTClient().Get().AbsPath(path).
		SetHeader("Accept", "text/plain;version=0.0.4").Do(ctx).Raw()
	if err != nil {
		return nil, proxyError(b, err)
	}
	return b, nil
}

// proxyError gives the reason in the body of a failed proxy call ("error trying to reach
// service: dial tcp ...: connection refused"), or the sidecar's own answer, rather than
// client-go's generic text for the status code.
func proxyError(body []byte, err error) error {
	var st metav1.Status
	if json.Unmarshal(body, &st) == nil && st.Kind == "Status" && st.Message != "" {
		return errors.New(st.Message)
	}
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return err
	}
	s := status.Status()
	if s.Details != nil {
		for _, c := range s.Details.Causes {
			if c.Type == metav1.CauseTypeUnexpectedServerResponse && c.Message != "" && c.Message != "unknown" {
				return fmt.Errorf("HTTP %d: %s", s.Code, c.Message)
			}
		}
	}
	return err
}

// podLogs reads pods/log.
type podLogs struct{ client kubernetes.Interface }

func (p podLogs) Logs(ctx context.Context, namespace, pod, container string, tailLines int64) (string, error) {
	b, err := p.client.CoreV1().Pods(namespace).GetLogs(pod, &corev1.PodLogOptions{Container: container, TailLines: &tailLines}).Do(ctx).Raw()
	return string(b), err
}

// podExec runs commands through pods/exec: over WebSocket (what API servers of 1.30 and newer
// speak), falling back to SPDY when the upgrade fails, as kubectl exec does.
type podExec struct {
	client kubernetes.Interface
	config *rest.Config
}

func (p *podExec) Exec(ctx context.Context, namespace, pod, container string, command []string, stdin io.Reader, stdout, stderr io.Writer) error {
	req := p.client.CoreV1().RESTClient().Post().Resource("pods").Namespace(namespace).Name(pod).
		SubResource("exec").VersionedParams(&corev1.PodExecOptions{
		Container: container,
		Command:   command,
		Stdin:     stdin != nil,
		Stdout:    stdout != nil,
		Stderr:    stderr != nil,
	}, scheme.ParameterCodec)
	spdy, err := remotecommand.NewSPDYExecutor(p.config, http.MethodPost, req.URL())
	if err != nil {
		return err
	}
	ws, err := remotecommand.NewWebSocketExecutor(p.config, http.MethodGet, req.URL().String())
	if err != nil {
		return err
	}
	exec, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		return err
	}
	err = exec.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: stdin, Stdout: stdout, Stderr: stderr})
	var code utilexec.ExitError
	if errors.As(err, &code) && code.Exited() {
		return &ExitCodeError{Code: code.ExitStatus()}
	}
	return err
}

// sidecarContainer returns the pod's pyexec sidecar and whether it is a native sidecar (an
// init container), or nil.
func sidecarContainer(pod *corev1.Pod, name string) (*corev1.Container, bool) {
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == name {
			return &pod.Spec.InitContainers[i], true
		}
	}
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			return &pod.Spec.Containers[i], false
		}
	}
	return nil, false
}

// containerStatus finds a container's status among the pod's init and regular ones.
func containerStatus(pod *corev1.Pod, name string) *corev1.ContainerStatus {
	for _, list := range [][]corev1.ContainerStatus{pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses} {
		for i := range list {
			if list[i].Name == name {
				return &list[i]
			}
		}
	}
	return nil
}

// firstLine shortens an error for a table cell.
func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// resolvePod is the pod that a command's POD argument means: a pod's name (or pod/NAME), or
// KIND/NAME of a workload — deploy, sts, ds, rs, job, as kubectl spells them — whose newest pod
// with a running pyexec container it then is.
func resolvePod(ctx context.Context, c *Cluster, ref string) (string, error) {
	kind, name, ok := strings.Cut(ref, "/")
	if !ok {
		return ref, nil
	}
	if name == "" || strings.Contains(name, "/") {
		return "", fmt.Errorf("%q: want POD or KIND/NAME (pod, deploy, sts, ds, rs, job)", ref)
	}
	var sel *metav1.LabelSelector
	var err error
	switch strings.ToLower(kind) {
	case "po", "pod", "pods":
		return name, nil
	case "deploy", "deployment", "deployments":
		var d *appsv1.Deployment
		if d, err = c.Client.AppsV1().Deployments(c.Namespace).Get(ctx, name, metav1.GetOptions{}); err == nil {
			sel = d.Spec.Selector
		}
	case "sts", "statefulset", "statefulsets":
		var s *appsv1.StatefulSet
		if s, err = c.Client.AppsV1().StatefulSets(c.Namespace).Get(ctx, name, metav1.GetOptions{}); err == nil {
			sel = s.Spec.Selector
		}
	case "ds", "daemonset", "daemonsets":
		var d *appsv1.DaemonSet
		if d, err = c.Client.AppsV1().DaemonSets(c.Namespace).Get(ctx, name, metav1.GetOptions{}); err == nil {
			sel = d.Spec.Selector
		}
	case "rs", "replicaset", "replicasets":
		var r *appsv1.ReplicaSet
		if r, err = c.Client.AppsV1().ReplicaSets(c.Namespace).Get(ctx, name, metav1.GetOptions{}); err == nil {
			sel = r.Spec.Selector
		}
	case "job", "jobs":
		var j *batchv1.Job
		if j, err = c.Client.BatchV1().Jobs(c.Namespace).Get(ctx, name, metav1.GetOptions{}); err == nil {
			sel = j.Spec.Selector
		}
	default:
		return "", fmt.Errorf("%q: kind %q is not one of pod, deploy, sts, ds, rs, job", ref, kind)
	}
	if err != nil {
		return "", err
	}
	selector, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil || selector.Empty() {
		return "", fmt.Errorf("%s: no pod selector (%v)", ref, err)
	}
	pods, err := c.Client.CoreV1().Pods(c.Namespace).List(ctx, metav1.ListOptions{LabelSelector: selector.String()})
	if err != nil {
		return "", err
	}
	var best *corev1.Pod
	for i := range pods.Items {
		p := &pods.Items[i]
		if st := containerStatus(p, mutation.SidecarName); st == nil || st.State.Running == nil || p.DeletionTimestamp != nil {
			continue
		}
		if best == nil || p.CreationTimestamp.After(best.CreationTimestamp.Time) {
			best = p
		}
	}
	if best == nil {
		return "", fmt.Errorf("%s in namespace %s has no pod whose %s container runs (%d pods; kubectl pyexec status)", ref, c.Namespace, mutation.SidecarName, len(pods.Items))
	}
	return best.Name, nil
}
