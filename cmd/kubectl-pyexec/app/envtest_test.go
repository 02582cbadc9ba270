package app

// The commands against a real kube-apiserver and etcd (envtest, built by test/tools/build.sh
// as for test/webhook). The control plane has no kubelet: pods never run, so the tests create
// them with the spec the injector gives and set their status with UpdateStatus. The sidecar's
// /metrics go through the API server's real pod proxy to a server of the test on this
// machine's address (the pod's IP); pods/log and pods/exec need a kubelet and are fakes here
// (the e2e cluster covers them).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/pyexec/pyexec/internal/certs"
	"github.com/pyexec/pyexec/internal/mutation"
	"github.com/pyexec/pyexec/internal/testutil"
	"github.com/pyexec/pyexec/pkg/api"
)

// kube is the control plane of the test binary, started by the first test that needs it.
type kube struct {
	client     *kubernetes.Clientset
	kubeconfig string
	stop       func()
}

var (
	kubeOnce sync.Once
	kubeEnv  *kube
	kubeErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if kubeEnv != nil {
		kubeEnv.stop()
	}
	os.Exit(code)
}

// startKube returns the control plane, starting it once.
func startKube(t *testing.T) *kube {
	t.Helper()
	kubeOnce.Do(func() { kubeEnv, kubeErr = newKube() })
	if kubeErr != nil {
		t.Fatalf("cannot start the control plane: %v", kubeErr)
	}
	return kubeEnv
}

func newKube() (*kube, error) {
	dir, err := testutil.KubeAssets()
	if err != nil {
		return nil, err
	}
	te := &envtest.Environment{BinaryAssetsDirectory: dir, ControlPlaneStopTimeout: time.Minute}
	cfg, err := te.Start()
	if err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		_ = te.Stop()
		return nil, err
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData}
	// The context's namespace is what commands use without -n.
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "admin", Namespace: "ctx-default"}
	kc.CurrentContext = "envtest"
	f, err := os.CreateTemp("", "kubectl-pyexec-kubeconfig-")
	if err != nil {
		_ = te.Stop()
		return nil, err
	}
	f.Close()
	if err := clientcmd.WriteToFile(*kc, f.Name()); err != nil {
		_ = te.Stop()
		return nil, err
	}
	return &kube{client: client, kubeconfig: f.Name(), stop: func() { _ = te.Stop(); os.Remove(f.Name()) }}, nil
}

// run runs kubectl-pyexec against the control plane.
func (k *kube) run(t *testing.T, deps Deps, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Main(context.Background(), append(args, "--kubeconfig", k.kubeconfig), IO{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb}, deps)
	return code, out.String(), errb.String()
}

func (k *kube) namespace(t *testing.T, name string, labels map[string]string) {
	t.Helper()
	_, err := k.client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

// injectedPod is a labelled pod as the injector makes it.
func injectedPod(t *testing.T, name string, native bool) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{mutation.LabelInject: mutation.LabelInjectEnabled}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "bot", Image: "bot:test"}}},
	}
	out, injected, why, err := mutation.InjectPod(pod, mutation.Defaults{Image: "pyexec:test", NativeSidecar: native})
	if err != nil || !injected {
		t.Fatalf("inject: %v %s", err, why)
	}
	return out
}

// containerUID is the runAsUser of the pod's container name.
func containerUID(t *testing.T, pod *corev1.Pod, name string) int64 {
	t.Helper()
	c, _ := sidecarContainer(pod, name)
	if c == nil || c.SecurityContext == nil || c.SecurityContext.RunAsUser == nil {
		t.Fatalf("pod %s: container %s has no runAsUser", pod.Name, name)
	}
	return *c.SecurityContext.RunAsUser
}

// createPod creates the pod and sets its status.
func (k *kube) createPod(t *testing.T, ns string, pod *corev1.Pod, status *corev1.PodStatus) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	created, err := k.client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if status == nil {
		return created
	}
	created.Status = *status
	updated, err := k.client.CoreV1().Pods(ns).UpdateStatus(ctx, created, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("pod %s: UpdateStatus: %v", pod.Name, err)
	}
	return updated
}

