"""The supervisor's hold on the code's tree — every process below the supervisor: its process
budget and its memory limit (Tree), and what it reads of the tree in /proc."""
import json
import os

from .linux import SECCOMP_IOCTL_NOTIF_RECV, SECCOMP_IOCTL_NOTIF_SEND, SECCOMP_USER_NOTIF_FLAG_CONTINUE
from .procs import children


class Tree:
    """The supervisor's side of the limits of the code's tree — every process below the
    supervisor — which the code's process hands over before its code runs
    (codeproc.hand_limits): its process budget and its memory limit.

    The process budget, where the kernel lets the supervisor count (Go's confine.BudgetFilter):
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

    def __init__(self, pids=None):
        # The processes the limits hold: every process below the supervisor; once a session has
        # branches, its member's own (session.Member.pids).
        self.pids = pids or (lambda: tree_pids(os.getpid()))
        self.taken = False
        self.fd = None  # the budget's listener
        self.limit = 0
        self.bound = 0
        self.last = 0.0  # time of the latest allowance
        self.refused = 0
        self.allowed = 0  # new tasks the budget let the tree make
        self.memory = 0  # bytes; 0: no limit
        # A session's checkpoints (checkpoint.py): each one's process is not a task of the
        # budget (what it runs or starts is).
        self.exempt = frozenset()
        self.over_memory = False
        self._due = 0.0

    def take(self, msg, fds):
        """Take what the code's process hands over before its code runs: the budget's listener
        alone ({"listener": true}, from a spare confined ahead: confine.preconfine), then the
        limits, once. True when a listener to answer comes with either. Descriptors not taken are
        closed. Until the limits come, the listener refuses every new task."""
        limits = None
        if not self.taken:
            try:
                limits = json.loads(msg)
            except (ValueError, RecursionError):
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
            self.over_memory = tree_memory(self.pids(), self.memory) > self.memory
        return self.over_memory

    def answer(self, event):
        """Answer one notification (poll's event on the listener). False when the listener has
        no process left: it says so with POLLHUP alone, and a read would then wait forever."""
        got = receive(self.fd, event)
        if got is not False and got is not None:
            respond(self.fd, got[0], self.allow())
        return got is not False

    def allow(self):
        """Whether the tree may make one more task now (see the class): counted as allowed, or
        as refused."""
        import time

        if self.bound >= self.limit:
            wait = self.last + self.GRACE - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self.bound = tree_tasks(self.pids(), self.exempt)
        if self.bound >= self.limit:
            self.refused += 1
            return False
        self.bound += 1
        self.allowed += 1
        self.last = time.monotonic()
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


def receive(fd, event):
    """Receive one notification of the budget's listener fd (poll's event on it): (its id, the
    calling thread's id); None when there is nothing to answer (its caller was killed); False
    when the listener has no process left."""
    import errno
    import fcntl
    import select
    import struct

    if not event & select.POLLIN:
        return False
    req = bytearray(80)  # struct seccomp_notif, zeroed as the kernel wants it
    try:
        fcntl.ioctl(fd, SECCOMP_IOCTL_NOTIF_RECV, req, True)
    except OSError as e:
        # ENOENT: the caller was killed meanwhile. Otherwise no process is left to ask.
        return None if e.errno in (errno.ENOENT, errno.EINTR) else False
    return struct.unpack_from("=QI", req)


def respond(fd, req_id, allowed):
    """Let the notified call go on, or refuse it with EAGAIN as RLIMIT_NPROC would."""
    import errno
    import fcntl
    import struct

    if allowed:
        resp = struct.pack("=QqiI", req_id, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE)
    else:
        resp = struct.pack("=QqiI", req_id, 0, -errno.EAGAIN, 0)
    try:
        fcntl.ioctl(fd, SECCOMP_IOCTL_NOTIF_SEND, resp)
    except OSError:
        pass  # the caller was killed meanwhile


def tree_tasks(pids, exempt=()):
    """The tasks of pids — processes and threads, zombies included (RLIMIT_NPROC counts them
    too) — but for the main thread of each process in exempt."""
    count = 0
    for pid in pids:
        try:
            count += len(os.listdir("/proc/%d/task" % pid)) - (pid in exempt)
        except OSError:
            pass
    return count

_page_size = None


def tree_memory(pids, limit):
    """The resident memory of the processes pids, in bytes: the sum of their resident
    sets (statm: cheap) while it is at most limit; past it, of their proportional sets (Pss of
    smaps_rollup: a page n processes share counts 1/n in each, as pages forked processes share
    with their parent and the zygote), which a supervisor can read of dumpable processes only —
    the code's are where Landlock confines them (see confine.confine) — and elsewhere their
    resident sets again."""
    global _page_size
    if _page_size is None:
        _page_size = os.sysconf("SC_PAGE_SIZE")
    rss = {}
    for pid in pids:
        try:
            with open(mem_path(pid) + "/statm", "rb") as f:
                rss[pid] = int(f.read().split()[1]) * _page_size
        except (OSError, ValueError, IndexError):
            pass
    total = sum(rss.values())
    if total <= limit:
        return total
    total = 0
    for pid, resident in rss.items():
        try:
            with open(mem_path(pid) + "/smaps_rollup", "rb") as f:
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


def mem_path(pid):
    """The /proc directory through which pid's memory is read: /proc/PID, or, when its main
    thread exited while others run (SYS_exit: its own files then say nothing of the memory, and
    its state reads Z), /proc/PID/task/TID of a live thread."""
    path = "/proc/%d" % pid
    if not _state_is(path, b"Z"):
        return path
    try:
        tasks = os.listdir(path + "/task")
    except OSError:
        return path
    for tid in tasks:
        if tid != str(pid) and not _state_is("%s/task/%s" % (path, tid), b"Z"):
            return "%s/task/%s" % (path, tid)
    return path


def _state_is(path, state):
    try:
        with open(path + "/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2:][:1] == state


def ended(pid):
    """Whether pid has ended, every thread of it (a zombie to reap), or is gone. A process whose
    main thread exited while others run reads Z too, and has not ended."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read()
    except OSError:
        return True
    fields = stat[stat.rindex(b")") + 2:].split()
    if fields[0] not in (b"Z", b"X"):
        return False
    try:
        return int(fields[17]) <= 1  # num_threads counts the exited main thread
    except (IndexError, ValueError):
        return True
