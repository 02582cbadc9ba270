// Package cluster runs a real one-node Kubernetes cluster on this machine for pyexec's
// end-to-end suite and for people trying pyexec: etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler and a kubelet driving containerd and runc, with a bridge CNI network.
//
// Everything runs inside a private network namespace (the kubelet adds iptables rules, the
// bridge plugin a bridge), and every path is under one directory, so Destroy leaves nothing
// behind. Processes that talk to the cluster (kubectl, the tests) must run in that namespace
// too: see ReexecInNetNS. Binaries come from test/tools/build.sh; images are OCI archives
// imported into containerd (ImportImage), since no registry is reachable.
package cluster

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Cluster is a one-node cluster in Dir, its network in the namespace NetNS.
type Cluster struct {
	Dir   string    // every file of the cluster lives under it
	NetNS string    // name of the network namespace, /run/netns/NAME
	Bin   string    // directory of kube-apiserver, kubelet, ... and etcd (test/tools/build.sh)
	Log   io.Writer // progress lines; nil discards them

	mu      sync.Mutex
	daemons map[string]*daemon // the components this process started, by name
}

// daemon is a component that this process started and reaps.
type daemon struct {
	pid  int
	done chan struct{} // closed when it has exited
	how  string        // how it exited ("exit status 1", "signal: terminated"), once done
}

// components in start order; Destroy stops them in reverse.
var components = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "containerd", "kubelet"}

func (c *Cluster) logf(format string, args ...any) {
	if c.Log != nil {
		fmt.Fprintf(c.Log, "cluster: "+format+"\n", args...)
	}
}

// CreateNetNS creates the cluster's network namespace with loopback up and a veth pair that
// carries the node's address. It runs in the host's namespace, before ReexecInNetNS.
func (c *Cluster) CreateNetNS() error {
	if _, err := os.Stat(c.netnsPath()); err == nil {
		return fmt.Errorf("network namespace %s exists: another cluster is running (stop it with `make cluster-down`)", c.NetNS)
	}
	steps := [][]string{
		{"netns", "add", c.NetNS},
		{"-n", c.NetNS, "link", "set", "lo", "up"},
		{"-n", c.NetNS, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"},
		{"-n", c.NetNS, "addr", "add", nodeIP + "/24", "dev", "eth0"},
		{"-n", c.NetNS, "addr", "add", nodePeerIP + "/24", "dev", "eth1"},
		{"-n", c.NetNS, "link", "set", "eth0", "up"},
		{"-n", c.NetNS, "link", "set", "eth1", "up"},
		{"-n", c.NetNS, "route", "add", "default", "dev", "eth0"},
	}
	for _, s := range steps {
		if out, err := exec.Command("ip", s...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(s, " "), err, bytes.TrimSpace(out))
		}
	}
	return nil
}

func (c *Cluster) netnsPath() string { return "/run/netns/" + c.NetNS }

// InNetNS reports whether this process runs in the cluster's network namespace.
func (c *Cluster) InNetNS() bool {
	var self, ns syscall.Stat_t
	if syscall.Stat("/proc/self/ns/net", &self) != nil || syscall.Stat(c.netnsPath(), &ns) != nil {
		return false
	}
	return self.Ino == ns.Ino && self.Dev == ns.Dev
}

// ReexecInNetNS runs this program again, with the same arguments and env plus extraEnv, inside
// the cluster's network namespace (nsenter --net: `ip netns exec` would remount /sys and hide
// the cgroup v1 mounts from the kubelet). It returns the child's exit code.
func (c *Cluster) ReexecInNetNS(extraEnv ...string) (int, error) {
	self, err := os.Executable()
	if err != nil {
		return 1, err
	}
	cmd := exec.Command("nsenter", append([]string{"--net=" + c.netnsPath(), "--", self}, os.Args[1:]...)...)
	cmd.Env = append(os.Environ(), extraEnv...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// This process stays to tear the cluster down: signals go to the child, which ends (a
	// test binary dumps its goroutines on SIGQUIT, as go test's timeout asks).
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return 1, err
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case sig := <-sigs:
				cmd.Process.Signal(sig)
			case <-done:
				return
			}
		}
	}()
	err = cmd.Wait()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), nil
	}
	if err != nil {
		return 1, err
	}
	return 0, nil
}

