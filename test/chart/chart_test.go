package chart

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	yamlv3 "go.yaml.in/yaml/v3"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	psaapi "k8s.io/pod-security-admission/api"
	psapolicy "k8s.io/pod-security-admission/policy"
	"sigs.k8s.io/yaml"

	"github.com/pyexec/pyexec/cmd/pyexec-injector/app"
	"github.com/pyexec/pyexec/internal/mutation"
)

// What the default render of the test release must produce. The names tie the objects
// together: the webhook calls the Service, the injector patches the webhook configuration
// named in its ClusterRole, and so on.
const (
	appVersion      = "0.1.0"
	fullname        = "pyexec" // the release name already contains the chart name
	certSecret      = "pyexec-tls"
	certDir         = "/tmp/k8s-webhook-server/serving-certs"
	injectLabel     = "pyexec.dev/inject"
	injectorName    = "pyexec-injector" // app.kubernetes.io/name of the injector's pods
	nameLabel       = "app.kubernetes.io/name"
	namespaceLabel  = "kubernetes.io/metadata.name"
	certManagerMode = "certs:\n  mode: cert-manager\n"
)

// The RBAC of the injector, exactly: its certificate Secret in its namespace, its own webhook
// configuration and Events (on the admitted pods' controllers) cluster-wide.
var (
	wantRoleRules = []rbacv1.PolicyRule{{
		APIGroups: []string{""},
		Resources: []string{"secrets"},
		Verbs:     []string{"get", "list", "watch", "create", "update", "patch"},
	}}
	wantClusterRoleRules = []rbacv1.PolicyRule{{
		APIGroups: []string{"admissionregistration.k8s.io"},
		Resources: []string{"mutatingwebhookconfigurations"},
		Verbs:     []string{"get", "list", "watch"},
	}, {
		APIGroups:     []string{"admissionregistration.k8s.io"},
		Resources:     []string{"mutatingwebhookconfigurations"},
		ResourceNames: []string{fullname},
		Verbs:         []string{"update", "patch"},
	}, {
		APIGroups: []string{"events.k8s.io"},
		Resources: []string{"events"},
		Verbs:     []string{"create", "patch"},
	}}
)

func TestDefaults(t *testing.T) {
	r := render(t, "")
	checkEveryObject(t, r)
	checkInjector(t, r)
	checkWebhook(t, r)
	checkRBAC(t, r)

	d := r.Deployment
	if got := *d.Spec.Replicas; got != 2 {
		t.Errorf("replicas = %d, want 2", got)
	}
	c := injectorContainer(t, r)
	wantArgs := []string{
		"serve",
		"--webhook-port=9443",
		"--metrics-addr=:8080",
		"--health-addr=:8081",
		"--cert-dir=" + certDir,
		"--cert-mode=self",
		"--cert-secret=" + certSecret,
		"--webhook-config=" + fullname,
		"--service=" + fullname,
		"--sidecar-image=pyexec:" + appVersion,
		"--image-pull-policy=IfNotPresent",
		"--native-sidecar=auto",
		"--network=deny",
		"--require-isolation=true",
		"--max-sessions=8",
		"--session-idle-timeout=10m",
		"--max-checkpoints-per-session=4",
		"--timeout=30s",
		"--max-timeout=5m",
		"--memory-limit-mb=1024",
		"--preload=",
		"--allow-packages=",
		"--uid-range=100000-999999999",
		"--sidecar-cpu-request=50m",
		"--sidecar-cpu-limit=",
		"--sidecar-memory-request=64Mi",
		"--sidecar-memory-limit=512Mi",
		"--runner-cpu-request=100m",
		"--runner-cpu-limit=",
		"--runner-memory-request=128Mi",
		"--runner-memory-limit=1Gi",
		"--runner-shm-size=64Mi",
		"--log-format=json",
	}
	equal(t, "injector args", c.Args, wantArgs)
	if want := "pyexec-injector:" + appVersion; c.Image != want {
		t.Errorf("image = %q, want %q", c.Image, want)
	}
	if c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("imagePullPolicy = %q, want IfNotPresent", c.ImagePullPolicy)
	}
	if got := containerPort(c, "metrics"); got != 8080 {
		t.Errorf("metrics port = %d, want 8080", got)
	}
	if got := servicePort(t, r, "metrics"); got.Port != 8080 || containerPort(c, got.TargetPort.String()) != 8080 {
		t.Errorf("Service port metrics = %d → %s, want 8080 → 8080", got.Port, got.TargetPort.String())
	}

	// Replicas on different nodes when possible, and a PDB that keeps one of them serving.
	want := corev1.WeightedPodAffinityTerm{Weight: 100, PodAffinityTerm: corev1.PodAffinityTerm{
		TopologyKey:   "kubernetes.io/hostname",
		LabelSelector: d.Spec.Selector,
	}}
	equal(t, "pod anti-affinity", d.Spec.Template.Spec.Affinity, &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
		PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{want},
	}})
	pdb := r.PodDisruptionBudget
	if pdb == nil {
		t.Fatal("no PodDisruptionBudget with 2 replicas")
	}
	if want := intstr.FromInt32(1); pdb.Spec.MinAvailable == nil || *pdb.Spec.MinAvailable != want {
		t.Errorf("PDB minAvailable = %v, want 1", pdb.Spec.MinAvailable)
	}
	checkSelects(t, "PodDisruptionBudget", pdb.Spec.Selector, d.Spec.Template.Labels)

	if w := onlyWebhook(t, r); *w.FailurePolicy != admissionregistrationv1.Fail || *w.TimeoutSeconds != 5 {
		t.Errorf("failurePolicy %s, timeoutSeconds %d; want Fail, 5", *w.FailurePolicy, *w.TimeoutSeconds)
	}
	if r.Webhook.Annotations["cert-manager.io/inject-ca-from"] != "" {
		t.Error("cert-manager.io/inject-ca-from set in self mode")
	}
	if len(r.Issuers)+len(r.Certificates) != 0 {
		t.Errorf("cert-manager objects in self mode: %d Issuers, %d Certificates", len(r.Issuers), len(r.Certificates))
	}

	// NOTES.txt: how to opt a pod in (a label and annotations on the pod template, since
	// pods are injected at CREATE), where the logs are, and what self mode leaves behind.
	for _, s := range []string{
		`pyexec.dev/inject: "true"`,
		"pyexec.dev/require:",
		"pyexec.dev/preload:",
		"injected when they are CREATED",
		"kubectl rollout restart",
		"kubectl logs POD -c pyexec-init",
		"kubectl logs POD -c pyexec\n",
		"kubectl logs POD -c pyexec-runner\n",
		"the sidecars pyexec-runner and pyexec",
		"two\nuids drawn from 100000-999999999 (identity.uidRange)",
		"kubectl logs -n pyexec-system deploy/" + fullname,
		"Secret pyexec-system/" + certSecret,
		"failurePolicy is Fail",
		"sidecar.requireIsolation is true",
		`pyexec.dev/require-isolation: "false"`,
		"`helm uninstall` removes it with it", // as the e2e's helm_uninstall finds: no Secret left
	} {
		if !strings.Contains(r.Notes, s) {
			t.Errorf("NOTES.txt lacks %q:\n%s", s, r.Notes)
		}
	}
	if strings.Contains(r.Notes, "kubectl delete secret") {
		t.Error("NOTES.txt asks to delete the self-managed Secret by hand, which helm uninstall removes")
	}
	if strings.Contains(r.Notes, "sidecar.maxSessions is 0") {
		t.Error("NOTES.txt says sessions are off while sidecar.maxSessions is 8")
	}
}

