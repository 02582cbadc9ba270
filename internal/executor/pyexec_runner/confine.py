"""Confinement of the code's process — no_new_privs, the Landlock ruleset pyexec built, the
seccomp programs pyexec made, the process budget's filter — applied before the code runs
(confine) or, in a spare, partly ahead (preconfine); and the protection of pyexec's own
processes (protect_self, oom_first)."""
import os

from .linux import (PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_FILTER_FLAG_NEW_LISTENER,
                    SECCOMP_MODE_FILTER, SECCOMP_SET_MODE_FILTER, libc, prctl, sock_fprog)
from .protocol import send_fds


def protect_self():
    """Make this process non-dumpable: a process of the same uid (the code) can then neither
    read its /proc files (environ, mem, fds) nor ptrace it. Forked children inherit it. And
    raise its soft limit of open files to the hard one: the kernel refuses to pass descriptors
    on a Unix socket once its uid has more in flight than the sender's soft limit, and the code,
    of the same uid, has a far lower one (see codeproc.limit)."""
    try:
        prctl(PR_SET_DUMPABLE, 0)
    except Exception:
        pass
    try:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except Exception:
        pass

_oom_first = False  # oom_first ran in this process


def oom_first():
    """The out-of-memory killer takes the code's process first, never the server. /proc/self of
    a non-dumpable process belongs to root: raising its own oom_score_adj is allowed on a file
    it owns, for the moment it is dumpable — before it holds anything of its request. Once per
    process: a spare's code process does it before it waits (see zygote._spare)."""
    global _oom_first
    if _oom_first:
        return
    prctl(PR_SET_DUMPABLE, 1)
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write("1000")
    prctl(PR_SET_DUMPABLE, 0)
    _oom_first = True


def confine(spec, ruleset_fd):
    """In the code's process, before the code: no_new_privs, the Landlock ruleset pyexec built
    for this execution (ruleset_fd), the seccomp program, and the process budget's, whose
    listener it returns (None without a budget, or when preconfine handed it already). All
    apply to the calling thread and the threads it starts later: the process must have no other
    thread. Raises OSError when a layer cannot be applied: the code must not run."""
    if spec is None:
        return None
    if len(os.listdir("/proc/self/task")) != 1:
        raise OSError("the code's process has threads that confinement would not reach")
    if spec.get("landlock") and ruleset_fd is None:
        raise OSError("no Landlock ruleset came with the execution")
    ahead = _preconfined is not None
    if ahead and _preconfined != (spec.get("seccomp"), spec.get("budget")):
        raise OSError("the process was confined ahead for another execution")
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    if ruleset_fd is not None:
        restrict(spec["landlock_restrict_self"], ruleset_fd)
        os.close(ruleset_fd)
    listener = None if ahead else _install_filters(spec)
    if ruleset_fd is not None:
        # Dumpable, so that the supervisor can read the tree's memory (smaps_rollup): Landlock
        # keeps every process outside this domain — other executions' code — from ptrace and
        # from its /proc files all the same, and /proc is read-only to the code itself.
        prctl(PR_SET_DUMPABLE, 1)
    return listener


# The Landlock layers this process added (restrict): a session's first, and one for each fork
# (branch.py).
layers = 0


def restrict(nr, ruleset_fd):
    """landlock_restrict_self(2), whose number is nr on this machine, with ruleset_fd: a layer
    more on this thread and what it starts. Raises OSError when it cannot be added."""
    import ctypes

    global layers
    if libc().syscall(nr, ruleset_fd, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "landlock_restrict_self: %s" % os.strerror(err))
    layers += 1


def with_parent_pid(prog, offsets, ppid):
    """The seccomp program prog (bytes) with the supervisor's pid ppid put in at offsets, where
    it compares with it (Go's confine.ParentPID): the code must not signal its supervisor where
    Landlock cannot scope signals."""
    import struct

    prog = bytearray(prog)
    for off in offsets or ():
        struct.pack_into("=I", prog, off, ppid)
    return prog


def _install_filters(spec):
    """Install spec's seccomp programs in this process; returns the budget's listener, or None."""
    import ctypes

    if spec.get("seccomp"):
        import base64

        prog = with_parent_pid(base64.b64decode(spec["seccomp"]), spec.get("parent_pid_offsets"), os.getppid())
        buf = ctypes.create_string_buffer(bytes(prog), len(prog))
        fprog = sock_fprog()(len(prog) // 8, ctypes.addressof(buf))
        if libc().prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, "seccomp: %s" % os.strerror(err))
    if not spec.get("budget"):
        return None
    import base64

    prog = base64.b64decode(spec["budget"])
    buf = ctypes.create_string_buffer(prog, len(prog))
    fprog = sock_fprog()(len(prog) // 8, ctypes.addressof(buf))
    listener = libc().syscall(spec["seccomp_nr"], SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, ctypes.byref(fprog))
    if listener < 0:
        err = ctypes.get_errno()
        raise OSError(err, "seccomp (process budget): %s" % os.strerror(err))
    return listener


# In a spare's code process confined ahead (preconfine): the seccomp programs it installed,
# (seccomp, budget) as the spare's request gave them.
_preconfined = None


def preconfined_budget():
    """Whether this process installed a process budget's filter ahead (preconfine), whose
    listener went to the supervisor then."""
    return _preconfined is not None and bool(_preconfined[1])


def preconfine(spec, sock_fd):
    """In a spare's code process, after its warm-up and before it waits for an execution:
    no_new_privs and the seccomp programs pyexec made for the spare (spec: those of the
    executions it may take), which cost the kernel over a millisecond to install — off the
    execution's path. The budget's listener goes to the supervisor now, on sock_fd, before any
    code ran. confine() then applies the rest (Landlock) with the execution. The filters allow
    what the spare does until its code runs: waiting, its streams, directory, limits."""
    global _preconfined
    if not spec or not (spec.get("seccomp") or spec.get("budget")):
        return
    if len(os.listdir("/proc/self/task")) != 1:
        raise OSError("the spare has threads that confinement would not reach")
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    listener = _install_filters(spec)
    _preconfined = (spec.get("seccomp"), spec.get("budget"))
    if listener is not None:
        import socket

        sock = socket.socket(fileno=os.dup(sock_fd))
        try:
            send_fds(sock, b'{"listener": true}', [listener])
        finally:
            sock.close()
            os.close(listener)