// setProbePort points the sidecar's probe port at port.
func setProbePort(pod *corev1.Pod, port int) {
	sc, _ := sidecarContainer(pod, mutation.SidecarName)
	for i := range sc.Ports {
		if sc.Ports[i].Name == mutation.ProbePortName {
			sc.Ports[i].ContainerPort = int32(port)
		}
	}
}

// hostIP is an address of this machine that the API server's pod proxy accepts (a global
// unicast one; it refuses loopback), or "".
func hostIP() string {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
			return n.IP.String()
		}
	}
	return ""
}

func running(name string, ready bool) corev1.ContainerStatus {
	return corev1.ContainerStatus{Name: name, Ready: ready, Image: "pyexec:test", ImageID: "sha256:1", ContainerID: "containerd://" + name,
		Started: ptr.To(true), State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}}
}

func terminated(name string, exit int32, message string) corev1.ContainerStatus {
	return corev1.ContainerStatus{Name: name, Image: "pyexec:test", ImageID: "sha256:1", ContainerID: "containerd://" + name,
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: exit, Message: message,
			Reason: map[bool]string{true: "Completed", false: "Error"}[exit == 0], StartedAt: metav1.Now(), FinishedAt: metav1.Now()}}}
}

// fakeLogs serves pyexec-init logs from a map of pod name to log.
type fakeLogs map[string]string

func (f fakeLogs) Logs(_ context.Context, _, pod, container string, tail int64) (string, error) {
	log, ok := f[pod]
	if !ok || container != mutation.InitContainerName || tail <= 0 {
		return "", fmt.Errorf("fake: no log for %s/%s", pod, container)
	}
	return log, nil
}

const summaryOK = "pyexec preflight ok: runtime=containerd/kubernetes python=/usr/bin/python3 (3.11.2) policy=system requirements=0/0 preload=none isolation=landlock6:landlock_filesystem,scoped_signals,seccomp,network_control,landlock_truncate,non_dumpable problems=none"

