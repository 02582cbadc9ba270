package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pyexec/pyexec/internal/cli"
	"github.com/pyexec/pyexec/internal/mutation"
	"github.com/pyexec/pyexec/pkg/api"
)

// ReportConfig is the config of `kubectl pyexec report`.
type ReportConfig struct {
	Pod    string
	Output string // -o: "" (readable) or json (the file as it is)
}

// Validate checks the output format.
func (c *ReportConfig) Validate() error {
	if c.Output != "" && c.Output != "json" {
		return cli.Usagef("-o %q: want json (default: readable text)", c.Output)
	}
	return nil
}

func newReportCommand(io IO, connect func() (*Cluster, error)) *cobra.Command {
	cfg := &ReportConfig{}
	cmd := &cobra.Command{
		Use:   "report POD [-o json]",
		Short: "The pod's preflight report, readable (-o json: as written)",
		Long: "report reads the preflight report that pyexec-init wrote (" + mutation.ReportPath + ") from the\n" +
			"pod's pyexec container (pods/exec, as kubectl exec) and prints it readable: the summary, Python,\n" +
			"the policy, requirements, preloads, isolation layers and problems. -o json prints the file.\n" +
			"The sidecar must be running; pyexec-init's one summary line is also in\n" +
			"kubectl logs POD -c " + mutation.InitContainerName + ".",
		Args: exactlyOnePod,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.Pod = args[0]
			if err := cfg.Validate(); err != nil {
				return err
			}
			c, err := connect()
			if err != nil {
				return err
			}
			if cfg.Pod, err = resolvePod(cmd.Context(), c, cfg.Pod); err != nil {
				return err
			}
			raw, err := ReadReport(cmd.Context(), c, cfg.Pod)
			if err != nil {
				return err
			}
			if cfg.Output == "json" {
				_, err := io.Stdout.Write(raw)
				return err
			}
			var r api.Report
			if err := json.Unmarshal(raw, &r); err != nil {
				return fmt.Errorf("%s in pod %s/%s is not a preflight report: %w", mutation.ReportPath, c.Namespace, cfg.Pod, err)
			}
			return WriteReport(io.Stdout, &r)
		},
	}
	cmd.Flags().StringVarP(&cfg.Output, "output", "o", "", "output format: json (default: readable text)")
	return cmd
}

