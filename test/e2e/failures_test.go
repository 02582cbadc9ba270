package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/pyexec/pyexec/internal/mutation"
	"github.com/pyexec/pyexec/test/cluster"
)

// The failure paths of the pod's two pyexec containers: the runner killed, the kernel's OOM
// killer in the runner's container, the server killed.

// inFlight starts, from the bot's container, an execution that runs `sleep arg` and waits until
// that process is in the runner's container (kubectl exec there: the execution's processes are
// the runner's uid, and the server cannot see into an execution's working directory). It
// returns the channel of the call's output.
func inFlight(t *testing.T, pod *corev1.Pod, arg string) <-chan string {
	t.Helper()
	call := make(chan string, 1)
	go func() {
		out, _ := kubectl("exec", "-n", appNS, pod.Name, "-c", "bot", "--", "python3", "/app/sample_bot.py", "run",
			"import subprocess; subprocess.run(['sleep', '"+arg+"'])", "60")
		call <- out
	}()
	eventually(t, 30*time.Second, "the long execution running in the runner's container", func() error {
		if running(pod, "sleep "+arg) {
			return nil
		}
		return errors.New("not yet")
	})
	return call
}

// running reports whether a process with this command line is in the runner's container.
func running(pod *corev1.Pod, cmdline string) bool {
	procs, _ := containerProcesses(appNS, pod.Name, mutation.RunnerName)
	for _, p := range procs {
		if f := strings.SplitN(p, " ", 3); len(f) == 3 && f[2] == cmdline {
			return true
		}
	}
	return false
}

// answer waits for the output of a call in flight.
func answer(t *testing.T, call <-chan string, what string) map[string]any {
	t.Helper()
	var out string
	select {
	case out = <-call:
	case <-time.After(time.Minute):
		t.Fatalf("the execution in flight did not end when %s", what)
	}
	var res map[string]any
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("the call in flight when %s: %v\n%s", what, err, out)
	}
	return res
}

// containerReady reports whether a container of the pod is ready, with its restart count.
func containerReady(cs *kubernetes.Clientset, pod, name string) (bool, int32, error) {
	p, err := cs.CoreV1().Pods(appNS).Get(context.Background(), pod, metav1.GetOptions{})
	if err != nil {
		return false, 0, err
	}
	for _, s := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
		if s.Name == name {
			return s.Ready && s.State.Running != nil, s.RestartCount, nil
		}
	}
	return false, 0, fmt.Errorf("no container %s", name)
}

// executionsWork waits until an execution from the bot's container gives its genuine result.
func executionsWork(t *testing.T, pod, what string) {
	t.Helper()
	eventually(t, 30*time.Second, what, func() error {
		res, err := runInBot(appNS, pod, "bot", "print(6 * 7)", 30)
		if err != nil {
			return err
		}
		if res["stdout"] != "42\n" {
			return fmt.Errorf("%v", res)
		}
		return nil
	})
}