func TestCertManagerMode(t *testing.T) {
	r := render(t, certManagerMode)
	checkEveryObject(t, r)
	checkInjector(t, r)
	checkWebhook(t, r)
	checkRBAC(t, r)

	c := injectorContainer(t, r)
	if got := argValue(t, c.Args, "--cert-mode"); got != "external" {
		t.Errorf("--cert-mode = %q, want external", got)
	}
	secret := argValue(t, c.Args, "--cert-secret")

	// cert-manager writes the Secret the injector reads at --cert-dir.
	mount := volumeMountAt(c, certDir)
	if mount == nil || !mount.ReadOnly {
		t.Fatalf("no read-only volume mounted at %s: %+v", certDir, c.VolumeMounts)
	}
	if v := volume(t, r, mount.Name); v.Secret == nil || v.Secret.SecretName != secret {
		t.Errorf("volume %s = %+v, want Secret %s", mount.Name, v.VolumeSource, secret)
	}

	// The chain: a self-signed Issuer signs the CA Certificate, whose Secret backs the CA
	// Issuer, which signs the serving Certificate written to that same Secret.
	if len(r.Issuers) != 2 || len(r.Certificates) != 2 {
		t.Fatalf("%d Issuers and %d Certificates, want 2 and 2", len(r.Issuers), len(r.Certificates))
	}
	from := r.Webhook.Annotations["cert-manager.io/inject-ca-from"]
	ns, name, _ := strings.Cut(from, "/")
	if ns != releaseNamespace {
		t.Errorf("cert-manager.io/inject-ca-from = %q, want a Certificate in %s", from, releaseNamespace)
	}
	serving := named(r.Certificates, name)
	if serving == nil {
		t.Fatalf("cert-manager.io/inject-ca-from = %q: no such Certificate", from)
	}
	if got := field(serving, "spec", "secretName"); got != secret {
		t.Errorf("serving Certificate writes Secret %q, the injector reads %q", got, secret)
	}
	dnsNames, _ := lookup(serving, "spec", "dnsNames").([]any)
	if want := fullname + "." + releaseNamespace + ".svc"; !slices.Contains(dnsNames, any(want)) {
		t.Errorf("serving Certificate dnsNames = %v, want %s among them", dnsNames, want)
	}
	caIssuer := issuerOf(t, r, serving)
	caSecret := field(caIssuer, "spec", "ca", "secretName")
	var ca map[string]any
	for _, cert := range r.Certificates {
		if field(cert, "spec", "secretName") == caSecret && caSecret != "" {
			ca = cert
		}
	}
	if ca == nil || lookup(ca, "spec", "isCA") != true {
		t.Fatalf("CA Issuer %s reads Secret %q that no CA Certificate writes", field(caIssuer, "metadata", "name"), caSecret)
	}
	if root := issuerOf(t, r, ca); lookup(root, "spec", "selfSigned") == nil {
		t.Errorf("the CA Certificate's Issuer %s is not self-signed", field(root, "metadata", "name"))
	}

	if !strings.Contains(r.Notes, "kubectl get certificate -n "+releaseNamespace) || !strings.Contains(r.Notes, "cert-manager's Secret stays") {
		t.Errorf("NOTES.txt does not point at the Certificates, or say what uninstall leaves:\n%s", r.Notes)
	}
}

func TestCustomValues(t *testing.T) {
	r := render(t, `
replicaCount: 1
image:
  repository: registry.example.com/pyexec-injector
  tag: 1.2.3
  pullPolicy: Always
sidecar:
  image:
    repository: registry.example.com:5000/pyexec
    tag: 1.2.3-debug
    pullPolicy: Never
  nativeSidecar: false # a boolean, as --set sidecar.nativeSidecar=false passes it
  network: allow
  requireIsolation: false
  maxSessions: 0
  sessionIdleTimeout: 1h30m
  maxCheckpointsPerSession: 0
  resources:
    requests:
      cpu: 0.25 # a number, as --set passes one
      memory: 100Mi
    limits:
      cpu: "1"
      memory: 1Gi
runner:
  resources:
    requests:
      cpu: 500m
    limits:
      cpu: 2
      memory: 4Gi
  shmSize: 1Gi
identity:
  uidRange: 1000680000-1000689999
webhook:
  failurePolicy: Ignore
  timeoutSeconds: 30
logFormat: console
`)
	checkEveryObject(t, r)
	checkInjector(t, r)
	checkWebhook(t, r)
	checkRBAC(t, r)

	if got := *r.Deployment.Spec.Replicas; got != 1 {
		t.Errorf("replicas = %d, want 1", got)
	}
	if r.PodDisruptionBudget != nil {
		t.Error("a PodDisruptionBudget for a single replica would block every node drain")
	}
	c := injectorContainer(t, r)
	if c.Image != "registry.example.com/pyexec-injector:1.2.3" || c.ImagePullPolicy != corev1.PullAlways {
		t.Errorf("image = %q (%s), want registry.example.com/pyexec-injector:1.2.3 (Always)", c.Image, c.ImagePullPolicy)
	}
	for flag, want := range map[string]string{
		"--sidecar-image":               "registry.example.com:5000/pyexec:1.2.3-debug",
		"--image-pull-policy":           "Never",
		"--native-sidecar":              "false",
		"--network":                     "allow",
		"--require-isolation":           "false",
		"--max-sessions":                "0",
		"--session-idle-timeout":        "1h30m",
		"--max-checkpoints-per-session": "0",
		"--uid-range":                   "1000680000-1000689999",
		"--sidecar-cpu-request":         "0.25",
		"--sidecar-cpu-limit":           "1",
		"--sidecar-memory-request":      "100Mi",
		"--sidecar-memory-limit":        "1Gi",
		"--runner-cpu-request":          "500m",
		"--runner-cpu-limit":            "2",
		"--runner-memory-request":       "128Mi", // the chart's default: values merge
		"--runner-memory-limit":         "4Gi",
		"--runner-shm-size":             "1Gi",
		"--log-format":                  "console",
	} {
		if got := argValue(t, c.Args, flag); got != want {
			t.Errorf("%s = %q, want %q", flag, got, want)
		}
	}
	w := onlyWebhook(t, r)
	if *w.FailurePolicy != admissionregistrationv1.Ignore || *w.TimeoutSeconds != 30 {
		t.Errorf("failurePolicy %s, timeoutSeconds %d; want Ignore, 30", *w.FailurePolicy, *w.TimeoutSeconds)
	}
	if strings.Contains(r.Notes, "failurePolicy is Fail") {
		t.Error("NOTES.txt warns about failurePolicy Fail while it is Ignore")
	}
	if strings.Contains(r.Notes, "requireIsolation is true") {
		t.Error("NOTES.txt warns about sidecar.requireIsolation while it is false")
	}
	if !strings.Contains(r.Notes, "sidecar.maxSessions is 0") || !strings.Contains(r.Notes, `pyexec.dev/max-sessions: "4"`) {
		t.Errorf("NOTES.txt does not say that sessions are off with sidecar.maxSessions 0:\n%s", r.Notes)
	}
}