// Start writes the configuration and starts every component, then waits until the node is
// Ready. It must run inside the network namespace. The components are daemons: they outlive
// this process until Destroy.
func (c *Cluster) Start(ctx context.Context) error {
	if !c.InNetNS() {
		return fmt.Errorf("cluster.Start runs inside the network namespace %s (see ReexecInNetNS)", c.NetNS)
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet"} {
		if _, err := os.Stat(filepath.Join(c.Bin, b)); err != nil {
			return fmt.Errorf("binary %s: %w (build them with test/tools/build.sh)", b, err)
		}
	}
	for _, b := range []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr", "/usr/lib/cni/bridge", "iptables"} {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("%s: %w (install Debian's containerd, runc, containernetworking-plugins and iptables)", b, err)
		}
	}
	if len(cgroupHierarchies()) == 0 {
		return fmt.Errorf("no cgroup v1 hierarchy under %s: this harness is made for cgroup v1 hosts such as this VM (cgroup v2 would need its cgroup root made in the unified tree)", cgroupMounts)
	}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return err
	}
	if err := c.writeConfigs(); err != nil {
		return fmt.Errorf("write configuration: %w", err)
	}
	if err := c.makeCgroups(); err != nil {
		return err
	}
	// No kube-proxy: the one Service that pods need, the API server's, is routed by a DNAT rule.
	// (The API server reaches the injector's webhook through its endpoints, with
	// --enable-aggregator-routing.)
	if out, err := exec.Command("iptables", "-t", "nat", "-A", "PREROUTING", "-d", kubernetesIP, "-p", "tcp", "--dport", "443",
		"-j", "DNAT", "--to-destination", fmt.Sprintf("%s:%d", nodeIP, apiserverPort)).CombinedOutput(); err != nil {
		return fmt.Errorf("iptables DNAT for the kubernetes Service: %v: %s", err, out)
	}

	start := time.Now()
	pki := c.path("pki")
	if err := c.startDaemon("etcd", filepath.Join(c.Bin, "etcd"),
		"--data-dir", c.path("etcd"),
		"--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "default=http://127.0.0.1:2380", "--log-level", "warn"); err != nil {
		return err
	}
	if err := c.startDaemon("kube-apiserver", filepath.Join(c.Bin, "kube-apiserver"),
		"--etcd-servers", "http://127.0.0.1:2379",
		"--advertise-address", nodeIP, "--bind-address", "0.0.0.0", "--secure-port", strconv.Itoa(apiserverPort),
		"--cert-dir", c.path("apiserver"),
		"--tls-cert-file", pki+"/apiserver.crt", "--tls-private-key-file", pki+"/apiserver.key",
		"--client-ca-file", pki+"/ca.crt",
		"--kubelet-client-certificate", pki+"/admin.crt", "--kubelet-client-key", pki+"/admin.key",
		"--kubelet-preferred-address-types", "InternalIP,Hostname",
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", pki+"/sa.pub", "--service-account-signing-key-file", pki+"/sa.key",
		"--service-cluster-ip-range", serviceCIDR,
		"--authorization-mode", "Node,RBAC",
		"--enable-aggregator-routing=true",
		"--allow-privileged=true",
		"--profiling=false"); err != nil {
		return err
	}
	if err := c.waitAPIServer(ctx); err != nil {
		return err
	}
	c.logf("kube-apiserver ready after %s", time.Since(start).Round(100*time.Millisecond))
	if err := c.startDaemon("kube-controller-manager", filepath.Join(c.Bin, "kube-controller-manager"),
		"--kubeconfig", c.path("controller-manager.kubeconfig"),
		"--authentication-kubeconfig", c.path("controller-manager.kubeconfig"),
		"--authorization-kubeconfig", c.path("controller-manager.kubeconfig"),
		"--bind-address", "127.0.0.1", "--leader-elect=false",
		"--service-account-private-key-file", pki+"/sa.key", "--root-ca-file", pki+"/ca.crt",
		"--service-cluster-ip-range", serviceCIDR,
		"--cluster-signing-cert-file", pki+"/ca.crt", "--cluster-signing-key-file", pki+"/ca.key",
		"--use-service-account-credentials=false"); err != nil {
		return err
	}
	if err := c.startDaemon("kube-scheduler", filepath.Join(c.Bin, "kube-scheduler"),
		"--kubeconfig", c.path("scheduler.kubeconfig"),
		"--authentication-kubeconfig", c.path("scheduler.kubeconfig"),
		"--authorization-kubeconfig", c.path("scheduler.kubeconfig"),
		"--bind-address", "127.0.0.1", "--leader-elect=false"); err != nil {
		return err
	}
	if err := c.startDaemon("containerd", "containerd", "--config", c.path("containerd/config.toml")); err != nil {
		return err
	}
	if err := c.waitFor(ctx, "containerd", 30*time.Second, func() error {
		return c.ctr("version").Run()
	}); err != nil {
		return err
	}
	return nil
}

