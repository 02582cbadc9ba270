// Package webhook tests pyexec-injector against a real kube-apiserver and etcd (built from
// their Go modules by test/tools/build.sh): the MutatingWebhookConfiguration from
// config/webhook, the real injector with its self-managed certificate and real TLS, and pods
// created through the API server and read back as stored.
package webhook

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/pyexec/pyexec/cmd/pyexec-injector/app"
	"github.com/pyexec/pyexec/internal/testutil"
)

const (
	injectorNS = "pyexec-system"
	appNS      = "bots"
)

// env is the running control plane and injector of the test binary.
type env struct {
	client  *kubernetes.Clientset
	cfg     *rest.Config
	stop    context.CancelFunc
	stopped chan struct{}
	logs    *testutil.SyncBuffer
}

var shared *env

func TestMain(m *testing.M) {
	code := func() int {
		e, cleanup, err := start()
		if err != nil {
			fmt.Fprintln(os.Stderr, "webhook tests: cannot start the control plane:", err)
			return 1
		}
		defer cleanup()
		shared = e
		return m.Run()
	}()
	os.Exit(code)
}

func start() (*env, func(), error) {
	dir, err := testutil.KubeAssets()
	if err != nil {
		return nil, nil, err
	}
	te := &envtest.Environment{BinaryAssetsDirectory: dir, ControlPlaneStopTimeout: time.Minute}
	// envtest turns the ServiceAccount admission plugin off; pods get their token mounts only
	// with it, and the test must show that the sidecar gets none.
	te.ControlPlane.GetAPIServer().Configure().Disable("disable-admission-plugins")
	cfg, err := te.Start()
	if err != nil {
		return nil, nil, err
	}
	cleanup := func() { _ = te.Stop() }
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	ctx := context.Background()
	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: injectorNS}},
		// Pods here must meet the restricted Pod Security Standard after injection.
		{ObjectMeta: metav1.ObjectMeta{Name: appNS, Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}}},
	} {
		if _, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			cleanup()
			return nil, nil, err
		}
		if _, err := client.CoreV1().ServiceAccounts(ns.Name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
			cleanup()
			return nil, nil, err
		}
	}
	port, err := freePort()
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	if err := installWebhook(ctx, client, port); err != nil {
		cleanup()
		return nil, nil, err
	}
	kubeconfig, err := writeKubeconfig(cfg.Host, cfg.CAData, cfg.CertData, cfg.KeyData)
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	e := &env{client: client, cfg: cfg, stopped: make(chan struct{}), logs: &testutil.SyncBuffer{}}
	var runCtx context.Context
	runCtx, e.stop = context.WithCancel(ctx)
	certDir, _ := os.MkdirTemp("", "pyexec-injector-certs")
	go func() {
		defer close(e.stopped)
		app.Main(runCtx, []string{"serve", "--kubeconfig", kubeconfig, "--namespace", injectorNS,
			"--webhook-port", strconv.Itoa(port), "--metrics-addr", "0", "--health-addr", "127.0.0.1:0",
			"--cert-dir", certDir, "--cert-secret", "pyexec-injector-tls", "--webhook-config", "pyexec-injector",
			"--service", "pyexec-injector", "--cert-hosts", "127.0.0.1", "--sidecar-image", "pyexec:test"},
			app.IO{Stdout: e.logs, Stderr: e.logs, LookupEnv: func(string) (string, bool) { return "", false }})
	}()
	cleanupAll := func() {
		e.stop()
		<-e.stopped
		os.RemoveAll(certDir)
		os.Remove(kubeconfig)
		cleanup()
	}
	if err := waitInjecting(ctx, client); err != nil {
		cleanupAll()
		return nil, nil, fmt.Errorf("%w\ninjector log:\n%s", err, e.logs.String())
	}
	return e, cleanupAll, nil
}

// installWebhook registers the MutatingWebhookConfiguration of config/webhook, pointed at the
// injector on 127.0.0.1 (the test has no Service network); every other field is the manifest's.
func installWebhook(ctx context.Context, client kubernetes.Interface, port int) error {
	files, err := filepath.Glob("../../config/webhook/*.yaml")
	if err != nil {
		return err
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		for _, doc := range bytes.Split(data, []byte("\n---")) {
			var probe metav1.TypeMeta
			if yaml.Unmarshal(doc, &probe) != nil || probe.Kind != "MutatingWebhookConfiguration" {
				continue
			}
			var wc admissionregistrationv1.MutatingWebhookConfiguration
			if err := yaml.UnmarshalStrict(doc, &wc); err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
			wc.Name = "pyexec-injector"
			for i := range wc.Webhooks {
				wc.Webhooks[i].ClientConfig.Service = nil
				wc.Webhooks[i].ClientConfig.URL = ptr.To(fmt.Sprintf("https://127.0.0.1:%d/inject", port))
			}
			_, err = client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, &wc, metav1.CreateOptions{})
			return err
		}
	}
	return fmt.Errorf("no MutatingWebhookConfiguration in config/webhook")
}

