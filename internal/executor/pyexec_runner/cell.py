"""Code run as a notebook runs a cell."""
import sys

from .outputs import emit, show_figures


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
        if sys.excepthook is sys.__excepthook__:
            import traceback  # the Python printer reads the source from linecache

            traceback.print_exception(type(e), e, e.__traceback__)
        else:
            sys.excepthook(type(e), e, e.__traceback__)
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

