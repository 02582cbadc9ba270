package container

import (
	"bytes"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
)

// MemoryCgroup is the memory cgroup that bounds the calling process: of the cgroups from its
// own up to the mount's root, in the v1 memory hierarchy and the v2 one, the one with the
// smallest memory limit (a pod's limit sits above its containers'), or, with no limit anywhere,
// its own. A container's limits.memory is such a limit.
type MemoryCgroup struct {
	// Dir is the cgroup's directory; V2 says it is of cgroup v2.
	Dir string
	V2  bool
	// Limit is its memory limit in bytes (v2 memory.max, v1 memory.limit_in_bytes); 0: none.
	Limit int64

	usage, stat string // the files Usage and WorkingSet read

	// usageFile is usage, open: a reading is one pread (a few µs), not an open, a read and a
	// close (ten times that on a VM).
	once      sync.Once
	usageFile *os.File
	openErr   error
}

// FindMemoryCgroup finds the memory cgroup of the calling process (see MemoryCgroup); nil
// when it has none that it can read.
func FindMemoryCgroup() *MemoryCgroup { return fsRoot("/").memoryCgroup() }

func (r fsRoot) memoryCgroup() *MemoryCgroup {
	var own, bound *MemoryCgroup
	r.cgroupDirs("memory", func(dir string, v2 bool) {
		usage, limit, stat := "memory.usage_in_bytes", "memory.limit_in_bytes", "memory.stat"
		if v2 {
			usage, limit = "memory.current", "memory.max"
		}
		usagePath, err := r.resolve(path.Join(dir, usage), true)
		if err != nil {
			return
		}
		if _, err := os.Stat(usagePath); err != nil {
			return // not a memory cgroup (the v2 root, or v2 without the memory controller)
		}
		statPath, _ := r.resolve(path.Join(dir, stat), true)
		cg := &MemoryCgroup{Dir: dir, V2: v2, usage: usagePath, stat: statPath}
		if own == nil {
			own = cg
		}
		b, err := r.read(path.Join(dir, limit))
		if err != nil {
			return
		}
		if cg.Limit = parseMemoryLimit(b); cg.Limit > 0 && (bound == nil || cg.Limit < bound.Limit) {
			bound = cg
		}
	})
	if bound != nil {
		return bound
	}
	if own != nil {
		own.Limit = 0
	}
	return own
}

// noMemoryLimit: a v1 limit at least this large is none (the kernel writes 2^63 less a page
// for "unlimited").
const noMemoryLimit = 1 << 62

// parseMemoryLimit reads memory.max ("max" or bytes) or memory.limit_in_bytes; 0: none.
func parseMemoryLimit(b []byte) int64 {
	s := strings.TrimSpace(string(b))
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n >= noMemoryLimit {
		return 0
	}
	return n
}

// Usage is the cgroup's memory usage now, in bytes (v2 memory.current, v1
// memory.usage_in_bytes): everything charged to it, page cache and /dev/shm included.
func (c *MemoryCgroup) Usage() (int64, error) {
	c.once.Do(func() { c.usageFile, c.openErr = os.Open(c.usage) })
	if c.openErr != nil {
		return 0, c.openErr
	}
	var buf [32]byte
	n, err := c.usageFile.ReadAt(buf[:], 0) // the kernel writes the figure anew at offset 0
	if n == 0 && err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(buf[:n])), 10, 64)
}

// WorkingSet is usage less the inactive page cache (memory.stat's inactive_file, v1's
// total_inactive_file), which the kernel drops first when the cgroup nears its limit: the
// kubelet's working set, which its eviction and `kubectl top` use. Files in a tmpfs (/dev/shm)
// are not page cache the kernel can drop, and count.
func (c *MemoryCgroup) WorkingSet(usage int64) int64 {
	b, err := os.ReadFile(c.stat)
	if err != nil {
		return usage
	}
	key := []byte("inactive_file ")
	if !c.V2 {
		key = []byte("total_inactive_file ")
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, key); ok {
			if n, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64); err == nil {
				return max(0, usage-n)
			}
		}
	}
	return usage
}