// StartKubelet starts the kubelet and waits until the node is Ready. Call it after importing
// the images (at least PauseImage), so that no pod is tried before its image is there.
func (c *Cluster) StartKubelet(ctx context.Context) error {
	start := time.Now()
	if err := c.startDaemon("kubelet", filepath.Join(c.Bin, "kubelet"),
		"--config", c.path("kubelet/config.yaml"),
		"--kubeconfig", c.path("kubelet.kubeconfig"),
		"--root-dir", c.path("kubelet"), "--cert-dir", c.path("kubelet/pki"),
		"--hostname-override", nodeName, "--node-ip", nodeIP); err != nil {
		return err
	}
	cs, err := c.Clientset()
	if err != nil {
		return err
	}
	err = c.waitFor(ctx, "kubelet", 2*time.Minute, func() error {
		node, err := cs.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, cond := range node.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("node %s is not Ready", nodeName)
	})
	if err != nil {
		return err
	}
	c.logf("node Ready after %s", time.Since(start).Round(100*time.Millisecond))
	return nil
}

// Clientset is an admin client of the cluster.
func (c *Cluster) Clientset() (*kubernetes.Clientset, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

// ctr runs containerd's CLI against the cluster's containerd, in the CRI plugin's namespace.
func (c *Cluster) ctr(args ...string) *exec.Cmd {
	return exec.Command("ctr", append([]string{"--address", c.path("containerd/containerd.sock"), "--namespace", containerdNS}, args...)...)
}

// ImportImage imports an OCI archive (see WriteImage) into the cluster's containerd.
func (c *Cluster) ImportImage(archive string) error {
	out, err := c.ctr("images", "import", "--no-unpack=false", archive).CombinedOutput()
	if err != nil {
		err = fmt.Errorf("ctr images import %s: %v: %s", archive, err, bytes.TrimSpace(out))
		if dead := c.deadComponents(); dead != nil {
			err = fmt.Errorf("%w\n%w", err, dead)
		}
		return err
	}
	return nil
}

// startDaemon starts a component in its own session, its output in logs/NAME.log and its pid in
// run/NAME.pid.
func (c *Cluster) startDaemon(name, bin string, args ...string) error {
	logf, err := os.OpenFile(c.path("logs", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = c.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	p, err := procOf(cmd.Process.Pid) // not reaped before the goroutine below: it is there
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return fmt.Errorf("start %s: %w", name, err)
	}
	d := &daemon{pid: p.pid, done: make(chan struct{})}
	c.mu.Lock()
	if c.daemons == nil {
		c.daemons = map[string]*daemon{}
	}
	c.daemons[name] = d
	c.mu.Unlock()
	// Reap it if it dies while this process lives, so that a crash shows as a dead process and
	// not as a zombie that still answers kill(pid, 0); keep how it ended for the error.
	go func() {
		d.how = "exit status 0"
		if err := cmd.Wait(); err != nil {
			d.how = err.Error()
		}
		close(d.done)
	}()
	return c.writePidFile(name, p)
}

// exited reports whether a started component is gone, and how it ended when this process
// started it: then it is gone once reaped. Other components are looked up by their pid file.
func (c *Cluster) exited(name string) (bool, string) {
	c.mu.Lock()
	d := c.daemons[name]
	c.mu.Unlock()
	if d != nil {
		select {
		case <-d.done:
			return true, fmt.Sprintf("pid %d, %s", d.pid, d.how)
		default:
			return false, ""
		}
	}
	if _, err := os.Stat(c.path("run", name+".pid")); err != nil {
		return false, "" // not started
	}
	_, running := c.proc(name)
	return !running, "not started by this process: exit status unknown"
}

// deadComponents reports every component that was started and is no longer running, in start
// order, each with how it ended and the last lines of its log; nil when none died. A component
// that dies often takes the next ones with it (the kubelet exits when containerd is gone): the
// first named is the first to look at.
func (c *Cluster) deadComponents() error {
	var dead []string
	for _, name := range components {
		if gone, how := c.exited(name); gone {
			dead = append(dead, fmt.Sprintf("%s exited (%s); last lines of %s:\n%s",
				name, how, c.path("logs", name+".log"), indent(c.LogTail(name, 20))))
		}
	}
	if len(dead) == 0 {
		return nil
	}
	return errors.New(strings.Join(dead, "\n"))
}

func indent(s string) string { return "    " + strings.ReplaceAll(s, "\n", "\n    ") }

// waitFor polls check until it succeeds, the timeout passes or a component dies: then the error
// names every dead component and shows its log, not only the one waited for.
func (c *Cluster) waitFor(ctx context.Context, name string, timeout time.Duration, check func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		if last = check(); last == nil {
			return nil
		}
		if dead := c.deadComponents(); dead != nil {
			return fmt.Errorf("waiting for %s: %v\n%w", name, last, dead)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s: %v\n%s", name, timeout, last, c.LogTail(name, 30))
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (c *Cluster) waitAPIServer(ctx context.Context) error {
	pki := c.path("pki")
	cert, err := tls.LoadX509KeyPair(pki+"/admin.crt", pki+"/admin.key")
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(pki + "/ca.crt")
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool},
	}}
	url := fmt.Sprintf("https://127.0.0.1:%d/readyz", apiserverPort)
	return c.waitFor(ctx, "kube-apiserver", 2*time.Minute, func() error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz: %s: %s", resp.Status, body)
		}
		return nil
	})
}

