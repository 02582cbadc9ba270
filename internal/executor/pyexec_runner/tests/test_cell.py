import io
import json
import sys
import types
import unittest
from contextlib import redirect_stderr, redirect_stdout

from pyexec_runner import cell, outputs


class CellCase(unittest.TestCase):
    """Runs cells in a namespace of their own, their outputs written to a buffer."""

    def setUp(self):
        self.argv, self.excepthook = sys.argv, sys.excepthook
        self.outputs = io.StringIO()
        outputs.use(self.outputs)
        self.main = types.ModuleType("__main__")

    def tearDown(self):
        sys.argv, sys.excepthook = self.argv, self.excepthook
        outputs.use(None)

    def run_cell(self, source):
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            result = cell.run_cell(source, self.main, "<cell-test>")
        return result, out.getvalue(), err.getvalue()

    def results(self):
        return [json.loads(line) for line in self.outputs.getvalue().splitlines()]


class RunCellTest(CellCase):
    def test_the_last_expression_is_the_result(self):
        self.assertEqual(self.run_cell("x = 6\nprint('p')\nx * 7"), ((0, False), "p\n", ""))
        self.assertEqual(self.results(), [{"type": "execute_result", "data": {"text/plain": "42"}}])
        self.assertEqual(sys.argv, ["<cell-test>"])

    def test_none_and_statements_give_no_result(self):
        self.run_cell("None")
        self.run_cell("y = 1")
        self.run_cell("")
        self.assertEqual(self.results(), [])

    def test_the_namespace_stays(self):
        self.run_cell("z = 5")
        self.run_cell("z + 1")
        self.assertEqual(self.results()[0]["data"]["text/plain"], "6")

    def test_an_exception_prints_the_codes_traceback_only(self):
        result, _, err = self.run_cell("x = 1\nraise ValueError('bad value')")
        self.assertEqual(result, (1, False))
        self.assertEqual(err, "Traceback (most recent call last):\n  File \"<cell-test>\", line 2, in <module>\n"
                              "    raise ValueError('bad value')\nValueError: bad value\n")

    def test_a_syntax_error(self):
        result, _, err = self.run_cell("def f(:\n")
        self.assertEqual(result, (1, False))
        self.assertIn('File "<cell-test>", line 1', err)
        self.assertIn("SyntaxError", err)

    def test_memory_error(self):
        self.assertEqual(self.run_cell("raise MemoryError")[0], (1, True))

    def test_system_exit(self):
        self.assertEqual(self.run_cell("import sys\nsys.exit(3)")[0], (3, False))
        self.assertEqual(self.run_cell("raise SystemExit")[0], (0, False))
        self.assertEqual(self.run_cell("raise SystemExit('bye')"), ((1, False), "", "bye\n"))

    def test_a_custom_excepthook_prints(self):
        seen = []
        sys.excepthook = lambda kind, e, tb: seen.append((kind, tb.tb_frame.f_code.co_filename))
        self.assertEqual(self.run_cell("1/0"), ((1, False), "", ""))
        self.assertEqual(seen, [(ZeroDivisionError, "<cell-test>")])


class ExceptionRecordTest(CellCase):
    def errors(self):
        return [r for r in self.results() if r["type"] == "error"]

    def test_an_exception_is_recorded_as_jupyter_names_it(self):
        _, _, err = self.run_cell("def f():\n    raise ValueError('bad value')\nf()")
        [record] = self.errors()
        self.assertEqual(record["ename"], "ValueError")
        self.assertEqual(record["evalue"], "bad value")
        self.assertEqual(record["traceback"], err.splitlines())
        self.assertEqual(record["traceback"][-1], "ValueError: bad value")
        self.assertIn('  File "<cell-test>", line 3, in <module>', record["traceback"])

    def test_no_record_without_an_exception(self):
        self.run_cell("1")
        self.run_cell("raise SystemExit(2)")
        self.assertEqual(self.errors(), [])

    def test_pyexecs_own_frames_are_left_out(self):
        # A function of pyexec's own (as loader.py names its files) that the code calls, and
        # that raises from the code's own callback, in a chained exception too.
        own = {}
        exec(compile("def call(f):\n    return f()\n", "<pyexec>/pyexec_runner/fake.py", "exec"), own)
        self.main.call = own["call"]
        _, _, err = self.run_cell(
            "def boom():\n    raise KeyError('k')\n"
            "try:\n    call(boom)\nexcept KeyError as e:\n    raise RuntimeError('again') from e")
        [record] = self.errors()
        self.assertNotIn("<pyexec>", err)
        self.assertNotIn("<pyexec>", "\n".join(record["traceback"]))
        self.assertIn('  File "<cell-test>", line 2, in boom', record["traceback"])
        self.assertEqual((record["ename"], record["evalue"]), ("RuntimeError", "again"))

    def test_bounds(self):
        self.run_cell("raise ValueError('x' * 10000)")
        [record] = self.errors()
        self.assertEqual(len(record["evalue"]), outputs.MAX_EVALUE + len("... (5904 characters left out)"))
        self.assertTrue(all(len(line) <= outputs.MAX_LINE + 40 for line in record["traceback"]))
        head, tail = outputs.HEAD_LINES, outputs.TAIL_LINES
        outputs.HEAD_LINES, outputs.TAIL_LINES = 2, 3
        try:
            self.outputs.truncate(0)
            self.outputs.seek(0)
            self.run_cell("def a(n):\n    if n: a(n - 1)\n    else: raise ValueError('deep')\na(3)")
        finally:
            outputs.HEAD_LINES, outputs.TAIL_LINES = head, tail
        [record] = self.errors()
        self.assertEqual(len(record["traceback"]), 6)
        self.assertRegex(record["traceback"][2], r"^\.\.\. \d+ lines left out \.\.\.$")
        self.assertEqual(record["traceback"][-1], "ValueError: deep")

    def test_a_hostile_str(self):
        self.run_cell("class E(Exception):\n    def __str__(self):\n        raise RuntimeError\nraise E()")
        [record] = self.errors()
        self.assertEqual((record["ename"], record["evalue"]), ("E", "<exception str() failed>"))


class ExitStatusTest(unittest.TestCase):
    def test_as_the_interpreter_computes_it(self):
        self.assertEqual(cell.exit_status(None), 0)
        self.assertEqual(cell.exit_status(3), 3)
        self.assertEqual(cell.exit_status(256 + 4), 4)
        self.assertEqual(cell.exit_status(-1), 255)
        self.assertEqual(cell.exit_status(True), 1)
        err = io.StringIO()
        with redirect_stderr(err):
            self.assertEqual(cell.exit_status("message"), 1)
        self.assertEqual(err.getvalue(), "message\n")


if __name__ == "__main__":
    unittest.main()
