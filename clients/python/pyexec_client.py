"""Client for the pyexec sidecar: run Python code from your application, standard library only.

pyexec runs Python code for an application container. The sidecar listens on a Unix socket
(``/var/run/pyexec/pyexec.sock`` by default, or ``$PYEXEC_SOCKET``) and speaks HTTP/1.1 with
JSON bodies. This module is one file with no dependencies: copy it into your application.
It needs Python 3.8 or later.

Replacing subprocess and venv management
----------------------------------------
A chat bot with a "code interpreter" typically ran the code itself, next to code that
guessed whether it was in Docker (``/.dockerenv``) and created, health-checked and repaired a
virtualenv for it (which breaks on mounted volumes, read-only root filesystems, PEP 668
Pythons and Kubernetes runtimes)::

    import subprocess, sys

    def run_code(code):
        ensure_venv()                   # create / check / repair the venv, pick an interpreter
        try:
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                                  text=True, timeout=30)
        except subprocess.TimeoutExpired:
            return "", "timed out", -1
        return proc.stdout, proc.stderr, proc.returncode

With pyexec, delete ``ensure_venv``, the container detection and the subprocess handling:
the sidecar owns the interpreter, its packages and the limits. Call it instead::

    from pyexec_client import execute

    def run_code(code):
        result = execute(code, timeout=30)  # Client().execute(...) on $PYEXEC_SOCKET
        if result.timed_out:
            return result.stdout, "timed out", -1
        return result.stdout, result.stderr, result.exit_code

or keep one configured client around::

    from pyexec_client import Client

    client = Client()   # socket: $PYEXEC_SOCKET, else /var/run/pyexec/pyexec.sock
    result = client.execute(code, timeout=30, stdin="42\\n", env={"LANG": "C.UTF-8"})

The code's own failures (an exception, ``sys.exit(3)``, a timeout, a memory limit) come back
as a normal :class:`Result`; check ``result.ok``, ``result.reason`` and ``result.exit_code``.
Only problems with the request itself raise: :class:`ConnectionFailed` when the sidecar is
not there, :class:`APIError` (and its subclasses) when the sidecar refused the request.

Files in and out
----------------
Each execution runs in a fresh working directory. ``files`` are written into it first; the
files the code creates or changes come back in ``result.files`` (path -> bytes)::

    code = '''
    import csv
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open("data.csv") as f:
        rows = list(csv.DictReader(f))
    plt.plot([float(r["x"]) for r in rows], [float(r["y"]) for r in rows])
    plt.savefig("plot.png")
    print("plotted", len(rows), "points")
    '''
    result = client.execute(code, files={"data.csv": "x,y\\n1,2\\n2,4\\n3,9\\n"})
    print(result.stdout)                        # plotted 3 points
    if result.ok and "plot.png" in result.files:
        send_image(result.files["plot.png"])    # PNG bytes

Streaming
---------
:meth:`Client.stream` yields output as it arrives, then the final result::

    for kind, value in client.stream(code):
        if kind == "exit":
            result = value                      # a Result
        else:
            show(kind, value)                   # kind is "stdout" or "stderr"

Rich outputs
------------
Like a notebook cell, an execution returns the value of its final expression, what it passed
to ``display()`` and its matplotlib figures, in order, as :class:`Output` objects::

    r = client.execute("import pandas as pd\\npd.DataFrame({'x': [1, 2], 'y': [3, 4]})")
    r.outputs[0].type                           # "execute_result"
    r.outputs[0].text                           # "   x  y\\n0  1  3\\n1  2  4"
    r.outputs[0].html                           # "<div>...<table ...>...</table></div>"

    r = client.execute("import matplotlib.pyplot as plt\\nplt.plot([1, 4, 9])\\nplt.show()")
    png = r.outputs[0].png                      # the figure: PNG bytes (b"\\x89PNG...")

``.text``, ``.html`` and ``.png`` are None when the output has no such form; ``.data`` is the
whole MIME bundle. ``r.outputs_truncated`` says the server left some out (size cap).

Sessions
--------
A session is one interpreter that keeps its globals, imports, environment and working
directory between calls, so code can build on what earlier code did (processes the code
starts still end with each call)::

    with client.session(idle_timeout=600) as s:     # deleted when the block ends
        s.run("import pandas as pd\\ndf = pd.read_csv('data.csv')", files={"data.csv": csv})
        r = s.run("df.describe()")
        print(r.outputs[0].text)

:meth:`Client.create_session` returns a :class:`Session` that lives until
:meth:`Session.close`, its idle timeout, or the end of the sidecar. Only one call runs in a
session at a time: another raises :class:`SessionBusy`. A session that ended (deleted, idle,
or killed by a timeout its code did not stop for: ``result.session_lost``) raises
:class:`SessionNotFound`; :class:`TooManySessions` means the sidecar's limit is reached.

This module never logs anything, and never puts the code into an exception message.
"""

import asyncio
import base64
import contextlib
import email.utils
import http.client
import json
import math
import os
import socket
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import (
    Any,
    AsyncIterator,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Type,
    Union,
)

__all__ = [
    "APIError",
    "AsyncClient",
    "AsyncSession",
    "BadRequest",
    "Client",
    "ConnectionFailed",
    "DEFAULT_HTTP_TIMEOUT",
    "DEFAULT_SOCKET_PATH",
    "ERR_BAD_REQUEST",
    "ERR_FORBIDDEN",
    "ERR_INSTALL_FAILED",
    "ERR_INTERNAL",
    "ERR_METHOD_NOT_ALLOWED",
    "ERR_NOT_FOUND",
    "ERR_PACKAGES_LOCKED",
    "ERR_QUEUE_FULL",
    "ERR_SESSION_BUSY",
    "ERR_SESSION_NOT_FOUND",
    "ERR_TOO_LARGE",
    "ERR_TOO_MANY_SESSIONS",
    "ERR_CHECKPOINT_NOT_FOUND",
    "ERR_TOO_MANY_CHECKPOINTS",
    "ERR_CHECKPOINT_TOO_LARGE",
    "ERR_NOT_FORKABLE",
    "ERR_FORK_TOO_LARGE",
    "ERR_TOO_MANY_FORKS",
    "ERR_UNAVAILABLE",
    "OUTPUT_DISPLAY_DATA",
    "OUTPUT_EXECUTE_RESULT",
    "FileContent",
    "FilesArg",
    "Forbidden",
    "HTTP_TIMEOUT_MARGIN",
    "INFO_HTTP_TIMEOUT",
    "Output",
    "PyexecError",
    "QueueFull",
    "Result",
    "SOCKET_ENV",
    "ServerError",
    "Session",
    "SessionBusy",
    "SessionNotFound",
    "NotForkable",
    "TooLarge",
    "TooManySessions",
    "CheckpointNotFound",
    "TooManyCheckpoints",
    "Unavailable",
    "execute",
    "InstallFailed",
    "PackagesLocked",
]

#: Where the sidecar listens when neither ``socket_path`` nor ``$PYEXEC_SOCKET`` says otherwise.
DEFAULT_SOCKET_PATH = "/var/run/pyexec/pyexec.sock"

#: The environment variable that names the socket path.
SOCKET_ENV = "PYEXEC_SOCKET"

#: Socket timeout (seconds) of an execution that sets no ``timeout`` of its own.
DEFAULT_HTTP_TIMEOUT = 330.0

#: Added to an execution's own ``timeout`` to get the socket timeout (seconds).
HTTP_TIMEOUT_MARGIN = 30.0

#: Socket timeout (seconds) of :meth:`Client.info` and of the calls that create, describe,
#: list and delete sessions.
INFO_HTTP_TIMEOUT = 30.0

# Most of an error body that goes into an exception message when it is not JSON.
_MAX_RAW_ERROR_CHARS = 2000

#: Content of one input file: bytes, or str (sent as UTF-8).
FileContent = Union[bytes, bytearray, memoryview, str]

#: Type of the ``files`` argument: ``{path: content}`` or ``[(path, content), ...]``.
FilesArg = Union[Mapping[str, FileContent], Iterable[Tuple[str, FileContent]]]


# --------------------------------------------------------------------------------------------
# Errors


class PyexecError(Exception):
    """Base class of every error this module raises.

    Raised as such (not as a subclass) when the exchange with the sidecar breaks off: the
    connection is lost, no answer comes within the socket timeout, the answer is not valid,
    or a stream ends without its exit event.
    """


class ConnectionFailed(PyexecError):
    """The client could not connect to the sidecar's socket.

    Usually the socket file does not exist or nobody listens on it: the pyexec sidecar is
    not running (yet), or ``$PYEXEC_SOCKET`` / ``socket_path`` points elsewhere.

    Attributes:
        socket_path: the socket the client tried.
    """

    def __init__(self, message: str, socket_path: str) -> None:
        super().__init__(message)
        self.socket_path = socket_path


