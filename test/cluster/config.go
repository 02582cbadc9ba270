package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The cluster's addresses. They exist only inside its private network namespace.
const (
	nodeIP        = "10.99.0.1" // the node's address, on a veth inside the namespace
	nodePeerIP    = "10.99.0.2" // the other end of the veth
	podCIDR       = "10.88.0.0/16"
	serviceCIDR   = "10.96.0.0/16"
	kubernetesIP  = "10.96.0.1" // ClusterIP of the default/kubernetes Service
	apiserverPort = 6443
	nodeName      = "localhost" // --hostname-override: the API server reaches the kubelet by it
	containerdNS  = "k8s.io"    // the containerd namespace of the CRI plugin
	PauseImage    = "localhost/pyexec-pause:e2e"
)

// path returns a path under the cluster's directory.
func (c *Cluster) path(elem ...string) string {
	return filepath.Join(append([]string{c.Dir}, elem...)...)
}

// writeConfigs writes every configuration file of the cluster: certificates, kubeconfigs, the
// containerd, CNI and kubelet configurations.
func (c *Cluster) writeConfigs() error {
	for _, d := range []string{"pki", "etcd", "logs", "run", "cni/net.d", "cni/ipam", "containerd", "kubelet", "pods", "volume-plugins"} {
		if err := os.MkdirAll(c.path(d), 0o755); err != nil {
			return err
		}
	}
	pki := c.path("pki")
	ca, err := newCA()
	if err != nil {
		return err
	}
	if err := ca.write(pki); err != nil {
		return err
	}
	if err := ca.issue(pki, "apiserver", "kube-apiserver", nil,
		"localhost", "127.0.0.1", nodeIP, kubernetesIP,
		"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"); err != nil {
		return err
	}
	// The components and the admin act as cluster admins; the kubelet as the node, so the Node
	// authorizer and NodeRestriction apply to it as in a real cluster.
	clients := []struct{ name, cn, group string }{
		{"admin", "pyexec-admin", "system:masters"},
		{"controller-manager", "system:kube-controller-manager", "system:masters"},
		{"scheduler", "system:kube-scheduler", "system:masters"},
		{"kubelet", "system:node:" + nodeName, "system:nodes"},
	}
	for _, cl := range clients {
		if err := ca.issue(pki, cl.name, cl.cn, []string{cl.group}); err != nil {
			return err
		}
		if err := c.writeKubeconfig(cl.name); err != nil {
			return err
		}
	}
	if err := writeServiceAccountKey(pki); err != nil {
		return err
	}
	files := map[string]string{
		"containerd/config.toml":       c.containerdConfig(),
		"cni/net.d/10-pyexec.conflist": c.cniConfig(),
		"kubelet/config.yaml":          c.kubeletConfig(),
	}
	for name, content := range files {
		if err := os.WriteFile(c.path(name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Kubeconfig is the admin's kubeconfig. It works inside the cluster's network namespace.
func (c *Cluster) Kubeconfig() string { return c.path("admin.kubeconfig") }

// EmptyDir is the directory on the host of a pod's emptyDir volume, under the kubelet's root:
// what the pod's containers mount, seen from outside them.
func (c *Cluster) EmptyDir(podUID, volume string) string {
	return c.path("kubelet", "pods", podUID, "volumes", "kubernetes.io~empty-dir", volume)
}

func (c *Cluster) writeKubeconfig(user string) error {
	pki := c.path("pki")
	content := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: pyexec-test
  cluster:
    server: https://127.0.0.1:%d
    certificate-authority: %s/ca.crt
users:
- name: %[3]s
  user:
    client-certificate: %[2]s/%[3]s.crt
    client-key: %[2]s/%[3]s.key
contexts:
- name: pyexec-test
  context:
    cluster: pyexec-test
    user: %[3]s
current-context: pyexec-test
`, apiserverPort, pki, user)
	return os.WriteFile(c.path(user+".kubeconfig"), []byte(content), 0o600)
}

// containerdConfig keeps every path of containerd under the cluster's directory (1.6 still puts
// shim sockets in /run/containerd/s). restrict_oom_score_adj: this VM may not lower
// oom_score_adj (no CAP_SYS_RESOURCE), which runc would otherwise try for the sandbox.
func (c *Cluster) containerdConfig() string {
	d := c.path("containerd")
	return fmt.Sprintf(`version = 2
root = "%[1]s/root"
state = "%[1]s/state"

[grpc]
  address = "%[1]s/containerd.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "%[1]s/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "%[2]s"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    snapshotter = "overlayfs"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "%[1]s/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "%[3]s"
`, d, PauseImage, c.path("cni/net.d"))
}

// cniConfig is a bridge network with host-local addresses, its data under the directory.
func (c *Cluster) cniConfig() string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "pyexec",
  "plugins": [{
    "type": "bridge",
    "bridge": "cni0",
    "isGateway": true,
    "ipMasq": false,
    "hairpinMode": true,
    "ipam": {
      "type": "host-local",
      "ranges": [[{"subnet": %q}]],
      "routes": [{"dst": "0.0.0.0/0"}],
      "dataDir": %q
    }
  }]
}
`, podCIDR, c.path("cni/ipam"))
}

// kubeletConfig carries the fixes this VM needs (REAL-NODE.md): cgroup v1 with the cgroupfs
// driver, swap allowed, no negative oom_score_adj; and the cluster's own cgroup root, so
// teardown removes exactly what the kubelet made.
func (c *Cluster) kubeletConfig() string {
	pki := c.path("pki")
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %s/ca.crt
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix://%s
cgroupDriver: cgroupfs
cgroupRoot: /%s
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
podLogsDir: %s
volumePluginDir: %s
serializeImagePulls: false
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
syncFrequency: 10s
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%%
  nodefs.inodesFree: 1%%
  imagefs.available: 1%%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
`, pki, c.path("containerd/containerd.sock"), c.cgroupName(), c.path("pods"), c.path("volume-plugins"))
}

// cgroupName is the cgroup (in every v1 hierarchy) under which the kubelet puts its pods.
func (c *Cluster) cgroupName() string {
	return "pyexec-" + strings.TrimPrefix(c.NetNS, "pyexec-")
}
