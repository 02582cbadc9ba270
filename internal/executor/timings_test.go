package executor

import (
	"context"
	"testing"

	"github.com/pyexec/pyexec/pkg/api"
)

// Every execution and session call says where its time went: the request's stages (the
// server's) as given, then start, run and collect, which add up to no more than its duration,
// and run holds the code's own time, which code says.
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
		if code, ok := tm[api.StageCode]; !ok || code < 200 || code > tm[api.StageRun] {
			t.Errorf("timings_ms %v: code missing, under the code's 200 ms, or over run", tm)
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

// The code's time is the code's process's word: code that reports a time of its own on its
// process's socket to the supervisor, longer than the run can have been, gets no code stage
// (and the run its real one).
func TestTimingsCodeCannotClaimMoreThanItsRun(t *testing.T) {
	forgeReport(t, "0 c999999999999", "import time\ntime.sleep(0.2)", func(t *testing.T, res api.ExecuteResult) {
		if code, ok := res.TimingsMS[api.StageCode]; ok {
			t.Fatalf("timings_ms %v: a code stage of %v ms, which the code made up", res.TimingsMS, code)
		}
		if run, ok := res.TimingsMS[api.StageRun]; !ok || run >= 999_999_000 {
			t.Fatalf("timings_ms %v: no run, or the code's", res.TimingsMS)
		}
	})
}

// A report the code writes itself on its process's socket to the supervisor, with an exit
// status no process can have, is no report: the execution's exit code is the real one.
func TestForgedReportOfAnImpossibleExitStatus(t *testing.T) {
	forgeReport(t, "-7", "raise SystemExit(3)", func(t *testing.T, res api.ExecuteResult) {
		if res.ExitCode != 3 {
			t.Fatalf("exit code %d, want the code's 3: %+v", res.ExitCode, res)
		}
	})
}

// forgeReport runs, in every mode, code that writes report on every socket it holds (its
// process's socket to the supervisor among them) and then runs then; check judges the result.
func forgeReport(t *testing.T, report, then string, check func(*testing.T, api.ExecuteResult)) {
	code := `import os, stat
for fd in range(3, 64):
    try:
        if stat.S_ISSOCK(os.fstat(fd).st_mode):
            os.write(fd, b"` + report + `")
    except OSError:
        pass
` + then + "\n"
	for name, ex := range modes(t) {
		t.Run(name, func(t *testing.T) {
			if name == modeForkWarm {
				awaitSpare(t, ex.(*Fork))
			}
			res, err := ex.Execute(context.Background(), Request{ID: "t", Code: code, Limits: defaultLimits}, nil)
			if err != nil {
				t.Fatal(err)
			}
			check(t, res)
		})
	}
}