// ReadReport reads the pod's preflight report with `cat` in its pyexec container.
func ReadReport(ctx context.Context, c *Cluster, name string) ([]byte, error) {
	pod, err := c.Client.CoreV1().Pods(c.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	if sc, _ := sidecarContainer(pod, mutation.SidecarName); sc == nil {
		return nil, fmt.Errorf("pod %s/%s has no %s container: it was not injected (kubectl pyexec status)", c.Namespace, name, mutation.SidecarName)
	}
	if st := containerStatus(pod, mutation.SidecarName); st == nil || st.State.Running == nil {
		return nil, fmt.Errorf("cannot read %s: the %s container of pod %s/%s is not running; pyexec-init's summary: kubectl logs -n %s %s -c %s",
			mutation.ReportPath, mutation.SidecarName, c.Namespace, name, c.Namespace, name, mutation.InitContainerName)
	}
	var stdout, stderr bytes.Buffer
	err = c.Exec.Exec(ctx, c.Namespace, name, mutation.SidecarName, []string{"cat", mutation.ReportPath}, nil, &stdout, &stderr)
	if err != nil {
		detail := firstLine(stderr.String())
		var exit *ExitCodeError
		if errors.As(err, &exit) && detail != "" {
			err = errors.New(detail)
		}
		return nil, fmt.Errorf("cannot read %s in the %s container of pod %s/%s (pods/exec: cat): %v", mutation.ReportPath, mutation.SidecarName, c.Namespace, name, err)
	}
	return stdout.Bytes(), nil
}

// WriteReport prints a report for a person.
func WriteReport(w io.Writer, r *api.Report) error {
	b := &bytes.Buffer{}
	result := "ok"
	if !r.OK {
		result = "FAILED"
	}
	fmt.Fprintf(b, "Summary:  %s\n", r.Summary())
	fmt.Fprintf(b, "Result:   %s (pyexec %s, %s, %.0f ms)\n", result, orNone(r.PyexecVersion), orNone(r.CreatedAt), r.DurationMS)
	runtime := r.Container.Runtime
	if r.Container.Orchestrator != "" {
		runtime += "/" + r.Container.Orchestrator
	}
	fmt.Fprintf(b, "Runtime:  %s\n", orNone(runtime))
	fmt.Fprintf(b, "Policy:   %s\n", orNone(r.Policy))
	if id := r.Identity; id != nil {
		runner, how := strconv.Itoa(id.RunnerUID), "separate"
		switch {
		case id.RunnerUID < 0:
			runner, how = "unknown", "not known"
		case !id.Separate:
			how = "shared: the code owns what the server owns"
		}
		fmt.Fprintf(b, "Identity: server uid %d, runner uid %s, group %d (%s)\n", id.ServerUID, runner, id.GID, how)
	}

	fmt.Fprintf(b, "\nPython\n")
	if p := r.Python; p == nil {
		fmt.Fprintf(b, "  none found\n")
	} else {
		t := tabwriter.NewWriter(b, 0, 8, 2, ' ', 0)
		fmt.Fprintf(t, "  executable\t%s\n", p.Executable)
		if p.RealPath != "" && p.RealPath != p.Executable {
			fmt.Fprintf(t, "  real path\t%s\n", p.RealPath)
		}
		fmt.Fprintf(t, "  version\t%s %s\n", p.Implementation, p.VersionFull)
		fmt.Fprintf(t, "  prefix\t%s\n", p.Prefix)
		pip := "not available"
		if p.Pip.Available {
			pip = p.Pip.Version
		}
		fmt.Fprintf(t, "  pip\t%s\n", pip)
		fmt.Fprintf(t, "  ctypes\t%s\n", yesNo(p.Ctypes))
		fmt.Fprintf(t, "  externally managed\t%s\n", yesNo(p.ExternallyManaged.Applies))
		for _, sp := range p.SitePackages {
			state := "not writable"
			if !sp.Exists {
				state = "missing"
			} else if sp.Writable {
				state = "writable"
			}
			fmt.Fprintf(t, "  site-packages\t%s (%s)\n", sp.Path, state)
		}
		fmt.Fprintf(t, "  distributions\t%d installed\n", len(p.Distributions))
		t.Flush()
	}

	met := 0
	for _, q := range r.Requirements {
		if q.OK {
			met++
		}
	}
	fmt.Fprintf(b, "\nRequirements (%d/%d met)\n", met, len(r.Requirements))
	if len(r.Requirements) == 0 {
		fmt.Fprintf(b, "  none\n")
	} else {
		t := tabwriter.NewWriter(b, 0, 8, 2, ' ', 0)
		for _, q := range r.Requirements {
			fmt.Fprintf(t, "  %s\t%s%s\t%s\t%s\n", okFail(q.OK), q.Name, q.Specifier, orNone(q.Installed), q.Problem)
		}
		t.Flush()
	}

	fmt.Fprintf(b, "\nPreload\n")
	if len(r.Preload) == 0 {
		fmt.Fprintf(b, "  none\n")
	} else {
		t := tabwriter.NewWriter(b, 0, 8, 2, ' ', 0)
		for _, m := range r.Preload {
			fmt.Fprintf(t, "  %s\t%s\t%.0f ms\t%s\n", okFail(m.OK), m.Module, m.ImportMS, m.Error)
		}
		t.Flush()
	}

	if iso := r.Isolation; iso != nil {
		fmt.Fprintf(b, "\nIsolation (Landlock ABI %d)\n", iso.LandlockABI)
		t := tabwriter.NewWriter(b, 0, 8, 2, ' ', 0)
		for _, l := range iso.Layers {
			state := "active"
			if !l.Active {
				state = "MISSING"
			}
			fmt.Fprintf(t, "  %s\t%s\t%s\n", state, l.Name, l.Missing)
		}
		t.Flush()
	}

	fmt.Fprintf(b, "\nProblems\n")
	if len(r.Problems) == 0 {
		fmt.Fprintf(b, "  none\n")
	}
	for _, p := range r.Problems {
		fmt.Fprintf(b, "  - %s\n", p)
	}
	// Trailing spaces from empty last cells.
	lines := strings.Split(b.String(), "\n")
	for i := range lines {
		lines[i] = strings.TrimRight(lines[i], " ")
	}
	_, err := io.WriteString(w, strings.Join(lines, "\n"))
	return err
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func okFail(b bool) string {
	if b {
		return "ok"
	}
	return "FAIL"
}