// TestValueVariants checks the values that change one thing each.
func TestValueVariants(t *testing.T) {
	tests := []struct {
		name, values string
		check        func(t *testing.T, r *release)
	}{{
		name: "the code's settings chart-wide",
		values: `
sidecar:
  timeout: 1m
  maxTimeout: 10m
  memoryLimitMB: 2048
  preload: [numpy, pandas]
  require: ["pandas>=2,<3", numpy]
  install: ["requests>=2"]
  allowPackages: [numpy, "scikit-*"]
`,
		check: func(t *testing.T, r *release) {
			args := injectorContainer(t, r).Args
			for flag, want := range map[string]string{"--timeout": "1m", "--max-timeout": "10m", "--memory-limit-mb": "2048",
				"--preload": "numpy,pandas", "--allow-packages": "numpy,scikit-*"} {
				if got := argValue(t, args, flag); got != want {
					t.Errorf("%s = %q, want %q", flag, got, want)
				}
			}
			if got := argValues(args, "--require"); !slices.Equal(got, []string{"pandas>=2,<3", "numpy"}) {
				t.Errorf("--require %q, want each requirement once, in order", got)
			}
			if got := argValues(args, "--install"); !slices.Equal(got, []string{"requests>=2"}) {
				t.Errorf("--install %q", got)
			}
		},
	}, {
		name: "the code's settings left to the sidecar",
		check: func(t *testing.T, r *release) {
			args := injectorContainer(t, r).Args
			for flag, want := range map[string]string{"--timeout": "30s", "--max-timeout": "5m", "--memory-limit-mb": "1024", "--preload": "", "--allow-packages": ""} {
				if got := argValue(t, args, flag); got != want {
					t.Errorf("%s = %q, want %q", flag, got, want)
				}
			}
			if got := append(argValues(args, "--require"), argValues(args, "--install")...); len(got) != 0 {
				t.Errorf("--require or --install given: %q", got)
			}
		},
	}, {
		name: "cert-manager with an issuer of one's own",
		values: `
certs:
  mode: cert-manager
  certManager:
    issuerRef: {name: corp-ca, kind: ClusterIssuer}
`,
		check: func(t *testing.T, r *release) {
			if len(r.Issuers) != 0 || len(r.Certificates) != 1 {
				t.Fatalf("%d Issuers and %d Certificates, want none of the chart's chain and the serving Certificate", len(r.Issuers), len(r.Certificates))
			}
			serving := r.Certificates[0]
			for key, want := range map[string]string{"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"} {
				if got := field(serving, "spec", "issuerRef", key); got != want {
					t.Errorf("the serving Certificate's issuerRef.%s = %q, want %q", key, got, want)
				}
			}
			_, name, _ := strings.Cut(r.Webhook.Annotations["cert-manager.io/inject-ca-from"], "/")
			if name != field(serving, "metadata", "name") {
				t.Errorf("cert-manager.io/inject-ca-from names %q, not the serving Certificate", name)
			}
			if got := argValue(t, injectorContainer(t, r).Args, "--cert-secret"); got != field(serving, "spec", "secretName") {
				t.Errorf("the injector reads Secret %q, the Certificate writes %q", got, field(serving, "spec", "secretName"))
			}
		},
	}, {
		name:   "metrics disabled",
		values: "metrics:\n  enabled: false\n",
		check: func(t *testing.T, r *release) {
			c := injectorContainer(t, r)
			if got := argValue(t, c.Args, "--metrics-addr"); got != "0" {
				t.Errorf("--metrics-addr = %q, want 0 (off)", got)
			}
			for _, p := range c.Ports {
				if p.ContainerPort == 8080 {
					t.Errorf("container port %+v with metrics off", p)
				}
			}
			for _, p := range r.Service.Spec.Ports {
				if p.Name == "metrics" {
					t.Errorf("Service port %+v with metrics off", p)
				}
			}
		},
	}, {
		name: "extra namespace selector expressions are added to the chart's",
		values: `
webhook:
  namespaceSelector:
    extraMatchExpressions:
      - key: pyexec.dev/enabled
        operator: In
        values: ["true"]
`,
		check: func(t *testing.T, r *release) {
			sel := selector(t, onlyWebhook(t, r).NamespaceSelector)
			for _, tc := range []struct {
				labels labels.Set
				want   bool
			}{
				{labels.Set{namespaceLabel: "bots", "pyexec.dev/enabled": "true"}, true},
				{labels.Set{namespaceLabel: "bots"}, false},
				{labels.Set{namespaceLabel: "kube-system", "pyexec.dev/enabled": "true"}, false},
				{labels.Set{namespaceLabel: releaseNamespace, "pyexec.dev/enabled": "true"}, false},
			} {
				if got := sel.Matches(tc.labels); got != tc.want {
					t.Errorf("namespaceSelector matches %v = %v, want %v", tc.labels, got, tc.want)
				}
			}
		},
	}, {
		name:   "pod labels cannot take the injector's own",
		values: "podLabels:\n  app.kubernetes.io/name: bot\n  team: ml\npodAnnotations:\n  example.com/owner: ml\n",
		check: func(t *testing.T, r *release) {
			tmpl := r.Deployment.Spec.Template
			if tmpl.Labels[nameLabel] != injectorName || tmpl.Labels["team"] != "ml" {
				t.Errorf("pod labels = %v, want %s=%s and team=ml", tmpl.Labels, nameLabel, injectorName)
			}
			if tmpl.Annotations["example.com/owner"] != "ml" {
				t.Errorf("pod annotations = %v, want example.com/owner=ml", tmpl.Annotations)
			}
		},
	}, {
		name:   "affinity replaces the default anti-affinity",
		values: "affinity:\n  nodeAffinity:\n    requiredDuringSchedulingIgnoredDuringExecution:\n      nodeSelectorTerms:\n        - matchExpressions:\n            - {key: kubernetes.io/arch, operator: In, values: [arm64]}\n",
		check: func(t *testing.T, r *release) {
			a := r.Deployment.Spec.Template.Spec.Affinity
			if a.PodAntiAffinity != nil || a.NodeAffinity == nil {
				t.Errorf("affinity = %+v, want the node affinity alone", a)
			}
		},
	}, {
		name:   "existing ServiceAccount",
		values: "serviceAccount:\n  create: false\n  name: injector\n",
		check: func(t *testing.T, r *release) {
			if r.ServiceAccount != nil {
				t.Error("a ServiceAccount was created")
			}
			if got := r.Deployment.Spec.Template.Spec.ServiceAccountName; got != "injector" {
				t.Errorf("serviceAccountName = %q, want injector", got)
			}
			checkRBACSubject(t, "RoleBinding", r.RoleBinding.Subjects, "injector")
			checkRBACSubject(t, "ClusterRoleBinding", r.ClusterRoleBinding.Subjects, "injector")
		},
	}, {
		name:   "names",
		values: "fullnameOverride: pyexec-webhook\ncerts:\n  secretName: webhook-cert\n",
		check: func(t *testing.T, r *release) {
			checkInjector(t, r) // every name still agrees with the others
			c := injectorContainer(t, r)
			if got := argValue(t, c.Args, "--cert-secret"); got != "webhook-cert" {
				t.Errorf("--cert-secret = %q, want webhook-cert", got)
			}
			if r.Webhook.Name != "pyexec-webhook" || r.ClusterRole.Rules[1].ResourceNames[0] != "pyexec-webhook" {
				t.Errorf("webhook configuration %q, ClusterRole resourceNames %v; want pyexec-webhook", r.Webhook.Name, r.ClusterRole.Rules[1].ResourceNames)
			}
		},
	}, {
		name:   "a large maxSessions is passed as a whole number",
		values: "sidecar:\n  maxSessions: 1000000\n",
		check: func(t *testing.T, r *release) {
			if got := argValue(t, injectorContainer(t, r).Args, "--max-sessions"); got != "1000000" {
				t.Errorf("--max-sessions = %q, want 1000000", got)
			}
		},
	}, {
		name: "images by digest, pull secrets, priority and spread of the injector",
		values: `
image:
  digest: sha256:` + strings.Repeat("a", 64) + `
sidecar:
  image:
    repository: registry.example.com/pyexec
    digest: sha256:` + strings.Repeat("b", 64) + `
imagePullSecrets:
  - name: regcred
priorityClassName: system-cluster-critical
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        app.kubernetes.io/name: pyexec-injector
`,
		check: func(t *testing.T, r *release) {
			c := injectorContainer(t, r)
			if c.Image != "pyexec-injector@sha256:"+strings.Repeat("a", 64) {
				t.Errorf("injector image %q, want by digest", c.Image)
			}
			if got := argValue(t, c.Args, "--sidecar-image"); got != "registry.example.com/pyexec@sha256:"+strings.Repeat("b", 64) {
				t.Errorf("--sidecar-image = %q, want by digest", got)
			}
			spec := r.Deployment.Spec.Template.Spec
			if len(spec.ImagePullSecrets) != 1 || spec.ImagePullSecrets[0].Name != "regcred" || spec.PriorityClassName != "system-cluster-critical" ||
				len(spec.TopologySpreadConstraints) != 1 || spec.TopologySpreadConstraints[0].TopologyKey != "topology.kubernetes.io/zone" {
				t.Errorf("pull secrets %v, priority %q, spread %+v", spec.ImagePullSecrets, spec.PriorityClassName, spec.TopologySpreadConstraints)
			}
		},
	}, {
		name:   "monitors of the injector and of the sidecars",
		values: "metrics:\n  serviceMonitor:\n    enabled: true\n    interval: 30s\nsidecar:\n  podMonitor:\n    enabled: true\n",
		check: func(t *testing.T, r *release) {
			if len(r.ServiceMonitors) != 1 || len(r.PodMonitors) != 1 {
				t.Fatalf("%d ServiceMonitors, %d PodMonitors; want one of each", len(r.ServiceMonitors), len(r.PodMonitors))
			}
			sm, pm := r.ServiceMonitors[0], r.PodMonitors[0]
			ep := lookup(sm, "spec", "endpoints").([]any)[0].(map[string]any)
			if ep["port"] != "metrics" || ep["interval"] != "30s" || lookup(sm, "spec", "selector", "matchLabels", nameLabel) != injectorName {
				t.Errorf("ServiceMonitor %v", sm)
			}
			pep := lookup(pm, "spec", "podMetricsEndpoints").([]any)[0].(map[string]any)
			if pep["port"] != mutation.ProbePortName || pep["path"] != "/metrics" || lookup(pm, "spec", "selector", "matchLabels", mutation.LabelInject) != mutation.LabelInjectEnabled ||
				lookup(pm, "spec", "namespaceSelector", "any") != true {
				t.Errorf("PodMonitor %v", pm)
			}
			var svcMetrics bool
			for _, p := range r.Service.Spec.Ports {
				svcMetrics = svcMetrics || p.Name == "metrics"
			}
			if !svcMetrics {
				t.Error("the ServiceMonitor's port is not on the Service")
			}
		},
	}, {
		name:   "no ServiceMonitor without metrics",
		values: "metrics:\n  enabled: false\n  serviceMonitor:\n    enabled: true\n",
		check: func(t *testing.T, r *release) {
			if len(r.ServiceMonitors) != 0 || len(r.PodMonitors) != 0 {
				t.Errorf("%d ServiceMonitors, %d PodMonitors with metrics off", len(r.ServiceMonitors), len(r.PodMonitors))
			}
		},
	}, {
		name:   "PodDisruptionBudget disabled",
		values: "podDisruptionBudget:\n  enabled: false\n",
		check: func(t *testing.T, r *release) {
			if r.PodDisruptionBudget != nil {
				t.Error("PodDisruptionBudget rendered while disabled")
			}
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := render(t, tt.values)
			checkEveryObject(t, r)
			tt.check(t, r)
		})
	}
}

