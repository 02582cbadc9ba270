"""Tests of pyexec_client against a real pyexec server.

The server's socket path comes from the environment variable PYEXEC_SOCKET; the Go test suite
starts ``pyexec serve`` and runs::

    PYEXEC_SOCKET=/path/to/pyexec.sock python3 -m unittest discover -s clients/python -v

Without PYEXEC_SOCKET the server tests fail (they do not skip), so that a misconfigured run
cannot pass by testing nothing. The tests of plain logic (OutputTest, ErrorMappingTest) and of
the wire format against a fake server on a temporary socket (FakeServerTest) need no pyexec.
"""

import asyncio
import base64
import http.server
import json
import os
import socketserver
import tempfile
import threading
import time
import unittest
from typing import Any, Dict, List, Optional, Tuple, Union

import pyexec_client
from pyexec_client import (
    APIError,
    BadRequest,
    Client,
    ConnectionFailed,
    Output,
    PyexecError,
    Result,
    Session,
    SessionBusy,
    SessionNotFound,
    TooManySessions,
)

#: Time limit of tests whose code should finish at once (the server default may be long).
QUICK = 30.0


class ServerTest(unittest.TestCase):
    """Base class: every test gets ``self.client`` on the socket in $PYEXEC_SOCKET."""

    client = None  # type: Client

    def setUp(self) -> None:
        path = os.environ.get(pyexec_client.SOCKET_ENV, "")
        if not path:
            self.fail(
                "PYEXEC_SOCKET is not set: these tests need a running pyexec server; start "
                "`pyexec serve` and set PYEXEC_SOCKET to its socket path"
            )
        self.client = Client(socket_path=path)

    def run_code(self, code: str, **kwargs: object) -> Result:
        """Executes code with a short default time limit."""
        kwargs.setdefault("timeout", QUICK)
        return self.client.execute(code, **kwargs)  # type: ignore[arg-type]

    def explain(self, result: Result) -> str:
        """A failure message with everything about result."""
        return "result %r\nstdout: %r\nstderr: %r\noutputs: %r" % (
            result, result.stdout, result.stderr, result.outputs)

    def require_modules(self, *names: str) -> None:
        """Skips the test when the server's Python cannot import one of names."""
        result = self.run_code("import " + ", ".join(names))
        if "ModuleNotFoundError" in result.stderr:
            self.skipTest("the server's Python lacks one of %s: %s" % (names, result.stderr.strip()))
        self.assertTrue(result.ok, self.explain(result))

    def new_session(self, **kwargs: Any) -> Session:
        """Creates a session that is deleted when the test ends."""
        sess = self.client.create_session(**kwargs)
        self.addCleanup(sess.close)
        return sess


class ExecuteTest(ServerTest):
    """POST /v1/execute."""

    def test_print(self) -> None:
        result = self.run_code("print('hello from pyexec')")
        self.assertIsInstance(result, Result)
        self.assertEqual(result.stdout, "hello from pyexec\n", self.explain(result))
        self.assertEqual(result.exit_code, 0, self.explain(result))
        self.assertEqual(result.reason, "exit", self.explain(result))
        self.assertTrue(result.ok, self.explain(result))
        self.assertFalse(result.timed_out)
        self.assertFalse(result.stdout_truncated)
        self.assertIsNone(result.signal)
        self.assertTrue(result.id, "the result has no request id")
        self.assertGreaterEqual(result.duration_ms, 0)
        self.assertNotIn("hello from pyexec", repr(result), "repr should stay short")

    def test_exception(self) -> None:
        result = self.run_code("def f():\n    raise ValueError('boom')\nf()\n")
        self.assertEqual(result.exit_code, 1, self.explain(result))
        self.assertEqual(result.reason, "exit", self.explain(result))
        self.assertIn("Traceback (most recent call last)", result.stderr, self.explain(result))
        self.assertIn("ValueError: boom", result.stderr, self.explain(result))
        self.assertFalse(result.ok)
        exc = result.exception
        self.assertIsNotNone(exc, self.explain(result))
        self.assertEqual((exc["ename"], exc["evalue"]), ("ValueError", "boom"))
        self.assertEqual(exc["traceback"][-1], "ValueError: boom")
        self.assertIsNone(self.run_code("print(1)").exception)
        self.assertEqual(result.hints, [])
        missing = self.run_code("import no_such_module_here")
        self.assertEqual(len(missing.hints), 1, self.explain(missing))
        self.assertIn("no_such_module_here is not installed", missing.hints[0])

    def test_sys_exit(self) -> None:
        result = self.run_code("import sys\nprint('bye')\nsys.exit(3)\n")
        self.assertEqual(result.exit_code, 3, self.explain(result))
        self.assertEqual(result.reason, "exit", self.explain(result))
        self.assertEqual(result.stdout, "bye\n", self.explain(result))
        self.assertFalse(result.ok)

    def test_timeout(self) -> None:
        result = self.client.execute("while True: pass", timeout=1)
        self.assertEqual(result.reason, "timeout", self.explain(result))
        self.assertTrue(result.timed_out, self.explain(result))
        self.assertFalse(result.ok)
        self.assertLess(result.duration_ms, 20000, self.explain(result))

    def test_rich_outputs(self) -> None:
        result = self.run_code("display('shown')\n6 * 7")
        self.assertTrue(result.ok, self.explain(result))
        self.assertEqual(
            result.outputs,
            [
                {"type": "display_data", "data": {"text/plain": "'shown'"}},
                {"type": "execute_result", "data": {"text/plain": "42"}},
            ],
        )
        self.assertFalse(result.outputs_truncated)
        self.assertIn("outputs=2", repr(result))
        shown, value = result.outputs
        self.assertIsInstance(shown, Output)
        self.assertEqual((shown.type, shown.text, shown.html, shown.png), ("display_data", "'shown'", None, None))
        self.assertEqual((value.type, value.text), ("execute_result", "42"))
        self.assertEqual(value["data"], {"text/plain": "42"})
        self.assertFalse(result.session_lost)

    def test_matplotlib_figure_is_png(self) -> None:
        self.require_modules("matplotlib")
        result = self.run_code("import matplotlib.pyplot as plt\nplt.plot([1, 4, 9])\nplt.show()\n")
        self.assertTrue(result.ok, self.explain(result))
        figures = [o for o in result.outputs if o.png is not None]
        self.assertEqual(len(figures), 1, self.explain(result))
        self.assertEqual(figures[0].type, "display_data")
        self.assertTrue(figures[0].png.startswith(b"\x89PNG\r\n\x1a\n"), figures[0].png[:16])
        self.assertNotIn("iVBOR", repr(figures[0]), "repr should stay short")

    def test_dataframe_is_html(self) -> None:
        self.require_modules("pandas")
        result = self.run_code("import pandas as pd\npd.DataFrame({'x': [1, 2], 'y': [3, 4]})\n")
        self.assertTrue(result.ok, self.explain(result))
        self.assertEqual(len(result.outputs), 1, self.explain(result))
        out = result.outputs[0]
        self.assertEqual(out.type, "execute_result")
        self.assertIn("<table", out.html or "", self.explain(result))
        self.assertIn("x  y", out.text or "", self.explain(result))
        self.assertIsNone(out.png)

    def test_files_in_and_out(self) -> None:
        code = (
            "import csv\n"
            "with open('data.csv') as f:\n"
            "    rows = list(csv.DictReader(f))\n"
            "total = sum(int(r['n']) for r in rows)\n"
            "with open('raw.bin', 'rb') as f:\n"
            "    raw = f.read()\n"
            "with open('out.txt', 'w') as f:\n"
            "    f.write('rows=%d total=%d raw=%s\\n' % (len(rows), total, raw.hex()))\n"
            "with open('blob.bin', 'wb') as f:\n"
            "    f.write(bytes(range(256)))\n"
            "print('done')\n"
        )
        files = {"data.csv": "name,n\na,1\nb,2\nc,39\n", "raw.bin": b"\x00\xff\x10"}
        result = self.run_code(code, files=files)
        self.assertTrue(result.ok, self.explain(result))
        self.assertEqual(result.stdout, "done\n")
        self.assertIn("out.txt", result.files, "files: %r" % sorted(result.files))
        self.assertEqual(result.files["out.txt"], b"rows=3 total=42 raw=00ff10\n")
        self.assertEqual(result.files.get("blob.bin"), bytes(range(256)))
        self.assertFalse(result.files_truncated)

    def test_files_as_list_and_subdirectory(self) -> None:
        files = [("in/a.txt", b"alpha"), ("in/b.txt", "beta \u00e9")]  # type: List[Tuple[str, Union[bytes, str]]]
        code = (
            "import os\n"
            "a = open('in/a.txt', 'rb').read()\n"
            "b = open('in/b.txt', encoding='utf-8').read()\n"
            "os.makedirs('out', exist_ok=True)\n"
            "open('out/joined.txt', 'w', encoding='utf-8').write(a.decode() + '+' + b)\n"
        )
        result = self.run_code(code, files=files)
        self.assertTrue(result.ok, self.explain(result))
        self.assertEqual(result.files.get("out/joined.txt"), "alpha+beta \u00e9".encode("utf-8"),
                         "files: %r" % sorted(result.files))

    def test_env(self) -> None:
        result = self.run_code(
            "import os\nprint(os.environ['PYEXEC_CLIENT_TEST'])\n",
            env={"PYEXEC_CLIENT_TEST": "value with spaces = and \u00fcnicode"},
        )
        self.assertTrue(result.ok, self.explain(result))
        self.assertEqual(result.stdout, "value with spaces = and \u00fcnicode\n", self.explain(result))

    def test_stdin(self) -> None:
        result = self.run_code(
            "import sys\nlines = sys.stdin.read().splitlines()\nprint(sum(int(x) for x in lines))\n",
            stdin="1\n2\n39\n",
        )
        self.assertTrue(result.ok, self.explain(result))
        self.assertEqual(result.stdout, "42\n", self.explain(result))

    def test_stderr_separate(self) -> None:
        result = self.run_code("import sys\nprint('out')\nprint('err', file=sys.stderr)\n")
        self.assertTrue(result.ok, self.explain(result))
        self.assertEqual(result.stdout, "out\n")
        self.assertEqual(result.stderr, "err\n")

    def test_module_level_execute(self) -> None:
        # execute() builds a Client from $PYEXEC_SOCKET, which setUp checked.
        result = pyexec_client.execute("print(6 * 7)", timeout=QUICK)
        self.assertEqual(result.stdout, "42\n", self.explain(result))


