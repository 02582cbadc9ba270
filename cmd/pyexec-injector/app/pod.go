package app

import (
	"strings"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/pyexec/pyexec/internal/cli"
	"github.com/pyexec/pyexec/internal/mutation"
	"github.com/pyexec/pyexec/internal/settings"
)

// PodConfig holds the flags of serve and inject that give the injected pods what no flag of
// pyexec serve holds: the range their uids are drawn from, the containers' resources and the
// size of the runner's /dev/shm. Pod annotations override each of them but the range.
type PodConfig struct {
	UIDRange mutation.UIDRange // --uid-range MIN-MAX
	Sidecar  ResourceFlags     // --sidecar-*: pyexec and pyexec-init
	Runner   ResourceFlags     // --runner-*: pyexec-runner
	ShmSize  string            // --runner-shm-size

	// Filled by Validate.
	sidecar, runner corev1.ResourceRequirements
	shmSize         resource.Quantity
}

// ResourceFlags are one container's requests and limits, as quantities; "" sets none.
type ResourceFlags struct {
	CPURequest, CPULimit, MemoryRequest, MemoryLimit string
}

// Validate checks the range and parses the quantities: each above zero, no request above its
// limit.
func (c *PodConfig) Validate() error {
	if err := c.UIDRange.Validate(); err != nil {
		return cli.Usagef("--uid-range: %w", err)
	}
	var err error
	if c.sidecar, err = c.Sidecar.parse("sidecar"); err != nil {
		return err
	}
	if c.runner, err = c.Runner.parse("runner"); err != nil {
		return err
	}
	q, err := quantity("--runner-shm-size", c.ShmSize, "a memory quantity above zero, such as 64Mi")
	if err != nil {
		return err
	}
	if q == nil {
		return cli.Usagef("--runner-shm-size must not be empty")
	}
	c.shmSize = *q
	return nil
}

// apply sets the defaults of d that c holds; c must be valid.
func (c *PodConfig) apply(d *mutation.Defaults) {
	d.UIDRange = c.UIDRange
	d.SidecarResources = c.sidecar.DeepCopy()
	d.RunnerResources = c.runner.DeepCopy()
	d.ShmSize = c.shmSize.DeepCopy()
}

// parse builds the requests and limits of the flags --PREFIX-cpu-request and so on.
func (r ResourceFlags) parse(prefix string) (corev1.ResourceRequirements, error) {
	res := corev1.ResourceRequirements{Requests: corev1.ResourceList{}, Limits: corev1.ResourceList{}}
	for _, pair := range []struct {
		name           corev1.ResourceName
		what, example  string
		request, limit string
	}{
		{corev1.ResourceCPU, "CPU", "100m", r.CPURequest, r.CPULimit},
		{corev1.ResourceMemory, "memory", "128Mi", r.MemoryRequest, r.MemoryLimit},
	} {
		kind := strings.ToLower(pair.what)
		reqFlag, limFlag := "--"+prefix+"-"+kind+"-request", "--"+prefix+"-"+kind+"-limit"
		want := "a " + pair.what + " quantity above zero, such as " + pair.example + ", or empty for none"
		req, err := quantity(reqFlag, pair.request, want)
		if err != nil {
			return res, err
		}
		lim, err := quantity(limFlag, pair.limit, want)
		if err != nil {
			return res, err
		}
		if req != nil {
			res.Requests[pair.name] = *req
		}
		if lim != nil {
			res.Limits[pair.name] = *lim
		}
		if req != nil && lim != nil && req.Cmp(*lim) > 0 {
			return res, cli.Usagef("%s %s: want no more than %s %s", reqFlag, req, limFlag, lim)
		}
	}
	return res, nil
}

// quantity parses a flag's quantity above zero; nil when the flag is empty.
func quantity(flag, v, want string) (*resource.Quantity, error) {
	if v == "" {
		return nil, nil
	}
	q, err := resource.ParseQuantity(v)
	if err != nil || q.Sign() <= 0 {
		return nil, cli.Usagef("%s %q: want %s", flag, v, want)
	}
	return &q, nil
}

// addPodFlags adds the flags of serve and inject that fill c. Their defaults are in
// internal/settings (settings.Pod lists them).
func addPodFlags(f *pflag.FlagSet, c *PodConfig) {
	f.TextVar(&c.UIDRange, "uid-range", mutation.DefaultUIDRange,
		"range MIN-MAX of the uids drawn for each injected pod, one for the server and another for the runner (1 <= MIN < MAX <= 2147483647), unless a pod pins them with pyexec.dev/server-uid and pyexec.dev/runner-uid; a pod with hostUsers: false draws from 10000-65533")
	resources := func(prefix, containers, annotationPrefix string, r *ResourceFlags, def ResourceFlags) {
		for _, q := range []struct {
			p          *string
			name, what string
			def        string
		}{
			{&r.CPURequest, "cpu-request", "CPU request", def.CPURequest},
			{&r.CPULimit, "cpu-limit", "CPU limit", def.CPULimit},
			{&r.MemoryRequest, "memory-request", "memory request", def.MemoryRequest},
			{&r.MemoryLimit, "memory-limit", "memory limit", def.MemoryLimit},
		} {
			f.StringVar(q.p, prefix+"-"+q.name, q.def, q.what+" of "+containers+" in injected pods (empty: none), unless a pod's pyexec.dev/"+annotationPrefix+q.name+" says otherwise")
		}
	}
	resources("sidecar", "pyexec and pyexec-init", "", &c.Sidecar, ResourceFlags{
		CPURequest: settings.DefaultSidecarCPURequest, MemoryRequest: settings.DefaultSidecarMemoryRequest, MemoryLimit: settings.DefaultSidecarMemoryLimit})
	resources("runner", "pyexec-runner", "runner-", &c.Runner, ResourceFlags{
		CPURequest: settings.DefaultRunnerCPURequest, MemoryRequest: settings.DefaultRunnerMemoryRequest, MemoryLimit: settings.DefaultRunnerMemoryLimit})
	f.StringVar(&c.ShmSize, "runner-shm-size", settings.DefaultShmSize,
		"size of the runner's /dev/shm in injected pods (an in-memory emptyDir that counts against the runner's memory), unless a pod's pyexec.dev/shm-size says otherwise")
}
