package podwebhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/iotest"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	"sigs.k8s.io/yaml"

	"github.com/pyexec/pyexec/internal/mutation"
	"github.com/pyexec/pyexec/internal/podwebhook"
	"github.com/pyexec/pyexec/internal/testutil"
)

// goldenDir holds the cases of internal/mutation's TestGolden: an input and its <case>.injected.yaml.
const goldenDir = "../mutation/testdata/inject"

// testDefaults are internal/mutation's golden defaults: the same uids for every pod.
var testDefaults = mutation.Defaults{
	Image:         "registry.example/pyexec:1.0.0",
	PullPolicy:    corev1.PullIfNotPresent,
	NativeSidecar: true,
	Rand:          testutil.SameBytes{},
}

const namespace = "bots"

// event is one Event the recorder got.
type event struct {
	regarding                 corev1.ObjectReference
	typ, reason, action, note string
}

// recorder is a fake events.EventRecorder that keeps what it gets.
type recorder struct {
	mu     sync.Mutex
	events []event
}

func (r *recorder) Eventf(regarding, _ runtime.Object, typ, reason, action, note string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ref, ok := regarding.(*corev1.ObjectReference)
	if !ok {
		panic(fmt.Sprintf("regarding %T, want an *ObjectReference", regarding))
	}
	r.events = append(r.events, event{*ref, typ, reason, action, fmt.Sprintf(note, args...)})
}

func (r *recorder) take() []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.events
	r.events = nil
	return e
}

// fixture is a handler with its own metrics registry and Event recorder.
type fixture struct {
	h   *podwebhook.Handler
	reg *prometheus.Registry
	rec *recorder
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureWith(t, testDefaults)
}

// newFixtureWith is a fixture whose handler has the defaults d.
func newFixtureWith(t *testing.T, d mutation.Defaults) *fixture {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	f := &fixture{reg: prometheus.NewRegistry(), rec: &recorder{}}
	f.h = podwebhook.NewHandler(scheme, d, logr.Discard(), f.reg, f.rec)
	return f
}

// request is the AdmissionRequest of the API server for a pod CREATE.
func request(raw []byte, dryRun bool) admission.Request {
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID:       "0d1e-test",
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: namespace,
		Operation: admissionv1.Create,
		Object:    runtime.RawExtension{Raw: raw},
		DryRun:    &dryRun,
	}}
}

// admit sends the raw pod through the handler and applies the JSON patch of the answer, as
// the API server does.
func (f *fixture) admit(t *testing.T, raw []byte, dryRun bool) ([]byte, admission.Response) {
	t.Helper()
	resp := f.h.Handle(context.Background(), request(raw, dryRun))
	if !resp.Allowed || len(resp.Patches) == 0 {
		return raw, resp
	}
	if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("patchType %v, want JSONPatch", resp.PatchType)
	}
	ops, err := json.Marshal(resp.Patches)
	if err != nil {
		t.Fatal(err)
	}
	patch, err := jsonpatch.DecodePatch(ops)
	if err != nil {
		t.Fatal(err)
	}
	out, err := patch.Apply(raw)
	if err != nil {
		t.Fatalf("applying the patch %s: %v", ops, err)
	}
	return out, resp
}

