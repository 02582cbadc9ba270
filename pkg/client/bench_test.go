package client

import (
	"testing"
	"time"
)

func TestPercentileNearestRank(t *testing.T) {
	r := &BenchResult{Elapsed: 2 * time.Second}
	for i := 1; i <= 100; i++ {
		r.Latencies = append(r.Latencies, time.Duration(i)*time.Millisecond)
	}
	for p, want := range map[float64]time.Duration{50: 50 * time.Millisecond, 95: 95 * time.Millisecond, 99: 99 * time.Millisecond, 100: 100 * time.Millisecond, 0: time.Millisecond} {
		if got := r.Percentile(p); got != want {
			t.Errorf("p%v = %v, want %v", p, got, want)
		}
	}
	if got := r.Throughput(); got != 50 {
		t.Errorf("throughput %v, want 50/s", got)
	}
	if (&BenchResult{}).Percentile(50) != 0 {
		t.Error("empty result has a percentile")
	}
}