class StreamTest(ServerTest):
    """POST /v1/execute?stream=true."""

    def test_stream(self) -> None:
        code = (
            "import sys, time\n"
            "print('first', flush=True)\n"
            "time.sleep(0.2)\n"
            "print('oops', file=sys.stderr, flush=True)\n"
            "time.sleep(0.2)\n"
            "print('second', flush=True)\n"
        )
        events = list(self.client.stream(code, timeout=QUICK))
        self.assertTrue(events, "the stream yielded nothing")
        kinds = [kind for kind, _ in events]
        self.assertEqual(kinds[-1], "exit", "events: %r" % events)
        self.assertEqual(kinds.count("exit"), 1, "events: %r" % events)
        self.assertIn("stdout", kinds[:-1], "no stdout event before exit: %r" % events)
        self.assertLess(kinds.index("stdout"), kinds.index("exit"))
        for kind, value in events[:-1]:
            self.assertIn(kind, ("stdout", "stderr"))
            self.assertIsInstance(value, str)
        stdout = "".join(v for k, v in events if k == "stdout")  # type: ignore[misc]
        stderr = "".join(v for k, v in events if k == "stderr")  # type: ignore[misc]
        self.assertEqual(stdout, "first\nsecond\n")
        self.assertEqual(stderr, "oops\n")
        result = events[-1][1]
        self.assertIsInstance(result, Result)
        assert isinstance(result, Result)
        self.assertTrue(result.ok, self.explain(result))
        self.assertEqual(result.exit_code, 0)

    def test_stream_first_output_before_exit(self) -> None:
        # The first stdout event must arrive while the code still runs. One write() call, so
        # that the line cannot arrive in two chunks (print() writes the text and "\n" apart).
        code = "import sys, time\nsys.stdout.write('early\\n')\nsys.stdout.flush()\ntime.sleep(1)\nprint('late')\n"
        gen = self.client.stream(code, timeout=QUICK)
        try:
            kind, value = next(gen)
            self.assertEqual((kind, value), ("stdout", "early\n"))
            rest = list(gen)
        finally:
            gen.close()
        self.assertEqual(rest[-1][0], "exit")
        result = rest[-1][1]
        assert isinstance(result, Result)
        self.assertTrue(result.ok, self.explain(result))

    def test_stream_failure_result(self) -> None:
        events = list(self.client.stream("raise SystemExit(5)", timeout=QUICK))
        kind, result = events[-1]
        self.assertEqual(kind, "exit")
        assert isinstance(result, Result)
        self.assertEqual(result.exit_code, 5, self.explain(result))
        self.assertFalse(result.ok)

    def test_stream_bad_request(self) -> None:
        with self.assertRaises(BadRequest) as ctx:
            list(self.client.stream("print(1)", timeout=-1))
        self.assertEqual(ctx.exception.status, 400)
        self.assertEqual(ctx.exception.code, "bad_request")


