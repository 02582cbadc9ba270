package certs

import (
	"crypto/x509"
	"testing"
	"time"
)

var names = []string{"pyexec-injector.ns.svc", "pyexec-injector.ns.svc.cluster.local", "pyexec-injector.ns", "pyexec-injector"}

func TestNewBundleChainsAndParses(t *testing.T) {
	now := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	b, err := NewBundle(names, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := ParseBundle(b.Data())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(parsed.CABundle())
	if _, err := parsed.Cert.Verify(x509.VerifyOptions{DNSName: names[0], Roots: pool, CurrentTime: now}); err != nil {
		t.Fatalf("serving cert does not verify against the caBundle: %v", err)
	}
	if parsed.Due(now, names) {
		t.Error("a fresh certificate is due")
	}
	if !parsed.Due(now.Add(servingValidity-renewBefore+time.Hour), names) {
		t.Error("a certificate inside the renewal margin is not due")
	}
	if !parsed.Due(now, append(names, "other.ns.svc")) {
		t.Error("a certificate missing a DNS name is not due")
	}
}

func TestRenewalKeepsTheCA(t *testing.T) {
	now := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	first, err := NewBundle(names, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	later := now.Add(servingValidity - renewBefore + time.Hour)
	renewed, err := NewBundle(names, later, first)
	if err != nil {
		t.Fatal(err)
	}
	if string(renewed.CABundle()) != string(first.CABundle()) {
		t.Error("renewing the serving certificate changed the caBundle")
	}
	if renewed.Cert.SerialNumber.Cmp(first.Cert.SerialNumber) == 0 || !renewed.Cert.NotAfter.After(first.Cert.NotAfter) {
		t.Error("the serving certificate was not renewed")
	}
}

func TestCARenewalKeepsTheOldCATrusted(t *testing.T) {
	now := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	first, err := NewBundle(names, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	nearCAEnd := now.Add(caValidity - servingValidity) // the CA would not outlive a new cert
	renewed, err := NewBundle(names, nearCAEnd, first)
	if err != nil {
		t.Fatal(err)
	}
	if renewed.CA.SerialNumber.Cmp(first.CA.SerialNumber) == 0 {
		t.Fatal("the CA was not renewed")
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(renewed.CABundle())
	// A replica still serving the old certificate stays trusted during the switch.
	if _, err := first.Cert.Verify(x509.VerifyOptions{DNSName: names[0], Roots: pool, CurrentTime: now.Add(time.Hour)}); err != nil {
		t.Fatalf("old serving cert not trusted by the new caBundle: %v", err)
	}
	if _, err := renewed.Cert.Verify(x509.VerifyOptions{DNSName: names[0], Roots: pool, CurrentTime: nearCAEnd}); err != nil {
		t.Fatalf("new serving cert not trusted: %v", err)
	}
}

func TestParseBundleRejectsMismatch(t *testing.T) {
	now := time.Now()
	a, _ := NewBundle(names, now, nil)
	b, _ := NewBundle(names, now, nil)
	data := a.Data()
	data[KeyCert] = b.CertPEM // signed by another CA
	if _, err := ParseBundle(data); err == nil {
		t.Fatal("a certificate from another CA was accepted")
	}
	if _, err := ParseBundle(map[string][]byte{}); err == nil {
		t.Fatal("an empty Secret was accepted")
	}
}
