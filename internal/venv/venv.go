// Package venv creates and reuses a virtualenv that pyexec owns, on a host only. A container
// never gets one: the caller decides that from container detection.
//
// Ownership is a marker file written inside the venv before it becomes visible. A venv is
// built in a sibling temporary directory and renamed into place, so the path holds either
// nothing or a whole venv with its marker. pyexec never deletes a mount point or a directory
// without its marker.
package venv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/pyexec/pyexec/internal/pathcheck"
	"github.com/pyexec/pyexec/pkg/api"
)

// MarkerName is the file inside a venv that says pyexec created it.
const MarkerName = ".pyexec-venv"

var (
	// ErrLocked: the venv path is a mount point, read-only, not writable or not creatable.
	ErrLocked = errors.New("venv path is locked")
	// ErrNotOwned: something is at the venv path that pyexec did not create.
	ErrNotOwned = errors.New("venv path holds a directory pyexec did not create")
	// ErrCreate: the interpreter could not build the venv.
	ErrCreate = errors.New("creating the venv failed")
)

// Options say where the venv goes and what builds it.
type Options struct {
	Dir     string
	Base    string   // the interpreter that creates the venv (python -m venv)
	Env     []string // environment of that run
	Checker *pathcheck.Checker
}

// Result is a usable venv.
type Result struct {
	Python  string   // the venv's interpreter
	Created bool     // false when an existing pyexec venv was reused
	Path    api.Path // the locked-path check of Dir
}

type marker struct {
	CreatedBy string `json:"created_by"`
	Base      string `json:"base"`
	CreatedAt string `json:"created_at"`
}

// Ensure returns the interpreter of the pyexec venv at opts.Dir, creating the venv when the
// path is free, rebuilding it when pyexec's own venv there has lost its interpreter, and
// refusing everything else.
func Ensure(ctx context.Context, opts Options) (Result, error) {
	res := Result{Path: opts.Checker.Check(opts.Dir, api.RoleVenv, false)}
	if res.Path.Locked {
		return res, fmt.Errorf("%w: %s", ErrLocked, res.Path.Reason)
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return res, err
	}
	res.Python = filepath.Join(dir, "bin", "python3")
	if res.Path.Exists {
		if !owned(dir) {
			return res, fmt.Errorf("%w: %s exists and has no %s marker; pyexec will neither use nor delete it: "+
				"remove it yourself or choose another --venv-dir", ErrNotOwned, opts.Dir, MarkerName)
		}
		if isFile(res.Python) {
			return res, nil
		}
	}
	if err := create(ctx, opts, dir); err != nil {
		return res, err
	}
	res.Created = true
	return res, nil
}

func owned(dir string) bool { return isFile(filepath.Join(dir, MarkerName)) }

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// create builds the venv next to dir and renames it into place. When dir holds pyexec's own
// broken venv, that is moved aside first and removed after the swap.
func create(ctx context.Context, opts Options, dir string) error {
	parent, name := filepath.Split(dir)
	tmp, err := os.MkdirTemp(parent, "."+name+".pyexec-tmp-")
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCreate, err)
	}
	defer os.RemoveAll(tmp) // ours; gone after a successful rename

	cmd := exec.CommandContext(ctx, opts.Base, "-m", "venv", tmp)
	cmd.Env = opts.Env
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w: %s -m venv: %v: %s", ErrCreate, opts.Base, err, strings.TrimSpace(string(out)))
	}
	// Scripts and pyvenv.cfg name the directory they were built in; they must name dir.
	if err := rewritePaths(tmp, dir); err != nil {
		return fmt.Errorf("%w: %v", ErrCreate, err)
	}
	m, _ := json.Marshal(marker{CreatedBy: "pyexec", Base: opts.Base, CreatedAt: time.Now().UTC().Format(time.RFC3339)})
	if err := os.WriteFile(filepath.Join(tmp, MarkerName), append(m, '\n'), 0o644); err != nil {
		return fmt.Errorf("%w: %v", ErrCreate, err)
	}

	var old string
	if owned(dir) {
		old = tmp + ".old"
		if err := os.Rename(dir, old); err != nil {
			return fmt.Errorf("%w: moving the broken venv aside: %v", ErrCreate, err)
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		if old != "" {
			_ = os.Rename(old, dir) // put ours back as it was
		}
		// Another pyexec may have won the race: its venv is as good as ours.
		if errors.Is(err, fs.ErrExist) || errors.Is(err, syscall.ENOTEMPTY) {
			if owned(dir) {
				return nil
			}
		}
		return fmt.Errorf("%w: %v", ErrCreate, err)
	}
	if old != "" {
		return os.RemoveAll(old) // pyexec's own broken venv, checked by its marker above
	}
	return nil
}

// rewritePaths replaces the build directory with the final one in bin/ scripts and pyvenv.cfg.
func rewritePaths(tmp, final string) error {
	files := []string{filepath.Join(tmp, "pyvenv.cfg")}
	entries, err := os.ReadDir(filepath.Join(tmp, "bin"))
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.Type().IsRegular() {
			files = append(files, filepath.Join(tmp, "bin", e.Name()))
		}
	}
	from, to := []byte(tmp), []byte(final)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return err
		}
		if !bytes.Contains(data, from) {
			continue
		}
		st, err := os.Stat(f)
		if err != nil {
			return err
		}
		if err := os.WriteFile(f, bytes.ReplaceAll(data, from, to), st.Mode().Perm()); err != nil {
			return err
		}
	}
	return nil
}
