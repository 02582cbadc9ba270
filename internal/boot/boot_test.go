package boot

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/go-logr/logr"

	"github.com/pyexec/pyexec/internal/server"
	"github.com/pyexec/pyexec/pkg/api"
)

// Only the modules that imported in preflight are preloaded.
func TestPreloaded(t *testing.T) {
	r := &api.Report{Preload: []api.Preload{{Module: "numpy", OK: true}, {Module: "missing"}, {Module: "json", OK: true}}}
	if got := Preloaded(r); !slices.Equal(got, []string{"numpy", "json"}) {
		t.Fatalf("%v", got)
	}
}

// A report that failed leaves the server not ready, and /v1/info says why; nothing starts.
func TestReadyRefusesAFailedReport(t *testing.T) {
	srv := server.New(server.Config{}, nil, logr.Discard(), nil)
	report := &api.Report{OK: false, Problems: []string{"python: not found"}}
	err := Ready(context.Background(), context.Background(), report, "/run/preflight.json", Config{Server: srv, Info: api.Info{Version: "v"}, Log: logr.Discard()})
	if err == nil || !strings.Contains(err.Error(), "python: not found") {
		t.Fatalf("Ready with a failed report: %v", err)
	}
	info := WithReport(api.Info{Version: "v"}, report, "/run/preflight.json")
	if info.Preflight.OK || info.Preflight.Source != "/run/preflight.json" || !slices.Equal(info.Preflight.Problems, report.Problems) || info.Version != "v" {
		t.Fatalf("info %+v", info)
	}
	if err := Ready(context.Background(), context.Background(), nil, "", Config{Server: srv, Log: logr.Discard()}); err == nil {
		t.Fatal("Ready without a report")
	}
}
