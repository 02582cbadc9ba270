package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pyexec/pyexec/pkg/api"
)

// BenchOptions configure Bench.
type BenchOptions struct {
	Requests    int           // executions in all
	Concurrency int           // clients sending at once
	Interval    time.Duration // pause of each client between its requests (low-load runs)
	Warmup      int           // executions sent first and not counted
}

// BenchResult holds the latencies of the successful executions and what failed.
type BenchResult struct {
	Latencies []time.Duration // sorted
	Failed    int             // request errors (429 included) and executions that did not exit 0
	Elapsed   time.Duration
	FirstErr  error
	// Stages are the results' timings_ms of the measured executions, by stage, sorted.
	Stages map[string][]float64
}

// StagePercentile returns the p-th percentile (0-100) of a stage's milliseconds, nearest
// rank; false when no result had the stage.
func (r *BenchResult) StagePercentile(stage string, p float64) (float64, bool) {
	v := r.Stages[stage]
	if len(v) == 0 {
		return 0, false
	}
	i := int(math.Ceil(p/100*float64(len(v)))) - 1
	return v[max(0, min(i, len(v)-1))], true
}

// Percentile returns the p-th percentile (0-100) of the latencies, nearest rank.
func (r *BenchResult) Percentile(p float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(r.Latencies)))) - 1
	return r.Latencies[max(0, min(i, len(r.Latencies)-1))]
}

// Throughput is successful executions per second of wall time.
func (r *BenchResult) Throughput() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(len(r.Latencies)) / r.Elapsed.Seconds()
}

// Report writes a short human summary.
func (r *BenchResult) Report(w io.Writer) { r.ReportAs(w, "") }

// ReportAs writes the summary of Report with every line starting with label ("stateless ").
func (r *BenchResult) ReportAs(w io.Writer, label string) {
	fmt.Fprintf(w, "%sexecutions: %d ok, %d failed in %v\n", label, len(r.Latencies), r.Failed, r.Elapsed.Round(time.Millisecond))
	fmt.Fprintf(w, "%slatency: p50 %v  p95 %v  p99 %v  max %v\n", label, round(r.Percentile(50)), round(r.Percentile(95)), round(r.Percentile(99)), round(r.Percentile(100)))
	fmt.Fprintf(w, "%sthroughput: %.1f executions/s\n", label, r.Throughput())
	if len(r.Stages) > 0 {
		var parts []string
		for _, stage := range api.Stages {
			if v, ok := r.StagePercentile(stage, 50); ok {
				parts = append(parts, fmt.Sprintf("%s %.3f", stage, v))
			}
		}
		fmt.Fprintf(w, "%sstages p50 (ms): %s\n", label, strings.Join(parts, "  "))
	}
	if r.FirstErr != nil {
		fmt.Fprintf(w, "%sfirst failure: %v\n", label, r.FirstErr)
	}
}

func round(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }

// Bench sends req Requests times from Concurrency clients and measures each execution from
// request to result; one that does not exit 0 counts as failed.
func (c *Client) Bench(ctx context.Context, req api.ExecuteRequest, o BenchOptions) (*BenchResult, error) {
	var st stages
	return st.load(ctx, o, func(ctx context.Context) (*api.ExecuteResult, error) { return c.Execute(ctx, req) })
}

// stages gathers the timings_ms of the results of a Load.
type stages struct {
	mu sync.Mutex
	ms map[string][]float64
}

// load is Load of run, whose results count as exitedZero says, with the stages of the
// measured ones (not the warm-up's) in the result.
func (s *stages) load(ctx context.Context, o BenchOptions, run func(context.Context) (*api.ExecuteResult, error)) (*BenchResult, error) {
	for i := 0; i < o.Warmup; i++ {
		if err := exitedZero(run(ctx)); err != nil {
			return nil, fmt.Errorf("bench: warm-up: %w", err)
		}
	}
	o.Warmup = 0
	res, err := Load(ctx, func(ctx context.Context) error {
		r, err := run(ctx)
		if err == nil {
			s.add(r.TimingsMS)
		}
		return exitedZero(r, err)
	}, o)
	if res != nil {
		for _, v := range s.ms {
			slices.Sort(v)
		}
		res.Stages = s.ms
	}
	return res, err
}

func (s *stages) add(t map[string]float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ms == nil {
		s.ms = map[string][]float64{}
	}
	for stage, v := range t {
		s.ms[stage] = append(s.ms[stage], v)
	}
}

// exitedZero is err, or an error when the execution did not exit 0.
func exitedZero(r *api.ExecuteResult, err error) error {
	if err == nil && (r.Reason != api.ReasonExit || r.ExitCode != 0) {
		err = fmt.Errorf("execution ended with reason %s, exit code %d: %.200s", r.Reason, r.ExitCode, r.Stderr)
		if r.SessionLost {
			err = fmt.Errorf("%w (the session was lost)", err)
		}
	}
	return err
}

// SessionBenchResult holds what BenchSession measured.
type SessionBenchResult struct {
	// Calls are the calls of the code in warm sessions.
	Calls *BenchResult
	// Creates are POST /v1/sessions, one at a time; Deletes the DELETE of each right after.
	Creates, Deletes *BenchResult
}

