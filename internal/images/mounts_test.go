package images

import (
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
)

// TestMountsUnder mounts tmpfs below a directory, one mount point with a space (the kernel
// writes it as \040), and unmounts them the way cluster-down and a stopped debootstrap need.
func TestMountsUnder(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	dir := t.TempDir()
	want := []string{filepath.Join(dir, "a b"), filepath.Join(dir, "a b", "c")}
	for _, mp := range want {
		if err := os.MkdirAll(mp, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mount("tmpfs", mp, "tmpfs", 0, ""); err != nil {
			t.Skipf("cannot mount tmpfs here: %v", err)
		}
		t.Cleanup(func() { _ = syscall.Unmount(mp, syscall.MNT_DETACH) })
	}
	got, err := MountsUnder(dir)
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("MountsUnder = %q, %v; want %q", got, err, want)
	}
	if err := UnmountUnder(dir); err != nil {
		t.Fatal(err)
	}
	if got, err := MountsUnder(dir); err != nil || len(got) != 0 {
		t.Fatalf("after UnmountUnder: %q, %v", got, err)
	}
}
