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
And {"op": "fork", "branches": [...]} with a new ctl for each branch (and Landlock rulesets),
answered {"forked": [P, ...]} or {"error": ...}: each branch is a session of its own (branch.py),
a member of the session's family (_Family), whose first message on its ctl is {"pid": P} as a
session's is. pyexec closing ctl ends the session; the supervisor ends with the family's last. The interpreter holds nothing of
pyexec's: what it says is the code's word, checked like any input, and it can mislead no one
but its own session's caller."""
import json
import os
import sys

from . import blas, checkpoint, codeproc
from .cell import run_cell
from .linux import code_name, make_subreaper, set_name
from .procs import kill_leftovers
from .protocol import MAX_FDS, SMALL, call_reply, ended, lost_reply, recv_fds, send_fds
from .tree import Tree


def supervise(ctl, params, prepare=None, ruleset_fd=None):
    """Supervise a session until pyexec closes ctl or its interpreter ends, and then its
    branches until theirs end. prepare, when given, runs first in the interpreter's process
    (fork mode: user, directory, environment)."""
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
    fam = _Family(params)
    tree = Tree()
    answer, st = _wait(fam, child, mine, pidfd, tree)
    if answer is None or not answer.get("ready"):
        error = (answer or {}).get("error") or "the session's interpreter %s" % ended(st)
        send_fds(ctl, json.dumps({"error": str(error)[:4096]}).encode(), [])
        os._exit(1)
    send_fds(ctl, json.dumps({"pid": child}).encode(), [pidfd])
    # At rest between calls: the interpreter is stopped, with its threads — no CPU, no new
    # thread or connection — and continued for the next call.
    os.kill(child, signal.SIGSTOP)
    s = _State(fam, child, pidfd, mine, tree, ctl)
    fam.members.append(s)
    try:
        _serve(s)
    except Exception:
        _signal(s.pidfd, signal.SIGKILL)  # a failure of the supervisor's ends this member alone
    fam.leave(s)
    for t in list(fam.threads):
        t.join()
    kill_leftovers()
    os._exit(0)


def _serve(s):
    """Serve pyexec's requests on the member's ctl until pyexec closes it or the member's
    interpreter ends."""
    import signal
    import time

    ctl, tree = s.ctl, s.tree
    while _idle(s, ctl):
        try:
            msg, fds = recv_fds(ctl, SMALL, fds=MAX_FDS)
        except OSError:
            break
        op = _op(msg)
        if (op in ("checkpoint", "restore") and not fds) or (op == "fork" and fds):
            # One such op at a time in a family: each makes a child of the supervisor that is
            # no member's until it is adopted (see _Family.strays); each has _OP_TIMEOUT.
            if not s.fam.ops.acquire(timeout=_OP_TIMEOUT):
                for fd in fds:
                    os.close(fd)
                reply, given, alive = {"error": "another session of its family is being checkpointed, restored or forked", "busy": True}, [], True
            else:
                try:
                    s.fam.begin_op()
                    s.deadline = time.monotonic() + _OP_TIMEOUT
                    if op == "checkpoint":
                        reply, given, alive = _checkpoint(s)
                    elif op == "restore":
                        reply, given, alive = _restore(s, json.loads(msg).get("checkpoint"))
                    else:
                        reply, given, alive = _fork(s, msg, fds)
                finally:
                    s.fam.end_op()
                    s.fam.ops.release()
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
        s.running = True
        answer, st = _wait(s.fam, s.child, s.mine, s.pidfd, tree, s.calls)
        s.running = False
        if st is None:
            s.rest()
        if st is not None:
            send_fds(ctl, json.dumps(lost_reply(st, tree.over_memory)).encode(), [])
            break
        try:
            send_fds(ctl, json.dumps(call_reply(answer, tree.refused)).encode(), [])
        except OSError:
            break


