package confine

import (
	"encoding/binary"
	"fmt"
	"runtime"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// ParentPID in Policy.Protect stands for the code's parent, its supervisor: the runner puts
// its pid at the ParentPIDOffsets of the program before it loads it. No pid reaches it
// (pid_max is at most 2^22).
const ParentPID = 0x7ffffffe

// ParentPIDOffsets are the byte offsets in a program from Filter of the 32-bit values that
// compare with ParentPID.
func ParentPIDOffsets(prog []byte) []int {
	var out []int
	for off := 0; off+8 <= len(prog); off += 8 {
		op := binary.NativeEndian.Uint16(prog[off:])
		if op == bpfJmpJeqK && binary.NativeEndian.Uint32(prog[off+4:]) == ParentPID {
			out = append(out, off+4)
		}
	}
	return out
}

// bpfJmpJeqK is the opcode of a jump if the accumulator equals a constant.
const bpfJmpJeqK = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K

// auditArch is the seccomp architecture of each GOARCH confine supports; the syscall numbers
// come from x/sys/unix for the GOARCH built.
var auditArch = map[string]uint32{
	"amd64": unix.AUDIT_ARCH_X86_64,
	"arm64": unix.AUDIT_ARCH_AARCH64,
}

// Offsets in struct seccomp_data: nr, arch, then six 64-bit args. Both supported
// architectures are little-endian, so an argument's low 32 bits come first. Only the low
// bits are compared: the kernel reads pid_t and int arguments from them and ignores the rest,
// so a filter on all 64 bits would let code pass (1<<32 | pid).
const (
	offNr   = 0
	offArch = 4
	offArgs = 16
)

// denied are the syscalls no execution needs and that reach beyond it: other processes'
// memory and descriptors (pidfd_getfd: a session's checkpoints are in the code's own domain),
// kernel objects shared with the server, io_uring (its operations pass by seccomp),
// and what Landlock does not cover that would let code leave something for a later execution
// or watch a concurrent one: extended attributes, inotify and fanotify, System V IPC and POSIX
// message queues.
var denied = []uintptr{
	unix.SYS_PTRACE, unix.SYS_PROCESS_VM_READV, unix.SYS_PROCESS_VM_WRITEV, unix.SYS_KCMP, unix.SYS_PIDFD_GETFD,
	unix.SYS_IO_URING_SETUP, unix.SYS_IO_URING_ENTER, unix.SYS_IO_URING_REGISTER,
	unix.SYS_BPF, unix.SYS_PERF_EVENT_OPEN, unix.SYS_USERFAULTFD,
	unix.SYS_KEYCTL, unix.SYS_ADD_KEY, unix.SYS_REQUEST_KEY,
	unix.SYS_UNSHARE, unix.SYS_SETNS, unix.SYS_MOUNT, unix.SYS_UMOUNT2, unix.SYS_PIVOT_ROOT, unix.SYS_CHROOT,
	unix.SYS_OPEN_BY_HANDLE_AT,
	unix.SYS_SETXATTR, unix.SYS_LSETXATTR, unix.SYS_FSETXATTR, unix.SYS_SETXATTRAT,
	unix.SYS_REMOVEXATTR, unix.SYS_LREMOVEXATTR, unix.SYS_FREMOVEXATTR, unix.SYS_REMOVEXATTRAT,
	unix.SYS_INOTIFY_ADD_WATCH, unix.SYS_FANOTIFY_INIT, unix.SYS_FANOTIFY_MARK,
	unix.SYS_SHMGET, unix.SYS_SHMAT, unix.SYS_SHMCTL, unix.SYS_SHMDT,
	unix.SYS_MSGGET, unix.SYS_MSGSND, unix.SYS_MSGRCV, unix.SYS_MSGCTL,
	unix.SYS_SEMGET, unix.SYS_SEMOP, unix.SYS_SEMTIMEDOP, unix.SYS_SEMCTL,
	unix.SYS_MQ_OPEN, unix.SYS_MQ_UNLINK, unix.SYS_MQ_TIMEDSEND, unix.SYS_MQ_TIMEDRECEIVE, unix.SYS_MQ_NOTIFY, unix.SYS_MQ_GETSETATTR,
}

// fioSetOwn is FIOSETOWN of asm-generic/sockios.h, which x/sys/unix lacks.
const fioSetOwn = 0x8901

// allowedFirst are the calls an interpreter makes most — importing a package is thousands of
// them — which no rule below concerns: they are allowed before the rest of the program runs.
var allowedFirst = []uintptr{
	unix.SYS_READ, unix.SYS_WRITE, unix.SYS_OPENAT, unix.SYS_CLOSE, unix.SYS_FSTAT, unix.SYS_NEWFSTATAT,
	unix.SYS_STATX, unix.SYS_READLINKAT, unix.SYS_LSEEK, unix.SYS_PREAD64, unix.SYS_GETDENTS64,
	unix.SYS_MMAP, unix.SYS_MUNMAP, unix.SYS_MPROTECT, unix.SYS_BRK, unix.SYS_FUTEX,
	unix.SYS_RT_SIGACTION, unix.SYS_RT_SIGPROCMASK,
}

// errnoEPERM is what a denied call returns: the code sees PermissionError, not a crash.
const errnoEPERM = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)

