"""Branches of a session: forks of its interpreter that go on as sessions of their own, with
the same __main__, modules and environment, in a working directory of their own (pyexec copied
the files there).

The interpreter, asked by its supervisor between calls ({"op": "fork", "branches": [...]}: for
each branch its directory, outputs file and the environment variables that name them; with
Landlock, "nr": the number of landlock_restrict_self), forks each branch twice as a checkpoint
is forked (checkpoint.fork_detached: the branch is the supervisor's child, never the
interpreter's). A branch puts /dev/null in place of every descriptor the session held (a file
the code opened in the session's directory, a socket, a pipe: shared after fork, they would
join the branch to its parent; the code's objects then read nothing and write nowhere, and
closing them closes nothing of the branch's), opens its own outputs file, goes to its
directory, takes its environment, adds the Landlock layer pyexec built for it (its own
directories alone), becomes a child subreaper (what its code leaves is its own: the supervisor
counts a branch's processes by their ancestry) and says hello on its own socket. The interpreter
then adds its own new layer, which leaves out the directory the branch took, and becomes a
child subreaper too.

Both layers are added by code the session's own code could have replaced before the fork: what
ran before a fork is in every branch of it, by what a fork is. What runs after it in one branch
cannot reach another's files, nor signal it where Landlock scopes signals (sibling domains).
Memory mapped shared (a file mmap'ed shared, multiprocessing's shared values) would stay
shared between the session and its branches: a session that maps any (but the system's files,
read-only) is not forked either. Threads would keep the layer of before the fork (Landlock restricts the calling thread and its
future children): a session with threads other than its interpreter's once the branches are
forked is not forked (a pool that a library shuts down before a fork, as OpenBLAS does, is no
obstacle)."""
import os
import sys

from . import checkpoint, confine, outputs

# Landlock stacks at most 16 layers on a process: a session has one, and each fork adds one to
# the session and to its branches.
MAX_LAYERS = 16


def fork(op, fds, call):
    """In the interpreter, between calls: fork the branches op asks for. fds are, for each
    branch, its end of a socket pair with the supervisor; then, with Landlock, each branch's
    ruleset and the session's own new one. Returns (the answer, None) here; in a branch, (its
    hello, its socket)."""
    branches = op.get("branches")
    n = len(branches) if isinstance(branches, list) else 0
    nr = op.get("nr")
    landlock = type(nr) is int
    if n == 0 or len(fds) != (2 * n + 1 if landlock else n) or not all(isinstance(b, dict) for b in branches):
        _close(fds)
        return {"call": call, "error": "a malformed fork"}, None
    socks, rulesets, own = fds[:n], fds[n:2 * n], (fds[2 * n] if landlock else None)
    shared = shared_mappings()
    if shared:
        _close(fds)
        what = "memory" if len(shared) == 1 else "%d regions" % len(shared)
        names = ", ".join(sorted(set(shared))[:4])
        return {"call": call, "shared": len(shared), "error": (
            "the session maps %s shared (%s): the session and its branches would both write into it; close it "
            "(an mmap's or a numpy.memmap's close(), del) and fork again" % (what, names))}, None
    if landlock and confine.layers >= MAX_LAYERS:
        _close(fds)
        return {"call": call, "layers": True, "error": (
            "the session comes from %d forks in a row: Landlock stacks at most %d layers, one a fork"
            % (confine.layers - 1, MAX_LAYERS))}, None
    state = checkpoint.random_state()
    pids = []
    for i in range(n):
        try:
            pid = checkpoint.fork_detached()
        except OSError as e:
            _end(pids)
            _close(fds)
            return {"call": call, "error": str(e)}, None
        if pid == 0:
            try:
                return _become(branches[i], socks[i], rulesets[i] if landlock else None, nr, state)
            except BaseException:
                os._exit(1)
        pids.append(pid)
    # Counted once forked: a library's pool that shuts down before a fork (OpenBLAS's, at fork's
    # prepare) is gone by now, and comes back, in the new layer, when it is used next.
    threads = len(os.listdir("/proc/self/task")) - 1
    if threads:
        _end(pids)
        _close(fds)
        return {"call": call, "threads": threads, "error": (
            "the session runs %d thread%s besides the interpreter's: a branch would have none of them, and "
            "they would keep the files of its branches within reach; end them (an executor's shutdown(), a "
            "pool's close()) and fork again" % (threads, "" if threads == 1 else "s"))}, None
    _close(socks + rulesets)
    if landlock:
        try:
            confine.restrict(nr, own)
        except OSError as e:
            _end(pids)
            return {"call": call, "error": "the session could not leave its branches' directories: %s" % e}, None
        finally:
            os.close(own)
    checkpoint.set_subreaper()
    return {"call": call, "forked": pids}, None


def _become(spec, sock_fd, ruleset, nr, state):
    """In a new branch: see the module. Returns its hello and its socket."""
    import socket

    os.setpgid(0, 0)  # not the session's group: a signal to it must not reach the branch
    checkpoint.set_random_state(state)
    blank_descriptors({sock_fd} | ({ruleset} if ruleset is not None else set()))
    old = os.getcwd()
    if spec.get("outputs"):
        outputs.use(open(spec["outputs"], "a", encoding="utf-8"))
    os.chdir(spec["cwd"])
    env = spec.get("env")
    if isinstance(env, dict):
        os.environ.update({str(k): str(v) for k, v in env.items()})
    sys.path[:] = [spec["cwd"] if p == old else p for p in sys.path]
    if ruleset is not None:
        confine.restrict(nr, ruleset)
        os.close(ruleset)
    checkpoint.set_subreaper()
    return {"branch": os.getpid()}, socket.socket(fileno=sock_fd)


def shared_mappings():
    """The mappings of this process that a fork would share with its branches and through which
    they could reach each other: every shared mapping but a read-only one of a file of the
    system (the C library's caches). Each by its name ("anonymous" for none)."""
    system = tuple(p.rstrip("/") + "/" for p in ("/usr", "/lib", "/lib64", "/etc", sys.base_prefix, sys.prefix))
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) < 5 or parts[1][3:4] != "s":
                continue
            name = parts[5].strip() if len(parts) > 5 else ""
            if "w" not in parts[1] and name.startswith(system) and not name.endswith("(deleted)"):
                continue
            out.append(name or "anonymous")
    return out


def blank_descriptors(keep):
    """Put /dev/null in place of every descriptor of this process but keep's."""
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd > 2 and fd not in keep and fd != null:
                try:
                    os.dup2(null, fd)
                except OSError:
                    pass  # the listing's own descriptor, closed by now
    finally:
        os.close(null)


def _close(fds):
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _end(pids):
    """Kill the branches forked so far (a fork that fails goes back on all of them)."""
    import signal

    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass

