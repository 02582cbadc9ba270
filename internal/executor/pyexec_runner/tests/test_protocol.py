import json
import os
import signal
import socket
import unittest

from pyexec_runner import protocol


def exited(code):
    """The wait status of a process that exited with code."""
    return code << 8


def killed(sig):
    """The wait status of a process killed by signal sig."""
    return sig


class StatusTest(unittest.TestCase):
    def test_status_line_is_one_json_line(self):
        line = protocol.status_line({"exit_code": 3, "subreaper": True})
        self.assertTrue(line.endswith(b"\n"))
        self.assertEqual(line.count(b"\n"), 1)
        self.assertEqual(json.loads(line), {"exit_code": 3, "subreaper": True})

    def test_status_writes_lines_and_ignores_a_closed_reader(self):
        r, w = os.pipe()
        try:
            protocol.status(w, memory_error=True)
            protocol.status(w, exit_code=1)
            os.close(w)
            w = None
            with os.fdopen(r) as f:
                r = None
                lines = [json.loads(line) for line in f]
            self.assertEqual(lines, [{"memory_error": True}, {"exit_code": 1}])
        finally:
            for fd in (r, w):
                if fd is not None:
                    os.close(fd)
        r, w = os.pipe()
        os.close(r)
        previous = signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        try:
            protocol.status(w, exit_code=0)  # EPIPE: no exception
        finally:
            signal.signal(signal.SIGPIPE, previous)
            os.close(w)


class DoneReportTest(unittest.TestCase):
    def test_round_trip(self):
        for st in (0, 1, 7, 255):
            for memory_error in (False, True):
                for code_ns in (None, 0, 1234567):
                    report = protocol.parse_done(protocol.done_report(st, memory_error, code_ns))
                    self.assertEqual(report, (st, memory_error, code_ns))
                    self.assertEqual((report.status, report.memory_error, report.code_ns), (st, memory_error, code_ns))
        self.assertEqual(protocol.done_report(1, True), b"1 m")
        self.assertEqual(protocol.done_report(0, False), b"0")
        self.assertEqual(protocol.done_report(0, True, 42), b"0 m c42")

    def test_what_is_not_a_report(self):
        for msg in (b"", b"x", b" ", b"m 1", b"-7", b"256 m", b"9" * 23):
            self.assertIsNone(protocol.parse_done(msg), msg)
        self.assertEqual(protocol.parse_done(b"3 x"), (3, False, None))
        # The code's word: what is not a time is no time.
        for msg in (b"0 c", b"0 c-5", b"0 c1e9", b"0 cx", b"0 c" + b"9" * 30):
            self.assertEqual(protocol.parse_done(msg), (0, False, None), msg)

    def test_the_code_time_of_a_call(self):
        reply = protocol.call_reply({"exit_code": 0, "code_ns": 5000}, 0)
        self.assertEqual(reply["code_ns"], 5000)
        for bad in (-1, 1.5, "7", True, None, 1 << 70):
            self.assertNotIn("code_ns", protocol.call_reply({"exit_code": 0, "code_ns": bad}, 0), bad)


class LimitsMessageTest(unittest.TestCase):
    LIMITS = {"memory_bytes": 256 << 20, "tasks": 64, "nofile": 256}

    def test_memory_and_budget(self):
        self.assertEqual(protocol.limits_message(self.LIMITS), {"memory": 256 << 20})
        self.assertEqual(protocol.limits_message(self.LIMITS, listener=True), {"memory": 256 << 20, "budget": 64})
        self.assertEqual(protocol.limits_message(self.LIMITS, preconfined_budget=True), {"memory": 256 << 20, "budget": 64})

    def test_keeps_msg_fields_and_leaves_msg_alone(self):
        msg = {"ready": True}
        self.assertEqual(protocol.limits_message({"memory_bytes": 0}, msg), {"ready": True})
        self.assertEqual(protocol.limits_message({"memory_bytes": 5, "tasks": 2}, msg, listener=True),
                         {"ready": True, "memory": 5, "budget": 2})
        self.assertEqual(msg, {"ready": True})


class RepliesTest(unittest.TestCase):
    def test_call_reply_takes_the_interpreters_word_checked(self):
        self.assertEqual(protocol.call_reply({"exit_code": 3, "memory_error": True}, 0),
                         {"exit_code": 3, "memory_error": True, "process_limit": False})
        self.assertEqual(protocol.call_reply({"exit_code": 0}, 2), {"exit_code": 0, "memory_error": False, "process_limit": True})
        for bad in (256, -1, "0", None, 1.0):
            self.assertEqual(protocol.call_reply({"exit_code": bad}, 0)["exit_code"], 1, bad)
        self.assertIs(protocol.call_reply({"exit_code": 0, "memory_error": 1}, 0)["memory_error"], False)

    def test_lost_reply(self):
        self.assertEqual(protocol.lost_reply(killed(9), False), {"exit_code": 137, "signal": 9, "lost": True, "memory_error": False})
        self.assertEqual(protocol.lost_reply(exited(4), True), {"exit_code": 4, "lost": True, "memory_error": True})

    def test_ended(self):
        self.assertEqual(protocol.ended(None), "did not start")
        self.assertEqual(protocol.ended(exited(126)), "could not be confined")
        self.assertEqual(protocol.ended(killed(9)), "was killed by signal 9")
        self.assertEqual(protocol.ended(exited(2)), "exited with status 2")


class DescriptorsTest(unittest.TestCase):
    def test_send_and_receive_descriptors(self):
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        r, w = os.pipe()
        try:
            protocol.send_fds(a, b'{"op": "exec"}', [r, w])
            msg, fds = protocol.recv_fds(b)
            self.assertEqual(msg, b'{"op": "exec"}')
            self.assertEqual(len(fds), 2)
            os.write(fds[1], b"through")
            self.assertEqual(os.read(r, 16), b"through")
            for fd in fds:
                os.close(fd)
            protocol.send_fds(a, b"none", [])
            self.assertEqual(protocol.recv_fds(b), (b"none", []))
            protocol.send_fds(a, b"0123456789", [])
            self.assertEqual(protocol.recv_fds(b, 4), (b"0123", []), "a longer message is cut")
        finally:
            for fd in (r, w):
                os.close(fd)
            a.close()
            b.close()

    def test_messages_received_one_after_another_stay_apart(self):
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            big = bytes(range(256)) * 512  # 128 KiB: above SMALL
            for msg in (b"first message", big, b"2nd", b""):
                protocol.send_fds(a, msg, [])
            got = [protocol.recv_fds(b)[0] for _ in range(3)]
            self.assertEqual(got, [b"first message", big, b"2nd"], "a message changed when the next came")
            self.assertEqual(protocol.recv_fds(b, protocol.SMALL), (b"", []))
            protocol.send_fds(a, big, [])
            self.assertEqual(protocol.recv_fds(b, protocol.SMALL)[0], big[:protocol.SMALL], "cut at size")
        finally:
            a.close()
            b.close()


if __name__ == "__main__":
    unittest.main()