// runnerKilled kills the runner (SIGKILL from the host, as the kernel's OOM killer would) while
// an execution runs: that call fails with 503 unavailable, the server does not restart and its
// socket keeps answering, the kubelet restarts the runner, which dials the server again, and
// executions work again.
func runnerKilled(t *testing.T, cs *kubernetes.Clientset) {
	pod := podOf(t, cs, appNS, botSelector)
	before := restartCounts(t, cs, appNS, pod.Name)
	call := inFlight(t, pod, "3002")
	if err := syscall.Kill(hostPID(t, pod, "pyexec runner"), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	res := answer(t, call, "the runner died")
	if res["type"] != "Unavailable" || !strings.Contains(fmt.Sprint(res["error"]), "503 unavailable") {
		t.Fatalf("the call in flight when the runner died: want 503 unavailable, got %v", res)
	}
	info, err := sidecarInfo(appNS, pod.Name, "bot")
	if err != nil || info["version"] == nil {
		t.Fatalf("GET /v1/info with the runner gone: %v %v", err, info)
	}
	answered := time.Since(killed)
	eventually(t, 2*time.Minute, "the runner restarted and serving", func() error {
		if n := restartCounts(t, cs, appNS, pod.Name); n[mutation.RunnerName] != before[mutation.RunnerName]+1 {
			return fmt.Errorf("restarts %v, were %v", n, before)
		}
		log, err := kubectl("logs", "-n", appNS, pod.Name, "-c", mutation.RunnerName)
		if err != nil || !strings.Contains(log, `"msg":"serving"`) {
			return fmt.Errorf("the new runner does not serve yet: %v\n%s", err, log)
		}
		return nil
	})
	back := time.Since(killed)
	executionsWork(t, pod.Name, "an execution after the runner's restart")
	if n := restartCounts(t, cs, appNS, pod.Name); n[mutation.SidecarName] != before[mutation.SidecarName] {
		t.Fatalf("the server restarted (%d, was %d): the runner's death reached it", n[mutation.SidecarName], before[mutation.SidecarName])
	}
	procs, err := hostProcs()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		if p.Pod == string(pod.UID) && p.Cmdline == "sleep 3002" {
			t.Fatalf("the killed runner's execution left process %d", p.PID)
		}
	}
	t.Logf("the call in flight got: %v: %v; /v1/info answered %s after the kill; the runner was back and serving after %s; the server did not restart",
		res["type"], res["error"], answered.Round(100*time.Millisecond), back.Round(100*time.Millisecond))
}

// oomRunnerLimit is the runner's memory limit of the OOM path's bot.
const oomRunnerLimit = "300Mi"

// oomCode forks four processes that each touch 150 MiB, 600 MiB in all, 10 MiB every 50 ms (as
// a program that builds its data does: some 80 MiB for the four between two readings of the
// supervisor, every 100 ms). Under memory_limit_mb 1024 (the tree's) only the runner
// container's memory limit stops them; under 100 the supervisor kills the tree first, with room
// to spare below the container's (300 MiB, of which the runner, zygote and spares hold some 60).
// (Touched at once, 150 MiB each, the four outran the supervisor's first reading under a limit
// of 200 on a loaded VM: the kernel came first.) It prints its RLIMIT_AS (the backstop: the limit + 16 GiB)
// and how each child ended (-9: killed).
const oomCode = `import os, resource, time
print("RLIMIT_AS", resource.getrlimit(resource.RLIMIT_AS)[0] >> 20, flush=True)
children = []
for _ in range(4):
    pid = os.fork()
    if pid == 0:
        b = []
        for _ in range(15):
            b.append(b"\x01" * (10 << 20))
            time.sleep(0.05)
        time.sleep(2)
        os._exit(0)
    children.append(pid)
print(*sorted(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children), flush=True)
`

// executeScript runs sys.argv[1] through the sidecar with memory_limit_mb sys.argv[2] and prints
// the result as sample_bot.py run does.
const executeScript = `import json
from pyexec_client import Client, PyexecError
from sample_bot import _result
try:
    r = _result(Client().execute(sys.argv[1], timeout=60, memory_limit_mb=int(sys.argv[2])))
except PyexecError as e:
    r = {"error": str(e), "type": type(e).__name__}
print(json.dumps(r))`

