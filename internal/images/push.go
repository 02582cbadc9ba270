package images

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/registry"
)

// Pushed is what a push put in the registry.
type Pushed struct {
	Repository string // e.g. registry.internal:5000/team/pyexec
	Tag        string
	Digest     string // sha256:...
}

// String is the reference by digest: REPOSITORY@sha256:....
func (p Pushed) String() string { return p.Repository + "@" + p.Digest }

// Push pushes the image of an OCI archive (written by WriteImage) to dest, a registry host with
// an optional path, as dest/NAME:TAG where NAME:TAG is the archive's image name. Credentials
// come from the Docker config (docker login, or ~/.docker/config.json); insecure allows plain
// HTTP.
func Push(ctx context.Context, archive, dest string, insecure bool) (Pushed, error) {
	dir, err := os.MkdirTemp("", "pyexec-push-")
	if err != nil {
		return Pushed{}, err
	}
	defer os.RemoveAll(dir)
	if err := untar(archive, dir); err != nil {
		return Pushed{}, fmt.Errorf("%s: %w", archive, err)
	}
	index, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return Pushed{}, fmt.Errorf("%s is not an OCI archive: %w", archive, err)
	}
	manifest, err := index.IndexManifest()
	if err != nil {
		return Pushed{}, fmt.Errorf("%s: %w", archive, err)
	}
	if len(manifest.Manifests) != 1 {
		return Pushed{}, fmt.Errorf("%s holds %d images, want one", archive, len(manifest.Manifests))
	}
	desc := manifest.Manifests[0]
	image := desc.Annotations["io.containerd.image.name"]
	repo, tag := splitTag(image)
	if repo == "" || tag == "" {
		return Pushed{}, fmt.Errorf("%s names no image NAME:TAG (annotation io.containerd.image.name %q)", archive, image)
	}
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	ref, err := name.NewTag(strings.TrimRight(dest, "/")+"/"+path.Base(repo)+":"+tag, opts...)
	if err != nil {
		return Pushed{}, fmt.Errorf("registry %q: %w", dest, err)
	}
	img, err := index.Image(desc.Digest)
	if err != nil {
		return Pushed{}, fmt.Errorf("%s: %w", archive, err)
	}
	if err := remote.Write(ref, img, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
		return Pushed{}, fmt.Errorf("push %s: %w", ref, err)
	}
	return Pushed{Repository: ref.Context().Name(), Tag: tag, Digest: desc.Digest.String()}, nil
}

// PushChart packages the chart at dir and pushes it as an OCI artifact to dest/charts/NAME:VERSION,
// as helm push does (helm install oci://DEST/charts/NAME --version VERSION installs it).
// Credentials come from helm registry login; insecure allows plain HTTP.
func PushChart(ctx context.Context, dir, dest string, insecure bool) (Pushed, error) {
	chart, err := loader.Load(dir)
	if err != nil {
		return Pushed{}, fmt.Errorf("chart %s: %w", dir, err)
	}
	tmp, err := os.MkdirTemp("", "pyexec-chart-")
	if err != nil {
		return Pushed{}, err
	}
	defer os.RemoveAll(tmp)
	pkg, err := chartutil.Save(chart, tmp)
	if err != nil {
		return Pushed{}, err
	}
	data, err := os.ReadFile(pkg)
	if err != nil {
		return Pushed{}, err
	}
	opts := []registry.ClientOption{registry.ClientOptWriter(io.Discard)}
	if plainHTTP(dest, insecure) {
		opts = append(opts, registry.ClientOptPlainHTTP())
	}
	client, err := registry.NewClient(opts...)
	if err != nil {
		return Pushed{}, err
	}
	repo := strings.TrimRight(dest, "/") + "/charts/" + chart.Name()
	res, err := client.Push(data, repo+":"+chart.Metadata.Version)
	if err != nil {
		return Pushed{}, fmt.Errorf("push chart %s: %w", repo, err)
	}
	_ = ctx // helm's registry client takes no context
	return Pushed{Repository: repo, Tag: chart.Metadata.Version, Digest: res.Manifest.Digest}, nil
}

// splitTag splits an image name at its tag: the last colon after the last slash (a
// registry's port is not a tag).
func splitTag(image string) (repo, tag string) {
	i := strings.LastIndex(image, ":")
	if i < 0 || i < strings.LastIndex(image, "/") {
		return image, ""
	}
	return image[:i], image[i+1:]
}

// plainHTTP tells whether the registry at dest (HOST[:PORT][/PATH]) is spoken to in plain
// HTTP: when asked, and, as go-containerregistry does for the images, for localhost and
// loopback or private addresses — so that the chart goes where the images went.
func plainHTTP(dest string, insecure bool) bool {
	host, _, _ := strings.Cut(dest, "/")
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	reg, err := name.NewRegistry(host, opts...)
	return err == nil && reg.Scheme() == "http"
}

// untar unpacks an archive written by WriteImage: regular files and directories, every name
// inside dir.
func untar(archive, dir string) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if !filepath.IsLocal(h.Name) {
			return fmt.Errorf("entry %q leaves the archive", h.Name)
		}
		p := filepath.Join(dir, h.Name)
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case tar.TypeReg:
			err = writeFile(p, tr)
		default:
			err = fmt.Errorf("entry %q is not a file", h.Name)
		}
		if err != nil {
			return err
		}
	}
}

func writeFile(p string, r io.Reader) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// InstallCommand is the helm install of a pushed chart with the pushed images pinned by digest
// (the injector and sidecar may be zero: the chart's defaults stay).
func InstallCommand(chart, injector, sidecar Pushed) string {
	cmd := []string{"helm install pyexec oci://" + chart.Repository, "--version " + chart.Tag,
		"--namespace pyexec-system --create-namespace"}
	if injector.Digest != "" {
		cmd = append(cmd, "--set image.repository="+injector.Repository, "--set image.digest="+injector.Digest)
	}
	if sidecar.Digest != "" {
		cmd = append(cmd, "--set sidecar.image.repository="+sidecar.Repository, "--set sidecar.image.digest="+sidecar.Digest)
	}
	return strings.Join(cmd, " \\\n  ")
}
