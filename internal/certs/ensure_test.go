package certs

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// newEnsureManager returns a Manager over a fake clientset holding the webhook configuration.
func newEnsureManager(t *testing.T) (*Manager, *fake.Clientset) {
	t.Helper()
	client := fake.NewClientset(&admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "pyexec-injector", UID: "wc-uid"},
		Webhooks:   []admissionregistrationv1.MutatingWebhook{{Name: "inject.pyexec.dev"}},
	})
	m := New(Config{Namespace: "ns", SecretName: "pyexec-injector-tls", ServiceName: "pyexec-injector",
		WebhookConfig: "pyexec-injector", CertDir: t.TempDir(), Client: client, Log: logr.Discard()})
	return m, client
}

// failFirst makes the first `verb` on `resource` fail with err, then lets the calls through.
func failFirst(client *fake.Clientset, verb, resource string, err error) *int {
	calls := 0
	client.PrependReactor(verb, resource, func(k8stesting.Action) (bool, runtime.Object, error) {
		calls++
		return calls == 1, nil, err
	})
	return &calls
}

func TestEnsureRetriesACABundleConflict(t *testing.T) {
	m, client := newEnsureManager(t)
	gr := schema.GroupResource{Group: "admissionregistration.k8s.io", Resource: "mutatingwebhookconfigurations"}
	updates := failFirst(client, "update", "mutatingwebhookconfigurations", apierrors.NewConflict(gr, "pyexec-injector", nil))
	if err := m.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	if *updates != 2 {
		t.Errorf("caBundle updates = %d, want 2 (a conflict, then the retry)", *updates)
	}
	wc, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(context.Background(), "pyexec-injector", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := client.CoreV1().Secrets("ns").Get(context.Background(), "pyexec-injector-tls", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(wc.Webhooks[0].ClientConfig.CABundle), string(s.Data[KeyCA]); got != want {
		t.Errorf("caBundle = %q, want the Secret's CA", got)
	}
	crt, err := os.ReadFile(filepath.Join(m.cfg.CertDir, KeyCert))
	if err != nil || string(crt) != string(s.Data[KeyCert]) {
		t.Errorf("tls.crt in CertDir is not the Secret's (err %v)", err)
	}
	if !m.Ready() {
		t.Error("not Ready after Ensure")
	}
}

func TestEnsureReadsTheSecretAnotherReplicaCreated(t *testing.T) {
	m, client := newEnsureManager(t)
	theirs, err := NewBundle(m.dnsNames(), m.cfg.Now(), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Another replica creates the Secret between this replica's Get and Create.
	creates := 0
	client.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		creates++
		if creates > 1 {
			return false, nil, nil
		}
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "pyexec-injector-tls", Namespace: "ns"}, Type: corev1.SecretTypeTLS, Data: theirs.Data()}
		if err := client.Tracker().Add(s); err != nil {
			t.Error(err)
		}
		return true, nil, apierrors.NewAlreadyExists(schema.GroupResource{Resource: "secrets"}, "pyexec-injector-tls")
	})
	if err := m.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	if creates != 1 {
		t.Errorf("creates = %d, want 1", creates)
	}
	wc, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(context.Background(), "pyexec-injector", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if string(wc.Webhooks[0].ClientConfig.CABundle) != string(theirs.CABundle()) {
		t.Error("the caBundle is not the other replica's CA")
	}
}

func TestEnsureGivesUpOnEndlessConflicts(t *testing.T) {
	m, client := newEnsureManager(t)
	gr := schema.GroupResource{Group: "admissionregistration.k8s.io", Resource: "mutatingwebhookconfigurations"}
	client.PrependReactor("update", "mutatingwebhookconfigurations", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewConflict(gr, "pyexec-injector", nil)
	})
	err := m.Ensure(context.Background())
	if !apierrors.IsConflict(err) {
		t.Fatalf("Ensure = %v, want a conflict error", err)
	}
	if m.Ready() {
		t.Error("Ready although the caBundle was never patched")
	}
}
