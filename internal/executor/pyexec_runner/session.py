"""Sessions. A session is one interpreter that runs call after call in the same __main__: its
supervisor (supervise) forks it, confined for its whole life exactly as an execution's code
process is, and stays between it and pyexec. The supervisor's socket to pyexec (ctl) carries,
for each call, {"op": "exec"} with four descriptors: a pipe with the call ({"code": ...,
"env": {...}}), stdin, stdout and stderr. The supervisor passes them on to the interpreter
over a socket of their own, numbered ({"op": "exec", "call": N}), waits until the interpreter
answers that call ({"call": N, "exit_code": ...}) or dies (reaping and then killing every
other process of the session: what the code starts ends with its call), and answers
{"exit_code": N, "memory_error": bool, "code_ns": N} (code_ns: how long the code ran, as the
interpreter says), or {"exit_code": N, "signal": S, "lost": true} when
the interpreter is gone, after which it ends. Its first message is {"pid": interpreter} with a
pidfd of the interpreter, through which pyexec interrupts a call (SIGINT: KeyboardInterrupt),
or {"error": ...}. A call whose JSON has "inspect": true runs no code: it lists the session's
variables on its stdout (variables.describe). Between calls pyexec may also send
{"op": "checkpoint"}, answered {"checkpoint": N, "pid": P} with a pidfd of the frozen copy
(checkpoint.py), and {"op": "restore", "checkpoint": N}, answered {"pid": P} with a pidfd of the
new interpreter that takes the place of the old one, or {"error": ..., "gone": bool}; a checkpoint
pyexec lets go it kills through its own pidfd, and the supervisor forgets it once it has ended.
pyexec closing ctl ends the session. The interpreter holds nothing of
pyexec's: what it says is the code's word, checked like any input, and it can mislead no one
but its own session's caller."""
import json
import os
import sys

from . import blas, checkpoint, codeproc
from .cell import run_cell
from .linux import code_name, make_subreaper, set_name
from .procs import kill_leftovers, reap_ended
from .protocol import SMALL, call_reply, ended, lost_reply, recv_fds, send_fds
from .tree import Tree


def supervise(ctl, params, prepare=None, ruleset_fd=None):
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
            set_name(code_name())
            ctl.close()
            mine.close()
            if prepare is not None:
                prepare()
            interpreter(params, ruleset_fd, theirs)
        finally:
            os._exit(1)
    theirs.close()
    if ruleset_fd is not None:
        os.close(ruleset_fd)
    pidfd = os.pidfd_open(child)
    tree = Tree()
    answer, st = _wait(child, mine, pidfd, tree)
    if answer is None or not answer.get("ready"):
        error = (answer or {}).get("error") or "the session's interpreter %s" % ended(st)
        send_fds(ctl, json.dumps({"error": str(error)[:4096]}).encode(), [])
        os._exit(1)
    send_fds(ctl, json.dumps({"pid": child}).encode(), [pidfd])
    # At rest between calls: the interpreter is stopped, with its threads — no CPU, no new
    # thread or connection — and continued for the next call.
    os.kill(child, signal.SIGSTOP)
    s = _State(child, pidfd, mine, tree)
    while _idle(s, ctl):
        try:
            msg, fds = recv_fds(ctl, SMALL)
        except OSError:
            break
        op = _op(msg)
        if op in ("checkpoint", "restore") and not fds:
            if op == "checkpoint":
                reply, given, alive = _checkpoint(s)
            else:
                reply, given, alive = _restore(s, json.loads(msg).get("checkpoint"))
            if alive:
                s.rest()
            if not _say(ctl, reply, given) or not alive:
                break
            continue
        if op != "exec" or len(fds) != 4:
            for fd in fds:
                os.close(fd)
            break
        # Each call is numbered: what the code itself writes on its socket cannot pass for
        # the answer of a later call.
        s.calls += 1
        _signal(s.pidfd, signal.SIGCONT)
        try:
            send_fds(s.mine, json.dumps({"op": "exec", "call": s.calls}).encode(), fds)
        except OSError:
            pass  # the interpreter is gone: _wait says how it ended
        for fd in fds:
            os.close(fd)
        tree.refused = 0
        answer, st = _wait(s.child, s.mine, s.pidfd, tree, s.calls)
        if st is None:
            s.rest()
        if st is not None:
            send_fds(ctl, json.dumps(lost_reply(st, tree.over_memory)).encode(), [])
            break
        try:
            send_fds(ctl, json.dumps(call_reply(answer, tree.refused)).encode(), [])
        except OSError:
            break
    kill_leftovers()
    os._exit(0)


