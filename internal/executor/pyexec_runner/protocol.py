"""What pyexec's processes say to each other, and the descriptors that go with it.

A supervisor ends an execution for pyexec with status lines on its status fd, one JSON object
each (status_line). The code's process tells its supervisor that the code finished with a
report, "STATUS" or "STATUS m" (done_report, parse_done), after it handed over the tree's limits
(limits_message). A session's supervisor answers each call with a reply (call_reply,
lost_reply). Messages on SOCK_SEQPACKET sockets carry descriptors as SCM_RIGHTS (send_fds,
recv_fds)."""
import json
import os


def status_line(fields):
    """One status line: a JSON object and a newline."""
    return (json.dumps(fields) + "\n").encode()


def status(fd, **fields):
    """Write a status line on fd; a reader that is gone is not an error."""
    try:
        os.write(fd, status_line(fields))
    except OSError:
        pass


class Report(tuple):
    """What the code's process reports when the code finished: its exit status, whether a
    MemoryError ended the code, and how long the code ran (ns; None when not said)."""
    __slots__ = ()

    def __new__(cls, status, memory_error=False, code_ns=None):
        return tuple.__new__(cls, (status, memory_error, code_ns))

    status = property(lambda self: self[0])
    memory_error = property(lambda self: self[1])
    code_ns = property(lambda self: self[2])


def done_report(status, memory_error, code_ns=None):
    """The code's process's report that the code finished: "STATUS", then " m" when a
    MemoryError ended the code, then " cNS" when the code ran NS nanoseconds."""
    return b"%d%s%s" % (status, b" m" if memory_error else b"", b" c%d" % code_ns if code_ns is not None else b"")


def parse_done(msg):
    """The Report in msg; None when msg is not one (no exit status first, 0 to 255). A word it
    does not know is left out: the report is the code's word."""
    data = msg.split()
    try:
        status = int(data[0])
    except (ValueError, IndexError):
        return None
    if not 0 <= status <= 255:  # no exit status is
        return None
    code_ns = None
    for word in data[1:]:
        if word[:1] == b"c" and word[1:].isdigit() and len(word) < 20:
            code_ns = int(word[1:])
    return Report(status, b"m" in data[1:], code_ns)


def limits_message(limits, msg=None, listener=False, preconfined_budget=False):
    """The fields with which the code's process hands its tree's limits to the supervisor
    (codeproc.hand_limits), added to msg's: the memory limit, and the process budget when a
    listener comes with them or went ahead (confine.preconfine)."""
    fields = dict(msg or {})
    if limits.get("memory_bytes"):
        fields["memory"] = limits["memory_bytes"]
    if listener or preconfined_budget:
        fields["budget"] = limits["tasks"]
    return fields


def call_reply(answer, refused):
    """A session supervisor's reply to a call its interpreter answered (answer: what the
    interpreter said, the code's word) while the process budget refused refused tasks; with
    how long the code ran (code_ns) when the interpreter said so."""
    code = answer.get("exit_code")
    reply = {"exit_code": code if isinstance(code, int) and 0 <= code <= 255 else 1,
             "memory_error": answer.get("memory_error") is True, "process_limit": refused > 0}
    ns = answer.get("code_ns")
    if type(ns) is int and 0 <= ns < 1 << 62:
        reply["code_ns"] = ns
    return reply


def lost_reply(st, over_memory):
    """A session supervisor's reply to a call during which its interpreter ended with wait
    status st."""
    reply = {"exit_code": 1, "lost": True, "memory_error": over_memory}
    if os.WIFSIGNALED(st):
        reply.update(exit_code=128 + os.WTERMSIG(st), signal=os.WTERMSIG(st))
    elif os.WIFEXITED(st):
        reply["exit_code"] = os.WEXITSTATUS(st)
    return reply


def ended(st):
    """How a session's interpreter that never became ready ended (wait status st, or None)."""
    if st is None:
        return "did not start"
    if os.WIFEXITED(st) and os.WEXITSTATUS(st) == 126:
        return "could not be confined"
    if os.WIFSIGNALED(st):
        return "was killed by signal %d" % os.WTERMSIG(st)
    return "exited with status %d" % os.WEXITSTATUS(st)


# The most a message between a session's supervisor and its interpreter (or pyexec) holds: they
# are a few dozen bytes, and a buffer under malloc's mmap threshold (128 KiB) costs no mmap,
# mremap and munmap for each message, as one of 1 MiB does.
SMALL = 1 << 16

# The most descriptors a session's message brings: a fork of the most branches pyexec asks for
# (two each, and one more; SCM_RIGHTS carries 253 at most).
MAX_FDS = 253


def recv_fds(sock, size=1 << 20, flags=0, fds=8):
    """One message of a SOCK_SEQPACKET socket (at most size bytes: the rest is cut) and the file
    descriptors that came with it, at most fds of them; flags are recvmsg's (MSG_DONTWAIT)."""
    import array
    import socket

    n, fds = fds, array.array("i")
    msg, ancdata, _, _ = sock.recvmsg(size, socket.CMSG_SPACE(n * fds.itemsize), flags)
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    return msg, list(fds)


def send_fds(sock, msg, fds):
    import array
    import socket

    sock.sendmsg([msg], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else [])
