package container

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestMemoryCgroup(t *testing.T) {
	const v1Host = "34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
	const v1Container = "34 30 0:31 /kubepods/pod1/c1 /sys/fs/cgroup/memory ro,relatime - cgroup cgroup rw,memory\n"
	const v2 = "30 1 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n"
	const hybrid = v1Host + "40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
	const unlimited = "9223372036854771712\n"
	for name, tc := range map[string]struct {
		files map[string]string
		dir   string // "" : none found
		v2    bool
		limit int64
	}{
		"v1, no limit: its own cgroup": {map[string]string{
			"/proc/self/cgroup": "4:memory:/user.slice\n", "/proc/self/mountinfo": v1Host,
			"/sys/fs/cgroup/memory/user.slice/memory.usage_in_bytes": "100\n", "/sys/fs/cgroup/memory/user.slice/memory.limit_in_bytes": unlimited,
			"/sys/fs/cgroup/memory/memory.usage_in_bytes": "1000\n", "/sys/fs/cgroup/memory/memory.limit_in_bytes": unlimited,
		}, "/sys/fs/cgroup/memory/user.slice", false, 0},
		"v1, seen from the host: the pod's limit is the smaller": {map[string]string{
			"/proc/self/cgroup": "4:memory:/kubepods/pod1/c1\n", "/proc/self/mountinfo": v1Host,
			"/sys/fs/cgroup/memory/kubepods/pod1/c1/memory.usage_in_bytes": "1\n", "/sys/fs/cgroup/memory/kubepods/pod1/c1/memory.limit_in_bytes": "2147483648\n",
			"/sys/fs/cgroup/memory/kubepods/pod1/memory.usage_in_bytes": "1\n", "/sys/fs/cgroup/memory/kubepods/pod1/memory.limit_in_bytes": "1073741824\n",
			"/sys/fs/cgroup/memory/kubepods/memory.usage_in_bytes": "1\n", "/sys/fs/cgroup/memory/kubepods/memory.limit_in_bytes": unlimited,
		}, "/sys/fs/cgroup/memory/kubepods/pod1", false, 1 << 30},
		"v1, in a container that sees its own cgroup as the root": {map[string]string{
			"/proc/self/cgroup": "4:memory:/kubepods/pod1/c1\n", "/proc/self/mountinfo": v1Container,
			"/sys/fs/cgroup/memory/memory.usage_in_bytes": "1\n", "/sys/fs/cgroup/memory/memory.limit_in_bytes": "536870912\n",
		}, "/sys/fs/cgroup/memory", false, 512 << 20},
		"v2": {map[string]string{
			"/proc/self/cgroup": "0::/kubepods/pod1/c1\n", "/proc/self/mountinfo": v2,
			"/sys/fs/cgroup/kubepods/pod1/c1/memory.current": "1\n", "/sys/fs/cgroup/kubepods/pod1/c1/memory.max": "1073741824\n",
			"/sys/fs/cgroup/kubepods/pod1/memory.current": "1\n", "/sys/fs/cgroup/kubepods/pod1/memory.max": "max\n",
		}, "/sys/fs/cgroup/kubepods/pod1/c1", true, 1 << 30},
		"hybrid: v2 without the memory controller, the limit is v1's": {map[string]string{
			"/proc/self/cgroup": "4:memory:/job\n0::/\n", "/proc/self/mountinfo": hybrid,
			"/sys/fs/cgroup/memory/job/memory.usage_in_bytes": "1\n", "/sys/fs/cgroup/memory/job/memory.limit_in_bytes": "402653184\n",
			"/sys/fs/cgroup/unified/cgroup.procs": "",
		}, "/sys/fs/cgroup/memory/job", false, 384 << 20},
		"no memory controller": {map[string]string{"/proc/self/cgroup": "0::/x\n", "/proc/self/mountinfo": v2}, "", false, 0},
	} {
		t.Run(name, func(t *testing.T) {
			cg := cpuRoot(t, tc.files).memoryCgroup()
			switch {
			case tc.dir == "" && cg != nil:
				t.Fatalf("memoryCgroup() = %+v, want none", cg)
			case tc.dir == "":
				return
			case cg == nil:
				t.Fatalf("memoryCgroup() = nil, want %s", tc.dir)
			case cg.Dir != tc.dir || cg.V2 != tc.v2 || cg.Limit != tc.limit:
				t.Fatalf("memoryCgroup() = %s v2=%t limit=%d, want %s v2=%t limit=%d", cg.Dir, cg.V2, cg.Limit, tc.dir, tc.v2, tc.limit)
			}
		})
	}
}

