"""A session's variables, as GET /v1/sessions/{id}/variables lists them: the user's globals of
__main__ (modules and names that start with "_" left out), each with its type, a short repr,
and its length, shape, dtype and size in bytes when it has them. Everything here that may run
the code's own methods (repr, len, shape, sizeof) runs under a per-variable alarm: a hostile
or slow one is cut off and said so, and the listing goes on."""
import signal
import sys

MAX_VARIABLES = 1000  # listed, the first by name; total says how many there are (api.MaxVariables)
MAX_REPR = 200  # characters of a repr
EACH = 0.05  # seconds a variable may take


class TooSlow(BaseException):
    """Raised by the alarm in what a variable's methods run. It may come late, out of
    describe: when a method returns from C past the deadline, the deadline's SIGINT and the
    alarm are both pending, and SIGINT's handler (KeyboardInterrupt) runs first; the alarm's
    runs at the next check, in a finally. A caller takes it as the deadline."""


_TooSlow = TooSlow


def _alarm(signum, frame):
    raise _TooSlow


def _no_alarm(signum, frame):
    pass


def _handle_pending():
    """Nothing: calling it runs the handlers of the signals that are pending (a Python
    function's start checks for them)."""


def describe(namespace):
    """The variables of namespace (a dict): {"variables": [...], "total": N, "truncated": bool}."""
    from types import ModuleType

    names = sorted(k for k in list(namespace) if type(k) is str and not k.startswith("_"))
    names = [n for n in names if not issubclass(type(namespace.get(n)), ModuleType)]
    old = signal.signal(signal.SIGALRM, _alarm)
    out = []
    try:
        for name in names[:MAX_VARIABLES]:
            out.append(_variable(name, namespace.get(name)))
    finally:
        # An alarm still pending runs no handler of the code's (its own time-outs raise).
        signal.signal(signal.SIGALRM, _no_alarm)
        signal.setitimer(signal.ITIMER_REAL, 0)
        _handle_pending()
        signal.signal(signal.SIGALRM, old)
    return {"variables": out, "total": len(names), "truncated": len(names) > MAX_VARIABLES}


def _variable(name, value):
    t = type(value)  # never value.__class__, which the code may fake
    entry = {"name": _clip(name), "type": _clip(_type_name(t)), "repr": ""}
    # The alarm fires again each EACH until it is cleared: a method that swallows one is cut
    # off by the next.
    signal.setitimer(signal.ITIMER_REAL, EACH, EACH)
    try:
        _sizes(entry, t, value)
        entry["repr"] = _clip(_repr(t, value))
    except _TooSlow:
        entry["repr"] = entry["repr"] or "<repr took longer than %d ms>" % (EACH * 1000)
        entry["timed_out"] = True
    except Exception as e:
        entry["repr"] = entry["repr"] or "<repr failed: %s>" % type(e).__name__
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return entry


def _short_repr_of():
    """A reprlib.Repr that shows the first items of the builtin containers, never their all."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel = 3
    r.maxlist = r.maxtuple = r.maxset = r.maxfrozenset = r.maxdeque = r.maxdict = 20
    r.maxstring = r.maxother = r.maxlong = MAX_REPR
    return r


_short_repr = _short_repr_of()
_BUILTIN_CONTAINERS = (list, tuple, dict, set, frozenset, str, bytes, bytearray, int)


def _repr(t, value):
    """value's repr, made short where it can be made so cheaply: the first items of a builtin
    container; pandas and numpy printing a few rows and items (a full preview costs
    milliseconds, of which 200 characters are kept)."""
    if t in _BUILTIN_CONTAINERS:
        return _short_repr.repr(value)
    module = _module_of(t)
    pd = sys.modules.get("pandas")
    if pd is not None and module.startswith("pandas"):
        with pd.option_context("display.max_rows", 6, "display.min_rows", 6, "display.max_columns", 8, "display.width", 100):
            return repr(value)
    np = sys.modules.get("numpy")
    if np is not None and module.startswith("numpy"):
        with np.printoptions(threshold=20, edgeitems=2):
            return repr(value)
    return repr(value)


def _sizes(entry, t, value):
    """len, shape, dtype and bytes of value, each when it has it."""
    module = _module_of(t)
    if module.startswith(("numpy", "pandas")):
        shape = getattr(value, "shape", None)
        if type(shape) is tuple and all(type(d) is int for d in shape):
            entry["shape"] = list(shape)
        dtype = getattr(value, "dtype", None)
        if dtype is not None:
            entry["dtype"] = _clip(str(dtype))
        nbytes = None
        if module.startswith("numpy"):
            nbytes = getattr(value, "nbytes", None)
        elif hasattr(value, "memory_usage"):
            usage = value.memory_usage(index=True, deep=False)
            nbytes = usage.sum() if hasattr(usage, "sum") else usage
        if nbytes is not None:
            entry["bytes"] = int(nbytes)
    if "bytes" not in entry:
        entry["bytes"] = int(sys.getsizeof(value))
    if hasattr(t, "__len__") and not isinstance(value, type):
        n = len(value)
        if type(n) is int:
            entry["len"] = n


def _type_name(t):
    module, name = _module_of(t), type.__dict__["__qualname__"].__get__(t)
    return name if module == "builtins" else "%s.%s" % (module, name)


def _module_of(t):
    module = type.__dict__["__module__"].__get__(t)
    return module if type(module) is str else "?"


def _clip(text):
    if type(text) is not str:
        text = "<repr is not a string>"
    return text if len(text) <= MAX_REPR else text[: MAX_REPR - 3] + "..."
