package server

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pyexec/pyexec/pkg/api"
)

// reasonError labels executions_total when the executor failed to run the code at all.
const reasonError = "error"

// metrics are the server's Prometheus metrics.
type metrics struct {
	executions *prometheus.CounterVec
	duration   prometheus.Histogram
	stages     *prometheus.HistogramVec
	queueDepth prometheus.Gauge
	inFlight   prometheus.Gauge
	// resultsWaiting are results known, held in memory, whose responses are not yet written.
	resultsWaiting prometheus.Gauge
	rejected       *prometheus.CounterVec
	ready          prometheus.Gauge

	connsOpen    prometheus.Gauge
	connsRefused *prometheus.CounterVec

	probeConnsOpen    prometheus.Gauge
	probeConnsRefused *prometheus.CounterVec

	sessionsOpen    prometheus.Gauge
	sessionsCreated prometheus.Counter
	sessionsEnded   *prometheus.CounterVec
	// checkpoints counts the checkpoint requests by op (checkpoint, restore, delete) and
	// outcome (ok, or the error's code).
	checkpoints *prometheus.CounterVec
	// forks counts the forks of sessions by outcome.
	forks *prometheus.CounterVec
}

// newMetrics creates the metrics and registers them on reg (when reg is not nil).
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		executions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pyexec_executions_total",
			Help: "Executions that ran, by the reason they ended (exit, timeout, output_limit, memory_limit, signal, or error when the executor failed).",
		}, []string{"reason"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pyexec_execution_duration_seconds",
			Help:    "Wall time of executions, from admission to the result.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
		stages: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pyexec_execution_stage_seconds",
			Help:    "Time of executions and session calls by stage, as the result's timings_ms has them: parse, queue, hop, start, run, collect.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10, 60},
		}, []string{"stage"}),
		queueDepth: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pyexec_queue_depth",
			Help: "Execute requests waiting for a free execution slot.",
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pyexec_executions_in_flight",
			Help: "Executions running now.",
		}),
		resultsWaiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pyexec_results_waiting",
			Help: "Results of executions and session calls that are over, held in memory until their responses are written to their clients (or cut off at the write timeout).",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pyexec_requests_rejected_total",
			Help: "Requests answered with an HTTP error, by error code (queue_full, unavailable, forbidden, too_large, bad_request, ...).",
		}, []string{"code"}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pyexec_ready",
			Help: "1 when the server accepts executions (preflight confirmed, not draining, its socket and work dir in place), else 0.",
		}),
		connsOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pyexec_connections_open",
			Help: "Connections open on the API socket.",
		}),
		connsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pyexec_connections_refused_total",
			Help: "Connections to the API socket closed at once because a cap was reached, by cap (max_connections, max_connections_per_uid).",
		}, []string{"reason"}),
		probeConnsOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pyexec_probe_connections_open",
			Help: "Connections open on the probe port.",
		}),
		probeConnsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pyexec_probe_connections_refused_total",
			Help: "Connections to the probe port closed at once because a cap was reached, by cap (max_connections, max_connections_per_ip).",
		}, []string{"reason"}),
		sessionsOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pyexec_sessions_open",
			Help: "Sessions open now.",
		}),
		sessionsCreated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pyexec_sessions_created_total",
			Help: "Sessions created.",
		}),
		sessionsEnded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pyexec_sessions_ended_total",
			Help: "Sessions ended, by reason (deleted, idle, lost: a call's timeout killed it, exited: its interpreter ended, memory_limit: a call passed its memory limit or the runner's memory watchdog ended it, drain).",
		}, []string{"reason"}),
		checkpoints: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pyexec_session_checkpoints_total",
			Help: "Checkpoint requests of sessions, by op (checkpoint, restore, delete) and outcome (ok, or the error's code: checkpoint_not_found, too_many_checkpoints, checkpoint_too_large, session_busy, error).",
		}, []string{"op", "outcome"}),
		forks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pyexec_session_forks_total",
			Help: "Forks of sessions (POST /v1/sessions/{id}/fork), by outcome (ok, or the error's code: not_forkable, fork_too_large, too_many_forks, too_many_sessions, session_busy, error).",
		}, []string{"outcome"}),
	}
	// Create the common series at zero so that rate() and alerts see them from the start.
	for _, r := range []string{api.ReasonExit, api.ReasonTimeout, api.ReasonOutputLimit, api.ReasonMemoryLimit, api.ReasonSignal, api.ReasonProcessLimit, reasonError} {
		m.executions.WithLabelValues(r)
	}
	for _, c := range []string{api.ErrCodeQueueFull, api.ErrCodeUnavailable, api.ErrCodeForbidden, api.ErrCodeTooLarge, api.ErrCodeBadRequest} {
		m.rejected.WithLabelValues(c)
	}
	for _, r := range []string{refusedMaxConnections, refusedMaxConnectionsPerUID} {
		m.connsRefused.WithLabelValues(r)
	}
	for _, r := range []string{refusedMaxConnections, refusedMaxConnectionsPerIP} {
		m.probeConnsRefused.WithLabelValues(r)
	}
	for _, r := range []string{sessionDeleted, sessionIdle, sessionLost, sessionExited, sessionDrain, sessionMemory} {
		m.sessionsEnded.WithLabelValues(r)
	}
	for _, stage := range api.Stages {
		m.stages.WithLabelValues(stage)
	}
	for _, op := range []string{"checkpoint", "restore", "delete"} {
		m.checkpoints.WithLabelValues(op, "ok")
	}
	if reg != nil {
		reg.MustRegister(m.executions, m.duration, m.stages, m.queueDepth, m.inFlight, m.resultsWaiting, m.rejected, m.ready, m.connsOpen, m.connsRefused,
			m.probeConnsOpen, m.probeConnsRefused,
			m.sessionsOpen, m.sessionsCreated, m.sessionsEnded, m.checkpoints, m.forks)
	}
	return m
}

