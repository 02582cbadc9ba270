package proc

import (
	"os"
	"testing"
)

// /proc/PID/stat: a comm with spaces and parentheses, the state, the parent, and PF_EXITING in
// the flags (field 9), which the reaper reads to tell a process already exiting from an escapee.
func TestParseStat(t *testing.T) {
	for _, tt := range []struct {
		line            string
		ppid            int
		zombie, exiting bool
		threads         int
		rss             int64
	}{
		{"12 (python3) S 7 12 12 0 -1 4194560 100 0", 7, false, false, 0, 0},
		{"12 (a (b) c) R 7 12 12 0 -1 4194564 100 0", 7, false, true, 0, 0},
		{"12 (x) Z 9 12 12 0 -1 4227076 0 0", 9, true, true, 0, 0},
		{"12 (python3) S 7 12 12 0 -1 4194560 2311 0 0 0 5 1 0 0 20 0 3 0 9077 31916032 2562 18446744073709551615 1 1 0 0 0 0 0 16781312 2 0 0 0 17 1 0 0 0 0 0",
			7, false, false, 3, 2562},
	} {
		p, ok := parseStat(12, []byte(tt.line))
		if !ok || p.PPID != tt.ppid || p.Zombie != tt.zombie || p.Exiting != tt.exiting || p.Threads != tt.threads || p.RSSPages != tt.rss {
			t.Errorf("parseStat(%q) = %+v, %v", tt.line, p, ok)
		}
	}
	if p, ok := ReadStat(os.Getpid()); !ok || p.Exiting || p.Zombie || p.Threads < 2 || p.RSSPages <= 0 {
		t.Errorf("this process: %+v, %v", p, ok)
	}
}
