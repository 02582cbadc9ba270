package executor

import (
	"strings"
	"testing"

	"github.com/pyexec/pyexec/pkg/api"
)

// raises is code whose uncaught exception goes through a function: its traceback names the
// code's lines (in "<code>", a session's in "<cell-N>") and no frame of pyexec's own.
const raises = "def check(n):\n    if n > 1:\n        raise ValueError(f'n is {n}')\ncheck(2)\n"

// wantRaised checks res's exception is raises's.
func wantRaised(t *testing.T, res api.ExecuteResult) {
	t.Helper()
	e := res.Exception
	if res.ExitCode != 1 || e == nil || e.Ename != "ValueError" || e.Evalue != "n is 2" {
		t.Fatalf("exit %d, exception %+v; stderr %q", res.ExitCode, e, res.Stderr)
	}
	tb := strings.Join(e.Traceback, "\n")
	if e.Traceback[0] != "Traceback (most recent call last):" || e.Traceback[len(e.Traceback)-1] != "ValueError: n is 2" ||
		!strings.Contains(tb, `>", line 3, in check`) || strings.Contains(tb, "<pyexec>") || strings.Contains(res.Stderr, "<pyexec>") {
		t.Errorf("traceback:\n%s\nstderr:\n%s", tb, res.Stderr)
	}
	if !strings.HasSuffix(res.Stderr, tb+"\n") {
		t.Errorf("stderr %q does not end with the traceback", res.Stderr)
	}
}

// An uncaught exception is the result's exception, in every mode and in a session's call; a
// run that ends otherwise — normally, by sys.exit, by a record the code forged itself before it
// exited 0 — has none.
func TestResultException(t *testing.T) {
	forged := "f = display.__globals__['_outputs']\nf.write('{\"type\": \"error\", \"ename\": \"Forged\", \"evalue\": \"\", \"traceback\": []}\\n')\nf.flush()\n"
	for name, ex := range modes(t) {
		t.Run(name, func(t *testing.T) {
			wantRaised(t, run1(t, ex, raises))
			for _, code := range []string{"print(1)", "import sys\nsys.exit(3)", forged} {
				if res := run1(t, ex, code); res.Exception != nil {
					t.Errorf("%q: exception %+v", code, res.Exception)
				}
			}
		})
	}
	for name, st := range sessionModes(t) {
		t.Run("session-"+name, func(t *testing.T) {
			ss := newSession(t, st, SessionRequest{ID: "s"})
			wantRaised(t, call(t, ss, raises))
			if res := call(t, ss, "check(1)\n'fine'"); res.ExitCode != 0 || res.Exception != nil {
				t.Errorf("the next call: exit %d, exception %+v", res.ExitCode, res.Exception)
			}
		})
	}
}