class APIError(PyexecError):
    """The sidecar answered the request with an error (the request itself was refused).

    The code's own failures are never an APIError; they are a :class:`Result`.

    Attributes:
        status: the HTTP status (for an error event inside a stream, which arrives after the
            200: the status that the error code stands for, e.g. 500 for ``"internal"``).
        code: the API error code (``"bad_request"``, ``"queue_full"``, ...; see the
            ``ERR_*`` constants), or ``""`` when the body was not the API's error JSON.
        message: the server's explanation, or the raw body text when it was not JSON.
        request_id: the id of the request in the server's logs, when known.
        retry_after: seconds to wait before retrying, from ``Retry-After`` (set on 429).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        request_id: Optional[str] = None,
        retry_after: Optional[float] = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.retry_after = retry_after
        super().__init__(self._describe())

    def _describe(self) -> str:
        head = "pyexec: HTTP %d" % self.status
        if self.code:
            head += " " + self.code
        text = "%s: %s" % (head, self.message or "(no message)")
        if self.retry_after is not None:
            text += " (retry after %gs)" % self.retry_after
        if self.request_id:
            text += " [request id %s]" % self.request_id
        return text


class BadRequest(APIError):
    """400: the request is invalid (e.g. a negative timeout, a bad file path); see ``message``."""


class Forbidden(APIError):
    """403: this process's user is not allowed to use the socket."""


class TooLarge(APIError):
    """413: the request body is over the server's ``max_request_bytes``."""


class QueueFull(APIError):
    """429: every execution slot and queue place is taken; retry after ``retry_after`` s."""


class Unavailable(APIError):
    """503: the server is not ready yet (preflight) or is shutting down."""


class PackagesLocked(APIError):
    """409: the packages dir cannot be written (read-only, not writable)."""


class InstallFailed(APIError):
    """422: pip could not install the packages; ``message`` holds the end of its output."""


class SessionNotFound(APIError):
    """404 ``session_not_found``: no such session, or it ended; ``message`` says why.

    A session ends when it is deleted, when it was idle for its idle timeout, or when a call
    ended it (``Result.session_lost``). Its state is gone: create a new session.
    """


class SessionBusy(APIError):
    """409 ``session_busy``: a call already runs in the session; retry when it has finished."""


class TooManySessions(APIError):
    """429 ``too_many_sessions``: the sidecar's ``--max-sessions`` are open; close one first."""


class CheckpointNotFound(APIError):
    """404 ``checkpoint_not_found``: the session has no such checkpoint — never had, deleted,
    expired, or lost (its process was killed by the session's own code); ``message`` says which."""


class TooManyCheckpoints(APIError):
    """429 ``too_many_checkpoints``: the session holds ``--max-checkpoints-per-session``;
    delete one first."""


class NotForkable(APIError):
    """409 ``not_forkable``: the session holds what a fork cannot part between its branches:
    threads its code left running (end them: an executor's ``shutdown()``, a pool's
    ``close()``) or memory mapped shared (``mmap``, ``numpy.memmap``, multiprocessing's shared
    values: close them); ``message`` says which. Then fork."""


class ServerError(APIError):
    """500, or any other status this client does not expect (404, 405, ...)."""


#: API error codes (``APIError.code``), as in pkg/api.
ERR_BAD_REQUEST = "bad_request"
ERR_FORBIDDEN = "forbidden"
ERR_NOT_FOUND = "not_found"
ERR_METHOD_NOT_ALLOWED = "method_not_allowed"
ERR_TOO_LARGE = "too_large"
ERR_QUEUE_FULL = "queue_full"
ERR_UNAVAILABLE = "unavailable"
ERR_INTERNAL = "internal"
ERR_PACKAGES_LOCKED = "packages_locked"
ERR_INSTALL_FAILED = "install_failed"
ERR_SESSION_NOT_FOUND = "session_not_found"
ERR_SESSION_BUSY = "session_busy"
ERR_TOO_MANY_SESSIONS = "too_many_sessions"
ERR_CHECKPOINT_NOT_FOUND = "checkpoint_not_found"
ERR_TOO_MANY_CHECKPOINTS = "too_many_checkpoints"
ERR_CHECKPOINT_TOO_LARGE = "checkpoint_too_large"
ERR_NOT_FORKABLE = "not_forkable"
ERR_FORK_TOO_LARGE = "fork_too_large"
ERR_TOO_MANY_FORKS = "too_many_forks"

_ERROR_CLASSES = {
    400: BadRequest,
    403: Forbidden,
    413: TooLarge,
    409: PackagesLocked,
    422: InstallFailed,
    429: QueueFull,
    500: ServerError,
    503: Unavailable,
}  # type: Dict[int, Type[APIError]]

# Error codes whose class is not the one of their status: 404 is also an unknown route, 409
# also packages_locked, 429 also queue_full.
_CODE_CLASSES = {
    ERR_SESSION_NOT_FOUND: SessionNotFound,
    ERR_SESSION_BUSY: SessionBusy,
    ERR_TOO_MANY_SESSIONS: TooManySessions,
    ERR_CHECKPOINT_NOT_FOUND: CheckpointNotFound,
    ERR_TOO_MANY_CHECKPOINTS: TooManyCheckpoints,
    ERR_NOT_FORKABLE: NotForkable,
}  # type: Dict[str, Type[APIError]]

# The status each error code is served with; used for error events inside a stream.
_CODE_STATUS = {
    ERR_BAD_REQUEST: 400,
    ERR_FORBIDDEN: 403,
    ERR_NOT_FOUND: 404,
    ERR_METHOD_NOT_ALLOWED: 405,
    ERR_TOO_LARGE: 413,
    ERR_QUEUE_FULL: 429,
    ERR_INTERNAL: 500,
    ERR_UNAVAILABLE: 503,
    ERR_PACKAGES_LOCKED: 409,
    ERR_INSTALL_FAILED: 422,
    ERR_SESSION_NOT_FOUND: 404,
    ERR_SESSION_BUSY: 409,
    ERR_TOO_MANY_SESSIONS: 429,
    ERR_CHECKPOINT_NOT_FOUND: 404,
    ERR_TOO_MANY_CHECKPOINTS: 429,
    ERR_CHECKPOINT_TOO_LARGE: 413,
    ERR_NOT_FORKABLE: 409,
    ERR_FORK_TOO_LARGE: 413,
    ERR_TOO_MANY_FORKS: 409,
}  # type: Dict[str, int]


def _positive(n: Any, name: str) -> int:
    """n, an int of at least 1; TypeError or ValueError otherwise."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError("%s: an int, got %s" % (name, type(n).__name__))
    if n < 1:
        raise ValueError("%s: at least 1, got %d" % (name, n))
    return n


def _api_error(
    status: int,
    code: str,
    message: str,
    request_id: Optional[str],
    retry_after: Optional[float],
) -> APIError:
    """Returns the APIError subclass instance for code, else for status."""
    cls = _CODE_CLASSES.get(code) or _ERROR_CLASSES.get(status, ServerError)
    return cls(status, code, message, request_id=request_id, retry_after=retry_after)


def _parse_retry_after(value: Optional[str]) -> Optional[float]:
    """Reads a Retry-After header: delay seconds or an HTTP date; None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - time.time()
    if math.isnan(seconds):
        return None
    return max(seconds, 0.0)


def _error_from_response(status: int, headers: Any, body: bytes) -> APIError:
    """Builds the APIError for an HTTP error response."""
    request_id = headers.get("X-Request-Id") or None
    retry_after = _parse_retry_after(headers.get("Retry-After"))
    code = ""
    message = ""
    parsed = False
    try:
        doc = json.loads(body.decode("utf-8"))
    except ValueError:  # includes UnicodeDecodeError and JSONDecodeError
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        err = doc["error"]
        code = str(err.get("code") or "")
        message = str(err.get("message") or "")
        request_id = err.get("request_id") or request_id
        parsed = True
    if not parsed:
        message = body.decode("utf-8", "replace").strip()
        if len(message) > _MAX_RAW_ERROR_CHARS:
            message = message[:_MAX_RAW_ERROR_CHARS] + "..."
        if not message:
            message = "(empty body)"
    return _api_error(status, code, message, request_id, retry_after)


def _error_from_event(event: Mapping[str, Any]) -> APIError:
    """Builds the APIError for a stream's ``{"type":"error","error":{...}}`` event."""
    err = event.get("error")
    if not isinstance(err, dict):
        err = {}
    code = str(err.get("code") or ERR_INTERNAL)
    message = str(err.get("message") or "the execution failed")
    status = _CODE_STATUS.get(code, 500)
    return _api_error(status, code, message, err.get("request_id") or None, None)


# --------------------------------------------------------------------------------------------
# Result

#: Kinds of rich output (``Output.type``), in Jupyter's vocabulary.
OUTPUT_EXECUTE_RESULT = "execute_result"  # the value of the code's final expression
OUTPUT_DISPLAY_DATA = "display_data"  # display(obj), or a matplotlib figure


