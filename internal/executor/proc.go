package executor

import (
	"fmt"
	"os"
	"os/exec"
)

// pythonCommand is python running source, handed over on a pipe with params (JSON, which has
// no newline), which the source finds as sys.argv[1]. Neither is on the command line: ps and
// /proc/PID/cmdline, which every process may read, show a short bootstrap instead of the
// runner's Python (some 80 KB: see runnerSource) and of the paths of the execution's directory. The pipe is the last of extra,
// so the descriptors of extra keep their numbers (3, 4, ...); the bootstrap reads it, closes it
// and runs what it read. Start the command, then call started with Start's error: it writes
// the pipe (in the background: the source is larger than the pipe's buffer, and a child that
// dies first must not block the caller) and closes the caller's ends.
func pythonCommand(python, source string, extra []*os.File, params string) (*exec.Cmd, func(startErr error), error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	fd := 3 + len(extra)
	bootstrap := fmt.Sprintf("import os, sys\nwith os.fdopen(%d) as f:\n    a, s = f.read().split('\\n', 1)\nsys.argv[1:] = [a]\nexec(compile(s, '<pyexec>', 'exec'))\n", fd)
	cmd := exec.Command(python, "-s", "-u", "-c", bootstrap)
	cmd.ExtraFiles = append(append([]*os.File(nil), extra...), r)
	started := func(startErr error) {
		r.Close()
		if startErr != nil {
			w.Close()
			return
		}
		go func() {
			_, _ = w.WriteString(params + "\n" + source)
			w.Close()
		}()
	}
	return cmd, started, nil
}
