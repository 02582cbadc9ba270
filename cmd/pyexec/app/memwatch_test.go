package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pyexec/pyexec/pkg/api"
	"github.com/pyexec/pyexec/pkg/client"
)

// growCode adds 8 MiB, written (resident), every 20 ms (400 MiB/s) until it holds %d MiB, then
// says so: code that fills memory as a real job does, not in one allocation.
const growCode = `import time
chunks = []
for i in range(%d // 8):
    chunks.append(b"x" * (8 << 20))
    time.sleep(0.02)
print("done", len(chunks) * 8, flush=True)
`

// holdCode holds %d MiB, written, until a file "go" appears in its working directory; it
// makes a file "ready" there once it holds them.
const holdUntilGo = `import os, time
x = b"x" * (%d << 20)
open("ready", "w").close()
while not os.path.exists("go"):
    time.sleep(0.01)
print("done", len(x) >> 20, flush=True)
`

// The runner's memory watchdog in a real memory cgroup, as the runner container's limit. Two
// executions allocate, a small one (48 MiB) and a large one (growing to twice the limit): the
// large one is ended with reason memory_limit and the watchdog's note before the kernel's OOM
// killer takes anything, and the small one finishes. Then a session at rest holds more than an
// execution that grows past the mark: the session is ended (a later call: 404, ended for its
// memory), the execution finishes. The figures are read back through the server's /metrics.
func TestRunnerMemoryWatchdog(t *testing.T) {
	const limit = 512 << 20
	cg := memoryCgroup(t, limit, "the runner's memory watchdog was not run against a real cgroup (its unit tests in internal/executor read a stand-in)")
	s := podSidecar(t, podOptions{runnerCgroup: cg}, "--mode", "fork", "--memory-limit-mb", "0", "--max-memory-limit-mb", "0", "--max-concurrent", "4")
	s.waitReady()
	kills := oomKills(t, cg)
	mark := float64(limit / 100 * 90)
	if got := metric(t, s, "pyexec_runner_memory_limit_bytes"); got != limit {
		t.Fatalf("pyexec_runner_memory_limit_bytes %v, want %d: the runner did not find its cgroup's limit\n%s", got, limit, s.allLogs())
	}
	if got := metric(t, s, "pyexec_runner_memory_high_water_bytes"); got != mark {
		t.Fatalf("pyexec_runner_memory_high_water_bytes %v, want %v", got, mark)
	}
	ctx := context.Background()
	work := filepath.Join(filepath.Dir(filepath.Dir(s.socket)), "work")

	// The small one holds its memory until it is told to finish.
	type outcome struct {
		res *api.ExecuteResult
		err error
	}
	small := make(chan outcome, 1)
	go func() {
		res, err := s.client.Execute(ctx, api.ExecuteRequest{Code: fmt.Sprintf(holdUntilGo, 48), TimeoutSeconds: seconds(120)})
		small <- outcome{res, err}
	}()
	smallWork := waitForFile(t, work, "ready", small)
	if got := metric(t, s, "pyexec_runner_trees"); got != 1 {
		t.Errorf("pyexec_runner_trees %v with one execution running", got)
	}
	if got := metric(t, s, "pyexec_runner_tree_memory_bytes"); got < 48<<20 {
		t.Errorf("pyexec_runner_tree_memory_bytes %.0f MiB with an execution that holds 48 MiB", got/(1<<20))
	}
	if got := metric(t, s, "pyexec_runner_tree_tasks"); got < 1 {
		t.Errorf("pyexec_runner_tree_tasks %v with an execution running", got)
	}
	if ws, usage := metric(t, s, "pyexec_runner_memory_working_set_bytes"), metric(t, s, "pyexec_runner_memory_usage_bytes"); ws < 48<<20 || ws > usage || usage > limit {
		t.Errorf("the runner's cgroup: working set %.0f MiB, usage %.0f MiB", ws/(1<<20), usage/(1<<20))
	}

	began := time.Now()
	large, err := s.client.Execute(ctx, api.ExecuteRequest{Code: fmt.Sprintf(growCode, 2*limit>>20), TimeoutSeconds: seconds(120)})
	if err != nil {
		t.Fatalf("the large execution: %v\n%s", err, s.allLogs())
	}
	if large.Reason != api.ReasonMemoryLimit || large.ExitCode != 137 || large.Signal != "SIGKILL" || !strings.Contains(large.Stderr, "pyexec: ended by the runner's memory watchdog") {
		t.Fatalf("the large execution: reason %s exit %d signal %s stdout %q stderr %q\n%s", large.Reason, large.ExitCode, large.Signal, large.Stdout, large.Stderr, s.allLogs())
	}
	t.Logf("the large execution, ended after %v: %s", time.Since(began).Round(time.Millisecond), strings.TrimSpace(large.Stderr))
	if n := oomKills(t, cg); n != kills {
		t.Fatalf("the kernel's OOM killer acted (%d kills, were %d) before the watchdog", n, kills)
	}
	if err := os.WriteFile(filepath.Join(smallWork, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if o := <-small; o.err != nil || o.res.Reason != api.ReasonExit || o.res.ExitCode != 0 || o.res.Stdout != "done 48\n" {
		t.Fatalf("the small execution beside the large one: %+v %v", o.res, o.err)
	}
	if got := metric(t, s, "pyexec_runner_memory_watchdog_ended_total"); got != 1 {
		t.Errorf("pyexec_runner_memory_watchdog_ended_total %v, want 1", got)
	}
	if got := metric(t, s, `pyexec_executions_total{reason="memory_limit"}`); got != 1 {
		t.Errorf(`pyexec_executions_total{reason="memory_limit"} %v, want 1`, got)
	}

	// A session at rest holds the most when an execution beside it passes the mark: with free
	// the room below the mark, the session holds 0.6 of it and the execution grows to 0.6.
	free := mark - metric(t, s, "pyexec_runner_memory_working_set_bytes")
	part := int(0.6*free) >> 20
	sess, err := s.client.CreateSession(ctx, api.SessionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := s.client.SessionExecute(ctx, sess.ID, api.ExecuteRequest{Code: fmt.Sprintf("x = b'x' * (%d << 20)", part)}); err != nil || res.ExitCode != 0 {
		t.Fatalf("the session's call: %+v %v", res, err)
	}
	res, err := s.client.Execute(ctx, api.ExecuteRequest{Code: fmt.Sprintf(growCode, part), TimeoutSeconds: seconds(120)})
	if err != nil || res.ExitCode != 0 || res.Stdout != fmt.Sprintf("done %d\n", part/8*8) {
		t.Fatalf("the execution beside a larger session at rest (%d MiB each): %+v %v\n%s", part, res, err, s.allLogs())
	}
	_, err = s.client.SessionExecute(ctx, sess.ID, api.ExecuteRequest{Code: "len(x)"})
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) || apiErr.Code != api.ErrCodeSessionNotFound || !strings.Contains(apiErr.Message, "memory watchdog") {
		t.Fatalf("a call to the session the watchdog ended: %v", err)
	}
	if n := oomKills(t, cg); n != kills {
		t.Fatalf("the kernel's OOM killer acted (%d kills, were %d) before the watchdog", n, kills)
	}
	if got := metric(t, s, "pyexec_runner_memory_watchdog_ended_total"); got != 2 {
		t.Errorf("pyexec_runner_memory_watchdog_ended_total %v, want 2", got)
	}
	if got := metric(t, s, `pyexec_sessions_ended_total{reason="memory_limit"}`); got != 1 {
		t.Errorf(`pyexec_sessions_ended_total{reason="memory_limit"} %v, want 1`, got)
	}
	ended := s.logs("memory watchdog: ended the largest tree")
	if len(ended) != 2 || ended[0]["kind"] != "execution" || ended[1]["kind"] != "session" {
		t.Errorf("the runner's log of what the watchdog ended: %v", ended)
	}
	gone := s.logs("memory watchdog: the tree it ended is gone")
	for i, l := range ended {
		t.Logf("ended the %s: %.0f MiB of %.0f MiB in its tree; chosen %v ms and ended (its processes killed) %v ms after the reading past the mark",
			l["kind"], l["treeBytes"].(float64)/(1<<20), l["workingSetBytes"].(float64)/(1<<20), l["chosenAfterMs"], l["endedAfterMs"])
		if i < len(gone) {
			t.Logf("  its processes seen gone %v ms after that", gone[i]["goneAfterMs"])
		}
	}
}

// waitForFile waits until an execution's working directory under work holds name, and returns
// that directory; it fails when the execution ends first.
func waitForFile[T any](t *testing.T, work, name string, ended chan T) string {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if found, _ := filepath.Glob(filepath.Join(work, "*", "work", name)); len(found) == 1 {
			return filepath.Dir(found[0])
		}
		select {
		case o := <-ended:
			t.Fatalf("the execution ended before it made %s: %+v", name, o)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no execution made %s in 60 s", name)
		}
	}
}
