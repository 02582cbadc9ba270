package executor

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pyexec/pyexec/internal/packages"
	"github.com/pyexec/pyexec/pkg/api"
)

// execution is the lifecycle of one execution, the same in both modes, and of one call of a
// session: its directory and input files, its captured streams, the killer that holds its
// limits, its confinement, and its result. A mode (or the session) only hands the code to its
// supervisor and waits for how it ended; everything else happens here, once.
type execution struct {
	req   Request
	begun time.Time
	// handed is when the code's process (or its supervisor) had the execution, answered when
	// its end was known: the marks between the stages start, run and collect (see Stages).
	handed, answered time.Time
	// codeNS is how long the code ran, as the code's process (or a session's interpreter)
	// said: the stage code, within run; nil when it said nothing.
	codeNS *int64
	dir    string // holds code.py, work/ and mpl/
	own    bool   // the executor made dir (the request gave none) and removes it
	work   string // the code's working directory
	// tree is the current packages tree, resolved once: the execution sees one tree for its
	// whole run.
	tree   string
	killer *killer
	stdout *capture
	stderr *capture
	// ruleset is the execution's Landlock ruleset (nil without Landlock); spec is the rest of
	// what the code's process applies to itself.
	ruleset *os.File
	spec    *confineSpec
	unwatch func()
	// ss is the session whose start or call this is (nil for an execution): the directory,
	// the confinement and the interpreter are the session's, and the code comes with each call.
	ss *LocalSession
	// before, in a session's call, tells the files the call created or changed (see
	// callStamps); an execution's directory is fresh.
	before *callStamps
	// threads is the execution's share of the CPUs for BLAS and OpenMP pools (Spawn.share),
	// which release gives back.
	threads int
	release func()
	// unshm ends the execution's (or the call's) hold on shared memory (see shmJanitor).
	unshm func()
	// trees registers the execution's tree for the memory watchdog while it runs; memoryNote
	// is what the watchdog said when it ended it.
	trees      *trees
	memoryNote atomic.Pointer[string]
}

// newExecution is what every execution and every call of a session has: its start, its share
// of the CPUs, and its captures, whose caps end it through k with reason output_limit.
func (s *Spawn) newExecution(req Request, out Output, k *killer) *execution {
	e := &execution{req: req, begun: time.Now(), killer: k, unwatch: func() {}, unshm: func() {}, trees: s.trees}
	e.threads, e.release = s.share()
	onLimit := func() { e.killer.kill(api.ReasonOutputLimit) }
	e.stdout = &capture{stream: api.EventStdout, max: req.MaxOutputBytes, out: out, onLimit: onLimit}
	e.stderr = &capture{stream: api.EventStderr, max: req.MaxOutputBytes, out: out, onLimit: onLimit}
	return e
}

