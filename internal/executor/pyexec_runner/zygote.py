"""Fork mode's fork server, the zygote: started once as

    python -s -u -c BOOTSTRAP '{"preload": [...], "warmup": "..."}'

where the bootstrap reads the runner's modules from a pipe and calls main (see loader.boot),
with a SOCK_SEQPACKET control socket on fd 3. It imports the preload modules once, then
answers three requests, each a JSON message:
  {"op": "exec", ...} with the standard streams, the status pipe and, when Landlock is in use,
      the execution's ruleset as SCM_RIGHTS file descriptors: fork a supervisor that runs the
      code exactly as spawn mode's does (run.supervise); answer {"pid": supervisor} with a
      socket to it as SCM_RIGHTS. After the execution the supervisor sends "r" on that socket
      and waits for the next "exec" request, until the socket is closed.
  {"op": "session", ...} with the session's ruleset, when Landlock is in use: fork a
      supervisor that runs session.supervise; answer {"pid": supervisor} with the socket to
      it, on which pyexec then speaks the session protocol (see session).
  {"op": "spare"} with the status pipe of the spare's execution to come: fork a spare
      supervisor, which at once forks the code's process; that process warms up (not with
      "cold": true, while pyexec rests) and waits. Answer {"pid": spare} with a socket to the
      code's process as SCM_RIGHTS; on it the process says {"ready": true}, then takes the
      "exec" request of one execution with its three standard streams (and its ruleset).
Nothing of one execution reaches the next: each runs in a fresh fork of the zygote, which
never runs user code itself. The zygote imports every module of the runner once, with this
one, and every process it forks finds them imported."""
import gc
import json
import os
import signal
import socket
import sys

from . import blas, codeproc, outputs, run, session
from .cell import run_cell
from .confine import oom_first, preconfine, protect_self
from .linux import PR_GET_NO_NEW_PRIVS, SUPERVISOR_NAME, ZYGOTE_NAME, libc, make_subreaper, set_name, sock_fprog
from .procs import children, has_children
from .protocol import recv_fds, send_fds

CONTROL_FD = 3

# The warm-up of a spare's code process when pyexec passes none: it touches what executions
# typically touch in the preloaded libraries (lazy imports, caches, and the pages they write),
# so that an execution does not pay those copy-on-write faults itself. It must leave nothing an
# execution could see: no figure stays open, and the random state is re-seeded afterwards.
BUILTIN_WARMUP = """
import sys
if "numpy" in sys.modules:
    import numpy as np
    a = np.arange(1000, dtype=float).reshape(10, 100)
    (a.mean(axis=0) + a.std(axis=1).sum()).tolist()
if "pandas" in sys.modules:
    import pandas as pd
    df = pd.DataFrame({"a": range(1000), "b": [i * 0.5 for i in range(1000)], "c": ["x", "y"] * 500})
    df.describe(); df.groupby("c").b.sum(); df.merge(df.head(), on="a"); df.to_string(max_rows=5)
if "matplotlib" in sys.modules:
    import io
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [3, 1, 2], label="x"); ax.legend(); ax.set_title("t")
    fig.savefig(io.BytesIO(), format="png")
    plt.close(fig)
"""


# The supervisors the zygote forked and that still run. The zygote is a child subreaper too:
# when code kills its own supervisor, the code's processes are handed to the zygote, which
# kills them (they hold the execution's pipes, so pyexec would wait for them).
_supervisors = set()


def _reap(signum, frame):
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        _supervisors.discard(pid)
    for pid in children():
        if pid not in _supervisors:
            try:
                os.kill(pid, signal.SIGKILL)  # an orphan of a killed supervisor
            except ProcessLookupError:
                pass


def _preload(modules):
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except BaseException as e:  # a bad preload must not stop the zygote
            sys.stderr.write("pyexec zygote: preload %s failed: %s: %s\n" % (name, type(e).__name__, e))
    if "matplotlib" in sys.modules:
        try:  # pyplot on Agg, and the font cache, built once in MPLCONFIGDIR
            import matplotlib.pyplot  # noqa: F401
        except Exception as e:
            sys.stderr.write("pyexec zygote: matplotlib.pyplot: %s: %s\n" % (type(e).__name__, e))
    # What the runner imports in every supervisor and code process, imported once here.
    for name in ("ctypes", "resource", "linecache", "types", "select", "random", "traceback", "atexit", "base64", "struct", "ast", "io",
                 "fcntl", "errno", "time", "array"):
        try:
            importlib.import_module(name)
        except Exception:  # a minimal Python without ctypes still runs
            pass
    try:
        libc()
        sock_fprog()
        blas.setters()  # of the pools the preload loaded: each execution sets its share
        outputs.hook_modules()  # once for every fork
    except Exception:
        pass
    # What is imported now lives as long as the zygote. Frozen, the collector of a child never
    # walks it: each object it touched would be a copy-on-write page fault.
    gc.collect()
    if hasattr(gc, "freeze"):
        gc.freeze()


