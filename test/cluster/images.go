package cluster

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// The images of the end-to-end suite, built from this checkout.
const (
	SidecarImage  = "localhost/pyexec:e2e"          // pyexec on the Debian Python root
	InjectorImage = "localhost/pyexec-injector:e2e" // the static injector alone, non-root
	BotImage      = "localhost/pyexec-bot:e2e"      // the sample bot on the Debian Python root
)

// PythonPackagesFile lists the Debian packages of the sidecar image, shared by the Dockerfile's
// sidecar stage and the test cluster's Python root.
const PythonPackagesFile = "config/image/sidecar-packages"

// BuildImages builds the pause, sidecar, injector and bot images from the checkout at repo and
// writes them as OCI archives into dir. The Debian Python root comes from debootstrap and is
// cached in cacheDir, keyed by the package list; it returns the archives' paths.
func BuildImages(ctx context.Context, repo, dir, cacheDir string, logf func(string, ...any)) ([]string, error) {
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return nil, err
	}
	start := time.Now()
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin+"/",
		"./cmd/pyexec", "./cmd/pyexec-injector", "./test/cluster/pause")
	build.Dir = repo
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build: %v\n%s", err, out)
	}
	logf("built the binaries in %s", time.Since(start).Round(100*time.Millisecond))
	start = time.Now()
	root, err := pythonRoot(ctx, filepath.Join(repo, PythonPackagesFile), cacheDir, logf)
	if err != nil {
		return nil, err
	}
	logf("Python root layer ready in %s", time.Since(start).Round(100*time.Millisecond))

	layer := func(name string, files ...File) (string, error) {
		p := filepath.Join(dir, name+".layer.tar")
		return p, FileLayer(p, files)
	}
	pause, err := layer("pause", File{Path: "/pause", Mode: 0o755, From: bin + "/pause"})
	if err != nil {
		return nil, err
	}
	injector, err := layer("injector", File{Path: "/pyexec-injector", Mode: 0o755, From: bin + "/pyexec-injector"})
	if err != nil {
		return nil, err
	}
	sidecar, err := layer("sidecar", File{Path: "/usr/local/bin/pyexec", Mode: 0o755, From: bin + "/pyexec"})
	if err != nil {
		return nil, err
	}
	bot, err := layer("bot",
		File{Path: "/app/pyexec_client.py", Mode: 0o644, From: filepath.Join(repo, "clients/python/pyexec_client.py")},
		File{Path: "/app/sample_bot.py", Mode: 0o644, From: filepath.Join(repo, "clients/python/sample_bot.py")})
	if err != nil {
		return nil, err
	}
	images := []Image{
		{Name: PauseImage, Layers: []string{pause}, Entrypoint: []string{"/pause"}, User: "65535:65535"},
		// As the Dockerfile's targets (the bot shares the sidecar's Python root here; its
		// Dockerfile stage has python3 alone).
		{Name: InjectorImage, Layers: []string{injector}, User: "65532:65532",
			Entrypoint: []string{"/pyexec-injector"}, Cmd: []string{"serve"}},
		{Name: SidecarImage, Layers: []string{root, sidecar}, User: "65532:65532",
			Entrypoint: []string{"/usr/local/bin/pyexec"}, Cmd: []string{"serve"}},
		{Name: BotImage, Layers: []string{root, bot}, User: "65532:65532", WorkingDir: "/app",
			Entrypoint: []string{"python3", "/app/sample_bot.py"}, Env: []string{"PYTHONUNBUFFERED=1"}},
	}
	var archives []string
	for _, img := range images {
		name := strings.NewReplacer("/", "_", ":", "_").Replace(img.Name) + ".oci.tar"
		p := filepath.Join(dir, name)
		if err := WriteImage(p, img); err != nil {
			return nil, fmt.Errorf("image %s: %w", img.Name, err)
		}
		archives = append(archives, p)
	}
	return archives, nil
}

// readPackages reads a package list: one name per line, # comments.
func readPackages(file string) ([]string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var pkgs []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		if line = strings.TrimSpace(line); line != "" {
			pkgs = append(pkgs, line)
		}
	}
	if len(pkgs) == 0 {
		return nil, fmt.Errorf("%s lists no package", file)
	}
	return pkgs, nil
}

// pythonRoot returns a layer tarball of a Debian bookworm root with the listed packages, made
// by debootstrap (from its default mirror) once and cached.
func pythonRoot(ctx context.Context, pkgFile, cacheDir string, logf func(string, ...any)) (string, error) {
	pkgs, err := readPackages(pkgFile)
	if err != nil {
		return "", err
	}
	args := []string{"--variant=minbase", "--include=" + strings.Join(pkgs, ","), "bookworm"}
	sum := sha256.Sum256([]byte(strings.Join(args, " ")))
	out := filepath.Join(cacheDir, "python-root-"+hex.EncodeToString(sum[:8])+".tar")
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return "", fmt.Errorf("debootstrap: %w (apt-get install debootstrap)", err)
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(cacheDir, "python-root-")
	if err != nil {
		return "", err
	}
	defer func() {
		// debootstrap mounts /proc and /sys (and /dev in some setups) in the root while it
		// works; if it was stopped, they are still there.
		unmountUnder(tmp)
		os.RemoveAll(tmp)
	}()
	rootDir := filepath.Join(tmp, "root")
	logf("debootstrap %s (about 2 minutes, cached after)", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, "debootstrap", append(args, rootDir)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("debootstrap: %v\n%s", err, tail(b, 20))
	}
	// Leave out what an image does not need: apt's caches and lists, the device nodes (the
	// runtime mounts /dev).
	for _, junk := range []string{"var/cache/apt/archives", "var/lib/apt/lists", "dev", "debootstrap"} {
		os.RemoveAll(filepath.Join(rootDir, junk))
	}
	if err := os.Mkdir(filepath.Join(rootDir, "dev"), 0o755); err != nil {
		return "", err
	}
	tarball := filepath.Join(tmp, "root.tar")
	if b, err := exec.CommandContext(ctx, "tar", "--numeric-owner", "-C", rootDir, "-cf", tarball, ".").CombinedOutput(); err != nil {
		return "", fmt.Errorf("tar: %v: %s", err, b)
	}
	return out, os.Rename(tarball, out)
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