class _Family:
    """A session and its branches (branch.py): one supervisor holds them all, for a branch is a
    fork of its session's interpreter and so the supervisor's child, and shares the session's
    process budget's listener (the kernel lets a process have one). Each member has its own
    pyexec socket, thread, limits and checkpoints. Until the first fork the session is the only
    member and its thread does everything as a session alone; from then on a thread of its own
    answers the budget's listener, for the member whose process asks (by its ancestry: each
    forked interpreter is a child subreaper), and a member's memory and budget count its own
    processes."""

    # How often the family's thread kills its strays (see strays).
    SWEEP = 0.1

    def __init__(self, params):
        import threading

        self.params = params
        self.lock = threading.Lock()  # members, statuses
        self.ops = threading.Lock()  # held by a checkpoint, a restore or a fork
        self.members = []
        self.threads = []
        self.statuses = {}  # the wait status of members' interpreters reaped by another's thread
        self.forked = False
        self.listener = None
        self.before = None  # the supervisor's children when the op that runs began

    def reap(self, child=None):
        """Reap the children that have ended; child's wait status once it has (None before)."""
        with self.lock:
            watched = {m.child for m in self.members} | {child}
            while True:
                try:
                    pid, st = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                if pid in watched:
                    self.statuses[pid] = st
            return self.statuses.pop(child, None) if child is not None else None

    def wait(self, child, pidfd):
        """child's wait status, once it has ended."""
        try:
            os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            pass  # reaped already
        st = self.reap(child)
        return 9 if st is None else st  # reaped by another thread's wait: it was killed

    def roots(self):
        """The members' processes that are the supervisor's children, each its member's."""
        with self.lock:
            roots = {}
            for m in self.members:
                roots[m.child] = m
                for held in list(m.checkpoints.values()):
                    roots[held.pid] = m
            return roots

    def member_of(self, tid):
        """The member whose process the thread tid is, by its ancestry; None for a process no
        member holds (an orphan whose subreaper is gone, or one that made itself no subreaper)."""
        roots, me = self.roots(), os.getpid()
        pid, first = tid, True
        for _ in range(4096):
            ids = _ids(pid)
            if ids is None:
                return None
            tgid, ppid = ids
            if first and tgid in roots:
                return roots[tgid]
            first = False
            if ppid in roots:
                return roots[ppid]
            if ppid <= 1 or ppid == me:
                return None
            pid = ppid
        return None

    def strays(self, spare=False):
        """The supervisor's children no member holds, and what is below them: what a member's
        code left when its interpreter ended, or when it made its interpreter no subreaper (the
        code can). They belong to no member, and to every one: each counts them (its memory,
        its budget) while it runs a call, and kills them at rest and every SWEEP (kill_strays);
        spare leaves out those that appeared since the op that runs began (begin_op)."""
        from .procs import children
        from .tree import tree_pids

        roots, before = self.roots(), self.before if spare else None
        out = []
        for pid in children():
            if pid not in roots and (before is None or pid in before):
                out.append(pid)
                out.extend(tree_pids(pid))
        return out

    def begin_op(self):
        """An op begins (ops held): the supervisor's children of now are noted (see kill_strays)."""
        from .procs import children

        self.before = set(children())

    def end_op(self):
        self.before = None

    def kill_strays(self):
        """Kill the strays (see strays) — while an op runs, but those that appeared since it
        began: one may be what it adopts; it ends within _OP_TIMEOUT, and they with the next
        sweep. Never waits for an op."""
        for _ in range(100):
            if not _kill_all(self.strays(spare=True)):
                return
            self.reap()

    def grow(self, parent, branches):
        """Add branches, forked from parent: from the first fork on, each member counts its own
        processes, and a thread answers the budget's listener."""
        import threading

        if not self.forked:
            self.forked = True
            parent.tree.pids = parent.pids
            self.listener, parent.tree.fd = parent.tree.fd, None
            threading.Thread(target=self._watch, daemon=True).start()
        with self.lock:
            self.members.extend(branches)
        for b in branches:
            t = threading.Thread(target=self._branch, args=(b,))
            self.threads.append(t)
            t.start()

    def _branch(self, b):
        import signal

        try:
            _say(b.ctl, {"pid": b.child}, [b.pidfd])
            _signal(b.pidfd, signal.SIGSTOP)
            b.rest()
            _serve(b)
        except Exception:
            _signal(b.pidfd, signal.SIGKILL)  # a failure of the supervisor's ends this member alone
        finally:
            self.leave(b)

    def _watch(self):
        """The family's own thread: it answers the budget's listener, when there is one, and kills
        the strays every SWEEP seconds."""
        import select
        import time

        from .tree import receive, respond

        poller = select.poll()
        if self.listener is not None:
            poller.register(self.listener, select.POLLIN)
        due = 0.0
        while True:
            now = time.monotonic()
            if now >= due:
                self.kill_strays()
                due = now + self.SWEEP
            for _, event in poller.poll(int((due - now) * 1000) + 1):
                got = receive(self.listener, event)
                if got is False:
                    poller.unregister(self.listener)
                    os.close(self.listener)
                    self.listener = None
                    continue
                if got is not None:
                    m = self.member_of(got[1])
                    respond(self.listener, got[0], m is not None and m.tree.allow())
                    if m is None:
                        _kill_task(got[1])  # a stray: see strays

    def leave(self, m):
        """m's session ended: its processes are killed, and pyexec hears so from its socket. The
        session alone: the supervisor ends next, and kills what is left."""
        from .tree import ended as gone

        if self.forked:
            for _ in range(100):
                if not _kill_all([pid for pid in m.pids(strays=False) if not gone(pid)]):
                    break
            self.kill_strays()
            for n in list(m.checkpoints):
                m.let_go(n)
            self.reap()
        with self.lock:
            if m in self.members:
                self.members.remove(m)
        m.ctl.close()


