package testutil

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// KubeAssets returns the directory of kube-apiserver and etcd for envtest: $KUBEBUILDER_ASSETS,
// or what test/tools/build.sh of this module builds (cached; the first build takes about 15
// minutes on 2 cores).
func KubeAssets() (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	fmt.Fprintln(os.Stderr, "KUBEBUILDER_ASSETS is not set; building kube-apiserver and etcd with test/tools/build.sh")
	cmd := exec.Command("bash", filepath.Join(root, "test", "tools", "build.sh"))
	cmd.Dir, cmd.Stderr = root, os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("test/tools/build.sh: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// moduleRoot is the directory of the go.mod above the working directory (a test's package).
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above %s", dir)
		}
		dir = parent
	}
}

// SyncBuffer collects output written from several goroutines (a component's log).
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
