package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/pyexec/pyexec/internal/mutation"
)

// densityReplicas is how many bot pods the density step runs on the one node.
const densityReplicas = 12

// threadsCode starts 16 threads and, while they live, a subprocess: what the kernel refuses
// when the uid's tasks are at RLIMIT_NPROC ("can't start new thread", EAGAIN).
const threadsCode = `import subprocess, threading
release = threading.Event()
threads = [threading.Thread(target=release.wait) for _ in range(16)]
for t in threads:
    t.start()
sub = subprocess.run(["echo", "ok"], capture_output=True, text=True).stdout.strip()
alive = sum(t.is_alive() for t in threads)
release.set()
for t in threads:
    t.join()
print("%d threads, subprocess %s" % (alive, sub))
`

const threadsOK = "16 threads, subprocess ok\n"

// hogSeconds is how long the hog holds its processes.
const hogSeconds = 25

// hogCode forks until the kernel refuses, writes how many it forked to the file hog-forked in
// its working directory, then holds every process for hogSeconds: the children wait for the
// end of a pipe that the parent closes.
var hogCode = `import os, time
r, w = os.pipe()
forked, err = 0, None
while True:
    try:
        pid = os.fork()
    except OSError as e:
        err = e
        break
    if pid == 0:
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    forked += 1
print("forked", forked, "then errno", err.errno, flush=True)
with open("hog-forked", "w") as f:
    f.write(str(forked))
start = time.monotonic()
time.sleep(` + strconv.Itoa(hogSeconds) + `)
os.close(w)
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
print("held %.1f s" % (time.monotonic() - start))
`

var hogResult = regexp.MustCompile(`^forked (\d+) then errno 11\nheld ([\d.]+) s\n$`)

