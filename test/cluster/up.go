package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pyexec/pyexec/internal/images"
)

// Prepare runs on the host before the cluster starts: it builds (or finds cached) the tool
// binaries and the images of the checkout at repo, and creates the network namespace. Then the
// program calls ReexecInNetNS, and Boot in there.
func (c *Cluster) Prepare(ctx context.Context, repo string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("the test cluster needs root (network namespaces, mounts, cgroups)")
	}
	start := time.Now()
	build := exec.CommandContext(ctx, "bash", filepath.Join(repo, "test/tools/build.sh"))
	var stderr bytes.Buffer
	build.Stderr = &stderr
	out, err := build.Output()
	if err != nil {
		return fmt.Errorf("test/tools/build.sh: %v\n%s", err, images.Tail(stderr.Bytes(), 30))
	}
	c.Bin = strings.TrimSpace(string(out))
	c.logf("Kubernetes binaries in %s (%s)", c.Bin, time.Since(start).Round(100*time.Millisecond))
	cache, err := os.UserCacheDir()
	if err != nil {
		return err
	}
	if err := c.resetDir(); err != nil {
		return err
	}
	if _, err := BuildImages(ctx, repo, c.path("images"), filepath.Join(cache, "pyexec-tools"), c.logf); err != nil {
		return err
	}
	return c.CreateNetNS()
}

// marker marks a directory as a cluster's, which resetDir and Destroy may empty.
const marker = ".pyexec-cluster"

// ErrInUse is returned by Prepare when another test cluster runs, or the directory is not a
// cluster's: then there is nothing of this run to tear down.
var ErrInUse = errors.New("in use")

// netnsPrefix starts the name of every test cluster's network namespace.
const netnsPrefix = "pyexec-"

// resetDir empties the cluster's directory for a new cluster (a kept one holds the last
// cluster's logs and etcd data). It refuses a directory that is not a cluster's.
func (c *Cluster) resetDir() error {
	if !strings.HasPrefix(c.NetNS, netnsPrefix) {
		return fmt.Errorf("network namespace %q: the name must start with %s", c.NetNS, netnsPrefix)
	}
	// One test cluster at a time: they share the host paths that containerd and the kubelet
	// make on their own (hostPaths), which the first to stop would remove.
	others, _ := filepath.Glob("/run/netns/" + netnsPrefix + "*")
	if len(others) > 0 {
		return fmt.Errorf("%w: a test cluster runs (network namespace %s); stop it first with "+
			"go run ./test/cluster/clusterctl --netns NAME --dir DIR down", ErrInUse, strings.Join(others, ", "))
	}
	if err := c.checkDir(); err != nil {
		return fmt.Errorf("%w: %v", ErrInUse, err)
	}
	entries, err := os.ReadDir(c.Dir)
	if err == nil && len(entries) > 0 {
		if err := c.Destroy(false); err != nil {
			return fmt.Errorf("clean up the last cluster in %s: %w", c.Dir, err)
		}
	}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(c.path(marker), nil, 0o644)
}

// Boot starts the cluster inside its network namespace: the control plane and containerd, the
// images from Prepare, then the kubelet; it returns when the node is Ready.
func (c *Cluster) Boot(ctx context.Context) error {
	start := time.Now()
	if err := c.Start(ctx); err != nil {
		return err
	}
	archives, err := filepath.Glob(c.path("images", "*.oci.tar"))
	if err != nil || len(archives) == 0 {
		return fmt.Errorf("no image archives in %s: run Prepare first", c.path("images"))
	}
	t := time.Now()
	for _, a := range archives {
		if err := c.ImportImage(a); err != nil {
			return err
		}
	}
	c.logf("imported %d images in %s", len(archives), time.Since(t).Round(100*time.Millisecond))
	if err := c.StartKubelet(ctx); err != nil {
		return err
	}
	// The controller-manager works once it has made the default ServiceAccount; pods cannot be
	// created before.
	cs, err := c.Clientset()
	if err != nil {
		return err
	}
	if err := c.waitFor(ctx, "kube-controller-manager", time.Minute, func() error {
		_, err := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err
	}); err != nil {
		return err
	}
	c.logf("cluster up in %s", time.Since(start).Round(100*time.Millisecond))
	return nil
}
