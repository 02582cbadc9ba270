package client

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The client's module (pkg/go.mod: the client and the API's types) requires no other module,
// and its packages import nothing outside the standard library and this module: a program
// that imports the client gets neither helm nor the Kubernetes libraries in its module graph.
func TestModuleIsDependencyFree(t *testing.T) {
	mod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mod), "\n") {
		if f := strings.Fields(line); len(f) > 0 && (f[0] == "require" || f[0] == "replace") {
			t.Errorf("pkg/go.mod: %q; the client's module must require nothing", line)
		}
	}
	cmd := exec.Command("go", "list", "-deps", "-test", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "./...")
	cmd.Dir = ".."
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	n := 0
	for _, p := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		n++
		p = strings.Fields(strings.Trim(p, "[]"))[0] // a test variant: "pkg/client [pkg/client.test]"
		if !strings.HasPrefix(p, "github.com/pyexec/pyexec/pkg/") {
			t.Errorf("the client's module imports %s", p)
		}
	}
	if n < 2 {
		t.Errorf("go list found %d packages of the module: %s", n, out)
	}
}
