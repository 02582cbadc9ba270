// Package watchdog tests pyexec-injector's watchdog against a real kube-apiserver and etcd
// (built by test/tools/build.sh, or $KUBEBUILDER_ASSETS). The webhook configuration of
// config/webhook is installed with failurePolicy Ignore and pointed at a port where nothing
// listens: labeled pods are created without pyexec, as when the webhook is down. Most tests
// run the watchdog in a controller-runtime manager of their own, with a Prometheus registry of
// their own; the last one runs the real `pyexec-injector serve --watchdog`, which then serves
// the webhook on that port. envtest has no controller-manager: nothing re-creates a deleted
// pod, so the tests check deletion; re-creation through the webhook is test/e2e's.
package watchdog

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap/zapcore"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	"github.com/pyexec/pyexec/cmd/pyexec-injector/app"
	"github.com/pyexec/pyexec/internal/mutation"
	"github.com/pyexec/pyexec/internal/testutil"
	"github.com/pyexec/pyexec/internal/watchdog"
)

const (
	injectorNS    = "pyexec-system"
	webhookConfig = "pyexec-injector"
	finalizer     = "test.pyexec.dev/keep"
)

var (
	restCfg     *rest.Config
	clientset   *kubernetes.Clientset
	webhookPort int // where the webhook configuration sends pods; nothing listens until the last test
)

func TestMain(m *testing.M) {
	code := func() int {
		cleanup, err := start()
		if err != nil {
			fmt.Fprintln(os.Stderr, "watchdog tests: cannot start the control plane:", err)
			return 1
		}
		defer cleanup()
		return m.Run()
	}()
	os.Exit(code)
}

func start() (func(), error) {
	dir, err := testutil.KubeAssets()
	if err != nil {
		return nil, err
	}
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(true), zap.Level(zapLevel())))
	te := &envtest.Environment{BinaryAssetsDirectory: dir, ControlPlaneStopTimeout: time.Minute}
	cfg, err := te.Start()
	if err != nil {
		return nil, err
	}
	cleanup := func() { _ = te.Stop() }
	restCfg = cfg
	if clientset, err = kubernetes.NewForConfig(cfg); err != nil {
		cleanup()
		return nil, err
	}
	ctx := context.Background()
	if _, err := clientset.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: injectorNS}}, metav1.CreateOptions{}); err != nil {
		cleanup()
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cleanup()
		return nil, err
	}
	webhookPort = l.Addr().(*net.TCPAddr).Port
	l.Close()
	if err := installWebhook(ctx); err != nil {
		cleanup()
		return nil, err
	}
	return cleanup, nil
}

// zapLevel is -1 (debug) with WATCHDOG_TEST_DEBUG set, else error only.
func zapLevel() zapcore.Level {
	if os.Getenv("WATCHDOG_TEST_DEBUG") != "" {
		return -1
	}
	return 2
}

// installWebhook registers the MutatingWebhookConfiguration of config/webhook pointed at
// 127.0.0.1:webhookPort, with failurePolicy Ignore: while nothing listens there, labeled pods
// are created without pyexec. Its selectors are the manifest's.
func installWebhook(ctx context.Context) error {
	data, err := os.ReadFile(filepath.Join("..", "..", "config", "webhook", "mutatingwebhookconfiguration.yaml"))
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
			return err
		}
		wc.Name = webhookConfig
		for i := range wc.Webhooks {
			wc.Webhooks[i].ClientConfig.Service = nil
			wc.Webhooks[i].ClientConfig.URL = ptr.To(fmt.Sprintf("https://127.0.0.1:%d/inject", webhookPort))
			wc.Webhooks[i].FailurePolicy = ptr.To(admissionregistrationv1.Ignore)
			wc.Webhooks[i].TimeoutSeconds = ptr.To[int32](2)
		}
		_, err = clientset.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, &wc, metav1.CreateOptions{})
		return err
	}
	return fmt.Errorf("no MutatingWebhookConfiguration in config/webhook")
}

// running is a watchdog in a manager of its own.
type running struct {
	mgr manager.Manager
	reg *prometheus.Registry
}

