package app

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pyexec/pyexec/pkg/api"
)

// fillShm writes 1 MiB files into /dev/shm until the tmpfs is full, and says how many.
const fillShm = `import os
n = 0
try:
    while True:
        with open("/dev/shm/fill-%d" % n, "wb") as f:
            f.write(b"x" * (1 << 20))
        n += 1
except OSError as e:
    print(n, e.errno)
`

// genuineShm is what multiprocessing needs of /dev/shm: a lock and a shared memory segment.
const genuineShm = `import multiprocessing as mp
from multiprocessing import shared_memory
lock = mp.Lock()
s = shared_memory.SharedMemory(create=True, size=1 << 20)
print("ok", len(s.name) - len("psm_"))
s.close()
s.unlink()
`

// /dev/shm, the runner's own as in a pod: an execution that fills it and ends leaves nothing,
// and a genuine multiprocessing lock and shared memory work in the next; a session's segment
// outlives its calls and an execution beside it, and goes with the session. Judged from the
// host, in the runner's mount namespace.
func TestSharedMemoryLeftovers(t *testing.T) {
	h := newHostileWith(t, podOptions{runnerShm: true}, "--mode", "fork")
	shm := fmt.Sprintf("/proc/%d/root/dev/shm", h.runner)
	names := func() []string {
		entries, err := os.ReadDir(shm)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range entries {
			out = append(out, e.Name())
		}
		return out
	}
	emptied := func(what string) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); len(names()) != 0; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: left in /dev/shm: %v\n%s", what, names(), h.s.allLogs())
			}
		}
	}
	ctx := context.Background()
	res, err := h.s.client.Execute(ctx, api.ExecuteRequest{Code: fillShm})
	if err != nil || !strings.HasSuffix(res.Stdout, " 28\n") { // ENOSPC
		t.Fatalf("filling /dev/shm: %+v %v", res, err)
	}
	emptied("after an execution that filled it")
	res, err = h.s.client.Execute(ctx, api.ExecuteRequest{Code: genuineShm})
	if err != nil || res.Stdout != "ok 32\n" { // 128 random bits in the name
		t.Fatalf("multiprocessing after /dev/shm was filled: %+v %v", res, err)
	}

	sess, err := h.s.client.CreateSession(ctx, api.SessionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	res, err = h.s.client.SessionExecute(ctx, sess.ID, api.ExecuteRequest{Code: "from multiprocessing import shared_memory\ns = shared_memory.SharedMemory(create=True, size=4096)\ns.buf[0] = 7\nprint(s.name)"})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("a session's segment: %+v %v", res, err)
	}
	name := strings.TrimSpace(res.Stdout)
	if res, err := h.s.client.Execute(ctx, api.ExecuteRequest{Code: fillShm}); err != nil || res.ExitCode != 0 {
		t.Fatalf("an execution beside the session: %+v %v", res, err)
	}
	time.Sleep(500 * time.Millisecond)
	if got := names(); len(got) != 1 || got[0] != name {
		t.Fatalf("/dev/shm while the session lives, after an execution beside it: %v, want only %s", got, name)
	}
	res, err = h.s.client.SessionExecute(ctx, sess.ID, api.ExecuteRequest{Code: "print(s.buf[0])"})
	if err != nil || res.Stdout != "7\n" {
		t.Fatalf("the session's segment in a later call: %+v %v", res, err)
	}
	if err := h.s.client.DeleteSession(ctx, sess.ID); err != nil {
		t.Fatal(err)
	}
	emptied("after the session was deleted")
}
