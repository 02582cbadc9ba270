// Package certs manages the injector's serving certificate in-process: a CA and a serving
// certificate kept in a Secret, written to the webhook server's certificate directory, the CA
// patched into the caBundle of the MutatingWebhookConfiguration, and renewed before expiry.
//
// Several replicas share the Secret: each one creates it when it is missing, or renews it
// when it is due, with optimistic concurrency (a conflict means another replica won, and its
// Secret is read back). The serving certificate is renewed under the same CA, so the caBundle
// does not change and no replica serves a certificate the API server does not trust; when the
// CA itself is renewed, the caBundle carries the new and the old CA until the old one expires.
package certs

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
)

// Keys of the Secret (tls.crt and tls.key as in a kubernetes.io/tls Secret).
const (
	KeyCert   = "tls.crt"
	KeyKey    = "tls.key"
	KeyCA     = "ca.crt"
	KeyCAKey  = "ca.key"
	KeyOldCAs = "ca-old.crt" // CAs replaced but not yet expired, still in the caBundle
)

// Validity periods and the renewal margin.
const (
	caValidity      = 10 * 365 * 24 * time.Hour
	servingValidity = 365 * 24 * time.Hour
	renewBefore     = 30 * 24 * time.Hour
)

// Config says where the certificate lives and what it is for.
type Config struct {
	Namespace     string
	SecretName    string
	ServiceName   string // DNS names: SERVICE.NAMESPACE.svc and .svc.cluster.local
	WebhookConfig string // MutatingWebhookConfiguration whose caBundle is patched
	// ExtraHosts are more DNS names or IP addresses for the certificate, for a webhook the API
	// server reaches by URL rather than through the Service.
	ExtraHosts []string
	CertDir    string // where tls.crt and tls.key are written for the webhook server
	Client     kubernetes.Interface
	Log        logr.Logger
	Now        func() time.Time // nil: time.Now
}

// Manager keeps the certificate valid.
type Manager struct {
	cfg   Config
	ready atomic.Bool
}

// New returns a Manager.
func New(cfg Config) *Manager {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Manager{cfg: cfg}
}

// Ready reports whether a valid certificate is in place and the caBundle is patched.
func (m *Manager) Ready() bool { return m.ready.Load() }

// Checker is a healthz checker: an error until Ready.
func (m *Manager) Checker() func(*http.Request) error {
	return func(*http.Request) error {
		if !m.ready.Load() {
			return errors.New("serving certificate not ready")
		}
		return nil
	}
}

// Run calls Ensure every interval until ctx ends, logging failures.
func (m *Manager) Run(ctx context.Context, interval time.Duration) {
	// The condition never reports done: this returns when ctx ends.
	_ = wait.PollUntilContextCancel(ctx, interval, false, func(ctx context.Context) (bool, error) {
		if err := m.Ensure(ctx); err != nil {
			m.cfg.Log.Error(err, "certificate check failed")
		}
		return false, nil
	})
}

// Ensure makes the Secret hold a valid certificate, writes it to CertDir and patches the
// caBundle. It is safe to call from several replicas at once.
func (m *Manager) Ensure(ctx context.Context) error {
	var bundle *Bundle
	// A conflict or AlreadyExists means another replica wrote the Secret first: read theirs.
	lostRace := func(err error) bool { return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) }
	err := retry.OnError(retry.DefaultRetry, lostRace, func() (err error) {
		bundle, err = m.ensureSecret(ctx)
		return err
	})
	if lostRace(err) {
		return fmt.Errorf("the certificate Secret kept changing under us: %w", err)
	}
	if err != nil {
		return err
	}
	// The API server must trust a new CA before this replica serves a certificate from it.
	if err := m.patchCABundle(ctx, bundle.CABundle()); err != nil {
		m.ready.Store(false)
		return err
	}
	if err := writeFiles(m.cfg.CertDir, bundle); err != nil {
		m.ready.Store(false)
		return err
	}
	m.ready.Store(true)
	return nil
}

