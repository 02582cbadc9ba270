package executor

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/pyexec/pyexec/internal/confine"
	"github.com/pyexec/pyexec/internal/proc"
	"github.com/pyexec/pyexec/internal/testutil"
)

// digestCode prints a digest of the user's globals: each name, its type, and for a numpy array
// a checksum of its bytes — what must be equal in a session and in its checkpoint restored.
const digestCode = `import hashlib as _h
def _digest():
    d = _h.sha256()
    for k in sorted(globals()):
        if k.startswith('_'):
            continue
        v = globals()[k]
        d.update(k.encode()); d.update(type(v).__name__.encode())
        if hasattr(v, 'tobytes'):
            d.update(_h.sha256(memoryview(v).cast('B')).digest())
        elif isinstance(v, (int, float, str, list, dict)):
            d.update(repr(v).encode())
    return d.hexdigest()
print(_digest())
`

// benchFork is a fork-mode executor, confined as the kernel allows, for the benchmarks of
// sessions' checkpoints and forks.
func benchFork(b *testing.B) *Fork {
	b.Helper()
	py := testutil.RequireSystemPython(b)
	cfg := SpawnConfig{Python: py, WorkDir: b.TempDir(), Path: "/usr/bin:/bin", Isolation: Isolation{Kernel: confine.Probe(confine.NoCap)}, Log: logr.Discard()}
	fk, err := NewFork(ForkConfig{SpawnConfig: cfg, Preload: []string{"json"}})
	if err != nil {
		b.Fatal(err)
	}
	if err := fk.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(fk.Close)
	return fk
}

