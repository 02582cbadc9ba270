"""A stateless execution. Its supervisor makes itself a child subreaper, so every process the
code starts — also one that calls setsid() or double-forks — stays its descendant; forks the
code's process (supervise), which runs the code under the limits and the confinement
(run_code); reaps everything; kills what the code left behind; and writes status lines on the
status fd, which the code's process never holds (watch). In spawn mode the supervisor is the
interpreter pyexec started (spawn.main); in fork mode one the zygote forked."""
import json
import os
import sys

from . import blas, codeproc
from .cell import run_cell
from .linux import make_subreaper
from .procs import children, kill_leftovers, reap_ended
from .protocol import parse_done, recv_fds, status
from .tree import Tree


def run_code(params, ruleset_fd=None):
    """In the forked child: apply the limits and the confinement, then run the code as
    __main__. Never returns."""
    codeproc.limit(params)
    with open(params["code"], encoding="utf-8", errors="surrogateescape") as f:
        source = f.read()
    main = codeproc.confined(params, ruleset_fd)
    codeproc.hand_limits(codeproc.done_fd(), params)
    blas.set_threads(params.get("threads"))
    codeproc.give_path()
    import time

    began = time.monotonic_ns()
    code, memory_error = run_cell(source, main, "<code>")
    codeproc.end(code, memory_error, time.monotonic_ns() - began)



def supervise(params, status_fd, prepare=None, handed=(), ruleset_fd=None):
    """Run the code in a child and report how it ended on status_fd. prepare, when given, runs
    in the child first (fork mode: standard streams, directory, environment, user); handed are
    the child's descriptors, closed in the supervisor after the fork so that the streams end
    with the child, and so is the Landlock ruleset. Returns when the execution is over:
    reported, and nothing of it left."""
    subreaper = make_subreaper()
    sys.stdout.flush()
    sys.stderr.flush()
    child, done = codeproc.fork_code()
    if child == 0:
        os.close(status_fd)
        if prepare is not None:
            prepare()
        run_code(params, ruleset_fd)
    for fd in handed:
        os.close(fd)
    if ruleset_fd is not None:
        os.close(ruleset_fd)
    watch(child, status_fd, subreaper, done)




def watch(child, status_fd, subreaper, done):
    """In the supervisor: wait until the code's process (child) reports on done that the code
    finished, or ends, holding its tree to its limits meanwhile; kill what it left behind; write
    the status line and close status_fd, which ends the execution for pyexec."""
    import signal

    children()  # fault in now the pages that reporting touches
    json.dumps({"exit_code": 0})
    tree = Tree()
    try:
        report, st = _wait(child, done, tree)
    finally:
        done.close()
    early = report.status if report is not None else None
    if early is not None and st is None:
        # The code's process is ending; but code may have written on done itself while it
        # goes on running: kill it, so that whatever it is doing ends with the result.
        os.kill(child, signal.SIGKILL)
    if not tree.forkless():
        kill_leftovers(keep=(child,) if st is None else ())
    tree.close()
    if (report is not None and report.memory_error) or tree.over_memory:
        status(status_fd, memory_error=True)
    if tree.refused:
        status(status_fd, process_limit=True)
    if early is not None and report.code_ns is not None:
        status(status_fd, exit_code=early, subreaper=subreaper, code_ns=report.code_ns)
    elif early is not None:
        status(status_fd, exit_code=early, subreaper=subreaper)
    elif os.WIFSIGNALED(st):
        status(status_fd, exit_code=128 + os.WTERMSIG(st), signal=os.WTERMSIG(st), subreaper=subreaper)
    else:
        status(status_fd, exit_code=os.WEXITSTATUS(st), subreaper=subreaper)
    os.close(status_fd)
    if st is None:
        try:  # the code's process ends after the result; then kill what it may have left
            os.waitpid(child, 0)
        except ChildProcessError:
            pass
        kill_leftovers()


def _sent_report(done):
    """The report the code's process already sent on done, if it did (a protocol.Report), else
    None. What came before it (the limits, a listener) is dropped: the process is gone."""
    import socket

    while True:
        try:
            msg, fds = recv_fds(done, 4096, socket.MSG_DONTWAIT)
        except OSError:  # nothing waits (BlockingIOError), or the socket failed
            return None
        for fd in fds:
            os.close(fd)
        if not msg:
            return None
        if msg[:1] == b"{" or fds:
            continue
        return parse_done(msg)


def _wait(child, done, tree):
    """Reap every process that ends, and hold the tree to its limits, until the code's process
    reports on done that the code finished (returns the report, and None or, when it was
    reaped after it reported, its wait status) or ends without (returns None and its wait
    status). Past its memory limit the tree is killed."""
    import select
    import signal

    try:
        pidfd = os.pidfd_open(child)
    except (AttributeError, OSError):  # before Python 3.9 or Linux 5.3: wait for the exit
        pidfd = None
    try:
        poller = select.poll()
        poller.register(done.fileno(), select.POLLIN)
        if pidfd is not None:
            poller.register(pidfd, select.POLLIN)
        while True:
            st = reap_ended(child)
            if st is not None:
                # It may have reported and ended since the last wake: the report then waits on
                # done, and says more than the wait status (a MemoryError).
                return _sent_report(done), st
            # Wakes when the child reports or ends (without a pidfd: every 50 ms), the budget is
            # asked, or the memory is due; an orphan that ended meanwhile is reaped on the next
            # wake.
            for fd, event in poller.poll(tree.timeout(1000 if pidfd is not None else 50)):
                if fd == tree.fd:
                    if not tree.answer(event):
                        poller.unregister(fd)
                        tree.close()
                elif fd == done.fileno():
                    try:  # the limits, then "STATUS" or "STATUS m": a few bytes
                        msg, fds = recv_fds(done, 4096)
                    except OSError:
                        msg, fds = b"", []
                    if msg[:1] == b"{" or fds:
                        if tree.take(msg, fds):
                            poller.register(tree.fd, select.POLLIN)
                        continue
                    report = parse_done(msg)
                    if report is not None:
                        return report, None
                    if not msg:  # EOF; anything else is not a report: wait for the exit
                        poller.unregister(fd)
            if tree.memory_over():
                os.kill(child, signal.SIGKILL)  # the rest of the tree goes after the result
                _, st = os.waitpid(child, 0)
                return None, st
    finally:
        if pidfd is not None:
            os.close(pidfd)