def _kill_all(pids):
    """SIGKILL each of pids that is still there; whether there were any."""
    import signal

    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return bool(pids)


def _kill_task(tid):
    """Kill the process of the thread tid, if it is still there."""
    import signal

    ids = _ids(tid)
    if ids is not None:
        try:
            os.kill(ids[0], signal.SIGKILL)
        except OSError:
            pass


def _ids(pid):
    """(Tgid, PPid) of the task pid, from /proc; None once it is gone."""
    tgid = ppid = None
    try:
        with open("/proc/%d/status" % pid, "rb") as f:
            for line in f:
                if line.startswith(b"Tgid:"):
                    tgid = int(line.split()[1])
                elif line.startswith(b"PPid:"):
                    ppid = int(line.split()[1])
                    break
    except (OSError, ValueError, IndexError):
        return None
    return None if tgid is None or ppid is None else (tgid, ppid)


class _State:
    """A member of a session's family (the session, or a branch) as its supervisor holds it:
    pyexec's socket, the interpreter (its pid, a pidfd of it, the socket to it), the tree's
    limits, the number of the last call, and the checkpoints (by number)."""

    def __init__(self, fam, child, pidfd, mine, tree, ctl):
        self.fam, self.child, self.pidfd, self.mine, self.tree, self.ctl = fam, child, pidfd, mine, tree, ctl
        self.calls = 0
        self.taken = 0
        self.checkpoints = {}
        self.running = False  # a call of its runs
        self.deadline = 0.0  # when its op's time is up

    def keep(self):
        """The children that outlive a call: the interpreter and the checkpoints."""
        return {self.child} | {h.pid for h in list(self.checkpoints.values())}

    def pids(self, strays=True):
        """The member's processes, once the session has branches: its interpreter, its
        checkpoints, and what is below them; and while it runs a call, unless strays is False,
        the family's strays (_Family.strays: only a member whose code runs can make one)."""
        from .tree import tree_pids

        out = []
        for root in self.keep():
            out.append(root)
            out.extend(tree_pids(root))
        return out + self.fam.strays() if strays and self.running else out

    def rest(self):
        """Bring the session to rest before pyexec hears how a call or an op ended: the
        interpreter and the checkpoints stopped (SIGSTOP), and every other process of the
        session killed — what the call, a thread or a checkpoint's own code started, orphaned or
        not, however deep. The stopped ones are waited for until every thread of them has
        stopped, so that no fork of theirs is still under way; a process killed ends only after
        its fork in progress, if any, is done and its children handed to a subreaper of the
        tree. So killing what is listed until nothing but ended processes is left leaves nothing
        running. A killed child of a stopped process stays a zombie until its parent reaps it
        (the interpreter, at its next call). With branches, the session's processes are its
        member's (pids) and the supervisor's children no member holds (_Family.strays)."""
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
            listed = self.pids(strays=False) if self.fam.forked else tree_pids(os.getpid())
            if not _kill_all([pid for pid in listed if pid not in keep and not ended(pid)]):
                break
        if self.fam.forked:
            self.fam.kill_strays()

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

        poller = select.poll()
        poller.register(self.pidfd, select.POLLIN)
        return not poller.poll(0)

    def close(self):
        os.close(self.pidfd)
        self.sock.close()


