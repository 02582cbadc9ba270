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
	out, err := kubectl("exec", "-n", ns, pod, "-c", container, "--", "python3", "/app/sample_bot.py", "run", code, fmt.Sprint(timeout))
	var res map[string]any
	if jerr := json.Unmarshal([]byte(out), &res); jerr != nil {
		t.Fatalf("sample_bot.py run %q: %v (%v)\n%s", code, jerr, err, out)
	}
	return res
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
