"""A sample "code interpreter" bot that runs its Python through the pyexec sidecar.

It is the app container of config/samples/bot.yaml (image pyexec-bot, built by the Dockerfile's
``bot`` target) and of the end-to-end suite. Two ways to run it:

    python3 sample_bot.py              # the bot: every $BOT_INTERVAL seconds (default 5) it
                                       # sends the next sample snippet and logs one line
    python3 sample_bot.py run CODE [TIMEOUT]
                                       # run CODE once (time limit TIMEOUT seconds, default 30),
                                       # print the Result as JSON (exit 0), or the error as
                                       # {"error": ..., "type": ...} (exit 2)
    python3 sample_bot.py session CODE [CODE ...]
                                       # run each CODE in turn in one session, as a
                                       # conversation does; print one Result a line, then
                                       # delete the session. A CODE of UNDO puts the session
                                       # back to before the last call (each call takes a
                                       # checkpoint first when UNDO is among them). A CODE of
                                       # FORK forks the session: the CODEs after it run in the
                                       # branch, until BACK closes it and goes on in the session
    python3 sample_bot.py mcp CODE     # run CODE through the sidecar's MCP endpoint (/mcp on
                                       # the socket), as an agent framework would: initialize,
                                       # then call the run_python tool; print what came back

Each log line starts with ``bot:`` and reads ``bot: result ...`` or ``bot: error ...``, so
``kubectl logs POD`` (the bot is the pod's default container) shows what the sidecar did.
"""

import json
import os
import sys
import time

from pyexec_client import Client, PyexecError

SNIPPETS = [
    "print(sum(range(10)))",
    "import platform; print('python', platform.python_version())",
    "import json; print(json.dumps({'answer': 6 * 7}))",
]


def run_once(client, code, timeout):
    try:
        r = client.execute(code, timeout=timeout)
    except PyexecError as e:
        print(json.dumps({"error": str(e), "type": type(e).__name__}))
        return 2
    print(json.dumps(_result(r)))
    return 0


def _result(r):
    return {
        "exit_code": r.exit_code, "reason": r.reason, "stdout": r.stdout, "stderr": r.stderr,
        "timed_out": r.timed_out, "duration_ms": r.duration_ms, "session_lost": r.session_lost,
        "result": next((o.text for o in r.outputs if o.type == "execute_result"), None),
        "files": sorted(r.files),
    }


def run_session(client, codes):
    undo = "UNDO" in codes
    try:
        with client.session() as s:
            print(json.dumps({"session": s.id}), flush=True)
            last, branch = None, None
            for code in codes:
                if code == "UNDO":
                    s.restore(last.checkpoint)
                    print(json.dumps({"undone": last.checkpoint}), flush=True)
                    continue
                if code == "FORK":
                    branch = s.fork()
                    print(json.dumps({"forked": branch.id}), flush=True)
                    continue
                if code == "BACK":
                    branch.close()
                    print(json.dumps({"back": s.id}), flush=True)
                    branch = None
                    continue
                last = (branch or s).run(code, timeout=30, checkpoint=undo)
                print(json.dumps(_result(last)), flush=True)
            if branch is not None:
                branch.close()
    except PyexecError as e:
        print(json.dumps({"error": str(e), "type": type(e).__name__}))
        return 2
    return 0


def run_mcp(socket_path, code):
    """Speak the Model Context Protocol (Streamable HTTP, JSON answers) to the sidecar's /mcp."""
    import http.client
    import socket

    class Conn(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(60)
            self.sock.connect(socket_path)

    # Pyexec-Owner: the sessions this bot creates over MCP are its own (a bot that serves
    # several users sends a key per user).
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "Pyexec-Owner": "sample-bot"}

    def post(message):
        conn = Conn("pyexec")
        try:
            conn.request("POST", "/mcp", json.dumps(message), headers)
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        if resp.status >= 300:
            raise RuntimeError("HTTP %d: %s" % (resp.status, body[:500].decode("utf-8", "replace")))
        return json.loads(body) if body else None

    init = post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "sample-bot", "version": "1"}}})
    version = init["result"]["protocolVersion"]
    headers["MCP-Protocol-Version"] = version
    post({"jsonrpc": "2.0", "method": "notifications/initialized"})
    call = post({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "run_python", "arguments": {"code": code}}})
    result = call["result"]
    print(json.dumps({
        "protocol_version": version,
        "server": init["result"]["serverInfo"]["name"],
        "is_error": result.get("isError", False),
        "text": "".join(c.get("text", "") for c in result["content"] if c["type"] == "text"),
        "images": sum(1 for c in result["content"] if c["type"] == "image"),
        "structured": "structuredContent" in result,
    }))
    return 0


def loop(client, interval):
    n = 0
    print("bot: started, socket %s, a snippet every %gs" % (client.socket_path, interval), flush=True)
    while True:
        code = SNIPPETS[n % len(SNIPPETS)]
        n += 1
        try:
            r = client.execute(code, timeout=30)
            print("bot: result #%d reason=%s exit=%d duration_ms=%.1f stdout=%s" % (
                n, r.reason, r.exit_code, r.duration_ms, json.dumps(r.stdout.strip())), flush=True)
        except PyexecError as e:
            print("bot: error #%d %s: %s" % (n, type(e).__name__, e), flush=True)
        time.sleep(interval)


def main(argv):
    client = Client()
    if len(argv) in (3, 4) and argv[1] == "run":
        return run_once(client, argv[2], float(argv[3]) if len(argv) == 4 else 30)
    if len(argv) >= 3 and argv[1] == "session":
        return run_session(client, argv[2:])
    if len(argv) == 3 and argv[1] == "mcp":
        return run_mcp(client.socket_path, argv[2])
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 64
    loop(client, float(os.environ.get("BOT_INTERVAL", "5")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
