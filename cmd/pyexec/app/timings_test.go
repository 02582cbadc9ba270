package app

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pyexec/pyexec/pkg/api"
)

// A real sidecar as the injected pod runs it (server and runner of their own uids, a runner
// socket between them) says in each result where the time went: every stage of api.Stages,
// in an execution and a session's call; the wait of an execution behind another is its queue;
// and /metrics has the stage histogram.
func TestTimingsOfARealSidecar(t *testing.T) {
	s := podSidecar(t, podOptions{}, "--max-concurrent", "1")
	ctx := context.Background()
	first := make(chan error, 1)
	go func() {
		_, err := s.client.Execute(ctx, api.ExecuteRequest{Code: "import time; time.sleep(0.5)"})
		first <- err
	}()
	waitFor(t, 10*time.Second, "the first execution to run", func() bool { return metric(t, s, "pyexec_executions_in_flight") == 1 })
	queued := s.execute(t, api.ExecuteRequest{Code: "print(1)"})
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	sess, err := s.client.CreateSession(ctx, api.SessionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	call, err := s.client.SessionExecute(ctx, sess.ID, api.ExecuteRequest{Code: "x = 1"})
	if err != nil {
		t.Fatal(err)
	}
	for name, res := range map[string]*api.ExecuteResult{"execution": queued, "session call": call} {
		for _, stage := range api.Stages {
			if v, ok := res.TimingsMS[stage]; !ok || v < 0 || v > res.DurationMS+10_000 {
				t.Errorf("%s: timings_ms %v: %s missing or out of range", name, res.TimingsMS, stage)
			}
		}
	}
	if q := queued.TimingsMS[api.StageQueue]; q < 100 {
		t.Errorf("an execution behind a 500 ms one waited %v ms in the queue; want at least 100", q)
	}
	for _, stage := range api.Stages {
		if n := metric(t, s, `pyexec_execution_stage_seconds_count{stage="`+stage+`"}`); n < 3 {
			t.Errorf("pyexec_execution_stage_seconds_count{stage=%q} = %v; want the 3 results", stage, n)
		}
	}
	if testing.Verbose() {
		var b strings.Builder
		for _, stage := range api.Stages {
			b.WriteString(stage + " " + time.Duration(queued.TimingsMS[stage]*float64(time.Millisecond)).String() + "  ")
		}
		t.Log("queued execution: " + b.String())
	}
}
