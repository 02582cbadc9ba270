package images

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"

	"github.com/moby/sys/mountinfo"
)

// MountsUnder lists the mount points below dir, in mount order.
func MountsUnder(dir string) ([]string, error) {
	below, err := mountinfo.GetMounts(func(m *mountinfo.Info) (skip, stop bool) {
		return !strings.HasPrefix(m.Mountpoint, dir+"/"), false
	})
	if err != nil {
		return nil, err
	}
	mounts := make([]string, len(below))
	for i, m := range below {
		mounts[i] = m.Mountpoint
	}
	return mounts, nil
}

// UnmountUnder unmounts every mount below dir, the deepest first: debootstrap mounts /proc and
// /sys in the root it makes, and a cluster's containers leave theirs.
func UnmountUnder(dir string) error {
	mounts, err := MountsUnder(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, mp := range slices.Backward(mounts) {
		if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mp, err))
		}
	}
	return errors.Join(errs...)
}
