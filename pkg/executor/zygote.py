# pyexec zygote: the fork server of --mode fork. Appended to runner.py and started once as
#     python -u -c RUNNER+ZYGOTE+"zygote_main()" '{"preload": [...]}'
# with a SOCK_SEQPACKET control socket on fd 3. It imports the preload modules once, then for
# every request (a JSON message with the standard streams and the status pipe as SCM_RIGHTS
# file descriptors) forks a supervisor that runs the code exactly as spawn mode's runner does,
# and answers the supervisor's pid. Nothing of one execution reaches the next: each runs in a
# fresh fork of the zygote, which never runs user code itself.
import array
import signal
import socket

CONTROL_FD = 3


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
    try:  # a font cache and the like are built now, once, not in every execution
        import ctypes  # noqa: F401  (the supervisors' prctl)
    except Exception:
        pass


def _recv(ctl):
    fds = array.array("i")
    msg, ancdata, _, _ = ctl.recvmsg(1 << 20, socket.CMSG_SPACE(8 * fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    return msg, list(fds)


def _child(req, fds, ctl):
    """In the forked supervisor: leave the zygote's ways, then supervise the code."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
    ctl.close()
    stdin, stdout, stderr, status_fd = fds
    os.set_inheritable(status_fd, False)

    def prepare():
        for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        if req.get("tree"):
            sys.path.insert(0, req["tree"])
        if req.get("gid") is not None:
            os.setgroups([])
            os.setgid(req["gid"])
        if req.get("uid") is not None:
            os.setuid(req["uid"])
        # Forked children share the zygote's random state: give each its own.
        import random

        random.seed()
        np = sys.modules.get("numpy")
        if np is not None:
            try:
                np.random.seed()
            except Exception:
                pass

    supervise(req["params"], status_fd, prepare)


def zygote_main():
    params = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    _preload(params.get("preload") or [])
    make_subreaper()
    signal.signal(signal.SIGCHLD, _reap)
    ctl = socket.socket(fileno=CONTROL_FD)
    while True:
        try:
            msg, fds = _recv(ctl)
        except InterruptedError:
            continue
        if not msg:
            os._exit(0)  # pyexec closed the control socket
        try:
            req = json.loads(msg)
            if len(fds) != 4:
                raise ValueError("want 4 file descriptors, got %d" % len(fds))
            # SIGCHLD waits until the new supervisor is in the set: the handler would take it
            # for an orphan and kill it.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
            pid = os.fork()
        except Exception as e:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
            for fd in fds:
                os.close(fd)
            ctl.send(json.dumps({"error": "%s: %s" % (type(e).__name__, e)}).encode())
            continue
        if pid == 0:
            _child(req, fds, ctl)
        _supervisors.add(pid)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        for fd in fds:
            os.close(fd)
        ctl.send(json.dumps({"pid": pid}).encode())
