"""Spawn mode's entry point. pyexec starts one interpreter per execution or session as

    python -s -u -c BOOTSTRAP PARAMS

where the bootstrap reads the runner's modules from a pipe and calls main (see loader.boot),
with the execution's directory as cwd, stdin/stdout/stderr as the code's, a status pipe (an
execution) or the control socket (a session) on fd 3 and the Landlock ruleset on fd 4. The
interpreter becomes the execution's supervisor (run.supervise) or the session's
(session.supervise)."""
import json
import os
import sys

from . import codeproc
from .confine import protect_self
from .linux import SUPERVISOR_NAME, set_name


def main(path_entry):
    set_name(SUPERVISOR_NAME)
    protect_self()
    codeproc.set_path_entry(path_entry)
    params = json.loads(sys.argv[1])
    os.set_inheritable(3, False)  # the code's own subprocesses must not hold the status fd
    ruleset_fd = None
    if params.get("landlock"):
        ruleset_fd = 4
        os.set_inheritable(ruleset_fd, False)
    # Each mode imports what it needs: a stateless execution does not compile the session's
    # module.
    if params.get("session"):
        import socket

        from . import session

        session.supervise(socket.socket(fileno=3), params, ruleset_fd=ruleset_fd)
    from . import run

    run.supervise(params, 3, ruleset_fd=ruleset_fd)
    os._exit(0)
