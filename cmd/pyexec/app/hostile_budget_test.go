package app

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/pyexec/pyexec/internal/mcpserver"
	"github.com/pyexec/pyexec/pkg/api"
)

// fiftyMB prints 50 MB, a line at a time, through a pod's server and runner.
const fiftyMB = "import sys\nline = 'x' * 99 + '\\n'\nfor i in range(500000):\n    sys.stdout.write(line)\n"

// A 50 MB print with an output budget: the run ends at --max-output-bytes (output_limit, said
// by a hint), the result carries the budget's characters of it — the first and the last of
// what was captured — and says how many were left out, and the captured whole comes back as a
// file; over MCP (its default budget) a model reads about 20,000 characters. The sidecar goes
// on serving.
func TestHostileOutputBudget(t *testing.T) {
	s := podSidecar(t, podOptions{})
	budget := 2000
	res := s.execute(t, api.ExecuteRequest{Code: fiftyMB, OutputBudgetChars: &budget})
	b := res.OutputBudget
	if res.Reason != api.ReasonOutputLimit || b == nil || b.LimitChars != budget || b.FullOutputFile == "" {
		t.Fatalf("reason %s, output_budget %+v", res.Reason, b)
	}
	if n := utf8.RuneCountInString(res.Stdout) + utf8.RuneCountInString(res.Stderr); n > budget+200 || b.OmittedChars < 1<<20-budget {
		t.Errorf("%d characters carried, %d left out", n, b.OmittedChars)
	}
	if len(res.Hints) == 0 || !strings.Contains(strings.Join(res.Hints, " "), "cap of") {
		t.Errorf("hints %q", res.Hints)
	}
	var full []byte
	for _, f := range res.Files {
		if f.Path == b.FullOutputFile {
			full, _ = base64.StdEncoding.DecodeString(f.ContentBase64)
		}
	}
	if len(full) < 1<<20 || !strings.HasPrefix(string(full), "=== stdout ===\nxxx") {
		t.Errorf("the full output file: %d bytes", len(full))
	}
	cs := connectMCP(t, mcpTransports(t, s)["http"]())
	mres, text, _ := callTool(t, cs, mcpserver.ToolRunPython, map[string]any{"code": fiftyMB})
	if !mres.IsError || len(text) > mcpserver.OutputBudgetChars+2000 || !strings.Contains(text, "characters left out") || !strings.Contains(text, "hint: ") {
		t.Errorf("run_python: isError %v, %d characters of text", mres.IsError, len(text))
	}
	t.Logf("a 50 MB print: %d characters in the result, %d left out; over MCP %d characters of text", len(res.Stdout), b.OmittedChars, len(text))
	if res, err := s.client.Execute(context.Background(), api.ExecuteRequest{Code: "print('after')"}); err != nil || res.Stdout != "after\n" {
		t.Errorf("the sidecar after: %+v %v", res, err)
	}
}
