package app

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	k8sversion "k8s.io/apimachinery/pkg/version"

	"github.com/pyexec/pyexec/internal/certs"
	"github.com/pyexec/pyexec/internal/cli"
	"github.com/pyexec/pyexec/internal/mutation"
)

// Defaults of check: the names that `helm install pyexec charts/pyexec -n pyexec-system` and
// config/default give the objects.
const (
	DefaultWebhookConfig     = "pyexec"
	DefaultInjectorNamespace = "pyexec-system"
)

// NativeSidecarMinor is the first Kubernetes 1.x with native sidecars on by default.
const NativeSidecarMinor = 29

// CheckConfig is the config of `kubectl pyexec check`.
type CheckConfig struct {
	// WebhookConfig is the MutatingWebhookConfiguration; when the default is not found, the
	// only one labelled app.kubernetes.io/name=pyexec-injector is used.
	WebhookConfig string
	webhookSet    bool
	// CertSecret is the Secret of the serving certificate (default: WebhookConfig-tls, the
	// chart's certs.secretName default) in the namespace of the webhook's Service.
	CertSecret string
}

// Finding is one line of check.
type Finding struct {
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

func okf(format string, args ...any) Finding {
	return Finding{OK: true, Detail: fmt.Sprintf(format, args...)}
}

func fail(fix, format string, args ...any) Finding {
	return Finding{Detail: fmt.Sprintf(format, args...), Fix: fix}
}

func newCheckCommand(io IO, connect func() (*Cluster, error)) *cobra.Command {
	cfg := &CheckConfig{}
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check the injector's install; each problem with its fix",
		Long: "check looks at what the injector needs, and prints one line per finding, ok or FAIL (with\n" +
			"its fix); it exits 1 when any failed:\n\n" +
			"  - the API server supports native sidecars (Kubernetes 1.29 or newer)\n" +
			"  - the MutatingWebhookConfiguration exists\n" +
			"  - its caBundle verifies the injector's serving certificate (from the certificate's Secret)\n" +
			"  - the injector's Service has ready endpoints\n" +
			"  - no namespace with pods labelled pyexec.dev/inject=true is excluded by the webhook's\n" +
			"    namespaceSelector (pods of every namespace are looked at)\n" +
			"  - each node's kernel (its node info) offers every layer of confinement: below Linux 6.12 a\n" +
			"    sidecar that requires them (the chart's sidecar.requireIsolation) refuses to start; where a\n" +
			"    sidecar runs, the layers it found (Landlock also needs landlock in the boot LSM list)",
		Args: cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.webhookSet = cmd.Flags().Changed("webhook-config")
			c, err := connect()
			if err != nil {
				return err
			}
			findings := Check(cmd.Context(), c, cfg)
			if WriteFindings(io.Stdout, findings) {
				return &exitError{code: 1}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.WebhookConfig, "webhook-config", DefaultWebhookConfig, "the injector's MutatingWebhookConfiguration")
	f.StringVar(&cfg.CertSecret, "cert-secret", "", "the Secret of the serving certificate (default: WEBHOOK-CONFIG-tls, in the webhook Service's namespace)")
	return cmd
}

// WriteFindings prints the findings and reports whether one failed.
func WriteFindings(w io.Writer, findings []Finding) (failed bool) {
	for _, f := range findings {
		if f.OK {
			fmt.Fprintf(w, "ok    %s\n", f.Detail)
			continue
		}
		failed = true
		fmt.Fprintf(w, "FAIL  %s\n", f.Detail)
		if f.Fix != "" {
			fmt.Fprintf(w, "      fix: %s\n", f.Fix)
		}
	}
	return failed
}

// Check runs every check of the install.
func Check(ctx context.Context, c *Cluster, cfg *CheckConfig) []Finding {
	var out []Finding
	out = append(out, checkVersion(c))
	wc, f := findWebhookConfig(ctx, c, cfg)
	out = append(out, f)
	if wc == nil {
		return out
	}
	for _, wh := range wc.Webhooks {
		out = append(out, checkCABundle(ctx, c, cfg, wc.Name, &wh)...)
		out = append(out, checkEndpoints(ctx, c, &wh))
	}
	out = append(out, checkNamespaces(ctx, c, wc))
	return append(out, checkNodes(ctx, c)...)
}

// isolationFix is the fix of a node where a sidecar that requires every layer of confinement
// refuses to start.
const isolationFix = "run pyexec pods on nodes with Linux 6.12 or later and landlock in the boot LSM list (a nodeSelector or node " +
	"affinity on the workload), or accept what is missing: the chart's sidecar.requireIsolation: false, or the pod annotation " +
	"pyexec.dev/require-isolation: \"false\""

// checkNodes reads each node's kernel from its node info and, where a sidecar runs on it, the
// layers of confinement that sidecar found (its metrics): it names the nodes where a sidecar that
// requires every layer (sidecar.requireIsolation, the chart's default) refuses to start — below
// Linux 5.13 no Landlock, below 6.12 no scoped signals. Whether Landlock is in a node's boot LSM
// list the API does not say: where no sidecar has run, that is unknown.
func checkNodes(ctx context.Context, c *Cluster) []Finding {
	nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return []Finding{fail("grant list on nodes (a ClusterRole) to read their kernels", "cannot list the nodes: %v", err)}
	}
	pods, _ := c.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: mutation.LabelInject + "=" + mutation.LabelInjectEnabled})
	onNode := map[string]*corev1.Pod{}
	for i := range pods.Items {
		p := &pods.Items[i]
		if st := containerStatus(p, mutation.SidecarName); st != nil && st.State.Running != nil && p.Spec.NodeName != "" && onNode[p.Spec.NodeName] == nil {
			onNode[p.Spec.NodeName] = p
		}
	}
	var out []Finding
	for _, n := range nodes.Items {
		kv := n.Status.NodeInfo.KernelVersion
		major, minor, ok := kernelVersion(kv)
		saw, missing := "no pyexec sidecar runs there, so whether landlock is in its boot LSM list is unknown", []string(nil)
		if p := onNode[n.Name]; p != nil {
			sidecar, _ := sidecarContainer(p, mutation.SidecarName)
			mctx, cancel := context.WithTimeout(ctx, metricsTimeout)
			text, err := c.Metrics.Metrics(mctx, p.Namespace, p.Name, probePort(sidecar))
			cancel()
			var m *SidecarMetrics
			if err == nil {
				m, err = ParseMetrics(text)
			}
			if err == nil {
				var active int
				active, missing = m.ActiveLayers()
				saw = fmt.Sprintf("the sidecar of %s/%s found %d/%d layers", p.Namespace, p.Name, active, active+len(missing))
			} else {
				saw = fmt.Sprintf("the metrics of %s/%s: %s", p.Namespace, p.Name, firstLine(err.Error()))
			}
		}
		switch {
		case !ok:
			out = append(out, okf("node %s: kernel %q not understood; %s", n.Name, kv, saw))
		case major < 5 || major == 5 && minor < 13:
			out = append(out, fail(isolationFix, "node %s: Linux %s has no Landlock: a sidecar that requires every layer refuses to start there (%s)", n.Name, kv, saw))
		case major < 6 || major == 6 && minor < 12:
			out = append(out, fail(isolationFix, "node %s: Linux %s has Landlock without scoped signals (6.12): a sidecar that requires every layer refuses to start there (%s)", n.Name, kv, saw))
		case len(missing) > 0:
			out = append(out, fail(isolationFix+"; on a 6.12 kernel a missing Landlock layer means landlock is not in the boot LSM list (cat /sys/kernel/security/lsm)",
				"node %s: Linux %s, but %s, missing %s", n.Name, kv, saw, strings.Join(missing, ",")))
		default:
			out = append(out, okf("node %s: Linux %s offers every layer pyexec uses; %s", n.Name, kv, saw))
		}
	}
	return out
}