// TestSchemaRejects: values.schema.json stops bad values before anything is rendered.
// The injector takes what the chart passes it: values at the edges of what the schema accepts,
// rendered, parse as pyexec-injector serve's flags and pass its checks (a value the schema
// accepts but the injector refuses would keep every replica from starting).
func TestInjectorTakesTheRenderedArgs(t *testing.T) {
	for name, values := range map[string]string{
		"defaults": "",
		"the code's settings": `
sidecar:
  timeout: 1m30s
  maxTimeout: 2h
  memoryLimitMB: 32
  preload: [numpy, os.path, matplotlib.pyplot]
  require: ["pkg[extra,other]>=1", "pandas>=2,<3", "numpy==1.*", "Django ~= 4.2"]
  install: ["requests>=2", "scikit-learn"]
  allowPackages: ["numpy", "scikit-*", "[!x]yz?", "*"]
`,
		"cert-manager, an external issuer": "certs:\n  mode: cert-manager\n  certManager:\n    issuerRef: {name: ca, kind: StepClusterIssuer, group: certmanager.step.sm}\n",
	} {
		t.Run(name, func(t *testing.T) {
			r := render(t, values)
			c := injectorContainer(t, r)
			var got *app.ServeConfig
			sio := app.IO{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: io.Discard,
				LookupEnv: func(k string) (string, bool) {
					if k == "POD_NAMESPACE" {
						return releaseNamespace, true
					}
					return "", false
				}}
			root := app.NewRootCommand(sio, app.Runners{Serve: func(_ context.Context, cfg *app.ServeConfig) error { got = cfg; return nil }})
			root.SetArgs(c.Args)
			if err := root.ExecuteContext(context.Background()); err != nil || got == nil {
				t.Fatalf("pyexec-injector %v: %v", c.Args, err)
			}
		})
	}
}

