// Package e2e walks pyexec's user journey on a real one-node Kubernetes cluster (package
// test/cluster): helm install of charts/pyexec, a labeled bot Deployment injected by the webhook,
// executions through the sidecar, kubectl logs of every container, checks inside the real pod,
// and the failure paths.
//
// TestMain builds the images and the cluster's binaries (cached), creates the cluster's network
// namespace, and runs the tests again inside it, where they reach the API server; then it tears
// the cluster down (unless PYEXEC_E2E_KEEP is set, to look at it after). It fails when the cluster cannot start. Without root it cannot start one at
// all: it says so loudly and runs nothing.
package e2e

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pyexec/pyexec/test/cluster"
)

// stageEnv is set in the copy of the test binary that runs inside the network namespace.
const stageEnv = "PYEXEC_E2E_STAGE"

// theCluster is the cluster the tests run against (set in the namespace's copy only).
var theCluster *cluster.Cluster

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		banner("NOT RUN: the end-to-end suite needs root to start a cluster (network namespace, mounts, cgroups); run it as root, as CI does")
		return 0
	}
	c := &cluster.Cluster{Dir: "/tmp/pyexec-e2e", NetNS: "pyexec-e2e", Log: os.Stderr}
	ctx := context.Background()
	if os.Getenv(stageEnv) == "" {
		existed := cluster.ExistingHostPaths()
		start := time.Now()
		if err := c.Prepare(ctx, "../.."); err != nil {
			banner("FAIL: the test cluster cannot start: " + err.Error())
			if !errors.Is(err, cluster.ErrInUse) { // else it is another run's cluster
				c.Destroy(true)
			}
			return 1
		}
		fmt.Fprintf(os.Stderr, "e2e: prepared in %s\n", time.Since(start).Round(100*time.Millisecond))
		// The copy in the namespace must time out before go test kills this process, which
		// tears the cluster down: give it what is left of -test.timeout, less a minute.
		env := []string{stageEnv + "=run", "PYEXEC_E2E_BIN=" + c.Bin}
		if f := flag.Lookup("test.timeout"); f != nil {
			if d, _ := time.ParseDuration(f.Value.String()); d > 0 {
				left := max(d-time.Since(start)-time.Minute, time.Minute)
				env = append(env, "PYEXEC_E2E_TIMEOUT="+left.String())
			}
		}
		code, err := c.ReexecInNetNS(env...)
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			code = 1
		}
		if code != 0 {
			for _, name := range []string{"kubelet", "containerd", "kube-apiserver"} {
				fmt.Fprintf(os.Stderr, "--- last lines of %s's log:\n%s\n", name, c.LogTail(name, 15))
			}
		}
		if os.Getenv("PYEXEC_E2E_KEEP") != "" {
			banner(fmt.Sprintf("PYEXEC_E2E_KEEP: the cluster stays up; go run ./test/cluster/clusterctl --dir %s --netns %s kubectl|down", c.Dir, c.NetNS))
			return code
		}
		t := time.Now()
		if err := c.Destroy(code != 0); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: teardown:", err)
			code = 1
		}
		fmt.Fprintf(os.Stderr, "e2e: teardown in %s\n", time.Since(t).Round(100*time.Millisecond))
		if code == 0 {
			if left := c.Leftovers(existed); len(left) > 0 {
				banner("FAIL: the teardown left:\n" + strings.Join(left, "\n"))
				code = 1
			}
		}
		return code
	}
	c.Bin = os.Getenv("PYEXEC_E2E_BIN")
	if t := os.Getenv("PYEXEC_E2E_TIMEOUT"); t != "" {
		flag.Set("test.timeout", t) // read by m.Run, which starts the alarm
	}
	if err := c.Boot(ctx); err != nil {
		banner("FAIL: the test cluster cannot start: " + err.Error())
		return 1
	}
	theCluster = c
	return m.Run()
}

func banner(msg string) {
	line := strings.Repeat("=", 78)
	fmt.Fprintf(os.Stderr, "%s\ne2e: %s\n%s\n", line, msg, line)
}
