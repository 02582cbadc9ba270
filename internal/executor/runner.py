# pyexec runner: supervises one execution. In spawn mode pyexec starts it as
#     python -s -u -c BOOTSTRAP '{"code": ..., "limits": {...}}'
# where the short bootstrap reads RUNNER+"runner_main()" from a pipe (pythonCommand), with the
# execution's directory as cwd, stdin/stdout/stderr as the code's, a status pipe on fd 3 and
# the Landlock ruleset on fd 4; in fork mode zygote.py calls supervise() in a child it forked. The
# supervisor makes itself a child subreaper, so every process the code starts — also one that
# calls setsid() or double-forks — stays its descendant; forks the child that runs the code
# under the limits and the confinement; reaps everything; kills what the code left behind; and
# writes one status line on the status fd, which the code's process never holds. Standard
# library only.
import sys

# `python -c` puts the working directory first on sys.path, and the code's input files are
# there: a file named json.py or resource.py must not replace the runner's own modules (nor
# switch the limits off). The code gets the directory back in run_code, after the limits.
_cwd_entry = sys.path.pop(0)

import json
import os

PR_SET_DUMPABLE = 4
PR_SET_NAME = 15
PR_SET_SECCOMP = 22
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_MODE_FILTER = 2
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 8
SECCOMP_IOCTL_NOTIF_RECV = 0xC0502100
SECCOMP_IOCTL_NOTIF_SEND = 0xC0182101
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1

# In the code's process: its end of the socket on which it tells its supervisor that the code
# finished (see _finish), and the process's pid: a process the code forks inherits both, and
# its own end must not be taken for the code's.
_done_fd = None
_code_pid = None
# In the code's process, between its confinement and the code: the listener of its process
# budget, for the supervisor (see Budget).
_listener = None


def status(fd, **fields):
    try:
        os.write(fd, (json.dumps(fields) + "\n").encode())
    except OSError:
        pass


_libc = None


def libc():
    """The C library through ctypes, looked up once (in the zygote, once for every fork)."""
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def prctl(option, arg):
    """prctl(2); raises OSError on failure."""
    if libc().prctl(option, arg, 0, 0, 0) != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, "prctl(%d): %s" % (option, os.strerror(err)))


# What the code's processes are called (/proc/PID/comm, what ps shows), as the interpreter they
# are; pyexec's own processes say what they are: pyexec-zygote, pyexec-super (a supervisor).
CODE_NAME = os.path.basename(sys.executable or "python3").encode()[:15]
SUPERVISOR_NAME = b"pyexec-super"


def set_name(name):
    try:
        libc().prctl(PR_SET_NAME, name, 0, 0, 0)
    except Exception:  # no ctypes: ps shows python for all
        pass


def make_subreaper():
    try:
        prctl(PR_SET_CHILD_SUBREAPER, 1)
        return True
    except Exception:  # no ctypes in a minimal Python: the server's reaper still reaps
        return False


def protect_self():
    """Make this process non-dumpable: a process of the same uid (the code) can then neither
    read its /proc files (environ, mem, fds) nor ptrace it. Forked children inherit it. And
    raise its soft limit of open files to the hard one: the kernel refuses to pass descriptors
    on a Unix socket once its uid has more in flight than the sender's soft limit, and the code,
    of the same uid, has a far lower one (see _limit)."""
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


_sock_fprog = None


def sock_fprog():
    """struct sock_fprog, made once (in the zygote, once for every fork)."""
    global _sock_fprog
    if _sock_fprog is None:
        import ctypes

        class SockFprog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

        _sock_fprog = SockFprog
    return _sock_fprog


def oom_first():
    """The out-of-memory killer takes the code's process first, never the server. /proc/self of
    a non-dumpable process belongs to root: raising its own oom_score_adj is allowed on a file
    it owns, for the moment it is dumpable — before it holds anything of its request."""
    prctl(PR_SET_DUMPABLE, 1)
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write("1000")
    prctl(PR_SET_DUMPABLE, 0)


def confine(spec, ruleset_fd):
    """In the code's process, before the code: no_new_privs, the Landlock ruleset pyexec built
    for this execution (ruleset_fd), the seccomp program, and the process budget's, whose
    listener it returns (None without a budget, or when preconfine handed it already). All
    apply to the calling thread and the threads it starts later: the process must have no other
    thread. Raises OSError when a layer cannot be applied: the code must not run."""
    import ctypes

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
        if libc().syscall(spec["landlock_restrict_self"], ruleset_fd, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, "landlock_restrict_self: %s" % os.strerror(err))
        os.close(ruleset_fd)
    listener = None if ahead else _install_filters(spec)
    if ruleset_fd is not None:
        # Dumpable, so that the supervisor can read the tree's memory (smaps_rollup): Landlock
        # keeps every process outside this domain — other executions' code — from ptrace and
        # from its /proc files all the same, and /proc is read-only to the code itself.
        prctl(PR_SET_DUMPABLE, 1)
    return listener


