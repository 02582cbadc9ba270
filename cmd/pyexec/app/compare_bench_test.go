package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pyexec/pyexec/pkg/api"
	"github.com/pyexec/pyexec/pkg/client"
)

// BenchmarkAgainstRef compares this tree's pyexec with another build of it in the same run, so
// that a change is measured against what came before it on the same machine at the same time:
// it builds both (the ref in a worktree of its own: $PYEXEC_BASE_REF, by default HEAD~1, the
// parent commit), starts each as a sidecar the same way (numpy, pandas and matplotlib
// preloaded), and sends each snippet to both with the same client in alternating rounds
// (base, this, base, this, ...; $PYEXEC_ROUNDS, by default 3), stateless and as calls in a
// warm session, at low load (one client, 300 ms between requests: every execution finds its
// processes at rest, as an agent's calls do) and saturated (4 clients, no pause).
//
// For each case it reports the median over the rounds of each build's p50 (low load) or
// executions per second (saturated), and this/base: below 1 is faster for latency, above 1 for
// throughput. Read a ratio within ±5% as noise on this kind of machine; run it twice before
// believing a smaller change. A base without sessions gets its session rows skipped, said so.
//
//	make bench-compare BASE=17ce468   # or: PYEXEC_BASE_REF=ref go test ./cmd/pyexec/app -run '^$' -bench AgainstRef -benchtime 30x -timeout 60m
func BenchmarkAgainstRef(b *testing.B) {
	requireDataStack(b)
	ref := os.Getenv("PYEXEC_BASE_REF")
	if ref == "" {
		ref = "HEAD~1"
	}
	rounds := 3
	if v := os.Getenv("PYEXEC_ROUNDS"); v != "" {
		if _, err := fmt.Sscan(v, &rounds); err != nil || rounds < 1 {
			b.Fatalf("PYEXEC_ROUNDS=%q: want a positive number", v)
		}
	}
	bins := map[string]string{"base": buildRef(b, ref), "this": buildRef(b, "")}
	args := []string{"--preload", "numpy,pandas,matplotlib", "--max-concurrent", "2", "--queue", "64"}
	sidecars := map[string]*sidecar{}
	for name, bin := range bins {
		sidecars[name] = startSidecarWith(b, sidecarOptions{bin: bin}, args...)
	}
	b.Logf("base %s (%s), this tree (%s); %d rounds", ref, describe(ref), describe(""), rounds)

	snippets := []struct {
		name, code string
		png        bool // the result must show a PNG: a build that shows none has nothing to compare
	}{
		{"print", "print(1)", false},
		{"pandas", "import pandas as pd\ndf = pd.DataFrame({'a': range(1000), 'b': [i * 0.5 for i in range(1000)]})\nprint(df.describe())", false},
		// A figure as a notebook shows it: matplotlib's defaults (6.4x4.8 in at 100 dpi).
		{"png", "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()", true},
	}
	loads := []struct {
		name string
		opts client.BenchOptions
	}{
		{"low", client.BenchOptions{Concurrency: 1, Interval: 300 * time.Millisecond, Warmup: 2}},
		{"saturated", client.BenchOptions{Concurrency: 4, Warmup: 2}},
	}
	for _, kind := range []string{"stateless", "session"} {
		for _, sn := range snippets {
			for _, l := range loads {
				b.Run(kind+"/"+sn.name+"/"+l.name, func(b *testing.B) {
					runs := map[string]func(context.Context) error{}
					for name, s := range sidecars {
						run, err := snippetRun(b, s, kind, sn.code, sn.png, l.opts.Concurrency)
						if err != nil && name == "this" {
							b.Fatal(err)
						}
						if err != nil {
							b.Skipf("SKIPPED: the %s build cannot run this: %v", name, err)
						}
						runs[name] = run
					}
					got := map[string][]float64{}
					for range rounds {
						for _, name := range []string{"base", "this"} {
							o := l.opts
							o.Requests = b.N
							res, err := client.Load(context.Background(), runs[name], o)
							if err != nil || res.Failed > 0 {
								b.Fatalf("%s: %v; %d failed, first: %v", name, err, res.Failed, res.FirstErr)
							}
							v := float64(res.Percentile(50).Microseconds()) / 1000
							if l.opts.Interval == 0 {
								v = res.Throughput()
							}
							got[name] = append(got[name], v)
						}
					}
					base, this := median(got["base"]), median(got["this"])
					unit := "p50-ms"
					if l.opts.Interval == 0 {
						unit = "exec/s"
					}
					b.ReportMetric(base, "base-"+unit)
					b.ReportMetric(this, "this-"+unit)
					b.ReportMetric(this/base, "this/base")
					b.ReportMetric(0, "ns/op")
				})
			}
		}
	}
}