// An issuer of one's own is for cert-manager mode: in self mode the chart refuses to render,
// saying so, rather than ignore it.
func TestIssuerNeedsCertManagerMode(t *testing.T) {
	ch := loadChart(t)
	vals, err := renderValues(ch, "certs:\n  certManager:\n    issuerRef: {name: corp-ca}\n")
	if err != nil {
		t.Fatal(err)
	}
	_, err = engine.Engine{Strict: true}.Render(ch, vals)
	if err == nil || !strings.Contains(err.Error(), "certs.certManager.issuerRef is for certs.mode=cert-manager") {
		t.Fatalf("rendering an issuerRef in self mode: %v", err)
	}
}

func TestSchemaRejects(t *testing.T) {
	ch := loadChart(t)
	for name, values := range map[string]string{
		"failurePolicy not Fail or Ignore":  "webhook:\n  failurePolicy: Retry\n",
		"timeoutSeconds 0":                  "webhook:\n  timeoutSeconds: 0\n",
		"timeoutSeconds 31":                 "webhook:\n  timeoutSeconds: 31\n",
		"timeoutSeconds a string":           "webhook:\n  timeoutSeconds: \"5\"\n",
		"unknown cert mode":                 "certs:\n  mode: vault\n",
		"issuer kind not a kind":            "certs:\n  mode: cert-manager\n  certManager:\n    issuerRef: {name: ca, kind: cluster-issuer}\n",
		"allowPackages an open class":       "sidecar:\n  allowPackages: [\"a[b\"]\n",
		"issuer kind without a name":        "certs:\n  mode: cert-manager\n  certManager:\n    issuerRef: {kind: ClusterIssuer}\n",
		"issuer with an unknown key":        "certs:\n  mode: cert-manager\n  certManager:\n    issuerRef: {name: ca, namespace: x}\n",
		"timeout zero":                      "sidecar:\n  timeout: 0s\n",
		"timeout a number":                  "sidecar:\n  timeout: 30\n",
		"maxTimeout in words":               "sidecar:\n  maxTimeout: five minutes\n",
		"memoryLimitMB below 32":            "sidecar:\n  memoryLimitMB: 16\n",
		"memoryLimitMB over 4096":           "sidecar:\n  memoryLimitMB: 8192\n",
		"preload a string":                  "sidecar:\n  preload: numpy,pandas\n",
		"preload not a module":              "sidecar:\n  preload: [1numpy]\n",
		"require a pip option":              "sidecar:\n  require: [\"--index-url=http://x\"]\n",
		"require with a comment":            "sidecar:\n  require: [\"numpy # latest\"]\n",
		"install empty":                     "sidecar:\n  install: [\"\"]\n",
		"require with a marker":             "sidecar:\n  require: [\"pandas; python_version<'3.9'\"]\n",
		"require a URL":                     "sidecar:\n  require: [\"a @ https://x/a.whl\"]\n",
		"require with a colon":              "sidecar:\n  require: [\"foo: bar\"]\n",
		"allowPackages with a blank":        "sidecar:\n  allowPackages: [\"num py\"]\n",
		"unknown log format":                "logFormat: text\n",
		"unknown nativeSidecar":             "sidecar:\n  nativeSidecar: sometimes\n",
		"unknown network":                   "sidecar:\n  network: none\n",
		"network not lowercase":             "sidecar:\n  network: Allow\n",
		"network a boolean":                 "sidecar:\n  network: false\n",
		"requireIsolation a string":         "sidecar:\n  requireIsolation: \"true\"\n",
		"requireIsolation not a boolean":    "sidecar:\n  requireIsolation: yes please\n",
		"maxSessions negative":              "sidecar:\n  maxSessions: -1\n",
		"maxSessions a fraction":            "sidecar:\n  maxSessions: 2.5\n",
		"maxSessions a string":              "sidecar:\n  maxSessions: \"8\"\n",
		"maxCheckpointsPerSession 65":       "sidecar:\n  maxCheckpointsPerSession: 65\n",
		"maxCheckpointsPerSession negative": "sidecar:\n  maxCheckpointsPerSession: -1\n",
		"sessionIdleTimeout without unit":   "sidecar:\n  sessionIdleTimeout: \"600\"\n",
		"sessionIdleTimeout a number":       "sidecar:\n  sessionIdleTimeout: 600\n",
		"sessionIdleTimeout zero":           "sidecar:\n  sessionIdleTimeout: 0s\n",
		"sessionIdleTimeout zeros":          "sidecar:\n  sessionIdleTimeout: 0h0.0m\n",
		"sessionIdleTimeout negative":       "sidecar:\n  sessionIdleTimeout: -5m\n",
		"sessionIdleTimeout in words":       "sidecar:\n  sessionIdleTimeout: ten minutes\n",
		"sessionIdleTimeout empty":          "sidecar:\n  sessionIdleTimeout: \"\"\n",
		"no replicas":                       "replicaCount: 0\n",
		"unknown pull policy":               "image:\n  pullPolicy: Sometimes\n",
		"tag in the repository":             "image:\n  repository: pyexec-injector:1.0\n",
		"minAvailable neither int nor %":    "podDisruptionBudget:\n  minAvailable: half\n",
		"bad namespace selector operator":   "webhook:\n  namespaceSelector:\n    extraMatchExpressions:\n      - {key: a, operator: Equals}\n",
		"unknown top-level key":             "replicas: 3\n",
		"digest not sha256":                 "image:\n  digest: md5:abc\n",
		"digest too short":                  "sidecar:\n  image:\n    digest: sha256:abc\n",
		"pull secret without a name":        "imagePullSecrets:\n  - secret: regcred\n",
		"pull secrets as names":             "imagePullSecrets: [regcred]\n",
		"scrape interval in words":          "metrics:\n  serviceMonitor:\n    interval: thirty seconds\n",
		"podMonitor enabled a string":       "sidecar:\n  podMonitor:\n    enabled: \"yes\"\n",
		"unknown nested key":                "webhook:\n  failurePolicyy: Ignore\n",
		"unknown sidecar image key":         "sidecar:\n  image:\n    digest: sha256:0\n",
		"uidRange one number":               "identity:\n  uidRange: \"100000\"\n",
		"uidRange from 0":                   "identity:\n  uidRange: 0-1000\n",
		"uidRange negative":                 "identity:\n  uidRange: -5-1000\n",
		"uidRange words":                    "identity:\n  uidRange: all\n",
		"uidRange blanks":                   "identity:\n  uidRange: 1000 - 2000\n",
		"uidRange a number":                 "identity:\n  uidRange: 1000\n",
		"uidRange past 32 bits":             "identity:\n  uidRange: 1000-99999999999\n",
		"unknown identity key":              "identity:\n  serverUid: 1000\n",
		"runner cpu request zero":           "runner:\n  resources:\n    requests:\n      cpu: 0\n",
		"runner cpu request 0m":             "runner:\n  resources:\n    requests:\n      cpu: 0m\n",
		"runner memory limit negative":      "runner:\n  resources:\n    limits:\n      memory: -1Gi\n",
		"runner memory limit in words":      "runner:\n  resources:\n    limits:\n      memory: one gig\n",
		"runner memory limit a unit typo":   "runner:\n  resources:\n    limits:\n      memory: 1GB\n",
		"runner resources unknown kind":     "runner:\n  resources:\n    limits:\n      nvidia.com/gpu: 1\n",
		"runner resources unknown key":      "runner:\n  resources:\n    limit:\n      cpu: 1\n",
		"sidecar cpu limit empty":           "sidecar:\n  resources:\n    limits:\n      cpu: \"\"\n",
		"sidecar memory request a boolean":  "sidecar:\n  resources:\n    requests:\n      memory: true\n",
		"shmSize zero":                      "runner:\n  shmSize: 0Mi\n",
		"shmSize empty":                     "runner:\n  shmSize: \"\"\n",
		"shmSize in words":                  "runner:\n  shmSize: big\n",
		"unknown runner key":                "runner:\n  image: pyexec\n",
	} {
		t.Run(name, func(t *testing.T) {
			// As `helm install` does it...
			if _, err := renderValues(ch, values); err == nil {
				t.Fatalf("values accepted:\n%s", values)
			}
			// ... and the reason is the schema, not something else.
			overrides, err := chartutil.ReadValues([]byte(values))
			if err != nil {
				t.Fatal(err)
			}
			merged, err := chartutil.CoalesceValues(ch, overrides)
			if err != nil {
				t.Fatal(err)
			}
			err = chartutil.ValidateAgainstSingleSchema(merged, ch.Schema)
			if !errors.As(err, &chartutil.JSONSchemaValidationError{}) {
				t.Errorf("schema validation error = %v, want a JSONSchemaValidationError", err)
			}
		})
	}
}

