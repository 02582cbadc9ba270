# pyexec interpreter inspection. Sent on stdin to the interpreter under test (python3 -I -),
# with one JSON argument; writes one JSON object to stdout. Standard library only: it must run
# on any CPython 3.8+ without pip or third-party packages.
import sys

if sys.version_info < (3, 8):
    sys.stderr.write(
        "Python %d.%d.%d is older than 3.8, the oldest pyexec runs code with\n" % sys.version_info[:3]
    )
    sys.exit(3)

import json
import os

# Imports of preload modules may print. Keep the real stdout for the result and point fd 1 at
# stderr so that nothing else can end up in the JSON.
_result_out = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)

import importlib
import importlib.util
import re
import site
import sysconfig
import tempfile
import time

params = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}


def normalize(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def writable(path):
    """Whether a file can really be created in path (not access(): it lies on read-only mounts)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".pyexec-probe-", dir=path)
    except OSError as e:
        return False, "%s: %s" % (type(e).__name__, e.strerror or e)
    os.close(fd)
    os.unlink(name)
    return True, ""


def site_dirs():
    dirs = []
    try:
        dirs.extend(site.getsitepackages())
    except AttributeError:  # some old virtualenvs lack it
        pass
    for key in ("purelib", "platlib"):
        p = sysconfig.get_path(key)
        if p:
            dirs.append(p)
    seen, out = set(), []
    for d in dirs:
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out


def site_packages():
    out = []
    for d in site_dirs():
        entry = {"path": d, "exists": os.path.isdir(d), "writable": False}
        if entry["exists"]:
            ok, err = writable(d)
            entry["writable"] = ok
            if err:
                entry["error"] = err
        out.append(entry)
    return out


def externally_managed(in_venv):
    # PEP 668: the marker lives in the stdlib directory of the default scheme; a venv ignores it.
    try:
        stdlib = sysconfig.get_path("stdlib", sysconfig.get_default_scheme())
    except AttributeError:  # Python < 3.10
        stdlib = sysconfig.get_path("stdlib")
    marker = os.path.join(stdlib, "EXTERNALLY-MANAGED")
    present = os.path.isfile(marker)
    return {"marker": marker, "present": present, "applies": present and not in_venv}


def distributions():
    from importlib import metadata

    found = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if not name:
            continue
        key = normalize(name)
        if key in found:  # sys.path order: the first one is what import sees
            continue
        try:
            location = str(dist.locate_file(""))
        except Exception:
            location = ""
        found[key] = {"name": key, "version": dist.version or "", "location": location}
    return sorted(found.values(), key=lambda d: d["name"])


def module_available(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def ctypes_available():
    # pyexec confines each execution through ctypes (prctl, landlock_restrict_self, seccomp).
    try:
        import ctypes

        return hasattr(ctypes.CDLL(None), "prctl")
    except Exception:
        return False


def pip_info():
    info = {"available": module_available("pip"), "version": ""}
    if info["available"]:
        try:
            from importlib import metadata

            info["version"] = metadata.version("pip")
        except Exception:
            pass
    return info


def ensurepip_available():
    # Debian ships an ensurepip that only works with python3-venv's bundled wheels.
    if not module_available("ensurepip"):
        return False
    try:
        import ensurepip

        ensurepip.version()
        return True
    except Exception:
        return False


def preload(modules):
    out = []
    for name in modules:
        start = time.perf_counter()
        entry = {"module": name, "ok": True}
        try:
            importlib.import_module(name)
        except BaseException as e:  # SystemExit and KeyboardInterrupt from a module are failures too
            entry["ok"] = False
            entry["error"] = "%s: %s" % (type(e).__name__, e)
        entry["import_ms"] = round((time.perf_counter() - start) * 1000, 3)
        out.append(entry)
    return out


def main():
    packages_dir = params.get("packages_dir")
    if packages_dir and os.path.isdir(packages_dir):
        sys.path.insert(0, packages_dir)
        importlib.invalidate_caches()
    in_venv = sys.prefix != getattr(sys, "base_prefix", sys.prefix)
    result = {
        "executable": sys.executable,
        "real_path": os.path.realpath(sys.executable),
        "version": "%d.%d.%d" % sys.version_info[:3],
        "version_full": sys.version.split()[0],
        "implementation": sys.implementation.name,
        "prefix": sys.prefix,
        "base_prefix": getattr(sys, "base_prefix", sys.prefix),
        "in_venv": in_venv,
        "site_packages": site_packages(),
        "externally_managed": externally_managed(in_venv),
        "pip": pip_info(),
        "ensurepip": ensurepip_available(),
        "venv_module": module_available("venv"),
        "ctypes": ctypes_available(),
        "distributions": distributions(),
        "preload": preload(params.get("preload") or []),
    }
    json.dump(result, _result_out)
    _result_out.write("\n")
    _result_out.flush()


main()
