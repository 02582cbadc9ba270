// Package python finds the interpreter pyexec uses and inspects it in one run.
package python

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ErrNotFound is returned when no usable interpreter exists.
var ErrNotFound = errors.New("python interpreter not found")

// DefaultSystemPaths are the system interpreters of container images, in order: the official
// python images install into /usr/local, Debian and Ubuntu packages into /usr.
var DefaultSystemPaths = []string{"/usr/local/bin/python3", "/usr/bin/python3"}

// Finder decides which interpreter to use. Its fields make it testable; the zero value is not
// useful, use NewFinder.
type Finder struct {
	// SystemPaths are tried first in a container, after PATH on a host.
	SystemPaths []string
	// LookPath finds a command on PATH (exec.LookPath).
	LookPath func(file string) (string, error)
}

// NewFinder returns a Finder for this machine.
func NewFinder() Finder {
	return Finder{SystemPaths: DefaultSystemPaths, LookPath: exec.LookPath}
}

// Find returns the interpreter to use. explicit (from --python or PYEXEC_PYTHON) wins and must
// exist; a bare name is looked up on PATH. Otherwise, in a container the system Python comes
// first and python3 on PATH last; on a host python3 on PATH comes first. The result may be a shim
// (pyenv, asdf): inspection reports the real executable behind it.
func (f Finder) Find(explicit string, inContainer bool) (string, error) {
	if explicit != "" {
		if !strings.ContainsRune(explicit, filepath.Separator) {
			p, err := f.LookPath(explicit)
			if err != nil {
				return "", fmt.Errorf("%w: --python %q is not on PATH", ErrNotFound, explicit)
			}
			return p, nil
		}
		if err := checkExecutable(explicit); err != nil {
			return "", fmt.Errorf("%w: --python %s: %v", ErrNotFound, explicit, err)
		}
		return explicit, nil
	}
	var tried []string
	tryPath := func() (string, bool) {
		tried = append(tried, "python3 on PATH")
		p, err := f.LookPath("python3")
		return p, err == nil
	}
	trySystem := func() (string, bool) {
		for _, p := range f.SystemPaths {
			tried = append(tried, p)
			if checkExecutable(p) == nil {
				return p, true
			}
		}
		return "", false
	}
	order := []func() (string, bool){tryPath, trySystem}
	if inContainer {
		order = []func() (string, bool){trySystem, tryPath}
	}
	for _, try := range order {
		if p, ok := try(); ok {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: tried %s; install python3 or set --python", ErrNotFound, strings.Join(tried, ", "))
}

func checkExecutable(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("not a regular file")
	}
	if st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("not executable")
	}
	return nil
}