// kernelVersion is the major and minor version of a kernel version string ("6.1.0-18-amd64").
func kernelVersion(s string) (major, minor int, ok bool) {
	parts := strings.SplitN(s, ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	digits := func(s string) string {
		if i := strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
			return s[:i]
		}
		return s
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(digits(parts[1]))
	return major, minor, err1 == nil && err2 == nil
}

// checkVersion asks the API server its version.
func checkVersion(c *Cluster) Finding {
	info, err := c.Client.Discovery().ServerVersion()
	if err != nil {
		return fail("check the kubeconfig and that the API server answers (kubectl version)", "cannot read the server version: %v", err)
	}
	ok, err := NativeSidecars(info)
	switch {
	case err != nil:
		return fail("", "server version %q: %v", info.GitVersion, err)
	case !ok:
		return fail("upgrade the cluster to 1.29 or newer; until then the sidecar is a regular container, and app containers may start before its socket answers",
			"server version %s does not support native sidecars (1.%d or newer)", info.GitVersion, NativeSidecarMinor)
	}
	return okf("server version %s supports native sidecars (1.%d or newer)", info.GitVersion, NativeSidecarMinor)
}

// NativeSidecars reports whether the server's version has native sidecars (1.29 or newer):
// from Major and Minor ("29+" on some providers), else from GitVersion ("v1.29.3-eks-...").
func NativeSidecars(info *k8sversion.Info) (bool, error) {
	major, errMajor := strconv.Atoi(strings.TrimRight(info.Major, "+"))
	minor, errMinor := strconv.Atoi(strings.TrimRight(info.Minor, "+"))
	if errMajor != nil || errMinor != nil {
		v := strings.TrimPrefix(info.GitVersion, "v")
		parts := strings.SplitN(v, ".", 3)
		if len(parts) < 2 {
			return false, errors.New("not a version")
		}
		var err1, err2 error
		major, err1 = strconv.Atoi(parts[0])
		minor, err2 = strconv.Atoi(strings.TrimRightFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
		if err1 != nil || err2 != nil {
			return false, errors.New("not a version")
		}
	}
	return major > 1 || (major == 1 && minor >= NativeSidecarMinor), nil
}

// findWebhookConfig reads the MutatingWebhookConfiguration.
func findWebhookConfig(ctx context.Context, c *Cluster, cfg *CheckConfig) (*admissionregistrationv1.MutatingWebhookConfiguration, Finding) {
	api := c.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	wc, err := api.Get(ctx, cfg.WebhookConfig, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && !cfg.webhookSet {
		// Installed under another release name: the only configuration of the injector.
		list, lerr := api.List(ctx, metav1.ListOptions{LabelSelector: mutation.LabelAppName + "=" + mutation.InjectorAppName})
		if lerr == nil && len(list.Items) == 1 {
			wc, err = &list.Items[0], nil
		}
	}
	install := "install the injector: helm install pyexec charts/pyexec -n pyexec-system --create-namespace (or kubectl apply -k config/default); installed under another name: --webhook-config NAME"
	switch {
	case apierrors.IsNotFound(err):
		return nil, fail(install, "MutatingWebhookConfiguration %s not found: no pod is injected", cfg.WebhookConfig)
	case err != nil:
		return nil, fail("", "cannot read MutatingWebhookConfiguration %s: %v", cfg.WebhookConfig, err)
	case len(wc.Webhooks) == 0:
		return nil, fail(install, "MutatingWebhookConfiguration %s has no webhooks", wc.Name)
	}
	var names []string
	for _, wh := range wc.Webhooks {
		policy := "Fail"
		if wh.FailurePolicy != nil {
			policy = string(*wh.FailurePolicy)
		}
		names = append(names, fmt.Sprintf("%s (failurePolicy %s)", wh.Name, policy))
	}
	return wc, okf("MutatingWebhookConfiguration %s exists: %s", wc.Name, strings.Join(names, ", "))
}

// webhookTarget is where the API server calls a webhook: its Service (namespace and name) and
// the host name its certificate must hold.
func webhookTarget(wh *admissionregistrationv1.MutatingWebhook) (namespace, service, host string, err error) {
	if s := wh.ClientConfig.Service; s != nil {
		return s.Namespace, s.Name, s.Name + "." + s.Namespace + ".svc", nil
	}
	if wh.ClientConfig.URL != nil {
		u, err := url.Parse(*wh.ClientConfig.URL)
		if err != nil {
			return "", "", "", fmt.Errorf("clientConfig.url %q: %v", *wh.ClientConfig.URL, err)
		}
		return "", "", u.Hostname(), nil
	}
	return "", "", "", errors.New("clientConfig has neither a service nor a url")
}

// checkCABundle verifies the serving certificate from the certificate's Secret against the
// webhook's caBundle, as the API server does when it calls the webhook.
func checkCABundle(ctx context.Context, c *Cluster, cfg *CheckConfig, wcName string, wh *admissionregistrationv1.MutatingWebhook) []Finding {
	ns, _, host, err := webhookTarget(wh)
	if err != nil {
		return []Finding{fail("", "webhook %s: %v", wh.Name, err)}
	}
	if ns == "" {
		ns = DefaultInjectorNamespace
	}
	secretName := cfg.CertSecret
	if secretName == "" {
		secretName = wcName + "-tls"
	}
	restart := fmt.Sprintf("in self mode the injector patches the caBundle when it starts: kubectl -n %s rollout restart deploy/%s, then kubectl -n %s logs deploy/%s; with cert-manager, check that its CA injector runs and the annotation cert-manager.io/inject-ca-from", ns, wcName, ns, wcName)
	if len(wh.ClientConfig.CABundle) == 0 {
		return []Finding{fail(restart, "webhook %s has an empty caBundle: the API server cannot call the injector", wh.Name)}
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(wh.ClientConfig.CABundle) {
		return []Finding{fail(restart, "the caBundle of webhook %s holds no PEM certificate", wh.Name)}
	}
	secret, err := c.Client.CoreV1().Secrets(ns).Get(ctx, secretName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return []Finding{fail(fmt.Sprintf("the injector creates it at start in self mode (kubectl -n %s logs deploy/%s); with cert-manager, kubectl -n %s describe certificate; another name: --cert-secret NAME", ns, wcName, ns),
			"Secret %s/%s of the serving certificate not found", ns, secretName)}
	}
	if err != nil {
		return []Finding{fail("", "cannot read Secret %s/%s: %v", ns, secretName, err)}
	}
	leaf, intermediates, err := parseChain(secret.Data[certs.KeyCert])
	if err != nil {
		return []Finding{fail(restart, "Secret %s/%s: %s: %v", ns, secretName, certs.KeyCert, err)}
	}
	_, err = leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, Intermediates: intermediates,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		return []Finding{fail(restart, "the caBundle of webhook %s does not verify the serving certificate in Secret %s/%s: %v: the API server refuses the injector's TLS, and labelled pods are refused (failurePolicy Fail) or created without pyexec (Ignore)",
			wh.Name, ns, secretName, err)}
	}
	return []Finding{okf("the caBundle of webhook %s verifies the serving certificate in Secret %s/%s for %s (valid until %s)",
		wh.Name, ns, secretName, host, leaf.NotAfter.UTC().Format("2006-01-02"))}
}

// parseChain reads the first certificate of a PEM file and the ones after it.
func parseChain(data []byte) (*x509.Certificate, *x509.CertPool, error) {
	var leaf *x509.Certificate
	pool := x509.NewCertPool()
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, nil, err
		}
		if leaf == nil {
			leaf = cert
		} else {
			pool.AddCert(cert)
		}
	}
	if leaf == nil {
		return nil, nil, errors.New("no PEM certificate")
	}
	return leaf, pool, nil
}

// checkEndpoints counts the ready endpoints of the webhook's Service.
func checkEndpoints(ctx context.Context, c *Cluster, wh *admissionregistrationv1.MutatingWebhook) Finding {
	ns, name, _, err := webhookTarget(wh)
	if err != nil {
		return fail("", "webhook %s: %v", wh.Name, err)
	}
	if name == "" {
		return okf("webhook %s is called by URL (%s): no Service to check", wh.Name, *wh.ClientConfig.URL)
	}
	pods := fmt.Sprintf("kubectl -n %s get pods -l %s=%s; kubectl -n %s describe deploy/%s", ns, mutation.LabelAppName, mutation.InjectorAppName, ns, name)
	if _, err := c.Client.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{}); err != nil {
		return fail("reinstall the chart, which creates it", "Service %s/%s of webhook %s: %v", ns, name, wh.Name, err)
	}
	eps, err := c.Client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + name})
	if err != nil {
		return fail("", "cannot list the EndpointSlices of Service %s/%s: %v", ns, name, err)
	}
	ready, notReady := 0, 0
	for _, s := range eps.Items {
		for _, e := range s.Endpoints {
			if e.Conditions.Ready == nil || *e.Conditions.Ready {
				ready += len(e.Addresses)
			} else {
				notReady += len(e.Addresses)
			}
		}
	}
	if ready == 0 {
		return fail(pods, "Service %s/%s has no ready endpoints (%d not ready): the injector does not run or is not ready, and labelled pods are refused (failurePolicy Fail) or created without pyexec (Ignore)", ns, name, notReady)
	}
	return okf("Service %s/%s has %d ready endpoints", ns, name, ready)
}

