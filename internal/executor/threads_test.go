package executor

import (
	"context"
	"fmt"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/pyexec/pyexec/internal/confine"
	"github.com/pyexec/pyexec/internal/testutil"
	"github.com/pyexec/pyexec/pkg/api"
)

// blasCode multiplies two matrices with numpy's BLAS, then says how many threads the process
// has (the pool's workers and itself), what OPENBLAS_NUM_THREADS says, and how many threads
// the loaded OpenBLAS uses.
const blasCode = `import ctypes, os
import numpy as np
a = np.random.rand(400, 400)
a @ a
lib = next(l for l in (x.split()[-1] for x in open("/proc/self/maps")) if "blas" in os.path.basename(l))
print(len(os.listdir("/proc/self/task")), os.environ["OPENBLAS_NUM_THREADS"], ctypes.CDLL(lib).openblas_get_num_threads())
`

// poolCode says what OPENBLAS_NUM_THREADS says and how many threads the loaded OpenBLAS uses.
const poolCode = `import ctypes, os
lib = next(l for l in (x.split()[-1] for x in open("/proc/self/maps")) if "blas" in os.path.basename(l))
print(os.environ["OPENBLAS_NUM_THREADS"], ctypes.CDLL(lib).openblas_get_num_threads())
`

// numpyFork is fork mode, confined, on a runner of cpus CPUs, with numpy preloaded or not.
func numpyFork(t *testing.T, cpus float64, warm int, preload bool) *Fork {
	t.Helper()
	py := testutil.RequireSystemPython(t)
	if out, err := exec.Command(py, "-c", "import numpy").CombinedOutput(); err != nil {
		t.Fatalf("numpy is a test dependency (make deps installs python3-numpy): %s", out)
	}
	cfg := ForkConfig{SpawnConfig: SpawnConfig{Python: py, WorkDir: t.TempDir(), Path: "/usr/bin:/bin", Log: logr.Discard(), CPUs: cpus,
		Isolation: Isolation{Kernel: confine.Probe(confine.NoCap)}}, Warm: warm}
	if preload {
		cfg.Preload = []string{"numpy"}
	}
	fk, err := NewFork(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := fk.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fk.Close)
	return fk
}

// The BLAS threads actually running in the code's process. numpy imported by the code gets the
// execution's share of the runner's CPUs (OpenBLAS caps it at the machine's); numpy preloaded
// in the zygote keeps 1 thread (starting its pool would cost every execution 2-3 ms) unless
// the request's env sets OPENBLAS_NUM_THREADS; the environment says the share either way.
func TestBLASThreadsAreTheExecutionsShare(t *testing.T) {
	pool := func(cpus int) int { return min(cpus, runtime.NumCPU()) }
	for _, tc := range []struct {
		name    string
		cpus    float64
		preload bool
		env     map[string]string
		want    string
	}{
		{"half a CPU", 0.5, false, nil, "1 1 1\n"},
		{"2 CPUs, alone", 2, false, nil, fmt.Sprintf("%d 2 %d\n", pool(2), pool(2))},
		{"3 CPUs, alone", 3, false, nil, fmt.Sprintf("%d 3 %d\n", pool(3), pool(3))},
		{"2 CPUs, alone, preloaded", 2, true, nil, "1 2 1\n"},
		{"2 CPUs, preloaded, raised by the request", 2, true, map[string]string{"OPENBLAS_NUM_THREADS": "2"}, "2 2 2\n"},
		{"2 CPUs, pinned by the request", 2, false, map[string]string{"OPENBLAS_NUM_THREADS": "1"}, "1 1 1\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, warm := range []int{0, 1} {
				fk := numpyFork(t, tc.cpus, warm, tc.preload)
				if warm > 0 {
					awaitSpare(t, fk)
				}
				res, err := fk.Execute(context.Background(), Request{ID: "blas", Code: blasCode, Env: tc.env, Limits: defaultLimits}, nil)
				if err != nil || res.Stdout != tc.want {
					t.Errorf("warm %d: %+v %v, want %q", warm, res, err, tc.want)
				}
			}
		})
	}
	t.Run("2 CPUs, two at once", func(t *testing.T) {
		fk := numpyFork(t, 2, 0, false)
		first := make(chan api.ExecuteResult, 1)
		go func() {
			res, _ := fk.Execute(context.Background(), Request{ID: "first", Code: "import time\ntime.sleep(3)", Limits: defaultLimits}, nil)
			first <- res
		}()
		time.Sleep(time.Second)
		res, err := fk.Execute(context.Background(), Request{ID: "second", Code: blasCode, Limits: defaultLimits}, nil)
		if err != nil || res.Stdout != "1 1 1\n" {
			t.Errorf("beside another execution: %+v %v", res, err)
		}
		<-first
	})
	t.Run("a session's calls", func(t *testing.T) {
		fk := numpyFork(t, 2, 0, false)
		ss := newSession(t, fk, SessionRequest{ID: "blas"})
		if want := fmt.Sprintf("2 %d\n", pool(2)); call(t, ss, "import numpy\n"+poolCode).Stdout != want {
			t.Errorf("a call alone: want %q", want)
		}
		// The share is set per call, in the environment: beside an execution, half; the pool
		// that numpy started keeps its size.
		first := make(chan struct{})
		go func() {
			defer close(first)
			_, _ = fk.Execute(context.Background(), Request{ID: "beside", Code: "import time\ntime.sleep(3)", Limits: defaultLimits}, nil)
		}()
		time.Sleep(time.Second)
		if want := fmt.Sprintf("1 %d\n", pool(2)); call(t, ss, poolCode).Stdout != want {
			t.Errorf("a call beside an execution: want %q", want)
		}
		<-first
		if want := fmt.Sprintf("2 %d\n", pool(2)); call(t, ss, poolCode).Stdout != want {
			t.Errorf("a call alone again: want %q", want)
		}
	})
}