class Output(dict):
    """One rich output of an execution: a MIME bundle, as a notebook shows it.

    It is the JSON object the server sent, ``{"type": ..., "data": {mime: value}}``, so
    ``output["data"]["text/plain"]`` and comparing it with a dict still work; the
    properties read it.

    Attributes:
        type: ``"execute_result"`` (the value of the code's final expression) or
            ``"display_data"`` (``display(obj)``, or a matplotlib figure).
        data: the MIME bundle, e.g. ``{"text/plain": "...", "text/html": "...",
            "image/png": "<base64>"}``; other types (``image/svg+xml``, ...) are here too.
        text: ``data["text/plain"]``: the ``repr`` of the value, or None.
        html: ``data["text/html"]`` (e.g. a pandas DataFrame's table), or None.
        png: ``data["image/png"]`` decoded: the image's bytes, or None.
    """

    @property
    def type(self) -> str:
        return str(self.get("type") or "")

    @property
    def data(self) -> Dict[str, str]:
        data = self.get("data")
        return data if isinstance(data, dict) else {}

    @property
    def text(self) -> Optional[str]:
        return self.data.get("text/plain")

    @property
    def html(self) -> Optional[str]:
        return self.data.get("text/html")

    @property
    def png(self) -> Optional[bytes]:
        value = self.data.get("image/png")
        if value is None:
            return None
        return _decode_base64(value, "outputs[].data['image/png']")

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> "Output":
        """Builds an Output from one entry of a result's ``outputs``.

        Raises:
            PyexecError: when its ``image/png`` is not valid base64.
        """
        out = cls(doc)
        out.png  # checked at once, like the files of a Result
        return out

    def __repr__(self) -> str:
        return "<Output %s %s>" % (self.type or "?", ",".join(sorted(self.data)) or "(empty)")


def _decode_base64(value: Any, what: str) -> bytes:
    """Decodes a base64 string of a response, or raises PyexecError naming what."""
    try:
        return base64.b64decode("".join(str(value).split()), validate=True)
    except (ValueError, TypeError) as exc:
        raise PyexecError("pyexec: invalid response: %s is not base64: %s" % (what, exc)) from exc


@dataclass(repr=False)
class Result:
    """The outcome of one execution (the 200 answer of ``POST /v1/execute``).

    Attributes:
        id: the request id (also in the server's log line of this execution).
        exit_code: the interpreter's exit status (1 after an uncaught exception).
        stdout: what the code wrote to standard output (maybe truncated).
        stderr: what the code wrote to standard error, tracebacks included (maybe truncated).
        reason: why the execution ended: ``"exit"``, ``"timeout"``, ``"output_limit"``,
            ``"memory_limit"``, ``"process_limit"`` or ``"signal"``.
        signal: the signal that killed the interpreter (e.g. ``"SIGKILL"``), else None.
        timed_out: whether the time limit killed the code.
        stdout_truncated: whether stdout was cut at the server's output cap.
        stderr_truncated: whether stderr was cut at the server's output cap.
        duration_ms: how long the execution took, in milliseconds.
        files: the files the code created or changed in its working directory,
            relative path -> content.
        files_truncated: whether some files were left out by the server's count or size caps.
        outputs: the rich outputs, in order, as :class:`Output` objects (dicts with
            ``type`` and ``data``, whose properties ``text``, ``html`` and ``png`` read the
            MIME bundle): the value of a final expression, ``display(obj)``, matplotlib
            figures.
        outputs_truncated: whether some outputs were left out by the server's size cap
            (which outputs and files share).
        session_lost: whether this call, run in a :class:`Session`, ended the session: its
            interpreter exited or was killed (a timeout the code did not stop for). Later
            calls in it raise :class:`SessionNotFound`.
        exception: the exception the code raised and did not catch, as Jupyter names its
            parts — a dict ``{"ename", "evalue", "traceback": [lines]}`` (the traceback without
            pyexec's own frames) — else None.
        output_budget: what the request's ``output_budget_chars`` left out — a dict
            ``{"limit_chars", "omitted_chars", "full_output_file"}`` — else None.
        hints: short sentences for a model when the cause of a failure lies in the sandbox
            (the time limit, memory, the output cap, the network off, a module not
            installed), else an empty list.
        checkpoint: the checkpoint a session's call with ``checkpoint=True`` took just before
            it ran (``"c3"``), else None.
    """

    id: str = ""
    exit_code: int = 0
    stdout: str = ""
    stderr: str = ""
    reason: str = ""
    signal: Optional[str] = None
    timed_out: bool = False
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    duration_ms: float = 0.0
    files: Dict[str, bytes] = field(default_factory=dict)
    files_truncated: bool = False
    outputs: List[Output] = field(default_factory=list)
    outputs_truncated: bool = False
    session_lost: bool = False
    exception: Optional[Dict[str, Any]] = None
    hints: List[str] = field(default_factory=list)
    output_budget: Optional[Dict[str, Any]] = None
    checkpoint: Optional[str] = None

    @property
    def ok(self) -> bool:
        """True when the code ran to its end and exited with status 0."""
        return self.reason == "exit" and self.exit_code == 0

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> "Result":
        """Builds a Result from the JSON object of an execute response or exit event.

        Raises:
            PyexecError: when a file's content or an output's image is not valid base64.
        """
        files = {}  # type: Dict[str, bytes]
        for entry in doc.get("files") or []:
            if not isinstance(entry, dict):
                continue
            path = str(entry.get("path", ""))
            files[path] = _decode_base64(
                entry.get("content_base64") or "", "files[%r].content_base64" % path
            )
        return cls(
            id=str(doc.get("id") or ""),
            exit_code=int(doc.get("exit_code") or 0),
            stdout=str(doc.get("stdout") or ""),
            stderr=str(doc.get("stderr") or ""),
            reason=str(doc.get("reason") or ""),
            signal=doc.get("signal") or None,
            timed_out=bool(doc.get("timed_out")),
            stdout_truncated=bool(doc.get("stdout_truncated")),
            stderr_truncated=bool(doc.get("stderr_truncated")),
            duration_ms=float(doc.get("duration_ms") or 0.0),
            files=files,
            files_truncated=bool(doc.get("files_truncated")),
            outputs=[Output.from_json(o) for o in doc.get("outputs") or [] if isinstance(o, dict)],
            outputs_truncated=bool(doc.get("outputs_truncated")),
            session_lost=bool(doc.get("session_lost")),
            exception=doc.get("exception") if isinstance(doc.get("exception"), dict) else None,
            hints=[str(h) for h in doc.get("hints") or [] if isinstance(h, str)],
            output_budget=doc.get("output_budget") if isinstance(doc.get("output_budget"), dict) else None,
            checkpoint=doc.get("checkpoint") if isinstance(doc.get("checkpoint"), str) and doc.get("checkpoint") else None,
        )

    def __repr__(self) -> str:
        parts = ["reason=%s" % self.reason, "exit_code=%d" % self.exit_code]
        if self.signal:
            parts.append("signal=%s" % self.signal)
        parts.append("stdout=%d chars%s" % (len(self.stdout), "+" if self.stdout_truncated else ""))
        parts.append("stderr=%d chars%s" % (len(self.stderr), "+" if self.stderr_truncated else ""))
        if self.files or self.files_truncated:
            parts.append("files=%d%s" % (len(self.files), "+" if self.files_truncated else ""))
        if self.outputs or self.outputs_truncated:
            parts.append("outputs=%d%s" % (len(self.outputs), "+" if self.outputs_truncated else ""))
        if self.session_lost:
            parts.append("session_lost")
        parts.append("%.1f ms" % self.duration_ms)
        return "<Result %s %s>" % (self.id or "?", " ".join(parts))


# --------------------------------------------------------------------------------------------
# Transport


