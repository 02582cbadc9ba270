"""Tests of pyexec_client against a real pyexec server.

The server's socket path comes from the environment variable PYEXEC_SOCKET; the Go test suite
starts ``pyexec serve`` and runs::

    PYEXEC_SOCKET=/path/to/pyexec.sock python3 -m unittest discover -s clients/python -v

Without PYEXEC_SOCKET the server tests fail (they do not skip), so that a misconfigured run
cannot pass by testing nothing.
"""

import os
import tempfile
import unittest
from typing import List, Tuple, Union

import pyexec_client
from pyexec_client import (
    APIError,
    BadRequest,
    Client,
    ConnectionFailed,
    PyexecError,
    Result,
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
        return "result %r\nstdout: %r\nstderr: %r" % (result, result.stdout, result.stderr)


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


if __name__ == "__main__":
    unittest.main()
