package cluster

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pyexec/pyexec/internal/images"
)

const cgroupMounts = "/sys/fs/cgroup"

// makeCgroups creates the cluster's cgroup in every v1 hierarchy; the kubelet puts kubepods
// under it (cgroupRoot).
func (c *Cluster) makeCgroups() error {
	for _, h := range cgroupHierarchies() {
		dir := filepath.Join(h, c.cgroupName())
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("cgroup %s: %w", dir, err)
		}
		if filepath.Base(h) == "cpuset" {
			// A new cpuset has no CPUs and no memory nodes: copy the parent's.
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				b, err := os.ReadFile(filepath.Join(h, f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
					return fmt.Errorf("cgroup %s: %w", dir, err)
				}
			}
		}
	}
	// Remember which of the host paths that the components make whatever their configuration
	// are new, to remove them on Destroy.
	existing := ExistingHostPaths()
	made := slices.DeleteFunc(slices.Clone(hostPaths), func(p string) bool { return slices.Contains(existing, p) })
	return os.WriteFile(c.path("run", "made-host-paths"), []byte(strings.Join(made, "\n")), 0o644)
}

// hostPaths are made outside the cluster's directory whatever the configuration: containerd
// 1.6 puts shim sockets in /run/containerd/s, its CNI library caches results in
// /var/lib/cni, the kubelet links container logs into /var/log/containers and makes
// /var/lib/kubelet and the default volume plugin directory.
var hostPaths = []string{"/run/containerd", "/var/lib/cni", "/var/log/containers", "/var/lib/kubelet", "/usr/libexec/kubernetes"}

// File system types of cgroup mounts (statfs).
const (
	cgroupV1Magic = 0x27e0eb   // CGROUP_SUPER_MAGIC
	cgroupV2Magic = 0x63677270 // CGROUP2_SUPER_MAGIC
)

// cgroupHierarchies lists the mounted cgroup v1 hierarchies: where the cluster makes its cgroup.
func cgroupHierarchies() []string { return cgroupMountsOf(cgroupV1Magic) }

// cgroupTrees adds, in hybrid mode, the v2 tree where runc makes cgroups too: where the
// cluster's cgroups must be gone after Destroy.
func cgroupTrees() []string { return cgroupMountsOf(cgroupV1Magic, cgroupV2Magic) }

// cgroupMountsOf lists the cgroup mounts of the file system types magic.
func cgroupMountsOf(magic ...int64) []string {
	var out []string
	entries, _ := os.ReadDir(cgroupMounts)
	for _, e := range entries {
		p := filepath.Join(cgroupMounts, e.Name())
		var st syscall.Statfs_t
		if e.IsDir() && syscall.Statfs(p, &st) == nil && slices.Contains(magic, st.Type) {
			out = append(out, p)
		}
	}
	return out
}

// Destroy stops every component and removes what the cluster made: its processes and
// containers, its mounts, cgroups, the kubelet's links in /var/log/containers, the network
// namespace and, unless keepDir, the directory. It may run in any network namespace, more than
// once, and on a cluster that only half started.
func (c *Cluster) Destroy(keepDir bool) error {
	if err := c.checkDir(); err != nil {
		return err
	}
	var errs []error
	c.stop("kubelet", 15*time.Second)
	errs = append(errs, c.killCgroup())
	for _, pid := range c.shims() {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	for _, name := range slices.Backward(components) {
		if name != "kubelet" {
			c.stop(name, 15*time.Second)
		}
	}
	errs = append(errs, c.unmountAll(), c.removeCgroups())
	// The kubelet links every container's log into /var/log/containers, whatever podLogsDir.
	links, _ := filepath.Glob("/var/log/containers/*.log")
	for _, l := range links {
		if target, err := os.Readlink(l); err == nil && strings.HasPrefix(target, c.Dir+"/") {
			errs = append(errs, os.Remove(l))
		}
	}
	if made, err := os.ReadFile(c.path("run", "made-host-paths")); err == nil {
		for _, p := range strings.Fields(string(made)) {
			if slices.Contains(hostPaths, p) { // never more than those
				errs = append(errs, os.RemoveAll(p))
			}
		}
	}
	if _, err := os.Stat(c.netnsPath()); err == nil {
		if out, err := exec.Command("ip", "netns", "del", c.NetNS).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip netns del %s: %v: %s", c.NetNS, err, out))
		}
	}
	if !keepDir {
		errs = append(errs, os.RemoveAll(c.Dir))
	}
	return errors.Join(errs...)
}

