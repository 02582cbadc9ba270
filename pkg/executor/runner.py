# pyexec runner: supervises one execution. In spawn mode pyexec starts it as
#     python -u -c RUNNER+"runner_main()" '{"code": ..., "limits": {...}}'
# with the execution's working directory as cwd, stdin/stdout/stderr as the code's and a
# status pipe on fd 3; in fork mode zygote.py calls supervise() in a child it forked. The
# supervisor makes itself a child subreaper, so every process the code starts — also one that
# calls setsid() or double-forks — stays its descendant; forks the child that runs the code
# under the limits; reaps everything; kills what the code left behind; and writes one status
# line on the status fd. Standard library only.
import sys

# `python -c` puts the working directory first on sys.path, and the code's input files are
# there: a file named json.py or resource.py must not replace the runner's own modules (nor
# switch the limits off). The code gets the directory back in run_code, after the limits.
_cwd_entry = sys.path.pop(0)

import json
import os

PR_SET_CHILD_SUBREAPER = 36

# In the code's process: the write end of the pipe on which it tells its supervisor that the
# code finished, the status fd (see _finish), and the process's pid: a process the code forks
# inherits all three, and its own end must not be taken for the code's.
_done_fd = None
_status_fd = None
_code_pid = None


def status(fd, **fields):
    try:
        os.write(fd, (json.dumps(fields) + "\n").encode())
    except OSError:
        pass


_prctl = None


def make_subreaper():
    global _prctl
    try:
        if _prctl is None:  # looked up once (in the zygote, once for every fork)
            import ctypes

            _prctl = ctypes.CDLL(None, use_errno=True).prctl
        return _prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except Exception:  # no ctypes in a minimal Python: the server's reaper still reaps
        return False


def run_code(params, status_fd):
    """In the forked child: apply the limits, then run the code as __main__. Never returns."""
    import resource

    global _status_fd
    _status_fd = status_fd

    limits = params["limits"]
    for name, value in (("RLIMIT_AS", limits.get("as_bytes")), ("RLIMIT_NPROC", limits.get("nproc")),
                        ("RLIMIT_FSIZE", limits.get("fsize_bytes")), ("RLIMIT_CORE", 0)):
        if value is not None:
            resource.setrlimit(getattr(resource, name), (value, value))

    import builtins
    import linecache
    import types

    sys.path.insert(0, _cwd_entry)
    with open(params["code"], encoding="utf-8", errors="surrogateescape") as f:
        source = f.read()
    filename = "<code>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    main = types.ModuleType("__main__")
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    sys.argv = [filename]
    try:
        exec(compile(source, filename, "exec"), main.__dict__)
    except SystemExit as e:
        _exit(_exit_status(e.code))
    except BaseException as e:
        if isinstance(e, MemoryError):
            status(status_fd, memory_error=True)
        if e.__traceback__ is not None:
            e.__traceback__ = e.__traceback__.tb_next  # hide this frame
        if sys.excepthook is sys.__excepthook__:
            import traceback  # the Python printer reads the source from linecache

            traceback.print_exception(type(e), e, e.__traceback__)
        else:
            sys.excepthook(type(e), e, e.__traceback__)
        _exit(1)
    _exit(0)


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


def _exit(status):
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
        _finish(status)
    os._exit(status)


def _finish(status):
    """Tell the supervisor that the code finished, before this process ends: the teardown of
    an address space as large as a preloaded interpreter's costs milliseconds, and the result
    need not wait for it. First end the code's own processes (their orphans go to the
    supervisor, which kills them), then close the streams and the status fd, then report."""
    kill_leftovers()
    for fd in (0, 1, 2, _status_fd):
        try:
            os.close(fd)
        except OSError:
            pass
    try:
        os.write(_done_fd, b"%d" % status)
    except OSError:
        pass  # the supervisor waits for the exit instead


def children():
    me = os.getpid()
    try:  # each thread has its own list of the children it forked
        kids = []
        for task in os.listdir("/proc/self/task"):
            with open("/proc/self/task/%s/children" % task) as f:
                kids.extend(int(p) for p in f.read().split())
        return kids
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


def supervise(params, status_fd, prepare=None, handed=()):
    """Run the code in a child and report how it ended on status_fd. prepare, when given, runs
    in the child first (fork mode: standard streams, directory, environment, user); handed are
    the child's descriptors, closed in the supervisor after the fork so that the streams end
    with the child. Returns when the execution is over: reported, and nothing of it left."""
    subreaper = make_subreaper()
    sys.stdout.flush()
    sys.stderr.flush()
    child, done_r = fork_code()
    if child == 0:
        if prepare is not None:
            prepare()
        run_code(params, status_fd)
    for fd in handed:
        os.close(fd)
    watch(child, status_fd, subreaper, done_r)


def fork_code():
    """Fork the code's process, with the pipe on which it reports that the code finished.
    Returns its pid and the pipe's read end in the supervisor, (0, None) in the process."""
    global _done_fd, _code_pid
    done_r, done_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(done_r)
        _done_fd, _code_pid = done_w, os.getpid()
        return 0, None
    os.close(done_w)
    return child, done_r


def watch(child, status_fd, subreaper, done_r):
    """In the supervisor: wait until the code's process (child) reports on done_r that the code
    finished, or ends; kill what it left behind; write the status line and close status_fd,
    which ends the execution for pyexec."""
    import signal

    children()  # fault in now the pages that reporting touches
    json.dumps({"exit_code": 0})
    try:
        early, st = _wait(child, done_r)
    finally:
        os.close(done_r)
    if early is not None:
        # The code's process is ending; but code may have written on done_r itself while it
        # goes on running: kill it, so that whatever it is doing ends with the result.
        os.kill(child, signal.SIGKILL)
    kill_leftovers(keep=child if st is None else None)
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


def _wait(child, done_r):
    """Reap every process that ends until the code's process reports its exit status on done_r
    (returns it, None) or ends without (returns None, its wait status)."""
    import select

    try:
        pidfd = os.pidfd_open(child)
    except (AttributeError, OSError):  # before Python 3.9 or Linux 5.3: wait for the exit
        pidfd = None
    try:
        poller = select.poll()
        poller.register(done_r, select.POLLIN)
        if pidfd is not None:
            poller.register(pidfd, select.POLLIN)
        while True:
            while True:
                try:
                    pid, st = os.waitpid(-1, os.WNOHANG if pidfd is not None else 0)
                except ChildProcessError:
                    pid = 0
                except InterruptedError:
                    continue
                if pid == child:
                    return None, st
                if pid == 0:
                    break
            # Wakes when the child reports or ends; an orphan that ended meanwhile is reaped on
            # the next wake.
            for fd, _ in poller.poll(1000):
                if fd == done_r:
                    data = os.read(done_r, 16)
                    try:
                        return int(data), None
                    except ValueError:  # EOF, or not a report: wait for the exit
                        poller.unregister(done_r)
    finally:
        if pidfd is not None:
            os.close(pidfd)


def runner_main():
    os.set_inheritable(3, False)  # the code's own subprocesses must not hold the status fd
    supervise(json.loads(sys.argv[1]), 3)
    os._exit(0)
