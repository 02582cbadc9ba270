package container

import (
	"os"
	"path/filepath"
	"testing"
)

// A fake root for cpuLimit: files given by their absolute names.
func cpuRoot(t *testing.T, files map[string]string) fsRoot {
	t.Helper()
	root := t.TempDir()
	for name, text := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return fsRoot(root)
}

func TestCPULimit(t *testing.T) {
	const v1Host = "30 1 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct\n"
	const v1Container = "30 1 0:26 /kubepods/burstable/pod1/c1 /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup rw,cpu,cpuacct\n"
	const v2 = "30 1 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n"
	for name, tc := range map[string]struct {
		files map[string]string
		want  float64
	}{
		"v1, no limit": {map[string]string{
			"/proc/self/cgroup": "2:cpu,cpuacct:/user.slice\n", "/proc/self/mountinfo": v1Host,
			"/sys/fs/cgroup/cpu,cpuacct/user.slice/cpu.cfs_quota_us": "-1\n", "/sys/fs/cgroup/cpu,cpuacct/user.slice/cpu.cfs_period_us": "100000\n",
		}, 0},
		"v1, seen from the host: the pod's limit is the smaller": {map[string]string{
			"/proc/self/cgroup": "2:cpu,cpuacct:/kubepods/pod1/c1\n", "/proc/self/mountinfo": v1Host,
			"/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/c1/cpu.cfs_quota_us": "300000\n", "/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/c1/cpu.cfs_period_us": "100000\n",
			"/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/cpu.cfs_quota_us": "150000\n", "/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/cpu.cfs_period_us": "100000\n",
		}, 1.5},
		"v1, in a container that sees its own cgroup as the root": {map[string]string{
			"/proc/self/cgroup": "4:cpu,cpuacct:/kubepods/burstable/pod1/c1\n", "/proc/self/mountinfo": v1Container,
			"/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "50000\n", "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
		}, 0.5},
		"v2": {map[string]string{
			"/proc/self/cgroup": "0::/kubepods/pod1/c1\n", "/proc/self/mountinfo": v2,
			"/sys/fs/cgroup/kubepods/pod1/c1/cpu.max": "200000 100000\n", "/sys/fs/cgroup/kubepods/pod1/cpu.max": "max 100000\n",
		}, 2},
		"v2, unreadable": {map[string]string{"/proc/self/cgroup": "0::/x\n", "/proc/self/mountinfo": v2}, 0},
	} {
		t.Run(name, func(t *testing.T) {
			if got := cpuRoot(t, tc.files).cpuLimit(); got != tc.want {
				t.Errorf("cpuLimit() = %v, want %v", got, tc.want)
			}
		})
	}
}
