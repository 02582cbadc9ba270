"""Rich outputs, in Jupyter's vocabulary: one JSON line each, {"type": "execute_result" |
"display_data", "data": {MIME type: value}} (and {"type": "error", ...}: the exception that
ended the code, emit_exception), on the execution's outputs file, which pyexec
reads after the code (bounded by --max-files-out-bytes); display() for the code, matplotlib's
figures on plt.show() and at the end; and the import hooks that patch the modules the code
imports (hook_modules)."""
import json
import sys

_outputs = None  # the outputs file (use), None: outputs go nowhere


def use(f):
    """Send the outputs to f, a text file (None: nowhere). The code's process opens its outputs
    file before its confinement, which would keep it from opening it."""
    global _outputs
    _outputs = f


def bundle(obj):
    """obj's MIME bundle: text/plain always; text/html of _repr_html_, image/png of a matplotlib
    figure or of _repr_png_ (base64), when they give them; text/llm+plain of a pandas DataFrame
    or Series or a numpy array (llm_text)."""
    data = {"text/plain": repr(obj)}
    html = getattr(obj, "_repr_html_", None)
    if callable(html):
        try:
            text = html()
            if isinstance(text, str):
                data["text/html"] = text
        except Exception:
            pass
    png = None
    if type(obj).__module__.startswith("matplotlib") and hasattr(obj, "savefig"):
        import io

        buf = io.BytesIO()
        obj.savefig(buf, format="png")
        png = buf.getvalue()
    elif callable(getattr(obj, "_repr_png_", None)):
        try:
            png = obj._repr_png_()
        except Exception:
            png = None
    if isinstance(png, bytes):
        import base64

        data["image/png"] = base64.b64encode(png).decode("ascii")
    try:
        text = llm_text(obj)
    except Exception:
        text = None
    if text:
        data[LLM_MIME] = text
    return data


# A summary of a table or an array for a model to read: what it is, its shape and types, its
# nulls, its first and last rows; at most LLM_MAX characters.
LLM_MIME = "text/llm+plain"
LLM_MAX = 4000
LLM_ROWS = 5  # first and last rows shown of a longer one
LLM_COLUMNS = 30  # columns described; the rest counted
LLM_CELL = 40  # characters of a cell


def llm_text(obj):
    """The text/llm+plain of a pandas DataFrame or Series or a numpy array, else None. Only
    modules the code imported are looked at: none is imported here."""
    pd = sys.modules.get("pandas")
    np = sys.modules.get("numpy")
    if pd is not None and isinstance(obj, pd.DataFrame):
        text = _frame_text(obj)
    elif pd is not None and isinstance(obj, pd.Series):
        text = _series_text(obj)
    elif np is not None and isinstance(obj, np.ndarray):
        text = _array_text(np, obj)
    else:
        return None
    if len(text) > LLM_MAX:
        text = text[: LLM_MAX - 40].rstrip() + "\n... (%d characters left out)" % (len(text) - LLM_MAX + 40)
    return text


def _rows(obj):
    """The rows of a frame or series to show: all of a short one, else the first and last."""
    if not hasattr(obj, "columns"):
        obj = obj.to_frame()
    kw = {"max_colwidth": LLM_CELL, "max_cols": LLM_COLUMNS}
    if len(obj) <= 2 * LLM_ROWS:
        return "rows:\n" + obj.to_string(**kw)
    return "first %d rows:\n%s\nlast %d rows:\n%s" % (
        LLM_ROWS, obj.head(LLM_ROWS).to_string(**kw), LLM_ROWS, obj.tail(LLM_ROWS).to_string(**kw))


def _frame_text(df):
    rows, cols = df.shape
    nulls, dtypes = df.isna().sum(), df.dtypes  # by position: names may repeat
    lines = ["pandas.DataFrame: %d rows x %d columns" % (rows, cols), "columns (dtype, nulls):"]
    for i, name in enumerate(list(df.columns)[:LLM_COLUMNS]):
        lines.append("  %s: %s, %d nulls" % (str(name)[:LLM_CELL], dtypes.iloc[i], int(nulls.iloc[i])))
    if cols > LLM_COLUMNS:
        lines.append("  ... %d more columns" % (cols - LLM_COLUMNS))
    if rows:
        lines.append(_rows(df))
    return "\n".join(lines)


def _series_text(s):
    name = "" if s.name is None else " %r" % (str(s.name)[:LLM_CELL],)
    lines = ["pandas.Series%s: %d values, dtype %s, %d nulls" % (name, len(s), s.dtype, int(s.isna().sum()))]
    if len(s):
        lines.append(_rows(s))
    return "\n".join(lines)