// IsolationGauge is pyexec_isolation_layer_active: 1 for each layer of confinement the kernel
// gives executions, 0 for one it lacks. The same collector holds pyexec_identity_info
// (SetIdentity).
func IsolationGauge(isolation *api.Isolation) *IsolationMetric {
	g := &IsolationMetric{
		layers: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pyexec_isolation_layer_active", Help: "1 for each layer of confinement the kernel gives executions, 0 for one it lacks."}, []string{"layer"}),
		identity: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pyexec_identity_info",
			Help: "1 for the uids the server and its runner run as, once the runner is ready (the runner's is the code's)."}, []string{"server_uid", "runner_uid"}),
	}
	g.Set(isolation)
	return g
}

// IsolationMetric is pyexec_isolation_layer_active and pyexec_identity_info, one
// prometheus.Collector.
type IsolationMetric struct {
	layers, identity *prometheus.GaugeVec
}

// Set sets each layer of isolation: once the runner has come, what it applies is known.
func (g *IsolationMetric) Set(isolation *api.Isolation) {
	for _, l := range isolation.Layers {
		v := 0.0
		if l.Active {
			v = 1
		}
		g.layers.WithLabelValues(l.Name).Set(v)
	}
}

// SetIdentity sets pyexec_identity_info to the uids of id, the one series there is: a runner
// that comes again replaces its predecessor's. nil removes it.
func (g *IsolationMetric) SetIdentity(id *api.Identity) {
	g.identity.Reset()
	if id != nil {
		g.identity.WithLabelValues(strconv.Itoa(id.ServerUID), strconv.Itoa(id.RunnerUID)).Set(1)
	}
}

// Describe implements prometheus.Collector.
func (g *IsolationMetric) Describe(ch chan<- *prometheus.Desc) {
	g.layers.Describe(ch)
	g.identity.Describe(ch)
}

// Collect implements prometheus.Collector.
func (g *IsolationMetric) Collect(ch chan<- prometheus.Metric) {
	g.layers.Collect(ch)
	g.identity.Collect(ch)
}

// fork counts a fork (see metrics.forks) by its outcome: ok, or the error's code.
func (m *metrics) fork(outcome string) {
	m.forks.WithLabelValues(outcome).Inc()
}

// checkpointOp counts a checkpoint request (see metrics.checkpoints) that ended with err.
func (m *metrics) checkpointOp(op string, err error) {
	outcome := "ok"
	if err != nil {
		outcome = "error"
		if rerr := checkpointError(err); rerr != nil {
			outcome = rerr.code
		}
	}
	m.checkpoints.WithLabelValues(op, outcome).Inc()
}
