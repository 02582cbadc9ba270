package logs

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestJSONLines(t *testing.T) {
	var buf bytes.Buffer
	log := New(&buf, Options{Format: FormatJSON}).WithName("init")
	log.Info("report written", "path", "/x/preflight.json")
	log.V(1).Info("hidden at verbosity 0")
	log.Error(errors.New("boom"), "preflight failed", "ok", false)

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2 (V(1) hidden):\n%s", len(lines), buf.String())
	}
	var info, failure map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &info); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &failure); err != nil {
		t.Fatal(err)
	}
	if info["msg"] != "report written" || info["level"] != "info" || info["logger"] != "init" || info["path"] != "/x/preflight.json" || info["ts"] == nil {
		t.Errorf("info line %v", info)
	}
	if failure["level"] != "error" || failure["error"] != "boom" || failure["ok"] != false {
		t.Errorf("error line %v", failure)
	}
}

func TestVerbosityAndConsole(t *testing.T) {
	var buf bytes.Buffer
	New(&buf, Options{Format: FormatConsole, Verbosity: 1}).V(1).Info("debug line", "k", "v")
	out := buf.String()
	if strings.HasPrefix(out, "{") || !strings.Contains(out, "debug line") || !strings.Contains(out, `"k": "v"`) {
		t.Fatalf("console output %q", out)
	}
}

func TestValidate(t *testing.T) {
	for _, o := range []Options{{Format: "xml"}, {Format: FormatJSON, Verbosity: -1}, {Format: FormatJSON, Verbosity: 11}} {
		if o.Validate() == nil {
			t.Errorf("%+v validated", o)
		}
	}
	if err := (Options{Format: FormatConsole, Verbosity: 2}).Validate(); err != nil {
		t.Error(err)
	}
}
