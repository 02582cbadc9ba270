"""Code run as a notebook runs a cell."""
import sys

from .outputs import emit, emit_exception, show_figures


def run_cell(source, main, filename):
    """Run source in main's namespace as a notebook runs a cell: the value of a final
    expression is the execute_result, and open figures are shown at the end. Returns the exit
    status (0, 1 for an exception, SystemExit's) and whether a MemoryError ended the code."""
    import linecache

    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    sys.argv = [filename]
    try:
        import ast

        tree = compile(source, filename, "exec", ast.PyCF_ONLY_AST)
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, filename, "exec"), main.__dict__)
        if last is not None:
            value = eval(compile(last, filename, "eval"), main.__dict__)
            if value is not None:
                emit("execute_result", value)
        show_figures()
    except SystemExit as e:
        show_figures()
        return exit_status(e.code), False
    except BaseException as e:
        show_figures()
        if e.__traceback__ is not None:
            e.__traceback__ = e.__traceback__.tb_next  # hide this frame
        te = code_traceback(e)
        if sys.excepthook is sys.__excepthook__:
            try:
                sys.stderr.write("".join(te.format()) if te is not None else "%s\n" % type(e).__name__)
            except Exception:
                pass
        else:
            sys.excepthook(type(e), e, e.__traceback__)
        emit_exception(e, te)
        return 1, isinstance(e, MemoryError)
    return 0, False


def exit_status(code):
    """The exit status of SystemExit(code), as the interpreter computes it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        sys.stderr.write(str(code) + "\n")
    except Exception:
        pass
    return 1



OWN_FRAMES = "<pyexec>/"  # the file names of pyexec's own code (loader.py)


def code_traceback(e):
    """e's traceback as the code's: a traceback.TracebackException without pyexec's own frames,
    in e and in the exceptions it chains or groups; None when it cannot be made."""
    import traceback  # the printer reads the source from linecache

    try:
        te = traceback.TracebackException(type(e), e, e.__traceback__, compact=True)
    except Exception:
        return None
    seen, todo = set(), [te]
    while todo:
        t = todo.pop()
        if t is None or id(t) in seen:
            continue
        seen.add(id(t))
        t.stack[:] = [f for f in t.stack if not f.filename.startswith(OWN_FRAMES)]
        todo += [t.__cause__, t.__context__] + list(getattr(t, "exceptions", None) or [])
    return te