// Usage and the working set: usage less the inactive page cache (v1's hierarchical
// total_inactive_file, not the cgroup's own inactive_file).
func TestMemoryCgroupUsage(t *testing.T) {
	for _, v2 := range []bool{false, true} {
		dir := t.TempDir()
		cg := &MemoryCgroup{Dir: dir, V2: v2, usage: filepath.Join(dir, "usage"), stat: filepath.Join(dir, "memory.stat")}
		stat := "anon 100\nfile 900\ninactive_file 300\nactive_file 600\n"
		if !v2 {
			stat = "cache 900\ninactive_file 1\ntotal_cache 900\ntotal_inactive_file 300\n"
		}
		for name, text := range map[string]string{"usage": "1000\n", "memory.stat": stat} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		usage, err := cg.Usage()
		if err != nil || usage != 1000 {
			t.Fatalf("v2=%t: Usage() = %d, %v", v2, usage, err)
		}
		if ws := cg.WorkingSet(usage); ws != 700 {
			t.Errorf("v2=%t: WorkingSet(1000) = %d, want 700", v2, ws)
		}
	}
}

// This process's own, from the real /proc and cgroupfs: whatever the machine, a cgroup found
// reads.
func TestFindMemoryCgroupHere(t *testing.T) {
	cg := FindMemoryCgroup()
	if cg == nil {
		t.Skip("SKIPPED: no memory cgroup readable here; the real cgroupfs was not read")
	}
	usage, err := cg.Usage()
	if err != nil || usage <= 0 {
		t.Fatalf("%s: usage %d, %v", cg.Dir, usage, err)
	}
	if ws := cg.WorkingSet(usage); ws <= 0 || ws > usage {
		t.Errorf("%s: working set %d of usage %d", cg.Dir, ws, usage)
	}
	t.Logf("%s (v2 %t): limit %d, usage %d", cg.Dir, cg.V2, cg.Limit, usage)
}

// What the memory watchdog pays per reading below its mark (Usage) and above it (WorkingSet
// too), on this machine's cgroup.
func BenchmarkMemoryCgroupReadings(b *testing.B) {
	cg := FindMemoryCgroup()
	if cg == nil {
		b.Skip("SKIPPED: no memory cgroup readable here")
	}
	b.Run("usage", func(b *testing.B) {
		for b.Loop() {
			if _, err := cg.Usage(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("working set", func(b *testing.B) {
		for b.Loop() {
			cg.WorkingSet(1 << 30)
		}
	})
}

// A reading is the figure now, not the first one again: the file kept open reads what a fresh
// open reads, while this process takes and gives back memory. (Other processes of this cgroup
// move the figure too: the test asks only that readings follow it.)
func TestMemoryCgroupUsageFollows(t *testing.T) {
	cg := FindMemoryCgroup()
	if cg == nil {
		t.Skip("SKIPPED: no memory cgroup readable here; that a reading follows the usage was not tested")
	}
	first, err := cg.Usage()
	if err != nil {
		t.Fatal(err)
	}
	hold := make([]byte, 64<<20)
	for i := 0; i < len(hold); i += 4096 {
		hold[i] = 1
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		now, _ := cg.Usage()
		b, err := os.ReadFile(cg.usage)
		if err != nil {
			t.Fatal(err)
		}
		fresh, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if now != first && now-fresh < 64<<20 && fresh-now < 64<<20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the usage read %d first and %d still, while a fresh open reads %d", first, now, fresh)
		}
	}
	hold[len(hold)-1] = 2
}
