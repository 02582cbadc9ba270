// Package confine builds what confines one execution in the kernel, without privileges: a
// Landlock ruleset (filesystem, TCP, scoped signals and abstract Unix sockets) and a seccomp
// program, for the code's process to apply to itself before the code runs (the runner's
// confine.confine, internal/executor/pyexec_runner/confine.py). It also probes what the running kernel offers, so that what is missing is said
// instead of silently skipped.
//
// The rules follow from the threat: the code runs as the server's own uid, so everything the
// server holds (its socket, the packages dir, other executions' directories, its processes) is
// reachable unless the kernel says no.
package confine

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"unsafe"

	llsys "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"golang.org/x/sys/unix"

	"github.com/pyexec/pyexec/pkg/api"
)

// Landlock ABI versions that bring what confine uses.
const (
	abiFilesystem = 1 // filesystem access rights
	abiRefer      = 2 // linking and renaming across directories
	abiTruncate   = 3
	abiNetwork    = 4 // TCP bind and connect
	abiIoctlDev   = 5
	abiScopes     = 6 // signals and abstract Unix sockets stay inside the domain
)

// Kernel is what the running kernel offers for confinement.
type Kernel struct {
	// LandlockABI is the Landlock ABI version in use: 0 when Landlock is missing or disabled,
	// and never above the cap given to Probe.
	LandlockABI int
	// Seccomp says a seccomp filter can be installed for this architecture.
	Seccomp bool
	// ProcessBudget says a supervisor can count an execution's processes and threads itself
	// (seccomp user notification, with CONTINUE: Linux 5.5), instead of RLIMIT_NPROC counting
	// every execution of the runner's uid together. See BudgetFilter.
	ProcessBudget bool
}

// NoCap is Probe's maxABI for "the Landlock ABI the kernel has".
const NoCap = -1

// Probe asks the kernel what it offers. maxABI caps the Landlock ABI used (NoCap: none; 0:
// no Landlock), so that every fallback path can run on a newer kernel.
func Probe(maxABI int) Kernel {
	var k Kernel
	if abi, err := llsys.LandlockGetABIVersion(); err == nil && abi > 0 {
		k.LandlockABI = abi
		if maxABI >= 0 && abi > maxABI {
			k.LandlockABI = maxABI
		}
	}
	// PR_GET_SECCOMP fails with EINVAL on a kernel built without seccomp.
	if _, err := unix.PrctlRetInt(unix.PR_GET_SECCOMP, 0, 0, 0, 0); err == nil {
		_, k.Seccomp = auditArch[runtime.GOARCH]
	}
	k.ProcessBudget = k.Seccomp && userNotifContinue()
	return k
}

// userNotifContinue says the kernel has seccomp user notification (Linux 5.0) and its CONTINUE
// answer (5.5, which has no probe of its own: the release says).
func userNotifContinue() bool {
	action := uint32(unix.SECCOMP_RET_USER_NOTIF)
	if _, _, errno := unix.Syscall(unix.SYS_SECCOMP, seccompGetActionAvail, 0, uintptr(unsafe.Pointer(&action))); errno != 0 {
		return false
	}
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return false
	}
	return releaseAtLeast(unix.ByteSliceToString(u.Release[:]), 5, 5)
}

// seccompGetActionAvail is SECCOMP_GET_ACTION_AVAIL of seccomp(2).
const seccompGetActionAvail = 2

// releaseAtLeast says a kernel release ("6.1.0-18-amd64") is at least major.minor.
func releaseAtLeast(release string, major, minor int) bool {
	var ma, mi int
	if n, _ := fmt.Sscanf(release, "%d.%d", &ma, &mi); n != 2 {
		return false
	}
	return ma > major || ma == major && mi >= minor
}

// Layers names each layer and whether it is active on this kernel, for the report, GET
// /v1/info, the ready log line and the metric.
func (k Kernel) Layers() []Layer {
	return []Layer{
		{Name: LayerFilesystem, Active: k.LandlockABI >= abiFilesystem,
			Without: "code can write to the socket's directory, the packages dir, /tmp and other executions' directories, and read other executions' files"},
		{Name: LayerScopedSignals, Active: k.LandlockABI >= abiScopes, Without: signalsWithout(k)},
		{Name: LayerSeccomp, Active: k.Seccomp,
			Without: "code can open Unix sockets (the API socket), ptrace, and use the network"},
		// Landlock's TCP rules alone leave UDP and raw sockets open.
		{Name: LayerNetwork, Active: k.Seccomp, Without: "code can open network connections (UDP at least: Landlock governs TCP alone)"},
		{Name: LayerTruncate, Active: k.LandlockABI >= abiTruncate,
			Without: "code can truncate any file of its uid: the packages trees, other executions' files"},
		// prctl(PR_SET_DUMPABLE) is in every kernel pyexec runs on.
		{Name: LayerNonDumpable, Active: true},
		{Name: LayerProcessBudget, Active: k.ProcessBudget,
			Without: "the processes and threads of every execution and session count against one limit (RLIMIT_NPROC of the runner's uid): one that starts --max-processes of them keeps every other from starting a thread or a subprocess"},
	}
}

