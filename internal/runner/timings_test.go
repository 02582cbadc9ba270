package runner

import (
	"testing"
	"time"

	"github.com/pyexec/pyexec/pkg/api"
)

// The hop is measured on the monotonic clock the server and the runner share, and left out
// when the server's time cannot be this clock's; the server's stages pass as they are.
func TestWithHop(t *testing.T) {
	server := map[string]float64{api.StageParse: 1, api.StageQueue: 2}
	now := monotonicNow()
	got := withHop(server, now-int64(3*time.Millisecond))
	if h := got[api.StageHop]; h < 3 || h > 1000 || got[api.StageParse] != 1 || got[api.StageQueue] != 2 {
		t.Errorf("withHop 3 ms ago: %v", got)
	}
	if _, ok := server[api.StageHop]; ok {
		t.Error("withHop changed the server's map")
	}
	for what, sentAt := range map[string]int64{"not sent": 0, "later than now": now + int64(time.Hour), "over a minute ago": now - int64(2*time.Minute)} {
		if got := withHop(server, sentAt); len(got) != 2 {
			t.Errorf("%s: %v; want no hop", what, got)
		}
	}
	if got := withHop(nil, now); got[api.StageHop] < 0 || len(got) != 1 {
		t.Errorf("no server stages: %v", got)
	}
}