// runWatchdog starts a manager with the watchdog's cache options and the watchdog; it stops
// with the test.
func runWatchdog(t *testing.T, cfg watchdog.Config) *running {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	mgr, err := ctrl.NewManager(restCfg, manager.Options{
		Scheme:                 scheme,
		Cache:                  watchdog.CacheOptions(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		// One controller of the same name per test.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Namespace == "" {
		cfg.Namespace = injectorNS
	}
	if cfg.WebhookConfig == "" {
		cfg.WebhookConfig = webhookConfig
	}
	if cfg.Defaults.Image == "" {
		cfg.Defaults.Image = "pyexec:test"
	}
	reg := prometheus.NewRegistry()
	if _, err := watchdog.Setup(mgr, cfg, ctrl.Log.WithName(t.Name()), reg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	return &running{mgr: mgr, reg: reg}
}

// namespace creates a namespace for one test; at its end every pod there is deleted, so that
// the watchdogs of later tests do not see them.
func namespace(t *testing.T, name string, labels map[string]string) string {
	t.Helper()
	ctx := context.Background()
	if _, err := clientset.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() { deletePods(t, name) })
	return name
}

// deletePods deletes every pod of the namespace, finalizers and all, and waits until they
// are gone (unscheduled pods go at once).
func deletePods(t *testing.T, ns string) {
	ctx := context.Background()
	pods, err := clientset.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Error(err)
		return
	}
	for _, p := range pods.Items {
		if len(p.Finalizers) > 0 {
			p.Finalizers = nil
			if _, err := clientset.CoreV1().Pods(ns).Update(ctx, &p, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
				t.Error(err)
			}
		}
	}
	if err := clientset.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}, metav1.ListOptions{}); err != nil {
		t.Error(err)
	}
	eventually(t, 30*time.Second, func() (bool, string) {
		pods, err := clientset.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		return err == nil && len(pods.Items) == 0, fmt.Sprintf("pods left in %s: %v", ns, err)
	})
}

// replicaSet creates a ReplicaSet of no replicas to own pods (nothing runs it in envtest).
func replicaSet(t *testing.T, ns, name string) *appsv1.ReplicaSet {
	t.Helper()
	sel := map[string]string{"app": name}
	rs, err := clientset.AppsV1().ReplicaSets(ns).Create(context.Background(), &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.ReplicaSetSpec{
			Replicas: ptr.To[int32](0),
			Selector: &metav1.LabelSelector{MatchLabels: sel},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: sel},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "bot", Image: "bot:test"}}},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// podSpec is a labeled pod, owned by rs when it is not nil.
func podSpec(name string, rs *appsv1.ReplicaSet) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{mutation.LabelInject: "true"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "bot", Image: "bot:test"}}},
	}
	if rs != nil {
		p.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(rs, appsv1.SchemeGroupVersion.WithKind("ReplicaSet"))}
	}
	return p
}

// create creates the pod; with the webhook down and failurePolicy Ignore, a labeled pod is
// stored without pyexec.
func create(t *testing.T, ns string, p *corev1.Pod) *corev1.Pod {
	t.Helper()
	out, err := clientset.CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create %s/%s: %v", ns, p.Name, err)
	}
	return out
}

// uninjected creates a labeled pod that the webhook missed, and checks that it did.
func uninjected(t *testing.T, ns string, p *corev1.Pod) *corev1.Pod {
	t.Helper()
	out := create(t, ns, p)
	if hasSidecar(out) {
		t.Fatalf("precondition: %s/%s was injected", ns, p.Name)
	}
	return out
}

// injected creates the pod as the webhook would have stored it.
func injected(t *testing.T, ns string, p *corev1.Pod) *corev1.Pod {
	t.Helper()
	out, ok, reason, err := mutation.InjectPod(p, mutation.Defaults{Image: "pyexec:test"})
	if err != nil || !ok {
		t.Fatalf("inject: %v %s", err, reason)
	}
	return create(t, ns, out)
}

func hasSidecar(p *corev1.Pod) bool {
	for _, cs := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for _, c := range cs {
			if c.Name == mutation.SidecarName {
				return true
			}
		}
	}
	return false
}