def _install_filters(spec):
    """Install spec's seccomp programs in this process; returns the budget's listener, or None."""
    import ctypes

    if spec.get("seccomp"):
        import base64
        import struct

        prog = bytearray(base64.b64decode(spec["seccomp"]))
        # Where the program compares with the supervisor's pid (confine.ParentPID), it is put in:
        # the code must not signal its supervisor where Landlock cannot scope signals.
        for off in spec.get("parent_pid_offsets") or ():
            struct.pack_into("=I", prog, off, os.getppid())
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


def run_code(params, ruleset_fd=None):
    """In the forked child: apply the limits and the confinement, then run the code as
    __main__. Never returns."""
    _limit(params)
    with open(params["code"], encoding="utf-8", errors="surrogateescape") as f:
        source = f.read()
    main = _confined(params, ruleset_fd)
    _hand_limits(_done_fd, params)
    set_blas_threads(params.get("threads"))
    status, memory_error = _cell(source, main, "<code>")
    _exit(status, memory_error)


def _limit(params):
    """The code's limits, its directory, and the out-of-memory killer's choice."""
    import resource

    limits = params["limits"]
    for name, value in (("RLIMIT_AS", limits.get("as_bytes")), ("RLIMIT_NPROC", limits.get("nproc")),
                        ("RLIMIT_FSIZE", limits.get("fsize_bytes")), ("RLIMIT_CORE", 0)):
        if value is not None:
            resource.setrlimit(getattr(resource, name), (value, value))
    os.chdir(params["cwd"])
    oom_first()
    sys.path.insert(0, _cwd_entry)


def _confined(params, ruleset_fd):
    """The request's environment and the outputs file, opened while they can be; a process
    group of its own; the confinement; then a fresh __main__ to run the code in. A process that
    cannot be confined ends here (status 126): the code must not run unconfined."""
    import builtins
    import types

    global _pinned
    with open(params["env"], encoding="utf-8") as f:
        env = json.load(f) or {}
    os.environ.update(env)
    _pinned = set(env) & set(BLAS_VARS)
    global _outputs
    if params.get("outputs"):  # opened now: confined, the code could not open it
        _outputs = open(params["outputs"], "a", encoding="utf-8")
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
    builtins.display = display
    _hook_modules()
    return main


# The thread pools of BLAS and OpenMP libraries (numpy's, scipy's, torch's). Every interpreter
# pyexec starts has 1 thread each in its environment: the zygote, the spares and the code's
# process before its confinement must have no thread that confinement would not reach. Each
# execution's code gets its share of the runner's CPUs (Spawn.share), after its confinement (a
# pool's threads are then confined too and count against its budget): in the environment, for
# the libraries the code loads itself, and in the OpenMP and MKL pools already loaded, through
# their own set_num_threads, which start no thread. OpenBLAS's would start its pool at once,
# 2-3 ms in every execution: a preloaded OpenBLAS keeps 1 thread unless the request's env sets
# OPENBLAS_NUM_THREADS. A variable the request's env sets is the request's.
BLAS_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
_pinned = set()  # BLAS_VARS the request's env set
_blas_threads = 1  # what the loaded OpenMP and MKL pools run with
_blas_setters = None  # their set_num_threads functions, once found
_blas_modules = 0  # how many modules were loaded when none was found


def set_blas_threads(n, env=(), session=False):
    """Set the execution's share n. What is loaded in an execution's process came from the
    zygote, which found its pools once; a session's interpreter may load more between calls."""
    global _blas_threads
    if not isinstance(n, int) or n < 1:
        return
    pinned = _pinned | (set(env) & set(BLAS_VARS))
    for k in BLAS_VARS:
        if k not in pinned:
            os.environ[k] = str(n)
    if "OPENBLAS_NUM_THREADS" in pinned:
        _set_openblas(os.environ["OPENBLAS_NUM_THREADS"])
    if n == _blas_threads or pinned:
        return
    for fn in (blas_setters() if session or _blas_setters is None else _blas_setters):
        try:
            fn(n)
        except Exception:
            pass
    _blas_threads = n


