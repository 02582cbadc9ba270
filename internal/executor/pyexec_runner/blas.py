"""The thread pools of BLAS and OpenMP libraries: each execution's share of the runner's CPUs."""
import os
import sys

# The thread pools of BLAS and OpenMP libraries (numpy's, scipy's, torch's). Every interpreter
# pyexec starts has 1 thread each in its environment: the zygote, the spares and the code's
# process before its confinement must have no thread that confinement would not reach. Each
# execution's code gets its share of the runner's CPUs (Spawn.share), after its confinement (a
# pool's threads are then confined too and count against its budget): in the environment, for
# the libraries the code loads itself, and in the OpenMP and MKL pools already loaded, through
# their own set_num_threads, which start no thread. OpenBLAS's would start its pool at once,
# 2-3 ms in every execution: a preloaded OpenBLAS keeps 1 thread unless the request's env sets
# OPENBLAS_NUM_THREADS. A variable the request's env sets is the request's.
BLAS_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
_pinned = set()  # BLAS_VARS the request's env set (pin)
_blas_threads = 1  # what the loaded OpenMP and MKL pools run with
_blas_setters = None  # their set_num_threads functions, once found
_blas_modules = 0  # how many modules were loaded when none was found


def pin(env):
    """Keep what the request's env (a dict) sets of BLAS_VARS as the request's."""
    global _pinned
    _pinned = set(env) & set(BLAS_VARS)


def thread_env(n, pinned):
    """The variables of BLAS_VARS that a share of n threads sets: those not pinned."""
    return {k: str(n) for k in BLAS_VARS if k not in pinned}


def setter_symbols(path):
    """The set_num_threads functions to look for in the shared library at path: OpenMP's and
    MKL's; () for any other."""
    name = os.path.basename(path).lower()
    if "gomp" in name or "libomp" in name or "iomp" in name:
        return ("omp_set_num_threads",)
    if "mkl_rt" in name:
        return ("MKL_Set_Num_Threads",)
    return ()


def set_threads(n, env=(), session=False):
    """Set the execution's share n. What is loaded in an execution's process came from the
    zygote, which found its pools once; a session's interpreter may load more between calls."""
    global _blas_threads
    if not isinstance(n, int) or n < 1:
        return
    pinned = _pinned | (set(env) & set(BLAS_VARS))
    os.environ.update(thread_env(n, pinned))
    if "OPENBLAS_NUM_THREADS" in pinned:
        _set_openblas(os.environ["OPENBLAS_NUM_THREADS"])
    if n == _blas_threads or pinned:
        return
    for fn in (setters() if session or _blas_setters is None else _blas_setters):
        try:
            fn(n)
        except Exception:
            pass
    _blas_threads = n


def _set_openblas(value):
    """What the request's env asks of a loaded OpenBLAS, which then starts its pool at once."""
    import ctypes

    try:
        n = int(value)
        with open("/proc/self/maps") as f:
            libs = {line.split(None, 5)[5].rstrip("\n") for line in f if "blas" in line and len(line.split(None, 5)) == 6}
    except (OSError, ValueError):
        return
    for lib in libs:
        try:
            handle = ctypes.CDLL(lib)
        except OSError:
            continue
        for symbol in ("openblas_set_num_threads", "openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                       "scipy_openblas_set_num_threads64_"):
            fn = getattr(handle, symbol, None)
            if fn is not None:
                fn.argtypes, fn.restype = [ctypes.c_int], None
                fn(n)
                break


def setters():
    """The set_num_threads functions of the OpenMP and MKL libraries loaded in this process,
    found in /proc/self/maps; looked for again while there are none."""
    global _blas_setters, _blas_modules
    if _blas_setters is not None and (_blas_setters or _blas_modules == len(sys.modules)):
        return _blas_setters
    _blas_modules = len(sys.modules)
    import ctypes

    try:
        with open("/proc/self/maps") as f:
            libs = sorted({line.split(None, 5)[5].rstrip("\n") for line in f if ".so" in line and len(line.split(None, 5)) == 6})
    except OSError:
        return []
    found = []
    for lib in libs:
        symbols = setter_symbols(lib)
        if not symbols:
            continue
        try:
            handle = ctypes.CDLL(lib)
        except OSError:
            continue
        for symbol in symbols:
            fn = getattr(handle, symbol, None)
            if fn is not None:
                fn.argtypes, fn.restype = [ctypes.c_int], None
                found.append(fn)
                break
    _blas_setters = found
    return found
