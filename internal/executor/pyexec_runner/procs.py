"""The processes below this one: its children, found in /proc; reaping; killing every process
the code left behind (a supervisor is a child subreaper: each orphan of the code's tree becomes
its child)."""
import os


def has_children():
    """Whether this process has a child, running or ended (one waitid, reaping none)."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WSTOPPED | os.WCONTINUED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    except OSError:
        pass
    return True


def parent_of(stat):
    """The parent's pid in the text of /proc/PID/stat (after the command's name, which may hold
    spaces and parentheses)."""
    return int(stat[stat.rindex(")") + 2:].split()[1])


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
            if parent_of(stat) == me:
                kids.append(int(entry))
    return kids


def reap_ended(child=None):
    """Reap the children that have ended, without waiting; once child is among them, stop and
    return its wait status (None: it has not ended)."""
    while True:
        try:
            pid, st = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return None
        if pid == 0:
            return None
        if pid == child:
            return st


def kill_leftovers(keep=()):
    """Kill every process the code left behind. As a subreaper, each orphan becomes our child
    when its parent dies, so killing children until none remain empties the whole tree. keep
    are children to leave: one that finished and is ending by itself (the code's process after
    codeproc.finish), a session's interpreter and its checkpoints."""
    import signal

    for _ in range(10000):
        kids = [pid for pid in children() if pid not in keep]
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
        reap_ended()
