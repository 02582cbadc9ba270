package images

import (
	"bytes"
	"encoding/json"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/registry"
	"helm.sh/helm/v3/pkg/strvals"
)

// TestMakeImagesAndPush runs make images and make push as a release would, against a registry
// in this process, then reads everything back from the registry: each image whole (every blob's
// digest, every layer's diff ID), its config, and its root run — the data-science image's
// Python imports numpy, pandas and matplotlib through pyexec init, the minimal one's does not —
// and the chart, pulled as helm pulls it and rendered with the printed install command's
// values: the injector and the sidecars pinned by the pushed digests.
func TestMakeImagesAndPush(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: debootstrap, chroot and a user switch need root")
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	const tag = "0.0.0-test"
	mk := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("make", append([]string{"-s", "-C", repo, "IMAGES_DIR=" + dir, "IMAGE_TAG=" + tag}, args...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("make %s: %v\n%s\n%s", strings.Join(args, " "), err, stdout.String(), Tail(stderr.Bytes(), 40))
		}
		t.Logf("make %s:\n%s", strings.Join(args, " "), stderr.String())
		return stdout.String()
	}
	mk("images")

	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	reg := strings.TrimPrefix(srv.URL, "http://") + "/team"
	out := mk("push", "REGISTRY="+reg, "INSECURE=1")
	t.Logf("make push:\n%s", out)

	pushed := map[string]string{} // repository:tag -> digest
	for _, m := range regexp.MustCompile(`(?m)^pushed (\S+) (sha256:[0-9a-f]{64})$`).FindAllStringSubmatch(out, -1) {
		pushed[m[1]] = m[2]
	}
	for _, want := range []string{Sidecar + ":" + tag, DataScience + ":" + tag, Injector + ":" + tag, "charts/pyexec:0.1.0"} {
		if pushed[reg+"/"+want] == "" {
			t.Fatalf("make push did not say it pushed %s/%s:\n%s", reg, want, out)
		}
	}

	for _, image := range []string{Sidecar, DataScience, Injector} {
		ref, err := name.ParseReference(reg+"/"+image+":"+tag, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		img, err := remote.Image(ref)
		if err != nil {
			t.Fatalf("pull %s: %v", ref, err)
		}
		if err := validate.Image(img); err != nil {
			t.Fatalf("%s is not whole: %v", ref, err)
		}
		if d, _ := img.Digest(); d.String() != pushed[ref.String()] {
			t.Errorf("%s has digest %s, make push said %s", ref, d, pushed[ref.String()])
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Config.User != User || cfg.Config.Labels["org.opencontainers.image.version"] != tag ||
			cfg.Config.Labels["org.opencontainers.image.licenses"] != "Apache-2.0" || cfg.OS != "linux" {
			t.Errorf("%s config: user %q, labels %v, os %q", ref, cfg.Config.User, cfg.Config.Labels, cfg.OS)
		}
		layers, _ := img.Layers()
		for _, l := range layers {
			if mt, _ := l.MediaType(); !strings.HasSuffix(string(mt), "tar+gzip") {
				t.Errorf("%s has a layer of media type %s: a registry's layers travel compressed", ref, mt)
			}
		}
		if image == Injector {
			if cfg.Config.Entrypoint[0] != "/pyexec-injector" || len(layers) != 1 {
				t.Errorf("the injector image: entrypoint %q, %d layers", cfg.Config.Entrypoint, len(layers))
			}
			continue
		}
		root := unpack(t, img)
		out, err := inRoot(root, "/usr/local/bin/pyexec", "init", "--preload", "numpy,pandas,matplotlib.pyplot",
			"--packages-dir", "/tmp/packages", "--report", "/tmp/preflight.json")
		// A module that does not import is a problem the report names, not a failed init.
		if image == DataScience && (err != nil || strings.Contains(out, "(failed)") || !strings.Contains(out, "preload=numpy")) {
			t.Errorf("pyexec init --preload numpy,pandas,matplotlib.pyplot in %s: %v\n%s", image, err, out)
		}
		if image == Sidecar && !strings.Contains(out, "numpy(failed)") {
			t.Errorf("pyexec init --preload numpy in the minimal image imported it: %v\n%s", err, out)
		}
		if out, err := inRoot(root, "/usr/local/bin/pyexec", "--version"); err != nil || !strings.Contains(out, "pyexec") {
			t.Errorf("pyexec --version in %s: %v %s", image, err, out)
		}
	}

	// The chart, as helm install oci://... pulls it, rendered with the printed command's values.
	client, err := registry.NewClient(registry.ClientOptPlainHTTP(), registry.ClientOptWriter(&bytes.Buffer{}))
	if err != nil {
		t.Fatal(err)
	}
	res, err := client.Pull(reg + "/charts/pyexec:0.1.0")
	if err != nil {
		t.Fatalf("helm pull: %v", err)
	}
	ch, err := loader.LoadArchive(bytes.NewReader(res.Chart.Data))
	if err != nil || ch.Name() != "pyexec" {
		t.Fatalf("the pulled chart: %v %v", err, ch)
	}
	_, install, ok := strings.Cut(out, "helm install")
	if !ok {
		t.Fatalf("make push printed no helm install:\n%s", out)
	}
	vals := map[string]any{}
	for _, m := range regexp.MustCompile(`--set (\S+)`).FindAllStringSubmatch(install, -1) {
		if err := strvals.ParseInto(m[1], vals); err != nil {
			t.Fatal(err)
		}
	}
	if len(vals) != 2 {
		t.Fatalf("the install command sets %v:\n%s", vals, install)
	}
	rv, err := chartutil.ToRenderValues(ch, vals, chartutil.ReleaseOptions{Name: "pyexec", Namespace: "pyexec-system", IsInstall: true}, chartutil.DefaultCapabilities)
	if err != nil {
		t.Fatal(err)
	}
	rendered, err := engine.Engine{Strict: true}.Render(ch, rv)
	if err != nil {
		t.Fatal(err)
	}
	all, _ := json.Marshal(rendered)
	for _, want := range []string{reg + "/" + Injector + "@" + pushed[reg+"/"+Injector+":"+tag], reg + "/" + Sidecar + "@" + pushed[reg+"/"+Sidecar+":"+tag]} {
		if !strings.Contains(string(all), want) {
			t.Errorf("the chart rendered with the install command's values does not name %s", want)
		}
	}
}

// unpack writes an image's root, as a runtime would, into a directory.
func unpack(t *testing.T, img v1.Image) string {
	t.Helper()
	root := t.TempDir()
	rc := mutate.Extract(img)
	defer rc.Close()
	cmd := exec.Command("tar", "--numeric-owner", "-x", "-C", root)
	cmd.Stdin = rc
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("unpack: %v %s", err, out)
	}
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	proc := filepath.Join(root, "proc")
	if err := syscall.Mount("proc", proc, "proc", 0, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(proc, syscall.MNT_DETACH) })
	return root
}

// inRoot runs a command in root as the images' user.
func inRoot(root string, args ...string) (string, error) {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root, Credential: &syscall.Credential{Uid: 65532, Gid: 65532}}
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "PYEXEC_CONTAINER=true", "HOME=/tmp"}
	out, err := cmd.CombinedOutput()
	return string(out), err
}