class _UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTPConnection to a Unix stream socket instead of a TCP host."""

    def __init__(self, socket_path: str, timeout: Optional[float]) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _connection_failed(socket_path: str, exc: BaseException) -> ConnectionFailed:
    """Explains why connecting to socket_path failed."""
    if isinstance(exc, FileNotFoundError):
        why = "the socket file does not exist"
    elif isinstance(exc, ConnectionRefusedError):
        why = "connection refused (nothing is listening on it)"
    elif isinstance(exc, PermissionError):
        why = "permission denied (this user may not use the socket or its directory)"
    elif isinstance(exc, socket.timeout):
        why = "timed out while connecting"
    else:
        why = str(exc) or type(exc).__name__
    return ConnectionFailed(
        "pyexec: cannot connect to %s: %s; the pyexec sidecar may not be running, or %s "
        "may point to the wrong path (%s)" % (socket_path, why, SOCKET_ENV, exc),
        socket_path,
    )


def _encode_files(files: Optional[FilesArg]) -> Optional[List[Dict[str, str]]]:
    """Turns the ``files`` argument into the wire list ``[{path, content_base64}]``."""
    if files is None:
        return None
    if isinstance(files, Mapping):
        items = list(files.items())  # type: List[Any]
    elif isinstance(files, (str, bytes, bytearray)):
        raise TypeError("files: want a dict {path: bytes|str} or a list of (path, bytes|str)")
    else:
        items = list(files)
    out = []
    for i, item in enumerate(items):
        try:
            path, content = item
        except (TypeError, ValueError):
            raise TypeError("files[%d]: want a (path, content) pair, got %r" % (i, type(item).__name__))
        if isinstance(path, os.PathLike):
            path = os.fspath(path)
        if not isinstance(path, str):
            raise TypeError("files[%d]: path must be a str, got %s" % (i, type(path).__name__))
        if isinstance(content, str):
            data = content.encode("utf-8")
        elif isinstance(content, (bytes, bytearray, memoryview)):
            data = bytes(content)
        else:
            raise TypeError(
                "files[%r]: content must be bytes or str, got %s" % (path, type(content).__name__)
            )
        out.append({"path": path, "content_base64": base64.b64encode(data).decode("ascii")})
    return out


def _check_env(env: Optional[Mapping[str, str]]) -> Optional[Dict[str, str]]:
    """Checks that env maps str to str and copies it."""
    if env is None:
        return None
    out = {}
    for name, value in env.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(
                "env: names and values must be str, got %s=%s"
                % (type(name).__name__, type(value).__name__)
            )
        out[name] = value
    return out


def _add_env_and_files(body: Dict[str, Any], env: Optional[Mapping[str, str]], files: Optional[FilesArg]) -> None:
    """Adds the checked env and the encoded files to a request body, when given."""
    checked_env = _check_env(env)
    if checked_env is not None:
        body["env"] = checked_env
    encoded = _encode_files(files)
    if encoded is not None:
        body["files"] = encoded


def _request_body(
    code: str,
    timeout: Optional[float],
    files: Optional[FilesArg],
    env: Optional[Mapping[str, str]],
    stdin: Optional[Union[str, bytes]],
    memory_limit_mb: Optional[int],
    output_budget_chars: Optional[int] = None,
    checkpoint: bool = False,
) -> bytes:
    """Builds the JSON body of POST /v1/execute. Values are checked by the server."""
    if not isinstance(code, str):
        raise TypeError("code must be a str, got %s" % type(code).__name__)
    body = {"code": code}  # type: Dict[str, Any]
    if timeout is not None:
        body["timeout_seconds"] = float(timeout)
    if stdin is not None:
        if isinstance(stdin, (bytes, bytearray)):
            stdin = bytes(stdin).decode("utf-8")
        if not isinstance(stdin, str):
            raise TypeError("stdin must be a str (or UTF-8 bytes), got %s" % type(stdin).__name__)
        body["stdin"] = stdin
    _add_env_and_files(body, env, files)
    if memory_limit_mb is not None:
        body["memory_limit_mb"] = int(memory_limit_mb)
    if output_budget_chars is not None:
        body["output_budget_chars"] = int(output_budget_chars)
    if checkpoint:
        body["checkpoint"] = True
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def _session_url(session_id: str, tail: str = "") -> str:
    """The path of a session's resource: /v1/sessions/{id}{tail}."""
    if not isinstance(session_id, str) or not session_id:
        raise TypeError("session id must be a non-empty str, got %r" % (session_id,))
    return "/v1/sessions/" + urllib.parse.quote(session_id, safe="") + tail


def _segment(name: str) -> str:
    """name as one segment of a path (a checkpoint's), escaped."""
    if not isinstance(name, str) or not name:
        raise TypeError("a checkpoint must be a non-empty str, got %r" % (name,))
    return urllib.parse.quote(name, safe="")


def _variables(doc: Dict[str, Any]) -> Dict[str, Any]:
    """A listing of variables, checked: its variables a list of dicts."""
    variables = doc.get("variables")
    if not isinstance(variables, list) or not all(isinstance(v, dict) for v in variables):
        raise PyexecError("pyexec: invalid response: variables is not a list of objects")
    return doc


def _file_url(session_id: str, path: str) -> str:
    """The path of a session's file: each segment escaped; empty, "." and ".." segments refused."""
    if not isinstance(path, str) or not path:
        raise TypeError("path must be a non-empty str, got %r" % (path,))
    segments = path.split("/")
    if any(seg in ("", ".", "..") for seg in segments):
        raise ValueError("path %r: empty, '.' and '..' segments are not allowed" % (path,))
    return _session_url(session_id, "/files/" + "/".join(urllib.parse.quote(seg, safe="") for seg in segments))


# --------------------------------------------------------------------------------------------
# Client