def _leave_zygote(ctl):
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
    ctl.close()


def _enter(req, stdio, seeded=False):
    """In the code's process, once its execution is known: its standard streams, directory,
    environment, packages tree, and a random sequence of its own (forked children share the
    zygote's) unless it drew one since its fork (seeded: a spare did as it warmed up)."""
    for fd, target in zip(stdio or (), (0, 1, 2)):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(req["cwd"])
    _set_environ(req["env"])
    if req.get("tree"):
        sys.path.insert(0, req["tree"])
    if not seeded:
        _reseed()


def _set_environ(env):
    """Make os.environ exactly env, changing only what differs: each variable set or removed
    is a call into the C library, and most are the same from one execution to the next."""
    for name in [name for name in os.environ if name not in env]:
        del os.environ[name]
    for name, value in env.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


def _reseed():
    """A random sequence of this process's own, for random and numpy.random."""
    import random

    random.seed()
    np = sys.modules.get("numpy")
    if np is not None:
        try:
            np.random.seed()
        except Exception:
            pass


def _supervisor(req, fds, ctl, conn):
    """In a supervisor forked for an execution: leave the zygote's ways, supervise; then stay
    for the next execution pyexec sends on conn — forking the code's process from here costs
    one fork of a large interpreter less than forking a supervisor first — until conn closes."""
    _leave_zygote(ctl)
    while True:
        stdin, stdout, stderr, status_fd = fds[:4]
        ruleset = fds[4] if len(fds) > 4 else None
        os.set_inheritable(status_fd, False)

        def prepare():
            conn.close()
            _enter(req, (stdin, stdout, stderr))

        run.supervise(req["params"], status_fd, prepare, handed=(stdin, stdout, stderr), ruleset_fd=ruleset)
        try:
            conn.send(b"r")  # ready: the next execution is not kept waiting
            msg, fds = recv_fds(conn)
        except OSError:
            os._exit(0)
        if not msg or len(fds) not in (4, 5):
            os._exit(0)
        req = json.loads(msg)


def _session(req, fds, ctl, conn):
    """In a supervisor forked for a session: supervise it (session.supervise) until pyexec
    closes conn, then end."""
    _leave_zygote(ctl)

    def prepare():
        _enter(req, None)

    session.supervise(conn, req["params"], prepare, fds[0] if fds else None)
    os._exit(0)


def _warm_up(code):
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # what the warm-up prints goes nowhere; its errors go to the log
    os.close(devnull)
    try:
        exec(compile(code, "<warmup>", "exec"), {"__name__": "__pyexec_warmup__"})
    except BaseException as e:
        sys.stderr.write("pyexec spare: warm-up failed: %s: %s\n" % (type(e).__name__, e))
    _reseed()  # after the fork: the spare's execution has this sequence (_enter's seeded)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    gc.collect()  # the warm-up's garbage, collected now and not during the execution


def _rehearse():
    """In a spare's code process, before it waits: touch what running an execution touches —
    the runner's modules and functions, the environment, the confinement's preparations, a
    cell of code, a print — and fault in free blocks of the allocators, so that the
    copy-on-write faults of those pages are taken now (here each costs 10-30 µs). A cold spare,
    which skips the warm-up, relies on it alone."""
    import builtins  # noqa: F401
    import linecache  # noqa: F401
    import resource
    import types

    for name in ("RLIMIT_AS", "RLIMIT_NPROC", "RLIMIT_FSIZE", "RLIMIT_CORE"):
        resource.getrlimit(getattr(resource, name))
    env = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(os.getcwd())
    json.loads(json.dumps({"params": {"code": "/c", "limits": {"nproc": 1}}, "cwd": "/", "env": env}))
    try:
        _rehearse_confinement()
    except Exception:
        pass
    main = types.ModuleType("__main__")
    run_cell("print(1)\n", main, "<code>")  # stdout is /dev/null here
    sys.stdout.flush()
    children()
    has_children()
    # Small objects of every size class, and some larger ones, allocated and freed: an
    # execution's first allocations then reuse these blocks instead of copying pages of the
    # zygote's that have free blocks (some 0.8 MiB).
    blocks = [bytes(n) for n in range(1, 480, 8) for _ in range(8)]
    blocks += [bytes(n) for n in range(512, 8192, 256) for _ in range(2)]
    del blocks


