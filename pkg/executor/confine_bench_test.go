package executor

import (
	"context"
	"testing"

	"github.com/go-logr/logr"

	"github.com/pyexec/pyexec/pkg/confine"
	"github.com/pyexec/pyexec/pkg/testutil"
)

// BenchmarkConfinement is what confinement costs an execution at low load: each execution
// runs in a spare of fork mode (the default), confined as far as the kernel allows or not at
// all, and the spare is replaced between executions, off the clock. The confined time
// includes building the ruleset and the program (Go) and applying them (the code's process).
func BenchmarkConfinement(b *testing.B) {
	py := testutil.RequireSystemPython(b)
	for _, c := range []struct {
		name string
		iso  Isolation
	}{{"unconfined", Isolation{}}, {"confined", Isolation{Kernel: confine.Probe(confine.NoCap)}}} {
		b.Run(c.name, func(b *testing.B) {
			fk, err := NewFork(ForkConfig{SpawnConfig: SpawnConfig{Python: py, WorkDir: b.TempDir(), Path: "/usr/bin:/bin", Isolation: c.iso, Log: logr.Discard()}, Preload: []string{"json"}, Warm: 1})
			if err != nil {
				b.Fatal(err)
			}
			if err := fk.Start(); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(fk.Close)
			for b.Loop() {
				b.StopTimer()
				awaitSpare(b, fk)
				b.StartTimer()
				res, err := fk.Execute(context.Background(), Request{ID: "b", Code: "print(1)", Limits: defaultLimits}, nil)
				if err != nil || res.Stdout != "1\n" {
					b.Fatalf("%+v %v", res, err)
				}
			}
		})
	}
}
