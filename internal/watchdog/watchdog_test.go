package watchdog

import (
	"testing"
	"time"

	"github.com/go-logr/logr"
)

// TestTakeDeletion: at most MaxDeletionsPerMinute in any 60 seconds, a sliding window; a
// refused deletion says when the next one is allowed.
func TestTakeDeletion(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	w, err := New(nil, nil, nil, Config{Delete: true, MaxDeletionsPerMinute: 2, Now: func() time.Time { return now }}, logr.Discard(), nil)
	if err != nil {
		t.Fatal(err)
	}
	step := func(d time.Duration, want bool, wantWait time.Duration) {
		t.Helper()
		now = now.Add(d)
		ok, wait := w.takeDeletion()
		if ok != want || wait != wantWait {
			t.Errorf("at +%v: %v, wait %v; want %v, %v", now.Sub(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)), ok, wait, want, wantWait)
		}
	}
	step(0, true, 0)
	step(10*time.Second, true, 0)
	step(0, false, 51*time.Second)             // +10s: the first one leaves the window at +60s (+1s margin)
	step(49*time.Second, false, 2*time.Second) // +59s
	step(2*time.Second, true, 0)               // +61s: the first one is out
	step(0, false, 10*time.Second)             // the one at +10s leaves at +70s (+1s margin)
	step(10*time.Second, true, 0)
}

func TestNewRejectsNoDeletions(t *testing.T) {
	if _, err := New(nil, nil, nil, Config{Delete: true}, logr.Discard(), nil); err == nil {
		t.Error("deletion with MaxDeletionsPerMinute 0 accepted")
	}
	if _, err := New(nil, nil, nil, Config{}, logr.Discard(), nil); err != nil {
		t.Errorf("report only: %v", err)
	}
}
