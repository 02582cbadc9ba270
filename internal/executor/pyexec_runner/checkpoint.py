"""Checkpoints of a session's interpreter: frozen copies of its process, from which the session
can be restored (an undo).

The interpreter, asked by its supervisor between calls ({"op": "checkpoint"} with one end of a
socket pair), forks the copy twice (fork_detached): the copy's parent exits at once, so that the
copy is the supervisor's child (a subreaper) and never the interpreter's, whose code would find it
in os.wait(). The copy blocks every signal it can (the session's code, in the same Landlock domain,
can still SIGKILL or SIGSTOP it: the supervisor then finds it gone, and pyexec says the checkpoint
was lost), leads a process group of its own (a signal to the code's group does not reach it), and
waits on its socket. Asked to restore ({"op": "restore", "call": N} with one end of a new socket
pair), it forks a new interpreter the same way and stays a checkpoint: the same checkpoint can be
restored again. The new interpreter goes on where the copy was made, in the interpreter's loop,
with the new socket as its own (take returns it) and answers call N.

What a copy does not keep: the threads of the code other than the interpreter's (fork copies the
calling thread alone), and the position of files the code holds open (shared with the session by
fork). What it keeps exactly: __main__, the modules, numpy's global generator, and `random`'s
state, which Python reseeds in every child it forks (put back here)."""
import json
import os
import signal

from .protocol import SMALL, recv_fds


# Whether this interpreter is a child subreaper: a session that forked, and its branches
# (branch.py), keep what their code leaves below them, where the supervisor counts it as theirs.
subreaper = False


def set_subreaper():
    """Make this interpreter a child subreaper (see subreaper)."""
    from .linux import PR_SET_CHILD_SUBREAPER, prctl

    global subreaper
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    subreaper = True


def fork_detached():
    """Fork a process whose parent is the supervisor: a child forks it and exits at once (a
    subreaper interpreter is none while it does). Returns the process's pid, here, and 0 in the
    process. Its own at-fork handlers aside (register_at_fork), Python's state in it is the
    caller's."""
    import warnings

    from .linux import PR_SET_CHILD_SUBREAPER, prctl

    global subreaper
    r, w = os.pipe()
    if subreaper:
        prctl(PR_SET_CHILD_SUBREAPER, 0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # 3.12+: a warning to fork with threads
            middle = os.fork()
        if middle == 0:
            try:
                os.close(r)
                pid = os.fork()
                if pid == 0:
                    os.close(w)
                    subreaper = False  # it is not inherited
                    return 0
                os.write(w, b"%d" % pid)
            except BaseException:
                pass
            os._exit(0)
        os.close(w)
        try:
            data = os.read(r, 32)
        finally:
            os.close(r)
        os.waitpid(middle, 0)
    finally:
        if subreaper:
            prctl(PR_SET_CHILD_SUBREAPER, 1)
    try:
        return int(data)
    except ValueError:
        raise OSError("the process could not be forked")


def take(fd, call):
    """In the interpreter, between calls: make a checkpoint, whose end of its socket pair with the
    supervisor is fd. Returns (pid of the copy, None) here; in an interpreter restored from the
    copy, (None, (socket, call)): its socket to the supervisor and the number of the call to
    answer."""
    import socket

    state = random_state()
    was = subreaper
    try:
        pid = fork_detached()
    except OSError:
        os.close(fd)
        raise
    if pid != 0:
        os.close(fd)
        return pid, None
    try:
        return None, _hold(socket.socket(fileno=fd), state, was)
    except BaseException:
        os._exit(1)


def _hold(sock, state, subreaper):
    """The checkpoint's process: wait for the supervisor. Returns, in a restored interpreter,
    (its socket, the call to answer). subreaper: the interpreter was one, and so is a restored
    one. The supervisor may also ask it to add a Landlock layer ({"op": "restrict", "nr": N}
    with the ruleset): its session forked, and left its branches' directories (branch.py)."""
    set_random_state(state)
    os.setpgid(0, 0)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        sock.send(json.dumps({"held": os.getpid()}).encode())
    except OSError:
        os._exit(0)
    while True:
        try:
            msg, fds = recv_fds(sock, SMALL)
        except OSError:
            os._exit(0)
        if not msg:
            os._exit(0)  # the supervisor let it go
        try:
            op = json.loads(msg)
        except ValueError:
            op = None
        if isinstance(op, dict) and op.get("op") == "restrict" and len(fds) == 1 and type(op.get("nr")) is int:
            from . import confine

            try:
                confine.restrict(op["nr"], fds[0])
            except OSError as e:
                _say(sock, {"error": str(e)})
            else:
                _say(sock, {"restricted": os.getpid()})
            finally:
                os.close(fds[0])
            continue
        if not isinstance(op, dict) or op.get("op") != "restore" or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            continue
        try:
            pid = fork_detached()
        except OSError as e:
            os.close(fds[0])
            _say(sock, {"error": str(e)})
            continue
        if pid == 0:
            import socket

            sock.close()
            os.setpgid(0, 0)  # not the checkpoint's group: a signal to it must not reach the copy
            set_random_state(state)
            if subreaper:
                set_subreaper()
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            return socket.socket(fileno=fds[0]), op.get("call")
        os.close(fds[0])
        _say(sock, {"restored": pid})


def _say(sock, msg):
    try:
        sock.send(json.dumps(msg).encode())
    except OSError:
        os._exit(0)


def random_state():
    """The state of `random`'s generator, when the code has it: Python reseeds it in a child."""
    import sys

    random = sys.modules.get("random")
    try:
        return random.getstate() if random is not None else None
    except Exception:
        return None


def set_random_state(state):
    import sys

    random = sys.modules.get("random")
    if state is not None and random is not None:
        try:
            random.setstate(state)
        except Exception:
            pass
