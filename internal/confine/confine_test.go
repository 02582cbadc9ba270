package confine

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	llsys "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"golang.org/x/sys/unix"
)

// The tests below run their checks in a child: the test binary again, which confines its own
// thread and reports what the kernel answered. The parent judges the answers.
const childEnv = "PYEXEC_CONFINE_TEST_CHILD"

func TestMain(m *testing.M) {
	if what := os.Getenv(childEnv); what != "" {
		os.Exit(child(what))
	}
	os.Exit(m.Run())
}

// runChild runs the child check what with args, returning its report lines.
func runChild(t *testing.T, what string, args ...string) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), childEnv+"="+what)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child %s: %v\n%s", what, err, out)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

func child(what string) int {
	runtime.LockOSThread() // the filter and the ruleset apply to this thread: every call below is made on it
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		fmt.Println("no_new_privs:", err)
		return 1
	}
	switch what {
	case "seccomp":
		return childSeccomp(os.Args[1:])
	case "landlock":
		return childLandlock(os.Args[1:])
	}
	return 2
}

// childSeccomp loads Filter for a policy that protects the pid in args[0], then makes the calls
// code would make and prints "name errno" for each.
func childSeccomp(args []string) int {
	protected, _ := strconv.Atoi(args[0])
	network := len(args) > 1 && args[1] == "network"
	k := Kernel{Seccomp: true} // as below Landlock ABI 6: the signal rules are in the program
	prog, err := k.Filter(Policy{Protect: []int{protected}, Network: network})
	if err != nil {
		fmt.Println("filter:", err)
		return 1
	}
	fprog := unix.SockFprog{Len: uint16(len(prog) / 8), Filter: (*unix.SockFilter)(unsafe.Pointer(&prog[0]))}
	if err := unix.Prctl(unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER, uintptr(unsafe.Pointer(&fprog)), 0, 0); err != nil {
		fmt.Println("seccomp:", err)
		return 1
	}
	call := func(name string, trap uintptr, a ...uintptr) {
		a = append(a, 0, 0, 0, 0, 0, 0)
		r, _, errno := unix.RawSyscall6(trap, a[0], a[1], a[2], a[3], a[4], a[5])
		if errno == 0 && trap == unix.SYS_SOCKET {
			_ = unix.Close(int(r))
		}
		fmt.Println(name, int(errno))
	}
	pid := uintptr(protected)
	call("kill protected", unix.SYS_KILL, pid, 0)
	call("kill protected, high bits set", unix.SYS_KILL, pid|1<<32, 0)
	call("kill -1", unix.SYS_KILL, ^uintptr(0), 0)
	call("kill -1, high bits clear", unix.SYS_KILL, 0xffffffff, 0)
	call("tgkill protected", unix.SYS_TGKILL, pid, pid, 0)
	call("kill self", unix.SYS_KILL, uintptr(os.Getpid()), 0)
	call("socket unix", unix.SYS_SOCKET, unix.AF_UNIX, unix.SOCK_STREAM, 0)
	call("socket inet", unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_STREAM, 0)
	var fds [2]int32
	call("socketpair unix", unix.SYS_SOCKETPAIR, unix.AF_UNIX, unix.SOCK_STREAM, 0, uintptr(unsafe.Pointer(&fds)))
	call("ptrace", unix.SYS_PTRACE, unix.PTRACE_PEEKDATA, pid, 0)
	call("getpid", unix.SYS_GETPID)
	call("fcntl F_SETOWN", unix.SYS_FCNTL, 0, unix.F_SETOWN, pid)
	call("fcntl F_SETSIG", unix.SYS_FCNTL, 0, unix.F_SETSIG, uintptr(unix.SIGKILL))
	call("fcntl F_GETFD", unix.SYS_FCNTL, 0, unix.F_GETFD)
	call("bind", unix.SYS_BIND, uintptr(fds[0]), 0, 0)
	call("shmget", unix.SYS_SHMGET, 0, 4096, 0o600)
	call("inotify_add_watch", unix.SYS_INOTIFY_ADD_WATCH, 0, 0, 0)
	call("setxattr", unix.SYS_SETXATTR, 0, 0, 0)
	call("mq_open", unix.SYS_MQ_OPEN, 0, 0, 0)
	pgid, _ := unix.Getpgid(protected)
	call("setpgid into the protected group", unix.SYS_SETPGID, 0, uintptr(pgid))
	call("setpgid a group of its own", unix.SYS_SETPGID, 0, 0)
	var lim unix.Rlimit
	call("prlimit64 protected", unix.SYS_PRLIMIT64, pid, unix.RLIMIT_NOFILE, uintptr(unsafe.Pointer(&lim)), 0)
	call("prlimit64 self", unix.SYS_PRLIMIT64, 0, unix.RLIMIT_NOFILE, 0, uintptr(unsafe.Pointer(&lim)))
	call("setpriority protected", unix.SYS_SETPRIORITY, unix.PRIO_PROCESS, pid, 19)
	return 0
}

