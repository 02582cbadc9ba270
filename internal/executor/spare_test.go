package executor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/go-logr/logr"

	"github.com/pyexec/pyexec/internal/confine"
	"github.com/pyexec/pyexec/internal/testutil"
	"github.com/pyexec/pyexec/pkg/api"
)

// netCode says whether the code may open a network socket.
const netCode = `import socket
try:
    socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
    print("network")
except PermissionError:
    print("no network")
`

// A spare installs the seccomp programs of the latest execution before it waits (seen from
// outside in its code process's status), takes executions that want the same, and none that
// want others: an execution with the network never runs in a spare confined without it, nor
// the other way round, and a budget installed ahead still counts.
func TestSpareConfinedAhead(t *testing.T) {
	k := confine.Probe(confine.NoCap)
	if !k.Seccomp {
		t.Skip("SKIPPED: no seccomp: spares have no programs to install ahead")
	}
	py := testutil.RequireSystemPython(t)
	fk, err := NewFork(ForkConfig{SpawnConfig: SpawnConfig{Python: py, WorkDir: t.TempDir(), Path: "/usr/bin:/bin", Isolation: Isolation{Kernel: k}, Log: logr.Discard()}, Warm: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := fk.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fk.Close)
	lim := defaultLimits
	lim.MaxProcesses = 4
	run := func(network bool, code string) api.ExecuteResult {
		t.Helper()
		res, err := fk.Execute(context.Background(), Request{ID: "x", Code: code, Network: network, Limits: lim}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	// The first spare was made before any execution: it confines itself with its execution.
	awaitSpare(t, fk)
	if got := run(false, netCode); got.Stdout != "no network\n" {
		t.Fatalf("without the network: %+v", got)
	}
	awaitSpare(t, fk)
	if st := spareStatus(t, fk); st["Seccomp"] != "2" || st["NoNewPrivs"] != "1" {
		t.Fatalf("the spare made after an execution is not confined ahead: Seccomp %q NoNewPrivs %q", st["Seccomp"], st["NoNewPrivs"])
	}
	hits := fk.WarmHits()
	if got := run(true, netCode); got.Stdout != "network\n" {
		t.Fatalf("with the network, after a spare confined without: %+v", got)
	}
	if fk.WarmHits() != hits {
		t.Error("an execution with the network ran in a spare confined without it")
	}
	awaitSpare(t, fk)
	hits = fk.WarmHits()
	if got := run(false, netCode); got.Stdout != "no network\n" {
		t.Fatalf("without the network, after a spare confined with it: %+v", got)
	}
	if fk.WarmHits() != hits {
		t.Error("an execution without the network ran in a spare confined with it")
	}
	if !k.ProcessBudget {
		return
	}
	// Like the latest again: it takes the next execution, whose budget it counts with the
	// listener it handed over before it waited.
	awaitSpare(t, fk)
	hits = fk.WarmHits()
	got := run(false, fmt.Sprintf(holdCode, 0))
	if fk.WarmHits() != hits+1 {
		t.Error("the execution did not run in the spare confined like it")
	}
	if got.Stdout != "held 3 11\n" || got.Reason != api.ReasonProcessLimit {
		t.Errorf("a budget of 4 in a spare confined ahead: stdout %q reason %s stderr %.300q", got.Stdout, got.Reason, got.Stderr)
	}
}

// spareStatus reads /proc/PID/status of the ready spare's code process: the only child of its
// supervisor.
func spareStatus(t *testing.T, fk *Fork) map[string]string {
	t.Helper()
	fk.pool.Lock()
	sup := fk.spares[0].pid
	fk.pool.Unlock()
	kids, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(sup), "task", strconv.Itoa(sup), "children"))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(kids))
	if len(f) != 1 {
		t.Fatalf("the spare's supervisor has children %q, want one", f)
	}
	data, err := os.ReadFile(filepath.Join("/proc", f[0], "status"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}
