package chart

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/pyexec/pyexec/cmd/pyexec-injector/app"
)

// The RBAC that watchdog.enabled adds: pods (delete with watchdog.deletePods) and namespaces
// cluster-wide (its Events use the webhook's rule); a Lease and its Events in the release
// namespace.
func watchdogClusterRules(deletePods bool) []rbacv1.PolicyRule {
	podVerbs := []string{"get", "list", "watch"}
	if deletePods {
		podVerbs = append(podVerbs, "delete")
	}
	return append(slices.Clone(wantClusterRoleRules),
		rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: podVerbs},
		rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get"}},
	)
}

var watchdogRoleRules = append(slices.Clone(wantRoleRules),
	rbacv1.PolicyRule{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "create", "update"}},
	rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
)

// serveConfig parses the injector's args as `pyexec-injector serve` does, with POD_NAMESPACE
// set as in the pod: the chart's flags must be the binary's.
func serveConfig(t *testing.T, args []string) *app.ServeConfig {
	t.Helper()
	var got *app.ServeConfig
	var out strings.Builder
	root := app.NewRootCommand(app.IO{Stdout: &out, Stderr: &out, LookupEnv: func(k string) (string, bool) {
		if k == "POD_NAMESPACE" {
			return releaseNamespace, true
		}
		return "", false
	}}, app.Runners{Serve: func(_ context.Context, c *app.ServeConfig) error { got = c; return nil }})
	root.SetArgs(args)
	if err := root.ExecuteContext(context.Background()); err != nil || got == nil {
		t.Fatalf("pyexec-injector %v: %v %s", args, err, out.String())
	}
	return got
}

// TestWatchdog: off by default (no flag, no RBAC beyond TestDefaults'), and each value reaches
// its flag, the RBAC and the notes when on.
func TestWatchdog(t *testing.T) {
	tests := []struct {
		name, values string
		on, delete   bool
		max          int
		grace        time.Duration
		notes        []string
	}{{
		name:  "default",
		max:   5,
		grace: 30 * time.Second,
	}, {
		name:   "deletePods without enabled does nothing",
		values: "watchdog:\n  deletePods: true\n  maxDeletionsPerMinute: 2\n",
		max:    5,
		grace:  30 * time.Second,
	}, {
		name:   "enabled",
		values: "watchdog:\n  enabled: true\n",
		on:     true, max: 5, grace: 30 * time.Second,
		notes: []string{"The watchdog is on", "after 30s", "kubectl get events -A --field-selector reason=PyexecNotInjected", "set watchdog.deletePods=true"},
	}, {
		name:   "enabled with deletion",
		values: "watchdog:\n  enabled: true\n  deletePods: true\n  maxDeletionsPerMinute: 2\n  gracePeriod: 1m\n",
		on:     true, delete: true, max: 2, grace: time.Minute,
		notes: []string{"The watchdog is on", "after 1m", "at most 2 a minute", "re-creates them through the webhook"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := render(t, tt.values)
			checkEveryObject(t, r)
			checkInjector(t, r)
			args := injectorContainer(t, r).Args
			hasFlags := slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--watchdog") })
			if hasFlags != tt.on {
				t.Errorf("watchdog flags in %v: %v, want %v", args, hasFlags, tt.on)
			}
			cfg := serveConfig(t, args)
			if cfg.Watchdog != tt.on || cfg.WatchdogDelete != tt.delete || cfg.WatchdogMaxDeletionsPerMinute != tt.max || cfg.WatchdogGracePeriod != tt.grace {
				t.Errorf("serve config: watchdog %v delete %v max %d grace %v; want %v %v %d %v", cfg.Watchdog, cfg.WatchdogDelete,
					cfg.WatchdogMaxDeletionsPerMinute, cfg.WatchdogGracePeriod, tt.on, tt.delete, tt.max, tt.grace)
			}
			if !tt.on {
				checkRBAC(t, r) // exactly the rules without the watchdog
				if strings.Contains(r.Notes, "watchdog is on") {
					t.Errorf("NOTES.txt says the watchdog is on:\n%s", r.Notes)
				}
				return
			}
			equal(t, "ClusterRole rules", r.ClusterRole.Rules, watchdogClusterRules(tt.delete))
			equal(t, "Role rules", r.Role.Rules, watchdogRoleRules)
			for _, s := range tt.notes {
				if !strings.Contains(r.Notes, s) {
					t.Errorf("NOTES.txt lacks %q:\n%s", s, r.Notes)
				}
			}
		})
	}
}

