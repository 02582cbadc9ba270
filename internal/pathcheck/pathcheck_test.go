package pathcheck

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pyexec/pyexec/internal/testutil"
	"github.com/pyexec/pyexec/pkg/api"
)

func TestParseMountInfo(t *testing.T) {
	in := `22 27 0:21 / /proc rw,relatime - proc proc rw
36 27 254:0 /srv/data /mnt/with\040space rw,nosuid shared:1 - ext4 /dev/vda rw
40 27 0:50 / /tmp/back\134slash ro,relatime master:2 propagation_from:1 - tmpfs my\011src rw,size=1024k
`
	got, err := ParseMountInfo(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []Mount{
		{MountPoint: "/proc", Root: "/", FSType: "proc", Source: "proc", Options: "rw,relatime"},
		{MountPoint: "/mnt/with space", Root: "/srv/data", FSType: "ext4", Source: "/dev/vda", Options: "rw,nosuid"},
		{MountPoint: `/tmp/back\slash`, Root: "/", FSType: "tmpfs", Source: "my\tsrc", Options: "ro,relatime"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d mounts, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("mount %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestParseMountInfoMalformed(t *testing.T) {
	if _, err := ParseMountInfo(strings.NewReader("22 27 0:21 / /proc rw\n")); err == nil {
		t.Fatal("a line without the ' - ' separator parsed")
	}
}

func TestUnescapeLeavesOtherBackslashes(t *testing.T) {
	for in, want := range map[string]string{`a\040b`: "a b", `a\04`: `a\04`, `a\9xx`: `a\9xx`, `\134`: `\`, `end\`: `end\`} {
		got, err := ParseMountInfo(strings.NewReader("22 27 0:21 / /m/" + in + " rw - tmpfs none rw\n"))
		if err != nil || len(got) != 1 || got[0].MountPoint != "/m/"+want {
			t.Errorf("mount point /m/%s parsed as %+v (err %v), want /m/%s", in, got, err, want)
		}
	}
}

func newChecker(t *testing.T) *Checker {
	t.Helper()
	c, err := NewChecker(DefaultMountInfo)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPlainDirectoryIsFree(t *testing.T) {
	dir := t.TempDir()
	got := newChecker(t).Check(dir, api.RoleVenv, false)
	want := api.Path{Path: dir, Role: api.RoleVenv, Exists: true, Writable: true}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	assertNoProbeLeft(t, dir)
}

func TestMissingDirectoryIsCreatedWhenAsked(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	got := newChecker(t).Check(dir, api.RolePackages, true)
	if got.Locked || !got.Exists || !got.Writable {
		t.Fatalf("got %+v, want created, writable, not locked", got)
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		t.Fatalf("directory not created: %v", err)
	}
}

func TestMissingDirectoryIsNotCreatedUnlessAsked(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "venv")
	got := newChecker(t).Check(dir, api.RoleVenv, false)
	if got.Locked || got.Exists || !got.Writable {
		t.Fatalf("got %+v, want missing but creatable", got)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("Check created %s: %v", dir, err)
	}
}

func TestFileIsNotADirectory(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	got := newChecker(t).Check(f, api.RolePackages, true)
	if !got.Locked || !strings.Contains(got.Reason, "is not a directory") {
		t.Fatalf("got %+v, want locked: not a directory", got)
	}
}

func TestTmpfsMountPoint(t *testing.T) {
	dir := t.TempDir()
	testutil.MountTmpfs(t, dir, 0)
	c := newChecker(t)

	venv := c.Check(dir, api.RoleVenv, false)
	if !venv.Locked || !venv.MountPoint || !strings.Contains(venv.Reason, "is a mount point (tmpfs from tmpfs)") {
		t.Fatalf("venv at a tmpfs: got %+v, want locked as a mount point", venv)
	}
	// Packages and the report are written inside the directory: a volume there is the normal case.
	pkgs := c.Check(dir, api.RolePackages, true)
	if pkgs.Locked || !pkgs.MountPoint || !pkgs.Writable {
		t.Fatalf("packages at a tmpfs: got %+v, want a writable mount point, not locked", pkgs)
	}
}

// A bind mount from the same filesystem keeps the device number, so the st_dev comparison of
// os.path.ismount misses it; the mount table does not.
func TestBindMountFromSameFilesystem(t *testing.T) {
	base := t.TempDir()
	src, dst := filepath.Join(base, "src"), filepath.Join(base, "dst")
	for _, d := range []string{src, dst} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	testutil.BindMount(t, src, dst)
	var stDst, stParent unix.Stat_t
	if err := unix.Stat(dst, &stDst); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(base, &stParent); err != nil {
		t.Fatal(err)
	}
	if stDst.Dev != stParent.Dev {
		t.Fatalf("precondition: bind mount changed st_dev (%d vs %d)", stDst.Dev, stParent.Dev)
	}
	got := newChecker(t).Check(dst, api.RoleVenv, false)
	if !got.MountPoint || !got.Locked {
		t.Fatalf("got %+v, want a locked mount point", got)
	}
}

func TestReadOnlyFilesystem(t *testing.T) {
	dir := t.TempDir()
	testutil.MountTmpfs(t, dir, unix.MS_RDONLY)
	c := newChecker(t)

	got := c.Check(dir, api.RolePackages, true)
	if !got.Locked || !got.ReadOnly || got.Writable || !strings.Contains(got.Reason, "read-only filesystem (mounted read-only at "+dir+")") {
		t.Fatalf("got %+v, want locked read-only", got)
	}
	missing := c.Check(filepath.Join(dir, "sub"), api.RolePackages, true)
	if !missing.Locked || !missing.ReadOnly || !strings.Contains(missing.Reason, "is missing and cannot be created") {
		t.Fatalf("got %+v, want missing and not creatable on a read-only filesystem", missing)
	}
}

// TestNotWritableByUser runs the check as uid 65534 (nobody) in a child process, against a
// directory owned by root with mode 0755, as a non-root pod would meet it.
func TestNotWritableByUser(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("SKIPPED: needs root to start a child as another uid")
	}
	base, bin := testutil.SharedTempDir(t, "pathcheck.test")
	dir := filepath.Join(base, "pkgs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	got := checkAsUser(t, bin, 65534, dir, api.RolePackages)
	if !got.Locked || got.Writable || got.Reason != dir+" is not writable by uid 65534: permission denied" {
		t.Fatalf("got %+v, want locked: not writable by uid 65534", got)
	}
	missing := checkAsUser(t, bin, 65534, filepath.Join(dir, "sub"), api.RolePackages)
	if !missing.Locked || missing.Reason != dir+"/sub is missing and cannot be created: "+dir+" is not writable by uid 65534: permission denied" {
		t.Fatalf("got %+v, want locked: missing and not creatable", missing)
	}
}

func checkAsUser(t *testing.T, bin string, uid uint32, dir, role string) api.Path {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "PATHCHECK_CHILD_DIR="+dir, "PATHCHECK_CHILD_ROLE="+role)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v: %s", err, out)
	}
	line := out[:strings.IndexByte(string(out), '\n')]
	var p api.Path
	if err := json.Unmarshal(line, &p); err != nil {
		t.Fatalf("child output %q: %v", out, err)
	}
	return p
}

// TestMain doubles as the child of checkAsUser: with PATHCHECK_CHILD_DIR set it checks that
// path, prints the result as JSON and exits.
func TestMain(m *testing.M) {
	if dir := os.Getenv("PATHCHECK_CHILD_DIR"); dir != "" {
		c, err := NewChecker(DefaultMountInfo)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		_ = json.NewEncoder(os.Stdout).Encode(c.Check(dir, os.Getenv("PATHCHECK_CHILD_ROLE"), true))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func assertNoProbeLeft(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("probe left %s behind", e.Name())
	}
}
