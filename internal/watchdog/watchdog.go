// Package watchdog finds pods that asked for pyexec but run without it, as Dapr's injector
// watchdog does: a pod labeled pyexec.dev/inject=true that has no pyexec sidecar was created
// while the webhook was down (failurePolicy Ignore let it through) or not installed. For each
// such pod the watchdog emits a Warning Event (reason PyexecNotInjected) on the pod and counts
// it; optionally it deletes the pod so that its controller re-creates it through the webhook.
//
// It is a controller-runtime reconciler of pods. The manager's cache must hold only labeled
// pods (CacheOptions), never every pod of the cluster.
//
// What it leaves alone: pods that are not Pending or Running, terminating pods, mirror pods
// of static pods, injected pods
// and pods the webhook would skip anyway (mutation.ShouldInject), the injector's own pods, pods
// in kube-system and in the injector's namespace, and pods that the webhook configuration's
// objectSelector or namespaceSelector leaves out. It acts only once a pod is older than the
// grace period.
//
// What it deletes, with deletion on: only pods with a controller ownerReference (something
// re-creates them), whose annotations the webhook would accept, while the MutatingWebhookConfiguration
// exists and this injector's webhook is ready, and at most MaxDeletionsPerMinute in any minute.
// Every other missing pod is only reported, with the reason in the Event.
package watchdog

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/pyexec/pyexec/internal/mutation"
)

// Names the watchdog shows to users.
const (
	// ControllerName names the controller (in logs and controller-runtime's metrics) and is the
	// reportingController of its Events.
	ControllerName = "pyexec-injector-watchdog"
	// ReasonNotInjected is the reason of every Event of the watchdog.
	ReasonNotInjected = "PyexecNotInjected"
	// Event actions (events.k8s.io/v1 action) and the action label of the pods counter.
	ActionReported = "reported"
	ActionDeleted  = "deleted"

	// MetricMissing and MetricPods are the names of the watchdog's metrics.
	MetricMissing = "pyexec_injector_pods_missing_sidecar"
	MetricPods    = "pyexec_injector_watchdog_pods_total"

	// retryNotReady is when a deletion postponed because the webhook is not ready is tried again.
	retryNotReady = 15 * time.Second
	// maxNote bounds the Event message (events.k8s.io/v1 allows 1 kB).
	maxNote = 1000
)

// Config is what the watchdog does.
type Config struct {
	// Delete deletes missing pods that have a controller, so that it re-creates them.
	Delete bool
	// MaxDeletionsPerMinute bounds the deletions in any 60 seconds; at least 1 with Delete.
	MaxDeletionsPerMinute int
	// GracePeriod is how old a pod must be before the watchdog looks at it.
	GracePeriod time.Duration
	// Namespace is the injector's namespace, whose pods the webhook never injects.
	Namespace string
	// WebhookConfig is the MutatingWebhookConfiguration whose selectors say which pods the
	// webhook would inject; pods it leaves out are left alone.
	WebhookConfig string
	// Defaults are the webhook's: a pod whose annotations they reject would be denied at
	// re-creation, so it is not deleted.
	Defaults mutation.Defaults
	// Ready, when set, must return nil before a pod is deleted: the webhook of this injector
	// serves, so that a re-created pod is likely injected.
	Ready func() error
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// Watchdog is the reconciler.
type Watchdog struct {
	client client.Client // the manager's cached client: pods
	reader client.Reader // uncached: the webhook configuration and namespaces, read rarely
	events events.EventRecorder
	cfg    Config
	log    logr.Logger

	missingGauge prometheus.Gauge
	pods         *prometheus.CounterVec

	mu        sync.Mutex
	missing   map[types.NamespacedName]types.UID // pods counted by the gauge
	reported  map[types.UID]bool                 // pods with a "reported" Event
	deletions []time.Time                        // within the last minute
}

// CacheOptions are the manager's cache options with the watchdog: pods are cached only when
// labeled pyexec.dev/inject=true.
func CacheOptions() cache.Options {
	return cache.Options{ByObject: map[client.Object]cache.ByObject{
		&corev1.Pod{}: {Label: labels.SelectorFromSet(labels.Set{mutation.LabelInject: mutation.LabelInjectEnabled})},
	}}
}

// New returns the watchdog; its metrics are registered on reg (nil: not registered).
func New(c client.Client, reader client.Reader, rec events.EventRecorder, cfg Config, log logr.Logger, reg prometheus.Registerer) (*Watchdog, error) {
	if cfg.Delete && cfg.MaxDeletionsPerMinute < 1 {
		return nil, fmt.Errorf("watchdog: MaxDeletionsPerMinute %d: want 1 or more", cfg.MaxDeletionsPerMinute)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	w := &Watchdog{
		client: c, reader: reader, events: rec, cfg: cfg, log: log,
		missingGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: MetricMissing,
			Help: "Pods labeled pyexec.dev/inject=true that the webhook would inject but that run without the pyexec sidecar (older than the watchdog's grace period).",
		}),
		pods: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricPods,
			Help: "Pods without the pyexec sidecar that the watchdog reported (a Warning Event, not deleted) or deleted so that their controller re-creates them.",
		}, []string{"action"}),
		missing:  map[types.NamespacedName]types.UID{},
		reported: map[types.UID]bool{},
	}
	w.pods.WithLabelValues(ActionReported)
	w.pods.WithLabelValues(ActionDeleted)
	if reg != nil {
		if err := reg.Register(w.missingGauge); err != nil {
			return nil, err
		}
		if err := reg.Register(w.pods); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// Setup builds the watchdog from the manager (its cached client, its API reader and an Event
// recorder) and adds it as a controller of labeled pods. The manager's cache should have
// CacheOptions.
func Setup(mgr ctrl.Manager, cfg Config, log logr.Logger, reg prometheus.Registerer) (*Watchdog, error) {
	w, err := New(mgr.GetClient(), mgr.GetAPIReader(), mgr.GetEventRecorder("pyexec-injector"), cfg, log, reg)
	if err != nil {
		return nil, err
	}
	labeled := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetLabels()[mutation.LabelInject] == mutation.LabelInjectEnabled
	})
	err = ctrl.NewControllerManagedBy(mgr).
		Named(ControllerName).
		For(&corev1.Pod{}, builder.WithPredicates(labeled)).
		Complete(w)
	return w, err
}

