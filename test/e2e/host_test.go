package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// What the tests read from the host: every process of the node is in the host's /proc (the
// tests run in the cluster's network namespace only), with its uid, its tasks, its memory and
// its cgroup, which names its pod and its container. This is the view from outside the pods:
// what the kernel counts, not what pyexec says.

// hostProc is a process of the node as the host sees it.
type hostProc struct {
	PID       int
	Comm      string
	Cmdline   string // arguments joined by blanks
	UID       int    // real uid: what RLIMIT_NPROC counts tasks by
	Tasks     int    // its threads, the process included
	Pod       string // the pod's uid from the cgroup path; "" outside pods
	Container string // the container's id, the last element of the cgroup path
	MemCgroup string // the memory cgroup's path (v1: the memory hierarchy; v2: the unified one)
}

// podCgroup finds the pod's uid and the container's id in a kubelet cgroup path: cgroupfs
// .../pod<uid>/<id>, systemd .../kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope.
var podCgroup = regexp.MustCompile(`pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?:\.slice)?/(?:cri-containerd-)?([0-9a-f]{64})`)

// hostProcs reads every process of the node. Processes that end while it reads are left out.
func hostProcs() ([]hostProc, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var procs []hostProc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		p := hostProc{PID: pid}
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(status), "\n") {
			k, v, _ := strings.Cut(line, ":")
			f := strings.Fields(v)
			switch {
			case len(f) == 0:
			case k == "Name":
				p.Comm = f[0]
			case k == "Uid":
				p.UID, _ = strconv.Atoi(f[0])
			case k == "Threads":
				p.Tasks, _ = strconv.Atoi(f[0])
			}
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		p.Cmdline = strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " "))
		cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		for _, line := range strings.Split(string(cg), "\n") {
			f := strings.SplitN(line, ":", 3)
			if len(f) != 3 {
				continue
			}
			if m := podCgroup.FindStringSubmatch(f[2]); m != nil {
				p.Pod, p.Container = strings.ReplaceAll(m[1], "_", "-"), m[2]
			}
			if slices.Contains(strings.Split(f[1], ","), "memory") || (f[0] == "0" && f[1] == "" && p.MemCgroup == "") {
				p.MemCgroup = f[2]
			}
		}
		procs = append(procs, p)
	}
	return procs, nil
}

// pssKB is the proportional set size of a process in KiB (smaps_rollup): its private memory
// plus its share of the pages it shares with others.
func pssKB(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == "Pss:" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}

// containerNames maps the ids of a pod's containers to their names; the sandbox (pause) has
// no status and is not in it.
func containerNames(pod *corev1.Pod) map[string]string {
	names := map[string]string{}
	for _, s := range append(append([]corev1.ContainerStatus{}, pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...) {
		if _, id, ok := strings.Cut(s.ContainerID, "://"); ok {
			names[id] = s.Name
		}
	}
	return names
}

// inContainer returns the processes of procs in the named container of pod.
func inContainer(procs []hostProc, pod *corev1.Pod, container string) []hostProc {
	names := containerNames(pod)
	var out []hostProc
	for _, p := range procs {
		if p.Pod == string(pod.UID) && names[p.Container] == container {
			out = append(out, p)
		}
	}
	return out
}

// hostPID finds, from the host, the process of a pod whose command line contains cmdline (a
// Python process never: code may name itself anything).
func hostPID(t *testing.T, pod *corev1.Pod, cmdline string) int {
	t.Helper()
	procs, err := hostProcs()
	if err != nil {
		t.Fatal(err)
	}
	var found []int
	for _, p := range procs {
		if p.Pod == string(pod.UID) && strings.Contains(p.Cmdline, cmdline) && !strings.Contains(p.Cmdline, "python") {
			found = append(found, p.PID)
		}
	}
	if len(found) != 1 {
		t.Fatalf("processes %q in pod %s: %v", cmdline, pod.Name, found)
	}
	return found[0]
}

// containerMemCgroup returns the directory of the memory cgroup of a pod's container, read from
// one of its processes, and whether it is cgroup v2.
func containerMemCgroup(t *testing.T, pod *corev1.Pod, container string) (dir string, v2 bool) {
	t.Helper()
	procs, err := hostProcs()
	if err != nil {
		t.Fatal(err)
	}
	in := inContainer(procs, pod, container)
	if len(in) == 0 || in[0].MemCgroup == "" {
		t.Fatalf("no process of container %s in pod %s with a memory cgroup", container, pod.Name)
	}
	if dir := filepath.Join("/sys/fs/cgroup/memory", in[0].MemCgroup); fileExists(filepath.Join(dir, "memory.oom_control")) {
		return dir, false
	}
	if dir := filepath.Join("/sys/fs/cgroup", in[0].MemCgroup); fileExists(filepath.Join(dir, "memory.events")) {
		return dir, true
	}
	t.Fatalf("the memory cgroup %s of container %s: neither v1 nor v2 files", in[0].MemCgroup, container)
	return "", false
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// oomKills returns how many processes the kernel's OOM killer has killed in a container's
// memory cgroup (oom_kill of memory.oom_control in v1, of memory.events in v2), and the
// cgroup's memory limit in bytes.
func oomKills(t *testing.T, pod *corev1.Pod, container string) (kills int, limit int64) {
	t.Helper()
	dir, v2 := containerMemCgroup(t, pod, container)
	file, limitFile := "memory.oom_control", "memory.limit_in_bytes"
	if v2 {
		file, limitFile = "memory.events", "memory.max"
	}
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		t.Fatal(err)
	}
	kills = -1
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "oom_kill" {
			kills, _ = strconv.Atoi(f[1])
		}
	}
	if kills < 0 {
		t.Fatalf("%s/%s has no oom_kill counter:\n%s", dir, file, b)
	}
	l, err := os.ReadFile(filepath.Join(dir, limitFile))
	if err != nil {
		t.Fatal(err)
	}
	limit, _ = strconv.ParseInt(strings.TrimSpace(string(l)), 10, 64)
	return kills, limit
}