func TestStatusAgainstAPIServer(t *testing.T) {
	k := startKube(t)
	ip := hostIP()
	if ip == "" {
		t.Skip("SKIPPED: no global unicast address for the pod proxy to reach")
	}
	const ns = "apps"
	k.namespace(t, ns, nil)

	// A sidecar's /metrics on this machine, reached through the API server's pod proxy.
	metricsText := sidecarMetricsText(t, true, allLayers, map[string]int{"exit": 7, "timeout": 1}, 2, []int{100123, 200456})
	var accept string
	var mu sync.Mutex
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		accept = r.Header.Get("Accept")
		mu.Unlock()
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		w.Write(metricsText)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	metricsPort := l.Addr().(*net.TCPAddr).Port
	// A port of this machine where nothing listens.
	closed, _ := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	closedPort := closed.Addr().(*net.TCPAddr).Port
	closed.Close()

	podIP := func() (string, []corev1.PodIP) { return ip, []corev1.PodIP{{IP: ip}} }

	// 1. Native sidecar, init ok (termination message), ready, metrics served.
	good := injectedPod(t, "bot-good", true)
	setProbePort(good, metricsPort)
	st := corev1.PodStatus{Phase: corev1.PodRunning,
		InitContainerStatuses: []corev1.ContainerStatus{terminated(mutation.InitContainerName, 0, summaryOK+"\n"), running(mutation.SidecarName, true)},
		ContainerStatuses:     []corev1.ContainerStatus{running("bot", true)}}
	st.PodIP, st.PodIPs = podIP()
	k.createPod(t, ns, good, &st)

	// 2. Regular sidecar, init failed with no termination message (its log has the summary),
	// sidecar running but not ready, metrics port closed.
	bad := injectedPod(t, "bot-failed", false)
	setProbePort(bad, closedPort)
	st = corev1.PodStatus{Phase: corev1.PodRunning,
		InitContainerStatuses: []corev1.ContainerStatus{terminated(mutation.InitContainerName, 1, "")},
		ContainerStatuses:     []corev1.ContainerStatus{running("bot", true), running(mutation.SidecarName, false)}}
	st.PodIP, st.PodIPs = podIP()
	k.createPod(t, ns, bad, &st)

	// 3. Injected, nothing has run yet.
	k.createPod(t, ns, injectedPod(t, "bot-pending", true), nil)

	// 4. Labelled but not injected (created before the injector).
	k.createPod(t, ns, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "bot-old", Labels: map[string]string{mutation.LabelInject: mutation.LabelInjectEnabled}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "bot", Image: "bot:test"}}},
	}, nil)

	// 5. Not labelled: not listed.
	k.createPod(t, ns, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "unrelated"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web:test"}}},
	}, nil)

	deps := Deps{Logs: fakeLogs{"bot-failed": "pyexec preflight FAILED: runtime=containerd/kubernetes python=none policy=system requirements=0/0 preload=none problems=1: no Python interpreter found\n" +
		`{"level":"error","logger":"init","msg":"preflight failed"}` + "\n"}}

	code, out, errOut := k.run(t, deps, "", "status", "-n", ns)
	t.Logf("kubectl pyexec status -n %s:\n%s", ns, out)
	if code != 0 {
		t.Fatalf("status: exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[0], "POD ") {
		t.Fatalf("want a header and 4 pods:\n%s", out)
	}
	mu.Lock()
	if !strings.HasPrefix(accept, "text/plain") {
		t.Errorf("the proxy passed Accept %q", accept)
	}
	mu.Unlock()
	wantRows := map[string][]string{
		"bot-failed":  {"regular", "FAILED", "false", "fork", "-", "-", "-", "-", "init failed: kubectl pyexec report bot-failed; metrics:"},
		"bot-good":    {"native", "ok", "true", "fork", "6/6", "2", "8", "1", "-"},
		"bot-old":     {"no", "-", "-", "-", "-", "-", "-", "-", "not injected:"},
		"bot-pending": {"native", "waiting", "-", "fork", "-", "-", "-", "-", "metrics: the pod has no IP yet"},
	}
	for _, line := range lines[1:] {
		f := strings.Fields(line)
		want, ok := wantRows[f[0]]
		if !ok {
			t.Errorf("unexpected row %q", line)
			continue
		}
		got := strings.Join(f[1:], " ")
		if !strings.HasPrefix(got, strings.Join(want, " ")) {
			t.Errorf("row %s:\n got %s\nwant %s...", f[0], got, strings.Join(want, " "))
		}
	}

	// -o json: the same, with the details.
	code, out, errOut = k.run(t, deps, "", "status", "-n", ns, "-o", "json")
	if code != 0 {
		t.Fatalf("status -o json: exit %d: %s", code, errOut)
	}
	var rows []PodStatus
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	byName := map[string]PodStatus{}
	for _, r := range rows {
		byName[r.Pod] = r
	}
	if r := byName["bot-good"]; r.Metrics == nil || r.Metrics.ByReason["timeout"] != 1 || r.ModeFrom != "metrics" || r.InitSummary != summaryOK {
		t.Errorf("bot-good: %+v", r)
	}
	// The uids: of the metrics when they are read, else of the spec (what the injector drew).
	if r := byName["bot-good"]; r.UIDsFrom != "metrics" || r.ServerUID == nil || *r.ServerUID != 100123 || r.RunnerUID == nil || *r.RunnerUID != 200456 {
		t.Errorf("bot-good uids %v/%v from %q, want 100123/200456 from the metrics", r.ServerUID, r.RunnerUID, r.UIDsFrom)
	}
	specServer, specRunner := containerUID(t, bad, mutation.SidecarName), containerUID(t, bad, mutation.RunnerName)
	if r := byName["bot-failed"]; r.UIDsFrom != "spec" || r.ServerUID == nil || *r.ServerUID != specServer || r.RunnerUID == nil || *r.RunnerUID != specRunner {
		t.Errorf("bot-failed uids %v/%v from %q, want %d/%d from the spec", r.ServerUID, r.RunnerUID, r.UIDsFrom, specServer, specRunner)
	}
	if r := byName["bot-old"]; r.UIDsFrom != "" || r.ServerUID != nil {
		t.Errorf("bot-old (not injected) uids %v from %q, want none", r.ServerUID, r.UIDsFrom)
	}
	if r := byName["bot-failed"]; r.Metrics != nil || !strings.Contains(r.MetricsError, "connection refused") || r.ModeFrom != "spec" ||
		!strings.HasPrefix(r.InitSummary, "pyexec preflight FAILED") {
		t.Errorf("bot-failed: %+v", r)
	}

	// -A adds the namespace; the context's namespace (ctx-default) has no such pods.
	code, out, _ = k.run(t, deps, "", "status", "-A")
	if code != 0 || !strings.HasPrefix(out, "NAMESPACE ") || !strings.Contains(out, "\napps ") {
		t.Errorf("status -A: exit %d:\n%s", code, out)
	}
	code, out, errOut = k.run(t, deps, "", "status")
	if code != 0 || out != "" || !strings.Contains(errOut, "No pods labelled pyexec.dev/inject=true in namespace ctx-default") {
		t.Errorf("status in an empty namespace: exit %d: %q %q", code, out, errOut)
	}
	// The log unreachable (no kubelet): the row says so and keeps the exit status.
	code, out, _ = k.run(t, Deps{}, "", "status", "-n", ns, "-o", "wide")
	t.Logf("kubectl pyexec status -n %s -o wide (real pods/log, which envtest cannot serve):\n%s", ns, out)
	// (envtest answers an empty log for a pod on no node.)
	if code != 0 || !strings.Contains(out, "init: no summary line in its termination message or log") || !strings.Contains(out, "exit 1") {
		t.Errorf("status without logs: exit %d:\n%s", code, out)
	}
	// A kubeconfig that does not exist: exit 1, the reason named.
	var errb bytes.Buffer
	if c := Main(context.Background(), []string{"status", "--kubeconfig", filepath.Join(t.TempDir(), "none")}, IO{Stdout: io.Discard, Stderr: &errb}, Deps{}); c != 1 || !strings.Contains(errb.String(), "kubeconfig") {
		t.Errorf("missing kubeconfig: exit %d: %s", c, errb.String())
	}
}

