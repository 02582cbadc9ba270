package app

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/pyexec/pyexec/pkg/api"
)

// cpuCgroupV1 is where the v1 cpu controller is mounted on this machine (and on CI's).
const cpuCgroupV1 = "/sys/fs/cgroup/cpu"

// A sidecar started inside a CPU quota, as a runner container's limits.cpu makes one: it admits
// as many executions at once as the quota gives whole CPUs, and a lone execution's numpy runs on
// its share of them.
func TestServeUnderACPUQuota(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("SKIPPED: a cgroup of its own needs root; the CPU limit was not read from a real cgroup")
	}
	if _, err := os.Stat(filepath.Join(cpuCgroupV1, "cpu.cfs_quota_us")); err != nil {
		t.Fatalf("this test wants the cgroup v1 cpu controller at %s: %v", cpuCgroupV1, err)
	}
	for _, tc := range []struct {
		quota      int // µs per 100 ms period
		concurrent int
		blas       string
	}{
		{50_000, 1, "1 1\n"},
		{200_000, 2, "2 2\n"},
	} {
		t.Run(fmt.Sprintf("%.1f CPUs", float64(tc.quota)/100_000), func(t *testing.T) {
			cg := filepath.Join(cpuCgroupV1, fmt.Sprintf("pyexec-test-%d-%d", os.Getpid(), tc.quota))
			if err := os.Mkdir(cg, 0o755); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Remove(cg) }) // after the sidecar's own cleanup: no task left
			if err := os.WriteFile(filepath.Join(cg, "cpu.cfs_quota_us"), []byte(strconv.Itoa(tc.quota)), 0o644); err != nil {
				t.Fatal(err)
			}
			join := []string{"sh", "-c", `echo $$ > "$0/cgroup.procs" && exec "$@"`, cg}
			s := startSidecar(t, join)
			info, err := s.client.Info(context.Background())
			if err != nil || info.Limits.MaxConcurrent != tc.concurrent {
				t.Fatalf("max_concurrent under %d µs per 100 ms: %+v %v", tc.quota, info, err)
			}
			res := s.execute(t, api.ExecuteRequest{Code: "import os\nimport numpy as np\na = np.random.rand(400, 400)\na @ a\nprint(len(os.listdir('/proc/self/task')), os.environ['OPENBLAS_NUM_THREADS'])"})
			if res.Stdout != tc.blas {
				t.Errorf("BLAS threads of a lone execution: %+v, want %q", res, tc.blas)
			}
		})
	}
}