// Reconcile looks at one pod.
func (w *Watchdog) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	key := req.NamespacedName
	pod := &corev1.Pod{}
	if err := w.client.Get(ctx, key, pod); err != nil {
		if apierrors.IsNotFound(err) {
			w.forget(key)
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, err
	}
	if !w.candidate(pod) {
		w.forget(key)
		return reconcile.Result{}, nil
	}
	if age := w.cfg.Now().Sub(pod.CreationTimestamp.Time); age < w.cfg.GracePeriod {
		return reconcile.Result{RequeueAfter: w.cfg.GracePeriod - age}, nil
	}
	selected, unknown, err := w.webhookSelects(ctx, pod)
	if err != nil {
		return reconcile.Result{}, err
	}
	if !selected && unknown == "" {
		w.log.V(1).Info("left alone: the webhook configuration does not select the pod", "namespace", pod.Namespace, "pod", pod.Name)
		w.forget(key)
		return reconcile.Result{}, nil
	}
	w.remember(pod)

	why, retry := w.whyNotDelete(pod, unknown)
	if why != "" {
		w.report(pod, why)
		return reconcile.Result{RequeueAfter: retry}, nil
	}
	if ok, wait := w.takeDeletion(); !ok {
		w.report(pod, fmt.Sprintf("deletion postponed: at most %d deletions per minute (--watchdog-max-deletions-per-minute); retrying in %s",
			w.cfg.MaxDeletionsPerMinute, wait.Round(time.Second)))
		return reconcile.Result{RequeueAfter: wait}, nil
	}
	owner := metav1.GetControllerOf(pod)
	uid := pod.UID
	if err := w.client.Delete(ctx, pod, client.Preconditions{UID: &uid}); err != nil {
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			w.forget(key) // gone, or replaced by a pod of the same name
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, err
	}
	w.pods.WithLabelValues(ActionDeleted).Inc()
	w.forget(key)
	note := fmt.Sprintf("%s; deleted it so that its controller %s/%s re-creates it through the webhook", notInjected, owner.Kind, owner.Name)
	w.events.Eventf(pod, nil, corev1.EventTypeWarning, ReasonNotInjected, "Delete", "%s", note)
	w.log.Info("deleted a pod without the pyexec sidecar", "namespace", pod.Namespace, "pod", pod.Name, "controller", owner.Kind+"/"+owner.Name)
	return reconcile.Result{}, nil
}

const notInjected = "The pod is labeled pyexec.dev/inject=true but runs without the pyexec sidecar: " +
	"it was created while the pyexec-injector webhook was unavailable (failurePolicy Ignore let it through) or not installed"

// candidate reports whether the pod asked for pyexec, lacks it, and may be acted upon at all.
func (w *Watchdog) candidate(pod *corev1.Pod) bool {
	if pod.DeletionTimestamp != nil {
		return false
	}
	if pod.Status.Phase != corev1.PodPending && pod.Status.Phase != corev1.PodRunning {
		return false
	}
	if pod.Namespace == metav1.NamespaceSystem || pod.Namespace == w.cfg.Namespace {
		return false
	}
	// A static pod's mirror: the kubelet runs the static pod, whatever the API server holds.
	if _, ok := pod.Annotations[corev1.MirrorPodAnnotationKey]; ok {
		return false
	}
	// The webhook would inject it now: labeled, not the injector's, no pyexec container,
	// volume or status annotation. A pod that the webhook skips would gain nothing.
	ok, _ := mutation.ShouldInject(pod)
	return ok
}