func exists(t *testing.T, ns, name string) bool {
	t.Helper()
	_, err := clientset.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	return err == nil
}

// events returns the watchdog's Events on the pod (by name: they outlive a deleted pod).
func events(t *testing.T, ns, pod string) []corev1.Event {
	t.Helper()
	list, err := clientset.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{FieldSelector: fields.AndSelectors(
		fields.OneTermEqualSelector("involvedObject.name", pod),
		fields.OneTermEqualSelector("reason", watchdog.ReasonNotInjected),
	).String()})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// waitEvent waits for an Event on the pod whose message contains want, and checks it.
func waitEvent(t *testing.T, ns, pod, action, want string) corev1.Event {
	t.Helper()
	var got []corev1.Event
	eventually(t, 20*time.Second, func() (bool, string) {
		got = events(t, ns, pod)
		for _, e := range got {
			if e.Action == action && strings.Contains(e.Message, want) {
				return true, ""
			}
		}
		return false, fmt.Sprintf("no %s Event with %q on %s/%s; events: %s", action, want, ns, pod, describe(got))
	})
	for _, e := range got {
		if e.Action == action && strings.Contains(e.Message, want) {
			if e.Type != corev1.EventTypeWarning || e.InvolvedObject.Kind != "Pod" || e.ReportingController != "pyexec-injector" ||
				!strings.Contains(e.Message, "labeled pyexec.dev/inject=true but runs without the pyexec sidecar") {
				t.Errorf("Event %+v: want a Warning on the Pod from pyexec-injector that says why", e)
			}
			return e
		}
	}
	panic("unreachable")
}

func noEvents(t *testing.T, ns string, pods ...string) {
	t.Helper()
	for _, p := range pods {
		if got := events(t, ns, p); len(got) != 0 {
			t.Errorf("%s/%s: unexpected Events %s", ns, p, describe(got))
		}
	}
}

func describe(evs []corev1.Event) string {
	var s []string
	for _, e := range evs {
		s = append(s, fmt.Sprintf("[%s %s %s: %s]", e.Type, e.Reason, e.Action, e.Message))
	}
	return strings.Join(s, " ")
}

func eventually(t *testing.T, timeout time.Duration, f func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, msg := f()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, msg)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// metric returns the value of the gauge or counter (with action, if not "") in g.
func metric(t *testing.T, g prometheus.Gatherer, name, action string) float64 {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if action != "" && label(m, "action") != action {
				continue
			}
			if m.Gauge != nil {
				return m.Gauge.GetValue()
			}
			return m.Counter.GetValue()
		}
	}
	t.Fatalf("no metric %s{action=%q}", name, action)
	return 0
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func checkMetrics(t *testing.T, g prometheus.Gatherer, missing, reported, deleted float64) {
	t.Helper()
	eventually(t, 10*time.Second, func() (bool, string) {
		m, r, d := metric(t, g, watchdog.MetricMissing, ""), metric(t, g, watchdog.MetricPods, watchdog.ActionReported), metric(t, g, watchdog.MetricPods, watchdog.ActionDeleted)
		return m == missing && r == reported && d == deleted,
			fmt.Sprintf("%s %v, %s reported %v deleted %v; want %v, %v, %v", watchdog.MetricMissing, m, watchdog.MetricPods, r, d, missing, reported, deleted)
	})
}

