package app

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metric names that status reads (docs/operations.md: Logs and metrics).
const (
	metricExecutions    = "pyexec_executions_total"
	metricSessionsOpen  = "pyexec_sessions_open"
	metricIsolation     = "pyexec_isolation_layer_active"
	metricIdentity      = "pyexec_identity_info"
	metricReady         = "pyexec_ready"
	metricRejected      = "pyexec_requests_rejected_total"
	metricForkWarm      = "pyexec_fork_warm_executions_total"
	metricForkFallbacks = "pyexec_fork_fallbacks_total"
	reasonExit          = "exit"
)

// SidecarMetrics is what status shows of a sidecar's /metrics.
type SidecarMetrics struct {
	// Mode is fork when the sidecar exports the fork-mode counters (pyexec serve registers them
	// only in fork mode), else spawn.
	Mode string `json:"mode"`
	// Executions is the sum of pyexec_executions_total; ByReason splits it.
	Executions int64            `json:"executions"`
	ByReason   map[string]int64 `json:"executions_by_reason"`
	// Errors are the executions that did not end on their own: every reason but exit
	// (timeout, output_limit, memory_limit, signal, error).
	Errors int64 `json:"errors"`
	// Rejected is pyexec_requests_rejected_total by error code.
	Rejected     map[string]int64 `json:"requests_rejected,omitempty"`
	SessionsOpen int64            `json:"sessions_open"`
	// Layers is pyexec_isolation_layer_active: each layer of confinement, active or not.
	Layers map[string]bool `json:"isolation_layers"`
	// Ready is pyexec_ready.
	Ready bool `json:"ready"`
	// ServerUID and RunnerUID are the labels of pyexec_identity_info: the uids the server and
	// its runner (and so the code) run as; nil before the runner is ready, or from a sidecar
	// older than the metric.
	ServerUID *int64 `json:"server_uid,omitempty"`
	RunnerUID *int64 `json:"runner_uid,omitempty"`
}

// ActiveLayers returns the active layers' count and the missing layers, sorted.
func (m *SidecarMetrics) ActiveLayers() (active int, missing []string) {
	for name, ok := range m.Layers {
		if ok {
			active++
		} else {
			missing = append(missing, name)
		}
	}
	slices.Sort(missing)
	return active, missing
}

// ParseMetrics reads the Prometheus text format of a sidecar's /metrics.
func ParseMetrics(text []byte) (*SidecarMetrics, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		return nil, fmt.Errorf("parsing /metrics: %w", err)
	}
	if families[metricExecutions] == nil && families[metricReady] == nil {
		return nil, errors.New("/metrics has no pyexec_* metrics: not a pyexec sidecar's port")
	}
	m := &SidecarMetrics{Mode: "spawn", ByReason: map[string]int64{}, Layers: map[string]bool{}}
	if families[metricForkWarm] != nil || families[metricForkFallbacks] != nil {
		m.Mode = "fork"
	}
	for _, s := range samples(families[metricExecutions]) {
		n := int64(s.value)
		m.ByReason[s.labels["reason"]] += n
		m.Executions += n
		if s.labels["reason"] != reasonExit {
			m.Errors += n
		}
	}
	for _, s := range samples(families[metricRejected]) {
		if m.Rejected == nil {
			m.Rejected = map[string]int64{}
		}
		m.Rejected[s.labels["code"]] += int64(s.value)
	}
	for _, s := range samples(families[metricSessionsOpen]) {
		m.SessionsOpen += int64(s.value)
	}
	for _, s := range samples(families[metricIsolation]) {
		m.Layers[s.labels["layer"]] = s.value == 1
	}
	for _, s := range samples(families[metricReady]) {
		m.Ready = s.value == 1
	}
	for _, s := range samples(families[metricIdentity]) {
		server, err1 := strconv.ParseInt(s.labels["server_uid"], 10, 64)
		runner, err2 := strconv.ParseInt(s.labels["runner_uid"], 10, 64)
		if s.value == 1 && err1 == nil && err2 == nil {
			m.ServerUID, m.RunnerUID = &server, &runner
		}
	}
	return m, nil
}

type sample struct {
	labels map[string]string
	value  float64
}

// samples are a counter's or a gauge's values with their labels.
func samples(mf *dto.MetricFamily) []sample {
	if mf == nil {
		return nil
	}
	var out []sample
	for _, m := range mf.GetMetric() {
		s := sample{labels: map[string]string{}}
		for _, l := range m.GetLabel() {
			s.labels[l.GetName()] = l.GetValue()
		}
		switch {
		case m.Counter != nil:
			s.value = m.GetCounter().GetValue()
		case m.Gauge != nil:
			s.value = m.GetGauge().GetValue()
		case m.Untyped != nil:
			s.value = m.GetUntyped().GetValue()
		default:
			continue
		}
		out = append(out, s)
	}
	return out
}