// ensureSecret reads the Secret and creates or renews it when needed.
func (m *Manager) ensureSecret(ctx context.Context) (*Bundle, error) {
	secrets := m.cfg.Client.CoreV1().Secrets(m.cfg.Namespace)
	now := m.cfg.Now()
	// The Secret belongs to the webhook configuration it serves: when that goes (helm
	// uninstall), the garbage collector deletes the Secret too.
	owner, err := m.owner(ctx)
	if err != nil {
		return nil, err
	}
	s, err := secrets.Get(ctx, m.cfg.SecretName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		b, err := NewBundle(m.dnsNames(), now, nil)
		if err != nil {
			return nil, err
		}
		s = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: m.cfg.SecretName, Namespace: m.cfg.Namespace,
				OwnerReferences: []metav1.OwnerReference{owner},
				Labels:          map[string]string{"app.kubernetes.io/name": "pyexec-injector", "app.kubernetes.io/component": "webhook-certificate"}},
			Type: corev1.SecretTypeTLS,
			Data: b.Data(),
		}
		if _, err := secrets.Create(ctx, s, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
		m.cfg.Log.Info("certificate created", "secret", m.cfg.SecretName, "notAfter", b.Cert.NotAfter)
		return b, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading Secret %s/%s: %w", m.cfg.Namespace, m.cfg.SecretName, err)
	}
	owned := slices.ContainsFunc(s.OwnerReferences, func(r metav1.OwnerReference) bool { return r.UID == owner.UID })
	b, err := ParseBundle(s.Data)
	if err == nil && !b.Due(now, m.dnsNames()) {
		if !owned { // made by an injector before owner references, or the configuration was replaced
			s = s.DeepCopy()
			s.OwnerReferences = append(s.OwnerReferences, owner)
			if _, err := secrets.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
				return nil, err
			}
		}
		return b, nil
	}
	reason := "due for renewal"
	if err != nil {
		reason, b = err.Error(), nil
	}
	renewed, err := NewBundle(m.dnsNames(), now, b)
	if err != nil {
		return nil, err
	}
	s = s.DeepCopy()
	s.Data = renewed.Data()
	if !owned {
		s.OwnerReferences = append(s.OwnerReferences, owner)
	}
	if _, err := secrets.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		return nil, err // a conflict: another replica renewed it
	}
	m.cfg.Log.Info("certificate renewed", "secret", m.cfg.SecretName, "reason", reason, "notAfter", renewed.Cert.NotAfter)
	return renewed, nil
}

// owner is the reference to the webhook configuration that the Secret serves.
func (m *Manager) owner(ctx context.Context) (metav1.OwnerReference, error) {
	wc, err := m.cfg.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, m.cfg.WebhookConfig, metav1.GetOptions{})
	if err != nil {
		return metav1.OwnerReference{}, fmt.Errorf("reading MutatingWebhookConfiguration %s: %w", m.cfg.WebhookConfig, err)
	}
	return metav1.OwnerReference{
		APIVersion: "admissionregistration.k8s.io/v1", Kind: "MutatingWebhookConfiguration",
		Name: wc.Name, UID: wc.UID,
	}, nil
}

func (m *Manager) dnsNames() []string {
	svc := m.cfg.ServiceName + "." + m.cfg.Namespace
	return append([]string{svc + ".svc", svc + ".svc.cluster.local", svc, m.cfg.ServiceName}, m.cfg.ExtraHosts...)
}

// patchCABundle sets caBundle on every webhook of the configuration that lacks it.
func (m *Manager) patchCABundle(ctx context.Context, ca []byte) error {
	api := m.cfg.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		wc, err := api.Get(ctx, m.cfg.WebhookConfig, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("reading MutatingWebhookConfiguration %s: %w", m.cfg.WebhookConfig, err)
		}
		changed := false
		wc = wc.DeepCopy()
		for i := range wc.Webhooks {
			if !bytes.Equal(wc.Webhooks[i].ClientConfig.CABundle, ca) {
				wc.Webhooks[i].ClientConfig.CABundle = ca
				changed = true
			}
		}
		if !changed {
			return nil
		}
		if _, err := api.Update(ctx, wc, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("patching the caBundle of %s: %w", m.cfg.WebhookConfig, err) // a conflict is retried
		}
		m.cfg.Log.Info("caBundle patched", "webhookConfiguration", m.cfg.WebhookConfig)
		return nil
	})
}

// writeFiles writes tls.crt and tls.key (and ca.crt) into dir when they differ, each
// atomically, so the webhook server's certificate watcher never reads half a file.
func writeFiles(dir string, b *Bundle) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for name, data := range map[string][]byte{KeyCert: b.CertPEM, KeyKey: b.KeyPEM, KeyCA: b.CAPEM} {
		path := filepath.Join(dir, name)
		if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
			continue
		}
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
	}
	return nil
}

// Bundle is a CA, a serving certificate it signed, and older CAs still trusted.
type Bundle struct {
	CA, Cert                *x509.Certificate
	CAPEM, CAKeyPEM         []byte
	CertPEM, KeyPEM, OldCAs []byte
	caKey                   *ecdsa.PrivateKey
}