func signalsWithout(k Kernel) string {
	if k.Seccomp {
		return "code can signal the processes of other executions (seccomp keeps the server, the zygote and its own supervisor out of reach)"
	}
	return "code can signal the server, the zygote, the supervisors and other executions"
}

// Layer names.
const (
	LayerFilesystem    = "landlock_filesystem"
	LayerScopedSignals = "scoped_signals"
	LayerSeccomp       = "seccomp"
	LayerNetwork       = "network_control"
	LayerTruncate      = "landlock_truncate"
	// LayerNonDumpable: the server, the zygote and the supervisors are non-dumpable, so code of
	// the same uid cannot read their /proc files or ptrace them. The code's own process is too
	// until Landlock confines it, which then keeps other domains out instead (its supervisor
	// reads its memory).
	LayerNonDumpable = "non_dumpable"
	// LayerProcessBudget: each execution and each session has --max-processes processes and
	// threads of its own, counted by its supervisor.
	LayerProcessBudget = "process_budget"
)

// Layer is one layer of confinement and whether the kernel gives it.
type Layer struct {
	Name   string
	Active bool
	// Without says which attacks are open when the layer is missing.
	Without string
}

// LayerIdentity: the runner, and so the code, runs as a uid of its own, not the server's.
const LayerIdentity = "identity"

// IdentityLayer is the identity layer: active when the runner's uid is not the server's.
func IdentityLayer(separate bool) Layer {
	return Layer{Name: LayerIdentity, Active: separate,
		Without: "code runs as the server's uid: it can change the permissions of the socket, the packages, the report and the work directories, and its processes count against the server's"}
}

// Info says what confines executions on this kernel, for the report, GET /v1/info and the
// logs; network is the server's policy ("deny" or "allow"), empty where there is none yet.
// extra are layers beyond the kernel's (IdentityLayer).
func (k Kernel) Info(network string, extra ...Layer) *api.Isolation {
	iso := &api.Isolation{LandlockABI: k.LandlockABI, Network: network, Layers: []api.IsolationLayer{}}
	for _, l := range append(k.Layers(), extra...) {
		layer := api.IsolationLayer{Name: l.Name, Active: l.Active}
		if !l.Active {
			layer.Missing = l.Without
		}
		iso.Layers = append(iso.Layers, layer)
	}
	return iso
}

// Missing returns the layers that are not active, the kernel's and extra.
func (k Kernel) Missing(extra ...Layer) []Layer {
	var out []Layer
	for _, l := range append(k.Layers(), extra...) {
		if !l.Active {
			out = append(out, l)
		}
	}
	return out
}

// Policy is what one execution may do.
type Policy struct {
	// Read are the trees the code may read and execute: the system, the interpreter, the
	// current packages tree.
	Read []string
	// Write are the trees the code may read, write and execute: its own working directory.
	Write []string
	// Devices are files the code may read and write, such as /dev/null.
	Devices []string
	// Shared are directories where the code may create, use and remove files whose names it
	// knows, but not list them: /dev/shm, where multiprocessing's semaphores and shared memory
	// live (glibc's sem_open and shm_open know no other place).
	Shared []string
	// Network allows TCP and UDP sockets.
	Network bool
	// Protect are pids the code must not signal where the kernel cannot scope signals
	// (Landlock ABI < 6): the server's and the zygote's; the supervisor, the code's parent, is
	// added by the runner (see ParentPID).
	Protect []int
}

// SystemRead are the system trees every execution may read: programs, libraries,
// configuration, the pseudo-filesystems that Python and its libraries read (/proc/self, CPU
// topology) and the random devices. Not /dev as a whole: /dev/shm is beneath it, and a rule
// on /dev would let code list it. Missing ones are skipped.
var SystemRead = []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/proc", "/sys", "/dev/urandom", "/dev/random"}

// SystemDevices are the devices every execution may write.
var SystemDevices = []string{"/dev/null", "/dev/zero", "/dev/full"}

// SystemShared are the directories of Policy.Shared.
var SystemShared = []string{"/dev/shm"}

// Access rights of the rules.
const (
	readAccess = llsys.AccessFSExecute | llsys.AccessFSReadFile | llsys.AccessFSReadDir
	fileAccess = llsys.AccessFSReadFile | llsys.AccessFSWriteFile | llsys.AccessFSTruncate | llsys.AccessFSIoctlDev
	// Files of known names only: no listing, no directories, links or executables.
	sharedAccess = llsys.AccessFSReadFile | llsys.AccessFSWriteFile | llsys.AccessFSTruncate | llsys.AccessFSMakeReg | llsys.AccessFSRemoveFile
	writeAccess  = readAccess | llsys.AccessFSWriteFile | llsys.AccessFSRemoveDir | llsys.AccessFSRemoveFile |
		llsys.AccessFSMakeDir | llsys.AccessFSMakeReg | llsys.AccessFSMakeFifo | llsys.AccessFSMakeSym |
		llsys.AccessFSRefer | llsys.AccessFSTruncate | llsys.AccessFSIoctlDev
	// No socket files (the code has no Unix sockets) and no device nodes anywhere.
)

