"""The code's process, forked by its supervisor (fork_code): its limits (limit), then its
environment, outputs file and confinement, and a fresh __main__ for the code (confined); the
limits it hands its supervisor before the code runs (hand_limits); its end (end, finish)."""
import json
import os
import sys

from . import blas, outputs
from .confine import confine, oom_first, preconfined_budget
from .linux import code_name, set_name
from .procs import has_children, kill_leftovers
from .protocol import done_report, limits_message, send_fds

# In the code's process: its end of the socket on which it tells its supervisor that the code
# finished (see finish), and the process's pid: a process the code forks inherits both, and
# its own end must not be taken for the code's.
_done_fd = None
_code_pid = None
# In the code's process, between its confinement and the code: the listener of its process
# budget, for the supervisor (see tree.Tree).
_listener = None
# What `python -c` put first on sys.path, which the loader took off (see loader.boot); the code
# gets it back just before it runs (give_path).
_path_entry = ""


def set_path_entry(entry):
    """Keep entry, the first entry of sys.path that loader.boot took off, for the code."""
    global _path_entry
    _path_entry = entry


def done_fd():
    """In the code's process: its end of the socket to its supervisor (see fork_code)."""
    return _done_fd


def fork_code():
    """Fork the code's process, with the socket on which it hands over its budget's listener
    and reports that the code finished. Returns its pid and the supervisor's end of the socket,
    (0, None) in the process."""
    import socket

    global _done_fd, _code_pid
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    child = os.fork()
    if child == 0:
        set_name(code_name())
        mine.close()
        _done_fd, _code_pid = theirs.detach(), os.getpid()
        return 0, None
    theirs.close()
    return child, mine


def rlimits(limits):
    """The resource limits of the code's process from its request's limits: (name, value)."""
    wanted = (("RLIMIT_AS", limits.get("as_bytes")), ("RLIMIT_NPROC", limits.get("nproc")),
              ("RLIMIT_FSIZE", limits.get("fsize_bytes")), ("RLIMIT_CORE", 0))
    return [(name, value) for name, value in wanted if value is not None]


def limit(params):
    """The code's limits, its directory, and the out-of-memory killer's choice."""
    import resource

    for name, value in rlimits(params["limits"]):
        resource.setrlimit(getattr(resource, name), (value, value))
    os.chdir(params["cwd"])
    oom_first()


def give_path():
    """Put the working directory back first on sys.path (see loader.boot), just before the code
    runs: its input files are there. Not before: until its confinement and limits are in place
    the runner imports modules of its own in this process (confine's base64 and struct, when
    spawn mode did not import them ahead), and a file named after one must not be what it
    imports — it would choose the seccomp programs, or the limits handed to the supervisor."""
    sys.path.insert(0, _path_entry)


def confined(params, ruleset_fd):
    """The request's environment and the outputs file, opened while they can be; a process
    group of its own; the confinement; then a fresh __main__ to run the code in. A process that
    cannot be confined ends here (status 126): the code must not run unconfined."""
    import builtins
    import types

    with open(params["env"], encoding="utf-8") as f:
        env = json.load(f) or {}
    os.environ.update(env)
    blas.pin(env)
    if params.get("outputs"):  # opened now: confined, the code could not open it
        outputs.use(open(params["outputs"], "a", encoding="utf-8"))
    # A process group of its own: a signal to "my group" reaches only the code's processes.
    os.setpgid(0, 0)
    global _listener
    try:
        _listener = confine(params.get("confine"), ruleset_fd)
    except Exception as e:
        sys.stderr.write("pyexec: the execution could not be confined: %s\n" % e)
        sys.stderr.flush()
        os._exit(126)
    main = types.ModuleType("__main__")
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    builtins.display = outputs.display
    outputs.hook_modules()
    return main


def hand_limits(sock_fd, params, msg=None):
    """Hand the tree's limits to the supervisor on sock_fd, with msg's fields, before the code
    runs: the memory limit, and the process budget with its listener. What comes later on that
    socket is the code's word, and the supervisor takes limits only once. Then lower the limit
    of open files: the kernel refuses to pass a descriptor when its uid has more in flight than
    the sender's limit, which code may have filled up to its own (see codeOpenFiles)."""
    import resource
    import socket

    global _listener
    limits = params["limits"]
    fields = limits_message(limits, msg, _listener is not None, preconfined_budget())
    fds = []
    if _listener is not None:
        fds = [_listener]
    sock = socket.socket(fileno=os.dup(sock_fd))
    try:
        send_fds(sock, json.dumps(fields).encode(), fds)
    finally:
        sock.close()
        if _listener is not None:
            os.close(_listener)
            _listener = None
    if limits.get("nofile") is not None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits["nofile"], limits["nofile"]))


def end(status, memory_error=False, code_ns=None):
    """End the code's process as the interpreter would — join non-daemon threads, run atexit
    handlers, flush the streams — but without tearing every module down: with pandas loaded,
    the full finalization costs more than the code itself."""
    threading = sys.modules.get("threading")
    if threading is not None:
        try:
            threading._shutdown()
        except Exception:
            pass
    try:
        import atexit

        atexit._run_exitfuncs()
    except Exception:
        pass
    for name in ("stdout", "stderr"):  # the code may have deleted them
        try:
            getattr(sys, name).flush()
        except Exception:
            pass
    if _done_fd is not None and os.getpid() == _code_pid:
        finish(status, memory_error, code_ns)
    os._exit(status)


def finish(status, memory_error, code_ns=None):
    """Tell the supervisor that the code finished, before this process ends: the teardown of
    an address space as large as a preloaded interpreter's costs milliseconds, and the result
    need not wait for it. First end the code's own processes (their orphans go to the
    supervisor, which kills them), then close the streams, then report (protocol.done_report)
    the status, whether a MemoryError ended the code, and how long the code ran (code_ns, in
    nanoseconds). What the code could write here itself says no more than sys.exit(STATUS),
    raise MemoryError or a slower loop would."""
    if has_children():
        kill_leftovers()
    try:  # what is left of this process, its teardown, yields to the result's way out
        os.setpriority(os.PRIO_PROCESS, 0, 19)
    except OSError:
        pass
    for fd in (0, 1, 2):
        try:
            os.close(fd)
        except OSError:
            pass
    try:
        os.write(_done_fd, done_report(status, memory_error, code_ns))
    except OSError:
        pass  # the supervisor waits for the exit instead