// LogTail returns the last n lines of a component's log.
func (c *Cluster) LogTail(name string, n int) string {
	f, err := os.Open(c.path("logs", name+".log"))
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// proc names one process: its pid and its start time (clock ticks after boot, field 22 of
// /proc/PID/stat). The pair cannot name another process after the pid is reused (a kept
// cluster, a reboot), and it holds from the fork on, through execve: a process in the middle
// of execve reads an empty /proc/PID/cmdline for a while after cmd.Start has returned.
type proc struct {
	pid   int
	start uint64
}

// procOf returns the proc of a live pid.
func procOf(pid int) (proc, error) {
	_, start, err := procStat(pid)
	return proc{pid, start}, err
}

// running reports whether the process p names is still there and has not exited (a zombie
// has).
func (p proc) running() bool {
	state, start, err := procStat(p.pid)
	return err == nil && start == p.start && state != 'Z' && state != 'X'
}

// procStat reads the state and the start time of pid from /proc/PID/stat.
func procStat(pid int) (state byte, start uint64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// pid (comm) state ppid ...: comm may hold spaces and ')'; the fields follow the last ')'.
	i := bytes.LastIndexByte(b, ')')
	var f []string
	if i >= 0 {
		f = strings.Fields(string(b[i+1:]))
	}
	if len(f) < 20 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: unexpected %q", pid, b)
	}
	start, err = strconv.ParseUint(f[19], 10, 64) // f[0] is field 3, the state
	return f[0][0], start, err
}

// writePidFile records a component's process in run/NAME.pid: "PID START".
func (c *Cluster) writePidFile(name string, p proc) error {
	return os.WriteFile(c.path("run", name+".pid"), fmt.Appendf(nil, "%d %d\n", p.pid, p.start), 0o644)
}

// proc returns the process of a running component; ok is false when it is not running.
func (c *Cluster) proc(name string) (p proc, ok bool) {
	b, err := os.ReadFile(c.path("run", name+".pid"))
	if err != nil {
		return proc{}, false
	}
	if _, err := fmt.Sscan(string(b), &p.pid, &p.start); err == nil {
		return p, p.running()
	}
	// A pid file of an older checkout holds the pid alone: then the process must also name the
	// cluster's directory in its arguments, as every component does.
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return proc{}, false
	}
	if p, err = procOf(pid); err != nil || !p.running() {
		return proc{}, false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return p, err == nil && bytes.Contains(cmdline, []byte(c.Dir+"/"))
}
