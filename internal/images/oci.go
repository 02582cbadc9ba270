package images

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	_ "crypto/sha256" // digest.SHA256
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// Image describes an OCI image written by WriteImage.
type Image struct {
	Name       string   // full reference, e.g. localhost/pyexec:e2e (containerd's image name)
	Layers     []string // layer tarballs, the base first: plain, or compressed with gzip
	User       string   // e.g. 65532:65532
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
	Labels     map[string]string // the config's labels (org.opencontainers.image.*)
}

// File is one file of a layer that FileLayer writes.
type File struct {
	Path string // absolute path in the image
	Mode int64  // permission bits
	Data []byte // content, or
	From string // a file to copy the content from
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
// `ctr images import`, `skopeo copy oci-archive:` and `make push` load. Layers are written as
// they are: plain ones for a local containerd, gzipped ones for a registry.
func WriteImage(out string, img Image) error {
	// Written beside out and renamed: an archive is there whole, or not at all.
	f, err := os.CreateTemp(filepath.Dir(out), filepath.Base(out)+"-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	tw := tar.NewWriter(f)

	addBlob := func(media string, v any) (v1.Descriptor, error) {
		data, err := json.Marshal(v)
		if err != nil {
			return v1.Descriptor{}, err
		}
		d := v1.Descriptor{MediaType: media, Digest: digest.FromBytes(data), Size: int64(len(data))}
		return d, writeEntry(tw, "blobs/sha256/"+d.Digest.Encoded(), d.Size, bytes.NewReader(data))
	}
	var layers []v1.Descriptor
	var diffIDs []digest.Digest
	for _, l := range img.Layers {
		d, diffID, err := layerDescriptor(l)
		if err != nil {
			return err
		}
		lf, err := os.Open(l)
		if err != nil {
			return err
		}
		err = writeEntry(tw, "blobs/sha256/"+d.Digest.Encoded(), d.Size, lf)
		lf.Close()
		if err != nil {
			return fmt.Errorf("layer %s: %w", l, err)
		}
		layers = append(layers, d)
		diffIDs = append(diffIDs, diffID)
	}
	platform := v1.Platform{Architecture: runtime.GOARCH, OS: "linux"}
	configDesc, err := addBlob(v1.MediaTypeImageConfig, v1.Image{
		Platform: platform,
		Config: v1.ImageConfig{
			User: img.User, Entrypoint: img.Entrypoint, Cmd: img.Cmd,
			Env:        append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, img.Env...),
			WorkingDir: img.WorkingDir,
			Labels:     img.Labels,
		},
		RootFS: v1.RootFS{Type: "layers", DiffIDs: diffIDs},
	})
	if err != nil {
		return err
	}
	manifestDesc, err := addBlob(v1.MediaTypeImageManifest, v1.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: v1.MediaTypeImageManifest, Config: configDesc, Layers: layers,
	})
	if err != nil {
		return err
	}
	manifestDesc.Platform = &platform
	manifestDesc.Annotations = map[string]string{
		"io.containerd.image.name": img.Name,
		v1.AnnotationRefName:       img.Name[strings.LastIndex(img.Name, ":")+1:],
	}
	indexJSON, _ := json.Marshal(v1.Index{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: v1.MediaTypeImageIndex, Manifests: []v1.Descriptor{manifestDesc},
	})
	layout, _ := json.Marshal(v1.ImageLayout{Version: v1.ImageLayoutVersion})
	if err := writeEntry(tw, v1.ImageLayoutFile, int64(len(layout)), bytes.NewReader(layout)); err != nil {
		return err
	}
	if err := writeEntry(tw, v1.ImageIndexFile, int64(len(indexJSON)), bytes.NewReader(indexJSON)); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), out)
}

func writeEntry(tw *tar.Writer, name string, size int64, r io.Reader) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: size}); err != nil {
		return err
	}
	_, err := io.Copy(tw, r)
	return err
}

// layerDescriptor describes the layer tarball at p, plain or gzipped, and returns its diff ID
// (the digest of the plain tarball).
func layerDescriptor(p string) (v1.Descriptor, digest.Digest, error) {
	f, err := os.Open(p)
	if err != nil {
		return v1.Descriptor{}, "", err
	}
	defer f.Close()
	blob := digest.SHA256.Digester()
	br := bufio.NewReader(io.TeeReader(f, blob.Hash()))
	media, plain := v1.MediaTypeImageLayer, io.Reader(br)
	if magic, _ := br.Peek(2); bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return v1.Descriptor{}, "", fmt.Errorf("%s: %w", p, err)
		}
		media, plain = v1.MediaTypeImageLayerGzip, zr
	}
	diffID := digest.SHA256.Digester()
	if _, err := io.Copy(diffID.Hash(), plain); err != nil {
		return v1.Descriptor{}, "", fmt.Errorf("%s: %w", p, err)
	}
	// Whatever the reader left (a gzip reader stops at the end of its streams) is the blob's too.
	if _, err := io.Copy(io.Discard, br); err != nil {
		return v1.Descriptor{}, "", err
	}
	st, err := f.Stat()
	if err != nil {
		return v1.Descriptor{}, "", err
	}
	return v1.Descriptor{MediaType: media, Digest: blob.Digest(), Size: st.Size()}, diffID.Digest(), nil
}
