package runner

import (
	"github.com/pyexec/pyexec/internal/proc"
	"github.com/pyexec/pyexec/internal/reaper"

	"os"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector is the metrics of the runner, and of the server's own processes, read once per
// scrape: the runner is asked for its Stats.
type Collector struct {
	c *Client
	// own is the server's reaper; child says the runner is the server's child, so that the
	// server's tree already holds the runner's.
	own   *reaper.Reaper
	child bool
}

// Collector returns the metrics of the runner and of own, the server's reaper.
func (c *Client) Collector(own *reaper.Reaper, child bool) *Collector {
	return &Collector{c: c, own: own, child: child}
}

var (
	descWarm      = prometheus.NewDesc("pyexec_fork_warm_executions_total", "Executions that ran in a spare forked ahead of time (--warm).", nil, nil)
	descFallbacks = prometheus.NewDesc("pyexec_fork_fallbacks_total", "Executions of fork mode that ran in spawn mode because the zygote was down.", nil, nil)
	descReaped    = prometheus.NewDesc("pyexec_orphans_reaped_total", "Orphaned processes reaped by pyexec serve and the runner as child subreapers.", nil, nil)
	descKilled    = prometheus.NewDesc("pyexec_escaped_processes_killed_total", "Processes that escaped their execution's supervisor, killed by the runner (or pyexec serve).", nil, nil)
	descRSS       = prometheus.NewDesc("pyexec_sidecar_rss_bytes", "Resident memory of pyexec serve, the runner and every process below them (zygote, spares, sessions, executions).", nil, nil)
	descPSS       = prometheus.NewDesc("pyexec_sidecar_pss_bytes", "Proportional memory of pyexec serve, the runner and every process below them: pages shared copy-on-write count once in total.", nil, nil)
	descRunnerRSS = prometheus.NewDesc("pyexec_runner_rss_bytes", "Resident memory of the runner and every process below it.", nil, nil)
	descRunnerPSS = prometheus.NewDesc("pyexec_runner_pss_bytes", "Proportional memory of the runner and every process below it.", nil, nil)
	descRunnerUp  = prometheus.NewDesc("pyexec_runner_connected", "1 while the runner is connected and ready, 0 otherwise.", nil, nil)

	descTrees      = prometheus.NewDesc("pyexec_runner_trees", "Executions running and sessions open in the runner: the process trees below their supervisors.", nil, nil)
	descTreeTasks  = prometheus.NewDesc("pyexec_runner_tree_tasks", "Processes and threads of the executions' and sessions' trees (as --max-processes counts them).", nil, nil)
	descTreeMemory = prometheus.NewDesc("pyexec_runner_tree_memory_bytes", "Memory of the executions' and sessions' trees, as their memory limit counts it: Pss where the runner may read it, else RSS.", nil, nil)
	descMemUsage   = prometheus.NewDesc("pyexec_runner_memory_usage_bytes", "Memory usage of the runner's cgroup (its container's): memory.current, or memory.usage_in_bytes of cgroup v1.", nil, nil)
	descMemWS      = prometheus.NewDesc("pyexec_runner_memory_working_set_bytes", "Working set of the runner's cgroup: its usage less the inactive page cache, what the memory watchdog compares with its mark.", nil, nil)
	descMemLimit   = prometheus.NewDesc("pyexec_runner_memory_limit_bytes", "Memory limit of the runner's cgroup; 0 when it has none.", nil, nil)
	descHighWater  = prometheus.NewDesc("pyexec_runner_memory_high_water_bytes", "The memory watchdog's mark (--runner-memory-high-water of the limit); 0 when there is no watchdog.", nil, nil)
	descWatchdog   = prometheus.NewDesc("pyexec_runner_memory_watchdog_ended_total", "Executions and sessions the runner's memory watchdog ended (the runner's count: it restarts from 0 with the runner).", nil, nil)
)

// Describe implements prometheus.Collector.
func (m *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descWarm, descFallbacks, descReaped, descKilled, descRSS, descPSS, descRunnerRSS, descRunnerPSS, descRunnerUp,
		descTrees, descTreeTasks, descTreeMemory, descMemUsage, descMemWS, descMemLimit, descHighWater, descWatchdog} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. Without a runner its figures are 0.
func (m *Collector) Collect(ch chan<- prometheus.Metric) {
	st, err := m.c.Stats()
	if err != nil {
		st = &Stats{}
	}
	up := 0.0
	if err == nil {
		up = 1
	}
	reaped, killed := m.own.Stats()
	rss, pss := proc.TreeMemory(os.Getpid())
	if !m.child {
		rss, pss = rss+st.RSS, pss+st.PSS
	}
	for _, v := range []struct {
		d *prometheus.Desc
		t prometheus.ValueType
		v float64
	}{
		{descWarm, prometheus.CounterValue, float64(st.WarmHits)},
		{descFallbacks, prometheus.CounterValue, float64(st.Fallbacks)},
		{descReaped, prometheus.CounterValue, float64(int64(reaped) + st.Reaped)},
		{descKilled, prometheus.CounterValue, float64(int64(killed) + st.Killed)},
		{descRSS, prometheus.GaugeValue, float64(rss)},
		{descPSS, prometheus.GaugeValue, float64(pss)},
		{descRunnerRSS, prometheus.GaugeValue, float64(st.RSS)},
		{descRunnerPSS, prometheus.GaugeValue, float64(st.PSS)},
		{descRunnerUp, prometheus.GaugeValue, up},
		{descTrees, prometheus.GaugeValue, float64(st.Trees)},
		{descTreeTasks, prometheus.GaugeValue, float64(st.TreeTasks)},
		{descTreeMemory, prometheus.GaugeValue, float64(st.TreeMemory)},
		{descMemUsage, prometheus.GaugeValue, float64(st.MemoryUsage)},
		{descMemWS, prometheus.GaugeValue, float64(st.MemoryWorkingSet)},
		{descMemLimit, prometheus.GaugeValue, float64(st.MemoryLimit)},
		{descHighWater, prometheus.GaugeValue, float64(st.MemoryHighWater)},
		{descWatchdog, prometheus.CounterValue, float64(st.WatchdogEnded)},
	} {
		ch <- prometheus.MustNewConstMetric(v.d, v.t, v.v)
	}
}