// waitInjecting creates probe pods (server-side dry run) until the injector answers.
func waitInjecting(ctx context.Context, client kubernetes.Interface) error {
	deadline := time.Now().Add(90 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		pod, err := client.CoreV1().Pods(appNS).Create(ctx, labeledPod("probe", nil), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err == nil && pod.Annotations["pyexec.dev/status"] == "injected" {
			return nil
		}
		last = err
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("the injector did not start injecting within 90 s: %v", last)
}

// compliantApp is an app container that meets the restricted Pod Security Standard itself.
func compliantApp(name string) corev1.Container {
	return corev1.Container{
		Name:  name,
		Image: "bot:test",
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             ptr.To(true),
			RunAsUser:                ptr.To[int64](1000),
			AllowPrivilegeEscalation: ptr.To(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
}

func labeledPod(name string, annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"pyexec.dev/inject": "true"}, Annotations: annotations},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{compliantApp("bot")}},
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func writeKubeconfig(host string, ca, cert, key []byte) (string, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["envtest"] = &clientcmdapi.Cluster{Server: host, CertificateAuthorityData: ca}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: cert, ClientKeyData: key}
	cfg.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "admin"}
	cfg.CurrentContext = "envtest"
	f, err := os.CreateTemp("", "kubeconfig-")
	if err != nil {
		return "", err
	}
	f.Close()
	return f.Name(), clientcmd.WriteToFile(*cfg, f.Name())
}

func container(list []corev1.Container, name string) *corev1.Container {
	for i := range list {
		if list[i].Name == name {
			return &list[i]
		}
	}
	return nil
}

func hasMount(c *corev1.Container, path string) bool {
	for _, m := range c.VolumeMounts {
		if m.MountPath == path {
			return true
		}
	}
	return false
}

const tokenPath = "/var/run/secrets/kubernetes.io/serviceaccount"

// tokenVolume returns the name of the projected service account token volume, "" if none.
func tokenVolume(pod *corev1.Pod) string {
	for _, v := range pod.Spec.Volumes {
		if v.Projected != nil && strings.HasPrefix(v.Name, "kube-api-access-") {
			return v.Name
		}
	}
	return ""
}

