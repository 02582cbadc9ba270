package executor

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
)

// The directories of executions and sessions.
//
// In a pod the server makes them and the runner fills them: the server (pyexec serve) owns the
// work root and each execution's or session's directory, with the pod's group and mode
// DirMode, so the runner's processes — the code among them — can create what they need inside
// but can neither change the directory's permissions nor remove it. What the code makes inside
// is the runner's, and the runner empties the directory after the execution (EmptyDir); the
// server then removes it (RemoveDir). An executor given no directory (Request.Dir empty) makes
// and removes its own, for a caller with no server in front (tests).

// DirMode is the mode of an execution's or session's directory: the owner (the server) and the
// group (the runner) read, write and enter it; nobody else does.
const DirMode = 0o770

// WorkRootMode is the mode of the work root: the runner enters it to reach the directories it
// is given, but can neither list it (it learns no other execution's directory) nor make
// anything in it.
const WorkRootMode = 0o710

// dirName is what MakeDir names a directory: a random name no execution can guess.
var dirName = regexp.MustCompile(`^x-[0-9a-f]{24}$`)

// IsDirName says whether name is one MakeDir gives.
func IsDirName(name string) bool { return dirName.MatchString(name) }

// MakeDir makes a fresh directory for one execution or session in root, with mode DirMode and
// group gid (-1 keeps the process's), and returns its path.
func MakeDir(root string, gid int) (string, error) {
	var rnd [12]byte
	_, _ = rand.Read(rnd[:])
	dir := filepath.Join(root, "x-"+hex.EncodeToString(rnd[:]))
	if err := os.Mkdir(dir, DirMode); err != nil {
		return "", fmt.Errorf("creating the working directory: %w", err)
	}
	// Mkdir's mode went through the umask, and the group is the runner's way in.
	if err := setGroupMode(dir, gid, DirMode); err != nil {
		_ = os.Remove(dir)
		return "", fmt.Errorf("creating the working directory: %w", err)
	}
	return dir, nil
}

// setGroupMode gives path the group gid (-1: leave it) and mode.
func setGroupMode(path string, gid int, mode os.FileMode) error {
	if gid >= 0 && gid != os.Getegid() {
		if err := os.Lchown(path, -1, gid); err != nil {
			return err
		}
	}
	return os.Chmod(path, mode)
}

// PrepareWorkRoot makes root, the work root, if it is missing and gives it group gid and mode
// WorkRootMode, with the zygote's directory in it. The caller is its owner (the server).
func PrepareWorkRoot(root string, gid int) error {
	if err := os.MkdirAll(root, WorkRootMode); err != nil {
		return fmt.Errorf("work dir: %w", err)
	}
	if err := setGroupMode(root, gid, WorkRootMode); err != nil {
		return fmt.Errorf("work dir %s: %w", root, err)
	}
	zygote := filepath.Join(root, zygoteConfigDir)
	if err := os.Mkdir(zygote, DirMode); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("work dir: %w", err)
	}
	if err := setGroupMode(zygote, gid, DirMode); err != nil {
		return fmt.Errorf("work dir %s: %w", zygote, err)
	}
	return nil
}

// ErrNotEmpty is RemoveDir's error for a directory that still holds what the runner did not
// empty.
var ErrNotEmpty = errors.New("the directory is not empty")

// RemoveDir removes an execution's or session's directory that the runner has emptied.
func RemoveDir(dir string) error {
	err := os.Remove(dir)
	switch {
	case err == nil, errors.Is(err, os.ErrNotExist):
		return nil
	case errors.Is(err, syscall.ENOTEMPTY), errors.Is(err, syscall.EEXIST):
		return fmt.Errorf("%s: %w", dir, ErrNotEmpty)
	}
	return err
}

// checkGivenDir checks a directory a caller gave with a request: one MakeDir made in root.
func checkGivenDir(root, dir string) error {
	if filepath.Dir(dir) != filepath.Clean(root) || !dirName.MatchString(filepath.Base(dir)) {
		return fmt.Errorf("directory %q: not one of the work dir %s", dir, root)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("directory %q: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("directory %q: not a directory", dir)
	}
	return nil
}

// EmptyDir removes everything in dir, also where the code took away the permissions of what it
// made, and leaves dir itself. It reads dir walkBatch names at a time, so that a directory of
// very many files is never held whole: an entry removed meanwhile does not hide the others.
func EmptyDir(dir string) {
	f, err := os.Open(dir)
	if err != nil {
		return
	}
	defer f.Close()
	for {
		names, err := f.Readdirnames(walkBatch)
		for _, name := range names {
			removeAll(filepath.Join(dir, name))
		}
		if err != nil { // io.EOF at the end
			return
		}
	}
}
