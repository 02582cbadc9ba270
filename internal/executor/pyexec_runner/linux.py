"""The kernel through ctypes: the C library, prctl, the constants of prctl and seccomp, struct
sock_fprog; the names of pyexec's processes; the child subreaper."""
import os
import sys

PR_SET_DUMPABLE = 4
PR_SET_NAME = 15
PR_SET_SECCOMP = 22
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
SECCOMP_MODE_FILTER = 2
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 8
SECCOMP_IOCTL_NOTIF_RECV = 0xC0502100
SECCOMP_IOCTL_NOTIF_SEND = 0xC0182101
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1

# What pyexec's own processes are called (/proc/PID/comm, what ps shows): pyexec-zygote,
# pyexec-super (a supervisor). The code's processes are called as the interpreter they are
# (code_name).
SUPERVISOR_NAME = b"pyexec-super"
ZYGOTE_NAME = b"pyexec-zygote"

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


def code_name():
    """What the code's processes are called: the interpreter's name, as the kernel keeps it (15
    bytes)."""
    return os.path.basename(sys.executable or "python3").encode()[:15]


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
