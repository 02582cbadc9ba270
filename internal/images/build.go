// Package images builds pyexec's images without a container engine — a Debian root made by
// debootstrap, the static binaries on top, written as OCI archives — and pushes them and the
// chart to a registry. The Dockerfile builds the same images for those who have an engine.
package images

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// The package lists of the images' Python roots, shared with the Dockerfile's stages.
const (
	SidecarPackagesFile     = "config/image/sidecar-packages"     // the system Python and pip
	DataSciencePackagesFile = "config/image/datascience-packages" // numpy, pandas, matplotlib on top
)

// The images a release has, by repository name; make push puts them under REGISTRY/.
const (
	Sidecar     = "pyexec"             // pyexec init, serve and runner on Debian's Python
	DataScience = "pyexec-datascience" // the same with numpy, pandas and matplotlib
	Injector    = "pyexec-injector"    // the admission webhook alone, on an empty root
)

// User is the uid:gid the images run as unless a pod says otherwise (the injector gives the
// server and the runner uids of their own).
const User = "65532:65532"

// Options says what Build builds and where.
type Options struct {
	Repo     string // the checkout
	Out      string // where the archives go
	CacheDir string // where Python roots are kept between builds
	Tag      string // the images' tag, e.g. 0.1.0
	Version  string // the binaries' version (internal/version)
	Logf     func(string, ...any)
}

// Build writes the sidecar, data-science and injector images as OCI archives (gzipped layers)
// into o.Out and returns their paths.
func Build(ctx context.Context, o Options) ([]string, error) {
	bin := filepath.Join(o.Out, "bin")
	if err := BuildBinaries(ctx, o.Repo, bin, o.Version, "./cmd/pyexec", "./cmd/pyexec-injector"); err != nil {
		return nil, err
	}
	layer := func(name string, files ...File) (string, error) {
		p := filepath.Join(o.Out, name+".layer.tar")
		if err := FileLayer(p, files); err != nil {
			return "", err
		}
		defer os.Remove(p)
		return gzipTo(p, p+".gz")
	}
	pyexec, err := layer("pyexec", File{Path: "/usr/local/bin/pyexec", Mode: 0o755, From: filepath.Join(bin, "pyexec")})
	if err != nil {
		return nil, err
	}
	injector, err := layer("injector", File{Path: "/pyexec-injector", Mode: 0o755, From: filepath.Join(bin, "pyexec-injector")})
	if err != nil {
		return nil, err
	}
	root := func(lists ...string) (string, error) {
		for i := range lists {
			lists[i] = filepath.Join(o.Repo, lists[i])
		}
		pkgs, err := ReadPackages(lists...)
		if err != nil {
			return "", err
		}
		start := time.Now()
		p, err := PythonRoot(ctx, pkgs, o.CacheDir, o.Logf)
		if err != nil {
			return "", err
		}
		if p, err = Gzipped(p); err != nil {
			return "", err
		}
		o.Logf("Python root %s ready in %s", strings.Join(pkgs, " "), time.Since(start).Round(100*time.Millisecond))
		return p, nil
	}
	minimal, err := root(SidecarPackagesFile)
	if err != nil {
		return nil, err
	}
	science, err := root(SidecarPackagesFile, DataSciencePackagesFile)
	if err != nil {
		return nil, err
	}
	labels := func(title, description string) map[string]string {
		return map[string]string{
			"org.opencontainers.image.title":       title,
			"org.opencontainers.image.description": description,
			"org.opencontainers.image.version":     o.Tag,
			"org.opencontainers.image.licenses":    "Apache-2.0",
			"org.opencontainers.image.source":      "https://github.com/pyexec/pyexec",
		}
	}
	images := []Image{
		{Name: Sidecar + ":" + o.Tag, Layers: []string{minimal, pyexec}, User: User,
			Entrypoint: []string{"/usr/local/bin/pyexec"}, Cmd: []string{"serve"},
			Labels: labels(Sidecar, "pyexec init, serve and runner on Debian's system Python with pip")},
		{Name: DataScience + ":" + o.Tag, Layers: []string{science, pyexec}, User: User,
			Entrypoint: []string{"/usr/local/bin/pyexec"}, Cmd: []string{"serve"},
			Labels: labels(DataScience, "pyexec on Debian's system Python with pip, numpy, pandas and matplotlib")},
		{Name: Injector + ":" + o.Tag, Layers: []string{injector}, User: User,
			Entrypoint: []string{"/pyexec-injector"}, Cmd: []string{"serve"},
			Labels: labels(Injector, "the pyexec admission webhook")},
	}
	var archives []string
	for _, img := range images {
		p := filepath.Join(o.Out, ArchiveName(img.Name))
		if err := WriteImage(p, img); err != nil {
			return nil, fmt.Errorf("image %s: %w", img.Name, err)
		}
		o.Logf("wrote %s", p)
		archives = append(archives, p)
	}
	os.Remove(pyexec)
	os.Remove(injector)
	return archives, nil
}

// ArchiveName is the file name of an image's archive: pyexec:0.1.0 -> pyexec_0.1.0.oci.tar.
func ArchiveName(image string) string {
	return strings.NewReplacer("/", "_", ":", "_").Replace(image) + ".oci.tar"
}

// BuildBinaries builds static binaries of pkgs into dir as the Dockerfile does.
func BuildBinaries(ctx context.Context, repo, dir, version string, pkgs ...string) error {
	ldflags := "-s -w"
	if version != "" {
		ldflags += " -X github.com/pyexec/pyexec/internal/version.Version=" + version
	}
	cmd := exec.CommandContext(ctx, "go", append([]string{"build", "-trimpath", "-ldflags", ldflags, "-o", dir + "/"}, pkgs...)...)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	return nil
}
