package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/cli"
	"helm.sh/helm/v3/pkg/release"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// Release is how the chart is installed on the test cluster: release pyexec in pyexec-system.
const (
	Release   = "pyexec"
	ReleaseNS = "pyexec-system"
)

// Helm returns helm's action configuration for the cluster, in namespace ns, its debug lines
// to logf.
func (c *Cluster) Helm(ns string, logf func(string, ...any)) (*action.Configuration, error) {
	settings := cli.New()
	settings.KubeConfig = c.Kubeconfig()
	settings.SetNamespace(ns)
	cfg := new(action.Configuration)
	if err := cfg.Init(settings.RESTClientGetter(), ns, "secret", logf); err != nil {
		return nil, err
	}
	return cfg, nil
}

// ChartValues point the chart at the images that Prepare imported.
func ChartValues() map[string]any {
	image := func(ref string) map[string]any {
		repo, tag, _ := strings.Cut(ref, ":")
		return map[string]any{"repository": repo, "tag": tag, "pullPolicy": "Never"}
	}
	return map[string]any{
		"image":   image(InjectorImage),
		"sidecar": map[string]any{"image": image(SidecarImage)},
	}
}

// InstallChart installs charts/pyexec of the checkout at repo with ChartValues, as helm install
// --wait does.
func InstallChart(helm *action.Configuration, repo string) (*release.Release, error) {
	chart, err := loader.Load(filepath.Join(repo, "charts/pyexec"))
	if err != nil {
		return nil, err
	}
	install := action.NewInstall(helm)
	install.ReleaseName, install.Namespace, install.CreateNamespace = Release, ReleaseNS, true
	install.Wait, install.Timeout = true, 3*time.Minute
	return install.Run(chart, ChartValues())
}

// SampleBot reads config/samples/bot.yaml of the checkout at repo and points it at the bot
// image that Prepare imported.
func SampleBot(repo string) (*appsv1.Deployment, error) {
	b, err := os.ReadFile(filepath.Join(repo, "config/samples/bot.yaml"))
	if err != nil {
		return nil, err
	}
	var d appsv1.Deployment
	if err := yaml.UnmarshalStrict(b, &d); err != nil {
		return nil, fmt.Errorf("config/samples/bot.yaml: %w", err)
	}
	bot := &d.Spec.Template.Spec.Containers[0]
	bot.Image, bot.ImagePullPolicy = BotImage, corev1.PullNever
	return &d, nil
}

// InstallPyexec installs the chart and runs the sample bot in namespace bots, for people trying
// pyexec on the cluster (clusterctl up).
func (c *Cluster) InstallPyexec(ctx context.Context, repo string) error {
	helm, err := c.Helm(ReleaseNS, func(string, ...any) {})
	if err != nil {
		return err
	}
	start := time.Now()
	if _, err := InstallChart(helm, repo); err != nil {
		return fmt.Errorf("helm install: %w", err)
	}
	c.logf("chart installed, injector ready, in %s", time.Since(start).Round(100*time.Millisecond))
	bot, err := SampleBot(repo)
	if err != nil {
		return err
	}
	cs, err := c.Clientset()
	if err != nil {
		return err
	}
	const ns = "bots"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	if err := c.waitFor(ctx, "kube-controller-manager", time.Minute, func() error {
		_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err
	}); err != nil {
		return err
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, bot, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("the sample bot: %w", err)
	}
	c.logf("sample bot created in namespace %s", ns)
	return nil
}
