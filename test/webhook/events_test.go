package webhook

import (
	"context"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/utils/ptr"
)

// TestEventOnOwner: a pod of a ReplicaSet is injected and the ReplicaSet gets a Normal Event
// PyexecInjected (what kubectl describe rs shows); a dry run of the same pod adds none. The
// test has no controller-manager, so it creates the ReplicaSet's pod itself.
func TestEventOnOwner(t *testing.T) {
	ctx := context.Background()
	template := labeledPod("", nil)
	template.Labels["app"] = "owned"
	rs, err := shared.client.AppsV1().ReplicaSets(appNS).Create(ctx, &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "owned"},
		Spec: appsv1.ReplicaSetSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "owned"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: template.ObjectMeta, Spec: template.Spec},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod := labeledPod("", nil)
	pod.GenerateName = "owned-"
	pod.Labels["app"] = "owned"
	pod.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(rs, appsv1.SchemeGroupVersion.WithKind("ReplicaSet"))}
	if _, err := shared.client.CoreV1().Pods(appNS).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Fatal(err)
	}
	stored, err := shared.client.CoreV1().Pods(appNS).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if stored.Annotations["pyexec.dev/status"] != "injected" {
		t.Fatalf("the ReplicaSet's pod was not injected: %v", stored.Annotations)
	}

	// The same field selector as kubectl describe rs.
	selector := fields.Set{"involvedObject.uid": string(rs.UID), "involvedObject.kind": "ReplicaSet", "involvedObject.name": rs.Name}.String()
	var found []corev1.Event
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		list, err := shared.client.CoreV1().Events(appNS).List(ctx, metav1.ListOptions{FieldSelector: selector})
		if err != nil {
			t.Fatal(err)
		}
		if found = list.Items; len(found) > 0 {
			break
		}
	}
	if len(found) == 0 {
		t.Fatalf("no Event on ReplicaSet %s\ninjector log:\n%s", rs.Name, shared.logs.String())
	}
	time.Sleep(2 * time.Second) // a dry run's Event, had there been one, would be here by now
	list, err := shared.client.CoreV1().Events(appNS).List(ctx, metav1.ListOptions{FieldSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	found = list.Items
	count := int32(0)
	for _, e := range found {
		if e.Reason != "PyexecInjected" || e.Type != corev1.EventTypeNormal || !strings.Contains(e.Message, "injected pyexec into pod owned-*") {
			t.Errorf("unexpected Event %s %s %q", e.Type, e.Reason, e.Message)
		}
		count += max(e.Count, 1)
		if e.Series != nil {
			count = max(count, e.Series.Count)
		}
	}
	if count != 1 {
		t.Errorf("%d Events for one created and one dry-run pod, want 1 (none for the dry run): %+v", count, found)
	}
}
