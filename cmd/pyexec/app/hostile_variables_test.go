package app

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pyexec/pyexec/pkg/api"
	"github.com/pyexec/pyexec/pkg/client"
)

// hostileGlobals are a session's globals made to hurt a listing of them: a __repr__ that
// sleeps, one that prints and writes a listing of its own on the call's stdout, a class that
// fakes its __class__, a __len__ that raises and one that lies, and a 100 MiB string.
const hostileGlobals = `import os, time
class Sleeper:
    def __repr__(self):
        time.sleep(10)
        return 'slept'
class Forger:
    def __repr__(self):
        print('noise ' * 1000)
        os.write(1, b'{"variables": [{"name": "forged", "type": "int", "repr": "1"}], "total": 1, "truncated": false}\n')
        return 'forger'
class Liar:
    __class__ = dict
    def __len__(self):
        return -1
class Raiser:
    def __len__(self):
        raise RuntimeError('no length')
sleeper, forger, liar, raiser = Sleeper(), Forger(), Liar(), Raiser()
huge = 'x' * (100 << 20)
`

// A hostile session's variables through a pod's server and runner: every hostile global is
// listed as what it is, within its bound, the forged listing is not taken, a busy session gets
// 409, and code that ignores every interrupt is killed with its session alone — the sidecar
// goes on serving.
func TestHostileSessionVariables(t *testing.T) {
	s := podSidecar(t, podOptions{})
	ctx := context.Background()
	sess, err := s.client.CreateSession(ctx, api.SessionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := s.client.SessionExecute(ctx, sess.ID, api.ExecuteRequest{Code: hostileGlobals}); err != nil || res.ExitCode != 0 {
		t.Fatalf("setup: %+v %v", res, err)
	}
	start := time.Now()
	v, err := s.client.SessionVariables(ctx, sess.ID)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]api.Variable{}
	var names []string
	for _, x := range v.Variables {
		byName[x.Name] = x
		names = append(names, x.Name)
	}
	if want := []string{"Forger", "Liar", "Raiser", "Sleeper", "forger", "huge", "liar", "raiser", "sleeper"}; !slices.Equal(names, want) {
		t.Fatalf("listed %v; want %v", names, want)
	}
	if x := byName["sleeper"]; !x.TimedOut || !strings.Contains(x.Repr, "longer than") {
		t.Errorf("sleeper: %+v", x)
	}
	if x := byName["forger"]; x.Repr != "forger" {
		t.Errorf("forger: %+v", x)
	}
	if x := byName["liar"]; x.Type != "__main__.Liar" || x.Len != nil {
		t.Errorf("liar (says it is a dict, of length -1): %+v", x)
	}
	if x := byName["raiser"]; x.Len != nil || x.Repr == "" {
		t.Errorf("raiser: %+v", x)
	}
	if x := byName["huge"]; x.Len == nil || *x.Len != 100<<20 || len(x.Repr) > 200 {
		t.Errorf("huge: len %v, %d characters of repr", x.Len, len(x.Repr))
	}
	if took > 2*time.Second {
		t.Errorf("the listing took %v", took)
	}
	t.Logf("a hostile listing of %d variables in %v", len(v.Variables), took.Round(time.Millisecond))

	// Busy while a call runs.
	done := make(chan error, 1)
	go func() {
		_, err := s.client.SessionExecute(ctx, sess.ID, api.ExecuteRequest{Code: "time.sleep(2)"})
		done <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for info, _ := s.client.Session(ctx, sess.ID); (info == nil || !info.Busy) && time.Now().Before(deadline); info, _ = s.client.Session(ctx, sess.ID) {
		time.Sleep(10 * time.Millisecond)
	}
	var apiErr *client.APIError
	if _, err := s.client.SessionVariables(ctx, sess.ID); !errors.As(err, &apiErr) || apiErr.Code != api.ErrCodeSessionBusy {
		t.Errorf("a listing during a call: %v; want session_busy", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// Code that ignores the alarm and the interrupt: killed with its session, nothing else.
	if _, err := s.client.SessionExecute(ctx, sess.ID, api.ExecuteRequest{Code: "import signal\nclass Stubborn:\n    def __repr__(self):\n" +
		"        signal.signal(signal.SIGALRM, signal.SIG_IGN)\n        signal.signal(signal.SIGINT, signal.SIG_IGN)\n        while True:\n            pass\nstubborn = Stubborn()"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.SessionVariables(ctx, sess.ID); !errors.As(err, &apiErr) || apiErr.Status != 500 || !strings.Contains(apiErr.Message, "the session was lost") {
		t.Errorf("a listing of code that will not stop: %v", err)
	}
	if _, err := s.client.Session(ctx, sess.ID); !errors.As(err, &apiErr) || apiErr.Code != api.ErrCodeSessionNotFound {
		t.Errorf("the session after: %v", err)
	}
	if res, err := s.client.Execute(ctx, api.ExecuteRequest{Code: "print('still here')"}); err != nil || res.Stdout != "still here\n" {
		t.Errorf("the sidecar after: %+v %v", res, err)
	}
}

// BenchmarkSessionVariables lists a session of 100 variables (ints, strings, lists, a
// DataFrame, an array), one listing at a time, and reports its p50 and p95.
//
//	go test ./cmd/pyexec/app -run '^$' -bench SessionVariables -benchtime 200x
func BenchmarkSessionVariables(b *testing.B) {
	s := startSidecar(b, nil)
	ctx := context.Background()
	sess, err := s.client.CreateSession(ctx, api.SessionRequest{})
	if err != nil {
		b.Fatal(err)
	}
	code := "import numpy as np, pandas as pd\nfor i in range(96):\n    globals()['v%d' % i] = [i] * i if i % 3 == 0 else ('s' * i if i % 3 == 1 else i)\n" +
		"del i\ndf = pd.DataFrame({'a': range(1000), 'b': 1.5})\narr = np.zeros((100, 100))\nd = {k: k for k in range(50)}\nt = (1, 2)\n"
	if res, err := s.client.SessionExecute(ctx, sess.ID, api.ExecuteRequest{Code: code}); err != nil || res.ExitCode != 0 {
		b.Fatalf("setup: %+v %v", res, err)
	}
	list := func() {
		v, err := s.client.SessionVariables(ctx, sess.ID)
		if err != nil || len(v.Variables) != 100 {
			b.Fatalf("%v, %v", v, err)
		}
	}
	for range 3 {
		list()
	}
	took := make([]time.Duration, 0, b.N)
	for range b.N {
		start := time.Now()
		list()
		took = append(took, time.Since(start))
	}
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(took[len(took)*95/100].Microseconds())/1000, "p95-ms")
	b.ReportMetric(0, "ns/op")
}

// A __repr__ that runs past the listing's deadline in C (a big computation) checks no signal
// until it returns: then the deadline's SIGINT and the variable's SIGALRM are both pending,
// SIGINT's handler runs first (KeyboardInterrupt) and the alarm's right after, in the
// variable's finally — its _TooSlow took the KeyboardInterrupt's place, passed _inspect's
// except KeyboardInterrupt and ended the interpreter: the session was lost (at once, well
// within the interrupt's grace) and the server said the code did not stop. The listing is
// lost, as at the deadline; the session must be kept. Here the C call is signals blocked for
// 3 s, which is what such a call does, to the millisecond; and the code has a SIGALRM handler
// of its own (its time-outs), which the listing's alarm must not run.
func TestHostileSessionVariablesSlowInC(t *testing.T) {
	s := podSidecar(t, podOptions{})
	ctx := context.Background()
	sess, err := s.client.CreateSession(ctx, api.SessionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	code := `import signal, time
def on_alarm(signum, frame):
    raise TimeoutError("the code's own time-out")
signal.signal(signal.SIGALRM, on_alarm)
class Heavy:
    def __repr__(self):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGINT})
        began = time.monotonic()
        while time.monotonic() - began < 3:
            pass
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM, signal.SIGINT})
        return "heavy"
heavy = Heavy()
x = 42
`
	if res, err := s.client.SessionExecute(ctx, sess.ID, api.ExecuteRequest{Code: code}); err != nil || res.ExitCode != 0 {
		t.Fatalf("setup: %+v %v", res, err)
	}
	var apiErr *client.APIError
	if _, err := s.client.SessionVariables(ctx, sess.ID); err == nil || strings.Contains(err.Error(), "the session was lost") {
		t.Errorf("a listing past its deadline in C: %v; want its listing lost and the session kept", err)
	}
	if _, err := s.client.Session(ctx, sess.ID); errors.As(err, &apiErr) && apiErr.Code == api.ErrCodeSessionNotFound {
		t.Fatalf("the session after: %v", err)
	}
	if res, err := s.client.SessionExecute(ctx, sess.ID, api.ExecuteRequest{Code: "print(x)"}); err != nil || res.Stdout != "42\n" {
		t.Errorf("the session's next call: %+v %v", res, err)
	}
}

// A listing continues the session's interpreter, with every thread the code left running:
// they run as long as it lasts (up to its 2 s deadline, as long as the code's reprs make it),
// and a listing took no execution slot. A caller listing its sessions' variables back to back
// had their threads run on every CPU past --max-concurrent, while the slots were others'. A
// listing waits for a slot as a call does.
func TestHostileSessionVariablesTakeASlot(t *testing.T) {
	s := podSidecar(t, podOptions{}, "--max-concurrent", "1", "--queue", "4")
	ctx := context.Background()
	sess, err := s.client.CreateSession(ctx, api.SessionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := s.client.SessionExecute(ctx, sess.ID, api.ExecuteRequest{Code: `import threading
count = [0]
def spin():
    while True:
        count[0] += 1
threading.Thread(target=spin, daemon=True).start()`}); err != nil || res.ExitCode != 0 {
		t.Fatalf("setup: %+v %v", res, err)
	}
	// The only slot, held by another execution for 3 s.
	held := make(chan time.Time, 1)
	go func() {
		_, _ = s.client.Execute(ctx, api.ExecuteRequest{Code: "import time; time.sleep(3)"})
		held <- time.Now()
	}()
	time.Sleep(500 * time.Millisecond)
	var listed []time.Time
	for start := time.Now(); time.Since(start) < 1500*time.Millisecond; {
		if _, err := s.client.SessionVariables(ctx, sess.ID); err != nil {
			t.Fatal(err)
		}
		listed = append(listed, time.Now())
	}
	freed := <-held
	if listed[0].Before(freed) {
		t.Errorf("%d listings (the session's thread running in each) while the only slot was another's", len(listed))
	}
}

// A listing larger than the results the runner sends inline (64 KiB) comes through the
// server's hop whole: 1,000 variables of 200 characters, half of them of four bytes each.
func TestSessionVariablesThroughTheRunner(t *testing.T) {
	s := startSidecar(t, nil)
	ctx := context.Background()
	sess, err := s.client.CreateSession(ctx, api.SessionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	code := "for i in range(1000):\n    globals()['v%04d' % i] = '\\U0001F600' * 300 if i % 2 else 'x' * 300\ndel i"
	if res, err := s.client.SessionExecute(ctx, sess.ID, api.ExecuteRequest{Code: code}); err != nil || res.ExitCode != 0 {
		t.Fatalf("setup: %+v %v", res, err)
	}
	v, err := s.client.SessionVariables(ctx, sess.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Variables) != 1000 || v.Total != 1000 || v.Truncated || !strings.HasPrefix(v.Variables[1].Repr, "'\U0001F600") {
		t.Errorf("%d listed of %d (truncated %v); the second: %.40q", len(v.Variables), v.Total, v.Truncated, v.Variables[1].Repr)
	}
}