# How long a checkpoint's process, or one restored from it, has to say it is there.
_HELLO_TIMEOUT = 3.0

# An op's time (a checkpoint, a restore, a fork: milliseconds), past which the interpreter is
# killed, or what it forked let go; and how long an op waits for another member's to end.
# Twice it is under pyexec's own bound (checkpointTimeout).
_OP_TIMEOUT = 3.0


def _left(s):
    """What is left of the time of member s's op (see _OP_TIMEOUT)."""
    import time

    return max(0.01, s.deadline - time.monotonic())


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
    answer, st = _wait(s.fam, s.child, s.mine, s.pidfd, s.tree, s.calls, _left(s))
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
    _signal(held.pidfd, signal.SIGCONT)
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.calls += 1
    try:
        send_fds(held.sock, json.dumps({"op": "restore", "call": s.calls}).encode(), [theirs.fileno()])
    except OSError:
        pass
    theirs.close()
    said = _await(held.sock, held.pidfd, s.tree, min(_HELLO_TIMEOUT, _left(s)))
    pid = said.get("restored") if said else None
    new = _adopt(s, pid, None, None)
    if new is None:
        mine.close()
        gone = not held.alive()
        if gone:
            s.let_go(n)
        return {"error": "the checkpoint did not restore: %s" % str((said or {}).get("error", "no answer"))[:1024], "gone": gone}, [], True
    answer, st = _wait(s.fam, new.pid, mine, new.pidfd, s.tree, s.calls, _left(s))
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
    with s.fam.lock:
        s.fam.statuses.pop(s.child, None)
        s.child, s.pidfd, s.mine = new.pid, new.pidfd, mine
    return {"pid": s.child}, [s.pidfd], True


def _fork(s, msg, fds):
    """Fork the session into branches (branch.py): msg is pyexec's {"op": "fork", "branches":
    [...]} and fds, for each branch, the supervisor's end of its pyexec socket; then, with
    Landlock, each branch's ruleset and the session's new one. Each branch becomes a member of
    the family, served by a thread of its own, which first says {"pid": P} with a pidfd of the
    branch's interpreter on its socket. Returns pyexec's answer, {"forked": [P, ...]} or
    {"error": ..., "threads": N?}, and whether the session lives (as _checkpoint)."""
    import signal
    import socket
    import time

    try:
        op = json.loads(msg)
        branches = op["branches"]
        n = len(branches)
    except (ValueError, RecursionError, KeyError, TypeError):
        op, n = None, 0
    spec = s.fam.params.get("confine") or {}
    nr = spec.get("landlock_restrict_self") if spec.get("landlock") else None
    if n == 0 or len(fds) != (2 * n + 1 if nr is not None else n):
        for fd in fds:
            os.close(fd)
        return {"error": "a malformed fork"}, [], True
    ctls, rulesets = [socket.socket(fileno=fd) for fd in fds[:n]], fds[n:]
    own = os.dup(rulesets[-1]) if rulesets else None
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(n)]
    s.calls += 1
    _signal(s.pidfd, signal.SIGCONT)
    try:
        send_fds(s.mine, json.dumps({"op": "fork", "call": s.calls, "branches": branches, "nr": nr}).encode(),
                 [theirs.fileno() for _, theirs in pairs] + rulesets)
    except OSError:
        pass
    for fd in rulesets:
        os.close(fd)
    for _, theirs in pairs:
        theirs.close()

    def fail(reply, alive=True):
        for c in ctls:
            c.close()
        for mine, _ in pairs:
            mine.close()
        if own is not None:
            os.close(own)
        return reply, [], alive

    answer, st = _wait(s.fam, s.child, s.mine, s.pidfd, s.tree, s.calls, _left(s))
    if st is not None:
        return fail(lost_reply(st, s.tree.over_memory), False)
    _signal(s.pidfd, signal.SIGSTOP)
    pids = answer.get("forked")
    if not isinstance(pids, list) or len(pids) != n:
        reply = {"error": str(answer.get("error") or "the session did not fork")[:1024]}
        for k in ("threads", "shared"):
            if type(answer.get(k)) is int:
                reply[k] = answer[k]
        if answer.get("layers") is True:
            reply["layers"] = True
        return fail(reply)
    helds = []
    for pid, (mine, _) in zip(pids, pairs):
        held = _adopt(s, pid, mine, "branch")
        if held is None:
            for h in helds:
                _signal(h.pidfd, signal.SIGKILL)
                _reap(h.pidfd)
                os.close(h.pidfd)
            return fail({"error": "a branch did not start"})
        helds.append(held)
    # The session's checkpoints leave the branches' directories too: restored, they are the
    # session, and must not reach them.
    for k, held in list(s.checkpoints.items()):
        if own is not None and not _restrict(held, own, nr, s.tree, _left(s)):
            _signal(held.pidfd, signal.SIGKILL)
            s.let_go(k)
    if own is not None:
        os.close(own)
    members = []
    for held, ctl in zip(helds, ctls):
        b = _State(s.fam, held.pid, held.pidfd, held.sock, None, ctl)
        b.tree = Tree(pids=b.pids)
        b.tree.taken, b.tree.limit, b.tree.bound, b.tree.memory = True, s.tree.limit, s.tree.limit, s.tree.memory
        b.tree._due = time.monotonic() + Tree.INTERVAL
        members.append(b)
    s.fam.grow(s, members)
    return {"forked": [b.child for b in members]}, [], True