// Due reports whether the serving certificate must be renewed: expiring within the margin,
// or not valid for the DNS names.
func (b *Bundle) Due(now time.Time, dnsNames []string) bool {
	if now.Add(renewBefore).After(b.Cert.NotAfter) || now.Before(b.Cert.NotBefore) {
		return true
	}
	for _, n := range dnsNames {
		if ip := net.ParseIP(n); ip != nil {
			if !slices.ContainsFunc(b.Cert.IPAddresses, ip.Equal) {
				return true
			}
		} else if !slices.Contains(b.Cert.DNSNames, n) {
			return true
		}
	}
	return false
}

// CABundle is the PEM the API server trusts: the CA and any older CA not yet expired.
func (b *Bundle) CABundle() []byte {
	return append(append([]byte{}, b.CAPEM...), b.OldCAs...)
}

// Data returns the Secret's data.
func (b *Bundle) Data() map[string][]byte {
	d := map[string][]byte{KeyCert: b.CertPEM, KeyKey: b.KeyPEM, KeyCA: b.CAPEM, KeyCAKey: b.CAKeyPEM}
	if len(b.OldCAs) > 0 {
		d[KeyOldCAs] = b.OldCAs
	}
	return d
}

// ParseBundle reads a Bundle from a Secret's data and checks that the certificate chains to
// the CA.
func ParseBundle(data map[string][]byte) (*Bundle, error) {
	b := &Bundle{CAPEM: data[KeyCA], CAKeyPEM: data[KeyCAKey], CertPEM: data[KeyCert], KeyPEM: data[KeyKey], OldCAs: data[KeyOldCAs]}
	var err error
	if b.CA, err = parseCert(b.CAPEM); err != nil {
		return nil, fmt.Errorf("ca.crt: %w", err)
	}
	if b.Cert, err = parseCert(b.CertPEM); err != nil {
		return nil, fmt.Errorf("tls.crt: %w", err)
	}
	if b.caKey, err = parseKey(b.CAKeyPEM); err != nil {
		return nil, fmt.Errorf("ca.key: %w", err)
	}
	if _, err := parseKey(b.KeyPEM); err != nil {
		return nil, fmt.Errorf("tls.key: %w", err)
	}
	if err := b.Cert.CheckSignatureFrom(b.CA); err != nil {
		return nil, fmt.Errorf("tls.crt is not signed by ca.crt: %w", err)
	}
	return b, nil
}

// NewBundle issues a serving certificate for dnsNames. It reuses prev's CA while that CA
// outlives the new certificate; otherwise it makes a new CA and keeps prev's CA, if any, as an
// old CA in the bundle.
func NewBundle(dnsNames []string, now time.Time, prev *Bundle) (*Bundle, error) {
	b := &Bundle{}
	if prev != nil && prev.CA.NotAfter.After(now.Add(servingValidity+renewBefore)) {
		b.CA, b.CAPEM, b.CAKeyPEM, b.caKey, b.OldCAs = prev.CA, prev.CAPEM, prev.CAKeyPEM, prev.caKey, prev.OldCAs
	} else {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber:          serial(),
			Subject:               pkix.Name{CommonName: "pyexec-injector-ca", Organization: []string{"pyexec"}},
			NotBefore:             now.Add(-time.Hour),
			NotAfter:              now.Add(caValidity),
			IsCA:                  true,
			BasicConstraintsValid: true,
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			return nil, err
		}
		b.CA, _ = x509.ParseCertificate(der)
		b.CAPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		b.caKey = key
		if b.CAKeyPEM, err = encodeKey(key); err != nil {
			return nil, err
		}
		if prev != nil && prev.CA.NotAfter.After(now) {
			b.OldCAs = prev.CAPEM // still trusted until it expires
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	var dns []string
	var ips []net.IP
	for _, h := range dnsNames {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, h)
		}
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: dnsNames[0]},
		DNSNames:     dns,
		IPAddresses:  ips,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(servingValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, b.CA, &key.PublicKey, b.caKey)
	if err != nil {
		return nil, err
	}
	b.Cert, _ = x509.ParseCertificate(der)
	b.CertPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if b.KeyPEM, err = encodeKey(key); err != nil {
		return nil, err
	}
	return b, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	return n
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

func parseCert(data []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

func parseKey(data []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM key")
	}
	return x509.ParseECPrivateKey(block.Bytes)
}
