package server

import (
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pyexec/pyexec/pkg/api"
)

// series are the samples of a registry, as name{label="value",...} value.
func series(t *testing.T, reg *prometheus.Registry) []string {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+`="`+l.GetValue()+`"`)
			}
			out = append(out, mf.GetName()+"{"+strings.Join(labels, ",")+"} "+strconv.FormatFloat(m.GetGauge().GetValue(), 'g', -1, 64))
		}
	}
	return out
}

// pyexec_identity_info has no series until the runner is ready, then one, which a runner that
// comes again replaces; the layers are collected with it.
func TestIsolationMetricIdentity(t *testing.T) {
	g := IsolationGauge(&api.Isolation{Layers: []api.IsolationLayer{{Name: "seccomp", Active: true}}})
	reg := prometheus.NewRegistry()
	reg.MustRegister(g)
	check := func(want ...string) {
		t.Helper()
		if got := series(t, reg); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("series\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	check(`pyexec_isolation_layer_active{layer="seccomp"} 1`)
	g.SetIdentity(&api.Identity{ServerUID: 1000, RunnerUID: 2000, GID: 1000, Separate: true})
	g.SetIdentity(&api.Identity{ServerUID: 1000, RunnerUID: 3000, GID: 1000, Separate: true})
	check(`pyexec_identity_info{runner_uid="3000",server_uid="1000"} 1`, `pyexec_isolation_layer_active{layer="seccomp"} 1`)
	g.SetIdentity(nil)
	check(`pyexec_isolation_layer_active{layer="seccomp"} 1`)
}
