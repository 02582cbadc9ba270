package settings

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// updateReference rewrites the generated reference: go test ./internal/settings -update-reference
// (make reference).
var updateReference = flag.Bool("update-reference", false, "rewrite docs/reference/serve.md from the settings")

// CheckGenerated compares a generated file with the one in the tree, or writes it with
// -update; the test fails when they drift.
func checkGenerated(t *testing.T, path string, got []byte) {
	t.Helper()
	if *updateReference {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil || string(want) != string(got) {
		t.Errorf("%s is not what the settings generate (%v): run make reference", path, err)
	}
}

func TestReferenceServe(t *testing.T) {
	checkGenerated(t, filepath.Join("..", "..", "docs", "reference", "serve.md"), ReferenceServe())
}

func TestFormatValue(t *testing.T) {
	for v, want := range map[any]string{10 * time.Minute: "10m", time.Hour: "1h", 30 * time.Second: "30s", 90 * time.Minute: "1h30m",
		time.Duration(0): "0s", 1500 * time.Millisecond: "1.5s", 8: "8", "deny": "deny", true: "true"} {
		if got := FormatValue(v); got != want {
			t.Errorf("FormatValue(%v) = %q, want %q", v, got, want)
		}
	}
}
