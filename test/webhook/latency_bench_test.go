package webhook

import (
	"context"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BenchmarkAdmissionLatency measures pod creation through the API server (server-side dry
// run: nothing is stored) without the webhook in the path (an unlabeled pod, which the
// objectSelector keeps out) and through the injector, and reports the median and the 95th
// percentile in milliseconds. Each creation is checked: a labeled pod must come back
// injected and an unlabeled one untouched, so a number is never that of the wrong path.
//
//	go test -run '^$' -bench AdmissionLatency -benchtime 200x ./test/webhook
func BenchmarkAdmissionLatency(b *testing.B) {
	select {
	case <-shared.stopped:
		b.Skip("the injector is stopped (TestInjectorDown ran): run the benchmark alone, with -run '^$'")
	default:
	}
	for _, c := range []struct {
		name    string
		labeled bool
	}{{"without-webhook", false}, {"through-injector", true}} {
		b.Run(c.name, func(b *testing.B) {
			ctx := context.Background()
			pod := labeledPod("latency", nil)
			if !c.labeled {
				pod.Labels = nil
			}
			var took []time.Duration
			for b.Loop() {
				start := time.Now()
				got, err := shared.client.CoreV1().Pods(appNS).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
				took = append(took, time.Since(start))
				if err != nil {
					b.Fatal(err)
				}
				if injected := got.Annotations["pyexec.dev/status"] == "injected"; injected != c.labeled {
					b.Fatalf("labeled %v, but injected %v: init containers %v", c.labeled, injected, names(got.Spec.InitContainers))
				}
			}
			slices.Sort(took)
			b.ReportMetric(percentileMs(took, 50), "p50-ms")
			b.ReportMetric(percentileMs(took, 95), "p95-ms")
		})
	}
}

// percentileMs is the nearest-rank p-th percentile of sorted durations, in milliseconds.
func percentileMs(sorted []time.Duration, p int) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := max((len(sorted)*p+99)/100-1, 0)
	return float64(sorted[i]) / float64(time.Millisecond)
}
