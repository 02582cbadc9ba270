package runner

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pyexec/pyexec/internal/executor"
	"github.com/pyexec/pyexec/internal/reaper"
	"github.com/pyexec/pyexec/pkg/api"
)

// readyOn is an Output that closes seen once stdout has carried "ready".
type readyOn struct {
	seen chan struct{}
	once bool
}

func (r *readyOn) Write(stream string, data []byte) {
	if stream == api.EventStdout && !r.once && strings.Contains(string(data), "ready") {
		r.once = true
		close(r.seen)
	}
}

// The runner's figures cross the wire: the trees of an execution and a session, their tasks
// and memory, and the runner's memory cgroup; the server asked for a watchdog, which needs a
// limit (none here: this runner's cgroup has none, or it says so).
func TestTreeStatsThroughTheRunner(t *testing.T) {
	cfg := clientConfig(t, executor.ModeFork, 0)
	cfg.Runner.MemoryHighWater = 90
	c, _ := childClient(t, cfg)
	ss, err := c.NewSession(context.Background(), executor.SessionRequest{ID: "s-stats", Limits: testLimits})
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	if res, err := ss.Execute(context.Background(), executor.Request{ID: "1", Code: "x = b'x' * (32 << 20)", Limits: testLimits}, nil); err != nil || res.ExitCode != 0 {
		t.Fatalf("%+v %v", res, err)
	}
	out := &readyOn{seen: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = c.Execute(ctx, executor.Request{ID: "e", Code: "import time\nx = b'x' * (64 << 20)\nprint('ready', flush=True)\ntime.sleep(60)", Limits: testLimits}, out)
	}()
	<-out.seen
	st, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Trees != 2 || st.TreeTasks < 2 || st.TreeMemory < 96<<20 || st.MemoryUsage <= 0 || st.MemoryWorkingSet <= 0 || st.MemoryWorkingSet > st.MemoryUsage {
		t.Errorf("an execution and a session: %+v", st)
	}
	if (st.MemoryLimit == 0) != (st.MemoryHighWater == 0) || st.MemoryHighWater > st.MemoryLimit {
		t.Errorf("the watchdog's mark %d under a limit of %d", st.MemoryHighWater, st.MemoryLimit)
	}
	// The metrics the server serves from them.
	reaper, err := reaper.New(stderrLog())
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(c.Collector(reaper, true))
	got := gathered(t, reg)
	for name, ok := range map[string]func(float64) bool{
		"pyexec_runner_trees":                       func(v float64) bool { return v == 2 },
		"pyexec_runner_tree_tasks":                  func(v float64) bool { return v >= 2 },
		"pyexec_runner_tree_memory_bytes":           func(v float64) bool { return v >= 96<<20 },
		"pyexec_runner_memory_usage_bytes":          func(v float64) bool { return v > 0 },
		"pyexec_runner_memory_working_set_bytes":    func(v float64) bool { return v > 0 },
		"pyexec_runner_memory_limit_bytes":          func(v float64) bool { return v >= 0 },
		"pyexec_runner_memory_high_water_bytes":     func(v float64) bool { return v >= 0 },
		"pyexec_runner_memory_watchdog_ended_total": func(v float64) bool { return v == 0 },
	} {
		if v, found := got[name]; !found || !ok(v) {
			t.Errorf("%s: %v (found %t)", name, v, found)
		}
	}
	cancel()
	<-done
	ss.Close()
	if st, err := c.Stats(); err != nil || st.Trees != 0 || st.TreeTasks != 0 || st.TreeMemory != 0 {
		t.Errorf("with nothing running: %+v %v", st, err)
	}
}

// A runner of the same protocol from before the watchdog — it knows nothing of the
// configuration's high-water mark and says nothing of trees or of its cgroup in its stats —
// still serves: the server reads its stats, and the new figures are 0.
func TestAnOlderRunnerStillServes(t *testing.T) {
	cfg := clientConfig(t, executor.ModeSpawn, 0)
	cfg.Runner.MemoryHighWater = 90
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ours, theirs := socketPair(t)
	attached := make(chan error, 1)
	go func() { attached <- c.Attach(ours) }()
	// The older runner: its Hello and Ready as they were; the Config it reads it decodes into
	// what it knew (a field more is ignored by encoding/json).
	if err := writeFrame(theirs, map[string]any{"protocol": Protocol, "version": "older", "pid": 1, "uid": 61013, "gid": 61013, "landlock_abi": 0, "seccomp": false}); err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := readFrame(theirs, handshakeFrame, &raw); err != nil {
		t.Fatal(err)
	}
	if raw["memory_high_water"] != float64(90) {
		t.Errorf("the config says nothing of the watchdog's mark: %v", raw)
	}
	if err := writeFrame(theirs, map[string]any{"mode": "spawn"}); err != nil {
		t.Fatal(err)
	}
	if err := <-attached; err != nil {
		t.Fatal(err)
	}
	go olderRunnerChannels(t, theirs)
	st, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode != "spawn" || st.RSS != 123 || st.Trees != 0 || st.TreeMemory != 0 || st.MemoryLimit != 0 || st.WatchdogEnded != 0 {
		t.Errorf("an older runner's stats: %+v", st)
	}
	c.Close()
}

// olderRunnerChannels answers every request on every channel with stats as an older runner
// wrote them, until the control connection closes.
func olderRunnerChannels(t *testing.T, ctl *net.UnixConn) {
	raw, err := ctl.SyscallConn()
	if err != nil {
		return
	}
	for {
		fd, err := recvChannel(raw)
		if err != nil {
			return
		}
		go func() {
			conn, err := net.FileConn(fdFile(fd))
			if err != nil {
				return
			}
			defer conn.Close()
			for {
				var req map[string]json.RawMessage
				if readFrame(conn, 1<<20, &req) != nil {
					return
				}
				reply := map[string]any{"done": map[string]any{}}
				if _, ok := req["stats"]; ok {
					reply = map[string]any{"stats": map[string]any{"mode": "spawn", "fallbacks": 0, "warm_hits": 0, "reaped": 0, "killed": 0, "rss": 123, "pss": 100}}
				}
				if writeFrame(conn, reply) != nil {
					return
				}
			}
		}()
	}
}

func fdFile(fd int) *os.File { return os.NewFile(uintptr(fd), "channel") }

// gathered is every metric of reg without labels, by name.
func gathered(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if g := m.GetGauge(); g != nil {
				out[mf.GetName()] = g.GetValue()
			} else {
				out[mf.GetName()] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}