def _restrict(held, ruleset, nr, tree, timeout):
    """Ask checkpoint held to add the Landlock layer of ruleset; False when it does not."""
    import signal

    _drain(held.sock)
    _signal(held.pidfd, signal.SIGCONT)
    try:
        send_fds(held.sock, json.dumps({"op": "restrict", "nr": nr}).encode(), [ruleset])
    except OSError:
        return False
    said = _await(held.sock, held.pidfd, tree, timeout)
    _signal(held.pidfd, signal.SIGSTOP)
    return bool(said) and said.get("restricted") == held.pid


def _adopt(s, pid, sock, hello):
    """The process pid as a checkpoint (_Held) with sock, once it said hello on sock; None when
    it is not a child of this supervisor (the interpreter's word names it), or says nothing. With
    no sock, the process just has to be a child."""
    from .procs import children

    if type(pid) is not int or pid <= 0 or pid in s.fam.roots() or pid not in children():
        return None
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    held = _Held(pid, pidfd, sock)
    if sock is None:
        return held
    said = _await(sock, pidfd, s.tree, min(_HELLO_TIMEOUT, _left(s)))
    if not said or said.get(hello) != pid:
        import signal

        _signal(pidfd, signal.SIGKILL)
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


def _await(sock, pidfd, tree, timeout=_HELLO_TIMEOUT):
    """The next message on sock, a JSON object, within timeout seconds while the process of
    pidfd lives; None otherwise. The tree's budget is answered meanwhile."""
    import select
    import time

    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    if tree.fd is not None:
        poller.register(tree.fd, select.POLLIN)
    deadline = time.monotonic() + timeout
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
            s.fam.reap()
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


def _wait(fam, child, sock, pidfd, tree, call=None, timeout=None):
    """Reap every process that ends, and hold the tree to its limits, until the interpreter
    answers call on sock (returns its answer, None) or ends (returns None, its wait status):
    past its memory limit it is killed. An answer to another call is dropped. The first answer
    (call None, "ready") brings the tree's limits. With a timeout (an op's: _OP_TIMEOUT), an
    interpreter that has not answered by then is killed."""
    import select
    import signal
    import time

    deadline = None if timeout is None else time.monotonic() + timeout
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    if tree.fd is not None:
        poller.register(tree.fd, select.POLLIN)
    while True:
        st = fam.reap(child)
        if st is not None:
            return None, st
        for fd, event in poller.poll(tree.timeout(1000 if deadline is None else 100)):
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
        if tree.memory_over() or (deadline is not None and time.monotonic() > deadline):
            os.kill(child, signal.SIGKILL)
            return None, fam.wait(child, pidfd)


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
            msg, fds = recv_fds(conn, SMALL, fds=MAX_FDS)
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
        if op.get("op") == "fork" and fds:
            from . import branch

            answer, new = branch.fork(op, fds, call)
            if new is not None:  # this is a branch: its own socket from now on
                conn = new
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
