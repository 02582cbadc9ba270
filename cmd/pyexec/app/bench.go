package app

import (
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/pyexec/pyexec/internal/cli"
	"github.com/pyexec/pyexec/pkg/api"
	"github.com/pyexec/pyexec/pkg/client"
)

// BenchConfig is the config of `pyexec bench`.
type BenchConfig struct {
	Socket      string
	Requests    int
	Concurrency int
	Interval    time.Duration
	Warmup      int
	Code        string
	File        string
	Session     bool // also measure calls in warm sessions, and creating a session
}

// benchSessionCreates is how many sessions `pyexec bench --session` creates and deletes, one
// after another, to time creating one.
const benchSessionCreates = 5

// Validate checks the config.
func (c *BenchConfig) Validate() error {
	if c.Requests <= 0 || c.Concurrency <= 0 || c.Warmup < 0 || c.Interval < 0 {
		return cli.Usagef("-n and -c must be positive, --warmup and --interval not negative")
	}
	if c.Code != "" && c.File != "" {
		return cli.Usagef("give --code or --file, not both")
	}
	if c.Code == "" && c.File == "" {
		c.Code = "print(1)"
	}
	return nil
}

func newBenchCommand(io IO) *cobra.Command {
	cfg := &BenchConfig{}
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure latency percentiles and throughput of a sidecar",
		Long: "bench sends the same code N times from C concurrent clients to a running sidecar and prints\n" +
			"p50/p95/p99 latency (request to result), executions per second and the p50 of each stage of\n" +
			"the results' timings_ms. An execution that does not exit 0 counts as failed.\n\n" +
			"With --session it measures the code both ways in one run and labels each line: first as\n" +
			"stateless executions (\"stateless ...\"), then as calls in warm sessions (\"session ...\"): it\n" +
			"opens one session per client, sends each --warmup calls that are not measured, sends the N\n" +
			"calls, and deletes the sessions. It also times creating a session (p50 and max of " + strconv.Itoa(benchSessionCreates) + "\n" +
			"sessions created and deleted one after another) and prints session p50 / stateless p50.\n" +
			"-c must not exceed the server's --max-sessions.",
		Args: cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.Validate(); err != nil {
				return err
			}
			code := cfg.Code
			if cfg.File != "" {
				data, err := os.ReadFile(cfg.File)
				if err != nil {
					return cli.Usagef("%w", err)
				}
				code = string(data)
			}
			c := client.New(cfg.Socket)
			req := api.ExecuteRequest{Code: code}
			opts := client.BenchOptions{Requests: cfg.Requests, Concurrency: cfg.Concurrency, Interval: cfg.Interval, Warmup: cfg.Warmup}
			res, err := c.Bench(cmd.Context(), req, opts)
			if err != nil {
				return err
			}
			if !cfg.Session {
				res.Report(io.Stdout)
				return nil
			}
			res.ReportAs(io.Stdout, "stateless ")
			sres, err := c.BenchSession(cmd.Context(), req, opts, benchSessionCreates)
			if err != nil {
				return err
			}
			sres.Report(io.Stdout, res)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Socket, "socket", DefaultSocket, "the sidecar's socket")
	f.IntVarP(&cfg.Requests, "requests", "n", 100, "executions to measure")
	f.IntVarP(&cfg.Concurrency, "concurrency", "c", 1, "clients sending at once")
	f.DurationVar(&cfg.Interval, "interval", 0, "pause of each client between requests (low load)")
	f.IntVar(&cfg.Warmup, "warmup", 3, "executions sent first and not measured")
	f.StringVar(&cfg.Code, "code", "", "the code to run (default print(1))")
	f.StringVar(&cfg.File, "file", "", "read the code from this file")
	f.BoolVar(&cfg.Session, "session", false, "also measure the code in warm sessions and the time to create one, and print both")
	return cmd
}
