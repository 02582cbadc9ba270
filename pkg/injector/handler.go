// Package injector is the admission webhook around pkg/inject: it decodes the pod, injects a
// copy and answers with a patch computed from the raw bytes, never a hand-written one.
package injector

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/pyexec/pyexec/pkg/inject"
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

// Handler injects pods at CREATE.
type Handler struct {
	defaults   inject.Defaults
	decoder    admission.Decoder
	log        logr.Logger
	injections *prometheus.CounterVec
}

// NewHandler returns the webhook handler; its counter pyexec_injector_injections_total is
// registered on reg.
func NewHandler(scheme *runtime.Scheme, d inject.Defaults, log logr.Logger, reg prometheus.Registerer) *Handler {
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
	return &Handler{defaults: d, decoder: admission.NewDecoder(scheme), log: log, injections: c}
}

// Handle implements admission.Handler. Every admission logs one line with the pod and what
// was done.
func (h *Handler) Handle(_ context.Context, req admission.Request) admission.Response {
	log := h.log.WithValues("namespace", req.Namespace, "uid", string(req.UID))
	if req.Operation != admissionv1.Create {
		return h.done(log, OutcomeSkipped, "", "not a CREATE", admission.Allowed("pyexec injects at CREATE only"))
	}
	pod := &corev1.Pod{}
	if err := h.decoder.Decode(req, pod); err != nil {
		log.Error(err, "admission failed")
		h.injections.WithLabelValues(OutcomeError).Inc()
		return admission.Errored(http.StatusBadRequest, err)
	}
	name := pod.Name
	if name == "" {
		name = pod.GenerateName + "*"
	}
	out, injected, reason, err := inject.InjectPod(pod, h.defaults)
	switch {
	case err != nil:
		return h.done(log, OutcomeDenied, name, err.Error(), admission.Denied(err.Error()))
	case !injected:
		return h.done(log, OutcomeSkipped, name, reason, admission.Allowed(reason))
	}
	raw, err := json.Marshal(out)
	if err != nil {
		log.Error(err, "admission failed", "pod", name)
		h.injections.WithLabelValues(OutcomeError).Inc()
		return admission.Errored(http.StatusInternalServerError, err)
	}
	return h.done(log, OutcomeInjected, name, "", admission.PatchResponseFromRaw(req.Object.Raw, raw))
}

func (h *Handler) done(log logr.Logger, outcome, pod, reason string, resp admission.Response) admission.Response {
	h.injections.WithLabelValues(outcome).Inc()
	log.Info("admission", "pod", pod, "outcome", outcome, "reason", reason)
	return resp
}