def _rehearse_confinement():
    """What confine does before it confines, with the same calls: the seccomp program's buffers
    (not installed) and a prctl that changes nothing."""
    import base64
    import ctypes
    import struct

    os.listdir("/proc/self/task")
    prog = bytearray(base64.b64decode(base64.b64encode(bytes(64))))
    struct.pack_into("=I", prog, 0, os.getppid())
    buf = ctypes.create_string_buffer(bytes(prog), len(prog))
    ctypes.byref(sock_fprog()(len(prog) // 8, ctypes.addressof(buf)))
    libc().prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
    ctypes.get_errno()


def _spare(req, ctl, conn, status_fd, warmup):
    """In a spare supervisor, forked ahead of time: fork the code's process now, which warms up
    and then waits on conn for its execution; supervise it as any other, then end."""
    _leave_zygote(ctl)
    os.setpgid(0, 0)  # pyexec pauses a spare that warms up while executions run, as a group
    os.set_inheritable(status_fd, False)
    subreaper = make_subreaper()
    child, done = codeproc.fork_code()
    if child == 0:
        os.close(status_fd)
        _warm_up(warmup)
        _rehearse()
        try:
            oom_first()  # the execution's process, ahead: a spare is the first to go too
            preconfine(req.get("confine"), codeproc.done_fd())
        except Exception as e:
            sys.stderr.write("pyexec spare: could not be confined ahead: %s\n" % e)
            os._exit(1)
        conn.send(b'{"ready": true}')
        msg, fds = recv_fds(conn)
        conn.close()
        if not msg or len(fds) not in (3, 4):
            os._exit(0)  # pyexec let the spare go
        ex = json.loads(msg)
        _enter(ex, fds[:3], seeded=True)  # _warm_up drew its sequence
        run.run_code(ex["params"], fds[3] if len(fds) > 3 else None)
    conn.close()
    run.watch(child, status_fd, subreaper, done)
    os._exit(0)


def _fork(req, fds, ctl, warmup):
    """Fork the supervisor a request asks for; answer its pid, with the socket to it."""
    op = req.get("op")
    spare = op == "spare"
    if spare and len(fds) != 1:
        raise ValueError("a spare takes its status fd, got %d file descriptors" % len(fds))
    if op == "session" and len(fds) > 1:
        raise ValueError("a session takes at most its ruleset, got %d file descriptors" % len(fds))
    if op == "exec" and len(fds) not in (4, 5):
        raise ValueError("want 4 or 5 file descriptors, got %d" % len(fds))
    if op not in ("spare", "session", "exec"):
        raise ValueError("unknown op %r" % op)
    conn, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    # SIGCHLD waits until the new supervisor is in the set: the handler would take it for an
    # orphan and kill it.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    try:
        pid = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        raise
    if pid == 0:
        try:  # never back into the zygote's loop
            set_name(SUPERVISOR_NAME)
            theirs.close()
            if spare:
                _spare(req, ctl, conn, fds[0], "pass" if req.get("cold") else warmup)
            if op == "session":
                _session(req, fds, ctl, conn)
            _supervisor(req, fds, ctl, conn)
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(1)
    _supervisors.add(pid)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
    if spare:
        try:  # as the spare does itself: its group exists by the time pyexec has its pid
            os.setpgid(pid, pid)
        except OSError:
            pass
    conn.close()
    send_fds(ctl, json.dumps({"pid": pid}).encode(), [theirs.fileno()])
    theirs.close()


def main(path_entry):
    set_name(ZYGOTE_NAME)
    protect_self()
    codeproc.set_path_entry(path_entry)
    params = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    _preload(params.get("preload") or [])
    warmup = params.get("warmup") or BUILTIN_WARMUP
    make_subreaper()
    signal.signal(signal.SIGCHLD, _reap)
    ctl = socket.socket(fileno=CONTROL_FD)
    while True:
        try:
            msg, fds = recv_fds(ctl)
        except InterruptedError:
            continue
        if not msg:
            os._exit(0)  # pyexec closed the control socket
        try:
            _fork(json.loads(msg), fds, ctl, warmup)
        except Exception as e:
            ctl.send(json.dumps({"error": "%s: %s" % (type(e).__name__, e)}).encode())
        finally:
            for fd in fds:
                os.close(fd)
