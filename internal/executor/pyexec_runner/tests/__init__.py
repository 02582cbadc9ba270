"""Unit tests of the runner's modules, with the standard library's unittest and nothing of the
Go side. From internal/executor: python3 -B -m unittest discover -s pyexec_runner/tests -t .
(TestPythonUnitTests runs them in go test)."""