// Filter assembles the seccomp program of p for the code's process: struct sock_filter
// entries, 8 bytes each, in the machine's byte order, ready for PR_SET_SECCOMP. It returns nil
// when the kernel has no seccomp for this architecture.
//
// Always: no Unix sockets of its own (socketpair stays: asyncio and multiprocessing use it),
// and none of the calls in denied; no process group but one of its own; no limits, priority,
// CPUs or I/O class set on another process. Without the network: no socket(2), bind, connect
// or listen.
// Where Landlock does not scope signals: no signal to a process group or to every process
// (negative pids), none to the pids in p.Protect, no tkill and no pidfd_send_signal (a
// /proc/PID directory is a pidfd too), and no F_SETOWN, F_SETOWN_EX or F_SETSIG (fcntl) or
// FIOSETOWN or SIOCSPGRP (ioctl), which direct a signal at another process.
func (k Kernel) Filter(p Policy) ([]byte, error) {
	if !k.Seccomp {
		return nil, nil
	}
	arch := auditArch[runtime.GOARCH]
	prog := []bpf.Instruction{
		bpf.LoadAbsolute{Off: offArch, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: arch, SkipTrue: 1},
		bpf.RetConstant{Val: unix.SECCOMP_RET_KILL_PROCESS},
		bpf.LoadAbsolute{Off: offNr, Size: 4},
	}
	if runtime.GOARCH == "amd64" {
		// x32 calls carry the same arch with this bit set in nr: another table, not filtered here.
		prog = append(prog, bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x40000000, SkipFalse: 1}, bpf.RetConstant{Val: errnoEPERM})
	}
	for i, nr := range allowedFirst {
		// Equal: skip the other checks to the allow below; else on to the next check.
		prog = append(prog, bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(nr), SkipTrue: uint8(len(allowedFirst) - i)})
	}
	prog = append(prog, bpf.Jump{Skip: 1}, bpf.RetConstant{Val: unix.SECCOMP_RET_ALLOW})
	deny := append([]uintptr(nil), denied...)
	var blocks [][]bpf.Instruction
	// Another process's limits, priority, CPUs and I/O class are the server's to set: the
	// kernel asks only for the same uid. The calls on the code's own processes pass 0.
	blocks = append(blocks,
		denyIf(unix.SYS_PRLIMIT64, argNotEquals(0, 0)),
		denyIf(unix.SYS_SETPRIORITY, argNotEquals(1, 0)),
		denyIf(unix.SYS_SCHED_SETAFFINITY, argNotEquals(0, 0)),
		denyIf(unix.SYS_SCHED_SETSCHEDULER, argNotEquals(0, 0)),
		denyIf(unix.SYS_SCHED_SETPARAM, argNotEquals(0, 0)),
		denyIf(unix.SYS_SCHED_SETATTR, argNotEquals(0, 0)),
		denyIf(unix.SYS_IOPRIO_SET, argNotEquals(1, 0)),
		// Only a group of its own: joining the server's or the zygote's group would make
		// kill(0) reach them.
		denyIf(unix.SYS_SETPGID, argNotEquals(1, 0)),
	)
	if p.Network {
		blocks = append(blocks, denyIf(unix.SYS_SOCKET, argEquals(0, unix.AF_UNIX)))
	} else {
		// The only sockets are then socketpairs, connected already: without bind, connect and
		// listen no abstract name can be taken or reached through one.
		deny = append(deny, unix.SYS_SOCKET, unix.SYS_BIND, unix.SYS_CONNECT, unix.SYS_LISTEN)
	}
	if k.LandlockABI < abiScopes {
		deny = append(deny, unix.SYS_TKILL, unix.SYS_PIDFD_SEND_SIGNAL)
		// A file's owner is sent a signal of the code's choice on I/O: F_SETOWN to the server
		// and F_SETSIG(SIGKILL) would kill it without kill(2).
		blocks = append(blocks,
			denyIf(unix.SYS_FCNTL, argEquals(1, unix.F_SETOWN), argEquals(1, unix.F_SETOWN_EX), argEquals(1, unix.F_SETSIG)),
			denyIf(unix.SYS_IOCTL, argEquals(1, fioSetOwn), argEquals(1, unix.SIOCSPGRP)))
		for _, nr := range []uintptr{unix.SYS_KILL, unix.SYS_TGKILL, unix.SYS_RT_SIGQUEUEINFO, unix.SYS_RT_TGSIGQUEUEINFO, unix.SYS_PIDFD_OPEN} {
			conds := [][]bpf.Instruction{argNegative(0)}
			for _, pid := range p.Protect {
				conds = append(conds, argEquals(0, uint32(pid)))
			}
			blocks = append(blocks, denyIf(nr, conds...))
		}
	}
	for _, b := range blocks {
		if len(b) > 256 { // its first jump skips the rest, in 8 bits
			return nil, fmt.Errorf("seccomp: a block of %d instructions is too long (%d pids to protect)", len(b), len(p.Protect))
		}
		prog = append(prog, b...)
	}
	for _, nr := range deny {
		prog = append(prog, bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(nr), SkipFalse: 1}, bpf.RetConstant{Val: errnoEPERM})
	}
	prog = append(prog, bpf.RetConstant{Val: unix.SECCOMP_RET_ALLOW})

	return assemble(prog)
}