def _set_openblas(value):
    """What the request's env asks of a loaded OpenBLAS, which then starts its pool at once."""
    import ctypes

    try:
        n = int(value)
        with open("/proc/self/maps") as f:
            libs = {line.split(None, 5)[5].rstrip("\n") for line in f if "blas" in line and len(line.split(None, 5)) == 6}
    except (OSError, ValueError):
        return
    for lib in libs:
        try:
            handle = ctypes.CDLL(lib)
        except OSError:
            continue
        for symbol in ("openblas_set_num_threads", "openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                       "scipy_openblas_set_num_threads64_"):
            fn = getattr(handle, symbol, None)
            if fn is not None:
                fn.argtypes, fn.restype = [ctypes.c_int], None
                fn(n)
                break


def blas_setters():
    """The set_num_threads functions of the OpenMP and MKL libraries loaded in this process,
    found in /proc/self/maps; looked for again while there are none."""
    global _blas_setters, _blas_modules
    if _blas_setters is not None and (_blas_setters or _blas_modules == len(sys.modules)):
        return _blas_setters
    _blas_modules = len(sys.modules)
    import ctypes

    try:
        with open("/proc/self/maps") as f:
            libs = sorted({line.split(None, 5)[5].rstrip("\n") for line in f if ".so" in line and len(line.split(None, 5)) == 6})
    except OSError:
        return []
    found = []
    for lib in libs:
        name = os.path.basename(lib).lower()
        if "gomp" in name or "libomp" in name or "iomp" in name:
            symbols = ("omp_set_num_threads",)
        elif "mkl_rt" in name:
            symbols = ("MKL_Set_Num_Threads",)
        else:
            continue
        try:
            handle = ctypes.CDLL(lib)
        except OSError:
            continue
        for symbol in symbols:
            fn = getattr(handle, symbol, None)
            if fn is not None:
                fn.argtypes, fn.restype = [ctypes.c_int], None
                found.append(fn)
                break
    _blas_setters = found
    return found


def _hand_limits(sock_fd, params, msg=None):
    """Hand the tree's limits to the supervisor on sock_fd, with msg's fields, before the code
    runs: the memory limit, and the process budget with its listener. What comes later on that
    socket is the code's word, and the supervisor takes limits only once. Then lower the limit
    of open files: the kernel refuses to pass a descriptor when its uid has more in flight than
    the sender's limit, which code may have filled up to its own (see codeOpenFiles)."""
    import resource
    import socket

    global _listener
    fields = dict(msg or {})
    limits = params["limits"]
    if limits.get("memory_bytes"):
        fields["memory"] = limits["memory_bytes"]
    fds = []
    if _listener is not None:
        fds = [_listener]
    if _listener is not None or (_preconfined is not None and _preconfined[1]):
        fields["budget"] = limits["tasks"]
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


def _cell(source, main, filename):
    """Run source in main's namespace as a notebook runs a cell: the value of a final
    expression is the execute_result, and open figures are shown at the end. Returns the exit
    status (0, 1 for an exception, SystemExit's) and whether a MemoryError ended the code."""
    import linecache

    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    sys.argv = [filename]
    try:
        import ast

        tree = compile(source, filename, "exec", ast.PyCF_ONLY_AST)
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, filename, "exec"), main.__dict__)
        if last is not None:
            value = eval(compile(last, filename, "eval"), main.__dict__)
            if value is not None:
                _emit("execute_result", value)
        _show_figures()
    except SystemExit as e:
        _show_figures()
        return _exit_status(e.code), False
    except BaseException as e:
        _show_figures()
        if e.__traceback__ is not None:
            e.__traceback__ = e.__traceback__.tb_next  # hide this frame
        if sys.excepthook is sys.__excepthook__:
            import traceback  # the Python printer reads the source from linecache

            traceback.print_exception(type(e), e, e.__traceback__)
        else:
            sys.excepthook(type(e), e, e.__traceback__)
        return 1, isinstance(e, MemoryError)
    return 0, False


# Rich outputs, in Jupyter's vocabulary: one JSON line each, {"type": "execute_result" |
# "display_data", "data": {MIME type: value}}, on the execution's outputs file, which pyexec
# reads after the code (bounded by --max-files-out-bytes).
_outputs = None


def _bundle(obj):
    data = {"text/plain": repr(obj)}
    html = getattr(obj, "_repr_html_", None)
    if callable(html):
        try:
            text = html()
            if isinstance(text, str):
                data["text/html"] = text
        except Exception:
            pass
    png = None
    if type(obj).__module__.startswith("matplotlib") and hasattr(obj, "savefig"):
        import io

        buf = io.BytesIO()
        obj.savefig(buf, format="png")
        png = buf.getvalue()
    elif callable(getattr(obj, "_repr_png_", None)):
        try:
            png = obj._repr_png_()
        except Exception:
            png = None
    if isinstance(png, bytes):
        import base64

        data["image/png"] = base64.b64encode(png).decode("ascii")
    return data


def _emit(kind, obj):
    if _outputs is None:
        return
    try:
        _outputs.write(json.dumps({"type": kind, "data": _bundle(obj)}) + "\n")
        _outputs.flush()
    except Exception as e:
        sys.stderr.write("pyexec: an output was not sent: %s: %s\n" % (type(e).__name__, e))


def display(*objs, **kwargs):
    """display(obj, ...) as in a notebook: each object becomes a display_data output."""
    for obj in objs:
        _emit("display_data", obj)