// BenchmarkCheckpoint is the time to take a checkpoint of a session and to restore it, in fork
// mode, with 0, 100 MB and 1 GB of numpy arrays in the session; the memory a checkpoint adds
// (PSS of the session's processes) right after it and once the session rewrote 10% of its data;
// and that the restored session's globals are the checkpoint's (a digest of names, types and
// array bytes). It reports p50 and p99 of each operation.
//
//	go test ./internal/executor -run '^$' -bench Checkpoint -benchtime 20x
func BenchmarkCheckpoint(b *testing.B) {
	fk := benchFork(b)
	for _, mb := range []int{0, 100, 1000} {
		b.Run(fmt.Sprintf("%dMB", mb), func(b *testing.B) {
			lim := defaultLimits
			lim.MemoryLimitMB, lim.Timeout = 0, time.Minute
			ss, err := fk.NewSession(context.Background(), SessionRequest{ID: "bench", Limits: lim, MaxCheckpoints: 2, MaxCheckpointBytes: 1 << 20})
			if err != nil {
				b.Fatal(err)
			}
			defer ss.Close()
			call := func(code string) string {
				b.Helper()
				res, err := ss.Execute(context.Background(), Request{ID: "b", Code: code, Limits: lim}, nil)
				if err != nil || res.ExitCode != 0 {
					b.Fatalf("%+v %v", res, err)
				}
				return strings.TrimSpace(res.Stdout)
			}
			call(fmt.Sprintf("import numpy as np\narrays = [np.random.default_rng(1).random(%d) for _ in range(10)]\nn = 7\nwords = ['a', 'b']", mb*1_000_000/8/10))
			want := call(digestCode)
			pss := func() int64 { _, p := proc.TreeMemory(ss.sup); return p }
			var took, back []time.Duration
			var added, rewritten int64
			for b.Loop() {
				b.StopTimer()
				before := pss()
				b.StartTimer()
				t0 := time.Now()
				cp, err := ss.Checkpoint(context.Background())
				took = append(took, time.Since(t0))
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				added = pss() - before
				call("for a in arrays: a[: len(a) // 10] += 1\nn = 8\nwords.append('c')")
				rewritten = pss() - before
				b.StartTimer()
				t0 = time.Now()
				if err := ss.Restore(context.Background(), cp.ID); err != nil {
					b.Fatal(err)
				}
				back = append(back, time.Since(t0))
				b.StopTimer()
				if got := call(digestCode); got != want {
					b.Fatalf("the restored globals' digest %s, the checkpoint's %s", got, want)
				}
				if err := ss.DeleteCheckpoint(cp.ID); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			report := func(name string, d []time.Duration) {
				slices.Sort(d)
				b.ReportMetric(float64(d[len(d)/2].Microseconds())/1000, name+"-p50-ms")
				b.ReportMetric(float64(d[min(len(d)-1, len(d)*99/100)].Microseconds())/1000, name+"-p99-ms")
			}
			report("checkpoint", took)
			report("restore", back)
			b.ReportMetric(float64(added)/(1<<20), "pss-added-MiB")
			b.ReportMetric(float64(rewritten)/(1<<20), "pss-after-10%-rewrite-MiB")
		})
	}
}

// BenchmarkFork is the time to fork a session into one branch, in fork mode, with 0, 100 MB
// and 1 GB of numpy arrays in the session; the memory a branch adds (PSS of the family's
// processes) right after the fork and once the branch rewrote 10% of its data; and that the
// branch's globals are the session's (the digest of BenchmarkCheckpoint). It reports p50 and
// p99 of the fork.
//
//	go test ./internal/executor -run '^$' -bench Fork -benchtime 20x
func BenchmarkFork(b *testing.B) {
	fk := benchFork(b)
	for _, mb := range []int{0, 100, 1000} {
		b.Run(fmt.Sprintf("%dMB", mb), func(b *testing.B) {
			lim := defaultLimits
			lim.MemoryLimitMB, lim.Timeout = 0, time.Minute
			call := func(ss *LocalSession, code string) string {
				b.Helper()
				res, err := ss.Execute(context.Background(), Request{ID: "b", Code: code, Limits: lim}, nil)
				if err != nil || res.ExitCode != 0 {
					b.Fatalf("%+v %v", res, err)
				}
				return strings.TrimSpace(res.Stdout)
			}
			// A session is forked 10 times, then another takes its place: each fork adds a
			// Landlock layer to the session, of which a process has 16 at most.
			var ss *LocalSession
			var want string
			defer func() { ss.Close() }()
			fresh := func() {
				if ss != nil {
					ss.Close()
				}
				var err error
				if ss, err = fk.NewSession(context.Background(), SessionRequest{ID: "bench", Limits: lim, MaxCheckpointBytes: 1 << 20}); err != nil {
					b.Fatal(err)
				}
				call(ss, fmt.Sprintf("import numpy as np\narrays = [np.random.default_rng(1).random(%d) for _ in range(10)]\nn = 7\nwords = ['a', 'b']", mb*1_000_000/8/10))
				want = call(ss, digestCode)
			}
			pss := func() int64 { _, p := proc.TreeMemory(ss.sup); return p }
			var took []time.Duration
			var added, rewritten int64
			for b.Loop() {
				b.StopTimer()
				if len(took)%10 == 0 {
					fresh()
				}
				before := pss()
				b.StartTimer()
				t0 := time.Now()
				bs, err := ss.Branch(context.Background(), []string{"branch"})
				took = append(took, time.Since(t0))
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				added = pss() - before
				if got := call(bs[0], digestCode); got != want {
					b.Fatalf("the branch's globals' digest %s, the session's %s", got, want)
				}
				call(bs[0], "for a in arrays: a[: len(a) // 10] += 1\nn = 8\nwords.append('c')")
				rewritten = pss() - before
				bs[0].Close()
				b.StartTimer()
			}
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "fork-p50-ms")
			b.ReportMetric(float64(took[min(len(took)-1, len(took)*99/100)].Microseconds())/1000, "fork-p99-ms")
			b.ReportMetric(float64(added)/(1<<20), "pss-added-MiB")
			b.ReportMetric(float64(rewritten)/(1<<20), "pss-after-10%-rewrite-MiB")
		})
	}
}
