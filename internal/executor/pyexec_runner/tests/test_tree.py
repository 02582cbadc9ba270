import json
import os
import signal
import unittest

from pyexec_runner import tree
from pyexec_runner.tree import Tree


def closed(fd):
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


class TakeTest(unittest.TestCase):
    """Tree.take: what the code's process hands over before its code runs. A pipe stands for
    the budget's listener."""

    def setUp(self):
        self.fds = []

    def tearDown(self):
        for fd in self.fds:
            if not closed(fd):
                os.close(fd)

    def fd(self):
        r, w = os.pipe()
        self.fds += [r, w]
        os.close(w)
        return r

    def test_limits_with_the_budgets_listener(self):
        t, fd = Tree(), self.fd()
        self.assertTrue(t.take(json.dumps({"memory": 1 << 20, "budget": 5}).encode(), [fd]))
        self.assertEqual((t.fd, t.limit, t.bound, t.memory), (fd, 5, 1, 1 << 20))
        self.assertTrue(t.taken)
        self.assertTrue(t.forkless())
        t.allowed = 1
        self.assertFalse(t.forkless())

    def test_limits_are_taken_once(self):
        t = Tree()
        self.assertFalse(t.take(b'{"memory": 100}', []))
        extra = self.fd()
        self.assertFalse(t.take(b'{"memory": 1000, "budget": 9}', [extra]))
        self.assertEqual((t.memory, t.limit), (100, 0))
        self.assertTrue(closed(extra))

    def test_a_listener_ahead_then_the_limits(self):
        t, fd = Tree(), self.fd()
        self.assertTrue(t.take(b'{"listener": true}', [fd]))
        self.assertEqual((t.fd, t.limit), (fd, 1), "until the limits come, every new task is refused")
        self.assertFalse(t.take(b'{"listener": true}', [self.fd()]), "a second listener is refused")
        self.assertTrue(t.take(b'{"budget": 7}', []))
        self.assertEqual((t.fd, t.limit, t.bound), (fd, 7, 1))

    def test_a_listener_twice_or_none_is_not_trusted(self):
        t, fd, second = Tree(), self.fd(), self.fd()
        t.take(b'{"listener": true}', [fd])
        self.assertFalse(t.take(b'{"budget": 7}', [second]))
        self.assertTrue(closed(second))
        self.assertEqual(t.limit, 1)
        t = Tree()
        self.assertFalse(t.take(b'{"budget": 7}', []), "a budget without its listener")
        self.assertIsNone(t.fd)

    def test_no_budget_with_a_listener_lets_it_be(self):
        t, fd = Tree(), self.fd()
        t.take(b'{"listener": true}', [fd])
        self.assertFalse(t.take(b'{"memory": 10}', []))
        self.assertEqual(t.limit, 1 << 30)

    def test_what_is_not_limits_is_dropped(self):
        for msg in (b"", b"1 m", b"[1]", b"not json"):
            t, fd = Tree(), self.fd()
            self.assertFalse(t.take(msg, [fd]), msg)
            self.assertTrue(closed(fd), msg)
            self.assertFalse(t.taken)


class MemoryTest(unittest.TestCase):
    def test_timeout_waits_for_the_memorys_reading(self):
        t = Tree()
        self.assertEqual(t.timeout(1000), 1000)
        self.assertFalse(t.memory_over())
        t.take(b'{"memory": 1}', [])
        self.assertLessEqual(t.timeout(1000), Tree.INTERVAL * 1000 + 1)
        t._due = 0  # due now
        self.assertEqual(t.timeout(1000), 0)

    def test_a_tree_over_its_limit(self):
        pid = os.fork()
        if pid == 0:
            signal.pause()
            os._exit(0)
        try:
            self.assertEqual(tree.tree_pids(os.getpid()), [pid])
            self.assertGreaterEqual(tree.tree_tasks(tree.tree_pids(os.getpid())), 1)
            resident = tree.tree_memory(tree.tree_pids(os.getpid()), 1 << 40)
            self.assertGreater(resident, 0)
            # Past the limit: the proportional sets, at most the resident sets.
            self.assertLessEqual(tree.tree_memory(tree.tree_pids(os.getpid()), 1), resident)
            t = Tree()
            t.take(b'{"memory": 1}', [])
            t._due = 0
            self.assertTrue(t.memory_over())
            self.assertTrue(t.over_memory)
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        self.assertEqual(tree.tree_pids(os.getpid()), [])


if __name__ == "__main__":
    unittest.main()
