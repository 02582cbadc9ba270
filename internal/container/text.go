package container

import (
	"strings"

	"github.com/pyexec/pyexec/pkg/api"
)

// Text renders one readable line for people, e.g.
// "container: yes, runtime containerd, orchestrator kubernetes (evidence: env:KUBERNETES_SERVICE_HOST, mountinfo:/var/lib/kubelet/pods/...)"
// followed by "; warning: ..." for each warning.
func Text(c api.Container) string {
	var b strings.Builder
	b.WriteString("container: ")
	if c.InContainer {
		b.WriteString("yes")
	} else {
		b.WriteString("no")
	}
	runtime := c.Runtime
	if runtime == "" {
		runtime = api.RuntimeNone
		if c.InContainer {
			runtime = api.RuntimeUnknown
		}
	}
	b.WriteString(", runtime " + runtime)
	if c.Orchestrator != "" {
		b.WriteString(", orchestrator " + c.Orchestrator)
	}
	evidence := "none"
	if len(c.Evidence) > 0 {
		evidence = strings.Join(c.Evidence, ", ")
	}
	b.WriteString(" (evidence: " + evidence + ")")
	for _, w := range c.Warnings {
		b.WriteString("; warning: " + w)
	}
	return b.String()
}