def _show_figures(*args, **kwargs):
    """Every open matplotlib figure becomes a display_data output (a PNG), then is closed: on
    plt.show() and when the code ends, as a notebook's inline backend does."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return
    try:
        for num in plt.get_fignums():
            _emit("display_data", plt.figure(num))
        plt.close("all")
    except Exception as e:
        sys.stderr.write("pyexec: figures were not sent: %s: %s\n" % (type(e).__name__, e))


class _PatchOnImport:
    """Patches the module name with patch(module) as the code imports it, once."""

    def __init__(self, name, patch):
        self.name, self.patch = name, patch

    def find_spec(self, name, path, target=None):
        if name != self.name:
            return None
        sys.meta_path.remove(self)
        import importlib.util

        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            exec_module, patch = spec.loader.exec_module, self.patch

            def exec_and_patch(module):
                exec_module(module)
                patch(module)

            spec.loader.exec_module = exec_and_patch
        return spec


def _patch_module(name, patch):
    module = sys.modules.get(name)
    if module is not None:  # preloaded by the zygote
        patch(module)
    else:
        sys.meta_path.insert(0, _PatchOnImport(name, patch))


_hooked = False  # _hook_modules ran in this process, or in the zygote it was forked from


def _hook_modules():
    """pyplot.show() sends the figures (_show_figures); the names multiprocessing gives shared
    memory and semaphores in /dev/shm carry 128 random bits, not 32 (shared_memory) or about 41
    (semaphores): confined code may open a name it knows there, so a name must not be found by
    probing. Once per process: the zygote's hooks hold in every fork of it."""
    global _hooked
    if _hooked:
        return
    _hooked = True
    _patch_module("matplotlib.pyplot", _patch_show)
    _patch_module("multiprocessing.shared_memory", _patch_shm_names)
    _patch_module("multiprocessing.synchronize", _patch_sem_names)


def _patch_show(module):
    module.show = _show_figures


def _patch_shm_names(module):
    import secrets

    prefix = getattr(module, "_SHM_NAME_PREFIX", "/psm_")
    module._make_filename = lambda: prefix + secrets.token_hex(16)


def _patch_sem_names(module):
    import secrets

    def _make_name():
        from multiprocessing import process

        return "%s-%s" % (process.current_process()._config["semprefix"], secrets.token_hex(16))

    module.SemLock._make_name = staticmethod(_make_name)


def _exit_status(code):
    """The exit status of SystemExit(code), as the interpreter computes it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        sys.stderr.write(str(code) + "\n")
    except Exception:
        pass
    return 1


def _exit(status, memory_error=False):
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
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    if _done_fd is not None and os.getpid() == _code_pid:
        _finish(status, memory_error)
    os._exit(status)


def _finish(status, memory_error):
    """Tell the supervisor that the code finished, before this process ends: the teardown of
    an address space as large as a preloaded interpreter's costs milliseconds, and the result
    need not wait for it. First end the code's own processes (their orphans go to the
    supervisor, which kills them), then close the streams, then report "STATUS" or "STATUS m"
    (a MemoryError ended the code). What the code could write here itself says no more than
    sys.exit(STATUS) or raise MemoryError would."""
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
        os.write(_done_fd, b"%d%s" % (status, b" m" if memory_error else b""))
    except OSError:
        pass  # the supervisor waits for the exit instead


def has_children():
    """Whether this process has a child, running or ended (one waitid, reaping none)."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WSTOPPED | os.WCONTINUED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    except OSError:
        pass
    return True


def children(me=None):
    """The children of me (this process by default)."""
    proc = "/proc/self" if me is None else "/proc/%d" % me
    me = me or os.getpid()
    try:  # each thread has its own list of the children it forked
        kids = []
        for task in os.listdir(proc + "/task"):
            with open("%s/task/%s/children" % (proc, task)) as f:
                kids.extend(int(p) for p in f.read().split())
        return kids
    except FileNotFoundError:
        if me != os.getpid() and not os.path.exists(proc):
            return []  # it ended
    except OSError:
        pass
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == me:
                kids.append(int(entry))
    return kids


def reap_all():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_leftovers(keep=None):
    """Kill every process the code left behind. As a subreaper, each orphan becomes our child
    when its parent dies, so killing children until none remain empties the whole tree. keep
    is a child that finished and is ending by itself (the code's process after _finish)."""
    import signal

    for _ in range(10000):
        kids = [pid for pid in children() if pid != keep]
        if not kids:
            return
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in kids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        reap_all()


def supervise(params, status_fd, prepare=None, handed=(), ruleset_fd=None):
    """Run the code in a child and report how it ended on status_fd. prepare, when given, runs
    in the child first (fork mode: standard streams, directory, environment, user); handed are
    the child's descriptors, closed in the supervisor after the fork so that the streams end
    with the child, and so is the Landlock ruleset. Returns when the execution is over:
    reported, and nothing of it left."""
    subreaper = make_subreaper()
    sys.stdout.flush()
    sys.stderr.flush()
    child, done = fork_code()
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