// Step 4c: density (issue 21). The bot scaled to 12 replicas on the one node; in every pod an
// execution starts 16 threads and a subprocess; then one pod's code forks and holds all it can
// for 25 s while every other pod's execution still starts 16 threads and a subprocess: each pod
// has uids of its own, so RLIMIT_NPROC counts its tasks alone; and so does an execution beside
// it in its own pod, as each execution has a process budget of its own. Seen from the host:
// each pod's tasks and PSS, and the tasks of the node's busiest uids.
func stepDensity(t *testing.T, cs *kubernetes.Clientset) {
	start := time.Now()
	scaleBot(t, cs, densityReplicas)
	t.Cleanup(func() { scaleBotDown(t, cs) })
	waitAvailable(t, cs, "bot", densityReplicas)
	pods := readyPods(t, cs, botSelector)
	if len(pods) != densityReplicas {
		t.Fatalf("%d ready pods of %d: %s", len(pods), densityReplicas, podStates(cs, appNS))
	}
	t.Logf("density: %d replicas available after %s", densityReplicas, time.Since(start).Round(100*time.Millisecond))

	owner := map[int64]string{}
	for i := range pods {
		server, runner := podUIDs(t, &pods[i])
		for _, u := range []struct {
			uid  int64
			role string
		}{{server, "server"}, {runner, "runner"}} {
			if other, dup := owner[u.uid]; dup {
				t.Fatalf("uid %d is the %s's of pod %s and %s", u.uid, u.role, pods[i].Name, other)
			}
			owner[u.uid] = u.role + " of " + pods[i].Name
		}
	}
	t.Logf("density: %d pods, %d distinct uids", len(pods), len(owner))

	inEvery(t, pods, "16 threads and a subprocess in every pod")
	densityReport(t, "idle", pods, owner)

	hog, others := pods[0], pods[1:]
	_, hogUID := podUIDs(t, &hog)
	info, err := sidecarInfo(appNS, hog.Name, "bot")
	if err != nil {
		t.Fatal(err)
	}
	limits, _ := info["limits"].(map[string]any)
	maxProcs, _ := limits["max_processes"].(float64)
	if maxProcs <= 0 {
		t.Fatalf("/v1/info limits.max_processes: %v", limits)
	}
	hogDone := make(chan map[string]any, 1)
	hogStart := time.Now()
	go func() {
		res, err := runInBot(appNS, hog.Name, "bot", hogCode, 3*hogSeconds)
		if err != nil {
			res = map[string]any{"error": err.Error()}
		}
		hogDone <- res
	}()
	// The hog says, in its working directory, that it holds all it could: seen from the host,
	// in the kubelet's directory of the pod's work volume.
	marker := filepath.Join(theCluster.EmptyDir(string(hog.UID), mutation.VolumeWork), filepath.Base(mutation.WorkDir), "x-*", "work", "hog-forked")
	var forked int
	eventually(t, 30*time.Second, "the hog to fork all it can", func() error {
		files, _ := filepath.Glob(marker)
		if len(files) != 1 {
			return fmt.Errorf("%d files %s", len(files), marker)
		}
		b, err := os.ReadFile(files[0])
		if err == nil {
			forked, err = strconv.Atoi(string(b))
		}
		return err
	})
	t.Logf("density: the code of %s holds the %d processes it forked, %s after it was sent", hog.Name, forked, time.Since(hogStart).Round(100*time.Millisecond))
	inEvery(t, others, "16 threads and a subprocess in every other pod while one pod's code holds all it can")
	// In the hog's own pod too: each execution has a budget of its own (the process_budget
	// layer, which the runner's container, under RuntimeDefault seccomp, must have).
	if limits["max_processes_scope"] != "execution" {
		t.Fatalf("/v1/info limits.max_processes_scope: %v, want execution (a budget per execution)", limits)
	}
	inEvery(t, []corev1.Pod{hog}, "16 threads and a subprocess beside the hog in its own pod")
	// The other pods were served while the hog held every process it forked (and itself).
	if n := uidTasks(t)[int(hogUID)]; n < forked+1 {
		t.Fatalf("the hog's uid has %d tasks, fewer than the %d processes it forked and itself: it let go before the other pods were done (in %s)",
			n, forked, time.Since(hogStart))
	}
	densityReport(t, fmt.Sprintf("while the code of %s holds all it can", hog.Name), pods, owner)
	var res map[string]any
	select {
	case res = <-hogDone:
	case <-time.After(3 * hogSeconds * time.Second):
		t.Fatal("the hog's execution did not end")
	}
	m := hogResult.FindStringSubmatch(fmt.Sprint(res["stdout"]))
	if res["exit_code"] != float64(0) || m == nil || m[1] != strconv.Itoa(forked) {
		t.Fatalf("the hog: want forked N then errno 11 (EAGAIN), held %d s: %v", hogSeconds, res)
	}
	if held, _ := strconv.ParseFloat(m[2], 64); held < hogSeconds {
		t.Fatalf("the hog held its processes %s s, want %d", m[2], hogSeconds)
	}
	t.Logf("density: the code of %s forked %s processes, then EAGAIN (its budget: max_processes %v), and held them %s s (the whole execution %s)",
		hog.Name, m[1], maxProcs, m[2], time.Since(hogStart).Round(100*time.Millisecond))
	if strconv.Itoa(int(maxProcs)-1) != m[1] {
		t.Errorf("the hog forked %s processes: its budget of %v tasks holds %v children beside its own process", m[1], maxProcs, maxProcs-1)
	}
	executionsWork(t, hog.Name, "an execution in the hog's pod after it let go")
}

// inEvery runs threadsCode in every pod at once; each must start its 16 threads and its
// subprocess.
func inEvery(t *testing.T, pods []corev1.Pod, what string) {
	t.Helper()
	start := time.Now()
	errs := make([]error, len(pods))
	var wg sync.WaitGroup
	for i, p := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := runInBot(appNS, p.Name, "bot", threadsCode, 30)
			if err == nil && res["stdout"] != threadsOK {
				err = fmt.Errorf("pod %s: %v", p.Name, res)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("%s:\n%v", what, err)
	}
	t.Logf("density: %s: %d of %d pods ok in %s", what, len(pods), len(pods), time.Since(start).Round(100*time.Millisecond))
}

