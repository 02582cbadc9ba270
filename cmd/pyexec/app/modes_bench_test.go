package app

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pyexec/pyexec/pkg/api"
	"github.com/pyexec/pyexec/pkg/client"
)

// BenchmarkModes measures, in one run, the ways an application can run a snippet: the
// original bot's (a fresh interpreter per execution after a venv health check), pyexec in
// spawn mode, in fork mode forking every execution on demand (--warm 0) and in fork mode with
// a spare (--warm 1); for print(1), a pandas operation and a matplotlib PNG; at low load (one
// client, 500 ms between requests) and at saturation (4 clients). Metrics: p50-ms, p95-ms and
// exec/s. Needs numpy, pandas and matplotlib in the system Python (Debian: python3-pandas
// python3-matplotlib). Run with a fixed count, e.g.
//
//	go test ./cmd/pyexec/app -run '^$' -bench Modes -benchtime 40x
func BenchmarkModes(b *testing.B) {
	py := requireDataStack(b)
	snippets := []struct{ name, code string }{
		{"print", "print(1)"},
		{"pandas", "import pandas as pd; pd.DataFrame({'a': range(1000)}).describe()"},
		{"matplotlib", "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([1, 3, 2])\nfig.savefig('plot.png')"},
	}
	loads := []struct {
		name string
		opts client.BenchOptions
	}{
		{"low", client.BenchOptions{Concurrency: 1, Interval: 500 * time.Millisecond, Warmup: 2}},
		{"saturated", client.BenchOptions{Concurrency: 4, Warmup: 2}},
	}
	paths := []struct {
		name  string
		start func(b *testing.B) func(code string) func(context.Context) error
	}{
		{"baseline", func(b *testing.B) func(string) func(context.Context) error { return baseline(b, py) }},
		{"spawn", sidecarPath("--mode", "spawn")},
		{"fork", sidecarPath("--mode", "fork", "--warm", "0")},
		{"fork-warm", sidecarPath("--mode", "fork", "--warm", "1")},
		// The cost of confinement: the same without Landlock and seccomp.
		{"spawn-unconfined", sidecarPath("--mode", "spawn", "--max-landlock-abi", "0", "--seccomp=false")},
		{"fork-warm-unconfined", sidecarPath("--mode", "fork", "--warm", "1", "--max-landlock-abi", "0", "--seccomp=false")},
		// The same snippets as calls in warm sessions (one per client): no fork at all.
		{"fork-warm-session", sessionPath("--mode", "fork", "--warm", "1")},
	}
	for _, p := range paths {
		b.Run(p.name, func(b *testing.B) {
			run := p.start(b)
			for _, sn := range snippets {
				for _, l := range loads {
					b.Run(sn.name+"/"+l.name, func(b *testing.B) {
						o := l.opts
						o.Requests = b.N
						res, err := client.Load(context.Background(), run(sn.code), o)
						if err != nil || res.Failed > 0 {
							b.Fatalf("%v; %d failed, first: %v", err, res.Failed, res.FirstErr)
						}
						b.ReportMetric(float64(res.Percentile(50).Microseconds())/1000, "p50-ms")
						b.ReportMetric(float64(res.Percentile(95).Microseconds())/1000, "p95-ms")
						b.ReportMetric(res.Throughput(), "exec/s")
						b.ReportMetric(0, "ns/op")
					})
				}
			}
		})
	}
}

// sidecarPath runs snippets through a pyexec serve started with args and numpy, pandas and
// matplotlib preloaded; at the end it logs the sidecar's memory.
func sidecarPath(args ...string) func(b *testing.B) func(string) func(context.Context) error {
	return func(b *testing.B) func(string) func(context.Context) error {
		s := startSidecar(b, nil, append([]string{"--preload", "numpy,pandas,matplotlib", "--max-concurrent", "2", "--queue", "64"}, args...)...)
		b.Cleanup(func() {
			b.Logf("%v: sidecar RSS %.0f MiB, PSS %.0f MiB", args, metric(b, s, "pyexec_sidecar_rss_bytes")/(1<<20), metric(b, s, "pyexec_sidecar_pss_bytes")/(1<<20))
		})
		return func(code string) func(context.Context) error {
			return func(ctx context.Context) error {
				res, err := s.client.Execute(ctx, api.ExecuteRequest{Code: code})
				if err == nil && res.ExitCode != 0 {
					err = fmt.Errorf("exit %d: %s", res.ExitCode, res.Stderr)
				}
				return err
			}
		}
	}
}