def fork_code():
    """Fork the code's process, with the socket on which it hands over its budget's listener
    and reports that the code finished. Returns its pid and the supervisor's end of the socket,
    (0, None) in the process."""
    import socket

    global _done_fd, _code_pid
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    child = os.fork()
    if child == 0:
        set_name(CODE_NAME)
        mine.close()
        _done_fd, _code_pid = theirs.detach(), os.getpid()
        return 0, None
    theirs.close()
    return child, mine


def watch(child, status_fd, subreaper, done):
    """In the supervisor: wait until the code's process (child) reports on done that the code
    finished, or ends, holding its tree to its limits meanwhile; kill what it left behind; write
    the status line and close status_fd, which ends the execution for pyexec."""
    import signal

    children()  # fault in now the pages that reporting touches
    json.dumps({"exit_code": 0})
    tree = Tree()
    try:
        early, memory_error, st = _wait(child, done, tree)
    finally:
        done.close()
    if early is not None:
        # The code's process is ending; but code may have written on done itself while it
        # goes on running: kill it, so that whatever it is doing ends with the result.
        os.kill(child, signal.SIGKILL)
    if not tree.forkless():
        kill_leftovers(keep=child if st is None else None)
    tree.close()
    if memory_error or tree.over_memory:
        status(status_fd, memory_error=True)
    if tree.refused:
        status(status_fd, process_limit=True)
    if early is not None:
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


def _wait(child, done, tree):
    """Reap every process that ends, and hold the tree to its limits, until the code's process
    reports its exit status on done (returns it, whether a MemoryError ended the code, None) or
    ends without (returns None, False, its wait status). Past its memory limit the tree is
    killed."""
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
            while True:
                try:
                    pid, st = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    pid = 0
                except InterruptedError:
                    continue
                if pid == child:
                    return None, False, st
                if pid == 0:
                    break
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
                    data = msg.split()
                    try:
                        return int(data[0]), data[1:] == [b"m"], None
                    except (ValueError, IndexError):  # EOF, or not a report: wait for the exit
                        if not msg:
                            poller.unregister(fd)
            if tree.memory_over():
                os.kill(child, signal.SIGKILL)  # the rest of the tree goes after the result
                _, st = os.waitpid(child, 0)
                return None, False, st
    finally:
        if pidfd is not None:
            os.close(pidfd)


class Tree:
    """The supervisor's side of the limits of the code's tree — every process below the
    supervisor — which the code's process hands over before its code runs (_hand_limits): its
    process budget and its memory limit.

    The process budget, where the kernel lets the supervisor count (confine.BudgetFilter):
    every clone, clone3, fork and vfork of the code's processes waits for the supervisor's
    answer, which lets it go on while the tree holds fewer than its budget of tasks (processes
    and threads, as RLIMIT_NPROC counts them) and refuses it with EAGAIN, as RLIMIT_NPROC would,
    otherwise. The count costs no /proc read per call: bound, an upper bound of the tree's
    tasks, grows with each allowance and is recounted from /proc only when it reaches the
    budget. A clone the supervisor let go on is in /proc once its thread has run again: a
    recount first waits until GRACE has passed since the latest allowance. The tree passes its
    budget only by the clones the scheduler kept from running for longer than that.

    The memory limit: the tree's resident memory, read every INTERVAL (tree_memory); past the
    limit the supervisor kills the tree."""

    GRACE = 0.005
    INTERVAL = 0.1

    def __init__(self):
        self.taken = False
        self.fd = None  # the budget's listener
        self.limit = 0
        self.bound = 0
        self.last = 0.0  # time of the latest allowance
        self.refused = 0
        self.allowed = 0  # new tasks the budget let the tree make
        self.memory = 0  # bytes; 0: no limit
        self.over_memory = False
        self._due = 0.0

    def take(self, msg, fds):
        """Take what the code's process hands over before its code runs: the budget's listener
        alone ({"listener": true}, from a spare confined ahead: preconfine), then the limits,
        once. True when a listener to answer comes with either. Descriptors not taken are
        closed. Until the limits come, the listener refuses every new task."""
        limits = None
        if not self.taken:
            try:
                limits = json.loads(msg)
            except ValueError:
                pass
        if not isinstance(limits, dict):
            for fd in fds:
                os.close(fd)
            return False
        if limits.get("listener") is True:
            if self.fd is not None or not fds:
                for fd in fds:
                    os.close(fd)
                return False
            for fd in fds[1:]:
                os.close(fd)
            self.fd, self.limit, self.bound = fds[0], 1, 1
            return True
        self.taken = True
        memory, budget = limits.get("memory"), limits.get("budget")
        if isinstance(memory, int) and memory > 0:
            import time

            # The first reading one interval in: a short execution is over before, and its
            # supervisor does not take the CPU from it.
            self.memory, self._due = memory, time.monotonic() + self.INTERVAL
        if not isinstance(budget, int) or budget <= 0 or (self.fd is None) == (not fds):
            # No budget; or a listener twice, or none: the limits cannot be trusted to count.
            for fd in fds:
                os.close(fd)
            if self.fd is not None:
                self.limit = 1 << 30 if budget is None else 1
            return False
        for fd in fds[1:]:
            os.close(fd)
        if fds:
            self.fd = fds[0]
        self.limit, self.bound = budget, 1  # the code's process, alone
        return True

    def forkless(self):
        """True when the budget's listener came before the code ran and let the tree make no
        task: then no process of the tree can be left but the code's own, and there is nothing
        to look for."""
        return self.fd is not None and self.allowed == 0

    def timeout(self, ms):
        """poll's timeout: ms, or less when the memory is due to be read."""
        if not self.memory:
            return ms
        import time

        return max(0, min(ms, int((self._due - time.monotonic()) * 1000) + 1))

    def memory_over(self):
        """Read the tree's memory when it is due: True once it has been over the limit."""
        if not self.memory or self.over_memory:
            return self.over_memory
        import time

        now = time.monotonic()
        if now >= self._due:
            self._due = now + self.INTERVAL
            self.over_memory = tree_memory(os.getpid(), self.memory) > self.memory
        return self.over_memory

    def answer(self, event):
        """Answer one notification (poll's event on the listener). False when the listener has
        no process left: it says so with POLLHUP alone, and a read would then wait forever."""
        import errno
        import fcntl
        import select
        import struct
        import time

        if not event & select.POLLIN:
            return False
        req = bytearray(80)  # struct seccomp_notif, zeroed as the kernel wants it
        try:
            fcntl.ioctl(self.fd, SECCOMP_IOCTL_NOTIF_RECV, req, True)
        except OSError as e:
            # ENOENT: the caller was killed meanwhile. Otherwise no process is left to ask.
            return e.errno in (errno.ENOENT, errno.EINTR)
        if self.bound >= self.limit:
            wait = self.last + self.GRACE - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self.bound = tree_tasks(os.getpid())
        if self.bound >= self.limit:
            self.refused += 1
            resp = struct.pack("=QqiI", struct.unpack_from("=Q", req)[0], 0, -errno.EAGAIN, 0)
        else:
            self.bound += 1
            self.allowed += 1
            self.last = time.monotonic()
            resp = struct.pack("=QqiI", struct.unpack_from("=Q", req)[0], 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE)
        try:
            fcntl.ioctl(self.fd, SECCOMP_IOCTL_NOTIF_SEND, resp)
        except OSError:
            pass  # the caller was killed meanwhile
        return True

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def tree_pids(root):
    """The processes below root."""
    out, todo = [], children(root)
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children(pid))
    return out