// TestReportOnly: with deletion off, each labeled pod that the webhook missed gets an Event
// and is counted; nothing is deleted; every other pod gets nothing, and only labeled pods are
// cached.
func TestReportOnly(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "report", nil)
	namespace(t, injectorNS, nil)
	namespace(t, metav1.NamespaceSystem, nil)
	rs := replicaSet(t, ns, "bot")

	uninjected(t, ns, podSpec("owned", rs))
	uninjected(t, ns, podSpec("unowned", nil))
	injected(t, ns, podSpec("injected", rs))
	plain := podSpec("plain", rs)
	plain.Labels = nil
	create(t, ns, plain)
	optedOut := podSpec("opted-out", rs)
	optedOut.Labels[mutation.LabelInject] = "false"
	create(t, ns, optedOut)
	own := podSpec("injector", rs)
	own.Labels[mutation.LabelAppName] = mutation.InjectorAppName
	create(t, ns, own)
	uninjected(t, injectorNS, podSpec("in-injector-namespace", nil))
	uninjected(t, metav1.NamespaceSystem, podSpec("in-kube-system", nil))
	mirror := podSpec("mirror", nil)
	mirror.Annotations = map[string]string{corev1.MirrorPodAnnotationKey: "static"}
	mirror.Spec.NodeName = "node-1" // a mirror pod is bound to its node
	uninjected(t, ns, mirror)
	finished := uninjected(t, ns, podSpec("finished", rs))
	finished.Status.Phase = corev1.PodSucceeded
	if _, err := clientset.CoreV1().Pods(ns).UpdateStatus(ctx, finished, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	w := runWatchdog(t, watchdog.Config{GracePeriod: time.Second, MaxDeletionsPerMinute: 5})
	for _, p := range []string{"owned", "unowned"} {
		waitEvent(t, ns, p, "Report", "--watchdog-delete is off")
	}
	checkMetrics(t, w.reg, 2, 2, 0)
	time.Sleep(2 * time.Second) // time for wrong Events
	for _, p := range []string{"owned", "unowned"} {
		if !exists(t, ns, p) {
			t.Errorf("%s deleted with deletion off", p)
		}
		if n := len(events(t, ns, p)); n != 1 {
			t.Errorf("%s: %d Events, want one", p, n)
		}
	}
	noEvents(t, ns, "injected", "plain", "opted-out", "injector", "finished", "mirror")
	noEvents(t, injectorNS, "in-injector-namespace")
	noEvents(t, metav1.NamespaceSystem, "in-kube-system")
	checkMetrics(t, w.reg, 2, 2, 0)

	// The cache holds labeled pods only.
	var cached corev1.PodList
	if err := w.mgr.GetClient().List(ctx, &cached); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range cached.Items {
		names = append(names, p.Namespace+"/"+p.Name)
		if p.Labels[mutation.LabelInject] != "true" {
			t.Errorf("cached pod %s/%s without the label", p.Namespace, p.Name)
		}
	}
	if !strings.Contains(strings.Join(names, ","), ns+"/owned") || strings.Contains(strings.Join(names, ","), "plain") {
		t.Errorf("cached pods %v: want the labeled ones only", names)
	}

	// A missing pod that goes away leaves the gauge.
	if err := clientset.CoreV1().Pods(ns).Delete(ctx, "unowned", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	checkMetrics(t, w.reg, 1, 2, 0)
}

// TestDelete: with deletion on, the pod with a controller is deleted; the pod without one,
// and one whose re-creation the webhook would deny, are reported with the reason; a
// terminating pod and a pod in a namespace that the webhook's namespaceSelector leaves out get
// nothing.
func TestDelete(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "delete", nil)
	rs := replicaSet(t, ns, "bot")
	// Leave out namespaces labeled watchdog-test/skip, as webhook.namespaceSelector.extraMatchExpressions would.
	wc, err := clientset.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, webhookConfig, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	orig := wc.DeepCopy()
	sel := wc.Webhooks[0].NamespaceSelector
	sel.MatchExpressions = append(sel.MatchExpressions, metav1.LabelSelectorRequirement{Key: "watchdog-test/skip", Operator: metav1.LabelSelectorOpDoesNotExist})
	if _, err := clientset.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(ctx, wc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		wc, err := clientset.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, webhookConfig, metav1.GetOptions{})
		if err == nil {
			wc.Webhooks = orig.Webhooks
			_, err = clientset.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(ctx, wc, metav1.UpdateOptions{})
		}
		if err != nil {
			t.Error(err)
		}
	})
	skipped := namespace(t, "skipped", map[string]string{"watchdog-test/skip": "true"})
	skippedRS := replicaSet(t, skipped, "bot")
	// The webhook configuration just changed, but the webhook is down anyway: created uninjected.
	uninjected(t, skipped, podSpec("not-selected", skippedRS))

	uninjected(t, ns, podSpec("owned", rs))
	uninjected(t, ns, podSpec("unowned", nil))
	bad := podSpec("bad-annotation", rs)
	bad.Annotations = map[string]string{mutation.AnnotationTimeout: "ten"}
	uninjected(t, ns, bad)
	term := podSpec("terminating", rs)
	term.Finalizers = []string{finalizer}
	uninjected(t, ns, term)
	if err := clientset.CoreV1().Pods(ns).Delete(ctx, "terminating", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	w := runWatchdog(t, watchdog.Config{Delete: true, GracePeriod: time.Second, MaxDeletionsPerMinute: 5})
	eventually(t, 20*time.Second, func() (bool, string) { return !exists(t, ns, "owned"), "owned pod not deleted" })
	waitEvent(t, ns, "owned", "Delete", "deleted it so that its controller ReplicaSet/bot re-creates it through the webhook")
	waitEvent(t, ns, "unowned", "Report", "not deleted: it has no controller ownerReference")
	waitEvent(t, ns, "bad-annotation", "Report", "not deleted: the webhook would deny its re-creation")
	if e := events(t, ns, "bad-annotation"); len(e) == 1 && !strings.Contains(e[0].Message, mutation.AnnotationTimeout) {
		t.Errorf("the Event does not name the annotation: %s", e[0].Message)
	}
	checkMetrics(t, w.reg, 2, 2, 1)
	time.Sleep(2 * time.Second)
	for _, p := range []string{"unowned", "bad-annotation", "terminating"} {
		if !exists(t, ns, p) {
			t.Errorf("%s was deleted", p)
		}
	}
	if !exists(t, skipped, "not-selected") {
		t.Error("a pod the webhook's namespaceSelector leaves out was deleted")
	}
	noEvents(t, ns, "terminating")
	noEvents(t, skipped, "not-selected")
	checkMetrics(t, w.reg, 2, 2, 1)
}