// decode decodes JSON keeping numbers as written.
func decode(t *testing.T, j []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func marshal(t *testing.T, v any) []byte {
	t.Helper()
	j, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// admitPod sends a decoded pod (a map) through the webhook and returns the stored pod.
func (f *fixture) admitPod(t *testing.T, pod map[string]any) map[string]any {
	t.Helper()
	out, resp := f.admit(t, marshal(t, pod), false)
	if !resp.Allowed {
		t.Fatalf("denied: %v", resp.Result)
	}
	return decode(t, out).(map[string]any)
}

// at returns obj[path...] as a map, nil when absent.
func at(obj map[string]any, path ...string) map[string]any {
	for _, k := range path {
		obj, _ = obj[k].(map[string]any)
	}
	return obj
}

// injectDocument injects what the webhook would see of a manifest: a pod, or the pod
// template of a workload (its pods are created from it) and every item of a List. It is the
// webhook's counterpart of internal/mutation's injectObject.
func (f *fixture) injectDocument(t *testing.T, obj map[string]any) {
	t.Helper()
	kind, _ := obj["kind"].(string)
	var template map[string]any
	switch kind {
	case "Pod":
		stored := f.admitPod(t, obj)
		obj["metadata"], obj["spec"] = stored["metadata"], stored["spec"]
		return
	case "List":
		items, _ := obj["items"].([]any)
		for _, item := range items {
			f.injectDocument(t, item.(map[string]any))
		}
		return
	case "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job":
		template = at(obj, "spec", "template")
	case "CronJob":
		template = at(obj, "spec", "jobTemplate", "spec", "template")
	default:
		return
	}
	pod := map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": template["metadata"], "spec": template["spec"]}
	if pod["metadata"] == nil {
		pod["metadata"] = map[string]any{}
	}
	stored := f.admitPod(t, pod)
	template["metadata"], template["spec"] = stored["metadata"], stored["spec"]
}

// injectStream injects every document of a YAML or JSON stream through the webhook and writes
// them as internal/mutation's offline path does: YAML, keys sorted, "---" between documents.
func (f *fixture) injectStream(t *testing.T, data []byte) []byte {
	t.Helper()
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out bytes.Buffer
	for n := 0; ; {
		var doc json.RawMessage
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if len(doc) == 0 || string(doc) == "null" {
			continue // empty or comment-only
		}
		obj := decode(t, doc).(map[string]any)
		f.injectDocument(t, obj)
		y, err := yaml.JSONToYAML(marshal(t, obj))
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			out.WriteString("---\n")
		}
		out.Write(y)
		n++
	}
	return out.Bytes()
}

// TestGoldenThroughWebhook sends every golden input of internal/mutation through the admission
// handler (each pod, and each workload's pod template as the pod its controller creates),
// applies the JSON patches and compares with the same <case>.injected.yaml that the offline
// injection produces. The golden output, sent again, must come back unchanged (no patch).
func TestGoldenThroughWebhook(t *testing.T) {
	var inputs []string
	for _, pattern := range []string{"*.yaml", "*.json"} {
		files, err := filepath.Glob(filepath.Join(goldenDir, pattern))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if !strings.HasSuffix(f, ".injected.yaml") {
				inputs = append(inputs, f)
			}
		}
	}
	if len(inputs) < 10 {
		t.Fatalf("only %d golden inputs in %s", len(inputs), goldenDir)
	}
	for _, input := range inputs {
		name := strings.TrimSuffix(filepath.Base(input), filepath.Ext(input))
		t.Run(name, func(t *testing.T) {
			in, err := os.ReadFile(input)
			if err != nil {
				t.Fatal(err)
			}
			golden := strings.TrimSuffix(input, filepath.Ext(input)) + ".injected.yaml"
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			f := newFixture(t)
			if got := f.injectStream(t, in); !bytes.Equal(got, want) {
				t.Errorf("through the webhook, %s differs from %s:\n--- got\n%s", input, golden, got)
			}
			if again := f.injectStream(t, want); !bytes.Equal(again, want) {
				t.Errorf("the webhook changed the injected %s:\n%s", golden, again)
			}
		})
	}
}

