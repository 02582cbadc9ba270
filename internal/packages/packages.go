// Package packages installs Python packages into pyexec's packages directory with the
// interpreter's own pip (pip install --target), never into system site-packages and never
// into a venv in a container.
//
// Layout of the packages directory:
//
//	current -> trees/<id>        the tree executions put on sys.path (a relative symlink)
//	trees/<id>/                  complete trees, one per install; older ones are removed later
//	.pyexec-manifest.json        every requirement installed so far: the recipe of the tree
//	.pyexec-packages.lock        flock(2) serialises installs, across processes and sidecars
//	.cache/, .home/              pip's cache and HOME
//
// Each install builds a whole new tree from the manifest plus the new requirements in a
// staging directory, so pip resolves them together and a conflict fails the install; then the
// current symlink is swapped with rename(2). An execution resolves the symlink once when it
// starts, so it sees the old tree or the new one for its whole run, never a half-written one;
// a failed install leaves the current tree and the manifest as they were. Old trees are kept
// for a grace period (longer than any execution may run) before they are removed.
package packages

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pyexec/pyexec/internal/pyreq"
	"github.com/pyexec/pyexec/pkg/api"
)

const (
	currentLink  = "current"
	treesDir     = "trees"
	manifestFile = ".pyexec-manifest.json"
	lockFile     = ".pyexec-packages.lock"
	maxOutput    = 64 << 10
)

var (
	// ErrLocked: the packages directory cannot be written (read-only, not writable, missing).
	ErrLocked = errors.New("packages dir is locked")
	// ErrBusy: another install held the lock until the context ended.
	ErrBusy = errors.New("another install is running")
)

// InstallError is a pip run that failed; Output is the end of what pip printed.
type InstallError struct {
	Err    error
	Output string
}

func (e *InstallError) Error() string {
	return fmt.Sprintf("pip install failed (%v): %s", e.Err, strings.TrimSpace(e.Output))
}

func (e *InstallError) Unwrap() error { return e.Err }

// Index holds the index settings passed through to pip; empty fields leave pip's defaults
// (and the image's pip configuration) alone.
type Index struct {
	IndexURL      string
	ExtraIndexURL []string
	FindLinks     []string
	NoIndex       bool
	TrustedHosts  []string
}

func (x Index) args() []string {
	var a []string
	if x.IndexURL != "" {
		a = append(a, "--index-url", x.IndexURL)
	}
	for _, u := range x.ExtraIndexURL {
		a = append(a, "--extra-index-url", u)
	}
	for _, f := range x.FindLinks {
		a = append(a, "--find-links", f)
	}
	if x.NoIndex {
		a = append(a, "--no-index")
	}
	for _, h := range x.TrustedHosts {
		a = append(a, "--trusted-host", h)
	}
	return a
}

// Config configures an Installer.
type Config struct {
	Dir    string // the packages directory
	Python string // the interpreter whose pip installs
	Index  Index
	// Timeout bounds one pip run.
	Timeout time.Duration
	// Grace is how long a replaced tree is kept for executions that still use it.
	Grace time.Duration
	// Env is the base environment of pip (PATH, LANG); HOME and the cache are added.
	Env []string
	// Start and Done, when set, start and release pip's process (the server's reaper).
	Start func(*exec.Cmd) error
	Done  func(pid int)
}

// Installer installs into one packages directory.
type Installer struct {
	cfg Config
}

// New returns an Installer; nothing is touched until Install.
func New(cfg Config) *Installer { return &Installer{cfg: cfg} }

// Tree returns the absolute path of the current tree, or "" before the first install.
// Executions call it once when they start.
func (in *Installer) Tree() string { return Tree(in.cfg.Dir) }

// Tree returns the current tree of the packages directory dir, or "".
func Tree(dir string) string {
	target, err := os.Readlink(filepath.Join(dir, currentLink))
	if err != nil {
		return ""
	}
	if !filepath.IsAbs(target) {
		target = filepath.Join(dir, target)
	}
	return target
}

type manifest struct {
	Requirements []string `json:"requirements"`
}