// runnerOOM runs code that takes more memory than the runner's container has, in several
// processes, in a second bot whose runner has a 300Mi limit (pyexec.dev/runner-memory-limit).
// Under a tree limit below the container's, the supervisor kills the tree and the kernel never
// acts; above it, the kernel kills code in the runner's container and
// nothing else (judged from the host: the containers' memory cgroups count the kills), the
// server does not restart, the app's socket answers and the next execution works.
func runnerOOM(t *testing.T, cs *kubernetes.Clientset) {
	ctx := context.Background()
	d, err := cluster.SampleBot("../..")
	if err != nil {
		t.Fatal(err)
	}
	const name = "bot-oom"
	d.Name = name
	for _, labels := range []map[string]string{d.Labels, d.Spec.Selector.MatchLabels, d.Spec.Template.Labels} {
		labels["app.kubernetes.io/name"] = name
	}
	d.Spec.Template.Annotations[mutation.AnnotationRunnerMemoryLimit] = oomRunnerLimit
	// The runner's memory watchdog off: what this path tests is the kernel's OOM killer, the
	// backstop of code that fills memory faster than the watchdog reads (four processes touching
	// 150 MiB each at once often do).
	d.Spec.Template.Annotations[mutation.AnnotationRunnerMemoryHighWater] = "0"
	if _, err := cs.AppsV1().Deployments(appNS).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer cs.AppsV1().Deployments(appNS).Delete(ctx, name, metav1.DeleteOptions{})
	waitAvailable(t, cs, name, 1)
	pod := podOf(t, cs, appNS, "app.kubernetes.io/name="+name)
	want := resource.MustParse(oomRunnerLimit)
	kills, limit := oomKills(t, pod, mutation.RunnerName)
	if limit != want.Value() {
		t.Fatalf("the memory limit of the runner's cgroup: %d bytes, want %s", limit, oomRunnerLimit)
	}
	serverKills, serverLimit := oomKills(t, pod, mutation.SidecarName)
	before := restartCounts(t, cs, appNS, pod.Name)

	// The tree's limit acts first: the supervisor kills it, not the kernel.
	res, err := botPython(appNS, pod.Name, "bot", executeScript, oomCode, "100")
	if err != nil {
		t.Fatal(err)
	}
	if res["reason"] != "memory_limit" || res["exit_code"] != float64(137) {
		t.Fatalf("600 MiB in four processes under memory_limit_mb 100: %v", res)
	}
	if n, _ := oomKills(t, pod, mutation.RunnerName); n != kills {
		t.Fatalf("the kernel's OOM killer acted (%d kills, were %d) where the tree's memory limit should have", n, kills)
	}

	res, err = botPython(appNS, pod.Name, "bot", executeScript, oomCode, "1024")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(fmt.Sprint(res["stdout"])), "\n")
	if res["exit_code"] != float64(0) || len(lines) != 2 || lines[0] != fmt.Sprintf("RLIMIT_AS %d", 1024+16<<10) {
		t.Fatalf("the execution that outgrows the runner's container: %v", res)
	}
	killed := 0
	for _, status := range strings.Fields(lines[1]) {
		if status == "-9" {
			killed++
		}
	}
	if killed == 0 {
		t.Fatalf("no child was killed: the runner's memory limit did not act: %v", res)
	}
	after, _ := oomKills(t, pod, mutation.RunnerName)
	if after-kills != killed {
		t.Fatalf("the runner's memory cgroup counts %d OOM kills, the code saw %d of its children killed: %v", after-kills, killed, res)
	}
	if n, _ := oomKills(t, pod, mutation.SidecarName); n != serverKills {
		t.Fatalf("the OOM killer acted in the server's container (%d kills, were %d)", n, serverKills)
	}
	for _, c := range []string{mutation.SidecarName, mutation.RunnerName} {
		if n := restartCounts(t, cs, appNS, pod.Name); n[c] != before[c] {
			t.Fatalf("%s restarted (%d, was %d): the OOM killer took it", c, n[c], before[c])
		}
	}
	if info, err := sidecarInfo(appNS, pod.Name, "bot"); err != nil || info["version"] == nil {
		t.Fatalf("GET /v1/info after the OOM: %v %v", err, info)
	}
	executionsWork(t, pod.Name, "the next execution after the OOM")
	t.Logf("runner limit %s, server limit %d MiB: 4 processes of 150 MiB under memory_limit_mb 100 killed by their supervisor; under 1024 ended %s; "+
		"OOM kills in the runner's cgroup %d -> %d, in the server's %d; no container restarted",
		oomRunnerLimit, serverLimit>>20, lines[1], kills, after, serverKills)
}

