package runner

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/pyexec/pyexec/internal/executor"
	"github.com/pyexec/pyexec/internal/testutil"
	"github.com/pyexec/pyexec/pkg/api"
)

// BenchmarkHop is what the server-runner hop costs an execution: print(1) in fork mode with a
// spare, once through a runner (a child process, over the protocol) and once in a fork
// executor of the benchmark's own process, taking turns at low load (each after a pause, so
// that a spare is ready), b.N times each. It reports the p50 of both and their difference.
func BenchmarkHop(b *testing.B) {
	cfg := clientConfig(b, executor.ModeFork, 1)
	cfg.Log = logr.Discard()
	// Both work roots on tmpfs where it can be mounted: the disk's own cost of making and
	// removing directories (here 0.2-0.6 ms each) is not the hop's.
	tmpfs := func(dir string) string {
		if os.Getuid() == 0 {
			testutil.MountTmpfs(b, dir, 0)
		}
		return dir
	}
	cfg.Runner.WorkDir = filepath.Join(tmpfs(filepath.Dir(cfg.Runner.WorkDir)), "work")
	c, _ := childClient(b, cfg)
	local, err := executor.NewFork(executor.ForkConfig{SpawnConfig: executor.SpawnConfig{Python: cfg.Runner.Python, PackagesDir: cfg.Runner.PackagesDir,
		WorkDir: tmpfs(b.TempDir()), Path: cfg.Runner.Path, Isolation: executor.Isolation{Kernel: cfg.Kernel}, Log: logr.Discard()}, Preload: cfg.Runner.Preload, Warm: 1})
	if err != nil {
		b.Fatal(err)
	}
	if err := local.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(local.Close)
	req := executor.Request{ID: "b", Code: "print(1)", Limits: testLimits}
	var hop, direct []time.Duration
	// In process, the work after the result (emptying the directory, replacing the spare) is
	// not timed either: the runner does it after its reply.
	timed := func(ex executor.Executor) time.Duration {
		time.Sleep(100 * time.Millisecond) // low load: the spare is ready again
		start := time.Now()
		var res api.ExecuteResult
		var err error
		finish := func() {}
		if d, ok := ex.(executor.Deferred); ok {
			res, finish, err = d.ExecuteDeferred(context.Background(), req, nil)
		} else {
			res, err = ex.Execute(context.Background(), req, nil)
		}
		d := time.Since(start)
		finish()
		if err != nil || res.Stdout != "1\n" {
			b.Fatalf("%+v %v", res, err)
		}
		return d
	}
	for range 3 { // warm-up
		timed(c)
		timed(local)
	}
	b.ResetTimer()
	for i := range b.N {
		if i%2 == 0 {
			hop = append(hop, timed(c))
			direct = append(direct, timed(local))
		} else {
			direct = append(direct, timed(local))
			hop = append(hop, timed(c))
		}
	}
	b.StopTimer()
	p50 := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[len(d)/2].Microseconds()) / 1000
	}
	h, l := p50(hop), p50(direct)
	b.ReportMetric(h, "runner-p50-ms")
	b.ReportMetric(l, "in-process-p50-ms")
	b.ReportMetric(h-l, "hop-p50-ms")
}
