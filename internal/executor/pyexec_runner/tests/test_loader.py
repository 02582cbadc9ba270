import os
import sys
import tempfile
import traceback
import unittest

from pyexec_runner import loader

SOURCES = {
    "fakepkg/__init__.py": '"""A package."""\n',
    "fakepkg/a.py": "VALUE = 42\n\n\ndef fail():\n    raise ValueError('from a')\n",
    "fakepkg/b.py": "from . import a\nfrom .a import VALUE\n",
    "fakepkg/main.py": "calls = []\n\n\ndef main(path_entry):\n    import fakepkg_shadow  # noqa: F401\n",
    "fakepkg/notes.txt": "not a module",
}


class Imported(unittest.TestCase):
    """Modules of a SourceFinder, imported for a test and forgotten after it."""

    def setUp(self):
        self.meta_path = list(sys.meta_path)
        self.path = list(sys.path)
        self.finder = loader.SourceFinder(SOURCES)

    def tearDown(self):
        sys.meta_path[:] = self.meta_path
        sys.path[:] = self.path
        for name in list(sys.modules):
            if name == "fakepkg" or name.startswith("fakepkg.") or name == "fakepkg_shadow":
                del sys.modules[name]


class SourceFinderTest(Imported):
    def test_finds_only_its_modules(self):
        self.assertEqual(sorted(self.finder.sources), ["fakepkg", "fakepkg.a", "fakepkg.b", "fakepkg.main"])
        self.assertIsNone(self.finder.find_spec("json"))
        self.assertIsNone(self.finder.find_spec("fakepkg.notes"))
        self.assertTrue(self.finder.is_package("fakepkg"))
        self.assertFalse(self.finder.is_package("fakepkg.a"))

    def test_imports_a_package_and_relative_imports(self):
        sys.meta_path.insert(0, self.finder)
        import fakepkg.b

        self.assertEqual(fakepkg.b.VALUE, 42)
        self.assertIs(fakepkg.b.a, sys.modules["fakepkg.a"])
        self.assertEqual(fakepkg.__path__, [])
        self.assertEqual(fakepkg.b.__spec__.origin, "<pyexec>/fakepkg/b.py")
        self.assertFalse(hasattr(fakepkg.b, "__file__"), "no file of the module exists")

    def test_tracebacks_name_the_module_and_show_its_lines(self):
        sys.meta_path.insert(0, self.finder)
        import fakepkg.a

        try:
            fakepkg.a.fail()
        except ValueError:
            text = traceback.format_exc()
        self.assertIn('File "<pyexec>/fakepkg/a.py", line 5, in fail', text)
        self.assertIn("raise ValueError('from a')", text)

    def test_get_source(self):
        self.assertEqual(self.finder.get_source("fakepkg.a"), SOURCES["fakepkg/a.py"])
        with self.assertRaises(ImportError):
            self.finder.get_source("fakepkg.none")


class BootTest(Imported):
    def test_takes_the_first_path_entry_off_before_importing(self):
        with tempfile.TemporaryDirectory() as d:
            # A file of the working directory, where `python -c` looks first, must not be
            # found by the runner's imports.
            with open(os.path.join(d, "fakepkg_shadow.py"), "w") as f:
                f.write("raise AssertionError('imported from the working directory')\n")
            sys.path.insert(0, d)
            with self.assertRaises(ModuleNotFoundError):
                loader.boot(SOURCES, "fakepkg.main")
            self.assertNotIn(d, sys.path)
            self.assertIs(sys.meta_path[0].__class__, loader.SourceFinder)

    def test_calls_main_with_the_entry(self):
        sources = dict(SOURCES)
        sources["fakepkg/main.py"] = "calls = []\n\n\ndef main(path_entry):\n    calls.append(path_entry)\n"
        sys.path.insert(0, "first")
        loader.boot(sources, "fakepkg.main")
        self.assertEqual(sys.modules["fakepkg.main"].calls, ["first"])
        self.assertEqual(sys.path, self.path)


if __name__ == "__main__":
    unittest.main()
