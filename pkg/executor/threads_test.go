package executor

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/pyexec/pyexec/pkg/api"
	"github.com/pyexec/pyexec/pkg/confine"
	"github.com/pyexec/pyexec/pkg/testutil"
)

// blasCode multiplies two matrices with numpy's BLAS, then says how many threads the process
// has (the pool's workers and itself) and what OPENBLAS_NUM_THREADS says.
const blasCode = `import os
import numpy as np
a = np.random.rand(400, 400)
a @ a
print(len(os.listdir("/proc/self/task")), os.environ["OPENBLAS_NUM_THREADS"])
`

// poolCode says what OPENBLAS_NUM_THREADS says and how many threads the loaded OpenBLAS uses.
const poolCode = `import ctypes, os
lib = next(l for l in (x.split()[-1] for x in open("/proc/self/maps")) if "blas" in os.path.basename(l))
print(os.environ["OPENBLAS_NUM_THREADS"], ctypes.CDLL(lib).openblas_get_num_threads())
`

// numpyFork is fork mode with numpy preloaded, confined, on a runner of cpus CPUs.
func numpyFork(t *testing.T, cpus float64, warm int) *Fork {
	t.Helper()
	py := testutil.RequireSystemPython(t)
	if out, err := exec.Command(py, "-c", "import numpy").CombinedOutput(); err != nil {
		t.Fatalf("numpy is a test dependency (make deps installs python3-numpy): %s", out)
	}
	fk, err := NewFork(ForkConfig{SpawnConfig: SpawnConfig{Python: py, WorkDir: t.TempDir(), Path: "/usr/bin:/bin", Log: logr.Discard(), CPUs: cpus,
		Isolation: Isolation{Kernel: confine.Probe(confine.NoCap)}}, Preload: []string{"numpy"}, Warm: warm})
	if err != nil {
		t.Fatal(err)
	}
	if err := fk.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fk.Close)
	return fk
}

// The BLAS threads actually running in the code's process, with numpy preloaded in the zygote
// (whose pool started with one thread): the execution's share of the runner's CPUs.
func TestBLASThreadsAreTheExecutionsShare(t *testing.T) {
	for _, tc := range []struct {
		name string
		cpus float64
		env  map[string]string
		want string
	}{
		{"half a CPU", 0.5, nil, "1 1\n"},
		{"2 CPUs, alone", 2, nil, "2 2\n"},
		{"3 CPUs, alone", 3, nil, "3 3\n"},
		{"2 CPUs, pinned by the request", 2, map[string]string{"OPENBLAS_NUM_THREADS": "1"}, "1 1\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, warm := range []int{0, 1} {
				fk := numpyFork(t, tc.cpus, warm)
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
		fk := numpyFork(t, 2, 0)
		first := make(chan api.ExecuteResult, 1)
		go func() {
			res, _ := fk.Execute(context.Background(), Request{ID: "first", Code: "import time\ntime.sleep(3)", Limits: defaultLimits}, nil)
			first <- res
		}()
		time.Sleep(time.Second)
		res, err := fk.Execute(context.Background(), Request{ID: "second", Code: blasCode, Limits: defaultLimits}, nil)
		if err != nil || res.Stdout != "1 1\n" {
			t.Errorf("beside another execution: %+v %v", res, err)
		}
		<-first
	})
	t.Run("a session's calls", func(t *testing.T) {
		fk := numpyFork(t, 2, 0)
		ss := newSession(t, fk, SessionRequest{ID: "blas"})
		if res := call(t, ss, poolCode); res.Stdout != "2 2\n" {
			t.Errorf("a call alone: %+v", res)
		}
		// The share is set per call: beside an execution, half.
		first := make(chan struct{})
		go func() {
			defer close(first)
			_, _ = fk.Execute(context.Background(), Request{ID: "beside", Code: "import time\ntime.sleep(3)", Limits: defaultLimits}, nil)
		}()
		time.Sleep(time.Second)
		if res := call(t, ss, poolCode); res.Stdout != "1 1\n" {
			t.Errorf("a call beside an execution: %+v", res)
		}
		<-first
		if res := call(t, ss, poolCode); res.Stdout != "2 2\n" {
			t.Errorf("a call alone again: %+v", res)
		}
	})
}