// scaleBot sets the bot Deployment's replicas.
func scaleBot(t *testing.T, cs *kubernetes.Clientset, n int32) {
	t.Helper()
	ctx := context.Background()
	s, err := cs.AppsV1().Deployments(appNS).GetScale(ctx, "bot", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Spec.Replicas = n
	if _, err := cs.AppsV1().Deployments(appNS).UpdateScale(ctx, "bot", s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// scaleBotDown scales the bot back to one pod and waits until the others are gone.
func scaleBotDown(t *testing.T, cs *kubernetes.Clientset) {
	start := time.Now()
	scaleBot(t, cs, 1)
	eventually(t, time.Minute, "the bot back to one pod", func() error {
		pods, err := cs.CoreV1().Pods(appNS).List(context.Background(), metav1.ListOptions{LabelSelector: botSelector})
		if err == nil && len(pods.Items) != 1 {
			err = fmt.Errorf("%d pods", len(pods.Items))
		}
		return err
	})
	t.Logf("density: the bot back to one pod in %s", time.Since(start).Round(100*time.Millisecond))
}

// readyPods lists the ready pods that match selector in appNS.
func readyPods(t *testing.T, cs *kubernetes.Clientset, selector string) []corev1.Pod {
	t.Helper()
	list, err := cs.CoreV1().Pods(appNS).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	var pods []corev1.Pod
	for _, p := range list.Items {
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue && p.DeletionTimestamp == nil {
				pods = append(pods, p)
			}
		}
	}
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
	return pods
}

// uidTasks counts the node's tasks (threads) by real uid, as RLIMIT_NPROC does.
func uidTasks(t *testing.T) map[int]int {
	t.Helper()
	procs, err := hostProcs()
	if err != nil {
		t.Fatal(err)
	}
	n := map[int]int{}
	for _, p := range procs {
		n[p.UID] += p.Tasks
	}
	return n
}

// densityReport logs, from the host, each pod's tasks and PSS by container (the runner's, the
// server's, and the app's: the bot, the intruder and the sandbox), and the tasks of the node's
// busiest uids.
func densityReport(t *testing.T, when string, pods []corev1.Pod, owner map[int64]string) {
	t.Helper()
	procs, err := hostProcs()
	if err != nil {
		t.Fatal(err)
	}
	type usage struct{ tasks, pss [3]int64 } // runner, server, app
	var sumRunner, sumServer int64
	for i := range pods {
		pod := &pods[i]
		names := containerNames(pod)
		var u usage
		for _, p := range procs {
			if p.Pod != string(pod.UID) {
				continue
			}
			k := 2
			switch names[p.Container] {
			case mutation.RunnerName:
				k = 0
			case mutation.SidecarName:
				k = 1
			}
			u.tasks[k] += int64(p.Tasks)
			u.pss[k] += pssKB(p.PID)
		}
		server, runner := podUIDs(t, pod)
		mib := func(kb int64) string { return fmt.Sprintf("%.1f", float64(kb)/1024) }
		t.Logf("density %s: pod %s (server uid %d, runner uid %d): %d tasks (runner %d, server %d, app %d); PSS %s MiB (runner %s, server %s, app %s)",
			when, pod.Name, server, runner, u.tasks[0]+u.tasks[1]+u.tasks[2], u.tasks[0], u.tasks[1], u.tasks[2],
			mib(u.pss[0]+u.pss[1]+u.pss[2]), mib(u.pss[0]), mib(u.pss[1]), mib(u.pss[2]))
		sumRunner += u.pss[0]
		sumServer += u.pss[1]
	}
	n := int64(len(pods))
	load, _ := os.ReadFile("/proc/loadavg")
	t.Logf("density %s: load average %s", when, strings.Join(strings.Fields(string(load))[:3], " "))
	t.Logf("density %s: pyexec's PSS per pod on average %.1f MiB (runner %.1f, server %.1f), %d pods",
		when, float64(sumRunner+sumServer)/1024/float64(n), float64(sumRunner)/1024/float64(n), float64(sumServer)/1024/float64(n), n)

	tasks := map[int]int{}
	for _, p := range procs {
		tasks[p.UID] += p.Tasks
	}
	uids := make([]int, 0, len(tasks))
	for u := range tasks {
		uids = append(uids, u)
	}
	sort.Slice(uids, func(i, j int) bool {
		return tasks[uids[i]] > tasks[uids[j]] || tasks[uids[i]] == tasks[uids[j]] && uids[i] < uids[j]
	})
	var lines []string
	for _, u := range uids[:min(len(uids), 10)] {
		who := owner[int64(u)]
		switch {
		case who != "":
		case u == 0:
			who = "root: the cluster and the host"
		case u == 65532:
			who = "the bot containers'"
		case u == intruderUID:
			who = "the intruder containers'"
		default:
			who = "not a bot pod's"
		}
		lines = append(lines, fmt.Sprintf("uid %d (%s) %d", u, who, tasks[u]))
	}
	t.Logf("density %s: tasks of the node's busiest uids: %s", when, strings.Join(lines, "; "))
	byRole := map[string][]int{}
	for uid, who := range owner {
		role, _, _ := strings.Cut(who, " ")
		byRole[role] = append(byRole[role], tasks[int(uid)])
	}
	for _, role := range []string{"runner", "server"} {
		sort.Ints(byRole[role])
		t.Logf("density %s: tasks of the %d pods' %s uids: %v", when, len(byRole[role]), role, byRole[role])
	}
}