class _State:
    """What a session's supervisor holds: the interpreter (its pid, a pidfd of it, the socket to
    it), the tree's limits, the number of the last call, and the checkpoints (by number)."""

    def __init__(self, child, pidfd, mine, tree):
        self.child, self.pidfd, self.mine, self.tree = child, pidfd, mine, tree
        self.calls = 0
        self.taken = 0
        self.checkpoints = {}

    def keep(self):
        """The children that outlive a call: the interpreter and the checkpoints."""
        return {self.child} | {h.pid for h in self.checkpoints.values()}

    def rest(self):
        """Bring the session to rest before pyexec hears how a call or an op ended: the
        interpreter and the checkpoints stopped (SIGSTOP), and every other process of the
        session killed — what the call, a thread or a checkpoint's own code started, orphaned or
        not, however deep. The stopped ones are waited for until every thread of them has
        stopped, so that no fork of theirs is still under way; a process killed ends only after
        its fork in progress, if any, is done and its children handed to a subreaper of the
        tree. So killing what is listed until nothing but ended processes is left leaves nothing
        running. A killed child of a stopped process stays a zombie until its parent reaps it
        (the interpreter, at its next call)."""
        import signal

        from .tree import ended, tree_pids

        # A checkpoint whose process ended (the code may kill one) is forgotten first: its pid
        # may be another process's by now, which must not be kept. Nothing is reaped below, so
        # no pid listed is freed for another while this runs.
        for n, held in list(self.checkpoints.items()):
            if not held.alive():
                self.let_go(n)
        pidfds = [self.pidfd] + [held.pidfd for held in self.checkpoints.values()]
        for pidfd in pidfds:
            _signal(pidfd, signal.SIGSTOP)
        # Wait until every thread of them has stopped: a fork another thread is making when
        # the stop comes completes first (the kernel lets it, for a signal to one process), and
        # its child must be there to be listed below.
        for pidfd in pidfds:
            try:
                os.waitid(os.P_PIDFD, pidfd, os.WSTOPPED | os.WEXITED | os.WNOWAIT)
            except ChildProcessError:
                pass  # reaped: gone
        keep = self.keep()
        for _ in range(10000):
            others = [pid for pid in tree_pids(os.getpid()) if pid not in keep and not ended(pid)]
            if not others:
                return
            for pid in others:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

    def exempt(self):
        self.tree.exempt = frozenset(h.pid for h in self.checkpoints.values())

    def let_go(self, n):
        """Forget checkpoint n (pyexec killed it, or the code did): its descriptors are closed."""
        held = self.checkpoints.pop(n, None)
        if held is not None:
            held.close()
        self.exempt()


class _Held:
    """A checkpoint as its supervisor holds it: the copy's pid, a pidfd of it, the socket to it."""

    def __init__(self, pid, pidfd, sock):
        self.pid, self.pidfd, self.sock = pid, pidfd, sock

    def alive(self):
        import select

        return not select.select([self.pidfd], [], [], 0)[0]

    def close(self):
        os.close(self.pidfd)
        self.sock.close()


# How long a checkpoint's process, or one restored from it, has to say it is there.
_HELLO_TIMEOUT = 3.0


def _op(msg):
    """The op of a message of pyexec's ({"op": ...}); None when it is not one."""
    try:
        op = json.loads(msg) if msg else None
    except (ValueError, RecursionError):
        return None
    return op.get("op") if isinstance(op, dict) else None


def _signal(pidfd, sig):
    """Send sig to the process of pidfd, unless it has ended."""
    import signal

    try:
        signal.pidfd_send_signal(pidfd, sig)
    except OSError:
        pass


def _reap(pidfd):
    """Wait for the child of pidfd to end and reap it (already reaped: nothing)."""
    try:
        os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
    except ChildProcessError:
        pass


