"""The small pure parts: BLAS shares, seccomp programs, resource limits, /proc parsing."""
import os
import signal
import struct
import unittest

from pyexec_runner import blas, codeproc, confine, procs


class BlasTest(unittest.TestCase):
    def test_thread_env_leaves_the_pinned_alone(self):
        self.assertEqual(blas.thread_env(3, set()), {k: "3" for k in blas.BLAS_VARS})
        env = blas.thread_env(2, {"OMP_NUM_THREADS"})
        self.assertNotIn("OMP_NUM_THREADS", env)
        self.assertEqual(len(env), len(blas.BLAS_VARS) - 1)

    def test_pin_keeps_only_blas_variables(self):
        try:
            blas.pin({"OMP_NUM_THREADS": "8", "HOME": "/x"})
            self.assertEqual(blas._pinned, {"OMP_NUM_THREADS"})
        finally:
            blas.pin({})

    def test_setter_symbols(self):
        self.assertEqual(blas.setter_symbols("/usr/lib/x86_64-linux-gnu/libgomp.so.1"), ("omp_set_num_threads",))
        self.assertEqual(blas.setter_symbols("/opt/lib/libiomp5.so"), ("omp_set_num_threads",))
        self.assertEqual(blas.setter_symbols("/opt/lib/libmkl_rt.so.2"), ("MKL_Set_Num_Threads",))
        self.assertEqual(blas.setter_symbols("/usr/lib/libopenblas.so.0"), ())
        self.assertEqual(blas.setter_symbols("/usr/lib/libc.so.6"), ())

    def test_set_threads_ignores_what_is_no_share(self):
        before = dict(os.environ)
        for n in (None, 0, -1, "2", 1.5):
            blas.set_threads(n)
        self.assertEqual(dict(os.environ), before)


class ConfineTest(unittest.TestCase):
    def test_with_parent_pid(self):
        prog = bytes(range(16))
        out = confine.with_parent_pid(prog, [4, 12], 0x01020304)
        self.assertEqual(struct.unpack_from("=I", out, 4)[0], 0x01020304)
        self.assertEqual(struct.unpack_from("=I", out, 12)[0], 0x01020304)
        self.assertEqual(out[:4] + out[8:12], prog[:4] + prog[8:12])
        self.assertEqual(bytes(confine.with_parent_pid(prog, None, 1)), prog)

    def test_confine_without_a_spec_does_nothing(self):
        self.assertIsNone(confine.confine(None, None))
        self.assertFalse(confine.preconfined_budget())


class LimitsTest(unittest.TestCase):
    def test_rlimits(self):
        self.assertEqual(codeproc.rlimits({}), [("RLIMIT_CORE", 0)])
        self.assertEqual(codeproc.rlimits({"as_bytes": 1 << 30, "nproc": 64, "fsize_bytes": 8 << 20, "memory_bytes": 1}),
                         [("RLIMIT_AS", 1 << 30), ("RLIMIT_NPROC", 64), ("RLIMIT_FSIZE", 8 << 20), ("RLIMIT_CORE", 0)])


class ProcsTest(unittest.TestCase):
    def test_parent_of_reads_past_the_name(self):
        self.assertEqual(procs.parent_of("42 (python3) S 7 42 42 0"), 7)
        self.assertEqual(procs.parent_of("42 (a) b (c)) R 99 1 1"), 99)

    def test_children_and_their_end(self):
        self.assertFalse(procs.has_children())
        pid = os.fork()
        if pid == 0:
            signal.pause()
            os._exit(0)
        try:
            self.assertEqual(procs.children(), [pid])
            self.assertEqual(procs.children(os.getpid()), [pid])
            self.assertTrue(procs.has_children())
        finally:
            procs.kill_leftovers()
        self.assertEqual(procs.children(), [])
        self.assertFalse(procs.has_children(), "killed and reaped")


if __name__ == "__main__":
    unittest.main()
