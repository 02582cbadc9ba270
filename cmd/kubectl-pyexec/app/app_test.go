package app

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	k8sversion "k8s.io/apimachinery/pkg/version"

	"github.com/pyexec/pyexec/internal/server"
	"github.com/pyexec/pyexec/pkg/api"
)

// sidecarMetricsText is /metrics as a fork-mode sidecar serves it: the metrics that status
// reads, registered and encoded by the Prometheus client as pyexec serve does (the isolation
// layers and, when uids holds the server's and the runner's, the identity through internal/server's
// own collector), plus a histogram and the untouched families that status ignores.
func sidecarMetricsText(t testing.TB, fork bool, layers map[string]bool, reasons map[string]int, sessions int, uids []int) []byte {
	t.Helper()
	reg := prometheus.NewRegistry()
	executions := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pyexec_executions_total", Help: "Executions."}, []string{"reason"})
	for r, n := range reasons {
		executions.WithLabelValues(r).Add(float64(n))
	}
	open := prometheus.NewGauge(prometheus.GaugeOpts{Name: "pyexec_sessions_open", Help: "Sessions open now."})
	open.Set(float64(sessions))
	ready := prometheus.NewGauge(prometheus.GaugeOpts{Name: "pyexec_ready", Help: "Ready."})
	ready.Set(1)
	isolation := &api.Isolation{}
	for l, on := range layers {
		isolation.Layers = append(isolation.Layers, api.IsolationLayer{Name: l, Active: on})
	}
	iso := server.IsolationGauge(isolation)
	if uids != nil {
		iso.SetIdentity(&api.Identity{ServerUID: uids[0], RunnerUID: uids[1], GID: uids[0], Separate: uids[0] != uids[1]})
	}
	rejected := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pyexec_requests_rejected_total", Help: "Rejected."}, []string{"code"})
	rejected.WithLabelValues("queue_full").Add(2)
	duration := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pyexec_execution_duration_seconds", Help: "Wall time."})
	duration.Observe(0.01)
	reg.MustRegister(executions, open, ready, iso, rejected, duration)
	if fork {
		reg.MustRegister(
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "pyexec_fork_warm_executions_total", Help: "Warm."}, func() float64 { return 3 }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "pyexec_fork_fallbacks_total", Help: "Fallbacks."}, func() float64 { return 0 }))
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range families {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

var allLayers = map[string]bool{"landlock_filesystem": true, "scoped_signals": true, "seccomp": true,
	"network_control": true, "landlock_truncate": true, "non_dumpable": true}

func TestParseMetrics(t *testing.T) {
	text := sidecarMetricsText(t, true, allLayers, map[string]int{"exit": 10, "timeout": 2, "signal": 1}, 3, []int{100123, 200456})
	m, err := ParseMetrics(text)
	if err != nil {
		t.Fatal(err)
	}
	if m.Mode != "fork" || m.Executions != 13 || m.Errors != 3 || m.SessionsOpen != 3 || !m.Ready {
		t.Errorf("metrics = %+v", m)
	}
	if m.ByReason["timeout"] != 2 || m.Rejected["queue_full"] != 2 {
		t.Errorf("by reason %v, rejected %v", m.ByReason, m.Rejected)
	}
	if m.ServerUID == nil || *m.ServerUID != 100123 || m.RunnerUID == nil || *m.RunnerUID != 200456 {
		t.Errorf("uids %v/%v, want 100123/200456", m.ServerUID, m.RunnerUID)
	}
	if active, missing := m.ActiveLayers(); active != 6 || len(missing) != 0 {
		t.Errorf("layers: %d active, missing %v", active, missing)
	}

	partial := map[string]bool{"landlock_filesystem": true, "seccomp": false, "network_control": false}
	m, err = ParseMetrics(sidecarMetricsText(t, false, partial, nil, 0, nil))
	if err != nil {
		t.Fatal(err)
	}
	if m.Mode != "spawn" || m.Executions != 0 || m.Errors != 0 {
		t.Errorf("spawn sidecar: %+v", m)
	}
	if m.ServerUID != nil || m.RunnerUID != nil {
		t.Errorf("uids %v/%v from a sidecar whose runner is not ready, want none", m.ServerUID, m.RunnerUID)
	}
	if active, missing := m.ActiveLayers(); active != 1 || strings.Join(missing, ",") != "network_control,seccomp" {
		t.Errorf("layers: %d active, missing %v", active, missing)
	}

	if _, err := ParseMetrics([]byte("# HELP go_goroutines x\n# TYPE go_goroutines gauge\ngo_goroutines 7\n")); err == nil || !strings.Contains(err.Error(), "not a pyexec sidecar") {
		t.Errorf("another exporter's metrics: err = %v", err)
	}
	if _, err := ParseMetrics([]byte("<html>nope</html>")); err == nil {
		t.Error("HTML parsed as metrics")
	}
}

func TestStatusTable(t *testing.T) {
	yes, no := true, false
	full := &SidecarMetrics{Mode: "fork", Executions: 12, Errors: 1, SessionsOpen: 2, Layers: allLayers}
	server, runner := int64(100123), int64(200456)
	rows := []PodStatus{
		{Namespace: "bots", Pod: "bot-1", Node: "node-a", Injected: InjectedNative, Init: InitOK, InitSummary: "pyexec preflight ok: runtime=containerd/kubernetes",
			Ready: &yes, Mode: "fork", ModeFrom: "metrics", ServerUID: &server, RunnerUID: &runner, UIDsFrom: "metrics", Metrics: full},
		{Namespace: "bots", Pod: "bot-2", Injected: InjectedRegular, Init: InitFailed, Ready: &no, Restarts: 4, RunnerRestarts: 7, Mode: "fork", ModeFrom: "spec",
			MetricsError: "connection refused", Notes: []string{"init failed: kubectl pyexec report bot-2", "metrics: connection refused"}},
		{Namespace: "web", Pod: "old", Injected: InjectedNo, Init: none, Notes: []string{"not injected: x"}},
	}
	var b bytes.Buffer
	if err := WriteStatusTable(&b, rows, false, false); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"POD     INJECTED   INIT     READY   MODE   ISOLATION   SESSIONS   EXECUTIONS   ERRORS   NOTE\n" +
		"bot-1   native     ok       true    fork   6/6         2          12           1        -\n" +
		"bot-2   regular    FAILED   false   fork   -           -          -            -        init failed: kubectl pyexec report bot-2; metrics: connection refused\n" +
		"old     no         -        -       -      -           -          -            -        not injected: x\n"
	if b.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	if err := WriteStatusTable(&b, rows, true, true); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(b.String(), "\n")
	if !strings.HasPrefix(lines[0], "NAMESPACE   POD     NODE     INJECTED   INIT     READY   RESTARTS   UIDS            MODE") || !strings.Contains(lines[0], "ERRORS   INIT-SUMMARY") || !strings.HasSuffix(lines[0], "NOTE") {
		t.Errorf("wide header: %q", lines[0])
	}
	if !strings.Contains(lines[1], " 0/0        100123/200456   fork ") || !strings.Contains(lines[3], " -          -               - ") {
		t.Errorf("wide UIDS: %q, %q", lines[1], lines[3])
	}
	if !strings.HasPrefix(lines[1], "bots        bot-1   node-a   native") || !strings.HasSuffix(lines[1], "pyexec preflight ok: runtime=containerd/kubernetes   -") {
		t.Errorf("wide row: %q", lines[1])
	}
	if !strings.Contains(lines[2], " false   4/7 ") { // the server's, then the runner's
		t.Errorf("wide row's restarts: %q", lines[2])
	}
}

func TestSummaryLine(t *testing.T) {
	log := "pyexec preflight FAILED: runtime=containerd/kubernetes python=none\n" +
		`{"level":"error","msg":"preflight failed"}` + "\n"
	if got := summaryLine(log); !strings.HasPrefix(got, "pyexec preflight FAILED:") {
		t.Errorf("summaryLine = %q", got)
	}
	if got := summaryLine("no summary here\n"); got != "" {
		t.Errorf("summaryLine = %q", got)
	}
}

func sampleReport() *api.Report {
	return &api.Report{
		Schema: api.ReportSchema, OK: false, PyexecVersion: "0.1.0", CreatedAt: "2026-11-26T15:31:28Z",
		Container: api.Container{InContainer: true, Runtime: "containerd", Orchestrator: "kubernetes"},
		Python: &api.Python{Executable: "/usr/bin/python3", RealPath: "/usr/bin/python3.11", Version: "3.11.2", VersionFull: "3.11.2",
			Implementation: "CPython", Prefix: "/usr", Pip: api.Pip{Available: true, Version: "23.0.1"}, Ctypes: true,
			ExternallyManaged: api.ExternallyManaged{Present: true, Applies: true},
			SitePackages:      []api.SitePackages{{Path: "/usr/lib/python3/dist-packages", Exists: true}}},
		Policy:   api.PolicySystem,
		Identity: &api.Identity{ServerUID: 100123, RunnerUID: 200456, GID: 100123, Separate: true},
		Requirements: []api.Requirement{
			{Name: "numpy", Specifier: ">=1.20", Installed: "1.24.2", OK: true},
			{Name: "pandas", Specifier: ">=2", OK: false, Problem: "not installed"},
		},
		Preload: []api.Preload{{Module: "numpy", OK: true, ImportMS: 95}},
		Isolation: &api.Isolation{LandlockABI: 4, Layers: []api.IsolationLayer{
			{Name: "landlock_filesystem", Active: true},
			{Name: "scoped_signals", Active: false, Missing: "code may signal pyexec serve"},
		}},
		Problems:   []string{"requirement pandas>=2: not installed"},
		DurationMS: 812,
	}
}

func TestWriteReport(t *testing.T) {
	var b bytes.Buffer
	if err := WriteReport(&b, sampleReport()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"Summary:  pyexec preflight FAILED: runtime=containerd/kubernetes python=/usr/bin/python3 (3.11.2) policy=system requirements=1/2",
		"Result:   FAILED (pyexec 0.1.0, 2026-11-26T15:31:28Z, 812 ms)",
		"Policy:   system\nIdentity: server uid 100123, runner uid 200456, group 100123 (separate)\n",
		"  executable          /usr/bin/python3\n",
		"  real path           /usr/bin/python3.11\n",
		"  version             CPython 3.11.2\n",
		"  externally managed  yes\n",
		"  site-packages       /usr/lib/python3/dist-packages (not writable)\n",
		"Requirements (1/2 met)\n  ok    numpy>=1.20  1.24.2\n  FAIL  pandas>=2    -       not installed\n",
		"Preload\n  ok  numpy  95 ms\n",
		"Isolation (Landlock ABI 4)\n  active   landlock_filesystem\n  MISSING  scoped_signals       code may signal pyexec serve\n",
		"Problems\n  - requirement pandas>=2: not installed\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasSuffix(line, " ") {
			t.Errorf("trailing space: %q", line)
		}
	}
	// No interpreter, nothing required.
	b.Reset()
	if err := WriteReport(&b, &api.Report{OK: true, Policy: api.PolicySystem}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "Python\n  none found\n") || !strings.Contains(b.String(), "Requirements (0/0 met)\n  none\n") ||
		strings.Contains(b.String(), "Identity:") {
		t.Errorf("empty report:\n%s", b.String())
	}
	for id, want := range map[api.Identity]string{
		{ServerUID: 1000, RunnerUID: -1, GID: 1000}:   "Identity: server uid 1000, runner uid unknown, group 1000 (not known)\n",
		{ServerUID: 1000, RunnerUID: 1000, GID: 1000}: "Identity: server uid 1000, runner uid 1000, group 1000 (shared: the code owns what the server owns)\n",
	} {
		b.Reset()
		if err := WriteReport(&b, &api.Report{Identity: &id}); err != nil || !strings.Contains(b.String(), want) {
			t.Errorf("report of %+v lacks %q:\n%s", id, want, b.String())
		}
	}
}

