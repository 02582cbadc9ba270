package images

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestWriteImage reads back an archive as containerd would: index.json names the image and
// points at the manifest, every descriptor's digest and size match its blob, and the layer
// holds the files with their parents.
func TestWriteImage(t *testing.T) {
	dir := t.TempDir()
	layer := filepath.Join(dir, "layer.tar")
	if err := FileLayer(layer, []File{{Path: "/usr/local/bin/tool", Mode: 0o755, Data: []byte("#!/bin/sh\n")}}); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(dir, "image.oci.tar")
	img := Image{Name: "localhost/tool:e2e", Layers: []string{layer}, User: "65532:65532", Entrypoint: []string{"/usr/local/bin/tool"}}
	if err := WriteImage(archive, img); err != nil {
		t.Fatal(err)
	}
	files := readTar(t, archive)
	if string(files["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Fatalf("oci-layout: %q", files["oci-layout"])
	}
	blob := func(d v1.Descriptor) []byte {
		t.Helper()
		b, ok := files["blobs/sha256/"+strings.TrimPrefix(string(d.Digest), "sha256:")]
		sum := sha256.Sum256(b)
		if !ok || "sha256:"+hex.EncodeToString(sum[:]) != string(d.Digest) || int64(len(b)) != d.Size {
			t.Fatalf("blob %s: present %v, size %d, want %d", d.Digest, ok, len(b), d.Size)
		}
		return b
	}
	var index struct{ Manifests []v1.Descriptor }
	if err := json.Unmarshal(files["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json: %v %s", err, files["index.json"])
	}
	if got := index.Manifests[0].Annotations["io.containerd.image.name"]; got != img.Name {
		t.Fatalf("image name %q, want %q", got, img.Name)
	}
	// containerd imports the manifest for the platform the index names: this machine's.
	if p := index.Manifests[0].Platform; p == nil || p.Architecture != runtime.GOARCH || p.OS != "linux" {
		t.Fatalf("index platform %+v, want linux/%s", p, runtime.GOARCH)
	}
	var manifest struct {
		Config v1.Descriptor
		Layers []v1.Descriptor
	}
	if err := json.Unmarshal(blob(index.Manifests[0]), &manifest); err != nil || len(manifest.Layers) != 1 {
		t.Fatalf("manifest: %v", err)
	}
	var config struct {
		Architecture string
		Config       struct{ User string }
		RootFS       struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(blob(manifest.Config), &config); err != nil || config.Config.User != img.User ||
		len(config.RootFS.DiffIDs) != 1 || config.RootFS.DiffIDs[0] != string(manifest.Layers[0].Digest) ||
		config.Architecture != runtime.GOARCH {
		t.Fatalf("config: %v %+v", err, config)
	}
	layerPath := filepath.Join(dir, "read-layer.tar")
	if err := os.WriteFile(layerPath, blob(manifest.Layers[0]), 0o644); err != nil {
		t.Fatal(err)
	}
	entries := readTar(t, layerPath)
	for _, name := range []string{"usr/", "usr/local/", "usr/local/bin/"} {
		if _, ok := entries[name]; !ok {
			t.Errorf("layer lacks the parent directory %s", name)
		}
	}
	if string(entries["usr/local/bin/tool"]) != "#!/bin/sh\n" {
		t.Errorf("layer file: %q", entries["usr/local/bin/tool"])
	}
}

func readTar(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		out[h.Name] = b
	}
}
