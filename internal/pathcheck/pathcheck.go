// Package pathcheck finds locked paths: directories pyexec may write that are mount points, on a
// read-only filesystem, not writable by the effective user, or missing and not creatable. It
// answers with facts and a reason a person can act on; it never works around a locked path.
package pathcheck

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/pyexec/pyexec/pkg/api"
)

// DefaultMountInfo is the mount table of the calling process.
const DefaultMountInfo = "/proc/self/mountinfo"

// Mount is one line of mountinfo.
type Mount struct {
	MountPoint string
	Root       string // the path within the source filesystem that is mounted (bind mounts)
	FSType     string
	Source     string
	Options    string // per-mount options, e.g. "rw,nosuid"
}

// Checker checks paths against one reading of the mount table.
type Checker struct {
	mounts []Mount
}

// NewChecker reads the mount table at mountinfo (DefaultMountInfo for the real one).
func NewChecker(mountinfo string) (*Checker, error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return nil, fmt.Errorf("reading mount table: %w", err)
	}
	defer f.Close()
	mounts, err := ParseMountInfo(f)
	if err != nil {
		return nil, fmt.Errorf("reading mount table %s: %w", mountinfo, err)
	}
	return &Checker{mounts: mounts}, nil
}

// ParseMountInfo parses /proc/PID/mountinfo (proc(5)), octal escapes in paths undone. Unlike
// os.path.ismount, which compares device numbers, the table also shows bind mounts from the
// same filesystem.
func ParseMountInfo(r io.Reader) ([]Mount, error) {
	infos, err := mountinfo.GetMountsFromReader(r, nil)
	if err != nil {
		return nil, err
	}
	mounts := make([]Mount, len(infos))
	for i, m := range infos {
		mounts[i] = Mount{MountPoint: m.Mountpoint, Root: m.Root, FSType: m.FSType, Source: m.Source, Options: m.Options}
	}
	return mounts, nil
}

// MountAt returns the topmost mount whose mount point is exactly path (already resolved).
func (c *Checker) MountAt(path string) (Mount, bool) {
	for i := len(c.mounts) - 1; i >= 0; i-- {
		if c.mounts[i].MountPoint == path {
			return c.mounts[i], true
		}
	}
	return Mount{}, false
}

// mountFor returns the topmost mount that contains path (already resolved).
func (c *Checker) mountFor(path string) (Mount, bool) {
	best, found := Mount{}, false
	for _, m := range c.mounts {
		if within(path, m.MountPoint) && (!found || len(m.MountPoint) >= len(best.MountPoint)) {
			best, found = m, true
		}
	}
	return best, found
}

func within(path, dir string) bool {
	return dir == "/" || path == dir || strings.HasPrefix(path, dir+"/")
}

// Check answers for one path with the given role (api.Role*). With create, a missing directory
// is created (with its parents), as pyexec does for its packages and report directories;
// without it, a missing path is judged by whether its nearest existing parent would take it.
func (c *Checker) Check(path, role string, create bool) api.Path {
	res := api.Path{Path: path, Role: role}
	abs, err := filepath.Abs(path)
	if err != nil {
		return locked(res, fmt.Sprintf("%s: %v", path, err))
	}
	if _, err := os.Stat(abs); errors.Is(err, fs.ErrNotExist) {
		if !create {
			return c.checkCreatable(res, abs)
		}
		if err := os.MkdirAll(abs, 0o755); err != nil {
			res = c.checkCreatable(res, abs)
			if !res.Locked {
				res = locked(res, fmt.Sprintf("%s is missing and cannot be created: %v", path, unwrapPathError(err)))
			}
			return res
		}
	} else if err != nil {
		return locked(res, fmt.Sprintf("%s cannot be read: %v", path, unwrapPathError(err)))
	}
	res.Exists = true
	resolved, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return locked(res, fmt.Sprintf("%s cannot be resolved: %v", path, unwrapPathError(err)))
	}
	st, err := os.Stat(resolved)
	if err != nil {
		return locked(res, fmt.Sprintf("%s cannot be read: %v", path, unwrapPathError(err)))
	}
	if !st.IsDir() {
		return locked(res, fmt.Sprintf("%s is not a directory", path))
	}
	if m, ok := c.MountAt(resolved); ok {
		res.MountPoint = true
		if role == api.RoleVenv {
			res = locked(res, fmt.Sprintf("%s is a mount point (%s from %s): pyexec never replaces or deletes a mount point; "+
				"point --venv-dir at a path inside the volume or at one that is not mounted", path, m.FSType, m.Source))
		}
	}
	if ro, mount := c.readOnly(resolved); ro {
		res.ReadOnly = true
		res = locked(res, fmt.Sprintf("%s is on a read-only filesystem (mounted read-only at %s): mount a writable volume there", path, mount))
	}
	if err := probeWrite(resolved); err != nil {
		res = locked(res, fmt.Sprintf("%s is not writable by uid %d: %v", path, os.Geteuid(), err))
	} else {
		res.Writable = true
	}
	return res
}

// checkCreatable judges a missing path by its nearest existing parent.
func (c *Checker) checkCreatable(res api.Path, abs string) api.Path {
	parent := filepath.Dir(abs)
	for {
		if _, err := os.Stat(parent); err == nil {
			break
		}
		next := filepath.Dir(parent)
		if next == parent {
			return locked(res, fmt.Sprintf("%s is missing and no parent directory exists", res.Path))
		}
		parent = next
	}
	resolved, err := filepath.EvalSymlinks(parent)
	if err != nil {
		resolved = parent
	}
	if ro, mount := c.readOnly(resolved); ro {
		res.ReadOnly = true
		return locked(res, fmt.Sprintf("%s is missing and cannot be created: %s is on a read-only filesystem (mounted at %s)", res.Path, parent, mount))
	}
	if err := probeWrite(resolved); err != nil {
		return locked(res, fmt.Sprintf("%s is missing and cannot be created: %s is not writable by uid %d: %v", res.Path, parent, os.Geteuid(), err))
	}
	res.Writable = true
	return res
}

// readOnly reports whether the filesystem holding path is mounted read-only, from statfs, and
// names the mount point for the reason.
func (c *Checker) readOnly(path string) (bool, string) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil || st.Flags&unix.ST_RDONLY == 0 {
		return false, ""
	}
	if m, ok := c.mountFor(path); ok {
		return true, m.MountPoint
	}
	return true, "?"
}

// probeWrite creates and removes a real file: access(2) says yes on read-only mounts and no
// for capabilities it does not model.
func probeWrite(dir string) error {
	f, err := os.CreateTemp(dir, ".pyexec-probe-*")
	if err != nil {
		return unwrapPathError(err)
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// locked marks res locked. The first reason is kept: it is the one to fix first.
func locked(res api.Path, reason string) api.Path {
	if !res.Locked {
		res.Locked, res.Reason = true, reason
	}
	return res
}