func TestNativeSidecars(t *testing.T) {
	for _, tt := range []struct {
		info k8sversion.Info
		want bool
		err  bool
	}{
		{k8sversion.Info{Major: "1", Minor: "29", GitVersion: "v1.29.0"}, true, false},
		{k8sversion.Info{Major: "1", Minor: "37", GitVersion: "v1.37.2"}, true, false},
		{k8sversion.Info{Major: "1", Minor: "28+", GitVersion: "v1.28.5-eks-5e0fdde"}, false, false},
		{k8sversion.Info{Major: "1", Minor: "30+", GitVersion: "v1.30.1-gke.1"}, true, false},
		{k8sversion.Info{GitVersion: "v1.31.0-rc.1"}, true, false},
		{k8sversion.Info{GitVersion: "v1.27.3+k3s1"}, false, false},
		{k8sversion.Info{Major: "2", Minor: "0"}, true, false},
		{k8sversion.Info{GitVersion: "devel"}, false, true},
	} {
		got, err := NativeSidecars(&tt.info)
		if got != tt.want || (err != nil) != tt.err {
			t.Errorf("NativeSidecars(%+v) = %v, %v; want %v, error %v", tt.info, got, err, tt.want, tt.err)
		}
	}
}

func TestWriteFindings(t *testing.T) {
	var b bytes.Buffer
	failed := WriteFindings(&b, []Finding{okf("all %s", "good"), fail("do this", "broken %d", 1)})
	if !failed || b.String() != "ok    all good\nFAIL  broken 1\n      fix: do this\n" {
		t.Errorf("failed=%v\n%s", failed, b.String())
	}
	b.Reset()
	if WriteFindings(&b, []Finding{okf("fine")}) {
		t.Error("no failure reported as failed")
	}
}