// assemble makes struct sock_filter entries of prog, 8 bytes each, in the machine's byte order.
func assemble(prog []bpf.Instruction) ([]byte, error) {
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return nil, fmt.Errorf("seccomp: %w", err)
	}
	if len(raw) > 4096 { // BPF_MAXINSNS
		return nil, fmt.Errorf("seccomp: program of %d instructions is too long", len(raw))
	}
	out := make([]byte, 0, 8*len(raw))
	for _, ins := range raw {
		out = binary.NativeEndian.AppendUint16(out, ins.Op)
		out = append(out, ins.Jt, ins.Jf)
		out = binary.NativeEndian.AppendUint32(out, ins.K)
	}
	return out, nil
}

// denyIf returns a block that makes syscall nr fail with EPERM when any of conds holds. Each
// cond loads an argument and ends in a jump whose true branch skips 0 (to the deny) and whose
// false branch skips 1 (past it). The block ends with nr back in the accumulator.
func denyIf(nr uintptr, conds ...[]bpf.Instruction) []bpf.Instruction {
	var body []bpf.Instruction
	for _, c := range conds {
		body = append(body, c...)
		body = append(body, bpf.RetConstant{Val: errnoEPERM})
	}
	body = append(body, bpf.LoadAbsolute{Off: offNr, Size: 4})
	return append([]bpf.Instruction{bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(nr), SkipTrue: uint8(min(len(body), 255))}}, body...)
}

// argNotEquals: the low 32 bits of argument i differ from v.
func argNotEquals(i int, v uint32) []bpf.Instruction {
	return []bpf.Instruction{
		bpf.LoadAbsolute{Off: uint32(offArgs + 8*i), Size: 4},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: v, SkipFalse: 1},
	}
}

// argEquals: the low 32 bits of argument i equal v.
func argEquals(i int, v uint32) []bpf.Instruction {
	return []bpf.Instruction{
		bpf.LoadAbsolute{Off: uint32(offArgs + 8*i), Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: v, SkipFalse: 1},
	}
}

// argNegative: argument i, as a 32-bit pid_t, is negative (-1 is every process, -pgid a group).
func argNegative(i int) []bpf.Instruction {
	return []bpf.Instruction{
		bpf.LoadAbsolute{Off: uint32(offArgs + 8*i), Size: 4},
		bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x80000000, SkipFalse: 1},
	}
}

// BudgetFilter assembles the second seccomp program of the code's process when the kernel has
// ProcessBudget: every call that makes a process or a thread (clone, clone3, fork, vfork)
// waits for the supervisor's answer (SECCOMP_RET_USER_NOTIF), which the process installs with
// SECCOMP_FILTER_FLAG_NEW_LISTENER and whose listener it hands to its supervisor before the
// code runs. Where the first program refuses a call (EPERM), that answer wins: the kernel
// takes the most restrictive of all filters'. It returns nil without ProcessBudget.
func (k Kernel) BudgetFilter() ([]byte, error) {
	if !k.ProcessBudget {
		return nil, nil
	}
	prog := []bpf.Instruction{bpf.LoadAbsolute{Off: offNr, Size: 4}}
	for i, nr := range forkCalls {
		prog = append(prog, bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(nr), SkipTrue: uint8(len(forkCalls) - i)})
	}
	// The other architecture and x32 never get here: the first program kills or refuses them.
	prog = append(prog, bpf.RetConstant{Val: unix.SECCOMP_RET_ALLOW}, bpf.RetConstant{Val: unix.SECCOMP_RET_USER_NOTIF})
	return assemble(prog)
}
