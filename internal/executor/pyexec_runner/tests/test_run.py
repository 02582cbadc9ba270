"""The stateless supervisor's wait for the code's process."""
import json
import os
import socket
import unittest

from pyexec_runner import run
from pyexec_runner.tree import Tree


class WaitTest(unittest.TestCase):
    def ended_child(self, *messages):
        """A child that sends messages on a socket and exits 1, waited for until it has ended
        (a zombie, not reaped); the supervisor's end of the socket."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            try:
                mine.close()
                for m in messages:
                    theirs.send(m)
            finally:
                os._exit(1)
        theirs.close()
        self.addCleanup(mine.close)
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        return pid, mine

    def test_report_of_a_process_that_ended_first(self):
        # The code's process reported a MemoryError and ended before the supervisor woke: the
        # report, not the wait status, says how it ended.
        pid, done = self.ended_child(b'{"memory": 1048576}', b"1 m c250")
        report, st = run._wait(pid, done, Tree())
        self.assertEqual((report, os.waitstatus_to_exitcode(st)), ((1, True, 250), 1))

    def test_a_process_that_ended_without_a_report(self):
        pid, done = self.ended_child(b'{"memory": 1048576}')
        report, st = run._wait(pid, done, Tree())
        self.assertEqual((report, os.waitstatus_to_exitcode(st)), (None, 1))

    def test_watch_reports_it(self):
        # The whole supervisor's end of it: the status lines say the MemoryError and the exit,
        # and nothing fails on a process that is reaped already.
        pid, done = self.ended_child(b'{"memory": 1048576}', b"1 m c777")
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        run.watch(pid, w, False, done)
        with os.fdopen(os.dup(r), "rb") as f:
            lines = [json.loads(line) for line in f.read().splitlines()]
        self.assertIn({"memory_error": True}, lines)
        self.assertEqual((lines[-1].get("exit_code"), lines[-1].get("code_ns")), (1, 777), lines)


if __name__ == "__main__":
    unittest.main()