func TestLabeledPodIsInjectedAndStored(t *testing.T) {
	ctx := context.Background()
	pod, err := shared.client.CoreV1().Pods(appNS).Create(ctx, labeledPod("bot", map[string]string{
		"pyexec.dev/require": "pandas>=2", "pyexec.dev/preload": "json", "pyexec.dev/timeout": "20s",
	}), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create (the namespace enforces restricted PSS on the injected pod): %v", err)
	}
	stored, err := shared.client.CoreV1().Pods(appNS).Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ic := stored.Spec.InitContainers
	if len(ic) != 3 || ic[0].Name != "pyexec-init" || ic[1].Name != "pyexec-runner" || ic[2].Name != "pyexec" {
		t.Fatalf("init containers %v, want pyexec-init then the native sidecars pyexec-runner and pyexec", names(ic))
	}
	runner, sidecar := &ic[1], &ic[2]
	if sidecar.RestartPolicy == nil || *sidecar.RestartPolicy != corev1.ContainerRestartPolicyAlways || sidecar.StartupProbe == nil {
		t.Errorf("native sidecar fields did not survive: restartPolicy %v startupProbe %v", sidecar.RestartPolicy, sidecar.StartupProbe)
	}
	if runner.RestartPolicy == nil || *runner.RestartPolicy != corev1.ContainerRestartPolicyAlways || runner.StartupProbe != nil {
		t.Errorf("the runner: restartPolicy %v startupProbe %v, want Always and none", runner.RestartPolicy, runner.StartupProbe)
	}
	if sidecar.Image != "pyexec:test" || ic[0].Image != "pyexec:test" || runner.Image != "pyexec:test" {
		t.Errorf("images %s %s %s", ic[0].Image, runner.Image, sidecar.Image)
	}
	// Two uids drawn for the pod, stored as the injector wrote them: the server's for
	// pyexec-init and pyexec and as every pyexec container's group, another for the runner.
	server, runnerUID := *sidecar.SecurityContext.RunAsUser, *runner.SecurityContext.RunAsUser
	if server == runnerUID || server < 100000 || runnerUID < 100000 || *ic[0].SecurityContext.RunAsUser != server ||
		*runner.SecurityContext.RunAsGroup != server || envValue(sidecar, "PYEXEC_RUNNER_UID") != strconv.FormatInt(runnerUID, 10) ||
		envValue(runner, "PYEXEC_SERVER_UID") != strconv.FormatInt(server, 10) {
		t.Errorf("uids: init %d, runner %d:%d, server %d; env server %v runner %v", *ic[0].SecurityContext.RunAsUser,
			runnerUID, *runner.SecurityContext.RunAsGroup, server, sidecar.Env, runner.Env)
	}
	bot := container(stored.Spec.Containers, "bot")
	if bot == nil || !hasMount(bot, "/var/run/pyexec") || envValue(bot, "PYEXEC_SOCKET") != "/var/run/pyexec/pyexec.sock" {
		t.Errorf("app container lacks the socket: %+v", bot)
	}
	if stored.Annotations["pyexec.dev/status"] != "injected" || stored.Annotations["kubectl.kubernetes.io/default-container"] != "bot" {
		t.Errorf("annotations %v", stored.Annotations)
	}
	// The service account token: the app container has it (the API server mounted it before
	// the webhook ran), the pyexec containers do not.
	vol := tokenVolume(stored)
	if vol == "" || !mountsVolume(bot, vol) {
		t.Fatalf("precondition: the app container should carry the token volume %q", vol)
	}
	for _, c := range []*corev1.Container{&ic[0], runner, sidecar} {
		if mountsVolume(c, vol) {
			t.Errorf("%s mounts the service account token", c.Name)
		}
	}
	if envValue(&ic[0], "PYEXEC_REQUIRE") != "pandas>=2" || envValue(sidecar, "PYEXEC_TIMEOUT") != "20s" {
		t.Errorf("annotations did not reach the containers: init env %v sidecar env %v", ic[0].Env, sidecar.Env)
	}
	// Without annotations the injector's --max-sessions and --session-idle-timeout (their
	// defaults here) are written out.
	if envValue(sidecar, "PYEXEC_MAX_SESSIONS") != "8" || envValue(sidecar, "PYEXEC_SESSION_IDLE_TIMEOUT") != "10m0s" {
		t.Errorf("the injector's session defaults did not reach the sidecar: env %v", sidecar.Env)
	}
}

func TestSecondAdmissionChangesNothing(t *testing.T) {
	ctx := context.Background()
	first, err := shared.client.CoreV1().Pods(appNS).Create(ctx, labeledPod("twice", nil), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	again := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "twice-again", Labels: first.Labels, Annotations: first.Annotations}, Spec: *first.Spec.DeepCopy()}
	again.Spec.NodeName = ""
	stored, err := shared.client.CoreV1().Pods(appNS).Create(ctx, again, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		t.Fatal(err)
	}
	if len(stored.Spec.InitContainers) != len(first.Spec.InitContainers) || len(stored.Spec.Containers) != len(first.Spec.Containers) || len(stored.Spec.Volumes) != len(first.Spec.Volumes) {
		t.Fatalf("a second admission changed the pod: init %v → %v, containers %v → %v", names(first.Spec.InitContainers), names(stored.Spec.InitContainers), names(first.Spec.Containers), names(stored.Spec.Containers))
	}
}