def tree_tasks(root):
    """The processes and threads below root, zombies included (RLIMIT_NPROC counts them too)."""
    count = 0
    for pid in tree_pids(root):
        try:
            count += len(os.listdir("/proc/%d/task" % pid))
        except OSError:
            pass
    return count


_page_size = os.sysconf("SC_PAGE_SIZE")


def tree_memory(root, limit):
    """The resident memory of the processes below root, in bytes: the sum of their resident
    sets (statm: cheap) while it is at most limit; past it, of their proportional sets (Pss of
    smaps_rollup: a page n processes share counts 1/n in each, as pages forked processes share
    with their parent and the zygote), which a supervisor can read of dumpable processes only —
    the code's are where Landlock confines them (see confine) — and elsewhere their resident
    sets again."""
    rss = {}
    for pid in tree_pids(root):
        try:
            with open("/proc/%d/statm" % pid, "rb") as f:
                rss[pid] = int(f.read().split()[1]) * _page_size
        except (OSError, ValueError, IndexError):
            pass
    total = sum(rss.values())
    if total <= limit:
        return total
    total = 0
    for pid, resident in rss.items():
        try:
            with open("/proc/%d/smaps_rollup" % pid, "rb") as f:
                pss = 0  # no Pss line: its memory is gone already (it is exiting)
                for line in f:
                    if line.startswith(b"Pss:"):
                        pss = int(line.split()[1]) * 1024
                        break
            total += pss
        except PermissionError:  # not dumpable: its resident set
            total += resident
        except (OSError, ValueError, IndexError):  # gone
            pass
    return total