// sessionPath runs snippets as calls in sessions of a pyexec serve started with args and numpy,
// pandas and matplotlib preloaded: one session for each of 4 clients at most, each warmed by
// a call first.
func sessionPath(args ...string) func(b *testing.B) func(string) func(context.Context) error {
	return func(b *testing.B) func(string) func(context.Context) error {
		s := startSidecar(b, nil, append([]string{"--preload", "numpy,pandas,matplotlib", "--max-concurrent", "2", "--queue", "64"}, args...)...)
		ctx := context.Background()
		ids := make(chan string, 4)
		for range cap(ids) {
			sess, err := s.client.CreateSession(ctx, api.SessionRequest{})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := s.client.SessionExecute(ctx, sess.ID, api.ExecuteRequest{Code: "pass"}); err != nil {
				b.Fatal(err)
			}
			ids <- sess.ID
		}
		return func(code string) func(context.Context) error {
			return func(ctx context.Context) error {
				id := <-ids
				defer func() { ids <- id }()
				res, err := s.client.SessionExecute(ctx, id, api.ExecuteRequest{Code: code})
				if err == nil && res.ExitCode != 0 {
					err = fmt.Errorf("exit %d: %s", res.ExitCode, res.Stderr)
				}
				return err
			}
		}
	}
}

// BenchmarkSessions measures what a session costs: creating one (taken from the session
// started ahead of time with --warm 1 — after a first one, which starts it —, or forked and
// confined on demand with --warm 0; one at a time, 100 ms apart), and the memory it adds (PSS of the sidecar's processes, as root can
// read it, after the session imported pandas and made a DataFrame), with numpy, pandas and
// matplotlib preloaded.
//
//	go test ./cmd/pyexec/app -run '^$' -bench Sessions -benchtime 20x
func BenchmarkSessions(b *testing.B) {
	requireDataStack(b)
	ctx := context.Background()
	for _, warm := range []string{"1", "0"} {
		b.Run("create/warm="+warm, func(b *testing.B) {
			s := startSidecar(b, nil, "--preload", "numpy,pandas,matplotlib", "--warm", warm, "--max-sessions", "64")
			// The first session, forked on demand, starts the one kept ahead of time.
			if first, err := s.client.CreateSession(ctx, api.SessionRequest{}); err != nil {
				b.Fatal(err)
			} else if err := s.client.DeleteSession(ctx, first.ID); err != nil {
				b.Fatal(err)
			}
			time.Sleep(time.Second) // the spare's own start
			var took []time.Duration
			for range b.N {
				start := time.Now()
				sess, err := s.client.CreateSession(ctx, api.SessionRequest{})
				if err != nil {
					b.Fatal(err)
				}
				took = append(took, time.Since(start))
				if err := s.client.DeleteSession(ctx, sess.ID); err != nil {
					b.Fatal(err)
				}
				time.Sleep(100 * time.Millisecond)
			}
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(took[len(took)-1].Microseconds())/1000, "max-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
	b.Run("memory", func(b *testing.B) {
		s := startSidecar(b, nil, "--preload", "numpy,pandas,matplotlib", "--warm", "0", "--max-sessions", "64")
		pss := func() float64 {
			time.Sleep(200 * time.Millisecond)
			return metric(b, s, "pyexec_sidecar_pss_bytes")
		}
		before := pss()
		n := max(b.N, 2)
		for range n {
			sess, err := s.client.CreateSession(ctx, api.SessionRequest{})
			if err != nil {
				b.Fatal(err)
			}
			res, err := s.client.SessionExecute(ctx, sess.ID, api.ExecuteRequest{Code: "import pandas as pd\ndf = pd.DataFrame({'a': range(10000)})\ndf.describe()"})
			if err != nil || res.ExitCode != 0 {
				b.Fatalf("%+v %v", res, err)
			}
		}
		b.ReportMetric((pss()-before)/float64(n)/(1<<20), "PSS-MiB/session")
		b.ReportMetric(0, "ns/op")
	})
}

// baseline is what the original bot did for every execution: check that its venv is healthy
// (the interpreter exists and runs as a venv), then run the code in a fresh interpreter in a
// fresh directory. It is given the benefit of a persistent HOME, so matplotlib builds its font
// cache once, and of a venv that sees the system's numpy, pandas and matplotlib.
func baseline(b *testing.B, py string) func(string) func(context.Context) error {
	dir := b.TempDir()
	venv := filepath.Join(dir, "venv")
	if out, err := exec.Command(py, "-m", "venv", "--system-site-packages", venv).CombinedOutput(); err != nil {
		b.Fatalf("creating the venv: %v: %s", err, out)
	}
	vpy := filepath.Join(venv, "bin", "python")
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + dir, "MPLBACKEND=Agg", "OPENBLAS_NUM_THREADS=1", "OMP_NUM_THREADS=1"}
	var n atomic.Int64
	return func(code string) func(context.Context) error {
		return func(ctx context.Context) error {
			if _, err := os.Stat(vpy); err != nil {
				return err
			}
			health := exec.CommandContext(ctx, vpy, "-c", "import sys; sys.exit(sys.prefix == sys.base_prefix)")
			health.Env = env
			if out, err := health.CombinedOutput(); err != nil {
				return fmt.Errorf("venv health check: %v: %s", err, out)
			}
			work := filepath.Join(dir, "x"+strconv.FormatInt(n.Add(1), 10))
			if err := os.Mkdir(work, 0o700); err != nil {
				return err
			}
			defer os.RemoveAll(work)
			cmd := exec.CommandContext(ctx, vpy, "-c", code)
			cmd.Dir, cmd.Env = work, env
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Run(); err != nil {
				return fmt.Errorf("%v: %s", err, stderr.String())
			}
			return nil
		}
	}
}