// TestRateLimit: 3 pods to delete, at most 2 a minute: 2 are deleted, the third is reported
// as postponed and stays.
func TestRateLimit(t *testing.T) {
	ns := namespace(t, "rate", nil)
	rs := replicaSet(t, ns, "bot")
	pods := []string{"a", "b", "c"}
	for _, p := range pods {
		uninjected(t, ns, podSpec(p, rs))
	}
	w := runWatchdog(t, watchdog.Config{Delete: true, GracePeriod: time.Second, MaxDeletionsPerMinute: 2})
	left := func() []string {
		var l []string
		for _, p := range pods {
			if exists(t, ns, p) {
				l = append(l, p)
			}
		}
		return l
	}
	eventually(t, 20*time.Second, func() (bool, string) {
		return len(left()) == 1, fmt.Sprintf("pods left %v, want one", left())
	})
	last := left()[0]
	waitEvent(t, ns, last, "Report", "deletion postponed: at most 2 deletions per minute")
	checkMetrics(t, w.reg, 1, 1, 2)
	time.Sleep(3 * time.Second)
	if l := left(); len(l) != 1 {
		t.Errorf("pods left %v, want %s only: the limit did not hold", l, last)
	}
	checkMetrics(t, w.reg, 1, 1, 2)
}

// TestGracePeriod: a pod younger than the grace period is left alone, then deleted.
func TestGracePeriod(t *testing.T) {
	ns := namespace(t, "grace", nil)
	rs := replicaSet(t, ns, "bot")
	const grace = 5 * time.Second
	w := runWatchdog(t, watchdog.Config{Delete: true, GracePeriod: grace, MaxDeletionsPerMinute: 5})
	start := time.Now()
	uninjected(t, ns, podSpec("young", rs))
	time.Sleep(grace / 2)
	if !exists(t, ns, "young") {
		t.Fatalf("deleted after %v, within the grace period %v", time.Since(start), grace)
	}
	noEvents(t, ns, "young")
	checkMetrics(t, w.reg, 0, 0, 0)
	eventually(t, 20*time.Second, func() (bool, string) { return !exists(t, ns, "young"), "not deleted after the grace period" })
	// creationTimestamp has whole seconds: the pod may look up to a second older.
	if d := time.Since(start); d < grace-time.Second {
		t.Errorf("deleted after %v, grace period %v", d, grace)
	}
	checkMetrics(t, w.reg, 0, 0, 1)
}