class Client:
    """A client of one pyexec sidecar.

    Every call opens its own connection, so a Client may be shared between threads.

    Args:
        socket_path: the sidecar's Unix socket; default ``$PYEXEC_SOCKET``, else
            ``/var/run/pyexec/pyexec.sock``.
        timeout: socket timeout in seconds for each HTTP exchange (connecting and every
            wait for data). Default None: per call, the execution's ``timeout`` + 30 s when
            it sets one, else 330 s (and 30 s for :meth:`info`).
        owner: the owner key of this client's sessions (the ``Pyexec-Owner`` header, 1 to 200
            printable ASCII characters): the sessions it creates are the owner's, and it sees
            no other. An application that serves several users makes a client per user.
            Default None: every session.
    """

    def __init__(
        self, socket_path: Optional[str] = None, timeout: Optional[float] = None, owner: Optional[str] = None
    ) -> None:
        if socket_path is None:
            socket_path = os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET_PATH
        if owner is not None and (
            not isinstance(owner, str) or not 1 <= len(owner) <= 200 or any(not " " <= c <= "~" for c in owner)
        ):
            raise ValueError("owner: want 1 to 200 printable ASCII characters, got %r" % (owner,))
        self.socket_path = os.fspath(socket_path)  # type: str
        self.timeout = timeout  # type: Optional[float]
        self.owner = owner  # type: Optional[str]

    def __repr__(self) -> str:
        return "Client(socket_path=%r, timeout=%r, owner=%r)" % (self.socket_path, self.timeout, self.owner)

    def execute(
        self,
        code: str,
        timeout: Optional[float] = None,
        files: Optional[FilesArg] = None,
        env: Optional[Mapping[str, str]] = None,
        stdin: Optional[Union[str, bytes]] = None,
        memory_limit_mb: Optional[int] = None,
        output_budget_chars: Optional[int] = None,
    ) -> Result:
        """Runs code as ``__main__`` in a fresh working directory and returns its Result.

        Args:
            code: the Python source.
            timeout: time limit in seconds (``timeout_seconds``); default: the server's.
            files: files to write into the working directory first: a dict
                ``{relative_path: bytes|str}`` or a list of ``(path, bytes|str)``; str
                content is encoded as UTF-8.
            env: environment variables to add for the code.
            stdin: standard input for the code (str, or UTF-8 bytes).
            memory_limit_mb: memory limit in MiB; default: the server's.
            output_budget_chars: at most this many characters (at least 200) of stdout and
                stderr in the result, their first and last; ``result.output_budget`` then says
                what was left out and names the file of the whole output.

        Returns:
            The Result, whatever the code did (exception, non-zero exit, timeout...).

        Raises:
            ConnectionFailed: the socket is missing or nobody listens on it.
            APIError: the server refused the request (a subclass by status).
            PyexecError: the exchange broke off or the answer was not valid.
            TypeError: an argument has the wrong type.
        """
        body = _request_body(code, timeout, files, env, stdin, memory_limit_mb, output_budget_chars)
        return Result.from_json(self._json_call("POST", "/v1/execute", body, self._http_timeout(timeout)))

    def stream(
        self,
        code: str,
        timeout: Optional[float] = None,
        files: Optional[FilesArg] = None,
        env: Optional[Mapping[str, str]] = None,
        stdin: Optional[Union[str, bytes]] = None,
        memory_limit_mb: Optional[int] = None,
    ) -> Iterator[Tuple[str, Union[str, Result]]]:
        """Runs code like :meth:`execute`, yielding its output as it arrives.

        Yields ``("stdout", text)`` and ``("stderr", text)`` tuples in the order the server
        sends them, and last ``("exit", Result)``. The generator is lazy: nothing is sent
        until the first item is asked for. Closing it early (e.g. ``break``) closes the
        connection, which tells the server to stop the execution.

        Takes the same arguments as :meth:`execute`.

        Raises:
            ConnectionFailed: the socket is missing or nobody listens on it.
            APIError: the server refused the request, or the stream ended with an error
                event (the execution could not be run).
            PyexecError: the exchange broke off, or the stream ended without an exit event.
            TypeError: an argument has the wrong type.
        """
        body = _request_body(code, timeout, files, env, stdin, memory_limit_mb)
        yield from self._stream("/v1/execute?stream=true", body, self._http_timeout(timeout))

    def _stream(self, url: str, body: bytes, timeout: float) -> Iterator[Tuple[str, Union[str, Result]]]:
        """POSTs body to a streaming url and yields its events, as :meth:`stream` says."""
        conn = self._open(timeout)
        try:
            resp = self._send(conn, "POST", url, body)
            if resp.status != 200:
                raise _error_from_response(resp.status, resp.headers, self._read(resp, resp.read))
            while True:
                line = self._read(resp, resp.readline)
                if not line:
                    raise PyexecError(
                        "pyexec: the stream ended without an exit event; the execution failed "
                        "or the server went away"
                    )
                if not line.strip():
                    continue
                try:
                    event = json.loads(line.decode("utf-8"))
                except ValueError as exc:
                    raise PyexecError(
                        "pyexec: invalid stream event (not a JSON line): %s" % exc
                    ) from exc
                if not isinstance(event, dict):
                    raise PyexecError("pyexec: invalid stream event: not a JSON object")
                kind = event.get("type")
                if kind in ("stdout", "stderr"):
                    yield (str(kind), str(event.get("data") or ""))
                elif kind == "exit":
                    yield ("exit", Result.from_json(event))
                    return
                elif kind == "error":
                    raise _error_from_event(event)
                # Other event types are from a newer server: skip them.
        finally:
            conn.close()

    def info(self) -> Dict[str, Any]:
        """Returns ``GET /v1/info``: version, container, python, preflight, limits, ...

        Raises:
            ConnectionFailed: the socket is missing or nobody listens on it.
            APIError: the server refused the request (e.g. Unavailable before it is ready).
            PyexecError: the exchange broke off or the answer was not valid.
        """
        return self._json_call("GET", "/v1/info", None, self.timeout if self.timeout is not None else INFO_HTTP_TIMEOUT)

    def packages(self) -> Dict[str, Any]:
        """Returns ``GET /v1/packages``: the packages dir, its current tree and what is installed."""
        return self._json_call("GET", "/v1/packages", None, self.timeout if self.timeout is not None else INFO_HTTP_TIMEOUT)

    def install_packages(self, packages: Sequence[str], upgrade: bool = False) -> Dict[str, Any]:
        """Installs packages (``POST /v1/packages``), e.g. ``["pandas>=2"]``, for every later execution.

        Raises:
            Forbidden: the server's --allow-packages does not allow one of them.
            InstallFailed: pip failed (a version conflict, a missing package); see ``message``.
            PackagesLocked: the packages dir cannot be written.
            BadRequest: a requirement does not parse.
        """
        if isinstance(packages, (str, bytes)) or not all(isinstance(p, str) for p in packages):
            raise TypeError("packages must be a list of requirement strings")
        body = json.dumps({"packages": list(packages), "upgrade": bool(upgrade)}).encode("utf-8")
        return self._json_call("POST", "/v1/packages", body, self.timeout if self.timeout is not None else DEFAULT_HTTP_TIMEOUT)

    # Sessions.

    def create_session(
        self,
        idle_timeout: Optional[float] = None,
        memory_limit_mb: Optional[int] = None,
        env: Optional[Mapping[str, str]] = None,
        files: Optional[FilesArg] = None,
        network: Optional[bool] = None,
    ) -> "Session":
        """Starts a session (``POST /v1/sessions``): an interpreter that keeps its state.

        The session lives until :meth:`Session.close` (or :meth:`delete_session`), until it
        was idle for ``idle_timeout``, or until the sidecar stops. Prefer :meth:`session`
        in a ``with`` statement, which always deletes it.

        Args:
            idle_timeout: seconds without a call after which the session ends; default the
                server's ``--session-idle-timeout``, at most its ``--max-session-idle-timeout``.
            memory_limit_mb: memory limit in MiB of the session's processes, for its whole
                life; default: the server's.
            env: environment variables the interpreter starts with (a call's ``env`` adds
                to them).
            files: files to write into the session's working directory first, as
                :meth:`execute` takes them.
            network: whether the session's code may open network connections; default the
                server's ``--network``.

        Returns:
            The :class:`Session`; its ``info`` is the server's description of it.

        Raises:
            TooManySessions: the server's ``--max-sessions`` are open.
            BadRequest: an argument was refused (e.g. an idle timeout over the maximum).
            Forbidden: ``network=True`` on a server that denies the network.
            ConnectionFailed: the socket is missing or nobody listens on it.
            APIError: the server refused the request otherwise.
            PyexecError: the exchange broke off or the answer was not valid.
            TypeError: an argument has the wrong type.
        """
        body = {}  # type: Dict[str, Any]
        if idle_timeout is not None:
            body["idle_timeout_seconds"] = float(idle_timeout)
        if memory_limit_mb is not None:
            body["memory_limit_mb"] = int(memory_limit_mb)
        _add_env_and_files(body, env, files)
        if network is not None:
            body["network"] = bool(network)
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        return Session(self, self._json_call("POST", "/v1/sessions", data, self._admin_timeout(), expect=(201, 200)))

    @contextlib.contextmanager
    def session(
        self,
        idle_timeout: Optional[float] = None,
        memory_limit_mb: Optional[int] = None,
        env: Optional[Mapping[str, str]] = None,
        files: Optional[FilesArg] = None,
        network: Optional[bool] = None,
    ) -> Iterator["Session"]:
        """A session for a ``with`` block: created on entry, deleted on exit::

            with client.session() as s:
                s.run("x = 21")
                print(s.run("x * 2").outputs[0].text)   # 42

        Takes the arguments of :meth:`create_session` and raises its errors on entry. On
        exit the session is deleted (no error when it had already ended); when the block
        raised, an error deleting it does not replace the block's exception.
        """
        sess = self.create_session(
            idle_timeout=idle_timeout, memory_limit_mb=memory_limit_mb, env=env, files=files,
            network=network,
        )
        with sess:
            yield sess

    def list_sessions(self) -> List[Dict[str, Any]]:
        """Returns ``GET /v1/sessions``: a description of every open session, oldest first.

        Each is a dict as :attr:`Session.info`: ``id``, ``created_at``, ``last_used_at``,
        ``expires_at``, ``idle_timeout_seconds``, ``executions``, ``memory_bytes``,
        ``memory_limit_mb``, ``network``, ``busy``.
        """
        doc = self._json_call("GET", "/v1/sessions", None, self._admin_timeout())
        sessions = doc.get("sessions")
        if sessions is None:
            return []
        if not isinstance(sessions, list):
            raise PyexecError("pyexec: invalid response: sessions is not a list")
        return [s for s in sessions if isinstance(s, dict)]

    def get_session(self, session_id: str) -> Dict[str, Any]:
        """Returns ``GET /v1/sessions/{id}``: the session's description, as :attr:`Session.info`.

        Raises:
            SessionNotFound: there is no such session (any more).
        """
        return self._json_call("GET", _session_url(session_id), None, self._admin_timeout())

    def session_variables(self, session_id: str) -> Dict[str, Any]:
        """Returns the variables of a session (``GET /v1/sessions/{id}/variables``):
        ``{"variables": [...], "total": N, "truncated": bool}``, a dict per user's global,
        sorted by name — ``name``, ``type``, ``repr`` (at most 200 characters), and ``len``,
        ``shape``, ``dtype``, ``bytes`` when it has them, ``timed_out`` when its methods took
        too long; ``truncated`` when more than the 1,000 listed.

        Raises:
            SessionNotFound: there is no such session (any more).
            SessionBusy: a call runs in it now.
        """
        return _variables(self._json_call("GET", _session_url(session_id, "/variables"), None, self._admin_timeout()))

    def session_files(self, session_id: str) -> Dict[str, Any]:
        """Returns ``GET /v1/sessions/{id}/files``: ``{"files": [{"path", "size",
        "modified_at"}, ...], "truncated", "total"}``, the regular files of the session's
        working directory, sorted by path.

        Raises:
            SessionNotFound: there is no such session (any more).
        """
        return self._json_call("GET", _session_url(session_id, "/files"), None, self._admin_timeout())

    def session_file(self, session_id: str, path: str) -> bytes:
        """Returns the bytes of one file of a session's working directory
        (``GET /v1/sessions/{id}/files/{path}``), ``path`` as :meth:`session_files` lists it.

        Raises:
            SessionNotFound: there is no such session (any more).
            APIError: ``file_not_found``, or the path was refused (``bad_request``).
        """
        return self._call("GET", _file_url(session_id, path), None, self._admin_timeout(), expect=(200,))

    def delete_session(self, session_id: str) -> None:
        """Ends a session (``DELETE /v1/sessions/{id}``): its processes and files are gone.

        Raises:
            SessionNotFound: there is no such session (any more).
        """
        self._call("DELETE", _session_url(session_id), None, self._admin_timeout(), expect=(204, 200))

    def checkpoint(self, session_id: str) -> Dict[str, Any]:
        """Takes a checkpoint of a session (``POST /v1/sessions/{id}/checkpoints``): a frozen
        copy of its interpreter and files, which :meth:`restore` puts the session back to.
        Returns ``{"checkpoint": "c1", "created_at", "expires_at", "memory_bytes",
        "files_bytes", "files"}``.

        Raises:
            SessionNotFound: there is no such session (any more).
            SessionBusy: a call runs in it now.
            TooManyCheckpoints: it holds ``--max-checkpoints-per-session`` already.
            APIError: ``checkpoint_too_large``: its files are over ``--max-checkpoint-bytes``.
        """
        return self._json_call("POST", _session_url(session_id, "/checkpoints"), b"{}", self._admin_timeout(), expect=(201,))

    def checkpoints(self, session_id: str) -> List[Dict[str, Any]]:
        """The checkpoints of a session, oldest first (``GET /v1/sessions/{id}/checkpoints``),
        each as :meth:`checkpoint` returns it; ``memory_bytes`` is what only it holds now."""
        doc = self._json_call("GET", _session_url(session_id, "/checkpoints"), None, self._admin_timeout())
        return list(doc.get("checkpoints") or [])

    def restore(self, session_id: str, checkpoint: str) -> Dict[str, Any]:
        """Puts a session back to one of its checkpoints (``POST /v1/sessions/{id}/restore``):
        the calls after see exactly its state, variables and files. The checkpoint stays.
        Returns the session's description.

        Raises:
            SessionNotFound: there is no such session (any more).
            SessionBusy: a call runs in it now.
            CheckpointNotFound: it has no such checkpoint (the message says why).
        """
        body = json.dumps({"checkpoint": checkpoint}).encode("utf-8")
        return self._json_call("POST", _session_url(session_id, "/restore"), body, self._admin_timeout())

    def fork(self, session_id: str, count: Optional[int] = None) -> Any:
        """Forks a session between calls (``POST /v1/sessions/{id}/fork``) into a branch: a new
        :class:`Session` with its variables, imports, environment, limits and a copy of its
        files, from then on independent of it both ways. With ``count``, that many branches at
        once, as a list. Each counts against ``--max-sessions``; its ``info["parent"]`` names
        the session.

        Raises:
            SessionNotFound: there is no such session (any more).
            SessionBusy: a call runs in it now.
            NotForkable: its code left threads running.
            TooManySessions: the branches would pass ``--max-sessions``.
            APIError: ``fork_too_large`` (its files are over ``--max-checkpoint-bytes``) or
                ``too_many_forks`` (15 forks in a row: Landlock's limit).
        """
        body = b"{}" if count is None else json.dumps({"count": _positive(count, "count")}).encode("utf-8")
        doc = self._json_call("POST", _session_url(session_id, "/fork"), body, self._admin_timeout(), expect=(201,))
        if count is None:
            return Session(self, doc)
        return [Session(self, s) for s in doc.get("sessions") or []]

    def delete_checkpoint(self, session_id: str, checkpoint: str) -> None:
        """Lets a checkpoint of a session go (``DELETE /v1/sessions/{id}/checkpoints/{cid}``).

        Raises:
            SessionNotFound, SessionBusy, CheckpointNotFound.
        """
        self._call("DELETE", _session_url(session_id, "/checkpoints/" + _segment(checkpoint)), None, self._admin_timeout(), expect=(204, 200))

    # Internals.

    def _json_call(
        self,
        method: str,
        url: str,
        body: Optional[bytes],
        timeout: float,
        expect: Sequence[int] = (200,),
    ) -> Dict[str, Any]:
        """One request whose answer (a status in expect) is a JSON object."""
        data = self._call(method, url, body, timeout, expect)
        try:
            doc = json.loads(data.decode("utf-8"))
        except ValueError as exc:
            raise PyexecError("pyexec: invalid response: not JSON: %s" % exc) from exc
        if not isinstance(doc, dict):
            raise PyexecError("pyexec: invalid response: not a JSON object")
        return doc

    def _call(
        self, method: str, url: str, body: Optional[bytes], timeout: float, expect: Sequence[int]
    ) -> bytes:
        """One request; returns the body of its answer, or raises APIError unless its status is in expect."""
        conn = self._open(timeout)
        try:
            resp = self._send(conn, method, url, body)
            data = self._read(resp, resp.read)
            if resp.status not in expect:
                raise _error_from_response(resp.status, resp.headers, data)
            return data
        finally:
            conn.close()

    def _admin_timeout(self) -> float:
        """The socket timeout of a call that runs no code."""
        return self.timeout if self.timeout is not None else INFO_HTTP_TIMEOUT

    def _http_timeout(self, exec_timeout: Optional[float]) -> float:
        """The socket timeout of one execute call."""
        if self.timeout is not None:
            return self.timeout
        if exec_timeout is None:
            return DEFAULT_HTTP_TIMEOUT
        try:
            t = float(exec_timeout)
        except (TypeError, ValueError):
            return DEFAULT_HTTP_TIMEOUT
        if math.isinf(t):
            return DEFAULT_HTTP_TIMEOUT
        if math.isnan(t) or t < 0:
            # The server refuses such a request at once.
            return HTTP_TIMEOUT_MARGIN
        return t + HTTP_TIMEOUT_MARGIN

    def _open(self, timeout: float) -> _UnixHTTPConnection:
        """Connects to the socket, or raises ConnectionFailed."""
        conn = _UnixHTTPConnection(self.socket_path, timeout)
        try:
            conn.connect()
        except OSError as exc:
            conn.close()
            raise _connection_failed(self.socket_path, exc) from exc
        return conn

    def _send(
        self, conn: _UnixHTTPConnection, method: str, url: str, body: Optional[bytes]
    ) -> http.client.HTTPResponse:
        """Sends one request and reads the status line and headers of its response."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self.owner is not None:
            headers["Pyexec-Owner"] = self.owner
        send_error = None  # type: Optional[BaseException]
        try:
            conn.request(method, url, body=body, headers=headers)
        except socket.timeout as exc:
            raise self._timed_out(conn) from exc
        except (BrokenPipeError, ConnectionResetError) as exc:
            # The server may have answered early (413 on a big body) and stopped reading;
            # its answer can still be waiting in the socket.
            send_error = exc
        except (OSError, http.client.HTTPException) as exc:
            raise self._lost(exc) from exc
        try:
            return conn.getresponse()
        except socket.timeout as exc:
            raise self._timed_out(conn) from exc
        except (OSError, http.client.HTTPException) as exc:
            cause = send_error or exc
            raise self._lost(cause) from cause

    def _read(self, resp: http.client.HTTPResponse, read: Callable[[], bytes]) -> bytes:
        """Calls resp.read or resp.readline, turning transport errors into PyexecError."""
        try:
            data = read()
        except socket.timeout as exc:
            raise PyexecError(
                "pyexec: no data from %s within the socket timeout; raise Client(timeout=...)"
                % self.socket_path
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise self._lost(exc) from exc
        return bytes(data)

    def _timed_out(self, conn: _UnixHTTPConnection) -> PyexecError:
        return PyexecError(
            "pyexec: no answer from %s within %gs; raise Client(timeout=...)"
            % (self.socket_path, conn.timeout)
        )

    def _lost(self, exc: BaseException) -> PyexecError:
        return PyexecError(
            "pyexec: connection to %s lost: %s" % (self.socket_path, str(exc) or type(exc).__name__)
        )


class Session:
    """A session on the sidecar: one interpreter whose state lasts from call to call.

    Globals, imports, ``os.environ`` changes and the working directory persist between
    :meth:`run` calls; processes the code starts end with each call. Only one call runs at a
    time (another raises :class:`SessionBusy`). Get one from :meth:`Client.create_session`
    or :meth:`Client.session`; ``Session(client, client.get_session(id))`` attaches to an
    existing one. A Session is a context manager that deletes the session on exit.

    Attributes:
        id: the session's id.
        info: the server's description of the session (a dict as :meth:`Client.get_session`
            returns): at first the answer that created it, then the last :meth:`describe`.
        client: the :class:`Client` it talks through.
    """

    def __init__(self, client: Client, info: Mapping[str, Any]) -> None:
        session_id = info.get("id")
        if not isinstance(session_id, str) or not session_id:
            raise PyexecError("pyexec: invalid response: the session has no id")
        self.client = client
        self.id = session_id  # type: str
        self.info = dict(info)  # type: Dict[str, Any]

    def __repr__(self) -> str:
        return "<Session %s on %s>" % (self.id, self.client.socket_path)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except PyexecError:
            pass  # the block's own exception matters more; the idle timeout ends the session

    def run(
        self,
        code: str,
        timeout: Optional[float] = None,
        stdin: Optional[Union[str, bytes]] = None,
        env: Optional[Mapping[str, str]] = None,
        files: Optional[FilesArg] = None,
        output_budget_chars: Optional[int] = None,
        checkpoint: bool = False,
    ) -> Result:
        """Runs code in the session (``POST /v1/sessions/{id}/execute``) and returns its Result.

        Like a notebook cell: the value of a final expression is ``result.outputs``' last
        entry (``execute_result``). ``result.files`` holds only the files this call created
        or changed.

        Args:
            code: the Python source.
            timeout: time limit in seconds; default: the server's. At the limit the code gets
                a KeyboardInterrupt; if it stops soon the session stays (``reason`` is
                ``"timeout"``), else the session is killed (``result.session_lost``).
            stdin: standard input for the code (str, or UTF-8 bytes).
            env: environment variables to add for this call.
            files: files to write into the session's working directory first, as
                :meth:`Client.execute` takes them.
            output_budget_chars: as :meth:`Client.execute`'s; the file of the whole output
                stays in the session's working directory.
            checkpoint: take a checkpoint just before the call (``result.checkpoint`` names
                it): :meth:`restore` to it undoes the call. At the session's cap the oldest
                checkpoint taken this way is let go first.

        Raises:
            SessionNotFound: the session ended (deleted, idle, lost).
            SessionBusy: another call runs in the session.
            ConnectionFailed: the socket is missing or nobody listens on it.
            APIError: the server refused the request otherwise.
            PyexecError: the exchange broke off or the answer was not valid.
            TypeError: an argument has the wrong type.
        """
        body = _request_body(code, timeout, files, env, stdin, None, output_budget_chars, checkpoint)
        client = self.client
        doc = client._json_call("POST", _session_url(self.id, "/execute"), body, client._http_timeout(timeout))
        return Result.from_json(doc)

    def stream(
        self,
        code: str,
        timeout: Optional[float] = None,
        stdin: Optional[Union[str, bytes]] = None,
        env: Optional[Mapping[str, str]] = None,
        files: Optional[FilesArg] = None,
    ) -> Iterator[Tuple[str, Union[str, Result]]]:
        """Runs code like :meth:`run`, yielding its output as :meth:`Client.stream` does.

        Yields ``("stdout", text)`` and ``("stderr", text)``, then ``("exit", Result)``.
        Closing the generator early closes the connection, which stops the call.
        """
        body = _request_body(code, timeout, files, env, stdin, None)
        client = self.client
        yield from client._stream(
            _session_url(self.id, "/execute?stream=true"), body, client._http_timeout(timeout)
        )

    def describe(self) -> Dict[str, Any]:
        """Returns the server's description of the session now, and keeps it in :attr:`info`.

        Raises:
            SessionNotFound: the session ended.
        """
        self.info = self.client.get_session(self.id)
        return self.info

    def variables(self) -> Dict[str, Any]:
        """The session's variables: :meth:`Client.session_variables`."""
        return self.client.session_variables(self.id)

    def files(self) -> Dict[str, Any]:
        """The session's files: :meth:`Client.session_files`."""
        return self.client.session_files(self.id)

    def checkpoint(self) -> Dict[str, Any]:
        """Takes a checkpoint of the session: :meth:`Client.checkpoint`."""
        return self.client.checkpoint(self.id)

    def checkpoints(self) -> List[Dict[str, Any]]:
        """The session's checkpoints: :meth:`Client.checkpoints`."""
        return self.client.checkpoints(self.id)

    def restore(self, checkpoint: str) -> None:
        """Puts the session back to a checkpoint: :meth:`Client.restore`."""
        self.info = self.client.restore(self.id, checkpoint)

    def delete_checkpoint(self, checkpoint: str) -> None:
        """Lets a checkpoint go: :meth:`Client.delete_checkpoint`."""
        self.client.delete_checkpoint(self.id, checkpoint)

    def fork(self, count: Optional[int] = None) -> Any:
        """Forks the session into a branch, or ``count`` of them: :meth:`Client.fork`. Close
        each branch (``with`` works on it) as any session."""
        return self.client.fork(self.id, count)

    def file(self, path: str) -> bytes:
        """One file of the session: :meth:`Client.session_file`."""
        return self.client.session_file(self.id, path)

    def close(self) -> None:
        """Deletes the session; nothing happens when it had already ended."""
        try:
            self.client.delete_session(self.id)
        except SessionNotFound:
            pass