// TestFilterRefusesWhatCodeMustNotDo loads the program of a policy without the network and
// without scoped signals, and checks the kernel's answer to each call, also with the high bits
// of a pid argument set (the kernel reads only the low 32: a 64-bit comparison would let
// (1<<32 | pid) through).
func TestFilterRefusesWhatCodeMustNotDo(t *testing.T) {
	if !Probe(NoCap).Seccomp {
		t.Fatal("this kernel has no seccomp for " + runtime.GOARCH + ": the filter cannot be tested here")
	}
	parent := os.Getpid()
	got := map[string]string{}
	for _, line := range runChild(t, "seccomp", strconv.Itoa(parent)) {
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("child: %q", line)
		}
		got[line[:i]] = line[i+1:]
	}
	eperm := strconv.Itoa(int(unix.EPERM))
	want := map[string]string{
		"kill protected": eperm, "kill protected, high bits set": eperm, "kill -1": eperm, "kill -1, high bits clear": eperm,
		"tgkill protected": eperm, "kill self": "0",
		"socket unix": eperm, "socket inet": eperm, "socketpair unix": "0",
		"ptrace": eperm, "getpid": "0",
		"fcntl F_SETOWN": eperm, "fcntl F_SETSIG": eperm, "fcntl F_GETFD": "0", "bind": eperm,
		"shmget": eperm, "inotify_add_watch": eperm, "setxattr": eperm, "mq_open": eperm,
		"setpgid into the protected group": eperm, "setpgid a group of its own": "0",
		"prlimit64 protected": eperm, "prlimit64 self": "0", "setpriority protected": eperm,
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s: errno %s, want %s", name, got[name], w)
		}
	}
}

// childLandlock restricts itself with Ruleset (read args[0], write args[1]) and tries each path
// in args[2:] for reading and writing, printing "read|write path errno".
func childLandlock(args []string) int {
	k := Probe(NoCap)
	rs, err := ruleset(k, Policy{Read: []string{args[0]}, Write: []string{args[1]}, Devices: SystemDevices})
	if err != nil || rs == nil {
		fmt.Println("ruleset:", err)
		return 1
	}
	if err := llsys.LandlockRestrictSelf(int(rs.Fd()), 0); err != nil {
		fmt.Println("restrict:", err)
		return 1
	}
	errno := func(err error) int {
		var e unix.Errno
		if errors.As(err, &e) {
			return int(e)
		}
		if err != nil {
			return -1
		}
		return 0
	}
	for _, p := range args[2:] {
		_, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		fmt.Println("read", p, errno(err))
		fd, err := unix.Open(filepath.Join(p, "new"), unix.O_WRONLY|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
		if err == nil {
			unix.Close(fd)
		}
		fmt.Println("write", p, errno(err))
	}
	return 0
}

// TestRulesetConfines restricts a child with a ruleset that reads one tree and writes another,
// and checks what the kernel lets it open.
func TestRulesetConfines(t *testing.T) {
	if Probe(NoCap).LandlockABI == 0 {
		t.Fatal("this kernel has no Landlock: the filesystem layer cannot be tested here")
	}
	read, write, other := t.TempDir(), t.TempDir(), t.TempDir()
	lines := runChild(t, "landlock", read, write, read, write, other)
	want := []string{
		"read " + read + " 0", "write " + read + " " + strconv.Itoa(int(unix.EACCES)),
		"read " + write + " 0", "write " + write + " 0",
		"read " + other + " " + strconv.Itoa(int(unix.EACCES)), "write " + other + " " + strconv.Itoa(int(unix.EACCES)),
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("child:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

// BenchmarkPolicy is the server's cost per execution: the ruleset, from the system's rules
// opened once, and the program of a policy like an execution's.
func BenchmarkPolicy(b *testing.B) {
	k := Probe(NoCap)
	system, err := k.Rules(Policy{Read: SystemRead, Devices: SystemDevices})
	if err != nil {
		b.Fatal(err)
	}
	defer system.Close()
	p := Policy{Read: []string{b.TempDir()}, Write: []string{b.TempDir()}, Protect: []int{1, 2, ParentPID}}
	for b.Loop() {
		rs, err := system.Ruleset(p)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := k.Filter(p); err != nil {
			b.Fatal(err)
		}
		if rs != nil {
			rs.Close()
		}
	}
}

func BenchmarkRuleset(b *testing.B) {
	k := Probe(NoCap)
	p := Policy{Read: SystemRead, Write: []string{b.TempDir()}, Devices: SystemDevices}
	for b.Loop() {
		rs, _ := ruleset(k, p)
		rs.Close()
	}
}

func BenchmarkFilter(b *testing.B) {
	k := Probe(NoCap)
	p := Policy{Protect: []int{1, 2, ParentPID}}
	for b.Loop() {
		k.Filter(p)
	}
}

// With the network allowed, network sockets pass and Unix ones still do not.
func TestFilterWithTheNetwork(t *testing.T) {
	if !Probe(NoCap).Seccomp {
		t.Fatal("this kernel has no seccomp for " + runtime.GOARCH + ": the filter cannot be tested here")
	}
	got := map[string]string{}
	for _, line := range runChild(t, "seccomp", strconv.Itoa(os.Getpid()), "network") {
		i := strings.LastIndexByte(line, ' ')
		got[line[:i]] = line[i+1:]
	}
	eperm := strconv.Itoa(int(unix.EPERM))
	for name, w := range map[string]string{"socket unix": eperm, "socket inet": "0", "socketpair unix": "0", "kill protected": eperm} {
		if got[name] != w {
			t.Errorf("%s: errno %s, want %s", name, got[name], w)
		}
	}
}

// A block longer than an 8-bit jump can skip is an error, not a program that jumps wrong.
func TestFilterRefusesTooManyPids(t *testing.T) {
	pids := make([]int, 200)
	for i := range pids {
		pids[i] = 1000 + i
	}
	if _, err := (Kernel{Seccomp: true}).Filter(Policy{Protect: pids}); err == nil {
		t.Fatal("a program with 200 protected pids assembled")
	}
}

// ruleset is the ruleset of p alone.
func ruleset(k Kernel, p Policy) (*os.File, error) {
	r, err := k.Rules(p)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return r.Ruleset(Policy{Network: p.Network})
}