// handledFS are the filesystem rights an ABI version knows: every one of them is denied
// unless a rule grants it.
func handledFS(abi int) uint64 {
	var m uint64
	if abi >= abiFilesystem {
		m = llsys.AccessFSExecute | llsys.AccessFSWriteFile | llsys.AccessFSReadFile | llsys.AccessFSReadDir |
			llsys.AccessFSRemoveDir | llsys.AccessFSRemoveFile | llsys.AccessFSMakeChar | llsys.AccessFSMakeDir |
			llsys.AccessFSMakeReg | llsys.AccessFSMakeSock | llsys.AccessFSMakeFifo | llsys.AccessFSMakeBlock |
			llsys.AccessFSMakeSym
	}
	if abi >= abiRefer {
		m |= llsys.AccessFSRefer
	}
	if abi >= abiTruncate {
		m |= llsys.AccessFSTruncate
	}
	if abi >= abiIoctlDev {
		m |= llsys.AccessFSIoctlDev
	}
	return m
}

// Rules are the paths of a policy opened once, for the rulesets of many executions: the
// system's trees are the same for every execution, and opening them costs more than the rest
// of a ruleset.
type Rules struct {
	kernel Kernel
	rules  []rule
}

// rule grants access beneath the file open (O_PATH) as fd.
type rule struct {
	fd     int
	access uint64
}

// Rules opens the paths of p (its Read, Write, Devices and Shared); paths that do not exist
// are skipped. Close releases them.
func (k Kernel) Rules(p Policy) (*Rules, error) {
	r := &Rules{kernel: k}
	if k.LandlockABI < abiFilesystem {
		return r, nil
	}
	if err := r.add(p); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

func (r *Rules) add(p Policy) error {
	handled := handledFS(r.kernel.LandlockABI)
	for _, g := range []struct {
		paths  []string
		access uint64
	}{{p.Read, readAccess}, {p.Write, writeAccess}, {p.Devices, fileAccess}, {p.Shared, sharedAccess}} {
		for _, path := range g.paths {
			fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
				continue
			}
			if err != nil {
				return fmt.Errorf("landlock: %s: %w", path, err)
			}
			access := g.access & handled
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err != nil {
				unix.Close(fd)
				return fmt.Errorf("landlock: %s: %w", path, err)
			}
			if st.Mode&unix.S_IFMT != unix.S_IFDIR {
				// Only rights that apply to a file may be granted on a file.
				access &= llsys.AccessFSExecute | llsys.AccessFSReadFile | llsys.AccessFSWriteFile | llsys.AccessFSTruncate | llsys.AccessFSIoctlDev
			}
			r.rules = append(r.rules, rule{fd: fd, access: access})
		}
	}
	return nil
}

// Close releases the paths.
func (r *Rules) Close() {
	for _, ru := range r.rules {
		unix.Close(ru.fd)
	}
	r.rules = nil
}

// Ruleset builds a ruleset of these rules and of extra's paths, with extra's network policy,
// and returns its file descriptor, which the code's process passes to
// landlock_restrict_self(2); nil without Landlock. The caller closes the file.
func (r *Rules) Ruleset(extra Policy) (*os.File, error) {
	k := r.kernel
	if k.LandlockABI < abiFilesystem {
		return nil, nil
	}
	attr := llsys.RulesetAttr{HandledAccessFS: handledFS(k.LandlockABI)}
	if k.LandlockABI >= abiNetwork && !extra.Network {
		// Handled with no rule: no TCP bind or connect at all.
		attr.HandledAccessNet = llsys.AccessNetBindTCP | llsys.AccessNetConnectTCP
	}
	if k.LandlockABI >= abiScopes {
		attr.Scoped = llsys.ScopeSignal | llsys.ScopeAbstractUnixSocket
	}
	more := &Rules{kernel: k}
	defer more.Close()
	if err := more.add(extra); err != nil {
		return nil, err
	}
	fd, err := llsys.LandlockCreateRuleset(&attr, 0)
	if err != nil {
		return nil, fmt.Errorf("landlock: creating the ruleset: %w", err)
	}
	ruleset := os.NewFile(uintptr(fd), "landlock-ruleset")
	for _, ru := range append(r.rules, more.rules...) {
		if err := llsys.LandlockAddPathBeneathRule(fd, &llsys.PathBeneathAttr{AllowedAccess: ru.access, ParentFd: ru.fd}, 0); err != nil {
			ruleset.Close()
			return nil, fmt.Errorf("landlock: adding a rule: %w", err)
		}
	}
	return ruleset, nil
}

// InterpreterRoot returns the tree an interpreter lives in: /usr for /usr/bin/python3, the
// version's directory for a pyenv or a venv's base. The link is followed first.
func InterpreterRoot(python string) string {
	if real, err := filepath.EvalSymlinks(python); err == nil {
		python = real
	}
	return filepath.Dir(filepath.Dir(python))
}

// Unique returns paths cleaned, without duplicates and empties, sorted.
func Unique(paths ...string) []string {
	seen := map[string]bool{}
	var out []string
	for _, p := range paths {
		if p == "" {
			continue
		}
		p = filepath.Clean(p)
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}
