package executor

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/pyexec/pyexec/internal/confine"
)

// Isolation is how executions are confined (see internal/confine). The zero value confines
// nothing: a kernel without Landlock and seccomp, or tests of other things.
type Isolation struct {
	// Kernel is what the kernel offers, from confine.Probe.
	Kernel confine.Kernel
	// Read are trees executions may read beyond the system's and the interpreter's.
	Read []string
	// Protect are processes code must not signal beyond the executor's own (the server, when
	// it shares the runner's PID namespace).
	Protect []int
}

// systemRules are the rules every execution shares — the system, the interpreter, the
// devices — opened with the first execution and kept; a failure (out of descriptors) is tried
// again by the next execution.
func (s *Spawn) systemRules() (*confine.Rules, error) {
	s.rulesMu.Lock()
	defer s.rulesMu.Unlock()
	if s.rules != nil {
		return s.rules, nil
	}
	// The interpreter's tree, and a venv's own (its python links to the base interpreter).
	read := append(append([]string(nil), confine.SystemRead...), s.cfg.Isolation.Read...)
	read = append(read, confine.InterpreterRoot(s.cfg.Python), filepath.Dir(filepath.Dir(s.cfg.Python)))
	rules, err := s.cfg.Isolation.Kernel.Rules(confine.Policy{Read: confine.Unique(read...), Devices: confine.SystemDevices, Shared: confine.SystemShared})
	if err != nil {
		return nil, err
	}
	s.rules = rules
	return rules, nil
}

// Close implements Executor: the system's paths, opened once, are released; the memory
// watchdog and the watch of shared memory stop.
func (s *Spawn) Close() {
	s.watchdog.close()
	s.shm.close()
	s.rulesMu.Lock()
	defer s.rulesMu.Unlock()
	if s.rules != nil {
		s.rules.Close()
		s.rules = nil
	}
}

// confineSpec is what the code's process needs to confine itself (pyexec_runner's confine.confine): the
// Landlock ruleset comes beside it as a file descriptor.
type confineSpec struct {
	// RestrictSelf is the number of landlock_restrict_self(2) on this architecture.
	RestrictSelf int `json:"landlock_restrict_self"`
	// Landlock says a ruleset comes with the execution: without it the code must not run.
	Landlock bool `json:"landlock"`
	// filters are the seccomp programs: Seccomp is confine.Filter's, base64, with the
	// supervisor's pid wanted at ParentPIDOffsets; Budget is confine.BudgetFilter's, installed
	// with seccomp(2) (SeccompNr), whose listener goes to the supervisor, which counts the
	// processes and threads.
	filters
}

// filters are the seccomp programs of a code's process: those of confineSpec, without its
// Landlock part. Equal filters are the same confinement, so a spare confined ahead with them
// (Fork) can take an execution that wants them.
type filters struct {
	Seccomp          string `json:"seccomp,omitempty"`
	ParentPIDOffsets []int  `json:"parent_pid_offsets,omitempty"`
	Budget           string `json:"budget,omitempty"`
	SeccompNr        int    `json:"seccomp_nr,omitempty"`
	// network is the policy the programs were made for.
	network bool
}

// key identifies the programs: two filters with equal keys install the same.
func (f filters) key() string { return f.Seccomp + "|" + f.Budget }

// filtersFor assembles the seccomp programs of an execution with or without the network and
// a process budget, forked from the zygote of pid zygote (0 in spawn mode).
func (s *Spawn) filtersFor(network, budget bool, zygote int) (filters, error) {
	out := filters{network: network}
	k := s.cfg.Isolation.Kernel
	protect := append([]int{os.Getpid(), confine.ParentPID}, s.cfg.Isolation.Protect...)
	if zygote > 0 {
		protect = append(protect, zygote)
	}
	prog, err := k.Filter(confine.Policy{Network: network, Protect: protect})
	if err != nil {
		return out, err
	}
	if prog != nil {
		out.Seccomp = base64.StdEncoding.EncodeToString(prog)
		out.ParentPIDOffsets = confine.ParentPIDOffsets(prog)
	}
	if budget {
		prog, err := k.BudgetFilter()
		if err != nil {
			return out, err
		}
		if prog != nil {
			out.Budget, out.SeccompNr = base64.StdEncoding.EncodeToString(prog), unix.SYS_SECCOMP
		}
	}
	return out, nil
}

// confinement builds the ruleset and the seccomp programs of one execution, whose working
// directory is work. zygote is the zygote's pid, 0 in spawn mode. The ruleset is nil without
// Landlock; the caller closes it once the code's process has it.
func (s *Spawn) confinement(req Request, work, tree string, zygote int) (*os.File, *confineSpec, error) {
	k := s.cfg.Isolation.Kernel
	if k.LandlockABI == 0 && !k.Seccomp {
		return nil, nil, nil
	}
	f, err := s.filtersFor(req.Network, req.MaxProcesses > 0, zygote)
	if err != nil {
		return nil, nil, err
	}
	rules, err := s.systemRules()
	if err != nil {
		return nil, nil, fmt.Errorf("confining the execution: %w", err)
	}
	write := []string{work, filepath.Join(filepath.Dir(work), mplDir)}
	if req.session {
		write = append(write, filepath.Join(filepath.Dir(work), branchesDir))
	}
	p := confine.Policy{Read: []string{tree}, Write: write, Network: req.Network}
	ruleset, err := rules.Ruleset(p)
	if err != nil {
		return nil, nil, fmt.Errorf("confining the execution: %w", err)
	}
	return ruleset, &confineSpec{RestrictSelf: unix.SYS_LANDLOCK_RESTRICT_SELF, Landlock: ruleset != nil, filters: f}, nil
}
