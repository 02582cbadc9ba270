package e2e

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/pyexec/pyexec/internal/certs"
	"github.com/pyexec/pyexec/internal/mutation"
	"github.com/pyexec/pyexec/test/cluster"
)

const (
	release     = cluster.Release
	releaseNS   = cluster.ReleaseNS
	appNS       = "bots"
	botSelector = "app.kubernetes.io/name=bot"
	oldVenv     = "/tmp/bot_code_interpreter/venv" // where the old bot kept its venv
	intruderUID = 1000                             // an app container's uid that the sidecar refuses
)

// TestJourney walks the user's journey in order; a step that fails stops the walk, since every
// later step stands on it.
func TestJourney(t *testing.T) {
	cs := clientset(t)
	helm := helmConfig(t)
	steps := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"1_helm_install", func(t *testing.T) { stepInstall(t, cs, helm) }},
		{"2_bot_deployment", func(t *testing.T) { stepBot(t, cs) }},
		{"3_executions_and_logs", func(t *testing.T) { stepLogs(t, cs) }},
		{"4_inside_the_pod", func(t *testing.T) { stepInsidePod(t, cs) }},
		{"4b_kubectl_pyexec", func(t *testing.T) { stepPlugin(t, cs) }},
		{"4c_density", func(t *testing.T) { stepDensity(t, cs) }},
		{"5_failure_paths", func(t *testing.T) { stepFailures(t, cs, helm) }},
	}
	for _, s := range steps {
		start := time.Now()
		ok := t.Run(s.name, s.run)
		t.Logf("step %s: %s in %s", s.name, map[bool]string{true: "ok", false: "FAILED"}[ok], time.Since(start).Round(100*time.Millisecond))
		if !ok {
			t.FailNow()
		}
	}
}