// TestSchemaAccepts: the edges of every range, and the forms --set produces.
func TestSchemaAccepts(t *testing.T) {
	ch := loadChart(t)
	for _, values := range []string{
		"webhook:\n  timeoutSeconds: 1\n  failurePolicy: Ignore\n",
		"webhook:\n  timeoutSeconds: 30\n",
		"sidecar:\n  nativeSidecar: true\n",
		"sidecar:\n  nativeSidecar: \"false\"\n",
		"sidecar:\n  network: allow\n  requireIsolation: false\n",
		"sidecar:\n  network: deny\n  requireIsolation: true\n",
		"sidecar:\n  maxSessions: 0\n  sessionIdleTimeout: 90s\n",
		"sidecar:\n  maxSessions: 1000\n  sessionIdleTimeout: 1h\n",
		"sidecar:\n  sessionIdleTimeout: 1.5m\n",
		"sidecar:\n  sessionIdleTimeout: 0.5s\n",
		"sidecar:\n  sessionIdleTimeout: 1m30s\n",
		"sidecar:\n  sessionIdleTimeout: 500ms\n",
		"podDisruptionBudget:\n  minAvailable: 50%\n",
		"podDisruptionBudget:\n  minAvailable: 0\n",
		"image:\n  repository: localhost:5000/team/pyexec-injector\n  tag: v0.1.0_rc.1\n",
		"resources:\n  requests:\n    cpu: 0.5\n    memory: 100Mi\n",
		"identity:\n  uidRange: 1-2\n",
		"identity:\n  uidRange: 10000-2147483647\n",
		"runner:\n  shmSize: 1Gi\n",
		"runner:\n  shmSize: 1.5G\n",
		"runner:\n  shmSize: 67108864\n",
		"runner:\n  resources:\n    requests:\n      cpu: 1\n      memory: 1e9\n    limits:\n      cpu: 2500m\n      memory: 8Gi\n",
		"runner:\n  resources:\n    requests:\n      cpu: .5\n",
		"runner:\n  resources: {}\n",
		"sidecar:\n  resources:\n    limits:\n      cpu: 100m\n      memory: 256Mi\n",
		"global:\n  imageRegistry: example.com\n", // from a parent chart
		certManagerMode,
	} {
		if _, err := renderValues(ch, values); err != nil {
			t.Errorf("values rejected:\n%s\n%v", values, err)
		}
	}
}

// TestLint runs the rules of `helm lint --strict`: no warning, no error.
func TestLint(t *testing.T) {
	for name, values := range map[string]string{"defaults": "", "cert-manager": certManagerMode} {
		t.Run(name, func(t *testing.T) {
			vals, err := chartutil.ReadValues([]byte(values))
			if err != nil {
				t.Fatal(err)
			}
			linter := lint.AllWithKubeVersion(chartDir, vals, releaseNamespace, nil)
			for _, m := range linter.Messages {
				if m.Severity >= support.WarningSev {
					t.Error(m)
				} else {
					t.Log(m)
				}
			}
		})
	}
}

// checkEveryObject checks what every object shares: the chart's labels and the release
// namespace (on namespaced kinds).
func checkEveryObject(t *testing.T, r *release) {
	t.Helper()
	wantLabels := map[string]string{
		nameLabel:                      injectorName,
		"app.kubernetes.io/instance":   releaseName,
		"app.kubernetes.io/version":    appVersion,
		"app.kubernetes.io/part-of":    "pyexec",
		"app.kubernetes.io/managed-by": "Helm",
		"helm.sh/chart":                "pyexec-" + appVersion,
	}
	clusterScoped := map[string]bool{"ClusterRole": true, "ClusterRoleBinding": true, "MutatingWebhookConfiguration": true}
	for _, o := range r.Objects {
		for k, v := range wantLabels {
			if o.Labels[k] != v {
				t.Errorf("%v: label %s = %q, want %q", o, k, o.Labels[k], v)
			}
		}
		if want := releaseNamespace; clusterScoped[o.Kind] {
			if o.Namespace != "" {
				t.Errorf("%v: a cluster-scoped object with a namespace", o)
			}
		} else if o.Namespace != want {
			t.Errorf("%v: namespace %q, want %q", o, o.Namespace, want)
		}
	}
}

