package runner

import (
	"os"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pyexec/pyexec/pkg/executor"
)

// Collector is the metrics of the runner, and of the server's own processes, read once per
// scrape: the runner is asked for its Stats.
type Collector struct {
	c *Client
	// own is the server's reaper; child says the runner is the server's child, so that the
	// server's tree already holds the runner's.
	own   *executor.Reaper
	child bool
}

// Collector returns the metrics of the runner and of own, the server's reaper.
func (c *Client) Collector(own *executor.Reaper, child bool) *Collector {
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
)

// Describe implements prometheus.Collector.
func (m *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descWarm, descFallbacks, descReaped, descKilled, descRSS, descPSS, descRunnerRSS, descRunnerPSS, descRunnerUp} {
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
	rss, pss := executor.TreeMemory(os.Getpid())
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
	} {
		ch <- prometheus.MustNewConstMetric(v.d, v.t, v.v)
	}
}
