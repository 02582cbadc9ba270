package app

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
)

// TestWatchdogFlags: the watchdog flags, or their variables, reach the serve config; it is off
// by default.
func TestWatchdogFlags(t *testing.T) {
	base := []string{"serve", "--cert-mode=external", "--namespace=pyexec-system", "--webhook-config=pyexec"}
	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		on, delete bool
		max        int
		grace      time.Duration
	}{
		{name: "defaults", max: 5, grace: 30 * time.Second},
		{name: "flags", args: []string{"--watchdog", "--watchdog-delete", "--watchdog-max-deletions-per-minute=2", "--watchdog-grace-period=1m"},
			on: true, delete: true, max: 2, grace: time.Minute},
		{name: "report only", args: []string{"--watchdog"}, on: true, max: 5, grace: 30 * time.Second},
		{name: "grace 0", args: []string{"--watchdog", "--watchdog-grace-period=0s"}, on: true, max: 5},
		{name: "env", env: map[string]string{"PYEXEC_INJECTOR_WATCHDOG": "true", "PYEXEC_INJECTOR_WATCHDOG_DELETE": "true",
			"PYEXEC_INJECTOR_WATCHDOG_MAX_DELETIONS_PER_MINUTE": "10", "PYEXEC_INJECTOR_WATCHDOG_GRACE_PERIOD": "45s"},
			on: true, delete: true, max: 10, grace: 45 * time.Second},
		{name: "flags over env", args: []string{"--watchdog-delete=false"},
			env: map[string]string{"PYEXEC_INJECTOR_WATCHDOG": "true", "PYEXEC_INJECTOR_WATCHDOG_DELETE": "true"},
			on:  true, max: 5, grace: 30 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got *ServeConfig
			sio, _, stderr := testIO(tt.env, "")
			root := NewRootCommand(sio, Runners{Serve: func(_ context.Context, c *ServeConfig) error { got = c; return nil }})
			root.SetArgs(append(append([]string{}, base...), tt.args...))
			if err := root.ExecuteContext(context.Background()); err != nil {
				t.Fatalf("%v: %s", err, stderr)
			}
			if got.Watchdog != tt.on || got.WatchdogDelete != tt.delete || got.WatchdogMaxDeletionsPerMinute != tt.max || got.WatchdogGracePeriod != tt.grace {
				t.Errorf("config %+v, want watchdog %v delete %v max %d grace %v", got, tt.on, tt.delete, tt.max, tt.grace)
			}
		})
	}
}

// TestWatchdogFlagsInvalid: usage errors (exit code 2) before anything starts.
func TestWatchdogFlagsInvalid(t *testing.T) {
	for _, tt := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{args: []string{"--watchdog-delete"}, want: "--watchdog-delete needs --watchdog"},
		{args: []string{"--watchdog", "--watchdog-max-deletions-per-minute=0"}, want: "--watchdog-max-deletions-per-minute 0: want 1 or more"},
		{args: []string{"--watchdog", "--watchdog-grace-period=-1s"}, want: "--watchdog-grace-period -1s: want 0 or more"},
		{args: []string{"--watchdog", "--watchdog-grace-period=30"}, want: "invalid"},
		{args: []string{"--watchdog", "--namespace="}, want: "--namespace (or POD_NAMESPACE) is required with --watchdog"},
		{args: []string{"--watchdog", "--webhook-config="}, want: "--webhook-config is required with --watchdog"},
		{env: map[string]string{"PYEXEC_INJECTOR_WATCHDOG": "yes"}, want: "PYEXEC_INJECTOR_WATCHDOG"},
	} {
		args := append([]string{"serve", "--cert-mode=external", "--namespace=pyexec-system", "--webhook-config=pyexec"}, tt.args...)
		sio, stdout, stderr := testIO(tt.env, "")
		if code := Main(context.Background(), args, sio); code != 2 || !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("%v %v: exit code %d, stderr %q; want 2 and %q", tt.args, tt.env, code, stderr, tt.want)
		}
		if stdout.Len() != 0 {
			t.Errorf("%v: wrote %q", tt.args, stdout)
		}
	}
}

// TestManagerOptions: the cache holds labeled pods only, with or without the watchdog; the
// watchdog brings leader election on a Lease in the injector's namespace.
func TestManagerOptions(t *testing.T) {
	scheme := runtime.NewScheme()
	for _, on := range []bool{false, true} {
		cfg := &ServeConfig{Watchdog: on, Namespace: "pyexec-system", WebhookConfig: "pyexec", MetricsAddr: "0", WebhookPort: 9443}
		opts := managerOptions(cfg, scheme)
		if len(opts.Cache.ByObject) != 1 {
			t.Fatalf("cache ByObject %v, want pods only", opts.Cache.ByObject)
		}
		for obj, by := range opts.Cache.ByObject {
			if _, ok := obj.(*corev1.Pod); !ok || by.Label == nil {
				t.Fatalf("cache ByObject %T %+v, want pods by label", obj, by)
			}
			if !by.Label.Matches(labels.Set{"pyexec.dev/inject": "true"}) || by.Label.Matches(labels.Set{}) || by.Label.Matches(labels.Set{"pyexec.dev/inject": "false"}) {
				t.Errorf("cache label selector %s, want pyexec.dev/inject=true", by.Label)
			}
		}
		if opts.LeaderElection != on {
			t.Errorf("watchdog %v: leader election %v", on, opts.LeaderElection)
		}
		if on && (opts.LeaderElectionID != "pyexec-watchdog" || opts.LeaderElectionNamespace != "pyexec-system" || !opts.LeaderElectionReleaseOnCancel) {
			t.Errorf("leader election %q in %q (release on cancel %v), want pyexec-watchdog in pyexec-system", opts.LeaderElectionID, opts.LeaderElectionNamespace, opts.LeaderElectionReleaseOnCancel)
		}
	}
}