// snippetRun returns what sends code to s once: as an execution, or as a call in one of
// clients warm sessions (one per client, each warmed by a call first and deleted at the end).
// It sends it once first: the code must exit 0, and show a PNG when png is set.
func snippetRun(b *testing.B, s *sidecar, kind, code string, png bool, clients int) (func(context.Context) error, error) {
	ctx := context.Background()
	check := func(res *api.ExecuteResult, err error) error {
		if err == nil && res.ExitCode != 0 {
			err = fmt.Errorf("exit %d: %s", res.ExitCode, res.Stderr)
		}
		return err
	}
	shows := func(res *api.ExecuteResult, err error) error {
		if err := check(res, err); err != nil || !png {
			return err
		}
		for _, o := range res.Outputs {
			if o.Data["image/png"] != "" {
				return nil
			}
		}
		return errors.New("no image/png in the result's outputs (a build without rich outputs)")
	}
	if kind == "stateless" {
		if err := shows(s.client.Execute(ctx, api.ExecuteRequest{Code: code})); err != nil {
			return nil, err
		}
		return func(ctx context.Context) error { return check(s.client.Execute(ctx, api.ExecuteRequest{Code: code})) }, nil
	}
	ids := make(chan string, clients)
	for range clients {
		sess, err := s.client.CreateSession(ctx, api.SessionRequest{})
		if err != nil {
			return nil, err
		}
		b.Cleanup(func() { _ = s.client.DeleteSession(context.Background(), sess.ID) })
		if err := check(s.client.SessionExecute(ctx, sess.ID, api.ExecuteRequest{Code: "pass"})); err != nil {
			return nil, err
		}
		ids <- sess.ID
	}
	id := <-ids
	if err := shows(s.client.SessionExecute(ctx, id, api.ExecuteRequest{Code: code})); err != nil {
		return nil, err
	}
	ids <- id
	return func(ctx context.Context) error {
		id := <-ids
		defer func() { ids <- id }()
		return check(s.client.SessionExecute(ctx, id, api.ExecuteRequest{Code: code}))
	}, nil
}

// buildRef builds pyexec as the image does (buildPyexecIn) at ref, in a worktree of its own,
// or this tree when ref is "".
func buildRef(b *testing.B, ref string) string {
	b.Helper()
	if ref == "" {
		return buildPyexec(b)
	}
	root, err := filepath.Abs("../../..")
	if err != nil {
		b.Fatal(err)
	}
	src, err := os.MkdirTemp("", "pyexec-ref-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(src) })
	if msg, err := exec.Command("git", "-C", root, "worktree", "add", "--detach", src, ref).CombinedOutput(); err != nil {
		b.Fatalf("a worktree of %s: %v\n%s", ref, err, msg)
	}
	b.Cleanup(func() { _ = exec.Command("git", "-C", root, "worktree", "remove", "--force", src).Run() })
	return buildPyexecIn(b, src)
}

// describe is git's name of ref's commit, or of the working tree when ref is "".
func describe(ref string) string {
	args := []string{"describe", "--always", "--dirty"}
	if ref != "" {
		args = []string{"describe", "--always", ref}
	}
	out, err := exec.Command("git", args...).Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func median(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}
