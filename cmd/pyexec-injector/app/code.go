package app

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pyexec/pyexec/internal/cli"
	"github.com/pyexec/pyexec/internal/mutation"
	"github.com/pyexec/pyexec/internal/pyreq"
	"github.com/pyexec/pyexec/internal/settings"
)

// CodeConfig holds the flags of serve and inject that give the defaults of the annotations of
// the code's settings — time limits, memory, what is preloaded, required and installed, what
// may be installed at run time — to pods that leave them out. Each takes its annotation's
// syntax and bounds; a value equal to the sidecar's own default writes nothing.
type CodeConfig struct {
	Timeout       time.Duration // --timeout: pyexec.dev/timeout
	MaxTimeout    time.Duration // --max-timeout: pyexec.dev/max-timeout
	MemoryLimitMB int           // --memory-limit-mb: pyexec.dev/memory-limit-mb
	Preload       []string      // --preload: pyexec.dev/preload, comma-separated modules
	Require       []string      // --require: pyexec.dev/require, repeatable
	Install       []string      // --install: pyexec.dev/install, repeatable
	AllowPackages []string      // --allow-packages: pyexec.dev/allow-packages, comma-separated patterns
}

func addCodeFlags(f *pflag.FlagSet, c *CodeConfig) {
	unless := func(flag string) string {
		return ", unless a pod's " + settings.Lookup(flag).Annotation + " says otherwise"
	}
	f.DurationVar(&c.Timeout, "timeout", injectorDefault[time.Duration]("timeout"),
		"time limit of an execution in injected sidecars when a request gives none"+unless("timeout"))
	f.DurationVar(&c.MaxTimeout, "max-timeout", injectorDefault[time.Duration]("max-timeout"),
		"longest time limit a request to an injected sidecar may ask for"+unless("max-timeout"))
	f.IntVar(&c.MemoryLimitMB, "memory-limit-mb", injectorDefault[int]("memory-limit-mb"),
		"memory limit of an execution in injected sidecars, MiB (the resident memory of its whole process tree)"+unless("memory-limit-mb"))
	f.StringSliceVar(&c.Preload, "preload", nil,
		"modules injected sidecars import once and keep imported, comma-separated (numpy,pandas)"+unless("preload"))
	f.StringArrayVar(&c.Require, "require", nil,
		`distribution the Python of injected pods must have, with an optional PEP 440 specifier ("pandas>=2"; repeatable)`+unless("require"))
	f.StringArrayVar(&c.Install, "install", nil,
		`package pyexec-init installs into the packages volume when the Python lacks it ("requests>=2"; repeatable)`+unless("install"))
	f.StringSliceVar(&c.AllowPackages, "allow-packages", nil,
		"packages code may install at run time in injected sidecars, comma-separated shell patterns (numpy,scikit-*)"+unless("allow-packages"))
}

// annotations are the annotations' defaults that c gives, those equal to the sidecar's own
// left out.
func (c *CodeConfig) annotations() map[string]string {
	out := map[string]string{}
	set := func(flag, value, sidecarDefault string) {
		if value != sidecarDefault {
			out[settings.Lookup(flag).Annotation] = value
		}
	}
	set("timeout", c.Timeout.String(), settings.DefaultTimeout.String())
	set("max-timeout", c.MaxTimeout.String(), settings.DefaultMaxTimeout.String())
	set("memory-limit-mb", strconv.Itoa(c.MemoryLimitMB), strconv.Itoa(settings.DefaultMemoryLimitMB))
	set("preload", strings.Join(c.Preload, ","), "")
	set("require", strings.Join(c.Require, "\n"), "")
	set("install", strings.Join(c.Install, "\n"), "")
	set("allow-packages", strings.Join(c.AllowPackages, ","), "")
	return out
}

// Validate checks the defaults as the pods' annotations are checked — a pod that leaves them
// all out must be injectable — and the requirements as pyexec init parses them (PEP 508, each
// distribution required once): a default every pod gets must not fail every pyexec-init.
func (c *CodeConfig) Validate() error {
	for _, list := range []struct {
		flag  string
		items []string
	}{{"require", c.Require}, {"install", c.Install}} {
		seen := map[string]string{}
		for _, item := range list.items {
			for _, line := range strings.Split(item, "\n") {
				if line = strings.TrimSpace(line); line == "" || strings.HasPrefix(line, "#") {
					continue
				}
				r, err := pyreq.ParseRequirement(line)
				if err != nil {
					return cli.Usagef("--%s: %v", list.flag, err)
				}
				if first, twice := seen[r.Key()]; twice && list.flag == "require" {
					return cli.Usagef("--%s: %s is given twice (%q and %q)", list.flag, r.Key(), first, line)
				}
				seen[r.Key()] = line
			}
		}
	}
	ann := c.annotations()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{mutation.LabelInject: "true"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}}
	_, err := mutation.ParseConfig(pod, mutation.Defaults{Image: "pyexec", Annotations: ann})
	var one *mutation.AnnotationError
	var many mutation.AnnotationErrors
	switch {
	case errors.As(err, &many):
		one = many[0]
	case errors.As(err, &one):
	default:
		return err
	}
	for _, s := range settings.Shared() {
		if s.Annotation == one.Annotation && s.InjectorFlag != "" {
			return cli.Usagef("--%s %q: want %s", s.InjectorFlag, one.Value, strings.TrimSuffix(one.Accepted, mutation.DefaultedNote))
		}
	}
	return err
}

// apply sets the defaults of d that c holds; c must be valid.
func (c *CodeConfig) apply(d *mutation.Defaults) { d.Annotations = c.annotations() }
