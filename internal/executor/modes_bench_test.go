package executor

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/pyexec/pyexec/internal/confine"
	"github.com/pyexec/pyexec/internal/testutil"
)

// BenchmarkExecute is the latency of one print(1) at low load in each mode, confined as far as
// the kernel allows: spawn (a fresh interpreter loads the runner's Python every time), fork
// (a supervisor forked from the zygote on demand) and fork-warm (a spare, replaced off the
// clock). It reports the median.
//
//	go test ./internal/executor -run '^$' -bench Execute -benchtime 100x
func BenchmarkExecute(b *testing.B) {
	py := testutil.RequireSystemPython(b)
	iso := Isolation{Kernel: confine.Probe(confine.NoCap)}
	cfg := SpawnConfig{Python: py, WorkDir: b.TempDir(), Path: "/usr/bin:/bin", Isolation: iso, Log: logr.Discard()}
	sp, err := NewSpawn(cfg)
	if err != nil {
		b.Fatal(err)
	}
	fork := func(warm int) *Fork {
		c := cfg
		c.WorkDir = b.TempDir()
		fk, err := NewFork(ForkConfig{SpawnConfig: c, Preload: []string{"json"}, Warm: warm})
		if err != nil {
			b.Fatal(err)
		}
		if err := fk.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(fk.Close)
		return fk
	}
	modes := []struct {
		name string
		ex   Executor
	}{{ModeSpawn, sp}, {ModeFork, fork(0)}, {modeForkWarm, fork(1)}}
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			var times []time.Duration
			for b.Loop() {
				if fk, ok := m.ex.(*Fork); ok && fk.cfg.Warm > 0 {
					b.StopTimer()
					awaitSpare(b, fk)
					b.StartTimer()
				}
				t0 := time.Now()
				res, err := m.ex.Execute(context.Background(), Request{ID: "b", Code: "print(1)", Limits: defaultLimits}, nil)
				times = append(times, time.Since(t0))
				if err != nil || res.ExitCode != 0 || res.Stdout != "1\n" {
					b.Fatalf("%+v %v", res, err)
				}
			}
			slices.Sort(times)
			b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}
