package images

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"helm.sh/helm/v3/pkg/registry"
)

// testRegistry is an OCI registry in this process; it returns its host:port.
func testRegistry(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// A small image with a gzipped layer, pushed and read back whole: the layer's digest, its diff
// ID (of the plain tar), the name's tag after a registry's port; a loopback registry is spoken
// to in plain HTTP for the images and the chart alike, without -insecure.
func TestPushSmallImageAndChart(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "layer.tar")
	if err := FileLayer(plain, []File{{Path: "/usr/local/bin/tool", Mode: 0o755, Data: []byte("#!/bin/sh\necho hi\n")}}); err != nil {
		t.Fatal(err)
	}
	gz, err := gzipTo(plain, plain+".gz")
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(dir, "tool.oci.tar")
	if err := WriteImage(archive, Image{Name: "localhost:5000/team/tool:1.0", Layers: []string{gz}, User: User, Entrypoint: []string{"/usr/local/bin/tool"}}); err != nil {
		t.Fatal(err)
	}
	reg := testRegistry(t)
	p, err := Push(context.Background(), archive, reg+"/pyexec//", false)
	if err != nil {
		t.Fatal(err)
	}
	if want := reg + "/pyexec/tool"; p.Repository != want || p.Tag != "1.0" {
		t.Fatalf("pushed %+v, want %s:1.0", p, want)
	}
	ref, err := name.ParseReference(p.Repository + ":1.0")
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(img); err != nil { // every digest, every diff ID
		t.Fatal(err)
	}
	if d, _ := img.Digest(); d.String() != p.Digest {
		t.Errorf("digest %s, Push said %s", d, p.Digest)
	}
	layers, _ := img.Layers()
	diffID, _ := layers[0].DiffID()
	if want, _, _ := layerDescriptor(plain); len(layers) != 1 || diffID.String() != want.Digest.String() {
		t.Errorf("diff ID %s, want the plain tar's digest %s", diffID, want.Digest)
	}

	c, err := PushChart(context.Background(), "../../charts/pyexec", reg+"/pyexec", false)
	if err != nil {
		t.Fatal(err)
	}
	client, err := registry.NewClient(registry.ClientOptPlainHTTP(), registry.ClientOptWriter(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	res, err := client.Pull(c.Repository + ":" + c.Tag)
	if err != nil || res.Manifest.Digest != c.Digest || res.Chart.Meta.Name != "pyexec" {
		t.Fatalf("pull %s:%s: %v %+v", c.Repository, c.Tag, err, res)
	}
}

// An archive whose entry leaves it (or is a link) is refused before anything is written out of
// place or pushed.
func TestPushRefusesABadArchive(t *testing.T) {
	for name, hdr := range map[string]tar.Header{
		"a path out":  {Name: "../escaped", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1},
		"an absolute": {Name: "/tmp/escaped", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1},
		"a symlink":   {Name: "blobs", Typeflag: tar.TypeSymlink, Linkname: "/etc"},
	} {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			if err := tw.WriteHeader(&hdr); err != nil {
				t.Fatal(err)
			}
			if hdr.Size > 0 {
				tw.Write([]byte("x"))
			}
			tw.Close()
			archive := filepath.Join(t.TempDir(), "bad.oci.tar")
			if err := os.WriteFile(archive, buf.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Push(context.Background(), archive, testRegistry(t), false)
			if err == nil || !strings.Contains(err.Error(), "bad.oci.tar") {
				t.Fatalf("Push of an archive with %s: %v", name, err)
			}
		})
	}
}

func TestSplitTag(t *testing.T) {
	for in, want := range map[string][2]string{
		"pyexec:0.1.0":                  {"pyexec", "0.1.0"},
		"localhost:5000/pyexec:e2e":     {"localhost:5000/pyexec", "e2e"},
		"localhost:5000/pyexec":         {"localhost:5000/pyexec", ""},
		"registry.internal/team/pyexec": {"registry.internal/team/pyexec", ""},
	} {
		if repo, tag := splitTag(in); repo != want[0] || tag != want[1] {
			t.Errorf("splitTag(%q) = %q, %q; want %q, %q", in, repo, tag, want[0], want[1])
		}
	}
}
