"""pyexec's runner: the Python that supervises and runs the code of executions and sessions.

pyexec hands every module of this package over on a pipe, and a short bootstrap registers them
as in-memory modules (loader.py); nothing is read from a file the code could touch. Importing a
module does no work: the entry points are spawn.main (one supervisor per execution or session,
spawn mode) and zygote.main (the fork server of fork mode). Standard library only.

    loader    the in-memory modules and the entry point's call (boot)
    spawn     spawn mode's entry point
    zygote    fork mode's fork server, its spares and the supervisors it forks
    run       a stateless execution: its supervisor (supervise, watch) and its code (run_code)
    session   a session: its supervisor (of its branches too) and its interpreter, call after call
    variables a session's variables, listed with their methods held to a time bound
    checkpoint a session's checkpoints: frozen copies of its interpreter, restored by fork
    branch    a session's branches: forks of its interpreter that go on as sessions of their own
    codeproc  the code's process: forked, limited, confined, a fresh __main__, its end
    cell      runs code as a notebook runs a cell
    outputs   rich outputs (display, figures, text/llm+plain, the exception), the import hooks
    confine   Landlock, seccomp and the process budget's filter; the supervisors' protection
    tree      the supervisor's hold on the code's tree: process budget and memory limit
    procs     the processes below this one: list, reap, kill
    blas      the thread pools of BLAS and OpenMP libraries
    protocol  what the processes say to each other: status lines, reports, replies, descriptors
    linux     the kernel through ctypes: libc, prctl, process names, the subreaper
"""
