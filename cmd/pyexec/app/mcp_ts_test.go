package app

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pyexec/pyexec/internal/testutil"
)

// tsClientDir is the TypeScript SDK client's package: test/mcp-ts of this repository.
const tsClientDir = "../../../test/mcp-ts"

// TestMCPTypeScriptClient drives both MCP transports with the official MCP TypeScript SDK's
// client (@modelcontextprotocol/client, pinned in test/mcp-ts/package-lock.json), on this
// machine's node: test/mcp-ts/client.mjs runs its checks and reports each of them. It needs
// node 20 or later and npm, and fails without them; `npm ci` runs first when node_modules is
// missing or older than the lockfile.
//
// The basic checks: initialize and the tools, code that prints, draws and raises, a session's
// state, its files as resources (the SDK checks each result against its schema: in the
// 2026-07-28 era, resources/list's cacheScope must be "public" or "private"), its end. The
// owner checks: two clients of different owner keys (`pyexec mcp --owner`, the Pyexec-Owner
// header), where B must neither see nor use nor read nor close A's session.
func TestMCPTypeScriptClient(t *testing.T) {
	py := testutil.RequireSystemPython(t)
	if out, err := exec.Command(py, "-c", "import matplotlib").CombinedOutput(); err != nil {
		t.Fatalf("the system Python lacks matplotlib (apt-get install python3-matplotlib): %s", out)
	}
	dir, err := filepath.Abs(tsClientDir)
	if err != nil {
		t.Fatal(err)
	}
	node := requireNode(t)
	ensureNodeModules(t, dir)

	s := startSidecar(t, nil)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The basic checks' HTTP client names an owner, as an application that serves several users
	// does (an anonymous /mcp caller is listed no sessions or files); over stdio the process's
	// own key is the owner.
	transports := map[string][]string{
		"http": {"--socket", s.socket, "--owner", "ts-basic"},
		"stdio": {"--stdio", self, "--arg", "mcp", "--arg", "--socket", "--arg", s.socket,
			"--env", "PYEXEC_TEST_AS_MAIN=1", "--env", "PATH=/usr/bin:/bin", "--env", "HOME=/"},
	}
	// The basic checks in both protocol eras the SDK speaks (the 2026-07-28 revision, negotiated
	// with server/discover, and the 2025 initialize handshake), the owner checks in the newest.
	runs := []struct{ name, suite, era string }{
		{"modern", "basic", "modern"},
		{"legacy", "basic", "legacy"},
		{"owner", "owner", "modern"},
	}
	for _, name := range []string{"stdio", "http"} {
		t.Run(name, func(t *testing.T) {
			for _, r := range runs {
				t.Run(r.name, func(t *testing.T) {
					start := time.Now()
					checks := runTSClient(t, node, dir, append(transports[name], "--suite", r.suite, "--era", r.era)...)
					t.Logf("%d checks in %v", len(checks), time.Since(start).Round(time.Millisecond))
					for _, c := range checks {
						if c.OK {
							t.Logf("ok   %s: %s", c.Name, c.Detail)
						} else {
							t.Errorf("FAIL %s: %s", c.Name, c.Detail)
						}
					}
				})
			}
		})
	}
}

// tsCheck is one check of client.mjs's report.
type tsCheck struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// runTSClient runs client.mjs with args and returns its checks; a run that reports none fails.
func runTSClient(t *testing.T, node, dir string, args ...string) []tsCheck {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, append([]string{"client.mjs"}, args...)...)
	cmd.Dir = dir
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var report struct {
		Transport string    `json:"transport"`
		Checks    []tsCheck `json:"checks"`
	}
	if jerr := json.Unmarshal(stdout.Bytes(), &report); jerr != nil || len(report.Checks) == 0 {
		t.Fatalf("client.mjs %s: %v (%v); stdout: %s; stderr: %s", strings.Join(args, " "), err, jerr, stdout.Bytes(), stderr.Bytes())
	}
	if stderr.Len() > 0 {
		t.Logf("client.mjs's stderr: %s", stderr.Bytes())
	}
	// client.mjs exits 1 when a check failed; anything else besides 0 is no run of the checks.
	if code := cmd.ProcessState.ExitCode(); code != 0 && code != 1 {
		t.Errorf("client.mjs exited %d: %v", code, err)
	}
	return report.Checks
}

// requireNode returns the path of node, which must be version 20 or later, with npm beside it.
func requireNode(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not installed: the MCP TypeScript SDK test needs node 20 or later with npm (Debian: apt-get install nodejs, from a source that bundles npm)")
	}
	out, err := exec.Command(node, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v", node, err)
	}
	v := strings.TrimSpace(string(out))
	major, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(v, "v"), ".", 2)[0])
	if err != nil || major < 20 {
		t.Fatalf("node %s (%s): the MCP TypeScript SDK test needs node 20 or later", v, node)
	}
	if _, err := exec.LookPath("npm"); err != nil {
		t.Fatalf("npm is not installed beside node %s: the MCP TypeScript SDK test installs its client with npm ci", v)
	}
	return node
}

// ensureNodeModules runs `npm ci` in dir when node_modules is missing or older than
// package.json or package-lock.json (npm ci leaves node_modules/.package-lock.json, its copy
// of the lockfile). Concurrent test runs take turns: they lock package-lock.json.
func ensureNodeModules(t *testing.T, dir string) {
	t.Helper()
	lockfile := filepath.Join(dir, "package-lock.json")
	f, err := os.Open(lockfile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	installed, err := os.Stat(filepath.Join(dir, "node_modules", ".package-lock.json"))
	if err == nil {
		fresh := true
		for _, name := range []string{"package.json", "package-lock.json"} {
			fi, err := os.Stat(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			fresh = fresh && !fi.ModTime().After(installed.ModTime())
		}
		if fresh {
			return
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci in %s: %v\n%s", dir, err, out)
	}
	t.Logf("npm ci in %s took %v", dir, time.Since(start).Round(time.Millisecond))
}