def execute(
    code: str,
    timeout: Optional[float] = None,
    files: Optional[FilesArg] = None,
    env: Optional[Mapping[str, str]] = None,
    stdin: Optional[Union[str, bytes]] = None,
    memory_limit_mb: Optional[int] = None,
) -> Result:
    """Runs code on the default sidecar: shorthand for ``Client().execute(...)``.

    See :meth:`Client.execute` for the arguments, result and errors.
    """
    return Client().execute(
        code, timeout=timeout, files=files, env=env, stdin=stdin, memory_limit_mb=memory_limit_mb
    )


# --------------------------------------------------------------------------------------------
# AsyncClient


class AsyncClient:
    """The :class:`Client` for asyncio code, standard library only: the same calls, awaited.

    Every call opens its own connection to the socket (``asyncio.open_unix_connection``), so
    one AsyncClient may serve many tasks at once::

        client = AsyncClient()
        result = await client.execute("print(6 * 7)")
        async for kind, data in client.stream("for i in range(3): print(i)"):
            ...
        async with await client.create_session() as s:
            await s.run("x = 41")
            print((await s.run("x + 1")).outputs[0].text)   # 42

    Arguments, results and errors are :class:`Client`'s; a time-out raises
    :class:`PyexecError` (cancelling the awaiting task closes the connection, which stops the
    execution).
    """

    def __init__(
        self, socket_path: Optional[str] = None, timeout: Optional[float] = None, owner: Optional[str] = None
    ) -> None:
        self._sync = Client(socket_path, timeout, owner)  # the checks and the timeouts
        self.socket_path = self._sync.socket_path
        self.timeout = timeout
        self.owner = owner

    def __repr__(self) -> str:
        return "AsyncClient(socket_path=%r, timeout=%r, owner=%r)" % (self.socket_path, self.timeout, self.owner)

    async def execute(self, code: str, timeout: Optional[float] = None, files: Optional[FilesArg] = None,
                      env: Optional[Mapping[str, str]] = None, stdin: Optional[Union[str, bytes]] = None,
                      memory_limit_mb: Optional[int] = None, output_budget_chars: Optional[int] = None) -> Result:
        """:meth:`Client.execute`, awaited."""
        body = _request_body(code, timeout, files, env, stdin, memory_limit_mb, output_budget_chars)
        return Result.from_json(await self._json_call("POST", "/v1/execute", body, self._sync._http_timeout(timeout)))

    async def stream(self, code: str, timeout: Optional[float] = None, files: Optional[FilesArg] = None,
                     env: Optional[Mapping[str, str]] = None, stdin: Optional[Union[str, bytes]] = None,
                     memory_limit_mb: Optional[int] = None) -> AsyncIterator[Tuple[str, Union[str, Result]]]:
        """:meth:`Client.stream`, as an async iterator."""
        body = _request_body(code, timeout, files, env, stdin, memory_limit_mb)
        async for event in self._stream("/v1/execute?stream=true", body, self._sync._http_timeout(timeout)):
            yield event

    async def info(self) -> Dict[str, Any]:
        """:meth:`Client.info`, awaited."""
        return await self._json_call("GET", "/v1/info", None, self._sync._admin_timeout())

    async def create_session(self, idle_timeout: Optional[float] = None, memory_limit_mb: Optional[int] = None,
                             env: Optional[Mapping[str, str]] = None, files: Optional[FilesArg] = None,
                             network: Optional[bool] = None) -> "AsyncSession":
        """:meth:`Client.create_session`, awaited; the session is an :class:`AsyncSession`."""
        body = {}  # type: Dict[str, Any]
        if idle_timeout is not None:
            body["idle_timeout_seconds"] = float(idle_timeout)
        if memory_limit_mb is not None:
            body["memory_limit_mb"] = int(memory_limit_mb)
        _add_env_and_files(body, env, files)
        if network is not None:
            body["network"] = bool(network)
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        return AsyncSession(self, await self._json_call("POST", "/v1/sessions", data, self._sync._admin_timeout(), expect=(201, 200)))

    async def list_sessions(self) -> List[Dict[str, Any]]:
        """:meth:`Client.list_sessions`, awaited."""
        doc = await self._json_call("GET", "/v1/sessions", None, self._sync._admin_timeout())
        return [s for s in doc.get("sessions") or [] if isinstance(s, dict)]

    async def get_session(self, session_id: str) -> Dict[str, Any]:
        """:meth:`Client.get_session`, awaited."""
        return await self._json_call("GET", _session_url(session_id), None, self._sync._admin_timeout())

    async def session_variables(self, session_id: str) -> Dict[str, Any]:
        """:meth:`Client.session_variables`, awaited."""
        return _variables(await self._json_call("GET", _session_url(session_id, "/variables"), None, self._sync._admin_timeout()))

    async def session_files(self, session_id: str) -> Dict[str, Any]:
        """:meth:`Client.session_files`, awaited."""
        return await self._json_call("GET", _session_url(session_id, "/files"), None, self._sync._admin_timeout())

    async def session_file(self, session_id: str, path: str) -> bytes:
        """:meth:`Client.session_file`, awaited."""
        _, _, data = await self._call("GET", _file_url(session_id, path), None, self._sync._admin_timeout(), (200,))
        return data

    async def delete_session(self, session_id: str) -> None:
        """:meth:`Client.delete_session`, awaited."""
        await self._call("DELETE", _session_url(session_id), None, self._sync._admin_timeout(), (204, 200))

    async def checkpoint(self, session_id: str) -> Dict[str, Any]:
        """:meth:`Client.checkpoint`, awaited."""
        return await self._json_call("POST", _session_url(session_id, "/checkpoints"), b"{}", self._sync._admin_timeout(), (201,))

    async def checkpoints(self, session_id: str) -> List[Dict[str, Any]]:
        """:meth:`Client.checkpoints`, awaited."""
        doc = await self._json_call("GET", _session_url(session_id, "/checkpoints"), None, self._sync._admin_timeout())
        return list(doc.get("checkpoints") or [])

    async def restore(self, session_id: str, checkpoint: str) -> Dict[str, Any]:
        """:meth:`Client.restore`, awaited."""
        body = json.dumps({"checkpoint": checkpoint}).encode("utf-8")
        return await self._json_call("POST", _session_url(session_id, "/restore"), body, self._sync._admin_timeout())

    async def fork(self, session_id: str, count: Optional[int] = None) -> Any:
        """:meth:`Client.fork`, awaited; the branches are :class:`AsyncSession` objects."""
        body = b"{}" if count is None else json.dumps({"count": _positive(count, "count")}).encode("utf-8")
        doc = await self._json_call("POST", _session_url(session_id, "/fork"), body, self._sync._admin_timeout(), (201,))
        if count is None:
            return AsyncSession(self, doc)
        return [AsyncSession(self, s) for s in doc.get("sessions") or []]

    async def delete_checkpoint(self, session_id: str, checkpoint: str) -> None:
        """:meth:`Client.delete_checkpoint`, awaited."""
        await self._call("DELETE", _session_url(session_id, "/checkpoints/" + _segment(checkpoint)), None, self._sync._admin_timeout(), (204, 200))

    # Internals: HTTP/1.1 on a connection of its own, "Connection: close".

    async def _json_call(self, method: str, url: str, body: Optional[bytes], timeout: float,
                         expect: Sequence[int] = (200,)) -> Dict[str, Any]:
        _, _, data = await self._call(method, url, body, timeout, expect)
        try:
            doc = json.loads(data.decode("utf-8"))
        except ValueError as exc:
            raise PyexecError("pyexec: invalid response: not JSON: %s" % exc) from exc
        if not isinstance(doc, dict):
            raise PyexecError("pyexec: invalid response: not a JSON object")
        return doc

    async def _call(self, method: str, url: str, body: Optional[bytes], timeout: float,
                    expect: Sequence[int]) -> Tuple[int, Any, bytes]:
        try:
            return await asyncio.wait_for(self._exchange(method, url, body, expect), timeout)
        except asyncio.TimeoutError as exc:
            raise PyexecError("pyexec: no answer from %s within %gs" % (self.socket_path, timeout)) from exc

    async def _exchange(self, method: str, url: str, body: Optional[bytes], expect: Sequence[int]) -> Tuple[int, Any, bytes]:
        reader, writer = await self._open(method, url, body)
        try:
            status, headers = await _read_head(reader)
            data = b"".join([chunk async for chunk in _read_body(reader, headers)])
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            raise PyexecError("pyexec: the exchange with %s broke off: %s" % (self.socket_path, exc)) from exc
        finally:
            writer.close()
        if status not in expect:
            raise _error_from_response(status, headers, data)
        return status, headers, data

    async def _open(self, method: str, url: str, body: Optional[bytes]) -> Tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            reader, writer = await asyncio.open_unix_connection(self.socket_path, limit=1 << 20)
        except OSError as exc:
            raise _connection_failed(self.socket_path, exc) from exc
        head = ["%s %s HTTP/1.1" % (method, url), "Host: pyexec", "Accept: application/json", "Connection: close"]
        if body is not None:
            head += ["Content-Type: application/json", "Content-Length: %d" % len(body)]
        if self.owner is not None:
            head.append("Pyexec-Owner: " + self.owner)
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("ascii") + (body or b""))
        try:
            await writer.drain()
        except OSError:
            pass  # the server may have answered early (413 on a big body): its answer is read
        return reader, writer

    async def _stream(self, url: str, body: bytes, timeout: float) -> AsyncIterator[Tuple[str, Union[str, Result]]]:
        reader, writer = await asyncio.wait_for(self._open("POST", url, body), timeout)
        try:
            status, headers = await asyncio.wait_for(_read_head(reader), timeout)
            chunks = _read_body(reader, headers)
            if status != 200:
                data = b"".join([chunk async for chunk in chunks])
                raise _error_from_response(status, headers, data)
            pending = b""
            while True:
                try:
                    chunk = await asyncio.wait_for(chunks.__anext__(), timeout)
                except StopAsyncIteration:
                    raise PyexecError("pyexec: the stream ended without an exit event; the execution failed "
                                      "or the server went away") from None
                except asyncio.TimeoutError as exc:
                    raise PyexecError("pyexec: no event from %s within %gs" % (self.socket_path, timeout)) from exc
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    try:
                        event = json.loads(line.decode("utf-8"))
                    except ValueError as exc:
                        raise PyexecError("pyexec: invalid stream event (not a JSON line): %s" % exc) from exc
                    kind = event.get("type") if isinstance(event, dict) else None
                    if kind in ("stdout", "stderr"):
                        yield (str(kind), str(event.get("data") or ""))
                    elif kind == "exit":
                        yield ("exit", Result.from_json(event))
                        return
                    elif kind == "error":
                        raise _error_from_event(event)
        finally:
            writer.close()


