package executor

import (
	"embed"
	"encoding/json"
	"path"
)

// runnerFiles are the runner's Python: the package pyexec_runner, one module a concern (see its
// __init__.py). Its tests, in pyexec_runner/tests, stay out.
//
//go:embed pyexec_runner/*.py
var runnerFiles embed.FS

// What pythonCommand hands the interpreter of each entry point: spawnSource runs an execution's
// or a session's supervisor (spawn mode), zygoteSource the fork server (fork mode).
var (
	spawnSource  = runnerSource("pyexec_runner.spawn")
	zygoteSource = runnerSource("pyexec_runner.zygote")
)

// runnerSource is loader.py followed by a call of its boot with the sources of every module and
// the module whose main to call: the modules import from memory, none from a file. The sources
// go as a JSON object of strings, which Python reads as the dict literal it also is (JSON's
// string escapes are Python's).
func runnerSource(entry string) string {
	files, err := runnerFiles.ReadDir("pyexec_runner")
	if err != nil {
		panic(err) // embedded: cannot fail
	}
	sources := make(map[string]string, len(files))
	for _, f := range files {
		name := path.Join("pyexec_runner", f.Name())
		b, err := runnerFiles.ReadFile(name)
		if err != nil {
			panic(err)
		}
		sources[name] = string(b)
	}
	modules, err := json.Marshal(sources)
	if err != nil {
		panic(err)
	}
	main, _ := json.Marshal(entry)
	return sources["pyexec_runner/loader.py"] + "\nboot(" + string(modules) + ", " + string(main) + ")\n"
}
