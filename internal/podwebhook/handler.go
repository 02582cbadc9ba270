// Package injector is the admission webhook around internal/mutation. It runs on controller-runtime's
// typed defaulter (admission.WithDefaulter): the pod is decoded, injected by Default, and the
// patch is computed from the request's raw object, with the removals of fields that our pod
// type does not know (a field added by a newer API server) dropped. Around it, Handle counts
// and logs every admission and puts an Event on the pod's controller.
package podwebhook

import (
	"context"
	"errors"
	"strings"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/pyexec/pyexec/internal/mutation"
)

// Path is where the webhook is served.
const Path = "/inject"

// Outcomes of an admission, the label of the injections counter.
const (
	OutcomeInjected = "injected"
	OutcomeSkipped  = "skipped"
	OutcomeDenied   = "denied"
	OutcomeError    = "error"
)

// Reasons and actions of the Events on a pod's controller.
const (
	ReasonInjected = "PyexecInjected" // Normal
	ReasonSkipped  = "PyexecSkipped"  // Normal, the note says why
	ReasonDenied   = "PyexecDenied"   // Warning, the note is the denial's message

	ActionInject = "Inject"
	ActionSkip   = "Skip"
	ActionDeny   = "Deny"

	// maxNote bounds an Event's note (events.k8s.io/v1 allows 1 kB).
	maxNote = 1000
)

// Handler injects pods at CREATE.
type Handler struct {
	defaults   mutation.Defaults
	log        logr.Logger
	events     events.EventRecorder
	injections *prometheus.CounterVec
	defaulter  admission.Handler // controller-runtime's typed defaulter around Default
}

// NewHandler returns the webhook handler; its counter pyexec_injector_injections_total is
// registered on reg. rec (nil for none) receives the Events on the pods' controllers.
func NewHandler(scheme *runtime.Scheme, d mutation.Defaults, log logr.Logger, reg prometheus.Registerer, rec events.EventRecorder) *Handler {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pyexec_injector_injections_total",
		Help: "Pod admissions by outcome: injected, skipped (with the reason in the log), denied (invalid annotation), error.",
	}, []string{"outcome"})
	for _, o := range []string{OutcomeInjected, OutcomeSkipped, OutcomeDenied, OutcomeError} {
		c.WithLabelValues(o)
	}
	if reg != nil {
		reg.MustRegister(c)
	}
	h := &Handler{defaults: d, log: log, events: rec, injections: c}
	// Without DefaulterRemoveUnknownOrOmitableFields, the defaulter drops the patch's removals
	// that decoding alone would cause: unknown fields and omitempty zero values stay as sent.
	h.defaulter = admission.WithDefaulter[*corev1.Pod](scheme, h).Handler
	return h
}

// admitted is what Default decided about one request, for Handle to report.
type admitted struct {
	outcome string // "" when Default did not run (the pod did not decode)
	reason  string // why skipped, or the denial's message
	pod     string // the name, or generateName followed by "*"
	owner   *metav1.OwnerReference
	// alreadyInjected: the pod carries AnnotationStatus, as on a reinvocation after another
	// webhook's change; its skip gets no Event.
	alreadyInjected bool
	// warnings name the pyexec.dev/ annotations that pyexec does not know, of a pod it
	// injected or denied; the API server shows them to the client (kubectl prints them).
	warnings []string
}

type admittedKey struct{}

// Handle implements admission.Handler. Every admission logs one line with the pod and what
// was done, counts its outcome and, unless it is a dry run, puts an Event on the pod's
// controller.
func (h *Handler) Handle(ctx context.Context, req admission.Request) admission.Response {
	log := h.log.WithValues("namespace", req.Namespace, "uid", string(req.UID))
	if req.Operation != admissionv1.Create {
		return h.done(log, req, &admitted{outcome: OutcomeSkipped, reason: "not a CREATE"}, admission.Allowed("pyexec injects at CREATE only"))
	}
	a := &admitted{}
	resp := h.defaulter.Handle(context.WithValue(ctx, admittedKey{}, a), req)
	switch {
	case a.outcome == "" || a.outcome == OutcomeError || a.outcome == OutcomeInjected && !resp.Allowed:
		// The pod did not decode (400), the uids could not be drawn (500), or the injected pod
		// could not be marshalled (500).
		msg := "admission failed"
		if resp.Result != nil {
			msg = resp.Result.Message
		}
		log.Error(errors.New(msg), "admission failed", "pod", a.pod)
		h.injections.WithLabelValues(OutcomeError).Inc()
		return resp
	case a.outcome == OutcomeSkipped && resp.Allowed && len(resp.Patches) == 0:
		resp = admission.Allowed(a.reason) // the reason in the response's status, as always
	}
	return h.done(log, req, a, resp)
}