func helmConfig(t *testing.T) *action.Configuration {
	t.Helper()
	cfg, err := theCluster.Helm(releaseNS, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Step 1: helm install of charts/pyexec with the local images; the injector becomes Ready with
// its own certificate, and the webhook's caBundle is the CA that signed it.
func stepInstall(t *testing.T, cs *kubernetes.Clientset, helm *action.Configuration) {
	ctx := context.Background()
	rel, err := cluster.InstallChart(helm, "../..")
	if err != nil {
		t.Fatalf("helm install: %v", err)
	}
	t.Logf("release %s: %s, chart %s", rel.Name, rel.Info.Status, rel.Chart.Metadata.Version)

	dep, err := cs.AppsV1().Deployments(releaseNS).Get(ctx, release, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if dep.Status.ReadyReplicas != *dep.Spec.Replicas {
		t.Fatalf("injector: %d of %d replicas ready after helm's wait", dep.Status.ReadyReplicas, *dep.Spec.Replicas)
	}
	hooks, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, release, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	secret, err := cs.CoreV1().Secrets(releaseNS).Get(ctx, release+"-tls", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the injector's certificate Secret: %v", err)
	}
	roots := x509.NewCertPool()
	for _, h := range hooks.Webhooks {
		if len(h.ClientConfig.CABundle) == 0 || !roots.AppendCertsFromPEM(h.ClientConfig.CABundle) {
			t.Fatalf("webhook %s: no caBundle", h.Name)
		}
	}
	block, _ := pem.Decode(secret.Data["tls.crt"])
	if block == nil {
		t.Fatal("tls.crt of the Secret is not PEM")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	svc := hooks.Webhooks[0].ClientConfig.Service
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: svc.Name + "." + svc.Namespace + ".svc"}); err != nil {
		t.Fatalf("the serving certificate does not verify against the webhook's caBundle: %v", err)
	}
}

// sampleBot is config/samples/bot.yaml with the test's images, plus what the later steps need:
// the old bot's venv volume with files, and an intruder container whose uid the sidecar refuses.
func sampleBot(t *testing.T) *appsv1.Deployment {
	t.Helper()
	d, err := cluster.SampleBot("../..")
	if err != nil {
		t.Fatal(err)
	}
	spec := &d.Spec.Template.Spec
	// The bot (Python as PID 1 of its container, without a SIGTERM handler) and the intruder
	// (sleep) ignore SIGTERM and wait out the grace period: 5 s, not 30, when the density step
	// scales eleven pods away.
	spec.TerminationGracePeriodSeconds = ptr.To[int64](5)
	bot := &spec.Containers[0]
	bot.Env = append(bot.Env, corev1.EnvVar{Name: "BOT_INTERVAL", Value: "1"})
	bot.VolumeMounts = append(bot.VolumeMounts, corev1.VolumeMount{Name: "old-venv", MountPath: oldVenv})
	spec.Volumes = append(spec.Volumes, corev1.Volume{Name: "old-venv", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	// The files a venv left on that volume, as the old bot's image had them.
	spec.InitContainers = append(spec.InitContainers, corev1.Container{
		Name: "old-venv-files", Image: cluster.BotImage, ImagePullPolicy: corev1.PullNever,
		Command: []string{"python3", "-c", `import os
os.makedirs("` + oldVenv + `/bin")
open("` + oldVenv + `/pyvenv.cfg", "w").write("home = /usr/bin\n")
open("` + oldVenv + `/bin/python", "w").write("old venv\n")`},
		VolumeMounts: []corev1.VolumeMount{{Name: "old-venv", MountPath: oldVenv}},
	})
	intruder := bot.DeepCopy()
	intruder.Name, intruder.Command, intruder.Env = "intruder", []string{"sleep", "infinity"}, nil
	intruder.VolumeMounts = nil
	intruder.SecurityContext.RunAsUser = ptr.To[int64](intruderUID)
	// Without requests: the density step's twelve pods must fit the node's two CPUs, and each
	// already asks for 160m (the bot's 10m, the runner's 100m and the server's 50m).
	intruder.Resources = corev1.ResourceRequirements{}
	spec.Containers = append(spec.Containers, *intruder)
	return d
}

// Step 2: the sample bot Deployment, labeled and annotated; its pod comes up injected, with
// pyexec-init completed, then the native sidecars pyexec-runner and pyexec started (the server
// ready) before the bot, each as a uid of its own.
func stepBot(t *testing.T, cs *kubernetes.Clientset) {
	ctx := context.Background()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: appNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "the default ServiceAccount of "+appNS, func() error {
		_, err := cs.CoreV1().ServiceAccounts(appNS).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
	if _, err := cs.AppsV1().Deployments(appNS).Create(ctx, sampleBot(t), metav1.CreateOptions{}); err != nil {
		t.Fatalf("create the bot Deployment: %v", err)
	}
	eventually(t, 3*time.Minute, "the bot Deployment available", func() error {
		d, err := cs.AppsV1().Deployments(appNS).Get(ctx, "bot", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if d.Status.AvailableReplicas != 1 {
			return fmt.Errorf("%d available replicas; pods: %s", d.Status.AvailableReplicas, podStates(cs, appNS))
		}
		return nil
	})
	pod := podOf(t, cs, appNS, botSelector)
	if got := pod.Annotations["pyexec.dev/status"]; got != "injected" {
		t.Fatalf("pod %s: pyexec.dev/status=%q, want injected", pod.Name, got)
	}
	init := map[string]corev1.ContainerStatus{}
	for _, s := range pod.Status.InitContainerStatuses {
		init[s.Name] = s
	}
	if s := init["pyexec-init"]; s.State.Terminated == nil || s.State.Terminated.ExitCode != 0 {
		t.Fatalf("pyexec-init did not complete: %+v", s.State)
	}
	var order []string
	for _, c := range pod.Spec.InitContainers {
		native := c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
		order = append(order, fmt.Sprintf("%s(native=%v)", c.Name, native))
	}
	if want := "pyexec-init(native=false) pyexec-runner(native=true) pyexec(native=true)"; !strings.HasPrefix(strings.Join(order, " "), want) {
		t.Fatalf("init containers %v: want %s first", order, want)
	}
	if s := init[mutation.RunnerName]; s.State.Running == nil || s.Started == nil || !*s.Started {
		t.Fatalf("the runner is not running and started: %+v", s)
	}
	if s := init[mutation.SidecarName]; s.State.Running == nil || s.Started == nil || !*s.Started || !s.Ready {
		t.Fatalf("the pyexec sidecar is not running, started and ready: %+v", s)
	}
	server, runner := podUIDs(t, pod)
	if server <= 0 || runner <= 0 || server == runner || server == 65532 || runner == 65532 {
		t.Fatalf("the server's uid %d and the runner's %d: want two uids of their own", server, runner)
	}
	for _, c := range pod.Spec.Containers {
		if c.Name != "bot" {
			continue
		}
		var mounted bool
		for _, m := range c.VolumeMounts {
			mounted = mounted || (m.MountPath == "/var/run/pyexec" && m.ReadOnly)
		}
		if !mounted {
			t.Fatalf("the bot does not mount the socket's directory read-only: %+v", c.VolumeMounts)
		}
	}
	t.Logf("pod %s up: pyexec-init, pyexec-runner (uid %d), pyexec (uid %d), bot", pod.Name, runner, server)
}

// podStates summarizes the pods of a namespace for an error message.
func podStates(cs *kubernetes.Clientset, ns string) string {
	pods, err := cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, p := range pods.Items {
		s := p.Name + " " + string(p.Status.Phase)
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status != corev1.ConditionTrue {
				s += fmt.Sprintf(" unscheduled(%s)", c.Message)
			}
		}
		for _, st := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
			switch {
			case st.State.Waiting != nil:
				s += fmt.Sprintf(" %s:waiting(%s %s)", st.Name, st.State.Waiting.Reason, st.State.Waiting.Message)
			case st.State.Terminated != nil:
				s += fmt.Sprintf(" %s:terminated(%d %s)", st.Name, st.State.Terminated.ExitCode, st.State.Terminated.Reason)
			default:
				s += " " + st.Name + ":running"
			}
		}
		out = append(out, s)
	}
	return strings.Join(out, "; ")
}

var botResult = regexp.MustCompile(`(?m)^bot: result #(\d+) reason=(\w+) exit=(-?\d+) .*stdout=(.*)$`)

// Step 3: the bot's executions, seen with kubectl logs in every container.
func stepLogs(t *testing.T, cs *kubernetes.Clientset) {
	p := podOf(t, cs, appNS, botSelector)
	pod := p.Name
	var botLog string
	eventually(t, time.Minute, "three results in the bot's log", func() error {
		var err error
		if botLog, err = kubectl("logs", "-n", appNS, pod, "-c", "bot"); err != nil {
			return err
		}
		if n := len(botResult.FindAllString(botLog, -1)); n < 3 {
			return fmt.Errorf("%d results:\n%s", n, botLog)
		}
		return nil
	})
	// The sidecar started before the bot: the bot's very first call succeeded.
	lines := strings.Split(strings.TrimSpace(botLog), "\n")
	if !strings.HasPrefix(lines[0], "bot: started") || !strings.HasPrefix(lines[1], "bot: result #1 reason=exit exit=0") {
		t.Fatalf("the bot's first call did not succeed (did the bot start before the sidecar?):\n%s", botLog)
	}
	if m := botResult.FindStringSubmatch(botLog); m[4] != `"45"` {
		t.Fatalf("print(sum(range(10))) gave %s, want \"45\":\n%s", m[4], botLog)
	}
	// kubectl logs without -c picks the bot (kubectl.kubernetes.io/default-container).
	if def := mustKubectl(t, "logs", "-n", appNS, pod); !strings.HasPrefix(def, lines[0]) {
		t.Fatalf("kubectl logs %s without -c is not the bot's log:\n%s", pod, def)
	}
	initLog := strings.TrimSpace(mustKubectl(t, "logs", "-n", appNS, pod, "-c", "pyexec-init"))
	if strings.Count(initLog, "\n") != 0 || !strings.Contains(initLog, "pyexec preflight ok") || !strings.Contains(initLog, "policy=system") {
		t.Fatalf("kubectl logs -c pyexec-init: want one preflight summary line (ok, policy=system), got:\n%s", initLog)
	}
	t.Logf("pyexec-init: %s", initLog)
	// Read the bot's log first: every result it shows has its line in the sidecar's log.
	botLog = mustKubectl(t, "logs", "-n", appNS, pod, "-c", "bot")
	results := len(botResult.FindAllString(botLog, -1))
	var executions []map[string]any
	for _, l := range jsonLines(t, mustKubectl(t, "logs", "-n", appNS, pod, "-c", "pyexec")) {
		if l["msg"] == "execution finished" {
			executions = append(executions, l)
		}
	}
	if len(executions) < results {
		t.Fatalf("%d executions in the sidecar's log, %d results in the bot's", len(executions), results)
	}
	ids := map[any]bool{}
	for _, e := range executions {
		if e["id"] == nil || e["durationMs"] == nil || ids[e["id"]] {
			t.Fatalf("execution line without a unique id or a duration: %v", e)
		}
		ids[e["id"]] = true
	}
	t.Logf("%d bot results, %d execution lines; one: %v", results, len(executions), executions[0])
	// The runner logs in a container of its own: it serves, as the pod's runner uid.
	_, runnerUID := podUIDs(t, p)
	serving := lastLogLine(t, appNS, pod, mutation.RunnerName, "serving")
	if serving == nil || serving["uid"] != float64(runnerUID) || serving["mode"] != "fork" {
		t.Fatalf("kubectl logs -c %s: want a line serving in fork mode as uid %d, got %v", mutation.RunnerName, runnerUID, serving)
	}
	line, _ := json.Marshal(serving)
	t.Logf("%s: %s", mutation.RunnerName, line)
}

// Step 4: inside the real pod.
func stepInsidePod(t *testing.T, cs *kubernetes.Clientset) {
	ctx := context.Background()
	pod := podOf(t, cs, appNS, botSelector)

	t.Run("detection_without_marker_files", func(t *testing.T) {
		out := mustKubectl(t, "exec", "-n", appNS, pod.Name, "-c", "pyexec", "--", "pyexec", "detect", "-o", "json")
		if !strings.Contains(out, `"in_container": true`) || strings.Contains(out, "dockerenv") || strings.Contains(out, "containerenv") {
			t.Fatalf("pyexec detect in the pod:\n%s", out)
		}
		report := mustKubectl(t, "exec", "-n", appNS, pod.Name, "-c", "bot", "--", "cat", "/var/run/pyexec/preflight.json")
		if !strings.Contains(report, `"policy": "system"`) && !strings.Contains(report, `"policy":"system"`) {
			t.Fatalf("preflight report: policy is not system:\n%s", report)
		}
		t.Logf("detect: %s", strings.Join(strings.Fields(out), " "))
	})

	t.Run("code_as_the_runner_uid_the_server_as_another", func(t *testing.T) {
		server, runner := podUIDs(t, pod)
		// The runner's uid has no passwd entry: getpass.getuser() must still answer.
		res := botRun(t, appNS, pod.Name, "bot", `import getpass, os
print(os.getuid(), bool(getpass.getuser()), os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token"))
try:
    open("/usr/lib/pyexec-was-here", "w")
except OSError as e:
    print(e.strerror)`)
		if want := fmt.Sprintf("%d True False\nRead-only file system\n", runner); res["stdout"] != want {
			t.Fatalf("uid, user name, token and root file system of an execution: want %q, got %v", want, res)
		}
		// From the host: every process of each container runs as its uid.
		procs, err := hostProcs()
		if err != nil {
			t.Fatal(err)
		}
		for container, uid := range map[string]int64{mutation.SidecarName: server, mutation.RunnerName: runner} {
			in := inContainer(procs, pod, container)
			if len(in) == 0 {
				t.Fatalf("no process of container %s seen from the host", container)
			}
			for _, p := range in {
				if int64(p.UID) != uid {
					t.Fatalf("process %d (%s) of container %s runs as uid %d, want %d", p.PID, p.Comm, container, p.UID, uid)
				}
			}
		}
		info, err := sidecarInfo(appNS, pod.Name, "bot")
		if err != nil {
			t.Fatal(err)
		}
		id, _ := info["identity"].(map[string]any)
		if id["server_uid"] != float64(server) || id["runner_uid"] != float64(runner) || id["separate"] != true {
			t.Fatalf("/v1/info identity: %v, want server %d, runner %d, separate", info["identity"], server, runner)
		}
	})

	t.Run("timeout_kills_the_tree_and_orphans_are_reaped", func(t *testing.T) {
		// A process that escapes into its own session, and an orphan: a grandchild whose
		// parent exits, so that it is reparented and must be reaped when it ends.
		done := make(chan map[string]any, 1)
		go func() {
			res, err := runInBot(appNS, pod.Name, "bot", `import os, subprocess, time
subprocess.Popen(["sleep", "301"], start_new_session=True)
pid = os.fork()
if pid == 0:
    if os.fork() == 0:
        time.sleep(0.5)
        os._exit(0)
    os._exit(0)
os.waitpid(pid, 0)
print("started", flush=True)
time.sleep(60)`, 3)
			if err != nil {
				res = map[string]any{"error": err.Error()}
			}
			done <- res
		}()
		// While it runs, seen from the host: the execution's processes are in the runner's
		// container.
		eventually(t, 3*time.Second, "the execution's sleep 301 in the runner's container", func() error {
			procs, err := hostProcs()
			if err != nil {
				return err
			}
			names := containerNames(pod)
			for _, p := range procs {
				if p.Pod == string(pod.UID) && p.Cmdline == "sleep 301" {
					if c := names[p.Container]; c != mutation.RunnerName {
						t.Fatalf("the execution's process %d is in container %q, want %s", p.PID, c, mutation.RunnerName)
					}
					return nil
				}
			}
			return errors.New("not seen")
		})
		res := <-done
		if res["timed_out"] != true || res["reason"] != "timeout" || res["stdout"] != "started\n" {
			t.Fatalf("an execution past its 3 s limit: %v", res)
		}
		eventually(t, 10*time.Second, "no process of the execution left, no zombie", func() error {
			procs, err := containerProcesses(appNS, pod.Name, mutation.RunnerName)
			if err != nil {
				return err
			}
			for _, p := range procs {
				f := strings.Fields(p)
				if len(f) < 2 || f[1] == "Z" || strings.Contains(p, "sleep 301") {
					return fmt.Errorf("left in the runner's container: %q", p)
				}
			}
			return nil
		})
	})

	t.Run("hostile_code_is_confined", func(t *testing.T) { hostileCode(t, cs, pod.Name) })

	t.Run("a_session_across_three_calls", func(t *testing.T) { sessionAcrossCalls(t, pod.Name) })
	t.Run("a_call_undone", func(t *testing.T) { callUndone(t, pod.Name) })
	t.Run("a_session_forked", func(t *testing.T) { sessionForked(t, pod.Name) })

	t.Run("the_bot_speaks_mcp", func(t *testing.T) {
		out, err := kubectl("exec", "-n", appNS, pod.Name, "-c", "bot", "--", "python3", "/app/sample_bot.py", "mcp", "print(6 * 7)")
		var res map[string]any
		if jerr := json.Unmarshal([]byte(out), &res); jerr != nil || err != nil {
			t.Fatalf("sample_bot.py mcp: %v %v\n%s", err, jerr, out)
		}
		// The result is lean: the text a model reads, no structured content.
		if res["server"] != "pyexec" || res["is_error"] != false || !strings.Contains(fmt.Sprint(res["text"]), "stdout:\n42") || res["structured"] != false || res["protocol_version"] == "" {
			t.Fatalf("run_python over MCP in the pod: %v", res)
		}
		t.Logf("MCP protocol version %v", res["protocol_version"])
	})

	t.Run("uid_outside_the_allowed_list_is_refused", func(t *testing.T) {
		res := botRun(t, appNS, pod.Name, "intruder", "print(1)")
		if res["type"] != "Forbidden" || !strings.Contains(fmt.Sprint(res["error"]), fmt.Sprintf("peer uid %d", intruderUID)) {
			t.Fatalf("uid %d calling the sidecar: %v", intruderUID, res)
		}
		var refused bool
		for _, l := range jsonLines(t, mustKubectl(t, "logs", "-n", appNS, pod.Name, "-c", "pyexec")) {
			refused = refused || (l["msg"] == "peer refused" && l["uid"] == float64(intruderUID))
		}
		if !refused {
			t.Fatal("the sidecar did not log the refused peer")
		}
	})

	t.Run("old_venv_volume_untouched", func(t *testing.T) {
		before := mustKubectl(t, "exec", "-n", appNS, pod.Name, "-c", "bot", "--", "ls", "-laR", "--time-style=full-iso", oldVenv)
		// pyexec init, pointed at the old venv path on the mounted volume, in the sidecar's image
		// in this pod (an ephemeral container, as an operator would debug it).
		check := corev1.EphemeralContainer{
			EphemeralContainerCommon: corev1.EphemeralContainerCommon{
				Name: "venv-check", Image: cluster.SidecarImage, ImagePullPolicy: corev1.PullNever,
				Args:         []string{"init", "--venv-dir", oldVenv, "--report", "/tmp/report.json", "--packages-dir", "/tmp/packages", "--log-format", "console"},
				VolumeMounts: []corev1.VolumeMount{{Name: "old-venv", MountPath: oldVenv}},
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: ptr.To(false),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
			},
		}
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			p, err := cs.CoreV1().Pods(appNS).Get(ctx, pod.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			p.Spec.EphemeralContainers = append(p.Spec.EphemeralContainers, check)
			_, err = cs.CoreV1().Pods(appNS).UpdateEphemeralContainers(ctx, pod.Name, p, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, time.Minute, "the venv-check container to finish", func() error {
			p, err := cs.CoreV1().Pods(appNS).Get(ctx, pod.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			for _, s := range p.Status.EphemeralContainerStatuses {
				if s.Name == "venv-check" && s.State.Terminated != nil {
					if s.State.Terminated.ExitCode != 0 {
						t.Fatalf("pyexec init --venv-dir %s exited %d", oldVenv, s.State.Terminated.ExitCode)
					}
					return nil
				}
			}
			return fmt.Errorf("not terminated: %+v", p.Status.EphemeralContainerStatuses)
		})
		out := mustKubectl(t, "logs", "-n", appNS, pod.Name, "-c", "venv-check")
		if !strings.Contains(out, "policy=system") {
			t.Fatalf("pyexec init with --venv-dir on the mounted volume did not choose the system Python:\n%s", out)
		}
		after := mustKubectl(t, "exec", "-n", appNS, pod.Name, "-c", "bot", "--", "ls", "-laR", "--time-style=full-iso", oldVenv)
		if before != after || !strings.Contains(after, "pyvenv.cfg") {
			t.Fatalf("the old venv volume changed:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})
}

// Step 5: what happens when things fail.
func stepFailures(t *testing.T, cs *kubernetes.Clientset, helm *action.Configuration) {
	t.Run("runner_killed", func(t *testing.T) { runnerKilled(t, cs) })
	t.Run("oom_in_the_runner", func(t *testing.T) { runnerOOM(t, cs) })
	t.Run("server_killed", func(t *testing.T) { serverKilled(t, cs) })
	t.Run("injector_down", func(t *testing.T) { injectorDown(t, cs) })
	t.Run("watchdog_recreates_a_pod_that_missed_injection", func(t *testing.T) { watchdog(t, cs, helm) })
	t.Run("helm_uninstall", func(t *testing.T) { uninstall(t, cs, helm) })
}

func injectorDown(t *testing.T, cs *kubernetes.Clientset) {
	ctx := context.Background()
	replicas := scaleInjector(t, cs, 0)
	pod := func(name string, labels map[string]string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{
				Name: "app", Image: cluster.BotImage, ImagePullPolicy: corev1.PullNever, Command: []string{"sleep", "infinity"},
			}}},
		}
	}
	_, err := cs.CoreV1().Pods(appNS).Create(ctx, pod("labeled", map[string]string{"pyexec.dev/inject": "true"}), metav1.CreateOptions{})
	if err == nil || !apierrors.IsInternalError(err) && !strings.Contains(err.Error(), "failed calling webhook") {
		t.Fatalf("a labeled pod with the injector down: want a refusal, got %v", err)
	}
	if !strings.Contains(err.Error(), "pyexec") {
		t.Fatalf("the refusal does not name the webhook: %v", err)
	}
	t.Logf("labeled pod refused: %v", err)
	plain, err := cs.CoreV1().Pods(appNS).Create(ctx, pod("unlabeled", nil), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("an unlabeled pod with the injector down: %v", err)
	}
	if len(plain.Spec.InitContainers) != 0 || plain.Annotations["pyexec.dev/status"] != "" {
		t.Fatalf("the unlabeled pod was changed: %+v", plain.Spec.InitContainers)
	}
	scaleInjector(t, cs, replicas)
	eventually(t, 2*time.Minute, "the injector back", func() error {
		_, err := cs.CoreV1().Pods(appNS).Create(ctx, pod("labeled", map[string]string{"pyexec.dev/inject": "true"}), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err
	})
}

func uninstall(t *testing.T, cs *kubernetes.Clientset, helm *action.Configuration) {
	ctx := context.Background()
	u := action.NewUninstall(helm)
	u.Wait, u.Timeout = true, 2*time.Minute
	if _, err := u.Run(release); err != nil {
		t.Fatalf("helm uninstall: %v", err)
	}
	selector := metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=" + release}
	var left []string
	add := func(kind string, n int, err error) {
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			left = append(left, fmt.Sprintf("%d %s", n, kind))
		}
	}
	eventually(t, time.Minute, "nothing of the release left", func() error {
		left = nil
		d, err := cs.AppsV1().Deployments(releaseNS).List(ctx, selector)
		add("Deployments", len(d.Items), err)
		p, err := cs.CoreV1().Pods(releaseNS).List(ctx, selector)
		add("Pods", len(p.Items), err)
		s, err := cs.CoreV1().Services(releaseNS).List(ctx, selector)
		add("Services", len(s.Items), err)
		sec, err := cs.CoreV1().Secrets(releaseNS).List(ctx, metav1.ListOptions{})
		add("Secrets", len(sec.Items), err)
		sa, err := cs.CoreV1().ServiceAccounts(releaseNS).List(ctx, selector)
		add("ServiceAccounts", len(sa.Items), err)
		r, err := cs.RbacV1().Roles(releaseNS).List(ctx, selector)
		add("Roles", len(r.Items), err)
		rb, err := cs.RbacV1().RoleBindings(releaseNS).List(ctx, selector)
		add("RoleBindings", len(rb.Items), err)
		cr, err := cs.RbacV1().ClusterRoles().List(ctx, selector)
		add("ClusterRoles", len(cr.Items), err)
		crb, err := cs.RbacV1().ClusterRoleBindings().List(ctx, selector)
		add("ClusterRoleBindings", len(crb.Items), err)
		w, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().List(ctx, selector)
		add("MutatingWebhookConfigurations", len(w.Items), err)
		pdb, err := cs.PolicyV1().PodDisruptionBudgets(releaseNS).List(ctx, selector)
		add("PodDisruptionBudgets", len(pdb.Items), err)
		if len(left) > 0 {
			return fmt.Errorf("left: %s", strings.Join(left, ", "))
		}
		return nil
	})
	// With the webhook gone, a labeled pod is created as it is.
	p, err := cs.CoreV1().Pods(appNS).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "after-uninstall", Labels: map[string]string{"pyexec.dev/inject": "true"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: cluster.BotImage, ImagePullPolicy: corev1.PullNever}}},
	}, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil || len(p.Spec.InitContainers) != 0 {
		t.Fatalf("a labeled pod after uninstall: %v, init containers %d", err, len(p.Spec.InitContainers))
	}
}

// hostileCodeAttempts is code that attacks the sidecar it runs in, as an end user steering a
// model would: pyexec serve is PID 1 of its container.
const hostileCodeAttempts = `import os, signal, socket
def attempt(name, f):
    try:
        f()
        print("OPEN", name, flush=True)
    except Exception as e:
        print("blocked", name, type(e).__name__, flush=True)
sock = "/var/run/pyexec/pyexec.sock"  # the app's socket, in the server's container
runner_sock = "` + mutation.RunnerSocket + `"  # what the runner dials; owned by the server
work = "` + mutation.WorkDir + `"  # the work root, owned by the server
pkgs = "/var/lib/pyexec/packages"  # the packages volume; it exists and the server writes it
attempt("kill the runner", lambda: os.kill(1, signal.SIGKILL))
attempt("kill the supervisor", lambda: os.kill(os.getppid(), signal.SIGKILL))
attempt("read the runner's environment", lambda: open("/proc/1/environ").read())
attempt("find the app's socket", lambda: os.stat(sock))
attempt("connect to the runner's socket", lambda: socket.socket(socket.AF_UNIX).connect(runner_sock))
attempt("unlink the runner's socket", lambda: os.unlink(runner_sock))
attempt("chmod the work root", lambda: os.chmod(work, 0o777))
attempt("chmod the execution's directory", lambda: os.chmod("..", 0o777))
attempt("list the work root", lambda: os.listdir(work))
attempt("write the packages dir", lambda: open(os.path.join(pkgs, "sitecustomize.py"), "w").write("print(1)"))
attempt("re-point current", lambda: os.symlink("/tmp", os.path.join(pkgs, "current.evil")))
attempt("leave a file in /tmp", lambda: open("/tmp/pyexec-left", "w").write("x"))
attempt("list /dev/shm", lambda: os.listdir("/dev/shm"))
attempt("reach the network", lambda: socket.create_connection(("127.0.0.1", 9901), timeout=2))
`

// hostileCode runs the attacks in the real injected pod, under the restricted PSS and
// RuntimeDefault seccomp, and checks from outside: every attempt failed, neither the server
// nor the runner restarted, the app's socket, the runner's socket and the work root are as
// they were, the server says each layer of confinement is active, and the next genuine
// request gets a genuine result.
func hostileCode(t *testing.T, cs *kubernetes.Clientset, pod string) {
	// What the attempts aim at, seen by the app (its socket) and by the server (the rest).
	state := func() string {
		app := mustKubectl(t, "exec", "-n", appNS, pod, "-c", "bot", "--", "stat", "-c", "%n %i %a %u", "/var/run/pyexec/pyexec.sock")
		server := mustKubectl(t, "exec", "-n", appNS, pod, "-c", mutation.SidecarName, "--", "stat", "-c", "%n %i %a %u",
			mutation.RunnerSocket, mutation.RunnerSocketDir, mutation.WorkDir)
		return strings.TrimSpace(app + server)
	}
	before, was := restartCounts(t, cs, appNS, pod), state()

	res := botRun(t, appNS, pod, "bot", hostileCodeAttempts)
	out := fmt.Sprint(res["stdout"])
	if n := strings.Count(hostileCodeAttempts, "\nattempt("); strings.Contains(out, "OPEN") || strings.Count(out, "blocked") != n {
		t.Fatalf("hostile code in the pod: an attempt got through or did not run (%d attempts):\n%s%v", n, out, res["stderr"])
	}
	for _, c := range []string{mutation.SidecarName, mutation.RunnerName} {
		if got := restartCounts(t, cs, appNS, pod); got[c] != before[c] {
			t.Fatalf("%s restarted (%d, was %d)", c, got[c], before[c])
		}
	}
	if now := state(); now != was {
		t.Fatalf("the sockets or the work root changed:\nbefore:\n%s\nafter:\n%s", was, now)
	}
	if res := botRun(t, appNS, pod, "bot", "print(6 * 7)"); res["stdout"] != "42\n" {
		t.Fatalf("the next genuine request: %v", res)
	}
	ready := lastLogLine(t, appNS, pod, mutation.SidecarName, "ready")
	layers := fmt.Sprint(ready["isolation"])
	if ready == nil || strings.Contains(layers, "=false") || !strings.Contains(layers, "scoped_signals=true") ||
		!strings.Contains(layers, "identity=true") || ready["network"] != "deny" {
		t.Fatalf("the server's ready line does not say every layer is active: %v", ready)
	}
	t.Logf("every attempt blocked; the server: landlockABI=%v %s", ready["landlockABI"], layers)
}

// sessionAcrossCalls: the bot keeps one session across three calls, as a conversation does —
// data loaded in the first, worked on in the second, used with a file in the third — and the
// sidecar logs the session's creation, its calls and its end.
func sessionAcrossCalls(t *testing.T, pod string) {
	out, err := kubectl("exec", "-n", appNS, pod, "-c", "bot", "--", "python3", "/app/sample_bot.py", "session",
		"import csv, io\nrows = list(csv.reader(io.StringIO('a,b\\n1,2\\n3,4')))\nwith open('data.txt', 'w') as f:\n    f.write('kept')",
		"total = sum(int(r[1]) for r in rows[1:])\ntotal",
		"import os\nprint(total * 7, open('data.txt').read(), os.getpid() == int(os.environ.get('PID', os.getpid())))")
	lines := jsonLines(t, out)
	if err != nil || len(lines) != 4 || lines[0]["session"] == nil {
		t.Fatalf("sample_bot.py session: %v\n%s", err, out)
	}
	id := lines[0]["session"]
	want := []struct {
		result any
		stdout string
		files  []any
	}{
		{nil, "", []any{"data.txt"}},
		{"6", "", []any{}},
		{nil, "42 kept True\n", []any{}},
	}
	for i, w := range want {
		l := lines[i+1]
		if l["exit_code"] != float64(0) || l["session_lost"] != false || l["result"] != w.result || l["stdout"] != w.stdout || fmt.Sprint(l["files"]) != fmt.Sprint(w.files) {
			t.Fatalf("call %d of the session: %v", i+1, l)
		}
	}
	var created, ended bool
	calls := 0
	for _, l := range jsonLines(t, mustKubectl(t, "logs", "-n", appNS, pod, "-c", "pyexec")) {
		if l["session"] != id {
			continue
		}
		switch l["msg"] {
		case "session created":
			created = true
		case "execution finished":
			calls++
		case "session ended":
			ended = l["reason"] == "deleted" && l["executions"] == float64(3)
		}
	}
	if !created || calls != 3 || !ended {
		t.Fatalf("the sidecar's log of session %v: created %v, %d calls, ended (deleted after 3) %v", id, created, calls, ended)
	}
}

// callUndone: the bot's session takes a checkpoint before each call, and undoes one that
// spoiled its data: the call after sees the data as it was, and the sidecar logs the restore.
func callUndone(t *testing.T, pod string) {
	out, err := kubectl("exec", "-n", appNS, pod, "-c", "bot", "--", "python3", "/app/sample_bot.py", "session",
		"rows = list(range(1000))\nopen('rows.txt', 'w').write(str(sum(rows)))",
		"rows = [r for r in rows if r > 990]\nopen('rows.txt', 'w').write('spoiled')",
		"UNDO",
		"print(len(rows), open('rows.txt').read())")
	lines := jsonLines(t, out)
	if err != nil || len(lines) != 5 || lines[0]["session"] == nil {
		t.Fatalf("sample_bot.py session with UNDO: %v\n%s", err, out)
	}
	id := lines[0]["session"]
	if lines[3]["undone"] != "c2" || lines[4]["stdout"] != "1000 499500\n" {
		t.Fatalf("the undo: %v, then %v", lines[3], lines[4])
	}
	var restored bool
	for _, l := range jsonLines(t, mustKubectl(t, "logs", "-n", appNS, pod, "-c", "pyexec")) {
		restored = restored || l["session"] == id && l["msg"] == "restored" && l["checkpoint"] == "c2"
	}
	if !restored {
		t.Fatalf("the sidecar's log has no restore of %v to c2", id)
	}
}

// sessionForked: the sample bot forks a session in the real pod, spoils its data in the branch,
// and finds the session as it was; the sidecar logs the fork.
func sessionForked(t *testing.T, pod string) {
	out, err := kubectl("exec", "-n", appNS, pod, "-c", "bot", "--", "python3", "/app/sample_bot.py", "session",
		"rows = list(range(1000))\nopen('rows.txt', 'w').write('all')",
		"FORK",
		"rows = rows[:10]\nopen('rows.txt', 'w').write('ten')\nprint(len(rows), open('rows.txt').read())",
		"BACK",
		"print(len(rows), open('rows.txt').read())")
	lines := jsonLines(t, out)
	if err != nil || len(lines) != 6 || lines[0]["session"] == nil || lines[2]["forked"] == nil {
		t.Fatalf("sample_bot.py session with FORK: %v\n%s", err, out)
	}
	id, branch := lines[0]["session"], lines[2]["forked"]
	if lines[3]["stdout"] != "10 ten\n" || lines[5]["stdout"] != "1000 all\n" {
		t.Fatalf("the branch said %v, then the session %v", lines[3], lines[5])
	}
	var forked bool
	for _, l := range jsonLines(t, mustKubectl(t, "logs", "-n", appNS, pod, "-c", "pyexec")) {
		if bs, ok := l["branches"].([]any); ok && l["session"] == id && l["msg"] == "forked" && len(bs) == 1 {
			forked = forked || bs[0] == branch
		}
	}
	if !forked {
		t.Fatalf("the sidecar's log has no fork of %v into %v", id, branch)
	}
}

// pluginBin is kubectl-pyexec, built once from this checkout.
var (
	pluginOnce sync.Once
	pluginBin  string
	pluginErr  error
)

// plugin runs kubectl-pyexec, built from this checkout, against the cluster; it returns the
// output and the exit status.
func plugin(t *testing.T, args ...string) (string, int) {
	t.Helper()
	pluginOnce.Do(func() {
		dir, err := os.MkdirTemp("", "kubectl-pyexec")
		if err != nil {
			pluginErr = err
			return
		}
		pluginBin = filepath.Join(dir, "kubectl-pyexec")
		if out, err := exec.Command("go", "build", "-o", pluginBin, "../../cmd/kubectl-pyexec").CombinedOutput(); err != nil {
			pluginErr = fmt.Errorf("building kubectl-pyexec: %v\n%s", err, out)
		}
	})
	if pluginErr != nil {
		t.Fatal(pluginErr)
	}
	cmd := exec.Command(pluginBin, append([]string{"--kubeconfig", theCluster.Kubeconfig()}, args...)...)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		return string(out), exit.ExitCode()
	case err != nil:
		t.Fatalf("kubectl-pyexec %v: %v", args, err)
	}
	return string(out), 0
}

// Step 4b: the kubectl plugin against the real install: status shows the bot pod injected,
// its init ok and its sidecar ready with every isolation layer; run returns a result; report
// reads the preflight report; check passes, then names a broken caBundle.
func stepPlugin(t *testing.T, cs *kubernetes.Clientset) {
	ctx := context.Background()
	pod := podOf(t, cs, appNS, botSelector)

	t.Run("run", func(t *testing.T) {
		out, code := plugin(t, "run", pod.Name, "-n", appNS, "-c", "print(6 * 7)")
		if code != 0 || out != "42\n" {
			server, _ := podUIDs(t, pod)
			t.Fatalf("kubectl pyexec run: exit %d (it runs pyexec run in the %s container, as the server's uid %d; the pod's %s is %q)\n%s",
				code, mutation.SidecarName, server, mutation.AnnotationAllowUIDs, pod.Annotations[mutation.AnnotationAllowUIDs], out)
		}
		if out, code := plugin(t, "run", pod.Name, "-n", appNS, "-c", "import sys; sys.exit(3)"); code != 3 {
			t.Fatalf("kubectl pyexec run of sys.exit(3): exit %d\n%s", code, out)
		}
		// The Deployment instead of its pod, as kubectl exec takes it.
		if out, code := plugin(t, "run", "deploy/bot", "-n", appNS, "-c", "print(6 * 7)"); code != 0 || out != "42\n" {
			t.Fatalf("kubectl pyexec run deploy/bot: exit %d\n%s", code, out)
		}
	})

	t.Run("status", func(t *testing.T) {
		out, code := plugin(t, "status", "-n", appNS, "-o", "json")
		if code != 0 {
			t.Fatalf("kubectl pyexec status: exit %d\n%s", code, out)
		}
		table, _ := plugin(t, "status", "-n", appNS)
		t.Logf("kubectl pyexec status -n %s:\n%s", appNS, table)
		var line string
		for _, l := range strings.Split(table, "\n") {
			if strings.HasPrefix(l, pod.Name+" ") {
				line = l
			}
		}
		f := strings.Fields(line)
		// POD INJECTED INIT READY MODE ISOLATION SESSIONS EXECUTIONS ERRORS NOTE
		if len(f) < 9 || f[1] == "no" || f[2] != "ok" || f[3] != "true" || f[4] != "fork" || f[8] == "-" {
			t.Fatalf("the bot pod's status line: %q", line)
		}
		if active, all, ok := strings.Cut(f[5], "/"); !ok || active != all {
			t.Errorf("the bot's sidecar lacks isolation layers: %q", f[5])
		}
		if n, err := strconv.Atoi(f[7]); err != nil || n < 2 {
			t.Errorf("executions %q: the bot and the runs above made more", f[7])
		}
		// -o wide: UIDS is the server's uid/the runner's, as the pod spec says; -o json has both.
		server, runner := podUIDs(t, pod)
		wide, code := plugin(t, "status", "-n", appNS, "-o", "wide")
		rows := strings.Split(strings.TrimSpace(wide), "\n")
		col := slices.Index(strings.Fields(rows[0]), "UIDS")
		var uids string
		for _, l := range rows[1:] {
			if f := strings.Fields(l); len(f) > col && col >= 0 && f[0] == pod.Name {
				uids = f[col]
			}
		}
		if want := fmt.Sprintf("%d/%d", server, runner); code != 0 || uids != want {
			t.Fatalf("kubectl pyexec status -o wide: UIDS %q, want %s (exit %d)\n%s", uids, want, code, wide)
		}
		var rowsJSON []map[string]any
		if err := json.Unmarshal([]byte(out), &rowsJSON); err != nil || len(rowsJSON) != 1 ||
			rowsJSON[0]["server_uid"] != float64(server) || rowsJSON[0]["runner_uid"] != float64(runner) {
			t.Fatalf("kubectl pyexec status -o json: want server_uid %d and runner_uid %d (%v)\n%s", server, runner, err, out)
		}
	})

	t.Run("report", func(t *testing.T) {
		out, code := plugin(t, "report", pod.Name, "-n", appNS, "-o", "json")
		var report map[string]any
		if code != 0 || json.Unmarshal([]byte(out), &report) != nil || report["ok"] != true {
			t.Fatalf("kubectl pyexec report -o json: exit %d\n%s", code, out)
		}
		if out, code := plugin(t, "report", pod.Name, "-n", appNS); code != 0 || !strings.Contains(out, "pyexec preflight ok") {
			t.Fatalf("kubectl pyexec report: exit %d\n%s", code, out)
		}
	})

	t.Run("check", func(t *testing.T) {
		if out, code := plugin(t, "check"); code != 0 || strings.Contains(out, "FAIL") || !strings.Contains(out, "offers every layer pyexec uses; the sidecar of ") {
			t.Fatalf("kubectl pyexec check on a healthy install (the node's kernel and what its sidecar found too): exit %d\n%s", code, out)
		}
		// A caBundle of another CA: the API server could not reach the webhook.
		hooks, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, release, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		good := hooks.DeepCopy()
		other, err := certs.NewBundle([]string{"not-pyexec.example"}, time.Now(), nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := range hooks.Webhooks {
			hooks.Webhooks[i].ClientConfig.CABundle = other.CAPEM
		}
		if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(ctx, hooks, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		defer func() {
			cur, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, release, metav1.GetOptions{})
			if err == nil {
				cur.Webhooks = good.Webhooks
				_, err = cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(ctx, cur, metav1.UpdateOptions{})
			}
			if err != nil {
				t.Errorf("restoring the caBundle: %v", err)
			}
		}()
		out, code := plugin(t, "check")
		if code != 1 || !strings.Contains(out, "FAIL") || !strings.Contains(out, "caBundle") {
			t.Fatalf("kubectl pyexec check with a foreign caBundle: exit %d\n%s", code, out)
		}
		t.Logf("check with a broken caBundle:\n%s", out)
	})
}

// scaleInjector sets the injector's replicas and returns the previous count; at 0 it waits until
// no injector pod is left.
func scaleInjector(t *testing.T, cs *kubernetes.Clientset, n int32) int32 {
	t.Helper()
	ctx := context.Background()
	s, err := cs.AppsV1().Deployments(releaseNS).GetScale(ctx, release, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	prev := s.Spec.Replicas
	s.Spec.Replicas = n
	if _, err := cs.AppsV1().Deployments(releaseNS).UpdateScale(ctx, release, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		eventually(t, time.Minute, "no injector pod left", func() error {
			pods, err := cs.CoreV1().Pods(releaseNS).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=" + release})
			if err != nil {
				return err
			}
			if len(pods.Items) != 0 {
				return fmt.Errorf("%d pods", len(pods.Items))
			}
			return nil
		})
	}
	return prev
}

// hasSidecar says whether the pod got pyexec: its sidecar, native or regular.
func hasSidecar(p *corev1.Pod) bool {
	for _, c := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
		if c.Name == "pyexec" {
			return true
		}
	}
	return false
}

// watchdog: with failurePolicy Ignore and the watchdog on (helm upgrade), pods created while the
// injector is down run without pyexec. Once it is back, the watchdog puts an Event on each,
// deletes the Deployment's pod, and its ReplicaSet re-creates it through the webhook, with the
// sidecar; a pod without a controller is only reported. The upgrade also sets chart-wide
// defaults of the code's settings, which the re-created pod (without annotations) gets.
func watchdog(t *testing.T, cs *kubernetes.Clientset, helm *action.Configuration) {
	ctx := context.Background()
	chart, err := loader.Load("../../charts/pyexec")
	if err != nil {
		t.Fatal(err)
	}
	vals := cluster.ChartValues()
	vals["webhook"] = map[string]any{"failurePolicy": "Ignore"}
	vals["watchdog"] = map[string]any{"enabled": true, "deletePods": true, "gracePeriod": "5s"}
	sidecar := vals["sidecar"].(map[string]any)
	sidecar["preload"], sidecar["timeout"], sidecar["allowPackages"] = []any{"decimal", "fractions"}, "45s", []any{"pyexec-e2e-*"}
	up := action.NewUpgrade(helm)
	up.Namespace, up.Wait, up.Timeout = releaseNS, true, 3*time.Minute
	if _, err := up.Run(release, chart, vals); err != nil {
		t.Fatalf("helm upgrade with the watchdog: %v", err)
	}
	replicas := scaleInjector(t, cs, 0)

	labels := map[string]string{"app.kubernetes.io/name": "watched", "pyexec.dev/inject": "true"}
	spec := corev1.PodSpec{Containers: []corev1.Container{{
		Name: "app", Image: cluster.BotImage, ImagePullPolicy: corev1.PullNever, Command: []string{"sleep", "infinity"},
	}}}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "watched"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": "watched"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec},
		},
	}
	if _, err := cs.AppsV1().Deployments(appNS).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer cs.AppsV1().Deployments(appNS).Delete(ctx, dep.Name, metav1.DeleteOptions{})
	bare := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "watched-bare", Labels: map[string]string{"pyexec.dev/inject": "true"}}, Spec: spec}
	if _, err := cs.CoreV1().Pods(appNS).Create(ctx, bare, metav1.CreateOptions{}); err != nil {
		t.Fatalf("a labelled pod with the injector down and failurePolicy Ignore: %v", err)
	}
	defer cs.CoreV1().Pods(appNS).Delete(ctx, bare.Name, metav1.DeleteOptions{})
	var missed string
	eventually(t, time.Minute, "the Deployment's pod, without pyexec", func() error {
		pods, err := cs.CoreV1().Pods(appNS).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=watched"})
		if err != nil || len(pods.Items) != 1 {
			return fmt.Errorf("%v pods, %v", len(pods.Items), err)
		}
		if hasSidecar(&pods.Items[0]) {
			t.Fatalf("the pod got pyexec with the injector down")
		}
		missed = pods.Items[0].Name
		return nil
	})

	scaleInjector(t, cs, replicas)
	eventually(t, 3*time.Minute, "the watchdog to replace the pod that missed injection with an injected one", func() error {
		pods, err := cs.CoreV1().Pods(appNS).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=watched"})
		if err != nil {
			return err
		}
		for _, p := range pods.Items {
			if p.Name == missed || !hasSidecar(&p) {
				return fmt.Errorf("pod %s: sidecar %v", p.Name, hasSidecar(&p))
			}
		}
		if len(pods.Items) == 0 {
			return errors.New("no pod yet")
		}
		return nil
	})
	eventually(t, time.Minute, "Events PyexecNotInjected on both pods", func() error {
		events, err := cs.EventsV1().Events(appNS).List(ctx, metav1.ListOptions{FieldSelector: "reason=PyexecNotInjected"})
		if err != nil {
			return err
		}
		seen := map[string]string{}
		for _, e := range events.Items {
			seen[e.Regarding.Name] = e.Note
		}
		if seen[missed] == "" || seen[bare.Name] == "" {
			return fmt.Errorf("events for %v", seen)
		}
		t.Logf("watchdog events: %v", seen)
		return nil
	})
	p, err := cs.CoreV1().Pods(appNS).Get(ctx, bare.Name, metav1.GetOptions{})
	if err != nil || hasSidecar(p) || p.DeletionTimestamp != nil {
		t.Fatalf("the pod without a controller was deleted or changed: %v", err)
	}

	// The chart-wide defaults reached the re-created pod, which has no annotation of its own,
	// and its pyexec-init preloaded them (the pod got past its init container).
	pods, err := cs.CoreV1().Pods(appNS).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=watched"})
	if err != nil || len(pods.Items) == 0 {
		t.Fatalf("the re-created pod: %v", err)
	}
	env := map[string]map[string]string{}
	for _, c := range append(pods.Items[0].Spec.InitContainers, pods.Items[0].Spec.Containers...) {
		env[c.Name] = map[string]string{}
		for _, e := range c.Env {
			env[c.Name][e.Name] = e.Value
		}
	}
	if env["pyexec-init"]["PYEXEC_PRELOAD"] != "decimal,fractions" || env["pyexec"]["PYEXEC_PRELOAD"] != "decimal,fractions" ||
		env["pyexec"]["PYEXEC_TIMEOUT"] != "45s" || env["pyexec"]["PYEXEC_ALLOW_PACKAGES"] != "pyexec-e2e-*" {
		t.Errorf("the chart-wide defaults did not reach pod %s: pyexec-init %v, pyexec %v", pods.Items[0].Name, env["pyexec-init"], env["pyexec"])
	}
	eventually(t, time.Minute, "the re-created pod past pyexec-init", func() error {
		p, err := cs.CoreV1().Pods(appNS).Get(ctx, pods.Items[0].Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, st := range p.Status.InitContainerStatuses {
			if st.Name == "pyexec-init" && st.State.Terminated != nil && st.State.Terminated.ExitCode == 0 {
				return nil
			}
		}
		return fmt.Errorf("init containers %+v", p.Status.InitContainerStatuses)
	})
}