def recv_fds(sock, size=1 << 20):
    """One message of a SOCK_SEQPACKET socket (at most size bytes: the rest is cut) and the file
    descriptors that came with it."""
    import array
    import socket

    fds = array.array("i")
    msg, ancdata, _, _ = sock.recvmsg(size, socket.CMSG_SPACE(8 * fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    return msg, list(fds)


def send_fds(sock, msg, fds):
    import array
    import socket

    sock.sendmsg([msg], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else [])


# Sessions. A session is one interpreter that runs call after call in the same __main__: its
# supervisor (session_supervise) forks it, confined for its whole life exactly as an
# execution's code process is, and stays between it and pyexec. The supervisor's socket to
# pyexec (ctl) carries, for each call, {"op": "exec"} with four descriptors: a pipe with the
# call ({"code": ..., "env": {...}}), stdin, stdout and stderr. The supervisor passes them on to
# the interpreter over a socket of their own, numbered ({"op": "exec", "call": N}), waits until
# the interpreter answers that call ({"call": N, "exit_code": ...}) or dies
# (reaping and then killing every other process of the session: what the code starts ends
# with its call), and answers {"exit_code": N, "memory_error": bool}, or {"exit_code": N,
# "signal": S, "lost": true} when the interpreter is gone, after which it ends. Its first
# message is {"pid": interpreter} with a pidfd of the interpreter, through which pyexec
# interrupts a call (SIGINT: KeyboardInterrupt), or {"error": ...}. pyexec closing ctl ends
# the session. The interpreter holds nothing of pyexec's: what it says is the code's word,
# checked like any input, and it can mislead no one but its own session's caller.


def session_supervise(ctl, params, prepare=None, ruleset_fd=None):
    """Supervise a session until pyexec closes ctl or its interpreter ends. prepare, when
    given, runs first in the interpreter's process (fork mode: user, directory, environment)."""
    import signal
    import socket

    make_subreaper()
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:
        try:
            set_name(CODE_NAME)
            ctl.close()
            mine.close()
            if prepare is not None:
                prepare()
            session_main(params, ruleset_fd, theirs)
        finally:
            os._exit(1)
    theirs.close()
    if ruleset_fd is not None:
        os.close(ruleset_fd)
    pidfd = os.pidfd_open(child)
    tree = Tree()
    answer, st = _session_wait(child, mine, pidfd, tree)
    if answer is None or not answer.get("ready"):
        error = (answer or {}).get("error") or "the session's interpreter %s" % _ended(st)
        send_fds(ctl, json.dumps({"error": str(error)[:4096]}).encode(), [])
        os._exit(1)
    send_fds(ctl, json.dumps({"pid": child}).encode(), [pidfd])
    # At rest between calls: the interpreter is stopped, with its threads — no CPU, no new
    # thread or connection — and continued for the next call.
    os.kill(child, signal.SIGSTOP)
    calls = 0
    while _session_idle(child, ctl, pidfd, tree):
        try:
            msg, fds = recv_fds(ctl)
        except OSError:
            break
        if not msg or len(fds) != 4:
            for fd in fds:
                os.close(fd)
            break
        # Each call is numbered: what the code itself writes on its socket cannot pass for
        # the answer of a later call.
        calls += 1
        os.kill(child, signal.SIGCONT)
        try:
            send_fds(mine, json.dumps({"op": "exec", "call": calls}).encode(), fds)
        except OSError:
            pass  # the interpreter is gone: _session_wait says how it ended
        for fd in fds:
            os.close(fd)
        tree.refused = 0
        answer, st = _session_wait(child, mine, pidfd, tree, calls)
        kill_leftovers(keep=child if st is None else None)
        if st is None:
            os.kill(child, signal.SIGSTOP)
        if st is not None:
            reply = {"exit_code": 1, "lost": True, "memory_error": tree.over_memory}
            if os.WIFSIGNALED(st):
                reply.update(exit_code=128 + os.WTERMSIG(st), signal=os.WTERMSIG(st))
            elif os.WIFEXITED(st):
                reply["exit_code"] = os.WEXITSTATUS(st)
            send_fds(ctl, json.dumps(reply).encode(), [])
            break
        code = answer.get("exit_code")
        reply = {"exit_code": code if isinstance(code, int) and 0 <= code <= 255 else 1,
                 "memory_error": answer.get("memory_error") is True, "process_limit": tree.refused > 0}
        try:
            send_fds(ctl, json.dumps(reply).encode(), [])
        except OSError:
            break
    kill_leftovers()
    os._exit(0)


def _ended(st):
    if st is None:
        return "did not start"
    if os.WIFEXITED(st) and os.WEXITSTATUS(st) == 126:
        return "could not be confined"
    if os.WIFSIGNALED(st):
        return "was killed by signal %d" % os.WTERMSIG(st)
    return "exited with status %d" % os.WEXITSTATUS(st)


def _session_idle(child, ctl, pidfd, tree):
    """Between calls: reap what ends and hold the tree to its limits, until pyexec sends (True)
    or the interpreter ends (False): past its memory limit the session is killed."""
    import select
    import signal

    poller = select.poll()
    poller.register(ctl.fileno(), select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    if tree.fd is not None:
        poller.register(tree.fd, select.POLLIN)
    while True:
        reap_all()
        events = dict(poller.poll(tree.timeout(1000)))
        if tree.fd in events:
            if not tree.answer(events.pop(tree.fd)):
                poller.unregister(tree.fd)
                tree.close()
        if tree.memory_over():
            os.kill(child, signal.SIGKILL)
            return False
        if pidfd in events:
            return False
        if events:
            return True


def _session_wait(child, sock, pidfd, tree, call=None):
    """Reap every process that ends, and hold the tree to its limits, until the interpreter
    answers call on sock (returns its answer, None) or ends (returns None, its wait status):
    past its memory limit it is killed. An answer to another call is dropped. The first answer
    (call None, "ready") brings the tree's limits."""
    import select
    import signal

    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    if tree.fd is not None:
        poller.register(tree.fd, select.POLLIN)
    while True:
        while True:
            try:
                pid, st = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid = 0
            except InterruptedError:
                continue
            if pid == child:
                return None, st
            if pid == 0:
                break
        for fd, event in poller.poll(tree.timeout(1000)):
            if fd == tree.fd:
                if not tree.answer(event):
                    poller.unregister(fd)
                    tree.close()
                continue
            if fd != sock.fileno():
                continue
            try:
                msg, fds = recv_fds(sock)
            except OSError:
                msg, fds = b"", []
            if (call is None or fds) and tree.take(msg if call is None else b"", fds):
                poller.register(tree.fd, select.POLLIN)
            try:
                answer = json.loads(msg) if msg else None
            except ValueError:
                answer = None
            if isinstance(answer, dict):
                if answer.get("call") == call:
                    return answer, None
                continue
            if not msg:
                poller.unregister(sock.fileno())  # nothing more from it: wait for its end
        if tree.memory_over():
            os.kill(child, signal.SIGKILL)
            _, st = os.waitpid(child, 0)
            return None, st


def session_main(params, ruleset_fd, conn):
    """The session's interpreter: limits and confinement once, then one call after another in
    the same __main__, until the socket closes. Never returns."""
    null = os.open(os.devnull, os.O_RDWR)
    try:
        _limit(params)
        main = _confined(params, ruleset_fd)
    except BaseException as e:
        send_fds(conn, json.dumps({"error": "%s: %s" % (type(e).__name__, e)}).encode(), [])
        os._exit(126)
    for fd in (0, 1, 2):  # between calls, what the code prints goes nowhere
        os.dup2(null, fd)
    import signal

    signal.signal(signal.SIGINT, _interrupt)
    _hand_limits(conn.fileno(), params, {"ready": True})
    calls = 0
    while True:
        try:
            msg, fds = recv_fds(conn)
        except OSError:
            os._exit(0)
        if not msg or len(fds) != 4:
            os._exit(0)
        call = json.loads(msg).get("call")
        calls += 1
        try:
            status, memory_error = _session_call(fds, main, "<cell-%d>" % calls)
        except KeyboardInterrupt:  # between the code's end and its report
            status, memory_error = 1, False
        for fd in (0, 1, 2):
            os.dup2(null, fd)  # the call's streams end with it
        try:
            conn.send(json.dumps({"call": call, "exit_code": status, "memory_error": memory_error}).encode())
        except OSError:
            os._exit(0)


# True while a call's code runs: an interrupt (SIGINT) raises KeyboardInterrupt in it, and is
# ignored between calls.
_in_call = False


def _interrupt(signum, frame):
    if _in_call:
        raise KeyboardInterrupt


def _session_call(fds, main, filename):
    """One call: its streams on 0, 1 and 2, its env, its code run as a cell; then its
    processes killed. Returns the exit status and whether a MemoryError ended the code."""
    call_fd, stdio = fds[0], fds[1:]
    with os.fdopen(call_fd, encoding="utf-8", errors="surrogateescape") as f:
        call = json.load(f)
    for fd, target in zip(stdio, (0, 1, 2)):
        os.dup2(fd, target)
        os.close(fd)
    _std_streams()
    env = call.get("env") or {}
    os.environ.update(env)
    set_blas_threads(call.get("threads"), env, session=True)
    global _in_call
    import signal

    signal.signal(signal.SIGINT, _interrupt)  # the last call's code may have replaced it
    _in_call = True
    try:
        return _cell(call["code"], main, filename)
    finally:
        _in_call = False
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        kill_leftovers()


def _std_streams():
    """Fresh sys.stdin, sys.stdout and sys.stderr on 0, 1 and 2 for a call, as python -u makes
    them: the last call's code may have replaced or closed them."""
    import io

    sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8", errors="surrogateescape")
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="surrogateescape", write_through=True)
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace", write_through=True)


def runner_main():
    set_name(SUPERVISOR_NAME)
    protect_self()
    params = json.loads(sys.argv[1])
    os.set_inheritable(3, False)  # the code's own subprocesses must not hold the status fd
    ruleset_fd = None
    if params.get("landlock"):
        ruleset_fd = 4
        os.set_inheritable(ruleset_fd, False)
    if params.get("session"):
        import socket

        session_supervise(socket.socket(fileno=3), params, ruleset_fd=ruleset_fd)
    supervise(params, 3, ruleset_fd=ruleset_fd)
    os._exit(0)