// waitAvailable waits until the Deployment name of appNS has n available replicas, all of the
// current template.
func waitAvailable(t *testing.T, cs *kubernetes.Clientset, name string, n int32) *appsv1.Deployment {
	t.Helper()
	var d *appsv1.Deployment
	eventually(t, 3*time.Minute, fmt.Sprintf("%d available replicas of %s", n, name), func() error {
		var err error
		if d, err = cs.AppsV1().Deployments(appNS).Get(context.Background(), name, metav1.GetOptions{}); err != nil {
			return err
		}
		if s := d.Status; s.AvailableReplicas != n || s.UpdatedReplicas != n || s.ObservedGeneration < d.Generation {
			return fmt.Errorf("%d available, %d updated; pods: %s", s.AvailableReplicas, s.UpdatedReplicas, podStates(cs, appNS))
		}
		return nil
	})
	return d
}

// serverKilled kills the server (SIGKILL from the host, as the OOM killer would) while an
// execution is in flight: that call fails with a clear error; the runner notices, ends its
// executions and dials again without restarting; the kubelet restarts the server, the pod is
// ready again and the bot works again.
func serverKilled(t *testing.T, cs *kubernetes.Clientset) {
	ctx := context.Background()
	pod := podOf(t, cs, appNS, botSelector)
	before := restartCounts(t, cs, appNS, pod.Name)
	call := inFlight(t, pod, "3003")
	if err := syscall.Kill(hostPID(t, pod, "pyexec serve"), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	res := answer(t, call, "the server died")
	want := "connection to /var/run/pyexec/pyexec.sock lost"
	if res["type"] != "PyexecError" || !strings.Contains(fmt.Sprint(res["error"]), want) {
		t.Fatalf("the call in flight when the server died: want a PyexecError saying %q, got %v", want, res)
	}
	eventually(t, 30*time.Second, "the runner to end the execution of the server that died", func() error {
		if running(pod, "sleep 3003") {
			return errors.New("sleep 3003 still runs in the runner's container")
		}
		return nil
	})
	ended := time.Since(killed)
	eventually(t, 2*time.Minute, "the server restarted and the pod ready", func() error {
		ready, restarts, err := containerReady(cs, pod.Name, mutation.SidecarName)
		if err != nil || !ready || restarts != before[mutation.SidecarName]+1 {
			return fmt.Errorf("server ready %v, restarts %d (were %d), %v: %s", ready, restarts, before[mutation.SidecarName], err, podStates(cs, appNS))
		}
		p, err := cs.CoreV1().Pods(appNS).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return errors.New("the pod is not Ready")
	})
	back := time.Since(killed)
	// The runner said why it let go, and served the new server without restarting.
	var msgs []string
	for _, l := range jsonLines(t, mustKubectl(t, "logs", "-n", appNS, pod.Name, "-c", mutation.RunnerName)) {
		msgs = append(msgs, fmt.Sprint(l["msg"]))
	}
	gone := slices.Index(msgs, "server gone; dialing again")
	if gone < 0 || !slices.Contains(msgs[gone:], "serving") {
		t.Fatalf("the runner's log: want \"server gone; dialing again\", then \"serving\": %q", msgs)
	}
	if n := restartCounts(t, cs, appNS, pod.Name); n[mutation.RunnerName] != before[mutation.RunnerName] {
		t.Fatalf("the runner restarted (%d, was %d): it should have dialed the new server", n[mutation.RunnerName], before[mutation.RunnerName])
	}
	executionsWork(t, pod.Name, "an execution after the server's restart")
	since := time.Now().UTC().Format(time.RFC3339)
	eventually(t, 30*time.Second, "the bot's loop working again", func() error {
		log, err := kubectl("logs", "-n", appNS, pod.Name, "-c", "bot", "--since-time", since)
		if err != nil || !botResult.MatchString(log) {
			return fmt.Errorf("no result yet: %v %s", err, log)
		}
		return nil
	})
	t.Logf("the call in flight got: %v: %v; the runner ended its execution within %s and dialed again; the server was back and the pod ready after %s",
		res["type"], res["error"], ended.Round(100*time.Millisecond), back.Round(100*time.Millisecond))
}
