import time
import types
import unittest

import numpy as np
import pandas as pd

from pyexec_runner import variables


class DescribeTest(unittest.TestCase):
    def test_globals_without_modules_and_private_names(self):
        ns = {"x": 1, "_y": 2, "np": np, "os": types.ModuleType("os"), "__builtins__": {}, "name": "ab", 3: "not a name"}
        got = variables.describe(ns)
        self.assertEqual([v["name"] for v in got["variables"]], ["name", "x"])
        self.assertEqual((got["total"], got["truncated"]), (2, False))
        self.assertEqual(got["variables"][0], {"name": "name", "type": "str", "repr": "'ab'", "bytes": got["variables"][0]["bytes"], "len": 2})

    def test_the_type_is_the_objects_own(self):
        class Fake:
            __class__ = int

        [v] = variables.describe({"f": Fake()})["variables"]
        self.assertTrue(v["type"].endswith("Fake"), v)

    def test_slow_methods_are_cut_off(self):
        class Slow:
            def __repr__(self):
                time.sleep(2)
                return "slow"

        start = time.monotonic()
        [v] = variables.describe({"s": Slow()})["variables"]
        self.assertLess(time.monotonic() - start, 1)
        self.assertTrue(v["timed_out"])
        self.assertIn("longer than", v["repr"])

    def test_tables_and_arrays(self):
        got = {v["name"]: v for v in variables.describe({
            "df": pd.DataFrame({"a": range(1000), "b": 1.5}), "arr": np.zeros((100, 100)), "big": list(range(10**6))})["variables"]}
        self.assertEqual((got["df"]["shape"], got["df"]["len"]), ([1000, 2], 1000))
        self.assertIn("[1000 rows x 2 columns]", got["df"]["repr"])
        self.assertEqual((got["arr"]["shape"], got["arr"]["dtype"], got["arr"]["bytes"]), ([100, 100], "float64", 80000))
        self.assertEqual(got["big"]["len"], 10**6)
        self.assertTrue(all(len(v["repr"]) <= variables.MAX_REPR for v in got.values()))

    def test_at_most_max_variables(self):
        got = variables.describe({"v%04d" % i: i for i in range(variables.MAX_VARIABLES + 5)})
        self.assertEqual((len(got["variables"]), got["total"], got["truncated"]), (variables.MAX_VARIABLES, variables.MAX_VARIABLES + 5, True))

    def test_long_names_are_cut(self):
        [v] = variables.describe({"n" * 5000: 1})["variables"]
        self.assertLessEqual(len(v["name"]), variables.MAX_REPR)