// fakeExec answers pods/exec: it records the call and runs handle.
type fakeExec struct {
	mu     sync.Mutex
	calls  []execCall
	handle func(cmd []string, stdin string, stdout, stderr io.Writer) error
}

type execCall struct {
	namespace, pod, container string
	command                   []string
	stdin                     string
}

func (f *fakeExec) Exec(_ context.Context, namespace, pod, container string, command []string, stdin io.Reader, stdout, stderr io.Writer) error {
	var in []byte
	if stdin != nil {
		in, _ = io.ReadAll(stdin)
	}
	f.mu.Lock()
	f.calls = append(f.calls, execCall{namespace, pod, container, command, string(in)})
	f.mu.Unlock()
	return f.handle(command, string(in), stdout, stderr)
}

func TestRunAndReportAgainstAPIServer(t *testing.T) {
	k := startKube(t)
	const ns = "runs"
	k.namespace(t, ns, nil)
	st := corev1.PodStatus{Phase: corev1.PodRunning,
		InitContainerStatuses: []corev1.ContainerStatus{terminated(mutation.InitContainerName, 0, ""), running(mutation.SidecarName, true)},
		ContainerStatuses:     []corev1.ContainerStatus{running("bot", true)}}
	k.createPod(t, ns, injectedPod(t, "bot", true), &st)
	k.createPod(t, ns, injectedPod(t, "starting", true), nil)
	k.createPod(t, ns, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "plain"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web:test"}}}}, nil)

	report, _ := json.Marshal(sampleReport())
	fx := &fakeExec{handle: func(cmd []string, stdin string, stdout, stderr io.Writer) error {
		switch {
		case cmd[0] == "cat":
			stdout.Write(report)
			return nil
		case strings.Join(cmd, " ") == "pyexec run --code=print(1)":
			io.WriteString(stdout, "1\n")
			return nil
		case cmd[len(cmd)-1] == "-":
			io.WriteString(stdout, strings.ToUpper(stdin))
			io.WriteString(stderr, "Traceback: boom\n")
			return &ExitCodeError{Code: 3}
		}
		return fmt.Errorf("unexpected command %q", cmd)
	}}
	deps := Deps{Exec: fx}

	code, out, errOut := k.run(t, deps, "", "run", "bot", "-n", ns, "-c", "print(1)")
	if code != 0 || out != "1\n" {
		t.Errorf("run -c: exit %d, %q %q", code, out, errOut)
	}
	if c := fx.calls[len(fx.calls)-1]; c.namespace != ns || c.pod != "bot" || c.container != mutation.SidecarName {
		t.Errorf("exec call %+v", c)
	}
	file := filepath.Join(t.TempDir(), "code.py")
	os.WriteFile(file, []byte("raise SystemExit(3)\n"), 0o644)
	code, out, errOut = k.run(t, deps, "", "run", "bot", "-n", ns, "-f", file, "--timeout", "5s")
	if code != 3 || out != "RAISE SYSTEMEXIT(3)\n" || errOut != "Traceback: boom\n" {
		t.Errorf("run -f: exit %d, %q %q", code, out, errOut)
	}
	if c := fx.calls[len(fx.calls)-1]; strings.Join(c.command, " ") != "pyexec run --timeout 5s -" || c.stdin != "raise SystemExit(3)\n" {
		t.Errorf("exec call %+v", c)
	}
	code, _, _ = k.run(t, deps, "x = 1\n", "run", "bot", "-n", ns, "-f", "-")
	if c := fx.calls[len(fx.calls)-1]; code != 3 || c.stdin != "x = 1\n" {
		t.Errorf("run -f -: exit %d, call %+v", code, c)
	}
	// A workload instead of a pod: its newest pod whose sidecar runs.
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}
	if _, err := k.client.AppsV1().Deployments(ns).Create(context.Background(), &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{Selector: sel, Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: sel.MatchLabels},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web:test"}}}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"web-running", "web-starting"} {
		p := injectedPod(t, name, true)
		p.Labels["app"] = "web"
		var status *corev1.PodStatus
		if name == "web-running" {
			status = &st
		}
		k.createPod(t, ns, p, status)
	}
	code, out, errOut = k.run(t, deps, "", "run", "deploy/web", "-n", ns, "-c", "print(1)", "-v", "6")
	if c := fx.calls[len(fx.calls)-1]; code != 0 || out != "1\n" || c.pod != "web-running" {
		t.Errorf("run deploy/web: exit %d, %q %q, exec in %q", code, out, errOut, c.pod)
	}
	if !strings.Contains(errOut, "GET https://") || !strings.Contains(errOut, "/apis/apps/v1/namespaces/runs/deployments/web 200 OK") {
		t.Errorf("-v 6 logs no request: %q", errOut)
	}
	for ref, want := range map[string]string{
		"deploy/missing": `deployments.apps "missing" not found`,
		"cronjob/x":      `kind "cronjob" is not one of`,
		"sts/":           "want POD or KIND/NAME",
	} {
		if code, _, errOut := k.run(t, deps, "", "run", ref, "-n", ns, "-c", "print(1)"); code != ExitRunFailed || !strings.Contains(errOut, want) {
			t.Errorf("run %s: exit %d, %q", ref, code, errOut)
		}
	}
	for pod, want := range map[string]string{
		"plain":    "has no pyexec container: it was not injected",
		"starting": "is not running",
		"missing":  `pods "missing" not found`,
	} {
		code, _, errOut = k.run(t, deps, "", "run", pod, "-n", ns, "-c", "print(1)")
		if code != ExitRunFailed || !strings.Contains(errOut, want) {
			t.Errorf("run %s: exit %d, %q", pod, code, errOut)
		}
	}

	code, out, errOut = k.run(t, deps, "", "report", "bot", "-n", ns)
	t.Logf("kubectl pyexec report bot:\n%s", out)
	if code != 0 || !strings.Contains(out, "Requirements (1/2 met)") || !strings.HasPrefix(out, "Summary:  pyexec preflight FAILED") {
		t.Errorf("report: exit %d: %s\n%s", code, errOut, out)
	}
	if c := fx.calls[len(fx.calls)-1]; strings.Join(c.command, " ") != "cat "+mutation.ReportPath || c.container != mutation.SidecarName {
		t.Errorf("exec call %+v", c)
	}
	code, out, _ = k.run(t, deps, "", "report", "bot", "-n", ns, "-o", "json")
	var r api.Report
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil || r.Schema != api.ReportSchema {
		t.Errorf("report -o json: exit %d: %s", code, out)
	}
	for pod, want := range map[string]string{
		"plain":    "has no pyexec container",
		"starting": "is not running; pyexec-init's summary: kubectl logs -n runs starting -c pyexec-init",
	} {
		code, _, errOut = k.run(t, deps, "", "report", pod, "-n", ns)
		if code != 1 || !strings.Contains(errOut, want) {
			t.Errorf("report %s: exit %d, %q", pod, code, errOut)
		}
	}
	// cat fails in the container: its stderr is the reason.
	fx.handle = func(cmd []string, _ string, _, stderr io.Writer) error {
		io.WriteString(stderr, "cat: "+mutation.ReportPath+": No such file or directory\n")
		return &ExitCodeError{Code: 1}
	}
	code, _, errOut = k.run(t, deps, "", "report", "bot", "-n", ns)
	if code != 1 || !strings.Contains(errOut, "No such file or directory") {
		t.Errorf("report without a file: exit %d, %q", code, errOut)
	}
	// The real pods/exec: the API server finds no node to send it to (e2e covers it).
	code, _, errOut = k.run(t, Deps{}, "", "run", "bot", "-n", ns, "-c", "print(1)")
	if code != ExitRunFailed || !strings.Contains(errOut, "exec in the pyexec container of pod runs/bot") {
		t.Errorf("run with the real exec under envtest: exit %d, %q", code, errOut)
	}
}