async def _read_head(reader: asyncio.StreamReader) -> Tuple[int, Any]:
    """Reads a response's status line and headers."""
    line = await reader.readline()
    parts = line.decode("latin-1").split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError("not an HTTP response: %r" % line[:80])
    raw = b""
    while True:
        h = await reader.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        raw += h
    import email.parser
    import email.policy

    headers = email.parser.BytesHeaderParser(policy=email.policy.HTTP).parsebytes(raw)
    return int(parts[1]), headers


async def _read_body(reader: asyncio.StreamReader, headers: Any) -> AsyncIterator[bytes]:
    """Yields a response's body as it comes: chunked, of a Content-Length, or to the end."""
    if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                return
            yield await reader.readexactly(size)
            await reader.readexactly(2)
    elif headers.get("Content-Length") is not None:
        left = int(headers.get("Content-Length"))
        while left > 0:
            chunk = await reader.read(min(left, 1 << 16))
            if not chunk:
                raise asyncio.IncompleteReadError(b"", left)
            left -= len(chunk)
            yield chunk
    else:
        while True:
            chunk = await reader.read(1 << 16)
            if not chunk:
                return
            yield chunk


class AsyncSession:
    """A session of an :class:`AsyncClient`: :class:`Session`'s calls, awaited; ``async with``
    deletes it at the end of the block."""

    def __init__(self, client: AsyncClient, info: Mapping[str, Any]) -> None:
        session_id = info.get("id")
        if not isinstance(session_id, str) or not session_id:
            raise PyexecError("pyexec: invalid response: the session has no id")
        self.client = client
        self.id = session_id  # type: str
        self.info = dict(info)  # type: Dict[str, Any]

    def __repr__(self) -> str:
        return "<AsyncSession %s on %s>" % (self.id, self.client.socket_path)

    async def __aenter__(self) -> "AsyncSession":
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            await self.close()
        except PyexecError:
            if exc_type is None:
                raise

    async def run(self, code: str, timeout: Optional[float] = None, stdin: Optional[Union[str, bytes]] = None,
                  env: Optional[Mapping[str, str]] = None, files: Optional[FilesArg] = None,
                  output_budget_chars: Optional[int] = None, checkpoint: bool = False) -> Result:
        """:meth:`Session.run`, awaited."""
        body = _request_body(code, timeout, files, env, stdin, None, output_budget_chars, checkpoint)
        c = self.client
        return Result.from_json(await c._json_call("POST", _session_url(self.id, "/execute"), body, c._sync._http_timeout(timeout)))

    async def stream(self, code: str, timeout: Optional[float] = None, stdin: Optional[Union[str, bytes]] = None,
                     env: Optional[Mapping[str, str]] = None, files: Optional[FilesArg] = None) -> AsyncIterator[Tuple[str, Union[str, Result]]]:
        """:meth:`Session.stream`, as an async iterator."""
        body = _request_body(code, timeout, files, env, stdin, None)
        c = self.client
        async for event in c._stream(_session_url(self.id, "/execute") + "?stream=true", body, c._sync._http_timeout(timeout)):
            yield event

    async def variables(self) -> Dict[str, Any]:
        """The session's variables: :meth:`Client.session_variables`."""
        return await self.client.session_variables(self.id)

    async def files(self) -> Dict[str, Any]:
        """The session's files: :meth:`Client.session_files`."""
        return await self.client.session_files(self.id)

    async def checkpoint(self) -> Dict[str, Any]:
        """:meth:`Session.checkpoint`, awaited."""
        return await self.client.checkpoint(self.id)

    async def checkpoints(self) -> List[Dict[str, Any]]:
        """:meth:`Session.checkpoints`, awaited."""
        return await self.client.checkpoints(self.id)

    async def restore(self, checkpoint: str) -> None:
        """:meth:`Session.restore`, awaited."""
        self.info = await self.client.restore(self.id, checkpoint)

    async def delete_checkpoint(self, checkpoint: str) -> None:
        """:meth:`Session.delete_checkpoint`, awaited."""
        await self.client.delete_checkpoint(self.id, checkpoint)

    async def fork(self, count: Optional[int] = None) -> Any:
        """:meth:`Session.fork`, awaited."""
        return await self.client.fork(self.id, count)

    async def file(self, path: str) -> bytes:
        """One file of the session: :meth:`Client.session_file`."""
        return await self.client.session_file(self.id, path)

    async def close(self) -> None:
        """Deletes the session; nothing happens when it had already ended."""
        try:
            await self.client.delete_session(self.id)
        except SessionNotFound:
            pass
