package cluster

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"strings"
)

// Image describes an OCI image written by WriteImage.
type Image struct {
	Name       string   // full reference, e.g. localhost/pyexec:e2e (containerd's image name)
	Layers     []string // uncompressed layer tarballs, the base first
	User       string   // e.g. 65532:65532
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
}

// File is one file of a layer that FileLayer writes.
type File struct {
	Path string // absolute path in the image
	Mode int64  // permission bits
	Data []byte // content, or
	From string // a file to copy the content from
}

const (
	mediaLayer    = "application/vnd.oci.image.layer.v1.tar"
	mediaConfig   = "application/vnd.oci.image.config.v1+json"
	mediaManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaIndex    = "application/vnd.oci.image.index.v1+json"
)

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    map[string]string `json:"platform,omitempty"`
}

// FileLayer writes a layer tarball holding files (and their parent directories) owned by root.
func FileLayer(out string, files []File) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	dirs := map[string]bool{}
	for _, file := range files {
		// Parents first, each once.
		var parents []string
		for d := path.Dir(file.Path); d != "/" && !dirs[d]; d = path.Dir(d) {
			parents = append([]string{d}, parents...)
			dirs[d] = true
		}
		for _, d := range parents {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: 0o755}); err != nil {
				return err
			}
		}
		data := file.Data
		if file.From != "" {
			if data, err = os.ReadFile(file.From); err != nil {
				return err
			}
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(file.Path, "/"), Mode: file.Mode, Size: int64(len(data))}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}

// WriteImage writes img as an OCI image layout in a tar archive at out, the format that
// `ctr images import` loads. Layers stay uncompressed: the archive only travels to a local
// containerd.
func WriteImage(out string, img Image) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)

	addBlob := func(media string, data []byte) (descriptor, error) {
		sum := sha256.Sum256(data)
		d := descriptor{MediaType: media, Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: int64(len(data))}
		return d, writeEntry(tw, "blobs/sha256/"+hex.EncodeToString(sum[:]), int64(len(data)), strings.NewReader(string(data)))
	}
	var layers []descriptor
	var diffIDs []string
	for _, l := range img.Layers {
		digest, size, err := fileDigest(l)
		if err != nil {
			return err
		}
		lf, err := os.Open(l)
		if err != nil {
			return err
		}
		err = writeEntry(tw, "blobs/sha256/"+digest, size, lf)
		lf.Close()
		if err != nil {
			return fmt.Errorf("layer %s: %w", l, err)
		}
		layers = append(layers, descriptor{MediaType: mediaLayer, Digest: "sha256:" + digest, Size: size})
		diffIDs = append(diffIDs, "sha256:"+digest) // uncompressed: the diff ID is the digest
	}
	config := map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"config": map[string]any{
			"User": img.User, "Entrypoint": img.Entrypoint, "Cmd": img.Cmd,
			"Env":        append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, img.Env...),
			"WorkingDir": img.WorkingDir,
		},
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
	}
	configJSON, _ := json.Marshal(config)
	configDesc, err := addBlob(mediaConfig, configJSON)
	if err != nil {
		return err
	}
	manifestJSON, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": mediaManifest, "config": configDesc, "layers": layers,
	})
	manifestDesc, err := addBlob(mediaManifest, manifestJSON)
	if err != nil {
		return err
	}
	manifestDesc.Platform = map[string]string{"architecture": "amd64", "os": "linux"}
	manifestDesc.Annotations = map[string]string{
		"io.containerd.image.name":          img.Name,
		"org.opencontainers.image.ref.name": img.Name[strings.LastIndex(img.Name, ":")+1:],
	}
	indexJSON, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": mediaIndex, "manifests": []descriptor{manifestDesc},
	})
	layout := `{"imageLayoutVersion":"1.0.0"}`
	if err := writeEntry(tw, "oci-layout", int64(len(layout)), strings.NewReader(layout)); err != nil {
		return err
	}
	if err := writeEntry(tw, "index.json", int64(len(indexJSON)), strings.NewReader(string(indexJSON))); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}

func writeEntry(tw *tar.Writer, name string, size int64, r io.Reader) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: size}); err != nil {
		return err
	}
	_, err := io.Copy(tw, r)
	return err
}

func fileDigest(p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}
