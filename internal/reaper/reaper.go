// Package reaper makes pyexec serve a correct PID 1: it reaps orphans and kills processes
// that escaped their execution's supervisor.
package reaper

import (
	"context"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"

	"github.com/pyexec/pyexec/internal/proc"
)

// Reaper makes this process a child subreaper and reaps every orphan that is handed to it, so
// that pyexec serve is a correct PID 1 in a container. Children that pyexec starts itself are
// tracked and left to exec.Cmd.Wait; an untracked child that still runs is a process that
// escaped its execution's supervisor, and is killed with its tree.
//
// Once Run has started, every child must be started through Start: an untracked child would
// be taken for an escapee.
type Reaper struct {
	log     logr.Logger
	mu      sync.Mutex
	tracked map[int]bool
	reaped  int
	killed  int
}

// New makes the calling process a child subreaper.
func New(log logr.Logger) (*Reaper, error) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, os.NewSyscallError("prctl(PR_SET_CHILD_SUBREAPER)", err)
	}
	return &Reaper{log: log, tracked: map[int]bool{}}, nil
}

// Start starts cmd and tracks its process until Done.
func (r *Reaper) Start(cmd *exec.Cmd) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	r.tracked[cmd.Process.Pid] = true
	return nil
}

// Done stops tracking pid; call it after cmd.Wait.
func (r *Reaper) Done(pid int) {
	r.mu.Lock()
	delete(r.tracked, pid)
	r.mu.Unlock()
}

// Run reaps on every SIGCHLD and once a second until ctx ends.
func (r *Reaper) Run(ctx context.Context) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGCHLD)
	defer signal.Stop(sigs)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		r.Sweep()
		select {
		case <-ctx.Done():
			return
		case <-sigs:
		case <-tick.C:
		}
	}
}

// Sweep reaps untracked zombies and kills untracked live children once.
func (r *Reaper) Sweep() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, pid := range proc.Children() {
		if r.tracked[pid] {
			continue
		}
		p, ok := proc.ReadStat(pid)
		if !ok {
			continue
		}
		if !p.Zombie && !p.Exiting { // one exiting was killed with its tree a moment ago
			r.log.Info("killing escaped process", "pid", pid)
			proc.KillTree(pid)
			r.killed++
		}
		var ws unix.WaitStatus
		if got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil); err == nil && got == pid {
			r.reaped++
		}
	}
}

// Stats returns how many orphans were reaped and how many escapees were killed.
func (r *Reaper) Stats() (reaped, killed int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reaped, r.killed
}