def _array_text(np, a):
    lines = ["numpy.ndarray: shape %s, dtype %s" % (tuple(a.shape), a.dtype)]
    if a.size and a.dtype.kind in "iuf":
        with np.errstate(all="ignore"):
            nans = int(np.isnan(a).sum()) if a.dtype.kind == "f" else 0
            lines.append("min %s, max %s, mean %s, %d NaN" % (np.nanmin(a), np.nanmax(a), np.nanmean(a), nans) if nans < a.size
                         else "all %d values NaN" % a.size)
    lines.append(np.array2string(a, threshold=200, edgeitems=3, max_line_width=120))
    return "\n".join(lines)


def emit(kind, obj):
    """Write obj as an output of kind ("execute_result" or "display_data")."""
    if _outputs is None:
        return
    try:
        _outputs.write(json.dumps({"type": kind, "data": bundle(obj)}) + "\n")
        _outputs.flush()
    except Exception as e:
        sys.stderr.write("pyexec: an output was not sent: %s: %s\n" % (type(e).__name__, e))


# Bounds of an exception's record: its value, each line of its traceback, and the lines kept
# (the first and the last; a line in their place says how many were left out).
MAX_EVALUE = 4096
MAX_LINE = 2000
HEAD_LINES, TAIL_LINES = 20, 80


def emit_exception(e, te):
    """Write the exception e that ended the code, as Jupyter names its parts: {"type": "error",
    "ename", "evalue", "traceback": [lines]}, te its traceback (cell.code_traceback), bounded."""
    if _outputs is None:
        return
    try:
        try:
            evalue = str(e)
        except Exception:
            evalue = "<exception str() failed>"
        lines = "".join(te.format()).splitlines() if te is not None else []
        if len(lines) > HEAD_LINES + TAIL_LINES:
            left = len(lines) - HEAD_LINES - TAIL_LINES
            lines = lines[:HEAD_LINES] + ["... %d lines left out ..." % left] + lines[-TAIL_LINES:]
        record = {
            "type": "error",
            "ename": type(e).__name__,
            "evalue": _clip(evalue, MAX_EVALUE),
            "traceback": [_clip(line, MAX_LINE) for line in lines],
        }
        _outputs.write(json.dumps(record) + "\n")
        _outputs.flush()
    except Exception as err:
        sys.stderr.write("pyexec: the exception was not sent: %s: %s\n" % (type(err).__name__, err))


def _clip(text, limit):
    if len(text) <= limit:
        return text
    return text[:limit] + "... (%d characters left out)" % (len(text) - limit)


def display(*objs, **kwargs):
    """display(obj, ...) as in a notebook: each object becomes a display_data output."""
    for obj in objs:
        emit("display_data", obj)


def show_figures(*args, **kwargs):
    """Every open matplotlib figure becomes a display_data output (a PNG), then is closed: on
    plt.show() and when the code ends, as a notebook's inline backend does."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return
    try:
        for num in plt.get_fignums():
            emit("display_data", plt.figure(num))
        plt.close("all")
    except Exception as e:
        sys.stderr.write("pyexec: figures were not sent: %s: %s\n" % (type(e).__name__, e))


class _PatchOnImport:
    """Patches the module name with patch(module) as the code imports it, once."""

    def __init__(self, name, patch):
        self.name, self.patch = name, patch

    def find_spec(self, name, path, target=None):
        if name != self.name:
            return None
        sys.meta_path.remove(self)
        import importlib.util

        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            exec_module, patch = spec.loader.exec_module, self.patch

            def exec_and_patch(module):
                exec_module(module)
                patch(module)

            spec.loader.exec_module = exec_and_patch
        return spec


def _patch_module(name, patch):
    module = sys.modules.get(name)
    if module is not None:  # preloaded by the zygote
        patch(module)
    else:
        sys.meta_path.insert(0, _PatchOnImport(name, patch))


_hooked = False  # hook_modules ran in this process, or in the zygote it was forked from


def hook_modules():
    """pyplot.show() sends the figures (show_figures); the names multiprocessing gives shared
    memory and semaphores in /dev/shm carry 128 random bits, not 32 (shared_memory) or about 41
    (semaphores): confined code may open a name it knows there, so a name must not be found by
    probing. Once per process: the zygote's hooks hold in every fork of it."""
    global _hooked
    if _hooked:
        return
    _hooked = True
    _patch_module("matplotlib.pyplot", _patch_show)
    _patch_module("multiprocessing.shared_memory", _patch_shm_names)
    _patch_module("multiprocessing.synchronize", _patch_sem_names)


def _patch_show(module):
    module.show = show_figures


def _patch_shm_names(module):
    import secrets

    prefix = getattr(module, "_SHM_NAME_PREFIX", "/psm_")
    module._make_filename = lambda: prefix + secrets.token_hex(16)


def _patch_sem_names(module):
    import secrets

    def _make_name():
        from multiprocessing import process

        return "%s-%s" % (process.current_process()._config["semprefix"], secrets.token_hex(16))

    module.SemLock._make_name = staticmethod(_make_name)

