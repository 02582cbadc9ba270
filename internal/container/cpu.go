package container

import (
	"bytes"
	"math"
	"path"
	"strconv"
	"strings"

	"github.com/moby/sys/mountinfo"
)

// CPULimit returns the CPU bandwidth limit of the cgroup the calling process is in, in CPUs
// (cpu.max of cgroup v2, cpu.cfs_quota_us / cpu.cfs_period_us of v1), the smallest along the
// way up to the mount's root (a pod's limit sits above its containers'), or 0 when there is
// none. A container's limits.cpu is such a limit; its requests.cpu is not (a weight, not a
// bound).
func CPULimit() float64 { return fsRoot("/").cpuLimit() }

func (r fsRoot) cpuLimit() float64 {
	limit := math.Inf(1)
	r.cgroupDirs("cpu", func(dir string, v2 bool) {
		if l := r.bandwidth(dir, v2); l > 0 && l < limit {
			limit = l
		}
	})
	if math.IsInf(limit, 1) {
		return 0
	}
	return limit
}

// cgroupDirs calls visit with each directory of the calling process's cgroups that holds
// controller: the process's own, then each one up to the mount's root, in the v1 hierarchy of
// the controller and in the v2 one (which has it when the directory has its files).
func (r fsRoot) cgroupDirs(controller string, visit func(dir string, v2 bool)) {
	cgroups, err := r.read("/proc/self/cgroup")
	if err != nil {
		return
	}
	mounts, err := r.read("/proc/self/mountinfo")
	if err != nil {
		return
	}
	ms, err := mountinfo.GetMountsFromReader(bytes.NewReader(mounts), nil)
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(cgroups), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		v2 := parts[0] == "0" && parts[1] == ""
		if !v2 && !hasController(parts[1], controller) {
			continue
		}
		for _, m := range ms {
			if v2 && m.FSType != "cgroup2" || !v2 && (m.FSType != "cgroup" || !hasController(m.VFSOptions, controller)) {
				continue
			}
			// The process's cgroup as seen from this mount, which shows the hierarchy from
			// m.Root down (a container sees its own cgroup as the mount's root).
			rel, ok := strings.CutPrefix(parts[2], m.Root)
			if !ok || rel != "" && !strings.HasPrefix(rel, "/") && m.Root != "/" {
				continue
			}
			for dir := path.Join(m.Mountpoint, rel); ; dir = path.Dir(dir) {
				visit(dir, v2)
				if dir == m.Mountpoint || dir == "/" {
					break
				}
			}
		}
	}
}

// bandwidth is the CPU limit of one cgroup directory, 0 for none.
func (r fsRoot) bandwidth(dir string, v2 bool) float64 {
	var quota, period float64
	if v2 {
		b, err := r.read(path.Join(dir, "cpu.max"))
		f := strings.Fields(string(b))
		if err != nil || len(f) != 2 || f[0] == "max" {
			return 0
		}
		quota, _ = strconv.ParseFloat(f[0], 64)
		period, _ = strconv.ParseFloat(f[1], 64)
	} else {
		q, err1 := r.read(path.Join(dir, "cpu.cfs_quota_us"))
		p, err2 := r.read(path.Join(dir, "cpu.cfs_period_us"))
		if err1 != nil || err2 != nil {
			return 0
		}
		quota, _ = strconv.ParseFloat(strings.TrimSpace(string(q)), 64)
		period, _ = strconv.ParseFloat(strings.TrimSpace(string(p)), 64)
	}
	if quota <= 0 || period <= 0 {
		return 0
	}
	return quota / period
}

// hasController says whether a comma-separated list names c ("cpu,cpuacct" names cpu).
func hasController(list, c string) bool {
	for _, s := range strings.Split(list, ",") {
		if s == c {
			return true
		}
	}
	return false
}