// webhookSelects reports whether the webhook configuration sends the pod's CREATE to the
// webhook (its objectSelector and namespaceSelector). unknown says why that cannot be known
// (the configuration is missing): the pod is then reported, never deleted.
func (w *Watchdog) webhookSelects(ctx context.Context, pod *corev1.Pod) (selected bool, unknown string, err error) {
	if w.cfg.WebhookConfig == "" {
		return false, "no webhook configuration is known to the watchdog (--webhook-config)", nil
	}
	wc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := w.reader.Get(ctx, client.ObjectKey{Name: w.cfg.WebhookConfig}, wc); err != nil {
		if apierrors.IsNotFound(err) {
			return false, fmt.Sprintf("the MutatingWebhookConfiguration %s does not exist", w.cfg.WebhookConfig), nil
		}
		return false, "", fmt.Errorf("reading MutatingWebhookConfiguration %s: %w", w.cfg.WebhookConfig, err)
	}
	ns := &corev1.Namespace{}
	if err := w.reader.Get(ctx, client.ObjectKey{Name: pod.Namespace}, ns); err != nil {
		return false, "", fmt.Errorf("reading namespace %s: %w", pod.Namespace, err)
	}
	for _, wh := range wc.Webhooks {
		if matches(wh.ObjectSelector, pod.Labels) && matches(wh.NamespaceSelector, ns.Labels) {
			return true, "", nil
		}
	}
	return false, "", nil
}

// matches evaluates a webhook selector; nil selects everything, an invalid one nothing.
func matches(sel *metav1.LabelSelector, set map[string]string) bool {
	if sel == nil {
		return true
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	return err == nil && s.Matches(labels.Set(set))
}

// whyNotDelete says why the pod is not deleted now ("" if it may be), and when to look again
// (0: only when the pod changes).
func (w *Watchdog) whyNotDelete(pod *corev1.Pod, unknown string) (string, time.Duration) {
	if !w.cfg.Delete {
		return "re-create it (for example `kubectl rollout restart` of its workload) to have it injected; " +
			"the watchdog only reports it (pyexec-injector --watchdog-delete is off)", 0
	}
	owner := metav1.GetControllerOf(pod)
	if owner == nil {
		return "not deleted: it has no controller ownerReference, so nothing would re-create it; delete and re-create it yourself", 0
	}
	if unknown != "" {
		return "not deleted: " + unknown + "; a re-created pod would not be injected either", 0
	}
	if _, err := mutation.ParseConfig(pod, w.cfg.Defaults); err != nil {
		return fmt.Sprintf("not deleted: the webhook would deny its re-creation (%v); fix the annotation in %s/%s", err, owner.Kind, owner.Name), 0
	}
	if w.cfg.Ready != nil {
		if err := w.cfg.Ready(); err != nil {
			return fmt.Sprintf("deletion postponed: the injector's webhook is not ready (%v)", err), retryNotReady
		}
	}
	return "", 0
}

// report emits the "reported" Event once per pod.
func (w *Watchdog) report(pod *corev1.Pod, why string) {
	w.mu.Lock()
	done := w.reported[pod.UID]
	w.reported[pod.UID] = true
	w.mu.Unlock()
	if done {
		return
	}
	note := notInjected + "; " + why
	if len(note) > maxNote {
		note = note[:maxNote-3] + "..."
	}
	w.pods.WithLabelValues(ActionReported).Inc()
	w.events.Eventf(pod, nil, corev1.EventTypeWarning, ReasonNotInjected, "Report", "%s", note)
	w.log.Info("a pod runs without the pyexec sidecar", "namespace", pod.Namespace, "pod", pod.Name, "why", why)
}

// takeDeletion takes one of the deletions allowed in the last minute; when none is left it
// says how long until one is.
func (w *Watchdog) takeDeletion() (bool, time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.cfg.Now()
	kept := w.deletions[:0]
	for _, t := range w.deletions {
		if now.Sub(t) < time.Minute {
			kept = append(kept, t)
		}
	}
	w.deletions = kept
	if len(w.deletions) < w.cfg.MaxDeletionsPerMinute {
		w.deletions = append(w.deletions, now)
		return true, 0
	}
	return false, w.deletions[0].Add(time.Minute).Sub(now) + time.Second
}

func (w *Watchdog) remember(pod *corev1.Pod) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.missing[client.ObjectKeyFromObject(pod)] = pod.UID
	w.missingGauge.Set(float64(len(w.missing)))
}

func (w *Watchdog) forget(key types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if uid, ok := w.missing[key]; ok {
		delete(w.reported, uid)
		delete(w.missing, key)
	}
	w.missingGauge.Set(float64(len(w.missing)))
}