// webhookConfig is config/webhook's MutatingWebhookConfiguration with the given caBundle;
// failurePolicy Ignore so that pods created meanwhile by other tests are not refused.
func webhookConfig(t *testing.T, caBundle []byte) *admissionregistrationv1.MutatingWebhookConfiguration {
	t.Helper()
	data, err := os.ReadFile("../../../config/webhook/mutatingwebhookconfiguration.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var wc admissionregistrationv1.MutatingWebhookConfiguration
	if err := yaml.UnmarshalStrict(data, &wc); err != nil {
		t.Fatal(err)
	}
	for i := range wc.Webhooks {
		wc.Webhooks[i].ClientConfig.CABundle = caBundle
		wc.Webhooks[i].FailurePolicy = ptr.To(admissionregistrationv1.Ignore)
		wc.Webhooks[i].TimeoutSeconds = ptr.To[int32](1)
	}
	return &wc
}

func TestCheckAgainstAPIServer(t *testing.T) {
	k := startKube(t)
	ctx := context.Background()
	const injectorNS = DefaultInjectorNamespace
	k.namespace(t, injectorNS, nil)
	k.namespace(t, "chk", nil)
	k.createPod(t, "chk", injectedPod(t, "bot", true), nil)

	// What the chart and the injector make: the Service, its EndpointSlice, the certificate's
	// Secret and the configuration whose caBundle the injector patched.
	bundle, err := certs.NewBundle([]string{"pyexec.pyexec-system.svc", "pyexec.pyexec-system.svc.cluster.local"}, time.Now(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.client.CoreV1().Secrets(injectorNS).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "pyexec-tls"},
		Type: corev1.SecretTypeTLS, Data: bundle.Data()}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.client.CoreV1().Services(injectorNS).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "pyexec"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{mutation.LabelAppName: mutation.InjectorAppName},
			Ports: []corev1.ServicePort{{Name: "https", Port: 443}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eps, err := k.client.DiscoveryV1().EndpointSlices(injectorNS).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "pyexec-abcde", Labels: map[string]string{discoveryv1.LabelServiceName: "pyexec"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.0.0.5"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}},
			{Addresses: []string{"10.0.0.6"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mwcs := k.client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	wc, err := mwcs.Create(ctx, webhookConfig(t, bundle.CABundle()), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mwcs.Delete(ctx, "pyexec", metav1.DeleteOptions{}) })

	code, out, errOut := k.run(t, Deps{}, "", "check")
	t.Logf("kubectl pyexec check (healthy):\n%s", out)
	if code != 0 || strings.Contains(out, "FAIL") || errOut != "" {
		t.Fatalf("healthy install: exit %d, stderr %q:\n%s", code, errOut, out)
	}
	for _, want := range []string{
		"ok    server version v1.37.2 supports native sidecars",
		"ok    MutatingWebhookConfiguration pyexec exists: inject.pyexec.dev (failurePolicy Ignore)",
		"ok    the caBundle of webhook inject.pyexec.dev verifies the serving certificate in Secret pyexec-system/pyexec-tls for pyexec.pyexec-system.svc",
		"ok    Service pyexec-system/pyexec has 2 ready endpoints",
		"ok    the webhook's namespaceSelector admits every namespace with opted-in pods: ",
		"chk (1 pods)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check lacks %q", want)
		}
	}

	// Nodes: their kernels, and the layers a sidecar running there found.
	nodes := k.client.CoreV1().Nodes()
	for name, kernel := range map[string]string{"old": "6.1.0-18-amd64", "new": "6.18.2-arch1-1", "nolsm": "6.12.9", "odd": "weird"} {
		n, err := nodes.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n.Status.NodeInfo.KernelVersion = kernel
		if _, err := nodes.UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nodes.Delete(ctx, name, metav1.DeleteOptions{}) })
	}
	noLandlock := maps.Clone(allLayers)
	noLandlock["landlock_filesystem"], noLandlock["scoped_signals"] = false, false
	served := fakeMetrics{"on-new": sidecarMetricsText(t, true, allLayers, nil, 0, nil), "on-nolsm": sidecarMetricsText(t, true, noLandlock, nil, 0, nil)}
	for pod, node := range map[string]string{"on-new": "new", "on-nolsm": "nolsm"} {
		p := injectedPod(t, pod, true)
		p.Spec.NodeName = node
		k.createPod(t, "chk", p, &corev1.PodStatus{Phase: corev1.PodRunning, InitContainerStatuses: []corev1.ContainerStatus{running(mutation.SidecarName, true)}})
		t.Cleanup(func() { k.client.CoreV1().Pods("chk").Delete(ctx, pod, metav1.DeleteOptions{}) })
	}
	code, out, _ = k.run(t, Deps{Metrics: served}, "", "check")
	t.Logf("kubectl pyexec check (nodes):\n%s", out)
	for _, want := range []string{
		"FAIL  node old: Linux 6.1.0-18-amd64 has Landlock without scoped signals (6.12): a sidecar that requires every layer refuses to start there (no pyexec sidecar runs there, so whether landlock is in its boot LSM list is unknown)\n      fix: run pyexec pods on nodes with Linux 6.12 or later",
		"ok    node new: Linux 6.18.2-arch1-1 offers every layer pyexec uses; the sidecar of chk/on-new found 6/6 layers",
		"FAIL  node nolsm: Linux 6.12.9, but the sidecar of chk/on-nolsm found 4/6 layers, missing landlock_filesystem,scoped_signals",
		"cat /sys/kernel/security/lsm",
		`ok    node odd: kernel "weird" not understood`,
	} {
		if code != 1 || !strings.Contains(out, want) {
			t.Errorf("check of the nodes: exit %d, lacks %q", code, want)
		}
	}
	for _, name := range []string{"old", "new", "nolsm", "odd"} {
		nodes.Delete(ctx, name, metav1.DeleteOptions{})
	}

	// A caBundle of another CA: check names it.
	other, _ := certs.NewBundle([]string{"pyexec.pyexec-system.svc"}, time.Now(), nil)
	wc.Webhooks[0].ClientConfig.CABundle = other.CABundle()
	if wc, err = mwcs.Update(ctx, wc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	code, out, _ = k.run(t, Deps{}, "", "check")
	t.Logf("kubectl pyexec check (broken caBundle):\n%s", out)
	if code != 1 || !strings.Contains(out, "FAIL  the caBundle of webhook inject.pyexec.dev does not verify the serving certificate in Secret pyexec-system/pyexec-tls: x509: certificate signed by unknown authority") ||
		!strings.Contains(out, "      fix: in self mode the injector patches the caBundle when it starts: kubectl -n pyexec-system rollout restart deploy/pyexec") {
		t.Errorf("broken caBundle: exit %d:\n%s", code, out)
	}
	// An empty one.
	wc.Webhooks[0].ClientConfig.CABundle = nil
	if wc, err = mwcs.Update(ctx, wc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	code, out, _ = k.run(t, Deps{}, "", "check")
	if code != 1 || !strings.Contains(out, "FAIL  webhook inject.pyexec.dev has an empty caBundle") {
		t.Errorf("empty caBundle: exit %d:\n%s", code, out)
	}
	wc.Webhooks[0].ClientConfig.CABundle = bundle.CABundle()
	if wc, err = mwcs.Update(ctx, wc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	// No ready endpoint, and an opted-in pod in an excluded namespace.
	for i := range eps.Endpoints {
		eps.Endpoints[i].Conditions.Ready = ptr.To(false)
	}
	if _, err := k.client.DiscoveryV1().EndpointSlices(injectorNS).Update(ctx, eps, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	k.createPod(t, "kube-system", injectedPod(t, "sneaky", true), nil)
	code, out, _ = k.run(t, Deps{}, "", "check")
	t.Logf("kubectl pyexec check (no endpoints, excluded namespace):\n%s", out)
	if code != 1 || !strings.Contains(out, "FAIL  Service pyexec-system/pyexec has no ready endpoints (2 not ready)") ||
		!strings.Contains(out, "FAIL  the webhook's namespaceSelector excludes namespaces with pods labelled pyexec.dev/inject=true, which are never injected: kube-system (1 pods)") {
		t.Errorf("no endpoints, excluded namespace: exit %d:\n%s", code, out)
	}
	if !strings.Contains(out, "ok    the caBundle of webhook") {
		t.Errorf("the restored caBundle fails:\n%s", out)
	}
	k.client.CoreV1().Pods("kube-system").Delete(ctx, "sneaky", metav1.DeleteOptions{})

	// Another Secret name given, which does not exist.
	code, out, _ = k.run(t, Deps{}, "", "check", "--cert-secret", "nope")
	if code != 1 || !strings.Contains(out, "FAIL  Secret pyexec-system/nope of the serving certificate not found") {
		t.Errorf("--cert-secret nope: exit %d:\n%s", code, out)
	}

	// Installed under another release name: found by its label.
	renamed := wc.DeepCopy()
	renamed.ObjectMeta = metav1.ObjectMeta{Name: "other-pyexec", Labels: wc.Labels}
	if _, err := mwcs.Create(ctx, renamed, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mwcs.Delete(ctx, "other-pyexec", metav1.DeleteOptions{}) })
	if err := mwcs.Delete(ctx, "pyexec", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	code, out, _ = k.run(t, Deps{}, "", "check", "--cert-secret", "pyexec-tls")
	if !strings.Contains(out, "ok    MutatingWebhookConfiguration other-pyexec exists") {
		t.Errorf("renamed install: exit %d:\n%s", code, out)
	}
	// Not installed.
	if err := mwcs.Delete(ctx, "other-pyexec", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	code, out, _ = k.run(t, Deps{}, "", "check")
	t.Logf("kubectl pyexec check (not installed):\n%s", out)
	if code != 1 || !strings.Contains(out, "FAIL  MutatingWebhookConfiguration pyexec not found: no pod is injected\n      fix: install the injector: helm install") {
		t.Errorf("not installed: exit %d:\n%s", code, out)
	}
}

// fakeMetrics serves a sidecar's metrics by pod name.
type fakeMetrics map[string][]byte

func (f fakeMetrics) Metrics(_ context.Context, _, pod string, _ int) ([]byte, error) {
	if text, ok := f[pod]; ok {
		return text, nil
	}
	return nil, fmt.Errorf("no metrics of %s", pod)
}
