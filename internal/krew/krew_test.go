package krew

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// The archives and the manifest as Krew takes them: the manifest reads back valid, each
// platform's sha256 is its archive's, and the Linux archive holds the real plugin (it runs, as
// Krew installs it) and the project's LICENSE.
func TestArchivesAndManifest(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "kubectl-pyexec")
	build := exec.Command("go", "build", "-o", bin, "./cmd/kubectl-pyexec")
	build.Dir = "../.."
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	binary, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	license, err := os.ReadFile("../../LICENSE")
	if err != nil || !bytes.Contains(license, []byte("Apache License")) {
		t.Fatalf("LICENSE: %v", err)
	}
	linux, err := Pack("linux", "amd64", binary, license)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := Pack("linux", "amd64", binary, license)
	if !bytes.Equal(linux.Data, again.Data) {
		t.Error("the same inputs packed twice differ")
	}
	windows, err := Pack("windows", "amd64", []byte("MZ a stand-in"), license)
	if err != nil {
		t.Fatal(err)
	}
	data, err := NewManifest("v0.1.0", "https://example.invalid/pyexec", "https://example.invalid/pyexec/releases/v0.1.0/", []Archive{linux, windows})
	if err != nil {
		t.Fatal(err)
	}
	var m Manifest
	if err := yaml.UnmarshalStrict(data, &m); err != nil {
		t.Fatalf("the manifest does not read back: %v\n%s", err, data)
	}
	if err := Validate(m); err != nil {
		t.Fatal(err)
	}
	t.Logf("pyexec.yaml:\n%s", data)
	for i, a := range []Archive{linux, windows} {
		p := m.Spec.Platforms[i]
		sum := sha256.Sum256(a.Data)
		if p.Sha256 != hex.EncodeToString(sum[:]) || p.URI != "https://example.invalid/pyexec/releases/v0.1.0/"+a.Name || p.Bin != Binary(a.OS) {
			t.Errorf("platform %d: %+v", i, p)
		}
	}
	if m.Spec.Platforms[1].Bin != "kubectl-pyexec.exe" {
		t.Errorf("windows bin %q", m.Spec.Platforms[1].Bin)
	}
	got, mode, err := Entry(linux.Data, "kubectl-pyexec")
	if err != nil || mode != 0o755 || !bytes.Equal(got, binary) {
		t.Fatalf("the binary in the archive: mode %o, %v", mode, err)
	}
	if l, _, err := Entry(linux.Data, "LICENSE"); err != nil || !bytes.Equal(l, license) {
		t.Fatalf("the LICENSE in the archive: %v", err)
	}
	installed := filepath.Join(t.TempDir(), "kubectl-pyexec")
	if err := os.WriteFile(installed, got, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(installed, "--version").CombinedOutput(); err != nil || !strings.Contains(string(out), "version") {
		t.Fatalf("the installed plugin: %v %s", err, out)
	}
}

// Validate refuses what Krew's index refuses.
func TestValidateRefuses(t *testing.T) {
	good := func() Manifest {
		return Manifest{APIVersion: "krew.googlecontainertools.github.com/v1alpha2", Kind: "Plugin", Metadata: Metadata{Name: Name},
			Spec: Spec{Version: "v1.2.3", Homepage: "https://example.invalid", ShortDescription: "s", Description: "d",
				Platforms: []Platform{{Selector: Selector{MatchLabels: map[string]string{"os": "linux", "arch": "amd64"}},
					URI: "https://example.invalid/a.tar.gz", Sha256: strings.Repeat("ab", 32), Bin: "kubectl-pyexec",
					Files: []File{{From: "kubectl-pyexec", To: "."}}}}}}
	}
	if err := Validate(good()); err != nil {
		t.Fatalf("a good manifest: %v", err)
	}
	for name, edit := range map[string]func(*Manifest){
		"version without v":   func(m *Manifest) { m.Spec.Version = "1.2.3" },
		"another name":        func(m *Manifest) { m.Metadata.Name = "other" },
		"platform twice":      func(m *Manifest) { m.Spec.Platforms = append(m.Spec.Platforms, m.Spec.Platforms[0]) },
		"http uri":            func(m *Manifest) { m.Spec.Platforms[0].URI = "http://example.invalid/a.tar.gz" },
		"short sha256":        func(m *Manifest) { m.Spec.Platforms[0].Sha256 = "abcd" },
		"bin not in files":    func(m *Manifest) { m.Spec.Platforms[0].Files = nil },
		"windows without exe": func(m *Manifest) { m.Spec.Platforms[0].Selector.MatchLabels["os"] = "windows" },
		"no platforms":        func(m *Manifest) { m.Spec.Platforms = nil },
	} {
		m := good()
		edit(&m)
		if err := Validate(m); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