class InfoAndErrorsTest(ServerTest):
    """GET /v1/info and the errors of requests."""

    def test_packages(self) -> None:
        state = self.client.packages()
        self.assertIn("dir", state)
        self.assertIsInstance(state["installed"], list)
        # The test server allows no run-time installs: the policy refuses by name.
        with self.assertRaises(pyexec_client.Forbidden) as cm:
            self.client.install_packages(["requests"])
        self.assertEqual(cm.exception.status, 403)
        self.assertIn("requests", cm.exception.message)
        with self.assertRaises(TypeError):
            self.client.install_packages("requests")  # type: ignore[arg-type]

    def test_info(self) -> None:
        info = self.client.info()
        self.assertIsInstance(info, dict)
        self.assertIn("version", info, "info: %r" % info)
        self.assertTrue(info["version"], "info: %r" % info)

    def test_bad_request(self) -> None:
        with self.assertRaises(BadRequest) as ctx:
            self.client.execute("print(1)", timeout=-1)
        err = ctx.exception
        self.assertIsInstance(err, APIError)
        self.assertIsInstance(err, PyexecError)
        self.assertEqual(err.status, 400)
        self.assertEqual(err.code, "bad_request")
        self.assertIn("timeout_seconds", err.message)
        self.assertIn("400", str(err))

    def test_empty_code_is_bad_request(self) -> None:
        with self.assertRaises(BadRequest) as ctx:
            self.client.execute("")
        self.assertEqual(ctx.exception.code, "bad_request")

    def test_bad_file_path_is_bad_request(self) -> None:
        with self.assertRaises(BadRequest) as ctx:
            self.client.execute("pass", files={"../escape.txt": b"x"}, timeout=QUICK)
        self.assertIn("files", ctx.exception.message)

    def test_connection_failed(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            missing = os.path.join(tmp, "no-such.sock")
            client = Client(socket_path=missing)
            with self.assertRaises(ConnectionFailed) as ctx:
                client.execute("print(1)")
            self.assertIn(missing, str(ctx.exception))
            self.assertIn("not be running", str(ctx.exception))
            self.assertEqual(ctx.exception.socket_path, missing)
            self.assertIsInstance(ctx.exception, PyexecError)
            with self.assertRaises(ConnectionFailed):
                client.info()
            with self.assertRaises(ConnectionFailed):
                list(client.stream("print(1)"))


class ArgumentsTest(unittest.TestCase):
    """Argument checks that happen before anything is sent (no server needed)."""

    def test_bad_argument_types(self) -> None:
        client = Client(socket_path="/nonexistent/pyexec.sock")
        with self.assertRaises(TypeError):
            client.execute("pass", files={"a.txt": 42})  # type: ignore[dict-item]
        with self.assertRaises(TypeError):
            client.execute("pass", files="a.txt")  # type: ignore[arg-type]
        with self.assertRaises(TypeError):
            client.execute("pass", env={"N": 1})  # type: ignore[dict-item]
        with self.assertRaises(TypeError):
            client.execute(b"pass")  # type: ignore[arg-type]

    def test_default_socket_path(self) -> None:
        saved = os.environ.pop(pyexec_client.SOCKET_ENV, None)
        try:
            self.assertEqual(Client().socket_path, pyexec_client.DEFAULT_SOCKET_PATH)
            os.environ[pyexec_client.SOCKET_ENV] = "/tmp/elsewhere.sock"
            self.assertEqual(Client().socket_path, "/tmp/elsewhere.sock")
            self.assertEqual(Client("/x.sock").socket_path, "/x.sock")
        finally:
            if saved is None:
                os.environ.pop(pyexec_client.SOCKET_ENV, None)
            else:
                os.environ[pyexec_client.SOCKET_ENV] = saved

    def test_result_ok_and_from_json(self) -> None:
        result = Result.from_json({
            "id": "abc", "exit_code": 0, "stdout": "x", "stderr": "", "reason": "exit",
            "timed_out": False, "stdout_truncated": False, "stderr_truncated": False,
            "duration_ms": 1.5, "files": [{"path": "p.png", "size": 3, "content_base64": "AAEC"}],
            "files_truncated": False,
        })
        self.assertTrue(result.ok)
        self.assertEqual(result.files, {"p.png": b"\x00\x01\x02"})
        self.assertIsNone(result.signal)
        self.assertFalse(Result(reason="timeout", exit_code=0).ok)
        self.assertFalse(Result(reason="exit", exit_code=2).ok)


class SessionTest(ServerTest):
    """/v1/sessions: interpreters whose state lasts from call to call."""

    def session_ids(self) -> List[str]:
        return [entry["id"] for entry in self.client.list_sessions()]

    def test_state_persists(self) -> None:
        sess = self.new_session()
        self.assertTrue(sess.id)
        self.assertEqual(sess.info["id"], sess.id)
        first = sess.run("x = 1", timeout=QUICK)
        self.assertTrue(first.ok, self.explain(first))
        self.assertEqual(first.outputs, [], self.explain(first))
        second = sess.run("x + 1", timeout=QUICK)
        self.assertTrue(second.ok, self.explain(second))
        self.assertEqual([(o.type, o.text) for o in second.outputs], [("execute_result", "2")],
                         self.explain(second))
        third = sess.run("import json\nx += 41\nprint(json.dumps(x))", timeout=QUICK)
        self.assertEqual(third.stdout, "42\n", self.explain(third))
        self.assertFalse(third.session_lost)
        info = sess.describe()
        self.assertIs(info, sess.info)
        self.assertEqual(info["id"], sess.id)
        self.assertEqual(info["executions"], 3, "info: %r" % info)
        self.assertFalse(info["busy"], "info: %r" % info)

    def test_sessions_are_isolated(self) -> None:
        one = self.new_session()
        two = self.new_session()
        self.assertNotEqual(one.id, two.id)
        self.assertTrue(one.run("x = 'one'", timeout=QUICK).ok)
        missing = two.run("x", timeout=QUICK)
        self.assertEqual(missing.exit_code, 1, self.explain(missing))
        self.assertIn("NameError", missing.stderr, self.explain(missing))
        self.assertTrue(two.run("x = 'two'", timeout=QUICK).ok)
        self.assertEqual(one.run("x", timeout=QUICK).outputs[0].text, "'one'")
        self.assertEqual(two.run("x", timeout=QUICK).outputs[0].text, "'two'")
        ids = self.session_ids()
        self.assertIn(one.id, ids)
        self.assertIn(two.id, ids)

    def test_owners_see_only_their_sessions(self) -> None:
        alice = pyexec_client.Client(self.client.socket_path, owner="alice")
        bob = pyexec_client.Client(self.client.socket_path, owner="bob")
        mine = alice.create_session()
        self.addCleanup(mine.close)
        self.assertEqual(mine.info.get("owner"), "alice", "info: %r" % mine.info)
        self.assertTrue(mine.run("secret = 42", timeout=QUICK).ok)
        self.assertEqual([s["id"] for s in alice.list_sessions()], [mine.id])
        self.assertNotIn(mine.id, [s["id"] for s in bob.list_sessions()])
        with self.assertRaises(pyexec_client.SessionNotFound):
            bob.get_session(mine.id)
        with self.assertRaises(pyexec_client.SessionNotFound):
            pyexec_client.Session(bob, {"id": mine.id}).run("print(secret)", timeout=QUICK)
        with self.assertRaises(pyexec_client.SessionNotFound):
            bob.delete_session(mine.id)
        self.assertIn(mine.id, self.session_ids())  # the application's client sees all
        self.assertEqual(mine.run("print(secret)", timeout=QUICK).stdout, "42\n")
        for bad in ("", "x" * 201, "caf\u00e9", "a\nb"):
            with self.assertRaises(ValueError):
                pyexec_client.Client(self.client.socket_path, owner=bad)

    def test_variables(self) -> None:
        sess = self.new_session()
        self.assertTrue(sess.run("import os\nx = 42\nwords = ['a'] * 30\n_private = 1", timeout=QUICK).ok)
        listing = sess.variables()
        self.assertEqual((listing["total"], listing["truncated"]), (2, False))
        got = {v["name"]: v for v in listing["variables"]}
        self.assertEqual(sorted(got), ["words", "x"])
        self.assertEqual((got["x"]["type"], got["x"]["repr"]), ("int", "42"))
        self.assertEqual(got["words"]["len"], 30)

    def test_checkpoint_and_undo(self) -> None:
        sess = self.new_session()
        self.assertTrue(sess.run("rows = [1, 2, 3]\nopen('t.txt', 'w').write('v1')", timeout=QUICK).ok)
        cp = sess.checkpoint()
        self.assertEqual((cp["checkpoint"], cp["files"]), ("c1", 1), "checkpoint: %r" % cp)
        spoiled = sess.run("rows.clear()\nopen('t.txt', 'w').write('v2')", timeout=QUICK, checkpoint=True)
        self.assertEqual(spoiled.checkpoint, "c2", self.explain(spoiled))
        self.assertEqual([c["checkpoint"] for c in sess.checkpoints()], ["c1", "c2"])
        sess.restore(spoiled.checkpoint)  # undo the call
        back = sess.run("print(rows, open('t.txt').read())", timeout=QUICK)
        self.assertEqual(back.stdout, "[1, 2, 3] v1\n", self.explain(back))
        sess.delete_checkpoint("c1")
        with self.assertRaises(pyexec_client.CheckpointNotFound) as ctx:
            sess.restore("c1")
        self.assertEqual((ctx.exception.status, ctx.exception.code), (404, "checkpoint_not_found"))
        self.assertIn("deleted", ctx.exception.message)

    def test_fork(self) -> None:
        sess = self.new_session()
        self.assertTrue(sess.run("rows = [1, 2, 3]\nopen('t.txt', 'w').write('v1')", timeout=QUICK).ok)
        with sess.fork() as branch:
            self.assertEqual(branch.info["parent"], sess.id)
            self.assertTrue(branch.run("rows.append(4)\nopen('t.txt', 'w').write('v2')", timeout=QUICK).ok)
            both = [s.run("print(rows, open('t.txt').read())", timeout=QUICK).stdout for s in (sess, branch)]
            self.assertEqual(both, ["[1, 2, 3] v1\n", "[1, 2, 3, 4] v2\n"])
            self.assertIn(branch.id, sess.describe()["branches"])
        pair = sess.fork(count=2)
        try:
            self.assertEqual(len(pair), 2)
            self.assertTrue(all(b.run("print(len(rows))", timeout=QUICK).stdout == "3\n" for b in pair))
        finally:
            for b in pair:
                b.close()
        self.assertTrue(sess.run("import threading\nth = threading.Thread(target=__import__('time').sleep, args=(30,), daemon=True)\nth.start()", timeout=QUICK).ok)
        with self.assertRaises(pyexec_client.NotForkable) as ctx:
            sess.fork()
        self.assertEqual((ctx.exception.status, ctx.exception.code), (409, "not_forkable"))
        with self.assertRaises(ValueError):
            sess.fork(count=0)

    def test_files_persist(self) -> None:
        sess = self.new_session()
        wrote = sess.run("with open('notes.txt', 'w') as f:\n    f.write('kept')\n", timeout=QUICK)
        self.assertTrue(wrote.ok, self.explain(wrote))
        self.assertEqual(wrote.files.get("notes.txt"), b"kept", "files: %r" % sorted(wrote.files))
        read = sess.run("print(open('notes.txt').read())", files={"more.txt": "more"}, timeout=QUICK)
        self.assertEqual(read.stdout, "kept\n", self.explain(read))
        # Only the files this call created or changed come back.
        self.assertNotIn("notes.txt", read.files, "files: %r" % sorted(read.files))
        again = sess.run("print(open('more.txt').read())", timeout=QUICK)
        self.assertEqual(again.stdout, "more\n", self.explain(again))

    def test_create_with_env_files_and_idle_timeout(self) -> None:
        sess = self.new_session(idle_timeout=120, env={"PYEXEC_SESSION_TEST": "from create"},
                                files={"input/data.csv": "a,b\n1,2\n"})
        self.assertEqual(sess.info["idle_timeout_seconds"], 120, "info: %r" % sess.info)
        result = sess.run(
            "import os\nprint(os.environ['PYEXEC_SESSION_TEST'], os.environ.get('CALL'))\n"
            "print(open('input/data.csv').read().splitlines()[1])\n",
            env={"CALL": "from run"}, stdin="unused", timeout=QUICK)
        self.assertEqual(result.stdout, "from create from run\n1,2\n", self.explain(result))
        got = self.client.get_session(sess.id)
        self.assertEqual(got["id"], sess.id)
        self.assertEqual(got["executions"], 1, "info: %r" % got)

    def test_rich_outputs_in_session(self) -> None:
        self.require_modules("matplotlib", "pandas")
        sess = self.new_session()
        imported = sess.run("import pandas as pd\nimport matplotlib.pyplot as plt\n", timeout=60)
        self.assertTrue(imported.ok, self.explain(imported))
        table = sess.run("df = pd.DataFrame({'n': [1, 2, 3]})\ndf", timeout=QUICK)
        self.assertTrue(table.ok, self.explain(table))
        self.assertIn("<table", table.outputs[-1].html or "", self.explain(table))
        figure = sess.run("plt.plot(df['n'])\nplt.show()", timeout=60)
        self.assertTrue(figure.ok, self.explain(figure))
        pngs = [o.png for o in figure.outputs if o.png is not None]
        self.assertEqual(len(pngs), 1, self.explain(figure))
        self.assertTrue(pngs[0].startswith(b"\x89PNG"), pngs[0][:16])

    def test_stream_in_session(self) -> None:
        sess = self.new_session()
        self.assertTrue(sess.run("x = 5", timeout=QUICK).ok)
        events = list(sess.stream("import sys\nprint(x)\nprint('e', file=sys.stderr)\nx * 2", timeout=QUICK))
        self.assertEqual(events[-1][0], "exit", "events: %r" % events)
        stdout = "".join(v for k, v in events if k == "stdout")  # type: ignore[misc]
        stderr = "".join(v for k, v in events if k == "stderr")  # type: ignore[misc]
        self.assertEqual((stdout, stderr), ("5\n", "e\n"), "events: %r" % events)
        result = events[-1][1]
        assert isinstance(result, Result)
        self.assertTrue(result.ok, self.explain(result))
        self.assertEqual(result.outputs[-1].text, "10", self.explain(result))
        self.assertEqual(sess.run("x", timeout=QUICK).outputs[0].text, "5")

    def test_session_not_found_after_delete(self) -> None:
        sess = self.client.create_session()
        self.client.delete_session(sess.id)
        self.assertNotIn(sess.id, self.session_ids())
        with self.assertRaises(SessionNotFound) as ctx:
            sess.run("1", timeout=QUICK)
        err = ctx.exception
        self.assertIsInstance(err, APIError)
        self.assertEqual((err.status, err.code), (404, "session_not_found"))
        with self.assertRaises(SessionNotFound):
            list(sess.stream("1", timeout=QUICK))
        with self.assertRaises(SessionNotFound):
            sess.describe()
        with self.assertRaises(SessionNotFound):
            self.client.delete_session(sess.id)
        sess.close()  # no error: the session had already ended
        with self.assertRaises(SessionNotFound):
            self.client.get_session("no-such-session")

    def test_session_busy(self) -> None:
        sess = self.new_session()
        outcome = {}  # type: Dict[str, Any]

        def slow() -> None:
            try:
                outcome["result"] = sess.run("import time\ntime.sleep(3)\nprint('slept')", timeout=QUICK)
            except BaseException as exc:  # reported by the main thread
                outcome["error"] = exc

        thread = threading.Thread(target=slow)
        thread.start()
        try:
            deadline = time.monotonic() + 10
            while not sess.describe()["busy"]:
                self.assertNotIn("error", outcome)
                self.assertLess(time.monotonic(), deadline, "the session never became busy: %r" % sess.info)
                time.sleep(0.05)
            with self.assertRaises(SessionBusy) as ctx:
                sess.run("print('second')", timeout=QUICK)
            self.assertEqual((ctx.exception.status, ctx.exception.code), (409, "session_busy"))
        finally:
            thread.join(60)
        self.assertNotIn("error", outcome)
        self.assertEqual(outcome["result"].stdout, "slept\n", self.explain(outcome["result"]))
        after = sess.run("print('free')", timeout=QUICK)
        self.assertEqual(after.stdout, "free\n", self.explain(after))

    def test_context_manager_deletes(self) -> None:
        with self.client.session() as sess:
            self.assertIsInstance(sess, Session)
            sid = sess.id
            self.assertTrue(sess.run("y = 3", timeout=QUICK).ok)
            self.assertIn(sid, self.session_ids())
        self.assertNotIn(sid, self.session_ids())
        with self.assertRaises(SessionNotFound):
            self.client.get_session(sid)

        # Also when the block raises, and the block's exception is what comes out.
        with self.assertRaises(ZeroDivisionError):
            with self.client.session() as sess:
                sid = sess.id
                1 / 0
        self.assertNotIn(sid, self.session_ids())

        # A Session from create_session is a context manager too; it may end inside the block.
        with self.client.create_session() as sess:
            self.client.delete_session(sess.id)
        self.assertNotIn(sess.id, self.session_ids())

    def test_timeout_keeps_session(self) -> None:
        sess = self.new_session()
        self.assertTrue(sess.run("kept = 'yes'", timeout=QUICK).ok)
        result = sess.run("import time\ntime.sleep(60)", timeout=1)
        self.assertEqual(result.reason, "timeout", self.explain(result))
        self.assertTrue(result.timed_out, self.explain(result))
        self.assertFalse(result.session_lost, self.explain(result))
        self.assertEqual(sess.run("kept", timeout=QUICK).outputs[0].text, "'yes'")

    def test_session_lost_when_interpreter_exits(self) -> None:
        sess = self.new_session()
        result = sess.run("import os\nos._exit(3)", timeout=QUICK)
        self.assertTrue(result.session_lost, self.explain(result))
        self.assertIn("session_lost", repr(result))
        with self.assertRaises(SessionNotFound):
            sess.run("1", timeout=QUICK)
        self.assertNotIn(sess.id, self.session_ids())

    def test_too_many_sessions(self) -> None:
        limit = self.client.info()["limits"]["max_sessions"]
        self.assertGreater(limit, 0, "sessions are switched off on the test server")
        if limit > 16:
            self.skipTest("max_sessions %d is too many to open in a test" % limit)
        open_now = len(self.session_ids())
        for _ in range(limit - open_now):
            self.new_session()
        with self.assertRaises(TooManySessions) as ctx:
            self.client.create_session()
        self.assertEqual((ctx.exception.status, ctx.exception.code), (429, "too_many_sessions"))


# A PNG's first bytes, enough for the tests of decoding.
_PNG_HEAD = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"


class OutputTest(unittest.TestCase):
    """Output and Result decoding (no server needed)."""

    def test_output_properties(self) -> None:
        encoded = base64.b64encode(_PNG_HEAD).decode("ascii")
        result = Result.from_json({
            "reason": "exit", "outputs": [
                {"type": "display_data", "data": {"text/plain": "<Figure>", "image/png": encoded}},
                {"type": "execute_result", "data": {"text/plain": "df", "text/html": "<table></table>"}},
                "not an object",
            ],
            "outputs_truncated": True, "session_lost": True,
        })
        self.assertEqual(len(result.outputs), 2)
        fig, table = result.outputs
        self.assertIsInstance(fig, Output)
        self.assertEqual((fig.type, fig.text, fig.html, fig.png), ("display_data", "<Figure>", None, _PNG_HEAD))
        self.assertEqual((table.type, table.text, table.html, table.png),
                         ("execute_result", "df", "<table></table>", None))
        # Still the JSON object: item access and comparison with a dict.
        self.assertEqual(fig["data"]["image/png"], encoded)
        self.assertEqual(table, {"type": "execute_result", "data": {"text/plain": "df", "text/html": "<table></table>"}})
        self.assertEqual(fig.data, fig["data"])
        self.assertEqual(repr(fig), "<Output display_data image/png,text/plain>")
        self.assertTrue(result.outputs_truncated)
        self.assertTrue(result.session_lost)
        self.assertIn("outputs=2+", repr(result))
        self.assertIn("session_lost", repr(result))

    def test_defaults(self) -> None:
        result = Result.from_json({"reason": "exit"})
        self.assertEqual(result.outputs, [])
        self.assertFalse(result.outputs_truncated)
        self.assertFalse(result.session_lost)
        self.assertFalse(Result().session_lost)
        empty = Output.from_json({})
        self.assertEqual((empty.type, empty.data, empty.text, empty.html, empty.png), ("", {}, None, None, None))

    def test_bad_png_is_an_invalid_response(self) -> None:
        with self.assertRaises(PyexecError) as ctx:
            Result.from_json({"outputs": [{"type": "display_data", "data": {"image/png": "not base64!"}}]})
        self.assertIn("image/png", str(ctx.exception))


class ErrorMappingTest(unittest.TestCase):
    """The APIError subclass of an error answer, by code where the status is ambiguous."""

    def error(self, status: int, code: str, headers: Optional[Dict[str, str]] = None) -> APIError:
        body = json.dumps({"error": {"code": code, "message": "m", "request_id": "r1"}}).encode()
        return pyexec_client._error_from_response(status, headers or {}, body)

    def test_by_code(self) -> None:
        cases = [
            (404, "session_not_found", SessionNotFound),
            (404, "not_found", pyexec_client.ServerError),  # an unknown route: a server without sessions
            (409, "session_busy", SessionBusy),
            (409, "packages_locked", pyexec_client.PackagesLocked),
            (429, "too_many_sessions", TooManySessions),
            (429, "queue_full", pyexec_client.QueueFull),
            (400, "bad_request", BadRequest),
        ]
        for status, code, cls in cases:
            err = self.error(status, code)
            self.assertIs(type(err), cls, (status, code))
            self.assertEqual((err.status, err.code, err.message, err.request_id), (status, code, "m", "r1"))
        self.assertIs(type(pyexec_client._error_from_response(409, {}, b"locked")), pyexec_client.PackagesLocked)
        self.assertEqual(self.error(429, "queue_full", {"Retry-After": "2"}).retry_after, 2.0)
        self.assertIsNone(self.error(429, "too_many_sessions").retry_after)

    def test_stream_error_event(self) -> None:
        err = pyexec_client._error_from_event({"type": "error", "error": {"code": "session_busy", "message": "busy"}})
        self.assertIsInstance(err, SessionBusy)
        self.assertEqual(err.status, 409)
        err = pyexec_client._error_from_event({"type": "error", "error": {"code": "session_not_found"}})
        self.assertIsInstance(err, SessionNotFound)
        self.assertEqual(err.status, 404)


class _FakeServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """An HTTP server on a Unix socket that answers from a table and records the requests."""

    daemon_threads = True

    def __init__(self, path: str) -> None:
        # (method, path) -> (status, JSON object, or bytes as they are, or None for no body)
        self.replies = {}  # type: Dict[Tuple[str, str], Tuple[int, Any]]
        self.requests = []  # type: List[Tuple[str, str, Any]]
        super().__init__(path, _FakeHandler)


class _FakeHandler(http.server.BaseHTTPRequestHandler):
    def handle_one(self) -> None:
        fake = self.server  # type: Any
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        fake.requests.append((self.command, self.path, json.loads(raw) if raw else None))
        status, reply = fake.replies.get(
            (self.command, self.path), (404, {"error": {"code": "not_found", "message": "no route"}}))
        if isinstance(reply, dict):
            reply = json.dumps(reply).encode()
        self.send_response(status)
        if reply is not None:
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        if reply is not None:
            self.wfile.write(reply)

    do_GET = do_POST = do_DELETE = handle_one

    def log_message(self, format: str, *args: Any) -> None:
        pass


class FakeServerTest(unittest.TestCase):
    """The session calls on the wire, against a fake server (no pyexec needed)."""

    INFO = {"id": "s-1", "idle_timeout_seconds": 60.0, "executions": 0, "busy": False}

    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.server = _FakeServer(os.path.join(tmp.name, "fake.sock"))
        thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        self.addCleanup(self.server.server_close)
        self.addCleanup(self.server.shutdown)
        self.client = Client(socket_path=os.path.join(tmp.name, "fake.sock"), timeout=10)
        self.server.replies[("POST", "/v1/sessions")] = (201, self.INFO)
        self.server.replies[("DELETE", "/v1/sessions/s-1")] = (204, None)

    def test_session_on_the_wire(self) -> None:
        self.server.replies[("POST", "/v1/sessions/s-1/execute")] = (200, {
            "id": "r", "reason": "exit", "exit_code": 0,
            "outputs": [{"type": "execute_result", "data": {"text/plain": "2"}}]})
        self.server.replies[("GET", "/v1/sessions/s-1")] = (200, dict(self.INFO, executions=1))
        self.server.replies[("GET", "/v1/sessions")] = (200, {"sessions": [self.INFO]})
        with self.client.session(idle_timeout=60, memory_limit_mb=256, env={"A": "1"},
                                 files={"a.txt": b"x"}, network=False) as sess:
            self.assertEqual(sess.id, "s-1")
            self.assertEqual(sess.info, self.INFO)
            result = sess.run("x + 1", timeout=5, stdin="in", env={"B": "2"}, files={"b.txt": "y"})
            self.assertEqual(result.outputs[0].text, "2")
            self.assertEqual(sess.describe()["executions"], 1)
            self.assertEqual(sess.info["executions"], 1)
            self.assertEqual(self.client.list_sessions(), [self.INFO])
        self.assertEqual(self.server.requests, [
            ("POST", "/v1/sessions", {
                "idle_timeout_seconds": 60.0, "memory_limit_mb": 256, "env": {"A": "1"},
                "files": [{"path": "a.txt", "content_base64": "eA=="}], "network": False}),
            ("POST", "/v1/sessions/s-1/execute", {
                "code": "x + 1", "timeout_seconds": 5.0, "stdin": "in", "env": {"B": "2"},
                "files": [{"path": "b.txt", "content_base64": "eQ=="}]}),
            ("GET", "/v1/sessions/s-1", None),
            ("GET", "/v1/sessions", None),
            ("DELETE", "/v1/sessions/s-1", None),
        ])

    def test_empty_create_body_and_stream(self) -> None:
        lines = [{"type": "stdout", "data": "5\n"}, {"type": "future_event"},
                 {"type": "exit", "reason": "exit", "exit_code": 0,
                  "outputs": [{"type": "execute_result", "data": {"text/plain": "10"}}]}]
        self.server.replies[("POST", "/v1/sessions/s-1/execute?stream=true")] = (
            200, b"".join(json.dumps(line).encode() + b"\n" for line in lines))
        sess = self.client.create_session()
        events = list(sess.stream("print(x)\nx * 2"))
        self.assertEqual(events[0], ("stdout", "5\n"))
        self.assertEqual(events[1][0], "exit")
        result = events[1][1]
        assert isinstance(result, Result)
        self.assertEqual(result.outputs[0].text, "10")
        self.assertEqual(self.server.requests[0], ("POST", "/v1/sessions", {}))

    def test_close_ignores_session_not_found(self) -> None:
        gone = {"error": {"code": "session_not_found", "message": "session s-1 ended: idle"}}
        self.server.replies[("DELETE", "/v1/sessions/s-1")] = (404, gone)
        self.server.replies[("POST", "/v1/sessions/s-1/execute")] = (404, gone)
        with self.client.session() as sess:
            with self.assertRaises(SessionNotFound) as ctx:
                sess.run("1")
            self.assertIn("idle", ctx.exception.message)
        sess.close()
        with self.assertRaises(SessionNotFound):
            self.client.delete_session("s-1")

    def test_exit_keeps_the_block_exception(self) -> None:
        self.server.replies[("DELETE", "/v1/sessions/s-1")] = (500, {"error": {"code": "internal", "message": "x"}})
        with self.assertRaises(ValueError):
            with self.client.session():
                raise ValueError("from the block")
        with self.assertRaises(pyexec_client.ServerError):
            with self.client.session():
                pass

    def test_server_without_sessions(self) -> None:
        del self.server.replies[("POST", "/v1/sessions")]
        with self.assertRaises(pyexec_client.ServerError) as ctx:
            self.client.create_session()
        self.assertNotIsInstance(ctx.exception, SessionNotFound)
        self.assertEqual((ctx.exception.status, ctx.exception.code), (404, "not_found"))

    def test_session_id_is_quoted(self) -> None:
        self.server.replies[("POST", "/v1/sessions")] = (201, {"id": "a/b c"})
        self.server.replies[("DELETE", "/v1/sessions/a%2Fb%20c")] = (204, None)
        with self.client.session() as sess:
            self.assertEqual(sess.id, "a/b c")
        self.assertEqual(self.server.requests[-1][:2], ("DELETE", "/v1/sessions/a%2Fb%20c"))
        with self.assertRaises(TypeError):
            self.client.get_session("")

    def test_invalid_create_answer(self) -> None:
        self.server.replies[("POST", "/v1/sessions")] = (201, {"no": "id"})
        with self.assertRaises(PyexecError):
            self.client.create_session()
        self.server.replies[("POST", "/v1/sessions")] = (200, b"not json")
        with self.assertRaises(PyexecError):
            self.client.create_session()


if __name__ == "__main__":
    unittest.main()


class AsyncClientTest(unittest.IsolatedAsyncioTestCase):
    """AsyncClient against the same server: executions, streams, sessions and their files and
    variables, owners, errors — and many calls at once on one client."""

    def setUp(self) -> None:
        path = os.environ.get(pyexec_client.SOCKET_ENV, "")
        if not path:
            self.fail("PYEXEC_SOCKET is not set: these tests need a running pyexec server")
        self.client = pyexec_client.AsyncClient(path)

    async def test_execute_and_stream(self) -> None:
        result = await self.client.execute("print(6 * 7)\n'done'", timeout=QUICK)
        self.assertEqual((result.stdout, result.outputs[0].text), ("42\n", "'done'"))
        failed = await self.client.execute("1/0", timeout=QUICK)
        self.assertEqual(failed.exception["ename"], "ZeroDivisionError")
        events = [e async for e in self.client.stream("import sys\nprint('a', flush=True)\nprint('b', file=sys.stderr)", timeout=QUICK)]
        self.assertEqual("".join(d for k, d in events if k == "stdout"), "a\n")
        self.assertEqual("".join(d for k, d in events if k == "stderr"), "b\n")
        self.assertEqual(events[-1][0], "exit")
        self.assertEqual(events[-1][1].exit_code, 0)

    async def test_output_budget(self) -> None:
        result = await self.client.execute("print('x' * 5000)", timeout=QUICK, output_budget_chars=300)
        budget = result.output_budget
        self.assertIsNotNone(budget, result)
        self.assertEqual(budget["limit_chars"], 300)
        self.assertIn("characters left out", result.stdout)
        self.assertIn(budget["full_output_file"], result.files)
        plain = pyexec_client.Client(self.client.socket_path).execute("print('y' * 5000)", timeout=QUICK, output_budget_chars=300)
        self.assertEqual(plain.output_budget["omitted_chars"], 5001 - 300)

    async def test_many_at_once(self) -> None:
        results = await asyncio.gather(*[self.client.execute("print(%d)" % i, timeout=QUICK) for i in range(6)])
        self.assertEqual([r.stdout for r in results], ["%d\n" % i for i in range(6)])

    async def test_sessions(self) -> None:
        async with await self.client.create_session() as sess:
            self.assertTrue((await sess.run("x = 41\nopen('out.txt', 'w').write('kept')", timeout=QUICK)).ok)
            self.assertEqual((await sess.run("x + 1", timeout=QUICK)).outputs[0].text, "42")
            self.assertEqual([v["name"] for v in (await sess.variables())["variables"]], ["x"])
            listing = await sess.files()
            self.assertEqual([f["path"] for f in listing["files"]], ["out.txt"])
            self.assertEqual(await sess.file("out.txt"), b"kept")
            cp = await sess.checkpoint()
            await sess.run("x = 0", timeout=QUICK)
            self.assertEqual([c["checkpoint"] for c in await sess.checkpoints()], [cp["checkpoint"]])
            await sess.restore(cp["checkpoint"])
            self.assertEqual((await sess.run("x", timeout=QUICK)).outputs[0].text, "41")
            await sess.delete_checkpoint(cp["checkpoint"])
            async with await sess.fork() as branch:
                self.assertEqual(branch.info["parent"], sess.id)
                await branch.run("x = 7", timeout=QUICK)
                self.assertEqual((await sess.run("x", timeout=QUICK)).outputs[0].text, "41")
            events = [e async for e in sess.stream("print(x)", timeout=QUICK)]
            self.assertEqual("".join(d for k, d in events if k == "stdout"), "41\n")
            self.assertIn(sess.id, [s["id"] for s in await self.client.list_sessions()])
        with self.assertRaises(SessionNotFound):
            await self.client.get_session(sess.id)

    async def test_owners_and_errors(self) -> None:
        path = self.client.socket_path
        alice, bob = pyexec_client.AsyncClient(path, owner="alice"), pyexec_client.AsyncClient(path, owner="bob")
        sess = await alice.create_session()
        try:
            self.assertEqual([s["id"] for s in await alice.list_sessions()], [sess.id])
            self.assertEqual(await bob.list_sessions(), [])
            with self.assertRaises(SessionNotFound):
                await bob.session_variables(sess.id)
        finally:
            await sess.close()
        with self.assertRaises(pyexec_client.ConnectionFailed):
            await pyexec_client.AsyncClient(path + ".missing").execute("1")
        with self.assertRaises(pyexec_client.BadRequest):
            await self.client.execute("1", timeout=-1)
