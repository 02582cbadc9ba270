package executor

import (
	"context"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/pyexec/pyexec/internal/confine"
	"github.com/pyexec/pyexec/internal/testutil"
)

// BenchmarkConfinement is what confinement costs an execution at low load: each execution
// runs in a spare of fork mode (the default), confined as far as the kernel allows or not at
// all. The two executors take turns in one loop, each first every other time, so that a
// noisy neighbour slows both alike, and their spares are replaced between executions, off the
// clock. The confined time includes
// building the ruleset and the program (Go) and applying them (the code's process). It reports
// the median of each and their difference.
func BenchmarkConfinement(b *testing.B) {
	py := testutil.RequireSystemPython(b)
	snippets := []struct{ name, code string }{{"print", "print(1)"}}
	preload := []string{"json"}
	if exec.Command(py, "-c", "import pandas").Run() == nil {
		snippets = append(snippets, struct{ name, code string }{"pandas", "import pandas as pd; pd.DataFrame({'a': range(1000)}).describe()"})
		preload = append(preload, "pandas")
	}
	start := func(iso Isolation) *Fork {
		fk, err := NewFork(ForkConfig{SpawnConfig: SpawnConfig{Python: py, WorkDir: b.TempDir(), Path: "/usr/bin:/bin", Isolation: iso, Log: logr.Discard()}, Preload: preload, Warm: 1})
		if err != nil {
			b.Fatal(err)
		}
		if err := fk.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(fk.Close)
		return fk
	}
	executors := []*Fork{start(Isolation{}), start(Isolation{Kernel: confine.Probe(confine.NoCap)})}
	for _, sn := range snippets {
		b.Run(sn.name, func(b *testing.B) {
			var times [2][]time.Duration
			for n := 0; b.Loop(); n++ {
				// Each goes first every other time: the second one shares the CPU with the
				// first one's new spare warming up.
				for k := range executors {
					i := (k + n) % 2
					fk := executors[i]
					b.StopTimer()
					awaitSpare(b, fk)
					b.StartTimer()
					t0 := time.Now()
					res, err := fk.Execute(context.Background(), Request{ID: "b", Code: sn.code, Limits: defaultLimits}, nil)
					times[i] = append(times[i], time.Since(t0))
					if err != nil || res.ExitCode != 0 {
						b.Fatalf("%+v %v", res, err)
					}
				}
			}
			median := func(d []time.Duration) float64 {
				slices.Sort(d)
				return float64(d[len(d)/2].Microseconds()) / 1000
			}
			u, c := median(times[0]), median(times[1])
			b.ReportMetric(u, "unconfined-ms")
			b.ReportMetric(c, "confined-ms")
			b.ReportMetric(c-u, "cost-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}
