package executor

import (
	"context"
	"testing"

	"github.com/pyexec/pyexec/pkg/api"
)

// Every execution and session call says where its time went: the request's stages (the
// server's) as given, then start, run and collect, which add up to no more than its duration,
// and run holds the code's own time.
func TestTimings(t *testing.T) {
	const code = "import time; time.sleep(0.2)"
	given := map[string]float64{api.StageParse: 0.5, api.StageQueue: 7}
	check := func(t *testing.T, res api.ExecuteResult) {
		t.Helper()
		tm := res.TimingsMS
		sum := 0.0
		for _, stage := range []string{api.StageStart, api.StageRun, api.StageCollect} {
			v, ok := tm[stage]
			if !ok || v < 0 {
				t.Fatalf("timings_ms %v: no %s", tm, stage)
			}
			sum += v
		}
		if tm[api.StageParse] != 0.5 || tm[api.StageQueue] != 7 {
			t.Errorf("timings_ms %v: the request's stages are not as given", tm)
		}
		if tm[api.StageRun] < 200 || sum > res.DurationMS+0.01 {
			t.Errorf("timings_ms %v, duration %v ms: run under the code's 200 ms, or stages over the duration", tm, res.DurationMS)
		}
	}
	for name, ex := range modes(t) {
		t.Run(name, func(t *testing.T) {
			res, err := ex.Execute(context.Background(), Request{ID: "t", Code: code, Limits: defaultLimits, Timings: given}, nil)
			if err != nil || res.ExitCode != 0 {
				t.Fatalf("%v %+v", err, res)
			}
			check(t, res)
		})
	}
	for name, st := range sessionModes(t) {
		t.Run("session/"+name, func(t *testing.T) {
			ss := newSession(t, st, SessionRequest{})
			check(t, call(t, ss, code, func(r *Request) { r.Timings = given }))
		})
	}
}
