package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
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
func (r *BenchResult) Report(w io.Writer) {
	fmt.Fprintf(w, "executions: %d ok, %d failed in %v\n", len(r.Latencies), r.Failed, r.Elapsed.Round(time.Millisecond))
	fmt.Fprintf(w, "latency: p50 %v  p95 %v  p99 %v  max %v\n", round(r.Percentile(50)), round(r.Percentile(95)), round(r.Percentile(99)), round(r.Percentile(100)))
	fmt.Fprintf(w, "throughput: %.1f executions/s\n", r.Throughput())
	if r.FirstErr != nil {
		fmt.Fprintf(w, "first failure: %v\n", r.FirstErr)
	}
}

func round(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }

// Bench sends req Requests times from Concurrency clients and measures each execution from
// request to result; one that does not exit 0 counts as failed.
func (c *Client) Bench(ctx context.Context, req api.ExecuteRequest, o BenchOptions) (*BenchResult, error) {
	return Load(ctx, func(ctx context.Context) error {
		r, err := c.Execute(ctx, req)
		if err == nil && (r.Reason != api.ReasonExit || r.ExitCode != 0) {
			err = fmt.Errorf("execution ended with reason %s, exit code %d: %.200s", r.Reason, r.ExitCode, r.Stderr)
		}
		return err
	}, o)
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