def _say(ctl, msg, fds=()):
    try:
        send_fds(ctl, json.dumps(msg).encode(), list(fds))
        return True
    except OSError:
        return False


def _checkpoint(s):
    """Make a checkpoint of the interpreter (checkpoint.take). Returns pyexec's answer,
    {"checkpoint": N, "pid": P} with a pidfd of the copy, or {"error": ...}; or, when the
    interpreter ended meanwhile, a lost reply and False: the session is over."""
    import signal
    import socket

    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.calls += 1
    _signal(s.pidfd, signal.SIGCONT)
    try:
        send_fds(s.mine, json.dumps({"op": "checkpoint", "call": s.calls}).encode(), [theirs.fileno()])
    except OSError:
        pass
    theirs.close()
    answer, st = _wait(s.child, s.mine, s.pidfd, s.tree, s.calls)
    if st is not None:
        mine.close()
        return lost_reply(st, s.tree.over_memory), [], False
    _signal(s.pidfd, signal.SIGSTOP)
    held = _adopt(s, answer.get("checkpoint"), mine, "held")
    if held is None:
        mine.close()
        return {"error": str(answer.get("error") or "the checkpoint's process did not start")[:1024]}, [], True
    s.taken += 1
    s.checkpoints[s.taken] = held
    s.exempt()
    return {"checkpoint": s.taken, "pid": held.pid}, [held.pidfd], True


def _restore(s, n):
    """Put the session back to checkpoint n: its copy forks a new interpreter, which takes the
    place of the one running (killed; State.rest kills the rest). Returns pyexec's answer,
    {"pid": P} with a pidfd of the new interpreter, or {"error": ..., "gone": bool} (gone: the
    checkpoint is no more) and the session goes on as it was; and True."""
    import signal
    import socket

    held = s.checkpoints.get(n) if type(n) is int else None
    if held is None or not held.alive():
        s.let_go(n)
        return {"error": "the checkpoint's process is gone", "gone": True}, [], True
    _drain(held.sock)  # what the checkpoint's process said meanwhile is no answer
    signal.pidfd_send_signal(held.pidfd, signal.SIGCONT)
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.calls += 1
    try:
        send_fds(held.sock, json.dumps({"op": "restore", "call": s.calls}).encode(), [theirs.fileno()])
    except OSError:
        pass
    theirs.close()
    said = _await(held.sock, held.pidfd, s.tree)
    pid = said.get("restored") if said else None
    new = _adopt(s, pid, None, None)
    if new is None:
        mine.close()
        gone = not held.alive()
        if gone:
            s.let_go(n)
        return {"error": "the checkpoint did not restore: %s" % str((said or {}).get("error", "no answer"))[:1024], "gone": gone}, [], True
    answer, st = _wait(new.pid, mine, new.pidfd, s.tree, s.calls)
    if st is not None or not answer.get("restored"):
        if st is None:
            _signal(new.pidfd, signal.SIGKILL)
            _reap(new.pidfd)
        os.close(new.pidfd)
        mine.close()
        return {"error": "the restored interpreter did not start"}, [], True
    _signal(new.pidfd, signal.SIGSTOP)
    # By its pidfd: the code may have killed the old interpreter meanwhile, and its pid, once
    # reaped, be another process's.
    _signal(s.pidfd, signal.SIGKILL)
    _reap(s.pidfd)
    os.close(s.pidfd)
    s.mine.close()
    s.child, s.pidfd, s.mine = new.pid, new.pidfd, mine
    return {"pid": s.child}, [s.pidfd], True


def _adopt(s, pid, sock, hello):
    """The process pid as a checkpoint (_Held) with sock, once it said hello on sock; None when
    it is not a child of this supervisor (the interpreter's word names it), or says nothing. With
    no sock, the process just has to be a child."""
    from .procs import children

    if type(pid) is not int or pid <= 0 or pid == s.child or pid in s.keep() or pid not in children():
        return None
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    held = _Held(pid, pidfd, sock)
    if sock is None:
        return held
    said = _await(sock, pidfd, s.tree)
    if not said or said.get(hello) != pid:
        import signal

        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        os.close(pidfd)
        return None
    return held


_DONTWAIT = 0x40  # MSG_DONTWAIT


