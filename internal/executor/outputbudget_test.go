package executor

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/pyexec/pyexec/pkg/api"
)

// keepEnds keeps whole characters: the first and last of the share, the count of those left
// out between them.
func TestKeepEnds(t *testing.T) {
	s := strings.Repeat("é", 10) + strings.Repeat("x", 10)
	got, omitted := keepEnds(s, 20, 6, "here")
	if got != "ééé\n... [14 characters left out: here] ...\nxxx" || omitted != 14 {
		t.Errorf("%q, %d", got, omitted)
	}
	if got, omitted := keepEnds("short", 5, 6, "here"); got != "short" || omitted != 0 {
		t.Errorf("under the share: %q, %d", got, omitted)
	}
	if got := fullOutputName("a/b..c-1_2"); got != "pyexec-output-abc-1_2.txt" {
		t.Errorf("fullOutputName: %q", got)
	}
}

// With an output budget, stdout and stderr share it: each keeps its ends, the result says how
// much was left out, and the whole output is a file — returned by an execution, kept by a
// session (its next call reads it). Under the budget nothing changes.
func TestOutputBudget(t *testing.T) {
	const code = "import sys\nprint('A' * 30000 + 'END')\nprint('e' * 50, file=sys.stderr)"
	check := func(t *testing.T, res api.ExecuteResult) string {
		t.Helper()
		b := res.OutputBudget
		if b == nil || b.LimitChars != 1000 || b.FullOutputFile == "" || !strings.HasPrefix(b.FullOutputFile, "pyexec-output-") {
			t.Fatalf("output_budget %+v", b)
		}
		n := utf8.RuneCountInString(res.Stdout) + utf8.RuneCountInString(res.Stderr)
		if !strings.HasPrefix(res.Stdout, "AAA") || !strings.HasSuffix(res.Stdout, "END\n") || !strings.Contains(res.Stdout, "characters left out: the whole output is in the file "+b.FullOutputFile) ||
			res.Stderr != strings.Repeat("e", 50)+"\n" || n > 1000+120 || b.OmittedChars != 30004+51-1000 {
			t.Errorf("stdout %d characters (%.40q...), stderr %q, omitted %d", utf8.RuneCountInString(res.Stdout), res.Stdout, res.Stderr, b.OmittedChars)
		}
		return b.FullOutputFile
	}
	budget := func(r *Request) { r.OutputBudgetChars = 1000 }
	want := "=== stdout ===\n" + strings.Repeat("A", 30000) + "END\n\n=== stderr ===\n" + strings.Repeat("e", 50) + "\n"
	for name, ex := range modes(t) {
		t.Run(name, func(t *testing.T) {
			req := Request{ID: "budget-1", Code: code, Limits: defaultLimits}
			budget(&req)
			res, err := ex.Execute(t.Context(), req, nil)
			if err != nil {
				t.Fatal(err)
			}
			file := check(t, res)
			var found bool
			for _, f := range res.Files {
				if f.Path == file {
					data, _ := base64.StdEncoding.DecodeString(f.ContentBase64)
					found = string(data) == want
				}
			}
			if !found {
				t.Errorf("the full output file is not among the files, whole: %v", res.Files)
			}
			if res := run1(t, ex, "print('small')"); res.OutputBudget != nil || res.Stdout != "small\n" {
				t.Errorf("without a budget: %+v", res.OutputBudget)
			}
		})
	}
	for name, st := range sessionModes(t) {
		t.Run("session-"+name, func(t *testing.T) {
			ss := newSession(t, st, SessionRequest{ID: "s"})
			file := check(t, call(t, ss, code, budget))
			res := call(t, ss, "print(len(open('"+file+"').read()))")
			if res.Stdout != fmt.Sprintf("%d\n", len(want)) {
				t.Errorf("the next call reads the full output file: %q %q", res.Stdout, res.Stderr)
			}
		})
	}
}

// A full output file that the caps on files leave out of an execution's result is said lost,
// in the result and in the line that stands for what was left out.
func TestOutputBudgetFileLeftOut(t *testing.T) {
	ex := modes(t)["spawn"]
	req := Request{ID: "left-out", Code: "for i in range(10):\n    open('f%d' % i, 'w').write('x')\nprint('A' * 5000)", Limits: defaultLimits, OutputBudgetChars: 200}
	req.MaxFilesOut = 3
	res, err := ex.Execute(t.Context(), req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b := res.OutputBudget; b == nil || b.FullOutputFile != "" || !strings.Contains(res.Stdout, fullOutputLost) || strings.Contains(res.Stdout, "pyexec-output-") {
		t.Errorf("output_budget %+v, files %d, stdout %q", res.OutputBudget, len(res.Files), res.Stdout)
	}
}
