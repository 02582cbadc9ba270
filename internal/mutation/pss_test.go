package mutation

import (
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	psaapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	"k8s.io/utils/ptr"
)

// restrictedForbidden evaluates a pod against the restricted Pod Security Standard, latest
// version, and returns what it forbids ("" when allowed).
func restrictedForbidden(t *testing.T, pod *corev1.Pod) string {
	t.Helper()
	evaluator, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	lv := psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: psaapi.LatestVersion()}
	agg := policy.AggregateCheckResults(evaluator.EvaluatePod(lv, &pod.ObjectMeta, &pod.Spec))
	if agg.Allowed {
		return ""
	}
	return agg.ForbiddenDetail()
}

// TestGoldenPodsAreRestricted checks every injected pod and pod template of the golden
// outputs against the restricted Pod Security Standard. The app containers of the fixtures
// are compliant, so whatever is forbidden comes from the injection.
func TestGoldenPodsAreRestricted(t *testing.T) {
	total := 0
	for _, input := range goldenCases(t) {
		data, err := os.ReadFile(goldenFile(input))
		if err != nil {
			t.Fatal(err)
		}
		pods := injectedPods(t, data)
		if len(pods) == 0 && !strings.Contains(input, "already-injected") {
			t.Errorf("%s: no injected pod", goldenFile(input))
		}
		for id, pod := range pods {
			total++
			if forbidden := restrictedForbidden(t, pod); forbidden != "" {
				t.Errorf("%s %s violates restricted: %s", goldenFile(input), id, forbidden)
			}
		}
	}
	if total < 10 {
		t.Errorf("checked %d injected pods, want at least 10", total)
	}
}

// TestRestrictedCheckCanFail shows that the check above has teeth: the same injection with
// the server's and the runner's securityContext dropped is forbidden, for each of them.
func TestRestrictedCheckCanFail(t *testing.T) {
	pod := appPod("bot")
	pod.Spec.SecurityContext = &corev1.PodSecurityContext{
		RunAsNonRoot:   ptr.To(true),
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	pod.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr.To(false),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
	out, injected, _, err := InjectPod(pod, testDefaults)
	if err != nil || !injected {
		t.Fatalf("InjectPod() = %v, %v", injected, err)
	}
	if forbidden := restrictedForbidden(t, out); forbidden != "" {
		t.Fatalf("injected pod violates restricted: %s", forbidden)
	}

	for i := range out.Spec.InitContainers {
		if name := out.Spec.InitContainers[i].Name; name == SidecarName || name == RunnerName {
			out.Spec.InitContainers[i].SecurityContext = nil
		}
	}
	forbidden := restrictedForbidden(t, out)
	for _, want := range []string{
		`allowPrivilegeEscalation != false (containers "pyexec-runner", "pyexec" must set securityContext.allowPrivilegeEscalation=false)`,
		`unrestricted capabilities (containers "pyexec-runner", "pyexec" must set securityContext.capabilities.drop=["ALL"])`,
	} {
		if !strings.Contains(forbidden, want) {
			t.Errorf("forbidden = %q, want it to contain %q", forbidden, want)
		}
	}
}
