import base64
import io
import json
import os
import re
import sys
import tempfile
import types
import unittest
from contextlib import redirect_stderr

from pyexec_runner import outputs


class HTML:
    def _repr_html_(self):
        return "<b>t</b>"

    def __repr__(self):
        return "HTML()"


class Broken:
    def _repr_html_(self):
        raise RuntimeError("no html")

    def _repr_png_(self):
        raise RuntimeError("no png")


class NotText:
    def _repr_html_(self):
        return b"<b>bytes</b>"


class PNG:
    def _repr_png_(self):
        return b"\x89PNG-bytes"


class Figure:
    """What outputs takes for a matplotlib figure: a savefig of a class of matplotlib's."""

    def savefig(self, buf, format):
        buf.write(b"figure as " + format.encode())


Figure.__module__ = "matplotlib.figure"


class Written(unittest.TestCase):
    def setUp(self):
        self.file = io.StringIO()
        outputs.use(self.file)

    def tearDown(self):
        outputs.use(None)

    def written(self):
        return [json.loads(line) for line in self.file.getvalue().splitlines()]


class BundleTest(unittest.TestCase):
    def test_plain_text_is_the_repr(self):
        self.assertEqual(outputs.bundle("a"), {"text/plain": "'a'"})
        self.assertEqual(outputs.bundle(42), {"text/plain": "42"})

    def test_html(self):
        self.assertEqual(outputs.bundle(HTML()), {"text/plain": "HTML()", "text/html": "<b>t</b>"})
        self.assertNotIn("text/html", outputs.bundle(NotText()))

    def test_png(self):
        self.assertEqual(outputs.bundle(PNG())["image/png"], base64.b64encode(b"\x89PNG-bytes").decode())
        self.assertEqual(base64.b64decode(outputs.bundle(Figure())["image/png"]), b"figure as png")

    def test_a_failing_repr_method_leaves_it_out(self):
        self.assertEqual(list(outputs.bundle(Broken())), ["text/plain"])


class EmitTest(Written):
    def test_one_json_line_each(self):
        outputs.emit("execute_result", 7)
        outputs.display("a", HTML())
        self.assertEqual(self.written(), [
            {"type": "execute_result", "data": {"text/plain": "7"}},
            {"type": "display_data", "data": {"text/plain": "'a'"}},
            {"type": "display_data", "data": {"text/plain": "HTML()", "text/html": "<b>t</b>"}},
        ])

    def test_no_file_no_output(self):
        outputs.use(None)
        outputs.display("nowhere")
        self.assertEqual(self.file.getvalue(), "")

    def test_an_output_that_cannot_be_written_is_reported(self):
        class Full(io.StringIO):
            def write(self, s):
                raise OSError(28, "No space left on device")

        outputs.use(Full())
        err = io.StringIO()
        with redirect_stderr(err):
            outputs.display("x")
        self.assertIn("pyexec: an output was not sent: OSError", err.getvalue())


class FakePyplot(types.ModuleType):
    def __init__(self, figures):
        super().__init__("matplotlib.pyplot")
        self.figures = dict(figures)

    def get_fignums(self):
        return sorted(self.figures)

    def figure(self, num):
        return self.figures[num]

    def close(self, which):
        assert which == "all"
        self.figures.clear()


class FiguresTest(Written):
    def setUp(self):
        super().setUp()
        self.saved = sys.modules.get("matplotlib.pyplot")

    def tearDown(self):
        super().tearDown()
        if self.saved is None:
            sys.modules.pop("matplotlib.pyplot", None)
        else:
            sys.modules["matplotlib.pyplot"] = self.saved

    def test_every_open_figure_is_displayed_then_closed(self):
        plt = FakePyplot({1: Figure(), 2: Figure()})
        sys.modules["matplotlib.pyplot"] = plt
        outputs.show_figures()
        self.assertEqual([o["type"] for o in self.written()], ["display_data", "display_data"])
        self.assertEqual(plt.figures, {})
        outputs.show_figures()
        self.assertEqual(len(self.written()), 2)

    def test_without_pyplot_nothing(self):
        sys.modules.pop("matplotlib.pyplot", None)
        outputs.show_figures()
        self.assertEqual(self.written(), [])

    def test_show_is_patched(self):
        plt = FakePyplot({})
        outputs._patch_show(plt)
        self.assertIs(plt.show, outputs.show_figures)


class PatchOnImportTest(unittest.TestCase):
    def setUp(self):
        self.meta_path = list(sys.meta_path)
        self.dir = tempfile.TemporaryDirectory()
        with open(os.path.join(self.dir.name, "pyexec_test_patched.py"), "w") as f:
            f.write("VALUE = 1\n")
        sys.path.insert(0, self.dir.name)

    def tearDown(self):
        sys.path.remove(self.dir.name)
        sys.meta_path[:] = self.meta_path
        sys.modules.pop("pyexec_test_patched", None)
        self.dir.cleanup()

    def test_patches_a_module_when_it_is_imported_once(self):
        patched = []

        def patch(module):
            patched.append(module.VALUE)
            module.VALUE = 2

        outputs._patch_module("pyexec_test_patched", patch)
        self.assertEqual(patched, [])
        import pyexec_test_patched

        self.assertEqual((patched, pyexec_test_patched.VALUE), ([1], 2))
        self.assertEqual(sys.meta_path, self.meta_path, "the hook removes itself")

    def test_patches_a_module_already_imported_at_once(self):
        import pyexec_test_patched

        outputs._patch_module("pyexec_test_patched", lambda m: setattr(m, "VALUE", 3))
        self.assertEqual(pyexec_test_patched.VALUE, 3)
        self.assertEqual(sys.meta_path, self.meta_path)


class NamesTest(unittest.TestCase):
    def test_shared_memory_names_carry_128_random_bits(self):
        module = types.SimpleNamespace(_SHM_NAME_PREFIX="/psm_")
        outputs._patch_shm_names(module)
        names = {module._make_filename() for _ in range(3)}
        self.assertEqual(len(names), 3)
        for name in names:
            self.assertRegex(name, r"^/psm_[0-9a-f]{32}$")

    def test_semaphore_names_carry_128_random_bits(self):
        class SemLock:
            pass

        outputs._patch_sem_names(types.SimpleNamespace(SemLock=SemLock))
        name = SemLock._make_name()
        self.assertTrue(re.fullmatch(r".+-[0-9a-f]{32}", name), name)
        self.assertNotEqual(name, SemLock._make_name())


if __name__ == "__main__":
    unittest.main()