// TestNotDeletedWhen: the watchdog deletes nothing while the webhook configuration is missing
// or the injector's webhook is not ready; it says so.
func TestNotDeletedWhen(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  watchdog.Config
		want string
	}{
		{"webhook configuration missing", watchdog.Config{WebhookConfig: "gone"}, "not deleted: the MutatingWebhookConfiguration gone does not exist"},
		{"webhook not ready", watchdog.Config{Ready: func() error { return fmt.Errorf("webhook server has not been started yet") }},
			"deletion postponed: the injector's webhook is not ready (webhook server has not been started yet)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ns := namespace(t, "not-deleted-"+strconv.Itoa(len(tt.name)), nil)
			rs := replicaSet(t, ns, "bot")
			uninjected(t, ns, podSpec("owned", rs))
			cfg := tt.cfg
			cfg.Delete, cfg.GracePeriod, cfg.MaxDeletionsPerMinute = true, time.Second, 5
			w := runWatchdog(t, cfg)
			waitEvent(t, ns, "owned", "Report", tt.want)
			checkMetrics(t, w.reg, 1, 1, 0)
			if !exists(t, ns, "owned") {
				t.Error("deleted")
			}
		})
	}
}

// TestServeWithWatchdog runs `pyexec-injector serve --watchdog --watchdog-delete` for real, as
// the chart's ServiceAccount with the RBAC the chart renders for watchdog.enabled and
// watchdog.deletePods (envtest authorizes with RBAC): it takes the Lease, serves the webhook on the configured port (self-managed certificate), deletes
// the pod that was created while it was down, counts it on controller-runtime's registry, and
// leaves a pod it injected alone. It runs last: it uses the process-wide metrics registry.
func TestServeWithWatchdog(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "serve", nil)
	rs := replicaSet(t, ns, "bot")
	uninjected(t, ns, podSpec("before", rs))

	// As the chart's ServiceAccount, with the chart's RBAC: it must be enough.
	sa := installChartRBAC(t)
	kubeconfig := writeKubeconfig(t, sa)
	certDir := t.TempDir()
	logs := &testutil.SyncBuffer{}
	runCtx, stop := context.WithCancel(ctx)
	stopped := make(chan int)
	go func() {
		stopped <- app.Main(runCtx, []string{"serve", "--kubeconfig", kubeconfig, "--namespace", injectorNS,
			"--webhook-port", strconv.Itoa(webhookPort), "--metrics-addr", "0", "--health-addr", "127.0.0.1:0",
			"--cert-dir", certDir, "--cert-secret", "pyexec-injector-tls", "--webhook-config", webhookConfig,
			"--service", "pyexec-injector", "--cert-hosts", "127.0.0.1", "--sidecar-image", "pyexec:test",
			"--watchdog", "--watchdog-delete", "--watchdog-max-deletions-per-minute=3", "--watchdog-grace-period=1s"},
			app.IO{Stdout: logs, Stderr: logs, LookupEnv: func(string) (string, bool) { return "", false }})
	}()
	t.Cleanup(func() {
		stop()
		if code := <-stopped; code != 0 {
			t.Errorf("pyexec-injector serve exited %d", code)
		}
		if t.Failed() {
			t.Logf("injector log:\n%s", logs.String())
		}
	})

	eventually(t, 60*time.Second, func() (bool, string) {
		return !exists(t, ns, "before"), "the pod created while the webhook was down is not deleted"
	})
	waitEvent(t, ns, "before", "Delete", "deleted it so that its controller ReplicaSet/bot re-creates it through the webhook")
	lease, err := clientset.CoordinationV1().Leases(injectorNS).Get(ctx, webhookConfig+"-watchdog", metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
		t.Errorf("the watchdog's Lease: %v %+v", err, lease)
	}

	// Through the webhook now: the re-created pod would be injected, and is left alone.
	eventually(t, 60*time.Second, func() (bool, string) {
		p, err := clientset.CoreV1().Pods(ns).Create(ctx, podSpec("probe", rs), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err == nil && hasSidecar(p), fmt.Sprintf("the webhook does not inject yet: %v", err)
	})
	after := create(t, ns, podSpec("after", rs))
	if !hasSidecar(after) {
		t.Fatal("not injected")
	}
	time.Sleep(3 * time.Second)
	if !exists(t, ns, "after") {
		t.Error("an injected pod was deleted")
	}
	noEvents(t, ns, "after")
	checkMetrics(t, ctrlmetrics.Registry, 0, 0, 1)
	if !strings.Contains(logs.String(), `"watchdog on"`) {
		t.Errorf("no start line of the watchdog in the log:\n%s", logs.String())
	}
}