// checkInjector checks the Deployment and Service that every configuration shares: a
// restricted pod whose names agree with the webhook's, the Service's and the RBAC's.
func checkInjector(t *testing.T, r *release) {
	t.Helper()
	d, svc := r.Deployment, r.Service
	if d == nil || svc == nil {
		t.Fatalf("Deployment %v, Service %v: want both", d != nil, svc != nil)
	}
	pod := d.Spec.Template
	if pod.Labels[nameLabel] != injectorName {
		t.Errorf("pod label %s = %q, want %q: the injector would not recognize its own pods", nameLabel, pod.Labels[nameLabel], injectorName)
	}
	checkSelects(t, "Deployment", d.Spec.Selector, pod.Labels)
	checkSelects(t, "Service", &metav1.LabelSelector{MatchLabels: svc.Spec.Selector}, pod.Labels)
	checkRestricted(t, "the injector pod", pod.ObjectMeta, pod.Spec)

	c := injectorContainer(t, r)
	sc := c.SecurityContext
	if sc == nil || !deref(sc.ReadOnlyRootFilesystem) || deref(sc.AllowPrivilegeEscalation) || !deref(sc.RunAsNonRoot) ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("container securityContext = %+v, want read-only root, non-root, no privilege escalation, drop ALL", sc)
	}
	if psc := pod.Spec.SecurityContext; psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext = %+v, want seccompProfile RuntimeDefault", psc)
	}
	if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources = %+v, want memory requests and limits", c.Resources)
	}
	if pod.Spec.ServiceAccountName != r.RoleBinding.Subjects[0].Name {
		t.Errorf("serviceAccountName %q is not the RBAC subject %q", pod.Spec.ServiceAccountName, r.RoleBinding.Subjects[0].Name)
	}

	// The flags the injector needs, consistent with the other objects.
	if c.Args[0] != "serve" {
		t.Errorf("args = %v, want the serve command", c.Args)
	}
	for flag, want := range map[string]string{
		"--webhook-port":   "9443",
		"--health-addr":    ":8081",
		"--cert-dir":       certDir,
		"--service":        svc.Name,
		"--webhook-config": r.Webhook.Name,
	} {
		if got := argValue(t, c.Args, flag); got != want {
			t.Errorf("%s = %q, want %q", flag, got, want)
		}
	}
	equal(t, "env", c.Env, []corev1.EnvVar{{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{
		FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"},
	}}})

	// The Service sends 443 to the webhook server, and the probes reach the health server.
	if got := containerPort(c, "webhook"); got != 9443 {
		t.Errorf("webhook container port = %d, want 9443", got)
	}
	https := servicePort(t, r, "https")
	if https.Port != 443 || containerPort(c, https.TargetPort.String()) != 9443 {
		t.Errorf("Service port https = %d → %s, want 443 → 9443", https.Port, https.TargetPort.String())
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("no HTTP %s probe", p.name)
			continue
		}
		if got := containerPort(c, p.probe.HTTPGet.Port.String()); p.probe.HTTPGet.Path != p.path || got != 8081 {
			t.Errorf("%s probe = %s on port %d, want %s on 8081", p.name, p.probe.HTTPGet.Path, got, p.path)
		}
	}

	// A writable /tmp on the read-only root: the certificate lives under it.
	if m := volumeMountAt(c, "/tmp"); m == nil || volume(t, r, m.Name).EmptyDir == nil {
		t.Errorf("no emptyDir at /tmp: %+v", c.VolumeMounts)
	}
}

// checkWebhook checks the webhook configuration that every configuration shares.
func checkWebhook(t *testing.T, r *release) {
	t.Helper()
	w := onlyWebhook(t, r)
	if w.Name != "inject.pyexec.dev" {
		t.Errorf("webhook name = %q, want inject.pyexec.dev", w.Name)
	}
	equal(t, "clientConfig", w.ClientConfig, admissionregistrationv1.WebhookClientConfig{
		Service: &admissionregistrationv1.ServiceReference{
			Name: r.Service.Name, Namespace: releaseNamespace, Path: ptr("/inject"), Port: ptr[int32](443),
		},
		// No caBundle: the injector or cert-manager sets it, and Helm leaves it alone.
	})
	equal(t, "rules", w.Rules, []admissionregistrationv1.RuleWithOperations{{
		Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
		Rule: admissionregistrationv1.Rule{
			APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"},
			Scope: ptr(admissionregistrationv1.NamespacedScope),
		},
	}})
	if w.SideEffects == nil || *w.SideEffects != admissionregistrationv1.SideEffectClassNoneOnDryRun {
		t.Errorf("sideEffects = %v, want NoneOnDryRun (Events, never for a dry run)", w.SideEffects)
	}
	if w.FailurePolicy == nil || w.TimeoutSeconds == nil {
		t.Fatal("failurePolicy or timeoutSeconds unset")
	}
	equal(t, "admissionReviewVersions", w.AdmissionReviewVersions, []string{"v1"})
	if deref(w.ReinvocationPolicy) != admissionregistrationv1.IfNeededReinvocationPolicy || deref(w.MatchPolicy) != admissionregistrationv1.Equivalent {
		t.Errorf("reinvocationPolicy %v, matchPolicy %v; want IfNeeded, Equivalent", deref(w.ReinvocationPolicy), deref(w.MatchPolicy))
	}

	// Which pods: labeled ones, never the injector's.
	equal(t, "objectSelector matchLabels", w.ObjectSelector.MatchLabels, map[string]string{injectLabel: "true"})
	objects := selector(t, w.ObjectSelector)
	for _, tc := range []struct {
		labels labels.Set
		want   bool
	}{
		{labels.Set{injectLabel: "true"}, true},
		{labels.Set{injectLabel: "true", "app": "bot"}, true},
		{labels.Set{injectLabel: "false"}, false},
		{labels.Set{}, false},
		{labels.Set{injectLabel: "true", nameLabel: injectorName}, false},
		{labels.Set(r.Deployment.Spec.Template.Labels), false},
	} {
		if got := objects.Matches(tc.labels); got != tc.want {
			t.Errorf("objectSelector matches pod labels %v = %v, want %v", tc.labels, got, tc.want)
		}
	}
	// Which namespaces: not kube-system, not the injector's own.
	namespaces := selector(t, w.NamespaceSelector)
	for ns, want := range map[string]bool{"kube-system": false, releaseNamespace: false, "default": true, "bots": true} {
		if got := namespaces.Matches(labels.Set{namespaceLabel: ns}); got != want {
			t.Errorf("namespaceSelector matches namespace %s = %v, want %v", ns, got, want)
		}
	}
}

// checkRBAC checks the injector's permissions, exactly, and who gets them.
func checkRBAC(t *testing.T, r *release) {
	t.Helper()
	if r.ServiceAccount == nil || r.Role == nil || r.RoleBinding == nil || r.ClusterRole == nil || r.ClusterRoleBinding == nil {
		t.Fatal("missing RBAC objects")
	}
	equal(t, "Role rules", r.Role.Rules, wantRoleRules)
	equal(t, "ClusterRole rules", r.ClusterRole.Rules, wantClusterRoleRules)
	equal(t, "RoleBinding roleRef", r.RoleBinding.RoleRef, rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: r.Role.Name})
	equal(t, "ClusterRoleBinding roleRef", r.ClusterRoleBinding.RoleRef, rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: r.ClusterRole.Name})
	checkRBACSubject(t, "RoleBinding", r.RoleBinding.Subjects, r.ServiceAccount.Name)
	checkRBACSubject(t, "ClusterRoleBinding", r.ClusterRoleBinding.Subjects, r.ServiceAccount.Name)
}