// checkNamespaces finds the namespaces of opted-in pods that a webhook's namespaceSelector
// leaves out.
func checkNamespaces(ctx context.Context, c *Cluster, wc *admissionregistrationv1.MutatingWebhookConfiguration) Finding {
	list, err := c.Client.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{LabelSelector: mutation.LabelInject + "=" + mutation.LabelInjectEnabled})
	if err != nil {
		return fail("run check as a user who may list pods in every namespace", "cannot list the opted-in pods: %v", err)
	}
	count := map[string]int{}
	for _, p := range list.Items {
		count[p.Namespace]++
	}
	if len(count) == 0 {
		return okf("no pod is labelled %s=%s yet", mutation.LabelInject, mutation.LabelInjectEnabled)
	}
	names := make([]string, 0, len(count))
	for ns := range count {
		names = append(names, ns)
	}
	slices.Sort(names)
	var excluded, included []string
	for _, ns := range names {
		obj, err := c.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err != nil {
			return fail("", "cannot read namespace %s: %v", ns, err)
		}
		desc := fmt.Sprintf("%s (%d pods)", ns, count[ns])
		for _, wh := range wc.Webhooks {
			if wh.NamespaceSelector == nil {
				continue
			}
			sel, err := metav1.LabelSelectorAsSelector(wh.NamespaceSelector)
			if err != nil {
				return fail("fix the webhook's namespaceSelector", "webhook %s: namespaceSelector: %v", wh.Name, err)
			}
			if !sel.Matches(labels.Set(obj.Labels)) {
				excluded = append(excluded, desc)
				desc = ""
				break
			}
		}
		if desc != "" {
			included = append(included, desc)
		}
	}
	if len(excluded) > 0 {
		return fail("run these pods in another namespace: kube-system and the injector's own namespace are never injected; other exclusions come from the chart's webhook.namespaceSelector.extraMatchExpressions",
			"the webhook's namespaceSelector excludes namespaces with pods labelled %s=%s, which are never injected: %s",
			mutation.LabelInject, mutation.LabelInjectEnabled, strings.Join(excluded, ", "))
	}
	return okf("the webhook's namespaceSelector admits every namespace with opted-in pods: %s", strings.Join(included, ", "))
}