// installChartRBAC renders the chart's RBAC templates with the watchdog on and deletion on,
// for a release whose objects are named like the test's webhook configuration, applies them
// and returns the ServiceAccount's user name.
func installChartRBAC(t *testing.T) string {
	t.Helper()
	ch, err := loader.Load(filepath.Join("..", "..", "charts", "pyexec"))
	if err != nil {
		t.Fatal(err)
	}
	overrides, err := chartutil.ReadValues([]byte("fullnameOverride: " + webhookConfig + "\nwatchdog:\n  enabled: true\n  deletePods: true\n"))
	if err != nil {
		t.Fatal(err)
	}
	vals, err := chartutil.ToRenderValues(ch, overrides, chartutil.ReleaseOptions{Name: "pyexec", Namespace: injectorNS, Revision: 1, IsInstall: true}, chartutil.DefaultCapabilities)
	if err != nil {
		t.Fatal(err)
	}
	out, err := engine.Engine{Strict: true}.Render(ch, vals)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var sa corev1.ServiceAccount
	for name, text := range out {
		if !strings.Contains(name, "/templates/rbac/") {
			continue
		}
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(text), &meta); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		switch meta.Kind {
		case "ServiceAccount":
			decode(t, name, text, &sa)
			_, err = clientset.CoreV1().ServiceAccounts(injectorNS).Create(ctx, &sa, metav1.CreateOptions{})
		case "ClusterRole":
			var o rbacv1.ClusterRole
			decode(t, name, text, &o)
			_, err = clientset.RbacV1().ClusterRoles().Create(ctx, &o, metav1.CreateOptions{})
		case "ClusterRoleBinding":
			var o rbacv1.ClusterRoleBinding
			decode(t, name, text, &o)
			_, err = clientset.RbacV1().ClusterRoleBindings().Create(ctx, &o, metav1.CreateOptions{})
		case "Role":
			var o rbacv1.Role
			decode(t, name, text, &o)
			_, err = clientset.RbacV1().Roles(injectorNS).Create(ctx, &o, metav1.CreateOptions{})
		case "RoleBinding":
			var o rbacv1.RoleBinding
			decode(t, name, text, &o)
			_, err = clientset.RbacV1().RoleBindings(injectorNS).Create(ctx, &o, metav1.CreateOptions{})
		default:
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if sa.Name == "" {
		t.Fatal("the chart rendered no ServiceAccount")
	}
	return "system:serviceaccount:" + injectorNS + ":" + sa.Name
}

func decode(t *testing.T, name, text string, into any) {
	t.Helper()
	if err := yaml.UnmarshalStrict([]byte(text), into); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

// writeKubeconfig writes a kubeconfig of the admin that impersonates user (a ServiceAccount).
func writeKubeconfig(t *testing.T, user string) string {
	t.Helper()
	ns := strings.Split(user, ":")[2]
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["envtest"] = &clientcmdapi.Cluster{Server: restCfg.Host, CertificateAuthorityData: restCfg.CAData}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: restCfg.CertData, ClientKeyData: restCfg.KeyData,
		Impersonate: user, ImpersonateGroups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}}
	cfg.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "admin"}
	cfg.CurrentContext = "envtest"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}
