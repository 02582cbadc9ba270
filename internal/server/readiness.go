package server

import (
	"github.com/pyexec/pyexec/internal/unixsocket"

	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/pyexec/pyexec/internal/executor"
)

// workDirMode is the mode of the work dir: the runner, in its group, reaches the directories the
// server makes there for it, and can neither list it nor make anything in it.
const workDirMode = executor.WorkRootMode

// readyCheck is one condition of readiness beyond the server's own state: the socket is the
// server's, the work dir exists. A check may repair what it checks (re-create the socket
// file, the work dir) and fails when it cannot.
type readyCheck struct {
	name string
	run  func() error
	last string // the last failure, to log each new one once; "" while it passes
}

// readyError is why a readiness check fails, in two ways: reason is what /readyz answers and
// names no path (the probe port answers whoever reaches it: the pod's network, code run with
// --network allow), err is the whole story, paths included, for the log.
type readyError struct {
	reason string
	err    error
}

func (e *readyError) Error() string { return e.err.Error() }
func (e *readyError) Unwrap() error { return e.err }

// notReady is the failure of a readiness check: reason for /readyz, err for the log.
func notReady(reason string, err error) error { return &readyError{reason: reason, err: err} }

// probeReason is what /readyz says of a check's failure: the reason of a readyError, else the
// error's text (AddReadyCheck's checks must name no path in it).
func probeReason(err error) string {
	if re, ok := errors.AsType[*readyError](err); ok {
		return re.reason
	}
	return err.Error()
}

// AddReadyCheck adds a check to every readiness check (/readyz): the server is not ready while
// run fails. The error is logged, and /readyz answers its text after the check's name: it must
// name no path, since the probe port answers whoever reaches it.
func (s *Server) AddReadyCheck(name string, run func() error) { s.addReadyCheck(name, run) }

// addReadyCheck adds a check to every readiness check.
func (s *Server) addReadyCheck(name string, run func() error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks = append(s.checks, &readyCheck{name: name, run: run})
}

// Ready says whether the server takes work, and why not: it must be ready (SetReady, with an
// executor), not draining, and pass its checks: its socket is still the file it bound (a
// socket file that was removed, or replaced by a stale one, is re-created; one that another
// server listens on is never taken over) and its work dir exists (re-created when removed).
// /readyz answers with it: reason names no path (a failing check's and the preflight's
// details, which do, are in the log). A check that starts failing is logged once with its
// error, and again when it passes.
func (s *Server) Ready() (ok bool, reason string) {
	s.mu.Lock()
	draining, checks := s.draining, s.checks
	s.mu.Unlock()
	if draining {
		return false, drainingMessage
	}
	var problems []string
	for _, c := range checks {
		// Checks run one at a time: a repair must not race another one.
		s.checkMu.Lock()
		err := c.run()
		switch {
		case err != nil && err.Error() != c.last:
			s.log.Error(err, "not ready", "check", c.name)
			c.last = err.Error()
		case err == nil && c.last != "":
			s.log.Info("ready again", "check", c.name)
			c.last = ""
		}
		s.checkMu.Unlock()
		if err != nil {
			problems = append(problems, c.name+": "+probeReason(err))
		}
	}
	s.mu.Lock()
	s.failing = len(problems) > 0
	s.updateReadyGauge()
	s.mu.Unlock()
	if ok, reason := s.probeState(); !ok {
		return false, strings.Join(append([]string{reason}, problems...), "; ")
	}
	if len(problems) > 0 {
		return false, "not ready: " + strings.Join(problems, "; ")
	}
	return true, ""
}

// probeState is state as /readyz says it: the preflight's problems, which name paths, are
// counted, not listed (the log lists them).
func (s *Server) probeState() (ok bool, reason string) {
	s.mu.Lock()
	unconfirmed := 0
	if !s.draining && !s.ready && s.info != nil {
		unconfirmed = len(s.info.Preflight.Problems)
	}
	s.mu.Unlock()
	if unconfirmed > 0 {
		return false, fmt.Sprintf("%s: %d problems (see the server's log)", notReadyMessage, unconfirmed)
	}
	return s.state()
}

// checkWorkDir checks that the work dir exists, and re-creates it when it was removed. It
// never removes what is at its path: a file, or a symlink put there, fails the check.
func (s *Server) checkWorkDir() error {
	dir := s.cfg.WorkDir
	fi, err := os.Lstat(dir)
	switch {
	case err == nil && fi.IsDir() && fi.Mode().Perm() != workDirMode:
		// Where code runs as the server's uid it may chmod it (Landlock does not govern
		// permissions): every later execution would fail.
		if err := os.Chmod(dir, workDirMode); err != nil {
			return notReady("its permissions changed and cannot be put back",
				fmt.Errorf("work dir %s has mode %#o, and it cannot be put back: %w", dir, fi.Mode().Perm(), err))
		}
		s.log.Info("permissions restored", "path", dir, "was", fmt.Sprintf("%#o", fi.Mode().Perm()), "mode", fmt.Sprintf("%#o", workDirMode))
		return nil
	case err == nil && fi.IsDir():
		return nil
	case err == nil:
		what := fmt.Sprintf("a %s, not a directory", unixsocket.DescribeType(fi.Mode()))
		return notReady("it is "+what, fmt.Errorf("work dir %s is %s", dir, what))
	case !errors.Is(err, fs.ErrNotExist):
		return notReady("it cannot be looked at", fmt.Errorf("work dir: %w", err))
	}
	gid := s.cfg.WorkDirGID
	if gid == 0 {
		gid = -1
	}
	if err := executor.PrepareWorkRoot(dir, gid); err != nil {
		return notReady("it was removed and cannot be re-created", fmt.Errorf("work dir %s was removed and cannot be re-created: %w", dir, err))
	}
	s.log.Info("work dir re-created", "workDir", dir)
	return nil
}