// begin makes the execution's directory with its input files, its captures and its
// confinement. zygote is the zygote's pid, which the code must not signal; 0 in spawn mode.
// The caller closes the execution.
func (s *Spawn) begin(req Request, out Output, zygote int) (*execution, error) {
	e := s.newExecution(req, out, &killer{})
	e.unshm = s.shm.hold()
	var err error
	e.dir, e.own, err = s.prepare(req)
	if err != nil {
		e.close()
		return nil, err
	}
	e.work = filepath.Join(e.dir, "work")
	e.tree = packages.Tree(s.cfg.PackagesDir)
	if e.ruleset, e.spec, err = s.confinement(req, e.work, e.tree, zygote); err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

// mplDir, in an execution's directory beside work/, is its MPLCONFIGDIR: matplotlib's cache is
// not one of the files the execution returns.
const mplDir = "mpl"

// baseEnv is what the execution adds to the server's base environment: its MPLCONFIGDIR and
// XDG_CACHE_HOME. The request's env is applied by the code's process itself (see envFile).
func (e *execution) baseEnv() map[string]string {
	return dirEnv(e.dir)
}

// params are the runner's parameters of this execution.
func (s *Spawn) paramsOf(e *execution) string {
	return s.params(e.req, e.dir, e.spec, e.ruleset != nil, e.ss != nil, e.threads)
}

// share counts an execution (or a session's call) in, and returns its share of the runner's
// CPUs for the BLAS and OpenMP pools of its code: the CPUs (the cgroup's limit, else the
// machine's) divided among the executions running at its start, itself included, rounded
// down, at least 1. A lone numpy job on a 4-CPU runner gets 4 threads, each of four at once 1.
// The returned func counts it out, once.
func (s *Spawn) share() (int, func()) {
	n := s.running.Add(1)
	var once sync.Once
	return max(1, int(s.cpuLimit()/float64(n))), func() { once.Do(func() { s.running.Add(-1) }) }
}

// cpuLimit is what the code may use together: the runner's CPU limit, else the machine's CPUs.
func (s *Spawn) cpuLimit() float64 {
	if s.cfg.CPUs > 0 {
		return s.cfg.CPUs
	}
	return float64(runtime.NumCPU())
}

// watch arms the time limit and the caller's cancellation on the supervisor pid, and has the
// memory watchdog watch the code while it runs.
func (e *execution) watch(ctx context.Context, pid int) {
	e.killer.setPID(pid)
	timer := time.AfterFunc(e.req.Timeout, func() { e.killer.kill(api.ReasonTimeout) })
	stop := context.AfterFunc(ctx, func() { e.killer.kill(api.ReasonSignal) })
	untrack := e.track(pid)
	e.unwatch = func() {
		timer.Stop()
		stop()
		if e.ss != nil {
			// A call is over once the interpreter has answered: a limit that fires later must
			// not interrupt the interpreter at rest, or its next call.
			e.killer.disarm()
		}
		untrack()
	}
}

// track hands the execution's tree, under pid, to the memory watchdog until the returned func.
// A session's tree is the watchdog's for the session's whole life (LocalSession.track), and
// ends the session itself: a call only counts as code running.
func (e *execution) track(pid int) func() {
	if e.ss != nil {
		return e.trees.run()
	}
	return e.trees.add(&tree{kind: treeExecution, id: e.req.ID, root: pid, end: func(note string) {
		e.memoryNote.Store(&note)
		e.killer.kill(api.ReasonMemoryLimit)
	}}, true)
}

// memoryEnded is what the memory watchdog said when it ended the execution, or the session of
// the call; nil when it did not.
func (e *execution) memoryEnded() *string {
	if e.ss != nil {
		return e.ss.memoryNote.Load()
	}
	// Only the memory watchdog kills with this reason (the supervisor's own memory limit says
	// so in the status line).
	if e.killer.reason() != api.ReasonMemoryLimit {
		return nil
	}
	return e.memoryNote.Load()
}

// await runs the streams of an execution whose supervisor has it (fork mode, a session's
// call): stdin to the code, its stdout and stderr into the captures, while answer waits for
// how the code ended. After a kill, answer has a few seconds more, not forever (ok is false
// then). Then the limits stop, and the streams are drained (their holders were killed).
func await[T any](e *execution, p *pipes, answer func() T) (v T, ok bool) {
	var copies sync.WaitGroup
	copies.Add(3)
	go func() { defer copies.Done(); _, _ = io.Copy(p.stdinW, bytes.NewReader(e.req.Stdin)); p.stdinW.Close() }()
	go func() { defer copies.Done(); _, _ = io.Copy(e.stdout, p.stdoutR) }()
	go func() { defer copies.Done(); _, _ = io.Copy(e.stderr, p.stderrR) }()
	answers := make(chan T, 1)
	go func() { answers <- answer() }()
	ok = true
	select {
	case v = <-answers:
	case <-e.killer.done():
		select {
		case v = <-answers:
		case <-time.After(5 * time.Second):
			ok = false
		}
	}
	e.answered = time.Now()
	e.unwatch()
	waitBounded(&copies, 2*time.Second)
	return v, ok
}

// end turns what became of the execution into its result: finish fills the exit fields,
// from what the killer did and what the supervisor said; then come the outputs and the files.
// The killer is disarmed first: a limit that fires later kills nothing (in fork mode the
// supervisor may run the next execution by then). killed says pyexec killed it.
func (e *execution) end(finish func(res *api.ExecuteResult)) (res api.ExecuteResult, killed bool) {
	e.unwatch()
	killed = e.killer.disarm()
	if note := e.memoryEnded(); note != nil {
		_, _ = e.stderr.Write([]byte(*note))
	}
	res = api.ExecuteResult{ID: e.req.ID}
	res.Stdout, res.StdoutTruncated = e.stdout.result()
	res.Stderr, res.StderrTruncated = e.stderr.result()
	finish(&res)
	if e.req.Inspect {
		res.DurationMS = ms(time.Since(e.begun))
		return res, killed
	}
	full := e.budgetOutput(&res)
	// Outputs first, then files, in what is left of one budget.
	budget := e.req.MaxFilesOutBytes
	if budget <= 0 {
		budget = DefaultMaxFilesOutBytes
	}
	var used int64
	var exc *api.Exception
	res.Outputs, exc, used, res.OutputsTruncated = readOutputs(filepath.Join(e.dir, outputsFile), budget)
	if res.ExitCode != 0 { // an exception ends the code with status 1: one the code wrote and then exited 0 is not its end
		res.Exception = exc
	}
	res.Hints = hints(&res, &e.req)
	res.Files, res.FilesTruncated = e.files(max(budget-used, 1))
	if full != "" && !slices.ContainsFunc(res.Files, func(f api.OutputFile) bool { return f.Path == full }) && e.ss == nil {
		lostFullOutput(&res, full) // left out of the files: not there for the caller
	}
	now := time.Now()
	res.DurationMS = ms(now.Sub(e.begun))
	res.TimingsMS = e.stages(now)
	return res, killed
}

// stages are the execution's timings_ms: the request's stages (the server's), then start,
// run and collect, each when both its marks are known.
func (e *execution) stages(now time.Time) map[string]float64 {
	t := maps.Clone(e.req.Timings)
	if t == nil {
		t = make(map[string]float64, 3)
	}
	put := func(stage string, from, to time.Time) {
		if !from.IsZero() && !to.IsZero() && !to.Before(from) {
			t[stage] = ms(to.Sub(from))
		}
	}
	put(api.StageStart, e.begun, e.handed)
	put(api.StageRun, e.handed, e.answered)
	// The code's word: a time it cannot have had is no time.
	if run, ok := t[api.StageRun]; ok && e.codeNS != nil && *e.codeNS >= 0 {
		if code := ms(time.Duration(*e.codeNS)); code <= run {
			t[api.StageCode] = code
		}
	}
	put(api.StageCollect, e.answered, now)
	return t
}

// files are the files the code created or changed in its working directory, within the
// request's caps and budget bytes.
func (e *execution) files(budget int64) ([]api.OutputFile, bool) {
	r := e.req
	if e.before != nil {
		return collectFilesSince(e.work, e.before, r.MaxFileBytes, r.MaxFilesOut, budget, r.OpenFiles)
	}
	inputs := map[string][]byte{}
	for _, f := range r.Files {
		inputs[f.Path] = f.Data
	}
	return collectFilesUpTo(e.work, inputs, r.MaxFileBytes, r.MaxFilesOut, budget, r.OpenFiles)
}

// end is execution.end of an execution: its exit fields from the kill by pyexec, if any, first,
// then the status line, then what became of the runner (ps and waitErr, spawn mode only).
func (s *Spawn) end(e *execution, st status, ps *os.ProcessState, waitErr error) (api.ExecuteResult, bool) {
	e.codeNS = st.CodeNS
	return e.end(func(res *api.ExecuteResult) { s.finish(res, e.killer.reason(), st, ps, waitErr) })
}

// noResult is what Execute returns with an error: the execution did not run.
func noResult(req Request) api.ExecuteResult {
	return api.ExecuteResult{ID: req.ID, Files: []api.OutputFile{}, Outputs: []api.Output{}}
}

// closeRuleset releases the ruleset, once the code's process has it.
func (e *execution) closeRuleset() {
	if e.ruleset != nil {
		e.ruleset.Close()
		e.ruleset = nil
	}
}

// close releases the ruleset and removes the directory (or empties the caller's), whatever
// happened; a session's directory is the session's to release.
func (e *execution) close() {
	e.release()
	e.unshm()
	e.closeRuleset()
	if e.ss == nil {
		releaseDir(e.dir, e.own)
	}
	e.dir = ""
}

// releaseDir removes dir when the executor made it (own), and empties it for the caller to
// remove when the caller gave it.
func releaseDir(dir string, own bool) {
	switch {
	case dir == "":
	case own:
		removeAll(dir)
	default:
		EmptyDir(dir)
	}
}

// outputsFile, in an execution's directory, is where the code's process writes its rich
// outputs, one JSON object a line (pyexec_runner's outputs.emit). The process opens it before it confines
// itself; the code may write there too, which only adds to its own result.
const outputsFile = "outputs.jsonl"

// readOutputs reads the rich outputs of an execution, in order, up to budget bytes (see
// outputSize), and the record of the exception that ended it (the last one, when the code
// wrote more), which counts against the same budget; what is past it, or not a well-formed
// output, is left out (truncated says so for the former). It holds one line at a time besides
// what it keeps.
func readOutputs(path string, budget int64) (outputs []api.Output, exc *api.Exception, used int64, truncated bool) {
	outputs = []api.Output{}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return outputs, nil, 0, false
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return outputs, nil, 0, false
	}
	// A line longer than the budget (and a little JSON) could not fit: the scanner stops there.
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), int(min(budget, 1<<30))+4096)
	for sc.Scan() {
		var o struct {
			api.Output
			api.Exception
		}
		if json.Unmarshal(sc.Bytes(), &o) != nil {
			continue
		}
		var size int64
		switch {
		case o.Type == outputError && o.Ename != "":
			size = exceptionSize(o.Exception)
		case (o.Type == api.OutputExecuteResult || o.Type == api.OutputDisplayData) && len(o.Data) > 0:
			size = outputSize(o.Output)
		default:
			continue
		}
		if used+size > budget {
			return outputs, exc, used, true
		}
		used += size
		if o.Type == outputError {
			e := o.Exception
			exc = &e
		} else {
			outputs = append(outputs, o.Output)
		}
	}
	return outputs, exc, used, sc.Err() != nil
}

// outputError is the type of the record of the exception that ended the code
// (pyexec_runner's outputs.emit_exception).
const outputError = "error"

// exceptionSize is what an exception's record counts against the outputs budget: its strings
// and their JSON framing.
func exceptionSize(e api.Exception) int64 {
	size := int64(len(`"exception":{"ename":"","evalue":"","traceback":[]},`) + len(e.Ename) + len(e.Evalue))
	for _, line := range e.Traceback {
		size += int64(len(`"",`) + len(line))
	}
	return size
}

// JSON framing of an output in a result, counted against the budget with its strings, so that
// many small outputs or MIME types with empty values cannot pass it: {"type":"","data":{}} and
// the comma between two outputs, and "":"" and a comma for each entry of data.
const (
	outputFraming = len(`{"type":"","data":{}},`)
	entryFraming  = len(`"":"",`)
)

// outputSize is what an output counts against the budget: every string of it — its type, each
// MIME type (a key of data) and each value — and its JSON framing. Escapes (of quotes and control
// characters) are not counted.
func outputSize(o api.Output) int64 {
	size := int64(outputFraming + len(o.Type))
	for k, v := range o.Data {
		size += int64(entryFraming + len(k) + len(v))
	}
	return size
}