def _drain(sock):
    """Read and drop what waits on sock."""
    while True:
        try:
            msg, fds = recv_fds(sock, SMALL, _DONTWAIT)
        except OSError:
            return
        for fd in fds:
            os.close(fd)
        if not msg:
            return


def _await(sock, pidfd, tree):
    """The next message on sock, a JSON object, within _HELLO_TIMEOUT while the process of pidfd
    lives; None otherwise. The tree's budget is answered meanwhile."""
    import select
    import time

    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    if tree.fd is not None:
        poller.register(tree.fd, select.POLLIN)
    deadline = time.monotonic() + _HELLO_TIMEOUT
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        events = dict(poller.poll(int(left * 1000) + 1))
        if tree.fd is not None and tree.fd in events:
            if not tree.answer(events.pop(tree.fd)):
                poller.unregister(tree.fd)
                tree.close()
        if sock.fileno() in events:
            try:
                msg, fds = recv_fds(sock, SMALL)
            except OSError:
                return None
            for fd in fds:
                os.close(fd)
            try:
                said = json.loads(msg) if msg else None
            except (ValueError, RecursionError):
                said = None
            return said if isinstance(said, dict) else None
        if pidfd in events:
            return None


def _idle(s, ctl):
    """Between calls: reap what ends, forget the checkpoints whose process ended, and hold the
    tree to its limits, until pyexec sends (True) or the interpreter ends (False): past its
    memory limit the session is killed."""
    import select
    import signal

    while True:
        poller = select.poll()
        poller.register(ctl.fileno(), select.POLLIN)
        poller.register(s.pidfd, select.POLLIN)
        held = {h.pidfd: n for n, h in s.checkpoints.items()}
        for fd in held:
            poller.register(fd, select.POLLIN)
        tree = s.tree
        if tree.fd is not None:
            poller.register(tree.fd, select.POLLIN)
        while True:
            reap_ended()
            events = dict(poller.poll(tree.timeout(1000)))
            if tree.fd in events:
                if not tree.answer(events.pop(tree.fd)):
                    poller.unregister(tree.fd)
                    tree.close()
            if tree.memory_over():
                _signal(s.pidfd, signal.SIGKILL)
                return False
            if s.pidfd in events:
                return False
            gone = [held[fd] for fd in events if fd in held]
            if gone:
                for n in gone:
                    s.let_go(n)
                break  # poll what is left
            if events:
                return True


def _wait(child, sock, pidfd, tree, call=None):
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
        st = reap_ended(child)
        if st is not None:
            return None, st
        for fd, event in poller.poll(tree.timeout(1000)):
            if fd == tree.fd:
                if not tree.answer(event):
                    poller.unregister(fd)
                    tree.close()
                continue
            if fd != sock.fileno():
                continue
            try:
                msg, fds = recv_fds(sock, SMALL)
            except OSError:
                msg, fds = b"", []
            if (call is None or fds) and tree.take(msg if call is None else b"", fds):
                poller.register(tree.fd, select.POLLIN)
            try:
                answer = json.loads(msg) if msg else None
            except (ValueError, RecursionError):  # the code's word: nested too deep, too
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


def interpreter(params, ruleset_fd, conn):
    """The session's interpreter: limits and confinement once, then one call after another in
    the same __main__, until the socket closes. Never returns."""
    null = os.open(os.devnull, os.O_RDWR)
    try:
        codeproc.limit(params)
        main = codeproc.confined(params, ruleset_fd)
    except BaseException as e:
        send_fds(conn, json.dumps({"error": "%s: %s" % (type(e).__name__, e)}).encode(), [])
        os._exit(126)
    for fd in (0, 1, 2):  # between calls, what the code prints goes nowhere
        os.dup2(null, fd)
    import signal

    signal.signal(signal.SIGINT, _interrupt)
    codeproc.hand_limits(conn.fileno(), params, {"ready": True})
    codeproc.give_path()
    calls = 0
    while True:
        try:
            msg, fds = recv_fds(conn, SMALL)
        except OSError:
            os._exit(0)
        if not msg:
            os._exit(0)
        op = json.loads(msg)
        call = op.get("call")
        if op.get("op") == "checkpoint" and len(fds) == 1:
            try:
                pid, restored = checkpoint.take(fds[0], call)
            except OSError as e:
                answer = {"call": call, "error": str(e)}
            else:
                answer = {"call": call, "checkpoint": pid}
                if restored is not None:  # this is a new interpreter, restored from the copy
                    conn.close()
                    conn, call = restored
                    answer = {"call": call, "restored": True}
            try:
                conn.send(json.dumps(answer).encode())
            except OSError:
                os._exit(0)
            continue
        if len(fds) != 4:
            os._exit(0)
        calls += 1
        answer = {"call": call, "exit_code": 1, "memory_error": False}
        try:
            answer["exit_code"], answer["memory_error"], answer["code_ns"] = _call(fds, main, "<cell-%d>" % calls)
        except KeyboardInterrupt:  # between the code's end and its report
            pass
        for fd in (0, 1, 2):
            os.dup2(null, fd)  # the call's streams end with it
        try:
            conn.send(json.dumps(answer).encode())
        except OSError:
            os._exit(0)