// State describes the packages directory now.
func (in *Installer) State() (api.Packages, error) {
	st := api.Packages{Dir: in.cfg.Dir, Tree: in.Tree(), Requirements: []string{}, Installed: []api.Installed{}, Allowed: []string{}}
	m, err := in.readManifest()
	if err != nil {
		return st, err
	}
	st.Requirements = m.Requirements
	if st.Tree != "" {
		st.Installed = Installed(st.Tree)
	}
	if reason := writable(in.cfg.Dir); reason != "" {
		st.Locked, st.Reason = true, reason
	}
	return st, nil
}

// Installed lists the distributions in a tree from their *.dist-info/METADATA files.
func Installed(tree string) []api.Installed {
	out := []api.Installed{}
	infos, _ := filepath.Glob(filepath.Join(tree, "*.dist-info", "METADATA"))
	for _, p := range infos {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var name, version string
		for _, line := range strings.Split(string(data), "\n") {
			if line == "" || line == "\r" {
				break // the headers end at the first blank line
			}
			if v, ok := strings.CutPrefix(line, "Name: "); ok && name == "" {
				name = strings.TrimSpace(v)
			} else if v, ok := strings.CutPrefix(line, "Version: "); ok && version == "" {
				version = strings.TrimSpace(v)
			}
		}
		if name != "" {
			out = append(out, api.Installed{Name: pyreq.NormalizeName(name), Version: version})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Install installs reqs, together with everything installed before, into a new tree and makes
// it current. Without upgrade, requirements that are all in the manifest already change
// nothing. Errors: ErrLocked, ErrBusy, *InstallError.
func (in *Installer) Install(ctx context.Context, reqs []pyreq.Requirement, upgrade bool) (api.Packages, error) {
	if reason := writable(in.cfg.Dir); reason != "" {
		return api.Packages{}, fmt.Errorf("%w: %s", ErrLocked, reason)
	}
	unlock, err := in.lock(ctx)
	if err != nil {
		return api.Packages{}, err
	}
	defer unlock()

	m, err := in.readManifest()
	if err != nil {
		return api.Packages{}, err
	}
	merged, changed := merge(m.Requirements, reqs)
	if !changed && !upgrade && in.Tree() != "" {
		return in.State()
	}
	if err := in.build(ctx, merged, upgrade); err != nil {
		return api.Packages{}, err
	}
	if err := in.writeManifest(manifest{Requirements: merged}); err != nil {
		return api.Packages{}, err
	}
	in.collect(time.Now())
	return in.State()
}

// merge adds reqs to the manifest's list: a requirement for a name already listed replaces it.
func merge(existing []string, reqs []pyreq.Requirement) ([]string, bool) {
	out := append([]string(nil), existing...)
	changed := false
	for _, r := range reqs {
		s, found := r.String(), false
		for i, e := range out {
			if er, err := pyreq.ParseRequirement(e); err == nil && er.Key() == r.Key() {
				found = true
				if e != s {
					out[i], changed = s, true
				}
			}
		}
		if !found {
			out, changed = append(out, s), true
		}
	}
	return out, changed
}

// build runs pip into a staging tree and swaps it in.
func (in *Installer) build(ctx context.Context, reqs []string, upgrade bool) error {
	trees := filepath.Join(in.cfg.Dir, treesDir)
	if err := os.MkdirAll(trees, 0o755); err != nil {
		return fmt.Errorf("%w: %v", ErrLocked, err)
	}
	id := strconv.FormatInt(time.Now().UnixNano(), 10) + "-" + randomHex(4)
	staging := filepath.Join(trees, ".staging-"+id)
	defer os.RemoveAll(staging) // gone after a successful rename; removed on failure

	if err := in.pip(ctx, staging, reqs, upgrade); err != nil {
		return err
	}
	tree := filepath.Join(trees, id)
	if err := os.Rename(staging, tree); err != nil {
		return err
	}
	// Swap the symlink atomically: a new link under a temporary name renamed over current.
	tmp := filepath.Join(in.cfg.Dir, ".current-"+id)
	if err := os.Symlink(filepath.Join(treesDir, id), tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(in.cfg.Dir, currentLink)); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

func (in *Installer) pip(ctx context.Context, target string, reqs []string, upgrade bool) error {
	ctx, cancel := context.WithTimeout(ctx, in.cfg.Timeout)
	defer cancel()
	args := []string{"-m", "pip", "install", "--target", target, "--no-input", "--disable-pip-version-check",
		"--progress-bar", "off", "--no-warn-script-location"}
	if os.Geteuid() == 0 {
		args = append(args, "--root-user-action=ignore")
	}
	if upgrade {
		args = append(args, "--upgrade")
	}
	args = append(append(args, in.cfg.Index.args()...), reqs...)
	cmd := exec.CommandContext(ctx, in.cfg.Python, args...)
	home := filepath.Join(in.cfg.Dir, ".home")
	_ = os.MkdirAll(home, 0o700)
	cmd.Env = append(append([]string(nil), in.cfg.Env...), "HOME="+home, "PIP_CACHE_DIR="+filepath.Join(in.cfg.Dir, ".cache"))
	var out tailBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	start := cmd.Start
	if in.cfg.Start != nil {
		start = func() error { return in.cfg.Start(cmd) }
	}
	if err := start(); err != nil {
		return &InstallError{Err: err}
	}
	err := cmd.Wait()
	if in.cfg.Done != nil {
		in.cfg.Done(cmd.Process.Pid)
	}
	if ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("no result within %v", in.cfg.Timeout)
	}
	if err != nil {
		return &InstallError{Err: err, Output: out.String()}
	}
	return nil
}

// collect removes trees replaced longer than the grace period ago. A tree's replacement time
// is the creation time of the next one, which its id starts with.
func (in *Installer) collect(now time.Time) {
	trees := filepath.Join(in.cfg.Dir, treesDir)
	entries, err := os.ReadDir(trees)
	if err != nil {
		return
	}
	current := filepath.Base(in.Tree())
	var ids []string
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			ids = append(ids, e.Name())
		}
	}
	sort.Slice(ids, func(i, j int) bool { return created(ids[i]).Before(created(ids[j])) })
	for i := 0; i+1 < len(ids); i++ {
		if ids[i] != current && now.Sub(created(ids[i+1])) > in.cfg.Grace {
			_ = os.RemoveAll(filepath.Join(trees, ids[i]))
		}
	}
}

func created(id string) time.Time {
	ns, _ := strconv.ParseInt(strings.SplitN(id, "-", 2)[0], 10, 64)
	return time.Unix(0, ns)
}

// lock takes the directory's flock, polling until ctx ends.
func (in *Installer) lock(ctx context.Context) (func(), error) {
	f, err := os.OpenFile(filepath.Join(in.cfg.Dir, lockFile), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrLocked, err)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { _ = unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", f.Name(), err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("%w: %v", ErrBusy, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (in *Installer) readManifest() (manifest, error) {
	m := manifest{Requirements: []string{}}
	data, err := os.ReadFile(filepath.Join(in.cfg.Dir, manifestFile))
	if errors.Is(err, fs.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return m, fmt.Errorf("reading %s: %w", manifestFile, err)
	}
	return m, nil
}

func (in *Installer) writeManifest(m manifest) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(in.cfg.Dir, manifestFile+".tmp-"+randomHex(4))
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(in.cfg.Dir, manifestFile))
}

// writable returns why dir cannot take an install, or "".
func writable(dir string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Sprintf("%s: %v", dir, err)
	}
	if st.Flags&unix.ST_RDONLY != 0 {
		return dir + " is on a read-only filesystem"
	}
	f, err := os.CreateTemp(dir, ".pyexec-probe-*")
	if err != nil {
		return fmt.Sprintf("%s is not writable by uid %d: %v", dir, os.Geteuid(), errors.Unwrap(err))
	}
	f.Close()
	os.Remove(f.Name())
	return ""
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// tailBuffer keeps the last maxOutput bytes written.
type tailBuffer struct{ bytes.Buffer }

func (t *tailBuffer) Write(p []byte) (int, error) {
	n, _ := t.Buffer.Write(p)
	if t.Len() > maxOutput {
		t.Next(t.Len() - maxOutput)
	}
	return n, nil
}