// Report writes a short human summary, every line starting with "session". With stateless (a
// Bench of the same code in the same run) a last line compares the p50s.
func (r *SessionBenchResult) Report(w io.Writer, stateless *BenchResult) {
	r.Calls.ReportAs(w, "session ")
	fmt.Fprintf(w, "session create: p50 %v  max %v  (delete p50 %v; %d created and deleted)\n",
		round(r.Creates.Percentile(50)), round(r.Creates.Percentile(100)), round(r.Deletes.Percentile(50)), len(r.Creates.Latencies))
	if stateless != nil {
		if ratio, ok := p50Ratio(r.Calls, stateless); ok {
			fmt.Fprintf(w, "session p50 / stateless p50: %.2f\n", ratio)
		}
	}
}

// p50Ratio is a's p50 over b's, when both have one.
func p50Ratio(a, b *BenchResult) (float64, bool) {
	pa, pb := a.Percentile(50), b.Percentile(50)
	if pa <= 0 || pb <= 0 {
		return 0, false
	}
	return float64(pa) / float64(pb), true
}

// BenchSession measures sessions. First it creates creates sessions one after another and
// deletes each right away, timing both. Then it opens o.Concurrency sessions, sends each
// o.Warmup calls of req that are not counted, and measures o.Requests calls of req from
// o.Concurrency clients, each with its own session (a session runs one call at a time).
// It deletes the sessions at the end, even when ctx is done. A call that does not exit 0
// counts as failed; a session that cannot be created or deleted is an error.
func (c *Client) BenchSession(ctx context.Context, req api.ExecuteRequest, o BenchOptions, creates int) (*SessionBenchResult, error) {
	if o.Requests <= 0 || o.Concurrency <= 0 || creates <= 0 {
		return nil, errors.New("bench: requests, concurrency and session creates must be positive")
	}
	creating, deleting := &BenchResult{}, &BenchResult{}
	start := time.Now()
	for i := 0; i < creates; i++ {
		t0 := time.Now()
		s, err := c.CreateSession(ctx, api.SessionRequest{})
		if err != nil {
			return nil, fmt.Errorf("bench: creating a session: %w", err)
		}
		t1 := time.Now()
		if err := c.DeleteSession(ctx, s.ID); err != nil {
			return nil, fmt.Errorf("bench: deleting session %s: %w", s.ID, err)
		}
		creating.Latencies = append(creating.Latencies, t1.Sub(t0))
		deleting.Latencies = append(deleting.Latencies, time.Since(t1))
	}
	creating.Elapsed, deleting.Elapsed = time.Since(start), time.Since(start)
	slices.Sort(creating.Latencies)
	slices.Sort(deleting.Latencies)

	pool := make(chan string, o.Concurrency)
	var ids []string
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		for _, id := range ids {
			_ = c.DeleteSession(dctx, id) // a lost session is gone already; the rest end when idle
		}
	}()
	for i := 0; i < o.Concurrency; i++ {
		s, err := c.CreateSession(ctx, api.SessionRequest{})
		if err != nil {
			return nil, fmt.Errorf("bench: opening session %d of %d: %w", i+1, o.Concurrency, err)
		}
		ids = append(ids, s.ID)
		for w := 0; w < o.Warmup; w++ {
			if err := exitedZero(c.SessionExecute(ctx, s.ID, req)); err != nil {
				return nil, fmt.Errorf("bench: warming session %s: %w", s.ID, err)
			}
		}
		pool <- s.ID
	}
	var st stages
	calls, err := st.load(ctx, BenchOptions{Requests: o.Requests, Concurrency: o.Concurrency, Interval: o.Interval},
		func(ctx context.Context) (*api.ExecuteResult, error) {
			id := <-pool // one per client: never waits
			defer func() { pool <- id }()
			return c.SessionExecute(ctx, id, req)
		})
	if err != nil {
		return nil, err
	}
	return &SessionBenchResult{Calls: calls, Creates: creating, Deletes: deleting}, nil
}

// Load calls run Requests times from Concurrency goroutines, each pausing Interval between
// its calls, and measures each call. It is Bench for any way of running code (a baseline).
func Load(ctx context.Context, run func(context.Context) error, o BenchOptions) (*BenchResult, error) {
	if o.Requests <= 0 || o.Concurrency <= 0 {
		return nil, errors.New("bench: requests and concurrency must be positive")
	}
	for i := 0; i < o.Warmup; i++ {
		if err := run(ctx); err != nil {
			return nil, fmt.Errorf("bench: warm-up: %w", err)
		}
	}
	res := &BenchResult{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	next := make(chan struct{}, o.Requests)
	for i := 0; i < o.Requests; i++ {
		next <- struct{}{}
	}
	close(next)
	start := time.Now()
	for w := 0; w < o.Concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				if ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				err := run(ctx)
				d := time.Since(t0)
				mu.Lock()
				if err != nil {
					res.Failed++
					if res.FirstErr == nil {
						res.FirstErr = err
					}
				} else {
					res.Latencies = append(res.Latencies, d)
				}
				mu.Unlock()
				if o.Interval > 0 {
					select {
					case <-ctx.Done():
						return
					case <-time.After(o.Interval):
					}
				}
			}
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	slices.Sort(res.Latencies)
	return res, ctx.Err()
}
