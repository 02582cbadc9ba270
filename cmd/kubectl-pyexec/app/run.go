package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pyexec/pyexec/internal/cli"
	"github.com/pyexec/pyexec/internal/mutation"
)

// ExitRunFailed is the exit code of run when the code did not run at all (as `pyexec run`'s
// 125): the pod not found or not injected, pods/exec refused.
const ExitRunFailed = 125

// RunConfig is the config of `kubectl pyexec run`.
type RunConfig struct {
	Pod     string
	Code    string        // -c
	File    string        // -f: a local file, or - for standard input
	Timeout time.Duration // --timeout: passed to pyexec run; 0 uses the sidecar's default
	Stream  bool          // --stream: passed to pyexec run
}

// Validate checks that exactly one source of code is given.
func (c *RunConfig) Validate() error {
	if (c.Code == "") == (c.File == "") {
		return cli.Usagef("give the code with -c CODE or -f FILE (- for standard input), exactly one")
	}
	if c.Timeout < 0 {
		return cli.Usagef("--timeout %v: must not be negative", c.Timeout)
	}
	return nil
}

// Command is what runs in the pyexec container; code sent on standard input (-f) is read
// with `pyexec run -`, which takes code of any size.
func (c *RunConfig) Command() []string {
	cmd := []string{"pyexec", "run"}
	if c.Timeout > 0 {
		cmd = append(cmd, "--timeout", c.Timeout.String())
	}
	if c.Stream {
		cmd = append(cmd, "--stream")
	}
	if c.File != "" {
		return append(cmd, "-")
	}
	// One argument, so that code starting with "-" is never read as a flag.
	return append(cmd, "--code="+c.Code)
}

func newRunCommand(sio IO, connect func() (*Cluster, error)) *cobra.Command {
	cfg := &RunConfig{}
	cmd := &cobra.Command{
		Use:   "run POD (-c CODE | -f FILE)",
		Short: "Run Python in the pod's sidecar and exit with its status",
		Long: "run runs `pyexec run` in the pod's pyexec container (pods/exec, as kubectl exec): the code's\n" +
			"stdout and stderr stream to yours and its exit status is run's, as with `pyexec run`: 124\n" +
			"when its time limit killed it, 128+N when signal N did, 125 when it could not run at all\n" +
			"(the pod not found or not injected, exec refused, the sidecar unreachable).",
		Args: exactlyOnePod,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.Pod = args[0]
			if err := cfg.Validate(); err != nil {
				return err
			}
			var stdin io.Reader
			if cfg.File != "" {
				var data []byte
				var err error
				if cfg.File == "-" {
					data, err = io.ReadAll(sio.Stdin)
				} else {
					data, err = os.ReadFile(cfg.File)
				}
				if err != nil {
					return cli.Usagef("-f: %w", err)
				}
				stdin = bytes.NewReader(data)
			}
			c, err := connect()
			if err != nil {
				return &exitError{code: ExitRunFailed, msg: err.Error()}
			}
			if cfg.Pod, err = resolvePod(cmd.Context(), c, cfg.Pod); err != nil {
				return &exitError{code: ExitRunFailed, msg: err.Error()}
			}
			return Run(cmd.Context(), c, cfg, stdin, sio.Stdout, sio.Stderr)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&cfg.Code, "code", "c", "", "the code to run")
	f.StringVarP(&cfg.File, "file", "f", "", "a file of code to run (- reads standard input)")
	f.DurationVar(&cfg.Timeout, "timeout", 0, "time limit of the execution (default: the sidecar's)")
	f.BoolVar(&cfg.Stream, "stream", false, "print output as it arrives")
	return cmd
}

// Run runs the code in the pod's sidecar. A non-zero exit status is an *exitError with it.
func Run(ctx context.Context, c *Cluster, cfg *RunConfig, stdin io.Reader, stdout, stderr io.Writer) error {
	pod, err := c.Client.CoreV1().Pods(c.Namespace).Get(ctx, cfg.Pod, metav1.GetOptions{})
	if err != nil {
		return &exitError{code: ExitRunFailed, msg: err.Error()}
	}
	if sc, _ := sidecarContainer(pod, mutation.SidecarName); sc == nil {
		return &exitError{code: ExitRunFailed, msg: fmt.Sprintf("pod %s/%s has no %s container: it was not injected (kubectl pyexec status)", c.Namespace, cfg.Pod, mutation.SidecarName)}
	}
	if st := containerStatus(pod, mutation.SidecarName); st == nil || st.State.Running == nil {
		return &exitError{code: ExitRunFailed, msg: fmt.Sprintf("the %s container of pod %s/%s is not running (kubectl pyexec status)", mutation.SidecarName, c.Namespace, cfg.Pod)}
	}
	err = c.Exec.Exec(ctx, c.Namespace, cfg.Pod, mutation.SidecarName, cfg.Command(), stdin, stdout, stderr)
	var exit *ExitCodeError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &exit):
		return &exitError{code: exit.Code} // pyexec run has said why on stderr
	}
	return &exitError{code: ExitRunFailed, msg: fmt.Sprintf("exec in the %s container of pod %s/%s: %v", mutation.SidecarName, c.Namespace, cfg.Pod, err)}
}
