package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pyexec/pyexec/test/cluster"
)

// soakCmd boots the cluster and tears it down n times in a row, as `clusterctl up` and `down`
// do, and reports the boots, the failures and the boot times. The logs of a failed boot are
// kept under --failed. A boot waits while another test cluster runs (--wait). Inside the
// network namespace (the boot stage), it boots once, as up.
func soakCmd(ctx context.Context, c *cluster.Cluster, args []string) error {
	fs := flag.NewFlagSet("soak", flag.ExitOnError)
	n := fs.Int("n", 20, "boots")
	install := fs.Bool("install", false, "install the chart and the sample bot in every boot, as up does")
	failed := fs.String("failed", "/tmp/pyexec-soak-failed", "where the logs of a failed boot are copied (boot-N/)")
	wait := fs.Duration("wait", 30*time.Minute, "how long a boot waits for another test cluster (an e2e run) to go; 0: not at all")
	fs.Parse(args)
	if os.Getenv(stageEnv) == "boot" {
		return up(ctx, c, *install)
	}
	repo, err := os.Getwd()
	if err != nil {
		return err
	}
	r := func(d time.Duration) time.Duration { return d.Round(100 * time.Millisecond) }
	var times []time.Duration
	var waiting time.Time // since when this boot waits for another cluster
	failures := 0
	for i := 1; i <= *n && ctx.Err() == nil; i++ {
		existed := cluster.ExistingHostPaths()
		if err := c.Prepare(ctx, repo); err != nil {
			others, _ := filepath.Glob("/run/netns/pyexec-*")
			if errors.Is(err, cluster.ErrInUse) && len(others) > 0 && *wait > 0 && (waiting.IsZero() || time.Since(waiting) < *wait) {
				// Another test cluster (an e2e run): nothing of ours started. Wait for it to
				// go, and boot then; this boot is not counted before.
				if waiting.IsZero() {
					waiting = time.Now()
					fmt.Fprintf(os.Stderr, "soak: boot %d waits: %v\n", i, err)
				}
				i--
				select {
				case <-ctx.Done():
				case <-time.After(5 * time.Second):
				}
				continue
			}
			if errors.Is(err, cluster.ErrInUse) {
				return err // another cluster: nothing of ours to count or tear down
			}
			c.Destroy(false)
			return fmt.Errorf("boot %d: prepare: %w", i, err)
		}
		waiting = time.Time{}
		start := time.Now()
		code, err := c.ReexecInNetNS(stageEnv+"=boot", "PYEXEC_CLUSTER_BIN="+c.Bin)
		boot := time.Since(start)
		if ctx.Err() != nil { // interrupted: not a boot to count
			c.Destroy(false)
			break
		}
		if err == nil && code != 0 {
			err = fmt.Errorf("boot failed (exit %d)", code)
		}
		if err != nil {
			dst := filepath.Join(*failed, fmt.Sprintf("boot-%d", i))
			os.RemoveAll(dst)
			if os.MkdirAll(dst, 0o755) == nil {
				if out, cerr := exec.Command("cp", "-a", filepath.Join(c.Dir, "logs"), dst).CombinedOutput(); cerr != nil {
					fmt.Fprintf(os.Stderr, "soak: keep the logs: %v: %s\n", cerr, out)
				}
			}
			err = fmt.Errorf("%w; logs in %s", err, dst)
		}
		t := time.Now()
		derr := c.Destroy(false)
		down := time.Since(t)
		if err == nil && derr != nil {
			err = fmt.Errorf("teardown: %w", derr)
		}
		if err == nil {
			if left := c.Leftovers(existed); len(left) > 0 {
				err = fmt.Errorf("the teardown left: %s", strings.Join(left, ", "))
			}
		}
		if err != nil {
			failures++
			fmt.Fprintf(os.Stderr, "soak: boot %d/%d FAILED after %s (teardown %s): %v\n", i, *n, r(boot), r(down), err)
			continue
		}
		times = append(times, boot)
		fmt.Fprintf(os.Stderr, "soak: boot %d/%d ok in %s (teardown %s)\n", i, *n, r(boot), r(down))
	}
	boots := len(times) + failures
	fmt.Printf("soak: %d boots, %d failures", boots, failures)
	if len(times) > 0 {
		slices.Sort(times)
		median := (times[(len(times)-1)/2] + times[len(times)/2]) / 2
		fmt.Printf("; boot time (components started to node Ready) min %s, median %s, max %s",
			r(times[0]), r(median), r(times[len(times)-1]))
	}
	fmt.Println()
	if failures > 0 || boots < *n {
		return fmt.Errorf("%d of %d boots failed, %d not run", failures, *n, *n-boots)
	}
	return nil
}