func TestUnlabeledPodIsUntouched(t *testing.T) {
	pod := labeledPod("plain", nil)
	pod.Labels = nil
	stored, err := shared.client.CoreV1().Pods(appNS).Create(context.Background(), pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(stored.Spec.InitContainers) != 0 || len(stored.Spec.Containers) != 1 || stored.Annotations["pyexec.dev/status"] != "" {
		t.Fatalf("an unlabeled pod was changed: %v %v", names(stored.Spec.InitContainers), stored.Annotations)
	}
}

func TestInvalidAnnotationIsDenied(t *testing.T) {
	_, err := shared.client.CoreV1().Pods(appNS).Create(context.Background(), labeledPod("bad", map[string]string{"pyexec.dev/timeout": "ten"}), metav1.CreateOptions{})
	if err == nil || !apierrors.IsForbidden(err) && !strings.Contains(err.Error(), "denied") || !strings.Contains(err.Error(), "pyexec.dev/timeout") {
		t.Fatalf("err = %v, want a denial naming pyexec.dev/timeout", err)
	}
}

// Through the real API server: every bad annotation is named in the denial, and an unknown
// pyexec.dev/ annotation reaches the client as a warning (what kubectl prints as "Warning:").
func TestAnnotationErrorsAndWarnings(t *testing.T) {
	_, err := shared.client.CoreV1().Pods(appNS).Create(context.Background(), labeledPod("bad2", map[string]string{
		"pyexec.dev/timeout": "ten", "pyexec.dev/max-sessions": "-1"}), metav1.CreateOptions{})
	if err == nil || !strings.Contains(err.Error(), `pyexec.dev/timeout="ten"`) || !strings.Contains(err.Error(), `pyexec.dev/max-sessions="-1"`) {
		t.Errorf("err = %v, want a denial naming both annotations", err)
	}

	var warnings warningRecorder
	cfg := rest.CopyConfig(shared.cfg)
	cfg.WarningHandler = &warnings
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := client.CoreV1().Pods(appNS).Create(context.Background(), labeledPod("typo", map[string]string{"pyexec.dev/timout": "1m"}), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := "annotation pyexec.dev/timout is not one of pyexec's and changes nothing; did you mean pyexec.dev/timeout?"
	if got := warnings.all(); !slices.Contains(got, want) || stored.Annotations["pyexec.dev/status"] != "injected" {
		t.Errorf("warnings %q (status %q); want %q on an injected pod", got, stored.Annotations["pyexec.dev/status"], want)
	}
}

// warningRecorder keeps the warnings the API server sends.
type warningRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warningRecorder) HandleWarningHeader(_ int, _ string, msg string) {
	w.mu.Lock()
	w.msgs = append(w.msgs, msg)
	w.mu.Unlock()
}

func (w *warningRecorder) all() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.msgs)
}

func TestNativeSidecarOff(t *testing.T) {
	stored, err := shared.client.CoreV1().Pods(appNS).Create(context.Background(), labeledPod("classic", map[string]string{"pyexec.dev/native-sidecar": "false"}), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if names(stored.Spec.InitContainers) != "pyexec-init" || container(stored.Spec.Containers, "pyexec") == nil {
		t.Fatalf("init %v containers %v, want the sidecar among the containers", names(stored.Spec.InitContainers), names(stored.Spec.Containers))
	}
}

func TestSelfManagedCertificate(t *testing.T) {
	ctx := context.Background()
	secret, err := shared.client.CoreV1().Secrets(injectorNS).Get(ctx, "pyexec-injector-tls", metav1.GetOptions{})
	if err != nil || len(secret.Data["tls.crt"]) == 0 || len(secret.Data["ca.crt"]) == 0 {
		t.Fatalf("certificate Secret: %v", err)
	}
	wc, err := shared.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "pyexec-injector", metav1.GetOptions{})
	if err != nil || !bytes.Equal(wc.Webhooks[0].ClientConfig.CABundle, secret.Data["ca.crt"]) {
		t.Fatalf("caBundle not patched with the Secret's CA: %v", err)
	}
	// Owned by the webhook configuration, so that deleting it (helm uninstall) deletes the
	// Secret; test/e2e sees the garbage collector do it.
	if refs := secret.OwnerReferences; len(refs) != 1 || refs[0].UID != wc.UID || refs[0].Kind != "MutatingWebhookConfiguration" {
		t.Fatalf("owner references of the Secret: %+v, want the webhook configuration %s", refs, wc.UID)
	}
}

func envValue(c *corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

func mountsVolume(c *corev1.Container, vol string) bool {
	for _, m := range c.VolumeMounts {
		if m.Name == vol {
			return true
		}
	}
	return false
}

func names(cs []corev1.Container) string {
	var s []string
	for _, c := range cs {
		s = append(s, c.Name)
	}
	return strings.Join(s, ",")
}

// TestInjectorDown runs last: with the injector gone, failurePolicy Fail refuses labeled pods
// with a clear message, and the objectSelector keeps every other pod out of it.
func TestInjectorDown(t *testing.T) {
	shared.stop()
	<-shared.stopped
	ctx := context.Background()
	_, err := shared.client.CoreV1().Pods(appNS).Create(ctx, labeledPod("refused", nil), metav1.CreateOptions{})
	if err == nil || !strings.Contains(err.Error(), `failed calling webhook "inject.pyexec.dev"`) {
		t.Fatalf("err = %v, want the webhook call to fail the create", err)
	}
	pod := labeledPod("unlabeled-while-down", nil)
	pod.Labels = nil
	if _, err := shared.client.CoreV1().Pods(appNS).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("an unlabeled pod was refused while the injector was down: %v", err)
	}
}