// TestFailurePolicyIgnoreNotes: with Ignore and no watchdog, the notes point at the watchdog.
func TestFailurePolicyIgnoreNotes(t *testing.T) {
	r := render(t, "webhook:\n  failurePolicy: Ignore\n")
	if !strings.Contains(r.Notes, "failurePolicy is Ignore") || !strings.Contains(r.Notes, "watchdog.enabled=true") {
		t.Errorf("NOTES.txt does not suggest the watchdog with failurePolicy Ignore:\n%s", r.Notes)
	}
	if r := render(t, "webhook:\n  failurePolicy: Ignore\nwatchdog:\n  enabled: true\n"); strings.Contains(r.Notes, "failurePolicy is Ignore") {
		t.Errorf("NOTES.txt suggests the watchdog that is on:\n%s", r.Notes)
	}
}

func TestWatchdogSchema(t *testing.T) {
	ch := loadChart(t)
	for name, values := range map[string]string{
		"enabled a string":                 "watchdog:\n  enabled: \"true\"\n",
		"deletePods a string":              "watchdog:\n  deletePods: yes please\n",
		"maxDeletionsPerMinute 0":          "watchdog:\n  maxDeletionsPerMinute: 0\n",
		"maxDeletionsPerMinute a fraction": "watchdog:\n  maxDeletionsPerMinute: 1.5\n",
		"maxDeletionsPerMinute a string":   "watchdog:\n  maxDeletionsPerMinute: \"5\"\n",
		"gracePeriod without unit":         "watchdog:\n  gracePeriod: \"30\"\n",
		"gracePeriod a number":             "watchdog:\n  gracePeriod: 30\n",
		"gracePeriod negative":             "watchdog:\n  gracePeriod: -30s\n",
		"unknown key":                      "watchdog:\n  deletepods: true\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := renderValues(ch, values); err == nil {
				t.Fatalf("values accepted:\n%s", values)
			}
			overrides, err := chartutil.ReadValues([]byte(values))
			if err != nil {
				t.Fatal(err)
			}
			merged, err := chartutil.CoalesceValues(ch, overrides)
			if err != nil {
				t.Fatal(err)
			}
			if err := chartutil.ValidateAgainstSingleSchema(merged, ch.Schema); !errors.As(err, &chartutil.JSONSchemaValidationError{}) {
				t.Errorf("schema validation error = %v, want a JSONSchemaValidationError", err)
			}
		})
	}
	for _, values := range []string{
		"watchdog:\n  enabled: true\n  deletePods: true\n  maxDeletionsPerMinute: 1\n  gracePeriod: 0s\n",
		"watchdog:\n  enabled: true\n  gracePeriod: \"0\"\n",
		"watchdog:\n  enabled: true\n  maxDeletionsPerMinute: 600\n  gracePeriod: 1m30s\n",
	} {
		r := render(t, values)
		serveConfig(t, injectorContainer(t, r).Args) // and the binary takes it
	}
}

// TestWatchdogLint: `helm lint --strict` is clean with the watchdog on.
func TestWatchdogLint(t *testing.T) {
	vals, err := chartutil.ReadValues([]byte("watchdog:\n  enabled: true\n  deletePods: true\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range lint.AllWithKubeVersion(chartDir, vals, releaseNamespace, nil).Messages {
		if m.Severity >= support.WarningSev {
			t.Error(m)
		}
	}
}