// goldenPod is the raw JSON of pod-plain.yaml, changed by edit.
func goldenPod(t *testing.T, edit func(pod map[string]any)) []byte {
	t.Helper()
	y, err := os.ReadFile(filepath.Join(goldenDir, "pod-plain.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	j, err := yaml.YAMLToJSON(y)
	if err != nil {
		t.Fatal(err)
	}
	pod := decode(t, j).(map[string]any)
	if edit != nil {
		edit(pod)
	}
	return marshal(t, pod)
}

func withAnnotations(kv ...string) func(map[string]any) {
	return func(pod map[string]any) {
		meta := at(pod, "metadata")
		ann, _ := meta["annotations"].(map[string]any)
		if ann == nil {
			ann = map[string]any{}
			meta["annotations"] = ann
		}
		for i := 0; i < len(kv); i += 2 {
			ann[kv[i]] = kv[i+1]
		}
	}
}

// rsOwner is the ReplicaSet whose pods owned creates.
var rsOwner = metav1.OwnerReference{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "bot-5d8f6", UID: types.UID("6c1d-rs")}

// owned makes the pod a ReplicaSet's: the controller reference and a generateName.
func owned(pod map[string]any) {
	meta := at(pod, "metadata")
	delete(meta, "name")
	meta["generateName"] = "bot-5d8f6-"
	meta["ownerReferences"] = []any{map[string]any{"apiVersion": rsOwner.APIVersion, "kind": rsOwner.Kind, "name": rsOwner.Name,
		"uid": string(rsOwner.UID), "controller": true, "blockOwnerDeletion": true}}
}

func chain(edits ...func(map[string]any)) func(map[string]any) {
	return func(pod map[string]any) {
		for _, e := range edits {
			e(pod)
		}
	}
}

// TestUnknownFieldSurvives: a field that our pod type does not know (one added by a newer API
// server) is kept: the patch has no removal for it, and the stored pod still has it.
func TestUnknownFieldSurvives(t *testing.T) {
	f := newFixture(t)
	raw := goldenPod(t, func(pod map[string]any) {
		at(pod, "spec")["futureField"] = 1
		at(pod, "metadata")["futureMeta"] = map[string]any{"a": "b"}
		c := at(pod, "spec")["containers"].([]any)[0].(map[string]any)
		c["futureContainerField"] = true
		at(pod, "spec")["hostNetwork"] = false // a zero value that Go's omitempty drops
	})
	out, resp := f.admit(t, raw, false)
	if !resp.Allowed || len(resp.Patches) == 0 {
		t.Fatalf("not injected: %+v", resp)
	}
	for _, p := range resp.Patches {
		if p.Operation == "remove" {
			t.Errorf("the patch removes %s", p.Path)
		}
	}
	pod := decode(t, out).(map[string]any)
	if at(pod, "spec")["futureField"] != json.Number("1") || at(pod, "metadata", "futureMeta")["a"] != "b" ||
		at(pod, "spec")["hostNetwork"] != false ||
		at(pod, "spec")["containers"].([]any)[0].(map[string]any)["futureContainerField"] != true {
		t.Errorf("unknown fields were lost: %s", out)
	}
	var typed corev1.Pod
	if err := json.Unmarshal(out, &typed); err != nil {
		t.Fatal(err)
	}
	if typed.Annotations[mutation.AnnotationStatus] != mutation.StatusInjected || len(typed.Spec.InitContainers) != 3 {
		t.Errorf("not injected: %s", out)
	}
}

// TestDenied: an invalid annotation denies the pod with 403 and the message of internal/mutation's
// *AnnotationError, as before the typed defaulter.
func TestDenied(t *testing.T) {
	f := newFixture(t)
	edit := withAnnotations(mutation.AnnotationTimeout, "ten")
	raw := goldenPod(t, edit)
	var pod corev1.Pod
	if err := json.Unmarshal(raw, &pod); err != nil {
		t.Fatal(err)
	}
	_, _, _, wantErr := mutation.InjectPod(&pod, testDefaults)
	var ae *mutation.AnnotationError
	if !errors.As(wantErr, &ae) {
		t.Fatalf("precondition: %v is not an *AnnotationError", wantErr)
	}
	resp := f.h.Handle(context.Background(), request(raw, false))
	want := admission.Denied(wantErr.Error())
	if resp.Allowed || resp.Result == nil || *resp.Result != *want.Result || len(resp.Patches) != 0 {
		t.Fatalf("response %+v, want %+v", resp.AdmissionResponse, want.AdmissionResponse)
	}
	if resp.Result.Code != http.StatusForbidden || !strings.HasPrefix(resp.Result.Message, `annotation pyexec.dev/timeout="ten": want `) {
		t.Errorf("result %+v", resp.Result)
	}
	checkCounts(t, f, map[string]float64{podwebhook.OutcomeDenied: 1})
}

// TestSkipped: a pod that is not to be injected is allowed unchanged, with the reason as the
// status message; so is any operation but CREATE.
func TestSkipped(t *testing.T) {
	f := newFixture(t)
	raw := goldenPod(t, func(pod map[string]any) {
		c := at(pod, "spec")["containers"].([]any)[0].(map[string]any)
		c["name"] = mutation.SidecarName
	})
	resp := f.h.Handle(context.Background(), request(raw, false))
	if !resp.Allowed || len(resp.Patches) != 0 || resp.PatchType != nil || resp.Result == nil || resp.Result.Message != "already has a container named pyexec" {
		t.Fatalf("response %+v %+v", resp.AdmissionResponse, resp.Result)
	}

	req := request(raw, false)
	req.Operation = admissionv1.Update
	resp = f.h.Handle(context.Background(), req)
	if !resp.Allowed || len(resp.Patches) != 0 || resp.Result.Message != "pyexec injects at CREATE only" {
		t.Fatalf("UPDATE: %+v", resp.Result)
	}
	checkCounts(t, f, map[string]float64{podwebhook.OutcomeSkipped: 2})
}

// TestError: a pod that does not decode is a 400 and counts as an error.
func TestError(t *testing.T) {
	f := newFixture(t)
	resp := f.h.Handle(context.Background(), request([]byte(`{"apiVersion":"v1","kind":"Pod","spec":{"containers":"nope"}}`), false))
	if resp.Allowed || resp.Result == nil || resp.Result.Code != http.StatusBadRequest {
		t.Fatalf("response %+v", resp.Result)
	}
	checkCounts(t, f, map[string]float64{podwebhook.OutcomeError: 1})
	if e := f.rec.take(); len(e) != 0 {
		t.Errorf("events %v", e)
	}
}

// TestEvents: each outcome puts one Event on the pod's controller; a dry run, a pod without a
// controller and a pod that is already injected (a reinvocation) get none.
func TestEvents(t *testing.T) {
	owner := corev1.ObjectReference{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rsOwner.Name, UID: rsOwner.UID, Namespace: namespace}
	sidecarNamed := func(pod map[string]any) {
		at(pod, "spec")["containers"].([]any)[0].(map[string]any)["name"] = mutation.SidecarName
	}
	injected, err := os.ReadFile(filepath.Join(goldenDir, "pod-plain.injected.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	injectedJSON, err := yaml.YAMLToJSON(injected)
	if err != nil {
		t.Fatal(err)
	}
	injectedOwned := decode(t, injectedJSON).(map[string]any)
	owned(injectedOwned)

	tests := []struct {
		name    string
		raw     []byte
		dryRun  bool
		outcome string
		want    []event
	}{{
		name: "injected", raw: goldenPod(t, owned), outcome: podwebhook.OutcomeInjected,
		want: []event{{owner, corev1.EventTypeNormal, podwebhook.ReasonInjected, podwebhook.ActionInject, "injected pyexec into pod bot-5d8f6-*"}},
	}, {
		name: "skipped", raw: goldenPod(t, chain(owned, sidecarNamed)), outcome: podwebhook.OutcomeSkipped,
		want: []event{{owner, corev1.EventTypeNormal, podwebhook.ReasonSkipped, podwebhook.ActionSkip,
			"did not inject pyexec into pod bot-5d8f6-*: already has a container named pyexec"}},
	}, {
		name: "denied", raw: goldenPod(t, chain(owned, withAnnotations(mutation.AnnotationTimeout, "ten"))), outcome: podwebhook.OutcomeDenied,
		want: []event{{owner, corev1.EventTypeWarning, podwebhook.ReasonDenied, podwebhook.ActionDeny,
			`denied pod bot-5d8f6-*: annotation pyexec.dev/timeout="ten": want a Go duration such as 30s`}},
	}, {
		name: "dry run", raw: goldenPod(t, owned), dryRun: true, outcome: podwebhook.OutcomeInjected,
	}, {
		name: "denied dry run", raw: goldenPod(t, chain(owned, withAnnotations(mutation.AnnotationTimeout, "ten"))), dryRun: true, outcome: podwebhook.OutcomeDenied,
	}, {
		name: "no controller", raw: goldenPod(t, nil), outcome: podwebhook.OutcomeInjected,
	}, {
		name: "already injected", raw: marshal(t, injectedOwned), outcome: podwebhook.OutcomeSkipped,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.admit(t, tc.raw, tc.dryRun)
			checkCounts(t, f, map[string]float64{tc.outcome: 1})
			got := f.rec.take()
			if len(got) != len(tc.want) {
				t.Fatalf("events %+v, want %+v", got, tc.want)
			}
			for i := range got {
				if tc.want[i].reason == podwebhook.ReasonDenied && strings.HasPrefix(got[i].note, tc.want[i].note[:40]) {
					tc.want[i].note = got[i].note // the accepted values are internal/mutation's to word
				}
				if got[i] != tc.want[i] {
					t.Errorf("event %+v\nwant   %+v", got[i], tc.want[i])
				}
			}
		})
	}
}

// TestRandError: when the uids cannot be drawn, the pod is not denied for its annotations but
// fails with an internal error (500), counted as an error, without an Event; pinned uids need
// no draw.
func TestRandError(t *testing.T) {
	d := testDefaults
	d.Rand = iotest.ErrReader(errors.New("no entropy"))
	f := newFixtureWith(t, d)
	_, resp := f.admit(t, goldenPod(t, owned), false)
	if resp.Allowed || resp.Result == nil || resp.Result.Code != http.StatusInternalServerError || !strings.Contains(resp.Result.Message, "no entropy") {
		t.Errorf("response %+v, want a 500 that names the error", resp.Result)
	}
	checkCounts(t, f, map[string]float64{podwebhook.OutcomeError: 1})
	if got := f.rec.take(); len(got) != 0 {
		t.Errorf("events %+v, want none", got)
	}

	_, resp = f.admit(t, goldenPod(t, chain(owned, withAnnotations(mutation.AnnotationServerUID, "1000", mutation.AnnotationRunnerUID, "2000"))), false)
	if !resp.Allowed || len(resp.Patches) == 0 {
		t.Errorf("pinned uids: response %+v, want the pod injected", resp.Result)
	}
}

// TestEventNoteBounded: a long annotation value does not make the Event invalid.
func TestEventNoteBounded(t *testing.T) {
	f := newFixture(t)
	f.admit(t, goldenPod(t, chain(owned, withAnnotations(mutation.AnnotationTimeout, strings.Repeat("é", 2000)))), false)
	got := f.rec.take()
	if len(got) != 1 || len(got[0].note) > 1000 || !strings.HasSuffix(got[0].note, "...") || !utf8Valid(got[0].note) {
		t.Fatalf("events %+v", got)
	}
}

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

// checkCounts checks pyexec_injector_injections_total: want for the outcomes it names, 0 for
// the others.
func checkCounts(t *testing.T, f *fixture, want map[string]float64) {
	t.Helper()
	families, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range families {
		if mf.GetName() != "pyexec_injector_injections_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" {
					got[l.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
	}
	outcomes := []string{podwebhook.OutcomeInjected, podwebhook.OutcomeSkipped, podwebhook.OutcomeDenied, podwebhook.OutcomeError}
	if keys := sortedKeys(got); !slices.Equal(keys, sortedCopy(outcomes)) {
		t.Errorf("outcome labels %v, want %v", keys, outcomes)
	}
	for _, o := range outcomes {
		if got[o] != want[o] {
			t.Errorf("pyexec_injector_injections_total{outcome=%q} = %v, want %v", o, got[o], want[o])
		}
	}
}

func sortedKeys(m map[string]float64) []string {
	var k []string
	for key := range m {
		k = append(k, key)
	}
	slices.Sort(k)
	return k
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

// TestUnknownAnnotationWarnings: a pyexec.dev/ annotation that pyexec does not know comes back
// as an admission warning (kubectl prints it) on a pod that is injected or denied, never on
// one that is left alone; the pod is admitted as it would be without it.
func TestUnknownAnnotationWarnings(t *testing.T) {
	f := newFixture(t)
	typo := "annotation pyexec.dev/timout is not one of pyexec's and changes nothing; did you mean pyexec.dev/timeout?"
	for _, tt := range []struct {
		name    string
		edit    func(map[string]any)
		allowed bool
		want    []string
	}{
		{"injected", withAnnotations("pyexec.dev/timout", "1m"), true, []string{typo}},
		{"denied", withAnnotations("pyexec.dev/timout", "1m", mutation.AnnotationTimeout, "ten"), false, []string{typo}},
		{"clean", withAnnotations(mutation.AnnotationTimeout, "1m"), true, nil},
		{"already injected", withAnnotations("pyexec.dev/timout", "1m", mutation.AnnotationStatus, mutation.StatusInjected), true, nil},
	} {
		resp := f.h.Handle(context.Background(), request(goldenPod(t, tt.edit), false))
		if resp.Allowed != tt.allowed || !slices.Equal(resp.Warnings, tt.want) {
			t.Errorf("%s: allowed %v, warnings %q; want %v, %q", tt.name, resp.Allowed, resp.Warnings, tt.allowed, tt.want)
		}
	}
}
