// Package krew packages kubectl-pyexec for Krew, the kubectl plugin manager: one .tar.gz
// archive per platform (the binary and the LICENSE) and the plugin manifest (pyexec.yaml) that
// names each archive's URL and SHA-256, in the format Krew's index takes
// (krew.googlecontainertools.github.com/v1alpha2, kind Plugin). `make krew` writes them.
package krew

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Name is the plugin's name: `kubectl pyexec`, manifest pyexec.yaml.
const Name = "pyexec"

// Binary is the plugin's executable on os.
func Binary(os string) string {
	if os == "windows" {
		return "kubectl-pyexec.exe"
	}
	return "kubectl-pyexec"
}

// Manifest is a Krew plugin manifest.
type Manifest struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Metadata   Metadata `json:"metadata"`
	Spec       Spec     `json:"spec"`
}

// Metadata names the plugin.
type Metadata struct {
	Name string `json:"name"`
}

// Spec is what Krew installs.
type Spec struct {
	Version          string     `json:"version"`
	Homepage         string     `json:"homepage"`
	ShortDescription string     `json:"shortDescription"`
	Description      string     `json:"description"`
	Platforms        []Platform `json:"platforms"`
}

// Platform is one archive, for the os and arch of its selector.
type Platform struct {
	Selector Selector `json:"selector"`
	URI      string   `json:"uri"`
	Sha256   string   `json:"sha256"`
	Files    []File   `json:"files"`
	Bin      string   `json:"bin"`
}

// Selector selects a platform by os and arch.
type Selector struct {
	MatchLabels map[string]string `json:"matchLabels"`
}

// File is copied from the archive into the plugin's directory.
type File struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// Archive is one platform's archive.
type Archive struct {
	OS, Arch string
	Name     string // pyexec_OS_ARCH.tar.gz
	Data     []byte
}

// Pack makes the archive of one platform: the binary (mode 0755) and the license, both at the
// archive's top, with a fixed time so that the same inputs give the same bytes.
func Pack(os, arch string, binary, license []byte) (Archive, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	when := time.Unix(0, 0)
	for _, f := range []struct {
		name string
		mode int64
		data []byte
	}{{Binary(os), 0o755, binary}, {"LICENSE", 0o644, license}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data)), ModTime: when, Typeflag: tar.TypeReg}); err != nil {
			return Archive{}, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return Archive{}, err
		}
	}
	if err := tw.Close(); err != nil {
		return Archive{}, err
	}
	if err := zw.Close(); err != nil {
		return Archive{}, err
	}
	return Archive{OS: os, Arch: arch, Name: fmt.Sprintf("%s_%s_%s.tar.gz", Name, os, arch), Data: buf.Bytes()}, nil
}

// NewManifest is the manifest of archives at version (vMAJOR.MINOR.PATCH), each downloaded from
// baseURL + "/" + its name.
func NewManifest(version, homepage, baseURL string, archives []Archive) ([]byte, error) {
	m := Manifest{APIVersion: "krew.googlecontainertools.github.com/v1alpha2", Kind: "Plugin", Metadata: Metadata{Name: Name},
		Spec: Spec{Version: version, Homepage: homepage,
			ShortDescription: "Run Python in pyexec sidecars and check their install",
			Description: "kubectl pyexec looks at the pods that asked for the pyexec sidecar (label pyexec.dev/inject=true)\n" +
				"and at the injector's install: status shows each pod's injection, preflight, readiness and\n" +
				"metrics; report prints a pod's preflight report; run runs Python in a pod's sidecar; check\n" +
				"names each problem of the install with its fix.\n"}}
	for _, a := range archives {
		sum := sha256.Sum256(a.Data)
		m.Spec.Platforms = append(m.Spec.Platforms, Platform{
			Selector: Selector{MatchLabels: map[string]string{"os": a.OS, "arch": a.Arch}},
			URI:      strings.TrimSuffix(baseURL, "/") + "/" + a.Name, Sha256: hex.EncodeToString(sum[:]),
			Files: []File{{From: Binary(a.OS), To: "."}, {From: "LICENSE", To: "."}}, Bin: Binary(a.OS),
		})
	}
	if err := Validate(m); err != nil {
		return nil, err
	}
	return yaml.Marshal(m)
}

var semver = regexp.MustCompile(`^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`)

// Validate checks m as Krew's index does what the manifest's format says: the name, a
// semantic version with its v, a homepage and descriptions, and for each platform one os and
// arch (no two alike), an https URI, a SHA-256, the bin among the files it copies.
func Validate(m Manifest) error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if m.APIVersion != "krew.googlecontainertools.github.com/v1alpha2" || m.Kind != "Plugin" {
		bad("apiVersion %q, kind %q: want krew.googlecontainertools.github.com/v1alpha2, Plugin", m.APIVersion, m.Kind)
	}
	if m.Metadata.Name != Name {
		bad("metadata.name %q: want %q (the manifest is %s.yaml)", m.Metadata.Name, Name, Name)
	}
	if !semver.MatchString(m.Spec.Version) {
		bad("spec.version %q: want a semantic version with its v (v1.2.3)", m.Spec.Version)
	}
	if !strings.HasPrefix(m.Spec.Homepage, "https://") || m.Spec.ShortDescription == "" || m.Spec.Description == "" {
		bad("spec: want an https homepage, a shortDescription and a description")
	}
	if len(m.Spec.Platforms) == 0 {
		bad("spec.platforms: none")
	}
	var seen []string
	for i, p := range m.Spec.Platforms {
		os, arch := p.Selector.MatchLabels["os"], p.Selector.MatchLabels["arch"]
		key := os + "/" + arch
		switch {
		case os == "" || arch == "" || len(p.Selector.MatchLabels) != 2:
			bad("platform %d: want a selector of os and arch, got %v", i, p.Selector.MatchLabels)
		case slices.Contains(seen, key):
			bad("platform %d: %s twice", i, key)
		}
		seen = append(seen, key)
		if !strings.HasPrefix(p.URI, "https://") || path.Ext(p.URI) != ".gz" {
			bad("platform %s: uri %q: want https and a .tar.gz", key, p.URI)
		}
		if b, err := hex.DecodeString(p.Sha256); err != nil || len(b) != sha256.Size {
			bad("platform %s: sha256 %q is not one", key, p.Sha256)
		}
		if p.Bin != Binary(os) || !slices.ContainsFunc(p.Files, func(f File) bool { return f.From == p.Bin }) {
			bad("platform %s: bin %q must be %q and among the files", key, p.Bin, Binary(os))
		}
	}
	return errors.Join(errs...)
}

// Entry reads one file of an archive (krew extracts it so).
func Entry(archive []byte, name string) ([]byte, int64, error) {
	zr, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		return nil, 0, err
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err != nil {
			return nil, 0, fmt.Errorf("%s: %w", name, err)
		}
		if h.Name == name {
			data, err := io.ReadAll(tr)
			return data, h.Mode, err
		}
	}
}
