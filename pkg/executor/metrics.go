package executor

import (
	"os"

	"github.com/prometheus/client_golang/prometheus"
)

// Collectors are the metrics of the reaper, and of the memory of the whole tree of the process
// it reaps for (pyexec serve, its zygote, spares, sessions and executions).
func (r *Reaper) Collectors() []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "pyexec_orphans_reaped_total", Help: "Orphaned processes reaped by pyexec serve as a child subreaper."},
			func() float64 { reaped, _ := r.Stats(); return float64(reaped) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "pyexec_escaped_processes_killed_total", Help: "Processes that escaped their execution's supervisor, killed by pyexec serve."},
			func() float64 { _, killed := r.Stats(); return float64(killed) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pyexec_sidecar_rss_bytes", Help: "Resident memory of pyexec serve and every process below it (zygote, spares, executions)."},
			func() float64 { rss, _ := TreeMemory(os.Getpid()); return float64(rss) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pyexec_sidecar_pss_bytes", Help: "Proportional memory of pyexec serve and every process below it: pages shared copy-on-write count once in total."},
			func() float64 { _, pss := TreeMemory(os.Getpid()); return float64(pss) }),
	}
}

// Collectors are the fork executor's metrics.
func (f *Fork) Collectors() []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "pyexec_fork_warm_executions_total", Help: "Executions that ran in a spare forked ahead of time (--warm)."},
			func() float64 { return float64(f.WarmHits()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "pyexec_fork_fallbacks_total", Help: "Executions of fork mode that ran in spawn mode because the zygote was down."},
			func() float64 { return float64(f.Fallbacks()) }),
	}
}