func checkRBACSubject(t *testing.T, what string, got []rbacv1.Subject, serviceAccount string) {
	t.Helper()
	equal(t, what+" subjects", got, []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: serviceAccount, Namespace: releaseNamespace}})
}

// checkRestricted evaluates a pod against the restricted Pod Security Standard, with the
// admission plugin's own checks.
func checkRestricted(t *testing.T, what string, meta metav1.ObjectMeta, spec corev1.PodSpec) {
	t.Helper()
	evaluator, err := psapolicy.NewEvaluator(psapolicy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	level := psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: psaapi.LatestVersion()}
	if res := psapolicy.AggregateCheckResults(evaluator.EvaluatePod(level, &meta, &spec)); !res.Allowed {
		t.Errorf("%s violates the restricted Pod Security Standard: %s: %s", what, res.ForbiddenReason(), res.ForbiddenDetail())
	}
}

func checkSelects(t *testing.T, what string, sel *metav1.LabelSelector, podLabels map[string]string) {
	t.Helper()
	if !selector(t, sel).Matches(labels.Set(podLabels)) {
		t.Errorf("the %s selector %v does not select the injector pods %v", what, sel, podLabels)
	}
}

func selector(t *testing.T, sel *metav1.LabelSelector) labels.Selector {
	t.Helper()
	if sel == nil {
		t.Fatal("no selector")
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatalf("selector %v: %v", sel, err)
	}
	return s
}

func onlyWebhook(t *testing.T, r *release) admissionregistrationv1.MutatingWebhook {
	t.Helper()
	if r.Webhook == nil || len(r.Webhook.Webhooks) != 1 {
		t.Fatalf("want one MutatingWebhookConfiguration with one webhook, got %+v", r.Webhook)
	}
	return r.Webhook.Webhooks[0]
}

func injectorContainer(t *testing.T, r *release) corev1.Container {
	t.Helper()
	if r.Deployment == nil || len(r.Deployment.Spec.Template.Spec.Containers) != 1 {
		t.Fatal("want a Deployment with one container")
	}
	return r.Deployment.Spec.Template.Spec.Containers[0]
}

// argValues returns the values of every --flag=value in args, in order.
func argValues(args []string, flag string) []string {
	var values []string
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			values = append(values, v)
		}
	}
	return values
}

// argValue returns the value of --flag=value in args; the flag must be there once.
func argValue(t *testing.T, args []string, flag string) string {
	t.Helper()
	var values []string
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			values = append(values, v)
		}
	}
	if len(values) != 1 {
		t.Errorf("%s given %d times in %v, want once", flag, len(values), args)
		return ""
	}
	return values[0]
}

// containerPort resolves a port of c given by name or number (as probes and Services give
// it) to its number; 0 when c declares no such port.
func containerPort(c corev1.Container, port string) int32 {
	p := intstr.Parse(port)
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp.ContainerPort
		}
	}
	return 0
}

func servicePort(t *testing.T, r *release, name string) corev1.ServicePort {
	t.Helper()
	for _, p := range r.Service.Spec.Ports {
		if p.Name == name {
			return p
		}
	}
	t.Errorf("Service has no port %s: %+v", name, r.Service.Spec.Ports)
	return corev1.ServicePort{}
}

func volumeMountAt(c corev1.Container, path string) *corev1.VolumeMount {
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].MountPath == path {
			return &c.VolumeMounts[i]
		}
	}
	return nil
}

func volume(t *testing.T, r *release, name string) corev1.Volume {
	t.Helper()
	for _, v := range r.Deployment.Spec.Template.Spec.Volumes {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("no volume %s", name)
	return corev1.Volume{}
}

// issuerOf returns the Issuer that signs cert, which must be one of the release's.
func issuerOf(t *testing.T, r *release, cert map[string]any) map[string]any {
	t.Helper()
	kind, name := field(cert, "spec", "issuerRef", "kind"), field(cert, "spec", "issuerRef", "name")
	issuer := named(r.Issuers, name)
	if kind != "Issuer" || issuer == nil {
		t.Fatalf("Certificate %s: issuer %s %q is not an Issuer of the release", field(cert, "metadata", "name"), kind, name)
	}
	return issuer
}

// equal fails the test when got and want differ, showing both as YAML.
func equal[T any](t *testing.T, what string, got, want T) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		g, _ := yaml.Marshal(got)
		w, _ := yaml.Marshal(want)
		t.Errorf("%s:\ngot:\n%s\nwant:\n%s", what, g, w)
	}
}

func ptr[T any](v T) *T { return &v }

func deref[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}

// TestValuesDocumented: every value of values.yaml carries a helm-docs comment (# -- ...), and
// values.yaml and values.schema.json know the same values.
func TestValuesDocumented(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc yamlv3.Node
	if err := yamlv3.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	// A value is a key with a "# --" comment; a key without one must be a table of values.
	var values []string
	var walk func(prefix string, table *yamlv3.Node)
	walk = func(prefix string, table *yamlv3.Node) {
		for i := 0; i+1 < len(table.Content); i += 2 {
			key, val := table.Content[i], table.Content[i+1]
			switch path := prefix + key.Value; {
			case strings.Contains(key.HeadComment, "# -- "):
				values = append(values, path)
			case val.Kind == yamlv3.MappingNode && len(val.Content) > 0:
				walk(path+".", val)
			default:
				t.Errorf("values.yaml: %s has no # -- comment", path)
			}
		}
	}
	walk("", doc.Content[0])

	var schema map[string]any
	if err := json.Unmarshal(loadChart(t).Schema, &schema); err != nil {
		t.Fatal(err)
	}
	definitions, _ := schema["definitions"].(map[string]any)
	var properties []string
	var walkSchema func(prefix string, s map[string]any)
	walkSchema = func(prefix string, s map[string]any) {
		if ref, ok := s["$ref"].(string); ok {
			s, _ = definitions[strings.TrimPrefix(ref, "#/definitions/")].(map[string]any)
		}
		props, _ := s["properties"].(map[string]any)
		for name, p := range props {
			properties = append(properties, prefix+name)
			walkSchema(prefix+name+".", p.(map[string]any))
		}
	}
	walkSchema("", schema)

	for _, v := range values {
		if !slices.Contains(properties, v) {
			t.Errorf("values.yaml has %s, values.schema.json does not", v)
		}
	}
	for _, p := range properties {
		known := p == "global" || strings.HasPrefix(p, "global.") // a parent chart's, not in values.yaml
		for _, v := range values {
			known = known || v == p || strings.HasPrefix(v, p+".") || strings.HasPrefix(p, v+".")
		}
		if !known {
			t.Errorf("values.schema.json has %s, values.yaml does not", p)
		}
	}
}