func TestRunCommandLine(t *testing.T) {
	c := &RunConfig{Code: "print(1)"}
	if got := strings.Join(c.Command(), " "); got != "pyexec run --code=print(1)" {
		t.Errorf("command %q", got)
	}
	c = &RunConfig{File: "x.py", Timeout: 1500000000, Stream: true}
	if got := strings.Join(c.Command(), " "); got != "pyexec run --timeout 1.5s --stream -" {
		t.Errorf("command %q", got)
	}
}

// TestUsageErrors: bad calls exit 2 before any cluster is touched.
func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"nope"},
		{"status", "--bogus"},
		{"status", "-o", "yaml"},
		{"status", "extra"},
		{"report"},
		{"report", "a", "b"},
		{"report", "p", "-o", "wide"},
		{"run", "p"},
		{"run", "p", "-c", "x", "-f", "y"},
		{"run", "-c", "x"},
		{"run", "p", "-f", "/nonexistent/code.py"},
		{"run", "p", "-c", "x", "--timeout", "-1s"},
		{"check", "x"},
	} {
		var stdout, stderr bytes.Buffer
		code := Main(context.Background(), args, IO{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr},
			Deps{})
		if code != 2 {
			t.Errorf("%q: exit %d, want 2; stderr %s", args, code, stderr.String())
		}
	}
}

// Without a kubeconfig the plugin says so in its own words (client-go's say to set
// KUBERNETES_MASTER), and -v is the log level, not the version.
func TestNoKubeconfig(t *testing.T) {
	t.Setenv("KUBECONFIG", "")
	t.Setenv("HOME", t.TempDir())
	var out, errb bytes.Buffer
	code := Main(context.Background(), []string{"status", "-v", "6"}, IO{Stdout: &out, Stderr: &errb}, Deps{})
	if code == 0 || !strings.Contains(errb.String(), "no kubeconfig") || !strings.Contains(errb.String(), "--server URL --token TOKEN") || strings.Contains(errb.String(), "KUBERNETES_MASTER") {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
}
