package chart

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// The chart under test and the release every test renders, the same as config/ is generated
// for.
const (
	chartDir         = "../../charts/pyexec"
	releaseName      = "pyexec"
	releaseNamespace = "pyexec-system"
)

// release is one render of the chart: each object decoded into its Kubernetes type (nil when
// the chart did not render it), the cert-manager objects as plain maps, and NOTES.txt.
type release struct {
	Deployment          *appsv1.Deployment
	Service             *corev1.Service
	ServiceAccount      *corev1.ServiceAccount
	Role                *rbacv1.Role
	RoleBinding         *rbacv1.RoleBinding
	ClusterRole         *rbacv1.ClusterRole
	ClusterRoleBinding  *rbacv1.ClusterRoleBinding
	PodDisruptionBudget *policyv1.PodDisruptionBudget
	Webhook             *admissionregistrationv1.MutatingWebhookConfiguration
	Issuers             []map[string]any // cert-manager.io/v1 Issuer
	Certificates        []map[string]any // cert-manager.io/v1 Certificate
	ServiceMonitors     []map[string]any // monitoring.coreos.com/v1 ServiceMonitor
	PodMonitors         []map[string]any // monitoring.coreos.com/v1 PodMonitor
	Notes               string

	// Objects holds the metadata of every object, in template order.
	Objects []renderedObject
	// Templates holds the rendered text of each template that produced objects, keyed by its
	// path under templates/ (e.g. "injector/deployment.yaml").
	Templates map[string]string
}

// renderedObject is the type and metadata of one rendered object, and its template.
type renderedObject struct {
	Template string
	metav1.PartialObjectMetadata
}

func (o renderedObject) String() string {
	return fmt.Sprintf("%s %s/%s (%s)", o.Kind, o.Namespace, o.Name, o.Template)
}

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("loading the chart: %v", err)
	}
	return ch
}

// renderValues merges valuesYAML (as `helm install -f` would) over the chart's values and
// validates the result against values.schema.json, for a first install of the test release
// on a cluster with Helm's default capabilities.
func renderValues(ch *chart.Chart, valuesYAML string) (chartutil.Values, error) {
	overrides, err := chartutil.ReadValues([]byte(valuesYAML))
	if err != nil {
		return nil, fmt.Errorf("parsing the test's values: %w", err)
	}
	opts := chartutil.ReleaseOptions{Name: releaseName, Namespace: releaseNamespace, Revision: 1, IsInstall: true}
	return chartutil.ToRenderValues(ch, overrides, opts, chartutil.DefaultCapabilities)
}

// render renders the chart with valuesYAML and decodes every object; any error fails the test.
func render(t *testing.T, valuesYAML string) *release {
	t.Helper()
	ch := loadChart(t)
	vals, err := renderValues(ch, valuesYAML)
	if err != nil {
		t.Fatalf("values:\n%s\nrejected: %v", valuesYAML, err)
	}
	// Strict: a template that reads a value missing from values.yaml fails here, instead of
	// rendering an empty string.
	out, err := engine.Engine{Strict: true}.Render(ch, vals)
	if err != nil {
		t.Fatalf("rendering: %v", err)
	}
	r := &release{Templates: map[string]string{}}
	prefix := ch.Name() + "/templates/"
	for name, text := range out {
		tmpl := strings.TrimPrefix(name, prefix)
		switch {
		case tmpl == "NOTES.txt":
			r.Notes = text
		case strings.HasSuffix(tmpl, ".yaml"):
			if docs := splitDocuments(text); len(docs) > 0 {
				r.Templates[tmpl] = text
			}
		default:
			t.Errorf("unexpected rendered file %s", name)
		}
	}
	for _, tmpl := range slices.Sorted(maps.Keys(r.Templates)) {
		for _, doc := range splitDocuments(r.Templates[tmpl]) {
			r.decode(t, tmpl, doc)
		}
	}
	return r
}

var documentSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// splitDocuments returns the YAML documents of text that hold an object, leaving out the
// empty ones and those with comments only.
func splitDocuments(text string) []string {
	var docs []string
	for _, doc := range documentSeparator.Split(text, -1) {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(doc), &m); err == nil && len(m) == 0 {
			continue
		}
		docs = append(docs, doc)
	}
	return docs
}

// decode adds doc to r under its type, strictly: an unknown or misplaced field is an error.
func (r *release) decode(t *testing.T, tmpl, doc string) {
	t.Helper()
	var obj renderedObject
	if err := yaml.Unmarshal([]byte(doc), &obj.PartialObjectMetadata); err != nil {
		t.Errorf("%s: not an object: %v\n%s", tmpl, err, doc)
		return
	}
	obj.Template = tmpl
	r.Objects = append(r.Objects, obj)
	data := []byte(doc)
	switch gvk := obj.GroupVersionKind(); gvk.GroupVersion().String() + " " + gvk.Kind {
	case "apps/v1 Deployment":
		decodeOnce(t, obj, data, &r.Deployment)
	case "v1 Service":
		decodeOnce(t, obj, data, &r.Service)
	case "v1 ServiceAccount":
		decodeOnce(t, obj, data, &r.ServiceAccount)
	case "rbac.authorization.k8s.io/v1 Role":
		decodeOnce(t, obj, data, &r.Role)
	case "rbac.authorization.k8s.io/v1 RoleBinding":
		decodeOnce(t, obj, data, &r.RoleBinding)
	case "rbac.authorization.k8s.io/v1 ClusterRole":
		decodeOnce(t, obj, data, &r.ClusterRole)
	case "rbac.authorization.k8s.io/v1 ClusterRoleBinding":
		decodeOnce(t, obj, data, &r.ClusterRoleBinding)
	case "policy/v1 PodDisruptionBudget":
		decodeOnce(t, obj, data, &r.PodDisruptionBudget)
	case "admissionregistration.k8s.io/v1 MutatingWebhookConfiguration":
		decodeOnce(t, obj, data, &r.Webhook)
	case "cert-manager.io/v1 Issuer":
		r.Issuers = append(r.Issuers, decodeMap(t, obj, data))
	case "cert-manager.io/v1 Certificate":
		r.Certificates = append(r.Certificates, decodeMap(t, obj, data))
	case "monitoring.coreos.com/v1 ServiceMonitor":
		r.ServiceMonitors = append(r.ServiceMonitors, decodeMap(t, obj, data))
	case "monitoring.coreos.com/v1 PodMonitor":
		r.PodMonitors = append(r.PodMonitors, decodeMap(t, obj, data))
	default:
		t.Errorf("%v: no test knows this kind", obj)
	}
}

// decodeOnce decodes data strictly into a new *T stored in dst; the chart renders at most one
// object of each Kubernetes kind.
func decodeOnce[T any](t *testing.T, obj renderedObject, data []byte, dst **T) {
	t.Helper()
	if *dst != nil {
		t.Errorf("%v: a second %s", obj, obj.Kind)
	}
	v := new(T)
	if err := yaml.UnmarshalStrict(data, v); err != nil {
		t.Errorf("%v: %v", obj, err)
	}
	*dst = v
}

func decodeMap(t *testing.T, obj renderedObject, data []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := yaml.UnmarshalStrict(data, &m); err != nil {
		t.Errorf("%v: %v", obj, err)
	}
	return m
}

// lookup reads a nested field of an untyped object, nil when absent.
func lookup(obj map[string]any, path ...string) any {
	var cur any = obj
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[p]
	}
	return cur
}

// field reads a nested string field of an untyped object, "" when absent or not a string.
func field(obj map[string]any, path ...string) string {
	s, _ := lookup(obj, path...).(string)
	return s
}

// named returns the object of objs named name, or nil.
func named(objs []map[string]any, name string) map[string]any {
	for _, o := range objs {
		if field(o, "metadata", "name") == name {
			return o
		}
	}
	return nil
}
