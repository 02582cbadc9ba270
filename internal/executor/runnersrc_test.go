package executor

import (
	"encoding/json"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/pyexec/pyexec/internal/testutil"
)

// The runner's Python unit tests (pyexec_runner/tests) run with the system interpreter, in go
// test: they fail it when one fails, and none may be skipped.
func TestPythonUnitTests(t *testing.T) {
	py := testutil.RequireSystemPython(t)
	cmd := exec.Command(py, "-B", "-m", "unittest", "discover", "-v", "-s", "pyexec_runner/tests", "-t", ".")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python -m unittest: %v\n%s", err, out)
	}
	ran := regexp.MustCompile(`(?m)^Ran (\d+) tests? in`).FindSubmatch(out)
	if ran == nil || string(ran[1]) == "0" || strings.Contains(string(out), "skipped") {
		t.Fatalf("no tests ran, or some were skipped:\n%s", out)
	}
	t.Logf("%s Python tests passed", ran[1])
}

// What pythonCommand hands the interpreter is Python: loader.py, then boot with every module's
// source exactly as embedded (the JSON object read as a Python dict literal) and the entry.
func TestRunnerSourceIsPython(t *testing.T) {
	py := testutil.RequireSystemPython(t)
	files, err := runnerFiles.ReadDir("pyexec_runner")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, f := range files {
		b, err := runnerFiles.ReadFile("pyexec_runner/" + f.Name())
		if err != nil {
			t.Fatal(err)
		}
		want["pyexec_runner/"+f.Name()] = string(b)
	}
	if _, ok := want["pyexec_runner/__init__.py"]; !ok || len(want) < 10 {
		t.Fatalf("embedded: %d files, want the package", len(want))
	}
	read := `import ast, json, sys
tree = ast.parse(sys.stdin.read())
call = tree.body[-1].value
assert call.func.id == "boot", ast.dump(call)
print(json.dumps({"sources": ast.literal_eval(call.args[0]), "entry": ast.literal_eval(call.args[1])}))
`
	for entry, source := range map[string]string{"pyexec_runner.spawn": spawnSource, "pyexec_runner.zygote": zygoteSource} {
		cmd := exec.Command(py, "-I", "-c", read)
		cmd.Stdin = strings.NewReader(source)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: %v", entry, err)
		}
		var got struct {
			Sources map[string]string
			Entry   string
		}
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatal(err)
		}
		if got.Entry != entry || len(got.Sources) != len(want) {
			t.Errorf("%s: entry %q, %d sources", entry, got.Entry, len(got.Sources))
		}
		for name, src := range want {
			if got.Sources[name] != src {
				t.Errorf("%s: %s does not read back as embedded", entry, name)
			}
		}
		if !strings.HasPrefix(source, want["pyexec_runner/loader.py"]) {
			t.Errorf("%s does not start with loader.py", entry)
		}
	}
}
