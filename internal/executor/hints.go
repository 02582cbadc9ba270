package executor

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/pyexec/pyexec/pkg/api"
)

// hints are the result's hints: a short sentence for a model for each cause of a failure that
// lies in the sandbox rather than in the code — so that the model changes its approach instead
// of "fixing" code that was right. They are made from the result's reason, truncation and
// exception, and the request's limits; a result of a normal exit has none.
func hints(res *api.ExecuteResult, req *Request) []string {
	var out []string
	switch res.Reason {
	case api.ReasonTimeout:
		h := fmt.Sprintf("The code was stopped at its time limit of %s. Make it faster or work on less data", seconds(req.Timeout))
		if req.MaxTimeout > req.Timeout {
			h += fmt.Sprintf("; a run may ask for more time with timeout_seconds (at most %s)", seconds(req.MaxTimeout))
		}
		out = append(out, h+".")
	case api.ReasonMemoryLimit:
		out = append(out, memoryHint(req))
	case api.ReasonOutputLimit:
		out = append(out, outputHint(req, "and the code was stopped"))
	case api.ReasonProcessLimit:
		out = append(out, fmt.Sprintf("The code hit its limit of %d processes and threads. Use fewer workers "+
			"(n_jobs=1, a smaller pool, OMP_NUM_THREADS=1).", req.MaxProcesses))
	}
	if res.Reason != api.ReasonOutputLimit && (res.StdoutTruncated || res.StderrTruncated) {
		out = append(out, outputHint(req, "and the rest was left out"))
	}
	e := res.Exception
	if e == nil {
		return out
	}
	switch {
	case e.Ename == "MemoryError" && res.Reason != api.ReasonMemoryLimit:
		out = append(out, memoryHint(req))
	case e.Ename == "ModuleNotFoundError":
		module := "The module"
		if m := missingModule.FindStringSubmatch(e.Evalue); m != nil && len(m[1]) <= 100 {
			module += " " + m[1]
		}
		if req.Installs {
			out = append(out, module+" is not installed. Install it (POST /v1/packages, or the install_packages tool over MCP), "+
				"if the operator allows it, then run the code again.")
		} else {
			out = append(out, module+" is not installed here, and packages cannot be installed. Use the standard library or a package "+
				"that is installed.")
		}
	case !req.Network && networkError(e):
		out = append(out, "The sandbox has no network: the code cannot download or connect anywhere. Use the data in the "+
			"working directory, or ask the user for it.")
	}
	return out
}

func memoryHint(req *Request) string {
	h := "The code ran out of memory"
	if req.MemoryLimitMB > 0 {
		h += fmt.Sprintf(" (its limit is %d MiB)", req.MemoryLimitMB)
	}
	return h + ". Work on less data at once: read in chunks, use smaller dtypes, free what is no longer needed."
}

func outputHint(req *Request, what string) string {
	return fmt.Sprintf("The output passed the cap of %d bytes a stream %s. Print less: a summary, the first and last lines, "+
		"or write the full output to a file.", req.MaxOutputBytes, what)
}

// missingModule finds the module's name in a ModuleNotFoundError's message: dotted
// identifiers, at most 100 characters, or none (the code may raise one with any message, and a
// hint is the sandbox's word, one line).
var missingModule = regexp.MustCompile(`^No module named '([\p{L}_][\p{L}\p{N}_]*(?:\.[\p{L}_][\p{L}\p{N}_]*)*)'`)

// networkMarkers are what an exception says when the network is not there: a socket refused
// by the sandbox (EPERM), or a name that does not resolve (no DNS), in Python's words and the
// common libraries'.
var networkMarkers = []string{
	"Temporary failure in name resolution", "Name or service not known", "No address associated with hostname",
	"Network is unreachable", "gaierror", "NewConnectionError", "MaxRetryError", "ConnectTimeout", "URLError",
}

// networkError says e is what code gets when it uses the network and there is none.
func networkError(e *api.Exception) bool {
	text := e.Ename + ": " + e.Evalue + "\n" + strings.Join(e.Traceback, "\n")
	for _, m := range networkMarkers {
		if strings.Contains(text, m) {
			return true
		}
	}
	return e.Ename == "PermissionError" && strings.Contains(e.Evalue, "Operation not permitted") && strings.Contains(text, "socket")
}

// seconds is d as a person writes it: "30s", "2.5s".
func seconds(d time.Duration) string {
	return fmt.Sprintf("%gs", d.Seconds())
}
