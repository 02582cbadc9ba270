package chart

import (
	"context"
	"strings"
	"testing"

	"github.com/pyexec/pyexec/cmd/pyexec-injector/app"
	"github.com/pyexec/pyexec/internal/mutation"
)

// TestPodValues: identity.uidRange, sidecar.resources, runner.resources and runner.shmSize
// reach pyexec-injector serve as the injector itself parses the chart's args, a value left
// out becomes an empty flag (none set), and a request above its limit, which the schema cannot
// see, is refused by the injector at start.
func TestPodValues(t *testing.T) {
	tests := []struct {
		name, values string
		want         app.PodConfig
	}{{
		name: "defaults",
		want: app.PodConfig{UIDRange: mutation.UIDRange{Min: 100000, Max: 999999999},
			Sidecar: app.ResourceFlags{CPURequest: "50m", MemoryRequest: "64Mi", MemoryLimit: "512Mi"},
			Runner:  app.ResourceFlags{CPURequest: "100m", MemoryRequest: "128Mi", MemoryLimit: "1Gi"},
			ShmSize: "64Mi"},
	}, {
		name: "every value",
		values: `
identity:
  uidRange: 5000-5999
sidecar:
  resources:
    requests: {cpu: 1, memory: 1Gi}
    limits: {cpu: 2, memory: 2Gi}
runner:
  resources:
    requests: {cpu: 250m, memory: 256Mi}
    limits: {cpu: 4, memory: 8Gi}
  shmSize: 512Mi
`,
		want: app.PodConfig{UIDRange: mutation.UIDRange{Min: 5000, Max: 5999},
			Sidecar: app.ResourceFlags{CPURequest: "1", CPULimit: "2", MemoryRequest: "1Gi", MemoryLimit: "2Gi"},
			Runner:  app.ResourceFlags{CPURequest: "250m", CPULimit: "4", MemoryRequest: "256Mi", MemoryLimit: "8Gi"},
			ShmSize: "512Mi"},
	}, {
		name: "resources left out with null",
		values: `
sidecar:
  resources:
    limits: null
runner:
  resources:
    requests: {cpu: null, memory: null}
`,
		want: app.PodConfig{UIDRange: mutation.UIDRange{Min: 100000, Max: 999999999},
			Sidecar: app.ResourceFlags{CPURequest: "50m", MemoryRequest: "64Mi"},
			Runner:  app.ResourceFlags{MemoryLimit: "1Gi"},
			ShmSize: "64Mi"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := render(t, tt.values)
			got := serveConfig(t, injectorContainer(t, r).Args).Pod
			if got.UIDRange != tt.want.UIDRange || got.Sidecar != tt.want.Sidecar || got.Runner != tt.want.Runner || got.ShmSize != tt.want.ShmSize {
				t.Errorf("pyexec-injector serve got\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}

	// The schema passes these; the injector refuses them before it serves (exit code 2).
	for name, values := range map[string]string{
		"runner request above its limit": "runner:\n  resources:\n    requests: {memory: 2Gi}\n",
		"uid range upside down":          "identity:\n  uidRange: 2000-1000\n",
		"uid range past the API's bound": "identity:\n  uidRange: 1000-4294967295\n",
	} {
		t.Run(name, func(t *testing.T) {
			args := injectorContainer(t, render(t, values)).Args
			var out strings.Builder
			root := app.NewRootCommand(app.IO{Stdout: &out, Stderr: &out, LookupEnv: func(k string) (string, bool) {
				return releaseNamespace, k == "POD_NAMESPACE"
			}}, app.Runners{Serve: func(context.Context, *app.ServeConfig) error { return nil }})
			root.SetArgs(args)
			if err := root.ExecuteContext(context.Background()); err == nil {
				t.Errorf("pyexec-injector %v accepted it", args)
			}
		})
	}
}
