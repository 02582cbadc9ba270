"""Importing a module of the runner does no work: it changes nothing of the process, and loads
none of the heavier standard modules that only some paths need (each one costs every spawned
execution that imports it)."""
import os
import subprocess
import sys
import unittest

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULES = sorted(name[:-3] for name in os.listdir(os.path.join(TOP, "pyexec_runner")) if name.endswith(".py"))

# Run in a fresh interpreter: it prints what importing the modules given changed.
PROBE = r"""
import json, os, signal, sys, threading
def state():
    return {"path": list(sys.path), "meta_path": [repr(f) for f in sys.meta_path], "environ": dict(os.environ),
            "cwd": os.getcwd(), "fds": sorted(os.listdir("/proc/self/fd")), "threads": threading.active_count(),
            "argv": list(sys.argv), "main": repr(sys.modules["__main__"]),
            "signals": {s.name: repr(signal.getsignal(s)) for s in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM)}}
before, modules = state(), set(sys.modules)
for name in sys.argv[1:]:
    __import__("pyexec_runner." + name)
after = state()
after["fds"] = [fd for fd in after["fds"] if fd in before["fds"]]
print(json.dumps({"changed": sorted(k for k in before if before[k] != after[k]),
                  "imported": sorted(set(sys.modules) - modules)}))
"""


def probe(*modules):
    out = subprocess.run([sys.executable, "-B", "-c", PROBE] + list(modules), cwd=TOP, capture_output=True, text=True, check=True)
    import json

    lines = out.stdout.splitlines()
    return json.loads(lines[-1]), lines[:-1], out.stderr


class ImportTest(unittest.TestCase):
    def test_the_package_has_the_modules_its_docstring_lists(self):
        self.assertIn("loader", MODULES)
        import pyexec_runner

        listed = {line.split()[0] for line in pyexec_runner.__doc__.splitlines() if line.startswith("    ")}
        self.assertEqual(listed, set(MODULES) - {"__init__"})

    def test_every_module_imports_without_side_effects(self):
        result, printed, stderr = probe(*[m for m in MODULES if m != "__init__"])
        self.assertEqual((result["changed"], printed, stderr), ([], [], ""))

    def test_a_spawned_execution_loads_no_more_than_it_needs(self):
        # The modules of a stateless execution in spawn mode: the rest of the standard library
        # they use is imported where it is needed, not at import.
        result, _, _ = probe("spawn", "run")
        heavy = {"ctypes", "socket", "select", "resource", "base64", "struct", "ast", "traceback", "linecache",
                 "pyexec_runner.session", "pyexec_runner.zygote"}
        self.assertEqual(sorted(heavy & set(result["imported"])), [])


if __name__ == "__main__":
    unittest.main()