# True while a call's code runs: an interrupt (SIGINT) raises KeyboardInterrupt in it, and is
# ignored between calls.
_in_call = False


def _interrupt(signum, frame):
    if _in_call:
        raise KeyboardInterrupt


def _call(fds, main, filename):
    """One call: its streams on 0, 1 and 2, its env, its code run as a cell; then its
    processes killed. Returns the exit status, whether a MemoryError ended the code, and how
    long the code ran (ns)."""
    call_fd, stdio = fds[0], fds[1:]
    call = json.loads(_read_all(call_fd).decode("utf-8", "surrogateescape"))
    for fd, target in zip(stdio, (0, 1, 2)):
        os.dup2(fd, target)
        os.close(fd)
    _std_streams()
    if call.get("inspect"):
        return _inspect(main)
    env = call.get("env") or {}
    os.environ.update(env)
    blas.set_threads(call.get("threads"), env, session=True)
    global _in_call
    import signal

    signal.signal(signal.SIGINT, _interrupt)  # the last call's code may have replaced it
    _in_call = True
    import time

    began = time.monotonic_ns()
    try:
        status, memory_error = run_cell(call["code"], main, filename)
        return status, memory_error, time.monotonic_ns() - began
    finally:
        _in_call = False
        for name in ("stdout", "stderr"):  # the code may have deleted them
            try:
                getattr(sys, name).flush()
            except Exception:
                pass
        kill_leftovers()


def _inspect(main):
    """A call that lists the session's variables (variables.describe) as JSON on stdout, and
    runs no code of the caller's: the code's own methods that it calls are interrupted as a
    call's code is at its time limit."""
    global _in_call
    import signal
    import time

    from . import variables

    import io

    signal.signal(signal.SIGINT, _interrupt)
    began = time.monotonic_ns()
    out, err = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = io.StringIO()  # what the code's methods print goes nowhere
    _in_call = True
    try:
        listing = variables.describe(main.__dict__)
    except (KeyboardInterrupt, variables.TooSlow):  # the call's time limit (an alarm may follow its interrupt): what was listed is lost
        return 1, False, time.monotonic_ns() - began
    finally:
        _in_call = False
        sys.stdout, sys.stderr = out, err
    # The last line is the listing: the server reads that one.
    # UTF-8, 4 bytes a character at most; a lone surrogate (a name or repr may hold one) as
    # its JSON escape.
    data = ("\n" + json.dumps(listing, ensure_ascii=False) + "\n").encode("utf-8", "backslashreplace")
    try:
        out.flush()
        while data:
            data = data[os.write(1, data):]
    except OSError:  # the call's stdout went away
        return 1, False, time.monotonic_ns() - began
    return 0, False, time.monotonic_ns() - began


def _read_all(fd):
    """What comes on fd until its end; fd is closed."""
    data = bytearray()
    try:
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return bytes(data)
            data += chunk
    finally:
        os.close(fd)


def _std_streams():
    """Fresh sys.stdin, sys.stdout and sys.stderr on 0, 1 and 2 for a call, as python -u makes
    them: the last call's code may have replaced, closed, detached or reconfigured them."""
    import io

    sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8", errors="surrogateescape")
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="surrogateescape", write_through=True)
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace", write_through=True)
