package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/pyexec/pyexec/internal/mutation"
)

// kubectl runs the cluster's kubectl and returns its standard output; a failure is the error,
// with kubectl's standard error.
func kubectl(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(theCluster.Bin, "kubectl"), append([]string{"--kubeconfig", theCluster.Kubeconfig()}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// mustKubectl is kubectl that fails the test on an error.
func mustKubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := kubectl(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// eventually polls check every 250 ms until it returns nil, and fails the test with check's
// last error after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s: %v", what, timeout, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func clientset(t *testing.T) *kubernetes.Clientset {
	t.Helper()
	cs, err := theCluster.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// podOf returns the one running pod that matches selector in ns.
func podOf(t *testing.T, cs *kubernetes.Clientset, ns, selector string) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	eventually(t, 2*time.Minute, "one running pod "+selector, func() error {
		pods, err := cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return err
		}
		var running []corev1.Pod
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
				running = append(running, p)
			}
		}
		if len(running) != 1 {
			return fmt.Errorf("%d running pods of %d", len(running), len(pods.Items))
		}
		pod = &running[0]
		return nil
	})
	return pod
}

// botRun runs code through the sidecar from a container with the sample bot's `run` command
// and returns its JSON answer.
func botRun(t *testing.T, ns, pod, container, code string) map[string]any {
	t.Helper()
	return botRunTimeout(t, ns, pod, container, code, 30)
}

// botRunTimeout is botRun with a time limit in seconds.
func botRunTimeout(t *testing.T, ns, pod, container, code string, timeout int) map[string]any {
	t.Helper()
	res, err := runInBot(ns, pod, container, code, timeout)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// runInBot is botRunTimeout for goroutines: an answer that is not JSON is the error. An
// error from the sidecar is an answer: {"error": ..., "type": ...}.
func runInBot(ns, pod, container, code string, timeout int) (map[string]any, error) {
	out, err := kubectl("exec", "-n", ns, pod, "-c", container, "--", "python3", "/app/sample_bot.py", "run", code, fmt.Sprint(timeout))
	var res map[string]any
	if jerr := json.Unmarshal([]byte(out), &res); jerr != nil {
		return nil, fmt.Errorf("pod %s: sample_bot.py run %q: %v (%v)\n%s", pod, code, jerr, err, out)
	}
	return res, nil
}

// botPython runs a Python script in a container of the bot's image, where the sidecar's client
// (/app/pyexec_client.py) and the sample bot are importable, with args as sys.argv[1:]; the
// script prints one JSON object, which botPython returns.
func botPython(ns, pod, container, script string, args ...string) (map[string]any, error) {
	script = "import sys\nsys.path.insert(0, '/app')\n" + script
	out, err := kubectl(append([]string{"exec", "-n", ns, pod, "-c", container, "--", "python3", "-c", script}, args...)...)
	var res map[string]any
	if jerr := json.Unmarshal([]byte(out), &res); jerr != nil {
		return nil, fmt.Errorf("pod %s: python3 -c %q: %v (%v)\n%s", pod, script, jerr, err, out)
	}
	return res, nil
}

// sidecarInfo is GET /v1/info through the app's socket, from a container of the bot's image.
func sidecarInfo(ns, pod, container string) (map[string]any, error) {
	return botPython(ns, pod, container, `import json
from pyexec_client import Client
print(json.dumps(Client().info()))`)
}

// podUIDs returns the server's and the runner's uid of an injected pod: the runAsUser of its
// pyexec and pyexec-runner containers.
func podUIDs(t *testing.T, pod *corev1.Pod) (server, runner int64) {
	t.Helper()
	uid := func(name string) int64 {
		for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
			if c.Name == name {
				if c.SecurityContext == nil || c.SecurityContext.RunAsUser == nil {
					t.Fatalf("pod %s: container %s has no runAsUser", pod.Name, name)
				}
				return *c.SecurityContext.RunAsUser
			}
		}
		t.Fatalf("pod %s has no container %s", pod.Name, name)
		return 0
	}
	return uid(mutation.SidecarName), uid(mutation.RunnerName)
}

// restartCounts returns the restart count of each container of a pod, by name.
func restartCounts(t *testing.T, cs *kubernetes.Clientset, ns, pod string) map[string]int32 {
	t.Helper()
	p, err := cs.CoreV1().Pods(ns).Get(context.Background(), pod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := map[string]int32{}
	for _, s := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
		n[s.Name] = s.RestartCount
	}
	return n
}

// lastLogLine returns the last line of a container's JSON log whose msg is msg, nil when
// there is none.
func lastLogLine(t *testing.T, ns, pod, container, msg string) map[string]any {
	t.Helper()
	var last map[string]any
	for _, l := range jsonLines(t, mustKubectl(t, "logs", "-n", ns, pod, "-c", container)) {
		if l["msg"] == msg {
			last = l
		}
	}
	return last
}

// jsonLines parses every line of a JSON log; a line that is not JSON fails the test.
func jsonLines(t *testing.T, log string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %v\n%s", err, line)
		}
		out = append(out, m)
	}
	return out
}

// containerProcesses lists the processes of a container as "pid state cmdline" lines, read
// in that container through its /proc (its own PID namespace).
func containerProcesses(ns, pod, container string) ([]string, error) {
	script := `import os
for p in sorted(os.listdir('/proc'), key=lambda s: (len(s), s)):
    if not p.isdigit():
        continue
    try:
        stat = open('/proc/%s/stat' % p).read()
        cmd = open('/proc/%s/cmdline' % p, 'rb').read().replace(b'\0', b' ').replace(b'\n', b' ').decode().strip()
    except OSError:
        continue
    print(p, stat[stat.rindex(')') + 2], cmd)
`
	out, err := kubectl("exec", "-n", ns, pod, "-c", container, "--", "python3", "-c", script)
	return strings.Split(strings.TrimSpace(out), "\n"), err
}
