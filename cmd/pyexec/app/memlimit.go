package app

import (
	"os"
	"runtime/debug"

	"github.com/go-logr/logr"

	"github.com/pyexec/pyexec/internal/container"
)

// goMemoryLimitShare is the share of its container's memory limit that pyexec serve gives the
// Go runtime as its soft memory limit (see setGoMemoryLimit): the rest is for what the runtime
// does not count (the binary's pages) and for the heap's overshoot while a large result is
// built, which a soft limit does not stop (measured: a server at a 240 MiB soft limit peaked at
// 285 MiB of RSS holding two results of 36 MiB).
const goMemoryLimitShare = 0.75

// setGoMemoryLimit sets the Go runtime's soft memory limit to goMemoryLimitShare of the memory
// limit of the server's cgroup (its container's limits.memory), unless GOMEMLIMIT is set
// (the operator's word, "off" included) or there is no limit. Without it the collector lets
// the heap grow to twice what is live before it collects, and results are large (tens of MiB
// each, several at once: see Results in memory in docs/api.md): a server that holds a few
// results would pass its container's limit and be OOM-killed with every client's connection.
// With it the collector runs as the heap nears the limit. It returns the limit set (0: none).
func setGoMemoryLimit(log logr.Logger) int64 {
	if v, ok := os.LookupEnv("GOMEMLIMIT"); ok {
		log.Info("Go memory limit from GOMEMLIMIT", "GOMEMLIMIT", v)
		return 0
	}
	cg := container.FindMemoryCgroup()
	if cg == nil || cg.Limit <= 0 {
		return 0
	}
	limit := int64(float64(cg.Limit) * goMemoryLimitShare)
	debug.SetMemoryLimit(limit)
	log.Info("Go memory limit", "bytes", limit, "containerLimitBytes", cg.Limit)
	return limit
}