// Default implements admission.Defaulter: it injects the pod in place, or leaves it alone
// (skipped), or returns the *mutation.AnnotationError that denies it (403 with its message). Any
// other error (reading the source of the uids) is the injector's: an internal error (500).
func (h *Handler) Default(ctx context.Context, pod *corev1.Pod) error {
	a, _ := ctx.Value(admittedKey{}).(*admitted)
	if a == nil {
		a = &admitted{}
	}
	a.pod = pod.Name
	if a.pod == "" {
		a.pod = pod.GenerateName + "*"
	}
	a.owner = metav1.GetControllerOf(pod)
	_, a.alreadyInjected = pod.Annotations[mutation.AnnotationStatus]
	out, injected, reason, err := mutation.InjectPod(pod, h.defaults)
	var denied *mutation.AnnotationError
	if injected || errors.As(err, &denied) {
		a.warnings = mutation.UnknownAnnotations(pod.Annotations)
	}
	switch {
	case denied != nil:
		a.outcome, a.reason = OutcomeDenied, err.Error()
		return err
	case err != nil:
		a.outcome, a.reason = OutcomeError, err.Error()
		return apierrors.NewInternalError(err)
	case !injected:
		a.outcome, a.reason = OutcomeSkipped, reason
		return nil
	}
	a.outcome = OutcomeInjected
	*pod = *out
	return nil
}

func (h *Handler) done(log logr.Logger, req admission.Request, a *admitted, resp admission.Response) admission.Response {
	h.injections.WithLabelValues(a.outcome).Inc()
	if len(a.warnings) > 0 {
		resp.Warnings = append(resp.Warnings, a.warnings...)
		log = log.WithValues("warnings", a.warnings)
	}
	log.Info("admission", "pod", a.pod, "outcome", a.outcome, "reason", a.reason)
	h.event(req, a)
	return resp
}

// event puts an Event on the pod's controller (a ReplicaSet, StatefulSet, Job, ...), where
// kubectl describe shows it: the pod itself does not exist yet (no uid), so a pod without a
// controller gets none, and neither does a dry run (the webhook's sideEffects is
// NoneOnDryRun).
func (h *Handler) event(req admission.Request, a *admitted) {
	if h.events == nil || a.owner == nil || req.DryRun != nil && *req.DryRun || req.Operation != admissionv1.Create {
		return
	}
	ref := &corev1.ObjectReference{APIVersion: a.owner.APIVersion, Kind: a.owner.Kind, Name: a.owner.Name, UID: a.owner.UID, Namespace: req.Namespace}
	var typ, reason, action, note string
	switch a.outcome {
	case OutcomeInjected:
		typ, reason, action, note = corev1.EventTypeNormal, ReasonInjected, ActionInject, "injected pyexec into pod "+a.pod
	case OutcomeSkipped:
		if a.alreadyInjected {
			return
		}
		typ, reason, action, note = corev1.EventTypeNormal, ReasonSkipped, ActionSkip, "did not inject pyexec into pod "+a.pod+": "+a.reason
	case OutcomeDenied:
		typ, reason, action, note = corev1.EventTypeWarning, ReasonDenied, ActionDeny, "denied pod "+a.pod+": "+a.reason
	default:
		return
	}
	if len(note) > maxNote {
		note = strings.ToValidUTF8(note[:maxNote-3], "") + "..." // an annotation's value may be long
	}
	h.events.Eventf(ref, nil, typ, reason, action, "%s", note)
}
