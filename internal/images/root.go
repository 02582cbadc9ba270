package images

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ReadPackages reads package lists: one name per line, # comments; the names of every file in
// order.
func ReadPackages(files ...string) ([]string, error) {
	var pkgs []string
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		n := len(pkgs)
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			line, _, _ := strings.Cut(sc.Text(), "#")
			if line = strings.TrimSpace(line); line != "" {
				pkgs = append(pkgs, line)
			}
		}
		if len(pkgs) == n {
			return nil, fmt.Errorf("%s lists no package", file)
		}
	}
	return pkgs, nil
}

// PythonRoot returns a layer tarball of a Debian bookworm root with pkgs installed, made by
// debootstrap (from its default mirror) once and cached in cacheDir, keyed by the package list.
func PythonRoot(ctx context.Context, pkgs []string, cacheDir string, logf func(string, ...any)) (string, error) {
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
		UnmountUnder(tmp)
		os.RemoveAll(tmp)
	}()
	rootDir := filepath.Join(tmp, "root")
	logf("debootstrap %s (a few minutes, cached after)", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, "debootstrap", append(args, rootDir)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("debootstrap: %v\n%s", err, Tail(b, 20))
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

// Gzipped returns layer compressed with gzip, made once next to it (a pushed image's layers
// travel compressed).
func Gzipped(layer string) (string, error) {
	if _, err := os.Stat(layer + ".gz"); err == nil {
		return layer + ".gz", nil
	}
	return gzipTo(layer, layer+".gz")
}

// gzipTo compresses the file src into out, which appears whole or not at all.
func gzipTo(src, out string) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(out), filepath.Base(out)+"-")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	zw := gzip.NewWriter(tmp)
	_, err = io.Copy(zw, in)
	if cerr := zw.Close(); err == nil {
		err = cerr
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("gzip %s: %w", src, err)
	}
	return out, os.Rename(tmp.Name(), out)
}

// Tail is the last n lines of a command's output, for an error message.
func Tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
