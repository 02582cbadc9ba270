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
                                       # delete the session

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
    try:
        with client.session() as s:
            print(json.dumps({"session": s.id}), flush=True)
            for code in codes:
                print(json.dumps(_result(s.run(code, timeout=30))), flush=True)
    except PyexecError as e:
        print(json.dumps({"error": str(e), "type": type(e).__name__}))
        return 2
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
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 64
    loop(client, float(os.environ.get("BOT_INTERVAL", "5")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