// checkDir refuses to tear down anything but a cluster's directory: an absolute, clean path
// other than / that holds the marker (or does not exist any more).
func (c *Cluster) checkDir() error {
	if c.Dir == "" || c.Dir != filepath.Clean(c.Dir) || !filepath.IsAbs(c.Dir) || c.Dir == "/" {
		return fmt.Errorf("cluster directory %q: want an absolute, clean path other than /", c.Dir)
	}
	if _, err := os.Stat(c.Dir); err == nil {
		if _, err := os.Stat(c.path(marker)); err != nil {
			return fmt.Errorf("%s is not a test cluster's directory (no %s): not touching it", c.Dir, marker)
		}
	}
	return nil
}

// stop sends SIGTERM to a component and SIGKILL after grace, and removes its pid file.
func (c *Cluster) stop(name string, grace time.Duration) {
	p, running := c.proc(name)
	defer os.Remove(c.path("run", name+".pid"))
	if !running {
		return
	}
	syscall.Kill(p.pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for p.running() && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if p.running() {
		c.logf("%s did not stop in %s: killing it", name, grace)
		syscall.Kill(p.pid, syscall.SIGKILL)
		for i := 0; p.running() && i < 50; i++ {
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// killCgroup kills every process of every pod: all processes in the cluster's cgroup.
func (c *Cluster) killCgroup() error {
	root := filepath.Join(cgroupMounts, "pids", c.cgroupName())
	for i := 0; i < 100; i++ {
		var pids []int
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Name() == "cgroup.procs" {
				b, _ := os.ReadFile(p)
				for _, f := range strings.Fields(string(b)) {
					if pid, err := strconv.Atoi(f); err == nil {
						pids = append(pids, pid)
					}
				}
			}
			return nil
		})
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("processes remain in cgroup %s", root)
}

// shims lists the containerd shims of this cluster's containerd (their command line names its
// socket).
func (c *Cluster) shims() []int {
	sock := c.path("containerd/containerd.sock")
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if strings.HasPrefix(filepath.Base(args[0]), "containerd-shim") && slices.Contains(args, sock) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// unmountAll unmounts every mount under the directory, the deepest first.
func (c *Cluster) unmountAll() error { return images.UnmountUnder(c.Dir) }

// removeCgroups removes the cluster's cgroup tree in every hierarchy, the leaves first: the v1
// ones and, in hybrid mode, the v2 one where runc makes its cgroups too.
func (c *Cluster) removeCgroups() error {
	var errs []error
	for _, h := range cgroupTrees() {
		root := filepath.Join(h, c.cgroupName())
		var dirs []string
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for _, d := range slices.Backward(dirs) {
			if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
			}
		}
	}
	return errors.Join(errs...)
}

// ExistingHostPaths lists which of the host paths that the components may make exist now; pass
// it to Leftovers after Destroy.
func ExistingHostPaths() []string {
	var out []string
	for _, p := range hostPaths {
		if _, err := os.Stat(p); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// Leftovers lists what Destroy(false) should have removed and did not: the directory, the
// network namespace, cgroups, mounts, processes that name the directory, and host paths that
// did not exist before (existedBefore, from ExistingHostPaths).
func (c *Cluster) Leftovers(existedBefore []string) []string {
	var out []string
	for _, p := range []string{c.Dir, c.netnsPath()} {
		if _, err := os.Stat(p); err == nil {
			out = append(out, p)
		}
	}
	for _, h := range cgroupTrees() {
		if p := filepath.Join(h, c.cgroupName()); dirExists(p) {
			out = append(out, "cgroup "+p)
		}
	}
	for _, p := range ExistingHostPaths() {
		if !slices.Contains(existedBefore, p) {
			out = append(out, p)
		}
	}
	mounts, _ := images.MountsUnder(c.Dir)
	for _, mp := range mounts {
		out = append(out, "mount "+mp)
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil || e.Name() == strconv.Itoa(os.Getpid()) {
			continue
		}
		if b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil && strings.Contains(string(b), c.Dir+"/") {
			out = append(out, "process "+e.Name()+": "+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return out
}

func dirExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}
