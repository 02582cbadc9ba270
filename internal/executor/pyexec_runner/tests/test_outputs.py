import unittest

import numpy as np
import pandas as pd

from pyexec_runner import outputs


class LLMTextTest(unittest.TestCase):
    def test_a_frame(self):
        df = pd.DataFrame({"a": range(1000), "b": np.where(np.arange(1000) % 7 == 0, np.nan, 1.5), "c": ["x" * 100] * 1000})
        text = outputs.bundle(df)[outputs.LLM_MIME]
        lines = text.splitlines()
        self.assertEqual(lines[0], "pandas.DataFrame: 1000 rows x 3 columns")
        self.assertIn("  b: float64, 143 nulls", lines)
        self.assertIn("first 5 rows:", lines)
        self.assertIn("last 5 rows:", lines)
        self.assertTrue(lines[-1].startswith("999  999  1.5  xxx"), lines[-1])
        self.assertNotIn("x" * 41, text)  # cells cut at 40 characters

    def test_a_short_frame_shows_every_row_and_repeated_names(self):
        text = outputs.llm_text(pd.DataFrame([[1, 2]], columns=["x", "x"]))
        self.assertEqual(text, "pandas.DataFrame: 1 rows x 2 columns\ncolumns (dtype, nulls):\n"
                               "  x: int64, 0 nulls\n  x: int64, 0 nulls\nrows:\n   x  x\n0  1  2")

    def test_a_wide_frame_counts_the_columns_left_out(self):
        text = outputs.llm_text(pd.DataFrame(np.zeros((3, 100))))
        self.assertIn("  ... 70 more columns", text)
        self.assertLessEqual(len(text), outputs.LLM_MAX)

    def test_a_series(self):
        text = outputs.llm_text(pd.Series([1.0, None, 3.0], name="v"))
        self.assertTrue(text.startswith("pandas.Series 'v': 3 values, dtype float64, 1 nulls\nrows:\n"), text)

    def test_an_array(self):
        text = outputs.llm_text(np.arange(10000.0).reshape(100, 100))
        self.assertTrue(text.startswith("numpy.ndarray: shape (100, 100), dtype float64\nmin 0.0, max 9999.0, mean 4999.5, 0 NaN\n"), text)
        self.assertIn("...", text)
        self.assertEqual(outputs.llm_text(np.array([np.nan]))[: len("numpy.ndarray: shape (1,), dtype float64\nall 1 values NaN")],
                         "numpy.ndarray: shape (1,), dtype float64\nall 1 values NaN")

    def test_bounded(self):
        text = outputs.llm_text(pd.DataFrame({"c%d" % i: ["y" * 40] * 20 for i in range(30)}))
        self.assertLessEqual(len(text), outputs.LLM_MAX)
        self.assertRegex(text, r"\.\.\. \(\d+ characters left out\)$")

    def test_other_objects_have_none(self):
        for obj in ([1, 2], {"a": 1}, "text", 3):
            self.assertNotIn(outputs.LLM_MIME, outputs.bundle(obj))

    def test_a_hostile_frame_keeps_the_rest_of_the_bundle(self):
        class Hostile(pd.DataFrame):
            def isna(self):
                raise RuntimeError("no")

        data = outputs.bundle(Hostile({"a": [1]}))
        self.assertNotIn(outputs.LLM_MIME, data)
        self.assertIn("text/plain", data)
        self.assertIn("text/html", data)
