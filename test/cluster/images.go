package cluster

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/pyexec/pyexec/internal/images"
)

// The images of the end-to-end suite, built from this checkout.
const (
	SidecarImage  = "localhost/pyexec:e2e"          // pyexec on the Debian Python root
	InjectorImage = "localhost/pyexec-injector:e2e" // the static injector alone, non-root
	BotImage      = "localhost/pyexec-bot:e2e"      // the sample bot on the Debian Python root
)

// BuildImages builds the pause, sidecar, injector and bot images from the checkout at repo and
// writes them as OCI archives into dir: the sidecar and injector as make images builds them
// (plain layers: the archives only travel to the node's containerd). The Debian Python root comes
// from debootstrap and is cached in cacheDir, keyed by the package list; it returns the
// archives' paths.
func BuildImages(ctx context.Context, repo, dir, cacheDir string, logf func(string, ...any)) ([]string, error) {
	bin := filepath.Join(dir, "bin")
	start := time.Now()
	if err := images.BuildBinaries(ctx, repo, bin, "", "./cmd/pyexec", "./cmd/pyexec-injector", "./test/cluster/pause"); err != nil {
		return nil, err
	}
	logf("built the binaries in %s", time.Since(start).Round(100*time.Millisecond))
	start = time.Now()
	pkgs, err := images.ReadPackages(filepath.Join(repo, images.SidecarPackagesFile))
	if err != nil {
		return nil, err
	}
	root, err := images.PythonRoot(ctx, pkgs, cacheDir, logf)
	if err != nil {
		return nil, err
	}
	logf("Python root layer ready in %s", time.Since(start).Round(100*time.Millisecond))

	layer := func(name string, files ...images.File) (string, error) {
		p := filepath.Join(dir, name+".layer.tar")
		return p, images.FileLayer(p, files)
	}
	pause, err := layer("pause", images.File{Path: "/pause", Mode: 0o755, From: bin + "/pause"})
	if err != nil {
		return nil, err
	}
	injector, err := layer("injector", images.File{Path: "/pyexec-injector", Mode: 0o755, From: bin + "/pyexec-injector"})
	if err != nil {
		return nil, err
	}
	sidecar, err := layer("sidecar", images.File{Path: "/usr/local/bin/pyexec", Mode: 0o755, From: bin + "/pyexec"})
	if err != nil {
		return nil, err
	}
	bot, err := layer("bot",
		images.File{Path: "/app/pyexec_client.py", Mode: 0o644, From: filepath.Join(repo, "clients/python/pyexec_client.py")},
		images.File{Path: "/app/sample_bot.py", Mode: 0o644, From: filepath.Join(repo, "clients/python/sample_bot.py")})
	if err != nil {
		return nil, err
	}
	imgs := []images.Image{
		{Name: PauseImage, Layers: []string{pause}, Entrypoint: []string{"/pause"}, User: "65535:65535"},
		// As the Dockerfile's targets (the bot shares the sidecar's Python root here; its
		// Dockerfile stage has python3 alone).
		{Name: InjectorImage, Layers: []string{injector}, User: images.User,
			Entrypoint: []string{"/pyexec-injector"}, Cmd: []string{"serve"}},
		{Name: SidecarImage, Layers: []string{root, sidecar}, User: images.User,
			Entrypoint: []string{"/usr/local/bin/pyexec"}, Cmd: []string{"serve"}},
		{Name: BotImage, Layers: []string{root, bot}, User: images.User, WorkingDir: "/app",
			Entrypoint: []string{"python3", "/app/sample_bot.py"}, Env: []string{"PYTHONUNBUFFERED=1"}},
	}
	var archives []string
	for _, img := range imgs {
		p := filepath.Join(dir, images.ArchiveName(img.Name))
		if err := images.WriteImage(p, img); err != nil {
			return nil, fmt.Errorf("image %s: %w", img.Name, err)
		}
		archives = append(archives, p)
	}
	return archives, nil
}
